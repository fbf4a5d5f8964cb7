"""Benchmark the FUSE mount against kernel overlayfs, fuse-overlayfs, unionfs-fuse and the plain
merged directory, on the same generated layer stacks; every figure also as a ratio to
fuse-overlayfs measured in the same run.

    sudo .venv/bin/python benchmarks/mount_bench.py            # 1/8/32/128 layers, 20k files
    sudo .venv/bin/python benchmarks/mount_bench.py --quick    # reduced scale (a minute)
    ... --layers 1 8 --impls unionfs fuse-overlayfs --json out.json

Needs root (mounts, dropping the page cache). Operations: stat walk, readdir walk, small-file
reads, sequential and random 4 KiB reads of a large file, copy-up of small files and of the
large file, creates, unlinks of lower files, ``tar c`` of the mount; read operations cold
(fresh mount, caches dropped) and warm (the caches filled by an untimed run first);
changing operations on a fresh upper dir, cold and warm (targets read once before).

The machine's pace moves (a virtual machine shares its host), so the run is built to let
that fall on every implementation alike: each stack settles first (its writes flushed, one
untimed cold pass over its files); a cold figure is the best of ``--cold-repeat`` fresh
mounts (default 3) with the implementations taking turns within each repetition, in an
order that rotates from one repetition to the next (no implementation always goes first);
for a warm read figure all of them are mounted at once and take turns run by run, ``--repeat``
runs each, on ``--cold-repeat`` such sets of fresh mounts (where the kernel puts the cached
data differs from mount to mount); a changing operation's warm figure comes from
``--cold-repeat`` fresh mounts with its targets read first. Each measurement
stops after ``--budget`` seconds and reports the rate over the units done, which bounds a
full run (about 20 minutes on 2 cores).

A figure is the best of its samples. A ratio to fuse-overlayfs is the median, over the
rounds, of the two implementations' ratio within a round (the pair measured one just after
the other), so the machine's pace cancels out. Prints a table and JSON; in the JSON each
implementation's figures carry ``cold_ratio``/``warm_ratio``, the ratio of the best samples
(``cold_ratio_of_best``/``warm_ratio_of_best``) and every sample
(``cold_samples``/``warm_samples``), and the run records its duration and the load average
before and after.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import pathlib
import random
import shutil
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

ROOT = pathlib.Path(__file__).resolve().parent.parent
BASELINE = "fuse-overlayfs"
IMPLS = ("unionfs", "kernel", "fuse-overlayfs", "unionfs-fuse", "plain")
#: further names of this mount with its libfuse API chosen (``-o api=``); "unionfs" is the
#: default API
UNIONFS_APIS = {"unionfs": "", "unionfs-ll": ",api=lowlevel", "unionfs-hl": ",api=highlevel"}


@dataclass(frozen=True)
class Scale:
    files: int
    big_mib: int
    small_reads: int
    rand_reads: int
    copyups: int
    creates: int
    unlinks: int


class Budget:
    """A time limit for one measurement: loops stop when it runs out, and the figure is the
    rate over the units done (a slow implementation then costs seconds, not minutes)."""

    seconds: float = 0.0  # 0: no limit (set by main from --budget)

    def __init__(self) -> None:
        self.end = time.perf_counter() + self.seconds if self.seconds > 0 else None

    def over(self) -> bool:
        return self.end is not None and time.perf_counter() > self.end


FULL = Scale(files=20_000, big_mib=256, small_reads=2000, rand_reads=4000, copyups=1000,
             creates=10_000, unlinks=1000)
QUICK = Scale(files=3000, big_mib=32, small_reads=500, rand_reads=1000, copyups=200,
              creates=1000, unlinks=200)


# ------------------------------------------------------------------------------ the stacks

@dataclass
class Stack:
    base: pathlib.Path
    lowers: list[pathlib.Path]      # top-most first
    plain: pathlib.Path             # the merged tree, as a plain directory
    files: list[str]                # every merged regular file (relative)
    paths: list[str]                # every merged path (relative)
    lower_files: list[str]          # small files that live in lower layers (targets)


def build_stack(base: pathlib.Path, layers: int, scale: Scale, big_src: pathlib.Path) -> Stack:
    """``layers`` lower dirs holding ``scale.files`` small files spread over them (about 5 %
    shadowed by a higher layer), 100 per directory, every directory present in several layers
    (merged); one large file in the bottom layer; and the plain merged tree beside them."""
    rng = random.Random(layers)
    lowers = [base / f"l{i:03d}" for i in range(layers)]
    for p in lowers:
        p.mkdir(parents=True)
    merged: dict[str, pathlib.Path] = {}
    ndirs = max(1, scale.files // 100)
    for j in range(scale.files):
        rel = f"d{j % ndirs:04d}/f{j:06d}"
        layer = j % layers
        src = lowers[layer] / rel
        src.parent.mkdir(exist_ok=True)
        src.write_bytes(rng.randbytes(rng.randint(100, 4000)))
        merged[rel] = src
        if layer > 0 and j % 20 == 0:  # shadowed by a copy one layer up (index - 1)
            top = lowers[layer - 1] / rel
            top.parent.mkdir(exist_ok=True)
            top.write_bytes(b"shadow " + rel.encode())
            merged[rel] = top
    big_rel = "big/large.bin"
    (lowers[-1] / "big").mkdir()
    os.link(big_src, lowers[-1] / big_rel)
    merged[big_rel] = lowers[-1] / big_rel
    plain = base / "plain"
    for rel, src in merged.items():
        dst = plain / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        os.link(src, dst)
    files = sorted(merged)
    paths = sorted(set(files) | {os.path.dirname(f) for f in files})
    lower_files = [f for f in files if f != big_rel]
    return Stack(base, lowers, plain, files, paths, lower_files)


# ------------------------------------------------------------------------------ mounting

def _run(cmd: list[str], **kw) -> None:
    r = subprocess.run(cmd, capture_output=True, text=True, **kw)
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:3])}...: {r.stderr.strip()}")


@contextlib.contextmanager
def mounted(impl: str, stack: Stack, scratch: pathlib.Path) -> Iterator[pathlib.Path]:
    """A fresh mount of ``stack`` by ``impl`` with an empty upper dir below ``scratch``."""
    if scratch.exists():
        shutil.rmtree(scratch)
    upper, work, mnt = scratch / "u", scratch / "w", scratch / "m"
    for p in (upper, work, mnt):
        p.mkdir(parents=True)
    lowerdir = ":".join(str(p) for p in stack.lowers)
    if impl == "plain":
        # changes need a private copy; reads use the merged tree itself
        yield stack.plain
        return
    name, _, extra = impl.partition(":")  # unionfs:spin=0,passthrough=off: more options
    if name in UNIONFS_APIS:
        _run([sys.executable, "-m", "unionfs", "mount", "-o",
              f"lowerdir={lowerdir},upperdir={upper},workdir={work}{UNIONFS_APIS[name]}"
              + ("," + extra if extra else ""), str(mnt)],
             cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
        umount = [sys.executable, "-m", "unionfs", "umount", str(mnt)]
    elif impl == "kernel":
        # lower dirs relative to the stack's directory: 128 absolute paths would overflow
        # the one page of mount options the kernel takes
        short = ":".join(p.name for p in stack.lowers)
        _run(["mount", "-t", "overlay", "overlay", "-o",
              f"lowerdir={short},upperdir={upper},workdir={work}", str(mnt)], cwd=stack.base)
        umount = ["umount", str(mnt)]
    elif impl == "fuse-overlayfs":
        _run(["fuse-overlayfs", "-o", f"lowerdir={lowerdir},upperdir={upper},workdir={work}",
              str(mnt)])
        umount = ["fusermount3", "-u", str(mnt)]
    elif impl == "unionfs-fuse":
        branches = ":".join([f"{upper}=RW"] + [f"{p}=RO" for p in stack.lowers])
        _run(["unionfs-fuse", "-o", "cow,allow_other,use_ino", branches, str(mnt)])
        umount = ["fusermount", "-u", str(mnt)]
    else:
        raise ValueError(impl)
    try:
        yield mnt
    finally:
        r = subprocess.run(umount, capture_output=True, cwd=ROOT,
                           env={**os.environ, "PYTHONPATH": str(ROOT)})
        if r.returncode != 0:
            subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


@contextlib.contextmanager
def writable(impl: str, stack: Stack, scratch: pathlib.Path,
             changed: list[str] = ()) -> Iterator[pathlib.Path]:
    """Like ``mounted``, but for the plain directory a private tree to change: hard links
    to the merged tree (they share its files, which are the lower layers' own), with
    private copies of the files in ``changed``, whose data the operation writes."""
    if impl != "plain":
        with mounted(impl, stack, scratch) as m:
            yield m
        return
    if scratch.exists():
        shutil.rmtree(scratch)
    scratch.mkdir(parents=True)
    copy = scratch / "plain"
    _run(["cp", "-al", str(stack.plain), str(copy)])
    for rel in changed:
        target = copy / rel
        tmp = target.with_name(target.name + ".copy")
        shutil.copy2(target, tmp)
        os.replace(tmp, target)  # breaks the link: the lower file is never written
    yield copy


def drop_caches() -> None:
    os.sync()
    with open("/proc/sys/vm/drop_caches", "w") as f:
        f.write("3\n")


# ------------------------------------------------------------------------------ operations

def op_stat(m: pathlib.Path, s: Stack, sc: Scale) -> int:
    b = Budget()
    base = str(m) + "/"
    for n, rel in enumerate(s.paths, 1):
        os.lstat(base + rel)
        if n % 256 == 0 and b.over():
            return n
    return len(s.paths)


def op_readdir(m: pathlib.Path, s: Stack, sc: Scale) -> int:
    b = Budget()
    n = 0
    stack = [str(m)]
    while stack and not b.over():
        d = stack.pop()
        with os.scandir(d) as it:
            for e in it:
                n += 1
                if e.is_dir(follow_symlinks=False):
                    stack.append(e.path)
    return n


def op_small_read(m: pathlib.Path, s: Stack, sc: Scale) -> int:
    step = max(1, len(s.lower_files) // sc.small_reads)
    targets = s.lower_files[::step][:sc.small_reads]
    b = Budget()
    for n, rel in enumerate(targets, 1):
        with open(m / rel, "rb") as f:
            f.read()
        if b.over():
            return n
    return len(targets)


def op_seq_read(m: pathlib.Path, s: Stack, sc: Scale) -> int:
    n = 0
    with open(m / "big/large.bin", "rb", buffering=0) as f:
        while chunk := f.read(1 << 20):
            n += len(chunk)
    return n >> 20  # MiB


def op_rand_read(m: pathlib.Path, s: Stack, sc: Scale) -> int:
    rng = random.Random(7)
    size = sc.big_mib << 20
    fd = os.open(m / "big/large.bin", os.O_RDONLY)
    b = Budget()
    try:
        for n in range(1, sc.rand_reads + 1):
            os.pread(fd, 4096, rng.randrange(0, size // 4096) * 4096)
            if n % 64 == 0 and b.over():
                return n
    finally:
        os.close(fd)
    return sc.rand_reads


def op_tar(m: pathlib.Path, s: Stack, sc: Scale) -> int:
    # through a pipe: GNU tar skips reading file data when it writes to /dev/null itself
    r = subprocess.run(f"tar -cf - -C '{m}' . | cat > /dev/null", shell=True)
    if r.returncode != 0:
        raise RuntimeError("tar failed")
    return 1


def _targets(s: Stack, n: int) -> list[str]:
    step = max(1, len(s.lower_files) // n)
    return s.lower_files[1::step][:n]


def op_copyup_small(m: pathlib.Path, s: Stack, sc: Scale) -> int:
    targets = _targets(s, sc.copyups)
    b = Budget()
    for n, rel in enumerate(targets, 1):
        with open(m / rel, "ab") as f:
            f.write(b"+")
        if b.over():
            return n
    return len(targets)


def op_copyup_big(m: pathlib.Path, s: Stack, sc: Scale) -> int:
    with open(m / "big/large.bin", "r+b") as f:
        f.write(b"+")
    return sc.big_mib


def op_create(m: pathlib.Path, s: Stack, sc: Scale) -> int:
    base = m / "created"
    base.mkdir()
    b = Budget()
    for i in range(sc.creates):
        if i % 1000 == 0:
            d = base / f"c{i // 1000:03d}"
            d.mkdir()
        with open(d / f"n{i:06d}", "wb") as f:
            f.write(b"new file\n")
        if b.over():
            return i + 1
    return sc.creates


def op_unlink(m: pathlib.Path, s: Stack, sc: Scale) -> int:
    targets = _targets(s, sc.unlinks)
    b = Budget()
    for n, rel in enumerate(targets, 1):
        os.unlink(m / rel)
        if b.over():
            return n
    return len(targets)


READ_OPS: dict[str, tuple[Callable, str]] = {
    "stat walk": (op_stat, "stat/s"),
    "readdir walk": (op_readdir, "entries/s"),
    "small-file reads": (op_small_read, "files/s"),
    "sequential read": (op_seq_read, "MiB/s"),
    "random 4K reads": (op_rand_read, "reads/s"),
    "tar c": (op_tar, "runs/s"),
}
WRITE_OPS: dict[str, tuple[Callable, str]] = {
    "copy-up small files": (op_copyup_small, "files/s"),
    "copy-up large file": (op_copyup_big, "MiB/s"),
    "creates": (op_create, "files/s"),
    "unlink lower files": (op_unlink, "unlinks/s"),
}


def timed(fn: Callable, *args) -> float:
    """Throughput of one run: units per second."""
    t0 = time.perf_counter()
    n = fn(*args)
    return n / (time.perf_counter() - t0)


def changed_files(name: str, s: Stack, sc: Scale) -> list[str]:
    """The files whose data a changing operation writes (private copies in ``plain``)."""
    if name == "copy-up large file":
        return ["big/large.bin"]
    if name == "copy-up small files":
        return _targets(s, sc.copyups)
    return []


def warm_turns(name: str, fn: Callable, impls: list[str], stack: Stack, scale: Scale,
               scratch: pathlib.Path, rows: dict, rounds: int) -> None:
    """Warm samples of a read operation: every implementation mounted at once and its
    caches filled by one untimed run (in the order given), then ``rounds`` rounds in which
    each runs once, in turns (a warm run takes a fraction of a second, so a change of the
    machine's pace falls on all of them alike); after the first round, no more once 10 s
    are spent."""
    with contextlib.ExitStack() as mounts:
        live: dict[str, pathlib.Path] = {}
        for k, impl in enumerate(impls):
            try:
                m = mounts.enter_context(mounted(impl, stack, scratch / f"warm{k}"))
                fn(m, stack, scale)
                live[impl] = m
            except (RuntimeError, OSError) as e:
                print(f"  {name:22s} {impl:15s} FAILED (warm): {e}", file=sys.stderr,
                      flush=True)
        t0 = time.perf_counter()
        for i in range(rounds):
            for impl in turns(list(live), i):
                rows[impl]["warm_samples"].append(timed(fn, live[impl], stack, scale))
            if time.perf_counter() - t0 > 10:
                break


def turns(impls: list[str], i: int) -> list[str]:
    """The implementations in repetition ``i``'s order: the list rotated by ``i``, so that
    each goes first (just after whatever the machine did before) as often as the others."""
    k = i % len(impls) if impls else 0
    return impls[k:] + impls[:k]


def settle(stack: Stack) -> None:
    """Bring the disk to the state every measurement starts from: the stack's writes
    flushed, then one untimed cold pass over its files (the first reads after a large
    write are slow on a virtual disk, and would fall on whichever implementation came
    first)."""
    drop_caches()
    op_stat(stack.plain, stack, FULL)
    for lower in stack.lowers:
        for _dirpath, _dirs, _files in os.walk(lower):
            pass
    drop_caches()


def warm_targets(m: pathlib.Path, s: Stack, name: str, sc: Scale) -> None:
    """Bring what a changing operation touches into the caches (its warm variant)."""
    if name == "copy-up large file":
        op_seq_read(m, s, sc)
    elif name in ("copy-up small files", "unlink lower files"):
        for rel in _targets(s, sc.copyups if "copy" in name else sc.unlinks):
            (m / rel).read_bytes()
    else:
        op_stat(m, s, sc)


# ------------------------------------------------------------------------------ main

def available(impl: str) -> bool:
    return {"unionfs": True, "unionfs-ll": True, "unionfs-hl": True, "plain": True,
            "kernel": True,
            "fuse-overlayfs": shutil.which("fuse-overlayfs") is not None,
            "unionfs-fuse": shutil.which("unionfs-fuse") is not None}[impl.partition(":")[0]]


def run(args: argparse.Namespace) -> dict:
    scale = QUICK if args.quick else FULL
    base = pathlib.Path(args.workdir)
    if base.exists():
        shutil.rmtree(base)
    base.mkdir(parents=True)
    impls = [i for i in args.impls if available(i)]
    big_src = base / "big.src"
    with open(big_src, "wb") as f:
        rng = random.Random(1)
        for _ in range(scale.big_mib):
            f.write(rng.randbytes(1 << 20))
    results: dict = {"scale": scale.__dict__, "impls": impls, "baseline": BASELINE,
                     "stacks": {}}
    for layers in args.layers:
        t0 = time.perf_counter()
        stack = build_stack(base / f"s{layers}", layers, scale, big_src)
        settle(stack)
        print(f"# {layers} layers: {len(stack.files)} files, built in "
              f"{time.perf_counter() - t0:.1f}s", file=sys.stderr, flush=True)
        table: dict = {}
        scratch = base / "scratch"
        # each repetition measures every implementation in turn (A B C, A B C, ...), so a
        # change of the machine's pace during the run (a shared host, this disk's writeback)
        # falls on all of them alike instead of on whichever ran at that moment
        for name, (fn, unit) in READ_OPS.items():
            if args.ops and name not in args.ops:
                continue
            rows = {impl: _row() for impl in impls}
            failed: set[str] = set()
            for i in range(args.cold_repeat):
                for impl in turns(impls, i):
                    if impl in failed:
                        continue
                    try:
                        with mounted(impl, stack, scratch) as m:
                            drop_caches()
                            rows[impl]["cold_samples"].append(timed(fn, m, stack, scale))
                    except (RuntimeError, OSError) as e:  # one tool failing spoils no other
                        print(f"  {name:22s} {impl:15s} FAILED: {e}", file=sys.stderr,
                              flush=True)
                        failed.add(impl)
                        rows[impl] = _row()
            # a warm figure depends on where the kernel happened to put the cached data (a
            # FUSE mount's page cache is filled anew on each mount; the same file read warm
            # moved 15 % between two fresh mounts of one implementation, and of mounts
            # filled one after the other the later read faster): sets of fresh mounts, like
            # the cold figures, filled in an order that rotates as well
            working = [impl for impl in impls if impl not in failed]
            for i in range(args.cold_repeat):
                warm_turns(name, fn, turns(working, i), stack, scale, scratch, rows,
                           args.repeat)
            for impl in impls:
                _best(rows[impl])
            for impl in impls:
                table.setdefault(name, {"unit": unit})[impl] = rows[impl]
                print(f"  {name:22s} {impl:15s} cold {rows[impl]['cold']:12.1f} warm "
                      f"{rows[impl]['warm']:12.1f} {unit}", file=sys.stderr, flush=True)
        for name, (fn, unit) in WRITE_OPS.items():
            if args.ops and name not in args.ops:
                continue
            rows = {impl: _row() for impl in impls}
            for mode in ("cold", "warm"):
                failed = set()
                for i in range(args.cold_repeat):
                    for impl in turns(impls, i):
                        if impl in failed:
                            continue
                        try:
                            with writable(impl, stack, scratch,
                                          changed_files(name, stack, scale)) as m:
                                if mode == "warm":
                                    warm_targets(m, stack, name, scale)
                                else:
                                    drop_caches()
                                rows[impl][f"{mode}_samples"].append(
                                    timed(fn, m, stack, scale))
                        except (RuntimeError, OSError) as e:
                            print(f"  {name:22s} {impl:15s} FAILED: {e}", file=sys.stderr,
                                  flush=True)
                            failed.add(impl)
                            rows[impl][f"{mode}_samples"] = []
            for impl in impls:
                _best(rows[impl])
            for impl in impls:
                table.setdefault(name, {"unit": unit})[impl] = rows[impl]
                print(f"  {name:22s} {impl:15s} cold {rows[impl]['cold']:12.1f} warm "
                      f"{rows[impl]['warm']:12.1f} {unit}", file=sys.stderr, flush=True)
        if scratch.exists():
            shutil.rmtree(scratch)
        for row in table.values():
            base_row = row.get(BASELINE)
            for impl in impls:
                for mode in ("cold", "warm"):
                    if base_row and base_row[mode] > 0:
                        v = row[impl]
                        v[f"{mode}_ratio_of_best"] = v[mode] / base_row[mode]
                        paired = paired_ratio(v[f"{mode}_samples"],
                                              base_row[f"{mode}_samples"])
                        v[f"{mode}_ratio"] = (paired if paired is not None
                                              else v[f"{mode}_ratio_of_best"])
        results["stacks"][str(layers)] = table
        shutil.rmtree(stack.base)
        if args.json:  # what is measured so far survives a later failure
            pathlib.Path(args.json).write_text(json.dumps(results, indent=1))
    shutil.rmtree(base)
    return results


def paired_ratio(mine: list[float], base: list[float]) -> float | None:
    """The median over the rounds of ``mine[i] / base[i]``, the two measured in the same
    round, one just after the other: the machine's pace, which drifts from one round to the
    next (this virtual machine's own speed moved 2x within a minute), cancels out. None
    when the rounds do not pair up (a failed implementation)."""
    if not mine or len(mine) != len(base) or min(base) <= 0:
        return None
    return statistics.median(a / b for a, b in zip(mine, base, strict=True))


def _row() -> dict:
    return {"cold": 0.0, "warm": 0.0, "cold_samples": [], "warm_samples": []}


def _best(row: dict) -> None:
    """A row's figures: the best of its samples (0 where there are none)."""
    for mode in ("cold", "warm"):
        samples = row[f"{mode}_samples"]
        row[mode] = max(samples, default=0.0)


def print_table(results: dict) -> None:
    impls = results["impls"]
    head = f"{'layers':>6} {'operation':22} {'mode':5} " + " ".join(f"{i:>16}" for i in impls)
    print(f"throughput (the best sample), and (in brackets) the ratio to {results['baseline']}: "
          "the median of the rounds' ratios (higher is better)")
    if "seconds" in results:
        print(f"run took {results['seconds']:.0f} s; load average before "
              f"{'/'.join(f'{x:.1f}' for x in results['load_before'])}, after "
              f"{'/'.join(f'{x:.1f}' for x in results['load_after'])}")
    print(head)
    print("-" * len(head))
    for layers, table in results["stacks"].items():
        for name, row in table.items():
            for mode in ("cold", "warm"):
                cells = []
                for impl in impls:
                    v = row[impl]
                    ratio = v.get(f"{mode}_ratio")
                    figure = f"{v[mode]:.0f}" if v[mode] >= 100 else f"{v[mode]:.3g}"
                    cells.append(f"{figure:>9}" + (f" ({ratio:4.2f})" if ratio else " " * 7))
                print(f"{layers:>6} {name:22} {mode:5} " + " ".join(f"{c:>16}" for c in cells)
                      + f"  {row['unit']}")


#: the issue's goals for this mount, as minimum ratios to fuse-overlayfs:
#: (operation, mode, layers or None for every stack, minimum ratio)
GOALS = (
    ("stat walk", "warm", None, 1.0), ("readdir walk", "warm", None, 1.0),
    ("small-file reads", "warm", None, 1.0), ("sequential read", "warm", None, 1.0),
    ("random 4K reads", "warm", None, 1.0), ("stat walk", "cold", "8", 0.8),
    ("stat walk", "cold", "128", 2.0), ("copy-up large file", "cold", None, 1 / 1.5),
    ("creates", "cold", None, 0.8),
)


def print_goals(results: dict) -> None:
    """Each goal of the issue with the ratio measured for this mount: met or not."""
    print("\ngoals (this mount / fuse-overlayfs, same run):")
    for name, mode, layers, minimum in GOALS:
        for stack, table in results["stacks"].items():
            if layers is not None and stack != layers:
                continue
            ratio = table.get(name, {}).get("unionfs", {}).get(f"{mode}_ratio")
            if ratio is None:
                continue
            verdict = "met" if ratio >= minimum else "NOT met"
            print(f"  {name:20} {mode:4} {stack:>3} layers: {ratio:5.2f} "
                  f"(goal >= {minimum:.2f}) {verdict}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="reduced scale (3k files, 32 MiB)")
    ap.add_argument("--layers", type=int, nargs="+", default=None)
    ap.add_argument("--impls", nargs="+", default=list(IMPLS), metavar="IMPL",
                    help=f"{', '.join(IMPLS)}, unionfs-ll, unionfs-hl; unionfs:OPTS mounts "
                         "this project with more -o options (e.g. unionfs:spin=0)")
    ap.add_argument("--ops", nargs="+", default=None, metavar="OP",
                    choices=[*READ_OPS, *WRITE_OPS],
                    help="measure only these operations (default: all), e.g. --ops creates")
    ap.add_argument("--workdir", default="/var/tmp/unionfs-mount-bench")
    ap.add_argument("--json", help="also write the results to this file")
    ap.add_argument("--cold-repeat", type=int, default=3, metavar="N",
                    help="figures are the best of N fresh mounts, each after the caches "
                         "are dropped for a cold one (default 3: one slow moment of a "
                         "shared machine should not decide a ratio)")
    ap.add_argument("--repeat", type=int, default=3, metavar="N",
                    help="warm read runs per set of fresh mounts (every implementation "
                         "mounted at once, the runs taking turns; --cold-repeat sets; "
                         "default 3; fewer once 10 s are spent on one set)")
    ap.add_argument("--budget", type=float, default=5.0, metavar="SECONDS",
                    help="time limit of one measurement; loops stop early and the rate is "
                         "over the units done (0: none; default 5)")
    ap.add_argument("--show", metavar="JSON", help="print the table of an earlier run's JSON")
    args = ap.parse_args(argv)
    known = (*IMPLS, *UNIONFS_APIS)
    for impl in args.impls:
        name, colon, _ = impl.partition(":")
        if name not in known or (colon and name not in UNIONFS_APIS):
            ap.error(f"--impls: {impl!r} is not one of {', '.join(known)} (or unionfs:OPTS)")
    args.cold_repeat = max(1, args.cold_repeat)
    if args.show:
        shown = json.loads(pathlib.Path(args.show).read_text())
        print_table(shown)
        print_goals(shown)
        return 0
    if args.layers is None:
        args.layers = [1, 8] if args.quick else [1, 8, 32, 128]
    if os.geteuid() != 0:
        print("mount_bench needs root (mounts, drop_caches)", file=sys.stderr)
        return 2
    load = os.getloadavg()
    # SIGTERM unwinds like ^C, so every mount is taken down by its finally block
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    Budget.seconds = args.budget
    t0 = time.perf_counter()
    results = run(args)
    results["seconds"] = round(time.perf_counter() - t0, 1)
    results["load_before"] = load
    results["load_after"] = os.getloadavg()
    print_table(results)
    print_goals(results)
    text = json.dumps(results, indent=1)
    if args.json:
        pathlib.Path(args.json).write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
