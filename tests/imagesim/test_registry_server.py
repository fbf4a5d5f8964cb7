"""The registry server against the OCI distribution spec, over real HTTP on 127.0.0.1."""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import socket
import subprocess
import threading
import time

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from imagesim.digest import Digest
from imagesim.registry.server import ServerThread, parse_addr, start_background, stop_background
from imagesim.registry.storage import (
    DOCKER_LIST,
    DOCKER_MANIFEST,
    MANIFEST_MAX,
    OCI_INDEX,
    OCI_MANIFEST,
    RegistryStorage,
    check_name,
)

CONFIG_TYPE = "application/vnd.oci.image.config.v1+json"
LAYER_TYPE = "application/vnd.oci.image.layer.v1.tar"


def dg(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@pytest.fixture
def reg(tmp_path):
    with ServerThread(tmp_path / "reg", fsync=False) as srv:
        srv.root = tmp_path / "reg"
        yield srv


@pytest.fixture
def http(reg):
    with httpx.Client(base_url=reg.url, timeout=30) as c:
        yield c


def errors(resp: httpx.Response) -> list[str]:
    return [e["code"] for e in resp.json()["errors"]]


def upload(http, name: str, data: bytes) -> str:
    r = http.post(f"/v2/{name}/blobs/uploads/", params={"digest": dg(data)}, content=data)
    assert r.status_code == 201, r.text
    return dg(data)


def image(http, name: str, tag: str, layers: list[bytes], *, arch: str = "amd64",
          media_type: str = OCI_MANIFEST) -> tuple[bytes, str]:
    cfg = json.dumps({"architecture": arch, "os": "linux",
                      "rootfs": {"type": "layers", "diff_ids": [dg(x) for x in layers]}}
                     ).encode()
    upload(http, name, cfg)
    for layer in layers:
        upload(http, name, layer)
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": media_type,
        "config": {"mediaType": CONFIG_TYPE, "digest": dg(cfg), "size": len(cfg)},
        "layers": [{"mediaType": LAYER_TYPE, "digest": dg(x), "size": len(x)}
                   for x in layers]}, indent=3).encode()  # odd formatting: bytes must survive
    r = http.put(f"/v2/{name}/manifests/{tag}", content=manifest,
                 headers={"Content-Type": media_type})
    assert r.status_code == 201, r.text
    return manifest, dg(manifest)


def blob_files(root) -> list[str]:
    base = os.path.join(root, "blobs", "sha256")
    return sorted(os.listdir(base)) if os.path.isdir(base) else []


# -- base, names --------------------------------------------------------------------------------

def test_base_endpoint_and_version_header(http):
    r = http.get("/v2/")
    assert r.status_code == 200
    assert r.headers["Docker-Distribution-API-Version"] == "registry/2.0"
    assert r.json() == {}


@pytest.mark.parametrize("name", ["../x", "A/b", "Upper", "a//b", "-a", "a/", "a..b", "a/_x"])
def test_invalid_repository_names_are_refused(reg, name):
    # raw requests: an HTTP library would normalise "../x" away before sending it
    for method, path in (("GET", "tags/list"), ("POST", "blobs/uploads/"),
                         ("PUT", "manifests/latest")):
        out = _raw(reg, f"{method} /v2/{name}/{path} HTTP/1.1\r\nHost: x\r\n"
                        f"Content-Length: 0\r\nConnection: close\r\n\r\n".encode())
        head, _, body = out.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 400"), (method, head)
        assert [e["code"] for e in json.loads(body)["errors"]] == ["NAME_INVALID"]


def test_name_grammar_accepts_spec_examples():
    for name in ["a", "a/b", "library/ubuntu", "a-b/c__d/e.f", "a---b", "x1/y2/z3"]:
        assert check_name(name) == name
    with pytest.raises(Exception) as e:
        check_name("a" * 256)
    assert getattr(e.value, "code", None) == "NAME_INVALID"


def test_invalid_tag_is_refused(http):
    data = b"x"
    upload(http, "t", data)
    r = http.put("/v2/t/manifests/-bad", content=b"{}",
                 headers={"Content-Type": OCI_MANIFEST})
    assert r.status_code == 400
    assert errors(r) == ["TAG_INVALID"]


def test_unknown_method_is_unsupported(http):
    r = http.request("PATCH", "/v2/a/manifests/latest")
    assert r.status_code == 405
    assert errors(r) == ["UNSUPPORTED"]


# -- uploads ------------------------------------------------------------------------------------

