"""Processes on one real FUSE mount (``unionfs mount``): each keeps the conformance
invariants.

Four worker processes (``concurrency_kit.py worker``) make seeded random system calls at once
below one mount: on their own subtrees (checked step by step against the sequential model of
their own steps, and whole at the end) and on a shared area (the POSIX invariants listed in
``concurrency_kit``). Run against the default single-threaded daemon and a ``threaded`` one.
Afterwards: no lower byte or mtime changed, the work dir holds no temporaries, inode numbers
did not move, and the upper dir, after the unmount, shows the same view mounted again by
``unionfs mount`` (same inode numbers) and by kernel overlayfs. A last test reads a big lower
file from three processes while the test copies it up and then replaces it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import random
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import concurrency_kit as kit

from tests.conftest import need_fuse, need_kernel_overlay, need_root
from tests.interop.fuse_helpers import ENV, force_unmount, in_mounts, run_cli
from unionfs.mount import choose_api
from unionfs.testing.conformance import (
    MountTarget,
    diff_snapshots,
    dir_fingerprint,
    mount_overlay,
    outcome,
    snapshot,
    unmount,
)
from unionfs.testing.model import Dir, File, LayerSpec, StackSpec, UnionModel
from unionfs.testing.strategies import Op, write_layer_dir

pytestmark = [pytest.mark.fuse, pytest.mark.root]

SEED = int(os.environ.get("HARDENING_SEED", "8"))
WORKERS = 4
STEPS = int(os.environ.get("HARDENING_STEPS", "100"))
KIT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "concurrency_kit.py")
#: the libfuse API the mounts of this run use (``UNIONFS_FUSE_API``, else the default)
API = choose_api(None)
#: known adapter bugs tolerated here while their fixes are pending (each has a strict xfail
#: below; drop it from this list when its fix lands). REL-1 is fixed by the low-level
#: adapter and stays only with libfuse's high-level API.
TOLERATE = ["REL-1"] if API == "highlevel" else []


def write_stack(stack: StackSpec, base: str) -> list[str]:
    """The stack in overlayfs form below ``base`` (lower0.., upper, work, mnt); the lowers."""
    lowers = [write_layer_dir(spec, f"{base}/lower{i}") for i, spec in enumerate(stack.lowers)]
    write_layer_dir(stack.upper or LayerSpec(), f"{base}/upper")
    os.mkdir(f"{base}/work")
    os.mkdir(f"{base}/mnt")
    return lowers


@contextlib.contextmanager
def unionfs_mount(base: str, lowers: list[str], extra: str = "") -> Iterator[str]:
    """``unionfs mount`` of ``base``'s dirs at ``base/mnt``; always unmounted on exit."""
    mnt = f"{base}/mnt"
    opts = f"lowerdir={':'.join(lowers)},upperdir={base}/upper,workdir={base}/work"
    try:
        r = run_cli("mount", "-o", opts + ("," + extra if extra else ""), mnt)
        assert r.returncode == 0, f"mount failed: {r.stderr}"
        yield mnt
    finally:
        if in_mounts(mnt):
            r = run_cli("umount", mnt)
            if r.returncode != 0:
                force_unmount(mnt)
        force_unmount(mnt)


