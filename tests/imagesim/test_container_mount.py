"""``mount_view``: a container's view served through FUSE by ``unionfs.mount.mount_object``
(real mounts; needs /dev/fuse)."""

from __future__ import annotations

import os

import pytest
from test_container import make_image

from imagesim.container import ContainerError, ContainerStore, CreateOptions, mount_view
from imagesim.store import Store
from tests.conftest import need_fuse
from unionfs import mount as _m


@pytest.fixture()
def cs(tmp_path):
    need_fuse()
    store = Store(tmp_path / "root", fsync=False)
    make_image(store, tmp_path)
    return ContainerStore(store)


def test_mount_serves_the_view_and_is_recorded(cs, tmp_path):
    host = tmp_path / "host"
    c = cs.create("base:1", CreateOptions(name="m1", volumes=(f"{host}:/data",)))
    mp = tmp_path / "mnt"
    mp.mkdir()
    pid = mount_view(c, str(mp))
    try:
        assert pid > 0 and os.path.ismount(mp)
        assert (mp / "etc" / "os-release").read_bytes() == b"NAME=TestOS\n"
        (mp / "etc" / "motd").write_text("hi\n")
        (mp / "data" / "v.txt").write_text("volume\n")          # the bind mount, inside
        assert (host / "v.txt").read_text() == "volume\n"
        again = cs.get("m1")
        assert again.mounted_at() == str(mp)
        # while mounted, the container's own view goes through the mount
        assert again.view.open("/etc/motd").read() == b"hi\n"
        assert [str(x) for x in again.diff()] == ["C /etc", "A /etc/motd"]  # no volume data
        with pytest.raises(ContainerError, match="already mounted"):
            mount_view(again, str(mp))
    finally:
        _m.umount(str(mp))
    assert not os.path.ismount(mp)
    cs.unmounted(str(mp))
    assert cs.get("m1").mounted_at() is None
    assert cs.get("m1").view.open("/etc/motd").read() == b"hi\n"  # kept in the upper layer


def test_mount_point_must_be_a_directory(cs, tmp_path):
    c = cs.create("base:1")
    (tmp_path / "file").write_text("x")
    with pytest.raises(ContainerError, match="is not a directory"):
        mount_view(c, str(tmp_path / "file"))
    with pytest.raises(ContainerError, match="is not a directory"):
        mount_view(c, str(tmp_path / "missing"))
    assert cs.get(c.id).mounted_at() is None
