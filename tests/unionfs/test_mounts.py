"""HostFS and MountTable on real directories: routing, symlinks across mounts, no escapes,
EROFS/EXDEV/EBUSY at the boundaries, exact errnos."""

from __future__ import annotations

import errno
import os
import stat

import pytest

from unionfs.mounts import HostFS, Mount, MountTable


def _errno(fn, *args) -> int:
    with pytest.raises(OSError) as info:
        fn(*args)
    return info.value.errno


@pytest.fixture()
def tree(tmp_path):
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    (root / "etc" / "hosts").write_text("root hosts\n")
    (root / "data").mkdir()
    (root / "data" / "hidden").write_text("image content under the mount point\n")
    (root / "conf").mkdir()
    (root / "conf" / "app.conf").write_text("image conf\n")
    vol = tmp_path / "vol"
    vol.mkdir()
    (vol / "v.txt").write_text("volume file\n")
    cfg = tmp_path / "redis.conf"
    cfg.write_text("appendonly yes\n")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_text("must not be reachable\n")
    return tmp_path


def test_hostfs_reads_and_writes_a_directory(tree):
    fs = HostFS(tree / "vol")
    assert sorted(fs.listdir("/")) == ["v.txt"]
    with fs.open("/v.txt") as f:
        assert f.read() == b"volume file\n"
    with fs.open("/new", "wb") as f:
        f.write(b"abc")
    assert (tree / "vol" / "new").read_bytes() == b"abc"
    fs.mkdir("/d")
    fs.symlink("../v.txt", "/d/l")
    assert fs.readlink("/d/l") == "../v.txt"
    assert stat.S_ISLNK(fs.lstat("/d/l").st_mode)
    assert fs.stat("/d/l").st_size == len("volume file\n")
    fs.rename("/new", "/d/new")
    assert (tree / "vol" / "d" / "new").exists()
    fs.unlink("/d/new")
    fs.unlink("/d/l")
    fs.rmdir("/d")
    assert sorted(os.listdir(tree / "vol")) == ["v.txt"]


def test_hostfs_errnos(tree):
    fs = HostFS(tree / "vol")
    assert _errno(fs.lstat, "/missing") == errno.ENOENT
    assert _errno(fs.lstat, "/missing/x") == errno.ENOENT
    assert _errno(fs.lstat, "/v.txt/x") == errno.ENOTDIR
    assert _errno(fs.listdir, "/v.txt") == errno.ENOTDIR
    assert _errno(fs.mkdir, "/v.txt") == errno.EEXIST
    assert _errno(fs.rmdir, "/v.txt") == errno.ENOTDIR
    assert _errno(fs.open, "/", "rb") == errno.EISDIR
    assert _errno(fs.readlink, "/v.txt") == errno.EINVAL
    fs.symlink("loop2", "/loop1")
    fs.symlink("loop1", "/loop2")
    assert _errno(fs.stat, "/loop1") == errno.ELOOP
    assert _errno(HostFS, tree / "nope") == errno.ENOENT


def test_hostfs_never_escapes_its_root(tree):
    fs = HostFS(tree / "vol")
    # ".." stops at the root, as in a chroot
    assert sorted(fs.listdir("/../../..")) == ["v.txt"]
    with pytest.raises(FileNotFoundError):
        fs.open("/../outside/secret")
    # an absolute symlink is taken from the root; a relative one cannot climb out either
    os.symlink(str(tree / "outside"), tree / "vol" / "abs")
    os.symlink("../outside", tree / "vol" / "rel")
    assert _errno(fs.open, "/abs/secret") == errno.ENOENT
    assert _errno(fs.open, "/rel/secret") == errno.ENOENT
    # writing through a link that points outside resolves inside the root instead
    os.symlink("/../outside/created", tree / "vol" / "wlink")
    assert _errno(fs.open, "/wlink", "wb") == errno.ENOENT  # no /outside inside the root
    os.symlink("../created-here", tree / "vol" / "wlink2")
    with fs.open("/wlink2", "wb") as f:
        f.write(b"x")
    assert (tree / "vol" / "created-here").read_bytes() == b"x"
    assert sorted(os.listdir(tree / "outside")) == ["secret"]
    assert not (tree / "created-here").exists()


