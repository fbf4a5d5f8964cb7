"""Hostile input the existing suites (tests/imagesim/test_layers.py, test_archive.py,
test_registry_server.py, tests/unionfs/test_errno.py) did not yet cover: each gets a clear
error or a result confined to where it belongs, nothing is written outside, the store is
unchanged.

* layer tars: whiteouts of whiteouts, duplicate entries of every kind pair, setuid/setgid/
  sticky bits, names with newlines and non-UTF-8 bytes (ustar, PAX, GNU long names), PAX
  abuse (bad lengths, sizes, ids, times, global headers, ``..`` and NUL in PAX paths),
  over-long names, symlink tricks for hard links and whiteouts;
* OCI layouts and archives for ``load``: a FIFO as a blob, symlinks out of the layout,
  JSON nested 100 000 deep, a 200 000-entry index, digests with ``..``;
* the registry: ``..`` and NUL in names, digests, upload ids and references (raw HTTP, as
  no client library would send them), deep-nested manifests, a client that drops a
  monolithic upload mid-body, a replayed upload id after cancel;
* container paths: ``..``, symlinks pointing at the host, ELOOP, ENAMETOOLONG, EROFS on a
  read-only view, EINVAL for renaming a directory into itself.
"""

from __future__ import annotations

import errno
import hashlib
import io
import json
import os
import socket
import sys
import tarfile

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import hardening_kit as kit

from imagesim import archive, layers, oci
from imagesim.errors import ArchiveInvalid, LayerInvalid
from imagesim.registry.server import ServerThread
from imagesim.store import Store

END = b"\0" * 1024


def pax_record(key: str, value: bytes | str) -> bytes:
    """One PAX record ``"<len> key=value\\n"`` with its self-inclusive length."""
    body = f" {key}=".encode() + (value if isinstance(value, bytes) else value.encode()) + b"\n"
    n = len(body) + 1
    while len(str(n)) + len(body) != n:
        n += 1
    return str(n).encode() + body


def pax(records: bytes, kind: str = "x") -> bytes:
    return (layers.tar_header("PaxHeaders/x", kind=kind, size=len(records)) + records +
            b"\0" * (-len(records) % 512))


def raw_pax(size: int, payload: bytes) -> bytes:
    """A PAX header whose declared size and records are whatever the attacker says."""
    return layers.tar_header("P", kind="x", size=size) + payload.ljust(512, b"\0")


def entry(name: str | bytes, data: bytes = b"", *, kind: str = "0", mode: int = 0o644,
          link: str = "") -> bytes:
    if isinstance(name, bytes):
        # a raw ustar name field: bytes the encoder would never write
        h = bytearray(layers.tar_header("placeholder", kind=kind, size=len(data), mode=mode))
        h[0:100] = name.ljust(100, b"\0")[:100]
        h[148:156] = b"        "
        h[148:156] = f"{sum(h):06o}\0 ".encode()
        head = bytes(h)
    else:
        head = layers.tar_header(name, kind=kind, size=len(data), mode=mode, linkname=link)
    return head + data + b"\0" * (-len(data) % 512)


def gnu_long(name: bytes) -> bytes:
    return (layers.tar_header("././@LongLink", kind="L", size=len(name) + 1) +
            (name + b"\0").ljust(512, b"\0"))


