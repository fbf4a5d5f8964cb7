"""POSIX behaviour through the mount that filesystem test suites check: permissions for other
users, sticky and set-group-ID directories, ENAMETOOLONG, long paths, renameat2 flags, stable
inode numbers and link counts (hard links of every type, unlinked open files)."""

from __future__ import annotations

import ctypes
import errno
import os
import pathlib
import shutil
import stat
import subprocess
import tempfile

import pytest

from tests.conftest import need_fuse, need_root
from tests.interop.fuse_helpers import make_stack, mounted

pytestmark = [pytest.mark.fuse, pytest.mark.root]

NOBODY = 65534
USER = 1000

_libc = ctypes.CDLL(None, use_errno=True)
_AT_FDCWD = -100


def renameat2(src, dst, flags: int) -> None:
    """``renameat2(2)`` (Python has no wrapper); raises OSError with the errno."""
    rc = _libc.renameat2(_AT_FDCWD, os.fsencode(src), _AT_FDCWD, os.fsencode(dst),
                         ctypes.c_uint(flags))
    if rc != 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e), str(src))


def as_user(uid: int, *cmd: str, gid: int | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(list(cmd), capture_output=True, text=True, user=uid,
                          group=uid if gid is None else gid, extra_groups=[], timeout=30)


@pytest.fixture
def m(tmp_path):
    need_root()
    need_fuse()
    # other users must be able to reach the mount point (pytest's tmp root is 0700)
    base = tempfile.mkdtemp(prefix="unionfs-posix-", dir="/tmp")
    os.chmod(base, 0o755)
    stack = make_stack(pathlib.Path(base))
    os.chmod(stack.lowers[-1] / "etc" / "passwd", 0o600)
    try:
        with mounted(stack) as mnt:
            yield mnt
    finally:
        shutil.rmtree(base, ignore_errors=True)


def test_other_users_get_the_permission_checks(m):
    r = as_user(NOBODY, "cat", str(m / "etc" / "passwd"))  # 0600 root
    assert r.returncode != 0 and "Permission denied" in r.stderr
    r = as_user(NOBODY, "cat", str(m / "etc" / "motd"))  # 0644
    assert r.returncode == 0 and r.stdout == "top\n"
    r = as_user(NOBODY, "touch", str(m / "etc" / "new"))  # dir 0755 root
    assert r.returncode != 0 and "Permission denied" in r.stderr
    r = as_user(NOBODY, "sh", "-c", f"echo x >> {m}/etc/motd")
    assert r.returncode != 0


def test_files_made_by_a_user_belong_to_that_user(m):
    os.mkdir(m / "home", 0o777)
    os.chmod(m / "home", 0o777)
    r = as_user(USER, "sh", "-c", f"umask 022; mkdir {m}/home/d && echo hi > {m}/home/d/f "
                                   f"&& ln -s f {m}/home/d/l && mkfifo {m}/home/d/p")
    assert r.returncode == 0, r.stderr
    for name in ("d", "d/f", "d/l", "d/p"):
        st = os.lstat(m / "home" / name)
        assert (st.st_uid, st.st_gid) == (USER, USER), name
    assert stat.S_IMODE(os.stat(m / "home" / "d" / "f").st_mode) == 0o644
    r = as_user(NOBODY, "chmod", "777", str(m / "home" / "d" / "f"))
    assert r.returncode != 0 and "not permitted" in r.stderr


def test_sticky_directory_protects_other_users_files(m):
    os.mkdir(m / "tmp")
    os.chmod(m / "tmp", 0o1777)
    r = as_user(USER, "sh", "-c", f"echo mine > {m}/tmp/owned")
    assert r.returncode == 0, r.stderr
    r = as_user(NOBODY, "rm", "-f", str(m / "tmp" / "owned"))
    assert r.returncode != 0 and "not permitted" in r.stderr
    r = as_user(NOBODY, "mv", str(m / "tmp" / "owned"), str(m / "tmp" / "stolen"))
    assert r.returncode != 0
    r = as_user(USER, "rm", str(m / "tmp" / "owned"))
    assert r.returncode == 0, r.stderr


def test_setgid_directory_passes_its_group_on(m):
    os.mkdir(m / "shared")
    os.chown(m / "shared", 0, 4242)
    os.chmod(m / "shared", 0o2777)
    r = as_user(USER, "sh", "-c", f"mkdir {m}/shared/sub && touch {m}/shared/file")
    assert r.returncode == 0, r.stderr
    assert os.stat(m / "shared" / "file").st_gid == 4242
    sub = os.stat(m / "shared" / "sub")
    assert sub.st_gid == 4242 and sub.st_mode & stat.S_ISGID
    assert os.stat(m / "shared" / "file").st_uid == USER


def test_names_over_255_bytes_and_paths_near_path_max(m):
    with pytest.raises(OSError) as e:
        open(m / ("x" * 256), "w").close()
    assert e.value.errno == errno.ENAMETOOLONG
    open(m / ("y" * 255), "w").close()
    assert os.path.exists(m / ("y" * 255))
    # build a deep path whose length through the mount is close to PATH_MAX
    budget = 4096 - len(str(m)) - 300
    parts, total = [], 0
    while total + 201 < budget:
        parts.append("d" * 200)
        total += 201
    deep = m.joinpath(*parts)
    os.makedirs(deep)
    (deep / "leaf").write_text("deep\n")
    assert (deep / "leaf").read_text() == "deep\n"
    assert len(str(deep / "leaf")) > 3600


def test_rename_noreplace_and_exchange(m):
    (m / "a").write_text("A")
    (m / "b").write_text("B")
    with pytest.raises(OSError) as e:
        renameat2(m / "a", m / "b", 1)  # RENAME_NOREPLACE
    assert e.value.errno == errno.EEXIST
    renameat2(m / "a", m / "c", 1)
    assert (m / "c").read_text() == "A" and not (m / "a").exists()
    renameat2(m / "c", m / "b", 2)  # RENAME_EXCHANGE
    assert (m / "c").read_text() == "B" and (m / "b").read_text() == "A"
    renameat2(m / "etc" / "motd", m / "b", 2)  # with a lower file: copy-up first
    assert (m / "b").read_text() == "top\n" and (m / "etc" / "motd").read_text() == "A"


def test_directory_errnos(m):
    with pytest.raises(OSError) as e:
        os.rmdir(m / "dir")
    assert e.value.errno == errno.ENOTEMPTY
    with pytest.raises(OSError) as e:
        os.rename(m / "emptydir", m / "emptydir" / "inside")
    assert e.value.errno == errno.EINVAL
    with pytest.raises(OSError) as e:
        os.mkdir(m / "etc")
    assert e.value.errno == errno.EEXIST
    with pytest.raises(OSError) as e:
        os.unlink(m / "dir")
    assert e.value.errno == errno.EISDIR
    with pytest.raises(OSError) as e:
        os.listdir(m / "etc" / "motd")
    assert e.value.errno == errno.ENOTDIR
    os.symlink("loop2", m / "loop1")
    os.symlink("loop1", m / "loop2")
    with pytest.raises(OSError) as e:
        open(m / "loop1").close()
    assert e.value.errno == errno.ELOOP


def test_inode_numbers_are_stable_through_copy_up(m):
    before = {p: os.lstat(m / p).st_ino for p in ("etc/motd", "etc", "dir", "link", "data/big")}
    (m / "etc" / "motd").write_text("changed")
    os.chmod(m / "dir", 0o700)
    os.lchown(m / "link", 0, 5)
    os.utime(m / "data" / "big", ns=(1, 2))
    after = {p: os.lstat(m / p).st_ino for p in before}
    assert after == before
    seen = [os.lstat(os.path.join(d, n)).st_ino
            for d, ds, fs in os.walk(m) for n in ds + fs]
    assert len(seen) == len(set(seen)) + 1  # only hl1/hl2 share an inode
    names = {e.name: e.inode() for e in os.scandir(m / "etc")}
    assert names["motd"] == before["etc/motd"]  # readdir's d_ino matches stat


def test_link_counts_of_hard_links_of_every_type(m):
    assert os.lstat(m / "data" / "hl1").st_nlink == 2
    (m / "f").write_text("x")
    os.link(m / "f", m / "f2")
    os.link(m / "f", m / "f3")
    assert [os.lstat(m / n).st_nlink for n in ("f", "f2", "f3")] == [3, 3, 3]
    os.unlink(m / "f2")
    assert [os.lstat(m / n).st_nlink for n in ("f", "f3")] == [2, 2]
    os.mkfifo(m / "fifo")
    os.link(m / "fifo", m / "fifo2")
    assert os.lstat(m / "fifo").st_nlink == 2 and os.lstat(m / "fifo2").st_nlink == 2
    os.symlink("target", m / "sym")
    os.link(m / "sym", m / "sym2", follow_symlinks=False)
    assert os.lstat(m / "sym").st_nlink == 2 and os.readlink(m / "sym2") == "target"
    assert os.lstat(m / "dir").st_nlink == 1  # a merged directory, as the kernel says
    os.mkdir(m / "newdir")
    os.mkdir(m / "newdir" / "sub")
    assert os.lstat(m / "newdir").st_nlink == 3
    # writing through one name is seen through the other (same file, upper)
    with open(m / "f3", "a") as f:
        f.write("yz")
    assert (m / "f").read_text() == "xyz"
    assert os.lstat(m / "f").st_size == 3


def test_hard_links_seen_one_at_a_time_stay_in_step(tmp_path):
    # names of a hard-linked file reach the daemon one lookup at a time: the first alone
    # (its other link may be outside the mount), then the second; a directory holding both
    # is renamed; a write through one name must still reach the kernel's view of the other
    need_root()
    need_fuse()
    stack = make_stack(tmp_path)
    (stack.upper / "x").mkdir()
    (stack.upper / "x" / "a").write_bytes(b"1234")
    os.link(stack.upper / "x" / "a", stack.upper / "x" / "b")
    (stack.upper / "x" / "c").write_bytes(b"12")
    os.link(stack.upper / "x" / "c", tmp_path / "outside")  # (its other name: not mounted)
    with mounted(stack) as mnt:
        assert os.lstat(mnt / "x" / "a").st_size == 4  # one name known
        assert os.lstat(mnt / "x" / "c").st_nlink == 2
        assert os.lstat(mnt / "x" / "b").st_size == 4  # both now
        os.rename(mnt / "x", mnt / "y")
        with open(mnt / "y" / "a", "ab") as f:
            f.write(b"5678")
        assert os.lstat(mnt / "y" / "b").st_size == 8
        assert (mnt / "y" / "b").read_bytes() == b"12345678"
        with open(mnt / "y" / "c", "ab") as f:
            f.write(b"3")
        assert os.lstat(mnt / "y" / "c").st_size == 3
        os.unlink(mnt / "y" / "a")
        with open(mnt / "y" / "b", "ab") as f:
            f.write(b"9")
        assert os.lstat(mnt / "y" / "b").st_size == 9 and os.lstat(mnt / "y" / "b").st_nlink == 1
    assert (stack.upper / "y" / "b").read_bytes() == b"123456789"
    assert (tmp_path / "outside").read_bytes() == b"123"


def test_unlinked_open_file_keeps_working_with_no_links(m):
    fd = os.open(m / "etc" / "motd", os.O_RDWR)  # a lower file: copied up on open
    try:
        os.unlink(m / "etc" / "motd")
        assert not (m / "etc" / "motd").exists()
        st = os.fstat(fd)
        assert st.st_nlink == 0
        os.pwrite(fd, b"TOP", 0)
        assert os.pread(fd, 4, 0) == b"TOP\n"
        os.ftruncate(fd, 2)
        os.fchmod(fd, 0o600)
        assert os.fstat(fd).st_size == 2
        assert stat.S_IMODE(os.fstat(fd).st_mode) == 0o600
    finally:
        os.close(fd)
    assert not [n for n in os.listdir(m / "etc") if n.startswith(".fuse_hidden")]


def test_xattrs_and_statfs(m):
    os.setxattr(m / "etc" / "motd", "user.colour", b"blue")
    assert os.getxattr(m / "etc" / "motd", "user.colour") == b"blue"
    assert "user.colour" in os.listxattr(m / "etc" / "motd")
    with pytest.raises(OSError) as e:
        os.setxattr(m / "etc" / "motd", "user.colour", b"red", os.XATTR_CREATE)
    assert e.value.errno == errno.EEXIST
    os.removexattr(m / "etc" / "motd", "user.colour")
    with pytest.raises(OSError) as e:
        os.getxattr(m / "etc" / "motd", "user.colour")
    assert e.value.errno == errno.ENODATA
    assert not [n for n in os.listxattr(m / "dir") if n.startswith(("trusted.overlay",
                                                                     "user.unionfs"))]
    sv = os.statvfs(m)
    assert sv.f_namemax == 255 and sv.f_blocks > 0


def test_utimens_nanoseconds_and_omit(m):
    os.utime(m / "etc" / "motd", ns=(1_111_111_111_222_333_444, 1_500_000_000_987_654_321))
    st = os.stat(m / "etc" / "motd")
    assert (st.st_atime_ns, st.st_mtime_ns) == (1_111_111_111_222_333_444,
                                                1_500_000_000_987_654_321)
    r = subprocess.run(["touch", "-a", "-d", "@1000", str(m / "etc" / "motd")])
    assert r.returncode == 0
    st = os.stat(m / "etc" / "motd")  # mtime kept (UTIME_OMIT)
    assert (st.st_atime_ns, st.st_mtime_ns) == (1000 * 10**9, 1_500_000_000_987_654_321)
