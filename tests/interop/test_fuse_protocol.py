"""The low-level adapter answers the kernel itself (``/dev/fuse``): requests at the protocol's
limits, and the operations it leaves to the kernel, behave as on a disk file system."""

from __future__ import annotations

import errno
import fcntl
import os
import struct
import subprocess
import time

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


def _stat(times_ns: tuple[int, int, int], seconds: tuple[int, int, int]) -> os.stat_result:
    return os.stat_result(
        (0o100644, 12345, 7, 2, 1000, 1000, 4097, *seconds),
        {"st_atime_ns": times_ns[0], "st_mtime_ns": times_ns[1], "st_ctime_ns": times_ns[2],
         "st_blocks": 16, "st_blksize": 4096, "st_rdev": 0})


@pytest.mark.parametrize("options", ["", "uid=5,gid=6,umask=027"])
def test_attributes_pack_alike_by_the_fast_and_the_general_route(tmp_path, options):
    from unionfs import fuse_ll
    from unionfs.fuse import FuseOperations
    from unionfs.mount import build_union, parse_options

    for d in ("l", "u", "w"):
        (tmp_path / d).mkdir()
    (tmp_path / "l" / "f").write_bytes(b"x")
    opts = parse_options([f"lowerdir={tmp_path}/l,upperdir={tmp_path}/u,workdir={tmp_path}/w"
                          + ("," + options if options else "")])
    ll = fuse_ll.LowLevel(FuseOperations(build_union(opts), opts), opts)
    floor = [t // 10**9 for t in (1_700_000_000_123_456_789, 5, -1_500_000_000)]
    cases = [
        os.stat(tmp_path / "l" / "f"),  # a host stat
        ll.ops.stat("/f"),  # the engine's
        _stat((1_700_000_000_123_456_789, 5, -1_500_000_000), tuple(floor)),
        # seconds truncated toward zero (int() of a float time): before 1970 that is not
        # the floor, so the fast route must step aside
        _stat((-1_500_000_000, -1, 0), (-1, 0, 0)),
    ]
    for st in cases:
        assert ll._attr(st) == fuse_ll._ATTR.pack(*ll._fields(st))
    # and the fields are what the kernel must see: floored seconds, nanoseconds below 1e9
    f = fuse_ll._ATTR.unpack(ll._attr(cases[3]))
    assert (f[3], f[6]) == (-2, 500_000_000)  # (atime, its nanoseconds)
    if options:
        assert (f[11], f[12], f[9] & 0o777) == (5, 6, 0o640)


def test_a_warm_walk_asks_the_daemon_nothing(tmp_path):
    from tests.interop.fuse_helpers import in_mounts, logged_mount

    stack = make_stack(tmp_path)

    def walk(m) -> int:
        n = 0
        for dirpath, _dirs, files in os.walk(m):
            os.stat(dirpath)
            for f in files:
                os.lstat(os.path.join(dirpath, f))
                n += 1
        return n

    with logged_mount(stack) as (m, log):
        # mounted noatime, as fuse-overlayfs mounts: a listing does not drop the
        # directory's cached attributes to ask for a new access time
        assert "noatime" in in_mounts(m)[0].split()[3].split(",")
        first = walk(m)
        time.sleep(0.2)
        before = log.read_text().count("opcode: ")
        assert walk(m) == first > 5
        time.sleep(0.2)
        assert log.read_text().count("opcode: ") == before


def test_an_access_time_option_given_is_used(tmp_path):
    from tests.interop.fuse_helpers import in_mounts

    stack = make_stack(tmp_path)
    with mounted(stack, extra="relatime") as m:
        flags = in_mounts(m)[0].split()[3].split(",")
        assert "relatime" in flags and "noatime" not in flags
