"""The engine's share of a file create, made cheap, answers exactly as before.

- ``FuseOperations.fstat(fh)`` / ``UnionFS.fstat(f, path)``: the stat of an open file from
  its host descriptor equals ``stat(path)`` field by field, for new files, copied-up files,
  hard links, index=on, metacopy=on, files renamed while open and after changes through the
  handle; where the engine cannot vouch for the descriptor it answers by path.
- A file the engine creates is described by the upper from its descriptor
  (``DirLayer.open_write(describe=True)``); later lookups of it equal a cold engine's.
- A name the caches prove absent fails with ENOENT without a walk, and only then.
- ``make_entry`` and ``HostFile`` keep the behaviour of ``Entry(...)`` and ``io.RawIOBase``.
"""

from __future__ import annotations

import dataclasses
import errno
import gc
import os
import stat
import struct

import pytest

from tests.unionfs.stacks import fuse_operations
from unionfs.entry import Entry, Kind
from unionfs.layer import DirLayer, MemoryLayer, make_entry
from unionfs.union import UnionFS
from unionfs.upper import HostFile

W = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
FIELDS = ("st_mode", "st_ino", "st_dev", "st_nlink", "st_uid", "st_gid", "st_size",
          "st_atime_ns", "st_mtime_ns", "st_ctime_ns", "st_blocks", "st_blksize", "st_rdev")


def fields(st: os.stat_result) -> dict[str, int]:
    return {k: getattr(st, k) for k in FIELDS}


def _dirs(tmp_path) -> tuple[str, str, str]:
    low, up, work = (str(tmp_path / d) for d in ("low", "up", "work"))
    for d in (low, up, work):
        os.mkdir(d)
    os.mkdir(f"{low}/etc")
    with open(f"{low}/etc/motd", "w") as f:
        f.write("lower motd\n")
    with open(f"{low}/h1", "w") as f:
        f.write("linked\n")
    os.link(f"{low}/h1", f"{low}/h2")
    return low, up, work


def _ops(tmp_path, extra: str = ""):
    return fuse_operations(*_dirs(tmp_path), extra)


@pytest.fixture
def ops(tmp_path):
    return _ops(tmp_path)


def same(ops, fh: int) -> os.stat_result:
    """``ops.fstat(fh)`` equals ``ops.stat(path)`` field by field (returned)."""
    path = ops._files[fh].path
    by_fd = ops.fstat(fh)
    by_path = ops.stat(path)
    assert fields(by_fd) == fields(by_path), path
    return by_fd


# ------------------------------------------------------------------ fstat


def test_fstat_of_a_new_file_is_its_stat_through_writes_and_truncates(ops):
    ops.mkdir("/c", 0o755)
    fh = ops.create("/c/n", 0o100640, W)
    assert "/c/n" in ops.union._ufiles  # the fast path's precondition: described at create
    st = same(ops, fh)
    assert (stat.S_IMODE(st.st_mode), st.st_size, st.st_nlink) == (0o640, 0, 1)
    assert ops.write(None, b"new file\n", 0, fh) == 9
    assert same(ops, fh).st_size == 9
    ops.write(None, b"x" * 5000, 9, fh)
    st = same(ops, fh)
    assert (st.st_size, st.st_blocks, st.st_blksize) == (5009, 10, 4096)
    ops.truncate(None, 3, fh)
    assert same(ops, fh).st_size == 3
    ops.truncate("/c/n", 7000)
    assert same(ops, fh).st_size == 7000
    ops.chmod("/c/n", 0o100600)
    ops.chown("/c/n", 123, 456)
    ops.utimens("/c/n", (1_000_000_007, 2_000_000_009))
    st = same(ops, fh)
    assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid) == (0o600, 123, 456)
    assert (st.st_atime_ns, st.st_mtime_ns) == (1_000_000_007, 2_000_000_009)
    ops.release(None, fh)