def test_post_then_put_monolithic(http, reg):
    data = os.urandom(5000)
    r = http.post("/v2/a/blobs/uploads/")
    assert r.status_code == 202
    assert r.headers["Range"] == "0-0"
    uid = r.headers["Docker-Upload-UUID"]
    assert r.headers["Location"].endswith(f"/v2/a/blobs/uploads/{uid}")
    r = http.put(r.headers["Location"], params={"digest": dg(data)}, content=data)
    assert r.status_code == 201
    assert r.headers["Docker-Content-Digest"] == dg(data)
    assert r.headers["Location"].endswith(f"/v2/a/blobs/{dg(data)}")
    r = http.get(f"/v2/a/blobs/{dg(data)}")
    assert r.status_code == 200 and r.content == data
    assert r.headers["Docker-Content-Digest"] == dg(data)


def test_single_post_with_digest(http):
    data = b"single post"
    r = http.post("/v2/a/blobs/uploads/", params={"digest": dg(data)}, content=data)
    assert r.status_code == 201
    assert r.headers["Docker-Content-Digest"] == dg(data)
    assert http.head(f"/v2/a/blobs/{dg(data)}").headers["Content-Length"] == str(len(data))


@pytest.mark.parametrize("form", ["{a}-{b}", "bytes={a}-{b}", "bytes {a}-{b}/*", None])
def test_chunked_upload(http, reg, form):
    data = os.urandom(3000)
    loc = http.post("/v2/c/blobs/uploads/").headers["Location"]
    for start in range(0, 3000, 1024):
        chunk = data[start:start + 1024]
        headers = {"Content-Type": "application/octet-stream"}
        if form:
            headers["Content-Range"] = form.format(a=start, b=start + len(chunk) - 1)
        r = http.patch(loc, content=chunk, headers=headers)
        assert r.status_code == 202, r.text
        assert r.headers["Range"] == f"0-{start + len(chunk) - 1}"
        loc = r.headers["Location"]
    r = http.get(loc)
    assert r.status_code == 204
    assert r.headers["Range"] == "0-2999"
    r = http.put(loc, params={"digest": dg(data)})
    assert r.status_code == 201
    assert http.get(f"/v2/c/blobs/{dg(data)}").content == data
    assert os.listdir(os.path.join(reg.root, "uploads")) == []


def test_chunk_out_of_order_is_416_and_keeps_the_session(http):
    loc = http.post("/v2/c/blobs/uploads/").headers["Location"]
    assert http.patch(loc, content=b"abcd", headers={"Content-Range": "0-3"}).status_code == 202
    r = http.patch(loc, content=b"efgh", headers={"Content-Range": "10-13"})
    assert r.status_code == 416
    assert r.headers["Range"] == "0-3"
    assert errors(r) == ["BLOB_UPLOAD_INVALID"]
    r = http.put(loc, params={"digest": dg(b"abcdefgh")}, content=b"efgh",
                 headers={"Content-Range": "4-7"})
    assert r.status_code == 201


def test_final_chunk_in_put(http):
    loc = http.post("/v2/c/blobs/uploads/").headers["Location"]
    http.patch(loc, content=b"first-")
    r = http.put(loc, params={"digest": dg(b"first-last")}, content=b"last")
    assert r.status_code == 201
    assert http.get(f"/v2/c/blobs/{dg(b'first-last')}").content == b"first-last"


def test_wrong_digest_stores_nothing(http, reg):
    before = blob_files(reg.root)
    r = http.post("/v2/a/blobs/uploads/", params={"digest": dg(b"other")}, content=b"data")
    assert r.status_code == 400
    assert errors(r) == ["DIGEST_INVALID"]
    loc = http.post("/v2/a/blobs/uploads/").headers["Location"]
    r = http.put(loc, params={"digest": dg(b"other")}, content=b"data")
    assert r.status_code == 400 and errors(r) == ["DIGEST_INVALID"]
    assert blob_files(reg.root) == before
    assert http.head(f"/v2/a/blobs/{dg(b'data')}").status_code == 404
    assert http.head(f"/v2/a/blobs/{dg(b'other')}").status_code == 404


def test_malformed_digest_is_digest_invalid(http):
    r = http.post("/v2/a/blobs/uploads/", params={"digest": "sha256:../../etc"}, content=b"x")
    assert r.status_code == 400 and errors(r) == ["DIGEST_INVALID"]
    r = http.get("/v2/a/blobs/sha256:zz")
    assert r.status_code == 400 and errors(r) == ["DIGEST_INVALID"]


def test_put_without_digest_is_refused(http):
    loc = http.post("/v2/a/blobs/uploads/").headers["Location"]
    r = http.put(loc, content=b"x")
    assert r.status_code == 400 and errors(r) == ["DIGEST_INVALID"]


