"""Layer tars: deterministic packing, safe unpacking, a corpus of hostile tars, and the
property that applying our tars in order gives the engine's merged view."""

from __future__ import annotations

import gzip
import io
import os
import random
import shutil
import stat
import subprocess
import tarfile
import zlib

import pytest
import zstandard
from hypothesis import given, settings
from hypothesis import strategies as st

from imagesim import layers
from imagesim.digest import Digest
from imagesim.errors import DigestInvalid, LayerInvalid
from tests.conftest import need_root, need_tool
from unionfs import whiteout as wh
from unionfs.entry import Entry, Kind
from unionfs.layer import DirLayer, MemoryLayer
from unionfs.testing import strategies as ust
from unionfs.union import UnionFS

MTIME = 1_700_000_000_123_456_789


# -- helpers ---------------------------------------------------------------------------------

def _sample_dir(root: str) -> str:
    """An upper directory in overlayfs form with every kind of entry."""
    src = os.path.join(root, "src")
    os.makedirs(f"{src}/a/b")
    os.makedirs(f"{src}/opq")
    with open(f"{src}/a/f", "wb") as f:
        f.write(b"hello\n")
    os.link(f"{src}/a/f", f"{src}/a/hl")
    os.symlink("../f", f"{src}/a/b/sl")
    os.mkfifo(f"{src}/a/fifo")
    with open(f"{src}/opq/new", "wb") as f:
        f.write(b"x" * 70000)
    with open(f"{src}/setuid", "wb") as f:
        f.write(b"#!/bin/sh\n")
    os.chown(f"{src}/setuid", 1000, 1001)
    os.chmod(f"{src}/setuid", 0o4755)     # after chown, which clears setuid
    os.setxattr(f"{src}/a/f", "user.foo", b"bar")
    fmt = wh.default_format(src)
    wh.write_whiteout(src, "gone", fmt)
    wh.write_opaque(f"{src}/opq", fmt)
    long_dir = f"{src}/" + "d" * 120
    os.makedirs(long_dir)
    with open(f"{long_dir}/" + "n" * 200, "wb") as f:
        f.write(b"long")
    with open(f"{src}/caf\u00e9 \u2603\nnl", "wb") as f:
        f.write(b"unicode")
    for base, dirs, files in os.walk(src):
        for n in dirs + files:
            os.utime(os.path.join(base, n), ns=(MTIME, MTIME), follow_symlinks=False)
    return src


def _pack_bytes(source, compression="gzip", **kw) -> tuple[bytes, layers.PackResult]:
    buf = io.BytesIO()
    r = layers.pack(source, buf, compression=compression, **kw)
    return buf.getvalue(), r


def _entries(data: bytes) -> list[tuple]:
    out = []
    for e, d in layers.read_entries(io.BytesIO(data)):
        out.append((e.name, e.kind, e.mode, e.uid, e.gid, e.mtime_ns, e.linkname, e.xattrs, d))
    return out


def _snapshot_fs(fs) -> dict[str, tuple]:
    """Every visible path of an os-shaped view: kind, mode, owner, data/target, xattrs."""
    out: dict[str, tuple] = {}

    def walk(path: str) -> None:
        for name in sorted(fs.listdir(path)):
            p = f"{path.rstrip('/')}/{name}"
            st = fs.lstat(p)
            kind = stat.S_IFMT(st.st_mode)
            if stat.S_ISREG(st.st_mode):
                with fs.open(p, "rb") as f:
                    payload = f.read()
            elif stat.S_ISLNK(st.st_mode):
                payload = fs.readlink(p)
            else:
                payload = None
            try:
                xs = tuple(sorted((n, fs.getxattr(p, n)) for n in fs.listxattr(p)
                                  if n.startswith("user.")))
            except OSError:
                xs = ()
            if stat.S_ISLNK(st.st_mode):
                xs = ()
            out[p] = (kind, stat.S_IMODE(st.st_mode) if not stat.S_ISLNK(st.st_mode) else 0,
                      st.st_uid, st.st_gid, payload, xs)
            if stat.S_ISDIR(st.st_mode):
                walk(p)

    walk("/")
    return out


