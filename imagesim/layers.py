"""OCI layer tars <-> unionfs layers. The only place in imagesim where ``.wh.`` names in a tar
are spoken.

Packing (``pack``, ``TarWriter``): a layer (any ``unionfs.Layer``: an upper directory through
``DirLayer``, a ``MemoryLayer``, or entries given one by one) becomes a tar following the OCI
changeset rules: whiteouts as empty ``.wh.NAME`` files, opaque directories as a
``.wh..wh..opq`` file right after the directory, hard links (same inode in the layer) as tar
links to the first path, symlinks, modes with setuid/setgid/sticky, uid/gid, mtimes with
sub-second precision and xattrs in PAX headers. Output is deterministic: entries sorted,
no user/group names, fixed gzip header, so the same input gives the same digest. Compression:
gzip (default, level ``DEFAULT_GZIP_LEVEL`` = 5, deflated by zlib-ng; 1 MiB blocks deflated
in parallel threads, pigz-style, so two cores compress twice as fast while the output stays
independent of the thread count; file content that does not compress, judged from a sample,
goes out as stored deflate blocks instead of costing deflate time), zstd (multi-threaded via
``zstandard``) or none. The tar stream (diff id) and the compressed stream (digest) are hashed
while they stream, each in its own thread: one pass over the bytes.

Unpacking (``unpack``): a layer tar (plain, gzip or zstd, sniffed from its first bytes)
becomes a directory in overlayfs on-disk format, whiteouts and opaque markers written through
``unionfs.whiteout`` in the best format the host allows. It is safe: no entry is written
outside the directory (absolute names are taken from the layer root, a ``..`` that climbs
out is refused, as are entries under a symlink or a non-directory,
hard links to paths that are not earlier regular entries of the same layer, ``.wh.`` names
used as directories or pointing at ``.``/``..``), overlay-private xattrs in the tar are
refused (they could forge whiteouts), device nodes are created only when privileged (else
skipped with a warning), memory stays bounded (streamed decompression) and so does disk
(``Limits``). The tar is unpacked into a temporary directory and renamed into place only when
it was complete and its digests matched: a broken, truncated or lying layer raises
``LayerInvalid`` (or ``DigestInvalid``) and leaves nothing behind.
"""

from __future__ import annotations

import collections
import concurrent.futures as cf
import contextlib
import errno
import os
import shutil
import stat
import struct
import tempfile
import threading
import uuid
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, BinaryIO

from zlib_ng import gzip_ng
from zlib_ng import zlib_ng as _deflate_engine

from unionfs import whiteout as wh
from unionfs.entry import Entry, Kind
from unionfs.layer import Layer, walk_layer

from . import faults, oci
from .blobs import BlobWriter
from .digest import Digest, Hasher
from .errors import DigestInvalid, ImageSimError, LayerInvalid

BLOCK = 512
CHUNK = 1 << 20
#: parallel deflate block size (pigz uses 128 KiB; bigger blocks cost less per block)
GZIP_BLOCK = 1 << 20
#: the default gzip level. 5, not gzip(1)'s 6: umoci's writer (Go's pgzip at its default
#: compression, which klauspost/compress maps to its level 5) compresses the benchmark's text
#: less than zlib-ng's level 5 does, while level 6 deflates that text about 3x slower for
#: 10% less output (benchmarks/image_bench.py prints every size and CPU time)
DEFAULT_GZIP_LEVEL = 5
#: file content pieces at least this long are sampled; when the sample does not compress
#: (random or already compressed bytes) the piece goes out as deflate "stored" blocks:
#: deflating it would cost as much CPU as text and save nothing (Go's klauspost/compress,
#: umoci's deflater, likewise stops searching data without matches)
STORE_MIN = 8 << 10
_SAMPLE = 2048
#: content pieces stored as they are, separated by no more than this (a tar header and its
#: padding), go out as one stored run
_STORE_GAP = 2 * BLOCK
DEFAULT_ZSTD_LEVEL = 3
COMPRESSIONS = ("gzip", "zstd", "none")

_GZIP_MAGIC = b"\x1f\x8b"
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
#: a fixed gzip header: no name, mtime 0, OS "unknown" (as Go's writer), so output is stable
_GZIP_HEADER = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"


def deflate_engine_name() -> str:
    """Which library deflates gzip layers: zlib-ng, a required dependency. It writes the same
    format with zlib's levels, about 1.5x faster on text, but other bytes than zlib: packing
    never falls back to the stdlib's zlib, so a tree gives the same digest everywhere."""
    return f"zlib-ng {getattr(_deflate_engine, 'ZLIBNG_VERSION', '?')}"


def default_threads() -> int:
    return max(1, min(os.cpu_count() or 1, 8))


# ======================================================================================
# writing tars
# ======================================================================================

def _octal(value: int, width: int) -> bytes | None:
    """``width``-byte NUL-terminated octal, or ``None`` when it does not fit."""
    if value < 0 or value >= _OCTAL_MAX[width]:
        return None
    return b"%0*o\0" % (width - 1, value)


_OCTAL_MAX = {w: 8 ** (w - 1) for w in (8, 12)}
_USTAR = struct.Struct("100s8s8s8s12s12s8s1s100s6s2s32s32s8s8s155s12s")
_ZERO8 = b"0000000\0"
_ZERO12 = b"00000000000\0"


def _pax_record(key: str, value: bytes) -> bytes:
    body = b" " + key.encode() + b"=" + value + b"\n"
    n = len(body) + 1
    while len(str(n).encode()) + len(body) != n:
        n = len(str(n).encode()) + len(body)
    return str(n).encode() + body


def _split_ustar(name: bytes) -> tuple[bytes, bytes] | None:
    """``(prefix, name)`` fitting ustar's 155 + 100 bytes, or ``None``."""
    if len(name) <= 100:
        return b"", name
    for i in range(len(name) - 1, 0, -1):
        if name[i:i + 1] == b"/" and i <= 155 and len(name) - i - 1 <= 100 and i > 0:
            return name[:i], name[i + 1:]
    return None


def _ns_text(ns: int) -> bytes:
    sec, frac = divmod(ns, 1_000_000_000)
    if frac == 0:
        return str(sec).encode()
    return f"{sec}.{frac:09d}".rstrip("0").encode()


def tar_header(name: str, *, kind: str, mode: int = 0o644, uid: int = 0, gid: int = 0,
               size: int = 0, mtime_ns: int = 0, linkname: str = "", devmajor: int = 0,
               devminor: int = 0, xattrs: Iterable[tuple[str, bytes]] = ()) -> bytes:
    """The header block(s) of one tar entry: a PAX extended header first when anything does
    not fit ustar (long or non-ASCII names, big numbers, sub-second mtime, xattrs).
    ``kind`` is the typeflag character."""
    if (not xattrs and not devmajor and not devminor and len(name) <= 100
            and len(linkname) <= 100 and name.isascii() and linkname.isascii()
            and 0 <= uid < _MAX7 and 0 <= gid < _MAX7 and 0 <= size < _MAX11
            and 0 <= mtime_ns < _MAX11_NS):
        # the common entry, in a few operations: a tree of 50k files packs a header each
        return _plain_header(name.encode(), kind.encode(), mode, uid, gid, size, mtime_ns,
                             linkname.encode())
    return _general_header(name, kind=kind, mode=mode, uid=uid, gid=gid, size=size,
                           mtime_ns=mtime_ns, linkname=linkname, devmajor=devmajor,
                           devminor=devminor, xattrs=xattrs)


_MAX7 = 8 ** 7
_MAX11 = 8 ** 11
_MAX11_NS = _MAX11 * 1_000_000_000
_SPACES = b"        "
#: the checksum of the bytes every plain header shares (magic, version, device fields and
#: the checksum field itself counted as spaces)
_PLAIN_SUM = sum(b"ustar\0" + b"00" + _ZERO8 + _ZERO8 + _SPACES)