@pytest.mark.parametrize("uid", ["0b6e8f3e-6a0e-4d38-9d1c-1c9c2b8e9a11", "not-a-uuid",
                                 "%2E%2E"])
def test_unknown_upload_id(http, uid):
    for method in ("GET", "PATCH", "PUT", "DELETE"):
        r = http.request(method, f"/v2/a/blobs/uploads/{uid}",
                         params={"digest": dg(b"")} if method == "PUT" else None)
        assert r.status_code == 404, method
        assert errors(r) == ["BLOB_UPLOAD_UNKNOWN"]


def test_upload_id_of_another_repository_is_unknown(http):
    loc = http.post("/v2/a/blobs/uploads/").headers["Location"]
    uid = loc.rsplit("/", 1)[1]
    r = http.get(f"/v2/b/blobs/uploads/{uid}")
    assert r.status_code == 404 and errors(r) == ["BLOB_UPLOAD_UNKNOWN"]


def test_cancel_upload(http):
    loc = http.post("/v2/a/blobs/uploads/").headers["Location"]
    http.patch(loc, content=b"abc")
    assert http.delete(loc).status_code == 204
    assert http.get(loc).status_code == 404
    assert http.put(loc, params={"digest": dg(b"abc")}).status_code == 404


def test_replayed_upload_id_after_commit_is_unknown(http):
    loc = http.post("/v2/a/blobs/uploads/").headers["Location"]
    assert http.put(loc, params={"digest": dg(b"abc")}, content=b"abc").status_code == 201
    r = http.put(loc, params={"digest": dg(b"abc")}, content=b"abc")
    assert r.status_code == 404 and errors(r) == ["BLOB_UPLOAD_UNKNOWN"]