def test_create_stat_is_the_stat_right_after_create(ops):
    ops.mkdir("/c", 0o755)
    fh, st = ops.create_stat("/c/a", 0o100640, W)
    assert ops.union.created_stat(ops._files[fh].file) is not None  # (no host call made)
    assert fields(st) == fields(ops.fstat(fh)) == fields(ops.stat("/c/a"))
    assert (stat.S_IMODE(st.st_mode), st.st_size, st.st_nlink) == (0o640, 0, 1)
    ops.write(None, b"data", 0, fh)
    ops.release(None, fh)
    # made for another user: the chown after the create changes what the upper described
    ops.caller = lambda: (1234, 4321, 0)
    fh, st = ops.create_stat("/c/b", 0o100644, W)
    assert ops.union.created_stat(ops._files[fh].file) is None
    assert (st.st_uid, st.st_gid) == (1234, 4321)
    assert fields(st) == fields(ops.stat("/c/b"))
    ops.release(None, fh)
    # in a set-group-ID directory the new file has the directory's group
    ops.caller = lambda: (0, 0, 0)
    ops.mkdir("/g", 0o2775)
    ops.chown("/g", 0, 777)
    fh, st = ops.create_stat("/g/n", 0o100644, W)
    assert st.st_gid == 777 and fields(st) == fields(ops.stat("/g/n"))
    ops.release(None, fh)
    # an exclusive create of an existing name fails as create does, leaving nothing open
    with pytest.raises(FileExistsError) as e:
        ops.create_stat("/c/a", 0o100644, W | os.O_EXCL)
    assert e.value.errno == errno.EEXIST
    assert ops._files == {}


def test_create_stat_with_index_on_and_on_a_memory_upper(tmp_path):
    ops = _ops(tmp_path, ",index=on")
    ops.mkdir("/c", 0o755)
    fh, st = ops.create_stat("/c/n", 0o100644, W)
    assert fields(st) == fields(ops.stat("/c/n"))
    ops.release(None, fh)
    from unionfs.fuse import FuseOperations

    mem = FuseOperations(UnionFS([MemoryLayer("low")], MemoryLayer("up")))
    mem.mkdir("/c", 0o755)
    fh, st = mem.create_stat("/c/n", 0o100600, W)
    assert fields(st) == fields(mem.stat("/c/n"))
    mem.release(None, fh)


def test_fstat_answers_from_the_descriptor(ops, tmp_path):
    ops.mkdir("/c", 0o755)
    fh = ops.create("/c/n", 0o100644, W)
    up = ops.union.upper
    fd = ops._files[fh].file.fileno()
    host = up.host_stat("/c/n", ops.union._ufiles["/c/n"], fd)
    assert host is not None and host.st_ino == os.fstat(fd).st_ino
    # another file's descriptor, or one on another filesystem, is not vouched for
    other = os.open(tmp_path / "low" / "h1", os.O_RDONLY)
    try:
        assert up.host_stat("/c/n", ops.union._ufiles["/c/n"], other) is None
    finally:
        os.close(other)
    ops.release(None, fh)


def test_fstat_of_a_copied_up_file_keeps_the_lower_inode_number(ops):
    lower_ino = ops.stat("/etc/motd").st_ino
    ro = ops.open("/etc/motd", os.O_RDONLY)  # a lower descriptor
    assert fields(ops.fstat(ro)) == fields(ops.stat("/etc/motd"))
    fh = ops.open("/etc/motd", os.O_RDWR)  # copies it up
    st = same(ops, fh)
    assert st.st_ino == lower_ino
    ops.write(None, b"UPPER", 0, fh)
    same(ops, fh)
    # the read-only handle still holds the lower file: the engine answers by path
    assert fields(ops.fstat(ro)) == fields(ops.stat("/etc/motd"))
    assert ops.fstat(ro).st_ino == lower_ino
    ops.release(None, fh)
    ops.release(None, ro)
    fh = ops.open("/etc/motd", os.O_WRONLY | os.O_TRUNC)
    assert same(ops, fh).st_size == 0
    ops.release(None, fh)


