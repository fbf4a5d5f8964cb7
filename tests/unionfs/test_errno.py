"""Exact errno for every operation, on every layer combination (memory and directory lowers;
memory upper and directory uppers in each whiteout format; no upper = read-only)."""

from __future__ import annotations

import errno
import os

import pytest
from stacks import DIR, OPAQUE, WHITEOUT, dir_layer, memory_layer

from unionfs import whiteout as wh
from unionfs.layer import DirLayer, MemoryLayer
from unionfs.union import RENAME_EXCHANGE, RENAME_NOREPLACE, UnionFS

BOTTOM = {
    "/etc/passwd": b"root:x:0:0\n",
    "/etc/hosts": b"h1\n",
    "/dir/sub/file": b"x",
    "/dir/a": b"a",
    "/file": b"f",
    "/link": ("symlink", "/etc/passwd"),
    "/dangling": ("symlink", "/nowhere/at/all"),
    "/loop1": ("symlink", "/loop2"),
    "/loop2": ("symlink", "/loop1"),
    "/empty": DIR,
    "/merged/low": b"low",
    "/gone": b"hidden by a whiteout above",
    "/opq/old": b"hidden by an opaque dir above",
    "/lowdir/x": b"x",
}
TOP = {
    "/etc/hosts": b"h0\n",
    "/merged/top": b"top",
    "/gone": WHITEOUT,
    "/opq": OPAQUE,
    "/opq/new": b"new",
}

UPPERS = ["none", "memory", "dir-overlay", "dir-user", "dir-oci"]
LOWERS = ["memory", "dir"]


def make_union(tmp_path, lower_kind: str, upper_kind: str, **opts) -> UnionFS:
    if lower_kind == "memory":
        lowers = [memory_layer(TOP, "top"), memory_layer(BOTTOM, "bottom")]
    else:
        lowers = [dir_layer(str(tmp_path), TOP, "top"), dir_layer(str(tmp_path), BOTTOM, "bottom")]
    if upper_kind == "none":
        upper = None
    elif upper_kind == "memory":
        upper = MemoryLayer("upper")
    else:
        fmt = {"dir-overlay": wh.Format.OVERLAY, "dir-user": wh.Format.USER,
               "dir-oci": wh.Format.OCI}[upper_kind]
        os.makedirs(tmp_path / "upper")
        upper = DirLayer(tmp_path / "upper", writable=True, fmt=fmt)
    return UnionFS(lowers, upper, **opts)


@pytest.fixture(params=[(lk, uk) for lk in LOWERS for uk in UPPERS],
                ids=lambda p: f"{p[0]}-lowers/{p[1]}-upper")
def fs(request, tmp_path):
    lk, uk = request.param
    return make_union(tmp_path, lk, uk)


def err(fn, *args, **kwargs) -> int:
    with pytest.raises(OSError) as info:
        fn(*args, **kwargs)
    assert isinstance(info.value.errno, int)
    return info.value.errno


def _read(fs, p):
    with fs.open(p, "rb") as f:
        return f.read()