def _raw(reg, request: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", reg.port), timeout=10) as s:
        s.sendall(request)
        s.shutdown(socket.SHUT_WR)
        out = b""
        while chunk := s.recv(65536):
            out += chunk
        return out


def test_truncated_upload_leaves_nothing(http, reg):
    loc = http.post("/v2/t/blobs/uploads/").headers["Location"]
    path = httpx.URL(loc).raw_path.decode()
    data = b"x" * 1000
    # promise 1000 bytes, send 400, then hang up: the PUT must not create the blob
    _raw(reg, f"PUT {path}?digest={dg(data)} HTTP/1.1\r\nHost: x\r\n"
              f"Content-Length: 1000\r\n\r\n".encode() + data[:400])
    time.sleep(0.2)
    assert http.head(f"/v2/t/blobs/{dg(data)}").status_code == 404
    assert dg(data)[7:] not in blob_files(reg.root)
    r = http.get(loc)
    assert r.status_code == 204 and r.headers["Range"] == "0-0"  # the chunk was rolled back
    assert http.put(loc, params={"digest": dg(data)}, content=data).status_code == 201


def test_dropped_patch_rolls_back_the_chunk(http, reg):
    loc = http.post("/v2/t/blobs/uploads/").headers["Location"]
    assert http.patch(loc, content=b"a" * 100).status_code == 202
    path = httpx.URL(loc).raw_path.decode()
    _raw(reg, f"PATCH {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n".encode()
         + b"b" * 1234)
    time.sleep(0.2)
    r = http.get(loc)
    assert r.headers["Range"] == "0-99"
    r = http.patch(loc, content=b"b" * 50, headers={"Content-Range": "100-149"})
    assert r.status_code == 202
    want = b"a" * 100 + b"b" * 50
    assert http.put(loc, params={"digest": dg(want)}).status_code == 201


def test_concurrent_pushes_of_the_same_blob(http, reg):
    data = os.urandom(2 << 20)
    results = []

    def push():
        with httpx.Client(base_url=reg.url, timeout=30) as c:
            loc = c.post("/v2/same/blobs/uploads/").headers["Location"]
            results.append(c.put(loc, params={"digest": dg(data)}, content=data).status_code)

    threads = [threading.Thread(target=push) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [201] * 6
    assert blob_files(reg.root) == [dg(data)[7:]]
    assert http.get(f"/v2/same/blobs/{dg(data)}").content == data
    assert os.listdir(os.path.join(reg.root, "tmp")) == []
    assert os.listdir(os.path.join(reg.root, "uploads")) == []


# -- blobs -------------------------------------------------------------------------------------

def test_blob_range_requests(http):
    data = bytes(range(256)) * 10
    d = upload(http, "r", data)
    r = http.get(f"/v2/r/blobs/{d}", headers={"Range": "bytes=10-19"})
    assert r.status_code == 206
    assert r.content == data[10:20]
    assert r.headers["Content-Range"] == f"bytes 10-19/{len(data)}"
    r = http.get(f"/v2/r/blobs/{d}", headers={"Range": "bytes=2550-"})
    assert r.status_code == 206 and r.content == data[2550:]
    r = http.get(f"/v2/r/blobs/{d}", headers={"Range": "bytes=-5"})
    assert r.content == data[-5:]
    r = http.get(f"/v2/r/blobs/{d}", headers={"Range": "bytes=5000-6000"})
    assert r.status_code == 416
    assert r.headers["Content-Range"] == f"bytes */{len(data)}"


def test_blob_head_get_delete_and_unknown(http):
    d = upload(http, "r", b"hello")
    r = http.head(f"/v2/r/blobs/{d}")
    assert r.status_code == 200
    assert r.headers["Content-Length"] == "5" and r.headers["Docker-Content-Digest"] == d
    assert http.get(f"/v2/other/blobs/{d}").status_code == 404  # not linked there
    assert http.delete(f"/v2/r/blobs/{d}").status_code == 202
    r = http.get(f"/v2/r/blobs/{d}")
    assert r.status_code == 404 and errors(r) == ["BLOB_UNKNOWN"]
    assert http.delete(f"/v2/r/blobs/{d}").status_code == 404


def test_cross_repository_mount(http):
    d = upload(http, "src/repo", b"shared layer")
    r = http.post("/v2/dst/blobs/uploads/", params={"mount": d, "from": "src/repo"})
    assert r.status_code == 201
    assert r.headers["Docker-Content-Digest"] == d
    assert r.headers["Location"].endswith(f"/v2/dst/blobs/{d}")
    assert http.get(f"/v2/dst/blobs/{d}").content == b"shared layer"
    # not in the source: the registry falls back to a normal upload session
    other = dg(b"absent")
    r = http.post("/v2/dst/blobs/uploads/", params={"mount": other, "from": "src/repo"})
    assert r.status_code == 202 and "Docker-Upload-UUID" in r.headers


# -- manifests ---------------------------------------------------------------------------------

def test_manifest_roundtrip_exact_bytes(http):
    manifest, d = image(http, "m/n", "v1", [b"layer one", b"layer two"])
    for ref in ("v1", d):
        r = http.get(f"/v2/m/n/manifests/{ref}", headers={"Accept": OCI_MANIFEST})
        assert r.status_code == 200
        assert r.content == manifest
        assert r.headers["Content-Type"] == OCI_MANIFEST
        assert r.headers["Docker-Content-Digest"] == d
        h = http.head(f"/v2/m/n/manifests/{ref}", headers={"Accept": OCI_MANIFEST})
        assert h.status_code == 200 and h.headers["Content-Length"] == str(len(manifest))
        assert h.headers["Docker-Content-Digest"] == d


def test_manifest_put_response_headers(http):
    upload(http, "p", b"cfg")
    m = json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                    "config": {"mediaType": CONFIG_TYPE, "digest": dg(b"cfg"), "size": 3},
                    "layers": []}).encode()
    r = http.put("/v2/p/manifests/latest", content=m, headers={"Content-Type": OCI_MANIFEST})
    assert r.status_code == 201
    assert r.headers["Docker-Content-Digest"] == dg(m)
    assert r.headers["Location"].endswith(f"/v2/p/manifests/{dg(m)}")


def test_manifest_referencing_missing_blob(http):
    upload(http, "p", b"cfg")
    m = json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                    "config": {"mediaType": CONFIG_TYPE, "digest": dg(b"cfg"), "size": 3},
                    "layers": [{"mediaType": LAYER_TYPE, "digest": dg(b"nope"),
                                "size": 4}]}).encode()
    r = http.put("/v2/p/manifests/latest", content=m, headers={"Content-Type": OCI_MANIFEST})
    assert r.status_code == 404
    assert errors(r) == ["MANIFEST_BLOB_UNKNOWN"]
    assert http.get("/v2/p/manifests/latest").status_code == 404