def test_fstat_of_hard_links(ops):
    fh = ops.open("/h1", os.O_RDWR)  # copy-up breaks the lower group (index=off)
    same(ops, fh)
    ops.mkdir("/c", 0o755)
    new = ops.create("/c/a", 0o100644, W)
    ops.link("/c/b", "/c/a")  # (fusepy order: new name, existing)
    st = same(ops, new)
    assert st.st_nlink == 2
    ops.write(None, b"both", 0, new)
    assert same(ops, new).st_size == 4
    assert fields(ops.stat("/c/b")) == fields(ops.fstat(new))
    ops.unlink("/c/b")
    assert same(ops, new).st_nlink == 1
    for h in (fh, new):
        ops.release(None, h)


def test_fstat_with_index_on(tmp_path):
    ops = _ops(tmp_path, ",index=on")
    assert ops.stat("/h1").st_nlink == 2
    fh = ops.open("/h1", os.O_RDWR)
    st = same(ops, fh)
    assert st.st_nlink == 2 and st.st_ino == ops.stat("/h2").st_ino
    ops.write(None, b"indexed", 0, fh)
    ops.write(None, b"+", 7, fh)
    assert same(ops, fh).st_size == 8
    assert fields(ops.stat("/h2")) == fields(ops.fstat(fh))
    ops.mkdir("/c", 0o755)
    new = ops.create("/c/n", 0o100644, W)
    same(ops, new)
    ops.truncate(None, 100, new)
    assert same(ops, new).st_size == 100
    for h in (fh, new):
        ops.release(None, h)


def test_fstat_with_metacopy_on(tmp_path):
    ops = _ops(tmp_path, ",metacopy=on,redirect_dir=on")
    ro = ops.open("/etc/motd", os.O_RDONLY)
    ops.chmod("/etc/motd", 0o100600)  # a metadata-only copy-up
    assert fields(ops.fstat(ro)) == fields(ops.stat("/etc/motd"))
    fh = ops.open("/etc/motd", os.O_RDWR)  # brings the data up
    same(ops, fh)
    for h in (ro, fh):
        ops.release(None, h)


def test_fstat_follows_renames_and_unlinks(ops):
    ops.mkdir("/c", 0o755)
    fh = ops.create("/c/n", 0o100644, W)
    ops.rename("/c/n", "/c/m", 0)
    assert ops._files[fh].path == "/c/m"
    same(ops, fh)
    ino = ops.stat("/c/m").st_ino
    keep = ops.create("/c/x", 0o100644, W)
    ops.rename("/c/x", "/c/m", 0)  # replaces the file fh holds
    st = same(ops, keep)
    assert st.st_ino != ino
    # fh is still "open under /c/m": its answer is stat("/c/m"), which now names keep's
    # file (a handle's path, as the adapter keeps it, is what fstat reports on)
    assert fields(ops.fstat(fh)) == fields(st)
    ops.unlink("/c/m")
    for h in (fh, keep):
        with pytest.raises(FileNotFoundError) as e:
            ops.fstat(h)
        assert e.value.errno == errno.ENOENT
        ops.release(None, h)


def test_fstat_of_a_file_with_xattrs_and_of_a_hidden_file(ops):
    ops.mkdir("/c", 0o755)
    fh = ops.create("/c/n", 0o100644, W)
    ops.setxattr("/c/n", "user.k", b"v", 0)
    same(ops, fh)
    ops.write(None, b"more", 0, fh)
    same(ops, fh)
    hidden = "/c/.fuse_hidden0000000100000001"
    ino = ops.stat("/c/n").st_ino
    ops.rename("/c/n", hidden, 0)  # libfuse hides a file unlinked while open
    st = ops.fstat(fh)
    assert fields(st) == fields(ops.stat(hidden, fh))
    assert (st.st_nlink, st.st_ino, st.st_size) == (0, ino, 4)
    ops.release(None, fh)


def test_fstat_of_an_unknown_handle_is_ebadf(ops):
    with pytest.raises(OSError) as e:
        ops.fstat(12345)
    assert e.value.errno == errno.EBADF