def test_hostfs_read_only_gives_erofs_and_loses_nothing(tree):
    fs = HostFS(tree / "vol", read_only=True)
    assert fs.open("/v.txt").read() == b"volume file\n"
    assert _errno(fs.open, "/v.txt", "r+b") == errno.EROFS
    assert _errno(fs.open, "/n", "wb") == errno.EROFS
    assert _errno(fs.mkdir, "/d") == errno.EROFS
    assert _errno(fs.unlink, "/v.txt") == errno.EROFS
    assert _errno(fs.rename, "/v.txt", "/w") == errno.EROFS
    assert _errno(fs.chmod, "/v.txt", 0o600) == errno.EROFS
    assert _errno(fs.truncate, "/v.txt", 0) == errno.EROFS
    assert _errno(fs.symlink, "x", "/s") == errno.EROFS
    assert (tree / "vol" / "v.txt").read_text() == "volume file\n"
    assert sorted(os.listdir(tree / "vol")) == ["v.txt"]


def test_hostfs_single_file(tree):
    fs = HostFS(tree / "redis.conf")
    assert fs.is_file
    assert fs.open("/").read() == b"appendonly yes\n"
    assert stat.S_ISREG(fs.stat("/").st_mode)
    assert _errno(fs.lstat, "/x") == errno.ENOTDIR
    assert _errno(fs.listdir, "/") == errno.ENOTDIR
    assert _errno(fs.unlink, "/") == errno.EBUSY
    with fs.open("/", "ab") as f:
        f.write(b"maxmemory 1mb\n")
    assert (tree / "redis.conf").read_text() == "appendonly yes\nmaxmemory 1mb\n"


@pytest.fixture()
def view(tree):
    root = HostFS(tree / "root")
    mounts = [
        Mount("/data", HostFS(tree / "vol")),
        Mount("/conf", HostFS(tree / "vol"), read_only=True),
        Mount("/etc/redis.conf", HostFS(tree / "redis.conf")),
    ]
    return MountTable(root, mounts)


def test_mount_hides_the_content_underneath_and_routes_writes_to_the_host(tree, view):
    assert sorted(view.listdir("/data")) == ["v.txt"]  # "hidden" is under the mount
    assert view.open("/data/v.txt").read() == b"volume file\n"
    with view.open("/data/from-ctr", "wb") as f:
        f.write(b"written inside")
    assert (tree / "vol" / "from-ctr").read_bytes() == b"written inside"
    (tree / "vol" / "from-host").write_text("written on the host")
    assert view.open("/data/from-host").read() == b"written on the host"
    assert (tree / "root" / "data" / "hidden").exists()
    assert not (tree / "root" / "data" / "from-ctr").exists()
    # a single-file bind replaces that file
    assert view.open("/etc/redis.conf").read() == b"appendonly yes\n"
    assert sorted(view.listdir("/etc")) == ["hosts", "redis.conf"]
    assert view.route("/data/v.txt")[1] == "/v.txt"
    assert view.route("/etc/hosts")[0].path == "/"


def test_read_only_mount(tree, view):
    assert view.open("/conf/v.txt").read() == b"volume file\n"
    assert _errno(view.open, "/conf/n", "wb") == errno.EROFS
    assert _errno(view.unlink, "/conf/v.txt") == errno.EROFS
    assert _errno(view.mkdir, "/conf/d") == errno.EROFS
    assert _errno(view.chmod, "/conf/v.txt", 0o600) == errno.EROFS
    # the same host directory stays writable through the rw mount, and shows at once
    with view.open("/data/n", "wb") as f:
        f.write(b"1")
    assert view.open("/conf/n").read() == b"1"


def test_boundaries_exdev_and_ebusy(view):
    assert _errno(view.rename, "/data/v.txt", "/etc/v.txt") == errno.EXDEV
    assert _errno(view.link, "/data/v.txt", "/etc/v.txt") == errno.EXDEV
    assert _errno(view.rmdir, "/data") == errno.EBUSY
    assert _errno(view.unlink, "/etc/redis.conf") == errno.EBUSY
    assert _errno(view.rename, "/data", "/data2") == errno.EBUSY
    assert _errno(view.mkdir, "/data") == errno.EEXIST
    # an ordinary rename inside one mount works
    view.rename("/data/v.txt", "/data/w.txt")
    assert sorted(view.listdir("/data")) == ["w.txt"]


def test_rename_onto_the_same_inode_does_nothing(tree, view):
    # vfs_rename returns 0 for one inode under both names before its mount point check
    view.rename("/data", "/data")
    view.rename("/etc/redis.conf", "/etc/redis.conf")
    view.link("/data/v.txt", "/data/v2.txt")
    view.rename("/data/v.txt", "/data/v2.txt")
    assert sorted(view.listdir("/data")) == ["v.txt", "v2.txt"]
    # RENAME_NOREPLACE still refuses an existing target
    assert _errno(view.rename, "/data", "/data", 1) == errno.EEXIST
    assert _errno(view.rename, "/data/v.txt", "/data/v2.txt", 1) == errno.EEXIST


