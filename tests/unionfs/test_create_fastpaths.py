"""The short ways of a create through the FUSE adapter answer exactly as the general ones.

- ``UnionFS.create_new`` (one call for a create of a name the caches prove absent) gives the
  file, stat and cache state that ``open(..., O_CREAT)`` + ``created_stat`` give, declines
  (doing nothing) wherever it cannot prove the name free, and fails as ``open`` fails.
- ``DirLayer.create_new`` is ``open_write(create=True, truncate=True, known_absent=True,
  describe=True)``.
- ``lstat`` of an upper directory changed by the engine's own creates and removals is, field
  by field, the general lookup's answer and a cold engine's.
- ``lstat_or_none`` of a name the caches prove absent is None exactly where ``lstat`` raises
  ENOENT, and raises what ``lstat`` raises for every other path.
- An open for write of an upper file the engine knows keeps the caches exact (its parent's
  stat stays, as on the host).
- Random sequences of creates, lookups, writes, renames and removals through the FUSE
  operations answer as the general create route does, and as a cold engine sees the layers.
"""

from __future__ import annotations

import errno
import os
import pathlib
import shutil
import stat
import subprocess
import tempfile

import pytest

from tests.unionfs.stacks import fuse_operations
from unionfs.layer import DirLayer, MemoryLayer
from unionfs.union import UnionFS

W = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
FIELDS = ("st_mode", "st_ino", "st_dev", "st_nlink", "st_uid", "st_gid", "st_size",
          "st_atime_ns", "st_mtime_ns", "st_ctime_ns", "st_blocks", "st_blksize", "st_rdev",
          "st_atime", "st_mtime", "st_ctime")
#: a group of the set-group-ID directory (one of another user's where we may: root)
GROUP = 4321 if os.geteuid() == 0 else os.getegid()
NO_ATIME = tuple(k for k in FIELDS if "atime" not in k)
#: what two separately made files can share (not their device, inode number or times)
SHAPE = ("st_mode", "st_nlink", "st_uid", "st_gid", "st_size", "st_blocks",
         "st_blksize", "st_rdev")


def fields(st: os.stat_result, names: tuple[str, ...] = FIELDS) -> dict:
    out = {k: getattr(st, k) for k in names}
    return out | {"seq": tuple(st)} if names is FIELDS else out


def _stack(root) -> tuple[str, str, str]:
    low, up, work = (str(root / d) for d in ("low", "up", "work"))
    for d in (low, up, work):
        os.makedirs(d)
    os.mkdir(f"{low}/etc")
    with open(f"{low}/etc/motd", "w") as f:
        f.write("lower motd\n")
    os.mkdir(f"{low}/gone")
    with open(f"{low}/gone/old", "w") as f:
        f.write("old\n")
    return low, up, work


def _fs(root, **kw) -> tuple[UnionFS, str, str, str]:
    low, up, work = _stack(root)
    return UnionFS([DirLayer(low, cache=False)], DirLayer(up, writable=True), workdir=work,
                   **kw), low, up, work


def _cold(low: str, up: str, work: str, **kw) -> UnionFS:
    return UnionFS([DirLayer(low, cache=False)], DirLayer(up, writable=True), workdir=work,
                   **kw)


def _caches(fs: UnionFS) -> dict:
    """The engine's cached knowledge, by key (and by kind of value where that is fixed)."""
    return {
        "ucache": {k: None if v is None else v.kind for k, v in fs._ucache.items()},
        "ufiles": sorted(fs._ufiles),
        "complete": {k: sorted(v) for k, v in fs._complete.items()},
        "stale": sorted(fs._stale),
        "stats": sorted(fs._stat_cache),
        "sym": sorted(fs._sym_stat),
        "dnodes": sorted(fs._dnodes),
        "ptimes": sorted(fs._ptimes),
    }


