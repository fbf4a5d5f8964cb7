"""The registry client (push, pull, login) against our server on 127.0.0.1, with real stores,
real HTTP and real htpasswd files."""

from __future__ import annotations

import base64
import io
import json
import os
import subprocess
import tarfile

import httpx
import pytest

from imagesim import oci
from imagesim.config import ClientConfig, ConfigInvalid, is_loopback
from imagesim.digest import Digest
from imagesim.errors import DigestInvalid, ManifestUnknown, Unauthorized
from imagesim.registry import client
from imagesim.registry.auth import Access, TokenIssuer, basic_credentials
from imagesim.registry.server import ServerThread
from imagesim.store import Store
from tests.conftest import need_tool


def layer_tar(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as t:
        for name, data in sorted(files.items()):
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode = len(data), 0, 0o644
            t.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def make_image(store: Store, tag: str, layers: list[bytes], arch: str = "amd64"):
    descs, diffs = [], []
    for data in layers:
        d = store.blobs.put(data)
        descs.append(oci.Descriptor(oci.OCI_LAYER, d, len(data)))
        diffs.append(str(d))
    cfg = json.dumps({"architecture": arch, "os": "linux", "config": {},
                      "rootfs": {"type": "layers", "diff_ids": diffs}, "history": []}).encode()
    cd = store.blobs.put(cfg)
    manifest = oci.build_manifest(oci.Descriptor(oci.OCI_CONFIG, cd, len(cfg)), descs)
    return store.add_image(manifest, tags=[tag])


BASE = layer_tar({"etc/os-release": b"ID=sim\n"})
TOP = layer_tar({"usr/bin/vim": os.urandom(200_000)})


@pytest.fixture
def cfg(tmp_path, monkeypatch):
    path = tmp_path / "config.json"
    monkeypatch.setenv("IMAGESIM_CONFIG", str(path))
    return ClientConfig.load(str(path))


@pytest.fixture
def reg(tmp_path):
    with ServerThread(tmp_path / "reg", fsync=False) as srv:
        srv.root = tmp_path / "reg"
        yield srv


def lines(buf: io.StringIO) -> list[str]:
    return buf.getvalue().splitlines()


def test_push_then_pull_prints_dockers_lines(tmp_path, reg, cfg):
    src = Store(tmp_path / "src", fsync=False)
    img = make_image(src, f"{reg.host}/zzyyubuntu:1.2", [BASE, TOP])
    base, top = (d.digest.short for d in img.layers)
    out = io.StringIO()
    result = client.push(src, f"{reg.host}/zzyyubuntu:1.2", config=cfg,
                         reporter=client.PlainReporter(out))
    assert result.digest == img.digest
    assert lines(out) == [
        f"The push refers to repository [{reg.host}/zzyyubuntu]",
        f"{top}: Preparing", f"{base}: Preparing",
        f"{top}: Pushed", f"{base}: Pushed",
        f"1.2: digest: {img.digest} size: {len(img.manifest_bytes)}",
    ]
    # again: everything is there
    out = io.StringIO()
    client.push(src, f"{reg.host}/zzyyubuntu:1.2", config=cfg,
                reporter=client.PlainReporter(out))
    assert f"{top}: Layer already exists" in lines(out)
    # the registry holds the exact manifest bytes
    r = httpx.get(f"{reg.url}/v2/zzyyubuntu/manifests/1.2",
                  headers={"Accept": oci.OCI_MANIFEST})
    assert r.content == img.manifest_bytes
    # pull into an empty store
    dst = Store(tmp_path / "dst", fsync=False)
    out = io.StringIO()
    pulled = client.pull(dst, f"{reg.host}/zzyyubuntu:1.2", config=cfg,
                         reporter=client.PlainReporter(out))
    assert pulled.digest == img.digest and not pulled.up_to_date
    assert lines(out) == [
        "1.2: Pulling from zzyyubuntu",
        f"{base}: Pulling fs layer", f"{top}: Pulling fs layer",
        f"{base}: Verifying Checksum", f"{base}: Download complete",
        f"{top}: Verifying Checksum", f"{top}: Download complete",
        f"{base}: Pull complete", f"{top}: Pull complete",
        f"Digest: {img.digest}",
        f"Status: Downloaded newer image for {reg.host}/zzyyubuntu:1.2",
        f"{reg.host}/zzyyubuntu:1.2",
    ]
    assert dst.resolve(f"{reg.host}/zzyyubuntu:1.2").digest == img.digest
    out = io.StringIO()
    again = client.pull(dst, f"{reg.host}/zzyyubuntu:1.2", config=cfg,
                        reporter=client.PlainReporter(out))
    assert again.up_to_date
    assert f"{base}: Already exists" in lines(out)
    assert f"Status: Image is up to date for {reg.host}/zzyyubuntu:1.2" in lines(out)


def test_already_exists_for_a_shared_base(tmp_path, reg, cfg):
    src = Store(tmp_path / "src", fsync=False)
    make_image(src, f"{reg.host}/app:1", [BASE, TOP])
    client.push(src, f"{reg.host}/app:1", config=cfg, reporter=client.NullReporter())
    dst = Store(tmp_path / "dst", fsync=False)
    make_image(dst, "local/base:1", [BASE])
    out = io.StringIO()
    client.pull(dst, f"{reg.host}/app:1", config=cfg, reporter=client.PlainReporter(out))
    base_id = Digest.of(BASE).short
    assert f"{base_id}: Already exists" in lines(out)
    assert f"{base_id}: Pulling fs layer" not in lines(out)


def test_default_tag_and_missing_tag(tmp_path, reg, cfg):
    src = Store(tmp_path / "src", fsync=False)
    make_image(src, f"{reg.host}/x", [BASE])
    out = io.StringIO()
    client.push(src, f"{reg.host}/x", config=cfg, reporter=client.PlainReporter(out))
    assert lines(out)[-1].startswith("latest: digest: sha256:")
    out = io.StringIO()
    dst = Store(tmp_path / "dst", fsync=False)
    client.pull(dst, f"{reg.host}/x", config=cfg, reporter=client.PlainReporter(out))
    assert lines(out)[:2] == ["Using default tag: latest", "latest: Pulling from x"]
    with pytest.raises(ManifestUnknown):
        client.pull(dst, f"{reg.host}/x:nope", config=cfg, reporter=client.NullReporter())


def test_cross_repository_mount(tmp_path, reg, cfg):
    src = Store(tmp_path / "src", fsync=False)
    img = make_image(src, f"{reg.host}/library/base:1", [BASE, TOP])
    client.push(src, f"{reg.host}/library/base:1", config=cfg, reporter=client.NullReporter())
    src.tag(img, f"{reg.host}/team/app:2")
    out = io.StringIO()
    result = client.push(src, f"{reg.host}/team/app:2", config=cfg,
                         reporter=client.PlainReporter(out))
    assert set(result.layers.values()) == {"mounted"}
    assert f"{Digest.of(TOP).short}: Mounted from library/base" in lines(out)
    r = httpx.get(f"{reg.url}/v2/team/app/blobs/{Digest.of(TOP)}")
    assert r.content == TOP


def test_chunked_upload_of_a_large_blob(tmp_path, reg, cfg):
    src = Store(tmp_path / "src", fsync=False)
    big = layer_tar({"big": os.urandom(3_000_000)})
    make_image(src, f"{reg.host}/big:1", [big])
    client.push(src, f"{reg.host}/big:1", config=cfg, reporter=client.NullReporter(),
                chunk_size=1_000_000)
    r = httpx.get(f"{reg.url}/v2/big/blobs/{Digest.of(big)}")
    assert r.content == big
    assert os.listdir(reg.root / "uploads") == []


def test_pull_resolves_an_index_for_linux_amd64(tmp_path, reg, cfg):
    src = Store(tmp_path / "src", fsync=False)
    amd = make_image(src, f"{reg.host}/multi:amd", [BASE], arch="amd64")
    arm = make_image(src, f"{reg.host}/multi:arm", [TOP], arch="arm64")
    for tag in ("amd", "arm"):
        client.push(src, f"{reg.host}/multi:{tag}", config=cfg, reporter=client.NullReporter())
    index = oci.build_index([
        oci.Descriptor(oci.OCI_MANIFEST, arm.digest, len(arm.manifest_bytes),
                       platform=oci.Platform("arm64", "linux")),
        oci.Descriptor(oci.OCI_MANIFEST, amd.digest, len(amd.manifest_bytes),
                       platform=oci.Platform("amd64", "linux"))])
    r = httpx.put(f"{reg.url}/v2/multi/manifests/latest", content=index,
                  headers={"Content-Type": oci.OCI_INDEX})
    assert r.status_code == 201
    dst = Store(tmp_path / "dst", fsync=False)
    out = io.StringIO()
    result = client.pull(dst, f"{reg.host}/multi:latest", config=cfg,
                         reporter=client.PlainReporter(out), platform=("linux", "amd64"))
    assert result.digest == Digest.of(index)
    assert result.image_digest == amd.digest
    assert f"Digest: {Digest.of(index)}" in lines(out)
    assert dst.resolve(f"{reg.host}/multi:latest").digest == amd.digest
    result = client.pull(dst, f"{reg.host}/multi:latest", config=cfg,
                         reporter=client.NullReporter(), platform=("linux", "arm64"))
    assert result.image_digest == arm.digest
    with pytest.raises(ManifestUnknown, match="no matching manifest for linux/s390x"):
        client.pull(dst, f"{reg.host}/multi:latest", config=cfg,
                    reporter=client.NullReporter(), platform=("linux", "s390x"))


def test_pull_of_a_corrupted_blob_stores_nothing(tmp_path, reg, cfg):
    src = Store(tmp_path / "src", fsync=False)
    make_image(src, f"{reg.host}/bad:1", [BASE, TOP])
    client.push(src, f"{reg.host}/bad:1", config=cfg, reporter=client.NullReporter())
    path = reg.root / "blobs" / "sha256" / Digest.of(TOP).hex
    os.chmod(path, 0o644)
    data = bytearray(path.read_bytes())
    data[1000] ^= 0xFF
    path.write_bytes(bytes(data))
    dst = Store(tmp_path / "dst", fsync=False)
    with pytest.raises(DigestInvalid):
        client.pull(dst, f"{reg.host}/bad:1", config=cfg, reporter=client.NullReporter())
    assert Digest.of(TOP) not in dst.blobs
    assert not dst.exists(f"{reg.host}/bad:1")
    assert os.listdir(dst.blobs.tmp_dir) == []


def test_push_needs_a_registry_host(tmp_path, cfg):
    from imagesim.errors import Denied
    src = Store(tmp_path / "src", fsync=False)
    make_image(src, "plain:1", [BASE])
    with pytest.raises(Denied, match="no registry host"):
        client.push(src, "plain:1", config=cfg, reporter=client.NullReporter())


def test_unreachable_registry(tmp_path, cfg):
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    src = Store(tmp_path / "src", fsync=False)
    make_image(src, f"127.0.0.1:{port}/x:1", [BASE])
    with pytest.raises(client.RegistryUnreachable):
        client.push(src, f"127.0.0.1:{port}/x:1", config=cfg, reporter=client.NullReporter())


# -- auth --------------------------------------------------------------------------------------

@pytest.fixture
def htpasswd(tmp_path):
    tool = need_tool("htpasswd")
    path = tmp_path / "htpasswd"
    out = subprocess.run([tool, "-Bbn", "alice", "s3cret"], capture_output=True, text=True,
                         check=True).stdout
    path.write_text(out)
    return path


@pytest.mark.parametrize("auth", ["basic", "token"])
def test_login_push_pull_logout_with_auth(tmp_path, cfg, htpasswd, auth):
    with ServerThread(tmp_path / "areg", htpasswd=htpasswd, auth=auth, fsync=False) as srv:
        r = httpx.get(f"{srv.url}/v2/")
        assert r.status_code == 401
        challenge = r.headers["WWW-Authenticate"]
        assert challenge.startswith("Basic " if auth == "basic" else "Bearer realm=")
        src = Store(tmp_path / "src", fsync=False)
        make_image(src, f"{srv.host}/private:1", [BASE])
        with pytest.raises(Unauthorized):
            client.push(src, f"{srv.host}/private:1", config=cfg,
                        reporter=client.NullReporter())
        with pytest.raises(Unauthorized):
            client.login(srv.host, "alice", "wrong", config=cfg)
        assert ClientConfig.load().credentials(srv.host) is None
        client.login(srv.host, "alice", "s3cret", config=cfg)
        stored = ClientConfig.load()
        assert stored.credentials(srv.host).username == "alice"
        assert oct(os.stat(stored.path).st_mode & 0o777) == "0o600"
        assert stored.data["auths"][srv.host]["auth"] == \
            base64.b64encode(b"alice:s3cret").decode()
        client.push(src, f"{srv.host}/private:1", config=stored, reporter=client.NullReporter())
        dst = Store(tmp_path / "dst", fsync=False)
        client.pull(dst, f"{srv.host}/private:1", config=stored,
                    reporter=client.NullReporter())
        assert dst.exists(f"{srv.host}/private:1")
        assert client.logout(srv.host, config=stored) is True
        assert client.logout(srv.host, config=stored) is False
        with pytest.raises(Unauthorized):
            client.pull(Store(tmp_path / "dst2", fsync=False), f"{srv.host}/private:1",
                        config=ClientConfig.load(), reporter=client.NullReporter())


def test_token_scopes_are_enforced(tmp_path, htpasswd):
    with ServerThread(tmp_path / "treg", htpasswd=htpasswd, auth="token", fsync=False) as srv:
        r = httpx.get(f"{srv.url}/v2/a/tags/list")
        assert r.status_code == 401
        ch = client.Challenge.parse(r.headers["WWW-Authenticate"])
        assert ch.scheme == "bearer" and ch.params["scope"] == "repository:a:pull"
        assert ch.params["realm"] == f"{srv.url}/token"
        # anonymous token: grants nothing
        tok = httpx.get(ch.params["realm"], params={"service": ch.params["service"],
                                                    "scope": "repository:a:pull"}).json()
        r = httpx.get(f"{srv.url}/v2/a/tags/list",
                      headers={"Authorization": f"Bearer {tok['token']}"})
        assert r.status_code == 401
        assert 'error="insufficient_scope"' in r.headers["WWW-Authenticate"]
        # wrong password: the token endpoint refuses
        r = httpx.get(ch.params["realm"], params={"scope": "repository:a:pull"},
                      auth=("alice", "nope"))
        assert r.status_code == 401
        # a pull token for a cannot push to a, nor read b
        tok = httpx.get(ch.params["realm"], params={"scope": "repository:a:pull"},
                        auth=("alice", "s3cret")).json()["token"]
        h = {"Authorization": f"Bearer {tok}"}
        assert httpx.get(f"{srv.url}/v2/a/tags/list", headers=h).status_code == 404
        assert httpx.post(f"{srv.url}/v2/a/blobs/uploads/", headers=h).status_code == 401
        assert httpx.get(f"{srv.url}/v2/b/tags/list", headers=h).status_code == 401
        # a forged token is rejected
        forged = TokenIssuer(b"k" * 32).issue("alice", [Access.parse("repository:a:*")])[0]
        r = httpx.get(f"{srv.url}/v2/a/tags/list", headers={"Authorization": f"Bearer {forged}"})
        assert r.status_code == 401 and 'error="invalid_token"' in r.headers["WWW-Authenticate"]


def test_access_and_basic_parsing():
    a = Access.parse("repository:127.0.0.1:5000/x:pull,push")
    assert a.name == "127.0.0.1:5000/x" and a.actions == {"pull", "push"}
    with pytest.raises(ValueError):
        Access.parse("nonsense")
    assert basic_credentials("Basic " + base64.b64encode(b"u:p:q").decode()) == ("u", "p:q")
    assert basic_credentials("Basic !!!") is None
    assert basic_credentials("Bearer x") is None
    ch = client.Challenge.parse('Bearer realm="https://a/token",service="reg",scope="x:y:z"')
    assert ch.params == {"realm": "https://a/token", "service": "reg", "scope": "x:y:z"}


# -- config ------------------------------------------------------------------------------------

def test_insecure_registry_rules(cfg):
    assert is_loopback("localhost:5000") and is_loopback("127.3.4.5:80")
    assert is_loopback("[::1]:5000") and not is_loopback("10.0.0.1:5000")
    assert cfg.is_insecure("127.0.0.1:5000")
    assert not cfg.is_insecure("myhost:5000")
    cfg.add_insecure("myhost:5000")
    cfg.data["insecure-registries"].append("10.1.0.0/16")
    assert cfg.is_insecure("myhost:5000") and not cfg.is_insecure("myhost:5001")
    assert cfg.is_insecure("10.1.2.3:5000") and not cfg.is_insecure("10.2.0.1:5000")
    cfg.save()
    assert ClientConfig.load().insecure_registries == ["myhost:5000", "10.1.0.0/16"]


def test_a_non_insecure_host_is_tried_over_https_only(tmp_path, reg, cfg):
    # "localhost.localdomain"-style names are not loopback by rule; point one at our plain
    # HTTP server through a name that is not loopback-looking: it must refuse plain HTTP
    sess = client.RegistrySession(f"127.0.0.1:{reg.port}", cfg)
    assert sess.base == f"http://127.0.0.1:{reg.port}"
    sess.close()
    cfg2 = ClientConfig(str(tmp_path / "c2.json"), {})
    assert not cfg2.is_insecure("registry.example:443")


def test_config_errors(tmp_path):
    p = tmp_path / "c.json"
    p.write_text("[1]")
    with pytest.raises(ConfigInvalid):
        ClientConfig.load(str(p))
    p.write_text("{bad")
    with pytest.raises(ConfigInvalid):
        ClientConfig.load(str(p))
    p.write_text(json.dumps({"auths": {"h:1": {"auth": "bm9jb2xvbg=="}}}))  # "nocolon"
    with pytest.raises(ConfigInvalid):
        ClientConfig.load(str(p)).credentials("h:1")
    p.write_text(json.dumps({"auths": {"http://h:1/v2/": {"auth": "dTpw"}}, "other": 1}))
    c = ClientConfig.load(str(p))
    assert c.credentials("h:1").password == "p"
    c.set_credentials("k:2", "a", "b")
    c.save()
    assert json.loads(p.read_text())["other"] == 1


# -- CLI ---------------------------------------------------------------------------------------

def test_cli_push_pull_login(tmp_path, reg, cfg, monkeypatch, capsys):
    from imagesim.cli import main
    root = tmp_path / "cli-store"
    monkeypatch.setenv("IMAGESIM_ROOT", str(root))
    store = Store(root, fsync=False)
    img = make_image(store, f"{reg.host}/zzyyubuntu:1.2", [BASE])
    assert main(["push", f"{reg.host}/zzyyubuntu:1.2"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"The push refers to repository [{reg.host}/zzyyubuntu]"
    assert out[-1] == f"1.2: digest: {img.digest} size: {len(img.manifest_bytes)}"
    out = subprocess.run(["curl", "-s", f"{reg.url}/v2/_catalog"], capture_output=True,
                         text=True, check=True).stdout
    assert json.loads(out) == {"repositories": ["zzyyubuntu"]}
    monkeypatch.setenv("IMAGESIM_ROOT", str(tmp_path / "other-store"))
    assert main(["pull", f"{reg.host}/zzyyubuntu:1.2"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[-2] == f"Status: Downloaded newer image for {reg.host}/zzyyubuntu:1.2"
    assert main(["pull", "-q", f"{reg.host}/zzyyubuntu:1.2"]) == 0
    assert capsys.readouterr().out == f"{reg.host}/zzyyubuntu:1.2\n"
    assert main(["pull", f"{reg.host}/nothing:1"]) == 1
    err = capsys.readouterr().err
    assert "NAME_UNKNOWN" not in err and "nothing" in err
    assert main(["pull", "Bad/Name"]) == 1
    assert main(["logout", reg.host]) == 0
    assert capsys.readouterr().out == f"Not logged in to {reg.host}\n"


def test_cli_login_password_stdin(tmp_path, cfg, htpasswd, monkeypatch, capsys):
    from imagesim.cli import main
    with ServerThread(tmp_path / "areg", htpasswd=htpasswd, fsync=False) as srv:
        monkeypatch.setattr("sys.stdin", io.StringIO("s3cret\n"))
        assert main(["login", "-u", "alice", "--password-stdin", srv.host]) == 0
        assert capsys.readouterr().out == "Login Succeeded\n"
        monkeypatch.setattr("sys.stdin", io.StringIO("bad\n"))
        assert main(["login", "-u", "alice", "--password-stdin", srv.host]) == 1
        assert "unauthorized" in capsys.readouterr().err.lower()
        assert main(["logout", srv.host]) == 0
        assert capsys.readouterr().out == f"Removing login credentials for {srv.host}\n"


def test_rich_reporter_renders_bars():
    buf = io.StringIO()
    rep = client.RichReporter(buf)
    rep.status(None, "The push refers to repository [x]")
    rep.status("abcdef012345", "Preparing")
    rep.progress("abcdef012345", "Pushing", 512, 1024)
    rep.status("abcdef012345", "Pushed")
    rep.close()
    text = buf.getvalue()
    assert "The push refers to repository [x]" in text
    assert "abcdef012345: Pushed" in text


def test_token_endpoint_oauth2_password_grant(tmp_path, htpasswd):
    with ServerThread(tmp_path / "oreg", htpasswd=htpasswd, auth="token", fsync=False) as srv:
        r = httpx.post(f"{srv.url}/token", data={
            "grant_type": "password", "username": "alice", "password": "s3cret",
            "service": "imagesim-registry", "scope": "repository:a:pull,push"})
        assert r.status_code == 200
        tok = r.json()["access_token"]
        assert r.json()["scope"] == "repository:a:pull,push"
        h = {"Authorization": f"Bearer {tok}"}
        assert httpx.post(f"{srv.url}/v2/a/blobs/uploads/", headers=h).status_code == 202
        r = httpx.post(f"{srv.url}/token", data={"grant_type": "password",
                                                 "username": "alice", "password": "x"})
        assert r.status_code == 401
        r = httpx.post(f"{srv.url}/token", data={"grant_type": "refresh_token"})
        assert r.status_code == 400 and r.json()["error"] == "unsupported_grant_type"


def test_pull_by_digest(tmp_path, reg, cfg):
    src = Store(tmp_path / "src", fsync=False)
    img = make_image(src, f"{reg.host}/pinned:1", [BASE])
    client.push(src, f"{reg.host}/pinned:1", config=cfg, reporter=client.NullReporter())
    dst = Store(tmp_path / "dst", fsync=False)
    out = io.StringIO()
    res = client.pull(dst, f"{reg.host}/pinned@{img.digest}", config=cfg,
                      reporter=client.PlainReporter(out))
    assert res.digest == img.digest
    assert lines(out)[0] == f"{img.digest}: Pulling from pinned"
    assert lines(out)[-1] == f"{reg.host}/pinned@{img.digest}"
    assert dst.resolve(str(img.digest)).digest == img.digest
    with pytest.raises(ManifestUnknown):
        client.pull(dst, f"{reg.host}/pinned@{Digest.of(b'x')}", config=cfg,
                    reporter=client.NullReporter())


def test_token_auth_with_anonymous_pull(tmp_path, cfg, htpasswd):
    root = tmp_path / "anon"
    with ServerThread(root, htpasswd=htpasswd, auth="token", fsync=False) as srv:
        src = Store(tmp_path / "src", fsync=False)
        img = make_image(src, f"{srv.host}/public:1", [BASE])
        client.login(srv.host, "alice", "s3cret", config=cfg)
        client.push(src, f"{srv.host}/public:1", config=ClientConfig.load(),
                    reporter=client.NullReporter())
    with ServerThread(root, htpasswd=htpasswd, auth="token", anonymous_pull=True,
                      fsync=False) as srv:
        anon = ClientConfig(str(tmp_path / "anon.json"), {})
        dst = Store(tmp_path / "dst", fsync=False)
        res = client.pull(dst, f"{srv.host}/public:1", config=anon,
                          reporter=client.NullReporter())
        assert res.digest == img.digest
        src.tag(img, f"{srv.host}/public:2")
        with pytest.raises(Unauthorized):
            client.push(src, f"{srv.host}/public:2", config=anon,
                        reporter=client.NullReporter())


def test_mount_source_without_the_blob_falls_back_to_upload(tmp_path, reg, cfg):
    src = Store(tmp_path / "src", fsync=False)
    img = make_image(src, f"{reg.host}/first:1", [BASE, TOP])
    client.push(src, f"{reg.host}/first:1", config=cfg, reporter=client.NullReporter())
    for layer in img.layers:  # the recorded source loses its blobs
        assert httpx.delete(f"{reg.url}/v2/first/blobs/{layer.digest}").status_code == 202
    src.tag(img, f"{reg.host}/second:1")
    result = client.push(src, f"{reg.host}/second:1", config=cfg,
                         reporter=client.NullReporter())
    assert set(result.layers.values()) == {"pushed"}
    assert httpx.get(f"{reg.url}/v2/second/blobs/{Digest.of(TOP)}").content == TOP