def test_symlinks_resolve_across_mounts(tree, view):
    view.symlink("/data/v.txt", "/etc/link-into-volume")
    assert view.open("/etc/link-into-volume").read() == b"volume file\n"
    assert stat.S_ISLNK(view.lstat("/etc/link-into-volume").st_mode)
    view.symlink("../etc/hosts", "/data/link-out")
    assert view.open("/data/link-out").read() == b"root hosts\n"
    view.symlink("/data", "/datalink")
    assert sorted(view.listdir("/datalink")) == ["link-out", "v.txt"]
    with view.open("/datalink/via-link", "wb") as f:
        f.write(b"y")
    assert (tree / "vol" / "via-link").read_bytes() == b"y"
    view.symlink("/l2", "/l1")
    view.symlink("/l1", "/l2")
    assert _errno(view.stat, "/l1") == errno.ELOOP
    assert _errno(view.stat, "/etc/hosts/x") == errno.ENOTDIR
    assert _errno(view.stat, "/nope/x") == errno.ENOENT


def test_inode_numbers_do_not_collide_between_mounts(tree, view):
    inos = {view.lstat(p).st_ino for p in ("/etc/hosts", "/data/v.txt", "/etc/redis.conf")}
    assert len(inos) == 3


def test_walk_and_makedirs(tree, view):
    view.makedirs("/data/a/b/c")
    assert (tree / "vol" / "a" / "b" / "c").is_dir()
    with pytest.raises(FileExistsError):
        view.makedirs("/data/a/b/c")
    view.makedirs("/data/a/b/c", exist_ok=True)
    seen = {d for d, _, _ in view.walk("/")}
    assert {"/", "/etc", "/data", "/data/a/b/c", "/conf"} <= seen
    files = {os.path.join(d, f) for d, _, fs in view.walk("/") for f in fs}
    assert "/etc/redis.conf" in files and "/data/v.txt" in files
    assert "/data/hidden" not in files


def test_root_read_only_table(tree):
    table = MountTable(HostFS(tree / "root"), [Mount("/data", HostFS(tree / "vol"))],
                       read_only=True)
    assert _errno(table.open, "/etc/new", "wb") == errno.EROFS
    with table.open("/data/ok", "wb") as f:  # volumes stay writable with --read-only
        f.write(b"ok")
    assert (tree / "vol" / "ok").exists()


def test_hostfs_flags_open_and_file_calls(tree):
    fs = HostFS(tree / "vol")
    f = fs.open("/p.bin", os.O_RDWR | os.O_CREAT, perm=0o640)
    try:
        assert f.pwrite(b"abcdef", 0) == 6
        assert f.pread(3, 2) == b"cde"
        f.truncate(4)
        assert f.stat().st_size == 4
        f.chmod(0o600)
    finally:
        f.close()
    assert stat.S_IMODE(os.stat(tree / "vol" / "p.bin").st_mode) == 0o600
    assert _errno(fs.open, "/p.bin", os.O_RDWR | os.O_CREAT | os.O_EXCL) == errno.EEXIST
    ro = HostFS(tree / "vol", read_only=True)
    assert _errno(ro.open, "/p.bin", os.O_WRONLY) == errno.EROFS
    assert ro.access("/p.bin", os.R_OK) is True
    assert ro.access("/p.bin", os.W_OK) is False
    assert _errno(ro.check_access, "/p.bin", os.W_OK) == errno.EROFS


def test_rename_flags_noreplace_and_exchange(tree):
    fs = HostFS(tree / "vol")
    with fs.open("/a", "wb") as f:
        f.write(b"A")
    with fs.open("/b", "wb") as f:
        f.write(b"B")
    RENAME_NOREPLACE, RENAME_EXCHANGE = 1, 2
    assert _errno(fs.rename, "/a", "/b", RENAME_NOREPLACE) == errno.EEXIST
    fs.rename("/a", "/b", RENAME_EXCHANGE)
    assert (tree / "vol" / "a").read_bytes() == b"B" and (tree / "vol" / "b").read_bytes() == b"A"
    view = MountTable(HostFS(tree / "root"), [Mount("/data", fs)])
    view.rename("/data/a", "/data/c", RENAME_NOREPLACE)
    assert (tree / "vol" / "c").read_bytes() == b"B"


