"""A ``registry`` container configured through the reference registry's environment, as
docker's "Deploy a registry server" page runs it: TLS files and an htpasswd file from a bound
host directory, the listen port from ``REGISTRY_HTTP_ADDR``. Real server processes on
127.0.0.1, real certificates from openssl."""

from __future__ import annotations

import json
import socket
import ssl
import subprocess
import urllib.error
import urllib.request

import pytest
from click.testing import CliRunner

from imagesim.cli import main
from imagesim.container import ContainerStore, CreateOptions
from imagesim.store import Store
from tests.conftest import need_tool
from tests.interop.tls_pki import make_pki


def sim(root, *args) -> str:
    runner = CliRunner()
    with runner.isolation() as streams:
        code = main(["--root", str(root), *args])
    out, err = streams[0].getvalue().decode(), streams[1].getvalue().decode()
    assert code == 0, f"{args}: exit {code}\n{out}\n{err}"
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_registry_with_tls_and_htpasswd_from_its_environment(tmp_path):
    pki = make_pki(need_tool("openssl"), tmp_path / "pki")
    htpasswd = need_tool("htpasswd")
    certs, auth = tmp_path / "certs", tmp_path / "auth"
    certs.mkdir()
    auth.mkdir()
    (certs / "domain.crt").write_bytes(pki.server_crt.read_bytes())
    (certs / "domain.key").write_bytes(pki.server_key.read_bytes())
    subprocess.run([htpasswd, "-Bbc", str(auth / "htpasswd"), "testuser", "testpassword"],
                   check=True, capture_output=True)
    root, port = tmp_path / "root", free_port()
    sim(root, "run", "-d", "-p", f"{port}:443", "--name", "reg",
        "-v", f"{certs}:/certs", "-v", f"{auth}:/auth",
        "-e", "REGISTRY_HTTP_ADDR=0.0.0.0:443",
        "-e", "REGISTRY_HTTP_TLS_CERTIFICATE=/certs/domain.crt",
        "-e", "REGISTRY_HTTP_TLS_KEY=/certs/domain.key",
        "-e", "REGISTRY_AUTH=htpasswd", "-e", "REGISTRY_AUTH_HTPASSWD_REALM=Registry Realm",
        "-e", "REGISTRY_AUTH_HTPASSWD_PATH=/auth/htpasswd", "registry")
    try:
        ctx = ssl.create_default_context(cafile=str(pki.ca_crt))
        url = f"https://127.0.0.1:{port}/v2/"
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(url, context=ctx, timeout=10)
        assert e.value.code == 401
        assert e.value.headers["WWW-Authenticate"].startswith("Basic realm=")
        req = urllib.request.Request(url, headers={
            "Authorization": "Basic dGVzdHVzZXI6dGVzdHBhc3N3b3Jk"})  # testuser:testpassword
        with urllib.request.urlopen(req, context=ctx, timeout=10) as r:
            assert r.status == 200 and json.loads(r.read()) == {}
        with pytest.raises(OSError):  # plain HTTP is not served there
            urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/", timeout=5)
    finally:
        sim(root, "rm", "-f", "reg")


def test_host_file_maps_through_mounts_or_copies_out_of_the_view(tmp_path):
    from test_container import make_image

    store = Store(tmp_path / "root", fsync=False)
    make_image(store, tmp_path)
    cs = ContainerStore(store)
    host = tmp_path / "conf"
    host.mkdir()
    c = cs.create("base:1", CreateOptions(volumes=(f"{host}:/etc/app", "named:/srv/data")))
    assert c.host_file("/etc/app/x.pem") == f"{host}/x.pem"
    vol = next(m for m in c.mounts if m.destination == "/srv/data")
    assert c.host_file("/srv/data/sub/k") == f"{vol.source}/sub/k"
    copied = c.host_file("/etc/hosts")           # only in the image: copied out
    assert copied.startswith(c.directory)
    with open(copied, "rb") as f:
        assert f.read() == b"127.0.0.1 localhost\n"
    with pytest.raises(FileNotFoundError):
        c.host_file("/etc/nope")
