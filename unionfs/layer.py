"""The read-only ``Layer`` protocol and its implementations.

A layer answers questions about its own paths only: it knows nothing of the layers above or
below it. ``lookup`` returns an ``Entry`` (a whiteout is ``Entry(kind=Kind.WHITEOUT)``, an
opaque directory ``Entry(opaque=True)``); the names on disk that encode those
(``.wh.NAME``, ``.wh..wh..opq``, char device 0/0, overlay xattrs) are decoded here through
``whiteout.py`` and never seen above this module.

Paths are normalised union paths (``unionfs.path.normalize``). A layer never resolves
symlinks: ``lookup("/a/b")`` where ``/a`` is a symlink in this layer returns ``None``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno as _errno
import hashlib
import os
import stat as _stat
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any, BinaryIO, Protocol, runtime_checkable

from . import whiteout as _wh
from .entry import Entry, Kind
from .errors import (
    Exists,
    InvalidPath,
    IsADir,
    NoData,
    NotADir,
    NotEmpty,
    NotFound,
    from_oserror,
)
from .path import join, split


@runtime_checkable
class Layer(Protocol):
    """A read-only layer.

    Contract: answers never change for a lower layer during a union's life (lower layers are
    immutable), so the union may cache them. ``listdir`` lists whiteouts as their plain names
    (their entries say ``WHITEOUT``) and never lists the on-disk marker names.
    """

    #: a short human name for provenance and traces (e.g. the directory, or "layer 3")
    name: str

    def lookup(self, path: str) -> Entry | None:
        """The entry at exactly ``path`` in this layer, or ``None`` when absent (also when a
        parent is not a directory in this layer)."""
        ...

    def listdir(self, path: str) -> list[str]:
        """Names directly inside the directory ``path`` of this layer (whiteouts included,
        on-disk markers excluded), in no particular order. Raises ``NotFound``/``NotADir``."""
        ...

    def read(self, path: str, offset: int, size: int) -> bytes:
        """Up to ``size`` bytes of the regular file at ``path`` from ``offset``."""
        ...

    def open_read(self, path: str) -> BinaryIO:
        """A binary file object reading the regular file at ``path`` (caller closes it)."""
        ...

    def readlink(self, path: str) -> str:
        """The target of the symlink at ``path``. Raises ``InvalidPath`` if not a symlink."""
        ...

    def host_path(self, path: str) -> str | None:
        """The host file that holds ``path``'s data, when the layer is a directory on disk
        (lets copy-up use ``copy_file_range``); ``None`` for in-memory layers."""
        ...


def walk_layer(layer: Layer, top: str = "/") -> Iterator[tuple[str, Entry]]:
    """Every ``(path, entry)`` of one layer below ``top`` (``top`` itself first when present),
    parents before children, names sorted: the order a deterministic tar needs."""
    entry = layer.lookup(top)
    if entry is None:
        return
    yield top, entry
    if entry.is_dir:
        for name in sorted(layer.listdir(top)):
            yield from walk_layer(layer, join(top, name))


# =========================================================================== implementations

_COPY_CHUNK = 1 << 24


def redirect_stack(lowers: Sequence[Layer], i: int, cpath: str,
                   redirect: str) -> list[tuple[int, str, Entry]]:
    """The directories merged under layer ``i``'s directory ``cpath`` that carries
    ``overlay.redirect``: ``(layer index, path in that layer, entry)`` found at the redirect
    target in each layer below ``i`` (a relative target is a sibling of ``cpath``), until an
    opaque directory or a non-directory; a further redirect moves the target, as the kernel
    does."""
    target = redirect if redirect.startswith("/") else join(split(cpath)[0], redirect)
    out: list[tuple[int, str, Entry]] = []
    for j in range(i + 1, len(lowers)):
        e = lowers[j].lookup(target)
        if e is None:
            continue
        if e.kind is not Kind.DIR:
            break
        out.append((j, target, e))
        if e.opaque:
            break
        if e.redirect:
            target = e.redirect if e.redirect.startswith("/") else join(split(target)[0],
                                                                          e.redirect)
    return out


def root_stack(lowers: Sequence[Layer]) -> list[tuple[int, str, Entry]]:
    """The layers' root directories that merge into the lower view's ``/``, top-most first,
    down to the first opaque one (a layer with no root directory takes no part)."""
    out: list[tuple[int, str, Entry]] = []
    for i, layer in enumerate(lowers):
        e = layer.lookup("/")
        if e is None or e.kind is not Kind.DIR:
            continue
        out.append((i, "/", e))
        if e.opaque:
            break
    return out


def merge_stack(lowers: Sequence[Layer],
                items: Sequence[tuple[int, str, Entry]]) -> list[tuple[int, str, Entry]]:
    """overlayfs's merge rule for one name: from its lookups ``(layer index, path, entry)``
    in the layers of the parent directory's stack (top-most first), the visible object and
    what merges under it. A whiteout on top hides the name; a directory merges the
    directories below it until an opaque one, a non-directory or a whiteout (a redirect
    sends the layers below to its target, ``redirect_stack``); a metacopy file is followed
    down to the file holding its data; any other object stands alone."""
    out: list[tuple[int, str, Entry]] = []
    for i, cpath, e in items:
        if not out:
            if e.kind is Kind.WHITEOUT:
                return []
            out.append((i, cpath, e))
            if e.kind is Kind.FILE and e.metacopy:
                continue   # its data is in a layer below
            if e.kind is not Kind.DIR:
                return out  # a non-directory hides everything below it
        elif out[0][2].kind is not Kind.DIR:  # a metacopy file's chain
            if e.kind is not Kind.FILE:
                return out
            out.append((i, cpath, e))
            if not e.metacopy:
                return out
            continue
        elif e.kind is not Kind.DIR:
            return out      # a whiteout or a non-directory ends the merge
        else:
            out.append((i, cpath, e))
        if e.opaque:
            return out
        if e.redirect:
            return out + redirect_stack(lowers, i, cpath, e.redirect)
    return out


def _now() -> int:
    return time.time_ns()


# --------------------------------------------------------------------------- MemoryLayer


class _MNode:
    """One in-memory object (an inode: hard links share it)."""

    __slots__ = ("atime", "children", "ctime", "data", "gid", "ino", "kind", "links",
                 "metacopy", "mode", "mtime", "opaque", "origin", "rdev", "redirect", "target",
                 "uid", "xattrs")

    def __init__(self, kind: Kind, mode: int, ino: int) -> None:
        from .upper import MemoryData

        now = _now()
        self.kind = kind
        self.mode = mode & 0o7777
        self.uid = os.getuid()
        self.gid = os.getgid()
        self.atime = self.mtime = self.ctime = now
        self.ino = ino
        self.rdev = 0
        self.target: str | None = None
        self.xattrs: dict[str, bytes] = {}
        self.opaque = False
        self.redirect: str | None = None
        self.metacopy = False
        self.origin: int | None = None
        self.links = 1
        self.children: dict[str, _MNode] | None = {} if kind is Kind.DIR else None
        self.data = MemoryData() if kind is Kind.FILE else None

    def entry(self) -> Entry:
        if self.kind is Kind.DIR:
            assert self.children is not None
            nlink = 2 + sum(1 for c in self.children.values() if c.kind is Kind.DIR)
            size = 4096
        else:
            nlink = self.links
            size = len(self.data.buf) if self.data is not None else (
                len(os.fsencode(self.target)) if self.target is not None else 0)
        return Entry(kind=self.kind, mode=self.mode, uid=self.uid, gid=self.gid, size=size,
                     atime_ns=self.atime, mtime_ns=self.mtime, ctime_ns=self.ctime,
                     nlink=nlink, rdev=self.rdev, ino=self.ino, target=self.target,
                     xattrs=tuple(sorted(self.xattrs.items())), opaque=self.opaque,
                     redirect=self.redirect, metacopy=self.metacopy, origin_ino=self.origin)


class MemoryLayer:
    """A layer held in memory: the fast, disposable upper (or a lower built by a test).

    It implements both ``Layer`` and ``WritableLayer``. Whiteouts and opaque marks are plain
    fields, so no on-disk format applies. Thread-safe (one lock per layer).
    """

    def __init__(self, name: str = "memory") -> None:
        self.name = name
        self._lock = threading.RLock()
        self._next_ino = 2
        self._root = _MNode(Kind.DIR, 0o755, 1)
        #: index=on: key -> node (the kernel keeps these under workdir/index)
        self._index: dict[str, _MNode] = {}
        self._index_meta: dict[str, tuple[int, int]] = {}

    def __repr__(self) -> str:
        return f"MemoryLayer({self.name!r})"

    # -- internals
    def _new(self, kind: Kind, mode: int) -> _MNode:
        self._next_ino += 1
        return _MNode(kind, mode, self._next_ino)

    def _node(self, path: str) -> _MNode | None:
        node = self._root
        if path == "/":
            return node
        for part in path[1:].split("/"):
            if node.children is None:
                return None
            node = node.children.get(part)  # type: ignore[assignment]
            if node is None:
                return None
        return node

    def _need(self, path: str) -> _MNode:
        node = self._node(path)
        if node is None or node.kind is Kind.WHITEOUT:
            raise NotFound(path)
        return node

    def _parent(self, path: str) -> tuple[_MNode, str]:
        head, name = split(path)
        if not name:
            raise Exists(path)
        parent = self._node(head)
        if parent is None or parent.kind is Kind.WHITEOUT:
            raise NotFound(path)
        if parent.children is None:
            raise NotADir(path)
        return parent, name

    def _insert(self, path: str, node: _MNode) -> None:
        parent, name = self._parent(path)
        if name in parent.children:  # type: ignore[operator]
            raise Exists(path)
        parent.children[name] = node  # type: ignore[index]
        parent.mtime = parent.ctime = _now()

    # -- Layer
    def lookup(self, path: str) -> Entry | None:
        with self._lock:
            node = self._node(path)
            return None if node is None else node.entry()

    def listdir(self, path: str) -> list[str]:
        with self._lock:
            node = self._need(path)
            if node.children is None:
                raise NotADir(path)
            return list(node.children)

    def read(self, path: str, offset: int, size: int) -> bytes:
        with self._lock:
            node = self._need(path)
            if node.data is None:
                raise IsADir(path) if node.kind is Kind.DIR else InvalidPath(path)
            return bytes(node.data.buf[offset:offset + size])

    def open_read(self, path: str) -> BinaryIO:
        from .upper import MemoryFile

        with self._lock:
            node = self._need(path)
            if node.data is None:
                raise IsADir(path) if node.kind is Kind.DIR else InvalidPath(path)
            return MemoryFile(node.data, readable=True, writable=False, name=path)  # type: ignore[return-value]

    def readlink(self, path: str) -> str:
        with self._lock:
            node = self._need(path)
            if node.kind is not Kind.SYMLINK:
                raise InvalidPath(path)
            return node.target  # type: ignore[return-value]

    def host_path(self, path: str) -> str | None:
        return None

    # -- WritableLayer
    def mkdir(self, path: str, mode: int = 0o755) -> None:
        with self._lock:
            self._insert(path, self._new(Kind.DIR, mode))

    def open_write(self, path: str, *, create: bool = False, truncate: bool = False,
                   mode: int = 0o644, append: bool = False, readable: bool = True) -> BinaryIO:
        from .upper import MemoryFile

        with self._lock:
            node = self._node(path)
            if node is None or node.kind is Kind.WHITEOUT:
                if not create:
                    raise NotFound(path)
                if node is not None:
                    raise Exists(path)
                node = self._new(Kind.FILE, mode)
                self._insert(path, node)
            if node.kind is Kind.DIR:
                raise IsADir(path)
            if node.data is None:
                raise InvalidPath(path, "not a regular file")
            if truncate and node.data.buf:
                del node.data.buf[:]
                node.mtime = node.ctime = _now()

            def touched(n: _MNode = node) -> None:
                n.mtime = n.ctime = _now()

            return MemoryFile(node.data, readable=readable, writable=True, append=append,  # type: ignore[return-value]
                              name=path, on_change=touched)

    def copy_in(self, path: str, source: Layer, source_path: str) -> None:
        with self._lock:
            node = self._new(Kind.FILE, 0o644)
            _fill_memory(node, source, source_path)
            self._insert(path, node)

    def copy_up(self, path: str, entry: Entry, source: Layer | None, source_path: str,
                *, data: bool = True, metacopy: bool = False, origin_ino: int | None = None,
                xattrs: bool = True, fsync: bool = True) -> None:
        """Create ``path`` as a copy of ``entry``: a regular file gets the data of
        ``source``/``source_path`` when ``data``; with ``metacopy`` it is a metadata-only copy
        of the right size (data left below); with neither it is empty. All metadata is set
        before the object appears, as the kernel's copy-up does."""
        with self._lock:
            node = self._new(entry.kind, entry.mode)
            node.uid, node.gid, node.rdev = entry.uid, entry.gid, entry.rdev
            node.target = entry.target
            if xattrs:
                node.xattrs = dict(entry.xattrs)
            if entry.kind is Kind.FILE:
                if metacopy:
                    node.metacopy = True
                    node.data.buf.extend(b"\0" * entry.size)  # type: ignore[union-attr]
                elif data and source is not None:
                    _fill_memory(node, source, source_path)
            node.origin = origin_ino
            node.atime, node.mtime = entry.atime_ns, entry.mtime_ns
            self._insert(path, node)

    def fill_data(self, path: str, source: Layer, source_path: str, *,
                  fsync: bool = True) -> None:
        """Put the data of ``source_path`` into the existing regular file ``path`` (the data
        copy-up of a metacopy file: same inode, so its hard links see it)."""
        with self._lock:
            node = self._need(path)
            if node.data is None:
                raise InvalidPath(path, "not a regular file")
            fresh = _MNode(Kind.FILE, 0, 0)
            _fill_memory(fresh, source, source_path)
            node.data.buf[:] = fresh.data.buf  # type: ignore[union-attr]

    def symlink(self, path: str, target: str) -> None:
        with self._lock:
            node = self._new(Kind.SYMLINK, 0o777)
            node.target = target
            self._insert(path, node)

    def link(self, existing: str, new: str) -> None:
        with self._lock:
            node = self._need(existing)
            if node.kind is Kind.DIR:
                raise from_oserror(OSError(_errno.EPERM, "hard link to a directory"), existing)
            self._insert(new, node)
            node.links += 1
            node.ctime = _now()

    def mknod(self, path: str, kind: Kind, mode: int = 0o644, rdev: int = 0) -> None:
        with self._lock:
            if kind not in (Kind.FIFO, Kind.SOCKET, Kind.CHAR, Kind.BLOCK, Kind.FILE):
                raise InvalidPath(path, f"mknod cannot make a {kind.value}")
            node = self._new(kind, mode)
            node.rdev = rdev
            self._insert(path, node)

    def remove(self, path: str) -> None:
        with self._lock:
            node = self._node(path)
            if node is None:
                raise NotFound(path)
            if node.children:
                raise NotEmpty(path)
            parent, name = self._parent(path)
            del parent.children[name]  # type: ignore[union-attr]
            parent.mtime = parent.ctime = _now()
            node.links -= 1
            node.ctime = _now()

    def rename(self, src: str, dst: str) -> None:
        with self._lock:
            node = self._node(src)
            if node is None:
                raise NotFound(src)
            old = self._node(dst)
            if old is not None and old is not node:
                if old.kind is Kind.DIR and node.kind is not Kind.DIR:
                    raise IsADir(dst)
                if old.kind is not Kind.DIR and node.kind is Kind.DIR:
                    raise NotADir(dst)
                if old.children:
                    raise NotEmpty(dst)
            sp, sname = self._parent(src)
            dp, dname = self._parent(dst)
            if old is node:
                return
            del sp.children[sname]  # type: ignore[union-attr]
            if old is not None:
                old.links -= 1
            dp.children[dname] = node  # type: ignore[index]
            now = _now()
            sp.mtime = sp.ctime = dp.mtime = dp.ctime = node.ctime = now

    def exchange(self, a: str, b: str) -> None:
        """Swap the objects at ``a`` and ``b`` (``RENAME_EXCHANGE``)."""
        with self._lock:
            na, nb = self._need(a), self._need(b)
            pa, an = self._parent(a)
            pb, bn = self._parent(b)
            pa.children[an], pb.children[bn] = nb, na  # type: ignore[index]

    def whiteout(self, path: str) -> None:
        with self._lock:
            self._insert(path, self._new(Kind.WHITEOUT, 0))

    def set_opaque(self, path: str, opaque: bool = True) -> None:
        with self._lock:
            self._need(path).opaque = opaque

    def set_redirect(self, path: str, target: str | None) -> None:
        with self._lock:
            self._need(path).redirect = target

    def set_metacopy(self, path: str, metacopy: bool) -> None:
        with self._lock:
            self._need(path).metacopy = metacopy

    def set_origin(self, path: str, ino: int | None) -> None:
        """Record the union inode number ``path`` had before copy-up."""
        with self._lock:
            self._need(path).origin = ino

    def chmod(self, path: str, mode: int) -> None:
        with self._lock:
            node = self._need(path)
            node.mode = mode & 0o7777
            node.ctime = _now()

    def chown(self, path: str, uid: int, gid: int) -> None:
        with self._lock:
            node = self._need(path)
            if uid != -1:
                node.uid = uid
            if gid != -1:
                node.gid = gid
            node.ctime = _now()

    def utime(self, path: str, atime_ns: int, mtime_ns: int) -> None:
        with self._lock:
            node = self._need(path)
            node.atime, node.mtime = atime_ns, mtime_ns
            node.ctime = _now()

    def truncate(self, path: str, size: int) -> None:
        with self._lock:
            node = self._need(path)
            if node.data is None:
                raise IsADir(path) if node.kind is Kind.DIR else InvalidPath(path)
            buf = node.data.buf
            if size < len(buf):
                del buf[size:]
            else:
                buf.extend(b"\0" * (size - len(buf)))
            node.mtime = node.ctime = _now()

    def setxattr(self, path: str, name: str, value: bytes, flags: int = 0) -> None:
        with self._lock:
            node = self._need(path)
            if flags == os.XATTR_CREATE and name in node.xattrs:
                raise Exists(path)
            if flags == os.XATTR_REPLACE and name not in node.xattrs:
                raise NoData(path)
            node.xattrs[name] = bytes(value)
            node.ctime = _now()

    def removexattr(self, path: str, name: str) -> None:
        with self._lock:
            node = self._need(path)
            if name not in node.xattrs:
                raise NoData(path)
            del node.xattrs[name]
            node.ctime = _now()

    def statvfs(self) -> os.statvfs_result:
        """Made-up but consistent numbers for an in-memory layer."""
        return os.statvfs_result((4096, 4096, 1 << 20, 1 << 19, 1 << 19, 1 << 20, 1 << 19,
                                  1 << 19, 0, 255))

    # -- index=on support: hard-link groups copied up once, linked for every alias
    def index_lookup(self, key: str) -> bool:
        with self._lock:
            return key in self._index

    def index_store(self, key: str, path: str) -> None:
        """Remember the object at ``path`` as the copy of the lower hard-link group ``key``."""
        with self._lock:
            node = self._need(path)
            if key not in self._index:
                node.links += 1  # the index entry is a link, as in the kernel's index dir
            self._index[key] = node

    def index_link(self, key: str, path: str) -> None:
        """Link the indexed object ``key`` at ``path``."""
        with self._lock:
            node = self._index[key]
            self._insert(path, node)
            node.links += 1

    def index_nlink(self, key: str) -> int:
        with self._lock:
            return self._index[key].links

    def index_entry(self, key: str) -> Entry:
        with self._lock:
            return self._index[key].entry()

    def index_open(self, key: str) -> BinaryIO:
        from .upper import MemoryFile

        with self._lock:
            node = self._index[key]
            return MemoryFile(node.data, readable=True, writable=False, name=key)  # type: ignore[arg-type,return-value]

    def index_get_count(self, key: str) -> tuple[int, int]:
        """``(lower links of the group, lower links consumed)`` recorded for ``key``."""
        with self._lock:
            return self._index_meta.get(key, (1, 0))

    def index_set_count(self, key: str, value: tuple[int, int]) -> None:
        with self._lock:
            self._index_meta[key] = value

    # -- building (tests and examples)
    def write_file(self, path: str, data: bytes = b"", mode: int = 0o644) -> None:
        """Create a regular file holding ``data``, making missing parents (0755)."""
        with self._lock:
            self.makedirs(split(path)[0])
            with self.open_write(path, create=True, truncate=True, mode=mode) as f:
                f.write(data)

    def makedirs(self, path: str, mode: int = 0o755) -> None:
        """Create ``path`` and missing parents; existing directories are fine."""
        with self._lock:
            acc = ""
            for part in [p for p in path.split("/") if p]:
                acc += "/" + part
                node = self._node(acc)
                if node is None:
                    self.mkdir(acc, mode)
                elif node.kind is not Kind.DIR:
                    raise NotADir(acc)