@pytest.mark.parametrize("body,ctype", [
    (b"{not json", OCI_MANIFEST),
    (b"[]", OCI_MANIFEST),
    (json.dumps({"schemaVersion": 1, "mediaType": OCI_MANIFEST}).encode(), OCI_MANIFEST),
    (json.dumps({"schemaVersion": 2, "mediaType": "application/x-foo"}).encode(),
     "application/x-foo"),
    (json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": {},
                 "layers": []}).encode(), OCI_MANIFEST),
    (json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": []}).encode(),
     OCI_MANIFEST),  # Content-Type disagrees with the body
])
def test_invalid_manifests(http, reg, body, ctype):
    before = blob_files(reg.root)
    r = http.put("/v2/p/manifests/latest", content=body, headers={"Content-Type": ctype})
    assert r.status_code == 400
    assert errors(r) == ["MANIFEST_INVALID"]
    assert blob_files(reg.root) == before


def test_oversized_manifest_is_413(http, reg):
    body = b'{"schemaVersion":2,"x":"' + b"a" * MANIFEST_MAX + b'"}'
    r = http.put("/v2/p/manifests/big", content=body, headers={"Content-Type": OCI_MANIFEST})
    assert r.status_code == 413
    assert errors(r) == ["MANIFEST_INVALID"]
    assert blob_files(reg.root) == []


def test_manifest_put_by_wrong_digest(http):
    upload(http, "p", b"cfg")
    m = json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                    "config": {"mediaType": CONFIG_TYPE, "digest": dg(b"cfg"), "size": 3},
                    "layers": []}).encode()
    r = http.put(f"/v2/p/manifests/{dg(b'other')}", content=m,
                 headers={"Content-Type": OCI_MANIFEST})
    assert r.status_code == 400 and errors(r) == ["DIGEST_INVALID"]
    r = http.put(f"/v2/p/manifests/{dg(m)}", content=m, headers={"Content-Type": OCI_MANIFEST})
    assert r.status_code == 201


def test_manifest_unknown_and_name_unknown(http):
    r = http.get("/v2/nothing/manifests/latest")
    assert r.status_code == 404 and errors(r) == ["NAME_UNKNOWN"]
    image(http, "some", "v1", [b"l"])
    r = http.get("/v2/some/manifests/v2")
    assert r.status_code == 404 and errors(r) == ["MANIFEST_UNKNOWN"]
    r = http.get("/v2/nothing/tags/list")
    assert r.status_code == 404 and errors(r) == ["NAME_UNKNOWN"]


def test_manifest_delete_by_digest_and_by_tag(http):
    _, d = image(http, "del", "v1", [b"l1"])
    r = http.put("/v2/del/manifests/v2", content=http.get(f"/v2/del/manifests/{d}").content,
                 headers={"Content-Type": OCI_MANIFEST})
    assert r.status_code == 201
    assert http.delete("/v2/del/manifests/v2").status_code == 202
    assert http.get("/v2/del/tags/list").json()["tags"] == ["v1"]
    assert http.get(f"/v2/del/manifests/{d}").status_code == 200
    assert http.delete(f"/v2/del/manifests/{d}").status_code == 202
    assert http.get("/v2/del/manifests/v1").status_code == 404
    assert http.get(f"/v2/del/manifests/{d}").status_code == 404
    assert http.delete(f"/v2/del/manifests/{d}").status_code == 404


def _index(http, name: str, tag: str, media_type: str = OCI_INDEX) -> tuple[bytes, str, str]:
    amd, amd_d = image(http, name, "amd", [b"amd layer"], arch="amd64",
                       media_type=DOCKER_MANIFEST if media_type == DOCKER_LIST
                       else OCI_MANIFEST)
    arm, arm_d = image(http, name, "arm", [b"arm layer"], arch="arm64",
                       media_type=DOCKER_MANIFEST if media_type == DOCKER_LIST
                       else OCI_MANIFEST)
    child = DOCKER_MANIFEST if media_type == DOCKER_LIST else OCI_MANIFEST
    idx = json.dumps({"schemaVersion": 2, "mediaType": media_type, "manifests": [
        {"mediaType": child, "digest": arm_d, "size": len(arm),
         "platform": {"architecture": "arm64", "os": "linux"}},
        {"mediaType": child, "digest": amd_d, "size": len(amd),
         "platform": {"architecture": "amd64", "os": "linux"}}]}).encode()
    r = http.put(f"/v2/{name}/manifests/{tag}", content=idx, headers={"Content-Type": media_type})
    assert r.status_code == 201, r.text
    return idx, dg(idx), amd_d