def _plain_header(bname: bytes, kind: bytes, mode: int, uid: int, gid: int, size: int,
                  mtime_ns: int, blink: bytes) -> bytes:
    """``tar_header`` for a short ASCII name and small numbers: byte for byte what the
    general path writes (a PAX header only for a sub-second mtime)."""
    sec, frac = divmod(mtime_ns, 1_000_000_000)
    m = b"%07o\0" % (mode & 0o7777)
    u = b"%07o\0" % uid
    g = b"%07o\0" % gid
    sz = b"%011o\0" % size
    mt = b"%011o\0" % sec
    chk = _PLAIN_SUM + sum(bname) + sum(m) + sum(u) + sum(g) + sum(sz) + sum(mt) + \
        kind[0] + sum(blink)
    block = _USTAR.pack(bname, m, u, g, sz, mt, b"%06o\0 " % chk, kind, blink, b"ustar\0",
                        b"00", b"", b"", _ZERO8, _ZERO8, b"", b"")
    if not frac:
        return block
    data = _pax_record("mtime", _ns_text(mtime_ns))
    base = bname.rstrip(b"/").rpartition(b"/")[2] or b"root"
    head = _ustar(b"PaxHeaders.0/" + base, 0o644, _ZERO8, _ZERO8, _octal(len(data), 12),
                  _ZERO12, "x", b"", 0, 0, b"")
    return head + data + b"\0" * (-len(data) % BLOCK) + block


def _general_header(name: str, *, kind: str, mode: int, uid: int, gid: int, size: int,
                    mtime_ns: int, linkname: str, devmajor: int, devminor: int,
                    xattrs: Iterable[tuple[str, bytes]]) -> bytes:
    pax: list[bytes] = []
    bname = os.fsencode(name)
    blink = os.fsencode(linkname)
    split = _split_ustar(bname) if bname.isascii() else None
    if split is None:
        pax.append(_pax_record("path", bname))
        split = (b"", bname[-100:] if len(bname) > 100 else bname)
    if len(blink) > 100 or not blink.isascii():
        pax.append(_pax_record("linkpath", blink))
        blink = blink[:100]
    fields = {}
    for key, value, width in (("uid", uid, 8), ("gid", gid, 8), ("size", size, 12)):
        enc = _octal(value, width)
        if enc is None:
            pax.append(_pax_record(key, str(value).encode()))
            enc = _octal(0, width)
        fields[key] = enc
    sec = mtime_ns // 1_000_000_000
    mt = _octal(sec, 12)
    if mt is None or mtime_ns % 1_000_000_000:
        pax.append(_pax_record("mtime", _ns_text(mtime_ns)))
    if mt is None:
        mt = _octal(0, 12)
    for xname, xvalue in sorted(xattrs):
        pax.append(_pax_record("SCHILY.xattr." + xname, xvalue))
    block = _ustar(split[1], mode, fields["uid"], fields["gid"], fields["size"], mt, kind,
                   blink, devmajor, devminor, split[0])
    if not pax:
        return block
    data = b"".join(pax)
    base = os.path.basename(name.rstrip("/")) or "root"
    pax_name = ("PaxHeaders.0/" + base).encode()[:100]
    head = _ustar(pax_name, 0o644, _octal(0, 8), _octal(0, 8), _octal(len(data), 12),
                  _octal(0, 12), "x", b"", 0, 0, b"")
    return head + data + b"\0" * (-len(data) % BLOCK) + block


def _ustar(name: bytes, mode: int, uid: bytes | None, gid: bytes | None, size: bytes | None,
           mtime: bytes | None, kind: str, linkname: bytes, devmajor: int, devminor: int,
           prefix: bytes) -> bytes:
    fields = [name, _octal(mode & 0o7777, 8) or _ZERO8, uid or _ZERO8, gid or _ZERO8,
              size or _ZERO12, mtime or _ZERO12, b"        ", kind.encode(), linkname,
              b"ustar\0", b"00", b"", b"",
              _octal(devmajor, 8) or _ZERO8 if devmajor else _ZERO8,
              _octal(devminor, 8) or _ZERO8 if devminor else _ZERO8, prefix, b""]
    block = _USTAR.pack(*fields)
    chk = b"%06o\0 " % sum(block)
    return block[:148] + chk + block[156:]


@dataclass(frozen=True, slots=True)
class PackResult:
    """What ``pack`` produced: ``digest`` (of the compressed blob), ``diff_id`` (of the
    tar), ``size`` (compressed bytes), ``tar_size``, the media type, how many entries and the
    sum of regular file sizes (``content_size``)."""

    digest: Digest
    diff_id: Digest
    size: int
    tar_size: int
    media_type: str
    compression: str
    entries: int
    content_size: int

    def descriptor(self, docker: bool = False) -> oci.Descriptor:
        mt = self.media_type if not docker else oci.layer_media_type(self.compression, True)
        return oci.Descriptor(mt, self.digest, self.size)


