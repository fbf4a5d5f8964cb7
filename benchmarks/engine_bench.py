"""Engine speed against plain ``os`` calls, measured in one run.

For stacks of 1, 8, 32 and 128 lower layers holding N files between them (every directory
present in every layer: the worst case for merging), it times ``stat``, ``listdir``, ``which``
and small-file reads through ``UnionFS`` and the same calls with ``os`` on one plain
directory holding the merged tree, and reports each as a ratio (engine / os). It also times
opening a cached index of a 100k-entry layer and a copy-up of a large file against ``cp``.

    .venv/bin/python benchmarks/engine_bench.py            # 20k files, 1/8/32/128 layers
    .venv/bin/python benchmarks/engine_bench.py --quick    # 5k files, 1/8/32 layers, small
    .venv/bin/python benchmarks/engine_bench.py --files 100000 --json out.json

Goals (issue 2): 128 layers within 1.2x of 1 layer; engine stat at least as fast as
os.lstat on the plain merged directory; copy-up within 1.2x of cp; index open < 0.5 s.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from unionfs.layer import DirLayer
from unionfs.union import UnionFS

DIRS = 100


def build_stack(root: str, files: int, layers: int) -> tuple[list[str], str, list[str]]:
    """Layer dirs (top-most first), the plain merged dir, and every union file path."""
    layer_dirs = [os.path.join(root, f"layer{k:03d}") for k in range(layers)]
    plain = os.path.join(root, "plain")
    for d in [*layer_dirs, plain]:
        for i in range(DIRS):
            os.makedirs(os.path.join(d, f"d{i:03d}"), exist_ok=True)
    paths = []
    payload = b"x" * 512
    for n in range(files):
        rel = f"/d{n % DIRS:03d}/f{n:06d}"
        paths.append(rel)
        for target in (layer_dirs[n % layers], plain):
            with open(target + rel, "wb") as f:
                f.write(payload)
    return layer_dirs, plain, paths


def timed(fn, *args) -> float:
    """Wall time of one call, with the garbage collector held off (its pauses scale with the
    number of live objects, which is not what is being compared)."""
    gc.collect()
    gc.disable()
    try:
        t0 = time.perf_counter()
        fn(*args)
        return time.perf_counter() - t0
    finally:
        gc.enable()


def rate(n: int, seconds: float) -> float:
    return round(n / seconds, 1) if seconds > 0 else 0.0


def bench_mount_like(root: str, layer_dirs: list[str], cache: str, plain: str,
                     paths: list[str], creates: int) -> dict:
    """The engine calls a FUSE mount makes, on a union built fresh as a mount builds it
    (lower ``DirLayer``s opened from their cached index, nothing looked up yet), each
    against the same work with ``os`` on the plain merged tree:

    - cold lookups: ``lstat`` of every path in walk order on a fresh union with an empty
      writable upper (what the kernel's LOOKUPs ask right after mounting);
    - readdir: a walk of every directory by ``listdir_types`` (name, type, inode: what
      FUSE readdir returns), cold then warm, against ``os.scandir``;
    - creates: a negative lookup, an exclusive create, a stat, a 9-byte write and a close
      per file (FUSE LOOKUP + CREATE + GETATTR + WRITE + RELEASE), 1000 per new directory,
      against ``open``/``write``/``close`` in a copy of the tree;
    - small copy-ups: a stat, an open for writing (the copy-up), a 1-byte write and a close
      of up to 500 lower files, against the least a durable, atomic copy takes with ``os``
      (create a temporary, ``copy_file_range``, ``fsync``, ``rename``, then the write).
    Figures are operations per second; ratios are engine rate / os rate (higher is
    better, 1.0 = as fast as the plain directory)."""
    import stat as st_mod

    walk = sorted(set(paths) | {os.path.dirname(p) for p in paths})

    def fresh() -> UnionFS:
        upper = tempfile.mkdtemp(dir=root, prefix="upper-")
        lowers = [DirLayer(d, cache_dir=cache) for d in layer_dirs]
        return UnionFS(lowers, DirLayer(upper, writable=True),
                       workdir=tempfile.mkdtemp(dir=root, prefix="work-"))

    out: dict = {}
    fs = fresh()
    t = timed(lambda: [fs.lstat(p) for p in walk])
    t_os = min(timed(lambda: [os.lstat(plain + p) for p in walk]) for _ in range(2))
    out["cold_lookup_per_s"] = rate(len(walk), t)
    out["cold_lookup_ratio"] = round(t_os / t, 2)

    def engine_readdir(u: UnionFS) -> int:
        n, todo = 0, ["/"]
        listing = getattr(u, "listdir_types", None) or (  # what the FUSE adapter falls back to
            lambda d: [(e.name, st_mod.S_IFMT(e.stat(follow_symlinks=False).st_mode),
                        e.inode()) for e in u.scandir(d)])
        while todo:
            d = todo.pop()
            for name, fmt, _ino in listing(d):
                n += 1
                if fmt == st_mod.S_IFDIR:
                    todo.append(("" if d == "/" else d) + "/" + name)
        return n

    def os_readdir() -> int:
        n, todo = 0, [plain]
        while todo:
            with os.scandir(todo.pop()) as it:
                for e in it:
                    n += 1
                    if e.is_dir(follow_symlinks=False):
                        todo.append(e.path)
        return n

    fs = fresh()
    entries = os_readdir()
    t_cold = timed(engine_readdir, fs)
    t_warm = min(timed(engine_readdir, fs) for _ in range(3))
    t_os = min(timed(os_readdir) for _ in range(3))
    out.update(readdir_cold_entries_per_s=rate(entries, t_cold),
               readdir_warm_entries_per_s=rate(entries, t_warm),
               readdir_cold_ratio=round(t_os / t_cold, 2),
               readdir_warm_ratio=round(t_os / t_warm, 2))

    fs = fresh()

    def engine_create() -> None:
        fs.mkdir("/created")
        d = "/created"
        for i in range(creates):
            if i % 1000 == 0:
                d = f"/created/c{i // 1000:03d}"
                fs.mkdir(d)
            p = f"{d}/n{i:06d}"
            try:
                fs.lstat(p)
            except FileNotFoundError:
                pass
            f = fs.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, perm=0o644)
            fs.lstat(p)
            f.pwrite(b"new file\n", 0)
            f.close()

    base = tempfile.mkdtemp(dir=root, prefix="plain-create-")

    def os_create() -> None:
        d = base
        for i in range(creates):
            if i % 1000 == 0:
                d = os.path.join(base, f"c{i // 1000:03d}")
                os.mkdir(d)
            p = os.path.join(d, f"n{i:06d}")
            with contextlib.suppress(FileNotFoundError):
                os.lstat(p)
            fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            os.fstat(fd)
            os.pwrite(fd, b"new file\n", 0)
            os.close(fd)

    t = timed(engine_create)
    t_os = timed(os_create)
    out["create_per_s"] = rate(creates, t)
    out["create_ratio"] = round(t_os / t, 2)

    files = [p for p in paths if p.count("/") == 2]
    targets = files[1::max(1, len(files) // 500)][:500]
    fs = fresh()

    def engine_copy_up() -> None:
        for p in targets:
            fs.lstat(p)
            f = fs.open(p, os.O_WRONLY)
            f.pwrite(b"+", 0)
            f.close()

    dest = tempfile.mkdtemp(dir=root, prefix="plain-copy-")

    def os_copy_up() -> None:
        for k, p in enumerate(targets):
            src = plain + p
            os.lstat(src)
            tmp, dst = os.path.join(dest, f"t{k}"), os.path.join(dest, f"f{k}")
            fi = os.open(src, os.O_RDONLY)
            fo = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            os.copy_file_range(fi, fo, os.fstat(fi).st_size)
            os.fsync(fo)
            os.close(fo)
            os.close(fi)
            os.rename(tmp, dst)
            fd = os.open(dst, os.O_WRONLY)
            os.pwrite(fd, b"+", 0)
            os.close(fd)

    t = timed(engine_copy_up)
    t_os = timed(os_copy_up)
    out["copyup_small_per_s"] = rate(len(targets), t)
    out["copyup_small_ratio"] = round(t_os / t, 2)
    return out


def bench_stack(tmp: str, files: int, layers: int, sample: int, creates: int = 5000) -> dict:
    root = os.path.join(tmp, f"stack{layers}")
    layer_dirs, plain, paths = build_stack(root, files, layers)
    cache = os.path.join(tmp, "cache")
    t_index = timed(lambda: [DirLayer(d, cache_dir=cache) for d in layer_dirs])
    t0 = time.perf_counter()
    lowers = [DirLayer(d, cache_dir=cache) for d in layer_dirs]
    t_open = time.perf_counter() - t0
    fs = UnionFS(lowers)
    rng = random.Random(1)
    order = paths[:]
    rng.shuffle(order)
    host = [plain + p for p in order]
    dirs = [f"/d{i:03d}" for i in range(DIRS)]
    reads = order[:sample]

    def engine_stat():
        for p in order:
            fs.stat(p)

    def os_stat():
        for p in host:
            os.lstat(p)

    def engine_list():
        for d in dirs:
            fs.listdir(d)

    def os_list():
        for d in dirs:
            os.listdir(plain + d)

    def engine_which():
        for p in reads:
            fs.which(p)

    def engine_read():
        for p in reads:
            with fs.open(p, "rb") as f:
                f.read()

    def os_read():
        for p in reads:
            with open(plain + p, "rb") as f:
                f.read()

    upper_dir = os.path.join(root, "upper")
    os.makedirs(upper_dir)
    fs_up = UnionFS(lowers, DirLayer(upper_dir, writable=True))

    def engine_stat_upper():  # the container case: an (empty) writable upper on top
        for p in order:
            fs_up.stat(p)

    cold = timed(engine_stat)  # first pass merges each directory once
    res = {
        "layers": layers, "files": files,
        "index_build_s": round(t_index, 4), "index_open_s": round(t_open, 4),
        "stat_cold_s": round(cold, 4),
    }
    res.update(bench_mount_like(root, layer_dirs, cache, plain, paths, creates))
    for name, eng, ref in (("stat", engine_stat, os_stat),
                           ("stat_upper", engine_stat_upper, os_stat),
                           ("listdir", engine_list, os_list),
                           ("read", engine_read, os_read), ("which", engine_which, os_stat)):
        e = min(timed(eng) for _ in range(3))
        o = min(timed(ref) for _ in range(3))
        if name == "which":  # compared with lstat of as many paths
            o = o * len(reads) / len(order)
        res[f"{name}_engine_s"] = round(e, 4)
        res[f"{name}_os_s"] = round(o, 4)
        res[f"{name}_ratio"] = round(e / o, 2)
    shutil.rmtree(root)
    return res


def bench_index(tmp: str, entries: int) -> dict:
    root = os.path.join(tmp, "big")
    per_dir = 1000
    for n in range(entries):
        d = os.path.join(root, f"d{n // per_dir:04d}")
        if n % per_dir == 0:
            os.makedirs(d)
        with open(os.path.join(d, f"f{n:06d}"), "wb"):
            pass
    cache = os.path.join(tmp, "bigcache")
    t_scan = timed(DirLayer, root, False)
    t_first = timed(lambda: DirLayer(root, cache_dir=cache))
    t_open = min(timed(lambda: DirLayer(root, cache_dir=cache)) for _ in range(3))
    layer = DirLayer(root, cache_dir=cache)
    assert layer.index_source == "cache"
    shutil.rmtree(root)
    return {"entries": entries, "scan_no_cache_s": round(t_scan, 3),
            "scan_and_write_cache_s": round(t_first, 3), "open_cached_s": round(t_open, 3)}


def bench_copy_up(tmp: str, mib: int) -> dict:
    low = os.path.join(tmp, "cu-lower")
    os.makedirs(low)
    big = os.path.join(low, "big")
    block = os.urandom(1 << 20)
    with open(big, "wb") as f:
        for _ in range(mib):
            f.write(block)
    results = []
    for _ in range(3):
        up = tempfile.mkdtemp(dir=tmp)
        fs = UnionFS([DirLayer(low, cache=False)], DirLayer(up, writable=True))
        t_engine = timed(fs.copy_up, "/big")
        up2 = tempfile.mkdtemp(dir=tmp)
        fs = UnionFS([DirLayer(low, cache=False)], DirLayer(up2, writable=True), volatile=True)
        t_volatile = timed(fs.copy_up, "/big")
        shutil.rmtree(up2)
        dst = os.path.join(tmp, "cp-copy")
        t_cp = timed(subprocess.run, ["cp", big, dst])
        # cp does not fsync; the engine's copy-up does (crash safety): time a synced cp too
        t_cp_sync = t_cp + timed(subprocess.run, ["sync", dst])
        os.unlink(dst)
        shutil.rmtree(up)
        results.append((t_engine, t_cp, t_cp_sync, t_volatile))
    e, c, cs, v = (min(r[i] for r in results) for i in range(4))
    shutil.rmtree(low)
    return {"mib": mib, "engine_s": round(e, 3), "engine_volatile_s": round(v, 3),
            "ratio_volatile_vs_cp": round(v / c, 2), "cp_s": round(c, 3),
            "cp_then_sync_s": round(cs, 3), "ratio_vs_cp": round(e / c, 2),
            "ratio_vs_cp_sync": round(e / cs, 2)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--files", type=int, default=20000)
    ap.add_argument("--layers", default="1,8,32,128")
    ap.add_argument("--index-entries", type=int, default=100000)
    ap.add_argument("--copy-mib", type=int, default=256)
    ap.add_argument("--sample", type=int, default=2000, help="files read / asked 'which'")
    ap.add_argument("--creates", type=int, default=10000, help="files created per stack")
    ap.add_argument("--quick", action="store_true", help="reduced scale: a minute or less")
    ap.add_argument("--json", help="also write the JSON here")
    ap.add_argument("--tmp", default=None, help="where to build the trees")
    args = ap.parse_args(argv)
    if args.quick:
        args.files, args.layers, args.index_entries, args.copy_mib, args.sample = \
            5000, "1,8,32", 100000, 64, 1000
        args.creates = 2000
    layers = [int(x) for x in args.layers.split(",")]
    tmp = tempfile.mkdtemp(prefix="unionfs-bench-", dir=args.tmp)
    try:
        stacks = [bench_stack(tmp, args.files, n, args.sample, args.creates) for n in layers]
        index = bench_index(tmp, args.index_entries)
        copy = bench_copy_up(tmp, args.copy_mib)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    base = stacks[0]
    print(f"{'layers':>6} {'files':>7} {'stat':>7} {'stat+up':>8} {'listdir':>8} {'read':>7} "
          f"{'which':>7} "
          f"{'stat vs 1 layer':>16} {'cold stat s':>12} {'index open s':>13}")
    for r in stacks:
        print(f"{r['layers']:>6} {r['files']:>7} {r['stat_ratio']:>6}x "
              f"{r['stat_upper_ratio']:>7}x {r['listdir_ratio']:>7}x "
              f"{r['read_ratio']:>6}x {r['which_ratio']:>6}x "
              f"{r['stat_engine_s'] / base['stat_engine_s']:>15.2f}x "
              f"{r['stat_cold_s']:>12} {r['index_open_s']:>13}")
    print("(ratios: engine time / os time on the plain merged directory; lower is better)")
    print(f"\n{'layers':>6} {'cold lookup/s':>14} {'readdir cold/s':>15} {'readdir warm/s':>15} "
          f"{'creates/s':>13} {'copy-ups/s':>13}   (FUSE-like calls on a fresh union; "
          "[rate ratio to os, higher is better])")
    for r in stacks:
        print(f"{r['layers']:>6} {r['cold_lookup_per_s']:>9.0f} [{r['cold_lookup_ratio']:>4}]"
              f" {r['readdir_cold_entries_per_s']:>9.0f} [{r['readdir_cold_ratio']:>4}]"
              f" {r['readdir_warm_entries_per_s']:>9.0f} [{r['readdir_warm_ratio']:>4}]"
              f" {r['create_per_s']:>6.0f} [{r['create_ratio']:>4}]"
              f" {r['copyup_small_per_s']:>6.0f} [{r['copyup_small_ratio']:>4}]")
    print(f"load average at the end: {os.getloadavg()[0]:.2f} (figures from a loaded machine "
          "are not comparable)")
    print(f"index of {index['entries']} entries: scan {index['scan_no_cache_s']} s, "
          f"open from cache {index['open_cached_s']} s (goal < 0.5 s)")
    print(f"copy-up of {copy['mib']} MiB: engine {copy['engine_s']} s (fsync), cp {copy['cp_s']} s "
          f"({copy['ratio_vs_cp']}x; vs cp+sync {copy['ratio_vs_cp_sync']}x); volatile=True "
          f"{copy['engine_volatile_s']} s ({copy['ratio_volatile_vs_cp']}x vs cp; goal <= 1.2x)")
    doc = {"stacks": stacks, "index": index, "copy_up": copy,
           "layer_independence": {str(r["layers"]): round(r["stat_engine_s"]
                                                         / base["stat_engine_s"], 2)
                                  for r in stacks}}
    print(json.dumps(doc))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(doc, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
