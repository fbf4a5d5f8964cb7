"""Threads on one ``UnionFS`` (on-disk layers): each keeps the conformance invariants.

Four threads make seeded random steps at once, each on its own subtree (checked step by step
against the sequential model of its own steps, and whole at the end) and on a shared area
(checked against the POSIX invariants listed in ``concurrency_kit``). The interpreter's
switch interval is shortened so threads interleave inside engine calls, not between them.
Afterwards: no lower byte or mtime changed, no temporary is left in the work dir, inode
numbers did not move, and the upper dir read again (by a new engine and by kernel
overlayfs) shows exactly what the running engine showed. A last test reads a big lower file
from several threads while another copies it up and then replaces it.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import random
import sys
import threading
import time
from collections.abc import Iterator

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import concurrency_kit as kit

from tests.conftest import need_kernel_overlay, need_root
from unionfs.layer import DirLayer
from unionfs.testing.conformance import (
    EngineTarget,
    MountTarget,
    diff_snapshots,
    dir_fingerprint,
    mount_overlay,
    snapshot,
    unmount,
)
from unionfs.testing.model import UnionModel
from unionfs.union import UnionFS

SEED = int(os.environ.get("HARDENING_SEED", "8"))
WORKERS = 4
STEPS = int(os.environ.get("HARDENING_STEPS", "150"))


@contextlib.contextmanager
def fine_switching(interval: float = 2e-5) -> Iterator[None]:
    """Let the interpreter switch threads every ``interval`` seconds (default 5 ms)."""
    old = sys.getswitchinterval()
    sys.setswitchinterval(interval)
    try:
        yield
    finally:
        sys.setswitchinterval(old)


def run_threads(target: EngineTarget, stack, seed: int,
                options: dict[str, bool] | None = None) -> list[kit.Report]:
    reports: list[kit.Report | None] = [None] * WORKERS
    errors: list[BaseException] = []
    start = threading.Barrier(WORKERS)

    def work(who: int) -> None:
        try:
            start.wait()
            reports[who] = kit.run_worker(target, stack, who, seed, STEPS, options=options)
        except BaseException as e:  # a crash in a thread must fail the test, not vanish
            errors.append(e)

    threads = [threading.Thread(target=work, args=(who,)) for who in range(WORKERS)]
    with fine_switching():
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
    assert not any(t.is_alive() for t in threads), "a worker thread hangs"
    if errors:
        raise errors[0]
    return [r for r in reports if r is not None]


def reopen(base: str, **options: bool) -> EngineTarget:
    """A new engine over the same directories (what a remount sees)."""
    lowers = [DirLayer(f"{base}/lower{i}", cache_dir=f"{base}/index-cache") for i in range(2)]
    return EngineTarget(UnionFS(lowers=lowers, upper=DirLayer(f"{base}/upper", writable=True),
                                workdir=f"{base}/work", **options))


@pytest.mark.root
@pytest.mark.parametrize(("offset", "options"), [
    (0, {}), (1, {}), (5, {"index": True, "redirect_dir": True})],
    ids=["lower-only", "with-upper", "index-redirect"])
def test_threads_keep_the_invariants(tmp_path, offset, options):
    need_root()
    seed = SEED * 10 + offset
    base = str(tmp_path)
    stack = kit.make_stack(seed, WORKERS, upper=bool(offset))
    target = EngineTarget.on_disk(stack, base, **options)
    lowers = [f"{base}/lower{i}" for i in range(len(stack.lowers))]
    prints = {d: dir_fingerprint(d) for d in lowers}
    visible = [p for p, _ in UnionModel(stack).walk()]
    ino_before = kit.ino_map(target.fs.lstat, visible, stable_only=True)

    reports = run_threads(target, stack, seed, options)

    kit.check_reports(reports, WORKERS, STEPS)

    end = snapshot(target)
    kit.check_end(end, kit.model_end(stack, seed, WORKERS, STEPS, options=options), prints,
                  f"{base}/work")
    # inode numbers: unchanged for every object no step replaced (copy-up keeps them) ...
    disturbed = [p for r in reports for p in r.disturbed] + kit.SHARED_REPLACED
    kept = kit.undisturbed(ino_before, disturbed)
    assert any(p.startswith("/shared/written/") for p in kept)
    ino_end = kit.ino_map(target.fs.lstat, kept)
    moved = {p: (ino_before[p], ino_end[p]) for p in kept if p in ino_end
             and ino_end[p] != ino_before[p]}
    assert moved == {}
    # ... and the upper dir, read again by a new engine, shows the same tree and inodes
    again = reopen(base, **options)
    assert diff_snapshots(end, snapshot(again)) == []
    all_paths = list(end)
    assert kit.ino_map(again.fs.lstat, all_paths) == kit.ino_map(target.fs.lstat, all_paths)


@pytest.mark.root
def test_kernel_overlayfs_sees_what_the_threads_left(tmp_path):
    """The upper dir the threads wrote, mounted by kernel overlayfs, shows the same view."""
    need_kernel_overlay()
    seed = SEED * 10 + 2
    base = str(tmp_path)
    stack = kit.make_stack(seed, WORKERS, upper=False)
    target = EngineTarget.on_disk(stack, base)
    reports = run_threads(target, stack, seed)
    assert not [f for r in reports for f in r.failures]
    end = snapshot(target)
    kwork, merged = f"{base}/kwork", f"{base}/merged"
    os.mkdir(kwork)
    os.mkdir(merged)
    mount_overlay([f"{base}/lower0", f"{base}/lower1"], f"{base}/upper", kwork, merged)
    try:
        diff = diff_snapshots(end, snapshot(MountTarget(merged)))
    finally:
        unmount(merged)
    assert diff == [], "kernel overlayfs sees another tree:\n" + "\n".join(diff)


@pytest.mark.root
def test_readers_during_copy_up_of_a_big_file(tmp_path):
    """Readers see the whole old content while a big lower file is copied up (chown, then a
    same-size truncate), and the whole old or whole new content while it is replaced by
    rename(2); never a short or mixed file."""
    need_root()
    rng = random.Random(SEED)
    old = rng.randbytes(6 << 20)
    new = rng.randbytes(6 << 20)
    base = str(tmp_path)
    from unionfs.testing.model import Dir, File, LayerSpec, StackSpec
    stack = StackSpec((LayerSpec.of({"/data": Dir(), "/data/big": File(old)}),))
    target = EngineTarget.on_disk(stack, base)
    fs = target.fs
    lower_print = dir_fingerprint(f"{base}/lower0")
    ino = fs.lstat("/data/big").st_ino
    versions = [hashlib.sha256(old).hexdigest()]
    stop = threading.Event()
    seen: list[list[str]] = [[] for _ in range(3)]
    errors: list[BaseException] = []

    def reader(mine: list[str]) -> None:
        try:
            while not stop.is_set():
                with fs.open("/data/big", "rb") as f:
                    mine.append(hashlib.sha256(f.read()).hexdigest())
        except BaseException as e:
            errors.append(e)

    def reads() -> int:
        return sum(len(s) for s in seen)

    def wait_reads(n: int) -> None:
        want = reads() + n
        deadline = time.monotonic() + 60
        while reads() < want and not errors:
            assert time.monotonic() < deadline, "the readers made no progress"

    readers = [threading.Thread(target=reader, args=(mine,)) for mine in seen]
    with fine_switching(1e-4):
        for t in readers:
            t.start()
        try:
            wait_reads(3)
            fs.chown("/data/big", 1000, 1000)  # copy-up of the whole file
            fs.truncate("/data/big", len(old))  # data copy-up (a no-op change)
            assert fs.lstat("/data/big").st_ino == ino
            wait_reads(3)
            versions.append(hashlib.sha256(new).hexdigest())
            with fs.open("/data/big.new", "wb") as f:
                f.write(new)
            fs.rename("/data/big.new", "/data/big")
            wait_reads(6)
        finally:
            stop.set()
            for t in readers:
                t.join(timeout=60)
    assert not errors, errors
    everything = [d for mine in seen for d in mine]
    bad = [d for d in everything if d not in versions]
    assert bad == [], f"{len(bad)} of {len(everything)} reads saw neither version"
    # each reader: once it saw the new content, never the old again
    for mine in seen:
        order = [versions.index(d) for d in mine]
        assert order == sorted(order)
    assert versions[1] in everything
    assert target.read_file("/data/big") == new
    assert dir_fingerprint(f"{base}/lower0") == lower_print
    assert kit.stray_work_files(f"{base}/work") == []