# (name, operation, errno) -- the same answer with or without an upper
READ_ERRORS = [
    ("stat missing", lambda fs: fs.stat("/nope"), errno.ENOENT),
    ("stat below a file", lambda fs: fs.stat("/file/x"), errno.ENOTDIR),
    ("stat symlink loop", lambda fs: fs.stat("/loop1"), errno.ELOOP),
    ("stat dangling symlink", lambda fs: fs.stat("/dangling"), errno.ENOENT),
    ("stat whited-out", lambda fs: fs.stat("/gone"), errno.ENOENT),
    ("stat hidden by opaque", lambda fs: fs.stat("/opq/old"), errno.ENOENT),
    ("stat long name", lambda fs: fs.stat("/" + "a" * 256), errno.ENAMETOOLONG),
    ("lstat missing", lambda fs: fs.lstat("/nope"), errno.ENOENT),
    ("listdir a file", lambda fs: fs.listdir("/file"), errno.ENOTDIR),
    ("listdir missing", lambda fs: fs.listdir("/nope"), errno.ENOENT),
    ("open missing", lambda fs: fs.open("/nope", "rb"), errno.ENOENT),
    ("open a directory", lambda fs: fs.open("/dir", "rb"), errno.EISDIR),
    ("open through a loop", lambda fs: fs.open("/loop1", "rb"), errno.ELOOP),
    ("readlink a file", lambda fs: fs.readlink("/file"), errno.EINVAL),
    ("readlink missing", lambda fs: fs.readlink("/nope"), errno.ENOENT),
    ("getxattr absent", lambda fs: fs.getxattr("/file", "user.nope"), errno.ENODATA),
    ("getxattr private", lambda fs: fs.getxattr("/opq", "trusted.overlay.opaque"),
     errno.ENODATA),
    ("access missing", lambda fs: fs.check_access("/nope", os.R_OK), errno.ENOENT),
    ("statvfs missing", lambda fs: fs.statvfs("/nope"), errno.ENOENT),
    ("which missing", lambda fs: fs.which("/gone"), errno.ENOENT),
    # a name's length is checked when the walk reaches it: earlier errors win
    ("long name below a file", lambda fs: fs.lstat("/file/" + "n" * 256), errno.ENOTDIR),
    ("long name below a missing dir", lambda fs: fs.stat("/nope/" + "n" * 256), errno.ENOENT),
    ("long name as a parent", lambda fs: fs.stat("/" + "n" * 256 + "/x"), errno.ENAMETOOLONG),
]


@pytest.mark.parametrize("name,op,code", READ_ERRORS, ids=[r[0] for r in READ_ERRORS])
def test_read_errors(fs, name, op, code):
    assert err(op, fs) == code


