"""FUSE passthrough (Linux 6.9+): a file whose data is an upper file of one link is opened in
passthrough mode, and the kernel reads and writes the host file itself. What must hold:

- no WRITE request reaches the daemon for such a file (counted in the ``-d`` request log),
  and with ``-o passthrough=off`` they all do;
- the kernel's rule (an inode is open either in passthrough mode, with one backing file, or
  in caching mode, never both) never turns into EIO: readers and writers of one file opened
  in any order all work;
- data written in passthrough mode is what every later reader sees, including one whose
  pages were cached before; a hard-linked file is never passed through;
- the upper dir holds the data.
"""

from __future__ import annotations

import mmap
import os
import pathlib
import re
import struct
import time

import pytest

from tests.interop.fuse_helpers import logged_mount, make_stack, requests_in

pytestmark = [pytest.mark.fuse, pytest.mark.root]


def _kernel_has_passthrough() -> bool:
    major, minor = (int(x) for x in re.match(r"(\d+)\.(\d+)", os.uname().release).groups())
    return (major, minor) >= (6, 9)


need_passthrough = pytest.mark.skipif(
    not _kernel_has_passthrough() or os.geteuid() != 0,
    reason="FUSE passthrough needs Linux 6.9+ and root (CAP_SYS_ADMIN)")


@need_passthrough
def test_writes_of_a_new_file_reach_the_upper_without_write_requests(tmp_path):
    stack = make_stack(tmp_path)
    with logged_mount(stack) as (mnt, log):
        with open(mnt / "new.txt", "wb") as f:
            f.write(b"x" * 100_000)
            f.write(b"tail\n")
        (mnt / "dir" / "made").write_bytes(b"made\n")
        assert (mnt / "new.txt").read_bytes() == b"x" * 100_000 + b"tail\n"
        assert (mnt / "new.txt").stat().st_size == 100_005
        text = log.read_text()
        assert "flags2=" in text and requests_in(log, "CREATE") == 2, text[:2000]
        assert requests_in(log, "WRITE") == 0
    assert (stack.upper / "new.txt").read_bytes() == b"x" * 100_000 + b"tail\n"
    assert (stack.upper / "dir" / "made").read_bytes() == b"made\n"


@need_passthrough
def test_a_copied_up_file_is_written_in_passthrough_mode(tmp_path):
    stack = make_stack(tmp_path)
    with logged_mount(stack) as (mnt, log):
        with open(mnt / "etc" / "passwd", "ab") as f:
            f.write(b"user:x:1000:1000::/home/user:/bin/sh\n")
        assert requests_in(log, "WRITE") == 0
        assert (mnt / "etc" / "passwd").read_bytes().endswith(b"/home/user:/bin/sh\n")
    assert (stack.upper / "etc" / "passwd").read_bytes() == (
        b"root:x:0:0::/root:/bin/sh\nuser:x:1000:1000::/home/user:/bin/sh\n")
    assert (stack.lowers[1] / "etc" / "passwd").read_bytes() == b"root:x:0:0::/root:/bin/sh\n"


def test_passthrough_off_sends_every_write_to_the_daemon(tmp_path):
    stack = make_stack(tmp_path)
    with logged_mount(stack, "passthrough=off") as (mnt, log):
        with open(mnt / "new.txt", "wb") as f:
            f.write(b"data\n")
        assert requests_in(log, "WRITE") == 1
    assert (stack.upper / "new.txt").read_bytes() == b"data\n"


@need_passthrough
@pytest.mark.parametrize("extra", ["", "spin=0"])
def test_readers_and_writers_in_any_order_never_get_eio(tmp_path, extra):
    stack = make_stack(tmp_path)
    with logged_mount(stack, extra) as (mnt, _log):
        p = mnt / "f"
        p.write_bytes(b"one\n")
        # a writer first (passthrough), then a reader and an mmap while it is open
        w = os.open(p, os.O_WRONLY | os.O_APPEND)
        try:
            os.write(w, b"two\n")
            r = os.open(p, os.O_RDONLY)
            try:
                assert os.pread(r, 100, 0) == b"one\ntwo\n"
                with mmap.mmap(r, 0, prot=mmap.PROT_READ) as m:
                    os.write(w, b"3\n")
                    assert m[:8] == b"one\ntwo\n"
                assert os.pread(r, 100, 0) == b"one\ntwo\n3\n"
            finally:
                os.close(r)
        finally:
            os.close(w)
        # a reader first (caching mode), then a writer while it is open
        r = os.open(p, os.O_RDONLY)
        try:
            assert os.read(r, 100) == b"one\ntwo\n3\n"
            with open(p, "r+b") as f:
                f.seek(0)
                f.write(b"ONE\n")
            assert os.pread(r, 100, 0) == b"ONE\ntwo\n3\n"
        finally:
            os.close(r)
        # and a lower file read, then written while its reader stays open
        r = os.open(mnt / "dir" / "bottom.txt", os.O_RDONLY)
        try:
            assert os.read(r, 100) == b"from the bottom\n"
            with open(mnt / "dir" / "bottom.txt", "ab") as f:
                f.write(b"more\n")
        finally:
            os.close(r)
        assert (mnt / "dir" / "bottom.txt").read_bytes() == b"from the bottom\nmore\n"
    assert (stack.upper / "f").read_bytes() == b"ONE\ntwo\n3\n"