#: refused outright: name -> (tar bytes, text the LayerInvalid message contains)
REFUSED = {
    "pax path with ..": (pax(pax_record("path", "../../evil")) + entry("x", b"1") + END,
                         "'..'"),
    "pax linkpath outside": (pax(pax_record("linkpath", "/etc/passwd")) +
                             entry("h", kind="1") + END, "not in this layer"),
    "pax size negative": (pax(pax_record("size", "-5")) + entry("x", b"1") + END,
                          "negative size"),
    "pax size beyond the data": (pax(pax_record("size", "99999999999999")) +
                                 entry("x", b"1") + END, "truncated"),
    "pax size not a number": (pax(pax_record("size", "12abc")) + entry("x", b"1") + END,
                              "bad PAX size"),
    "pax record length too long": (raw_pax(20, b"999 path=abc\n") + entry("x") + END,
                                   "record length"),
    "pax record length zero": (raw_pax(8, b"0 path=\n") + entry("x") + END,
                               "record length"),
    "pax record without newline": (raw_pax(10, b"10 path=ab") + entry("x") + END,
                                   "malformed PAX"),
    "pax uid not a number": (pax(pax_record("uid", "abc")) + entry("x", b"1") + END,
                             "bad PAX uid"),
    "pax uid negative": (pax(pax_record("uid", "-1")) + entry("x", b"1") + END,
                         "out of range"),
    "pax gid huge": (pax(pax_record("gid", str(1 << 40))) + entry("x", b"1") + END,
                     "out of range"),
    "pax mtime nan": (pax(pax_record("mtime", "nan")) + entry("x", b"1") + END,
                      "bad PAX time"),
    "pax path with NUL": (pax(pax_record("path", "a\0b")) + entry("x") + END, "NUL"),
    "pax header of 1 GiB": (layers.tar_header("P", kind="x", size=1 << 30) + b"\0" * 4096,
                            "too large"),
    "gnu long name with ..": (gnu_long(b"../../zz") + entry("x", b"1") + END, "'..'"),
    "gnu long name of 1 GiB": (layers.tar_header("././@LongLink", kind="L", size=1 << 30) +
                               b"\0" * 4096, "too large"),
    "name component over 255 bytes": (pax(pax_record("path", "a" * 300)) + entry("x", b"1") +
                                      END, "aaaa"),
    "path over 4096 bytes": (pax(pax_record("path", "/".join(["d"] * 2100))) +
                             entry("x", b"1") + END, "over 4096"),
    "hard link through a symlink": (entry("s", kind="2", link="/etc") +
                                    entry("h", kind="1", link="s/passwd") + END,
                                    "not in this layer"),
    "whiteout under a symlink": (entry("s", kind="2", link="/tmp") + entry("s/.wh.x") + END,
                                 "symlink"),
    "opaque marker under a symlink": (entry("s", kind="2", link="/tmp") +
                                      entry("s/.wh..wh..opq") + END, "symlink"),
    "file under a symlinked dir": (entry("s", kind="2", link="/tmp") +
                                   entry("s/pwned", b"x") + END, "symlink"),
}


def _unpack(tmp_path, data: bytes) -> tuple[str, str]:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "sentinel").write_text("untouched")
    dest = tmp_path / "store" / "layer" / "diff"
    return str(dest), str(outside)


def _assert_outside_untouched(outside: str) -> None:
    assert os.listdir(outside) == ["sentinel"]
    with open(os.path.join(outside, "sentinel")) as f:
        assert f.read() == "untouched"


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_hostile_tar_is_refused(tmp_path, case):
    data, match = REFUSED[case]
    dest, outside = _unpack(tmp_path, data)
    tmp_dir = tmp_path / "store" / "tmp"
    with pytest.raises(LayerInvalid, match=match):
        layers.unpack(io.BytesIO(data), dest, tmp_dir=str(tmp_dir))
    assert not os.path.lexists(dest)
    assert os.listdir(tmp_dir) == []
    _assert_outside_untouched(outside)
    assert not os.path.lexists("/tmp/pwned")


def _tree(root: str) -> dict[bytes, tuple[int, bytes | None]]:
    """Every path under root (as bytes) -> (st_mode, content or link target)."""
    out = {}
    broot = os.fsencode(root)
    for dirpath, dirs, files in os.walk(broot):
        for n in dirs + files:
            p = os.path.join(dirpath, n)
            st = os.lstat(p)
            rel = os.path.relpath(p, broot)
            if os.path.islink(p):
                out[rel] = (st.st_mode, os.readlink(p))
            elif os.path.isfile(p):
                with open(p, "rb") as f:
                    out[rel] = (st.st_mode, f.read())
            else:
                out[rel] = (st.st_mode, None)
    return out


