"""The engine's upper directory mounts under kernel overlayfs with the same view, and a
kernel-written upper reads the same through the engine (root + overlayfs; CI has both).
The big differential suite lives in tests/property; these are the hand-picked cases."""

from __future__ import annotations

import contextlib
import os
import stat
import subprocess
import sys

import pytest
from stacks import OPAQUE, WHITEOUT, write_dir

from unionfs import whiteout as wh
from unionfs.layer import DirLayer
from unionfs.union import UnionFS

sys.path.insert(0, os.path.dirname(os.path.dirname(__file__)))
from tests.conftest import need_kernel_overlay

BOTTOM = {
    "/etc/passwd": b"root\n",
    "/etc/hosts": b"bottom\n",
    "/d/sub/f": b"f",
    "/d/g": b"g",
    "/merged/low": b"low",
    "/ln": ("symlink", "etc/passwd"),
    "/gone": b"x",
    "/o/old": b"old",
}
TOP = {"/etc/hosts": b"top\n", "/merged/top": b"top", "/gone": WHITEOUT, "/o": OPAQUE,
       "/o/n": b"n"}


def snapshot_host(root: str) -> dict:
    """names, types, modes, sizes, contents, link targets and user xattrs below ``root``."""
    out = {}
    for dirpath, dirs, files in os.walk(root):
        dirs.sort()
        for name in sorted(dirs + files):
            p = os.path.join(dirpath, name)
            rel = "/" + os.path.relpath(p, root)
            st = os.lstat(p)
            data = None
            if stat.S_ISREG(st.st_mode):
                with open(p, "rb") as f:
                    data = f.read()
            elif stat.S_ISLNK(st.st_mode):
                data = os.readlink(p).encode()
            xattrs = tuple(sorted(n for n in os.listxattr(p, follow_symlinks=False)
                                  if n.startswith("user.")))
            size = st.st_size if not stat.S_ISDIR(st.st_mode) else None
            out[rel] = (stat.S_IFMT(st.st_mode), stat.S_IMODE(st.st_mode), size, data, xattrs)
    return out


def snapshot_engine(fs: UnionFS) -> dict:
    out = {}
    for dirpath, dirs, files in fs.walk("/"):
        for name in sorted(dirs + files):
            p = (dirpath.rstrip("/") + "/" + name)
            st = fs.lstat(p)
            data = None
            if stat.S_ISREG(st.st_mode):
                data = fs.read_bytes(p)
            elif stat.S_ISLNK(st.st_mode):
                data = fs.readlink(p).encode()
            xattrs = tuple(sorted(n for n in fs.listxattr(p, follow_symlinks=False)
                                  if n.startswith("user.")))
            size = st.st_size if not stat.S_ISDIR(st.st_mode) else None
            out[p] = (stat.S_IFMT(st.st_mode), stat.S_IMODE(st.st_mode), size, data, xattrs)
    return out


@contextlib.contextmanager
def kernel_mount(tmp, opts: str = ""):
    work, merged = os.path.join(tmp, "work"), os.path.join(tmp, "merged")
    subprocess.run(["rm", "-rf", work], check=True)
    os.makedirs(work)
    os.makedirs(merged, exist_ok=True)
    o = f"lowerdir={tmp}/top:{tmp}/bottom,upperdir={tmp}/upper,workdir={work}"
    if opts:
        o += "," + opts
    subprocess.run(["mount", "-t", "overlay", "overlay", "-o", o, merged], check=True)
    try:
        yield merged
    finally:
        subprocess.run(["umount", merged], check=True)


def setup(tmp_path, fmt=wh.Format.OVERLAY):
    """Lowers in ``fmt`` too: a userxattr mount reads only user.overlay.* marks."""
    tmp = str(tmp_path)
    write_dir(f"{tmp}/bottom", BOTTOM, fmt)
    write_dir(f"{tmp}/top", TOP, fmt)
    os.makedirs(f"{tmp}/upper")
    return tmp


def engine(tmp, fmt=wh.Format.OVERLAY, **opts) -> UnionFS:
    return UnionFS([DirLayer(f"{tmp}/top", cache=False), DirLayer(f"{tmp}/bottom", cache=False)],
                   DirLayer(f"{tmp}/upper", writable=True, fmt=fmt,
                            workdir=f"{tmp}/enginework"), **opts)


