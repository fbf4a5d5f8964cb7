"""Containers on a real store: the writable layer, diff, commit, volumes in the view,
state across ContainerStore instances (as across processes)."""

from __future__ import annotations

import errno
import io
import os
import tarfile

import pytest

from imagesim import layers as _layers
from imagesim.container import (
    ContainerError,
    ContainerStore,
    CreateOptions,
    apply_changes,
    ellipsis,
    parse_port,
)
from imagesim.errors import Conflict, ContainerNotFound
from imagesim.image import ChangeInvalid, Image
from imagesim.store import Store
from imagesim.units import human_duration, human_size


def _write(root, rel, data, mode=0o644):
    path = os.path.join(root, rel.lstrip("/"))
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)
    os.chmod(path, mode)


def _read(path) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def _tar_names(blob: bytes) -> list[str]:
    with tarfile.open(fileobj=io.BytesIO(blob)) as tar:
        return tar.getnames()


def make_image(store: Store, tmp_path, tag: str = "base:1", *, volumes=None,
               extra_layer: dict[str, bytes] | None = None) -> Image:
    """A two-layer image: a distro-like base and a layer holding an app."""
    base = tmp_path / f"layer-base-{tag.replace(':', '-').replace('/', '-')}"
    _write(base, "/etc/os-release", b"NAME=TestOS\n")
    _write(base, "/etc/hosts", b"127.0.0.1 localhost\n")
    _write(base, "/bin/sh", b"#!stand-in\n", 0o755)
    _write(base, "/var/lib/dpkg/status", b"Package: base-files\nStatus: install ok\n\n")
    _write(base, "/data/seed.txt", b"from the image\n")
    os.makedirs(base / "tmp", exist_ok=True)
    os.makedirs(base / "usr" / "bin", exist_ok=True)
    app = tmp_path / f"layer-app-{tag.replace(':', '-').replace('/', '-')}"
    _write(app, "/app/webapps.dist/ROOT/index.html", b"<h1>It works</h1>\n")
    os.makedirs(app / "app" / "webapps", exist_ok=True)
    for rel, data in (extra_layer or {}).items():
        _write(app, rel, data)
    img = Image.new(config={"Env": ["PATH=/usr/bin:/bin"], "Cmd": ["/bin/sh"],
                            "Volumes": volumes})
    for d in (base, app):
        res = _layers.pack_to_blobs(str(d), store.blobs)
        img = img.append_layer(res.descriptor(), res.diff_id, created_by=f"ADD {d.name}")
    return store.put_image(img, [tag])


@pytest.fixture()
def env(tmp_path):
    store = Store(tmp_path / "root", fsync=False)
    image = make_image(store, tmp_path)
    return ContainerStore(store), image, tmp_path


def test_create_records_and_persists(env):
    cs, image, _ = env
    c = cs.create("base:1", CreateOptions(name="web", env=("A=1",), ports=("8080:80",)))
    assert len(c.id) == 64 and c.short_id == c.id[:12]
    assert c.status == "created"
    again = ContainerStore(cs.store).get("web")  # a fresh instance reads the same record
    assert again.id == c.id and again.image_id == str(image.id)
    assert again.env["A"] == "1" and again.env["PATH"] == "/usr/bin:/bin"
    assert ContainerStore(cs.store).get(c.id[:5]).id == c.id
    assert [str(p) for p in again.ports] == ["0.0.0.0:8080->80/tcp"]
    assert os.path.isdir(os.path.join(c.directory, "upper"))
    assert cs.store.pins()[c.id] == [image.digest]


def test_names_unique_and_random(env):
    cs, _, _ = env
    cs.create("base:1", CreateOptions(name="u1"))
    with pytest.raises(Conflict, match='name "/u1" is already in use'):
        cs.create("base:1", CreateOptions(name="u1"))
    anon = cs.create("base:1")
    assert "_" in anon.name and anon.name != "u1"
    with pytest.raises(ContainerNotFound):
        cs.get("nope")
    with pytest.raises(ContainerError):
        cs.create("base:1", CreateOptions(name="bad name"))