def _fill_memory(node: _MNode, source: Layer, source_path: str) -> None:
    with source.open_read(source_path) as f:
        while True:
            chunk = f.read(_COPY_CHUNK)
            if not chunk:
                break
            node.data.buf.extend(chunk)  # type: ignore[union-attr]


# --------------------------------------------------------------------------- DirLayer

# index record layout (msgpack arrays, read as tuples): kind, mode, uid, gid, size, atime,
# mtime, ctime, nlink, rdev, ino, target, xattrs, opaque, redirect, metacopy, origin_ino
_KINDS = list(Kind)
_KIND_CODE = {k: i for i, k in enumerate(_KINDS)}
#: positions in a packed index record (``_pack``): the layer's inode number, metacopy mark
R_INO, R_METACOPY = 10, 15
#: the kinds by their code in a packed record (``record[0]``)
RECORD_KINDS: tuple[Kind, ...] = tuple(_KINDS)
_INDEX_VERSION = 3
#: how the index file spells names and paths that are not UTF-8 (os.fsdecode's way: a
#: name's undecodable bytes as lone surrogates, which strict UTF-8 refuses to encode)
_NAMES = "surrogateescape"
#: layers with fewer entries than this are indexed by a walk every time, never cached (a
#: stack of many small layers adds up at every mount: 128 layers of 160 files took seconds)
CACHE_MIN_ENTRIES = 100


