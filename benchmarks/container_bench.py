"""Container speed, measured in one run (prints a table and JSON).

1. commit: a container that changed N small files and wrote one big file (half random
   bytes). ``Container.commit`` (pack the upper dir into one gzip OCI layer, hash it, record
   the image) against the floor measured on the same upper dir in the same run: ``tar`` piped
   through ``sha256sum`` and a gzip at the same level (``gzip -6`` single-threaded, and
   ``pigz -6 -p CPUS`` as our packer deflates in parallel); the ratio is to the faster floor.
   Goal (issue 4): within 1.3x.
2. diff: the same K = 1000 changes (C, D and A) in containers over images of 1k, 10k and
   100k lower files. ``Container.diff`` walks the upper layer only and asks the lower layers
   about those paths alone, so its time must not grow with the lower layers (goal: the
   ratio largest/smallest near 1.0). The table also counts the lower-layer lookups and
   listings the diff made (the same for every size) and the bytes it read from them (0),
   and times the engine's ``changes(fs)`` over indexed lower layers for contrast.

    .venv/bin/python benchmarks/container_bench.py            # 10k files + 512 MiB; 1k..100k
    .venv/bin/python benchmarks/container_bench.py --quick    # 1k files + 32 MiB; 1k, 10k
    .venv/bin/python benchmarks/container_bench.py --only diff --lower-files 1000 10000 100000
    .venv/bin/python benchmarks/container_bench.py --json out.json
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from imagesim import layers as _layers
from imagesim.container import ContainerStore, CreateOptions
from imagesim.image import Image
from imagesim.store import Store

MiB = 1 << 20


def make_image(store: Store, work: str, tag: str, lower_files: int) -> Image:
    """One base layer with ``lower_files`` small files spread over 100 directories."""
    src = os.path.join(work, f"src-{tag.replace(':', '-')}")
    for i in range(lower_files):
        d = os.path.join(src, "usr", "share", f"d{i % 100:03d}")
        if i < 100:
            os.makedirs(d, exist_ok=True)
        with open(os.path.join(d, f"f{i:06d}"), "wb") as f:
            f.write(b"lower file %d\n" % i)
    os.makedirs(os.path.join(src, "etc"), exist_ok=True)
    with open(os.path.join(src, "etc", "hosts"), "wb") as f:
        f.write(b"127.0.0.1 localhost\n")
    res = _layers.pack_to_blobs(src, store.blobs, compression="none")
    img = Image.new(config={"Cmd": ["/bin/sh"]}).append_layer(
        res.descriptor(), res.diff_id, created_by="ADD base")
    image = store.put_image(img, [tag])
    shutil.rmtree(src)
    return image


def write_changes(fs, small: int, big_bytes: int) -> None:
    fs.makedirs("/app/data", exist_ok=True)
    for i in range(small):
        if i % 1000 == 0:
            fs.makedirs(f"/app/data/g{i // 1000:03d}", exist_ok=True)
        with fs.open(f"/app/data/g{i // 1000:03d}/f{i:06d}", "wb") as f:
            f.write(os.urandom(100) + b"\n" * 400)
    if big_bytes:
        rnd = os.urandom(MiB // 2)
        with fs.open("/app/big.bin", "wb") as f:
            for k in range(big_bytes // MiB):
                f.write(rnd if k % 2 == 0 else rnd[::-1])  # random bytes, not one block
                f.write(b"\0" * (MiB // 2))                 # and compressible zeros


def floor(upper: str, cmd: str) -> float:
    t = time.perf_counter()
    subprocess.run(["bash", "-c", f"set -o pipefail; tar -C {upper} -cf - . | "
                                  f"tee >(sha256sum >/dev/null) | {cmd} | sha256sum >/dev/null"],
                   check=True)
    return time.perf_counter() - t


def bench_commit(work: str, small: int, big_mib: int) -> dict:
    store = Store(os.path.join(work, "root-commit"), fsync=False)
    make_image(store, work, "base:1", 100)
    cs = ContainerStore(store)
    c = cs.create("base:1", CreateOptions(name="committer"))
    t = time.perf_counter()
    write_changes(c.fs, small, big_mib * MiB)
    write_s = time.perf_counter() - t
    subprocess.run(["sync"], check=False)
    upper = c.upper_dir
    cpus = os.cpu_count() or 1
    # warm the page cache for everybody alike: one tar read first
    subprocess.run(["bash", "-c", f"tar -C {upper} -cf - . > /dev/null"], check=True)
    floors = {"tar|sha256|gzip -6": floor(upper, "gzip -6")}
    if shutil.which("pigz"):
        floors[f"tar|sha256|pigz -6 -p{cpus}"] = floor(upper, f"pigz -6 -p {cpus}")
    t = time.perf_counter()
    res = _layers.pack_to_blobs(upper, store.blobs)
    pack_s = time.perf_counter() - t
    commit_layer_s = None
    if hasattr(store, "commit_layer"):
        # pack + unpack of the same tar bytes (what commit records); this run's layer
        # directory is discarded since the store gets the same diff id again below
        other = Store(os.path.join(work, "root-commit-layer"), fsync=False)
        t = time.perf_counter()
        other.commit_layer(upper)
        commit_layer_s = time.perf_counter() - t
        shutil.rmtree(other.root, ignore_errors=True)
    t = time.perf_counter()
    image = c.commit("bench:committed", author="bench", message="bench")
    commit_s = time.perf_counter() - t
    best = min(floors.values())
    return {
        "small_files": small, "big_file_mib": big_mib, "write_s": round(write_s, 3),
        "layer_bytes": res.size, "tar_bytes": res.tar_size,
        "floors_s": {k: round(v, 3) for k, v in floors.items()},
        "pack_s": round(pack_s, 3), "commit_s": round(commit_s, 3),
        "commit_layer_s": None if commit_layer_s is None else round(commit_layer_s, 3),
        "pack_vs_floor": round(pack_s / best, 3), "commit_vs_floor": round(commit_s / best, 3),
        "image": str(image.id)[:19],
    }


class CountingLayer:
    """A lower layer wrapper that counts what the diff asks of it (lookups, listings, bytes
    read): the proof that the lower layers are probed per changed path, never read."""

    def __init__(self, inner) -> None:
        self.inner, self.name = inner, inner.name
        self.lookups = self.listdirs = self.bytes_read = 0

    def lookup(self, path):
        self.lookups += 1
        return self.inner.lookup(path)

    def listdir(self, path):
        self.listdirs += 1
        return self.inner.listdir(path)

    def read(self, path, offset, size):
        data = self.inner.read(path, offset, size)
        self.bytes_read += len(data)
        return data

    def open_read(self, path):
        raise AssertionError(f"diff opened lower file {path}")

    def readlink(self, path):
        return self.inner.readlink(path)

    def host_path(self, path):
        return self.inner.host_path(path)


def make_changes(fs, changes: int) -> None:
    """The same ``changes`` on every image: a third appended to (copy-up: C), a third
    deleted (whiteout: D), a third new files (A), spread over the 100 lower directories."""
    for i in range(changes):
        d = f"/usr/share/d{i % 100:03d}"
        if i % 3 == 0:
            with fs.open(f"{d}/f{i:06d}", "ab") as f:
                f.write(b"changed\n")
        elif i % 3 == 1:
            fs.unlink(f"{d}/f{i:06d}")
        else:
            with fs.open(f"{d}/new{i:06d}", "wb") as f:
                f.write(b"new\n")


def bench_diff(work: str, sizes: list[int], changes: int, repeat: int = 7) -> dict:
    """``Container.diff`` time for the same ``changes`` over images of each size in
    ``sizes`` (unchanged lower files), best of ``repeat``, plus the lower-layer questions
    it asked, and for contrast the engine's ``changes(fs)`` over indexed lower layers. The
    timed runs go round the sizes in turn, so a burst of load elsewhere hits them alike."""
    from unionfs.diff import changes as union_changes
    from unionfs.diff import probe_layer, upper_changes

    built = []
    for n in sizes:
        store = Store(os.path.join(work, f"root-diff-{n}"), fsync=False)
        t = time.perf_counter()
        make_image(store, work, f"lower:{n}", n)
        build_s = time.perf_counter() - t
        cs = ContainerStore(store)
        c = cs.create(f"lower:{n}")
        make_changes(c.fs, changes)
        built.append((n, store, cs, c, build_s))
    # write back the freshly built layers first (the flusher would otherwise compete with
    # the timed runs) and warm the dentry cache alike for every size
    os.sync()
    for _n, _store, _cs, c, _b in built:
        c.diff()
    times: dict[int, list[float]] = {n: [] for n in sizes}
    indexed: dict[int, list[float]] = {n: [] for n in sizes}
    lines: dict[int, list] = {}
    for r in range(repeat):
        for n, _store, cs, c, _b in built:
            fresh = cs.get(c.id)  # a new container object each time: nothing cached
            t = time.perf_counter()
            lines[n] = fresh.diff()
            times[n].append(time.perf_counter() - t)
            if r % 2 == 0:
                fresh = cs.get(c.id)
                t = time.perf_counter()
                assert list(union_changes(fresh.fs)) == lines[n]
                indexed[n].append(time.perf_counter() - t)
    rows = []
    for n, store, _cs, c, build_s in built:
        counted = [CountingLayer(probe_layer(d)) for d in c.lower_dirs]
        assert upper_changes(c.upper_dir, counted) == lines[n]
        rows.append({
            "lower_files": n, "changes": changes, "diff_lines": len(lines[n]),
            "diff_s_best": round(min(times[n]), 4),
            "diff_s_median": round(sorted(times[n])[len(times[n]) // 2], 4),
            "lower_lookups": sum(x.lookups for x in counted),
            "lower_listdirs": sum(x.listdirs for x in counted),
            "lower_bytes_read": sum(x.bytes_read for x in counted),
            "indexed_union_s_best": round(min(indexed[n]), 4),
            "build_s": round(build_s, 2)})
        shutil.rmtree(store.root, ignore_errors=True)
    base = rows[0]["diff_s_best"]
    return {"rows": rows, "repeat": repeat,
            "largest_vs_smallest": round(rows[-1]["diff_s_best"] / base, 3) if base else None}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="reduced scale (about a minute)")
    ap.add_argument("--small-files", type=int)
    ap.add_argument("--big-mib", type=int)
    ap.add_argument("--lower-files", type=int, nargs="+",
                    help="image sizes for the diff bench (default 1000 10000 100000)")
    ap.add_argument("--only", choices=("commit", "diff"), help="run one of the two benches")
    ap.add_argument("--changes", type=int)
    ap.add_argument("--json", help="also write the results here")
    ap.add_argument("--dir", help="work directory (default: a temporary one)")
    args = ap.parse_args()
    small = args.small_files or (1000 if args.quick else 10_000)
    big = args.big_mib if args.big_mib is not None else (32 if args.quick else 512)
    sizes = sorted(args.lower_files or ([1000, 10_000] if args.quick else
                                        [1000, 10_000, 100_000]))
    changes = args.changes or 1000
    if changes > sizes[0]:
        ap.error("--changes must not exceed the smallest --lower-files (the same files "
                 "change in every image)")
    if args.dir:
        os.makedirs(args.dir, exist_ok=True)
    if args.dir:
        os.makedirs(args.dir, exist_ok=True)
    work = tempfile.mkdtemp(prefix="container-bench-", dir=args.dir)
    commit = diff = None
    try:
        if args.only != "diff":
            commit = bench_commit(work, small, big)
        if args.only != "commit":
            diff = bench_diff(work, sizes, changes)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    load = os.getloadavg()
    print(f"load average: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} on {os.cpu_count()} CPUs")
    if commit is not None:
        print_commit(commit, small, big)
    if diff is not None:
        print_diff(diff, changes)
    result = {"commit": commit, "diff": diff, "quick": args.quick,
              "loadavg": [round(x, 2) for x in load]}
    print("\n" + json.dumps(result, indent=2))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)


def print_commit(commit: dict, small: int, big: int) -> None:
    print(f"\ncommit of {small} small files + one {big} MiB file "
          f"(layer {commit['layer_bytes'] / MiB:.1f} MiB gzip, "
          f"tar {commit['tar_bytes'] / MiB:.1f} MiB)")
    print(f"  {'what':34} {'seconds':>9} {'x floor':>8}")
    best = min(commit["floors_s"].values())
    for k, v in commit["floors_s"].items():
        print(f"  {'floor ' + k:34} {v:9.3f} {v / best:8.2f}")
    print(f"  {'pack (layers.pack_to_blobs)':34} {commit['pack_s']:9.3f} "
          f"{commit['pack_vs_floor']:8.2f}")
    if commit["commit_layer_s"] is not None:
        print(f"  {'store.commit_layer (pack+unpack)':34} {commit['commit_layer_s']:9.3f} "
              f"{commit['commit_layer_s'] / best:8.2f}")
    print(f"  {'Container.commit (all of it)':34} {commit['commit_s']:9.3f} "
          f"{commit['commit_vs_floor']:8.2f}   goal <= 1.30")


def print_diff(diff: dict, changes: int) -> None:
    print(f"\ndiff with the same {changes} changes (A/C/D) over N unchanged lower files")
    print(f"  {'lower files':>12} {'diff lines':>11} {'diff best (s)':>14} {'median (s)':>11} "
          f"{'lower lookups':>14} {'listdirs':>9} {'bytes read':>11} {'indexed union (s)':>18}")
    for d in diff["rows"]:
        print(f"  {d['lower_files']:>12} {d['diff_lines']:>11} {d['diff_s_best']:>14.4f} "
              f"{d['diff_s_median']:>11.4f} {d['lower_lookups']:>14} {d['lower_listdirs']:>9} "
              f"{d['lower_bytes_read']:>11} {d['indexed_union_s_best']:>18.4f}")
    print(f"  diff time(largest) / time(smallest) = {diff['largest_vs_smallest']}  "
          "(goal ~1.0: grows with the upper layer only)")


if __name__ == "__main__":
    main()
