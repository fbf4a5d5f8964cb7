"""The engine's fast paths answer exactly as the general ones.

- Lower objects that are one layer's plain file are kept as that layer's packed index
  record (``DirLayer.records``) and their ``stat`` is made from it once: compared here with
  the same stack read through layers without an index (``index=False``, which give
  ``Entry`` objects and take the general path).
- An upper regular file with one link is looked up again with a single host ``stat``
  (``DirLayer.refresh``): its size, mode, owner and times still follow every change, made
  through the engine or through an open file.
- ``known_absent`` and ``copy_up``'s answer let the engine skip host probes it has done.
- ``lstat_child`` (a lookup's name in a directory, the low-level FUSE adapter's way in)
  answers as ``lstat_or_none`` of the joined path.
"""

from __future__ import annotations

import errno
import os
import stat

import pytest

from tests.unionfs.stacks import DIR, OPAQUE, WHITEOUT, write_dir
from unionfs.entry import Kind
from unionfs.layer import DirLayer
from unionfs.union import UnionFS

TOP = {"/d/a": b"top a", "/d/shadow": b"top", "/d/gone": WHITEOUT, "/o": OPAQUE,
       "/o/n": b"n", "/ln": ("symlink", "d/a"), "/fifo": ("fifo",), "/only/t": b"t"}
BOTTOM = {"/d/b": b"bottom b", "/d/shadow": b"bottom", "/d/gone": b"g", "/o/old": b"o",
          "/h1": b"h", "/h2": ("hardlink", "/h1"), "/d/sub": DIR, "/d/sub/deep": b"x"}
PATHS = ["/d", "/d/a", "/d/b", "/d/shadow", "/d/sub", "/d/sub/deep", "/o", "/o/n", "/ln",
         "/fifo", "/only", "/only/t", "/h1", "/h2"]


def _lowers(tmp_path, indexed: bool) -> list[DirLayer]:
    out = []
    for name, spec in (("top", TOP), ("bottom", BOTTOM)):
        root = str(tmp_path / name)
        if not os.path.exists(root):
            write_dir(root, spec)
        out.append(DirLayer(root, name=name, cache=False, index=indexed))
    return out


def _fields(st: os.stat_result) -> tuple:
    # (not the access time: the unindexed layers read the host live, and listing a
    # directory or reading a link moves its atime on the host)
    return (st.st_mode, st.st_ino, st.st_dev, st.st_nlink, st.st_uid, st.st_gid, st.st_size,
            st.st_mtime_ns, st.st_ctime_ns, st.st_blocks, st.st_rdev, st.st_mtime,
            st.st_ctime)


@pytest.fixture
def pair(tmp_path):
    """The same lowers, indexed (records, fast paths) and not (entries, general path)."""
    fast = UnionFS(_lowers(tmp_path, True))
    slow = UnionFS(_lowers(tmp_path, False))
    slow.st_dev = fast.st_dev  # (derived from the layer roots: equal anyway)
    return fast, slow


def test_lower_stats_equal_the_general_path(pair):
    fast, slow = pair
    fast.lstat("/d")
    # the indexed stack keeps plain lower files as records (the fast path is taken)...
    assert fast._lower.node("/d/b").rec is not None
    assert fast._lower.node("/d/shadow").rec is not None  # (the top one hides it whole)
    assert slow._lower.node("/d/b").rec is None  # ...the other one as entries
    for p in PATHS:
        for follow in (False, True):
            assert _fields(fast.stat(p, follow_symlinks=follow)) == \
                _fields(slow.stat(p, follow_symlinks=follow)), (p, follow)
    for p in PATHS:  # again, now from what the first walk kept
        assert _fields(fast.lstat(p)) == _fields(slow.lstat(p)), p
    assert fast.read_bytes("/d/shadow") == b"top"
    assert fast.lstat("/h1").st_nlink == 2
    assert fast.lstat("/h1").st_ino == fast.lstat("/h2").st_ino
    assert stat.S_ISFIFO(fast.lstat("/fifo").st_mode)


def test_lower_misses_and_errors_equal_the_general_path(pair):
    fast, slow = pair
    for p, code in (("/d/gone", errno.ENOENT), ("/o/old", errno.ENOENT),
                    ("/d/nothing", errno.ENOENT), ("/d/a/x", errno.ENOTDIR),
                    ("/d/" + "n" * 256, errno.ENAMETOOLONG)):
        for fs in (fast, slow):
            with pytest.raises(OSError) as info:
                fs.lstat(p)
            assert info.value.errno == code, (p, fs)


