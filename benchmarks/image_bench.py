"""Layer pack/unpack and save/load throughput, against floors measured in the same run.

    .venv/bin/python benchmarks/image_bench.py                 # 1 GiB, 50k files (slow)
    .venv/bin/python benchmarks/image_bench.py --scale 0.1     # 100 MiB, 5k files
    .venv/bin/python benchmarks/image_bench.py --json out.json

The tree is generated once (half random bytes, half text-like), then timed:

* floor: ``tar -cf - | tee >(sha256sum) | gzip -1 | sha256sum`` (and pigz, zstd variants):
  the same work (tar + both hashes + compression) done by C tools in a pipeline;
* ``layers.pack`` with gzip level 1, the default level and 6 (parallel deflate) and zstd
  level 3 (threads);
* ``umoci repack`` of the same tree (when umoci is installed and we are root);
* unpack: ``layers.unpack`` (safe, overlayfs format, verified) vs ``tar -xzf`` and
  ``umoci unpack``;
* save and load of an image holding the layer.

Prints a table and a JSON document (``--json FILE`` also writes it). Ratios are
time / floor time, so lower is better; the goals are pack <= 1.3x the gzip -1 floor and
faster than umoci. Each row also has the CPU seconds it used (ours and the tools'; a loaded
machine stretches wall time far more than CPU time) and, for packs, the compressed size over
the tar size (``size``): the default gzip level should not compress worse than umoci's
writer. The load average at start and end is printed: never judge a goal on a loaded run.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from imagesim import archive, layers, oci
from imagesim.image import Image
from imagesim.store import Store

WORDS = [b"layer", b"image", b"container", b"union", b"overlay", b"whiteout", b"opaque",
         b"digest", b"manifest", b"config", b"tar", b"gzip", b"zstd", b"sha256", b"blob",
         b"registry", b"tomcat", b"mysql", b"redis", b"ubuntu", b"kernel", b"inode"]


def make_tree(root: str, total: int, files: int, seed: int = 42) -> tuple[int, int]:
    """``files`` files holding ``total`` bytes in nested directories; half the bytes random,
    half text. Most files small, a few large (as a real rootfs)."""
    rng = random.Random(seed)
    small = int(files * 0.97)
    small_bytes = min(total // 3, small * 8192)
    sizes = [max(1, int(rng.expovariate(1 / max(1, small_bytes // small)))) for _ in
             range(small)]
    scale = small_bytes / max(1, sum(sizes))
    sizes = [max(1, int(s * scale)) for s in sizes]
    big = files - small
    rest = max(0, total - sum(sizes))
    sizes += [rest // max(1, big)] * big
    text_block = b" ".join(rng.choice(WORDS) for _ in range(200_000))
    written = 0
    for i, size in enumerate(sizes):
        d = os.path.join(root, f"d{i % 97:02d}", f"s{i % 13:02d}")
        os.makedirs(d, exist_ok=True)
        with open(os.path.join(d, f"f{i:06d}"), "wb") as f:
            left = size
            while left > 0:
                n = min(left, 1 << 20)
                if rng.random() < 0.5:
                    f.write(rng.randbytes(n))
                else:
                    off = rng.randrange(0, len(text_block) - n) if n < len(text_block) else 0
                    f.write((text_block * (1 + n // len(text_block)))[off:off + n])
                left -= n
        written += size
    return written, len(sizes)


_CPU: dict[str, float] = {"last": 0.0}


def _cpu_now() -> float:
    """CPU seconds of this process and of its finished children (the shell pipelines)."""
    own = time.process_time()
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own + kids.ru_utime + kids.ru_stime


def timed(fn) -> tuple[float, object]:
    """Wall seconds of ``fn()`` and its result; the CPU seconds it used go to _CPU["last"]
    (a loaded machine stretches wall time much more than CPU time)."""
    c = _cpu_now()
    t = time.perf_counter()
    result = fn()
    wall = time.perf_counter() - t
    _CPU["last"] = _cpu_now() - c
    return wall, result


def sh(cmd: str) -> None:
    subprocess.run(["bash", "-c", cmd], check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)


def have(tool: str) -> bool:
    return shutil.which(tool) is not None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scale", type=float, default=1.0,
                    help="fraction of the 1 GiB / 50k-file tree (default 1.0)")
    ap.add_argument("--dir", help="work directory (default: a temporary one)")
    ap.add_argument("--json", help="also write the JSON result here")
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args(argv)

    load_start = os.getloadavg()
    work = args.dir or tempfile.mkdtemp(prefix="image-bench-")
    os.makedirs(work, exist_ok=True)
    tree = os.path.join(work, "tree")
    total = int((1 << 30) * args.scale)
    nfiles = max(100, int(50_000 * args.scale))
    results: dict[str, dict[str, float]] = {}
    try:
        if os.path.isdir(tree):
            shutil.rmtree(tree)
        os.makedirs(tree)
        written, nfiles = make_tree(tree, total, nfiles)
        mb = written / 1e6

        def record(name: str, seconds: float, group: str, **extra: float) -> None:
            results[name] = {"seconds": round(seconds, 3), "MB/s": round(mb / seconds, 1),
                             "cpu_seconds": round(_CPU["last"], 3),
                             "group": group, **extra}  # type: ignore[dict-item]

        # -- floors -------------------------------------------------------------------
        out = os.path.join(work, "floor.out")
        for name, comp in (("floor tar|sha256|gzip -1", "gzip -1"),
                           ("floor tar|sha256|pigz -1 -p2", "pigz -1 -p 2"),
                           ("floor tar|sha256|zstd -3 -T2", "zstd -3 -T2 -q")):
            if not have(comp.split()[0]):
                continue
            t, _ = timed(lambda comp=comp: sh(
                f"tar -C {tree} -cf - . | tee >(sha256sum > /dev/null) | {comp} | "
                f"tee {out} | sha256sum > /dev/null"))
            record(name, t, "pack")

        # -- our pack -----------------------------------------------------------------
        blobs: dict[str, str] = {}
        tar_size = 0
        default = f"pack gzip (default -{layers.DEFAULT_GZIP_LEVEL})"
        for name, comp, level in (("pack gzip -1", "gzip", 1),
                                  (default, "gzip", layers.DEFAULT_GZIP_LEVEL),
                                  ("pack gzip -6", "gzip", 6),
                                  ("pack zstd -3", "zstd", 3)):
            if name == "pack gzip -6" and layers.DEFAULT_GZIP_LEVEL == 6:
                continue
            path = os.path.join(work, f"layer.{comp}{level}")

            def run(path=path, comp=comp, level=level):
                with open(path, "wb") as f:
                    return layers.pack(tree, f, compression=comp, level=level,
                                       threads=args.threads)

            t, r = timed(run)
            blobs[name] = path
            record(name, t, "pack", size=r.size, ratio_size=round(r.size / r.tar_size, 3))
            tar_size = r.tar_size  # the same tree whatever the compression

        # -- umoci repack -------------------------------------------------------------
        if have("umoci") and os.geteuid() == 0:
            layout = os.path.join(work, "umoci")
            bundle = os.path.join(work, "bundle")
            shutil.rmtree(layout, ignore_errors=True)
            shutil.rmtree(bundle, ignore_errors=True)
            sh(f"umoci init --layout {layout} && umoci new --image {layout}:t && "
               f"umoci unpack --image {layout}:t {bundle}")
            sh(f"cp -a {tree}/. {bundle}/rootfs/")
            t, _ = timed(lambda: sh(f"umoci repack --image {layout}:t {bundle}"))
            blob_dir = os.path.join(layout, "blobs", "sha256")
            biggest = max(os.path.getsize(os.path.join(blob_dir, n))
                          for n in os.listdir(blob_dir))
            # umoci's tar differs from ours by a few headers: the ratio is close enough
            record("umoci repack", t, "pack", size=biggest,
                   ratio_size=round(biggest / tar_size, 3))

        # -- unpack -------------------------------------------------------------------
        gz = blobs[default]
        dest = os.path.join(work, "unpacked")
        t, _ = timed(lambda: sh(f"mkdir -p {dest}-tar && tar -C {dest}-tar -xzf {gz}"))
        record("floor tar -xzf", t, "unpack")
        for name in (default, "pack zstd -3"):
            d = f"{dest}-{name.split()[1]}"
            shutil.rmtree(d, ignore_errors=True)

            def run_unpack(d=d, path=blobs[name]):
                with open(path, "rb") as f:
                    return layers.unpack(f, d, tmp_dir=work)

            t, _ = timed(run_unpack)
            record(f"unpack {name.split()[1]}", t, "unpack")
        if have("umoci") and os.geteuid() == 0:
            b2 = os.path.join(work, "bundle2")
            shutil.rmtree(b2, ignore_errors=True)
            t, _ = timed(lambda: sh(f"umoci unpack --image {layout}:t {b2}"))
            record("umoci unpack", t, "unpack")

        # -- save / load ----------------------------------------------------------------
        root = os.path.join(work, "store")
        shutil.rmtree(root, ignore_errors=True)
        store = Store(root)
        with open(blobs[default], "rb") as f:
            digest, size = store.blobs.put_stream(f)
        with open(blobs[default], "rb") as f:
            _, diff_id, _ = layers.digests_of(f)
        img = Image.new(created="2024-01-01T00:00:00Z").append_layer(
            oci.Descriptor(oci.OCI_LAYER_GZIP, digest, size), diff_id, created_by="bench")
        t, _ = timed(lambda: store.put_image(img, ["bench:1"]))
        record("add_image (unpack into store)", t, "store")
        saved = os.path.join(work, "saved.tar")
        t, _ = timed(lambda: archive.save_to_file(store, ["bench:1"], saved))
        record("save", t, "archive")
        root2 = os.path.join(work, "store2")
        shutil.rmtree(root2, ignore_errors=True)
        t, _ = timed(lambda: archive.load(Store(root2), saved, io.StringIO()))
        record("load (verify + unpack)", t, "load")
        t, _ = timed(lambda: sh(f"cat {saved} | sha256sum > /dev/null && cp {saved} "
                                f"{saved}.copy"))
        record("floor sha256sum + cp of the archive", t, "archive")
        x = os.path.join(work, "x")
        t, _ = timed(lambda: sh(
            f"rm -rf {x} && mkdir -p {x}/l && sha256sum {saved} > /dev/null && "
            f"tar -C {x} -xf {saved} && tar -C {x}/l -xzf {x}/blobs/sha256/{digest.hex}"))
        record("floor sha256sum + tar -xf + tar -xzf layer", t, "load")
    finally:
        if not args.dir:
            shutil.rmtree(work, ignore_errors=True)

    floors = {"pack": results.get("floor tar|sha256|gzip -1", {}).get("seconds"),
              "unpack": results.get("floor tar -xzf", {}).get("seconds"),
              "archive": results.get("floor sha256sum + cp of the archive", {}).get("seconds"),
              "store": results.get("floor tar -xzf", {}).get("seconds"),
              "load": results.get("floor sha256sum + tar -xf + tar -xzf layer",
                                  {}).get("seconds")}
    load_end = os.getloadavg()
    print(f"tree: {written / 1e6:.0f} MB in {nfiles} files (scale {args.scale}), "
          f"{os.cpu_count()} CPUs, deflate engine {layers.deflate_engine_name()}, "
          f"load average {load_start[0]:.2f} at start, {load_end[0]:.2f} at end")
    print(f"{'measurement':40} {'seconds':>8} {'CPU s':>7} {'MB/s':>8} {'x floor':>8} "
          f"{'size':>6}")
    for name, r in results.items():
        floor = floors.get(str(r["group"]))
        ratio = f"{r['seconds'] / floor:.2f}" if floor else "-"
        r["x_floor"] = float(ratio) if floor else None  # type: ignore[assignment]
        size = f"{r['ratio_size']:.3f}" if "ratio_size" in r else "-"
        print(f"{name:40} {r['seconds']:8.2f} {r['cpu_seconds']:7.2f} {r['MB/s']:8.1f} "
              f"{ratio:>8} {size:>6}")
    doc = {"tree_bytes": written, "files": nfiles, "scale": args.scale,
           "cpus": os.cpu_count(), "deflate_engine": layers.deflate_engine_name(),
           "load_average": {"start": load_start, "end": load_end}, "results": results}
    print(json.dumps(doc, indent=2))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(doc, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