def _default_cache_dir() -> str:
    base = os.environ.get("UNIONFS_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "unionfs", "index")
    return base


_KIND_OF_FMT = {k.s_ifmt: k for k in Kind if k is not Kind.WHITEOUT}

_ENTRY_FIELDS = ("kind", "mode", "uid", "gid", "size", "atime_ns", "mtime_ns", "ctime_ns",
                 "nlink", "rdev", "ino", "target", "xattrs", "opaque", "redirect", "metacopy",
                 "origin_ino")


class _EntryBuilder:
    """Builds an ``Entry``: the same slots in the same order (so the same object layout),
    set by plain attribute stores, then the object becomes an ``Entry`` (``__class__``
    assignment, allowed between classes of one layout). The result is an ``Entry`` like
    any other (equal, same hash); only ``_entry_maker`` uses this, after checking it."""

    __slots__ = _ENTRY_FIELDS

    def __init__(self, kind: Kind, mode: int, uid: int, gid: int, size: int, atime_ns: int,
                 mtime_ns: int, ctime_ns: int, nlink: int, rdev: int, ino: int,
                 target: str | None, xattrs: tuple, opaque: bool, redirect: str | None,
                 metacopy: bool, origin_ino: int | None) -> None:
        self.kind = kind
        self.mode = mode
        self.uid = uid
        self.gid = gid
        self.size = size
        self.atime_ns = atime_ns
        self.mtime_ns = mtime_ns
        self.ctime_ns = ctime_ns
        self.nlink = nlink
        self.rdev = rdev
        self.ino = ino
        self.target = target
        self.xattrs = xattrs
        self.opaque = opaque
        self.redirect = redirect
        self.metacopy = metacopy
        self.origin_ino = origin_ino
        self.__class__ = Entry  # type: ignore[assignment]


def _entry_maker() -> Callable[..., Entry]:
    """``Entry`` with every field given positionally, made without its ``__init__``.

    A frozen dataclass's ``__init__`` sets each of the 17 fields through
    ``object.__setattr__``, looked up anew each time: 3 us per entry, the largest Python cost
    of a lookup, a refresh or a create. ``_EntryBuilder`` makes the same object (equal, same
    hash) with plain slot stores, in a quarter of the time; where the interpreter refuses it
    (a layout that differs), setting the slots through their descriptors, in half. Should
    ``Entry`` ever change its fields or lose its slots, this is ``Entry`` itself."""
    try:
        if tuple(f.name for f in dataclasses.fields(Entry)) != _ENTRY_FIELDS:
            return Entry
        (s_kind, s_mode, s_uid, s_gid, s_size, s_atime, s_mtime, s_ctime, s_nlink, s_rdev,
         s_ino, s_target, s_xattrs, s_opaque, s_redirect, s_metacopy, s_origin) = (
            Entry.__dict__[name].__set__ for name in _ENTRY_FIELDS)
    except (KeyError, AttributeError, TypeError):  # pragma: no cover - Entry not slotted
        return Entry
    try:
        probe = (Kind.FILE, 0o640, 1, 2, 3, 4, 5, 6, 7, 8, 9, "t", (("user.a", b"b"),), True,
                 "/r", True, 10)
        if _EntryBuilder(*probe) == Entry(*probe):  # type: ignore[arg-type]
            return _EntryBuilder  # type: ignore[return-value]
    except TypeError:  # pragma: no cover - the layouts differ: __class__ refused
        pass
    new = object.__new__

    def make(kind: Kind, mode: int, uid: int, gid: int, size: int, atime_ns: int,
             mtime_ns: int, ctime_ns: int, nlink: int, rdev: int, ino: int,
             target: str | None, xattrs: tuple, opaque: bool, redirect: str | None,
             metacopy: bool, origin_ino: int | None) -> Entry:
        e = new(Entry)
        s_kind(e, kind)
        s_mode(e, mode)
        s_uid(e, uid)
        s_gid(e, gid)
        s_size(e, size)
        s_atime(e, atime_ns)
        s_mtime(e, mtime_ns)
        s_ctime(e, ctime_ns)
        s_nlink(e, nlink)
        s_rdev(e, rdev)
        s_ino(e, ino)
        s_target(e, target)
        s_xattrs(e, xattrs)
        s_opaque(e, opaque)
        s_redirect(e, redirect)
        s_metacopy(e, metacopy)
        s_origin(e, origin_ino)
        return e

    return make


#: ``make_entry(kind, mode, uid, gid, size, atime_ns, mtime_ns, ctime_ns, nlink, rdev, ino,
#: target, xattrs, opaque, redirect, metacopy, origin_ino)``: ``Entry(...)``, faster
make_entry = _entry_maker()


def _entry_from_stat(st: os.stat_result, host: str, xattrs, marks: _wh.Marks,
                     opaque: bool = False) -> Entry:
    kind = _KIND_OF_FMT.get(_stat.S_IFMT(st.st_mode)) or Kind.from_mode(st.st_mode)
    target = os.readlink(host) if kind is Kind.SYMLINK else None
    return make_entry(kind, _stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, st.st_size,
                      st.st_atime_ns, st.st_mtime_ns, st.st_ctime_ns, st.st_nlink, st.st_rdev,
                      st.st_ino, target, xattrs, opaque or marks.opaque, marks.redirect,
                      marks.metacopy, marks.origin_ino)


_WHITEOUT_ENTRY = Entry(kind=Kind.WHITEOUT, mode=0, nlink=1)

#: ``upper.HostFile``, the file class of this module's layers: ``upper`` imports this module,
#: so it is imported on first use (``_host_file``) and kept here (an import statement in a
#: function costs a microsecond per call: every open)
_HOST_FILE: Any = None
_S_IFMT, _S_IFDIR, _S_IFREG = 0o170000, _stat.S_IFDIR, _stat.S_IFREG
#: the host flags of ``DirLayer.create_new``'s open (``open_write``'s for a new file)
_CREATE_NEW = os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_TRUNC | os.O_CREAT | os.O_EXCL


def _host_file() -> Any:
    global _HOST_FILE
    if _HOST_FILE is None:
        from .upper import HostFile

        _HOST_FILE = HostFile
    return _HOST_FILE


class DirLayer:
    """A layer stored in a host directory, in overlayfs (or OCI) on-disk form.

    ``DirLayer(path)`` is a read-only lower: its tree is indexed once (a walk of the
    directory, kept in memory and cached on disk as msgpack under ``cache_dir``, re-used
    while every directory's mtime and ctime are unchanged), so a lookup is a dict access.
    ``DirLayer(path, index=False)`` is read-only too but keeps no index: each lookup and
    listing probes the host, so its cost grows with what is asked, not with the tree (for
    a directory that may still change, e.g. a running container's upper read as a lower).
    ``DirLayer(path, writable=True)`` is an upper: every call goes to the host directory and
    whiteouts/opaque marks are written in ``fmt`` (default: probed by
    ``whiteout.default_format``). Copy-up goes through ``workdir`` (default: a hidden sibling
    ``.<name>.unionfs-work`` next to the directory), created on first use.

    Host errors come back as ``unionfs.errors`` classes naming the union path.
    """

    def __init__(self, path: str | os.PathLike, writable: bool = False, *,
                 fmt: _wh.Format | None = None, name: str | None = None,
                 workdir: str | os.PathLike | None = None, cache: bool = True,
                 cache_dir: str | os.PathLike | None = None, index: bool = True) -> None:
        self.root = os.path.abspath(os.fspath(path))
        if not os.path.isdir(self.root):
            raise NotFound(self.root, "layer directory does not exist") if not \
                os.path.exists(self.root) else NotADir(self.root)
        self.name = name or os.path.basename(self.root) or self.root
        self.writable = writable
        self._fmt = fmt
        self._workdir = os.fspath(workdir) if workdir is not None else None
        self._workdir_made = False
        self._lock = threading.RLock()
        self._tmp_seq = 0
        self._raw: dict[str, tuple] | None = None
        self._children: dict[str, list[str]] | None = None
        self._entries: dict[str, Entry] = {}
        self._blobs: dict[str, bytes] = {}
        #: the records of each directory unpacked from the cache, by name (``records``)
        self._records: dict[str, dict[str, tuple]] = {}
        #: origin handles of a read-only layer's files (kernel index names), by path
        self._handles: dict[str, _wh.OriginHandle | None] = {}
        self.index_source = "live"
        self._dev: int | None = None  # the host st_dev of the root (host_stat), once asked
        #: a read-only layer answers from its index; ``index=False`` makes it probe the
        #: host per path instead (a directory that may still change, read as a lower)
        self.indexed = not writable and index
        if self.indexed:
            self._load_index(cache, cache_dir)

    def __repr__(self) -> str:
        return f"DirLayer({self.root!r}, writable={self.writable})"

    # -- format / workdir
    @property
    def format(self) -> _wh.Format:
        """The whiteout format this layer writes (probed on first use)."""
        if self._fmt is None:
            self._fmt = _wh.default_format(self.root)
        return self._fmt

    @property
    def workdir(self) -> str:
        """The work directory (created on first use), on the upper's filesystem."""
        if self._workdir is None:
            parent, base = os.path.split(self.root)
            self._workdir = os.path.join(parent, f".{base}.unionfs-work")
        if not self._workdir_made:  # (three host calls a copy-up need not repeat)
            os.makedirs(self._workdir, exist_ok=True)
            self._workdir_made = True
        return self._workdir

    def set_workdir(self, workdir: str | os.PathLike) -> None:
        self._workdir = os.fspath(workdir)
        self._workdir_made = False

    def _host(self, path: str) -> str:
        return self.root if path == "/" else self.root + path

    # -- the index of a read-only layer
    def _cache_file(self, cache_dir: str | os.PathLike | None) -> str:
        st = os.stat(self.root)
        key = hashlib.sha256(f"{self.root}\0{st.st_dev}\0{st.st_ino}".encode()).hexdigest()
        return os.path.join(os.fspath(cache_dir or _default_cache_dir()), key[:40] + ".msgpack")

    def _load_index(self, cache: bool, cache_dir) -> None:
        import msgpack

        cache_file = self._cache_file(cache_dir) if cache else None
        if cache_file is not None:
            try:
                with open(cache_file, "rb") as f:
                    doc = msgpack.unpackb(f.read(), raw=False, strict_map_key=False,
                                          use_list=False, unicode_errors=_NAMES)
                if doc.get("v") == _INDEX_VERSION and doc.get("root") == self.root and \
                        self._dirs_unchanged(doc["dirs"]):
                    # each directory's records stay packed until first asked for, so
                    # opening a big index costs little more than reading the file
                    self._raw, self._children = {"/": doc["rootrec"]}, {}
                    self._blobs = doc["blobs"]
                    self.index_source = "cache"
                    return
            except (OSError, ValueError, KeyError, TypeError,
                    msgpack.exceptions.ExtraData, msgpack.exceptions.FormatError):
                pass  # a missing, stale or damaged cache is simply rebuilt
        raw: dict[str, tuple] = {}
        children: dict[str, list[str]] = {}
        dirs: list[list] = []
        self._scan("/", self.root, raw, children, dirs)
        self._raw, self._children = raw, children
        self.index_source = "scan"
        # A tiny layer scans in a millisecond; caching it would only litter the cache dir
        # with files for short-lived directories (temporary layers, tests).
        if cache_file is not None and len(raw) >= CACHE_MIN_ENTRIES:
            blobs = {d: msgpack.packb({n: raw[join(d, n)] for n in names}, use_bin_type=True,
                                      unicode_errors=_NAMES)
                     for d, names in children.items()}
            doc = {"v": _INDEX_VERSION, "root": self.root, "dirs": dirs,
                   "rootrec": raw["/"], "blobs": blobs}
            with contextlib.suppress(OSError):
                _atomic_write(cache_file, msgpack.packb(doc, use_bin_type=True,
                                                        unicode_errors=_NAMES))

    def _load_dir(self, path: str) -> None:
        import msgpack

        with self._lock:
            blob = self._blobs.pop(path, None)
            if blob is None:
                return
            # the directory's {name: record}, built by msgpack itself; its names and its
            # records by path are made from it without a Python loop
            recs = msgpack.unpackb(blob, raw=False, use_list=False, unicode_errors=_NAMES)
            prefix = "/" if path == "/" else path + "/"
            raw: dict[str, tuple] = self._raw  # type: ignore[assignment]
            raw.update(zip(map(prefix.__add__, recs), recs.values(), strict=True))
            self._records[path] = recs
            self._children[path] = list(recs)  # type: ignore[index]

    def _dirs_unchanged(self, dirs: list[list]) -> bool:
        root = self.root
        for rel, mtime, ctime in dirs:
            try:
                st = os.lstat(root if rel == "/" else root + rel)
            except OSError:
                return False
            if st.st_mtime_ns != mtime or st.st_ctime_ns != ctime:
                return False
        return True

    def _scan(self, path: str, host: str, raw: dict, children: dict, dirs: list) -> None:
        st = os.lstat(host)
        xattrs, marks = _wh.read_xattrs(host)
        items, opaque = _wh.scan_dir(host, marks)
        raw[path] = _pack(_entry_from_stat(st, host, xattrs, marks, opaque))
        dirs.append([path, st.st_mtime_ns, st.st_ctime_ns])
        names = []
        for item in items:
            child = join(path, item.name)
            names.append(item.name)
            chost = os.path.join(host, item.host_name)
            if item.whiteout:
                raw[child] = (_KIND_CODE[Kind.WHITEOUT],)
            elif _stat.S_ISDIR(item.st.st_mode):
                self._scan(child, chost, raw, children, dirs)
            else:
                cx, cm = _wh.read_xattrs(chost)
                raw[child] = _record_from_stat(item.st, chost, cx, cm)
        children[path] = names

    # -- Layer
    def lookup(self, path: str) -> Entry | None:
        if self._raw is not None:
            e = self._entries.get(path)
            if e is None:
                rec = self._raw.get(path)
                if rec is None:
                    if self._blobs and path != "/":
                        head = split(path)[0]
                        if head in self._blobs:
                            self._load_dir(head)
                            rec = self._raw.get(path)
                    if rec is None:
                        return None
                e = _unpack(rec)
                self._entries[path] = e
            return e
        return self._live_lookup(path)

    def _live_lookup(self, path: str) -> Entry | None:
        host = self._host(path)
        try:
            st = os.lstat(host)
        except (FileNotFoundError, NotADirectoryError):
            if path != "/":
                head, name = split(path)
                if os.path.lexists(os.path.join(self._host(head), _wh.WH_PREFIX + name)):
                    return _WHITEOUT_ENTRY
            return None
        except OSError as e:
            raise from_oserror(e, path) from None
        xattrs = marks = None
        if path != "/":
            head, name = split(path)
            if _wh.is_reserved_name(name):
                return None
            if _wh.is_chardev_whiteout(st):
                return _WHITEOUT_ENTRY
            if _stat.S_ISREG(st.st_mode) and st.st_size == 0:
                # an xattr whiteout carries overlay.whiteout itself: read the file's own
                # xattrs first and the parent's marks only for such a candidate
                xattrs, marks = _wh.read_xattrs(host)
                if marks.whiteout and _wh.read_marks(self._host(head)).xwhiteouts:
                    return _WHITEOUT_ENTRY
            if os.path.lexists(os.path.join(self._host(head), _wh.WH_PREFIX + name)):
                return _WHITEOUT_ENTRY
        if marks is None:
            xattrs, marks = _wh.read_xattrs(host)
        opaque = _stat.S_ISDIR(st.st_mode) and _wh.dir_has_opaque_marker(host)
        return _entry_from_stat(st, host, xattrs, marks, opaque)

    def refresh(self, path: str, previous: Entry) -> Entry | None:
        """``lookup(path)`` for a caller that had ``previous`` (a directory, or a regular
        file with one link) from this layer and has made every change since, but for what
        a host ``stat`` shows (times, size, link count: entries made or removed inside a
        directory, data written through an open descriptor): while the host object is
        still that inode and kind, only its ``stat`` is read again (one host call instead
        of the three to five of a full lookup); its xattrs and overlay marks are
        ``previous``'s. Otherwise, a full ``lookup``. (The union engine keeps this promise:
        the upper changes only through it.) A file with user-visible xattrs or several
        links is always looked up in full: the kernel drops ``security.capability`` by
        itself when such a file is written, and another name may have changed it."""
        st = self.host_stat(path, previous)
        if st is None:
            return self.lookup(path)
        return make_entry(previous.kind, _stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid,
                          st.st_size, st.st_atime_ns, st.st_mtime_ns, st.st_ctime_ns,
                          st.st_nlink, st.st_rdev, st.st_ino, None, previous.xattrs,
                          previous.opaque, previous.redirect, previous.metacopy,
                          previous.origin_ino)

    def host_stat(self, path: str, previous: Entry, fd: int | None = None
                  ) -> os.stat_result | None:
        """The host ``stat`` of ``path`` -- or, for a regular file, ``fstat`` of ``fd``, a
        descriptor of it -- when ``refresh(path, previous)`` would be ``previous`` with that
        stat's attributes (same promise as ``refresh``): ``previous`` is a directory, or a
        regular file with one link and no user-visible xattrs, and the host object is still
        that inode and kind (a file: with one link; ``fd``: on this layer's filesystem).
        None otherwise, or when the host call fails: then ``refresh`` looks it up in full.
        One host call, no ``Entry`` made."""
        if self._raw is not None:
            return None
        kind = previous.kind
        if kind is Kind.DIR:  # (first: the stat of a changed directory is the usual ask)
            if fd is not None:
                return None
            try:
                st = os.lstat(self.root + path if path != "/" else self.root)  # (_host)
            except OSError:
                return None
            if st.st_ino != previous.ino or st.st_mode & _S_IFMT != _S_IFDIR:
                return None
            return st
        if kind is not Kind.FILE or previous.nlink != 1 or previous.xattrs:
            return None
        try:
            if fd is None:
                st = os.lstat(self.root + path if path != "/" else self.root)  # (_host)
            else:
                st = os.fstat(fd)
                dev = self._dev
                if dev is None:
                    dev = self._dev = os.stat(self.root).st_dev
                if st.st_dev != dev:
                    return None
        except OSError:
            return None
        if st.st_ino != previous.ino or st.st_nlink != 1 or st.st_mode & _S_IFMT != _S_IFREG:
            return None
        return st

    def entries(self, path: str) -> list[tuple[str, Entry]]:
        """``(name, lookup(path/name))`` for every name of ``listdir(path)``, in one call
        (the union merges a lower directory this way: no per-name call overhead).
        Raises ``NotFound``/``NotADir`` as ``listdir``."""
        if self._children is None:
            prefix = "/" if path == "/" else path + "/"
            return [(n, e) for n in self.listdir(path)
                    if (e := self.lookup(prefix + n)) is not None]
        if self._blobs and path in self._blobs:
            self._load_dir(path)
        names = self._children.get(path)
        if names is None:
            self.listdir(path)  # raises the right error
            return []
        prefix = "/" if path == "/" else path + "/"
        cache, raw = self._entries, self._raw
        out = []
        for name in names:
            p = prefix + name
            e = cache.get(p)
            if e is None:
                rec = raw.get(p)  # type: ignore[union-attr]
                if rec is None:
                    continue
                e = cache[p] = _unpack(rec)
            out.append((name, e))
        return out

    def records(self, path: str) -> list[tuple[str, tuple]] | None:
        """``(name, packed record)`` for every name of the directory ``path`` of an indexed
        layer, or None (not indexed, or no such directory: ask ``entries``). A record is
        ``(kind code, mode, uid, gid, size, atime_ns, mtime_ns, ctime_ns, nlink, rdev, ino,
        target, xattrs, opaque, redirect, metacopy, origin_ino)`` (a whiteout: the kind code
        alone; ``RECORD_KINDS``, ``R_INO``, ``R_METACOPY`` read it): the union makes a plain
        file's answers from it without an ``Entry``. Records are tuples, which the cyclic
        collector stops tracking (tens of thousands of them live as long as the layer)."""
        if self._children is None:
            return None
        if self._blobs and path in self._blobs:
            self._load_dir(path)
        recs = self._records.get(path)
        if recs is not None:
            return list(recs.items())
        names = self._children.get(path)
        if names is None:
            return None
        prefix = "/" if path == "/" else path + "/"
        raw = self._raw
        out = []
        for name in names:
            rec = raw.get(prefix + name)  # type: ignore[union-attr]
            if rec is not None:
                out.append((name, rec))
        return out

    def listdir(self, path: str) -> list[str]:
        if self._children is not None:
            if self._blobs and path in self._blobs:
                self._load_dir(path)
            names = self._children.get(path)
            if names is None:
                e = self.lookup(path)
                if e is None or e.is_whiteout:
                    raise NotFound(path)
                raise NotADir(path)
            return list(names)
        host = self._host(path)
        try:
            items, _ = _wh.scan_dir(host)
        except OSError as e:
            raise from_oserror(e, path) from None
        return [i.name for i in items]

    def read(self, path: str, offset: int, size: int) -> bytes:
        try:
            fd = os.open(self._host(path), os.O_RDONLY | os.O_NOFOLLOW)
            try:
                return os.pread(fd, size, offset)
            finally:
                os.close(fd)
        except OSError as e:
            raise from_oserror(e, path) from None

    def open_read(self, path: str) -> BinaryIO:
        try:
            fd = os.open(self._host(path), os.O_RDONLY | os.O_NOFOLLOW)
        except OSError as e:
            raise from_oserror(e, path) from None
        return _host_file()(fd, readable=True, writable=False, name=path)

    def readlink(self, path: str) -> str:
        try:
            return os.readlink(self._host(path))
        except OSError as e:
            if e.errno == _errno.EINVAL:
                raise InvalidPath(path) from None
            raise from_oserror(e, path) from None

    def host_path(self, path: str) -> str | None:
        return self._host(path)

    # -- WritableLayer
    def _call(self, path: str, fn, *args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except OSError as e:
            raise from_oserror(e, path) from None

    def _check_absent(self, path: str) -> None:
        """EEXIST when ``lookup(path)`` would find anything (a whiteout included), with
        the fewest host calls: an existing name needs no xattr read to be refused."""
        try:
            os.lstat(self._host(path))
        except (FileNotFoundError, NotADirectoryError):
            if self._oci_whiteout_at(path):
                raise Exists(path) from None
            return
        except OSError as e:
            raise from_oserror(e, path) from None
        if path == "/" or not _wh.is_reserved_name(path[path.rfind("/") + 1:]):
            raise Exists(path)

    def _oci_whiteout_at(self, path: str) -> bool:
        if path == "/":
            return False
        cut = path.rfind("/")
        return os.path.lexists(f"{self._host(path[:cut] or '/')}/{_wh.WH_PREFIX}"
                               f"{path[cut + 1:]}")

    def mkdir(self, path: str, mode: int = 0o755) -> None:
        self._check_absent(path)
        host = self._host(path)
        self._call(path, os.mkdir, host, mode)
        self._call(path, os.chmod, host, mode & 0o7777)

    def open_write(self, path: str, *, create: bool = False, truncate: bool = False,
                   mode: int = 0o644, append: bool = False, readable: bool = True,
                   known_absent: bool = False, describe: bool = False) -> BinaryIO:
        """``WritableLayer.open_write``; ``known_absent``: the caller has just looked
        ``path`` up here and found nothing, no whiteout either (skips the check for an OCI
        ``.wh.`` marker after the create). ``describe``: the file object's ``entry`` is
        what ``lookup(path)`` would answer for a file this call created (from its
        descriptor: no lookup), or None (the file was there before, or carries extended
        attributes the host gave it, e.g. a default ACL: a lookup reads them)."""
        host = self._host(path)
        flags = os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC
        if truncate:
            flags |= os.O_TRUNC
        if append:
            flags |= os.O_APPEND
        created = False
        try:
            if create:
                # the usual case when asked to create: nothing there yet, one call
                try:
                    fd = os.open(host, flags | os.O_CREAT | os.O_EXCL, mode & 0o777)
                    created = True
                except FileExistsError:
                    fd = os.open(host, flags)
                if created and not known_absent and self._oci_whiteout_at(path):
                    # a ".wh.NAME" marker means NAME is whited out here: refuse, as lookup
                    # would have reported it
                    os.close(fd)
                    os.unlink(host)
                    raise Exists(path)
            else:
                fd = os.open(host, flags)
        except FileNotFoundError:
            raise NotFound(path) from None
        except OSError as e:
            raise from_oserror(e, path) from None
        f = _host_file()(fd, readable=readable, writable=True, append=append,
                                         name=path)
        if describe:
            f.entry = None
        if created:
            try:
                if describe and not _wh.is_reserved_name(path[path.rfind("/") + 1:]):
                    f.entry = self._new_file_entry(fd, mode & 0o7777)
                else:
                    os.fchmod(fd, mode & 0o7777)
            except OSError as e:
                f.close()
                raise from_oserror(e, path) from None
        return f  # type: ignore[return-value]

    def create_new(self, path: str, mode: int = 0o644, *, append: bool = False,
                   readable: bool = True) -> BinaryIO:
        """``open_write(path, create=True, truncate=True, mode=mode, append=append,
        readable=readable, known_absent=True, describe=True)`` in fewer steps: the engine's
        create of a name it has just found absent, no whiteout either (the file object's
        ``entry`` as there). Errors as ``open_write``."""
        if path == "/" or path[path.rfind("/") + 1:].startswith(_wh.WH_PREFIX):
            # (a reserved name, see whiteout.is_reserved_name: never described)
            return self.open_write(path, create=True, truncate=True, mode=mode, append=append,
                                   readable=readable, known_absent=True, describe=True)
        try:
            fd = os.open(self.root + path,
                         _CREATE_NEW | os.O_APPEND if append else _CREATE_NEW, mode & 0o777)
        except FileExistsError:  # (there after all: open_write opens it as it is)
            return self.open_write(path, create=True, truncate=True, mode=mode, append=append,
                                   readable=readable, known_absent=True, describe=True)
        except FileNotFoundError:
            raise NotFound(path) from None
        except OSError as e:
            raise from_oserror(e, path) from None
        f = (_HOST_FILE or _host_file())(fd, readable=readable, writable=True, append=append,
                                         name=path)
        try:
            f.entry = self._new_file_entry(fd, mode & 0o7777)
        except OSError as e:
            f.close()
            raise from_oserror(e, path) from None
        return f  # type: ignore[return-value]

    @staticmethod
    def _new_file_entry(fd: int, perm: int) -> Entry | None:
        """Give the file just created on ``fd`` the permission bits ``perm`` (the creating
        ``open`` applied the process umask) and return its ``Entry`` as ``lookup`` makes it,
        or None when the host gave it extended attributes (the caller looks it up)."""
        st = os.fstat(fd)
        if st.st_mode & 0o7777 != perm:  # (S_IMODE)
            os.fchmod(fd, perm)
            st = os.fstat(fd)
        try:
            if os.listxattr(fd):
                return None
        except OSError as e:
            if e.errno not in (_errno.ENOTSUP, _errno.EPERM):  # as whiteout.read_xattrs
                raise
        # (no xattrs: no overlay marks, no user-visible attributes)
        return make_entry(Kind.FILE, st.st_mode & 0o7777, st.st_uid, st.st_gid,
                          st.st_size, st.st_atime_ns, st.st_mtime_ns, st.st_ctime_ns,
                          st.st_nlink, st.st_rdev, st.st_ino, None, (), False, None, False,
                          None)

    def _tempname(self, kind: str = "tmp") -> str:
        with self._lock:
            self._tmp_seq += 1
            seq = self._tmp_seq
        return os.path.join(self.workdir, f"#{kind}.{os.getpid()}.{threading.get_ident()}.{seq}")

    def copy_in(self, path: str, source: Layer, source_path: str) -> None:
        entry = source.lookup(source_path)
        if entry is None:
            raise NotFound(source_path)
        self.copy_up(path, entry, source, source_path)

    def copy_up(self, path: str, entry: Entry, source: Layer | None, source_path: str,
                *, data: bool = True, metacopy: bool = False, origin_ino: int | None = None,
                xattrs: bool = True, fsync: bool = True, known_absent: bool = False) -> bool:
        """Create ``path`` as a copy of ``entry`` through a temporary in the work directory:
        data (``copy_file_range``, falling back to ``sendfile``; never whole in memory),
        owner, mode, xattrs, times and the private origin mark are all set on the temporary,
        which is then renamed into place, so no partial object is ever visible at ``path``.
        ``metacopy=True`` makes a metadata-only file (right size, data left below);
        ``data=False`` without it an empty file. ``fsync=False`` skips the flush to disk
        (the kernel's ``volatile`` option): still atomic, no longer durable.
        ``known_absent``: the caller has just looked ``path`` up here and found nothing (skips
        the EEXIST check). Returns True when ``origin_ino`` was recorded on the copy (False:
        not asked, or the host refused the xattr)."""
        if not known_absent:
            self._check_absent(path)
        tmp = self._tempname("copyup")
        recorded = False
        try:
            if entry.kind is Kind.DIR:
                os.mkdir(tmp, 0o700)
            elif entry.kind is Kind.FILE:
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
                try:
                    if metacopy:
                        os.ftruncate(fd, entry.size)
                    elif data and source is not None:
                        # durable before it becomes visible (kernel: unless volatile)
                        _copy_data(fd, source, source_path, entry.size, flush=fsync)
                        fsync = False
                    if fsync:
                        os.fsync(fd)
                finally:
                    os.close(fd)
            elif entry.kind is Kind.SYMLINK:
                os.symlink(entry.target or "", tmp)
            else:
                os.mknod(tmp, entry.st_mode, entry.rdev)
            if xattrs:
                for name, value in entry.xattrs:
                    with contextlib.suppress(OSError):  # e.g. user.* on a symlink: EPERM
                        os.setxattr(tmp, _wh.escape_xattr(name), value,
                                    follow_symlinks=False)
            fmt = self.format
            if origin_ino is not None:
                recorded = self._record_origin(tmp, origin_ino)
            if fmt.xattr_prefix is not None and entry.kind is Kind.FILE and metacopy:
                _wh.write_metacopy(tmp, True, fmt)
            os.chown(tmp, entry.uid, entry.gid, follow_symlinks=False)
            if entry.kind is not Kind.SYMLINK:
                os.chmod(tmp, entry.mode)
            os.utime(tmp, ns=(entry.atime_ns, entry.mtime_ns), follow_symlinks=False)
            os.rename(tmp, self._host(path))
        except OSError as e:
            _remove_quietly(tmp)
            raise from_oserror(e, path) from None
        except BaseException:
            _remove_quietly(tmp)
            raise
        return recorded

    def fill_data(self, path: str, source: Layer, source_path: str, *,
                  fsync: bool = True) -> None:
        """Put the data of ``source_path`` into the existing regular file ``path`` in place
        (the data copy-up of a metacopy file: same inode, so its hard links see it)."""
        try:
            fd = os.open(self._host(path), os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError as e:
            raise from_oserror(e, path) from None
        try:
            _copy_data(fd, source, source_path, 0, flush=fsync)
        except OSError as e:
            raise from_oserror(e, path) from None
        finally:
            os.close(fd)

    def symlink(self, path: str, target: str) -> None:
        self._check_absent(path)
        self._call(path, os.symlink, target, self._host(path))

    def link(self, existing: str, new: str) -> None:
        self._check_absent(new)
        self._call(new, os.link, self._host(existing), self._host(new), follow_symlinks=False)

    def mknod(self, path: str, kind: Kind, mode: int = 0o644, rdev: int = 0) -> None:
        if kind not in (Kind.FIFO, Kind.SOCKET, Kind.CHAR, Kind.BLOCK, Kind.FILE):
            raise InvalidPath(path, f"mknod cannot make a {kind.value}")
        if kind is Kind.CHAR and rdev == 0:
            raise InvalidPath(path, "a 0/0 character device is a whiteout")
        self._check_absent(path)
        host = self._host(path)
        self._call(path, os.mknod, host, kind.s_ifmt | (mode & 0o7777), rdev)
        self._call(path, os.chmod, host, mode & 0o7777)

    def remove(self, path: str) -> None:
        head, name = split(path)
        phost = self._host(head)
        if _wh.remove_whiteout(phost, name):
            return
        host = self._host(path)
        try:
            st = os.lstat(host)
        except OSError as e:
            raise from_oserror(e, path) from None
        if _stat.S_ISDIR(st.st_mode):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(host, _wh.OPAQUE_MARKER))
            self._call(path, os.rmdir, host)
        else:
            self._call(path, os.unlink, host)

    def rename(self, src: str, dst: str) -> None:
        self._call(src, os.rename, self._host(src), self._host(dst))

    def exchange(self, a: str, b: str) -> None:
        """Swap the objects at ``a`` and ``b`` (``renameat2(RENAME_EXCHANGE)``)."""
        _renameat2(self._host(a), self._host(b), 2, a)

    def whiteout(self, path: str, *, known_absent: bool = False) -> None:
        """``WritableLayer.whiteout``; ``known_absent``: the caller has just looked
        ``path`` up here and found nothing, no whiteout either (skips the probes)."""
        head, name = split(path)
        _wh.write_whiteout(self._host(head), name, self.format, known_absent=known_absent)

    def set_opaque(self, path: str, opaque: bool = True) -> None:
        _wh.write_opaque(self._host(path), self.format, opaque)

    def set_redirect(self, path: str, target: str | None) -> None:
        _wh.write_redirect(self._host(path), target, self.format)

    def set_metacopy(self, path: str, metacopy: bool) -> None:
        if self.format.xattr_prefix is None and not metacopy:
            return
        _wh.write_metacopy(self._host(path), metacopy, self.format)

    def set_origin(self, path: str, ino: int | None) -> None:
        """Record the union inode number ``path`` had before copy-up (a private xattr)."""
        self._record_origin(self._host(path), ino)

    def _record_origin(self, host: str, ino: int | None) -> bool:
        """Record (or with None, drop) the origin inode number on ``host``; False when the
        host refused."""
        # the OCI format is for places without overlay xattrs; try the namespace this process
        # may write anyway, and live without the record (inode numbers then hold for one
        # mount only) where there is none
        fmt = self.format
        if fmt.xattr_prefix is None:
            fmt = _wh.Format.OVERLAY if os.geteuid() == 0 else _wh.Format.USER
        try:
            _wh.write_private(host, _wh.INO_SUFFIX, None if ino is None else str(ino).encode(),
                              fmt)
        except OSError:
            return False
        return True

    def chmod(self, path: str, mode: int) -> None:
        self._call(path, os.chmod, self._host(path), mode & 0o7777)

    def chown(self, path: str, uid: int, gid: int) -> None:
        self._call(path, os.chown, self._host(path), uid, gid, follow_symlinks=False)

    def utime(self, path: str, atime_ns: int, mtime_ns: int) -> None:
        self._call(path, os.utime, self._host(path), ns=(atime_ns, mtime_ns),
                   follow_symlinks=False)

    def truncate(self, path: str, size: int) -> None:
        self._call(path, os.truncate, self._host(path), size)

    def setxattr(self, path: str, name: str, value: bytes, flags: int = 0) -> None:
        self._call(path, os.setxattr, self._host(path), _wh.escape_xattr(name), value, flags,
                   follow_symlinks=False)

    def removexattr(self, path: str, name: str) -> None:
        self._call(path, os.removexattr, self._host(path), _wh.escape_xattr(name),
                   follow_symlinks=False)

    def statvfs(self) -> os.statvfs_result:
        return self._call("/", os.statvfs, self.root)

    # -- index=on support (the kernel's workdir/index: one hard link per copied-up group)
    def _index_path(self, key: str) -> str:
        d = os.path.join(self.workdir, "index")
        os.makedirs(d, exist_ok=True)
        return os.path.join(d, key)

    def index_lookup(self, key: str) -> bool:
        if self._workdir is None:
            parent, base = os.path.split(self.root)
            self._workdir = os.path.join(parent, f".{base}.unionfs-work")
        # a lookup must not create the work directory (reads never write)
        return os.path.lexists(os.path.join(self._workdir, "index", key))

    def index_store(self, key: str, path: str) -> None:
        ipath = self._index_path(key)
        if not os.path.lexists(ipath):
            self._call(path, os.link, self._host(path), ipath)

    def index_link(self, key: str, path: str) -> None:
        self._check_absent(path)
        self._call(path, os.link, self._index_path(key), self._host(path))

    def index_nlink(self, key: str) -> int:
        return os.lstat(self._index_path(key)).st_nlink

    def index_entry(self, key: str) -> Entry:
        host = self._index_path(key)
        st = os.lstat(host)
        xattrs, marks = _wh.read_xattrs(host)
        return _entry_from_stat(st, host, xattrs, marks)

    def index_open(self, key: str) -> BinaryIO:
        fd = os.open(self._index_path(key), os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        return _host_file()(fd, readable=True, writable=False, name=key)

    def index_get_count(self, key: str) -> tuple[int, int]:
        """``(lower links of the group, lower links consumed)``, kept in a private overlay
        xattr of the index entry (hidden like every overlay mark) so it survives a remount."""
        host = self._index_path(key)
        for prefix in (_wh.TRUSTED, _wh.USER):
            try:
                lower, consumed = os.getxattr(host, prefix + "unionfs.links").decode().split(",")
                return int(lower), int(consumed)
            except (OSError, ValueError):
                continue
        return (1, 0)

    def index_set_count(self, key: str, value: tuple[int, int]) -> None:
        fmt = self.format if self.format.xattr_prefix is not None else (
            _wh.Format.OVERLAY if os.geteuid() == 0 else _wh.Format.USER)
        with contextlib.suppress(OSError):
            _wh.write_private(self._index_path(key), "unionfs.links",
                              f"{value[0]},{value[1]}".encode(), fmt)

    # -- the index kernel overlayfs keeps (index=on): entries named by lower file handles
    def origin_handle(self, path: str) -> _wh.OriginHandle | None:
        """The overlayfs origin handle of ``path`` in this layer (``name_to_handle_at``), or
        None where the filesystem has none. Cached for a read-only layer (it never
        changes)."""
        if not self.indexed:
            return _wh.origin_handle(self._host(path))
        with self._lock:
            if path not in self._handles:
                self._handles[path] = _wh.origin_handle(self._host(path))
            return self._handles[path]

    def _index_dir(self) -> str:
        if self._workdir is None:
            parent, base = os.path.split(self.root)
            self._workdir = os.path.join(parent, f".{base}.unionfs-work")
        return os.path.join(self._workdir, "index")

    def index_find_origin(self, handle: _wh.OriginHandle) -> str | None:
        """The name of the kernel's index entry for the lower file ``handle`` names, if the
        work directory holds one (reads only)."""
        d = self._index_dir()
        for name in handle.index_names():
            if os.path.lexists(os.path.join(d, name)):
                return name
        if handle.uuid is None:  # this kernel cannot tell the uuid: match any
            try:
                return next((n for n in sorted(os.listdir(d)) if handle.matches(n)), None)
            except OSError:
                return None
        return None

    def nlink_record(self, path: str) -> tuple[str, str, int] | None:
        """The kernel's ``overlay.nlink`` record of the upper object ``path`` (see
        ``whiteout.read_nlink``)."""
        return self._call(path, _wh.read_nlink, self._host(path))

    def index_nlink_record(self, key: str) -> tuple[str, str, int] | None:
        """The kernel's ``overlay.nlink`` record of the index entry ``key``."""
        return self._call(key, _wh.read_nlink, os.path.join(self._index_dir(), key))

    def index_set_nlink_record(self, key: str, base: str, diff: int) -> None:
        """Rewrite the kernel's ``overlay.nlink`` record of the index entry ``key`` (in the
        xattr namespace it already uses, else in this layer's)."""
        host = os.path.join(self._index_dir(), key)
        rec = _wh.read_nlink(host)
        if rec is not None:
            name = rec[0]
        else:
            name = (self.format.xattr_prefix or (
                _wh.TRUSTED if os.geteuid() == 0 else _wh.USER)) + _wh.NLINK_SUFFIX
        _wh.write_nlink(host, name, base, diff)


def _record_from_stat(st: os.stat_result, host: str, xattrs, marks: _wh.Marks) -> tuple:
    """``_pack(_entry_from_stat(...))`` of a non-directory without the ``Entry`` in between
    (the index scan makes one record per file; the entry is made on first lookup)."""
    mode = st.st_mode
    kind = _KIND_OF_FMT.get(_stat.S_IFMT(mode)) or Kind.from_mode(mode)
    return (_KIND_CODE[kind], mode & 0o7777, st.st_uid, st.st_gid, st.st_size,
            st.st_atime_ns, st.st_mtime_ns, st.st_ctime_ns, st.st_nlink, st.st_rdev,
            st.st_ino, os.readlink(host) if kind is Kind.SYMLINK else None,
            tuple((k, v) for k, v in xattrs) if xattrs else None, marks.opaque,
            marks.redirect, marks.metacopy, marks.origin_ino)


def _pack(e: Entry) -> tuple:
    return (_KIND_CODE[e.kind], e.mode, e.uid, e.gid, e.size, e.atime_ns, e.mtime_ns,
            e.ctime_ns, e.nlink, e.rdev, e.ino, e.target,
            tuple((k, v) for k, v in e.xattrs) if e.xattrs else None, e.opaque, e.redirect,
            e.metacopy, e.origin_ino)


def _unpack(rec: tuple) -> Entry:
    kind = _KINDS[rec[0]]
    if kind is Kind.WHITEOUT:
        return _WHITEOUT_ENTRY
    (_, mode, uid, gid, size, atime, mtime, ctime, nlink, rdev, ino, target, xattrs, opaque,
     redirect, metacopy, origin) = rec
    return make_entry(kind, mode, uid, gid, size, atime, mtime, ctime, nlink, rdev, ino,
                      target, tuple((k, v) for k, v in xattrs) if xattrs else (), opaque,
                      redirect, metacopy, origin)


def _atomic_write(path: str, data: bytes) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f"{path}.{os.getpid()}.{threading.get_ident()}.tmp"
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _remove_quietly(path: str) -> None:
    try:
        if os.path.isdir(path) and not os.path.islink(path):
            os.rmdir(path)
        else:
            os.unlink(path)
    except OSError:
        pass


def _copy_data(fd_out: int, source: Layer, source_path: str, size: int, *,
               flush: bool = False) -> None:
    """Copy a regular file's data into ``fd_out`` without holding it in memory:
    ``copy_file_range`` (reflink/server-side where the filesystem can), else ``sendfile``,
    else a chunked stream for layers that are not on disk.

    ``flush=True`` makes the data durable (``fsync``) before returning. A large file is
    then copied in chunks whose writeback starts as soon as each is copied
    (``sync_file_range``), so the disk writes run while the next chunks are copied instead
    of all at the end, and dirty memory stays bounded to a few chunks; the final ``fsync``
    only has the metadata and the last chunk left to wait for."""
    host = source.host_path(source_path)
    if host is None:
        with source.open_read(source_path) as f:
            while True:
                chunk = f.read(_COPY_CHUNK)
                if not chunk:
                    break
                os.write(fd_out, chunk)
        if flush:
            os.fsync(fd_out)
        return
    fd_in = os.open(host, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        total = os.fstat(fd_in).st_size
        # without a flush one call copies everything; with one, chunks to overlap with
        step = _FLUSH_CHUNK if flush and total > _FLUSH_CHUNK else 1 << 30
        pending: list[tuple[int, int]] = []  # chunks whose writeback was started
        done = 0
        use_cfr = hasattr(os, "copy_file_range")
        while done < total:
            n = 0
            want = min(total - done, step)
            if use_cfr:
                try:
                    n = os.copy_file_range(fd_in, fd_out, want, done, done)
                except OSError as e:
                    if e.errno not in (_errno.EXDEV, _errno.ENOSYS, _errno.EINVAL,
                                       _errno.EOPNOTSUPP):
                        raise
                    use_cfr = False
                    continue
            else:
                os.lseek(fd_out, done, os.SEEK_SET)
                n = os.sendfile(fd_out, fd_in, done, want)
            if n == 0:
                break
            if step != 1 << 30:
                pending.append((done, n))
                _start_writeback(fd_out, pending)
            done += n
    finally:
        os.close(fd_in)
    if flush:
        os.fsync(fd_out)


#: chunk of a flushed copy: its writeback starts once it is copied
_FLUSH_CHUNK = 4 << 20
#: chunks written back but not yet waited for, at most (bounds the dirty memory of a copy;
#: 16 x 4 MiB measured fastest for a 256 MiB copy-up here: 0.17-0.19 s against 0.27-0.35 s
#: for one copy and a final fsync)
_FLUSH_WINDOW = 16
# sync_file_range(2) flags (linux/fs.h); Python's os module has no binding for it
_SFR_WAIT_BEFORE, _SFR_WRITE, _SFR_WAIT_AFTER = 1, 2, 4
_sync_file_range: Callable[[int, int, int, int], int] | bool | None = False


def _writeback_call() -> Callable[[int, int, int, int], int] | None:
    """libc's ``sync_file_range``, looked up once; None where there is none."""
    global _sync_file_range
    if _sync_file_range is False:
        fn = None
        try:
            import ctypes

            fn = ctypes.CDLL(None, use_errno=True).sync_file_range
            fn.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
            fn.restype = ctypes.c_int
        except (OSError, AttributeError):
            fn = None
        _sync_file_range = fn
    return _sync_file_range  # type: ignore[return-value]


def _start_writeback(fd: int, pending: list[tuple[int, int]]) -> None:
    """Start writing the newest chunk of ``pending`` to disk and wait for the oldest ones
    beyond the window. Only a hint for speed: the caller's ``fsync`` is what makes the data
    durable, so a failure here (or no ``sync_file_range``) loses nothing."""
    sfr = _writeback_call()
    if sfr is None:
        pending.clear()
        return
    off, n = pending[-1]
    if sfr(fd, off, n, _SFR_WRITE) != 0:
        pending.clear()
        return
    while len(pending) > _FLUSH_WINDOW:
        off, n = pending.pop(0)
        sfr(fd, off, n, _SFR_WAIT_BEFORE | _SFR_WRITE | _SFR_WAIT_AFTER)


def _renameat2(src: str, dst: str, flags: int, path: str) -> None:
    """``renameat2(2)`` through libc (Python has no binding); raises the engine error."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    fn = libc.renameat2
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p,
                   ctypes.c_uint]
    at_fdcwd = -100
    if fn(at_fdcwd, os.fsencode(src), at_fdcwd, os.fsencode(dst), flags) != 0:
        code = ctypes.get_errno()
        raise from_oserror(OSError(code, os.strerror(code)), path)


__all__ = ["DirLayer", "Layer", "MemoryLayer", "walk_layer"]
