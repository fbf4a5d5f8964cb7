"""Shared set-up for the FUSE mount tests: a layer stack on disk, mounting it with the real
``python -m unionfs mount`` command, and unmounting in ``finally`` whatever happens."""

from __future__ import annotations

import contextlib
import os
import pathlib
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass

ROOT = pathlib.Path(__file__).resolve().parents[2]
CLI = [sys.executable, "-m", "unionfs"]
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}


def run_cli(*args: str, check: bool = False, timeout: float = 60,
            **kwargs) -> subprocess.CompletedProcess:
    """Run ``python -m unionfs ARGS`` as a real subprocess, capturing its output."""
    return subprocess.run([*CLI, *args], capture_output=True, text=True, env=ENV,
                          check=check, timeout=timeout, cwd=str(ROOT), **kwargs)


def in_mounts(mountpoint: str | os.PathLike) -> list[str]:
    """The lines of /proc/mounts for exactly ``mountpoint``."""
    target = os.path.realpath(mountpoint)
    with open("/proc/mounts") as f:
        return [line for line in f if line.split(" ")[1] == target]


def force_unmount(mountpoint: str | os.PathLike) -> None:
    """Leave nothing behind: a lazy unmount of whatever is still mounted there."""
    for _ in range(5):
        if not in_mounts(mountpoint):
            return
        subprocess.run(["fusermount3", "-u", "-z", str(mountpoint)], capture_output=True)
        if in_mounts(mountpoint):
            subprocess.run(["umount", "-l", str(mountpoint)], capture_output=True)


@dataclass
class Stack:
    """lower layers (top-most first), an upper and a work dir, and a mount point."""

    root: pathlib.Path
    lowers: list[pathlib.Path]
    upper: pathlib.Path
    work: pathlib.Path
    mnt: pathlib.Path

    def options(self, *, upper: bool = True, extra: str = "") -> str:
        opts = "lowerdir=" + ":".join(str(p).replace(":", "\\:") for p in self.lowers)
        if upper:
            opts += f",upperdir={self.upper},workdir={self.work}"
        return opts + ("," + extra if extra else "")


def make_stack(root: pathlib.Path, layers: int = 2) -> Stack:
    """Two lower layers with something to shadow, whiteout-worthy files and a hard link:
    lower0 (top): /etc/motd "top\\n", /dir/top.txt; lower1: /etc/motd "bottom\\n",
    /etc/passwd, /dir/bottom.txt, /data/big (1 MiB), /data/hl1 + /data/hl2 (hard links),
    /link -> etc/passwd, /emptydir."""
    lowers = [root / f"lower{i}" for i in range(layers)]
    for p in lowers:
        p.mkdir(parents=True)
    bottom = lowers[-1]
    (bottom / "etc").mkdir()
    (bottom / "etc" / "motd").write_text("bottom\n")
    (bottom / "etc" / "passwd").write_text("root:x:0:0::/root:/bin/sh\n")
    (bottom / "dir").mkdir()
    (bottom / "dir" / "bottom.txt").write_text("from the bottom\n")
    (bottom / "data").mkdir()
    (bottom / "data" / "big").write_bytes(os.urandom(1 << 20))
    (bottom / "data" / "hl1").write_text("linked\n")
    os.link(bottom / "data" / "hl1", bottom / "data" / "hl2")
    (bottom / "emptydir").mkdir()
    os.symlink("etc/passwd", bottom / "link")
    if layers > 1:
        top = lowers[0]
        (top / "etc").mkdir()
        (top / "etc" / "motd").write_text("top\n")
        (top / "dir").mkdir()
        (top / "dir" / "top.txt").write_text("from the top\n")
    upper, work, mnt = root / "upper", root / "work", root / "mnt"
    for p in (upper, work, mnt):
        p.mkdir()
    return Stack(root, lowers, upper, work, mnt)