def _prepare(fs: UnionFS) -> None:
    """The same history on every engine: directories made, resolved, a file made."""
    fs.mkdir("/c")
    fs.mkdir("/c/sub")
    fs.write_bytes("/c/old", b"old")
    fs.mkdir("/g", 0o2775)
    fs.chown("/g", os.geteuid(), GROUP)  # (new files take this group, as the host gives it)
    fs.write_bytes("/etc/new", b"copies /etc up")  # an engine-made dir with a lower part
    fs.unlink("/gone/old")
    fs.rmdir("/gone")
    fs.mkdir("/gone")  # opaque: made where a lower directory was deleted
    for p in ("/", "/c", "/c/sub", "/g", "/etc", "/gone"):
        fs.lstat(p)


# ------------------------------------------------------------------ UnionFS.create_new


CASES = [  # (path, flags, perm): each is a create create_new takes
    ("/c/a", W, 0o644),
    ("/c/b", os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600),
    ("/c/c", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o4755),
    ("/c/sub/d", W | os.O_NOFOLLOW, 0o2711),
    ("/g/e", W, 0o640),  # a set-group-ID directory
    ("/etc/g", W, 0o644),  # a copied-up directory (the lower names still show)
    ("/c/" + "n" * 63, W, 0o644),
    ("/c/ünï", W, 0o644),
]


def test_create_new_is_open_and_created_stat(tmp_path):
    fast, low, up, work = _fs(tmp_path / "fast")
    slow, *_ = _fs(tmp_path / "slow")
    for fs in (fast, slow):
        _prepare(fs)
    for path, flags, perm in CASES:
        assert _caches(fast) == _caches(slow), path
        made = fast.create_new(path, flags, perm)
        assert made is not None, path
        f, st = made
        g = slow.open(path, flags, perm=perm)
        try:
            assert st is not None, path
            assert fields(st) == fields(fast.lstat(path)) == fields(fast.fstat(f)), path
            assert fields(st) == fields(fast.created_stat(f)), path  # (both ways agree)
            assert fields(st, SHAPE) == fields(slow.created_stat(g), SHAPE), path
            assert (f.path, f.ino) == (path, st.st_ino)
            assert (g.path, g.ino) == (path, slow.lstat(path).st_ino)
            assert stat.S_IMODE(st.st_mode) == perm
            for h in (f, g):
                h.pwrite(b"ab", 0)
                h.pwrite(b"cd", 0)  # (at the end in append mode)
                if flags & os.O_ACCMODE == os.O_RDWR:
                    assert h.pread(9, 0) == b"cd"
                else:
                    with pytest.raises(OSError) as e:
                        h.pread(4, 0)
                    assert e.value.errno == errno.EBADF
            assert _caches(fast) == _caches(slow), path
        finally:
            f.close()
            g.close()
        want = b"abcd" if flags & os.O_APPEND else b"cd"
        assert fast.read_bytes(path) == slow.read_bytes(path) == want, path
    assert _caches(fast) == _caches(slow)
    for fs in (fast, slow):
        assert fs.lstat("/g/e").st_gid == fs.lstat("/g").st_gid == GROUP
    cold = _cold(low, up, work)
    for p in ["/c", "/c/sub", "/g", "/gone", "/etc", "/etc/motd"] + [c[0] for c in CASES]:
        assert fields(fast.lstat(p)) == fields(cold.lstat(p)), p
        assert fast.which(p).entry == cold.which(p).entry, p
        assert fast.listdir(os.path.dirname(p)) == cold.listdir(os.path.dirname(p)), p


def test_create_new_applies_the_union_umask(tmp_path):
    fs, *_ = _fs(tmp_path, umask=0o027)
    fs.mkdir("/c", 0o777)
    fs.lstat("/c")
    f, st = fs.create_new("/c/n", W, 0o666)
    f.close()
    assert stat.S_IMODE(st.st_mode) == 0o640 == stat.S_IMODE(fs.lstat("/c/n").st_mode)