# (name, operation, errno with an upper, errno without one)
WRITE_ERRORS = [
    ("mkdir existing file", lambda fs: fs.mkdir("/file"), errno.EEXIST, errno.EEXIST),
    ("mkdir existing dir", lambda fs: fs.mkdir("/dir"), errno.EEXIST, errno.EEXIST),
    ("mkdir on a dangling symlink", lambda fs: fs.mkdir("/dangling"), errno.EEXIST,
     errno.EEXIST),
    ("mkdir missing parent", lambda fs: fs.mkdir("/nope/x"), errno.ENOENT, errno.ENOENT),
    ("mkdir below a file", lambda fs: fs.mkdir("/file/x"), errno.ENOTDIR, errno.ENOTDIR),
    ("mkdir new", lambda fs: fs.mkdir("/new"), None, errno.EROFS),
    ("mkdir root", lambda fs: fs.mkdir("/"), errno.EEXIST, errno.EEXIST),
    ("rmdir non-empty lower", lambda fs: fs.rmdir("/dir"), errno.ENOTEMPTY, errno.EROFS),
    ("rmdir non-empty merged", lambda fs: fs.rmdir("/merged"), errno.ENOTEMPTY, errno.EROFS),
    ("rmdir a file", lambda fs: fs.rmdir("/file"), errno.ENOTDIR, errno.EROFS),
    ("rmdir missing", lambda fs: fs.rmdir("/nope"), errno.ENOENT, errno.EROFS),
    ("rmdir root", lambda fs: fs.rmdir("/"), errno.EBUSY, errno.EBUSY),
    ("rmdir whited-out", lambda fs: fs.rmdir("/gone"), errno.ENOENT, errno.EROFS),
    ("unlink a dir", lambda fs: fs.unlink("/dir"), errno.EISDIR, errno.EROFS),
    ("unlink missing", lambda fs: fs.unlink("/nope"), errno.ENOENT, errno.EROFS),
    ("unlink whited-out", lambda fs: fs.unlink("/gone"), errno.ENOENT, errno.EROFS),
    ("unlink below a file", lambda fs: fs.unlink("/file/x"), errno.ENOTDIR, errno.ENOTDIR),
    ("open excl existing", lambda fs: fs.open("/file", "xb"), errno.EEXIST, errno.EEXIST),
    ("open excl dangling symlink", lambda fs: fs.open("/dangling", "xb"), errno.EEXIST,
     errno.EEXIST),
    ("open write a dir", lambda fs: fs.open("/dir", "wb"), errno.EISDIR, errno.EISDIR),
    ("open create missing parent", lambda fs: fs.open("/nope/x", "wb"), errno.ENOENT,
     errno.ENOENT),
    ("open create below a file", lambda fs: fs.open("/file/x", "wb"), errno.ENOTDIR,
     errno.ENOTDIR),
    ("open write lower file", lambda fs: fs.open("/file", "r+b").close(), None, errno.EROFS),
    ("open nofollow symlink", lambda fs: fs.open("/link", os.O_RDONLY | os.O_NOFOLLOW),
     errno.ELOOP, errno.ELOOP),
    ("rename missing", lambda fs: fs.rename("/nope", "/x"), errno.ENOENT, errno.EROFS),
    ("rename dir into itself", lambda fs: fs.rename("/empty", "/empty/x"), errno.EINVAL,
     errno.EROFS),
    ("rename onto own ancestor", lambda fs: fs.rename("/dir/sub/file", "/dir"),
     errno.ENOTEMPTY, errno.EROFS),
    ("rename dir onto file", lambda fs: fs.rename("/empty", "/file"), errno.ENOTDIR,
     errno.EROFS),
    ("rename file onto dir", lambda fs: fs.rename("/file", "/empty"), errno.EISDIR,
     errno.EROFS),
    ("rename lower dir", lambda fs: fs.rename("/empty", "/moved"), errno.EXDEV, errno.EROFS),
    ("rename merged dir", lambda fs: fs.rename("/merged", "/moved"), errno.EXDEV, errno.EROFS),
    ("rename lower dir onto non-empty", lambda fs: fs.rename("/empty", "/dir"), errno.EXDEV,
     errno.EROFS),
    ("rename noreplace", lambda fs: fs.rename("/file", "/etc/hosts", RENAME_NOREPLACE),
     errno.EEXIST, errno.EROFS),
    ("rename exchange missing", lambda fs: fs.rename("/file", "/nope", RENAME_EXCHANGE),
     errno.ENOENT, errno.EROFS),
    ("rename bad flags", lambda fs: fs.rename("/file", "/x", 3), errno.EINVAL, errno.EINVAL),
    ("rename root", lambda fs: fs.rename("/", "/x"), errno.EBUSY, errno.EROFS),
    ("link a dir", lambda fs: fs.link("/dir", "/x"), errno.EPERM, errno.EROFS),
    ("link onto existing", lambda fs: fs.link("/file", "/etc/hosts"), errno.EEXIST,
     errno.EEXIST),
    ("link missing", lambda fs: fs.link("/nope", "/x"), errno.ENOENT, errno.ENOENT),
    ("symlink onto existing", lambda fs: fs.symlink("t", "/file"), errno.EEXIST,
     errno.EEXIST),
    ("symlink new", lambda fs: fs.symlink("t", "/newlink"), None, errno.EROFS),
    ("mknod fifo existing", lambda fs: fs.mknod("/file", 0o644 | 0o010000), errno.EEXIST,
     errno.EEXIST),
    ("mknod fifo new", lambda fs: fs.mknod("/fifo", 0o644 | 0o010000), None, errno.EROFS),
    ("chmod missing", lambda fs: fs.chmod("/nope", 0o600), errno.ENOENT, errno.ENOENT),
    ("chmod lower", lambda fs: fs.chmod("/file", 0o600), None, errno.EROFS),
    ("chown missing", lambda fs: fs.chown("/nope", 1, 1), errno.ENOENT, errno.ENOENT),
    ("utime missing", lambda fs: fs.utime("/nope", ns=(1, 1)), errno.ENOENT, errno.ENOENT),
    ("utime lower", lambda fs: fs.utime("/file", ns=(1, 1)), None, errno.EROFS),
    ("truncate a dir", lambda fs: fs.truncate("/dir", 0), errno.EISDIR, errno.EISDIR),
    ("truncate negative", lambda fs: fs.truncate("/file", -1), errno.EINVAL, errno.EINVAL),
    ("truncate missing", lambda fs: fs.truncate("/nope", 0), errno.ENOENT, errno.ENOENT),
    ("truncate lower", lambda fs: fs.truncate("/file", 0), None, errno.EROFS),
    ("setxattr create existing", lambda fs: (fs.setxattr("/file", "user.a", b"1"),
                                             fs.setxattr("/file", "user.a", b"2",
                                                         os.XATTR_CREATE)),
     errno.EEXIST, errno.EROFS),
    ("setxattr replace absent", lambda fs: fs.setxattr("/file", "user.a", b"1",
                                                       os.XATTR_REPLACE),
     errno.ENODATA, errno.EROFS),
    ("setxattr overlay namespace", lambda fs: fs.setxattr("/file", "trusted.overlay.opaque",
                                                          b"y"), None, errno.EROFS),
    ("removexattr absent", lambda fs: fs.removexattr("/file", "user.nope"), errno.ENODATA,
     errno.EROFS),
    ("access write", lambda fs: fs.check_access("/file", os.W_OK), None, errno.EROFS),
    ("mkdir long name, missing parent", lambda fs: fs.mkdir("/nope/" + "n" * 256),
     errno.ENOENT, errno.ENOENT),
    ("mkdir long name", lambda fs: fs.mkdir("/" + "n" * 256), errno.ENAMETOOLONG,
     errno.ENAMETOOLONG),
    ("rename long name to a missing parent", lambda fs: fs.rename("/" + "n" * 256, "/nope/a"),
     errno.ENOENT, errno.ENOENT),
    ("setxattr user.* on a symlink", lambda fs: fs.setxattr("/link", "user.a", b"1",
                                                             follow_symlinks=False),
     errno.EPERM, errno.EROFS),
    ("removexattr user.* on a symlink", lambda fs: fs.removexattr("/link", "user.a",
                                                                  follow_symlinks=False),
     errno.EPERM, errno.EROFS),
    ("create a reserved .wh. name", lambda fs: fs.open("/.wh.x", "wb"), errno.EINVAL,
     errno.EROFS),
    ("mkdir a reserved .wh. name", lambda fs: fs.mkdir("/dir/.wh..wh..opq"), errno.EINVAL,
     errno.EROFS),
    ("rename onto a reserved .wh. name", lambda fs: fs.rename("/file", "/.wh.file"),
     errno.EINVAL, errno.EROFS),
]


