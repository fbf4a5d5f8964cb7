"""Engine semantics on every upper kind: lookup, copy-up, whiteouts, opaque directories,
inode numbers, hard links (index off/on), redirect_dir, metacopy, open files, trace, which,
diff."""

from __future__ import annotations

import errno
import os
import stat
import threading

import pytest
from stacks import OPAQUE, WHITEOUT, dir_layer, memory_layer

from unionfs import whiteout as wh
from unionfs.diff import changes, commit_walk
from unionfs.entry import Kind
from unionfs.layer import DirLayer, MemoryLayer
from unionfs.union import RENAME_EXCHANGE, RENAME_NOREPLACE, UnionFS

BOTTOM = {
    "/etc/passwd": b"root\n",
    "/etc/hosts": b"bottom hosts\n",
    "/d/sub/f": b"f",
    "/d/g": b"g",
    "/h1": b"linked",
    "/h2": ("hardlink", "/h1"),
    "/ln": ("symlink", "etc/passwd"),
    "/merged/low": b"low",
    "/gone": b"x",
}
TOP = {"/etc/hosts": b"top hosts\n", "/merged/top": b"top", "/gone": WHITEOUT,
       "/o": OPAQUE, "/o/n": b"n"}

UPPERS = ["memory", "dir-overlay", "dir-user", "dir-oci"]


def build(tmp_path, upper_kind="memory", lower_kind="dir", **opts) -> UnionFS:
    if lower_kind == "memory":
        lowers = [memory_layer(TOP, "top"), memory_layer(BOTTOM, "bottom")]
    else:
        lowers = [dir_layer(str(tmp_path), TOP, "top"),
                  dir_layer(str(tmp_path), BOTTOM, "bottom")]
    if upper_kind == "memory":
        upper = MemoryLayer("upper")
    else:
        fmt = {"dir-overlay": wh.Format.OVERLAY, "dir-user": wh.Format.USER,
               "dir-oci": wh.Format.OCI}[upper_kind]
        os.makedirs(tmp_path / "upper", exist_ok=True)
        upper = DirLayer(tmp_path / "upper", writable=True, fmt=fmt)
    return UnionFS(lowers, upper, **opts)


@pytest.fixture(params=UPPERS)
def fs(request, tmp_path):
    return build(tmp_path, request.param)


def test_lookup_merges_and_shadows(fs):
    assert fs.listdir("/") == ["d", "etc", "h1", "h2", "ln", "merged", "o"]
    assert fs.listdir("/merged") == ["low", "top"]
    assert fs.read_bytes("/etc/hosts") == b"top hosts\n"
    assert fs.listdir("/o") == ["n"]
    assert fs.read_bytes("/ln") == b"root\n"
    assert stat.S_ISLNK(fs.lstat("/ln").st_mode)
    assert fs.readlink("/ln") == "etc/passwd"
    assert [d.name for d in fs.scandir("/etc")] == ["hosts", "passwd"]
    assert list(fs.walk("/d")) == [("/d", ["sub"], ["g"]), ("/d/sub", [], ["f"])]


def test_open_wb_truncates_a_lower_file(fs):
    with fs.open("/etc/hosts", "wb"):
        pass
    assert fs.read_bytes("/etc/hosts") == b""
    assert fs.stat("/etc/hosts").st_size == 0


def test_append_copies_up_data_first(fs):
    ino = fs.stat("/etc/passwd").st_ino
    with fs.open("/etc/passwd", "ab") as f:
        f.write(b"me\n")
    assert fs.read_bytes("/etc/passwd") == b"root\nme\n"
    assert fs.stat("/etc/passwd").st_ino == ino
    assert fs.which("/etc/passwd").is_upper