def test_create_new_declines_and_changes_nothing_where_open_decides(tmp_path):
    fs, low, up, work = _fs(tmp_path)
    _prepare(fs)
    fs.write_bytes("/c/here", b"x")
    fs.lstat("/c/here")
    declined = [
        ("/c/r", os.O_RDONLY | os.O_CREAT),  # read-only create: open reopens it read-only
        ("/c/z", os.O_RDWR | os.O_CREAT | os.O_DIRECTORY),
        ("/c/.wh.x", W),  # EINVAL from open
        ("/c/here", W),  # there: open truncates it
        ("/c/here", os.O_WRONLY | os.O_CREAT | os.O_EXCL),  # EEXIST from open
        ("/c/sub", W),  # EISDIR from open
        ("/etc/motd", W),  # a lower name in a copied-up directory: open copies it up
        ("/c/", W),  # is "/c": EISDIR
        ("/c/.", W),
        ("/c/sub/..", W),
        ("/c/" + "n" * 64, W),  # (long names are looked up)
        ("/", W),
        ("/nodir/x", W),  # a parent no one resolved: ENOENT from open
        ("/etc2/x", W),
        ("/gone/f", W),  # an opaque directory: its names are not kept (set_opaque drops them)
    ]
    for path, flags in declined:
        before = (_caches(fs), sorted(os.listdir(f"{up}/c")))
        assert fs.create_new(path, flags, 0o644) is None, path
        assert (_caches(fs), sorted(os.listdir(f"{up}/c"))) == before, path
    # and open gives its own answers for them
    for path, flags, code in (("/c/.wh.x", W, errno.EINVAL), ("/c/sub", W, errno.EISDIR),
                              ("/c/", W, errno.EISDIR), ("/nodir/x", W, errno.ENOENT),
                              ("/c/here", os.O_WRONLY | os.O_CREAT | os.O_EXCL,
                               errno.EEXIST)):
        with pytest.raises(OSError) as e:
            fs.open(path, flags)
        assert e.value.errno == code, path
    for bad, code in (("/c/a\0b", errno.EINVAL), ("", errno.ENOENT),
                      ("/c/" + "n" * 256, errno.ENAMETOOLONG)):
        try:  # refused at once, or declined (and then refused by open)
            assert fs.create_new(bad, W, 0o644) is None, bad
        except OSError as e:
            assert e.errno == code, bad
        with pytest.raises(OSError) as e:
            fs.open(bad, W)
        assert e.value.errno == code, bad
    f, st = fs.create_new("/c//q", W, 0o644)  # (a path is normalised first: "/c/q")
    f.close()
    assert f.path == "/c/q" and fields(st) == fields(fs.lstat("/c/q"))
    # a name that was there and went is free again (the name sets follow every change)
    fs.unlink("/c/here")
    f, st = fs.create_new("/c/here", W, 0o644)
    f.close()
    assert fields(st) == fields(fs.lstat("/c/here"))
    fs.rename("/c/here", "/c/sub/moved")
    assert fs.create_new("/c/sub/moved", W, 0o644) is None  # now taken
    f, st = fs.create_new("/c/here", W, 0o644)
    f.close()
    cold = _cold(low, up, work)
    assert fs.listdir("/c") == cold.listdir("/c")
    assert fs.listdir("/c/sub") == cold.listdir("/c/sub") == ["moved"]


def test_create_new_only_with_a_dir_upper_and_index_off(tmp_path):
    fs, *_ = _fs(tmp_path / "i", index=True)
    fs.mkdir("/c")
    fs.lstat("/c")
    assert fs.create_new("/c/n", W, 0o644) is None
    mem = UnionFS([MemoryLayer("low")], MemoryLayer("up"))
    mem.mkdir("/c")
    mem.lstat("/c")
    assert mem.create_new("/c/n", W, 0o644) is None
    ro = UnionFS([MemoryLayer("low")])
    assert ro.create_new("/n", W, 0o644) is None
    with pytest.raises(OSError) as e:
        ro.open("/n", W)
    assert e.value.errno == errno.EROFS


