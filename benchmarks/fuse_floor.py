"""The floor of a FUSE server written in Python on this machine, measured on file creates.

    sudo .venv/bin/python benchmarks/fuse_floor.py                  # /var/tmp, 5 rounds
    sudo .venv/bin/python benchmarks/fuse_floor.py --dir /dev/shm --creates 5000 --json out.json

A create through FUSE is a fixed series of kernel round trips (with ``default_permissions``:
GETATTR of the parent, LOOKUP of the new name, CREATE, IOCTL from Python's ``open``, GETXATTR
``security.capability`` before the first write, WRITE, RELEASE), whoever serves them. This
script serves them with the least Python there can be: ``floor``, a passthrough of one host
directory that reads requests from ``/dev/fuse`` and answers each with one or two host calls
(no union, no node table beyond a dict, no libfuse). Beside it, on the same machine and
interleaved round by round: this project's mount (``unionfs``) and ``fuse-overlayfs``, each
over one lower layer with an empty upper, creating the same files as ``mount_bench.py``'s
"10k creates" (1000 per directory, 9 bytes each). Every rate is also given as a ratio to
fuse-overlayfs in the same round.

What it shows: the share of a create's time that any Python server pays (the floor's ratio)
and the share that is the union engine's (the gap between ``floor`` and ``unionfs``). Host
file creation on a virtual disk swings with its block group and writeback, so ``--dir
/dev/shm`` (tmpfs) gives the steadiest comparison. Needs root (mount(2) of a FUSE file
system, the mounts of the other two).
"""

from __future__ import annotations

import argparse
import ctypes
import errno
import json
import os
import pathlib
import shutil
import statistics
import struct
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
IMPLS = ("floor", "unionfs", "fuse-overlayfs")

# -- the floor server: FUSE protocol 7.31 (include/uapi/linux/fuse.h) ---------------------

_IN = struct.Struct("<IIQQIIIHH")  # fuse_in_header
_OUT = struct.Struct("<IiQ")  # fuse_out_header
_ATTR = struct.Struct("<QQQQQQIIIIIIIIII")  # fuse_attr
_ENTRY = struct.Struct("<QQQQII")  # fuse_entry_out, without its fuse_attr
_TIMEOUT = 86400
(_LOOKUP, _FORGET, _GETATTR, _MKDIR, _WRITE, _STATFS, _RELEASE, _GETXATTR, _FLUSH, _INIT,
 _OPENDIR, _RELEASEDIR, _ACCESS, _CREATE, _INTERRUPT, _DESTROY, _BATCH_FORGET) = (
    1, 2, 3, 9, 16, 17, 18, 22, 25, 26, 27, 29, 34, 35, 36, 38, 42)
_FOPEN_KEEP_CACHE, _FOPEN_NOFLUSH = 1 << 1, 1 << 5


def _attr(st: os.stat_result) -> bytes:
    return _ATTR.pack(st.st_ino, st.st_size, st.st_blocks, int(st.st_atime), int(st.st_mtime),
                      int(st.st_ctime), st.st_atime_ns % 10**9, st.st_mtime_ns % 10**9,
                      st.st_ctime_ns % 10**9, st.st_mode, st.st_nlink, st.st_uid, st.st_gid,
                      st.st_rdev, st.st_blksize, 0)