def test_modes_of_open(fs):
    with fs.open("/new", "xb") as f:
        f.write(b"abc")
    with fs.open("/new", "r+b") as f:
        assert f.read(1) == b"a"
        f.write(b"Z")
    assert fs.read_bytes("/new") == b"aZc"
    with fs.open("/new", "w+b") as f:
        f.write(b"12345")
        f.seek(0)
        assert f.read() == b"12345"
        f.truncate(2)
    assert fs.read_bytes("/new") == b"12"
    with fs.open("/new", os.O_WRONLY | os.O_APPEND) as f:
        f.write(b"3")
    assert fs.read_bytes("/new") == b"123"
    with fs.open("/new", "rb") as f, pytest.raises(OSError) as info:
        f.write(b"x")
    assert info.value.errno == errno.EBADF
    with pytest.raises(ValueError):
        fs.open("/new", "r")


def test_pread_pwrite_and_threads(fs):
    fs.write_bytes("/p", b"\0" * 4000)
    with fs.open("/p", "r+b") as f:
        def worker(k):
            for i in range(10):
                f.pwrite(bytes([65 + k]) * 100, (k * 10 + i) * 100)
        threads = [threading.Thread(target=worker, args=(k,)) for k in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert f.pread(100, 3900) == b"D" * 100
        assert f.tell() == 0
    data = fs.read_bytes("/p")
    assert data == b"".join(bytes([65 + k]) * 1000 for k in range(4))


def test_file_opened_before_unlink_keeps_working(fs):
    fs.write_bytes("/t", b"hello")
    f = fs.open("/t", "r+b")
    fs.unlink("/t")
    assert not fs.exists("/t")
    f.seek(0, 2)
    f.write(b" world")
    assert f.pread(11, 0) == b"hello world"
    f.close()
    g = fs.open("/etc/passwd", "rb")
    fs.unlink("/etc/passwd")
    assert g.read() == b"root\n"
    g.close()


def test_unlink_lower_leaves_whiteout_and_recreate(fs, tmp_path):
    fs.unlink("/etc/hosts")
    assert fs.listdir("/etc") == ["passwd"]
    assert fs.upper.lookup("/etc/hosts").kind is Kind.WHITEOUT
    fs.write_bytes("/etc/hosts", b"again")
    assert fs.read_bytes("/etc/hosts") == b"again"
    assert fs.listdir("/etc") == ["hosts", "passwd"]


def test_rmdir_then_mkdir_is_opaque(fs):
    fs.unlink("/d/sub/f")
    fs.rmdir("/d/sub")
    fs.unlink("/d/g")
    fs.rmdir("/d")
    assert "d" not in fs.listdir("/")
    fs.mkdir("/d", 0o750)
    assert fs.listdir("/d") == []
    assert fs.upper.lookup("/d").opaque
    assert stat.S_IMODE(fs.stat("/d").st_mode) == 0o750


def test_upper_only_file_removed_without_whiteout(fs):
    fs.write_bytes("/merged/new", b"n")
    fs.unlink("/merged/new")
    assert fs.upper.lookup("/merged/new") is None


def test_inode_numbers_stable_and_unique(tmp_path):
    fs = build(tmp_path, "dir-overlay")
    before = {p: fs.lstat(p).st_ino for p in ("/", "/etc", "/etc/passwd", "/d/sub/f", "/ln")}
    assert len(set(before.values())) == len(before)
    fs.chmod("/etc/passwd", 0o600)
    fs.utime("/d/sub/f", ns=(1, 2))
    fs.chown("/ln", 5, 5, follow_symlinks=False)
    after = {p: fs.lstat(p).st_ino for p in before}
    assert after == before
    fs.rename("/etc/passwd", "/passwd-moved")
    assert fs.lstat("/passwd-moved").st_ino == before["/etc/passwd"]
    # remount: a new UnionFS on the same directories
    again = build(tmp_path, "dir-overlay")
    assert again.lstat("/passwd-moved").st_ino == before["/etc/passwd"]
    assert again.lstat("/d/sub/f").st_ino == before["/d/sub/f"]
    assert len({fs.stat(p).st_dev for p in ("/", "/etc", "/passwd-moved")}) == 1


def test_hard_links_broken_by_copy_up_without_index(fs):
    assert fs.stat("/h1").st_nlink == 2
    assert fs.stat("/h1").st_ino == fs.stat("/h2").st_ino
    with fs.open("/h1", "ab") as f:
        f.write(b"+")
    assert fs.read_bytes("/h1") == b"linked+"
    assert fs.read_bytes("/h2") == b"linked"
    assert fs.stat("/h1").st_nlink == 1
    assert fs.stat("/h1").st_ino != fs.stat("/h2").st_ino


@pytest.mark.parametrize("upper_kind", ["memory", "dir-overlay"])
def test_hard_links_kept_with_index(tmp_path, upper_kind):
    fs = build(tmp_path, upper_kind, index=True)
    ino = fs.stat("/h1").st_ino
    with fs.open("/h1", "ab") as f:
        f.write(b"+")
    assert fs.read_bytes("/h2") == b"linked+"
    assert fs.stat("/h1").st_ino == fs.stat("/h2").st_ino == ino
    assert fs.stat("/h1").st_nlink == 2
    fs.link("/h1", "/h3")
    assert fs.stat("/h2").st_nlink == 3
    fs.unlink("/h2")
    assert fs.stat("/h1").st_nlink == 2
    assert fs.read_bytes("/h3") == b"linked+"


def test_upper_hard_links(fs):
    fs.write_bytes("/a", b"1")
    fs.link("/a", "/b")
    assert fs.stat("/a").st_nlink == 2
    assert fs.stat("/a").st_ino == fs.stat("/b").st_ino
    fs.rename("/a", "/b")  # same file: nothing happens
    assert fs.exists("/a") and fs.exists("/b")


def test_rename_file_over_lower_and_back(fs):
    fs.rename("/etc/passwd", "/etc/hosts")
    assert fs.read_bytes("/etc/hosts") == b"root\n"
    assert fs.listdir("/etc") == ["hosts"]
    fs.rename("/etc/hosts", "/etc/passwd")
    assert fs.listdir("/etc") == ["passwd"]


def test_rename_flags(fs):
    fs.write_bytes("/x", b"x")
    fs.write_bytes("/y", b"y")
    with pytest.raises(FileExistsError):
        fs.rename("/x", "/y", RENAME_NOREPLACE)
    fs.rename("/x", "/y", RENAME_EXCHANGE)
    assert fs.read_bytes("/x") == b"y" and fs.read_bytes("/y") == b"x"
    fs.rename("/x", "/etc/hosts", RENAME_EXCHANGE)
    assert fs.read_bytes("/x") == b"top hosts\n"
    assert fs.read_bytes("/etc/hosts") == b"y"
    fs.replace("/x", "/y")
    assert fs.read_bytes("/y") == b"top hosts\n"


def test_rename_upper_dir_works_and_merged_dir_exdev(fs):
    fs.makedirs("/new/a")
    fs.write_bytes("/new/a/f", b"1")
    fs.rename("/new", "/newer")
    assert fs.read_bytes("/newer/a/f") == b"1"
    events = []
    fs.subscribe(events.append)
    with pytest.raises(OSError) as info:
        fs.rename("/merged", "/m2")
    assert info.value.errno == errno.EXDEV
    assert [e.kind for e in events] == ["exdev"]


@pytest.mark.parametrize("upper_kind", ["memory", "dir-overlay", "dir-user"])
def test_redirect_dir(tmp_path, upper_kind):
    fs = build(tmp_path, upper_kind, redirect_dir=True)
    fs.rename("/merged", "/m2")
    assert fs.listdir("/m2") == ["low", "top"]
    assert not fs.exists("/merged")
    assert fs.read_bytes("/m2/low") == b"low"
    fs.rename("/m2", "/d/m3")
    assert fs.listdir("/d/m3") == ["low", "top"]
    assert fs.upper.lookup("/d/m3").redirect == "/merged"
    fs.mkdir("/merged")
    assert fs.listdir("/merged") == []
    fs2 = build(tmp_path, upper_kind, redirect_dir=True) if upper_kind != "memory" else fs
    assert fs2.listdir("/d/m3") == ["low", "top"]


def test_metacopy(tmp_path):
    fs = build(tmp_path, "dir-overlay", metacopy=True)
    fs.chmod("/d/g", 0o600)
    up = fs.upper.lookup("/d/g")
    assert up.metacopy and up.size == 1
    assert os.path.getsize(tmp_path / "upper/d/g") == 1
    assert fs.read_bytes("/d/g") == b"g"
    assert fs.which("/d/g").data_from.layer_name == "bottom"
    with fs.open("/d/g", "ab") as f:
        f.write(b"h")
    assert fs.read_bytes("/d/g") == b"gh"
    assert not fs.upper.lookup("/d/g").metacopy
    assert stat.S_IMODE(fs.stat("/d/g").st_mode) == 0o600


def test_xattrs(fs):
    fs.setxattr("/etc/passwd", "user.k", b"v")
    assert fs.getxattr("/etc/passwd", "user.k") == b"v"
    assert "user.k" in fs.listxattr("/etc/passwd")
    assert all(not n.startswith("trusted.overlay.unionfs") for n in fs.listxattr("/etc"))
    fs.removexattr("/etc/passwd", "user.k")
    assert fs.listxattr("/etc/passwd") == []
    assert fs.listxattr("/o") == []


def test_metadata_copy_up(fs):
    fs.chmod("/d/g", 0o640)
    fs.chown("/d/g", 123, 456)
    fs.utime("/d/g", ns=(10**9, 2 * 10**9))
    st = fs.stat("/d/g")
    assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, st.st_mtime_ns) == \
        (0o640, 123, 456, 2 * 10**9)
    assert fs.read_bytes("/d/g") == b"g"
    fs.truncate("/d/sub/f", 3)
    assert fs.read_bytes("/d/sub/f") == b"f\0\0"