def test_accept_header_chooses_the_manifest(http):
    idx, idx_d, amd_d = _index(http, "multi", "latest", DOCKER_LIST)
    # several Accept lines, as Go clients send them: the list is acceptable, so it is returned
    r = http.get("/v2/multi/manifests/latest", headers=[
        ("Accept", DOCKER_MANIFEST), ("Accept", DOCKER_LIST)])
    assert r.headers["Docker-Content-Digest"] == idx_d and r.content == idx
    # a client that cannot take a list gets the linux/amd64 manifest
    r = http.get("/v2/multi/manifests/latest", headers={"Accept": DOCKER_MANIFEST})
    assert r.status_code == 200
    assert r.headers["Docker-Content-Digest"] == amd_d
    assert r.headers["Content-Type"] == DOCKER_MANIFEST
    # nothing acceptable: MANIFEST_UNKNOWN
    r = http.get("/v2/multi/manifests/amd", headers={"Accept": OCI_MANIFEST})
    assert r.status_code == 404 and errors(r) == ["MANIFEST_UNKNOWN"]
    # comma-separated with q-values, and wildcard
    r = http.get("/v2/multi/manifests/amd",
                 headers={"Accept": f"{OCI_MANIFEST};q=0.5, {DOCKER_MANIFEST}"})
    assert r.status_code == 200
    assert http.get("/v2/multi/manifests/amd", headers={"Accept": "*/*"}).status_code == 200


def test_index_must_reference_known_manifests(http):
    idx = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [
        {"mediaType": OCI_MANIFEST, "digest": dg(b"nope"), "size": 4}]}).encode()
    r = http.put("/v2/i/manifests/x", content=idx, headers={"Content-Type": OCI_INDEX})
    assert r.status_code == 404 and errors(r) == ["MANIFEST_BLOB_UNKNOWN"]


# -- listing -----------------------------------------------------------------------------------

def test_catalog_and_tags_pagination(http):
    assert http.get("/v2/_catalog").json() == {"repositories": []}
    for name in ["b", "a", "c/d", "e"]:
        image(http, name, "t1", [name.encode()])
    for tag in ["t3", "t2", "t10"]:
        image(http, "a", tag, [b"a"])
    assert http.get("/v2/_catalog").json() == {"repositories": ["a", "b", "c/d", "e"]}
    r = http.get("/v2/_catalog", params={"n": 2})
    assert r.json() == {"repositories": ["a", "b"]}
    assert r.headers["Link"] == '</v2/_catalog?last=b&n=2>; rel="next"'
    r = http.get("/v2/_catalog", params={"n": 2, "last": "b"})
    assert r.json() == {"repositories": ["c/d", "e"]}
    assert "Link" not in r.headers
    r = http.get("/v2/a/tags/list")
    assert r.json() == {"name": "a", "tags": ["t1", "t10", "t2", "t3"]}
    r = http.get("/v2/a/tags/list", params={"n": 3})
    assert r.json()["tags"] == ["t1", "t10", "t2"]
    assert r.headers["Link"] == '</v2/a/tags/list?last=t2&n=3>; rel="next"'
    nxt = r.headers["Link"].split(";")[0].strip("<>")
    assert http.get(nxt).json()["tags"] == ["t3"]
    assert http.get("/v2/a/tags/list", params={"n": 0}).json()["tags"] == []
    r = http.get("/v2/_catalog", params={"n": "x"})
    assert r.status_code == 400 and errors(r) == ["PAGINATION_NUMBER_INVALID"]


def test_curl_catalog_and_tags(reg, http):
    image(http, "zzyyubuntu", "1.2", [b"x"])
    out = subprocess.run(["curl", "-s", "-XGET", f"{reg.url}/v2/_catalog"],
                         capture_output=True, text=True, check=True).stdout
    assert json.loads(out) == {"repositories": ["zzyyubuntu"]}
    out = subprocess.run(["curl", "-s", f"{reg.url}/v2/zzyyubuntu/tags/list"],
                         capture_output=True, text=True, check=True).stdout
    assert json.loads(out) == {"name": "zzyyubuntu", "tags": ["1.2"]}


# -- referrers ---------------------------------------------------------------------------------

