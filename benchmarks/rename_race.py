"""open(2) of a name that other processes keep replacing by rename(2): errors per mount.

Two replacers write a fresh temporary file and rename it over ``d/f`` in a tight loop while
two openers open and read ``d/f``; POSIX (and kernel overlayfs) let every open succeed,
since a rename replaces the name atomically. Prints, per implementation, the opens done and
the errors by errno. Needs root (mounts).

    sudo .venv/bin/python benchmarks/rename_race.py --impls unionfs unionfs-hl kernel
"""

from __future__ import annotations

import argparse
import errno
import json
import multiprocessing as mp
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
IMPLS = ("unionfs", "unionfs-hl", "unionfs-threaded", "unionfs-hl-threaded", "kernel",
         "fuse-overlayfs")


def _replacer(d: str, who: int, seconds: float) -> None:
    end, n = time.monotonic() + seconds, 0
    while time.monotonic() < end:
        tmp = f"{d}/.tmp-{who}-{n}"
        with open(tmp, "wb") as f:
            f.write(b"v" * 5000)
        os.rename(tmp, f"{d}/f")
        n += 1


def _opener(d: str, seconds: float, q: mp.Queue) -> None:
    end, opens, errors = time.monotonic() + seconds, 0, {}
    while time.monotonic() < end:
        try:
            with open(f"{d}/f", "rb") as f:
                f.read()
            opens += 1
        except OSError as e:
            name = errno.errorcode.get(e.errno, str(e.errno))
            errors[name] = errors.get(name, 0) + 1
    q.put((opens, errors))


def _mount(impl: str, base: str, mnt: str) -> list[str]:
    """Mount ``impl`` at ``mnt``; returns the unmount command."""
    opts = f"lowerdir={base}/lower,upperdir={base}/upper,workdir={base}/work"
    if impl == "kernel":
        subprocess.run(["mount", "-t", "overlay", "overlay", "-o", opts, mnt], check=True)
        return ["umount", mnt]
    if impl == "fuse-overlayfs":
        subprocess.run(["fuse-overlayfs", "-o", opts, mnt], check=True)
        return ["fusermount3", "-u", mnt]
    api = "highlevel" if "-hl" in impl else "lowlevel"
    opts += f",api={api}" + (",threaded=1" if impl.endswith("threaded") else "")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    subprocess.run([sys.executable, "-m", "unionfs", "mount", "-o", opts, mnt], check=True,
                   env=env, cwd=ROOT)
    return [sys.executable, "-m", "unionfs", "umount", mnt]


def race(impl: str, seconds: float) -> dict:
    """One run against a fresh stack; ``{"opens": N, "errors": {errno name: count}}``."""
    base = tempfile.mkdtemp(prefix="rename-race-")
    try:
        for sub in ("lower/d", "upper", "work", "mnt"):
            os.makedirs(f"{base}/{sub}")
        pathlib.Path(f"{base}/lower/d/f").write_bytes(b"lower")
        mnt = f"{base}/mnt"
        umount = _mount(impl, base, mnt)
        try:
            ctx = mp.get_context("spawn")
            q = ctx.Queue()
            procs = [ctx.Process(target=_replacer, args=(f"{mnt}/d", i, seconds))
                     for i in range(2)]
            procs += [ctx.Process(target=_opener, args=(f"{mnt}/d", seconds, q))
                      for _ in range(2)]
            for p in procs:
                p.start()
            results = [q.get() for _ in range(2)]
            for p in procs:
                p.join()
        finally:
            subprocess.run(umount, capture_output=True, env={**os.environ,
                                                             "PYTHONPATH": str(ROOT)})
        errors: dict[str, int] = {}
        for _, errs in results:
            for k, v in errs.items():
                errors[k] = errors.get(k, 0) + v
        return {"opens": sum(n for n, _ in results), "errors": errors}
    finally:
        shutil.rmtree(base, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--impls", nargs="+", default=["unionfs", "unionfs-hl", "kernel"],
                    choices=IMPLS)
    ap.add_argument("--seconds", type=float, default=5.0)
    args = ap.parse_args(argv)
    if os.geteuid() != 0:
        print("rename_race needs root (mounts)", file=sys.stderr)
        return 2
    out = {"load_before": os.getloadavg()}
    for impl in args.impls:
        r = race(impl, args.seconds)
        out[impl] = r
        print(f"{impl:20s} opens {r['opens']:7d}  errors {r['errors'] or 'none'}",
              file=sys.stderr, flush=True)
    out["load_after"] = os.getloadavg()
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