class _HostFS:
    """The few os calls ``_snapshot_fs`` needs, on a host directory."""

    def __init__(self, root: str) -> None:
        self.root = root

    def _h(self, p: str) -> str:
        return self.root + p if p != "/" else self.root

    def listdir(self, p):
        return os.listdir(self._h(p))

    def lstat(self, p):
        return os.lstat(self._h(p))

    def open(self, p, mode):
        return open(self._h(p), mode)

    def readlink(self, p):
        return os.readlink(self._h(p))

    def listxattr(self, p):
        return os.listxattr(self._h(p), follow_symlinks=False)

    def getxattr(self, p, n):
        return os.getxattr(self._h(p), n, follow_symlinks=False)


def _reference_apply(data: bytes, dest: str) -> None:
    """An independent applier (Python's tarfile, docker's rules): whiteouts delete, opaque
    markers clear the directory, other entries replace what is there."""
    with tarfile.open(fileobj=io.BytesIO(data)) as tf:
        for m in tf.getmembers():
            name = m.name.rstrip("/")
            parent, _, base = name.rpartition("/")
            pdir = os.path.join(dest, parent) if parent else dest
            if base == ".wh..wh..opq":
                for child in os.listdir(pdir):
                    _rm(os.path.join(pdir, child))
                continue
            if base.startswith(".wh."):
                _rm(os.path.join(pdir, base[4:]))
                continue
            target = os.path.join(dest, name)
            if os.path.lexists(target) and not (m.isdir() and os.path.isdir(target)
                                                and not os.path.islink(target)):
                _rm(target)
            if m.isdir() and os.path.isdir(target):
                os.chmod(target, m.mode)
                os.chown(target, m.uid, m.gid)
            else:
                tf.extract(m, dest, set_attrs=True, numeric_owner=True,
                           filter="fully_trusted")
            if not m.issym():
                for x in os.listxattr(target, follow_symlinks=False):
                    if x.startswith("user."):
                        os.removexattr(target, x, follow_symlinks=False)
                for k, v in m.pax_headers.items():
                    if k.startswith("SCHILY.xattr."):
                        os.setxattr(target, k[len("SCHILY.xattr."):],
                                    v.encode("utf-8", "surrogateescape"),
                                    follow_symlinks=False)


def _rm(path: str) -> None:
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path)
    elif os.path.lexists(path):
        os.unlink(path)


# -- packing -----------------------------------------------------------------------------

def test_pack_writes_every_kind_as_the_oci_changeset_rules_say(tmp_path):
    need_root()
    src = _sample_dir(str(tmp_path))
    data, r = _pack_bytes(src)
    ents = {e[0]: e for e in _entries(data)}
    assert ents[".wh.gone"][1] == "0" and ents[".wh.gone"][8] == b""
    assert ents["opq/.wh..wh..opq"][1] == "0"
    names = [e[0] for e in _entries(data)]
    assert names.index("opq/.wh..wh..opq") == names.index("opq/") + 1
    assert ents["a/hl"][1] == "1" and ents["a/hl"][6] == "a/f"
    assert ents["a/b/sl"][1] == "2" and ents["a/b/sl"][6] == "../f"
    assert ents["a/fifo"][1] == "6"
    assert ents["a/f"][7] == (("user.foo", b"bar"),)
    assert ents["a/f"][5] == MTIME            # sub-second mtime survives (PAX)
    assert ents["setuid"][2] == 0o4755 and ents["setuid"][3:5] == (1000, 1001)
    assert ents["d" * 120 + "/" + "n" * 200][8] == b"long"
    assert ents["caf\u00e9 \u2603\nnl"][8] == b"unicode"
    assert r.entries == len(ents)
    assert r.diff_id == Digest.of(gzip.decompress(data))
    assert r.digest == Digest.of(data) and r.size == len(data)


