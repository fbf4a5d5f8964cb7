"""TLS in-process: our server with a certificate (``ServerThread(tls_cert=..., tls_key=...)``),
the client's scheme order for a loopback registry, the plain-HTTP detector, ``certs.d``
parsing and the server's certificate checks. Certificates come from the ``openssl`` command.

The rules for registries that are *not* loopback (verification, refusing plain HTTP,
insecure-registries) need a non-loopback name: ``tests/interop/test_registry_tls.py`` runs
those through the CLI in a private mount namespace."""

from __future__ import annotations

import errno
import io
import json
import os
import shutil
import socket
import ssl
import subprocess
import tarfile

import httpx
import pytest

from imagesim import oci
from imagesim.cli import main
from imagesim.config import ClientConfig, ConfigInvalid
from imagesim.digest import Digest
from imagesim.registry import client
from imagesim.registry.server import ServerThread, check_tls_files
from imagesim.store import Store
from tests.conftest import need_tool
from tests.interop.tls_pki import Pki, make_pki


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> Pki:
    return make_pki(need_tool("openssl"), tmp_path_factory.mktemp("pki"))


def trusting(pki: Pki) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(pki.ca_crt))


@pytest.fixture
def cfg(tmp_path, monkeypatch) -> ClientConfig:
    path = tmp_path / "config.json"
    monkeypatch.setenv("IMAGESIM_CONFIG", str(path))
    return ClientConfig.load(str(path))


@pytest.fixture
def tls_reg(tmp_path, pki):
    with ServerThread(tmp_path / "reg", fsync=False, tls_cert=pki.server_crt,
                      tls_key=pki.server_key) as srv:
        yield srv


@pytest.fixture
def plain_reg(tmp_path):
    with ServerThread(tmp_path / "plain", fsync=False) as srv:
        yield srv


def make_image(store: Store, tag: str):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as t:
        data = os.urandom(50_000)
        info = tarfile.TarInfo("srv/data")
        info.size, info.mtime = len(data), 0
        t.addfile(info, io.BytesIO(data))
    layer = buf.getvalue()
    d = store.blobs.put(layer)
    cfg = json.dumps({"architecture": "amd64", "os": "linux", "config": {},
                      "rootfs": {"type": "layers", "diff_ids": [str(d)]}}).encode()
    cd = store.blobs.put(cfg)
    manifest = oci.build_manifest(oci.Descriptor(oci.OCI_CONFIG, cd, len(cfg)),
                                  [oci.Descriptor(oci.OCI_LAYER, d, len(layer))])
    return store.add_image(manifest, tags=[tag])


def test_the_server_speaks_https_with_the_given_certificate(tls_reg, pki):
    assert tls_reg.url == f"https://127.0.0.1:{tls_reg.port}"
    with httpx.Client(verify=trusting(pki), trust_env=False) as c:
        resp = c.get(f"{tls_reg.url}/v2/")
    assert resp.status_code == 200
    assert resp.headers["docker-distribution-api-version"] == "registry/2.0"
    with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
        httpx.get(f"{tls_reg.url}/v2/", trust_env=False)  # the test CA is not in the store


def test_a_loopback_registry_over_tls_is_used_without_verification(tmp_path, tls_reg, cfg):
    # docker treats 127.0.0.0/8 as insecure: TLS without verification, or plain HTTP
    src = Store(tmp_path / "src", fsync=False)
    ref = f"{tls_reg.host}/loop/tls:1"
    img = make_image(src, ref)
    with client.RegistrySession(tls_reg.host, cfg) as sess:
        assert sess.insecure
        assert sess.base == tls_reg.url  # plain HTTP tried first, then HTTPS
        out = io.StringIO()
        pushed = client.push(src, ref, config=cfg, reporter=client.PlainReporter(out),
                             session=sess)
    assert pushed.digest == img.digest
    assert out.getvalue().splitlines()[-1] == (f"1: digest: {img.digest} size: "
                                               f"{len(img.manifest_bytes)}")
    dst = Store(tmp_path / "dst", fsync=False)
    pulled = client.pull(dst, ref, config=cfg, reporter=client.NullReporter())
    assert pulled.digest == img.digest
    assert dst.resolve(ref).manifest_bytes == img.manifest_bytes