def test_lower_listings_and_provenance_equal_the_general_path(pair):
    fast, slow = pair
    for d in ("/", "/d", "/o", "/d/sub"):
        assert fast.listdir_types(d) == slow.listdir_types(d)
        for name, _type, ino in fast.listdir_types(d):
            assert fast.lstat(d.rstrip("/") + "/" + name).st_ino == ino
    for p in ("/d/b", "/d/shadow", "/h2", "/ln"):
        a, b = fast.which(p), slow.which(p)
        assert (a.layer, a.entry.evolve(atime_ns=0), a.reasons) == \
            (b.layer, b.entry.evolve(atime_ns=0), b.reasons)
    assert fast.which("/d/b").layer == "bottom"
    assert fast.readlink("/ln") == "d/a"


def _with_upper(tmp_path) -> tuple[UnionFS, str]:
    upper = tmp_path / "upper"
    upper.mkdir()
    fs = UnionFS(_lowers(tmp_path, True), DirLayer(str(upper), writable=True),
                 workdir=str(tmp_path / "work"))
    return fs, str(upper)


@pytest.mark.parametrize("source", ["scan", "cache"])
def test_lstat_child_equals_lstat_or_none(tmp_path, monkeypatch, source):
    import unionfs.layer as layer_mod

    monkeypatch.setattr(layer_mod, "CACHE_MIN_ENTRIES", 0)  # (index files for small layers)
    cache = tmp_path / "cache"
    up, work = tmp_path / "up", tmp_path / "work"
    up.mkdir()
    work.mkdir()

    def engine() -> UnionFS:
        lowers = []
        for name, spec in (("top", TOP), ("bottom", BOTTOM)):
            root = str(tmp_path / name)
            if not os.path.exists(root):
                write_dir(root, spec)
            lowers.append(DirLayer(root, name=name, cache_dir=cache))
        return UnionFS(lowers, DirLayer(up, writable=True), workdir=work)

    fs = engine()
    fs.write_bytes("/d/new", b"upper")  # /d gets an upper part
    fs.unlink("/d/b")  # a whiteout in the upper
    fs.write_bytes("/only/t", b"copied up")
    if source == "cache":
        fs = engine()
        assert fs.lowers[0].index_source == "cache"
    heads = ["/", "/d", "/d/sub", "/o", "/only", "/ln", "/h1", "/missing"]
    names = ["d", "d/", "a", "b", "new", "shadow", "gone", "sub", "deep", "n", "old", "t", "ln",
             "fifo", "only", "h1", "h2", "missing", "n" * 255, "n" * 256]

    def outcome(fn, *args):
        try:
            st = fn(*args)
        except OSError as e:
            return e.errno
        return st if st is None else _fields(st)

    for resolved in (False, True):  # the directory not yet walked to, then walked to
        for head in heads:
            if resolved:
                outcome(fs.lstat, head)
            for name in names:
                path = ("/" if head == "/" else head + "/") + name
                assert outcome(fs.lstat_child, head, name) == \
                    outcome(fs.lstat_or_none, path), (head, name, resolved)
    # the short way was taken for plain lower files of directories without an upper part
    assert fs._dnodes["/d/sub"].upper is None
    assert fs.lstat_child("/d/sub", "deep") is fs._lower.node("/d/sub/deep").st


def test_upper_file_stat_follows_writes_through_an_open_file(tmp_path):
    fs, upper = _with_upper(tmp_path)
    f = fs.open("/d/new", "wb")
    try:
        assert fs.lstat("/d/new").st_size == 0
        for n in (1, 5, 4000):
            f.write(b"x" * n)
            f.flush()
            st = fs.lstat("/d/new")
            assert st.st_size == os.lstat(upper + "/d/new").st_size
            assert st.st_mtime_ns == os.lstat(upper + "/d/new").st_mtime_ns
    finally:
        f.close()
    assert fs.lstat("/d/new").st_size == 4006
    fs.chmod("/d/new", 0o600)
    assert stat.S_IMODE(fs.lstat("/d/new").st_mode) == 0o600
    fs.chown("/d/new", 123, 456)
    assert (fs.lstat("/d/new").st_uid, fs.lstat("/d/new").st_gid) == (123, 456)
    fs.truncate("/d/new", 3)
    assert fs.lstat("/d/new").st_size == 3