@pytest.mark.parametrize("compression", ["gzip", "zstd", "none"])
def test_pack_is_deterministic_and_independent_of_threads(tmp_path, compression):
    need_root()
    src = _sample_dir(str(tmp_path))
    results = {_pack_bytes(src, compression, threads=t)[1] for t in (1, 2, 3)}
    assert len({(r.digest, r.diff_id) for r in results}) == 1


def test_gzip_blocks_concatenate_into_one_valid_stream(tmp_path):
    big = os.urandom(3 << 20) + b"abc" * (1 << 20)
    buf = io.BytesIO()
    w = layers.TarWriter(buf, compression="gzip", threads=2, level=1)
    w.add("/big", Entry(Kind.FILE, size=len(big)), big)
    r = w.close()
    raw = gzip.decompress(buf.getvalue())
    assert raw[512:512 + len(big)] == big
    assert r.diff_id == Digest.of(raw)


def _mixed_tree(root: str, seed: int = 7) -> tuple[str, dict[str, bytes]]:
    """Files of random bytes and of text, small and large, in one directory."""
    rng = random.Random(seed)
    src = os.path.join(root, "mixed")
    os.makedirs(src)
    files = {}
    words = [b"layer", b"image", b"union", b"whiteout", b"opaque", b"digest"]
    for i, size in enumerate([0, 100, 5000, layers.STORE_MIN - 1, layers.STORE_MIN,
                              70_000, 300_000, (1 << 20) + 5]):
        for kind in ("rand", "text"):
            data = rng.randbytes(size) if kind == "rand" else \
                b" ".join(rng.choice(words) for _ in range(size))[:size]
            files[f"{kind}{i}"] = data
            with open(os.path.join(src, f"{kind}{i}"), "wb") as f:
                f.write(data)
    return src, files


def test_random_content_is_stored_and_text_deflated_in_one_valid_stream(tmp_path):
    src, files = _mixed_tree(str(tmp_path))
    results = {}
    for threads in (1, 3):
        blob, r = _pack_bytes(src, threads=threads)
        results[threads] = (blob, r)
    blob, r = results[1]
    # the thread count never changes a byte
    assert {b for b, _ in results.values()} == {blob}
    # one gzip member that every reader takes: stdlib gzip, zlib (single member), gzip -t
    raw = gzip.decompress(blob)
    d = zlib.decompressobj(31)
    assert d.decompress(blob) == raw and d.eof and d.unused_data == b""
    assert Digest.of(raw) == r.diff_id and Digest.of(blob) == r.digest
    path = tmp_path / "layer.gz"
    path.write_bytes(blob)
    subprocess.run(["gzip", "-t", str(path)], check=True)
    assert {e[0]: e[8] for e in _entries(blob)} == {n: files[n] for n in files}
    # random pieces of STORE_MIN bytes and more go out verbatim (stored blocks)...
    for name in ("rand4", "rand5", "rand6", "rand7"):
        assert files[name][:60_000] in blob, name
    # ...smaller ones and text are deflated
    assert files["rand3"] not in blob
    assert files["text7"][:1000] not in blob
    random_bytes = sum(len(v) for k, v in files.items() if k.startswith("rand"))
    assert r.size < random_bytes * 1.002 + sum(len(v) for k, v in files.items()
                                               if k.startswith("text")) // 3


def test_stored_blocks_stay_valid_at_every_block_boundary():
    # a random piece ending a block, one spanning several, the final block stored
    rng = random.Random(3)
    for sizes in ([layers.GZIP_BLOCK - 512], [3 * 65535 + 17, 10], [layers.STORE_MIN] * 5,
                  [40_000, layers.GZIP_BLOCK]):
        buf = io.BytesIO()
        w = layers.TarWriter(buf, compression="gzip", threads=2)
        expect = {}
        for i, n in enumerate(sizes):
            data = rng.randbytes(n)
            expect[f"f{i}"] = data
            w.add(f"/f{i}", Entry(Kind.FILE, size=n), data)
        r = w.close()
        blob = buf.getvalue()
        assert Digest.of(gzip.decompress(blob)) == r.diff_id
        assert {e[0]: e[8] for e in _entries(blob)} == expect


