"""``UnionFS``: Linux overlayfs semantics over ``Layer`` objects, with an ``os``-shaped API.

Lookup goes through the upper layer (live: it changes) and a merged view of the lower layers
(``_LowerView``: lowers never change, so each directory of it is merged once and cached, and a
lookup costs one dict access whatever the number of layers). Every change goes to the upper:
objects are copied up first (parents first, metadata before the object appears), deletions of
lower objects leave whiteouts, and directories created over whiteouts are opaque.

The reference is ``Documentation/filesystems/overlayfs.rst``; the intentional differences are
listed in ``docs/engine.md``.
"""

from __future__ import annotations

import errno
import functools
import hashlib
import io
import os
import stat as _stat
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, BinaryIO

from . import path as _p
from .entry import Entry, Kind
from .errors import (
    CrossDevice,
    Exists,
    InvalidPath,
    IsADir,
    Loop,
    NameTooLong,
    NoData,
    NotADir,
    NotEmpty,
    NotFound,
    NotPermitted,
    NotSupported,
    PermissionDenied,
    ReadOnly,
    UnionFSError,
    from_errno,
)
from .layer import R_INO as _R_INO
from .layer import R_METACOPY as _R_METACOPY
from .layer import RECORD_KINDS as _RECORD_KINDS
from .layer import DirLayer, Layer, merge_stack, root_stack
from .trace import Event, EventKind, Tracer

RENAME_NOREPLACE = 1
RENAME_EXCHANGE = 2
RENAME_WHITEOUT = 4

_MAX_SYMLINKS = 40
# the open flags, bound once (``_open`` runs for every file a program opens)
_O_ACCMODE, _O_RDONLY, _O_WRONLY, _O_RDWR = os.O_ACCMODE, os.O_RDONLY, os.O_WRONLY, os.O_RDWR
_O_CREAT, _O_EXCL, _O_TRUNC, _O_APPEND = os.O_CREAT, os.O_EXCL, os.O_TRUNC, os.O_APPEND
_O_NOFOLLOW, _O_DIRECTORY = os.O_NOFOLLOW, os.O_DIRECTORY
_CHANGING_FLAGS = _O_WRONLY | _O_RDWR | _O_CREAT | _O_TRUNC | _O_APPEND
_MISS = object()
_S_IFMT = {k: k.s_ifmt for k in Kind}
#: the same by the kind's value (an Enum member hashes in Python: this lookup does not)
_S_IFMT_OF_VALUE = {k._value_: k.s_ifmt for k in Kind}
_S_IFREG = _stat.S_IFREG
_S_ISGID = _stat.S_ISGID
#: kinds whose lower stack is the object alone when no other layer has the name
_SIMPLE_KINDS = frozenset(k for k in Kind if k not in (Kind.DIR, Kind.WHITEOUT))
#: the same by record code (``DirLayer.records``), and each code's ``S_IFMT`` bits
_SIMPLE_CODES = tuple(k in _SIMPLE_KINDS for k in _RECORD_KINDS)
_IFMT_OF_CODE = tuple(k.s_ifmt for k in _RECORD_KINDS)