def test_upper_file_xattrs_and_links_seen_through_every_name(tmp_path):
    fs, _ = _with_upper(tmp_path)
    fs.write_bytes("/d/one", b"1")
    assert fs.lstat("/d/one").st_nlink == 1  # kept as a one-link file now
    fs.link("/d/one", "/d/two")
    assert fs.lstat("/d/one").st_nlink == 2
    fs.setxattr("/d/two", "user.k", b"v")
    assert fs.getxattr("/d/one", "user.k") == b"v"
    fs.unlink("/d/two")
    assert fs.lstat("/d/one").st_nlink == 1
    assert fs.getxattr("/d/one", "user.k") == b"v"
    fs.removexattr("/d/one", "user.k")
    with pytest.raises(OSError) as info:
        fs.getxattr("/d/one", "user.k")
    assert info.value.errno == errno.ENODATA


def test_upper_file_replaced_by_rename_is_the_new_one(tmp_path):
    fs, _ = _with_upper(tmp_path)
    fs.write_bytes("/d/x", b"old")
    fs.write_bytes("/d/y", b"newer!")
    ino_y = fs.lstat("/d/y").st_ino
    assert fs.lstat("/d/x").st_size == 3
    fs.rename("/d/y", "/d/x")
    assert (fs.lstat("/d/x").st_size, fs.lstat("/d/x").st_ino) == (6, ino_y)


def test_refresh_reads_the_stat_again_and_falls_back_to_a_full_lookup(tmp_path):
    root = tmp_path / "up"
    root.mkdir()
    layer = DirLayer(str(root), writable=True)
    (root / "f").write_bytes(b"abc")
    prev = layer.lookup("/f")
    (root / "f").write_bytes(b"abcdef")  # same inode, new size
    e = layer.refresh("/f", prev)
    assert (e.kind, e.size, e.ino, e.nlink) == (Kind.FILE, 6, prev.ino, 1)
    os.link(root / "f", root / "g")  # two links: a full lookup
    os.setxattr(root / "g", "user.seen", b"1")
    e = layer.refresh("/f", prev)
    assert (e.nlink, e.xattrs) == (2, (("user.seen", b"1"),))
    os.unlink(root / "g")
    e = layer.refresh("/f", e)  # had xattrs: a full lookup, which sees them go
    os.removexattr(root / "f", "user.seen")
    assert layer.refresh("/f", e).xattrs == ()
    (root / "n").write_bytes(b"n")
    os.replace(root / "n", root / "f")  # another inode
    e = layer.refresh("/f", prev)
    assert e.ino == os.lstat(root / "f").st_ino != prev.ino
    os.unlink(root / "f")
    assert layer.refresh("/f", prev) is None


def test_copy_up_says_whether_the_origin_was_recorded(tmp_path):
    lower = _lowers(tmp_path, False)[0]
    root = tmp_path / "u"
    root.mkdir()
    up = DirLayer(str(root), writable=True, workdir=str(tmp_path / "w"))
    e = lower.lookup("/d/a")
    up.mkdir("/d")
    assert up.copy_up("/d/a", e, lower, "/d/a", origin_ino=77) is True
    assert up.lookup("/d/a").origin_ino == 77
    assert up.copy_up("/d/b", e, lower, "/d/a") is False
    with pytest.raises(OSError) as info:
        up.copy_up("/d/a", e, lower, "/d/a")
    assert info.value.errno == errno.EEXIST
    assert (root / "d" / "a").read_bytes() == b"top a"


def test_create_over_an_oci_whiteout_in_the_upper_still_refused_by_the_layer(tmp_path):
    """``known_absent`` is the caller's promise; without it the layer still checks."""
    root = tmp_path / "u"
    root.mkdir()
    (root / ".wh.x").write_bytes(b"")
    up = DirLayer(str(root), writable=True)
    with pytest.raises(OSError) as info:
        up.open_write("/x", create=True)
    assert info.value.errno == errno.EEXIST
    assert not (root / "x").exists()