@contextlib.contextmanager
def mounted(stack: Stack, *, upper: bool = True, extra: str = "",
            args: tuple[str, ...] = ()) -> Iterator[pathlib.Path]:
    """Mount ``stack`` with the CLI (which returns once the mount is live); always unmount."""
    try:
        r = run_cli("mount", *args, "-o", stack.options(upper=upper, extra=extra),
                    str(stack.mnt))
        assert r.returncode == 0, f"mount failed ({r.returncode}): {r.stderr}"
        assert in_mounts(stack.mnt), "mount returned 0 but nothing is mounted"
        yield stack.mnt
    finally:
        if in_mounts(stack.mnt):
            r = run_cli("umount", str(stack.mnt))
            if r.returncode != 0:
                force_unmount(stack.mnt)
        force_unmount(stack.mnt)


def daemon_pid(mnt: str | os.PathLike) -> int:
    return int(os.getxattr(str(mnt), "user.unionfs.pid"))


def process_gone(pid: int, timeout: float = 10.0) -> bool:
    """True once ``pid`` has exited (a zombie counts: nobody may reap it here)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with open(f"/proc/{pid}/stat", "rb") as f:
                state = f.read().rsplit(b")", 1)[1].split()[0]
            if state in (b"Z", b"X"):
                return True
        except FileNotFoundError:
            return True
        time.sleep(0.02)
    return False


def overlay_mount(stack: Stack, mnt: pathlib.Path, *, upper: bool = True) -> None:
    """Mount the same directories with kernel overlayfs at ``mnt``."""
    opts = "lowerdir=" + ":".join(str(p) for p in stack.lowers)
    if upper:
        opts += f",upperdir={stack.upper},workdir={stack.work}"
    subprocess.run(["mount", "-t", "overlay", "overlay", "-o", opts, str(mnt)], check=True,
                   capture_output=True)


def snapshot(root: pathlib.Path) -> dict[str, tuple]:
    """What a mounted view shows: per path, type, mode, size, content or link target, and the
    user xattrs; the order of listing does not matter."""
    out: dict[str, tuple] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = os.path.join(dirpath, name)
            st = os.lstat(p)
            rel = os.path.relpath(p, root)
            if os.path.isdir(p) and not os.path.islink(p):
                body = None
            elif os.path.islink(p):
                body = os.readlink(p)
            elif os.path.isfile(p):
                with open(p, "rb") as f:
                    body = f.read()
            else:
                body = st.st_rdev
            try:
                xattrs = tuple(sorted(
                    (n, os.getxattr(p, n, follow_symlinks=False))
                    for n in os.listxattr(p, follow_symlinks=False) if n.startswith("user.")))
            except OSError:
                xattrs = ()
            size = st.st_size if not os.path.isdir(p) or os.path.islink(p) else 0
            out[rel] = (st.st_mode, st.st_uid, st.st_gid, size, body, xattrs)
    return out


@contextlib.contextmanager
def logged_mount(stack, extra: str = "") -> Iterator[tuple[pathlib.Path, pathlib.Path]]:
    """Mount in the foreground with ``-d``; yields (mount point, request log)."""
    log = stack.root / "requests.log"
    with open(log, "w") as out:
        proc = subprocess.Popen([*CLI, "mount", "-f", "-d", "-o", stack.options(extra=extra),
                                 str(stack.mnt)], stdout=out, stderr=subprocess.STDOUT,
                                env=ENV, cwd=str(ROOT))
    try:
        deadline = time.monotonic() + 30
        while not in_mounts(stack.mnt):
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, "the mount did not come up"
            time.sleep(0.05)
        yield stack.mnt, log
    finally:
        subprocess.run([*CLI, "umount", str(stack.mnt)], env=ENV, cwd=str(ROOT),
                       capture_output=True)
        force_unmount(stack.mnt)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def requests_in(log: pathlib.Path, opcode: str) -> int:
    """How many requests of ``opcode`` (LOOKUP, WRITE, ...) a ``-d`` log shows."""
    return len(re.findall(rf"opcode: {opcode} \(", log.read_text()))