def test_a_loopback_registry_over_plain_http_is_tried_first(plain_reg, cfg):
    with client.RegistrySession(f"localhost:{plain_reg.port}", cfg) as sess:
        assert sess.base == f"http://localhost:{plain_reg.port}"


def test_nothing_listening_is_unreachable_with_both_attempts_named(cfg):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    with client.RegistrySession(f"127.0.0.1:{port}", cfg) as sess, \
            pytest.raises(client.RegistryUnreachable) as exc:
        _ = sess.base
    assert f"http://127.0.0.1:{port}/v2/" in str(exc.value)
    assert f"https://127.0.0.1:{port}/v2/" in str(exc.value)


def test_speaks_plain_http_tells_the_servers_apart(plain_reg, tls_reg):
    assert client.speaks_plain_http("127.0.0.1", plain_reg.port)
    assert not client.speaks_plain_http("127.0.0.1", tls_reg.port)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    assert not client.speaks_plain_http("127.0.0.1", port)


def test_certs_d_lives_next_to_the_config_file(tmp_path, pki, cfg):
    assert cfg.certs_dir == str(tmp_path / "certs.d")
    assert cfg.certs("myhost:5000").ca_files == ()
    d = tmp_path / "certs.d" / "myhost:5000"
    d.mkdir(parents=True)
    shutil.copy(pki.ca_crt, d / "ca.crt")
    shutil.copy(pki.ca_crt, d / "b-extra.crt")
    shutil.copy(pki.client_crt, d / "me.cert")
    shutil.copy(pki.client_key, d / "me.key")
    certs = cfg.certs("myhost:5000")
    assert certs.ca_files == (str(d / "b-extra.crt"), str(d / "ca.crt"))
    assert certs.client_pairs == ((str(d / "me.cert"), str(d / "me.key")),)
    assert cfg.certs("myhost:5001").ca_files == ()  # per HOST:PORT, as docker
    ctx = client.ssl_context(cfg, "myhost:5000", verify=True)
    subjects = [dict(x[0] for x in c["subject"]) for c in ctx.get_ca_certs()]
    assert {"commonName": "imagesim test CA"} in subjects


@pytest.mark.parametrize(("present", "message"), [
    (["me.cert"], "missing key me.key for client certificate"),
    (["me.key"], "missing client certificate me.cert for key"),
])
def test_an_unpaired_client_file_is_a_config_error(tmp_path, pki, cfg, present, message):
    d = tmp_path / "certs.d" / "h:1"
    d.mkdir(parents=True)
    for name in present:
        shutil.copy(pki.client_crt if name.endswith(".cert") else pki.client_key, d / name)
    with pytest.raises(ConfigInvalid, match=message):
        cfg.certs("h:1")
    with pytest.raises(ConfigInvalid, match=message):
        client.RegistrySession("h:1", cfg)


def test_a_ca_file_that_is_not_a_certificate_is_a_config_error(tmp_path, cfg):
    d = tmp_path / "certs.d" / "h:1"
    d.mkdir(parents=True)
    (d / "ca.crt").write_text("not a certificate\n")
    with pytest.raises(ConfigInvalid, match=r"certs.d/h:1: cannot load a certificate"):
        client.ssl_context(cfg, "h:1", verify=True)


def test_an_encrypted_client_key_is_a_config_error_not_a_prompt(tmp_path, pki, cfg):
    d = tmp_path / "certs.d" / "h:1"
    d.mkdir(parents=True)
    shutil.copy(pki.client_crt, d / "me.cert")
    subprocess.run([need_tool("openssl"), "pkey", "-in", str(pki.client_key), "-aes256",
                    "-passout", "pass:secret", "-out", str(d / "me.key")], check=True,
                   capture_output=True)
    with pytest.raises(ConfigInvalid, match="the client key is encrypted"):
        client.ssl_context(cfg, "h:1", verify=True)


