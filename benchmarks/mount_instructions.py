"""The Python work of the FUSE daemon per request, counted in instructions by callgrind: a
figure that stays put while the machine's pace moves.

    .venv/bin/python benchmarks/mount_instructions.py                  # 8 layers, 20k files
    .venv/bin/python benchmarks/mount_instructions.py --src ../other   # another checkout
    ... --layers 1 8 128 --quick --json out.json

On a shared virtual machine a timed A/B of two versions of the daemon scatters by 20-30 %
from one round to the next, so a change worth 10 % needs many rounds to show. Counted
instructions repeat to within about 1 % (two runs on the 8-layer stack: 71,578 and 71,352
per cold lookup, 29,655 and 29,934 per warm one, 236,922 and 237,652 per create). They
do not measure what the kernel or the disk spend, nor memory stalls: they say whether a
change made the daemon's own work smaller.

No mount is made. In one process, the low-level adapter (``unionfs.fuse_ll.LowLevel``) is
handed requests as the kernel sends them, and its replies go to ``/dev/null``:

- **cold lookup**: a LOOKUP of every file of ``mount_bench.py``'s stack on a fresh adapter
  (the lower view is built as the names are first visited: what a cold stat walk costs
  the daemon);
- **warm lookup**: each file looked up again by the same adapter;
- **create cycle**: the requests of one of ``mount_bench.py``'s creates: GETATTR of the
  parent, LOOKUP of the new name, CREATE, IOCTL (Python's ``open`` asks ``isatty``),
  GETXATTR ``security.capability``, RELEASE (with passthrough there is no WRITE).

Each figure is the difference between two runs of the same process under valgrind, one
doing the work and one stopping just before it, divided by the number of requests or
cycles. The requests are built before the measured part; what is left of the loop that
hands them over is a few hundred instructions per cycle. ``--src`` measures the ``unionfs``
package of another checkout against the same stack. Needs ``valgrind`` (Debian package).
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import pickle
import shutil
import struct
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor

ROOT = pathlib.Path(__file__).resolve().parent.parent
CREATES = 2000
_REQ = struct.Struct("<IIQQIIIHH")  # fuse_in_header
_LOOKUP, _GETATTR, _MKDIR, _GETXATTR, _RELEASE, _CREATE, _IOCTL = 1, 3, 9, 22, 18, 35, 39


def _request(op: int, nid: int, body: bytes) -> bytearray:
    buf = bytearray(_REQ.pack(40 + len(body), op, 7, nid, 0, 0, 1234, 0, 0) + body)
    return buf + bytearray(64)  # (room past the body, as in the daemon's read buffer)


def _adapter(lowers: list[str], base: pathlib.Path):
    from unionfs import fuse_ll
    from unionfs.fuse import FuseOperations
    from unionfs.mount import build_union, parse_options

    upper, work = base / "upper", base / "work"
    for d in (upper, work):
        d.mkdir()
    opts = parse_options([f"lowerdir={':'.join(lowers)},upperdir={upper},workdir={work}"])
    ll = fuse_ll.LowLevel(FuseOperations(build_union(opts), opts), opts)
    ll.fd = os.open(os.devnull, os.O_WRONLY)
    return ll


def child(kind: str, stack: pathlib.Path, walks: int) -> None:
    """One measured process: ``kind`` "lookup" (``walks`` walks; 0: stop before the
    first) or "create" (``walks`` 0 or 1: the create cycles or not)."""
    import gc

    import unionfs.mount

    meta = pickle.loads((stack / "meta.pkl").read_bytes())
    scratch = pathlib.Path(tempfile.mkdtemp(dir=stack))  # (runs go side by side)
    try:
        ll = _adapter(meta["lowers"], scratch)
        # as the checkout's mount does before it serves (unionfs.mount.serve_object)
        gc.collect()
        gc.freeze()
        thresholds = getattr(unionfs.mount, "GC_THRESHOLDS", None)
        if thresholds is not None:
            gc.set_threshold(*thresholds)
        _work(ll, kind, meta["paths"], walks)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _work(ll, kind: str, paths: list[str], walks: int) -> None:
    if kind == "lookup":
        ids = {"": 1}
        for d in sorted({p.rpartition("/")[0] for p in paths} - {""},
                        key=lambda d: d.count("/")):
            head, _, name = d.rpartition("/")
            ll.lookup(1, ids[head], _request(_LOOKUP, ids[head], name.encode() + b"\0"))
            ids[d] = ll._children[(ids[head], name)].id
        reqs = []
        for p in paths:
            head, _, name = p.rpartition("/")
            reqs.append((ids[head], _request(_LOOKUP, ids[head], name.encode() + b"\0")))
        lookup = ll.lookup
        for _ in range(walks):
            for nid, buf in reqs:
                lookup(1, nid, buf)
        return
    ll.mkdir(1, 1, _request(_MKDIR, 1, struct.pack("<II", 0o755, 0o22) + b"c\0"))
    d = ll._children[(1, "c")].id
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
    names = [f"n{i:06d}" for i in range(CREATES)]
    getattr_ = _request(_GETATTR, d, struct.pack("<IIQ", 0, 0, 0))
    lookups = [_request(_LOOKUP, d, n.encode() + b"\0") for n in names]
    creates = [_request(_CREATE, d, struct.pack("<IIII", flags, 0o100644, 0o22, 0)
                        + n.encode() + b"\0") for n in names]
    if not walks:
        return
    children, handles = ll._children, ll._handles
    for name, lk, cr in zip(names, lookups, creates, strict=True):
        ll.getattr(2, d, getattr_)
        ll.lookup(3, d, lk)
        ll.create(4, d, cr)
        nid, fh = children[(d, name)].id, next(reversed(handles))
        ll._ioctl(5, nid, _request(_IOCTL, nid, b""))
        ll.getxattr(6, nid, _request(_GETXATTR, nid, struct.pack("<II", 0, 0)
                                     + b"security.capability\0"))
        ll.release(8, nid, _request(_RELEASE, nid, struct.pack("<QIIQ", fh, 0, 0, 0)))


def count(src: pathlib.Path, kind: str, stack: pathlib.Path, walks: int) -> int:
    """Instructions callgrind counts for one ``child`` run."""
    r = subprocess.run(["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null",
                        sys.executable, __file__, "--child", kind, str(stack), str(walks),
                        "--src", str(src)], capture_output=True, text=True)
    for line in r.stderr.splitlines():
        if "Collected :" in line:
            return int(line.split(":")[-1])
    raise RuntimeError(f"valgrind: {r.stderr.strip()[-2000:]}")


def measure(src: pathlib.Path, stack: pathlib.Path, files: int) -> dict:
    runs = [("lookup", 0), ("lookup", 1), ("lookup", 2), ("create", 0), ("create", 1)]
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        got = dict(zip(runs, pool.map(lambda r: count(src, r[0], stack, r[1]), runs),
                       strict=True))
    return {
        "cold lookup": (got[("lookup", 1)] - got[("lookup", 0)]) // files,
        "warm lookup": (got[("lookup", 2)] - got[("lookup", 1)]) // files,
        "create cycle": (got[("create", 1)] - got[("create", 0)]) // CREATES,
    }


def build(base: pathlib.Path, layers: int, quick: bool) -> tuple[pathlib.Path, int]:
    """``mount_bench.py``'s stack of ``layers`` layers, and its number of files."""
    sys.path.insert(0, str(ROOT))
    import benchmarks.mount_bench as mb

    sc = mb.QUICK if quick else mb.FULL
    stack = base / f"stack{layers}"
    big = base / "big.src"
    big.write_bytes(b"x" * 4096)  # (the large file is not read here)
    st = mb.build_stack(stack, layers, sc, big)
    (stack / "meta.pkl").write_bytes(pickle.dumps({"lowers": [str(p) for p in st.lowers],
                                                   "paths": st.paths}))
    return stack, len(st.paths)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--layers", type=int, nargs="+", default=[8])
    ap.add_argument("--quick", action="store_true", help="3,000 files instead of 20,000")
    ap.add_argument("--src", type=pathlib.Path, default=ROOT,
                    help="the checkout whose unionfs package is measured (default: this one)")
    ap.add_argument("--json", type=pathlib.Path)
    ap.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        sys.path.insert(0, str(args.src))
        child(args.child[0], pathlib.Path(args.child[1]), int(args.child[2]))
        return 0
    if shutil.which("valgrind") is None:
        print("mount_instructions: needs valgrind (apt-get install valgrind)", file=sys.stderr)
        return 2
    results = {}
    with tempfile.TemporaryDirectory(prefix="unionfs-instr-", dir="/var/tmp") as tmp:
        base = pathlib.Path(tmp)
        # the lower layers' index files, written once before anything is counted
        os.environ["UNIONFS_CACHE_DIR"] = str(base / "index-cache")
        for layers in args.layers:
            stack, files = build(base, layers, args.quick)
            subprocess.run([sys.executable, __file__, "--child", "lookup", str(stack), "0",
                            "--src", str(args.src)], check=True)
            results[layers] = measure(args.src.resolve(), stack, files)
            row = results[layers]
            print(f"{layers:4d} layers, {files} files: "
                  + ", ".join(f"{k} {v:,}" for k, v in row.items()), flush=True)
            shutil.rmtree(stack)
    if args.json:
        args.json.write_text(json.dumps({"src": str(args.src), "quick": args.quick,
                                         "instructions": results}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
