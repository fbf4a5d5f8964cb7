"""Our registry and client against real tools: skopeo, curl, and the reference registry
(Debian's ``docker-registry``, started here on 127.0.0.1 with a generated config)."""

from __future__ import annotations

import gzip
import io
import json
import os
import socket
import subprocess
import tarfile
import time

import httpx
import pytest

from imagesim import oci
from imagesim.config import ClientConfig
from imagesim.digest import Digest
from imagesim.errors import Unauthorized
from imagesim.registry import client
from imagesim.registry.server import ServerThread
from imagesim.store import Store
from tests.conftest import need_tool

DOCKER_REGISTRY = "/usr/bin/docker-registry"


def layer_tar(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as t:
        for name, data in sorted(files.items()):
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode = len(data), 0, 0o644
            t.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def make_image(store: Store, tag: str, layers: list[bytes], media_type: str = oci.OCI_MANIFEST):
    # gzip layers, as real images have: skopeo would compress plain tar layers on copy
    docker = media_type == oci.DOCKER_MANIFEST
    descs, diffs = [], []
    for data in layers:
        packed = gzip.compress(data, mtime=0)
        d = store.blobs.put(packed)
        descs.append(oci.Descriptor(oci.DOCKER_LAYER_GZIP if docker else oci.OCI_LAYER_GZIP,
                                    d, len(packed)))
        diffs.append(str(Digest.of(data)))
    cfg = json.dumps({"architecture": "amd64", "os": "linux", "config": {},
                      "rootfs": {"type": "layers", "diff_ids": diffs}, "history": []}).encode()
    cd = store.blobs.put(cfg)
    config = oci.Descriptor(oci.DOCKER_CONFIG if docker else oci.OCI_CONFIG, cd, len(cfg))
    return store.add_image(oci.build_manifest(config, descs, media_type), tags=[tag])


LAYERS = [layer_tar({"etc/os-release": b"ID=sim\n"}),
          layer_tar({"usr/bin/tool": os.urandom(150_000)})]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def cfg(tmp_path, monkeypatch):
    path = tmp_path / "config.json"
    monkeypatch.setenv("IMAGESIM_CONFIG", str(path))
    return ClientConfig.load(str(path))


@pytest.fixture
def ours(tmp_path):
    with ServerThread(tmp_path / "ours", fsync=False) as srv:
        yield srv


class ReferenceRegistry:
    def __init__(self, tmp_path, htpasswd=None) -> None:
        if not os.path.exists(DOCKER_REGISTRY):
            need_tool("docker-registry")
        self.port = free_port()
        self.host = f"127.0.0.1:{self.port}"
        self.url = f"http://{self.host}"
        storage = tmp_path / f"refstore-{self.port}"
        storage.mkdir()
        conf = [
            "version: 0.1",
            "log:", "  level: error",
            "storage:", "  filesystem:", f"    rootdirectory: {storage}",
            "  delete:", "    enabled: true",
            "http:", f"  addr: 127.0.0.1:{self.port}",
        ]
        if htpasswd is not None:
            conf += ["auth:", "  htpasswd:", "    realm: basic-realm", f"    path: {htpasswd}"]
        self.config = tmp_path / f"registry-{self.port}.yml"
        self.config.write_text("\n".join(conf) + "\n")
        self.log = open(tmp_path / f"registry-{self.port}.log", "wb")  # noqa: SIM115
        self.proc = subprocess.Popen([DOCKER_REGISTRY, "serve", str(self.config)],
                                     stdout=self.log, stderr=self.log)
        deadline = time.monotonic() + 20
        while True:
            try:
                httpx.get(f"{self.url}/v2/", timeout=1)
                break
            except httpx.HTTPError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError("docker-registry did not start") from None
                time.sleep(0.1)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


@pytest.fixture
def reference(tmp_path):
    reg = ReferenceRegistry(tmp_path)
    yield reg
    reg.stop()


def skopeo(*args: str) -> str:
    tool = need_tool("skopeo")
    r = subprocess.run([tool, "--insecure-policy", *args], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr
    return r.stdout


def test_curl_catalog_and_tags(tmp_path, ours, cfg):
    curl = need_tool("curl")
    assert json.loads(subprocess.run([curl, "-s", "-XGET", f"{ours.url}/v2/_catalog"],
                                     capture_output=True, text=True).stdout) == \
        {"repositories": []}
    store = Store(tmp_path / "s", fsync=False)
    make_image(store, f"{ours.host}/zzyyubuntu:1.2", LAYERS)
    client.push(store, f"{ours.host}/zzyyubuntu:1.2", config=cfg, reporter=client.NullReporter())
    out = subprocess.run([curl, "-s", "-XGET", f"{ours.url}/v2/_catalog"], capture_output=True,
                         text=True).stdout
    assert json.loads(out) == {"repositories": ["zzyyubuntu"]}
    out = subprocess.run([curl, "-s", "-i", f"{ours.url}/v2/zzyyubuntu/tags/list?n=1"],
                         capture_output=True, text=True).stdout
    assert "Docker-Distribution-API-Version: registry/2.0" in out.replace("docker-distribution"
                                                                          "-api-version",
                                                                          "Docker-Distribution"
                                                                          "-API-Version")
    assert out.rstrip().endswith('{"name":"zzyyubuntu","tags":["1.2"]}')


@pytest.mark.parametrize("media_type", [oci.OCI_MANIFEST, oci.DOCKER_MANIFEST])
def test_skopeo_copy_into_our_registry_and_back(tmp_path, ours, reference, cfg, media_type):
    # an image in the reference registry, put there by our client
    store = Store(tmp_path / "s", fsync=False)
    img = make_image(store, f"{reference.host}/src/img:1", LAYERS, media_type)
    client.push(store, f"{reference.host}/src/img:1", config=cfg,
                reporter=client.NullReporter())
    # skopeo: reference registry -> ours -> OCI layout -> ours under another name
    skopeo("copy", "--preserve-digests", "--src-tls-verify=false", "--dest-tls-verify=false",
           f"docker://{reference.host}/src/img:1", f"docker://{ours.host}/copied/img:1")
    raw = skopeo("inspect", "--raw", "--tls-verify=false", f"docker://{ours.host}/copied/img:1")
    assert raw.encode() == img.manifest_bytes
    info = json.loads(skopeo("inspect", "--tls-verify=false",
                             f"docker://{ours.host}/copied/img:1"))
    assert info["Digest"] == str(img.digest)
    assert info["Layers"] == [str(d.digest) for d in img.layers]
    # through a local copy: an OCI layout for OCI images; `dir:` for Docker v2s2 (an OCI
    # layout would make skopeo convert the manifest, changing its digest)
    local = (f"oci:{tmp_path / 'layout'}:img" if media_type == oci.OCI_MANIFEST
             else f"dir:{tmp_path / 'dir'}")
    skopeo("copy", "--preserve-digests", "--src-tls-verify=false",
           f"docker://{ours.host}/copied/img:1", local)
    skopeo("copy", "--preserve-digests", "--dest-tls-verify=false", local,
           f"docker://{ours.host}/again:2")
    r = httpx.get(f"{ours.url}/v2/again/manifests/2", headers={"Accept": media_type})
    assert r.headers["Docker-Content-Digest"] == str(img.digest)
    # and back out to the reference registry, unchanged
    skopeo("copy", "--preserve-digests", "--src-tls-verify=false", "--dest-tls-verify=false",
           f"docker://{ours.host}/again:2", f"docker://{reference.host}/back:3")
    r = httpx.get(f"{reference.url}/v2/back/manifests/3", headers={"Accept": media_type})
    assert r.headers["Docker-Content-Digest"] == str(img.digest)
    assert r.content == img.manifest_bytes
    tags = json.loads(skopeo("list-tags", "--tls-verify=false", f"docker://{ours.host}/again"))
    assert tags["Tags"] == ["2"]


def test_our_client_with_the_reference_registry(tmp_path, reference, cfg):
    store = Store(tmp_path / "s", fsync=False)
    img = make_image(store, f"{reference.host}/zzyyubuntu:1.2", LAYERS)
    out = io.StringIO()
    client.push(store, f"{reference.host}/zzyyubuntu:1.2", config=cfg,
                reporter=client.PlainReporter(out), chunk_size=60_000)
    assert out.getvalue().splitlines()[-1] == \
        f"1.2: digest: {img.digest} size: {len(img.manifest_bytes)}"
    out = io.StringIO()
    store.tag(img, f"{reference.host}/other:1")
    client.push(store, f"{reference.host}/other:1", config=cfg,
                reporter=client.PlainReporter(out))
    assert f"{img.layers[1].digest.short}: Mounted from zzyyubuntu" in out.getvalue()
    dst = Store(tmp_path / "d", fsync=False)
    res = client.pull(dst, f"{reference.host}/zzyyubuntu:1.2", config=cfg,
                      reporter=client.NullReporter())
    assert res.digest == img.digest
    assert dst.resolve(f"{reference.host}/zzyyubuntu:1.2").digest == img.digest
    for layer in img.layers:
        assert dst.blobs.get(layer.digest) == store.blobs.get(layer.digest)
    assert Digest.of(gzip.compress(LAYERS[1], mtime=0)) == img.layers[1].digest


def test_our_client_with_the_reference_registry_and_htpasswd(tmp_path, cfg):
    tool = need_tool("htpasswd")
    ht = tmp_path / "htpasswd"
    ht.write_text(subprocess.run([tool, "-Bbn", "bob", "pa55word"], capture_output=True,
                                 text=True, check=True).stdout)
    ref = ReferenceRegistry(tmp_path, htpasswd=ht)
    try:
        store = Store(tmp_path / "s", fsync=False)
        make_image(store, f"{ref.host}/private:1", LAYERS)
        with pytest.raises(Unauthorized):
            client.push(store, f"{ref.host}/private:1", config=cfg,
                        reporter=client.NullReporter())
        with pytest.raises(Unauthorized):
            client.login(ref.host, "bob", "nope", config=cfg)
        client.login(ref.host, "bob", "pa55word", config=cfg)
        stored = ClientConfig.load()
        client.push(store, f"{ref.host}/private:1", config=stored,
                    reporter=client.NullReporter())
        dst = Store(tmp_path / "d", fsync=False)
        client.pull(dst, f"{ref.host}/private:1", config=stored, reporter=client.NullReporter())
        assert dst.exists(f"{ref.host}/private:1")
    finally:
        ref.stop()


def test_skopeo_with_our_registry_and_auth(tmp_path, cfg):
    tool = need_tool("htpasswd")
    ht = tmp_path / "htpasswd"
    ht.write_text(subprocess.run([tool, "-Bbn", "carol", "pw"], capture_output=True,
                                 text=True, check=True).stdout)
    store = Store(tmp_path / "s", fsync=False)
    for auth in ("basic", "token"):
        with ServerThread(tmp_path / f"ours-{auth}", htpasswd=ht, auth=auth, fsync=False) as srv:
            img = make_image(store, f"{srv.host}/a:1", LAYERS)
            client.login(srv.host, "carol", "pw", config=cfg)
            client.push(store, f"{srv.host}/a:1", config=ClientConfig.load(),
                        reporter=client.NullReporter())
            r = subprocess.run([need_tool("skopeo"), "--insecure-policy", "inspect",
                                "--tls-verify=false", f"docker://{srv.host}/a:1"],
                               capture_output=True, text=True, timeout=60)
            assert r.returncode != 0  # no credentials given
            info = json.loads(skopeo("inspect", "--tls-verify=false", "--creds=carol:pw",
                                     f"docker://{srv.host}/a:1"))
            assert info["Digest"] == str(img.digest)
            layout = tmp_path / f"layout-{auth}"
            skopeo("copy", "--src-tls-verify=false", "--src-creds=carol:pw",
                   f"docker://{srv.host}/a:1", f"oci:{layout}:x")
            skopeo("copy", "--dest-tls-verify=false", "--dest-creds=carol:pw",
                   f"oci:{layout}:x", f"docker://{srv.host}/b:2")
            dst = Store(tmp_path / f"d-{auth}", fsync=False)
            res = client.pull(dst, f"{srv.host}/b:2", config=ClientConfig.load(),
                              reporter=client.NullReporter())
            assert res.digest == img.digest
            assert img.layers[1].digest in dst.blobs


def test_skopeo_delete_and_list_tags(tmp_path, ours, cfg):
    store = Store(tmp_path / "s", fsync=False)
    img = make_image(store, f"{ours.host}/del/me:1", LAYERS)
    client.push(store, f"{ours.host}/del/me:1", config=cfg, reporter=client.NullReporter())
    for tag in ("2", "3"):
        store.tag(img, f"{ours.host}/del/me:{tag}")
        client.push(store, f"{ours.host}/del/me:{tag}", config=cfg,
                    reporter=client.NullReporter())
    tags = json.loads(skopeo("list-tags", "--tls-verify=false", f"docker://{ours.host}/del/me"))
    assert tags == {"Repository": f"{ours.host}/del/me", "Tags": ["1", "2", "3"]}
    skopeo("delete", "--tls-verify=false", f"docker://{ours.host}/del/me:2")
    # deleting by digest removes every tag that named the manifest
    r = httpx.get(f"{ours.url}/v2/del/me/tags/list")
    assert r.json()["tags"] == []
    r = httpx.get(f"{ours.url}/v2/del/me/manifests/{img.digest}")
    assert r.status_code == 404
