"""The low-level adapter (``unionfs.fuse_ll``, ``-o api=lowlevel``, the default) keeps a node
the kernel still holds usable after its name is replaced or removed, as kernel overlayfs does
(REL-1 in docs/reliability.md), and leaves nothing behind once the kernel forgets it.

An ``O_PATH`` descriptor holds the kernel's inode without opening the file; reopening it
through ``/proc/self/fd`` later sends OPEN for that very inode, with no new lookup: the exact
request that failed with ESTALE under libfuse's high-level API.
"""

from __future__ import annotations

import errno
import os
import time

import pytest

from tests.conftest import need_kernel_overlay
from tests.interop.fuse_helpers import (
    daemon_pid,
    mounted,
    overlay_mount,
    run_cli,
    snapshot,
)

pytestmark = [pytest.mark.fuse, pytest.mark.root]


def _files_open(mnt) -> list[str]:
    """What the daemon's descriptors point at, once the FORGETs the kernel queued have been
    served (they reach the daemon ahead of the next request, this getxattr)."""
    pid = daemon_pid(mnt)
    out = []
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            out.append(os.readlink(f"/proc/{pid}/fd/{fd}"))
        except FileNotFoundError:
            pass
    return out


def _kept(mnt, *paths: str) -> list[str]:
    """The daemon's descriptors of deleted files or of ``paths``; polled for a moment (a
    threaded daemon may serve the FORGETs after our request)."""
    deadline = time.monotonic() + 5
    while True:
        kept = [p for p in _files_open(mnt) if p.endswith(" (deleted)") or p in paths]
        if not kept or time.monotonic() > deadline:
            return kept
        time.sleep(0.05)


def _reopen(fd: int, flags: int = os.O_RDONLY) -> bytes:
    f = os.open(f"/proc/self/fd/{fd}", flags)
    try:
        return os.pread(f, 100, 0)
    finally:
        os.close(f)


@pytest.mark.parametrize("extra", ["api=lowlevel", "api=lowlevel,threaded=1"])
def test_a_file_replaced_by_rename_stays_openable_while_the_kernel_holds_it(stack, extra):
    with mounted(stack, extra=extra) as m:
        (m / "dir" / "f").write_bytes(b"old upper")
        held_upper = os.open(m / "dir" / "f", os.O_PATH)
        held_lower = os.open(m / "etc" / "passwd", os.O_PATH)
        try:
            ino = os.fstat(held_upper).st_ino
            for name, data in (("f", b"new upper"), ("passwd", b"new passwd")):
                d = m / ("dir" if name == "f" else "etc")
                (d / "tmp").write_bytes(data)
                os.rename(d / "tmp", d / name)
            assert _reopen(held_upper) == b"old upper"
            assert _reopen(held_lower) == b"root:x:0:0::/root:/bin/sh\n"
            st = os.fstat(held_upper)
            assert (st.st_ino, st.st_nlink, st.st_size) == (ino, 0, 9)
            # the old upper file is gone from the upper dir but still writable, as on
            # overlayfs; a lower file is never written (EROFS)
            f = os.open(f"/proc/self/fd/{held_upper}", os.O_WRONLY)
            try:
                assert os.pwrite(f, b"OLD", 0) == 3
            finally:
                os.close(f)
            assert _reopen(held_upper) == b"OLD upper"
            with pytest.raises(OSError) as e:
                os.open(f"/proc/self/fd/{held_lower}", os.O_WRONLY)
            assert e.value.errno == errno.EROFS
            assert (m / "dir" / "f").read_bytes() == b"new upper"
            assert (m / "etc" / "passwd").read_bytes() == b"new passwd"
        finally:
            os.close(held_upper)
            os.close(held_lower)
        # forgotten: the kept descriptors are closed
        assert _kept(m, str(stack.lowers[-1] / "etc" / "passwd")) == []
        assert sorted(os.listdir(stack.upper / "dir")) == ["f"]
    assert (stack.upper / "dir" / "f").read_bytes() == b"new upper"
    assert (stack.lowers[-1] / "etc" / "passwd").read_bytes() == b"root:x:0:0::/root:/bin/sh\n"


def test_an_unlinked_file_stays_openable_and_the_upper_dir_stays_clean(stack, tmp_path):
    need_kernel_overlay()
    with mounted(stack, extra="api=lowlevel") as m:
        (m / "dir" / "gone").write_bytes(b"bye")
        held = os.open(m / "dir" / "gone", os.O_PATH)
        held_lower = os.open(m / "etc" / "motd", os.O_PATH)
        try:
            os.unlink(m / "dir" / "gone")
            os.unlink(m / "etc" / "motd")
            assert not (m / "dir" / "gone").exists()
            assert _reopen(held) == b"bye"
            assert _reopen(held_lower) == b"top\n"
            assert os.fstat(held).st_nlink == 0
            # nothing of the kept file is in the upper dir, even while it is held
            assert sorted(os.listdir(stack.upper / "dir")) == []
        finally:
            os.close(held)
            os.close(held_lower)
        assert _kept(m) == []
        view = snapshot(m)
    merged = tmp_path / "merged"
    merged.mkdir()
    for p in stack.work.iterdir():  # kernel overlayfs wants its own, empty work dir
        os.system(f"rm -rf '{p}'")
    overlay_mount(stack, merged)
    try:
        assert snapshot(merged) == view
    finally:
        os.system(f"umount '{merged}'")


def test_the_high_level_api_still_serves_and_shows_rel1(stack):
    """``api=highlevel`` keeps libfuse's path API as the fallback: it mounts and serves,
    and shows REL-1 (an OPEN of a node a rename replaced fails with ESTALE)."""
    with mounted(stack, extra="api=highlevel") as m:
        assert (m / "etc" / "motd").read_text() == "top\n"
        (m / "dir" / "f").write_bytes(b"old")
        held = os.open(m / "dir" / "f", os.O_PATH)
        try:
            (m / "dir" / "tmp").write_bytes(b"new")
            os.rename(m / "dir" / "tmp", m / "dir" / "f")
            with pytest.raises(OSError) as e:
                _reopen(held)
            assert e.value.errno == errno.ESTALE
        finally:
            os.close(held)


def test_an_unknown_api_is_refused_before_anything_is_mounted(stack):
    r = run_cli("mount", "-o", stack.options(extra="api=midlevel"), str(stack.mnt))
    assert r.returncode == 2
    assert "api='midlevel': expected lowlevel or highlevel" in r.stderr
    assert not os.path.ismount(stack.mnt)