def test_referrers_api(http):
    _, subject = image(http, "ref", "v1", [b"base"])
    empty = b"{}"
    upload(http, "ref", empty)
    refs = {}
    for kind in ("application/vnd.example.sbom", "application/vnd.example.sig"):
        m = json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "artifactType": kind,
                        "config": {"mediaType": "application/vnd.oci.empty.v1+json",
                                   "digest": dg(empty), "size": 2},
                        "layers": [],
                        "subject": {"mediaType": OCI_MANIFEST, "digest": subject,
                                    "size": 1},
                        "annotations": {"k": kind}}).encode()
        r = http.put(f"/v2/ref/manifests/{dg(m)}", content=m,
                     headers={"Content-Type": OCI_MANIFEST})
        assert r.status_code == 201
        assert r.headers["OCI-Subject"] == subject
        refs[kind] = (dg(m), len(m))
    r = http.get(f"/v2/ref/referrers/{subject}")
    assert r.status_code == 200
    assert r.headers["Content-Type"] == OCI_INDEX
    body = r.json()
    assert body["mediaType"] == OCI_INDEX and body["schemaVersion"] == 2
    got = {d["artifactType"]: (d["digest"], d["size"]) for d in body["manifests"]}
    assert got == refs
    r = http.get(f"/v2/ref/referrers/{subject}",
                 params={"artifactType": "application/vnd.example.sig"})
    assert r.headers["OCI-Filters-Applied"] == "artifactType"
    assert [d["digest"] for d in r.json()["manifests"]] == \
        [refs["application/vnd.example.sig"][0]]
    assert http.get(f"/v2/ref/referrers/{dg(b'none')}").json()["manifests"] == []
    http.delete(f"/v2/ref/manifests/{refs['application/vnd.example.sig'][0]}")
    assert len(http.get(f"/v2/ref/referrers/{subject}").json()["manifests"]) == 1


# -- robustness --------------------------------------------------------------------------------

def test_survives_a_tls_handshake_on_the_plain_port(reg, http):
    hello = bytes.fromhex("16030100a5010000a10303") + os.urandom(32) + b"\x00" * 40
    with socket.create_connection(("127.0.0.1", reg.port), timeout=5) as s:
        s.sendall(hello)
        s.settimeout(5)
        try:
            s.recv(1024)
        except (TimeoutError, ConnectionResetError):
            pass
    assert http.get("/v2/").status_code == 200


def test_slow_client_does_not_block_others(reg, http):
    loc = http.post("/v2/slow/blobs/uploads/").headers["Location"]
    path = httpx.URL(loc).raw_path.decode()
    s = socket.create_connection(("127.0.0.1", reg.port), timeout=5)
    try:
        s.sendall(f"PATCH {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n".encode()
                  + b"x" * 10)
        t0 = time.monotonic()
        assert http.get("/v2/").status_code == 200
        assert time.monotonic() - t0 < 2
    finally:
        s.close()


# -- storage and gc ----------------------------------------------------------------------------

def test_gc_removes_only_unreferenced_blobs(http, reg):
    _, keep = image(http, "g", "v1", [b"kept layer"])
    upload(http, "g", b"orphan")
    _, gone = image(http, "h", "v1", [b"deleted layer"])
    http.delete(f"/v2/h/manifests/{gone}")
    storage = RegistryStorage(reg.root, fsync=False)
    dry = storage.gc(dry_run=True)
    assert sorted(str(d) for d in dry.removed) == sorted(
        [dg(b"orphan"), dg(b"deleted layer"), gone,
         dg(json.dumps({"architecture": "amd64", "os": "linux", "rootfs": {
             "type": "layers", "diff_ids": [dg(b"deleted layer")]}}).encode())])
    assert len(blob_files(reg.root)) == 7
    result = storage.gc()
    assert result.removed == dry.removed
    assert len(blob_files(reg.root)) == 3
    assert http.get("/v2/g/manifests/v1").status_code == 200
    assert http.get(f"/v2/g/blobs/{dg(b'kept layer')}").content == b"kept layer"
    assert http.head(f"/v2/g/blobs/{dg(b'orphan')}").status_code == 404
    assert Digest.parse(keep) in storage.blobs


def test_gc_cli(reg, http, tmp_path):
    from imagesim.cli import main
    upload(http, "g", b"orphan")
    assert main(["registry", "gc", "--root", str(reg.root), "--dry-run"]) == 0
    assert len(blob_files(reg.root)) == 1
    assert main(["registry", "gc", "--root", str(reg.root)]) == 0
    assert blob_files(reg.root) == []


def test_parse_addr():
    assert parse_addr("127.0.0.1:5000") == ("127.0.0.1", 5000)
    assert parse_addr(":5000") == ("127.0.0.1", 5000)
    assert parse_addr("5000") == ("127.0.0.1", 5000)
    with pytest.raises(ValueError):
        parse_addr("host:port")