def test_create_new_fails_as_open_fails(tmp_path):
    from tests.conftest import need_root

    need_root()
    results = {}
    for side in ("fast", "slow"):
        small = tmp_path / side
        small.mkdir()
        # a real fault: a filesystem that runs out of inodes
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m,nr_inodes=12", "tmpfs",
                        str(small)], check=True)
        try:
            up, work = small / "up", small / "work"
            up.mkdir()
            work.mkdir()
            fs = UnionFS([MemoryLayer("low")], DirLayer(str(up), writable=True),
                         workdir=str(work))
            fs.mkdir("/c")
            fs.lstat("/c")
            made, code = 0, None
            while code is None and made < 20:
                p = f"/c/n{made}"
                try:
                    if side == "fast":
                        f, _st = fs.create_new(p, W, 0o644)
                    else:
                        f = fs.open(p, W)
                    f.close()
                    made += 1
                except OSError as e:
                    code = e.errno
            results[side] = (made, code, _caches(fs))
            assert code == errno.ENOSPC
            assert "/c" not in fs._complete  # what is in /c is not known after a failure
            cold = UnionFS([MemoryLayer("low")], DirLayer(str(up), writable=True),
                           workdir=str(work))
            assert fs.listdir("/c") == cold.listdir("/c")
            with pytest.raises(FileNotFoundError):
                fs.lstat(f"/c/n{made}")
            assert fs.create_new(f"/c/n{made}", W, 0o644) is None  # (names not known now)
        finally:
            subprocess.run(["umount", str(small)], check=True)
    assert results["fast"] == results["slow"]


# ------------------------------------------------------------------ DirLayer.create_new