def test_default_gzip_level_and_engine():
    text = b" ".join(b"word%d" % (i * 7919 % 1000) for i in range(200_000))
    buf = io.BytesIO()
    w = layers.TarWriter(buf)
    w.add("/t", Entry(Kind.FILE, size=len(text)), text)
    r = w.close()
    assert layers.DEFAULT_GZIP_LEVEL == 5
    assert r.compression == "gzip" and r.size < len(text) // 4
    assert layers.deflate_engine_name().startswith("zlib-ng ")


def test_plain_headers_are_byte_identical_to_the_general_path():
    # the fast path for common entries must not change a byte of any tar (diff ids)
    rng = random.Random(11)
    for _ in range(3000):
        name = "".join(rng.choice("ab/._-z0") for _ in range(rng.choice([1, 7, 99, 100, 101])))
        kw = {"kind": rng.choice("0125"), "mode": rng.choice([0o644, 0o4755, 0o7777, 0]),
              "uid": rng.choice([0, 1000, 8 ** 7 - 1, 8 ** 7]),
              "gid": rng.choice([0, 5, 8 ** 7]), "size": rng.choice([0, 1, 8 ** 11 - 1, 8 ** 11]),
              "mtime_ns": rng.choice([0, 1_700_000_000 * 10 ** 9, MTIME, 8 ** 11 * 10 ** 9]),
              "linkname": rng.choice(["", "t", "x" * 100, "y" * 101])}
        assert layers.tar_header(name, **kw) == layers._general_header(
            name, devmajor=0, devminor=0, xattrs=(), **kw), (name, kw)


def test_system_tools_read_our_tars(tmp_path):
    need_root()
    need_tool("zstd")
    src = _sample_dir(str(tmp_path))
    for comp, check in (("gzip", ["gzip", "-t"]), ("zstd", ["zstd", "-t", "-q"])):
        data, _ = _pack_bytes(src, comp)
        path = tmp_path / f"layer.{comp}"
        path.write_bytes(data)
        subprocess.run([*check, str(path)], check=True)
        listing = subprocess.run(["tar", "-tf", str(path), f"--{comp}" if comp == "zstd"
                                  else "-z"], check=True, capture_output=True, text=True)
        assert "a/hl" in listing.stdout and ".wh.gone" in listing.stdout


def test_pack_exclude_drops_a_subtree(tmp_path):
    need_root()
    src = _sample_dir(str(tmp_path))
    data, _ = _pack_bytes(src, exclude=lambda p: p == "/a")
    names = [e[0] for e in _entries(data)]
    assert not any(n.startswith("a/") for n in names)
    assert "opq/" in names


def test_pack_from_a_memory_layer():
    layer = MemoryLayer()
    layer.mkdir("/etc", 0o755)
    with layer.open_write("/etc/x", create=True) as f:
        f.write(b"data")
    layer.whiteout("/old")
    data, r = _pack_bytes(layer, "none")
    names = [e[0] for e in _entries(data)]
    assert names == ["etc/", "etc/x", ".wh.old"]
    assert r.digest == r.diff_id


# -- unpacking ---------------------------------------------------------------------------

def test_round_trip_pack_unpack_pack_keeps_every_entry(tmp_path):
    need_root()
    src = _sample_dir(str(tmp_path))
    data, r = _pack_bytes(src)
    dest = str(tmp_path / "out" / "diff")
    u = layers.unpack(io.BytesIO(data), dest, expected_digest=r.digest,
                      expected_diff_id=r.diff_id)
    assert (u.digest, u.diff_id) == (r.digest, r.diff_id)
    assert stat.S_ISCHR(os.lstat(f"{dest}/gone").st_mode)       # overlayfs form
    assert os.getxattr(f"{dest}/opq", "trusted.overlay.opaque") == b"y"
    assert os.stat(f"{dest}/a/f").st_ino == os.stat(f"{dest}/a/hl").st_ino
    assert os.lstat(f"{dest}/setuid").st_mode & 0o7777 == 0o4755
    assert os.lstat(f"{dest}/a/f").st_mtime_ns == MTIME
    data2, r2 = _pack_bytes(dest)
    assert _entries(data2) == _entries(data)
    assert r2.diff_id == r.diff_id


