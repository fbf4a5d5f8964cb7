"""Warm reads the kernel serves alone, with a control: how far apart two mounts of the same
implementation read the same cached file.

    sudo .venv/bin/python benchmarks/warm_reads.py
    sudo .venv/bin/python benchmarks/warm_reads.py --impls unionfs unionfs fuse-overlayfs \\
        fuse-overlayfs --op random --rounds 20

Once a file's pages are in the kernel's cache, a read of it on a FUSE mount sends the daemon
no request (`-d` shows none), yet its speed still moves from one mount to the next: where
the kernel put the pages when it filled the cache decides it (on this machine two
fuse-overlayfs mounts of one file read 0.84 and 1.00 of a third). A ratio below 1 for one
mount against another is only telling when it is outside that spread, which this script
measures: every listed implementation is mounted once over the same one-layer stack (a name
may repeat, as a control), its copy of the file read once to fill the cache, then in each
round every mount reads it once, in an order that rotates from round to round. Prints each
mount's median and best rate and the median of its per-round ratios to the last mount
listed, with their range.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import pathlib
import random
import shutil
import statistics
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

import mount_bench as mb  # (the benchmark's mounts and operations)

OPS = {"sequential": mb.op_seq_read, "random": mb.op_rand_read}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--impls", nargs="+", metavar="IMPL",
                    default=["unionfs", "unionfs", "fuse-overlayfs", "fuse-overlayfs"],
                    help="implementations to mount, in mount_bench's names; repeat one for "
                         "a control (default: unionfs twice, fuse-overlayfs twice)")
    ap.add_argument("--op", choices=sorted(OPS), default="sequential",
                    help="1 MiB sequential reads of the whole file, or 4 KiB random reads")
    ap.add_argument("--rounds", type=int, default=12)
    ap.add_argument("--mib", type=int, default=256, help="size of the file (MiB)")
    ap.add_argument("--workdir", default="/var/tmp/unionfs-warm-reads")
    args = ap.parse_args(argv)
    if os.geteuid() != 0:
        print("warm_reads needs root (mounts)", file=sys.stderr)
        return 2
    for impl in args.impls:
        if not mb.available(impl):
            ap.error(f"{impl} is not installed")
    base = pathlib.Path(args.workdir)
    if base.exists():
        shutil.rmtree(base)
    lower = base / "l000"
    (lower / "big").mkdir(parents=True)
    with open(lower / "big/large.bin", "wb") as f:
        rng = random.Random(1)
        for _ in range(args.mib):
            f.write(rng.randbytes(1 << 20))
    scale = mb.Scale(files=1, big_mib=args.mib, small_reads=0, rand_reads=20_000,
                     copyups=0, creates=0, unlinks=0)
    stack = mb.Stack(base, [lower], lower, ["big/large.bin"], ["big", "big/large.bin"], [])
    fn = OPS[args.op]
    names = [f"{impl}#{k}" for k, impl in enumerate(args.impls)]
    rates: dict[str, list[float]] = {n: [] for n in names}
    try:
        with contextlib.ExitStack() as mounts:
            where = {}
            for k, (name, impl) in enumerate(zip(names, args.impls, strict=True)):
                where[name] = mounts.enter_context(mb.mounted(impl, stack, base / f"m{k}"))
                fn(where[name], stack, scale)  # fills the cache (not counted)
            for r in range(args.rounds):
                for name in mb.turns(names, r):
                    rates[name].append(mb.timed(fn, where[name], stack, scale))
    finally:
        shutil.rmtree(base, ignore_errors=True)
    unit = "MiB/s" if args.op == "sequential" else "reads/s"
    last = rates[names[-1]]
    print(f"warm {args.op} reads, {args.rounds} rounds; ratio: median of the rounds' ratios "
          f"to {names[-1]} (range)")
    for name in names:
        v = rates[name]
        ratios = [a / b for a, b in zip(v, last, strict=True)]
        print(f"  {name:24s} median {statistics.median(v):9.0f} best {max(v):9.0f} {unit}  "
              f"ratio {statistics.median(ratios):.2f} ({min(ratios):.2f}-{max(ratios):.2f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
