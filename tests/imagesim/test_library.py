"""The built-in library: deterministic, shared bases, what the lesson needs, docker's pull
lines."""

from __future__ import annotations

import io
import os
import stat
import subprocess
import sys

import pytest

from imagesim import library
from imagesim.errors import ImageNotFound, ManifestUnknown, NameUnknown
from imagesim.store import Store
from unionfs.union import UnionFS


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Store:
    s = Store(tmp_path_factory.mktemp("lib") / "root", fsync=False)
    library.load_all(s, io.StringIO())
    return s


def _view(store: Store, ref: str) -> UnionFS:
    return UnionFS(lowers=store.lower_layers(ref))


def test_digests_are_the_same_in_another_process():
    code = ("from imagesim import library; "
            "print(' '.join(str(li.image.digest) for li in library.all_images()))")
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True,
                         text=True, env={**os.environ, "PYTHONHASHSEED": "123"}).stdout
    assert out.split() == [str(li.image.digest) for li in library.all_images()]


def test_every_image_says_it_is_a_simulation():
    for li in library.all_images():
        assert li.image.runtime_config["Labels"][library.SIM_LABEL] == "true"
        assert all("simulated" in row.get("comment", "") for row in li.image.history)
        assert len(li.image.history) >= 2


def test_images_share_the_ubuntu_base_layers():
    ubuntu = library.lookup("ubuntu").image
    for name in ("tomcat", "mysql:5.7", "redis:6.0.8", "billygoo/tomcat8-jdk8"):
        img = library.lookup(name).image
        assert img.diff_ids[:3] == ubuntu.diff_ids, name
        assert len(img.diff_ids) > 3
    assert library.lookup("registry").image.diff_ids[0] == \
        library.lookup("alpine").image.diff_ids[0]


def test_ubuntu_has_a_shell_and_a_package_database(store):
    fs = _view(store, "ubuntu")
    assert stat.S_ISREG(fs.lstat("/bin/bash").st_mode)
    assert fs.lstat("/bin/bash").st_mode & 0o111
    assert fs.readlink("/bin/sh") == "dash"
    with fs.open("/var/lib/dpkg/status", "rb") as f:
        status = f.read().decode()
    assert "Package: bash\nStatus: install ok installed" in status
    with fs.open("/usr/lib/os-release", "rb") as f:
        assert b"Ubuntu" in f.read()
    assert not fs.exists("/var/log/dpkg.log")           # deleted by layer 2: a whiteout
    assert library.lookup("ubuntu").image.runtime_config["Cmd"] == ["/bin/bash"]


def test_tomcat_webapps_empty_and_webapps_dist_full(store):
    fs = _view(store, "tomcat")
    assert fs.listdir("/usr/local/tomcat/webapps") == []
    assert sorted(fs.listdir("/usr/local/tomcat/webapps.dist")) == \
        ["ROOT", "docs", "examples", "host-manager", "manager"]
    cfg = store.resolve("tomcat").runtime_config
    assert cfg["Cmd"] == ["catalina.sh", "run"] and "8080/tcp" in cfg["ExposedPorts"]
    assert cfg["WorkingDir"] == "/usr/local/tomcat"
    billy = _view(store, "billygoo/tomcat8-jdk8")
    assert "ROOT" in billy.listdir("/usr/local/tomcat/webapps")
    with fs.open("/var/lib/dpkg/status", "rb") as f:
        assert b"Package: curl" in f.read()                 # the apt layer changed it


def test_mysql_and_redis_volumes_and_config_dirs(store):
    fs = _view(store, "mysql:5.7")
    assert fs.lstat("/etc/mysql/conf.d").st_mode & stat.S_IFDIR
    assert fs.lstat("/var/lib/mysql").st_uid == 999
    assert fs.lstat("/var/log/mysql")
    assert fs.readlink("/var/run") == "/run"                 # not replaced by a directory
    cfg = store.resolve("mysql:5.7").runtime_config
    assert cfg["Volumes"] == {"/var/lib/mysql": {}}
    assert cfg["Entrypoint"] == ["docker-entrypoint.sh"] and cfg["Cmd"] == ["mysqld"]
    assert set(cfg["ExposedPorts"]) == {"3306/tcp", "33060/tcp"}
    with fs.open("/etc/passwd", "rb") as f:
        assert b"mysql:x:999" in f.read()
    rfs = _view(store, "redis:6.0.8")
    assert rfs.lstat("/etc/redis").st_mode & stat.S_IFDIR
    assert rfs.lstat("/data").st_uid == 999
    rcfg = store.resolve("redis:6.0.8").runtime_config
    assert rcfg["Volumes"] == {"/data": {}} and rcfg["WorkingDir"] == "/data"
    assert rcfg["Cmd"] == ["redis-server"] and "6379/tcp" in rcfg["ExposedPorts"]
    reg = store.resolve("registry").runtime_config
    assert "5000/tcp" in reg["ExposedPorts"] and "/var/lib/registry" in reg["Volumes"]


def test_lookup_errors():
    with pytest.raises(NameUnknown, match="pull access denied for nosuch"):
        library.lookup("nosuch")
    with pytest.raises(ManifestUnknown, match="manifest for ubuntu:99 not found"):
        library.lookup("ubuntu:99")
    with pytest.raises(ImageNotFound):
        library.lookup("127.0.0.1:5000/ubuntu")
    digest = library.lookup("redis:6.0.8").image.digest
    assert library.lookup(f"redis@{digest}").image.digest == digest
    assert library.lookup("redis").image.digest == digest           # alias latest
    assert library.lookup("library/ubuntu:20.04").image.digest == \
        library.lookup("ubuntu").image.digest


def test_pull_prints_dockers_lines(tmp_path):
    s = Store(tmp_path / "r", fsync=False)
    out = io.StringIO()
    img = library.pull(s, "ubuntu", out, tty=True)
    layer_ids = [d.digest.hex[:12] for d in img.layers]
    assert out.getvalue().splitlines() == [
        "Using default tag: latest", "latest: Pulling from library/ubuntu",
        *[f"{i}: Pull complete" for i in layer_ids],
        f"Digest: {img.digest}", "Status: Downloaded newer image for ubuntu:latest",
        "docker.io/library/ubuntu:latest"]
    out = io.StringIO()
    library.pull(s, "ubuntu:latest", out)
    assert out.getvalue().splitlines() == [
        "latest: Pulling from library/ubuntu", f"Digest: {img.digest}",
        "Status: Image is up to date for ubuntu:latest", "docker.io/library/ubuntu:latest"]
    out = io.StringIO()
    tomcat = library.pull(s, "tomcat", out, tty=False)
    lines = out.getvalue().splitlines()
    for i in layer_ids:
        assert f"{i}: Already exists" in lines
    new = tomcat.layers[3].digest.hex[:12]
    assert lines.index(f"{new}: Pulling fs layer") < lines.index(f"{new}: Download complete") \
        < lines.index(f"{new}: Pull complete")


def test_search():
    names = [r.name for r in library.search("tomcat")]
    assert names == ["tomcat", "billygoo/tomcat8-jdk8"]
    assert library.search("zzz") == []
    assert "mysql:5.7" in library.names()