def test_fstat_on_a_memory_upper_answers_by_path(tmp_path):
    try:
        from unionfs.fuse import FuseOperations
    except (ImportError, OSError) as e:
        pytest.skip(f"unionfs.fuse cannot load libfuse 3: {e}")
    ops = FuseOperations(UnionFS([MemoryLayer("low")], MemoryLayer("up")))
    ops.mkdir("/c", 0o755)
    fh = ops.create("/c/n", 0o100644, W)
    ops.write(None, b"mem", 0, fh)
    assert same(ops, fh).st_size == 3
    ops.release(None, fh)


def test_union_fstat_defaults_to_the_path_the_file_was_opened_at(tmp_path):
    low, up, work = _dirs(tmp_path)
    fs = UnionFS([DirLayer(low, cache=False)], DirLayer(up, writable=True), workdir=work)
    fs.mkdir("/c")
    with fs.open("/c/n", "wb") as f:
        f.write(b"abc")
        assert fields(fs.fstat(f)) == fields(fs.lstat("/c/n"))
        assert fields(fs.fstat(f, "/c/../c/n")) == fields(fs.lstat("/c/n"))
    with fs.open("/etc/motd", "rb") as f:
        assert fields(fs.fstat(f)) == fields(fs.lstat("/etc/motd"))
    with pytest.raises(FileNotFoundError) as e:
        fs.fstat(f, "/nope")
    assert e.value.errno == errno.ENOENT


# ------------------------------------------------------------------ creates


def _cold(fs: UnionFS, low: str, up: str, work: str) -> UnionFS:
    cold = UnionFS([DirLayer(low, cache=False)], DirLayer(up, writable=True), workdir=work)
    assert cold.st_dev == fs.st_dev
    return cold


def test_created_files_look_up_as_a_cold_engine_sees_them(tmp_path):
    low, up, work = _dirs(tmp_path)
    fs = UnionFS([DirLayer(low, cache=False)], DirLayer(up, writable=True), workdir=work)
    fs.mkdir("/c")
    old = os.umask(0o077)  # the host's umask must not change the modes asked for
    try:
        for name, perm in (("a", 0o644), ("b", 0o777), ("c", 0o4755), ("d", 0o2711)):
            with fs.open(f"/c/{name}", W, perm=perm) as f:
                f.write(name.encode())
            assert stat.S_IMODE(fs.lstat(f"/c/{name}").st_mode) == perm
        with fs.open("/etc/new", os.O_RDWR | os.O_CREAT | os.O_EXCL, perm=0o600) as f:
            f.write(b"in a copied-up directory")
        with fs.open("/c/ro", os.O_RDONLY | os.O_CREAT, perm=0o444) as f:
            assert f.read() == b""
    finally:
        os.umask(old)
    cold = _cold(fs, low, up, work)
    for p in ("/c", "/c/a", "/c/b", "/c/c", "/c/d", "/c/ro", "/etc", "/etc/new",
              "/etc/motd"):
        assert fields(fs.lstat(p)) == fields(cold.lstat(p)), p
        assert fs.which(p).entry == cold.which(p).entry, p
    assert fs.listdir("/c") == cold.listdir("/c") == ["a", "b", "c", "d", "ro"]


def test_describe_gives_the_lookup_entry_of_a_new_file_only(tmp_path):
    up = DirLayer(str(tmp_path), writable=True)
    f = up.open_write("/n", create=True, mode=0o640, describe=True)
    f.close()
    assert f.entry == up.lookup("/n")
    assert f.entry.kind is Kind.FILE and f.entry.mode == 0o640
    again = up.open_write("/n", create=True, describe=True)  # it was there: not made here
    again.close()
    assert again.entry is None
    plain = up.open_write("/p", create=True, mode=0o600)
    plain.close()
    assert not hasattr(plain, "entry")
    assert stat.S_IMODE(os.lstat(tmp_path / "p").st_mode) == 0o600