@pytest.mark.parametrize("compression", ["gzip", "zstd", "none"])
def test_unpack_sniffs_the_compression(tmp_path, compression):
    layer = MemoryLayer()
    with layer.open_write("/f", create=True) as f:
        f.write(b"z" * 1000)
    data, _r = _pack_bytes(layer, compression)
    u = layers.unpack(io.BytesIO(data), str(tmp_path / "d"))
    assert u.compression == compression
    assert (tmp_path / "d" / "f").read_bytes() == b"z" * 1000


def test_multi_member_gzip_and_trailing_zero_padding(tmp_path):
    layer = MemoryLayer()
    with layer.open_write("/f", create=True) as f:
        f.write(b"abc")
    raw, _ = _pack_bytes(layer, "none")
    data = gzip.compress(raw[:512]) + gzip.compress(raw[512:]) + b"\0" * 100
    u = layers.unpack(io.BytesIO(data), str(tmp_path / "d"))
    assert u.diff_id == Digest.of(raw)
    assert (tmp_path / "d" / "f").read_bytes() == b"abc"


def test_device_nodes_need_privilege(tmp_path):
    tar = _tar([tarfile.TarInfo("null")], kinds={"null": tarfile.CHRTYPE})
    u = layers.unpack(io.BytesIO(tar), str(tmp_path / "a"), allow_devices=False)
    assert not os.path.lexists(tmp_path / "a" / "null")
    assert any("device node /null" in w for w in u.warnings)
    need_root()
    layers.unpack(io.BytesIO(tar), str(tmp_path / "b"), allow_devices=True)
    assert stat.S_ISCHR(os.lstat(tmp_path / "b" / "null").st_mode)
    assert os.lstat(tmp_path / "b" / "null").st_rdev == os.makedev(1, 3)


def test_unpack_into_existing_destination_keeps_the_first(tmp_path):
    layer = MemoryLayer()
    with layer.open_write("/f", create=True) as f:
        f.write(b"1")
    data, _ = _pack_bytes(layer)
    dest = tmp_path / "d"
    dest.mkdir()
    (dest / "mine").write_text("keep")
    layers.unpack(io.BytesIO(data), str(dest), tmp_dir=str(tmp_path / "tmp"))
    assert sorted(os.listdir(dest)) == ["mine"]
    assert os.listdir(tmp_path / "tmp") == []


# -- hostile tars ----------------------------------------------------------------------------

def _tar(infos: list[tarfile.TarInfo], *, data: dict[str, bytes] | None = None,
         kinds: dict[str, bytes] | None = None, fmt=tarfile.PAX_FORMAT,
         pax: dict[str, dict[str, str]] | None = None) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tf:
        for info in infos:
            if kinds and info.name in kinds:
                info.type = kinds[info.name]
                if info.type == tarfile.CHRTYPE:
                    info.devmajor, info.devminor = 1, 3
            if pax and info.name in pax:
                info.pax_headers = pax[info.name]
            payload = (data or {}).get(info.name)
            if payload is not None:
                info.size = len(payload)
                tf.addfile(info, io.BytesIO(payload))
            else:
                tf.addfile(info)
    return buf.getvalue()


def _ti(name: str, type_=tarfile.REGTYPE, linkname: str = "", mode: int = 0o644):
    t = tarfile.TarInfo(name)
    t.type = type_
    t.linkname = linkname
    t.mode = mode
    return t


def _symlink_then_write() -> bytes:
    return _tar([_ti("link", tarfile.SYMTYPE, "/tmp"), _ti("link/pwned")],
                data={"link/pwned": b"x"})


