"""Registry upload sessions that are never finished expire, as the reference registry's
upload purging does: an expired session answers BLOB_UPLOAD_UNKNOWN (404) to every method,
and its files are deleted at startup, periodically while the server runs, and by
``imagesim registry gc``. Real HTTP on 127.0.0.1; ages are made by setting file mtimes."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time

import httpx
import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import hardening_kit as kit

from imagesim.registry.server import ServerThread, upload_purging
from imagesim.registry.storage import RegistryStorage, parse_duration


def _age(storage_root: str, upload_id: str, seconds: float) -> None:
    """Make a session look idle for ``seconds`` (its directory and both files)."""
    d = os.path.join(storage_root, "uploads", upload_id)
    when = time.time() - seconds
    for p in (os.path.join(d, "data"), os.path.join(d, "info.json"), d):
        os.utime(p, (when, when))


def _start(client: httpx.Client, url: str, name: str = "lib/app") -> str:
    r = client.post(f"{url}/v2/{name}/blobs/uploads/")
    assert r.status_code == 202, r.text
    return r.headers["Docker-Upload-UUID"]


def _unknown(r: httpx.Response) -> bool:
    return r.status_code == 404 and \
        [e["code"] for e in r.json()["errors"]] == ["BLOB_UPLOAD_UNKNOWN"]


def test_expired_session_is_unknown_to_every_method(tmp_path):
    root = str(tmp_path / "reg")
    data = b"some layer bytes\n" * 100
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    with ServerThread(root, fsync=False, upload_expiry=600) as srv, httpx.Client() as c:
        old = _start(c, srv.url)
        r = c.patch(f"{srv.url}/v2/lib/app/blobs/uploads/{old}", content=data[:500])
        assert r.status_code == 202
        fresh = _start(c, srv.url)
        c.patch(f"{srv.url}/v2/lib/app/blobs/uploads/{fresh}", content=data[:500])
        _age(root, old, 601)
        _age(root, fresh, 590)  # idle, but not for long enough
        base = f"{srv.url}/v2/lib/app/blobs/uploads/{old}"
        assert _unknown(c.get(base))
        assert not os.path.exists(os.path.join(root, "uploads", old))
        assert _unknown(c.patch(base, content=b"more"))
        assert _unknown(c.put(f"{base}?digest={digest}", content=data[500:]))
        assert _unknown(c.delete(base))
        # the session that was active recently goes on as if nothing happened
        r = c.put(f"{srv.url}/v2/lib/app/blobs/uploads/{fresh}?digest={digest}",
                  content=data[500:])
        assert r.status_code == 201, r.text
        assert c.get(f"{srv.url}/v2/lib/app/blobs/{digest}").content == data
        assert os.listdir(os.path.join(root, "uploads")) == []


def test_a_running_server_purges_periodically(tmp_path):
    root = str(tmp_path / "reg")
    with ServerThread(root, fsync=False, upload_expiry=600,
                      upload_purge_interval=0.05) as srv, httpx.Client() as c:
        stale = [_start(c, srv.url) for _ in range(3)]
        active = _start(c, srv.url, "other/repo")
        for upload_id in stale:
            _age(root, upload_id, 3600)
        _age(root, active, 60)
        time.sleep(0.06)  # the purge interval (the ages above come from the mtimes)
        # a request about something else entirely: the purge is due, and runs
        assert c.get(f"{srv.url}/v2/lib/app/tags/list").status_code == 404
        assert os.listdir(os.path.join(root, "uploads")) == [active]
        r = c.get(f"{srv.url}/v2/other/repo/blobs/uploads/{active}")
        assert r.status_code == 204


def test_startup_purges_what_a_previous_server_left(tmp_path):
    root = str(tmp_path / "reg")
    storage = RegistryStorage(root, fsync=False)
    left = [storage.start_upload("lib/app").id for _ in range(2)]
    recent = storage.start_upload("lib/app").id
    # a stray file in uploads/ (not a session) that is old is removed too
    stray = os.path.join(root, "uploads", "junk")
    with open(stray, "wb") as f:
        f.write(b"x")
    old = time.time() - 2 * 86400
    os.utime(stray, (old, old))
    for upload_id in left:
        _age(root, upload_id, 86400 + 1)  # the default expiry is one day
    with ServerThread(root, fsync=False):
        # no request made: the purge ran when the server started
        assert os.listdir(os.path.join(root, "uploads")) == [recent]


def test_registry_gc_removes_expired_sessions(tmp_path):
    root = str(tmp_path / "reg")
    storage = RegistryStorage(root, fsync=False)
    old = storage.start_upload("lib/app")
    with open(old.data_path, "wb") as f:
        f.write(b"half a layer")
    _age(root, old.id, 7200)
    young = storage.start_upload("lib/app").id
    _age(root, young, 600)
    r = kit.cli(str(tmp_path / "store"), "registry", "gc", "--root", root, "--dry-run")
    assert "1 stale uploads removed" in r.stdout
    assert sorted(os.listdir(os.path.join(root, "uploads"))) == sorted([old.id, young])
    r = kit.cli(str(tmp_path / "store"), "registry", "gc", "--root", root)
    assert "1 stale uploads removed" in r.stdout
    assert os.listdir(os.path.join(root, "uploads")) == [young]
    # a storage with a shorter expiry lets gc take sessions idle for less than an hour
    assert RegistryStorage(root, fsync=False, upload_expiry=300).gc().uploads_removed == 1
    assert os.listdir(os.path.join(root, "uploads")) == []


@pytest.mark.parametrize("how", ["flag", "env"])
def test_registry_serve_expires_uploads(tmp_path, how):
    """``imagesim registry serve`` as a real process, with ``--upload-expiry 30m`` or
    configured the way docker-registry is: ``REGISTRY_STORAGE_MAINTENANCE_UPLOADPURGING_AGE``."""
    root = str(tmp_path / "reg")
    storage = RegistryStorage(root, fsync=False)
    ids = {name: storage.start_upload("lib/app").id for name in ("old", "young")}
    port = kit.free_port()
    if how == "env":
        env = kit.env_for(str(tmp_path / "store"),
                          REGISTRY_STORAGE_MAINTENANCE_UPLOADPURGING_AGE="30m",
                          REGISTRY_STORAGE_MAINTENANCE_UPLOADPURGING_INTERVAL="1h")
        flags = []
    else:
        env = kit.env_for(str(tmp_path / "store"))
        flags = ["--upload-expiry", "30m", "--upload-purge-interval", "1h"]
    proc = subprocess.Popen([*kit.CLI, "registry", "serve", "--addr", f"127.0.0.1:{port}",
                             "--root", root, "--quiet", *flags], env=env, cwd=kit.REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        url = f"http://127.0.0.1:{port}"
        with httpx.Client() as c:
            deadline = time.monotonic() + 30
            while True:
                try:
                    c.get(f"{url}/v2/")
                    break
                except httpx.TransportError:
                    assert proc.poll() is None, proc.stderr.read()
                    assert time.monotonic() < deadline, "registry did not come up"
                    time.sleep(0.05)
            _age(root, ids["old"], 31 * 60)
            _age(root, ids["young"], 29 * 60)
            assert _unknown(c.get(f"{url}/v2/lib/app/blobs/uploads/{ids['old']}"))
            assert c.get(f"{url}/v2/lib/app/blobs/uploads/{ids['young']}").status_code == 204
    finally:
        proc.terminate()
        proc.wait(timeout=20)
        proc.stderr.close()


def test_registry_serve_refuses_a_bad_duration(tmp_path):
    r = kit.cli(str(tmp_path / "store"), "registry", "serve", "--root", str(tmp_path / "reg"),
                "--upload-expiry", "soon", check=False, timeout=30)
    assert r.returncode == 125  # docker's status for a usage error
    assert "--upload-expiry" in r.stderr and "invalid duration" in r.stderr


def test_purging_settings(monkeypatch):
    assert parse_duration("168h") == 168 * 3600
    assert parse_duration("1h30m") == 5400
    assert parse_duration("250ms") == 0.25
    assert parse_duration("45") == 45
    assert parse_duration("2d") == 2 * 86400
    for bad in ("", "h", "10x", "1h 30m", "-5s", "-1", "nan"):
        with pytest.raises(ValueError):
            parse_duration(bad)
    for key in ("AGE", "INTERVAL", "ENABLED"):
        monkeypatch.delenv(f"REGISTRY_STORAGE_MAINTENANCE_UPLOADPURGING_{key}", raising=False)
    assert upload_purging() == (86400, 3600)
    assert upload_purging(60, 5) == (60, 5)
    monkeypatch.setenv("REGISTRY_STORAGE_MAINTENANCE_UPLOADPURGING_AGE", "2h")
    assert upload_purging() == (7200, 3600)
    monkeypatch.setenv("REGISTRY_STORAGE_MAINTENANCE_UPLOADPURGING_ENABLED", "false")
    assert upload_purging() == (None, None)
    with pytest.raises(ValueError):
        upload_purging(0, 5)
    with pytest.raises(ValueError):
        RegistryStorage("/nonexistent-never-made", upload_expiry=0)
