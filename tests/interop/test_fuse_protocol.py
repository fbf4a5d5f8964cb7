"""The low-level adapter answers the kernel itself (``/dev/fuse``): requests at the protocol's
limits, and the operations it leaves to the kernel, behave as on a disk file system."""

from __future__ import annotations

import errno
import fcntl
import os
import struct
import subprocess

import pytest

from tests.interop.fuse_helpers import make_stack, mounted

pytestmark = [pytest.mark.fuse, pytest.mark.root]

FS_IOC_GETFLAGS = 0x80086601


@pytest.mark.parametrize("extra", ["passthrough=off", ""])
def test_writes_and_reads_at_the_largest_request_size(tmp_path, extra):
    stack = make_stack(tmp_path)
    data = os.urandom(3 * (1 << 20) + 12345)
    with mounted(stack, extra=extra) as m:
        fd = os.open(m / "big.bin", os.O_WRONLY | os.O_CREAT, 0o644)
        try:
            # one write(2) of 3 MiB: the kernel splits it into requests of max_write (1 MiB)
            assert os.write(fd, data) == len(data)
        finally:
            os.close(fd)
        # a fresh mount reads it back through READ requests of its own (no cached pages)
    with mounted(stack, extra=extra) as m:
        fd = os.open(m / "big.bin", os.O_RDONLY | os.O_DIRECT)
        try:
            buf = bytearray()
            while chunk := os.read(fd, 1 << 20):
                buf += chunk
        finally:
            os.close(fd)
        assert bytes(buf) == data
        assert os.pread(os.open(m / "data" / "big", os.O_RDONLY), 1 << 20, 0) == \
            (stack.lowers[-1] / "data" / "big").read_bytes()
    assert (stack.upper / "big.bin").read_bytes() == data


def test_what_the_daemon_leaves_to_the_kernel_works_as_on_a_disk(tmp_path):
    stack = make_stack(tmp_path)
    with mounted(stack) as m:
        p = m / "f"
        p.write_bytes(b"0123456789" * 1000)
        fd = os.open(p, os.O_RDWR)
        try:
            # an ioctl it does not know: ENOTTY, as ext4 answers
            with pytest.raises(OSError) as e:
                fcntl.ioctl(fd, FS_IOC_GETFLAGS, struct.pack("l", 0))
            assert e.value.errno == errno.ENOTTY
            assert not os.isatty(fd)
            # POSIX and BSD locks: the kernel keeps them
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            # SEEK_DATA / SEEK_HOLE: the kernel's generic answer (all data, hole at the end)
            assert os.lseek(fd, 0, os.SEEK_DATA) == 0
            assert os.lseek(fd, 0, os.SEEK_HOLE) == 10_000
            # copy_file_range: done by the kernel with reads and writes
            out = os.open(m / "copy", os.O_WRONLY | os.O_CREAT, 0o644)
            try:
                assert os.copy_file_range(fd, out, 10_000, 0, 0) == 10_000
            finally:
                os.close(out)
            # posix_fallocate: the space is there (written as zeros where the file system
            # does not allocate; the size grows either way)
            os.posix_fallocate(fd, 0, 1 << 20)
        finally:
            os.close(fd)
        assert (m / "copy").read_bytes() == b"0123456789" * 1000
        assert p.stat().st_size == 1 << 20
        assert p.read_bytes() == b"0123456789" * 1000 + bytes((1 << 20) - 10_000)
        # O_TMPFILE: not supported by this file system
        with pytest.raises(OSError) as e:
            os.open(m / "dir", os.O_TMPFILE | os.O_RDWR, 0o600)
        assert e.value.errno == errno.EOPNOTSUPP
        # statx asking for the birth time (FUSE_STATX, not served) falls back to GETATTR
        r = subprocess.run(["stat", "--format=%s %W", str(p)], capture_output=True, text=True,
                           check=True)
        assert r.stdout.split()[0] == str(1 << 20)


def test_a_listing_larger_than_one_reply_comes_whole(tmp_path):
    stack = make_stack(tmp_path)
    names = {f"entry-with-a-longish-name-{i:05d}" for i in range(3000)}
    with mounted(stack) as m:
        d = m / "many"
        d.mkdir()
        for n in names:
            (d / n).touch()
        assert set(os.listdir(d)) == names
        with os.scandir(d) as it:
            seen = {e.name: e.inode() for e in it}
        assert set(seen) == names and all(seen.values())
        assert {e.name for e in os.scandir(d) if e.is_file()} == names