def test_write_copies_up_and_diff_reads_only_the_upper(env):
    cs, _, _ = env
    c = cs.create("base:1")
    lower_before = {d: sorted(os.listdir(d)) for d in c.lower_dirs}
    with c.fs.open("/etc/hosts", "ab") as f:
        f.write(b"10.0.0.1 db\n")
    c.fs.unlink("/etc/os-release")
    c.fs.mkdir("/srv")
    with c.fs.open("/srv/new.txt", "wb") as f:
        f.write(b"hello")
    assert [str(x) for x in c.diff()] == [
        "C /etc", "C /etc/hosts", "D /etc/os-release", "A /srv", "A /srv/new.txt"]
    # the image layers are untouched
    assert {d: sorted(os.listdir(d)) for d in c.lower_dirs} == lower_before
    base_hosts = [os.path.join(d, "etc", "hosts") for d in c.lower_dirs
                  if os.path.exists(os.path.join(d, "etc", "hosts"))]
    assert _read(base_hosts[0]) == b"127.0.0.1 localhost\n"
    # a second container from the same image sees the original
    other = cs.create("base:1")
    assert other.fs.open("/etc/hosts").read() == b"127.0.0.1 localhost\n"
    assert other.diff() == []


def test_diff_is_sorted_by_path(env):
    cs, _, _ = env
    c = cs.create("base:1")
    c.fs.mkdir("/zz")
    c.fs.mkdir("/aa")
    lines = [str(x) for x in c.diff()]
    assert lines == sorted(lines, key=lambda s: s[2:])
    assert lines == ["A /aa", "A /zz"]


def test_commit_adds_one_layer_and_reuses_the_base(env):
    cs, image, _ = env
    c = cs.create("base:1")
    c.fs.makedirs("/usr/bin", exist_ok=True)
    with c.fs.open("/usr/bin/vim", "wb") as f:
        f.write(b"#!/bin/sh\necho vim\n")
    c.fs.unlink("/etc/os-release")
    new = c.commit("me/vim:1.3", author="zzyy", message="vim cmd add ok")
    assert list(new.diff_ids[:-1]) == list(image.diff_ids)
    assert [d.digest for d in new.layers[:-1]] == [d.digest for d in image.layers]
    assert len(new.history) == len(image.history) + 1
    row = new.history[-1]
    assert row["author"] == "zzyy" and row["comment"] == "vim cmd add ok"
    assert cs.store.resolve("me/vim:1.3").id == new.id
    # a container of the new image has the file, and not the deleted one
    c2 = cs.create("me/vim:1.3")
    assert c2.fs.open("/usr/bin/vim").read() == b"#!/bin/sh\necho vim\n"
    assert not c2.fs.exists("/etc/os-release")
    assert c2.diff() == []
    # the committed layer holds the whiteout in OCI form
    blob = cs.store.blobs.get(new.layers[-1].digest)
    names = _tar_names(blob)
    assert "etc/.wh.os-release" in names and "usr/bin/vim" in names


def test_commit_changes_and_config(env):
    cs, _, _ = env
    c = cs.create("base:1", CreateOptions(env=("X=1",)))
    new = c.commit(None, changes=["ENV DEBUG=true", 'CMD ["catalina.sh", "run"]',
                                  "EXPOSE 8080", "LABEL a=b", "WORKDIR /app", "USER nobody",
                                  "VOLUME /data", "ENTRYPOINT /entry.sh"])
    cfg = new.runtime_config
    assert "DEBUG=true" in cfg["Env"] and "X=1" in cfg["Env"]
    assert cfg["Cmd"] == ["catalina.sh", "run"]
    assert cfg["ExposedPorts"] == {"8080/tcp": {}}
    assert cfg["Labels"]["a"] == "b"
    assert cfg["WorkingDir"] == "/app" and cfg["User"] == "nobody"
    assert cfg["Volumes"] == {"/data": {}}
    assert cfg["Entrypoint"] == ["/bin/sh", "-c", "/entry.sh"]
    with pytest.raises(ChangeInvalid, match="run is not a valid change command"):
        apply_changes({}, ["RUN apt-get update"])