#: accepted, with exactly this result inside the layer (and nothing anywhere else)
ACCEPTED = {
    "whiteout of a whiteout is an AUFS meta entry": (
        entry(".wh..wh.foo") + entry("d", kind="5", mode=0o755) + entry("d/.wh..wh.x") + END,
        {b"d": (0o40755, None)}, "AUFS"),
    "duplicate: file then directory": (
        entry("x", b"1") + entry("x", kind="5", mode=0o755) + entry("x/y", b"2") + END,
        {b"x": (0o40755, None), b"x/y": (0o100644, b"2")}, None),
    "duplicate: directory then file": (
        entry("x", kind="5", mode=0o755) + entry("x/y", b"2") + entry("x", b"1") + END,
        {b"x": (0o100644, b"1")}, None),
    "duplicate: symlink to /etc then directory": (
        entry("x", kind="2", link="/etc") + entry("x", kind="5", mode=0o755) +
        entry("x/passwd", b"mine") + END,
        {b"x": (0o40755, None), b"x/passwd": (0o100644, b"mine")}, None),
    "duplicate: same file twice": (
        entry("f", b"first") + entry("f", b"second") + END,
        {b"f": (0o100644, b"second")}, None),
    "setuid, setgid and sticky bits stay inside the layer": (
        entry("bin", kind="5", mode=0o755) + entry("bin/su", b"#!", mode=0o4755) +
        entry("sg", b"", mode=0o2755) + entry("t", kind="5", mode=0o1777) + END,
        {b"bin": (0o40755, None), b"bin/su": (0o104755, b"#!"), b"sg": (0o102755, b""),
         b"t": (0o41777, None)}, None),
    "newline in a name": (entry("a\nb", b"1") + END, {b"a\nb": (0o100644, b"1")}, None),
    "latin-1 byte in a ustar name": (entry(b"caf\xe9", b"1") + END,
                                     {b"caf\xe9": (0o100644, b"1")}, None),
    "invalid UTF-8 in a PAX path": (pax(pax_record("path", b"a\xff\xfeb")) + entry("x", b"1") +
                                    END, {b"a\xff\xfeb": (0o100644, b"1")}, None),
    "invalid UTF-8 in a GNU long name": (gnu_long(b"ab\xffcd") + entry("x", b"1") + END,
                                         {b"ab\xffcd": (0o100644, b"1")}, None),
    "hard link to a symlink copies the link, not its target": (
        entry("s", kind="2", link="/etc/passwd") + entry("h", kind="1", link="s") + END,
        {b"s": (0o120777, b"/etc/passwd"), b"h": (0o120777, b"/etc/passwd")}, None),
}


@pytest.mark.parametrize("case", sorted(ACCEPTED))
def test_odd_but_valid_tar_stays_inside(tmp_path, case):
    data, expected, warning = ACCEPTED[case]
    dest, outside = _unpack(tmp_path, data)
    r = layers.unpack(io.BytesIO(data), dest, tmp_dir=str(tmp_path / "store" / "tmp"),
                      allow_devices=False)
    assert _tree(dest) == expected
    if warning:
        assert any(warning in w for w in r.warnings)
    _assert_outside_untouched(outside)
    assert os.listdir(tmp_path / "store" / "tmp") == []


# -- OCI layouts and archives ------------------------------------------------------------------

@pytest.fixture(scope="module")
def image_store(tmp_path_factory):
    base = tmp_path_factory.mktemp("hostile-src")
    root = str(base / "src")
    tar = base / "x.tar"
    tar.write_bytes(kit.tar_bytes(kit.sample_files("x", n=2, size=2000)))
    kit.cli(root, "import", str(tar), "x:1")
    return Store(root, fsync=False)


