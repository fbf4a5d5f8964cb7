"""An absolute ``overlay.redirect`` is looked up from the root of the lower layers, whatever
the parent directory has below it: a lower directory moved under a new upper-only
directory keeps its contents (kernel ovl_lookup: an absolute redirect resets the parent's
lower stack to the root's)."""

from __future__ import annotations

import os
import subprocess

import pytest

from tests.conftest import need_kernel_overlay, need_root
from tests.unionfs.stacks import DIR, OPAQUE, memory_layer, write_dir
from unionfs import whiteout as wh
from unionfs.layer import DirLayer, MemoryLayer
from unionfs.union import UnionFS

LOWER = {"/a": OPAQUE, "/b": OPAQUE, "/b/a": b"one", "/b/b": b"two", "/c": b"c",
         "/e": DIR, "/e/f": b"f", "/o/x": b"x", "/q/k": b"k"}


def _moved(fs: UnionFS) -> None:
    fs.mkdir("/a/a")  # /a is copied up; /a/a is new, with nothing below it
    fs.rename("/b", "/a/a/moved")  # a lower directory: recorded as redirect "/b"
    fs.rename("/e", "/n")
    fs.mkdir("/n/deeper")
    fs.rename("/n", "/a/a/deeper-e")
    fs.unlink("/o/x")
    fs.rmdir("/o")
    fs.mkdir("/o")  # made over a whiteout: opaque in the upper
    fs.rename("/q", "/o/q2")  # under an opaque parent: the redirect still reaches /q


def test_memory_union_follows_absolute_redirect_under_new_directory():
    fs = UnionFS([memory_layer(LOWER, "lower")], MemoryLayer("upper"), redirect_dir=True)
    _moved(fs)
    assert fs.listdir("/a/a/moved") == ["a", "b"]
    assert fs.read_bytes("/a/a/moved/b") == b"two"
    assert fs.listdir("/a/a/deeper-e") == ["deeper", "f"]
    assert fs.listdir("/a/a") == ["deeper-e", "moved"]
    assert fs.listdir("/o") == ["q2"]
    assert fs.read_bytes("/o/q2/k") == b"k"
    with pytest.raises(FileNotFoundError):
        fs.lstat("/b")


def test_dir_union_matches_kernel_overlay(tmp_path):
    need_root()
    lower, upper, work = (str(tmp_path / n) for n in ("lower", "upper", "work"))
    write_dir(lower, LOWER, wh.Format.OVERLAY)
    os.makedirs(upper)
    fs = UnionFS([DirLayer(lower, cache=False)], DirLayer(upper, writable=True),
                 workdir=work, redirect_dir=True)
    _moved(fs)
    engine = {p: fs.listdir(p) for p in ("/a/a/moved", "/a/a/deeper-e", "/a/a", "/", "/o",
                                          "/o/q2")}
    assert engine["/a/a/moved"] == ["a", "b"]
    assert engine["/o/q2"] == ["k"]
    need_kernel_overlay()
    merged, kwork = str(tmp_path / "merged"), str(tmp_path / "kwork")
    os.makedirs(merged)
    os.makedirs(kwork)
    subprocess.run(["mount", "-t", "overlay", "overlay", "-o",
                    f"lowerdir={lower},upperdir={upper},workdir={kwork},redirect_dir=on",
                    merged], check=True)
    try:
        kernel = {p: sorted(os.listdir(merged + p)) for p in engine}
    finally:
        subprocess.run(["umount", merged], check=True)
    assert kernel == engine