def test_bind_mounts_in_the_view(env):
    cs, _, tmp = env
    host = tmp / "host_data"
    conf = tmp / "redis.conf"
    conf.write_text("appendonly yes\n")
    c = cs.create("base:1", CreateOptions(volumes=(f"{host}:/tmp/docker_data",
                                                   f"{conf}:/etc/redis/redis.conf",
                                                   f"{tmp / 'ro'}:/ro:ro")))
    assert host.is_dir()  # created, as docker does
    v = c.view
    with v.open("/tmp/docker_data/inside.txt", "wb") as f:
        f.write(b"from the container")
    assert (host / "inside.txt").read_bytes() == b"from the container"
    (host / "outside.txt").write_text("from the host")
    assert v.open("/tmp/docker_data/outside.txt").read() == b"from the host"
    assert v.open("/etc/redis/redis.conf").read() == b"appendonly yes\n"
    conf.write_text("appendonly no\n")
    assert v.open("/etc/redis/redis.conf").read() == b"appendonly no\n"
    with pytest.raises(OSError) as e:
        v.open("/ro/x", "wb")
    assert e.value.errno == errno.EROFS
    # volume contents never reach diff or commit
    lines = [str(x) for x in c.diff()]
    assert not any("inside.txt" in s or "outside.txt" in s for s in lines)
    new = c.commit(None)
    names = _tar_names(cs.store.blobs.get(new.layers[-1].digest))
    assert not any("inside.txt" in n for n in names)


def test_named_volume_prefilled_and_survives_rm(env):
    cs, _, _ = env
    c = cs.create("base:1", CreateOptions(volumes=("mydata:/data",)))
    vol = cs.volumes.get("mydata")
    assert _read(os.path.join(vol.mountpoint, "seed.txt")) == b"from the image\n"
    with c.view.open("/data/db.bin", "wb") as f:
        f.write(b"rows")
    with pytest.raises(Conflict, match="volume is in use"):
        cs.volumes.remove("mydata")
    cs.remove(c.id, volumes=True)
    assert os.path.exists(os.path.join(vol.mountpoint, "db.bin"))  # named: kept by rm -v
    c2 = cs.create("base:1", CreateOptions(volumes=("mydata:/data",)))
    assert c2.view.open("/data/db.bin").read() == b"rows"


def test_image_volume_gets_anonymous_volume_removed_by_rm_v(env, tmp_path):
    cs, _, _ = env
    make_image(cs.store, tmp_path, "withvol:1", volumes={"/data": {}})
    c = cs.create("withvol:1")
    (m,) = c.mounts
    assert m.type == "volume" and m.anonymous and len(m.name) == 64
    assert os.path.exists(os.path.join(m.source, "seed.txt"))  # pre-filled from the image
    cs.remove(c.id, volumes=True)
    assert not cs.volumes.exists(m.name)


def test_volumes_from_and_ro(env):
    cs, _, tmp = env
    host = tmp / "shared"
    u1 = cs.create("base:1", CreateOptions(name="u1", volumes=(f"{host}:/shared",)))
    u2 = cs.create("base:1", CreateOptions(name="u2", volumes_from=("u1",)))
    u3 = cs.create("base:1", CreateOptions(name="u3", volumes_from=("u1:ro",)))
    with u1.view.open("/shared/a", "wb") as f:
        f.write(b"1")
    assert u2.view.open("/shared/a").read() == b"1"
    with u2.view.open("/shared/b", "wb") as f:
        f.write(b"2")
    assert (host / "b").read_bytes() == b"2"
    with pytest.raises(OSError) as e:
        u3.view.open("/shared/c", "wb")
    assert e.value.errno == errno.EROFS
    assert u3.inspect()["Mounts"][0]["RW"] is False


def test_lifecycle_and_remove_running(env):
    cs, _, _ = env
    c = cs.create("base:1", CreateOptions(name="r1"))
    c.start()
    assert cs.get("r1").running and cs.get("r1").status_text().startswith("Up ")
    with pytest.raises(Conflict, match="cannot remove a running container"):
        cs.remove("r1")
    cs.get("r1").stop()
    assert cs.get("r1").status_text().startswith("Exited (0) ")
    cs.remove("r1")
    with pytest.raises(ContainerNotFound):
        cs.get("r1")
    assert c.id not in cs.store.pins()
    assert not os.path.exists(c.directory)


def test_read_only_root(env):
    cs, _, _ = env
    c = cs.create("base:1", CreateOptions(read_only=True))
    with pytest.raises(OSError) as e:
        c.view.open("/etc/hosts", "ab")
    assert e.value.errno == errno.EROFS