def serve_floor(host: str, mountpoint: str) -> None:
    """Mount a passthrough of ``host`` at ``mountpoint`` and serve it until unmounted."""
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open("/dev/fuse", os.O_RDWR | os.O_CLOEXEC)
    opts = f"fd={fd},rootmode=40000,user_id=0,group_id=0,default_permissions,allow_other"
    if libc.mount(b"floor", os.fsencode(mountpoint), b"fuse.floor", 6,  # nosuid, nodev
                  opts.encode()) != 0:
        sys.exit(f"mount {mountpoint}: {os.strerror(ctypes.get_errno())}")
    paths = {1: host}
    next_id = 2

    def reply(unique: int, body: bytes = b"", err: int = 0) -> None:
        os.write(fd, _OUT.pack(16 + len(body), -err, unique) + body)

    def name_at(buf: bytearray, off: int) -> str:
        return bytes(buf[off:buf.index(0, off)]).decode("utf-8", "surrogateescape")

    def entry(path: str, st: os.stat_result) -> bytes:
        nonlocal next_id
        nid, next_id = next_id, next_id + 1
        paths[nid] = path
        return _ENTRY.pack(nid, 0, _TIMEOUT, _TIMEOUT, 0, 0) + _attr(st)

    buf = bytearray((1 << 20) + 4096)  # one request at most: max_write plus headers
    while True:
        try:
            os.readv(fd, [buf])
        except OSError as e:
            if e.errno == errno.ENODEV:  # unmounted
                return
            if e.errno in (errno.EINTR, errno.ENOENT, errno.EAGAIN):
                continue
            raise
        _len, op, unique, nid, _uid, _gid, _pid, _ext, _pad = _IN.unpack_from(buf)
        try:
            if op == _LOOKUP:
                path = os.path.join(paths[nid], name_at(buf, 40))
                try:
                    st = os.lstat(path)
                except FileNotFoundError:  # a negative entry the kernel keeps
                    reply(unique, _ENTRY.pack(0, 0, _TIMEOUT, 0, 0, 0) + bytes(_ATTR.size))
                    continue
                reply(unique, entry(path, st))
            elif op == _GETATTR:
                reply(unique, struct.pack("<QII", _TIMEOUT, 0, 0) + _attr(os.lstat(paths[nid])))
            elif op == _MKDIR:
                mode, umask = struct.unpack_from("<II", buf, 40)
                path = os.path.join(paths[nid], name_at(buf, 48))
                os.mkdir(path, mode & ~umask)
                reply(unique, entry(path, os.lstat(path)))
            elif op == _CREATE:
                flags, mode, umask, _ = struct.unpack_from("<IIII", buf, 40)
                path = os.path.join(paths[nid], name_at(buf, 56))
                h = os.open(path, (flags & ~os.O_ACCMODE) | os.O_RDWR | os.O_CREAT,
                            mode & ~umask)
                reply(unique, entry(path, os.fstat(h))
                      + struct.pack("<QIi", h, _FOPEN_KEEP_CACHE | _FOPEN_NOFLUSH, 0))
            elif op == _WRITE:
                fh, off, size = struct.unpack_from("<QQI", buf, 40)
                n = os.pwrite(fh, memoryview(buf)[80:80 + size], off)
                reply(unique, struct.pack("<II", n, 0))
            elif op == _RELEASE:
                os.close(struct.unpack_from("<Q", buf, 40)[0])
                reply(unique)
            elif op == _GETXATTR:
                reply(unique, err=errno.ENODATA)
            elif op in (_FORGET, _BATCH_FORGET, _INTERRUPT):
                pass  # no reply
            elif op == _INIT:
                _major, _minor, readahead, flags = struct.unpack_from("<IIII", buf, 40)
                want = flags & (1 | 1 << 5)  # async reads, big writes
                reply(unique, struct.pack("<IIIIHHIIHHII", 7, 31, readahead, want, 16, 12,
                                          1 << 20, 1, 256, 0, 0, 0) + bytes(24))
            elif op == _OPENDIR:
                reply(unique, struct.pack("<QIi", 0, 0, 0))
            elif op in (_RELEASEDIR, _ACCESS, _FLUSH):
                reply(unique)
            elif op == _STATFS:
                sv = os.statvfs(host)
                reply(unique, struct.pack("<QQQQQIII", sv.f_blocks, sv.f_bfree, sv.f_bavail,
                                          sv.f_files, sv.f_ffree, sv.f_bsize, 255, sv.f_frsize)
                      + bytes(28))
            elif op == _DESTROY:
                reply(unique)
                return
            else:
                reply(unique, err=errno.ENOSYS)
        except OSError as e:
            reply(unique, err=e.errno or errno.EIO)


# -- the comparison -----------------------------------------------------------------------

_CLIENT = r"""
import pathlib, sys, time
base = pathlib.Path(sys.argv[1]) / "created"
n = int(sys.argv[2])
base.mkdir()
t = time.perf_counter()
for i in range(n):
    if i % 1000 == 0:
        d = base / f"c{i // 1000:03d}"
        d.mkdir()
    with open(d / f"n{i:06d}", "wb") as f:
        f.write(b"new file\n")
print(n / (time.perf_counter() - t))
"""