def test_copy_tree_between_filesystems(tree):
    from unionfs.mounts import copy_tree

    src = HostFS(tree / "root")
    dst = HostFS(tree / "vol")
    os.symlink("hosts", tree / "root" / "etc" / "link")
    n = copy_tree(src, "/etc", dst, "/etc-copy")
    assert n == len("root hosts\n")
    assert (tree / "vol" / "etc-copy" / "hosts").read_text() == "root hosts\n"
    assert os.readlink(tree / "vol" / "etc-copy" / "link") == "hosts"
    st_src = os.stat(tree / "root" / "etc" / "hosts")
    st_dst = os.stat(tree / "vol" / "etc-copy" / "hosts")
    assert st_dst.st_mtime_ns == st_src.st_mtime_ns
    (tree / "root" / "etc" / "hosts").write_text("second\n")
    copy_tree(src, "/etc", dst, "/etc-copy")       # merge: files replaced
    assert (tree / "vol" / "etc-copy" / "hosts").read_text() == "second\n"
    assert _errno(copy_tree, src, "/etc/hosts", dst, "/etc-copy") == errno.EISDIR
    assert _errno(copy_tree, src, "/etc", dst, "/etc-copy/hosts") == errno.EEXIST


def test_which_names_the_mount(tree, view):
    prov = view.which("/data/v.txt")
    assert prov.mount_point == "/data" and prov.source == str(tree / "vol")
    assert str(tree / "vol" / "v.txt") in prov.describe()
    assert view.which("/conf/v.txt").read_only is True


# -- differential: MountTable against real kernel bind mounts ----------------------------

class _OsFS:
    """The same method names over a real directory tree (kernel bind mounts inside it)."""

    def __init__(self, root: str) -> None:
        self.root = root

    def _p(self, path: str) -> str:
        return self.root + path

    def lstat(self, p):
        return os.lstat(self._p(p))

    def stat(self, p):
        return os.stat(self._p(p))

    def listdir(self, p):
        return os.listdir(self._p(p))

    def open(self, p, mode="rb"):
        return open(self._p(p), mode)

    def mkdir(self, p, mode=0o777):
        os.mkdir(self._p(p), mode)

    def rmdir(self, p):
        os.rmdir(self._p(p))

    def unlink(self, p):
        os.unlink(self._p(p))

    def rename(self, a, b):
        os.rename(self._p(a), self._p(b))

    def symlink(self, target, p):
        os.symlink(target, self._p(p))

    def readlink(self, p):
        return os.readlink(self._p(p))

    def chmod(self, p, mode):
        os.chmod(self._p(p), mode)


_PATHS = ["/a", "/etc/f", "/etc/d", "/etc/d/g", "/data", "/data/a", "/data/d", "/data/d/x",
          "/ro", "/ro/a", "/ro/seed", "/etc/link", "/data/link", "/lnk/x", "/lnk"]
_TARGETS = ["a", "f", "../data/a", "../data", "d/x", "../ro/seed", "nowhere", "../etc/f",
            "data", "ro"]


def _apply(fs, op):
    kind, a, b = op
    try:
        if kind == "write":
            with fs.open(a, "wb") as f:
                f.write(a.encode())
            return "ok"
        if kind == "read":
            with fs.open(a, "rb") as f:
                return f.read()
        if kind == "mkdir":
            fs.mkdir(a, 0o755)
            return "ok"
        if kind == "rmdir":
            fs.rmdir(a)
            return "ok"
        if kind == "unlink":
            fs.unlink(a)
            return "ok"
        if kind == "rename":
            fs.rename(a, b)
            return "ok"
        if kind == "symlink":
            fs.symlink(b, a)
            return "ok"
        if kind == "readlink":
            return fs.readlink(a)
        if kind == "listdir":
            return sorted(fs.listdir(a))
        if kind == "stat":
            st = fs.stat(a)
            return (stat.S_IFMT(st.st_mode), st.st_size if stat.S_ISREG(st.st_mode) else 0)
        if kind == "chmod":
            fs.chmod(a, 0o700)
            return "ok"
    except OSError as e:
        return ("errno", e.errno)
    raise AssertionError(kind)