def test_inspect_shape(env):
    cs, image, tmp = env
    c = cs.create("base:1", CreateOptions(name="i1", volumes=(f"{tmp}/h:/h",),
                                          privileged=True))
    d = c.inspect()
    assert d["Id"] == c.id and d["Name"] == "/i1" and d["Image"] == str(image.id)
    assert d["HostConfig"]["Privileged"] is True
    assert d["Mounts"] == [{"Type": "bind", "Source": f"{tmp}/h", "Destination": "/h",
                            "Mode": "", "RW": True, "Propagation": "rprivate"}]
    gd = d["GraphDriver"]["Data"]
    assert gd["UpperDir"].endswith("/upper") and gd["LowerDir"].split(":") == c.lower_dirs


def test_formatting_helpers():
    assert human_size(12) == "12B"
    assert human_size(77_800_000) == "77.8MB"
    assert human_size(1090) == "1.09kB"
    assert human_duration(0.2) == "Less than a second"
    assert human_duration(1) == "1 second"
    assert human_duration(75) == "About a minute"
    assert human_duration(600) == "10 minutes"
    assert human_duration(3600) == "About an hour"
    assert human_duration(3 * 86400) == "3 days"
    assert ellipsis("docker-entrypoint.sh mysqld", 20) == "docker-entrypoint.s…"
    p = parse_port("5000:5000")
    assert str(p) == "0.0.0.0:5000->5000/tcp"
    assert str(parse_port("127.0.0.1:8080:80/udp")) == "127.0.0.1:8080->80/udp"
    assert parse_port("80").host_port > 0
    with pytest.raises(ContainerError):
        parse_port("abc:80")


def test_probing_diff_equals_the_engine_diff(env):
    from unionfs.diff import changes

    cs, _, _ = env
    c = cs.create("base:1")
    fs = c.fs
    fs.unlink("/app/webapps.dist/ROOT/index.html")
    fs.rmdir("/app/webapps.dist/ROOT")
    fs.rmdir("/app/webapps")
    fs.mkdir("/app/webapps")                     # opaque over the lower directory
    with fs.open("/app/webapps/new", "wb") as f:
        f.write(b"n")
    fs.chmod("/etc/hosts", 0o600)                # metadata-only change
    fs.makedirs("/a/b/c")
    fs.symlink("/etc/hosts", "/a/link")
    fs.unlink("/bin/sh")
    expected = sorted(changes(fs))
    assert c.diff() == expected
    assert ContainerStore(cs.store).get(c.id).diff() == expected  # from a fresh process view
    assert [str(x) for x in expected][:3] == ["A /a", "A /a/b", "A /a/b/c"]


def test_failed_create_leaves_nothing(env):
    cs, _, tmp = env
    with pytest.raises(OSError) as e:
        cs.create("base:1", CreateOptions(name="bad1", volumes=(f"{tmp}/h:/etc/hosts/sub",)))
    assert e.value.errno == errno.ENOTDIR
    assert cs.list(all=True) == []
    assert cs.store.pins() == {}
    assert [n for n in os.listdir(cs.root) if not n.startswith(".")] == []


def test_upper_dir_mounts_under_kernel_overlayfs(env, tmp_path):
    """The container's directories are overlayfs's own format: the kernel mounts them and
    shows what the engine shows."""
    import subprocess

    from tests.conftest import need_kernel_overlay

    need_kernel_overlay()
    cs, _, _ = env
    c = cs.create("base:1")
    with c.fs.open("/etc/hosts", "ab") as f:
        f.write(b"10.0.0.9 k\n")
    c.fs.unlink("/etc/os-release")
    c.fs.rmdir("/app/webapps")
    c.fs.mkdir("/app/webapps")
    mnt = tmp_path / "merged"
    mnt.mkdir()
    work = tmp_path / "kwork"
    work.mkdir()
    opts = f"lowerdir={':'.join(c.lower_dirs)},upperdir={c.upper_dir},workdir={work}"
    subprocess.run(["mount", "-t", "overlay", "overlay", "-o", opts, str(mnt)], check=True)
    try:
        assert (mnt / "etc" / "hosts").read_bytes() == c.fs.open("/etc/hosts").read()
        assert not (mnt / "etc" / "os-release").exists()
        assert sorted(os.listdir(mnt / "etc")) == sorted(c.fs.listdir("/etc"))
        assert os.listdir(mnt / "app" / "webapps") == []
    finally:
        subprocess.run(["umount", str(mnt)], check=True)