def _wait_mounted(mnt: pathlib.Path, proc: subprocess.Popen | None = None) -> None:
    for _ in range(200):
        if os.path.ismount(mnt):
            return
        if proc is not None and proc.poll() is not None:
            raise SystemExit(f"the {mnt} server exited with {proc.returncode}")
        time.sleep(0.05)
    raise SystemExit(f"{mnt} did not mount")


def one_round(impl: str, work: pathlib.Path, lower: pathlib.Path, creates: int) -> float:
    """Mount ``impl`` fresh under ``work``, create the files, unmount; creates per second."""
    upper, wdir, mnt = work / "upper", work / "work", work / "mnt"
    for p in (upper, wdir, mnt):
        p.mkdir(parents=True)
    opts = f"lowerdir={lower},upperdir={upper},workdir={wdir}"
    proc = None
    if impl == "floor":
        proc = subprocess.Popen([sys.executable, __file__, "--serve", str(upper), str(mnt)])
    elif impl.partition(":")[0] == "unionfs":
        extra = impl.partition(":")[2]  # unionfs:spin=100,passthrough=off: other options
        subprocess.run([sys.executable, "-m", "unionfs", "mount", "-o",
                        opts + ("," + extra if extra else ""), str(mnt)], check=True, cwd=ROOT)
    else:
        subprocess.run(["fuse-overlayfs", "-o", opts, str(mnt)], check=True,
                       stderr=subprocess.DEVNULL)
    try:
        _wait_mounted(mnt, proc)
        out = subprocess.run([sys.executable, "-c", _CLIENT, str(mnt), str(creates)],
                             check=True, capture_output=True, text=True).stdout
        return float(out)
    finally:
        subprocess.run(["umount", str(mnt)], check=False)
        if proc is not None:
            proc.wait(timeout=30)
        shutil.rmtree(work, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dir", default="/var/tmp", help="where the layers live (default /var/tmp)")
    ap.add_argument("--creates", type=int, default=5000)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--impls", nargs="+", default=list(IMPLS), metavar="IMPL",
                    help="floor, unionfs, fuse-overlayfs; unionfs:OPTS mounts this project "
                         "with more -o options (e.g. unionfs:spin=100), to compare them")
    ap.add_argument("--json", metavar="FILE")
    ap.add_argument("--serve", nargs=2, metavar=("HOST", "MNT"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    for impl in args.impls:
        if impl.partition(":")[0] not in IMPLS:
            ap.error(f"--impls: {impl!r} is not one of {', '.join(IMPLS)} (or unionfs:OPTS)")
    if args.serve:
        serve_floor(*args.serve)
        return 0
    if os.geteuid() != 0:
        raise SystemExit("needs root (FUSE mounts)")
    base = pathlib.Path(tempfile.mkdtemp(prefix="fuse-floor-", dir=args.dir))
    load = os.getloadavg()[0]
    rates: dict[str, list[float]] = {i: [] for i in args.impls}
    try:
        lower = base / "lower"
        lower.mkdir()
        (lower / "a").write_text("a lower file\n")
        for r in range(args.rounds):
            for impl in args.impls:
                work = base / f"{args.impls.index(impl)}-{r}"  # (no option text in a path)
                rates[impl].append(one_round(impl, work, lower, args.creates))
    finally:
        shutil.rmtree(base, ignore_errors=True)
    ref = rates.get("fuse-overlayfs")
    print(f"creates/s on {args.dir}, {args.creates} files, {args.rounds} rounds "
          f"(load {load:.2f} -> {os.getloadavg()[0]:.2f})")
    print(f"{'':24s} {'median':>8s} {'best':>8s}   ratio to fuse-overlayfs (median of rounds)")
    result = {}
    for impl, v in rates.items():
        ratio = statistics.median(a / b for a, b in zip(v, ref, strict=True)) if ref else None
        result[impl] = {"rates": v, "median": statistics.median(v), "best": max(v),
                        "ratio": ratio}
        print(f"{impl:24s} {statistics.median(v):8.0f} {max(v):8.0f}   "
              + (f"{ratio:.2f}" if ratio is not None else "-"))
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps(
            {"dir": args.dir, "creates": args.creates, "load": load, "impls": result},
            indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