@pytest.mark.parametrize("name,op,code,ro_code", WRITE_ERRORS, ids=[r[0] for r in WRITE_ERRORS])
def test_write_errors(fs, name, op, code, ro_code):
    expected = ro_code if fs.upper is None else code
    if expected is None:
        op(fs)  # succeeds
        return
    assert err(op, fs) == expected


def test_lower_layers_never_change(tmp_path):
    fs = make_union(tmp_path, "dir", "dir-overlay")

    def snapshot():
        out = {}
        for name in ("top", "bottom"):
            for root, dirs, files in os.walk(tmp_path / name):
                for n in dirs + files:
                    p = os.path.join(root, n)
                    st = os.lstat(p)
                    data = None
                    if os.path.isfile(p) and not os.path.islink(p):
                        with open(p, "rb") as f:
                            data = f.read()
                    out[p] = (st.st_mode, st.st_size, st.st_mtime_ns, data,
                              tuple(sorted(os.listxattr(p, follow_symlinks=False))))
        return out

    before = snapshot()
    for _name, op, _code, _ro in WRITE_ERRORS:
        try:
            op(fs)
        except OSError:
            pass
    fs.write_bytes("/etc/passwd", b"changed")
    fs.unlink("/etc/hosts")
    fs.rename("/dir/a", "/dir/b")
    assert snapshot() == before