@need_passthrough
def test_pages_cached_before_a_passthrough_write_are_not_served_after_it(tmp_path):
    stack = make_stack(tmp_path)
    with logged_mount(stack) as (mnt, log):
        p = mnt / "f"
        p.write_bytes(b"a" * 8192)
        # read in caching mode: the kernel keeps these pages across opens (keep_cache)
        assert p.read_bytes() == b"a" * 8192
        assert p.read_bytes() == b"a" * 8192
        # then written in passthrough mode (no reader open): same size, new bytes
        fd = os.open(p, os.O_WRONLY)
        try:
            os.pwrite(fd, b"b" * 4096, 0)
        finally:
            os.close(fd)
        assert p.read_bytes() == b"b" * 4096 + b"a" * 4096
        assert requests_in(log, "WRITE") == 0
        # truncation and growth through a passthrough descriptor
        with open(p, "r+b") as f:
            f.truncate(10)
            f.seek(0, os.SEEK_END)
            f.write(b"!")
            f.flush()
            os.fsync(f.fileno())
        assert p.read_bytes() == b"b" * 10 + b"!"
        assert p.stat().st_size == 11


@need_passthrough
def test_a_hard_linked_file_keeps_its_names_in_step(tmp_path):
    stack = make_stack(tmp_path)
    with logged_mount(stack) as (mnt, log):
        a, b = mnt / "a", mnt / "b"
        a.write_bytes(b"1234")
        os.link(a, b)
        # two links: written through the daemon, and the other name sees it at once
        before = requests_in(log, "WRITE")
        with open(a, "ab") as f:
            f.write(b"5678")
        assert requests_in(log, "WRITE") == before + 1
        assert b.stat().st_size == 8 and b.read_bytes() == b"12345678"
        # a writer that began before the link: the other name is right once it closes
        c = mnt / "c"
        fd = os.open(c, os.O_WRONLY | os.O_CREAT, 0o644)
        try:
            os.write(fd, b"xy")
            d = mnt / "d"
            os.link(c, d)
            os.write(fd, b"z")
        finally:
            os.close(fd)
        deadline = time.monotonic() + 5
        while d.stat().st_size != 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert d.stat().st_size == 3 and d.read_bytes() == b"xyz"
        assert os.stat(c).st_nlink == 2
    assert (stack.upper / "d").read_bytes() == b"xyz"


def test_the_request_log_names_each_request_and_its_answer(tmp_path):
    stack = make_stack(tmp_path)
    with logged_mount(stack) as (mnt, log):
        with pytest.raises(FileNotFoundError):
            os.stat(mnt / "absent")
        assert (mnt / "etc" / "motd").read_bytes() == b"top\n"
        text = log.read_text()
    assert re.search(r"unique: \d+, opcode: INIT \(26\), nodeid: 0", text)
    assert re.search(r"opcode: LOOKUP \(1\), nodeid: 1, insize: \d+, pid: \d+", text)
    assert re.search(r"   unique: \d+, success, outsize: \d+", text)


def _capability_sequence(path: pathlib.Path) -> list:
    """Write, set a file capability, read it back, write again (which drops it, as the
    kernel drops privileges on write), read again: what each step shows."""
    blob = struct.pack("<IIIII", 0x02000001, 1 << 10, 0, 0, 0)  # cap_net_bind_service+ep
    seen: list = []
    with open(path, "ab") as f:
        f.write(b"1")
    seen.append(_cap(path))
    os.setxattr(path, "security.capability", blob)
    seen.append(_cap(path))
    with open(path, "ab") as f:
        f.write(b"2")
    seen.append(_cap(path))
    os.setxattr(path, "security.capability", blob)
    os.removexattr(path, "security.capability")
    seen.append(_cap(path))
    return seen


def _cap(path: pathlib.Path) -> bytes | int:
    try:
        return os.getxattr(path, "security.capability")
    except OSError as e:
        return e.errno


def test_file_capabilities_are_kept_and_dropped_as_on_the_host(tmp_path):
    host = tmp_path / "host-file"
    host.write_bytes(b"")
    expected = _capability_sequence(host)
    assert expected[1] != expected[0]  # (the host keeps capabilities at all)
    stack = make_stack(tmp_path / "stack")
    with logged_mount(stack) as (mnt, _log):
        (mnt / "f").write_bytes(b"")
        assert _capability_sequence(mnt / "f") == expected