class _Sink:
    """The output side: hashes the tar stream, compresses it (in parallel where it can),
    hashes and writes the compressed stream. Everything in order, one pass."""

    def __init__(self, out: BinaryIO, compression: str, level: int | None,
                 threads: int | None) -> None:
        if compression not in COMPRESSIONS and compression != "":
            raise ValueError(f"unknown compression {compression!r}")
        self.compression = "none" if compression == "" else compression
        self.out = out
        #: receives every tar block in order (pack's unpack_to feeds an unpacker with it)
        self.tee: _BlockQueue | None = None
        self.threads = threads or default_threads()
        self.diff_hasher = Hasher()
        # a BlobWriter hashes what it is given, and an uncompressed blob is the tar: do not
        # hash the same bytes twice
        self.out_hasher: Hasher | None = None if isinstance(out, BlobWriter) or \
            self.compression == "none" else Hasher()
        self.written = 0
        #: the tar bytes of the block being gathered (joined once when it is full: one copy)
        self.pieces: list[bytes] = []
        self.buffered = 0
        #: (start, end) of the file content pieces in that block worth sampling
        self.spans: list[tuple[int, int]] = []
        self.crc = 0
        self._hash_pool = cf.ThreadPoolExecutor(1, thread_name_prefix="layer-hash")
        self._write_pool = cf.ThreadPoolExecutor(1, thread_name_prefix="layer-write")
        self._comp_pool: cf.ThreadPoolExecutor | None = None
        self._pending: collections.deque[cf.Future[bytes]] = collections.deque()
        self._writes: collections.deque[cf.Future[None]] = collections.deque()
        self._hashes: collections.deque[cf.Future[None]] = collections.deque()
        self._zstd: Any = None
        self._prev_tail = b""
        if self.compression == "gzip":
            self.level = DEFAULT_GZIP_LEVEL if level is None else level
            self._comp_pool = cf.ThreadPoolExecutor(self.threads,
                                                    thread_name_prefix="layer-deflate")
            self._emit(_GZIP_HEADER)
        elif self.compression == "zstd":
            import zstandard
            self.level = DEFAULT_ZSTD_LEVEL if level is None else level
            # threads >= 1 selects zstd's multi-threaded format, whose bytes do not depend
            # on the worker count: keep it >= 1 so digests are the same on every machine
            self._zstd = zstandard.ZstdCompressor(
                level=self.level, threads=max(1, self.threads),
                write_content_size=False).compressobj()
        else:
            self.level = 0

    # the tar side ------------------------------------------------------------------------

    def write(self, data: bytes | memoryview, content: bool = False) -> None:
        """Append tar bytes; ``content`` marks a file's data (sampled for compressibility,
        so random or compressed files are stored instead of deflated)."""
        if not isinstance(data, bytes):
            data = bytes(data)  # kept until the block is joined: never a buffer that changes
        if content and len(data) >= STORE_MIN and self._comp_pool is not None:
            self.spans.append((self.buffered, self.buffered + len(data)))
        self.pieces.append(data)
        self.buffered += len(data)
        if self.buffered >= GZIP_BLOCK:
            self._flush_block()

    def _flush_block(self, final: bool = False) -> None:
        if not self.buffered and not final:
            return
        block = b"".join(self.pieces)
        self.pieces = []
        self.buffered = 0
        spans, self.spans = self.spans, []
        # bounded queues everywhere: memory stays flat whichever stage is slowest
        self._hashes.append(self._hash_pool.submit(self._hash_tar, block))
        while len(self._hashes) > self.threads + 2:
            self._hashes.popleft().result()
        if self.compression == "gzip":
            assert self._comp_pool is not None
            fut = self._comp_pool.submit(_deflate_block, block, spans, self._prev_tail,
                                         self.level, final)
            self._prev_tail = block[-32768:] if len(block) >= 32768 else \
                (self._prev_tail + block)[-32768:]
            self._pending.append(fut)
            while len(self._pending) > self.threads + 1:
                self._emit(self._pending.popleft().result())
        elif self.compression == "zstd":
            data = self._zstd.compress(block)
            if final:
                data += self._zstd.flush()
            if data:
                self._emit(data)
        else:
            if block:
                self._emit(block)

    def _hash_tar(self, block: bytes) -> None:
        self.diff_hasher.update(block)
        if self.tee is not None and block:
            self.tee.feed(block)
        if self.compression == "gzip":
            self.crc = _deflate_engine.crc32(block, self.crc)

    def _emit(self, data: bytes) -> None:
        self._writes.append(self._write_pool.submit(self._write_out, data))
        while len(self._writes) > 4:
            self._writes.popleft().result()

    def _write_out(self, data: bytes) -> None:
        if self.out_hasher is not None:
            self.out_hasher.update(data)
        self.out.write(data)
        self.written += len(data)

    def close(self) -> tuple[Digest, int, Digest, int]:
        """Finish the stream; return (digest, size, diff_id, tar_size)."""
        try:
            self._flush_block(final=True)
            while self._pending:
                self._emit(self._pending.popleft().result())
            while self._hashes:
                self._hashes.popleft().result()
            self._hash_pool.shutdown(wait=True)
            if self.tee is not None:
                self.tee.close()
            if self.compression == "gzip":
                tail = struct.pack("<II", self.crc & 0xFFFFFFFF,
                                   self.diff_hasher.size & 0xFFFFFFFF)
                self._emit(tail)
            while self._writes:
                self._writes.popleft().result()
        finally:
            self.shutdown()
        if self.out_hasher is not None:
            digest = self.out_hasher.digest()
        elif isinstance(self.out, BlobWriter):
            digest = self.out.hasher.digest()
        else:
            digest = self.diff_hasher.digest()  # uncompressed: the blob is the tar
        return digest, self.written, self.diff_hasher.digest(), self.diff_hasher.size

    def shutdown(self) -> None:
        if self.tee is not None:
            self.tee.close(failed=True)
        for pool in (self._comp_pool, self._hash_pool, self._write_pool):
            if pool is not None:
                pool.shutdown(wait=True, cancel_futures=True)


def _deflate_block(block: bytes, spans: list[tuple[int, int]], dictionary: bytes,
                   level: int, final: bool) -> bytes:
    """Raw deflate of one block, primed with the previous 32 KiB (as pigz does), ending on a
    byte boundary (sync flush) so blocks concatenate into one valid deflate stream.

    The content ``spans`` whose sample does not compress go out as stored blocks; the bytes
    around them are deflated, each run primed with the 32 KiB before it. The choice depends
    on the bytes alone, so the output does not depend on the thread count."""
    view = memoryview(block)
    out: list[bytes] = []
    pos = 0
    stored = 0      # how many stored bytes end at pos
    for start, end in _stored_runs(view, spans):
        if start > pos:
            comp = _compressor(level, _window(dictionary, view, pos, stored))
            out.append(comp.compress(view[pos:start]))
            out.append(comp.flush(zlib.Z_SYNC_FLUSH))
        out.append(_stored_blocks(view[start:end], final and end == len(block)))
        pos, stored = end, end - start
    if pos < len(block) or not out:
        comp = _compressor(level, _window(dictionary, view, pos, stored))
        out.append(comp.compress(view[pos:]))
        out.append(comp.flush(zlib.Z_FINISH if final else zlib.Z_SYNC_FLUSH))
    return b"".join(out)


def _compressor(level: int, zdict: bytes) -> Any:
    if zdict:
        return _deflate_engine.compressobj(level, zlib.DEFLATED, -15, 9,
                                           zlib.Z_DEFAULT_STRATEGY, zdict)
    return _deflate_engine.compressobj(level, zlib.DEFLATED, -15, 9)


def _window(dictionary: bytes, view: memoryview, pos: int, stored: int = 0) -> bytes:
    """The 32 KiB of the stream before ``pos`` (a deflate back-reference reaches that far),
    or none when the ``stored`` bytes just before fill it: they did not compress, so priming
    the compressor with them would cost time and find nothing."""
    if stored >= 32768:
        return b""
    if pos >= 32768:
        return bytes(view[pos - 32768:pos])
    return (dictionary + bytes(view[:pos]))[-32768:]