def _default_acl(path: str) -> bool:
    # a POSIX default ACL with a named user (so new files get an access ACL xattr):
    # version 2, then (tag, perm, id) for USER_OBJ, USER 4242, GROUP_OBJ, MASK, OTHER
    entries = [(0x01, 7, 0xFFFFFFFF), (0x02, 5, 4242), (0x04, 5, 0xFFFFFFFF),
               (0x10, 7, 0xFFFFFFFF), (0x20, 5, 0xFFFFFFFF)]
    value = struct.pack("<I", 2) + b"".join(struct.pack("<HHI", *e) for e in entries)
    try:
        os.setxattr(path, "system.posix_acl_default", value)
    except OSError:
        return False
    return True


def test_a_file_the_host_gives_xattrs_is_looked_up_in_full(tmp_path):
    low, up, work = _dirs(tmp_path)
    fs = UnionFS([DirLayer(low, cache=False)], DirLayer(up, writable=True), workdir=work)
    fs.mkdir("/c")
    if not _default_acl(f"{up}/c"):
        pytest.skip("the host filesystem of tmp_path has no POSIX ACLs")
    fs.invalidate()
    f = fs.open("/c/n", W, perm=0o644)
    try:
        assert f.entry is None  # (HostFile's attribute, through UnionFile)
        assert "/c/n" not in fs._ufiles
        cold = _cold(fs, low, up, work)
        assert fields(fs.lstat("/c/n")) == fields(cold.lstat("/c/n"))
        assert fs.which("/c/n").entry == cold.which("/c/n").entry
        assert fields(fs.fstat(f)) == fields(fs.lstat("/c/n"))
    finally:
        f.close()


# ------------------------------------------------------------------ absent names


def test_absent_names_fail_with_enoent_and_present_ones_are_found(tmp_path):
    low, up, work = _dirs(tmp_path)
    fs = UnionFS([DirLayer(low, cache=False)], DirLayer(up, writable=True), workdir=work)
    fs.mkdir("/c")
    with pytest.raises(FileNotFoundError) as e:
        fs.lstat("/c/x")
    assert e.value.errno == errno.ENOENT
    fs.write_bytes("/c/x", b"1")
    assert fs.lstat("/c/x").st_size == 1
    fs.rename("/c/x", "/c/y")
    with pytest.raises(FileNotFoundError):
        fs.stat("/c/x")
    assert fs.stat("/c/y").st_size == 1
    fs.symlink("y", "/c/s")
    assert fs.stat("/c/s").st_ino == fs.lstat("/c/y").st_ino
    # a directory copied up by a create: its lower names still show, others do not
    fs.write_bytes("/etc/new", b"2")
    assert fs.lstat("/etc/motd").st_size == 11
    with pytest.raises(FileNotFoundError):
        fs.lstat("/etc/none")
    # a deleted lower name, and one under an opaque directory made over a deleted one
    fs.unlink("/etc/motd")
    with pytest.raises(FileNotFoundError):
        fs.lstat("/etc/motd")
    fs.unlink("/etc/new")
    fs.rmdir("/etc")
    fs.mkdir("/etc")
    with pytest.raises(FileNotFoundError):
        fs.lstat("/etc/motd")
    with pytest.raises(OSError) as e:
        fs.lstat("/c/" + "n" * 256)
    assert e.value.errno == errno.ENAMETOOLONG
    with pytest.raises(OSError) as e:
        fs.lstat("/c/y/z")
    assert e.value.errno == errno.ENOTDIR
    cold = _cold(fs, low, up, work)
    assert fs.listdir("/etc") == cold.listdir("/etc") == []
    assert fs.listdir("/c") == cold.listdir("/c") == ["s", "y"]