def _layout(src: Store, d: str) -> None:
    img = src.resolve("x:1")
    os.makedirs(os.path.join(d, "blobs", "sha256"))
    with open(os.path.join(d, "oci-layout"), "wb") as f:
        f.write(oci.OCI_LAYOUT_BYTES)
    with open(os.path.join(d, "index.json"), "wb") as f:
        f.write(oci.build_index([img.manifest_descriptor]))
    for dg in [img.digest, img.id, *[x.digest for x in img.layers]]:
        with open(os.path.join(d, "blobs", "sha256", dg.hex), "wb") as f:
            f.write(src.blobs.get(dg))


def _blob_path(src: Store, d: str, which: str) -> str:
    img = src.resolve("x:1")
    dg = img.layers[0].digest if which == "layer" else img.id
    return os.path.join(d, "blobs", "sha256", dg.hex)


def _fifo_layer(src, d):
    p = _blob_path(src, d, "layer")
    os.unlink(p)
    os.mkfifo(p)


def _symlinked_config(src, d):
    p = _blob_path(src, d, "config")
    os.unlink(p)
    os.symlink("/etc/passwd", p)


def _index_to_dev_zero(src, d):
    os.unlink(os.path.join(d, "index.json"))
    os.symlink("/dev/zero", os.path.join(d, "index.json"))


def _deep_index(src, d):
    with open(os.path.join(d, "index.json"), "wb") as f:
        f.write(b'{"schemaVersion":2,"manifests":' + b"[" * 100_000 + b"]" * 100_000 + b"}")


def _huge_index(src, d):
    one = json.loads(oci.build_index([src.resolve("x:1").manifest_descriptor]))["manifests"]
    with open(os.path.join(d, "index.json"), "w") as f:
        json.dump({"schemaVersion": 2, "manifests": one * 200_000}, f)


def _digest_traversal(src, d):
    path = os.path.join(d, "index.json")
    with open(path) as f:
        idx = json.load(f)
    idx["manifests"][0]["digest"] = "sha256:../../../etc/passwd"
    with open(path, "w") as f:
        json.dump(idx, f)


LAYOUTS = {
    "a FIFO as a layer blob": (_fifo_layer, "not a regular file"),
    "config blob symlinked to /etc/passwd": (_symlinked_config, "outside the layout"),
    "index.json symlinked to /dev/zero": (_index_to_dev_zero, "outside the layout"),
    "index nested 100000 deep": (_deep_index, "nested too deeply"),
    "index with 200000 manifests": (_huge_index, "too large"),
    "digest with ..": (_digest_traversal, "invalid digest"),
}


def _state(store: Store) -> tuple:
    return (sorted(store.tags().items()), sorted(map(str, store.blobs)),
            sorted(os.listdir(store.layers_root)), sorted(os.listdir(store.tmp_dir)))


@pytest.mark.parametrize("case", sorted(LAYOUTS))
def test_hostile_oci_layout_is_refused(tmp_path, image_store, case):
    make, match = LAYOUTS[case]
    d = str(tmp_path / "layout")
    _layout(image_store, d)
    make(image_store, d)
    dst = Store(tmp_path / "dst", fsync=False)
    before = _state(dst)
    with pytest.raises(ArchiveInvalid, match=match):
        archive.load(dst, d, io.StringIO())
    assert _state(dst) == before
    assert dst.fsck().problems == []


def test_hostile_layout_through_the_cli_is_a_clear_error(tmp_path, image_store):
    d = str(tmp_path / "layout")
    _layout(image_store, d)
    _deep_index(image_store, d)
    r = kit.cli(str(tmp_path / "dst"), "load", "-i", d, check=False)
    assert r.returncode == 1
    assert r.stderr.strip() == "Error: index is nested too deeply"