def test_copy_ups_into_one_directory_keep_its_times_and_a_new_utime(tmp_path):
    """Each copy-up puts the parent's times back; the engine remembers what it put back
    rather than reading it again, so any other change of those times in between counts."""
    fs, upper = _with_upper(tmp_path)
    fs.copy_up("/d/a")
    before = os.lstat(upper + "/d")
    fs.copy_up("/d/b")
    after = os.lstat(upper + "/d")
    assert (after.st_atime_ns, after.st_mtime_ns) == (before.st_atime_ns, before.st_mtime_ns)
    times = (1_000_000_000_000_000_000, 1_100_000_000_000_000_000)
    fs.utime("/d", ns=times)
    fs.copy_up("/d/shadow")
    st = os.lstat(upper + "/d")
    assert (st.st_atime_ns, st.st_mtime_ns) == times
    assert fs.lstat("/d").st_mtime_ns == times[1]
    fs.write_bytes("/d/new", b"n")  # a real change of /d moves its mtime
    moved = os.lstat(upper + "/d")
    assert moved.st_mtime_ns > times[1]
    fs.copy_up("/d/sub")  # ... which the next copy-up keeps
    st = os.lstat(upper + "/d")
    assert (st.st_atime_ns, st.st_mtime_ns) == (moved.st_atime_ns, moved.st_mtime_ns)
    assert fs.lstat("/d").st_mtime_ns == moved.st_mtime_ns


def test_refresh_of_a_directory_keeps_its_marks_and_reads_its_stat(tmp_path):
    root = tmp_path / "up"
    (root / "d").mkdir(parents=True)
    layer = DirLayer(str(root), writable=True)
    layer.set_opaque("/d", True)
    layer.setxattr("/d", "user.k", b"v")
    prev = layer.lookup("/d")
    assert prev.opaque and prev.xattrs == (("user.k", b"v"),)
    (root / "d" / "sub").mkdir()
    os.utime(root / "d", ns=(5, 7))
    e = layer.refresh("/d", prev)
    assert (e.kind, e.nlink, e.atime_ns, e.mtime_ns) == (Kind.DIR, 3, 5, 7)
    assert (e.opaque, e.xattrs, e.ino) == (True, prev.xattrs, prev.ino)
    os.rename(root / "d", root / "old")
    (root / "d").write_bytes(b"now a file")  # another object: a full lookup
    e = layer.refresh("/d", prev)
    assert (e.kind, e.opaque, e.xattrs) == (Kind.FILE, False, ())


def test_union_directory_attributes_follow_creates_and_removals(tmp_path):
    fs, upper = _with_upper(tmp_path)
    fs.mkdir("/only/dir")
    for k in range(3):
        fs.mkdir(f"/only/dir/s{k}")
        st = fs.lstat("/only/dir")
        host = os.lstat(upper + "/only/dir")
        assert (st.st_nlink, st.st_mtime_ns, st.st_ctime_ns) == \
            (host.st_nlink, host.st_mtime_ns, host.st_ctime_ns) == \
            (3 + k, host.st_mtime_ns, host.st_ctime_ns)
    fs.rmdir("/only/dir/s0")
    assert fs.lstat("/only/dir").st_nlink == os.lstat(upper + "/only/dir").st_nlink == 4
    fs.setxattr("/only/dir", "user.x", b"1")
    fs.mkdir("/only/dir/s9")
    assert fs.getxattr("/only/dir", "user.x") == b"1"
    assert fs.lstat("/only/dir").st_nlink == 5


@pytest.mark.parametrize("fmt", ["overlay", "oci"])
def test_whiteout_with_known_absent_still_refuses_a_real_object(tmp_path, fmt):
    from tests.conftest import need_root
    from unionfs import whiteout as wh

    if fmt == "overlay":
        need_root()  # char device whiteouts
    root = tmp_path / "up"
    root.mkdir()
    layer = DirLayer(str(root), writable=True,
                     fmt=wh.Format.OVERLAY if fmt == "overlay" else wh.Format.OCI)
    layer.whiteout("/gone", known_absent=True)
    assert layer.lookup("/gone").kind is Kind.WHITEOUT
    layer.whiteout("/gone")  # (without the promise: idempotent)
    assert layer.lookup("/gone").kind is Kind.WHITEOUT
    (root / "real").write_bytes(b"r")
    if fmt == "overlay":  # (the OCI marker is another name: only the probe refuses)
        with pytest.raises(OSError) as info:
            layer.whiteout("/real", known_absent=True)
        assert info.value.errno == errno.EEXIST
    with pytest.raises(OSError) as info:
        layer.whiteout("/real")
    assert info.value.errno == errno.EEXIST
    assert (root / "real").read_bytes() == b"r"


