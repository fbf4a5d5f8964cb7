"""The lesson's private-registry steps as real subprocesses of the CLI: a registry started in
the background (what `docker run -d -p 5000:5000 -v DIR:/tmp/registry registry` does),
pull, tag, push over plain HTTP, curl the catalog, remove the local tag, pull back."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest

from imagesim.registry.server import start_background, stop_background
from tests.conftest import need_tool

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def run(env: dict[str, str], *args: str, ok: bool = True) -> subprocess.CompletedProcess:
    r = subprocess.run([sys.executable, "-m", "imagesim", *args], env=env, capture_output=True,
                       text=True, timeout=120)
    if ok:
        assert r.returncode == 0, r.stderr
    return r


@pytest.fixture
def env(tmp_path):
    return dict(os.environ, IMAGESIM_ROOT=str(tmp_path / "store"),
                IMAGESIM_CONFIG=str(tmp_path / "config.json"),
                PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))


def test_private_registry_lesson(tmp_path, env):
    curl = need_tool("curl")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    host = f"127.0.0.1:{port}"
    regdir = tmp_path / "myregistry"
    pid = start_background(host, regdir)
    try:
        out = subprocess.run([curl, "-s", "-XGET", f"http://{host}/v2/_catalog"],
                             capture_output=True, text=True).stdout
        assert json.loads(out) == {"repositories": []}
        run(env, "pull", "ubuntu")
        run(env, "tag", "ubuntu", f"{host}/zzyyubuntu:1.2")
        r = run(env, "push", f"{host}/zzyyubuntu:1.2")
        lines = r.stdout.splitlines()
        assert lines[0] == f"The push refers to repository [{host}/zzyyubuntu]"
        assert all(x.endswith((": Preparing", ": Pushed")) for x in lines[1:-1])
        assert lines[-1].startswith("1.2: digest: sha256:")
        digest = lines[-1].split()[2]
        out = subprocess.run([curl, "-s", "-XGET", f"http://{host}/v2/_catalog"],
                             capture_output=True, text=True).stdout
        assert json.loads(out) == {"repositories": ["zzyyubuntu"]}
        # the registry's data lives in the bound host directory
        assert (regdir / "blobs" / "sha256" / digest.split(":")[1]).is_file()
        run(env, "rmi", f"{host}/zzyyubuntu:1.2")
        r = run(env, "pull", f"{host}/zzyyubuntu:1.2")
        assert f"Digest: {digest}" in r.stdout.splitlines()
        assert r.stdout.splitlines()[-1] == f"{host}/zzyyubuntu:1.2"
        assert "Already exists" in r.stdout  # the layers are shared with ubuntu
        # an image that is not in the local store: a clear error, nothing sent
        r = run(env, "push", f"{host}/nothing:1", ok=False)
        assert r.returncode == 1 and "No such image" in r.stderr
    finally:
        assert stop_background(pid)


def test_registry_serve_usage_errors(tmp_path, env):
    r = run(env, "registry", "serve", "--addr", "nonsense:port", ok=False)
    assert r.returncode == 125 and "invalid address" in r.stderr
    r = run(env, "registry", "serve", "--auth", "token", ok=False)
    assert r.returncode == 125 and "--htpasswd" in r.stderr
    r = run(env, "login", ok=False)
    assert r.returncode == 125
    r = run(env, "registry", "serve", "--upload-expiry", "5x", ok=False)
    assert r.returncode == 125 and "--upload-expiry" in r.stderr and "invalid duration" in r.stderr


def test_registry_serve_expires_unfinished_uploads(tmp_path, env):
    """`registry serve --upload-expiry` purges an upload nobody finishes: its id then answers
    404 BLOB_UPLOAD_UNKNOWN, as the reference registry's upload purging does."""
    import time

    import httpx

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    base = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen(
        [sys.executable, "-m", "imagesim", "registry", "serve", "-q", "--addr",
         f"127.0.0.1:{port}", "--root", str(tmp_path / "reg"), "--upload-expiry", "1s",
         "--upload-purge-interval", "200ms"], env=env, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                httpx.get(f"{base}/v2/", timeout=1)
                break
            except httpx.TransportError:
                assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
                assert time.monotonic() < deadline, "registry did not start"
                time.sleep(0.1)
        started = httpx.post(f"{base}/v2/left/blobs/uploads/", timeout=5)
        assert started.status_code == 202
        location = str(httpx.URL(base).join(started.headers["Location"]))
        assert httpx.get(location, timeout=5).status_code == 204
        while True:
            status = httpx.get(location, timeout=5)
            if status.status_code == 404:
                break
            assert time.monotonic() < deadline + 20, "upload was never purged"
            time.sleep(0.2)
        assert status.json()["errors"][0]["code"] == "BLOB_UPLOAD_UNKNOWN"
    finally:
        proc.terminate()
        proc.wait(timeout=10)
