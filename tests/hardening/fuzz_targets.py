"""Fuzz targets shared by the short hypothesis runs in ``test_fuzz.py`` and the long runs of
``benchmarks/fuzz.py`` (hypothesis or atheris).

Each target takes the fuzzer's input and raises ``AssertionError`` (or any unexpected
exception) only on a real bug:

* ``tar_target(data)``: ``layers.unpack`` and ``layers.read_entries`` on arbitrary bytes may
  only raise ``LayerInvalid``/``DigestInvalid``; an unpack that fails leaves nothing, and no
  unpack ever writes outside its destination.
* ``reference_target(text)``: ``Reference.parse`` raises only ``ReferenceInvalid``; what it
  accepts round-trips through ``str``/``full``.
* ``RegistryTarget(root)(method, path, headers, body)``: the registry answers every request
  with a status below 500 and a JSON error body for 4xx; its storage never holds a blob that
  does not hash to its name.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import shutil
import tempfile

from imagesim import layers
from imagesim.errors import DigestInvalid, LayerInvalid, ReferenceInvalid
from imagesim.reference import Reference

_LIMITS = layers.Limits(max_bytes=1 << 20)  # bounded disk per input


def tar_target(data: bytes, workdir: str | None = None) -> None:
    base = tempfile.mkdtemp(prefix="fuzz-tar-", dir=workdir)
    try:
        dest = os.path.join(base, "layer", "diff")
        tmp = os.path.join(base, "tmp")
        os.makedirs(tmp)
        try:
            layers.unpack(io.BytesIO(data), dest, tmp_dir=tmp, limits=_LIMITS,
                          allow_devices=False)
            ok = True
        except (LayerInvalid, DigestInvalid):
            ok = False
        assert set(os.listdir(base)) <= {"layer", "tmp"}, "unpack wrote beside its dest"
        assert os.listdir(tmp) == [], "unpack left temporaries"
        if not ok:
            assert not os.path.lexists(dest), "a failed unpack left its destination"
        else:
            # everything under dest is really inside dest (no symlinked parent was followed)
            real = os.path.realpath(dest)
            for dirpath, dirs, _files in os.walk(dest):
                assert os.path.realpath(dirpath).startswith(real)
                for d in dirs:
                    p = os.path.join(dirpath, d)
                    assert os.path.islink(p) or os.path.realpath(p).startswith(real)
        try:
            for _e, _data in layers.read_entries(io.BytesIO(data), limits=_LIMITS):
                pass
        except (LayerInvalid, DigestInvalid):
            pass
    finally:
        shutil.rmtree(base, ignore_errors=True)


def reference_target(text: str) -> None:
    try:
        ref = Reference.parse(text)
    except ReferenceInvalid:
        return
    again = Reference.parse(str(ref))
    assert again.domain == ref.domain and again.path == ref.path
    assert again.digest == ref.digest
    assert Reference.parse(ref.full).full == ref.full
    assert ".." not in ref.path.split("/")


class RegistryTarget:
    """Requests against a registry served on 127.0.0.1 (``ServerThread``, port 0)."""

    def __init__(self, root: str) -> None:
        import httpx

        from imagesim.registry.server import ServerThread

        self.root = root
        self.server = ServerThread(root, fsync=False).start()
        self.client = httpx.Client(base_url=self.server.url, timeout=20)
        self.requests = 0

    def close(self) -> None:
        self.client.close()
        self.server.stop()

    def __call__(self, method: str, path: str, headers: dict[str, str], body: bytes) -> None:
        import httpx

        self.requests += 1
        try:
            r = self.client.request(method, path, headers=headers, content=body)
        except (httpx.InvalidURL, httpx.UnsupportedProtocol, httpx.LocalProtocolError,
                UnicodeEncodeError, ValueError):
            return  # the client refused to send it: nothing reached the server
        assert r.status_code < 500, (method, path, headers, r.status_code, r.text[:300])
        if (400 <= r.status_code < 500 and method != "HEAD" and r.content
                and r.headers.get("content-type", "").startswith("application/json")):
            assert "errors" in r.json()

    def check_storage(self) -> None:
        base = os.path.join(self.root, "blobs", "sha256")
        if not os.path.isdir(base):
            return
        for name in os.listdir(base):
            if not re.fullmatch(r"[a-f0-9]{64}", name):
                continue
            with open(os.path.join(base, name), "rb") as f:
                assert hashlib.sha256(f.read()).hexdigest() == name


#: path pieces the registry fuzzer combines: real endpoints, hostile pieces, near misses
PATH_PIECES = ["v2", "", "a", "b", "a/b", "library", "blobs", "uploads", "manifests",
               "tags", "list", "_catalog", "referrers", "..", ".", "%2e%2e", "%2f", "%00",
               "sha256:" + "0" * 64, "sha256:../x", "sha512:" + "a" * 128, "latest",
               "UPPER", "-x", "a" * 300, "\u00e9", "?digest=sha256:" + "1" * 64,
               "?n=-1", "?last=zz", "?mount=sha256:" + "2" * 64 + "&from=../x"]
METHODS = ["GET", "HEAD", "PUT", "POST", "PATCH", "DELETE", "OPTIONS"]
HEADER_CHOICES = {
    "Content-Type": ["application/vnd.oci.image.manifest.v1+json",
                     "application/vnd.oci.image.index.v1+json", "application/json",
                     "application/octet-stream", "text/plain", ""],
    "Content-Range": ["0-0", "0-3", "5-2", "-1-4", "abc", "0-99999999999999999999"],
    "Accept": ["*/*", "application/vnd.oci.image.manifest.v1+json", ""],
    "Range": ["bytes=0-0", "bytes=5-2", "bytes=-1", "bytes=abc"],
}
