"""-v spec parsing as docker parses it, the volume store (records in the store's state),
in-use checks, prune, pre-fill and --volumes-from precedence."""

from __future__ import annotations

import os

import pytest

from imagesim.errors import Conflict
from imagesim.store import Store
from imagesim.volumes import (
    ANONYMOUS_LABEL,
    MountPoint,
    VolumeNotFound,
    VolumeSpec,
    VolumeSpecInvalid,
    VolumeStore,
    parse_volume_spec,
    parse_volumes_from,
    prefill,
    resolve_mounts,
)


@pytest.mark.parametrize(("spec", "expected"), [
    ("/tmp/host_data:/tmp/docker_data", VolumeSpec("bind", "/tmp/host_data", "/tmp/docker_data")),
    ("/h:/c:ro", VolumeSpec("bind", "/h", "/c", "ro")),
    ("/h:/c:rw,z", VolumeSpec("bind", "/h", "/c", "rw,z")),
    ("/zzyyuse/myregistry/:/tmp/registry",
     VolumeSpec("bind", "/zzyyuse/myregistry", "/tmp/registry")),
    ("/app/redis/redis.conf:/etc/redis/redis.conf",
     VolumeSpec("bind", "/app/redis/redis.conf", "/etc/redis/redis.conf")),
    ("mydata:/var/lib/mysql", VolumeSpec("volume", "mydata", "/var/lib/mysql")),
    ("my.data-1:/d:ro,nocopy", VolumeSpec("volume", "my.data-1", "/d", "ro,nocopy")),
    ("/data", VolumeSpec("volume", "", "/data")),
    ("/data:ro", VolumeSpec("volume", "", "/data", "ro")),
])
def test_parse_volume_spec(spec, expected):
    assert parse_volume_spec(spec) == expected


def test_parse_relative_bind_is_made_absolute(tmp_path):
    assert parse_volume_spec("./conf:/c", cwd=str(tmp_path)) == VolumeSpec(
        "bind", str(tmp_path / "conf"), "/c")


@pytest.mark.parametrize(("spec", "message"), [
    ("", "empty"),
    ("rel:path", "must be absolute"),
    ("/h:/", "destination can't be '/'"),
    ("/h:/c:bogus", "invalid mode: bogus"),
    ("/h:/c:ro,rw", "invalid mode"),
    ("a:b:c:d", "invalid volume specification"),
    ("bad name!:/d", "includes invalid characters"),
])
def test_parse_volume_spec_rejects(spec, message):
    with pytest.raises(VolumeSpecInvalid, match=message):
        parse_volume_spec(spec)


def test_parse_volumes_from():
    assert parse_volumes_from("u1") == ("u1", "")
    assert parse_volumes_from("u1:ro") == ("u1", "ro")
    with pytest.raises(VolumeSpecInvalid):
        parse_volumes_from("u1:xx")


@pytest.fixture()
def vs(tmp_path):
    users: dict[str, list[str]] = {}
    store = Store(tmp_path / "root", fsync=False)
    v = VolumeStore(store, users=lambda name: users.get(name, []))
    v.test_users = users  # type: ignore[attr-defined]
    return v


def test_volume_store_create_get_list_remove(vs, tmp_path):
    a = vs.create("data1", labels={"k": "v"})
    assert a.mountpoint == str(tmp_path / "root" / "volumes" / "data1" / "_data")
    assert os.path.isdir(a.mountpoint)
    assert vs.create("data1").created == a.created  # idempotent, as docker
    anon = vs.create(anonymous=True)
    assert len(anon.name) == 64 and anon.labels == {ANONYMOUS_LABEL: ""}
    # a second VolumeStore over the same store (another process) sees both
    other = VolumeStore(Store(tmp_path / "root", fsync=False))
    assert [v.name for v in other.list()] == sorted(["data1", anon.name])
    d = a.to_docker()
    assert list(d) == ["CreatedAt", "Driver", "Labels", "Mountpoint", "Name", "Options",
                       "Scope"]
    assert d["Labels"] == {"k": "v"} and d["Scope"] == "local"
    with open(os.path.join(a.mountpoint, "f"), "w") as f:
        f.write("x")
    vs.test_users["data1"] = ["c" * 64]
    with pytest.raises(Conflict, match=r"volume is in use - \[c{64}\]"):
        vs.remove("data1")
    assert os.path.exists(os.path.join(a.mountpoint, "f"))  # nothing lost
    vs.test_users.clear()
    vs.remove("data1")
    assert not os.path.exists(a.mountpoint)
    with pytest.raises(VolumeNotFound, match="no such volume"):
        vs.get("data1")
    with pytest.raises(VolumeNotFound):
        vs.remove("data1")
    vs.remove("data1", force=True)


def test_prune_takes_unused_anonymous_only_unless_all(vs):
    vs.create("named")
    a1 = vs.create(anonymous=True)
    a2 = vs.create(anonymous=True)
    with open(os.path.join(a1.mountpoint, "blob"), "wb") as f:
        f.write(b"x" * 1000)
    vs.test_users[a2.name] = ["c1"]
    removed, reclaimed = vs.prune()
    assert removed == [a1.name] and reclaimed == 1000
    assert {v.name for v in vs.list()} == {"named", a2.name}
    removed, _ = vs.prune(all_volumes=True)
    assert removed == ["named"]


def test_resolve_mounts_precedence_and_creation(vs, tmp_path):
    inherited = [MountPoint("bind", "/h1", "/shared", "", True),
                 MountPoint("bind", "/h2", "/other", "", True)]
    specs = [parse_volume_spec(f"{tmp_path}/newdir:/other:ro"), parse_volume_spec("nv:/nv")]
    mounts = resolve_mounts(vs, specs, [(inherited, "ro")], ["/data", "/nv"])
    by = {m.destination: m for m in mounts}
    assert by["/shared"].rw is False and by["/shared"].mode == "ro"   # volumes-from :ro
    assert by["/other"].source == f"{tmp_path}/newdir" and by["/other"].rw is False
    assert os.path.isdir(tmp_path / "newdir")                        # created, as docker
    assert by["/nv"].name == "nv" and vs.exists("nv")                 # -v wins over VOLUME
    assert by["/data"].anonymous and len(by["/data"].name) == 64      # image VOLUME


def test_prefill_only_empty_volumes(vs, tmp_path):
    from unionfs.mounts import HostFS

    image = tmp_path / "image"
    (image / "var" / "lib" / "mysql" / "sub").mkdir(parents=True)
    (image / "var" / "lib" / "mysql" / "sub" / "ibdata").write_text("seed")
    fs = HostFS(image)
    vol = vs.create("db")
    m = MountPoint("volume", vol.mountpoint, "/var/lib/mysql", "", True, "db")
    assert prefill(m, fs) is True
    with open(os.path.join(vol.mountpoint, "sub", "ibdata")) as f:
        assert f.read() == "seed"
    with open(os.path.join(vol.mountpoint, "sub", "ibdata"), "w") as f:
        f.write("changed")
    assert prefill(m, fs) is False  # not empty any more: left alone
    with open(os.path.join(vol.mountpoint, "sub", "ibdata")) as f:
        assert f.read() == "changed"
    nocopy = MountPoint("volume", vs.create("nc").mountpoint, "/var/lib/mysql", "nocopy",
                        True, "nc")
    assert prefill(nocopy, fs) is False and os.listdir(nocopy.source) == []
    bind = MountPoint("bind", str(tmp_path / "empty"), "/var/lib/mysql")
    os.mkdir(bind.source)
    assert prefill(bind, fs) is False and os.listdir(bind.source) == []