class _Chrooted:
    """Runs ``_apply``/``_tree`` on an ``_OsFS`` in a forked child chrooted into ``root``, so
    absolute symlink targets and ``..`` at the top resolve inside the tree, as in a
    container (unchrooted they would reach the host's directories around it)."""

    def __init__(self, root: str) -> None:
        import pickle

        self._pickle = pickle
        self._req_r, self._req_w = os.pipe()
        self._res_r, self._res_w = os.pipe()
        self.pid = os.fork()
        if self.pid == 0:  # the child: serve requests until the pipe closes
            code = 0
            try:
                os.close(self._req_w)
                os.close(self._res_r)
                os.chroot(root)
                os.chdir("/")
                fs = _OsFS("")
                with os.fdopen(self._req_r, "rb") as req, os.fdopen(self._res_w, "wb") as res:
                    while True:
                        try:
                            what, arg = pickle.load(req)
                        except EOFError:
                            break
                        out = _apply(fs, arg) if what == "apply" else _tree(fs)
                        pickle.dump(out, res)
                        res.flush()
            except BaseException:
                code = 1
            os._exit(code)
        os.close(self._req_r)
        os.close(self._res_w)
        self._req = os.fdopen(self._req_w, "wb")
        self._res = os.fdopen(self._res_r, "rb")

    def _ask(self, what: str, arg=None):
        self._pickle.dump((what, arg), self._req)
        self._req.flush()
        return self._pickle.load(self._res)

    def apply(self, op):
        return self._ask("apply", op)

    def tree(self):
        return self._ask("tree")

    def close(self) -> None:
        self._req.close()
        self._res.close()
        os.waitpid(self.pid, 0)


def _tree(fs, top="/"):
    out = {}
    for name in sorted(fs.listdir(top)):
        p = top.rstrip("/") + "/" + name
        st = fs.lstat(p)
        if stat.S_ISDIR(st.st_mode):
            out[p] = "dir"
            out.update(_tree(fs, p))
        elif stat.S_ISLNK(st.st_mode):
            out[p] = "-> " + fs.readlink(p)
        else:
            with fs.open(p, "rb") as f:
                out[p] = f.read()
    return out


def test_differential_against_kernel_bind_mounts(tmp_path):
    import subprocess

    from hypothesis import example, given
    from hypothesis import strategies as st

    from tests.conftest import need_root

    need_root()
    ops = st.lists(st.tuples(
        st.sampled_from(["write", "read", "mkdir", "rmdir", "unlink", "rename", "symlink",
                         "readlink", "listdir", "stat", "chmod"]),
        st.sampled_from(_PATHS),
        st.sampled_from(_PATHS + _TARGETS)), min_size=1, max_size=25)
    counter = iter(range(10**6))

    def layout(base):
        for d in ("root/etc", "root/data", "root/ro", "vol", "rovol"):
            os.makedirs(os.path.join(base, d))
        with open(os.path.join(base, "root/etc/f"), "wb") as f:
            f.write(b"etc f")
        with open(os.path.join(base, "root/data/hidden"), "wb") as f:
            f.write(b"under the mount")
        with open(os.path.join(base, "rovol/seed"), "wb") as f:
            f.write(b"seed")

    @given(ops)
    @example([("symlink", "/a", "../data/a"), ("write", "/a", "/a"), ("read", "/data/a", "")])
    @example([("symlink", "/lnk", "/ro"), ("read", "/lnk/seed", ""), ("write", "/lnk/x", "")])
    def run(seq):
        n = next(counter)
        k, e = str(tmp_path / f"k{n}"), str(tmp_path / f"e{n}")
        layout(k)
        layout(e)
        subprocess.run(["mount", "--bind", f"{k}/vol", f"{k}/root/data"], check=True)
        subprocess.run(["mount", "--bind", f"{k}/rovol", f"{k}/root/ro"], check=True)
        subprocess.run(["mount", "-o", "remount,bind,ro", f"{k}/root/ro"], check=True)
        kernel = _Chrooted(f"{k}/root")
        try:
            view = MountTable(HostFS(f"{e}/root"), [
                Mount("/data", HostFS(f"{e}/vol")),
                Mount("/ro", HostFS(f"{e}/rovol"), read_only=True)])
            for op in seq:
                if op[0] == "rename" and not op[2].startswith("/"):
                    continue  # rename takes two paths
                want, got = kernel.apply(op), _apply(view, op)
                assert got == want, f"{op}: kernel {want!r}, MountTable {got!r}"
            assert _tree(view) == kernel.tree()
        finally:
            kernel.close()
            subprocess.run(["umount", f"{k}/root/ro"], check=False)
            subprocess.run(["umount", f"{k}/root/data"], check=False)

    run()
