"""Hypothesis strategies for the fuzz targets: structured tars (real headers with hostile
fields, then byte flips), reference-like text, and registry requests."""

from __future__ import annotations

import gzip

import fuzz_targets as ft
from hypothesis import strategies as st

from imagesim import layers

NAME_PARTS = ["a", "b", "..", ".", "", ".wh.a", ".wh..wh..opq", ".wh..wh.x", "x\ny", "\u00e9",
              "/", "d", "link", "f" * 120]
KINDS = ["0", "1", "2", "3", "4", "5", "6", "7", "x", "g", "L", "K", "S", "V", "Z"]


@st.composite
def names(draw) -> str:
    parts = draw(st.lists(st.sampled_from(NAME_PARTS), min_size=1, max_size=5))
    lead = draw(st.sampled_from(["", "/", "./", "../"]))
    return lead + "/".join(parts)


@st.composite
def tar_entries(draw) -> bytes:
    kind = draw(st.sampled_from(KINDS))
    data = draw(st.binary(max_size=600)) if kind in ("0", "7", "x", "g", "L", "K") else b""
    if kind in ("x", "g") and draw(st.booleans()):
        key = draw(st.sampled_from(["path", "linkpath", "size", "uid", "gid", "mtime",
                                    "SCHILY.xattr.user.a", "SCHILY.xattr.trusted.overlay.opaque",
                                    "GNU.sparse.major"]))
        value = draw(st.one_of(names(), st.sampled_from(["-1", "1e99", "nan", "99999999999",
                                                          "0", "abc"])))
        body = f" {key}={value}\n".encode()
        n = len(body) + 1
        while len(str(n)) + len(body) != n:
            n += 1
        data = str(n + draw(st.integers(-2, 2))).encode() + body
    head = layers.tar_header(draw(names()), kind=kind, size=len(data),
                             mode=draw(st.sampled_from([0o644, 0o755, 0o4755, 0o7777, 0])),
                             linkname=draw(names()) if kind in ("1", "2") else "")
    return head + data + b"\0" * (-len(data) % 512)


@st.composite
def tars(draw) -> bytes:
    body = b"".join(draw(st.lists(tar_entries(), min_size=1, max_size=6)))
    body += b"\0" * draw(st.sampled_from([0, 512, 1024]))
    raw = bytearray(body)
    for _ in range(draw(st.integers(0, 3))):
        if raw:
            i = draw(st.integers(0, len(raw) - 1))
            raw[i] = draw(st.integers(0, 255))
    if draw(st.integers(0, 9)) == 0:
        raw = raw[: draw(st.integers(0, len(raw)))]
    out = bytes(raw)
    if draw(st.integers(0, 4)) == 0:
        out = gzip.compress(out)
    return out


reference_text = st.one_of(
    st.text(max_size=80),
    st.lists(st.sampled_from(["localhost", ":5000", "/", "a", "B", "library", "ubuntu", ":",
                              "latest", "@", "sha256:", "0" * 64, "..", "_", "-", ".", "__",
                              "a" * 130, "127.0.0.1", "[::1]", "\u00e9", " "]),
             max_size=10).map("".join),
)


@st.composite
def requests(draw) -> tuple[str, str, dict[str, str], bytes]:
    pieces = draw(st.lists(st.sampled_from(ft.PATH_PIECES), min_size=1, max_size=7))
    path = "/" + "/".join(pieces)
    if draw(st.booleans()):
        path = "/v2/" + "/".join(pieces)
    headers = {k: draw(st.sampled_from(v)) for k, v in ft.HEADER_CHOICES.items()
               if draw(st.booleans())}
    body = draw(st.one_of(st.binary(max_size=300), st.sampled_from([
        b"{}", b"[]", b'{"schemaVersion":2}', b'{"schemaVersion":2,"layers":[{}]}',
        b'{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json",'
        b'"manifests":[{"digest":"sha256:../x","size":-1}]}', b"[" * 5000])))
    return draw(st.sampled_from(ft.METHODS)), path, headers, body