# -- registry ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def reg(tmp_path_factory):
    root = tmp_path_factory.mktemp("hostile-reg") / "reg"
    with ServerThread(root, fsync=False) as srv:
        srv.root = root
        yield srv


def raw(srv, request: bytes, *, close_after: bool = True) -> bytes:
    with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as s:
        s.sendall(request)
        if not close_after:
            return b""
        out = b""
        while chunk := s.recv(65536):
            out += chunk
    return out


TRAVERSALS = [
    "/v2/a/blobs/sha256:../../../../etc/passwd",
    "/v2/a/blobs/sha256:..%2f..%2f..%2fetc%2fpasswd",
    "/v2/a/manifests/../../../../etc/passwd",
    "/v2/a/manifests/..%2f..%2fx",
    "/v2/a/blobs/uploads/../../../../etc/passwd",
    "/v2/a/blobs/uploads/..%2f..%2fx",
    "/v2/a/blobs/uploads/%2e%2e",
    "/v2/%2e%2e/tags/list",
    "/v2/a%00b/tags/list",
    "/v2/a/blobs/uploads/x%00y",
    "/v2/a/manifests/sha256:" + "0" * 63 + "/",
    "/v2/../../etc/passwd",
]


@pytest.mark.parametrize("path", TRAVERSALS)
def test_registry_paths_with_dot_dot_and_nul_are_refused(reg, path):
    before = sorted(os.listdir(reg.root))
    for method in ("GET", "HEAD", "PUT", "PATCH", "DELETE", "POST"):
        out = raw(reg, f"{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n"
                       "Connection: close\r\n\r\nabcd".encode())
        status = int(out.split(b" ", 2)[1])
        assert 400 <= status < 500, (method, path, out[:200])
        assert b"root:" not in out  # never the host's /etc/passwd
    assert sorted(os.listdir(reg.root)) == before


def test_registry_deeply_nested_manifest_is_400(reg):
    import httpx
    body = b'{"schemaVersion":2,"config":' + b"[" * 50_000 + b"]" * 50_000 + b"}"
    r = httpx.put(f"{reg.url}/v2/deep/manifests/t", content=body,
                  headers={"Content-Type": "application/vnd.oci.image.manifest.v1+json"})
    assert r.status_code == 400
    assert [e["code"] for e in r.json()["errors"]] == ["MANIFEST_INVALID"]


def _blobs(root) -> list[str]:
    base = os.path.join(root, "blobs", "sha256")
    return sorted(os.listdir(base)) if os.path.isdir(base) else []


def test_client_dropping_a_monolithic_upload_mid_body(reg):
    import httpx
    data = os.urandom(200_000)
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    before = _blobs(reg.root)
    r = httpx.post(f"{reg.url}/v2/drop/blobs/uploads/")
    assert r.status_code == 202
    loc = r.headers["location"]
    path = loc.split(reg.host, 1)[-1] if loc.startswith("http") else loc
    sep = "&" if "?" in path else "?"
    raw(reg, f"PUT {path}{sep}digest={digest} HTTP/1.1\r\nHost: x\r\n"
             f"Content-Type: application/octet-stream\r\nContent-Length: {len(data)}\r\n\r\n"
             .encode() + data[:50_000], close_after=False)
    # nothing was published under the digest; the blob is unknown
    h = httpx.head(f"{reg.url}/v2/drop/blobs/{digest}")
    assert h.status_code == 404
    assert _blobs(reg.root) == before
    # and the same blob uploads fine afterwards
    r = httpx.post(f"{reg.url}/v2/drop/blobs/uploads/", params={"digest": digest},
                   content=data)
    assert r.status_code == 201
    assert httpx.get(f"{reg.url}/v2/drop/blobs/{digest}",
                     follow_redirects=True).content == data


