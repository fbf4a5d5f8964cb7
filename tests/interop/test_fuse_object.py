"""``mount_object``: a daemon that builds its filesystem object after the fork and serves it;
live on return, unmounted by ``umount``, errors from ``build`` come back as ``MountError``."""

from __future__ import annotations

import errno
import os

import pytest

from tests.conftest import need_fuse, need_root
from tests.interop.fuse_helpers import force_unmount, in_mounts, process_gone

pytestmark = [pytest.mark.fuse, pytest.mark.root]


@pytest.fixture
def dirs(tmp_path):
    need_root()
    need_fuse()
    lower, upper, work, mnt = (tmp_path / n for n in ("lower", "upper", "work", "mnt"))
    for p in (lower, upper, work, mnt):
        p.mkdir()
    (lower / "etc").mkdir()
    (lower / "etc" / "motd").write_text("lower\n")
    yield lower, upper, work, mnt
    force_unmount(mnt)


def _union(lower, upper, work):
    from unionfs.layer import DirLayer
    from unionfs.union import UnionFS

    return UnionFS(lowers=[DirLayer(str(lower))],
                   upper=DirLayer(str(upper), writable=True, workdir=str(work)),
                   workdir=str(work), umask=0)


def test_mount_object_serves_what_build_returns_and_umount_ends_it(dirs):
    from unionfs.mount import mount_object, umount

    lower, upper, work, mnt = dirs
    built_in = []

    def build():
        built_in.append(os.getpid())  # only the daemon's copy of this list sees it
        return _union(lower, upper, work)

    pid = mount_object(build, str(mnt), fsname="objtest")
    try:
        assert built_in == []  # build() ran in the daemon, not here
        assert pid != os.getpid()
        os.kill(pid, 0)  # the daemon is alive (ProcessLookupError otherwise)
        (line,) = in_mounts(mnt)
        assert line.split()[:3] == ["objtest", str(mnt), "fuse.unionfs"]
        assert (mnt / "etc" / "motd").read_text() == "lower\n"
        (mnt / "etc" / "motd").write_text("changed\n")
        assert (upper / "etc" / "motd").read_text() == "changed\n"
        assert (lower / "etc" / "motd").read_text() == "lower\n"
    finally:
        umount(str(mnt))
    assert in_mounts(mnt) == []
    assert process_gone(pid)


def test_mount_object_read_only_refuses_writes_with_erofs(dirs):
    from unionfs.mount import mount_object, umount

    lower, upper, work, mnt = dirs
    mount_object(lambda: _union(lower, upper, work), str(mnt), read_only=True)
    try:
        assert (mnt / "etc" / "motd").read_text() == "lower\n"
        with pytest.raises(OSError) as e:
            (mnt / "new").write_text("x")
        assert e.value.errno == errno.EROFS
    finally:
        umount(str(mnt))
    assert os.listdir(upper) == []


def test_mount_object_serves_a_mount_table(dirs, tmp_path):
    from unionfs.mount import mount_object, umount
    from unionfs.mounts import HostFS, MountTable

    lower, upper, work, mnt = dirs
    vol = tmp_path / "vol"
    vol.mkdir()
    (vol / "data").write_text("volume\n")
    (lower / "srv").mkdir()

    def build():
        return MountTable(_union(lower, upper, work), [("/srv", HostFS(str(vol)))])

    mount_object(build, str(mnt))
    try:
        assert sorted(os.listdir(mnt / "srv")) == ["data"]
        (vol / "from-host").write_text("h")  # a volume changes under the host's hands:
        assert sorted(os.listdir(mnt / "srv")) == ["data", "from-host"]  # never cached
        assert (mnt / "srv" / "data").read_text() == "volume\n"
        (mnt / "srv" / "more").write_text("x")
        assert (vol / "more").read_text() == "x"
        with pytest.raises(OSError) as e:
            os.rename(mnt / "srv" / "more", mnt / "etc" / "more")
        assert e.value.errno == errno.EXDEV
    finally:
        umount(str(mnt))


def test_an_error_in_build_is_a_mount_error_and_nothing_is_mounted(dirs):
    from unionfs.mount import MountError, mount_object

    *_, mnt = dirs

    def build():
        raise FileNotFoundError(errno.ENOENT, "No such layer", "/nowhere")

    with pytest.raises(MountError) as e:
        mount_object(build, str(mnt), timeout=20)
    assert "No such layer" in str(e.value)
    assert in_mounts(mnt) == []


def test_a_missing_mount_point_is_refused_before_forking(tmp_path):
    from unionfs.mount import MountError, mount_object

    with pytest.raises(MountError) as e:
        mount_object(lambda: None, str(tmp_path / "absent"))
    assert "not a directory" in str(e.value)