def _incompressible(view: memoryview) -> bool:
    """Whether ``view`` looks like random or already compressed bytes: up to 2 KiB from its
    start and as much from its middle (an eighth of it each for a small piece, so testing
    costs little beside deflating), deflated at level 2 (the fastest with dynamic Huffman
    codes, so bytes with a skewed distribution count as compressible), save under 2%."""
    n = min(_SAMPLE, len(view) // 8)
    mid = len(view) // 2
    sample = bytes(view[:n]) + bytes(view[mid:mid + n])
    c = _deflate_engine.compressobj(2, zlib.DEFLATED, -15, 8)
    size = len(c.compress(sample)) + len(c.flush())
    return size * 50 >= len(sample) * 49


def _stored_runs(view: memoryview, spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """The incompressible spans, neighbours (a tar header apart) merged into one run."""
    runs: list[tuple[int, int]] = []
    for start, end in spans:
        if not _incompressible(view[start:end]):
            continue
        if runs and start - runs[-1][1] <= _STORE_GAP:
            runs[-1] = (runs[-1][0], end)
        else:
            runs.append((start, end))
    return runs


def _stored_blocks(data: memoryview, final: bool) -> bytes:
    """``data`` as deflate stored blocks (RFC 1951 3.2.4: at most 65535 bytes each, byte
    aligned, which a sync flush guarantees before them), the last one final if ``final``."""
    out = bytearray()
    pos = 0
    while True:
        n = min(65535, len(data) - pos)
        last = pos + n == len(data)
        out += struct.pack("<BHH", 1 if final and last else 0, n, n ^ 0xFFFF)
        out += data[pos:pos + n]
        pos += n
        if last:
            return bytes(out)


_TYPEFLAG = {Kind.FILE: "0", Kind.SYMLINK: "2", Kind.CHAR: "3", Kind.BLOCK: "4",
             Kind.DIR: "5", Kind.FIFO: "6"}


class TarWriter:
    """Writes one layer tar entry by entry (deterministic bytes for the same calls), hashing
    and compressing as it goes. Paths are union paths (``/etc/passwd``); they are written
    relative (``etc/passwd``, directories with a trailing ``/``) as docker writes them.

    Use ``add(path, entry, data)`` for every entry in order (parents first), then ``close()``
    for the ``PackResult``. ``data`` is ``bytes``, a binary file object, or a host path."""

    def __init__(self, out: BinaryIO, *, compression: str = "gzip", level: int | None = None,
                 threads: int | None = None) -> None:
        self._sink = _Sink(out, compression, level, threads)
        self.entries = 0
        self.content_size = 0
        self._links: dict[tuple[int, int], str] = {}
        self._closed = False

    def _rel(self, path: str, is_dir: bool) -> str:
        rel = path.lstrip("/")
        return rel + "/" if is_dir and rel else rel

    def add(self, path: str, entry: Entry, data: bytes | BinaryIO | str | None = None,
            *, layer_id: int = 0) -> None:
        """Add one entry. A ``WHITEOUT`` becomes ``.wh.NAME``; an opaque directory gets a
        ``.wh..wh..opq`` entry after it; a regular file whose ``(layer_id, ino)`` was
        seen before (``nlink > 1``) becomes a hard link to the first path."""
        if path == "/":
            return
        s = self._sink
        head, _, name = path.rpartition("/")
        if entry.kind is Kind.WHITEOUT:
            wpath = f"{head}/{wh.WH_PREFIX}{name}"
            s.write(tar_header(self._rel(wpath, False), kind="0", mode=0o644,
                               uid=entry.uid, gid=entry.gid, mtime_ns=entry.mtime_ns))
            self.entries += 1
            return
        if entry.kind is Kind.SOCKET:
            return  # tar cannot hold sockets (docker skips them too)
        xattrs = [(k, v) for k, v in entry.xattrs if not wh.is_private_xattr(k)]
        common: dict[str, Any] = {"mode": entry.mode, "uid": entry.uid, "gid": entry.gid,
                                  "mtime_ns": entry.mtime_ns, "xattrs": xattrs}
        rel = self._rel(path, entry.is_dir)
        if entry.kind is Kind.FILE and entry.nlink > 1 and entry.ino:
            key = (layer_id, entry.ino)
            first = self._links.get(key)
            if first is not None:
                s.write(tar_header(rel, kind="1", linkname=first, **common))
                self.entries += 1
                return
            self._links[key] = rel
        if entry.kind is Kind.FILE:
            self._add_file(rel, entry, data, common)
        elif entry.kind is Kind.SYMLINK:
            s.write(tar_header(rel, kind="2", linkname=entry.target or "", **common))
        elif entry.kind in (Kind.CHAR, Kind.BLOCK):
            s.write(tar_header(rel, kind=_TYPEFLAG[entry.kind], devmajor=os.major(entry.rdev),
                               devminor=os.minor(entry.rdev), **common))
        else:
            s.write(tar_header(rel, kind=_TYPEFLAG[entry.kind], **common))
        self.entries += 1
        if entry.is_dir and entry.opaque:
            s.write(tar_header(rel + wh.OPAQUE_MARKER, kind="0", mode=0o644, uid=entry.uid,
                               gid=entry.gid, mtime_ns=entry.mtime_ns))
            self.entries += 1

    def _add_file(self, rel: str, entry: Entry, data: bytes | BinaryIO | str | None,
                  common: dict[str, Any]) -> None:
        s = self._sink
        if isinstance(data, (bytes, bytearray, memoryview)) or data is None:
            blob = bytes(data or b"")
            s.write(tar_header(rel, kind="0", size=len(blob), **common))
            s.write(blob, content=True)
            s.write(b"\0" * (-len(blob) % BLOCK))
            self.content_size += len(blob)
            return
        if isinstance(data, str):
            self._add_host_file(rel, entry, data, common)
            return
        s.write(tar_header(rel, kind="0", size=entry.size, **common))
        self._stream(rel, entry.size, data.read)

    def _stream(self, rel: str, size: int, read: Callable[[int], bytes]) -> None:
        """``size`` bytes from ``read`` into the tar in ``CHUNK`` pieces, then the padding.
        Raises ``LayerInvalid`` when the source ends early (the file shrank meanwhile)."""
        left = size
        while left > 0:
            chunk = read(min(CHUNK, left))
            if not chunk:
                raise LayerInvalid(f"/{rel} shrank while it was packed "
                                   f"({size - left} of {size} bytes)")
            self._sink.write(chunk, content=True)
            left -= len(chunk)
        self._sink.write(b"\0" * (-size % BLOCK))
        self.content_size += size

    def _add_host_file(self, rel: str, entry: Entry, path: str,
                       common: dict[str, Any]) -> None:
        # raw fds and one write for small files: per-file overhead is what a tree of 50k
        # files costs
        s = self._sink
        size = entry.size
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            head = tar_header(rel, kind="0", size=size, **common)
            if size <= CHUNK:
                data = os.read(fd, size) if size else b""
                while len(data) < size:
                    more = os.read(fd, size - len(data))
                    if not more:
                        break
                    data += more
                if len(data) != size:
                    raise LayerInvalid(f"/{rel} shrank while it was packed "
                                       f"({len(data)} of {size} bytes)")
                if size < STORE_MIN:
                    s.write(head + data + b"\0" * (-size % BLOCK))
                else:
                    s.write(head)
                    s.write(data, content=True)
                    s.write(b"\0" * (-size % BLOCK))
                self.content_size += size
            else:
                s.write(head)
                self._stream(rel, size, lambda n: os.read(fd, n))
        finally:
            os.close(fd)

    def close(self) -> PackResult:
        """Write the end-of-archive blocks, finish compression, return the result."""
        self._closed = True
        self._sink.write(b"\0" * (2 * BLOCK))
        digest, size, diff_id, tar_size = self._sink.close()
        comp = self._sink.compression
        return PackResult(digest, diff_id, size, tar_size,
                          oci.layer_media_type("" if comp == "none" else comp), comp,
                          self.entries, self.content_size)

    def abort(self) -> None:
        self._sink.shutdown()


def pack(source: Layer | str | os.PathLike, out: BinaryIO, *, compression: str = "gzip",
         level: int | None = None, threads: int | None = None,
         exclude: Callable[[str], bool] | None = None,
         unpack_to: str | os.PathLike | None = None,
         unpack_tmp: str | None = None) -> PackResult:
    """Pack a layer as an OCI layer tar into ``out``.

    ``source`` is a ``unionfs`` ``Layer`` or a directory (read as a ``DirLayer``: overlayfs,
    user-xattr or OCI whiteouts all understood). ``exclude(path)`` drops a path and
    everything below it (volumes at commit). Returns a ``PackResult`` whose digests were
    computed while the bytes streamed.

    ``unpack_to`` also unpacks the very tar bytes being written into that new directory, in
    a parallel thread (``unpack`` with all its checks; temporary files in ``unpack_tmp``):
    a commit gets its store layer without decompressing what it just compressed. Errors of
    either side are raised; the directory then does not exist."""
    layer = _as_layer(source)
    writer = TarWriter(out, compression=compression, level=level, threads=threads)
    side: _SideUnpack | None = None
    if unpack_to is not None:
        side = _SideUnpack(os.fspath(unpack_to), unpack_tmp)
        writer._sink.tee = side.queue
    try:
        result = _pack_walk(layer, writer, exclude)
    except BaseException:
        if side is not None:
            side.join(ignore=True)
        raise
    if side is not None:
        side.join()
    return result


class _RawReader:
    """``readinto`` and ``readable`` over a ``read(n)``: what zlib-ng's gunzip asks of the
    stream it reads."""

    def read(self, n: int = -1) -> bytes:
        raise NotImplementedError

    def readinto(self, buf: Any) -> int:
        data = self.read(len(buf))
        buf[:len(data)] = data
        return len(data)

    def readable(self) -> bool:
        return True


class _BlockQueue(_RawReader):
    """A file-like reader fed block by block by another thread (bounded: the feeder waits
    when the reader falls behind, so memory stays flat)."""

    def __init__(self, depth: int = 16) -> None:
        import queue
        self._q: Any = queue.Queue(maxsize=depth)
        self._buf = b""
        self._eof = False
        self._closed = False
        self.consumer_failed = False

    def _put(self, item: bytes | BaseException | None) -> None:
        """Queue ``item``, waiting while the queue is full, unless the reader gave up."""
        import queue
        while not self.consumer_failed:
            try:
                self._q.put(item, timeout=0.2)
                return
            except queue.Full:
                continue

    def feed(self, block: bytes) -> None:
        self._put(block)

    def close(self, failed: bool = False) -> None:
        if self._closed:
            return
        self._closed = True
        self._put(LayerInvalid("the packer stopped before the end of the layer") if failed
                  else None)

    def read(self, n: int = -1) -> bytes:
        while not self._eof and (n < 0 or len(self._buf) < n):
            item = self._q.get()
            if item is None:
                self._eof = True
            elif isinstance(item, BaseException):
                self._eof = True
                raise item
            else:
                self._buf += item
        if n < 0:
            data, self._buf = self._buf, b""
        else:
            data, self._buf = self._buf[:n], self._buf[n:]
        return data


class _SideUnpack:
    def __init__(self, dest: str, tmp_dir: str | None) -> None:
        self.queue = _BlockQueue()
        self.error: BaseException | None = None
        self.result: UnpackResult | None = None
        self.dest = dest
        self._thread = threading.Thread(target=self._run, args=(dest, tmp_dir),
                                        name="layer-side-unpack", daemon=True)
        self._thread.start()

    def _run(self, dest: str, tmp_dir: str | None) -> None:
        try:
            self.result = unpack(self.queue, dest, tmp_dir=tmp_dir)  # type: ignore[arg-type]
        except BaseException as e:  # reported to the packing thread by join()
            self.error = e
            self.queue.consumer_failed = True

    def join(self, ignore: bool = False) -> None:
        self._thread.join()
        if ignore:
            if self.error is None:
                _remove_tree(self.dest)
            return
        if self.error is not None:
            raise self.error


def _pack_walk(layer: Layer, writer: TarWriter,
               exclude: Callable[[str], bool] | None) -> PackResult:
    try:
        skip: str | None = None
        for path, entry in walk_layer(layer):
            if skip is not None and (path == skip or path.startswith(skip + "/")):
                continue
            if exclude is not None and path != "/" and exclude(path):
                skip = path
                continue
            data: Any = None
            if entry.kind is Kind.FILE and not (entry.nlink > 1 and entry.ino and
                                                 (0, entry.ino) in writer._links):
                host = layer.host_path(path)
                data = host if host is not None else layer.open_read(path)
            try:
                writer.add(path, entry, data)
            finally:
                if data is not None and not isinstance(data, str):
                    data.close()
        return writer.close()
    except BaseException:
        writer.abort()
        raise


def pack_to_blobs(source: Layer | str | os.PathLike, blobs: Any, *,
                  compression: str = "gzip", level: int | None = None,
                  threads: int | None = None,
                  exclude: Callable[[str], bool] | None = None,
                  unpack_to: str | os.PathLike | None = None,
                  unpack_tmp: str | None = None) -> PackResult:
    """``pack`` straight into a blob store (``FileBlobStore`` or ``MemoryBlobStore``)."""
    with blobs.writer() as w:
        result = pack(source, w, compression=compression, level=level, threads=threads,
                      exclude=exclude, unpack_to=unpack_to, unpack_tmp=unpack_tmp)
        w.commit()
    return result


def _as_layer(source: Layer | str | os.PathLike) -> Layer:
    if isinstance(source, (str, os.PathLike)):
        from unionfs.layer import DirLayer
        return DirLayer(os.fspath(source), cache=False)
    return source


# ======================================================================================
# reading tars
# ======================================================================================

@dataclass(frozen=True, slots=True)
class Limits:
    """Bounds for one layer: total tar bytes, entry count, size of one PAX/long-name
    header. A layer over any of them is refused (decompression bombs, header abuse)."""

    max_bytes: int = 64 << 30
    max_entries: int = 4_000_000
    max_header: int = 1 << 20


@dataclass(frozen=True, slots=True)
class TarEntry:
    """One entry of a tar as the reader decoded it (paths as written in the tar)."""

    name: str
    kind: str          # typeflag: "0" file, "1" hard link, "2" symlink, "3", "4", "5", "6"
    mode: int
    uid: int
    gid: int
    size: int
    mtime_ns: int
    linkname: str
    devmajor: int
    devminor: int
    xattrs: tuple[tuple[str, bytes], ...] = field(default=())
    atime_ns: int | None = None


class _AsyncHasher:
    """A ``Hasher`` whose updates run on a worker thread (hashlib releases the GIL), so
    hashing overlaps decompression and file writes; ``size`` is counted at once, ``digest``
    waits for the pending updates. Bounded: ``update`` waits when 8 are queued."""

    def __init__(self, pool: cf.ThreadPoolExecutor) -> None:
        self._h = Hasher()
        self._pool = pool
        self._pending: collections.deque[cf.Future[None]] = collections.deque()
        self.size = 0

    def update(self, data: bytes) -> None:
        self.size += len(data)
        self._pending.append(self._pool.submit(self._h.update, data))
        while len(self._pending) > 8:
            self._pending.popleft().result()

    def digest(self) -> Digest:
        while self._pending:
            self._pending.popleft().result()
        return self._h.digest()


class _HashingReader(_RawReader):
    """A raw stream that hashes every byte read through it."""

    def __init__(self, raw: BinaryIO) -> None:
        self.raw = raw
        # one worker per stream keeps each digest's updates in order
        self._pool = cf.ThreadPoolExecutor(1, thread_name_prefix="layer-raw-hash")
        self.hasher = _AsyncHasher(self._pool)
        self._head = b""

    def read(self, n: int = -1) -> bytes:
        if self._head:
            data, self._head = self._head[:n] if n >= 0 else self._head, \
                (self._head[n:] if n >= 0 else b"")
            return data
        data = self.raw.read(n)
        if data:
            self.hasher.update(data)
        return data

    def peek(self, n: int) -> bytes:
        while len(self._head) < n:
            data = self.raw.read(n - len(self._head))
            if not data:
                break
            self.hasher.update(data)
            self._head += data
        return self._head


class _Input:
    """Reads a possibly compressed stream: sniffs the format, hashes the raw bytes and the
    decompressed bytes, bounds memory (decompression in bounded steps) and the total size."""

    def __init__(self, raw: BinaryIO, limits: Limits, compression: str | None) -> None:
        self.raw = _HashingReader(raw)
        self.limits = limits
        self._tar_pool = cf.ThreadPoolExecutor(1, thread_name_prefix="layer-tar-hash")
        self.tar_hasher = _AsyncHasher(self._tar_pool)
        self._buf = bytearray()
        self._pos = 0
        self._eof = False
        #: called with every decompressed chunk (import re-compresses while it checks)
        self.on_data: Callable[[bytes], None] | None = None
        head = self.raw.peek(4)
        self.declared = compression
        if head.startswith(_GZIP_MAGIC):
            self.compression = "gzip"
            self._dec: Any = _gzip_reader(self.raw)
        elif head.startswith(_ZSTD_MAGIC):
            import zstandard
            self.compression = "zstd"
            self._dec = zstandard.ZstdDecompressor(max_window_size=1 << 31).stream_reader(
                self.raw, read_size=CHUNK // 4, read_across_frames=True, closefd=False)
        else:
            self.compression = "none"
            self._dec = self.raw

    def close(self) -> None:
        """Stop the hashing threads (after ``digest`` was read, or on failure)."""
        self._tar_pool.shutdown(wait=True, cancel_futures=True)
        self.raw._pool.shutdown(wait=True, cancel_futures=True)

    @property
    def raw_hasher(self) -> Any:
        return self.raw.hasher

    def _more(self) -> bytes:
        try:
            return self._dec.read(CHUNK)
        except EOFError:
            raise LayerInvalid(f"layer is truncated: the {self.compression} stream ends "
                               "early") from None
        except LayerInvalid:
            raise
        except (OSError, zlib.error) as e:
            raise LayerInvalid(f"layer is not valid {self.compression}: {e}") from None
        except Exception as e:  # zstandard.ZstdError and friends
            raise LayerInvalid(f"layer is not valid {self.compression}: {e}") from None

    def _fill(self, want: int) -> None:
        """Make at least ``want`` bytes available (fewer at the end of the stream)."""
        while len(self._buf) - self._pos < want and not self._eof:
            if self._pos > CHUNK:
                del self._buf[:self._pos]
                self._pos = 0
            out = self._more()
            if not out:
                self._eof = True
                break
            if self.tar_hasher.size + len(out) > self.limits.max_bytes:
                raise LayerInvalid(f"layer expands beyond {self.limits.max_bytes} bytes "
                                   "(decompression bomb?)")
            self.tar_hasher.update(out)
            if self.on_data is not None:
                self.on_data(out)
            self._buf += out

    def read_exact(self, n: int, what: str = "tar data") -> bytes:
        self._fill(n)
        if len(self._buf) - self._pos < n:
            raise LayerInvalid(f"layer is truncated in the middle of {what}")
        data = bytes(self._buf[self._pos:self._pos + n])
        self._pos += n
        return data

    def read_some(self, n: int) -> bytes:
        self._fill(1)
        avail = len(self._buf) - self._pos
        if avail == 0:
            raise LayerInvalid("layer is truncated in the middle of a file")
        k = min(n, avail)
        data = bytes(self._buf[self._pos:self._pos + k])
        self._pos += k
        return data

    def at_end(self) -> bool:
        self._fill(1)
        return len(self._buf) - self._pos == 0

    def drain(self) -> None:
        """Read (and hash) everything left: the diff id covers the whole tar stream, the
        digest the whole blob."""
        while not self._eof:
            self._pos = len(self._buf)
            self._fill(CHUNK)
        self._pos = len(self._buf)
        while self.raw.read(CHUNK):
            pass


def _gzip_reader(raw: Any) -> Any:
    """A streaming gunzip of ``raw`` (zlib-ng's: it inflates faster than zlib)."""
    return gzip_ng.GzipFile(fileobj=raw, mode="rb")


def _parse_octal(field_: bytes, what: str) -> int:
    if field_[:1] and field_[0] & 0x80:  # GNU base-256
        value = int.from_bytes(field_[1:], "big")
        if field_[0] & 0x40:
            value -= 1 << (8 * (len(field_) - 1))  # negative
        return value
    text = field_.split(b"\0", 1)[0].strip(b" ")
    if not text:
        return 0
    try:
        return int(text, 8)
    except ValueError:
        raise LayerInvalid(f"bad {what} field in a tar header: {bytes(field_)!r}") from None


def _cstr(field_: bytes) -> bytes:
    return field_.split(b"\0", 1)[0]


def _parse_pax(data: bytes) -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    pos = 0
    while pos < len(data):
        if data[pos:pos + 1] == b"\0":
            break
        sp = data.find(b" ", pos)
        if sp == -1:
            raise LayerInvalid("malformed PAX header record")
        try:
            length = int(data[pos:sp])
        except ValueError:
            raise LayerInvalid("malformed PAX header record length") from None
        if length <= sp - pos or pos + length > len(data):
            raise LayerInvalid("malformed PAX header record length")
        record = data[sp + 1:pos + length]
        if not record.endswith(b"\n") or b"=" not in record:
            raise LayerInvalid("malformed PAX header record")
        key, _, value = record[:-1].partition(b"=")
        out[key.decode("utf-8", "surrogateescape")] = value
        pos += length
    return out


def _pax_id(hdr: dict[str, bytes], key: str) -> int:
    """A PAX ``uid``/``gid``: a decimal in 0..2**32-1, else ``LayerInvalid`` (a hostile
    header must not surface as a ValueError or an OverflowError from chown)."""
    try:
        value = int(hdr[key])
    except ValueError:
        raise LayerInvalid(f"bad PAX {key} {hdr[key][:40]!r}") from None
    if not 0 <= value < 1 << 32:
        raise LayerInvalid(f"PAX {key} {value} is out of range")
    return value


def _pax_time(value: bytes) -> int:
    text = value.decode("ascii", "replace")
    neg = text.startswith("-")
    sec, _, frac = text.lstrip("-").partition(".")
    try:
        ns = int(sec or "0") * 1_000_000_000 + int((frac + "000000000")[:9] or "0")
    except ValueError:
        raise LayerInvalid(f"bad PAX time {text!r}") from None
    return -ns if neg else ns


def iter_tar(inp: _Input, limits: Limits) -> Iterator[TarEntry]:
    """Decode tar entries from ``inp``; the caller must consume each regular file's data
    (``entry.size`` bytes, then padding is skipped here) before asking for the next."""
    global_pax: dict[str, bytes] = {}
    pax: dict[str, bytes] = {}
    long_name: bytes | None = None
    long_link: bytes | None = None
    count = 0
    while True:
        if inp.at_end():
            # no end-of-archive blocks: Go writers that are never closed (umoci) end here;
            # a layer cut at a header boundary is caught by its digests
            return
        block = bytes(inp.read_exact(BLOCK, "a tar header"))
        if block == b"\0" * BLOCK:
            return
        stored = _parse_octal(block[148:156], "checksum")
        unsigned = sum(block) - sum(block[148:156]) + 8 * 32
        # some old writers summed signed bytes: check that form only when needed
        if stored != unsigned and stored != unsigned - 256 * sum(
                1 for b in block[:148] + block[156:] if b > 127):
            raise LayerInvalid(f"bad tar header checksum after {count} entries "
                               "(not a tar, or corrupt)")
        kind = chr(block[156]) if block[156] else "0"
        size = _parse_octal(block[124:136], "size")
        if kind in ("x", "g", "L", "K"):
            if size > limits.max_header or size < 0:
                raise LayerInvalid(f"tar extended header of {size} bytes is too large")
            data = bytes(inp.read_exact(size, "an extended header"))
            inp.read_exact(-size % BLOCK, "padding")
            if kind == "x":
                pax.update(_parse_pax(data))
            elif kind == "g":
                global_pax.update(_parse_pax(data))
            elif kind == "L":
                long_name = _cstr(data)
            else:
                long_link = _cstr(data)
            continue
        count += 1
        if count > limits.max_entries:
            raise LayerInvalid(f"layer has more than {limits.max_entries} entries")
        hdr = {**global_pax, **pax}
        if kind in ("S",) or any(k.startswith("GNU.sparse") for k in hdr):
            raise LayerInvalid("sparse files in layer tars are not supported")
        if block[257:262] == b"ustar" and block[345:500].strip(b"\0"):
            name_b = _cstr(block[345:500]) + b"/" + _cstr(block[0:100])
        else:
            name_b = _cstr(block[0:100])
        if long_name is not None:
            name_b = long_name
        if "path" in hdr:
            name_b = hdr["path"]
        link_b = _cstr(block[157:257])
        if long_link is not None:
            link_b = long_link
        if "linkpath" in hdr:
            link_b = hdr["linkpath"]
        if "size" in hdr:
            try:
                size = int(hdr["size"])
            except ValueError:
                raise LayerInvalid("bad PAX size") from None
        if size < 0:
            raise LayerInvalid("negative size in a tar header")
        mtime_ns = _parse_octal(block[136:148], "mtime") * 1_000_000_000
        if "mtime" in hdr:
            mtime_ns = _pax_time(hdr["mtime"])
        atime = _pax_time(hdr["atime"]) if "atime" in hdr else None
        uid = _pax_id(hdr, "uid") if "uid" in hdr else _parse_octal(block[108:116], "uid")
        gid = _pax_id(hdr, "gid") if "gid" in hdr else _parse_octal(block[116:124], "gid")
        xattrs = []
        for key, value in hdr.items():
            if key.startswith("SCHILY.xattr."):
                xattrs.append((key[len("SCHILY.xattr."):], value))
        if b"\0" in name_b or b"\0" in link_b:
            raise LayerInvalid("a tar entry name contains a NUL byte")
        entry = TarEntry(
            name=os.fsdecode(name_b), kind=kind,
            mode=_parse_octal(block[100:108], "mode"), uid=uid, gid=gid,
            size=size if kind in ("0", "7") else 0, mtime_ns=mtime_ns,
            linkname=os.fsdecode(link_b),
            devmajor=_parse_octal(block[329:337], "devmajor"),
            devminor=_parse_octal(block[337:345], "devminor"),
            xattrs=tuple(sorted(xattrs)), atime_ns=atime)
        pax = {}
        long_name = long_link = None
        data_size = size if kind not in ("1", "2", "3", "4", "5", "6") else 0
        yield entry
        # the consumer read entry.size bytes of a regular file; skip anything it did not
        # (other types with a size field) plus the padding
        if kind not in ("0", "7"):
            _skip(inp, data_size)
        # the last entry's padding may be missing too (umoci's never-closed writers)
        pad = -data_size % BLOCK
        if pad:
            inp._fill(pad)
            _skip(inp, min(pad, len(inp._buf) - inp._pos))


def _skip(inp: _Input, n: int) -> None:
    while n > 0:
        n -= len(inp.read_exact(min(n, CHUNK), "tar data"))


# ======================================================================================
# unpacking
# ======================================================================================

@dataclass(frozen=True, slots=True)
class UnpackResult:
    """What ``unpack`` did: the digests it verified (computed while streaming), the unpacked
    size (sum of regular file sizes), the entry count, the compression it found, and the
    warnings (skipped device nodes, dropped xattrs)."""

    digest: Digest
    diff_id: Digest
    size: int
    entries: int
    compression: str
    warnings: tuple[str, ...] = ()


def _clean_name(name: str) -> str:
    """A tar name as a relative layer path (``a/b``, ``""`` for the root), or
    ``LayerInvalid`` for a name that would leave the layer.

    An absolute name is taken from the layer root, as docker and containerd do (umoci
    writes ``/`` and ``/etc/...``); ``..`` is resolved lexically, and one that climbs
    above the root is refused (docker's "breakout" error)."""
    parts: list[str] = []
    for part in name.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            if not parts:
                raise LayerInvalid(f"layer entry {name!r} climbs out of the layer ('..')")
            parts.pop()
            continue
        if len(os.fsencode(part)) > 255:
            raise LayerInvalid(f"layer entry {name!r} has a name over 255 bytes")
        parts.append(part)
    rel = "/".join(parts)
    if len(os.fsencode(rel)) >= 4096:
        raise LayerInvalid(f"layer entry path is over 4096 bytes: {rel[:80]!r}...")
    return rel


class _Unpacker:
    def __init__(self, root: str, allow_devices: bool, fmt: wh.Format) -> None:
        self.root = root
        self.allow_devices = allow_devices
        self.fmt = fmt
        self.is_root = os.geteuid() == 0
        # what this layer has at each relative path: "dir", "file", "symlink", "whiteout",
        # "other". Nothing else writes into the temporary directory, so this is the truth,
        # and checking it is what keeps every write inside the layer.
        self.kinds: dict[str, str] = {"": "dir"}
        self.dir_meta: list[tuple[str, TarEntry]] = []
        self.warnings: list[str] = []
        self.size = 0
        self.entries = 0
        self.opaque: set[str] = set()

    def host(self, rel: str) -> str:
        return os.path.join(self.root, rel) if rel else self.root

    def ensure_parent(self, rel: str) -> None:
        parent = rel.rpartition("/")[0]
        if self.kinds.get(parent) == "dir":
            return
        acc = ""
        for part in parent.split("/"):
            acc = f"{acc}/{part}" if acc else part
            kind = self.kinds.get(acc)
            if kind is None:
                if wh.is_reserved_name(part):
                    raise LayerInvalid(f"layer entry under the reserved name {acc!r}")
                os.mkdir(self.host(acc), 0o755)
                self.kinds[acc] = "dir"
            elif kind != "dir":
                raise LayerInvalid(f"layer entry {rel!r} lies under {acc!r}, which is a "
                                   f"{kind} in this layer, not a directory")

    def clear(self, rel: str, new_is_dir: bool) -> bool:
        """Make room for a new entry at ``rel``; True when a directory stays (dir over dir)."""
        kind = self.kinds.get(rel)
        if kind is None:
            return False
        if kind == "dir" and new_is_dir:
            return True
        path = self.host(rel)
        if kind == "dir":
            shutil.rmtree(path)
            for k in [k for k in self.kinds if k.startswith(rel + "/")]:
                del self.kinds[k]
        elif kind == "whiteout":
            wh.remove_whiteout(os.path.dirname(path), os.path.basename(path))
        else:
            os.unlink(path)
        del self.kinds[rel]
        return False

    def apply(self, e: TarEntry, inp: _Input) -> None:
        rel = _clean_name(e.name)
        self.entries += 1
        base = rel.rpartition("/")[2]
        if rel == "":
            if e.kind == "5":
                self.dir_meta.append(("", e))
                return
            raise LayerInvalid("layer entry for the root is not a directory")
        if any(part.startswith(wh.WH_META_PREFIX) and part != wh.OPAQUE_MARKER
               for part in rel.split("/")):
            # AUFS bookkeeping (.wh..wh.plnk, .wh..wh.aufs): never content, never shown
            if e.kind in ("0", "7"):
                _skip(inp, e.size)
            self.warnings.append(f"ignored AUFS meta entry /{rel}")
            return
        if base.startswith(wh.WH_PREFIX):
            self.whiteout_entry(rel, base, e, inp)
            return
        self.ensure_parent(rel)
        path = self.host(rel)
        kind = e.kind
        if kind in ("0", "7"):
            self.clear(rel, False)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW |
                         os.O_CLOEXEC, 0o600)
            try:
                left = e.size
                while left > 0:
                    chunk = inp.read_some(min(left, CHUNK))
                    os.write(fd, chunk)
                    left -= len(chunk)
                self.kinds[rel] = "file"
                # metadata through the open descriptor: no more path lookups per file
                self.set_meta(rel, e, fd)
            finally:
                os.close(fd)
            self.size += e.size
            return
        elif kind == "1":
            target = _clean_name(e.linkname)
            tkind = self.kinds.get(target)
            if tkind not in ("file", "symlink", "other"):
                raise LayerInvalid(f"hard link {rel!r} -> {e.linkname!r}: the target is "
                                   f"{'not in this layer' if tkind is None else 'a ' + tkind}")
            if target == rel:
                return
            self.clear(rel, False)
            os.link(self.host(target), path, follow_symlinks=False)
            self.kinds[rel] = tkind
            return  # a link shares the target's metadata
        elif kind == "2":
            self.clear(rel, False)
            os.symlink(e.linkname, path)
            self.kinds[rel] = "symlink"
        elif kind == "5":
            if not self.clear(rel, True):
                os.mkdir(path, 0o700)
                self.kinds[rel] = "dir"
            self.dir_meta.append((rel, e))
            return
        elif kind in ("3", "4"):
            if not self.allow_devices:
                self.warnings.append(f"skipped device node /{rel} (needs privilege)")
                return
            self.clear(rel, False)
            fmt = stat.S_IFCHR if kind == "3" else stat.S_IFBLK
            try:
                os.mknod(path, fmt | 0o600, os.makedev(e.devmajor, e.devminor))
            except PermissionError:
                self.warnings.append(f"skipped device node /{rel} (mknod not permitted)")
                return
            self.kinds[rel] = "other"
        elif kind == "6":
            self.clear(rel, False)
            os.mkfifo(path, 0o600)
            self.kinds[rel] = "other"
        else:
            raise LayerInvalid(f"layer entry {rel!r} has unsupported tar type {kind!r}")
        self.set_meta(rel, e)

    def whiteout_entry(self, rel: str, base: str, e: TarEntry, inp: _Input) -> None:
        if e.kind not in ("0", "7"):
            raise LayerInvalid(f"whiteout marker {rel!r} is not a regular file")
        _skip(inp, e.size)
        parent = rel.rpartition("/")[0]
        if base == wh.OPAQUE_MARKER:
            self.ensure_parent(rel)
            self.opaque.add(parent)
            return
        target_name = wh.whiteout_target(base)
        if target_name in (None, ".", "..") or wh.is_reserved_name(target_name or ""):
            raise LayerInvalid(f"whiteout {rel!r} names no valid entry")
        self.ensure_parent(rel)
        target = f"{parent}/{target_name}" if parent else target_name
        # an entry of this layer named by a later whiteout is removed (as containerd does)
        self.clear(target, False)
        wh.write_whiteout(self.host(parent), target_name, self.fmt)
        self.kinds[target] = "whiteout"

    def set_meta(self, rel: str, e: TarEntry, fd: int | None = None) -> None:
        """Owner (when root), xattrs, mode (after chown, which clears setuid) and times,
        on the open ``fd`` when given, else on the path without following symlinks."""
        target: int | str = fd if fd is not None else self.host(rel)
        nofollow = {} if fd is not None else {"follow_symlinks": False}
        is_link = self.kinds.get(rel) == "symlink"
        if self.is_root:
            os.chown(target, e.uid, e.gid, **nofollow)
        for name, value in e.xattrs:
            if wh.is_private_xattr(name):
                raise LayerInvalid(f"layer entry {rel!r} carries the overlay-private xattr "
                                   f"{name!r}")
            try:
                os.setxattr(target, name, value, **nofollow)
            except OSError as err:
                self.warnings.append(f"could not set xattr {name} on /{rel}: "
                                     f"{err.strerror}")
        if not is_link:
            os.chmod(target, e.mode & 0o7777)
        atime = e.atime_ns if e.atime_ns is not None else e.mtime_ns
        with contextlib.suppress(OSError):
            os.utime(target, ns=(atime, e.mtime_ns), **nofollow)

    def finish(self) -> None:
        for rel in sorted(self.opaque):
            if self.kinds.get(rel) != "dir":
                continue
            wh.write_opaque(self.host(rel), self.fmt)
        # directories last, deepest first, so their mtimes and modes stick
        for rel, e in sorted(self.dir_meta, key=lambda x: x[0].count("/"), reverse=True):
            if self.kinds.get(rel) == "dir":
                self.set_meta(rel, e)


_format_cache: dict[str, wh.Format] = {}
_format_lock = threading.Lock()


def _whiteout_format(tmp_root: str) -> wh.Format:
    key = f"{os.stat(tmp_root).st_dev}:{os.geteuid()}"
    with _format_lock:
        if key not in _format_cache:
            _format_cache[key] = wh.default_format(tmp_root)
        return _format_cache[key]


def unpack(stream: BinaryIO, dest: str | os.PathLike, *, tmp_dir: str | None = None,
           expected_digest: Digest | None = None, expected_diff_id: Digest | None = None,
           compression: str | None = None, allow_devices: bool | None = None,
           limits: Limits | None = None, whiteout_format: wh.Format | None = None
           ) -> UnpackResult:
    """Unpack the layer tar in ``stream`` into the new directory ``dest``.

    The tar is written into a temporary directory (in ``tmp_dir``, default ``dest``'s
    parent) and renamed to ``dest`` only when everything checked out; if ``dest`` already
    exists by then (another process unpacked the same layer), the new copy is dropped.
    ``expected_digest`` is checked against the raw bytes, ``expected_diff_id`` against the
    tar stream (``DigestInvalid`` with both values). ``allow_devices`` defaults to "running
    as root". Raises ``LayerInvalid`` for a broken, truncated, hostile or oversized layer;
    on any error nothing is left behind."""
    dest = os.fspath(dest)
    limits = limits or Limits()
    parent = os.path.dirname(os.path.abspath(dest))
    tmp_base = tmp_dir or parent
    os.makedirs(tmp_base, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix="layer-", dir=tmp_base)
    try:
        fmt = whiteout_format or _whiteout_format(tmp)
        u = _Unpacker(tmp, os.geteuid() == 0 if allow_devices is None else allow_devices, fmt)
        inp = _Input(stream, limits, compression)
        try:
            try:
                for entry in iter_tar(inp, limits):
                    u.apply(entry, inp)
                    faults.point("unpack.entry")
                inp.drain()
            except ImageSimError:
                raise
            except OSError as e:
                if e.errno == errno.ENOSPC:
                    raise LayerInvalid(f"no space left while unpacking the layer: {e}"
                                       ) from None
                raise LayerInvalid(f"layer cannot be unpacked: {e}") from None
            u.finish()
            digest = inp.raw_hasher.digest()
            diff_id = inp.tar_hasher.digest()
        finally:
            inp.close()
        if expected_digest is not None and digest != expected_digest:
            raise DigestInvalid(f"layer digest mismatch: expected {expected_digest}, got "
                                f"{digest}", expected=str(expected_digest),
                                actual=str(digest))
        if expected_diff_id is not None and diff_id != expected_diff_id:
            raise DigestInvalid(f"layer diff id mismatch: expected {expected_diff_id}, got "
                                f"{diff_id}", expected=str(expected_diff_id),
                                actual=str(diff_id))
        os.makedirs(parent, exist_ok=True)
        os.chmod(tmp, 0o755)
        faults.point("unpack.rename")
        try:
            os.rename(tmp, dest)
        except OSError as e:
            if e.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                raise
            _remove_tree(tmp)  # someone else unpacked the same diff id first
        return UnpackResult(digest, diff_id, u.size, u.entries, inp.compression,
                            tuple(u.warnings))
    except BaseException:
        _remove_tree(tmp)
        raise


def _remove_tree(path: str) -> None:
    if not os.path.lexists(path):
        return

    def onerror(func: Any, p: str, exc: Any) -> None:
        # a directory made read-only by the layer's own modes: open it up and retry
        with contextlib.suppress(OSError):
            os.chmod(os.path.dirname(p), 0o700)
            os.chmod(p, 0o700)
            func(p)

    shutil.rmtree(path, onerror=onerror)


def read_entries(stream: BinaryIO, *, limits: Limits | None = None
                 ) -> Iterator[tuple[TarEntry, bytes | None]]:
    """Every entry of a (possibly compressed) tar with its data for regular files, without
    writing anything: for tests, ``layers --files`` and comparing layers. Names are as
    written in the tar."""
    limits = limits or Limits()
    inp = _Input(stream, limits, None)
    try:
        for e in iter_tar(inp, limits):
            data = bytes(inp.read_exact(e.size)) if e.kind in ("0", "7") else None
            yield e, data
        inp.drain()
    finally:
        inp.close()


def digests_of(stream: BinaryIO) -> tuple[Digest, Digest, str]:
    """(digest, diff_id, compression) of a layer blob, reading it once."""
    inp = _Input(stream, Limits(), None)
    try:
        inp.drain()
        return inp.raw_hasher.digest(), inp.tar_hasher.digest(), inp.compression
    finally:
        inp.close()


def temp_name() -> str:
    return uuid.uuid4().hex