def test_unlink_of_lower_names_leaves_whiteouts(tmp_path):
    fs, upper = _with_upper(tmp_path)
    fs.unlink("/d/b")  # parent copied up by the unlink
    fs.unlink("/d/a")  # parent already up
    fs.write_bytes("/d/shadow", b"mine")
    fs.unlink("/d/shadow")  # an upper file over a lower one
    for name in ("a", "b", "shadow"):
        st = os.lstat(f"{upper}/d/{name}")
        assert stat.S_ISCHR(st.st_mode) and st.st_rdev == 0
        with pytest.raises(OSError) as info:
            fs.lstat(f"/d/{name}")
        assert info.value.errno == errno.ENOENT
    assert fs.listdir("/d") == ["sub"]


class _CountingUpper(DirLayer):
    """A real upper that counts its host lookups (instrumentation, not a stand-in)."""

    probes = 0

    def _live_lookup(self, path):
        type(self).probes += 1
        return super()._live_lookup(path)


@pytest.mark.parametrize("fmt", ["overlay", "oci"])
def test_names_in_directories_the_engine_made_need_no_host_lookup(tmp_path, fmt):
    from tests.conftest import need_root
    from unionfs import whiteout as wh

    if fmt == "overlay":
        need_root()
    upper = tmp_path / "upper"
    upper.mkdir()
    up = _CountingUpper(str(upper), writable=True,
                        fmt=wh.Format.OVERLAY if fmt == "overlay" else wh.Format.OCI)
    fs = UnionFS(_lowers(tmp_path, True), up, workdir=str(tmp_path / "work"))
    fs.mkdir("/new")
    fs.mkdir("/new/sub")
    before = _CountingUpper.probes
    for k in range(20):  # negative lookups, then creates: no host probe for the misses
        with pytest.raises(OSError) as info:
            fs.lstat(f"/new/f{k}")
        assert info.value.errno == errno.ENOENT
        fs.write_bytes(f"/new/f{k}", b"x")
    misses = _CountingUpper.probes - before
    assert misses == 0  # (without the name sets: a probe per miss, and per create)
    # the names stay exact through every change made through the engine
    fs.unlink("/new/f0")
    fs.rename("/new/f1", "/new/sub/g")
    fs.rename("/new/sub", "/new/moved")
    fs.symlink("f2", "/new/ln")
    fs.link("/new/f3", "/new/hard")
    fs.copy_up("/d/a")  # a copied-up directory: made by the engine, empty
    fs.unlink("/d/b")  # a whiteout in it
    fresh = UnionFS(_lowers(tmp_path, True),
                    DirLayer(str(upper), writable=True, fmt=up.format),
                    workdir=str(tmp_path / "work"))

    def kind(u: UnionFS, p: str) -> int:
        try:
            return stat.S_IFMT(u.lstat(p).st_mode)
        except OSError as e:
            return -e.errno

    for p in ("/new/f0", "/new/f1", "/new/f2", "/new/sub", "/new/moved", "/new/moved/g",
              "/new/ln", "/new/hard", "/new/nothing", "/d/a", "/d/b", "/d/shadow", "/d/x"):
        assert kind(fs, p) == kind(fresh, p), p
    assert kind(fs, "/new/f0") == -errno.ENOENT
    assert kind(fs, "/new/moved/g") == stat.S_IFREG
    assert fs.listdir("/new") == fresh.listdir("/new")
    assert fs.listdir("/d") == fresh.listdir("/d") == ["a", "shadow", "sub"]


def test_a_failed_create_forgets_what_the_directory_holds(tmp_path):
    fs, upper = _with_upper(tmp_path)
    fs.mkdir("/new")
    fs.write_bytes("/new/a", b"a")
    with pytest.raises(OSError) as info:
        fs.mkdir("/new/a")
    assert info.value.errno == errno.EEXIST
    os.mkdir(upper + "/new/behind")  # (behind the engine's back: undefined, but a failed
    fs.invalidate()                  # change or invalidate() must make it look again)
    assert stat.S_ISDIR(fs.lstat("/new/behind").st_mode)
    assert fs.read_bytes("/new/a") == b"a"