def test_layer_create_new_is_open_write_of_a_new_file(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    a = DirLayer(str(tmp_path / "a"), writable=True)
    b = DirLayer(str(tmp_path / "b"), writable=True)
    for name, mode, append, readable in (("x", 0o640, False, True), ("y", 0o755, True, False),
                                         (".wh.z", 0o600, False, True)):
        f = a.create_new(f"/{name}", mode, append=append, readable=readable)
        g = b.open_write(f"/{name}", create=True, truncate=True, mode=mode, append=append,
                         readable=readable, known_absent=True, describe=True)
        try:
            if name.startswith(".wh."):
                assert f.entry is None and g.entry is None
            else:
                assert f.entry == a.lookup(f"/{name}")
                assert f.entry.kind is g.entry.kind and f.entry.mode == g.entry.mode == mode
            assert (f.readable(), f.writable(), f._append) == (readable, True, append)
            assert stat.S_IMODE(os.stat(tmp_path / "a" / name).st_mode) == mode
        finally:
            f.close()
            g.close()
    # there already (changed behind the engine's back): opened and truncated, not described
    (tmp_path / "a" / "x").write_bytes(b"content")
    f = a.create_new("/x", 0o600)
    f.close()
    assert f.entry is None and (tmp_path / "a" / "x").read_bytes() == b""
    with pytest.raises(OSError) as e:
        a.create_new("/missing/x", 0o600)
    assert e.value.errno == errno.ENOENT


# ------------------------------------------------------------------ stat of a changed dir


def _general_stat(fs: UnionFS, p: str) -> os.stat_result:
    """``_lookup_stat``'s own answer for a stale ``p`` (the route before the short one)."""
    fs._stat_cache.pop((p, False), None)
    fs._stale.add(p)
    return fs._lookup_stat(p, False)


def test_stat_of_a_changed_upper_dir_is_the_general_one(tmp_path):
    fs, low, up, work = _fs(tmp_path)
    _prepare(fs)
    steps = [
        lambda: fs.write_bytes("/c/f1", b"1"),
        lambda: fs.mkdir("/c/d1"),  # nlink moves
        lambda: fs.symlink("f1", "/c/l1"),
        lambda: fs.link("/c/f1", "/c/h1"),
        lambda: fs.rename("/c/f1", "/c/f2"),
        lambda: fs.rename("/c/d1", "/c/sub/d1"),
        lambda: fs.unlink("/c/h1"),
        lambda: fs.rmdir("/c/sub/d1"),
        lambda: fs.chmod("/c", 0o1777),
        lambda: fs.utime("/c", ns=(5_000_000_001, 7_000_000_003)),
        lambda: fs.mknod("/c/fifo", stat.S_IFIFO | 0o600),
        lambda: fs.write_bytes("/gone/x", b"x"),  # the opaque directory
        lambda: fs.write_bytes("/etc/y", b"y"),  # merged: the general route only
        lambda: fs.write_bytes("/top", b"t"),  # the root (merged)
    ]
    for i, step in enumerate(steps):
        step()
        for p in ("/c", "/c/sub", "/gone", "/etc", "/"):
            if (p, False) in fs._stat_cache:
                fs._stat_cache.pop((p, False))
                fs._stale.add(p)
            node = fs._dnodes.get(p)
            short = fs._changed_dir_stat(p, (p, False))
            merged = node is None or node.lower is not None
            assert (short is None) == merged, (i, p)
            st = fs.lstat(p)
            assert fs._stat_cache[(p, False)] is st  # kept until the next change there
            general = _general_stat(fs, p)
            assert fields(st) == fields(general), (i, p)
            if short is not None:
                assert fields(short) == fields(general), (i, p)
            cold = _cold(low, up, work)
            assert fields(st) == fields(cold.lstat(p)), (i, p)
    assert fs.lstat("/c").st_nlink == 3  # ., .., sub


def test_stat_of_a_dir_changed_behind_the_engines_back_is_looked_up_again(tmp_path):
    fs, low, up, work = _fs(tmp_path)
    _prepare(fs)
    fs.write_bytes("/c/f", b"1")
    os.rename(f"{up}/c", f"{up}/c.old")  # (undefined for users; the engine must not crash)
    os.mkdir(f"{up}/c")
    assert fs._changed_dir_stat("/c", ("/c", False)) is None  # another inode: not vouched
    st = fs.lstat("/c")
    assert st.st_ino == _cold(low, up, work).lstat("/c").st_ino


# ------------------------------------------------------------------ absent names


def test_lstat_or_none_agrees_with_lstat_on_every_path(tmp_path):
    fs, *_ = _fs(tmp_path)
    _prepare(fs)
    fs.write_bytes("/c/f", b"1")
    fs.symlink("f", "/c/l")
    paths = ["/c/x", "/c/f", "/c/l", "/c/", "/c/.", "/c/..", "/c/./x", "/c//x", "//c/x",
             "/c/x/", "/c/sub/../x", "/c/sub/..", "c/x", "c", "/c/" + "n" * 64,
             "/c/" + "n" * 255, "/c/" + "n" * 256, "/c/a\0b", "/c/f/x", "/c/x/y",
             "/c/ünï", "/etc/motd", "/etc/x", "/gone/old", "/gone/x", "/", "",
             "/" + "/".join(["c"] * 2100), b"/c/x", b"/c/f"]
    for p in paths:
        try:
            want = fs.lstat(p)
        except OSError as e:
            want = e.errno
        try:
            got = fs.lstat_or_none(p)
        except OSError as e:
            got = e.errno
        if want == errno.ENOENT:
            assert got is None, p
        elif isinstance(want, int):
            assert got == want, p
        else:  # (an upper symlink is read live: reading its target moves its atime)
            assert fields(got, (*SHAPE, "st_ino", "st_mtime_ns")) == \
                fields(want, (*SHAPE, "st_ino", "st_mtime_ns")), p


def test_lstat_or_none_of_a_name_past_path_max_in_a_deep_engine_made_dir():
    root = tempfile.mkdtemp(prefix="u", dir="/tmp")  # (short host paths: room for depth)
    try:
        fs, *_ = _fs(pathlib.Path(root))
        fs.mkdir("/c")
        up = os.path.join(root, "up")
        deep = "/c"
        while (room := 4090 - len(up) - len(deep) - 1) > 0:
            deep += "/" + "d" * min(60, room)
            fs.mkdir(deep)
        fs.lstat(deep)
        long = deep + "/" + "n" * 63
        assert len(long) >= 4096
        for call in (fs.lstat, fs.lstat_or_none):
            with pytest.raises(OSError) as e:
                call(long)
            assert e.value.errno == errno.ENAMETOOLONG
        assert fs.lstat_or_none(deep + "/x") is None
        try:  # refused at once, or declined (and then refused by open)
            assert fs.create_new(long, W, 0o644) is None
        except OSError as e:
            assert e.errno == errno.ENAMETOOLONG
        with pytest.raises(OSError) as e:
            fs.open(long, W)
        assert e.value.errno == errno.ENAMETOOLONG
    finally:
        shutil.rmtree(root)


# ------------------------------------------------------------------ open for write


def test_open_for_write_of_a_known_upper_file_keeps_the_caches_exact(tmp_path):
    fs, low, up, work = _fs(tmp_path)
    _prepare(fs)
    fs.write_bytes("/c/f", b"12345")
    fs.lstat("/c/f")
    fs.lstat("/c")
    parent = fs._stat_cache[("/c", False)]
    assert "/c/f" in fs._ufiles
    for flags in (os.O_WRONLY | os.O_TRUNC, os.O_RDWR, os.O_WRONLY | os.O_APPEND,
                  os.O_RDONLY | os.O_TRUNC, os.O_WRONLY | os.O_CREAT):
        with fs.open("/c/f", flags) as f:
            assert f.ino == fs.lstat("/c/f").st_ino
            if flags & os.O_ACCMODE != os.O_RDONLY:
                f.write(b"ab")
        # the directory did not change, on the host or here
        assert fs._stat_cache[("/c", False)] is parent
        cold = _cold(low, up, work)
        for p in ("/c", "/c/f"):
            assert fields(fs.lstat(p)) == fields(cold.lstat(p)), (flags, p)
        assert fs.which("/c/f").entry == cold.which("/c/f").entry
        assert "/c/f" in fs._ufiles
    assert fs.read_bytes("/c/f") == b"ab"
    with pytest.raises(OSError) as e:
        fs.open("/c/f", os.O_WRONLY | os.O_CREAT | os.O_EXCL)
    assert e.value.errno == errno.EEXIST


def test_open_for_write_of_other_upper_files_takes_the_general_route(tmp_path):
    fs, low, up, work = _fs(tmp_path, metacopy=True)
    _prepare(fs)
    fs.write_bytes("/c/a", b"a")
    fs.link("/c/a", "/c/b")  # two links: not kept in _ufiles
    fs.write_bytes("/c/x", b"x")
    fs.setxattr("/c/x", "user.k", b"v")
    fs.chmod("/etc/motd", 0o600)  # a metacopy file
    for p in ("/c/a", "/c/x", "/etc/motd"):
        fs.lstat(p)
        with fs.open(p, os.O_RDWR) as f:
            f.pwrite(b"Z", 0)
        cold = _cold(low, up, work, metacopy=True)
        assert fields(fs.lstat(p)) == fields(cold.lstat(p)), p
        assert fs.which(p).entry == cold.which(p).entry, p
        assert fs.read_bytes(p)[:1] == b"Z"
    assert fs.lstat("/c/b").st_nlink == 2 and fs.read_bytes("/c/b") == b"Z"
    assert fs.getxattr("/c/x", "user.k") == b"v"


# ------------------------------------------------------------------ the FUSE adapter


def _ops(root, extra: str = ""):
    return fuse_operations(*_stack(root), extra)


def test_fuse_create_stat_short_and_general_ways_agree(tmp_path):
    fast = _ops(tmp_path / "fast")
    slow = _ops(tmp_path / "slow")
    slow._union_create_new = None  # the general route: create, then created_stat
    for ops in (fast, slow):
        ops.mkdir("/c", 0o755)
        ops.stat("/c")
        ops.listing("/c")  # a kept listing: the create must drop it
    for i, (mode, flags) in enumerate(((0o100644, W), (0o100600, os.O_RDWR | os.O_CREAT),
                                       (0o104755, W | os.O_EXCL))):
        got = []
        for ops in (fast, slow):
            assert ops.stat_or_none(f"/c/n{i}") is None
            fh, st = ops.create_stat(f"/c/n{i}", mode, flags)
            assert fields(st) == fields(ops.fstat(fh)) == fields(ops.stat(f"/c/n{i}"))
            assert ops.write(None, b"new file\n", 0, fh) == 9
            assert ops._files[fh].path == f"/c/n{i}"
            ops.release(None, fh)
            assert fh not in ops._files
            assert "/c" not in ops._listings
            got.append((fields(st, SHAPE), _caches(ops.union)))
            ops.listing("/c")
        assert got[0] == got[1], i
    assert [n for n, _ in fast.listing("/c")] == [n for n, _ in slow.listing("/c")]
    # another user's create: the general route (the new file is given to the caller)
    fast.caller = lambda: (1234, 4321, 0)
    fh, st = fast.create_stat("/c/theirs", 0o100644, W)
    assert (st.st_uid, st.st_gid) == (1234, 4321)
    assert fields(st) == fields(fast.stat("/c/theirs"))
    fast.release(None, fh)
    with pytest.raises(OSError) as e:
        fast.create_stat("/c/.wh.x", 0o100644, W)
    assert e.value.errno == errno.EINVAL
    fast.caller = lambda: (os.geteuid(), os.getegid(), 0)
    with pytest.raises(OSError) as e:
        fast.create_stat("/c/n0", 0o100644, W | os.O_EXCL)
    assert e.value.errno == errno.EEXIST
    fh, st = fast.create_stat("/c/n0", 0o100644, W)  # there: opened, truncated
    assert st.st_size == 0 and fields(st) == fields(fast.stat("/c/n0"))
    fast.release(None, fh)


def test_fuse_stat_and_lookup_of_a_hidden_name_use_the_open_file(tmp_path):
    ops = _ops(tmp_path)
    ops.mkdir("/c", 0o755)
    fh, st = ops.create_stat("/c/n", 0o100644, W)
    hidden = "/c/.fuse_hidden0000000100000002"
    ops.rename("/c/n", hidden, 0)  # libfuse hides a file unlinked while open
    assert ops.stat_or_none("/c/n") is None
    for got in (ops.stat(hidden, fh), ops.stat_or_none(hidden)):
        assert (got.st_ino, got.st_nlink) == (st.st_ino, 0)
    ops.release(None, fh)


# ------------------------------------------------------------------ building blocks


def test_stat_result_converts_each_time_as_the_engine_always_did():
    from unionfs.union import _stat_result

    times = (0, 1, 999_999_999, 1_000_000_000, 1_795_864_156_416_416_932,
             1_795_864_156_999_999_999, -1, -1_500_000_001)
    for at in times:
        for mt in times:
            for ct in (mt, at, 7_000_000_003):
                st = _stat_result(0o100644, 5, 6, 1, 2, 3, 4097, at, mt, ct, 0)
                want = (at // 1_000_000_000, mt // 1_000_000_000, ct // 1_000_000_000)
                assert (st.st_atime_ns, st.st_mtime_ns, st.st_ctime_ns) == (at, mt, ct)
                assert tuple(st)[7:10] == want
                assert (st.st_atime, st.st_mtime, st.st_ctime) == (at / 1e9, mt / 1e9,
                                                                   ct / 1e9)
                assert (st.st_blocks, st.st_blksize, st.st_size) == (9, 4096, 4097)


def test_a_truncating_open_after_a_create_is_a_change_for_created_stat(tmp_path):
    fs, *_ = _fs(tmp_path)
    _prepare(fs)
    f, st = fs.create_new("/c/n", W, 0o644)
    assert fields(fs.created_stat(f)) == fields(st)
    with fs.open("/c/n", os.O_WRONLY | os.O_TRUNC) as g:
        g.write(b"x")
        assert fs.created_stat(f) is None  # (the upper changed through the engine since)
    assert fields(fs.fstat(f)) == fields(fs.lstat("/c/n"))
    assert fs.lstat("/c/n").st_size == 1
    f.close()


# ------------------------------------------------------------------ random sequences

#: names in the root (merged), an engine-made directory and one below it, a lower directory
_PATHS = ("/a", "/b", "/c", "/c/a", "/c/b", "/c/d", "/c/d/a", "/c/d/b", "/etc", "/etc/a",
          "/etc/motd")


def _step_strategy():
    from hypothesis import strategies as st

    path = st.sampled_from(_PATHS)
    return st.one_of(
        st.tuples(st.just("create"), path, st.booleans()),
        st.tuples(st.just("lookup"), path),
        st.tuples(st.just("unlink"), path),
        st.tuples(st.just("mkdir"), path),
        st.tuples(st.just("rmdir"), path),
        st.tuples(st.just("rename"), path, path),
        st.tuples(st.just("write"), path, st.booleans()),
        st.tuples(st.just("chmod"), path),
    )


def _run(ops, step) -> object:
    """One step through the FUSE operations: its answer (a shape of stat, or an errno)."""
    kind, path, *more = step
    try:
        if kind == "create":
            flags = W | (os.O_EXCL if more[0] else 0)
            fh, st = ops.create_stat(path, 0o100644, flags)
            if fields(st) != fields(ops.fstat(fh)):
                return "create_stat differs from fstat"
            ops.write(None, b"new file\n", 0, fh)
            ops.release(None, fh)
            return fields(st, SHAPE)
        if kind == "lookup":
            st = ops.stat_or_none(path)
            return None if st is None else fields(st, SHAPE)
        if kind == "unlink":
            return ops.unlink(path)
        if kind == "mkdir":
            return ops.mkdir(path, 0o755)
        if kind == "rmdir":
            return ops.rmdir(path)
        if kind == "rename":
            return ops.rename(path, more[0], 0)
        if kind == "write":
            fh = ops.open(path, os.O_WRONLY | (os.O_TRUNC if more[0] else 0))
            ops.write(None, b"xy", 0, fh)
            st = ops.fstat(fh)
            ops.release(None, fh)
            return fields(st, SHAPE)
        if kind == "chmod":
            return ops.chmod(path, 0o100600)
    except OSError as e:
        return e.errno
    raise AssertionError(kind)


def test_random_sequences_answer_as_the_general_route_and_a_cold_engine(tmp_path):
    from hypothesis import given, note
    from hypothesis import strategies as st

    runs = iter(range(10**6))

    @given(st.lists(_step_strategy(), min_size=1, max_size=25))
    def check(steps):
        base = tmp_path / str(next(runs))
        fast = _ops(base / "fast")
        slow = _ops(base / "slow")
        slow._union_create_new = None  # (the general create route)
        roots = {}
        for side, ops in (("fast", fast), ("slow", slow)):
            ops.mkdir("/c", 0o755)
            roots[side] = [str(base / side / d) for d in ("low", "up", "work")]
        def answer(call, p, names=FIELDS):
            try:
                return fields(call(p), names)
            except OSError as e:
                return e.errno

        def looked_up(ops, p):
            try:
                st = ops.stat_or_none(p)
            except OSError as e:
                return e.errno
            return None if st is None else fields(st, SHAPE)

        for step in steps:
            note(step)
            got = _run(fast, step)
            assert got == _run(slow, step), step
            cold = _cold(*roots["fast"])
            for p in _PATHS:  # every answer of the fast side is a cold engine's
                # (but the access time: the cold engine's own scan of a lower directory
                # moves it, and the lower view keeps what it read first)
                assert answer(fast.stat, p, NO_ATIME) == answer(cold.lstat, p, NO_ATIME), \
                    (step, p)
                assert answer(fast.stat, p, SHAPE) == answer(slow.stat, p, SHAPE), (step, p)
                assert looked_up(fast, p) == looked_up(slow, p) == (
                    None if answer(cold.lstat, p) == errno.ENOENT else answer(cold.lstat, p,
                                                                                SHAPE)), p
        shutil.rmtree(base)

    check()