def test_check_tls_files(tmp_path, pki):
    check_tls_files(None, None)
    check_tls_files(pki.server_crt, pki.server_key)
    with pytest.raises(ValueError, match="both a certificate and its key"):
        check_tls_files(pki.server_crt, None)
    with pytest.raises(ValueError, match="cannot use TLS certificate"):
        check_tls_files(pki.server_crt, pki.client_key)  # not this certificate's key
    with pytest.raises(FileNotFoundError) as exc:
        check_tls_files(tmp_path / "missing.crt", pki.server_key)
    assert exc.value.errno == errno.ENOENT
    encrypted = tmp_path / "encrypted.key"
    subprocess.run([need_tool("openssl"), "pkey", "-in", str(pki.server_key), "-aes256",
                    "-passout", "pass:secret", "-out", str(encrypted)], check=True,
                   capture_output=True)
    with pytest.raises(ValueError, match="is encrypted: give an unencrypted key"):
        check_tls_files(pki.server_crt, encrypted)  # no prompt on the terminal


def test_serve_refuses_a_half_or_wrong_tls_pair(tmp_path, pki, capsys):
    root = ["--root", str(tmp_path / "store"), "registry", "serve", "--addr", "127.0.0.1:0"]
    assert main([*root, "--tls-cert", str(pki.server_crt)]) == 125
    assert "--tls-cert and --tls-key go together" in capsys.readouterr().err
    assert main([*root, "--tls-cert", str(pki.server_crt), "--tls-key",
                 str(pki.client_key)]) == 125
    assert "cannot use TLS certificate" in capsys.readouterr().err
    assert main([*root, "--tls-cert", str(tmp_path / "nope.crt"), "--tls-key",
                 str(pki.server_key)]) == 125
    assert "does not exist" in capsys.readouterr().err


def test_serve_help_documents_tls():
    from click.testing import CliRunner

    from imagesim.cli import cli
    out = CliRunner().invoke(cli, ["registry", "serve", "--help"]).output
    assert "--tls-cert FILE" in out and "--tls-key FILE" in out
    assert "certs.d/HOST:PORT/ca.crt" in out
    out = CliRunner().invoke(cli, ["login", "--help"]).output
    assert "~/.config/imagesim/certs.d/HOST:PORT/ca.crt" in out
    assert "insecure-registries" in out


def test_the_tls_server_stores_the_exact_bytes_pushed(tls_reg, pki):
    # the TLS server stores exactly the bytes pushed: the digest of a blob round-trips
    data = os.urandom(10_000)
    d = Digest.of(data)
    with httpx.Client(base_url=tls_reg.url, verify=trusting(pki), trust_env=False) as c:
        resp = c.post(f"/v2/raw/blobs/uploads/?digest={d}", content=data)
        assert resp.status_code == 201
        assert resp.headers["docker-content-digest"] == str(d)
        assert c.get(f"/v2/raw/blobs/{d}").content == data


def test_a_background_server_with_tls(tmp_path, pki, cfg):
    # what `imagesim run -d -p PORT:5000 -e REGISTRY_HTTP_TLS_CERTIFICATE=... registry` starts
    from imagesim.registry.server import start_background, stop_background
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    pid = start_background(f"127.0.0.1:{port}", tmp_path / "bg", tls_cert=pki.server_crt,
                           tls_key=pki.server_key, log_path=tmp_path / "bg.log")
    try:
        with httpx.Client(verify=trusting(pki), trust_env=False) as c:
            assert c.get(f"https://127.0.0.1:{port}/v2/").status_code == 200
        with pytest.raises(OSError) as exc:
            start_background(f"127.0.0.1:{port}", tmp_path / "bg2", tls_cert=pki.server_crt,
                             tls_key=pki.server_key)
        assert exc.value.errno == errno.EADDRINUSE
    finally:
        assert stop_background(pid)
    with pytest.raises(ValueError, match="cannot use TLS certificate"):
        start_background(f"127.0.0.1:{port}", tmp_path / "bg3", tls_cert=pki.server_crt,
                         tls_key=pki.client_key)