def _raw_with_name(name: bytes) -> bytes:
    h = bytearray(layers.tar_header("placeholder", kind="0"))
    h[0:100] = name.ljust(100, b"\0")[:100]
    h[148:156] = b"        "
    h[148:156] = f"{sum(h):06o}\0 ".encode()
    return bytes(h) + b"\0" * 1024


def _huge_pax() -> bytes:
    head = layers.tar_header("PaxHeaders/x", kind="x", size=1 << 30)
    return head + b"\0" * 4096


def _truncated() -> bytes:
    data = _tar([_ti("f")], data={"f": b"y" * 5000})
    return data[:512 + 1000]


def _bomb() -> bytes:
    # 64 MiB of zeros inside one file: a few dozen KiB of gzip
    raw = layers.tar_header("zeros", kind="0", size=64 << 20)
    c = zlib_compressobj()
    out = bytearray(c.compress(raw))
    chunk = b"\0" * (1 << 20)
    for _ in range(64):
        out += c.compress(chunk)
    out += c.compress(b"\0" * 1024) + c.flush()
    return bytes(out)


def zlib_compressobj():
    import zlib
    return zlib.compressobj(9, zlib.DEFLATED, 31)


HOSTILE = {
    "dot-dot": (lambda: _tar([_ti("../evil")], data={"../evil": b"x"}), "'..'"),
    "dot-dot inside": (lambda: _tar([_ti("a/../../evil")]), "'..'"),
    "absolute dot-dot": (lambda: _tar([_ti("/../evil")]), "'..'"),
    "symlinked parent": (_symlink_then_write, "symlink"),
    "hard link outside": (lambda: _tar([_ti("h", tarfile.LNKTYPE, "../../etc/passwd")]),
                          "'..'"),
    "hard link absolute": (lambda: _tar([_ti("h", tarfile.LNKTYPE, "/etc/passwd")]),
                           "not in this layer"),
    "hard link to nothing": (lambda: _tar([_ti("h", tarfile.LNKTYPE, "etc/shadow")]),
                             "not in this layer"),
    "hard link to a dir": (lambda: _tar([_ti("d", tarfile.DIRTYPE, mode=0o755),
                                         _ti("h", tarfile.LNKTYPE, "d")]), "dir"),
    "whiteout of dot-dot": (lambda: _tar([_ti("a/.wh...")]), "names no valid entry"),
    "whiteout used as a directory": (lambda: _tar([_ti(".wh.x/y")]), "reserved"),
    "whiteout as a directory entry": (lambda: _tar([_ti("d/.wh.x", tarfile.DIRTYPE)]),
                                      "not a regular file"),
    "empty whiteout": (lambda: _tar([_ti(".wh.")]), "names no valid entry"),
    "overlay xattr forgery": (lambda: _tar([_ti("d", tarfile.DIRTYPE, mode=0o755)],
                                           pax={"d": {"SCHILY.xattr.trusted.overlay.opaque":
                                                      "y"}}), "overlay-private"),
    "entry under a file": (lambda: _tar([_ti("f"), _ti("f/g")]), "not a directory"),
    "sparse file": (lambda: _tar([_ti("s")], fmt=tarfile.GNU_FORMAT,
                                 kinds={"s": tarfile.GNUTYPE_SPARSE}), "sparse"),
    "huge pax header": (_huge_pax, "too large"),
    "NUL in a PAX name": (lambda: _tar([_ti("ok")], pax={"ok": {"path": "a\0b"}}), "NUL"),
    "truncated tar": (_truncated, "truncated"),
    "cut in a header": (lambda: _tar([_ti("f"), _ti("g")], data={"f": b"abc"})[:1024 + 100],
                        "truncated"),
    "truncated gzip": (lambda: gzip.compress(_tar([_ti("f")], data={"f": os.urandom(9000)})
                                             )[:2000], "truncated|gzip"),
    "garbage gzip": (lambda: b"\x1f\x8b\x08\x00" + os.urandom(400), "gzip"),
    "garbage zstd": (lambda: b"\x28\xb5\x2f\xfd" + os.urandom(400), "zstd"),
    "not a tar": (lambda: os.urandom(2048), "checksum"),
    "bad octal": (lambda: _raw_with_name(b"f") [:124] + b"zzzzzzzzzzz\0" +
                  _raw_with_name(b"f")[136:], "bad|checksum"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_tars_are_refused_and_leave_nothing(tmp_path, case):
    make, match = HOSTILE[case]
    data = make()
    outside = tmp_path / "outside"
    outside.mkdir()
    sentinel = outside / "sentinel"
    sentinel.write_text("untouched")
    dest = tmp_path / "store" / "layer" / "diff"
    tmp_dir = tmp_path / "store" / "tmp"
    with pytest.raises(LayerInvalid, match=match):
        layers.unpack(io.BytesIO(data), str(dest), tmp_dir=str(tmp_dir))
    assert not dest.exists()
    assert os.listdir(tmp_dir) == []
    assert os.listdir(outside) == ["sentinel"] and sentinel.read_text() == "untouched"
    assert not os.path.lexists("/tmp/pwned") or case != "symlinked parent"


def test_a_tar_without_end_blocks_is_accepted(tmp_path):
    data = _tar([_ti("f")], data={"f": b"abc"})[:1024]
    u = layers.unpack(io.BytesIO(data), str(tmp_path / "d"))
    assert (tmp_path / "d" / "f").read_bytes() == b"abc"
    assert u.diff_id == Digest.of(data)


def test_absolute_names_are_taken_from_the_layer_root(tmp_path):
    data = _tar([_ti("/", tarfile.DIRTYPE, mode=0o755), _ti("/etc", tarfile.DIRTYPE,
                                                            mode=0o755),
                 _ti("/etc/evil"), _ti("a/./b/../c")],
                data={"/etc/evil": b"inside", "a/./b/../c": b"c"})
    layers.unpack(io.BytesIO(data), str(tmp_path / "d"))
    assert (tmp_path / "d" / "etc" / "evil").read_bytes() == b"inside"
    assert (tmp_path / "d" / "a" / "c").read_bytes() == b"c"
    assert not os.path.exists("/etc/evil")


def test_decompression_bomb_is_bounded(tmp_path):
    data = _bomb()
    assert len(data) < 200_000
    with pytest.raises(LayerInvalid, match="decompression bomb"):
        layers.unpack(io.BytesIO(data), str(tmp_path / "d"),
                      limits=layers.Limits(max_bytes=8 << 20))
    assert not (tmp_path / "d").exists()


def test_wrong_digests_are_refused_with_both_values(tmp_path):
    layer = MemoryLayer()
    with layer.open_write("/f", create=True) as f:
        f.write(b"abc")
    data, r = _pack_bytes(layer)
    wrong = Digest.of(b"something else")
    with pytest.raises(DigestInvalid) as e:
        layers.unpack(io.BytesIO(data), str(tmp_path / "a"), expected_digest=wrong)
    assert e.value.expected == str(wrong) and e.value.actual == str(r.digest)
    with pytest.raises(DigestInvalid):
        layers.unpack(io.BytesIO(data), str(tmp_path / "b"), expected_diff_id=wrong)
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_same_layer_whiteout_removes_the_earlier_entry_and_dup_entries_replace(tmp_path):
    data = _tar([_ti("x"), _ti(".wh.x"), _ti("y"), _ti("y")],
                data={"x": b"1", "y": b"second"})
    layers.unpack(io.BytesIO(data), str(tmp_path / "d"), allow_devices=False)
    assert wh.find_whiteout(str(tmp_path / "d"), "x") is not None
    assert (tmp_path / "d" / "y").read_bytes() == b"second"


def test_aufs_meta_entries_are_ignored(tmp_path):
    data = _tar([_ti(".wh..wh.plnk", tarfile.DIRTYPE), _ti(".wh..wh.plnk/1.2"), _ti("ok")],
                data={"ok": b"1", ".wh..wh.plnk/1.2": b"zz"})
    u = layers.unpack(io.BytesIO(data), str(tmp_path / "d"))
    assert os.listdir(tmp_path / "d") == ["ok"]
    assert (tmp_path / "d" / "ok").read_bytes() == b"1"
    assert sum("AUFS" in w for w in u.warnings) == 2


# -- the property: our tars applied in order == the engine's merged view ---------------------

@settings(deadline=None)
@given(ust.stacks(upper=False, max_lowers=3))
def test_applying_our_tars_in_order_gives_the_engines_view(stack):
    need_root()
    import tempfile
    with tempfile.TemporaryDirectory() as tmp:
        mem = [ust.memory_layer(spec, f"l{i}") for i, spec in enumerate(stack.lowers)]
        expected = _snapshot_fs(UnionFS(lowers=mem))
        tars = [_pack_bytes(layer, "none")[0] for layer in mem]
        applied = os.path.join(tmp, "applied")
        os.mkdir(applied)
        for data in reversed(tars):                      # bottom layer first
            _reference_apply(data, applied)
        assert _snapshot_fs(_HostFS(applied)) == expected
        # and our own unpack gives layers the engine merges to the same view
        dirs = []
        for i, data in enumerate(tars):
            d = os.path.join(tmp, f"u{i}", "diff")
            layers.unpack(io.BytesIO(data), d)
            dirs.append(DirLayer(d, cache=False))
            # pack(unpack(t)) keeps every entry
            again, _ = _pack_bytes(d, "none")
            assert _entries_no_time(again) == _entries_no_time(data)
        assert _snapshot_fs(UnionFS(lowers=dirs)) == expected


def _entries_no_time(data: bytes) -> list[tuple]:
    return [e[:5] + e[6:] for e in _entries(data)]


@given(st.binary(max_size=3000))
def test_arbitrary_bytes_never_escape_or_crash(data):
    import tempfile
    with tempfile.TemporaryDirectory() as tmp:
        try:
            layers.unpack(io.BytesIO(data), os.path.join(tmp, "d"),
                          limits=layers.Limits(max_bytes=1 << 20))
        except (LayerInvalid, DigestInvalid):
            assert not os.path.exists(os.path.join(tmp, "d"))


def test_zstd_content_is_verified(tmp_path):
    raw = _tar([_ti("f")], data={"f": b"q" * 100})
    data = zstandard.ZstdCompressor().compress(raw)
    u = layers.unpack(io.BytesIO(data), str(tmp_path / "d"))
    assert u.diff_id == Digest.of(raw) and u.compression == "zstd"


class _LyingLayer:
    """A layer whose files claim to be bigger than they are (a file shrinking mid-pack)."""

    def __init__(self, inner: MemoryLayer) -> None:
        self.inner = inner
        self.name = "lying"

    def lookup(self, path):
        e = self.inner.lookup(path)
        return e.evolve(size=e.size + 100) if e is not None and e.kind is Kind.FILE else e

    def __getattr__(self, name):
        return getattr(self.inner, name)


def test_pack_with_side_unpack_and_its_failure(tmp_path):
    layer = MemoryLayer()
    layer.mkdir("/d", 0o755)
    with layer.open_write("/d/f", create=True) as f:
        f.write(b"x" * 3000)
    buf = io.BytesIO()
    r = layers.pack(layer, buf, unpack_to=str(tmp_path / "side"), unpack_tmp=str(tmp_path))
    assert (tmp_path / "side" / "d" / "f").read_bytes() == b"x" * 3000
    assert r.diff_id == Digest.of(gzip.decompress(buf.getvalue()))
    with pytest.raises(LayerInvalid, match="shrank"):
        layers.pack(_LyingLayer(layer), io.BytesIO(), unpack_to=str(tmp_path / "side2"),
                    unpack_tmp=str(tmp_path / "t2"))
    assert not (tmp_path / "side2").exists()
    assert not (tmp_path / "t2").exists() or os.listdir(tmp_path / "t2") == []