def run_workers(mnt: str, base: str, seed: int, upper: bool) -> list[kit.Report]:
    go = f"{base}/go"
    procs = [subprocess.Popen(
        [sys.executable, KIT, "worker", "--root", mnt, "--seed", str(seed), "--workers",
         str(WORKERS), "--who", str(who), "--steps", str(STEPS), "--upper",
         "yes" if upper else "no", "--go", go,
         *[a for name in TOLERATE for a in ("--tolerate", name)]],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
        for who in range(WORKERS)]
    try:
        time.sleep(0.3)  # let them import, so they start together
        open(go, "w").close()
        outs = [p.communicate(timeout=120) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    reports = []
    for p, (out, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, f"worker crashed ({p.returncode}):\n{err}"
        reports.append(kit.Report.from_json(json.loads(out)))
    return reports


@pytest.mark.parametrize("mode", ["single", "threaded"])
def test_processes_keep_the_invariants(tmp_path, mode):
    need_root()
    need_fuse()
    need_kernel_overlay()
    seed = SEED * 10 + (3 if mode == "single" else 4)
    upper = mode == "threaded"
    base = str(tmp_path)
    stack = kit.make_stack(seed, WORKERS, upper=upper)
    lowers = write_stack(stack, base)
    prints = {d: dir_fingerprint(d) for d in lowers}
    visible = [p for p, _ in UnionModel(stack).walk()]
    with unionfs_mount(base, lowers, "threaded" if mode == "threaded" else "") as mnt:
        target = MountTarget(mnt)
        ino_before = kit.ino_map(lambda p: os.lstat(target.host(p)), visible,
                                 stable_only=True)
        reports = run_workers(mnt, base, seed, upper)
        kit.check_reports(reports, WORKERS, STEPS)
        end = snapshot(target)
        disturbed = [p for r in reports for p in r.disturbed] + kit.SHARED_REPLACED
        kept = kit.undisturbed(ino_before, disturbed)
        ino_kept = kit.ino_map(lambda p: os.lstat(target.host(p)), kept)
        ino_end = kit.ino_map(lambda p: os.lstat(target.host(p)), end)

    kit.check_end(end, kit.model_end(stack, seed, WORKERS, STEPS), prints, f"{base}/work")
    assert any(p.startswith("/shared/written/") for p in kept)
    moved = {p: (ino_before[p], ino_kept[p]) for p in kept
             if p in ino_kept and ino_kept[p] != ino_before[p]}
    assert moved == {}

    # mounted again by unionfs: the same tree, the same inode numbers
    with unionfs_mount(base, lowers) as mnt:
        again = MountTarget(mnt)
        assert diff_snapshots(end, snapshot(again)) == []
        assert kit.ino_map(lambda p: os.lstat(again.host(p)), end) == ino_end
    # and by kernel overlayfs (its own, empty work dir)
    kwork, merged = f"{base}/kwork", f"{base}/merged"
    os.mkdir(kwork)
    os.mkdir(merged)
    mount_overlay(lowers, f"{base}/upper", kwork, merged)
    try:
        diff = diff_snapshots(end, snapshot(MountTarget(merged)))
    finally:
        unmount(merged)
    assert diff == [], "kernel overlayfs sees another tree:\n" + "\n".join(diff)


def test_reader_processes_during_copy_up_of_a_big_file(tmp_path):
    """Three processes read a 6 MiB lower file whole, again and again, while it is copied up
    (chown, then a same-size truncate) and then replaced by rename(2): every read is the whole
    old or the whole new content, and no reader sees the old one after the new one."""
    need_root()
    need_fuse()
    rng = random.Random(SEED)
    old, new = rng.randbytes(6 << 20), rng.randbytes(6 << 20)
    base = str(tmp_path)
    stack = StackSpec((LayerSpec.of({"/data": Dir(), "/data/big": File(old)}),))
    lowers = write_stack(stack, base)
    lower_print = dir_fingerprint(lowers[0])
    digests = [hashlib.sha256(old).hexdigest(), hashlib.sha256(new).hexdigest()]
    stop = f"{base}/stop"
    with unionfs_mount(base, lowers, "threaded") as mnt:
        big = f"{mnt}/data/big"
        ino = os.lstat(big).st_ino
        progress = [f"{base}/progress{i}" for i in range(3)]
        readers = [subprocess.Popen(
            [sys.executable, KIT, "reader", "--path", big, "--stop", stop, "--progress", p,
             *[a for d in digests for a in ("--digest", d)]],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
            for p in progress]
        stuck = None
        try:
            kit.wait_for_reads(progress, 1)
            os.chown(big, 1000, 1000)  # copy-up
            os.truncate(big, len(old))  # data copy-up, same content
            assert os.lstat(big).st_ino == ino
            kit.wait_for_reads(progress, 1)
            with open(f"{mnt}/data/big.new", "wb") as f:
                f.write(new)
            os.rename(f"{mnt}/data/big.new", big)
            kit.wait_for_reads(progress, 2)  # the second read of each began after it
        except TimeoutError as e:
            stuck = e
        finally:
            open(stop, "w").close()
            outs = []
            for p in readers:
                try:
                    outs.append(p.communicate(timeout=30))
                except subprocess.TimeoutExpired:
                    p.kill()
                    outs.append(p.communicate())
        assert stuck is None, (f"{stuck}: reads done {[kit.reads_done(p) for p in progress]}, "
                               f"readers said {outs}")
        with open(big, "rb") as f:
            assert f.read() == new
    results = []
    for p, (out, err) in zip(readers, outs, strict=True):
        assert p.returncode == 0, err
        results.append(json.loads(out))
    assert all(r["reads"] > 1 for r in results), results
    assert [r["bad"] for r in results] == [0, 0, 0], results
    assert [r["regressions"] for r in results] == [0, 0, 0], results
    assert [r["newest"] for r in results] == [1, 1, 1], results
    assert dir_fingerprint(lowers[0]) == lower_print
    assert kit.stray_work_files(f"{base}/work") == []


@pytest.mark.parametrize("mode", ["single", "threaded"])
def test_open_during_rename_over_never_fails(tmp_path, mode, request):
    """Two processes replace a file by rename(2) of a complete temporary, over and over,
    while two others open and read it: the name must never be missing (POSIX rename(2):
    "a link named new shall remain visible ... throughout the renaming operation"). Kernel
    overlayfs and fuse-overlayfs give no error here in hundreds of thousands of opens, nor
    does the low-level adapter (it keeps a replaced file the kernel still knows openable)."""
    need_root()
    need_fuse()
    if API == "highlevel":
        request.applymarker(pytest.mark.xfail(
            strict=True, reason="REL-1 (docs/reliability.md): with libfuse's high-level path "
            "API, open(2) of a name being replaced by rename(2) fails with ESTALE (and ENOENT "
            "and EBADF with the threaded daemon)"))
    base = str(tmp_path)
    stack = StackSpec((LayerSpec.of({"/d": Dir(), "/d/f": File(b"lower")}),))
    lowers = write_stack(stack, base)
    stop = f"{base}/stop"
    with unionfs_mount(base, lowers, "threaded" if mode == "threaded" else "") as mnt:
        progress = [f"{base}/progress{i}" for i in range(2)]
        procs = [subprocess.Popen([sys.executable, KIT, "replacer", "--dir", f"{mnt}/d",
                                   "--name", "f", "--who", str(who), "--stop", stop],
                                  stdout=subprocess.PIPE, text=True, env=ENV)
                 for who in range(2)]
        procs += [subprocess.Popen([sys.executable, KIT, "opener", "--path", f"{mnt}/d/f",
                                    "--stop", stop, "--progress", p],
                                   stdout=subprocess.PIPE, text=True, env=ENV)
                  for p in progress]
        try:
            kit.wait_for_reads(progress, 1)
            # a few seconds of contention: ~1% of the opens fail while REL-1 stands
            time.sleep(3)
        finally:
            open(stop, "w").close()
            outs = [json.loads(p.communicate(timeout=60)[0] or "{}") for p in procs]
        leftovers = sorted(n for n in os.listdir(f"{mnt}/d") if n != "f")
    assert all(o.get("renames", 0) > 0 for o in outs[:2]), outs
    assert all(o["reads"] > 100 for o in outs[2:]), outs
    assert leftovers == []
    assert [o["errors"] for o in outs[2:]] == [{}, {}], outs


def test_hard_link_sees_append_through_its_other_name(tmp_path):
    """Found by the worker of seed 123 (600 steps), cut down to 17 steps: after some
    directory renames, a file appended through one hard link reads short through the other
    (the mount answers with the size it cached before the append)."""
    need_root()
    need_fuse()
    y, tail = b"y" * 100, b"2\x8c\xea<\xcdq\xcc\x89cT)"
    steps = [Op("mkdir", ("/w0/a", 0o777)), Op("unlink", ("/w0/c",)),
             Op("rename", ("/w0/a", "/w0/c")), Op("mkdir", ("/w0/c/c", 0o750)),
             Op("rename", ("/w0/c", "/w0/d")), Op("rename", ("/w0/d/c", "/w0/d/d")),
             Op("mkdir", ("/w0/d/a", 0o700)), Op("rename", ("/w0/d/d", "/w0/d/a/c")),
             Op("mkdir", ("/w0/d/d", 0o750)), Op("rename", ("/w0/d/d", "/w0/d/a/c/a")),
             Op("rename", ("/w0/d/a/c", "/w0/d/a/b")),
             Op("write_file", ("/w0/d/a/b/a/b", y, "x", 0o640)),
             Op("link", ("/w0/d/a/b/a/b", "/w0/d/d")), Op("read_file", ("/w0/d/a/b/a/b",)),
             Op("rename", ("/w0/d/a/b/a", "/w0/d/a/b/d")),
             Op("write_file", ("/w0/d/d", tail, "a", 0o640)),
             Op("read_file", ("/w0/d/a/b/d/b",))]
    stack = kit.make_stack(123, WORKERS, upper=False)
    base = str(tmp_path)
    lowers = write_stack(stack, base)
    with unionfs_mount(base, lowers) as mnt:
        target, model = MountTarget(mnt), UnionModel(stack)
        results = [(str(op), outcome(model, op), outcome(target, op)) for op in steps]
    assert results[-1][1].value == y + tail
    assert [r for r in results if r[1] != r[2]] == []