def engine_changes(fs: UnionFS) -> None:
    fs.write_bytes("/etc/passwd", b"root\nme\n")
    fs.unlink("/etc/hosts")
    fs.unlink("/d/sub/f")
    fs.rmdir("/d/sub")
    fs.mkdir("/d/sub", 0o700)
    fs.write_bytes("/d/sub/new", b"new")
    fs.makedirs("/added/deep")
    fs.symlink("../etc/passwd", "/added/l")
    fs.chmod("/d/g", 0o600)
    fs.setxattr("/merged/low", "user.note", b"hi")
    fs.rename("/merged/top", "/merged/top2")


@pytest.mark.parametrize("fmt,opts", [(wh.Format.OVERLAY, ""), (wh.Format.USER, "userxattr")],
                         ids=["trusted", "userxattr"])
def test_engine_upper_mounts_under_kernel(tmp_path, fmt, opts):
    need_kernel_overlay()
    tmp = setup(tmp_path, fmt)
    fs = engine(tmp, fmt)
    engine_changes(fs)
    expected = snapshot_engine(fs)
    with kernel_mount(tmp, opts) as merged:
        assert snapshot_host(merged) == expected


def test_kernel_upper_reads_the_same_through_the_engine(tmp_path):
    need_kernel_overlay()
    tmp = setup(tmp_path)
    with kernel_mount(tmp) as m:
        with open(f"{m}/etc/passwd", "ab") as f:
            f.write(b"me\n")
        os.unlink(f"{m}/etc/hosts")
        os.unlink(f"{m}/d/sub/f")
        os.rmdir(f"{m}/d/sub")
        os.mkdir(f"{m}/d/sub", 0o700)
        with open(f"{m}/d/sub/new", "wb") as f:
            f.write(b"new")
        os.makedirs(f"{m}/added/deep")
        os.chmod(f"{m}/d/g", 0o600)
        os.setxattr(f"{m}/merged/low", "user.note", b"hi")
        expected = snapshot_host(m)
    assert snapshot_engine(engine(tmp)) == expected


def test_redirect_dir_interop(tmp_path):
    need_kernel_overlay()
    tmp = setup(tmp_path)
    fs = engine(tmp, redirect_dir=True)
    fs.rename("/merged", "/moved")
    fs.rename("/d", "/etc/d2")
    fs.mkdir("/merged")
    expected = snapshot_engine(fs)
    assert "/moved/low" in expected and "/etc/d2/sub/f" in expected
    with kernel_mount(tmp, "redirect_dir=on") as m:
        assert snapshot_host(m) == expected
        os.rename(f"{m}/moved", f"{m}/moved-again")
        after = snapshot_host(m)
    assert snapshot_engine(engine(tmp, redirect_dir=True)) == after


def test_kernel_whiteouts_in_oci_and_xattr_forms_read_by_engine(tmp_path):
    """A lower written in OCI form and one with xattr whiteouts read the same."""
    tmp = str(tmp_path)
    write_dir(f"{tmp}/oci", {"/a/x": b"", "/a/y": WHITEOUT, "/b": OPAQUE}, wh.Format.OCI)
    write_dir(f"{tmp}/low", {"/a/y": b"y", "/b/z": b"z", "/c": b"c"})
    os.makedirs(f"{tmp}/xw/a")
    wh.write_whiteout(f"{tmp}/xw", "c", wh.Format.USER)  # mknod works as root: char 0/0
    os.makedirs(f"{tmp}/xw2")
    fd = os.open(f"{tmp}/xw2/c", os.O_CREAT | os.O_WRONLY, 0o600)
    os.close(fd)
    os.setxattr(f"{tmp}/xw2/c", "trusted.overlay.whiteout", b"")
    os.setxattr(f"{tmp}/xw2", "trusted.overlay.opaque", b"x")
    for top in ("xw", "xw2"):
        fs = UnionFS([DirLayer(f"{tmp}/{top}", cache=False), DirLayer(f"{tmp}/oci", cache=False),
                      DirLayer(f"{tmp}/low", cache=False)])
        assert fs.listdir("/") == ["a", "b"]
        assert fs.listdir("/a") == ["x"]
        assert fs.listdir("/b") == []