def test_replayed_upload_id_after_cancel_is_unknown(reg):
    import httpx
    r = httpx.post(f"{reg.url}/v2/replay/blobs/uploads/")
    loc = r.headers["location"]
    url = loc if loc.startswith("http") else reg.url + loc
    assert httpx.delete(url).status_code == 204
    for method in ("PATCH", "PUT", "GET", "DELETE"):
        r = httpx.request(method, url, content=b"abc",
                          params={"digest": "sha256:" + hashlib.sha256(b"abc").hexdigest()})
        assert r.status_code == 404, method
        assert [e["code"] for e in r.json()["errors"]] == ["BLOB_UPLOAD_UNKNOWN"]


# -- container paths ----------------------------------------------------------------------------

@pytest.fixture
def container(tmp_path):
    host = tmp_path / "hostdir"
    host.mkdir()
    src = tmp_path / "src"
    (src / "etc").mkdir(parents=True)
    (src / "etc" / "passwd").write_text("container-passwd\n")
    (src / "d").mkdir()
    os.symlink(str(host), src / "abs-escape")
    os.symlink("../../../../../../../.." + str(host), src / "rel-escape")
    os.symlink("loop2", src / "loop1")
    os.symlink("loop1", src / "loop2")
    with tarfile.open(tmp_path / "esc.tar", "w") as tf:
        tf.add(src, arcname=".")
    root = str(tmp_path / "root")
    kit.cli(root, "import", str(tmp_path / "esc.tar"), "esc:1")
    kit.cli(root, "create", "--name", "c1", "esc:1")
    return root, str(host)


def test_cp_into_symlinks_and_dot_dot_stays_in_the_container(tmp_path, container):
    root, host = container
    f = tmp_path / "f.txt"
    f.write_text("x")
    for target in ("/abs-escape/pwned", "/rel-escape/pwned",
                   "/../../../../../.." + host + "/pwned"):
        r = kit.cli(root, "cp", str(f), f"c1:{target}", check=False)
        assert r.returncode == 1 and "No such file or directory" in r.stderr, target
    assert os.listdir(host) == []
    out = tmp_path / "out"
    kit.cli(root, "cp", "c1:/../../../../etc/passwd", str(out))
    assert out.read_text() == "container-passwd\n"  # the container's, not the host's


@pytest.mark.parametrize(("path", "text"), [
    ("/loop1/x", "Too many levels of symbolic links"),
    ("/" + "a" * 300, "File name too long"),
])
def test_cp_errors_are_clear(tmp_path, container, path, text):
    root, _ = container
    r = kit.cli(root, "cp", f"c1:{path}", str(tmp_path / "o"), check=False)
    assert r.returncode == 1
    assert r.stderr.startswith("Error: " + text)


def test_container_view_errnos(container):
    from imagesim.container import ContainerStore
    from unionfs.union import UnionFS

    root, host = container
    store = Store(root, fsync=False)
    c = ContainerStore(store).get("c1")
    fs = c.fs
    with pytest.raises(OSError) as e:
        fs.stat("/loop1")
    assert e.value.errno == errno.ELOOP
    with pytest.raises(OSError) as e:
        fs.open("/" + "n" * 256, "wb")
    assert e.value.errno == errno.ENAMETOOLONG
    with pytest.raises(OSError) as e:
        fs.rename("/d", "/d/inside")
    assert e.value.errno == errno.EINVAL
    with fs.open("/../../../../x", "wb") as f:   # ".." stops at the container's root
        f.write(b"1")
    assert fs.listdir("/").count("x") == 1 and not os.path.exists("/x")
    ro = UnionFS(lowers=store.lower_layers("esc:1"), upper=None)
    for op in (lambda: ro.mkdir("/new"), lambda: ro.open("/etc/passwd", "r+b"),
               lambda: ro.unlink("/etc/passwd"), lambda: ro.rename("/d", "/e")):
        with pytest.raises(OSError) as e:
            op()
        assert e.value.errno == errno.EROFS
    assert os.listdir(host) == []