def test_background_server_start_and_stop(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    root = tmp_path / "bg"
    pid = start_background(f"127.0.0.1:{port}", root, log_path=tmp_path / "log")
    try:
        r = httpx.get(f"http://127.0.0.1:{port}/v2/_catalog")
        assert r.json() == {"repositories": []}
        with pytest.raises(OSError) as e:
            start_background(f"127.0.0.1:{port}", root)
        assert e.value.errno == 98  # EADDRINUSE
    finally:
        assert stop_background(pid) is True
    assert stop_background(pid) is False
    assert "GET /v2/_catalog" in (tmp_path / "log").read_text()  # the access log
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{port}/v2/")
    assert (root / "repositories").is_dir()


def test_patch_with_chunked_transfer_encoding(http):
    # docker's own client streams a PATCH without Content-Length (Transfer-Encoding: chunked)
    data = os.urandom(300_000)
    loc = http.post("/v2/te/blobs/uploads/").headers["Location"]

    def body():
        for i in range(0, len(data), 50_000):
            yield data[i:i + 50_000]

    r = http.patch(loc, content=body())
    assert r.status_code == 202
    assert r.headers["Range"] == f"0-{len(data) - 1}"
    assert http.put(r.headers["Location"], params={"digest": dg(data)}).status_code == 201
    assert http.get(f"/v2/te/blobs/{dg(data)}").content == data


def test_storage_survives_a_restart_mid_upload(tmp_path):
    # the running hash lives in memory; after a restart commit re-reads the session file
    root = tmp_path / "r"
    with ServerThread(root, fsync=False) as srv, httpx.Client(base_url=srv.url) as c:
        loc = c.post("/v2/a/blobs/uploads/").headers["Location"]
        assert c.patch(loc, content=b"first half ").status_code == 202
    path = httpx.URL(loc).path
    with ServerThread(root, fsync=False) as srv, httpx.Client(base_url=srv.url) as c:
        r = c.get(path)
        assert r.status_code == 204 and r.headers["Range"] == "0-10"
        assert c.patch(path, content=b"second half").status_code == 202
        want = b"first half second half"
        assert c.put(path, params={"digest": dg(want)}).status_code == 201
        assert c.get(f"/v2/a/blobs/{dg(want)}").content == want


def test_stop_background_leaves_other_processes_alone(tmp_path):
    other = subprocess.Popen(["sleep", "30"])
    try:
        assert stop_background(other.pid) is False
        assert other.poll() is None
    finally:
        other.kill()
        other.wait()


@given(data=st.binary(min_size=0, max_size=5000),
       cuts=st.lists(st.integers(min_value=0, max_value=5000), max_size=6),
       forms=st.lists(st.sampled_from(["{a}-{b}", "bytes={a}-{b}", None]), min_size=7,
                      max_size=7),
       bad=st.lists(st.integers(min_value=1, max_value=50), max_size=2))
@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_chunked_upload_property(http, data, cuts, forms, bad):
    """Any split of a blob into PATCH chunks (any Content-Range form), with rejected
    out-of-order chunks mixed in, ends as exactly that blob."""
    bounds = sorted({0, len(data), *[c for c in cuts if c <= len(data)]})
    loc = http.post("/v2/prop/blobs/uploads/").headers["Location"]
    for i, (a, b) in enumerate(itertools.pairwise(bounds)):
        if bad and i == 0 and a + bad[0] < len(data):
            r = http.patch(loc, content=b"zz", headers={"Content-Range":
                                                       f"{a + bad[0]}-{a + bad[0] + 1}"})
            assert r.status_code == 416
        headers = {}
        if forms[i] and b > a:
            headers["Content-Range"] = forms[i].format(a=a, b=b - 1)
        r = http.patch(loc, content=data[a:b], headers=headers)
        assert r.status_code == 202, r.text
        loc = r.headers["Location"]
    r = http.put(loc, params={"digest": dg(data)})
    assert r.status_code == 201, r.text
    assert http.get(f"/v2/prop/blobs/{dg(data)}").content == data


def test_disk_full_mid_upload_stores_nothing(tmp_path):
    from tests.conftest import need_root
    need_root()
    mnt = tmp_path / "small"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)],
                       capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip()}")
    try:
        with ServerThread(mnt / "reg", fsync=False) as srv, \
                httpx.Client(base_url=srv.url, timeout=30) as c:
            big = os.urandom(2 << 20)
            r = c.post("/v2/full/blobs/uploads/", params={"digest": dg(big)}, content=big)
            assert r.status_code == 500
            assert errors(r) == ["UNKNOWN"]
            assert "No space left on device" in r.json()["errors"][0]["message"]
            assert c.head(f"/v2/full/blobs/{dg(big)}").status_code == 404
            assert blob_files(mnt / "reg") == []
            assert os.listdir(mnt / "reg" / "uploads") == []
            small = b"still works"
            r = c.post("/v2/full/blobs/uploads/", params={"digest": dg(small)}, content=small)
            assert r.status_code == 201
    finally:
        subprocess.run(["umount", str(mnt)], check=True)
