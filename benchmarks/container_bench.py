"""Container speed, measured in one run (prints a table and JSON).

1. commit: a container that changed N small files and wrote one big file (half random
   bytes). ``Container.commit`` (pack the upper dir into one gzip OCI layer, hash it, record
   the image) against the floor measured on the same upper dir in the same run: ``tar`` piped
   through ``sha256sum`` and a gzip at the same level (``gzip -6`` single-threaded, and
   ``pigz -6 -p CPUS`` as our packer deflates in parallel); the ratio is to the faster floor.
   Goal (issue 4): within 1.3x.
2. diff: a container with K changes over an image of L unchanged lower files, for L small
   and L large with the same K. ``diff`` walks the upper layer only, so its time must not
   grow with L (the ratio large/small stays near 1).

    .venv/bin/python benchmarks/container_bench.py            # 10k files + 512 MiB; 100k lower
    .venv/bin/python benchmarks/container_bench.py --quick    # 1k files + 32 MiB; 10k lower
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


def bench_diff(work: str, lower_small: int, lower_large: int, changes: int) -> dict:
    out = {}
    for label, n in (("small", lower_small), ("large", lower_large)):
        store = Store(os.path.join(work, f"root-diff-{label}"), fsync=False)
        t = time.perf_counter()
        make_image(store, work, f"lower:{label}", n)
        build_s = time.perf_counter() - t
        cs = ContainerStore(store)
        c = cs.create(f"lower:{label}")
        fs = c.fs
        for i in range(changes):
            d = f"/usr/share/d{i % 100:03d}"
            if i % 3 == 0:
                with fs.open(f"{d}/f{i:06d}", "ab") as f:   # copy-up: C
                    f.write(b"changed\n")
            elif i % 3 == 1:
                fs.unlink(f"{d}/f{i:06d}")                  # whiteout: D
            else:
                with fs.open(f"{d}/new{i:06d}", "wb") as f:  # new: A
                    f.write(b"new\n")
        times = []
        for _ in range(5):
            fresh = cs.get(c.id)  # a new union each time: nothing cached from the writes
            t = time.perf_counter()
            lines = fresh.diff()
            times.append(time.perf_counter() - t)
        out[label] = {"lower_files": n, "changes": changes, "diff_lines": len(lines),
                      "diff_s_best": round(min(times), 4), "build_s": round(build_s, 2)}
    out["large_vs_small"] = round(out["large"]["diff_s_best"] / out["small"]["diff_s_best"], 3)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="reduced scale (about a minute)")
    ap.add_argument("--small-files", type=int)
    ap.add_argument("--big-mib", type=int)
    ap.add_argument("--lower-files", type=int)
    ap.add_argument("--changes", type=int)
    ap.add_argument("--json", help="also write the results here")
    ap.add_argument("--dir", help="work directory (default: a temporary one)")
    args = ap.parse_args()
    small = args.small_files or (1000 if args.quick else 10_000)
    big = args.big_mib if args.big_mib is not None else (32 if args.quick else 512)
    lower = args.lower_files or (10_000 if args.quick else 100_000)
    changes = args.changes or (100 if args.quick else 1000)
    work = tempfile.mkdtemp(prefix="container-bench-", dir=args.dir)
    try:
        commit = bench_commit(work, small, big)
        diff = bench_diff(work, max(changes, 1000), lower, changes)
    finally:
        shutil.rmtree(work, ignore_errors=True)
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
    print(f"\ndiff with {changes} changes (A/C/D) over N unchanged lower files")
    print(f"  {'lower files':>12} {'diff lines':>11} {'best of 5 (s)':>14}")
    for label in ("small", "large"):
        d = diff[label]
        print(f"  {d['lower_files']:>12} {d['diff_lines']:>11} {d['diff_s_best']:>14.4f}")
    print(f"  time(large) / time(small) = {diff['large_vs_small']}  (flat = independent of "
          "the lower layers)")
    result = {"commit": commit, "diff": diff, "quick": args.quick}
    print("\n" + json.dumps(result, indent=2))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