def test_lstat_or_none_is_lstat_without_enoent(tmp_path):
    ops = _ops(tmp_path)
    fs = ops.union
    ops.mkdir("/c", 0o755)
    ops.release(None, ops.create("/c/f", 0o100644, W))
    ops.symlink("/c/l", "f")
    def same_but_atime(a: os.stat_result, b: os.stat_result) -> bool:
        # (an upper symlink is read live, and reading its target moves its atime)
        return dict(fields(a), st_atime_ns=0) == dict(fields(b), st_atime_ns=0)

    for p in ("/", "/c", "/c/f", "/c/l", "/etc", "/etc/motd", "/h1"):
        assert same_but_atime(fs.lstat_or_none(p), fs.lstat(p)), p
        assert same_but_atime(ops.stat_or_none(p), ops.stat(p)), p
    for p in ("/c/none", "/none", "/none/deeper", "/etc/none", ""):
        with pytest.raises(FileNotFoundError) as e:
            ops.stat(p)
        assert e.value.errno == errno.ENOENT
        assert fs.lstat_or_none(p) is None and ops.stat_or_none(p) is None, p
    for p, code in (("/c/f/x", errno.ENOTDIR), ("/c/" + "n" * 256, errno.ENAMETOOLONG)):
        for call in (fs.lstat, fs.lstat_or_none, ops.stat, ops.stat_or_none):
            with pytest.raises(OSError) as e:
                call(p)
            assert e.value.errno == code, (call, p)
    assert ops.stat_or_none("/h1").st_nlink == 2
    assert ops._ino_of["/h1"] == ops.stat("/h1").st_ino  # noted for invalidation as stat does


def test_exclusive_and_plain_creates_of_known_names(tmp_path):
    low, up, work = _dirs(tmp_path)
    fs = UnionFS([DirLayer(low, cache=False)], DirLayer(up, writable=True), workdir=work)
    fs.mkdir("/c")
    fs.open("/c/n", os.O_WRONLY | os.O_CREAT | os.O_EXCL).close()
    with pytest.raises(FileExistsError) as e:
        fs.open("/c/n", os.O_WRONLY | os.O_CREAT | os.O_EXCL)
    assert e.value.errno == errno.EEXIST
    with pytest.raises(IsADirectoryError):
        fs.open("/c", W)
    fs.mkdir("/c/d")
    with pytest.raises(IsADirectoryError):
        fs.open("/c/d", W)
    with pytest.raises(FileNotFoundError):
        fs.open("/c/z", os.O_RDONLY | os.O_CREAT | os.O_DIRECTORY)
    with pytest.raises(OSError) as e:
        fs.open("/c/.wh.x", W)
    assert e.value.errno == errno.EINVAL


# ------------------------------------------------------------------ building blocks


def test_make_entry_is_entry():
    args = (Kind.FILE, 0o644, 1, 2, 3, 4, 5, 6, 1, 0, 7, None, (("user.a", b"b"),), False,
            None, True, 99)
    made, built = make_entry(*args), Entry(*args)
    assert made is not built and made == built and hash(made) == hash(built)
    assert type(made) is Entry and dataclasses.astuple(made) == dataclasses.astuple(built)
    with pytest.raises(dataclasses.FrozenInstanceError):
        made.mode = 0  # type: ignore[misc]


def test_host_file_closes_like_an_io_object(tmp_path):
    path = tmp_path / "f"
    f = HostFile(os.open(path, os.O_RDWR | os.O_CREAT))
    f.write(b"abc")
    assert f.pread(3, 0) == b"abc" and not f.closed
    f.flush()
    f.close()
    f.close()
    assert f.closed
    with pytest.raises(ValueError):
        f.flush()
    for call in (lambda: f.read(), f.fileno, lambda: f.pwrite(b"x", 0), lambda: f.seek(0)):
        with pytest.raises(OSError) as e:
            call()
        assert e.value.errno == errno.EBADF
    with pytest.raises(ValueError):
        f.__enter__()  # (what a with statement on a closed file does first)
    with HostFile(os.open(path, os.O_RDONLY), writable=False) as g:
        assert g.readline() == b"abc"
        with pytest.raises(OSError) as e:
            g.pwrite(b"x", 0)
        assert e.value.errno == errno.EBADF
    assert g.closed
    fd = os.open(path, os.O_RDONLY)
    h = HostFile(fd)
    del h
    gc.collect()
    with pytest.raises(OSError) as e:  # an object dropped unclosed closes its descriptor
        os.fstat(fd)
    assert e.value.errno == errno.EBADF