def _stat_result(mode: int, ino: int, dev: int, nlink: int, uid: int, gid: int, size: int,
                 at: int, mt: int, ct: int, rdev: int) -> os.stat_result:
    """A union ``stat``: times from nanoseconds, 4096-byte blocks (the engine's rules)."""
    # equal times are converted once: a change sets ctime and mtime together, a create all
    # three (the divisions of these large integers are most of this function's cost)
    ms, mf = mt // 1_000_000_000, mt / 1e9
    cs, cf = (ms, mf) if ct == mt else (ct // 1_000_000_000, ct / 1e9)
    as_, af = (ms, mf) if at == mt else (at // 1_000_000_000, at / 1e9)
    return os.stat_result((
        mode, ino, dev, nlink, uid, gid, size, as_, ms, cs, af, mf, cf, at, mt, ct, 4096,
        (size + 511) // 512, rdev))


def _normalize(path: Any) -> str:
    """``unionfs.path.normalize`` without its check of each name's length: the engine checks
    a name (ENAMETOOLONG) when it looks it up, after its parents, as the kernel does."""
    return _p.normalize(path, check_names=False)


def _check_user_xattr(node: _Node, name: str, path: str) -> None:
    """Linux allows ``user.*`` xattrs on regular files and directories only (EPERM)."""
    if name.startswith("user.") and node.kind not in (Kind.FILE, Kind.DIR):
        raise NotPermitted(path, "user.* extended attributes need a file or directory")


def _check_name(name: str, path: str) -> None:
    """Names starting with ``.wh.`` are the OCI whiteout spelling: a layer could not store
    them without changing their meaning, so the engine refuses them (EINVAL)."""
    if name.startswith(".wh."):
        raise InvalidPath(path, "names starting with .wh. are reserved for whiteouts")


def _changing(fn):
    """Mark a method that may change the upper: it runs under the union's lock. The caches
    stay: every write to the upper goes through ``_TrackedUpper``, which drops exactly the
    cached answers that write can change."""

    @functools.wraps(fn)
    def wrapper(self, *args, **kwargs):
        with self._lock:
            return fn(self, *args, **kwargs)

    return wrapper


#: the upper's write methods: name -> which arguments are union paths it changes, and
#: whether the change can alter what lies *below* that path (a directory removed, moved,
#: made opaque or redirected), which drops every cached answer under it as well; "attrs":
#: only attributes a host ``stat`` shows changed (so ``_ufiles`` may keep the path)
_WRITES: dict[str, tuple[tuple[int, ...], str]] = {
    "mkdir": ((0,), "path"), "open_write": ((0,), "path"), "copy_in": ((0,), "path"),
    "copy_up": ((0,), "path"), "fill_data": ((0,), "path"), "symlink": ((0,), "path"),
    "link": ((0, 1), "path"), "mknod": ((0,), "path"), "whiteout": ((0,), "path"),
    "set_metacopy": ((0,), "path"), "set_origin": ((0,), "path"), "chmod": ((0,), "attrs"),
    "chown": ((0,), "attrs"), "utime": ((0,), "times"), "truncate": ((0,), "attrs"),
    "setxattr": ((0,), "path"), "removexattr": ((0,), "path"),
    "remove": ((0,), "dir?"), "rename": ((0, 1), "dir?"), "exchange": ((0, 1), "tree"),
    "set_opaque": ((0,), "tree"), "set_redirect": ((0,), "tree"),
    "index_store": ((1,), "all"), "index_link": ((1,), "all"), "index_set_count": ((), "all"),
    "index_set_nlink_record": ((), "all"),
}


#: the upper's write methods that add or remove names: which arguments' names are gone
#: and which are there once the method returned (``UnionFS._complete``)
_NAMES: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = {
    "mkdir": ((), (0,)), "open_write": ((), (0,)), "copy_in": ((), (0,)),
    "copy_up": ((), (0,)), "symlink": ((), (0,)), "link": ((), (1,)), "mknod": ((), (0,)),
    "whiteout": ((), (0,)), "remove": ((0,), ()), "rename": ((0,), (1,)),
}


class _TrackedUpper:
    """The upper layer as the engine writes to it. Reads pass straight through; each write
    method of ``_WRITES`` the layer has is wrapped so that, once it returns or fails, the
    union forgets what it cached about the paths written (and their parents, whose times and
    link counts change), so lookups stay cached across changes instead of starting cold
    after each one. Methods the layer lacks stay absent (``getattr(up, name, None)``)."""

    def __init__(self, layer: Any, fs: UnionFS) -> None:
        self._layer = layer
        for name, (where, scope) in _WRITES.items():
            method = getattr(layer, name, None)
            if method is not None:
                setattr(self, name, self._wrap(name, method, where, scope, fs))
        method = getattr(layer, "open_write", None)
        if method is not None:
            #: ``open_write`` of a file that is there (no ``create``): its data, size and
            #: times may change (O_TRUNC; writes through it happen unseen anyway), nothing
            #: else, its parent's stat included: tracked as ``utime`` is
            self.open_existing = self._wrap("open_existing", method, (0,), "times", fs)

    @staticmethod
    def _wrap(name: str, method: Callable, where: tuple[int, ...], scope: str,
              fs: UnionFS) -> Callable:
        lookup = fs.upper.lookup
        names = _NAMES.get(name)
        if where == (0,) and scope in ("path", "attrs"):
            # the common shape (one path, first): the same steps without the general
            # wrapper's list and scope tests (a create's hottest Python)
            forget, stat_only = fs._forget, scope == "attrs"
            names_changed = fs._names_changed

            def write_one(path: str, *args: Any, **kwargs: Any) -> Any:
                ok = False
                try:
                    result = method(path, *args, **kwargs)
                    ok = True
                    return result
                finally:
                    forget(path, False, stat_only)
                    if names is not None:
                        names_changed(name, names, (path, *args), ok)

            return write_one

        if where == (0,) and scope == "times" and names is None:
            retimed = fs._retimed

            def write_times(path: str, *args: Any, **kwargs: Any) -> Any:
                try:
                    return method(path, *args, **kwargs)
                finally:
                    retimed(path)

            return write_times

        def write(*args: Any, **kwargs: Any) -> Any:
            paths = [args[k] for k in where if k < len(args)]
            tree = scope == "tree"
            if scope == "dir?":  # a removed or moved directory takes its subtree along
                e = fs._known_upper(paths[0])
                if e is _MISS:
                    e = lookup(paths[0])
                tree = e is not None and e.kind is Kind.DIR  # type: ignore[union-attr]
            ok = False
            try:
                result = method(*args, **kwargs)
                ok = True
                return result
            finally:
                if scope == "all":
                    fs._clear_caches()
                elif scope == "times":
                    fs._retimed(paths[0])
                else:
                    for p in paths:
                        fs._forget(p, tree, scope == "attrs")
                if names is not None:
                    fs._names_changed(name, names, args, ok)

        return write

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._layer, name)
        if callable(value):
            object.__setattr__(self, name, value)  # bound once: the layer never changes
        return value


_INO_BITS = 48
_INO_MASK = (1 << _INO_BITS) - 1


def _compose_ino(fsid: int, ino: int) -> int:
    """The kernel's "xino" idea: the layer number in the high bits, the layer's own inode
    number in the low 48. An inode number too large for 48 bits is folded by hashing."""
    if ino > _INO_MASK:
        ino = int.from_bytes(hashlib.blake2b(ino.to_bytes(16, "little"),
                                             digest_size=6).digest(), "little")
    return (fsid << _INO_BITS) | ino


def _is_kernel_key(key: str) -> bool:
    """An index key that names an entry kernel overlayfs made (hex of a file handle), not
    one of the engine's own (``<layer>-<inode>``)."""
    return "-" not in key


def _kernel_nlink(real: int, record: tuple[str, str, int] | None,
                  lower_nlink: int | None) -> int:
    """The kernel's ``ovl_get_nlink``: the union nlink of an indexed inode from its
    ``overlay.nlink`` record (``"U%+d"``: relative to the upper inode's nlink ``real``,
    ``"L%+d"``: to the lower file's ``lower_nlink``); ``real`` when the record is absent,
    unreadable or gives no positive count."""
    if record is None:
        return real
    _, base, diff = record
    ref = real if base == "U" else lower_nlink
    if ref is None or ref + diff <= 0:
        return real
    return ref + diff


# --------------------------------------------------------------------------- values


@dataclass(frozen=True, slots=True)
class Source:
    """One layer's object at a union path: ``layer_index`` is ``None`` for the upper, else
    the position in ``lowers`` (0 = top-most lower)."""

    layer_index: int | None
    layer_name: str
    path: str
    entry: Entry

    @property
    def is_upper(self) -> bool:
        return self.layer_index is None


@dataclass(frozen=True)
class Provenance:
    """Where a union path comes from (``UnionFS.which``).

    ``layer``/``layer_index``/``is_upper`` name the layer supplying the object and ``entry``
    is that layer's entry. ``merged`` lists every layer directory merged into a directory
    (top first). ``shadows`` are the lower entries it hides. ``hidden_by`` is the whiteout or
    opaque directory that hides anything further below. ``reasons`` say it in plain words.
    """

    path: str
    layer: str
    layer_index: int | None
    is_upper: bool
    entry: Entry
    merged: tuple[Source, ...]
    shadows: tuple[Source, ...]
    hidden_by: Source | None
    reasons: list[str] = field(default_factory=list)
    #: the object's data lives in a lower layer (metacopy=on copy-up, metadata only)
    data_from: Source | None = None

    def describe(self) -> str:
        """The answer in words, one reason a line (what ``unionfs which`` prints)."""
        where = "the upper layer" if self.is_upper else f"lower layer {self.layer_index}"
        head = f"{self.path}: {self.entry.kind.value} from {where} ({self.layer})"
        return "\n".join([head, *(f"  - {r}" for r in self.reasons)])


class _LNode:
    """A resolved object of the lower view: ``stack`` holds ``(layer index, layer path,
    entry)`` top-down: the visible object first, then the directories merged under it (or,
    for a metacopy file, the layer holding its data).

    A plain object of one layer (the common case: a file no other layer has) can be made
    from its layer's packed index record alone (``lazy``): its kind, number and ``stat``
    come from the record, and the ``Entry`` is asked of the layer only when something needs
    it. The lowers never change, so ``st`` keeps its ``stat`` once made."""

    __slots__ = ("_stack", "children", "is_dir", "kind", "layer", "li", "listing", "lpath", "rec",
                 "st")

    def __init__(self, stack: list[tuple[int, str, Entry]]) -> None:
        self._stack: list[tuple[int, str, Entry]] | None = stack
        self.kind: Kind = stack[0][2].kind
        self.is_dir = self.kind is Kind.DIR
        self.children: dict[str, _LNode] | None = None
        #: ``(name, type bits, union inode number)`` of the merged children, sorted by
        #: name (``UnionFS.listdir_types``); built once, the lowers never change
        self.listing: list[tuple[str, int, int]] | None = None
        #: a lazy node's packed record, its layer, the layer's index and the path there
        #: (three slots rather than a tuple, which the cyclic collector would track)
        self.rec: tuple | None = None
        self.layer: Layer | None = None
        self.li = 0
        self.lpath = ""
        self.st: os.stat_result | None = None

    @classmethod
    def lazy(cls, layer: Layer, i: int, lpath: str, rec: tuple) -> _LNode:
        """A plain non-directory of layer ``i`` known by its index record ``rec``."""
        n = cls.__new__(cls)
        n._stack = None
        n.kind = _RECORD_KINDS[rec[0]]
        n.is_dir = False
        n.children = n.listing = n.st = None
        n.rec = rec
        n.layer, n.li, n.lpath = layer, i, lpath
        return n

    @property
    def stack(self) -> list[tuple[int, str, Entry]]:
        s = self._stack
        if s is None:
            e = self.layer.lookup(self.lpath)  # type: ignore[union-attr]
            assert e is not None, self.lpath  # an indexed layer never changes
            s = self._stack = [(self.li, self.lpath, e)]
        return s

    @property
    def top(self) -> Entry:
        return self.stack[0][2]

    def ino(self) -> int:
        """The union inode number of the visible object."""
        if self.rec is not None:
            return _compose_ino(self.li + 1, self.rec[_R_INO])
        i, _, e = self._stack[0]  # type: ignore[index]
        return _compose_ino(i + 1, e.ino)

    def make_stat(self, dev: int) -> os.stat_result:
        """``stat`` of the object seen through the lower view alone (no upper part)."""
        r = self.rec
        if r is not None:
            (code, mode, uid, gid, size, atime, mtime, ctime, nlink, rdev, ino) = r[:11]
            ino = _compose_ino(self.li + 1, ino)
            mode |= _IFMT_OF_CODE[code]
        else:
            i, _lpath, e = self._stack[0]  # type: ignore[index]
            ino = _compose_ino(i + 1, e.ino)
            nlink = 1 if self.is_dir and len(self._stack) > 1 else e.nlink  # type: ignore[arg-type]
            mode = _S_IFMT[e.kind] | (e.mode & 0o7777)
            uid, gid, size, rdev = e.uid, e.gid, e.size, e.rdev
            atime, mtime, ctime = e.atime_ns, e.mtime_ns, e.ctime_ns
        return _stat_result(mode, ino, dev, nlink, uid, gid, size, atime, mtime, ctime, rdev)


class _LowerView:
    """The read-only union of the lower layers (what ``lowerdir=a:b:c`` alone mounts)."""

    def __init__(self, lowers: list[Layer]) -> None:
        self.lowers = lowers
        self._lock = threading.RLock()
        stack = root_stack(lowers)
        self.root = _LNode(stack) if stack else None
        self._nodes: dict[str, _LNode | None] = {"/": self.root}

    def node(self, path: str) -> _LNode | None:
        n = self._nodes.get(path, False)
        if n is not False:
            return n  # type: ignore[return-value]
        with self._lock:
            head, name = _p.split(path)
            parent = self.node(head)
            if parent is None or not parent.is_dir:
                result = None
            else:
                result = self.children(parent, head).get(name)
            self._nodes[path] = result
            return result

    def children(self, node: _LNode, path: str) -> dict[str, _LNode]:
        """The merged children of the directory ``node`` at lower-view ``path``."""
        if node.children is not None:
            return node.children
        with self._lock:
            if node.children is not None:
                return node.children
            # an item is (layer index, the directory's path there + "/", what the layer
            # has: an Entry, or its packed index record (a list) where the layer gives
            # those (DirLayer.records): no Entry is made for a plain file)
            found: dict[str, tuple[int, str, Any]] = {}  # the first layer's item by name
            more: dict[str, list[tuple[int, str, Any]]] = {}  # names in several layers
            for i, lpath, _e in node.stack:
                layer = self.lowers[i]
                prefix = "/" if lpath == "/" else lpath + "/"
                packed = getattr(layer, "records", None)
                pairs = packed(lpath) if packed is not None else None
                if pairs is None:
                    bulk = getattr(layer, "entries", None)  # DirLayer: one call per dir
                    if bulk is not None:
                        pairs = bulk(lpath)
                    else:
                        lookup = layer.lookup
                        pairs = [(n, e) for n in layer.listdir(lpath)
                                 if (e := lookup(prefix + n)) is not None]
                for name, ce in pairs:
                    prev = found.get(name)
                    if prev is None:
                        found[name] = (i, prefix, ce)
                    else:
                        items = more.get(name)
                        if items is None:
                            more[name] = [prev, (i, prefix, ce)]
                        else:
                            items.append((i, prefix, ce))
            out: dict[str, _LNode] = {}
            simple, simple_code = _SIMPLE_KINDS, _SIMPLE_CODES
            lowers = self.lowers
            for name, (i, prefix, ce) in found.items():
                # the top-most layer's object is a plain one (no directory, whiteout or
                # metacopy file): it hides whatever the layers below have, nothing to merge
                if type(ce) is tuple:
                    if simple_code[ce[0]] and not ce[_R_METACOPY]:
                        out[name] = _LNode.lazy(lowers[i], i, prefix + name, ce)
                        continue  # (no Entry needed)
                elif ce.kind in simple and not ce.metacopy:
                    out[name] = _LNode([(i, prefix + name, ce)])
                    continue
                layered = more[name] if more and name in more else [(i, prefix, ce)]
                stack = merge_stack(self.lowers, [
                    (j, pre + name, lowers[j].lookup(pre + name) if type(c) is tuple else c)
                    for j, pre, c in layered])
                if stack:
                    out[name] = _LNode(stack)
            node.children = out
            return out


class _Node:
    """A resolved union object: its upper entry (if any), its lower-view node (if any) and
    the lower-view path that its children are looked up under (``lower_key``)."""

    __slots__ = ("alias", "lower", "lower_key", "path", "upper")

    def __init__(self, path: str, upper: Entry | None, lower: _LNode | None,
                 lower_key: str | None) -> None:
        self.path = path
        self.upper = upper
        self.lower = lower
        self.lower_key = lower_key
        #: index=on: the copied-up object of this lower hard link's group
        self.alias: Entry | None = None

    @property
    def entry(self) -> Entry:
        if self.upper is not None:
            return self.upper
        if self.alias is not None:
            return self.alias
        return self.lower.top  # type: ignore[union-attr]

    @property
    def kind(self) -> Kind:
        if self.upper is not None:
            return self.upper.kind
        if self.alias is not None:
            return self.alias.kind
        return self.lower.kind  # type: ignore[union-attr]

    @property
    def is_dir(self) -> bool:
        return self.kind is Kind.DIR

    @property
    def merged(self) -> bool:
        """overlayfs "merge" type: a directory with an upper and a lower part, or with more
        than one lower directory."""
        if not self.is_dir or self.lower is None or not self.lower.is_dir:
            return False
        return self.upper is not None or len(self.lower.stack) > 1

    def lower_dirs_visible(self) -> bool:
        return (self.lower is not None and self.lower.is_dir and self.lower_key is not None
                and not (self.upper is not None and self.upper.opaque))


# --------------------------------------------------------------------------- open modes

_MODES = {
    "r": os.O_RDONLY, "r+": os.O_RDWR,
    "w": os.O_WRONLY | os.O_CREAT | os.O_TRUNC, "w+": os.O_RDWR | os.O_CREAT | os.O_TRUNC,
    "a": os.O_WRONLY | os.O_CREAT | os.O_APPEND, "a+": os.O_RDWR | os.O_CREAT | os.O_APPEND,
    "x": os.O_WRONLY | os.O_CREAT | os.O_EXCL, "x+": os.O_RDWR | os.O_CREAT | os.O_EXCL,
}


def _mode_to_flags(mode: str | int) -> int:
    if isinstance(mode, int):
        return mode
    m = mode.replace("b", "").replace("t", "")
    if "b" not in mode or m not in _MODES:
        raise ValueError(f"invalid or non-binary mode: {mode!r} (use 'rb', 'r+b', 'wb', ...)")
    return _MODES[m]


@dataclass(frozen=True, slots=True)
class UnionDirEntry:
    """What ``UnionFS.scandir`` yields: shaped like ``os.DirEntry``."""

    name: str
    path: str
    _stat: os.stat_result
    _fs: Any

    def inode(self) -> int:
        return self._stat.st_ino

    def is_dir(self, *, follow_symlinks: bool = True) -> bool:
        return _stat.S_ISDIR(self.stat(follow_symlinks=follow_symlinks).st_mode)

    def is_file(self, *, follow_symlinks: bool = True) -> bool:
        return _stat.S_ISREG(self.stat(follow_symlinks=follow_symlinks).st_mode)

    def is_symlink(self) -> bool:
        return _stat.S_ISLNK(self._stat.st_mode)

    def stat(self, *, follow_symlinks: bool = True) -> os.stat_result:
        if follow_symlinks and _stat.S_ISLNK(self._stat.st_mode):
            try:
                return self._fs.stat(self.path)
            except FileNotFoundError:
                return self._stat
        return self._stat


# --------------------------------------------------------------------------- open files


class UnionFile:
    """The file object ``UnionFS.open`` returns: the layer's file (``read``, ``write``,
    ``seek``, ``tell``, ``truncate``, ``flush``, ``fsync``, ``close``, ``pread``,
    ``pwrite``, ``fileno`` when host-backed; a context manager) plus calls on the open object
    for FUSE's path-less requests: ``stat()``, ``chmod``, ``chown``, ``utime``. While the
    file is still linked at its path these go through the union (same ``st_ino`` as
    ``lstat``); once unlinked they act on the open file itself (``st_nlink`` 0)."""

    # one is made per open (and create): its own fields in slots are set and read faster;
    # a dict and weak references as any object has
    __slots__ = ("__dict__", "__weakref__", "_fs", "_inner", "ino", "path")

    def __init__(self, inner: Any, fs: UnionFS, path: str, ino: int) -> None:
        self._inner = inner
        self._fs = fs
        self.path = path
        self.ino = ino

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def __enter__(self) -> UnionFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __iter__(self):
        return iter(self._inner)

    # the common calls, spelled out so they are fast and visible
    def read(self, size: int = -1) -> bytes:
        return self._inner.read(size)

    def write(self, data: bytes) -> int:
        return self._inner.write(data)

    def seek(self, offset: int, whence: int = 0) -> int:
        return self._inner.seek(offset, whence)

    def tell(self) -> int:
        return self._inner.tell()

    def truncate(self, size: int | None = None) -> int:
        return self._inner.truncate(size)

    def pread(self, size: int, offset: int) -> bytes:
        return self._inner.pread(size, offset)

    def pwrite(self, data: bytes, offset: int) -> int:
        return self._inner.pwrite(data, offset)

    def fileno(self) -> int:
        return self._inner.fileno()

    def flush(self) -> None:
        self._inner.flush()

    def fsync(self) -> None:
        self._inner.fsync()

    def close(self) -> None:
        self._inner.close()

    @property
    def closed(self) -> bool:
        return self._inner.closed

    def _linked(self) -> bool:
        try:
            return self._fs.lstat(self.path).st_ino == self.ino
        except OSError:
            return False

    def _host_fd(self) -> int | None:
        try:
            return self._inner.fileno()
        except (OSError, ValueError, AttributeError, io.UnsupportedOperation):
            return None

    def stat(self) -> os.stat_result:
        """``fstat``: the union's view while linked, else the open object's own."""
        if self._linked():
            return self._fs.lstat(self.path)
        fd = self._host_fd()
        if fd is not None:
            st = os.fstat(fd)
            t = tuple(st)
            return os.stat_result((t[0], self.ino, self._fs.st_dev, st.st_nlink, *t[4:10],
                                   st.st_atime, st.st_mtime, st.st_ctime, st.st_atime_ns,
                                   st.st_mtime_ns, st.st_ctime_ns, st.st_blksize,
                                   st.st_blocks, st.st_rdev))
        data = getattr(self._inner, "_data", None)
        size = len(data.buf) if data is not None else 0
        return os.stat_result((_stat.S_IFREG | 0o600, self.ino, self._fs.st_dev, 0,
                               os.getuid(), os.getgid(), size, 0, 0, 0, 0.0, 0.0, 0.0,
                               0, 0, 0, 4096, (size + 511) // 512, 0))

    def chmod(self, mode: int) -> None:
        if self._linked():
            self._fs.chmod(self.path, mode)
        elif (fd := self._host_fd()) is not None:
            os.fchmod(fd, mode & 0o7777)

    def chown(self, uid: int, gid: int) -> None:
        if self._linked():
            self._fs.chown(self.path, uid, gid)
        elif (fd := self._host_fd()) is not None:
            os.fchown(fd, uid, gid)

    def utime(self, times: tuple[float, float] | None = None, *,
              ns: tuple[int, int] | None = None) -> None:
        if self._linked():
            self._fs.utime(self.path, times, ns=ns)
        elif (fd := self._host_fd()) is not None:
            if ns is not None:
                os.utime(fd, ns=ns)
            else:
                os.utime(fd, times)


# --------------------------------------------------------------------------- the union


class UnionFS:
    """A union of ``lowers`` (top-most first, as ``lowerdir=``) under an optional writable
    ``upper`` (``None``: read-only, every change fails with ``EROFS``).

    Options carry the overlayfs names: ``redirect_dir`` (rename merged/lower directories by
    recording ``overlay.redirect``; off: ``EXDEV``; unset: off unless ``metacopy``, as the
    kernel defaults), ``index`` (copy-up keeps lower hard links
    together), ``metacopy`` (metadata-only copy-up for chmod/chown/utime/xattr changes).
    ``workdir`` sets the upper's work directory (temporaries of copy-up, the hard-link index).
    ``umask`` is applied to the modes of new objects (default 0: modes are taken as given,
    as the FUSE adapter receives them already masked). ``volatile`` (the kernel's option)
    skips the fsync of copied-up data: copy-up stays atomic but is no longer durable.

    Every method is thread-safe. Failures raise ``unionfs.errors`` classes with the errno
    Linux overlayfs returns.
    """

    def __init__(self, lowers: list[Layer] | tuple[Layer, ...] = (), upper: Any = None, *,
                 redirect_dir: bool | None = None, index: bool = False,
                 metacopy: bool = False,
                 workdir: str | os.PathLike | None = None, umask: int = 0,
                 volatile: bool = False) -> None:
        self.lowers: list[Layer] = list(lowers)
        self.upper = upper
        if upper is None and not self.lowers:
            raise InvalidPath(None, "a union needs at least one lower layer or an upper")
        if metacopy and redirect_dir is False:
            # the kernel refuses this mount: a metacopy file renamed needs its redirect
            raise InvalidPath(None, "metacopy=on conflicts with redirect_dir=off")
        #: redirect_dir=None means the kernel's default: off, but on with metacopy=on
        self.redirect_dir = bool(metacopy if redirect_dir is None else redirect_dir)
        self.index = index
        self.metacopy = metacopy
        self.umask = umask
        self.volatile = volatile
        if workdir is not None and upper is not None and hasattr(upper, "set_workdir"):
            upper.set_workdir(workdir)
        self._lock = threading.RLock()
        #: upper inode -> union inode, for copied-up objects on an upper that cannot record
        #: the origin on disk (OCI format without xattrs): stable for this mount only
        self._ino_map: dict[int, int] = {}
        self._tracer = Tracer()
        self._ucache: dict[str, Entry | None] = {}
        #: upper regular files with one link, as last looked up: their next lookup reads
        #: only the host stat (``DirLayer.refresh``), their xattrs and marks change only
        #: through the engine (dropped by ``_forget`` with the rest)
        self._ufiles: dict[str, Entry] = {}
        self._refresh = getattr(upper, "refresh", None) if isinstance(upper, DirLayer) \
            else None
        #: the upper takes ``known_absent=`` (skip its own EEXIST/whiteout probe of a name
        #: the engine has just looked up)
        self._absent_kw = {"known_absent": True} if isinstance(upper, DirLayer) else {}
        #: ... and for a create, ``describe=`` too (the new file's Entry from its descriptor)
        self._create_kw = dict(self._absent_kw, describe=True) if self._absent_kw else {}
        #: stats of paths resolved without a symlink (dropped by path when the upper
        #: changes there) and of paths resolved through one (dropped on every change)
        self._stat_cache: dict[tuple[str, bool], os.stat_result] = {}
        self._sym_stat: dict[tuple[str, bool], os.stat_result] = {}
        #: resolved directory nodes by their union path: a lookup starts at its parent
        self._dnodes: dict[str, _Node] = {}
        #: upper directories whose cached entry is right about everything but the
        #: attributes a change of one of their entries moves (times, nlink, size): refreshed
        #: when those are asked for (``_fresh``), not on every walk through them
        self._stale: set[str] = set()
        #: upper directories' (atime, mtime) as a copy-up last put them back
        self._ptimes: dict[str, tuple[int, int]] = {}
        #: upper directories the engine made (mkdir, copy-up: empty then) -> every name in
        #: them, kept up to date by ``_names_changed``: a name not there is absent, with no
        #: host call (the negative lookups of creates, ``tar x``, ``cp -a``)
        self._complete: dict[str, set[str]] = {}
        #: counts the changes of the upper made through the engine (every ``_forget``,
        #: ``_retimed``, ``_clear_caches``): ``created_stat`` tells "nothing since" by it
        self._gen = 0
        self._up = _TrackedUpper(upper, self) if upper is not None else None
        self._lower = _LowerView(self.lowers)
        self.upper_name = getattr(upper, "name", "upper") if upper is not None else None
        self.st_dev = self._pick_dev()
        if upper is not None and upper.lookup("/") is None:
            raise NotFound("/", "the upper layer has no root directory")

    def _pick_dev(self) -> int:
        for layer in ([self.upper] if self.upper is not None else []) + self.lowers:
            root = getattr(layer, "root", None)
            if isinstance(root, str):
                h = hashlib.blake2b(root.encode(), digest_size=4).digest()
                return 0x5500_0000 | (int.from_bytes(h, "little") & 0xFFFFFF)
        return 0x5500_0000 | (id(self) & 0xFFFFFF)

    def __repr__(self) -> str:
        return f"UnionFS(lowers={self.lowers!r}, upper={self.upper!r})"

    # ------------------------------------------------------------------ tracing
    def subscribe(self, callback: Callable[[Event], None]) -> Callable[[], None]:
        """Call ``callback(event)`` for every copy-up, whiteout, opaque, redirect and EXDEV;
        returns a function that unsubscribes it."""
        self._tracer.subscribe(callback)
        return lambda: self._tracer.unsubscribe(callback)

    def unsubscribe(self, callback: Callable[[Event], None]) -> None:
        self._tracer.unsubscribe(callback)

    def _emit(self, kind: EventKind, path: str, layer: str | None, reason: str) -> None:
        self._tracer.emit(kind, path, layer or "upper", reason)

    # ------------------------------------------------------------------ caches
    # Lowers never change. The upper changes only through this engine (as with the kernel,
    # changing it behind the mount's back is undefined; call ``invalidate()`` if you do), so
    # upper lookups of directories, whiteouts and absent names, resolved directory nodes,
    # and the stats of objects not in the upper or of upper directories are kept. Every
    # write to the upper goes through ``_TrackedUpper``, which drops exactly what it can
    # change (``_forget``: the path, its subtree for a directory moved, removed, made
    # opaque or redirected, its parent's stat); upper regular files are always looked up
    # live, since open files change them -- on a DirLayer upper with one host stat
    # (``DirLayer.refresh``) once a full lookup has given their xattrs and marks, as are
    # upper directories whose entries changed (``_stale``). The lower view keeps each
    # object's stat once made (``_LNode.st``); ``stat`` answers a name under a directory
    # with no upper part from it without taking the lock.

    def invalidate(self) -> None:
        """Forget cached upper lookups (after the upper directory was changed directly)."""
        with self._lock:
            self._clear_caches()

    def _clear_caches(self) -> None:
        self._gen += 1
        self._ucache.clear()
        self._complete.clear()
        self._ptimes.clear()
        self._ufiles.clear()
        self._stat_cache.clear()
        self._sym_stat.clear()
        self._dnodes.clear()
        self._stale.clear()

    def _forget(self, path: str, tree: bool = False, stat_only: bool = False) -> None:
        """The upper changed at ``path``: drop what is cached about it (and, with
        ``tree``, about everything below it); its parent's times and link count moved, so
        the parent's stat goes and its entry is marked stale. ``stat_only``: only what a
        host ``stat`` shows changed (mode, owner, size): a kept upper file (``_ufiles``)
        stays. Called with the lock held."""
        self._gen += 1
        if (path == "/" and tree) or self.index:
            # index=on: a change of one name moves the link counts of the other names of
            # its hard-link group, wherever they are: start over
            self._clear_caches()
            return
        ucache, stats, dnodes = self._ucache, self._stat_cache, self._dnodes
        ucache.pop(path, None)
        if not stat_only:
            self._ufiles.pop(path, None)
        ptimes = self._ptimes
        if ptimes:
            ptimes.pop(path, None)
        dnodes.pop(path, None)
        self._stale.discard(path)
        stats.pop((path, True), None)
        stats.pop((path, False), None)
        if path != "/":
            head = path[:path.rfind("/")] or "/"
            stats.pop((head, True), None)
            stats.pop((head, False), None)
            self._stale.add(head)
            if ptimes:
                ptimes.pop(head, None)
        if self._sym_stat:
            self._sym_stat.clear()
        if tree:
            prefix = path + "/"
            complete = self._complete
            complete.pop(path, None)
            for d in (ucache, dnodes, self._ufiles, ptimes, complete):
                for k in [k for k in d if k.startswith(prefix)]:
                    del d[k]
            for k in [k for k in stats if k[0].startswith(prefix)]:
                del stats[k]
            for k in [k for k in self._stale if k.startswith(prefix)]:
                self._stale.discard(k)

    def _retimed(self, path: str) -> None:
        """Only the times of the upper object at ``path`` changed (``utime``): its stat
        goes, its cached entry is kept but marked stale (see ``_stale``)."""
        self._gen += 1
        if self.index:
            self._clear_caches()
            return
        self._stat_cache.pop((path, True), None)
        self._stat_cache.pop((path, False), None)
        self._ptimes.pop(path, None)
        if self._sym_stat:
            self._sym_stat.clear()
        if path in self._dnodes or path in self._ucache:  # (other objects are not cached)
            self._stale.add(path)

    def _known_upper(self, path: str) -> Any:
        """What the caches know the upper has at ``path``: an ``Entry``, None (nothing), or
        ``_MISS`` (not known without a look)."""
        e = self._ucache.get(path, _MISS)
        if e is _MISS:
            e = self._ufiles.get(path, _MISS)
        return e

    def _names_changed(self, method: str, names: tuple[tuple[int, ...], tuple[int, ...]],
                       args: tuple, ok: bool) -> None:
        """The upper's ``method`` ran with ``args`` (and succeeded when ``ok``): bring the
        name sets of ``_complete`` up to date; a failure drops the directory's set (what
        is there then is not known)."""
        complete = self._complete
        if ok and (method == "mkdir" or (method == "copy_up" and args[1].kind is Kind.DIR)):
            complete[args[0]] = set()  # (made empty)
        if not complete:
            return
        gone, there = names
        for k in gone + there:
            if k >= len(args):
                continue
            p = args[k]
            cut = p.rfind("/")
            head = p[:cut] or "/"
            names_in = complete.get(head)
            if names_in is None or p == "/":
                continue
            if not ok:
                del complete[head]
            elif k in there:
                names_in.add(p[cut + 1:])
            else:
                names_in.discard(p[cut + 1:])

    def _upper_lookup(self, path: str) -> Entry | None:
        e = self._ucache.get(path, _MISS)
        if e is _MISS:
            if self._complete and path != "/":
                cut = path.rfind("/")
                names_in = self._complete.get(path[:cut] or "/")
                if names_in is not None and path[cut + 1:] not in names_in:
                    self._ucache[path] = None  # a directory the engine made: known absent
                    return None
            prev = self._ufiles.get(path) if self._ufiles else None
            e = self._up.lookup(path) if prev is None else self._refresh(path, prev)  # type: ignore[misc]
            if e is None or e.kind is Kind.DIR or e.kind is Kind.WHITEOUT:
                self._ucache[path] = e
            elif self._refresh is not None and e.kind is Kind.FILE and e.nlink == 1:
                self._ufiles[path] = e
            elif prev is not None:
                del self._ufiles[path]
        return e  # type: ignore[return-value]

    # ------------------------------------------------------------------ resolution
    def _root(self) -> _Node:
        node = self._dnodes.get("/")
        if node is None:
            upper = self._upper_lookup("/") if self.upper is not None else None
            lower = self._lower.root
            node = _Node("/", upper, lower, "/" if lower is not None else None)
            self._dnodes["/"] = node
        return node

    def _child(self, parent: _Node, name: str) -> _Node | None:
        cpath = _p.join(parent.path, name)
        upper_e = None
        if parent.upper is not None and parent.upper.kind is Kind.DIR:
            upper_e = self._upper_lookup(cpath)
            if upper_e is not None and upper_e.kind is Kind.WHITEOUT:
                return None
        lower = None
        lkey = None
        # an absolute redirect is looked up from the lower root whatever the parent has
        # below it (the kernel's ovl_lookup: "if (d.redirect[0] == '/') poe = roe")
        absolute = upper_e is not None and upper_e.redirect is not None and \
            upper_e.redirect.startswith("/")
        if (absolute or parent.lower_dirs_visible()) and (
                upper_e is None or (upper_e.kind is Kind.DIR and not upper_e.opaque)
                or (upper_e.kind is Kind.FILE and upper_e.metacopy)):
            if upper_e is not None and upper_e.redirect:
                r = upper_e.redirect
                lkey = r if absolute else _p.join(parent.lower_key, r)  # type: ignore[arg-type]
                lower = self._lower.node(lkey)
            else:  # the parent's merged lower children hold it: no walk from the root
                lkey = _p.join(parent.lower_key, name)  # type: ignore[arg-type]
                lower = self._lower.children(parent.lower, parent.lower_key).get(name)  # type: ignore[arg-type]
            if lower is not None and upper_e is not None and (
                    (upper_e.kind is Kind.DIR and not lower.is_dir)
                    or (upper_e.kind is Kind.FILE and lower.kind is not Kind.FILE)):
                lower = None
        if upper_e is None and lower is None:
            return None
        node = _Node(cpath, upper_e, lower, lkey if lower is not None and lower.is_dir else None)
        if self.index and upper_e is None and lower.top.nlink > 1 and \
                lower.top.kind is not Kind.DIR:  # type: ignore[union-attr]
            key = self._index_key(node)
            if key is not None and self._up.index_lookup(key):
                node.alias = self._index_entry(key)
                if node.alias is not None and \
                        node.alias.kind is not lower.top.kind:  # type: ignore[union-attr]
                    # a whiteout or wrong-typed index entry: the kernel's ovl_lookup_index
                    # answers EIO (such entries only appear with nfs_export=on)
                    raise UnionFSError(cpath, "index entry of another file type",
                                       errno.EIO)
        return node

    def _walk(self, path: str, follow: bool = True) -> _Node:
        """Resolve a normalised union path, following symlinks in every component but the
        last (and the last too when ``follow``). Raises ENOENT, ENOTDIR, ELOOP."""
        node, missing = self._walk_parent(path, follow)
        if missing is not None:
            raise NotFound(path)
        return node

    def _walk_parent(self, path: str, follow: bool) -> tuple[_Node, str | None]:
        """Like ``_walk`` but a missing last component is not an error: returns
        ``(parent node, missing name)``; otherwise ``(node, None)``."""
        node, missing, _linked = self._resolve(path, follow)
        return node, missing

    def _resolve(self, path: str, follow: bool) -> tuple[_Node, str | None, bool]:
        """``_walk_parent`` plus whether a symlink was followed on the way. Directory
        nodes are cached by their union path, so the usual lookup (the parent already
        resolved) is one step; the cache is dropped by ``_forget`` where the upper changes.
        Called with the lock held."""
        if path == "/":
            return self._root(), None, False
        dnodes = self._dnodes
        node = dnodes.get(path)
        if node is not None:  # a directory resolved before (no symlink to follow)
            return node, None, False
        cut = path.rfind("/")
        parent = dnodes.get(path[:cut] or "/")
        if parent is not None:
            name = path[cut + 1:]
            if len(name) > 63 and len(os.fsencode(name)) > _p.NAME_MAX:
                raise NameTooLong(path)
            child = self._child(parent, name)
            if child is None:
                return parent, name, False
            kind = child.kind
            if kind is Kind.DIR:
                dnodes[child.path] = child
                return child, None, False
            if kind is not Kind.SYMLINK or not follow:
                return child, None, False
            # a symlink to follow: the general walk below
        hops = 0
        todo = [c for c in path.split("/") if c][::-1]
        stack = [self._root()]
        while todo:
            name = todo.pop()
            cur = stack[-1]
            if name == "..":
                if len(stack) > 1:
                    stack.pop()
                continue
            if name == ".":
                continue
            if not cur.is_dir:
                raise NotADir(path)
            if len(name) > 63 and len(os.fsencode(name)) > _p.NAME_MAX:
                raise NameTooLong(path)
            child = self._child(cur, name)
            if child is None:
                if todo:
                    raise NotFound(path)
                return cur, name, hops > 0
            if child.kind is Kind.SYMLINK and (todo or follow):
                hops += 1
                if hops > _MAX_SYMLINKS:
                    raise Loop(path)
                target = child.entry.target or ""
                if not target:
                    raise NotFound(path)
                parts = [c for c in target.split("/") if c]
                todo.extend(parts[::-1])
                if target.startswith("/"):
                    del stack[1:]
                continue
            if child.kind is Kind.DIR:
                dnodes[child.path] = child
            stack.append(child)
        return stack[-1], None, hops > 0

    def _complete_child(self, path: Any) -> int:
        """Where ``path``'s last "/" is, when ``path`` is a name in a directory ``_complete``
        lists, spelled as ``_norm`` would spell it: the directory, as a key of
        ``_complete``, is a normalised path, and the name is one name (not "", "." or "..",
        no NUL) in a path too short for ENAMETOOLONG. -1 otherwise (ask ``_norm``)."""
        if type(path) is not str:
            return -1
        cut = path.rfind("/")
        name = path[cut + 1:]
        if cut < 0 or cut == 1 or not name or len(path) >= 1024 or name == "." or \
                name == ".." or "\0" in name or (path[:cut] or "/") not in self._complete:
            return -1  # (cut 1: "//name")
        return cut

    def _norm(self, path: Any) -> str:
        # the common case -- already canonical, short, ASCII -- skips the full normaliser
        if type(path) is str and path[:1] == "/" and len(path) < 256 and "//" not in path \
                and "/." not in path and "\0" not in path and path.isascii() and \
                (len(path) == 1 or path[-1] != "/"):
            return path
        return _normalize(path)

    def _parent_of(self, path: str) -> tuple[_Node, str]:
        """(parent directory node, last name) of ``path``: ENOENT/ENOTDIR/ELOOP for the
        parent, as the VFS resolves parents before it looks the last names up."""
        if path == "/":
            return self._root(), ""
        head, name = _p.split(path)
        parent = self._walk(head, follow=True)
        if not parent.is_dir:
            raise NotADir(path)
        return parent, name

    def _last(self, parent: _Node, name: str, path: str) -> _Node | None:
        if not name:
            return parent
        if len(name) > 63 and len(os.fsencode(name)) > _p.NAME_MAX:
            raise NameTooLong(path)
        return self._child(parent, name)

    def _lookup_nofollow(self, path: str) -> tuple[_Node, _Node | None, str]:
        """(parent node, node or None, name) for ``path`` without following the last
        component. Raises ENOENT/ENOTDIR for the parent, ENAMETOOLONG for the name."""
        parent, name = self._parent_of(path)
        return parent, self._last(parent, name, path), name

    # ------------------------------------------------------------------ inode numbers
    def _ino(self, node: _Node) -> int:
        if node.upper is not None:
            if node.upper.origin_ino is not None:
                return node.upper.origin_ino
            mapped = self._ino_map.get(node.upper.ino)
            if mapped is not None:
                return mapped
            if node.lower is not None and (node.upper.kind is Kind.DIR or node.upper.metacopy):
                i, _, le = node.lower.stack[0]
                return _compose_ino(i + 1, le.ino)
            return _compose_ino(0, node.upper.ino)
        if node.alias is not None:
            # index=on: a lower name of a copied-up group is the indexed inode, numbered as
            # the group's upper names are
            return self._upper_ino(node.alias)
        return node.lower.ino()  # type: ignore[union-attr]

    def _upper_ino(self, e: Entry) -> int:
        if e.origin_ino is not None:
            return e.origin_ino
        mapped = self._ino_map.get(e.ino)
        return mapped if mapped is not None else _compose_ino(0, e.ino)

    def _index_key(self, node: _Node) -> str | None:
        """The hard-link group of a lower non-directory with several links (index=on): the
        name of the kernel's index entry for it when kernel overlayfs copied the group up
        into this work directory, else the engine's own key ``<layer>-<inode>``."""
        if not self.index or node.lower is None or self.upper is None:
            return None
        i, lpath, le = node.lower.stack[0]
        if le.kind is Kind.DIR or le.nlink <= 1:
            return None
        kernel = self._kernel_index_key(i, lpath)
        return kernel if kernel is not None else f"{i}-{le.ino}"

    def _kernel_index_key(self, i: int, lpath: str) -> str | None:
        """The kernel's index entry of the file ``lpath`` of lower ``i``, if one exists: the
        kernel names it by the hex of the lower file's handle (``ovl_lookup_index``), so
        every name of the group, in whichever lower directory, finds it."""
        handle_of = getattr(self.lowers[i], "origin_handle", None)
        find = getattr(self._up, "index_find_origin", None)
        if handle_of is None or find is None:
            return None
        handle = handle_of(lpath)
        return find(handle) if handle is not None else None

    def _upper_index_key(self, node: _Node) -> str | None:
        """The index key of an upper non-directory copied up through the index."""
        e = node.upper
        if not self.index or e is None or e.kind is Kind.DIR or e.origin_ino is None:
            return None
        fsid, ino = e.origin_ino >> _INO_BITS, e.origin_ino & _INO_MASK
        if fsid == 0:
            return None
        key = f"{fsid - 1}-{ino}"
        return key if self._up.index_lookup(key) else None

    def _nlink(self, node: _Node) -> int:
        e = node.entry
        if node.merged:
            return 1
        if self.index and self.upper is not None and e.kind is not Kind.DIR:
            key = self._upper_index_key(node) if node.upper is not None else \
                self._index_key(node)
            if key is not None and self._up.index_lookup(key):
                return self._index_nlink(
                    key, node.lower.stack[0][2].nlink if node.lower is not None else None)
            record = getattr(self._up, "nlink_record", None)
            if node.upper is not None and e.nlink > 1 and e.origin_ino is None and \
                    record is not None:
                # a hard link the kernel copied up through its index (an indexed inode has
                # the index entry and a name, so two links at least)
                return _kernel_nlink(e.nlink, record(node.path), None)
        return e.nlink

    def _index_nlink(self, key: str, lower_nlink: int | None = None) -> int:
        """overlayfs nlink of an indexed hard-link group. The engine's index: its upper links
        (the index entry itself excluded) plus the lower links not yet copied up or removed.
        The kernel's: as its ``overlay.nlink`` record says (``lower_nlink``: the lower
        file's, for an ``L`` record)."""
        if _is_kernel_key(key):
            return _kernel_nlink(self._up.index_nlink(key),
                                 self._up.index_nlink_record(key), lower_nlink)
        lower_nlink, consumed = self._up.index_get_count(key)
        return max(1, self._up.index_nlink(key) - 1 + lower_nlink - consumed)

    def _index_consume(self, key: str, before: int) -> None:
        """A lower name of the group ``key`` was linked up to its index entry: the union
        nlink stays ``before``."""
        if _is_kernel_key(key):
            # the kernel's ovl_link_up: the record is rewritten relative to the upper nlink
            self._up.index_set_nlink_record(key, "U", before - self._up.index_nlink(key))
            return
        lower_nlink, consumed = self._up.index_get_count(key)
        self._up.index_set_count(key, (lower_nlink, consumed + 1))

    def _fresh(self, node: _Node) -> None:
        """Bring a stale upper directory entry of ``node`` up to date (see ``_stale``)."""
        path = node.path
        if node.upper is None or path not in self._stale:
            return
        self._stale.discard(path)
        # only what a host stat shows moved: one stat where the layer can (DirLayer.refresh)
        e = self._up.lookup(path) if self._refresh is None else self._refresh(path, node.upper)
        if e is None or e.kind is not Kind.DIR:  # changed behind our back: start over
            self._clear_caches()
            return
        self._ucache[path] = e
        node.upper = e
        cached = self._dnodes.get(path)
        if cached is not None:
            cached.upper = e

    def _stat_of(self, node: _Node) -> os.stat_result:
        lower = node.lower
        if node.upper is None and node.alias is None and not self.index:
            # a lower object (the common case of a cold walk): the lowers never change,
            # so its stat is made once and kept on its lower-view node
            st = lower.st  # type: ignore[union-attr]
            if st is None:
                st = lower.st = lower.make_stat(self.st_dev)  # type: ignore[union-attr]
            return st
        if self._stale:
            if node.path in self._stale and self._refresh is not None:
                st = self._stale_dir_stat(node)
                if st is not None:
                    return st
            self._fresh(node)
        e = node.entry
        ino = self._ino(node)
        # (_nlink's answer without its calls where it is the entry's own: no lower part,
        # so not merged, and no index)
        nlink = e.nlink if lower is None and not self.index else self._nlink(node)
        size = e.size
        return _stat_result(_S_IFMT_OF_VALUE[e.kind._value_] | (e.mode & 0o7777), ino,
                            self.st_dev, nlink, e.uid, e.gid, size, e.atime_ns, e.mtime_ns,
                            e.ctime_ns, e.rdev)

    def _stale_dir_stat(self, node: _Node) -> os.stat_result | None:
        """``_stat_of`` of a stale upper directory (``_stale``: only what a host stat shows
        moved) from one host stat, without bringing its entry up to date: the entry stays
        stale for whatever else needs its times (``_fresh``), and the stat is cached by the
        caller until the next change. None when the host stat says more changed (the
        caller refreshes in full)."""
        e = node.upper
        if e is None or e.kind is not Kind.DIR or self.index:
            return None
        st = self.upper.host_stat(node.path, e)
        if st is None:
            return None
        ino = self._ino(node)  # (its inode and origin are the entry's: same host inode)
        return _stat_result(_stat.S_IFDIR | (st.st_mode & 0o7777), ino, self.st_dev,
                            1 if node.merged else st.st_nlink, st.st_uid, st.st_gid,
                            st.st_size, st.st_atime_ns, st.st_mtime_ns, st.st_ctime_ns,
                            st.st_rdev)

    def _changed_dir_stat(self, p: str, key: tuple[str, bool]) -> os.stat_result | None:
        """``_lookup_stat(p)`` of a stale upper directory (``_stale``) with no lower part,
        resolved before (``_dnodes``), made the way ``_stat_of`` / ``_stale_dir_stat`` make
        it (not merged: the host's link count; the entry's inode number) from one host
        stat, without the lookup's other steps; cached under ``key`` as there. None: not
        such a directory, or the host stat says more changed (ask ``_lookup_stat``)."""
        with self._lock:
            node = self._dnodes.get(p)
            if node is None or node.lower is not None or self.index or \
                    self._refresh is None or p not in self._stale:
                return None
            e = node.upper
            if e is None or e.kind is not Kind.DIR:
                return None
            st = self.upper.host_stat(p, e)
            if st is None:
                return None
            ino = e.origin_ino  # (as _ino: the origin's, else the mapped host inode)
            if ino is None:
                ino = self._ino_map.get(e.ino)
                if ino is None:
                    ino = _compose_ino(0, e.ino)
            st = _stat_result(_stat.S_IFDIR | (st.st_mode & 0o7777), ino, self.st_dev,
                              st.st_nlink, st.st_uid, st.st_gid, st.st_size, st.st_atime_ns,
                              st.st_mtime_ns, st.st_ctime_ns, st.st_rdev)
            self._stat_cache[key] = st
            return st

    def _upper_file_stat(self, e: Entry, st: os.stat_result) -> os.stat_result:
        """``_stat_of`` of the node of an upper regular file with no lower part (not a
        metacopy file) whose cached entry is ``e`` and whose host stat is ``st``
        (``DirLayer.host_stat``): what refreshing ``e`` and ``_stat_of`` would give."""
        return self._file_stat(e.origin_ino, st.st_ino, st.st_mode, 1, st.st_uid, st.st_gid,
                               st.st_size, st.st_atime_ns, st.st_mtime_ns, st.st_ctime_ns,
                               st.st_rdev)

    def _file_stat(self, origin_ino: int | None, host_ino: int, mode: int, nlink: int,
                   uid: int, gid: int, size: int, at: int, mt: int, ct: int,
                   rdev: int) -> os.stat_result:
        """The union stat of an upper regular file from its fields (``_stat_of``'s rules:
        the origin's inode number, else the host's mapped one; 4096-byte blocks)."""
        ino = origin_ino
        if ino is None:
            ino = self._ino_map.get(host_ino)
            if ino is None:
                ino = _compose_ino(0, host_ino)
        return _stat_result(_S_IFREG | (mode & 0o7777), ino, self.st_dev, nlink, uid, gid,
                            size, at, mt, ct, rdev)

    def _known_file_stat(self, p: str, fd: int | None = None) -> os.stat_result | None:
        """The stat of ``p`` with one host call, when it is an upper regular file the
        engine looked up or made before (``_ufiles``) and nothing but what a host stat shows
        has changed since (``DirLayer.host_stat``; ``fd``: an open descriptor of it, asked
        instead of the path). The walk to it is not needed: every change of ``p``, or of a
        directory above it, drops it from ``_ufiles`` (``_forget``). None: not known so;
        ask the general way. Called with the lock held."""
        e = self._ufiles.get(p)
        if e is None or e.metacopy or self.index or p in self._ucache:
            return None
        st = self.upper.host_stat(p, e, fd)
        return None if st is None else self._upper_file_stat(e, st)

    def _known_absent(self, p: str, cut: int) -> _Node | None:
        """The parent's node when the caches prove that nothing is at ``p`` (whose last "/"
        is at ``cut``): its parent is a resolved directory the engine made in the upper
        (``_complete`` lists every name in it, and ``p``'s is not there) with no lower part
        showing the name. What ``_resolve`` would find, without a step of it; None: not
        known so."""
        head = p[:cut] or "/"
        names_in = self._complete.get(head)
        name = p[cut + 1:]
        if names_in is None or name in names_in or len(name) > 63:
            return None
        parent = self._dnodes.get(head)
        if parent is None or self.index:
            return None
        pu = parent.upper
        if pu is None or pu.kind is not Kind.DIR or self._ucache.get(p) is not None:
            return None
        if parent.lower is not None and parent.lower_dirs_visible():
            kids = parent.lower.children
            if kids is None or name in kids:
                return None
        return parent

    def _index_entry(self, key: str) -> Entry | None:
        finder = getattr(self._up, "index_entry", None)
        return finder(key) if finder is not None else None

    # ------------------------------------------------------------------ reading API
    def stat(self, path: Any, *, follow_symlinks: bool = True) -> os.stat_result:
        """``os.stat``: ENOENT, ENOTDIR, ELOOP, ENAMETOOLONG."""
        p = self._norm(path)
        st = self._lookup_stat(p, follow_symlinks)
        if st is None:
            raise NotFound(p)
        return st

    def _lookup_stat(self, p: str, follow_symlinks: bool) -> os.stat_result | None:
        """``stat`` of the normalised ``p``, None when its last name is absent (the other
        errors are raised)."""
        key = (p, follow_symlinks)
        st = self._stat_cache.get(key)
        if st is not None:
            return st
        if self._sym_stat:
            st = self._sym_stat.get(key)
            if st is not None:
                return st
        cut = p.rfind("/")
        if cut >= 0 and len(p) > 1:
            st = self._plain_lower_stat(p[:cut] or "/", p[cut + 1:], follow_symlinks)
            if st is not None:
                return st
        with self._lock:
            if p != "/":
                # an upper file known to the engine (one host stat) or a name the caches
                # prove absent (the lookup before a create): no walk
                if self._ufiles and p in self._ufiles:
                    st = self._known_file_stat(p)
                    if st is not None:
                        return st
                elif self._complete and self._known_absent(p, cut):
                    return None
            node, missing, linked = self._resolve(p, follow_symlinks)
            if missing is not None:
                return None
            st = self._stat_of(node)
            # kept until the upper changes there, unless an upper non-directory is
            # involved: open files change those without the engine seeing it
            if node.alias is None and (node.upper is None or node.upper.kind is Kind.DIR):
                (self._sym_stat if linked else self._stat_cache)[key] = st
            return st

    def lstat(self, path: Any) -> os.stat_result:
        """``os.lstat`` (does not follow a final symlink)."""
        if type(path) is str:
            # a key of these caches is a normalised path, so a hit needs no _norm: the
            # stat asked again, or that of an upper directory the engine's own creates
            # and removals changed (the kernel asks for it after each of them)
            key = (path, False)
            st = self._stat_cache.get(key)
            if st is not None:
                return st
            if path in self._stale:
                st = self._changed_dir_stat(path, key)
                if st is not None:
                    return st
            elif path in self._ufiles:  # an upper file the engine knows: one host stat
                with self._lock:
                    st = self._known_file_stat(path)
                if st is not None:
                    return st
        p = self._norm(path)
        st = self._lookup_stat(p, False)
        if st is None:
            raise NotFound(p)
        return st

    def lstat_child(self, head: str, name: str) -> os.stat_result | None:
        """``lstat_or_none`` of ``name`` in the directory ``head``, as a lookup asks it:
        ``head`` a normalised path, ``name`` one name. A plain object of the lower view in a
        resolved directory with no upper part is answered from the lower view at once
        (``_plain_lower_stat``, without the path to build, take apart and check);
        anything else as ``lstat_or_none`` of the joined path."""
        st = self._plain_lower_stat(head, name, False)
        if st is not None:
            return st
        return self.lstat_or_none(("/" if head == "/" else head + "/") + name)

    def _plain_lower_stat(self, head: str, name: str, follow_symlinks: bool
                          ) -> os.stat_result | None:
        """The common case of a cold walk, or None: ``head`` is a resolved directory with no
        upper part (so nothing of it can be in the upper), and ``name`` a non-directory of
        the lower view there (not a symlink to follow): its stat is the lower view's, made
        once (no lock: the lower view never changes, and dict reads are atomic)."""
        if self.index:
            return None
        parent = self._dnodes.get(head)
        if parent is None or parent.upper is not None or parent.lower_key is None:
            return None
        kids = parent.lower.children  # type: ignore[union-attr]
        ln = kids.get(name) if kids is not None else None
        if ln is None or ln.is_dir or (follow_symlinks and ln.kind is Kind.SYMLINK):
            return None
        st = ln.st
        if st is None:
            st = ln.st = ln.make_stat(self.st_dev)
        return st

    def lstat_or_none(self, path: Any) -> os.stat_result | None:
        """``lstat(path)``, or None where it raises ``FileNotFoundError`` (ENOENT): the
        lookup of a name that may not be there (every create starts with one) costs no
        exception where the engine knows the name is absent. Other errors are raised as
        ``lstat`` raises them: ENOTDIR, ELOOP, ENAMETOOLONG."""
        if self._complete:
            # the lookup before a create: a name the caches prove absent, first
            cut = self._complete_child(path)
            if cut >= 0:
                name = path[cut + 1:]
                names_in = self._complete.get(path[:cut] or "/")  # (unlocked: may be gone)
                if names_in is not None and name not in names_in and len(name) <= 63:
                    with self._lock:
                        if self._known_absent(path, cut) is not None:
                            return None
        try:
            return self._lookup_stat(self._norm(path), False)
        except FileNotFoundError:  # (a missing parent directory, an empty path)
            return None

    def fstat(self, f: Any, path: Any = None) -> os.stat_result:
        """``lstat(path)`` for ``f``, a file this union opened that is linked at ``path``
        (default: the path it was opened at, ``f.path``): the same result, field for field,
        read with one ``os.fstat`` of ``f``'s host descriptor where the engine can vouch
        that the descriptor is the object at ``path`` -- an upper regular file with one link
        and no xattrs or metacopy mark that the engine made or looked up there and has not
        replaced since, on a ``DirLayer`` upper, with ``index=off``. Anything else (no host
        descriptor, a lower file, hard links, a file unlinked or renamed away, index=on) is
        answered by ``lstat(path)`` itself, so the result never depends on which way it was
        made. Raises as ``lstat``: ENOENT, ENOTDIR, ELOOP, ENAMETOOLONG."""
        ufiles = self._ufiles
        if path is None:
            p = f.path
        elif type(path) is str and path in ufiles:
            p = path  # (a key of _ufiles is a normalised path)
        else:
            p = self._norm(path)
        if ufiles and p in ufiles:
            try:
                fd = f.fileno()
            except (OSError, ValueError, AttributeError, io.UnsupportedOperation):
                fd = None
            if fd is not None:
                with self._lock:
                    st = self._known_file_stat(p, fd)
                if st is not None:
                    return st
        return self.stat(p, follow_symlinks=False)

    def created_stat(self, f: Any) -> os.stat_result | None:
        """``lstat(f.path)`` of the file ``f`` that ``open`` has just created, made from
        the stat its upper took when it made it (``DirLayer.open_write(describe=True)``):
        no host call. None -- ask ``fstat`` -- unless nothing in the union has changed since
        (no change of the upper through the engine: a chown of the new file, for one, or a
        create elsewhere) and the upper described it. The caller must ask before anything
        else uses ``f`` (a write through it, even a read, which moves the access time), as
        a create handler does before it replies."""
        gen = getattr(f, "entry_gen", None)
        if gen is None or gen != self._gen or self.index:
            return None
        e = f.entry
        if self._ufiles.get(f.path) is not e:
            return None
        return self._file_stat(e.origin_ino, e.ino, e.mode, e.nlink, e.uid, e.gid, e.size,
                               e.atime_ns, e.mtime_ns, e.ctime_ns, e.rdev)

    def exists(self, path: Any) -> bool:
        """True when ``path`` resolves (following symlinks), like ``os.path.exists``."""
        try:
            self.stat(path)
            return True
        except (OSError, ValueError):
            return False

    def lexists(self, path: Any) -> bool:
        try:
            self.lstat(path)
            return True
        except (OSError, ValueError):
            return False

    def isdir(self, path: Any) -> bool:
        try:
            return _stat.S_ISDIR(self.stat(path).st_mode)
        except OSError:
            return False

    def isfile(self, path: Any) -> bool:
        try:
            return _stat.S_ISREG(self.stat(path).st_mode)
        except OSError:
            return False

    def islink(self, path: Any) -> bool:
        try:
            return _stat.S_ISLNK(self.lstat(path).st_mode)
        except OSError:
            return False

    def _names(self, node: _Node) -> list[str]:
        names: set[str] = set()
        hidden: set[str] = set()
        if node.upper is not None and node.upper.kind is Kind.DIR:
            for name in self._up.listdir(node.path):
                e = self._up.lookup(_p.join(node.path, name))
                if e is None:
                    continue
                if e.kind is Kind.WHITEOUT:
                    hidden.add(name)
                else:
                    names.add(name)
        if node.lower_dirs_visible():
            for name in self._lower.children(node.lower, node.lower_key):  # type: ignore[arg-type]
                if name not in hidden:
                    names.add(name)
        return sorted(names)

    def listdir(self, path: Any = "/") -> list[str]:
        """``os.listdir`` of the merged directory (sorted; no ``.``/``..``)."""
        p = self._norm(path)
        with self._lock:
            node = self._walk(p)
            if not node.is_dir:
                raise NotADir(p)
            return self._names(node)

    def listdir_types(self, path: Any = "/") -> list[tuple[str, int, int]]:
        """What ``readdir(3)`` gives for the merged directory ``path``: ``(name, type bits
        (stat.S_IFMT of st_mode), st_ino)`` per entry, sorted by name, no ``.``/``..``;
        the same names as ``listdir`` and the same ``st_ino`` as ``lstat``. The lower part of
        each directory is computed once (the lowers never change), so a directory with no
        upper part costs a copy of a cached list. Raises ENOENT, ENOTDIR, ELOOP."""
        p = self._norm(path)
        with self._lock:
            node = self._walk(p)
            if not node.is_dir:
                raise NotADir(p)
            if self.index:
                # index=on: a lower hard link may take the number of its copied-up group
                return [(e.name, _stat.S_IFMT(e.stat(follow_symlinks=False).st_mode),
                         e.inode()) for e in self.scandir(p)]
            lower = self._lower_listing(node) if node.lower_dirs_visible() else []
            if node.upper is None or node.upper.kind is not Kind.DIR:
                return list(lower)
            mine: dict[str, tuple[str, int, int] | None] = {}
            for name in self._up.listdir(node.path):
                child = self._child(node, name)
                mine[name] = None if child is None else (
                    name, child.entry.kind.s_ifmt, self._ino(child))
            out = [x for x in mine.values() if x is not None]
            out.extend(x for x in lower if x[0] not in mine)
            out.sort()
            return out

    def _lower_listing(self, node: _Node) -> list[tuple[str, int, int]]:
        lnode = node.lower
        listing = lnode.listing  # type: ignore[union-attr]
        if listing is None:
            children = self._lower.children(lnode, node.lower_key)  # type: ignore[arg-type]
            listing = []
            for name, child in children.items():
                listing.append((name, child.kind.s_ifmt, child.ino()))
            listing.sort()
            lnode.listing = listing  # type: ignore[union-attr]
        return listing

    def scandir(self, path: Any = "/") -> Iterator[UnionDirEntry]:
        """``os.scandir``: entries with ``name``, ``path``, ``is_dir()``, ``stat()``..."""
        p = self._norm(path)
        with self._lock:
            node = self._walk(p)
            if not node.is_dir:
                raise NotADir(p)
            out = []
            for name in self._names(node):
                child = self._child(node, name)
                if child is not None:
                    out.append(UnionDirEntry(name, _p.join(p, name), self._stat_of(child),
                                             self))
        return iter(out)

    def walk(self, top: Any = "/", topdown: bool = True,
             onerror: Callable[[OSError], None] | None = None,
             followlinks: bool = False) -> Iterator[tuple[str, list[str], list[str]]]:
        """``os.walk`` over the union (names sorted)."""
        top = self._norm(top)
        try:
            entries = list(self.scandir(top))
        except OSError as e:
            if onerror is not None:
                onerror(e)
            return
        dirs = [d.name for d in entries if d.is_dir(follow_symlinks=followlinks)]
        files = [d.name for d in entries if not d.is_dir(follow_symlinks=followlinks)]
        if topdown:
            yield top, dirs, files
        for d in dirs:
            yield from self.walk(_p.join(top, d), topdown, onerror, followlinks)
        if not topdown:
            yield top, dirs, files

    def readlink(self, path: Any) -> str:
        """``os.readlink``: EINVAL when not a symlink."""
        p = self._norm(path)
        with self._lock:
            node = self._walk(p, follow=False)
            if node.kind is not Kind.SYMLINK:
                raise InvalidPath(p)
            return node.entry.target or ""

    def getxattr(self, path: Any, name: str, *, follow_symlinks: bool = True) -> bytes:
        """``os.getxattr``: ENODATA when absent. Names in the overlay namespaces are ordinary
        here: layers store them escaped (``trusted.overlay.overlay.*``), as the kernel does."""
        p = self._norm(path)
        with self._lock:
            node = self._walk(p, follow=follow_symlinks)
            value = node.entry.xattr(name)
            if value is None:
                raise NoData(p)
            return value

    def listxattr(self, path: Any = "/", *, follow_symlinks: bool = True) -> list[str]:
        """``os.listxattr``: the user-visible names (the overlay's own marks never show)."""
        p = self._norm(path)
        with self._lock:
            node = self._walk(p, follow=follow_symlinks)
            return [k for k, _ in node.entry.xattrs]

    def statvfs(self, path: Any = "/") -> os.statvfs_result:
        """``os.statvfs``: the upper's filesystem (read-only flag set without an upper)."""
        p = self._norm(path)
        with self._lock:
            self._walk(p)
            layer = self.upper if self.upper is not None else next(
                (x for x in self.lowers if hasattr(x, "statvfs")), None)
            if layer is None or not hasattr(layer, "statvfs"):
                base = (4096, 4096, 0, 0, 0, 0, 0, 0, 0, 255)
            else:
                base = tuple(layer.statvfs())
            flag = base[8] | (os.ST_RDONLY if self.upper is None else 0)
            return os.statvfs_result((*base[:8], flag, 255))

    def access(self, path: Any, mode: int, *, follow_symlinks: bool = True) -> bool:
        """``os.access`` for the calling process's uid: True/False, never raises for a
        missing path (see ``check_access`` for the errno)."""
        try:
            self.check_access(path, mode, follow_symlinks=follow_symlinks)
            return True
        except OSError:
            return False

    def check_access(self, path: Any, mode: int, *, follow_symlinks: bool = True) -> None:
        """``access(2)`` with the errno: ENOENT, EACCES, EROFS (write on a read-only union
        for a file or directory)."""
        p = self._norm(path)
        with self._lock:
            node = self._walk(p, follow=follow_symlinks)
            e = node.entry
            if mode & os.W_OK and self.upper is None and e.kind in (Kind.FILE, Kind.DIR,
                                                                      Kind.SYMLINK):
                raise ReadOnly(p)
            uid = os.geteuid()
            if uid == 0:
                if mode & os.X_OK and e.kind is not Kind.DIR and not e.mode & 0o111:
                    raise PermissionDenied(p)
                return
            bits = e.mode
            if uid == e.uid:
                have = (bits >> 6) & 7
            elif e.gid in os.getgroups() or e.gid == os.getegid():
                have = (bits >> 3) & 7
            else:
                have = bits & 7
            want = mode & 7
            if want & ~have:
                raise PermissionDenied(p)

    def which(self, path: Any) -> Provenance:
        """Where ``path`` (not following a final symlink) comes from; ENOENT if absent."""
        p = self._norm(path)
        with self._lock:
            node = self._walk(p, follow=False)
            return self._provenance(node)

    def _lower_source(self, i: int, lpath: str, e: Entry) -> Source:
        return Source(i, self.lowers[i].name, lpath, e)

    def _provenance(self, node: _Node) -> Provenance:
        self._fresh(node)
        reasons: list[str] = []
        merged: list[Source] = []
        shadows: list[Source] = []
        data_from = None
        lower_stack = list(node.lower.stack) if node.lower is not None else []
        if node.upper is not None:
            top = Source(None, self.upper_name or "upper", node.path, node.upper)
            if node.upper.origin_ino is not None or (node.lower is not None and
                                                     node.upper.kind is not Kind.DIR):
                reasons.append(f"{node.path} was copied up into the upper layer "
                               f"({self.upper_name}); changes are made there")
            else:
                reasons.append(f"{node.path} is in the upper layer ({self.upper_name})")
        else:
            i, lp, le = lower_stack[0]
            top = self._lower_source(i, lp, le)
            reasons.append(f"{node.path} comes from lower layer {i} ({top.layer_name})"
                           + (f" at {lp}" if lp != node.path else "")
                           + "; it is read there and copied up on the first change")
            lower_stack = lower_stack[1:]
        if node.is_dir:
            merged.append(top)
            for i, lp, le in lower_stack:
                if le.kind is Kind.DIR:
                    merged.append(self._lower_source(i, lp, le))
            if len(merged) > 1:
                reasons.append("it is a merged directory: its names are the union of "
                               + ", ".join(s.layer_name for s in merged)
                               + "; its metadata comes from the top-most, "
                               + merged[0].layer_name)
            if node.upper is not None and node.upper.redirect:
                reasons.append(f"it was renamed: its lower part is found at "
                               f"{node.upper.redirect} (overlay.redirect)")
        else:
            for i, lp, le in lower_stack:
                src = self._lower_source(i, lp, le)
                if node.entry.metacopy and data_from is None and le.kind is Kind.FILE and \
                        not le.metacopy:
                    data_from = src
                    reasons.append(f"only its metadata was copied up (metacopy); the data "
                                   f"is still read from {src.layer_name}")
                else:
                    shadows.append(src)
        # what lies below, hidden: scan the layers under the visible ones for this path
        hidden_by = None
        seen = {s.layer_index for s in merged} | {top.layer_index}
        if data_from is not None:
            seen.add(data_from.layer_index)
        for i, layer in enumerate(self.lowers):
            if i in seen:
                continue
            e = layer.lookup(node.path)
            if e is None:
                continue
            lower_indexes = [s.layer_index for s in merged[1:]] + (
                [top.layer_index] if top.layer_index is not None else [])
            if lower_indexes and i < max(x for x in lower_indexes if x is not None):
                continue
            shadows.append(self._lower_source(i, node.path, e))
        if node.upper is not None and node.upper.opaque:
            hidden_by = top
            reasons.append(f"{node.path} is an opaque directory in {top.layer_name}: nothing "
                           "below it is merged in")
        else:
            for s in merged[1:] + ([top] if top.layer_index is not None else []):
                if s.entry.opaque:
                    hidden_by = s
                    reasons.append(f"{s.layer_name} holds {node.path} as an opaque directory:"
                                   " the layers below it are not merged in")
                    break
        if hidden_by is None:
            hidden_by = self._find_hiding_whiteout(node.path, merged, top)
            if hidden_by is not None:
                reasons.append(f"a whiteout in {hidden_by.layer_name} hides {node.path} in "
                               "the layers below it")
        shadow_names = [s.layer_name for s in shadows if s.entry.kind is not Kind.WHITEOUT]
        if shadow_names:
            reasons.append("it shadows the same name in " + ", ".join(shadow_names))
        return Provenance(
            path=node.path, layer=top.layer_name, layer_index=top.layer_index,
            is_upper=top.is_upper, entry=top.entry, merged=tuple(merged),
            shadows=tuple(s for s in shadows if s.entry.kind is not Kind.WHITEOUT),
            hidden_by=hidden_by, reasons=reasons, data_from=data_from)

    def _find_hiding_whiteout(self, path: str, merged: list[Source],
                              top: Source) -> Source | None:
        last = max([s.layer_index for s in merged if s.layer_index is not None]
                   + ([top.layer_index] if top.layer_index is not None else [-1]))
        for i in range(last + 1, len(self.lowers)):
            e = self.lowers[i].lookup(path)
            if e is not None and e.kind is Kind.WHITEOUT:
                return self._lower_source(i, path, e)
        return None

    # ------------------------------------------------------------------ copy-up
    def _need_upper(self, path: str) -> None:
        if self.upper is None:
            raise ReadOnly(path)

    def _copy_up(self, node: _Node, *, data: bool = True, meta_only_ok: bool = False) -> _Node:
        """Make sure ``node`` exists in the upper (parents first); return the fresh node.
        ``meta_only_ok`` with ``metacopy=on`` copies a regular file's metadata only; without
        it a metacopy file gets its data (link and rename do that: a metacopy file found
        under another name would lose the path to its data)."""
        if node.upper is not None:
            if node.upper.kind is Kind.FILE and node.upper.metacopy and not meta_only_ok:
                return self._complete_metacopy(node)
            return node
        assert node.lower is not None
        head, _name = _p.split(node.path)
        parent = self._walk(head) if head != node.path else None
        if parent is not None and parent.upper is None:
            parent = self._copy_up(parent)
        # the kernel puts the upper parent's times back once the child is in (copy_up.c,
        # ovl_set_timestamps): a copy-up is no change of the directory
        ptimes = None
        if parent is not None and parent.upper is not None:
            ptimes = self._ptimes.get(head)
            if ptimes is None:
                self._fresh(parent)
                ptimes = (parent.upper.atime_ns, parent.upper.mtime_ns)
        try:
            return self._copy_up_one(node, data, meta_only_ok)
        finally:
            if ptimes is not None:
                self._up.utime(head, *ptimes)
                # the next copy-up into this directory puts back the same times: no need
                # to read them again (until something else changes it: ``_forget``)
                self._ptimes[head] = ptimes

    def _copy_up_one(self, node: _Node, data: bool, meta_only_ok: bool) -> _Node:
        """``_copy_up`` of ``node`` once its parent is in the upper."""
        i, lpath, le = node.lower.stack[0]  # type: ignore[union-attr]
        layer = self.lowers[i]
        key = self._index_key(node)
        if key is not None and self._up.index_lookup(key):
            before = self._nlink(node)
            self._up.index_link(key, node.path)
            self._index_consume(key, before)
            self._emit(EventKind.COPY_UP, node.path, layer.name,
                       "hard link to an already copied-up file (index=on)")
            return self._walk(node.path, follow=False)
        ino = self._ino(node)
        keep_ino = le.kind is Kind.DIR or le.nlink <= 1 or key is not None
        # a hard-link group going into the index gets its data at once: every other name of
        # the group reads the indexed object, which must not be a data-less metacopy file
        meta = (meta_only_ok and self.metacopy and le.kind is Kind.FILE
                and self._upper_has_xattrs() and key is None)
        copy = getattr(self._up, "copy_up", None)
        recorded = False
        if copy is not None:
            recorded = copy(node.path, le, layer, lpath, data=data and not meta,
                            metacopy=meta, origin_ino=ino if keep_ino else None,
                            fsync=not self.volatile, **self._absent_kw) is True
        else:  # a third-party WritableLayer: the plain protocol
            self._generic_copy_up(node.path, le, layer, lpath, data, meta)
            if keep_ino and hasattr(self.upper, "set_origin"):
                self._up.set_origin(node.path, ino)
        if key is not None:
            self._up.index_store(key, node.path)
            self._up.index_set_count(key, (le.nlink, 1))
        if keep_ino and not recorded:  # (the layer said it wrote the record: no look)
            up = self._up.lookup(node.path)
            if up is not None and up.origin_ino is None:
                self._ino_map[up.ino] = ino
        what = {Kind.DIR: "directory", Kind.FILE: "file", Kind.SYMLINK: "symlink"}.get(
            le.kind, le.kind.value)
        self._emit(EventKind.COPY_UP, node.path, layer.name,
                   f"{what} copied up from {layer.name}"
                   + (" (metadata only: metacopy=on)" if meta else "")
                   + ("" if data or le.kind is not Kind.FILE else " (no data: truncated)"))
        return self._walk(node.path, follow=False)

    def _upper_has_xattrs(self) -> bool:
        """False for an upper that spells its marks as OCI files (no ``overlay.*`` xattrs:
        no metacopy, no redirect)."""
        fmt = getattr(self._up, "format", None)
        return fmt is None or fmt.xattr_prefix is not None

    def _generic_copy_up(self, path: str, le: Entry, layer: Layer, lpath: str,
                         data: bool, meta: bool) -> None:
        up = self._up
        if le.kind is Kind.DIR:
            up.mkdir(path, le.mode)
        elif le.kind is Kind.FILE:
            if data and not meta:
                up.copy_in(path, layer, lpath)
            else:
                up.open_write(path, create=True, mode=le.mode).close()
                if meta:
                    up.truncate(path, le.size)
                    up.set_metacopy(path, True)
        elif le.kind is Kind.SYMLINK:
            up.symlink(path, le.target or "")
        else:
            up.mknod(path, le.kind, le.mode, le.rdev)
        for k, v in le.xattrs:
            up.setxattr(path, k, v)
        up.chown(path, le.uid, le.gid)
        if le.kind is not Kind.SYMLINK:
            up.chmod(path, le.mode)
        up.utime(path, le.atime_ns, le.mtime_ns)

    def _complete_metacopy(self, node: _Node) -> _Node:
        """A metacopy upper file is about to be written: bring its data up into the same
        upper inode (kernel: ``ovl_copy_up_meta_inode_data``), so hard links to it keep
        seeing it. The metacopy mark is cleared only once the data is complete (and synced),
        so a crash half-way leaves a file that still reads its data from below."""
        src = self._data_source(node)
        if src is None:
            return node
        layer, lpath = src
        fill = getattr(self._up, "fill_data", None)
        if fill is not None:
            fill(node.path, layer, lpath, fsync=not self.volatile)
        else:
            with self._up.open_write(node.path) as out, layer.open_read(lpath) as f:
                while chunk := f.read(1 << 20):
                    out.write(chunk)
        self._up.set_metacopy(node.path, False)
        self._emit(EventKind.COPY_UP, node.path, layer.name, "data copied up (metacopy file "
                   "opened for writing)")
        return self._walk(node.path, follow=False)

    def _data_source(self, node: _Node) -> tuple[Layer, str] | None:
        """The layer and path holding the bytes of a regular file node."""
        if node.upper is not None and not node.upper.metacopy:
            return self.upper, node.path
        if node.lower is not None:
            ln = node.lower
            if ln.layer is not None and node.upper is None and ln.kind is Kind.FILE:
                # a plain lower file (no metacopy: DirLayer.records): its own data
                return ln.layer, ln.lpath
            for i, lp, le in node.lower.stack:
                if le.kind is Kind.FILE and not le.metacopy:
                    return self.lowers[i], lp
        if node.upper is not None:
            return self.upper, node.path
        return None

    def _prepare_create(self, parent: _Node, name: str) -> _Node:
        """Copy the parent directory up before creating ``name`` in it."""
        if parent.upper is None:
            parent = self._copy_up(parent)
        return parent

    def _clear_whiteout(self, path: str) -> bool:
        # the cached answer is exact: every write to the upper drops it where it changes
        e = self._upper_lookup(path)
        if e is not None and e.kind is Kind.WHITEOUT:
            self._up.remove(path)
            return True
        return False

    def _has_lower(self, parent: _Node, name: str) -> bool:
        """True when a lower object at ``parent/name`` would show if nothing hid it."""
        if not parent.lower_dirs_visible():
            return False
        lkey = _p.join(parent.lower_key, name)  # type: ignore[arg-type]
        return self._lower.node(lkey) is not None

    def _whiteout(self, path: str, why: str, known_absent: bool = False) -> None:
        if known_absent:  # (nothing at path in the upper, in any form: no probes needed)
            self._up.whiteout(path, **self._absent_kw)
        else:
            self._up.whiteout(path)
        self._emit(EventKind.WHITEOUT, path, self.upper_name, why)

    # ------------------------------------------------------------------ creating
    def _new_mode(self, mode: int) -> int:
        return mode & ~self.umask & 0o7777

    def _create_common(self, path: str, make: Callable[[str], None], is_dir: bool) -> None:
        """The shared steps of mkdir/symlink/mknod/link/creat: EEXIST, EROFS, copy the parent
        up, replace a whiteout, make the object, mark a directory made over a whiteout
        opaque (so the lower directory's names stay hidden)."""
        parent, node, name = self._lookup_nofollow(path)
        if path == "/" or node is not None:
            raise Exists(path)
        self._need_upper(path)
        _check_name(name, path)
        parent = self._prepare_create(parent, name)
        cpath = _p.join(parent.path, name)
        had_whiteout = self._clear_whiteout(cpath)
        make(cpath)
        self._inherit_group(parent, cpath, is_dir)
        if is_dir and had_whiteout:
            self._up.set_opaque(cpath, True)
            self._emit(EventKind.OPAQUE, cpath, self.upper_name,
                       "directory created where a deleted one was: opaque, so the old "
                       "lower contents stay hidden")

    def _inherit_group(self, parent: _Node, cpath: str, is_dir: bool) -> None:
        """A set-group-ID directory passes its group on to new objects, and its set-group-ID
        bit to new directories (POSIX, as every Linux filesystem does)."""
        pe = parent.entry
        if not pe.mode & _stat.S_ISGID:
            return
        e = self._up.lookup(cpath)
        if e is None or e.kind is Kind.SYMLINK:
            return
        if e.gid != pe.gid:
            self._up.chown(cpath, e.uid, pe.gid)
        if is_dir and not e.mode & _stat.S_ISGID:
            self._up.chmod(cpath, e.mode | _stat.S_ISGID)

    @_changing
    def mkdir(self, path: Any, mode: int = 0o777) -> None:
        """``os.mkdir``: EEXIST, ENOENT/ENOTDIR (parent), EROFS."""
        p = self._norm(path)
        with self._lock:
            self._create_common(p, lambda c: self._up.mkdir(c, self._new_mode(mode)), True)

    @_changing
    def makedirs(self, path: Any, mode: int = 0o777, exist_ok: bool = False) -> None:
        """``os.makedirs``."""
        p = self._norm(path)
        with self._lock:
            acc = ""
            parts = [c for c in p.split("/") if c]
            for k, part in enumerate(parts):
                acc += "/" + part
                try:
                    self.mkdir(acc, mode)
                except FileExistsError:
                    if k == len(parts) - 1:
                        if not (exist_ok and self.isdir(acc)):
                            raise
                    elif not self.isdir(acc):
                        raise NotADir(acc) from None
            if not parts and not exist_ok:
                raise Exists(p)

    @_changing
    def symlink(self, target: str, path: Any) -> None:
        """``os.symlink(target, path)``: EEXIST, EROFS, ENOENT (parent)."""
        p = self._norm(path)
        target = os.fsdecode(target)
        if not target:
            raise NotFound(p)
        with self._lock:
            self._create_common(p, lambda c: self._up.symlink(c, target), False)

    @_changing
    def mknod(self, path: Any, mode: int = 0o600 | _stat.S_IFREG, device: int = 0) -> None:
        """``os.mknod``: FIFOs, sockets, regular files and (privileged) device nodes."""
        p = self._norm(path)
        fmt = _stat.S_IFMT(mode) or _stat.S_IFREG
        kind = Kind.from_mode(fmt | 0o600)
        if kind is Kind.DIR or kind is Kind.SYMLINK:
            raise InvalidPath(p)
        if kind in (Kind.CHAR, Kind.BLOCK) and os.geteuid() != 0:
            raise NotPermitted(p)
        perm = self._new_mode(mode & 0o7777)

        def make(c: str) -> None:
            if kind is Kind.FILE:
                self._up.open_write(c, create=True, mode=perm).close()
            else:
                self._up.mknod(c, kind, perm, device)

        with self._lock:
            self._create_common(p, make, False)

    @_changing
    def link(self, src: Any, dst: Any, *, follow_symlinks: bool = False) -> None:
        """``os.link``: EPERM for a directory, EEXIST, ENOENT, EROFS. The source is copied up
        first (index=off: this breaks a lower hard-link group, as in the kernel)."""
        s, d = self._norm(src), self._norm(dst)
        with self._lock:
            node = self._walk(s, follow=follow_symlinks)
            parent, dnode, name = self._lookup_nofollow(d)
            if dnode is not None:
                raise Exists(d)
            self._need_upper(d)
            if node.is_dir:
                raise NotPermitted(s)
            _check_name(name, d)
            node = self._copy_up(node, meta_only_ok=False)
            parent = self._prepare_create(self._walk(_p.split(d)[0]), name)
            cpath = _p.join(parent.path, name)
            self._clear_whiteout(cpath)
            self._up.link(node.path, cpath)

    # ------------------------------------------------------------------ open
    def open(self, path: Any, mode: str | int = "rb", *, perm: int = 0o666) -> BinaryIO:
        """Open a regular file: ``mode`` is a binary mode string (``rb``, ``r+b``, ``wb``,
        ``w+b``, ``ab``, ``a+b``, ``xb``, ``x+b``) or ``os.O_*`` flags. Opening for write,
        truncation or append copies a lower file up first. Raises ENOENT, EEXIST
        (exclusive create), EISDIR, EROFS, ELOOP, ENOTDIR."""
        flags = _mode_to_flags(mode)
        if flags & _CHANGING_FLAGS:
            inner, upath, ino = self._open_changing(path, flags, perm)
        else:
            inner, upath, ino = self._open(path, flags, perm)
        if ino is None:
            try:
                ino = self.lstat(upath).st_ino
            except OSError:
                ino = 0
        return UnionFile(inner, self, upath, ino)  # type: ignore[return-value]

    @_changing
    def _open_changing(self, path: Any, flags: int, perm: int) -> tuple[Any, str, int | None]:
        return self._open(path, flags, perm)

    def create_new(self, path: Any, flags: int, perm: int = 0o666
                   ) -> tuple[BinaryIO, os.stat_result | None] | None:
        """``open(path, flags | O_CREAT, perm=perm)`` of a name the caches prove absent (the
        usual create: a new name in an upper directory the engine made, see
        ``_known_absent``), and the new file's ``created_stat`` (None where that is None),
        in one call with the fewest steps: for a FUSE create handler. None, with nothing
        done, where this is not the case or the open is not the plain one (read-only,
        ``O_DIRECTORY``, a ``.wh.`` name, an upper that is not a ``DirLayer``,
        ``index=on``): then ``open`` does it. Errors as ``open`` (the host's: ENOSPC, ...)."""
        acc = flags & _O_ACCMODE
        if acc == _O_RDONLY or flags & _O_DIRECTORY or self._refresh is None or self.index:
            return None
        complete = self._complete
        if not complete:
            return None
        p = path
        cut = self._complete_child(p)
        if cut < 0:
            p = self._norm(path)
            cut = p.rfind("/")
        name = p[cut + 1:]
        if name[:4] == ".wh." or p == "/" or len(name) > 63:
            return None
        with self._lock:
            parent = self._known_absent(p, cut)
            if parent is None:
                return None
            head = parent.path
            # what _open does for a known-absent name (nothing to copy up, no whiteout to
            # clear), with the upper's tracking (_TrackedUpper's write_one) done here
            try:
                f = self.upper.create_new(p, perm & ~self.umask & 0o7777,
                                          append=bool(flags & _O_APPEND),
                                          readable=acc == _O_RDWR)
            except BaseException:
                self._forget(p)
                self._names_changed("open_write", _NAMES["open_write"], (p,), False)
                raise
            # _forget(p) where p was absent: nothing was cached about p but (maybe) its
            # absence; the parent's stat goes and its entry is marked stale
            self._gen += 1
            self._ucache.pop(p, None)
            self._ufiles.pop(p, None)
            stats = self._stat_cache
            stats.pop((head, True), None)
            stats.pop((head, False), None)
            self._stale.add(head)
            if self._ptimes:
                self._ptimes.pop(head, None)
            if self._sym_stat:
                self._sym_stat.clear()
            complete[head].add(name)  # (_names_changed)
            gen = self._gen
            if parent.upper.mode & _S_ISGID:  # type: ignore[union-attr]
                self._inherit_group(parent, p, False)
            e = f.entry  # type: ignore[attr-defined]
            if e is None:  # (the host gave it xattrs: the general way)
                uf = UnionFile(f, self, p, self._created_ino(f, p, gen))  # type: ignore[arg-type]
                return uf, None  # type: ignore[return-value]
            # _created_ino and created_stat, spelled out
            ino = self._ino_map.get(e.ino) if self._ino_map else None
            if ino is None:
                ino = _compose_ino(0, e.ino)
            st = None
            if e.nlink == 1 and p not in self._ucache:
                self._ufiles[p] = e
                f.entry_gen = gen  # type: ignore[attr-defined]
                if gen == self._gen:
                    st = _stat_result(_S_IFREG | e.mode, ino, self.st_dev, 1, e.uid, e.gid,
                                      e.size, e.atime_ns, e.mtime_ns, e.ctime_ns, e.rdev)
            return UnionFile(f, self, p, ino), st  # type: ignore[return-value]

    def _created_ino(self, f: Any, path: str, gen: int) -> int | None:
        """The union inode number of the file ``path`` this union just created in the upper,
        from its open descriptor (no lookup); None when the file has no host descriptor.
        Where the upper described the new file (``DirLayer.open_write(describe=True)``), the
        description is kept as ``_upper_lookup`` would keep it, so the file's next lookup is
        one host ``stat`` (``_ufiles``) instead of a full one; ``gen``: the change count
        (``_gen``) when the description was made, for ``created_stat``."""
        e = getattr(f, "entry", None)
        if e is not None:
            host_ino = e.ino
            if self._refresh is not None and e.nlink == 1 and path not in self._ucache:
                self._ufiles[path] = e
                f.entry_gen = gen
        else:
            try:
                host_ino = os.fstat(f.fileno()).st_ino
            except (OSError, ValueError, AttributeError, io.UnsupportedOperation):
                return None
        mapped = self._ino_map.get(host_ino)  # (as _upper_ino: a new file has no origin)
        return mapped if mapped is not None else _compose_ino(0, host_ino)

    def _open(self, path: Any, flags: int, perm: int) -> tuple[Any, str, int | None]:
        """(layer file, union path, union inode number or None when not known here)."""
        p = self._norm(path)
        acc = flags & _O_ACCMODE
        write = acc in (_O_WRONLY, _O_RDWR)
        create, excl = bool(flags & _O_CREAT), bool(flags & _O_EXCL)
        trunc, append = bool(flags & _O_TRUNC), bool(flags & _O_APPEND)
        with self._lock:
            ufiles = self._ufiles
            if ufiles and (write or trunc) and p in ufiles and \
                    not flags & (_O_EXCL | _O_DIRECTORY) and not self.index:
                # an upper file the engine knows (every change of it or of a directory
                # above it drops it from _ufiles): no walk, no lookup
                e = ufiles[p]
                if not e.metacopy and p not in self._ucache:
                    return self._up.open_existing(p, truncate=trunc, append=append,
                                                  readable=acc == _O_RDWR), p, \
                        self._upper_ino(e)
            cut = p.rfind("/")
            known = self._known_absent(p, cut) if create and p != "/" and self._complete \
                else None
            known_absent = known is not None
            if known is not None:  # (the usual create: the caches know the name is free)
                parent, node, name = known, None, p[cut + 1:]
            elif (create and excl) or flags & _O_NOFOLLOW:
                parent, node, name = self._lookup_nofollow(p)
            else:
                found, missing = self._walk_parent(p, True)
                if missing is None:
                    parent, node, name = found, found, ""
                else:
                    parent, node, name = found, None, missing
            if node is None:
                if not create:
                    raise NotFound(p)
                if flags & _O_DIRECTORY:
                    raise NotFound(p)
                self._need_upper(p)
                _check_name(name, p)
                if known_absent:  # (an upper directory: nothing to copy up; no whiteout)
                    cpath = p
                else:
                    parent = self._prepare_create(parent, name)
                    cpath = _p.join(parent.path, name)
                    self._clear_whiteout(cpath)
                # the name was just looked up, and a whiteout there removed
                f = self._up.open_write(cpath, create=True, truncate=True,
                                        mode=self._new_mode(perm), append=append,
                                        readable=acc == _O_RDWR, **self._create_kw)
                gen = self._gen  # (the upper as the new file's description shows it)
                self._inherit_group(parent, cpath, False)
                ino = self._created_ino(f, cpath, gen)
                if acc == _O_RDONLY:
                    f.close()
                    return self._up.open_read(cpath), cpath, ino
                return f, cpath, ino
            if create and excl:
                raise Exists(p)
            kind = node.kind
            if kind is Kind.SYMLINK:
                raise Loop(p)  # O_NOFOLLOW on a symlink
            if kind is Kind.DIR:
                if write or create or trunc:
                    raise IsADir(p)
                raise IsADir(p, "open() of a directory: use listdir/scandir")
            if kind is not Kind.FILE:
                raise InvalidPath(p, f"cannot open a {kind.value} through the engine")
            if write or trunc:
                self._need_upper(p)
                if node.upper is None:
                    node = self._copy_up(node, data=not trunc)
                elif node.upper.metacopy:
                    node = self._copy_up(node) if not trunc else node
                    if trunc and node.upper.metacopy:
                        self._up.set_metacopy(node.path, False)
                return self._up.open_existing(node.path, truncate=trunc, append=append,
                                              readable=acc == _O_RDWR), node.path, \
                    self._ino(node)
            if self.index and node.upper is None and not (
                    node.alias is not None and node.alias.metacopy):
                # (a metacopy index entry, which only the kernel makes, has its data below)
                key = self._index_key(node)
                if key is not None and self._up.index_lookup(key):
                    return self._up.index_open(key), node.path, None
            src = self._data_source(node)
            layer, lpath = src  # type: ignore[misc]
            return layer.open_read(lpath), node.path, self._ino(node)

    # ------------------------------------------------------------------ removing
    @_changing
    def unlink(self, path: Any) -> None:
        """``os.unlink``: ENOENT, EISDIR for a directory, EROFS. A lower object gets a
        whiteout."""
        p = self._norm(path)
        with self._lock:
            parent, node, name = self._lookup_nofollow(p)
            self._need_upper(p)  # EROFS comes before ENOENT/EISDIR, as in the VFS
            if node is None:
                raise NotFound(p)
            if node.is_dir:
                raise IsADir(p)
            self._remove_node(parent, node, name)

    remove = unlink

    def _remove_node(self, parent: _Node, node: _Node, name: str) -> None:
        lower_visible = self._has_lower(parent, name) or node.lower is not None
        if node.upper is None and self._index_key(node) is not None:
            # index=on: a lower hard link is copied up (into the index) before it goes, so
            # the group's other names count one link less (the kernel's ovl_nlink_start)
            node = self._copy_up(node)
            parent = self._walk(parent.path)
        if parent.upper is None:
            parent = self._copy_up(parent)
        if node.upper is not None:
            if node.is_dir:
                self._purge_whiteouts(node.path)
            self._up.remove(node.path)
        if lower_visible:
            # the name is not in the upper now: removed just above, or never there (the
            # lookup that found the node saw neither an object nor a whiteout, or the
            # parent was only now copied up, empty)
            self._whiteout(node.path, "deleted a name that exists in a lower layer: the "
                           "whiteout hides it", known_absent=True)

    def _purge_whiteouts(self, path: str) -> None:
        for name in self._up.listdir(path):
            cp = _p.join(path, name)
            e = self._up.lookup(cp)
            if e is not None and e.kind is Kind.WHITEOUT:
                self._up.remove(cp)

    @_changing
    def rmdir(self, path: Any) -> None:
        """``os.rmdir``: ENOENT, ENOTDIR, ENOTEMPTY (names in any layer count), EBUSY for
        the root, EROFS."""
        p = self._norm(path)
        with self._lock:
            if p == "/":
                raise from_errno(errno.EBUSY, p)
            parent, node, name = self._lookup_nofollow(p)
            self._need_upper(p)  # EROFS comes before ENOENT/ENOTDIR, as in the VFS
            if node is None:
                raise NotFound(p)
            if not node.is_dir:
                raise NotADir(p)
            if self._names(node):
                raise NotEmpty(p)
            self._remove_node(parent, node, name)

    # ------------------------------------------------------------------ rename
    @_changing
    def rename(self, src: Any, dst: Any, flags: int = 0) -> None:
        """``rename(2)``/``renameat2``: ``flags`` may hold ``RENAME_NOREPLACE`` (1) and
        ``RENAME_EXCHANGE`` (2). Errors: ENOENT, EEXIST (noreplace), ENOTDIR, EISDIR,
        ENOTEMPTY, EINVAL (a directory into itself, or bad flags), EXDEV (a lower or merged
        directory without ``redirect_dir``), EBUSY (the root), EROFS."""
        s, d = self._norm(src), self._norm(dst)
        if flags & ~(RENAME_NOREPLACE | RENAME_EXCHANGE) or (
                flags & RENAME_NOREPLACE and flags & RENAME_EXCHANGE):
            raise InvalidPath(s, "invalid rename flags")
        with self._lock:
            sparent, sname = self._parent_of(s)
            dparent, dname = self._parent_of(d)
            if self.upper is None:
                raise ReadOnly(s)
            snode = self._last(sparent, sname, s)
            if snode is None:
                raise NotFound(s)
            dnode = self._last(dparent, dname, d)
            # the order of checks is the kernel's: VFS first (EROFS, ENOENT, EBUSY, EEXIST,
            # EINVAL/ENOTEMPTY for ancestors, ENOTDIR/EISDIR), then overlayfs (EXDEV, then
            # ENOTEMPTY of a merged target)
            self._need_upper(s)
            if snode is None:
                raise NotFound(s)
            if s == "/" or d == "/":
                raise from_errno(errno.EBUSY, s)
            if flags & RENAME_EXCHANGE and dnode is None:
                raise NotFound(d)
            if flags & RENAME_NOREPLACE and dnode is not None:
                raise Exists(d)
            if _p.is_within(d, s) and d != s:
                raise InvalidPath(s, "cannot move a directory into itself")
            if _p.is_within(s, d) and s != d:
                if flags & RENAME_EXCHANGE:
                    raise InvalidPath(s, "cannot move a directory into itself")
                raise NotEmpty(d)
            if s == d:
                return
            if flags & RENAME_EXCHANGE:
                self._exchange(sparent, snode, dparent, dnode)  # type: ignore[arg-type]
                return
            if dnode is not None:
                if self._same_object(snode, dnode):
                    return  # two links to one file: POSIX says do nothing
                if snode.is_dir and not dnode.is_dir:
                    raise NotADir(d)
                if not snode.is_dir and dnode.is_dir:
                    raise IsADir(d)
            _check_name(dname, d)
            self._check_movable(snode, s, d)
            if dnode is not None and dnode.is_dir and self._names(dnode):
                raise NotEmpty(d)
            self._rename(s, snode, sparent, d, dnode, dparent, dname)

    def _same_object(self, a: _Node, b: _Node) -> bool:
        """Two names of one overlay inode: upper hard links, or (index=on) names of one
        lower hard-link group, copied up or not. Without the index, two names of a lower
        hard link are two overlay inodes, as in the kernel."""
        if a.is_dir or b.is_dir:
            return False
        if a.upper is not None and b.upper is not None:
            return a.upper.ino == b.upper.ino and a.upper.nlink > 1
        return self.index and self._index_key(a if a.upper is None else b) is not None and \
            self._ino(a) == self._ino(b)

    def replace(self, src: Any, dst: Any) -> None:
        """``os.replace``: rename, replacing ``dst``."""
        self.rename(src, dst)

    def _check_movable(self, node: _Node, s: str, d: str) -> None:
        """EXDEV for a directory with lower parts when redirects cannot be recorded."""
        if self._dir_needs_redirect(node) and (
                not self.redirect_dir or not self._upper_has_xattrs()):
            self._emit(EventKind.EXDEV, s, self.upper_name,
                       "renaming a directory that has lower parts needs redirect_dir=on;"
                       " without it overlayfs answers EXDEV (tools then copy)")
            raise CrossDevice(s, path2=d)

    def _dir_needs_redirect(self, node: _Node) -> bool:
        return node.is_dir and node.lower is not None and node.lower.is_dir and not (
            node.upper is not None and node.upper.opaque)

    def _rename(self, s: str, snode: _Node, sparent: _Node, d: str, dnode: _Node | None,
                dparent: _Node, dname: str) -> None:
        redirect = None
        if self._dir_needs_redirect(snode):
            if snode.upper is not None and snode.upper.redirect:
                r = snode.upper.redirect
                redirect = r if r.startswith("/") else _p.join(_p.split(snode.lower_key or s)[0],
                                                               r)
            else:
                redirect = snode.lower_key or s
        src_lower = snode.lower is not None or self._has_lower(sparent, _p.split(s)[1])
        if dnode is not None and dnode.upper is None and not dnode.is_dir and \
                self._index_key(dnode) is not None:
            # index=on: the replaced lower hard link goes into the index first, so its group
            # counts one link less once the rename drops it (as for unlink)
            self._copy_up(dnode)
            dnode = self._walk(d, follow=False)
        snode = self._copy_up(snode, meta_only_ok=False)
        dparent = self._walk(_p.split(d)[0])
        if dparent.upper is None:
            dparent = self._copy_up(dparent)
        sparent = self._walk(_p.split(s)[0])
        if dnode is not None and dnode.upper is not None:
            if dnode.is_dir:
                self._purge_whiteouts(d)
            if dnode.upper is not None and self._up.lookup(d) is not None and dnode.is_dir:
                self._up.remove(d)
        else:
            self._clear_whiteout(d)
        self._up.rename(s, d)
        if redirect is not None:
            same_parent = _p.split(s)[0] == _p.split(d)[0] and _p.split(redirect)[0] == \
                _p.split(s)[0]
            value = _p.split(redirect)[1] if same_parent else redirect
            self._up.set_redirect(d, value)
            self._emit(EventKind.REDIRECT, d, self.upper_name,
                       f"renamed directory keeps its lower contents: overlay.redirect="
                       f"{value}")
        elif snode.is_dir and not (snode.upper is not None and snode.upper.opaque) and \
                (dnode is not None or self._has_lower(dparent, dname)):
            self._up.set_opaque(d, True)
            self._emit(EventKind.OPAQUE, d, self.upper_name,
                       "directory moved over a lower name: opaque, so the lower contents "
                       "there stay hidden")
        if src_lower:
            self._whiteout(s, "renamed away from a name that exists in a lower layer")

    def _exchange(self, sparent: _Node, snode: _Node, dparent: _Node, dnode: _Node) -> None:
        self._check_movable(snode, snode.path, dnode.path)
        self._check_movable(dnode, dnode.path, snode.path)
        moves = []
        for n, other in ((snode, dnode.path), (dnode, snode.path)):
            if self._dir_needs_redirect(n):
                r = n.upper.redirect if n.upper is not None else None
                moves.append((other, r if r and r.startswith("/") else (n.lower_key or n.path)))
        self._copy_up(snode, meta_only_ok=False)
        self._copy_up(self._walk(dnode.path, follow=False), meta_only_ok=False)
        exchange = getattr(self._up, "exchange", None)
        if exchange is None:
            raise NotSupported(snode.path)
        exchange(snode.path, dnode.path)
        for where, target in moves:
            self._up.set_redirect(where, target)
            self._emit(EventKind.REDIRECT, where, self.upper_name,
                       f"exchanged directory keeps its lower contents: overlay.redirect="
                       f"{target}")

    # ------------------------------------------------------------------ metadata
    def _meta_target(self, p: str, follow: bool) -> _Node:
        node = self._walk(p, follow=follow)
        self._need_upper(p)
        return self._copy_up(node, meta_only_ok=True)

    @_changing
    def chmod(self, path: Any, mode: int, *, follow_symlinks: bool = True) -> None:
        """``os.chmod`` (copy-up first; metadata only with ``metacopy``)."""
        p = self._norm(path)
        with self._lock:
            node = self._walk(p, follow=follow_symlinks)
            if node.kind is Kind.SYMLINK:
                raise NotSupported(p, "symlink modes cannot be changed on Linux")
            self._need_upper(p)
            node = self._copy_up(node, meta_only_ok=True)
            self._up.chmod(node.path, mode & 0o7777)

    @_changing
    def chown(self, path: Any, uid: int, gid: int, *, follow_symlinks: bool = True) -> None:
        """``os.chown`` (-1 keeps a value)."""
        p = self._norm(path)
        with self._lock:
            node = self._meta_target(p, follow_symlinks)
            e = node.upper
            self._up.chown(node.path, e.uid if uid == -1 else uid,
                             e.gid if gid == -1 else gid)

    def lchown(self, path: Any, uid: int, gid: int) -> None:
        self.chown(path, uid, gid, follow_symlinks=False)

    @_changing
    def utime(self, path: Any, times: tuple[float, float] | None = None, *,
              ns: tuple[int, int] | None = None, follow_symlinks: bool = True) -> None:
        """``os.utime`` (``times`` in seconds or ``ns=``; neither: now)."""
        p = self._norm(path)
        if times is not None and ns is not None:
            raise ValueError("utime: you may specify either 'times' or 'ns' but not both")
        if ns is None:
            if times is None:
                import time

                now = time.time_ns()
                ns = (now, now)
            else:
                ns = (int(times[0] * 1e9), int(times[1] * 1e9))
        with self._lock:
            node = self._meta_target(p, follow_symlinks)
            self._up.utime(node.path, ns[0], ns[1])

    @_changing
    def truncate(self, path: Any, length: int) -> None:
        """``os.truncate``: EISDIR, EINVAL (negative length or not a regular file), EROFS."""
        p = self._norm(path)
        with self._lock:
            node = self._walk(p)
            if node.is_dir:
                raise IsADir(p)
            if node.kind is not Kind.FILE or length < 0:
                raise InvalidPath(p)
            self._need_upper(p)
            node = self._copy_up(node, data=length > 0)
            self._up.truncate(node.path, length)

    @_changing
    def setxattr(self, path: Any, name: str, value: bytes, flags: int = 0, *,
                 follow_symlinks: bool = True) -> None:
        """``os.setxattr``: EEXIST (``XATTR_CREATE``), ENODATA (``XATTR_REPLACE``), EROFS
        (checked first, as the VFS does). Overlay-namespace names are stored escaped."""
        p = self._norm(path)
        with self._lock:
            node = self._walk(p, follow=follow_symlinks)
            self._need_upper(p)
            _check_user_xattr(node, name, p)
            have = node.entry.xattr(name) is not None
            if flags & os.XATTR_CREATE and have:
                raise Exists(p)
            if flags & os.XATTR_REPLACE and not have:
                raise NoData(p)
            node = self._copy_up(node, meta_only_ok=True)
            self._up.setxattr(node.path, name, bytes(value), 0)

    @_changing
    def removexattr(self, path: Any, name: str, *, follow_symlinks: bool = True) -> None:
        """``os.removexattr``: ENODATA when absent (no copy-up then), EROFS."""
        p = self._norm(path)
        with self._lock:
            node = self._walk(p, follow=follow_symlinks)
            self._need_upper(p)
            _check_user_xattr(node, name, p)
            if node.entry.xattr(name) is None:
                raise NoData(p)
            self._need_upper(p)
            node = self._copy_up(node, meta_only_ok=True)
            self._up.removexattr(node.path, name)

    # ------------------------------------------------------------------ misc
    @_changing
    def copy_up(self, path: Any) -> None:
        """Copy ``path`` (not following a final symlink) into the upper now, data included."""
        p = self._norm(path)
        with self._lock:
            self._need_upper(p)
            self._copy_up(self._walk(p, follow=False))

    def read_bytes(self, path: Any) -> bytes:
        """The whole content of a regular file (convenience for tests and the demo)."""
        with self.open(path, "rb") as f:
            return f.read()

    def write_bytes(self, path: Any, data: bytes) -> None:
        with self.open(path, "wb") as f:
            f.write(data)


__all__ = ["RENAME_EXCHANGE", "RENAME_NOREPLACE", "Provenance", "Source", "UnionDirEntry",
           "UnionFS", "UnionFSError"]