def test_parents_copied_up_with_metadata(fs, tmp_path):
    low = fs.which("/d/sub").entry
    fs.write_bytes("/d/sub/new", b"n")
    up = fs.upper.lookup("/d/sub")
    assert (up.mode, up.uid, up.gid, up.mtime_ns // 1000) == \
        (low.mode, low.uid, low.gid, low.mtime_ns // 1000) or up.mtime_ns >= low.mtime_ns


def test_mknod_symlink_and_setgid(fs):
    fs.mknod("/fifo", 0o640 | stat.S_IFIFO)
    assert stat.S_ISFIFO(fs.lstat("/fifo").st_mode)
    fs.symlink("/etc/hosts", "/s")
    assert fs.read_bytes("/s") == b"top hosts\n"
    fs.mkdir("/shared", 0o777)
    fs.chown("/shared", 0, 4242)
    fs.chmod("/shared", 0o2777)
    fs.mkdir("/shared/sub", 0o755)
    fs.write_bytes("/shared/file", b"")
    assert fs.stat("/shared/sub").st_mode & 0o7777 == 0o2755
    assert fs.stat("/shared/sub").st_gid == 4242
    assert fs.stat("/shared/file").st_gid == 4242


def test_statvfs_and_access(fs):
    assert fs.statvfs("/").f_bsize > 0
    assert fs.access("/etc/passwd", os.R_OK | os.W_OK)
    assert not fs.access("/nope", os.F_OK)
    ro = UnionFS(fs.lowers)
    assert ro.statvfs("/").f_flag & os.ST_RDONLY
    assert not ro.access("/etc/passwd", os.W_OK)


def test_trace_events(fs):
    events = []
    fs.subscribe(events.append)
    fs.write_bytes("/d/sub/new", b"")
    fs.unlink("/d/g")
    fs.unsubscribe(events.append)
    fs.unlink("/etc/hosts")
    assert [(e.kind, e.path) for e in events] == [
        ("copy_up", "/d"), ("copy_up", "/d/sub"), ("whiteout", "/d/g")]
    assert events[0].layer == "bottom" and events[0].reason


def test_which(fs):
    p = fs.which("/etc/hosts")
    assert (p.layer, p.layer_index, p.is_upper) == ("top", 0, False)
    assert [s.layer_name for s in p.shadows] == ["bottom"]
    m = fs.which("/merged")
    assert [s.layer_name for s in m.merged] == ["top", "bottom"]
    o = fs.which("/o")
    assert o.hidden_by is not None and o.hidden_by.layer_name == "top"
    assert any("opaque" in r for r in o.reasons)
    fs.write_bytes("/etc/hosts", b"u")
    p = fs.which("/etc/hosts")
    assert p.is_upper and [s.layer_name for s in p.shadows] == ["top", "bottom"]
    assert any("upper" in r for r in p.reasons)


def test_diff_and_commit_walk(fs):
    fs.write_bytes("/etc/passwd", b"changed")
    fs.unlink("/etc/hosts")
    fs.makedirs("/new/dir")
    fs.write_bytes("/new/dir/f", b"1")
    fs.unlink("/merged/low")
    out = [str(c) for c in changes(fs)]
    assert out == ["C /etc", "D /etc/hosts", "C /etc/passwd", "C /merged", "D /merged/low",
                   "A /new", "A /new/dir", "A /new/dir/f"]
    items = {i.path: i for i in commit_walk(fs)}
    assert items["/etc/hosts"].entry.kind is Kind.WHITEOUT
    with items["/new/dir/f"].open() as f:
        assert f.read() == b"1"


def test_read_only_union_never_writes(tmp_path):
    fs = UnionFS([dir_layer(str(tmp_path), BOTTOM, "bottom")])
    assert fs.read_bytes("/etc/passwd") == b"root\n"
    with pytest.raises(OSError) as info:
        fs.write_bytes("/etc/passwd", b"")
    assert info.value.errno == errno.EROFS


def test_small_layers_are_not_cached(tmp_path):
    root = tmp_path / "lower"
    from stacks import write_dir

    write_dir(str(root), BOTTOM)
    cache = tmp_path / "cache"
    a = DirLayer(root, cache_dir=cache)
    b = DirLayer(root, cache_dir=cache)
    assert (a.index_source, b.index_source) == ("scan", "scan")
    assert not cache.exists() or list(cache.iterdir()) == []


def test_index_cache_on_disk(tmp_path, monkeypatch):
    import unionfs.layer as layer_mod

    monkeypatch.setattr(layer_mod, "CACHE_MIN_ENTRIES", 0)  # BOTTOM is a small tree
    root = tmp_path / "lower"
    from stacks import write_dir

    write_dir(str(root), BOTTOM)
    cache = tmp_path / "cache"
    a = DirLayer(root, cache_dir=cache)
    assert a.index_source == "scan"
    b = DirLayer(root, cache_dir=cache)
    assert b.index_source == "cache"
    assert b.lookup("/etc/passwd") == a.lookup("/etc/passwd")
    (root / "etc" / "new").write_bytes(b"n")
    c = DirLayer(root, cache_dir=cache)
    assert c.index_source == "scan" and c.lookup("/etc/new") is not None


def test_index_cache_keeps_names_that_are_not_utf8(tmp_path):
    # names are bytes on Linux: a layer big enough to be cached may hold one that is not
    # UTF-8, and both the index file and the names read back from it keep its bytes
    root = tmp_path / "lower"
    (root / "d").mkdir(parents=True)
    for i in range(120):
        (root / "d" / f"f{i}").write_bytes(b"x")
    os.symlink(b"target-\xfe", os.path.join(os.fsencode(root), b"d", b"link-\xff"))
    with open(os.path.join(os.fsencode(root), b"caf\xe9"), "wb") as f:
        f.write(b"latin-1")
    cache = tmp_path / "cache"
    a = DirLayer(root, cache_dir=cache)
    b = DirLayer(root, cache_dir=cache)
    assert (a.index_source, b.index_source) == ("scan", "cache")
    names = {os.fsencode(n) for n in b.listdir("/")}
    assert names == {b"d", b"caf\xe9"}
    assert b.lookup(os.fsdecode(b"/caf\xe9")).size == 7
    link = b.lookup(os.fsdecode(b"/d/link-\xff"))
    assert os.fsencode(link.target) == b"target-\xfe"
    assert dict(b.records("/d"))[os.fsdecode(b"link-\xff")][0] == dict(a.records("/d"))[
        os.fsdecode(b"link-\xff")][0]


def test_copy_up_is_atomic(tmp_path, monkeypatch):
    fs = build(tmp_path, "dir-overlay")
    import unionfs.layer as layer_mod

    def broken(fd_out, source, source_path, size, **kw):  # a fault we cannot cause for real
        os.write(fd_out, b"par")
        raise OSError(errno.EIO, "injected I/O error")

    monkeypatch.setattr(layer_mod, "_copy_data", broken)
    with pytest.raises(OSError) as info:
        fs.open("/etc/passwd", "ab")
    assert info.value.errno == errno.EIO
    assert not (tmp_path / "upper/etc/passwd").exists()
    assert fs.read_bytes("/etc/passwd") == b"root\n"
    work = fs.upper.workdir
    assert [n for n in os.listdir(work) if n.startswith("#")] == []


@pytest.mark.parametrize("lower_kind", ["memory", "dir"])
def test_memory_and_dir_lowers_agree(tmp_path, lower_kind):
    fs = build(tmp_path, "memory", lower_kind)
    assert fs.listdir("/") == ["d", "etc", "h1", "h2", "ln", "merged", "o"]
    assert fs.stat("/h1").st_nlink == 2
    assert not fs.exists("/gone")


def test_dir_symlink_in_path_followed(fs):
    fs.symlink("/d", "/dl")
    assert fs.listdir("/dl/sub") == ["f"]
    fs.write_bytes("/dl/sub/new", b"x")
    assert fs.read_bytes("/d/sub/new") == b"x"
    fs.symlink("nowhere", "/dangle")
    with fs.open("/dangle", "wb") as f:
        f.write(b"created through the link")
    assert fs.read_bytes("/nowhere") == b"created through the link"


def test_open_file_object_calls(fs):
    fs.write_bytes("/f", b"abc")
    with fs.open("/f", "r+b") as f:
        assert f.stat().st_ino == fs.lstat("/f").st_ino
        assert f.stat().st_nlink == 1
        f.chmod(0o600)
        f.utime(ns=(5, 6))
        assert stat.S_IMODE(fs.stat("/f").st_mode) == 0o600
        assert fs.stat("/f").st_mtime_ns == 6
        f.write(b"zz")
        assert f.stat().st_size == 3
        fs.unlink("/f")
        assert f.stat().st_nlink == 0
        assert f.stat().st_ino != 0
    with fs.open("/etc/passwd", "rb") as g:
        assert g.stat() == fs.lstat("/etc/passwd")


def test_subscribe_returns_unsubscribe_and_describe(fs):
    events = []
    stop = fs.subscribe(events.append)
    fs.unlink("/etc/hosts")
    stop()
    fs.unlink("/etc/passwd")
    assert [e.path for e in events] == ["/etc", "/etc/hosts"]  # parent copy-up, whiteout
    text = fs.which("/merged").describe()
    assert text.startswith("/merged: dir from the upper layer") or "lower layer 0" in text
    assert "merged directory" in text


def test_metacopy_on_oci_upper_copies_data(tmp_path):
    fs = build(tmp_path, "dir-oci", metacopy=True)
    fs.chmod("/d/g", 0o600)
    assert not fs.upper.lookup("/d/g").metacopy
    assert fs.read_bytes("/d/g") == b"g"


def test_option_rules(tmp_path):
    with pytest.raises(OSError) as info:
        build(tmp_path, "memory", metacopy=True, redirect_dir=False)
    assert info.value.errno == errno.EINVAL
    fs = build(tmp_path, "memory", metacopy=True)
    assert fs.redirect_dir
    fs.rename("/merged", "/m2")  # metacopy=on turns redirect_dir on, as in the kernel
    assert fs.listdir("/m2") == ["low", "top"]
    fs = build(tmp_path, "dir-overlay", volatile=True)
    fs.write_bytes("/d/g", b"v")
    assert fs.read_bytes("/d/g") == b"v"


@pytest.mark.parametrize("upper_kind", ["memory", "dir-overlay"])
def test_metacopy_link_then_write_keeps_the_link(tmp_path, upper_kind):
    fs = build(tmp_path, upper_kind, metacopy=True)
    fs.link("/d/g", "/d/g2")
    with fs.open("/d/g", "ab") as f:
        f.write(b"y")
    assert fs.read_bytes("/d/g2") == b"gy"
    assert fs.stat("/d/g").st_nlink == 2
    fs.chmod("/d/sub/f", 0o600)  # metadata only ...
    fs.link("/d/sub/f", "/d/sub/f2")  # ... until linked
    with fs.open("/d/sub/f2", "ab") as f:
        f.write(b"z")
    assert fs.read_bytes("/d/sub/f") == b"fz"


@pytest.mark.parametrize("upper_kind", ["memory", "dir-overlay"])
def test_index_unlink_lowers_nlink(tmp_path, upper_kind):
    fs = build(tmp_path, upper_kind, index=True)
    fs.unlink("/h2")
    assert fs.stat("/h1").st_nlink == 1
    assert fs.listxattr("/h1") == []


@pytest.mark.parametrize("upper_kind", ["memory", "dir-overlay"])
def test_index_rename_over_a_lower_link_lowers_nlink(tmp_path, upper_kind):
    fs = build(tmp_path, upper_kind, index=True)
    fs.rename("/d/g", "/h2")
    assert fs.read_bytes("/h2") == b"g"
    assert fs.stat("/h1").st_nlink == 1
    assert fs.read_bytes("/h1") == b"linked"


def test_commit_walk_expands_redirects_and_reads_metacopy_data(tmp_path):
    fs = build(tmp_path, "dir-overlay", redirect_dir=True, metacopy=True)
    fs.rename("/merged", "/moved")
    fs.chmod("/d/g", 0o600)
    items = {i.path: i for i in commit_walk(fs)}
    assert items["/moved"].entry.opaque and items["/moved"].entry.redirect is None
    assert set(items) >= {"/moved/low", "/moved/top", "/merged", "/d/g"}
    assert items["/merged"].entry.kind is Kind.WHITEOUT
    with items["/moved/low"].open() as f:
        assert f.read() == b"low"
    with items["/d/g"].open() as f:
        assert f.read() == b"g"
    assert not items["/d/g"].entry.metacopy
    # /d was copied up as g's parent with its lower times kept (the kernel restores them
    # after a copy-up), so only g itself changed, as docker diff reports it
    assert [str(c) for c in changes(fs)] == ["C /d/g", "D /merged", "A /moved",
                                           "A /moved/low", "A /moved/top"]


@pytest.mark.parametrize("index", [False, True])
def test_rename_between_lower_hard_links(tmp_path, index):
    fs = build(tmp_path, "memory", index=index)
    fs.rename("/h1", "/h2")
    # index=on: one overlay inode, rename does nothing; off: two inodes, a real rename
    assert fs.exists("/h1") is index
    assert fs.read_bytes("/h2") == b"linked"
