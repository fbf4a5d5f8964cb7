"""Interchangeability: what our mount leaves in the upper dir mounts under kernel overlayfs and
fuse-overlayfs with the same view, and what they leave mounts under ours the same way."""

from __future__ import annotations

import contextlib
import os
import pathlib
import shutil
import subprocess

import pytest

from tests.conftest import need_kernel_overlay, need_tool
from tests.interop.fuse_helpers import (
    Stack,
    force_unmount,
    in_mounts,
    mounted,
    overlay_mount,
    snapshot,
)

pytestmark = [pytest.mark.fuse, pytest.mark.root]


def mutate(m: pathlib.Path) -> None:
    """Changes that exercise every on-disk form: copy-up, whiteouts of files and dirs, an
    opaque directory, new objects of each type, metadata and xattrs."""
    (m / "etc" / "motd").write_text("changed\n")
    os.unlink(m / "etc" / "passwd")
    shutil.rmtree(m / "dir")
    os.mkdir(m / "dir")
    (m / "dir" / "only.txt").write_text("opaque now\n")
    os.rename(m / "data" / "hl1", m / "data" / "moved")
    os.symlink("moved", m / "data" / "sym")
    os.mkfifo(m / "data" / "fifo")
    os.chmod(m / "emptydir", 0o711)
    os.chown(m / "data" / "big", 123, 456)
    os.setxattr(m / "etc" / "motd", "user.note", b"hello")
    os.makedirs(m / "new" / "deep")
    (m / "new" / "deep" / "file").write_bytes(b"\0" * 5000)


@contextlib.contextmanager
def kernel_view(stack: Stack, mnt: pathlib.Path):
    overlay_mount(stack, mnt)
    try:
        yield mnt
    finally:
        subprocess.run(["umount", str(mnt)], capture_output=True)
        force_unmount(mnt)


@contextlib.contextmanager
def fuse_overlayfs_view(stack: Stack, mnt: pathlib.Path):
    opts = ("lowerdir=" + ":".join(str(p) for p in stack.lowers)
            + f",upperdir={stack.upper},workdir={stack.work}")
    r = subprocess.run(["fuse-overlayfs", "-o", opts, str(mnt)], capture_output=True,
                       text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    try:
        yield mnt
    finally:
        subprocess.run(["fusermount3", "-u", str(mnt)], capture_output=True)
        force_unmount(mnt)


def fresh_work(stack: Stack) -> None:
    """Each implementation gets an empty work dir (the kernel leaves a root-only work/work)."""
    shutil.rmtree(stack.work)
    stack.work.mkdir()


def test_our_upper_mounts_under_kernel_overlayfs_with_the_same_view(stack, tmp_path):
    need_kernel_overlay()
    with mounted(stack) as m:
        mutate(m)
        ours = snapshot(m)
    fresh_work(stack)
    other = tmp_path / "kmnt"
    other.mkdir()
    with kernel_view(stack, other) as k:
        assert snapshot(k) == ours


def test_our_upper_mounts_under_fuse_overlayfs_with_the_same_view(stack, tmp_path):
    need_tool("fuse-overlayfs")
    with mounted(stack) as m:
        mutate(m)
        ours = snapshot(m)
    fresh_work(stack)
    other = tmp_path / "fmnt"
    other.mkdir()
    with fuse_overlayfs_view(stack, other) as f:
        assert snapshot(f) == ours


def test_kernel_overlayfs_upper_mounts_under_ours_with_the_same_view(stack, tmp_path):
    need_kernel_overlay()
    other = tmp_path / "kmnt"
    other.mkdir()
    with kernel_view(stack, other) as k:
        mutate(k)
        theirs = snapshot(k)
    fresh_work(stack)
    with mounted(stack) as m:
        assert snapshot(m) == theirs
        # and it keeps working on top of the kernel's upper
        os.unlink(m / "dir" / "only.txt")
        assert os.listdir(m / "dir") == []
    assert not in_mounts(stack.mnt)


def test_fuse_overlayfs_upper_mounts_under_ours_with_the_same_view(stack, tmp_path):
    need_tool("fuse-overlayfs")
    other = tmp_path / "fmnt"
    other.mkdir()
    with fuse_overlayfs_view(stack, other) as f:
        mutate(f)
        theirs = snapshot(f)
    fresh_work(stack)
    with mounted(stack) as m:
        assert snapshot(m) == theirs


def test_read_only_view_matches_kernel_overlayfs(stack, tmp_path):
    need_kernel_overlay()
    other = tmp_path / "kmnt"
    other.mkdir()
    overlay_mount(stack, other, upper=False)
    try:
        theirs = snapshot(other)
    finally:
        subprocess.run(["umount", str(other)], capture_output=True)
    with mounted(stack, upper=False) as m:
        assert snapshot(m) == theirs
