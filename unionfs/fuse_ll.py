"""The low-level FUSE adapter: a node table of its own over ``FuseOperations``, serving the
kernel's requests straight from ``/dev/fuse``.

libfuse's high-level API names every request by path and forgets a node's name the moment
a rename replaces it, so an ``OPEN`` of that node (the kernel looked the name up just
before) fails with ESTALE inside libfuse (REL-1, docs/reliability.md). Here the adapter keeps
the table itself: node id -> node (parent, name, lookup count, the engine's inode number).
The filesystem logic stays in ``FuseOperations`` (``unionfs.fuse``): every request becomes
one call of its path-based methods with the node's path.

libfuse mounts and unmounts (``fuse_session_mount``: option parsing, ``fusermount3`` for a
user, ``auto_unmount``); the requests themselves are read from the session's descriptor and
answered here, in the kernel's protocol (``include/uapi/linux/fuse.h``). Serving them in
Python costs no more than libfuse's loop calling back into Python did, and it lets the mount
use what libfuse 3.14 cannot negotiate: FUSE passthrough (Linux 6.9+). A file whose data is
an upper file of one link is opened in passthrough mode: the kernel reads and writes the
host file itself, with no READ or WRITE request reaching this daemon (``-o passthrough=off``
turns it off; it needs root, and an upper dir that is not itself on a stacked file system).

What the table adds:

- a node whose name is replaced by rename(2) or removed by unlink(2) while the kernel holds a
  lookup on it stays usable, as on kernel overlayfs: before the name goes, a regular file is
  opened read-only (a "keeper" handle of ``FuseOperations``), and later ``OPEN``/``GETATTR``
  of the node are served from it (an upper file is unlinked from the upper dir at once, as
  always; only its open descriptor lives on, until the kernel's ``FORGET``);
- ``st_ino`` is the engine's inode number (what ``use_ino`` gave), node ids are never reused;
- open replies set ``FOPEN_KEEP_CACHE`` (page cache kept across opens), ``FOPEN_NOFLUSH``
  (no FLUSH round trip on close: nothing is buffered here) and, on directories,
  ``FOPEN_CACHE_DIR``;
- directories are opened without a round trip (``FUSE_NO_OPENDIR_SUPPORT``) where every
  directory changes only through the mount: READDIR then carries no handle, and a reader's
  cookies name the listing snapshot it began in (``snapshot << 32 | record``), so removals
  and additions between its reads neither repeat nor skip an entry;
- ``security.capability`` misses are remembered per node (the kernel asks before writes);
- passthrough bookkeeping per node: the kernel lets an inode be open either in passthrough
  mode (every open of it, with one backing file) or in caching mode, never both at once.

Threads: ``threaded`` serves from several threads reading the same descriptor; the handlers
then take one lock (the Python state is not thread-safe; the GIL serialises the Python work
anyway).
"""

from __future__ import annotations

import bisect
import contextlib
import ctypes
import errno
import fcntl
import os
import select
import signal
import stat as _stat
import struct
import sys
import threading
import time
import traceback
from collections.abc import Iterable
from typing import Any

from .fuse import FuseOperations, _Notifier
from .mount import DEFAULT_SPIN, DEFAULT_TIMEOUT, MountError, MountOptions

_lib = ctypes.CDLL("libfuse3.so.3")


class _Args(ctypes.Structure):
    _fields_ = (("argc", ctypes.c_int), ("argv", ctypes.POINTER(ctypes.c_char_p)),
                ("allocated", ctypes.c_int))


class _ConnInfo(ctypes.Structure):  # struct fuse_conn_info (libfuse 3.14)
    _fields_ = (("proto_major", ctypes.c_uint), ("proto_minor", ctypes.c_uint),
                ("max_write", ctypes.c_uint), ("max_read", ctypes.c_uint),
                ("max_readahead", ctypes.c_uint), ("capable", ctypes.c_uint),
                ("want", ctypes.c_uint), ("max_background", ctypes.c_uint),
                ("congestion_threshold", ctypes.c_uint), ("time_gran", ctypes.c_uint),
                ("reserved", ctypes.c_uint * 22))


class _NoOps(ctypes.Structure):
    """An empty ``struct fuse_lowlevel_ops``: libfuse only mounts; requests are served here."""
    _fields_ = (("slots", ctypes.c_void_p * 44),)  # 44 operations in libfuse 3.14


def _fn(name: str, restype: Any, *argtypes: Any) -> Any:
    f = getattr(_lib, name)
    f.restype, f.argtypes = restype, list(argtypes)
    return f


_vp, _int, _sz = ctypes.c_void_p, ctypes.c_int, ctypes.c_size_t
_session_new = _fn("fuse_session_new", _vp, ctypes.POINTER(_Args), ctypes.POINTER(_NoOps),
                   _sz, _vp)
_session_mount = _fn("fuse_session_mount", _int, _vp, ctypes.c_char_p)
_session_fd = _fn("fuse_session_fd", _int, _vp)
_session_unmount = _fn("fuse_session_unmount", None, _vp)
_session_destroy = _fn("fuse_session_destroy", None, _vp)
_opt_free_args = _fn("fuse_opt_free_args", None, ctypes.POINTER(_Args))
_parse_conn_opts = _fn("fuse_parse_conn_info_opts", _vp, ctypes.POINTER(_Args))
_apply_conn_opts = _fn("fuse_apply_conn_info_opts", None, _vp, ctypes.POINTER(_ConnInfo))

# -- the kernel protocol (include/uapi/linux/fuse.h) ----------------------------------------
_IN = struct.Struct("<IIQQIII")  # fuse_in_header without total_extlen and padding
_OUT = struct.Struct("<IiQ")  # fuse_out_header
_IN_SIZE = 40
_ATTR_FMT = "QQQqqqIIIIIIIIII"  # fuse_attr (times signed: before 1970 is negative)
_ATTR = struct.Struct("<" + _ATTR_FMT)
_ENTRY_OUT = struct.Struct("<QQQQII" + _ATTR_FMT)  # fuse_entry_out
_ENTRY_HEAD = struct.Struct("<QQQQII")  # (fuse_entry_out without its fuse_attr)
_ATTR_HEAD = struct.Struct("<QII")  # (fuse_attr_out without its fuse_attr)
_OPEN_OUT = struct.Struct("<QIi")  # fuse_open_out: fh, open_flags, backing_id
_U32x2 = struct.Struct("<II")
_U64 = struct.Struct("<Q")
_RW_IN = struct.Struct("<QQI")  # fuse_read_in / fuse_write_in: fh, offset, size
_CREATE_IN = struct.Struct("<III")  # flags, mode, umask
_SETATTR_IN = struct.Struct("<IIQQQQQQIIIIIIII")
_STATFS_OUT = struct.Struct("<QQQQQIIII24x")
_INIT_IN = struct.Struct("<IIIII")  # major, minor, max_readahead, flags, flags2
_INIT_OUT = struct.Struct("<IIIIHHIIHHIIH22x")
_DIRENT = struct.Struct("<QQII")
_INVAL_INODE = struct.Struct("<IiQQqq")  # a header and fuse_notify_inval_inode_out

(_LOOKUP, _FORGET, _GETATTR, _SETATTR, _READLINK, _SYMLINK, _MKNOD, _MKDIR, _UNLINK, _RMDIR,
 _RENAME, _LINK, _OPEN, _READ, _WRITE, _STATFS, _RELEASE, _FSYNC, _SETXATTR, _GETXATTR,
 _LISTXATTR, _REMOVEXATTR, _FLUSH, _INIT, _OPENDIR, _READDIR, _RELEASEDIR, _FSYNCDIR,
 _ACCESS, _CREATE, _INTERRUPT, _DESTROY, _IOCTL, _BATCH_FORGET, _READDIRPLUS, _RENAME2) = (
    1, 2, 3, 4, 5, 6, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 20, 21, 22, 23, 24, 25, 26,
    27, 28, 29, 30, 34, 35, 36, 38, 39, 42, 44, 45)
#: requests the kernel expects no reply to
_NO_REPLY = frozenset({_FORGET, _BATCH_FORGET, _INTERRUPT})
#: opcode -> name, for ``-d``
_OPNAMES = {op: name[1:] for name, op in list(globals().items())
            if name[1:].replace("_", "").isalnum() and name.isupper() and name[:1] == "_"
            and type(op) is int and 0 < op < 64 and name not in ("_IN_SIZE",)}

# INIT flags (fuse_init_in.flags; flags2 holds bits 32 and up)
_ASYNC_READ, _ATOMIC_O_TRUNC, _BIG_WRITES = 1 << 0, 1 << 3, 1 << 5
_AUTO_INVAL_DATA, _DO_READDIRPLUS, _READDIRPLUS_AUTO = 1 << 12, 1 << 13, 1 << 14
_ASYNC_DIO, _WRITEBACK_CACHE, _MAX_PAGES = 1 << 15, 1 << 16, 1 << 22
_CACHE_SYMLINKS, _NO_OPENDIR_SUPPORT, _INIT_EXT = 1 << 23, 1 << 24, 1 << 30
_PASSTHROUGH = 1 << (37 - 32)  # in flags2
#: what this adapter asks for where the kernel offers it (libfuse's defaults for a file
#: system with these handlers, less HANDLE_KILLPRIV: the kernel clears set-user-ID and
#: set-group-ID bits on write, truncate and chown itself, by a SETATTR)
_WANT = (_ASYNC_READ | _ATOMIC_O_TRUNC | _BIG_WRITES | _AUTO_INVAL_DATA | _DO_READDIRPLUS
         | _READDIRPLUS_AUTO | _ASYNC_DIO | _MAX_PAGES | _CACHE_SYMLINKS | _INIT_EXT)
# libfuse's FUSE_CAP_* bits are the kernel's for these (conn options act on them) ...
_SAME_CAPS = sum(1 << b for b in (*range(0, 5), *range(6, 19), 23, 24, 25))
# ... but for POSIX_ACL and HANDLE_KILLPRIV, which trade places
_LIB_POSIX_ACL, _LIB_KILLPRIV, _K_POSIX_ACL, _K_KILLPRIV = 1 << 19, 1 << 20, 1 << 20, 1 << 19
_MAX_WRITE = 1 << 20
_BUFSIZE = _MAX_WRITE + 4096  # one request at most: a WRITE's data and its headers

# fuse_open_out.open_flags
_FOPEN_DIRECT_IO, _FOPEN_KEEP_CACHE, _FOPEN_CACHE_DIR = 1 << 0, 1 << 1, 1 << 3
_FOPEN_NOFLUSH, _FOPEN_PASSTHROUGH = 1 << 5, 1 << 7
# fuse_setattr_in.valid
_SET_MODE, _SET_UID, _SET_GID, _SET_SIZE = 1 << 0, 1 << 1, 1 << 2, 1 << 3
_SET_ATIME, _SET_MTIME, _SET_FH = 1 << 4, 1 << 5, 1 << 6
_SET_ATIME_NOW, _SET_MTIME_NOW = 1 << 7, 1 << 8
_GETATTR_FH = 1 << 0
_NOTIFY_INVAL_INODE = 2
# ioctls of /dev/fuse: register a backing file for passthrough, and drop it
_BACKING_OPEN, _BACKING_CLOSE = 0x4010E501, 0x4004E502

#: a directory listing's cookies: the snapshot's number in the high bits, the record's in the
#: low ones (a reader continues in the snapshot it began, whatever changed since)
_SNAP_SHIFT = 32
_SNAP_MASK = (1 << _SNAP_SHIFT) - 1
#: listing snapshots kept for readers in mid-stream
_SNAPS_MAX = 256
_CAPABILITY = "security.capability"
_CAPABILITY_Z = b"security.capability\0"
#: options of libfuse's high-level API that this adapter implements itself (or ignores)
_OWN_OPTIONS = frozenset({"direct_io", "noauto_cache", "umask", "uid", "gid",
                          "ac_attr_timeout", "entry_timeout", "attr_timeout",
                          "negative_timeout", "kernel_cache", "auto_cache"})
_ROOT = 1
_ACCESS_MODES = os.O_WRONLY | os.O_RDWR


class _Stop(Exception):
    """SIGTERM, SIGINT or SIGHUP arrived while waiting for a request: stop serving."""


def _timeout(seconds: float) -> tuple[int, int]:
    """A timeout as the kernel takes it: whole seconds and nanoseconds."""
    if seconds <= 0:
        return 0, 0
    whole = int(min(seconds, 2**63))
    return whole, int((seconds - whole) * 1e9)


def _name(buf: bytearray, at: int) -> str:
    """The NUL-terminated name at ``at``, decoded as the engine spells names."""
    return buf[at:buf.index(0, at)].decode("utf-8", "surrogateescape")


class _Node:
    """One kernel inode: the name it was looked up by (``parent`` node id and ``name``),
    how many lookups the kernel holds, the engine's inode number and file type; once its
    name is gone (``orphan``), the keeper handle or attributes it is served from; its open
    handles in caching mode and in passthrough mode (with the backing file's id)."""

    __slots__ = ("backing", "cached", "fmt", "gen", "id", "ino", "keep", "lower", "name",
                 "nlookup", "nocap", "orphan", "parent", "passed", "path", "pt", "snap")

    def __init__(self, nid: int, parent: int, name: str, ino: int, fmt: int) -> None:
        self.id, self.parent, self.name, self.ino, self.fmt = nid, parent, name, ino, fmt
        self.nlookup = 0
        self.path = ""
        self.gen = -1
        self.orphan = False
        self.keep: int | None = None
        #: a lower file kept by its host path and inode number, opened when first needed
        self.lower: tuple[str, int] | None = None
        self.snap: os.stat_result | None = None
        self.nocap = -1
        #: open handles in caching mode; in passthrough mode, and their backing file's id
        self.cached = 0
        self.pt = 0
        self.backing = 0
        #: opened in passthrough mode since its last open in caching mode: the kernel's
        #: cached pages of it may be stale (the next caching open drops them)
        self.passed = False


class _Snap:
    """One listing of a directory as a reader saw it begin: its entries (name, mode, inode
    number), packed as READDIR records once asked, and with attributes for READDIRPLUS."""

    __slots__ = ("blob", "ends", "items", "nid", "plus", "seq")

    def __init__(self, seq: int, nid: int, items: list[tuple[bytes, int, int]],
                 plus: list[tuple[bytes, Any]] | None) -> None:
        self.seq, self.nid, self.items, self.plus = seq, nid, items, plus
        self.blob: bytes | None = None
        self.ends: list[int] | None = None


class _Invalidator(_Notifier):
    """``FuseOperations._invalidate`` for the low-level adapter: drops the kernel's cached
    attributes and pages of the other names of a hard-linked file (on the notifier's thread:
    the kernel may wait for a page lock held by a request not yet answered)."""

    def __init__(self, adapter: LowLevel) -> None:
        super().__init__()
        self._adapter = adapter

    def __call__(self, paths: Iterable[str], wait: float = 0.2) -> None:
        ids = [n.id for n in map(self._adapter.node_at, paths) if n is not None]
        if ids and self._adapter.fd >= 0:
            self._submit(ids, wait)

    def _notify(self, batch: list[int]) -> None:
        for nid in batch:
            fd = self._adapter.fd
            if fd < 0:
                return  # unmounted meanwhile
            with contextlib.suppress(OSError):  # ENOENT: the kernel forgot it already
                os.write(fd, _INVAL_INODE.pack(_INVAL_INODE.size, _NOTIFY_INVAL_INODE, 0,
                                               nid, 0, 0))


class LowLevel:
    """Serves ``ops`` (a ``FuseOperations``) to the kernel from ``/dev/fuse``."""

    def __init__(self, ops: FuseOperations, opts: MountOptions | None,
                 threaded: bool = False, debug: bool = False) -> None:
        self.ops = ops
        self.opts = opts
        self.fd = -1
        self.debug = debug
        self.threaded = threaded
        ops.hide_renames = False
        ops.caller = self._caller
        ops._invalidate = _Invalidator(self)  # type: ignore[assignment]
        self._nodes: dict[int, _Node] = {}
        self._children: dict[tuple[int, str], _Node] = {}
        self._next_id = 2
        self._gen = 0  # bumped when a directory moves: cached node paths are recomputed
        self._capgen = 0  # bumped when a security.capability attribute is set or removed
        #: the caller of the request being served (uid, gid, pid)
        self._ctx: tuple[int, int, int] | None = None
        self._lock = threading.Lock() if threaded else None
        #: directory path -> (the operations' listing, its snapshot)
        self._packed: dict[str, tuple[list, _Snap]] = {}
        #: snapshot number -> snapshot: the listings readers may be in the middle of
        self._snaps: dict[int, _Snap] = {}
        self._snap_seq = 0
        #: directories are opened without a request (FUSE_NO_OPENDIR_SUPPORT; see _init)
        self.dir_noopen = False
        #: files open in passthrough mode may be asked for (negotiated in _init)
        self.passthrough = False
        #: open handle -> (its node, opened in passthrough mode)
        self._handles: dict[int, tuple[_Node, bool]] = {}
        self._conn_opts: int | None = None
        self._stop = False
        self._reading = False
        self._connected = False
        timeout = DEFAULT_TIMEOUT if opts is None or opts.timeout is None else opts.timeout
        self.entry_timeout = self._option("entry_timeout", timeout)
        self.attr_timeout = self._option("attr_timeout", timeout)
        self.negative_timeout = self._option("negative_timeout", timeout)
        self._ev, self._evn = _timeout(self.entry_timeout)
        self._av, self._avn = _timeout(self.attr_timeout)
        nv, nvn = _timeout(self.negative_timeout)
        #: the start of every GETATTR/SETATTR reply (the attribute timeout)
        self._attr_head = _ATTR_HEAD.pack(self._av, self._avn, 0)
        #: the reply to a LOOKUP of an absent name: node 0, kept for the negative timeout
        self._negative = _ENTRY_OUT.pack(0, 0, nv, 0, nvn, 0, *([0] * 16))
        explicit = opts is not None and any(
            opts.fuse_option(k) for k in ("kernel_cache", "auto_cache", "noauto_cache"))
        # file data changes only through this mount (see FuseOperations.init_with_config)
        self.keep_cache = not explicit or bool(
            opts.fuse_option("kernel_cache") or opts.fuse_option("auto_cache"))
        self.direct_io = bool(opts is not None and opts.fuse_option("direct_io"))
        self.dir_cache = self.entry_timeout >= 1.0 and (opts is None or opts.cache_readdir)
        self.plus = opts is None or opts.readdirplus
        self.want_passthrough = (opts is None or opts.passthrough) and not self.direct_io
        #: how long to keep asking for the next request before sleeping (seconds; ``spin=``)
        self.spin = (opts.spin if opts is not None else DEFAULT_SPIN) / 1e6
        self._uid = self._int_option("uid")
        self._gid = self._int_option("gid")
        umask = opts.fuse_option("umask") if opts is not None else None
        self._umask = int(umask, 8) if isinstance(umask, str) else None
        self._overrides = (self._uid, self._gid, self._umask) != (None, None, None)
        root = ops.stat("/")
        node = _Node(_ROOT, _ROOT, "", root.st_ino, _stat.S_IFDIR)
        node.path, node.nlookup = "/", 1
        self._nodes[_ROOT] = node
        self._table = self._make_table()

    def _option(self, name: str, default: float) -> float:
        value = self.opts.fuse_option(name) if self.opts is not None else None
        return float(value) if isinstance(value, str) else default

    def _int_option(self, name: str) -> int | None:
        value = self.opts.fuse_option(name) if self.opts is not None else None
        return int(value) if isinstance(value, str) else None

    # -- the node table ---------------------------------------------------------------------

    def _node(self, nid: int) -> _Node:
        node = self._nodes.get(nid)
        if node is None:
            raise OSError(errno.ESTALE, os.strerror(errno.ESTALE))
        return node

    def _path(self, node: _Node) -> str:
        """The union path of a node that still has its name (ENOENT for an orphan)."""
        if node.gen == self._gen:
            return node.path
        if node.orphan:
            raise OSError(errno.ENOENT, os.strerror(errno.ENOENT))
        if node.id == _ROOT:
            return "/"
        parent = self._path(self._node(node.parent))
        node.path = ("/" if parent == "/" else parent + "/") + node.name
        node.gen = self._gen
        return node.path

    def _child(self, parent: int, name: str) -> str:
        """The union path of ``name`` below node ``parent`` (ESTALE for an unknown node)."""
        node = self._nodes.get(parent)
        if node is None:
            raise OSError(errno.ESTALE, os.strerror(errno.ESTALE))
        p = node.path if node.gen == self._gen else self._path(node)
        return ("/" if p == "/" else p + "/") + name

    def node_at(self, path: str) -> _Node | None:
        """The node the kernel knows ``path`` by, if any."""
        node: _Node | None = self._nodes[_ROOT]
        for part in path.strip("/").split("/"):
            if part and node is not None:
                node = self._children.get((node.id, part))
        return node

    def _node_for(self, parent: int, name: str, path: str, ino: int, mode: int) -> _Node:
        """The node of ``name`` in ``parent``: the known one if it is still the same file
        (inode number and type), else a new one (the old one loses its name)."""
        fmt = _stat.S_IFMT(mode)
        node = self._children.get((parent, name))
        if node is not None:
            if node.ino == ino and node.fmt == fmt:
                return node
            self._detach(node)
        node = _Node(self._next_id, parent, name, ino, fmt)
        self._next_id += 1
        node.path, node.gen = path, self._gen
        self._nodes[node.id] = node
        self._children[(parent, name)] = node
        return node

    def _detach(self, node: _Node) -> None:
        """``node``'s name is gone (replaced, removed or changed behind our back)."""
        if self._children.get((node.parent, node.name)) is node:
            del self._children[(node.parent, node.name)]
        node.orphan = True
        node.gen = -1
        if node.nlookup <= 0:
            self._drop(node)

    def _drop(self, node: _Node) -> None:
        self._nodes.pop(node.id, None)
        if self._children.get((node.parent, node.name)) is node:
            del self._children[(node.parent, node.name)]
        if node.keep is not None:
            keep, node.keep = node.keep, None
            with contextlib.suppress(OSError):
                self.ops.release(None, keep)

    def _forget(self, nid: int, n: int) -> None:
        node = self._nodes.get(nid)
        if node is None or nid == _ROOT:
            return
        node.nlookup -= n
        if node.nlookup <= 0:
            self._drop(node)

    def _keep(self, node: _Node | None, path: str) -> None:
        """``node``'s name is about to go: if the kernel holds it, keep what serves it
        afterwards (a read-only handle for a regular file, the attributes otherwise)."""
        if node is None or node.nlookup <= 0 or node.keep is not None:
            return
        try:
            if node.fmt == _stat.S_IFREG:
                if self.ops._reads.get_nowait(path) is None:
                    # a lower file stays where it is (a whiteout only hides it): note where,
                    # and open it only if the kernel asks (an open costs as much as the
                    # unlink itself on a cold cache, and is almost never needed)
                    node.lower = self._lower_file(path)
                    if node.lower is not None:
                        return
                fh = self.ops.open(path, os.O_RDONLY)
                self.ops._files[fh].ino = node.ino
                node.keep = fh
            else:
                node.snap = self.ops.stat(path)
        except OSError:
            pass  # nothing to keep: the node answers ESTALE once its name is gone

    def _lower_file(self, path: str) -> tuple[str, int] | None:
        """The host path and inode number of the lower file ``path`` shows, when the engine
        can tell (a ``UnionFS``; not for upper or metacopy files)."""
        union = self.ops.union
        which, lowers = getattr(union, "which", None), getattr(union, "lowers", None)
        if which is None or lowers is None:
            return None
        try:
            prov = which(path)
            if prov.is_upper or prov.layer_index is None or prov.data_from is not None:
                return None
            host = lowers[prov.layer_index].host_path(path)
            ino = prov.entry.ino
        except (OSError, AttributeError, IndexError, TypeError, ValueError):
            return None
        return (host, ino) if host and ino else None

    def _keeper(self, node: _Node) -> int | None:
        """The handle that serves an orphan ``node`` (its lower file opened now if it was
        kept by path; ESTALE if that path no longer holds the same file)."""
        if node.keep is None and node.lower is not None:
            from .upper import HostFile

            host, ino = node.lower
            node.lower = None
            try:
                fd = os.open(host, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
            except OSError:
                raise OSError(errno.ESTALE, os.strerror(errno.ESTALE)) from None
            if os.fstat(fd).st_ino != ino:
                os.close(fd)
                raise OSError(errno.ESTALE, os.strerror(errno.ESTALE))
            fh = self.ops._add(HostFile(fd, readable=True, writable=False, name=host), "")
            self.ops._files[fh].ino = node.ino
            node.keep = fh
        return node.keep

    def _unkeep(self, node: _Node | None) -> None:
        """The change that would have removed ``node``'s name failed: close its keeper."""
        if node is not None and node.keep is not None and not node.orphan:
            keep, node.keep = node.keep, None
            self.ops.release(None, keep)
        if node is not None and not node.orphan:
            node.snap = node.lower = None

    def _orphan_stat(self, node: _Node, fh: int | None) -> os.stat_result:
        """The attributes of a node whose name is gone: its open handle's or keeper's host
        file under the node's inode number, with no link left."""
        for h in (fh, self._keeper(node)):
            if h is not None and h in self.ops._files:
                self.ops._files[h].ino = node.ino
                return self.ops.stat(None, h)
        if node.snap is not None:
            st = node.snap
            return os.stat_result((st.st_mode, st.st_ino, st.st_dev, 0, *tuple(st)[4:]),
                                  {"st_atime_ns": st.st_atime_ns, "st_mtime_ns": st.st_mtime_ns,
                                   "st_ctime_ns": st.st_ctime_ns, "st_blocks": st.st_blocks,
                                   "st_blksize": st.st_blksize, "st_rdev": st.st_rdev})
        raise OSError(errno.ESTALE, os.strerror(errno.ESTALE))

    # -- replies ----------------------------------------------------------------------------

    def _send(self, unique: int, body: bytes = b"", error: int = 0) -> bool:
        """Answer request ``unique`` (``error``: a positive errno). False when the kernel no
        longer waits for it (the request was interrupted, ENOENT): nothing was delivered."""
        n = len(body)
        try:
            if n < 65536:
                os.write(self.fd, _OUT.pack(16 + n, -error, unique) + body)
            else:  # (no copy of a large body)
                os.writev(self.fd, (_OUT.pack(16 + n, -error, unique), body))
        except FileNotFoundError:
            return False
        return True

    def _send_debug(self, unique: int, body: bytes = b"", error: int = 0) -> bool:
        """``_send``, with a line on stderr in the form libfuse's ``-d`` prints."""
        if error:
            print(f"   unique: {unique}, error: {-error} ({os.strerror(error)}), "
                  f"outsize: 16", file=sys.stderr, flush=True)
        else:
            print(f"   unique: {unique}, success, outsize: {16 + len(body)}",
                  file=sys.stderr, flush=True)
        return LowLevel._send(self, unique, body, error)

    def _attr(self, st: os.stat_result) -> bytes:
        """``st`` as a ``struct fuse_attr``: its fields taken as one tuple (the seconds are
        ``st``'s own, the nanoseconds what is left of the ``_ns`` times), which packs in a
        third of the time of naming each; ``_fields`` where options change what is shown
        or a time is not in that form."""
        if self._overrides:
            return _ATTR.pack(*self._fields(st))
        mode, ino, _dev, nlink, uid, gid, size, a_s, m_s, c_s = st
        a_n = st.st_atime_ns - a_s * 1_000_000_000
        m_n = st.st_mtime_ns - m_s * 1_000_000_000
        c_n = st.st_ctime_ns - c_s * 1_000_000_000
        if not (0 <= a_n < 1_000_000_000 and 0 <= m_n < 1_000_000_000
                and 0 <= c_n < 1_000_000_000):
            return _ATTR.pack(*self._fields(st))  # (seconds truncated, not floored)
        return _ATTR.pack(ino, size, st.st_blocks, a_s, m_s, c_s, a_n, m_n, c_n, mode, nlink,
                          uid, gid, st.st_rdev & 0xFFFFFFFF, st.st_blksize or 4096, 0)

    def _fields(self, st: os.stat_result) -> tuple:
        """``st`` as the fields of a ``struct fuse_attr`` (after ``uid=``, ``gid=``,
        ``umask=``, which show other owners and modes than the real ones)."""
        mode, uid, gid = st.st_mode, st.st_uid, st.st_gid
        if self._overrides:
            if self._uid is not None:
                uid = self._uid
            if self._gid is not None:
                gid = self._gid
            if self._umask is not None:
                mode = _stat.S_IFMT(mode) | (0o7777 & ~self._umask & mode)
        a_s, a_n = divmod(st.st_atime_ns, 1_000_000_000)
        m_s, m_n = divmod(st.st_mtime_ns, 1_000_000_000)
        c_s, c_n = divmod(st.st_ctime_ns, 1_000_000_000)
        return (st.st_ino, st.st_size, st.st_blocks or 0, a_s, m_s, c_s, a_n, m_n, c_n, mode,
                st.st_nlink, uid, gid, st.st_rdev & 0xFFFFFFFF, st.st_blksize or 4096, 0)

    def _entry(self, nid: int, st: os.stat_result) -> bytes:
        """A ``struct fuse_entry_out`` for node ``nid``."""
        return _ENTRY_HEAD.pack(nid, 0, self._ev, self._av, self._evn, self._avn) + \
            self._attr(st)

    def _reply_entry(self, unique: int, node: _Node, st: os.stat_result) -> None:
        node.nlookup += 1
        if not self._send(unique, self._entry(node.id, st)):
            self._forget(node.id, 1)  # the kernel never got it (request interrupted)

    def _reply_attr(self, unique: int, st: os.stat_result) -> None:
        self._send(unique, self._attr_head + self._attr(st))

    def _new_entry(self, unique: int, parent: int, name: str, path: str) -> None:
        st = self.ops.stat(path)
        self._reply_entry(unique, self._node_for(parent, name, path, st.st_ino, st.st_mode),
                          st)

    def _caller(self) -> tuple[int, int, int]:
        ctx = self._ctx
        if ctx is None:
            return os.geteuid(), os.getegid(), 0
        return ctx

    def _open_flags(self, path: str | None) -> int:
        if self.direct_io:
            return _FOPEN_DIRECT_IO | _FOPEN_NOFLUSH
        # no flush handler: nothing is buffered here, and without FLUSH a close costs no
        # round trip (the kernel keeps POSIX locks itself: no lock handlers either)
        if self.keep_cache and (path is None or self.ops.stable(path)):
            return _FOPEN_KEEP_CACHE | _FOPEN_NOFLUSH
        return _FOPEN_NOFLUSH

    # -- passthrough --------------------------------------------------------------------------

    def _mode(self, node: _Node, fh: int, flags: int, path: str | None, new: bool) -> tuple[int,
                                                                                             int]:
        """How handle ``fh`` of ``node`` is opened: (open flags, backing id). Passthrough
        where the node is already open so (all its opens must be), else for a write open of
        a file whose data is an upper file of one link (``new``: just created) when the node
        has no open in caching mode; otherwise caching mode. Records the handle either way."""
        if self.passthrough and node.cached == 0 and not self.direct_io:
            if node.backing == 0 and (new or flags & _ACCESS_MODES):
                node.backing = self._backing(fh, new)
            if node.backing:
                node.pt += 1
                node.passed = True
                self._handles[fh] = (node, True)
                return _FOPEN_PASSTHROUGH | _FOPEN_NOFLUSH, node.backing
        node.cached += 1
        self._handles[fh] = (node, False)
        flags_out = self._open_flags(path)
        if node.passed:
            # written in passthrough mode since: the kernel's own pages of it may be stale
            node.passed = False
            flags_out &= ~_FOPEN_KEEP_CACHE
        return flags_out, 0

    def _backing(self, fh: int, new: bool) -> int:
        """Register the host file behind ``fh`` as a passthrough backing file: its id, or 0
        where it is not one (a lower, metacopy or hard-linked file, a file system the
        kernel cannot stack on: then passthrough is off for good where the kernel refuses
        every file, as without CAP_SYS_ADMIN)."""
        o = self.ops._files.get(fh)
        if o is None or o.shared:
            return 0
        try:
            fd = o.file.fileno()
        except (OSError, ValueError, AttributeError):
            return 0
        if not new:
            # (a write open: the engine has copied the file up; its data is an upper file)
            st = os.fstat(fd)
            if st.st_nlink != 1 or not _stat.S_ISREG(st.st_mode):
                return 0
        try:
            return fcntl.ioctl(self.fd, _BACKING_OPEN, bytearray(struct.pack("<iIQ", fd, 0, 0)),
                               True)
        except OSError as e:
            if e.errno in (errno.EPERM, errno.ENOTTY, errno.EINVAL, errno.ELOOP):
                self.passthrough = False  # not for this daemon, or not on this upper dir
            return 0

    def _closed(self, fh: int) -> _Node | None:
        """Handle ``fh`` is released: its node's counts, and the backing id the last
        passthrough handle held."""
        got = self._handles.pop(fh, None)
        if got is None:
            return None
        node, passed = got
        if not passed:
            node.cached -= 1
            return node
        node.pt -= 1
        if node.pt == 0 and node.backing:
            backing, node.backing = node.backing, 0
            with contextlib.suppress(OSError):
                fcntl.ioctl(self.fd, _BACKING_CLOSE, bytearray(struct.pack("<I", backing)),
                            True)
            if node.fmt == _stat.S_IFREG and not node.orphan and self.ops._ino_of:
                # written behind the engine's back: another name of it must not show stale
                # attributes or pages (as FuseOperations.write does on each write)
                with contextlib.suppress(OSError):
                    path = self._path(node)
                    if path in self.ops._ino_of:
                        self.ops._changed(path)
        return node

    # -- handlers ---------------------------------------------------------------------------
    # each is called with the request's unique id, node id and buffer (the body starts at
    # 40) and replies exactly once, as its last step; an exception before that becomes the
    # error reply (see _serve)

    def _init(self, unique: int, nid: int, buf: bytearray) -> None:
        major, minor, readahead, flags, flags2 = _INIT_IN.unpack_from(buf, _IN_SIZE)
        if major != 7:
            self._send(unique, _INIT_OUT.pack(7, 45, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0))
            return  # the kernel retries with our major, or gives up
        if not flags & _INIT_EXT:
            flags2 = 0
        want = _WANT & flags
        if not self.plus:
            want &= ~(_DO_READDIRPLUS | _READDIRPLUS_AUTO)
        max_write, background, congestion, time_gran = _MAX_WRITE, 0, 0, 1
        if self._conn_opts:
            # libfuse's connection options (max_write=, max_readahead=, async_read, ...)
            c = _ConnInfo()
            c.proto_major, c.proto_minor, c.max_readahead = major, minor, readahead
            c.max_write, c.time_gran = max_write, time_gran
            c.capable = _lib_caps(flags)
            c.want = _lib_caps(want)
            _apply_conn_opts(self._conn_opts, ctypes.byref(c))
            want = (want & ~_SAME_CAPS & ~(_K_POSIX_ACL | _K_KILLPRIV)) | _kernel_caps(
                c.want & c.capable)
            max_write = max(4096, min(c.max_write, _MAX_WRITE))
            readahead = min(readahead, c.max_readahead)
            background, congestion = c.max_background, c.congestion_threshold
            time_gran = c.time_gran or 1
        flags2_out = 0
        if (self.want_passthrough and flags2 & _PASSTHROUGH and not want & _WRITEBACK_CACHE
                and os.geteuid() == 0):
            flags2_out |= _PASSTHROUGH
            self.passthrough = True
        # every directory changes only through this mount (no host volume below it): the
        # kernel may open directories without asking and keep their listings until they
        # change (an OPENDIR answered ENOSYS stops OPENDIR and RELEASEDIR for good, and the
        # kernel then caches listings as for FOPEN_KEEP_CACHE | FOPEN_CACHE_DIR); READDIR
        # comes without a handle, so listings are kept as numbered snapshots instead
        if (self.dir_cache and flags & _NO_OPENDIR_SUPPORT
                and getattr(self.ops.union, "route", None) is None):
            self.dir_noopen = True
        max_pages = (max_write + 4095) // 4096
        if self.debug:
            print(f"INIT: {major}.{minor}\nflags=0x{flags:08x} flags2=0x{flags2:08x}\n"
                  f"max_readahead=0x{readahead:08x}\n   INIT: 7.{min(minor, 45)}\n"
                  f"   flags=0x{want:08x} flags2=0x{flags2_out:08x}\n"
                  f"   max_write=0x{max_write:08x}", file=sys.stderr, flush=True)
        self._send(unique, _INIT_OUT.pack(7, min(minor, 45), readahead, want, background,
                                          congestion, max_write, time_gran, max_pages, 0,
                                          flags2_out, 1 if flags2_out & _PASSTHROUGH else 0, 0))
        self._connected = True
        on_ready, self.ops._on_ready = self.ops._on_ready, None
        if on_ready is not None:
            on_ready()

    def destroy(self) -> None:
        for node in list(self._nodes.values()):
            if node.keep is not None:
                node.keep = None
        self.ops.destroy("/")

    def _destroy(self, unique: int, nid: int, buf: bytearray) -> None:
        self._stop = True
        self._send(unique)

    def lookup(self, unique: int, parent: int, buf: bytearray) -> None:
        n = _name(buf, _IN_SIZE)
        node = self._nodes.get(parent)
        if node is None:
            raise OSError(errno.ESTALE, os.strerror(errno.ESTALE))
        head = node.path if node.gen == self._gen else self._path(node)
        path = ("/" if head == "/" else head + "/") + n
        st = self.ops.stat_child(head, n, path)
        if st is None:
            if self.negative_timeout > 0:
                # a negative entry (node 0), kept by the kernel for the negative timeout
                self._send(unique, self._negative)
            else:
                self._send(unique, error=errno.ENOENT)
            return
        self._reply_entry(unique, self._node_for(parent, n, path, st.st_ino, st.st_mode), st)

    def forget(self, unique: int, nid: int, buf: bytearray) -> None:
        self._forget(nid, _U64.unpack_from(buf, _IN_SIZE)[0])

    def batch_forget(self, unique: int, nid: int, buf: bytearray) -> None:
        count = _U32x2.unpack_from(buf, _IN_SIZE)[0]
        for i in range(count):
            node, n = struct.unpack_from("<QQ", buf, _IN_SIZE + 8 + 16 * i)
            self._forget(node, n)

    def getattr(self, unique: int, nid: int, buf: bytearray) -> None:
        node = self._nodes.get(nid)
        if node is None:
            raise OSError(errno.ESTALE, os.strerror(errno.ESTALE))
        if node.orphan:
            gflags, _dummy, fh = struct.unpack_from("<IIQ", buf, _IN_SIZE)
            st = self._orphan_stat(node, fh if gflags & _GETATTR_FH else None)
        else:
            st = self.ops.stat(node.path if node.gen == self._gen else self._path(node))
        self._reply_attr(unique, st)

    def setattr(self, unique: int, nid: int, buf: bytearray) -> None:
        (valid, _pad, fh, size, _owner, atime, mtime, _ctime, atimensec, mtimensec,
         _ctimensec, mode, _u4, uid, gid, _u5) = _SETATTR_IN.unpack_from(buf, _IN_SIZE)
        node = self._node(nid)
        ops = self.ops
        handle = fh if valid & _SET_FH else None
        if node.orphan:
            path = None
            handle = handle if handle is not None else self._keeper(node)
        else:
            path = self._path(node)
        if valid & _SET_MODE:
            ops.chmod(path, mode, handle)
        if valid & (_SET_UID | _SET_GID):
            ops.chown(path, uid if valid & _SET_UID else -1, gid if valid & _SET_GID else -1,
                      handle)
        if valid & _SET_SIZE:
            ops.truncate(path, size, handle)
        if valid & (_SET_ATIME | _SET_MTIME | _SET_ATIME_NOW | _SET_MTIME_NOW):
            def one(now: int, given: int, sec: int, nsec: int) -> int | str | None:
                if valid & now:
                    return "now"
                if valid & given:
                    return sec * 1_000_000_000 + nsec
                return None
            ops.utimens(path, (one(_SET_ATIME_NOW, _SET_ATIME, _signed(atime), atimensec),
                               one(_SET_MTIME_NOW, _SET_MTIME, _signed(mtime), mtimensec)),
                        handle)
        st = self._orphan_stat(node, handle) if node.orphan else ops.stat(path)
        self._reply_attr(unique, st)

    def readlink(self, unique: int, nid: int, buf: bytearray) -> None:
        target = self.ops.readlink(self._path(self._node(nid)))
        self._send(unique, target.encode("utf-8", "surrogateescape"))

    def mknod(self, unique: int, parent: int, buf: bytearray) -> None:
        mode, rdev = _U32x2.unpack_from(buf, _IN_SIZE)
        self._make(unique, parent, _name(buf, _IN_SIZE + 16), self.ops.mknod, mode, rdev)

    def mkdir(self, unique: int, parent: int, buf: bytearray) -> None:
        mode = _U32x2.unpack_from(buf, _IN_SIZE)[0]
        self._make(unique, parent, _name(buf, _IN_SIZE + 8), self.ops.mkdir, mode)

    def symlink(self, unique: int, parent: int, buf: bytearray) -> None:
        end = buf.index(0, _IN_SIZE)
        n = buf[_IN_SIZE:end].decode("utf-8", "surrogateescape")
        self._make(unique, parent, n, self.ops.symlink, _name(buf, end + 1))

    def _make(self, unique: int, parent: int, n: str, make: Any, *args: Any) -> None:
        """MKNOD/MKDIR/SYMLINK: ``make(path, *args)`` as the request's caller (see
        ``_caller``), then the new entry's reply."""
        path = self._child(parent, n)
        make(path, *args)
        self._new_entry(unique, parent, n, path)

    def link(self, unique: int, parent: int, buf: bytearray) -> None:
        old = _U64.unpack_from(buf, _IN_SIZE)[0]
        n = _name(buf, _IN_SIZE + 8)
        path = self._child(parent, n)
        self.ops.link(path, self._path(self._node(old)))
        self._new_entry(unique, parent, n, path)

    def unlink(self, unique: int, parent: int, buf: bytearray) -> None:
        self._remove(unique, parent, _name(buf, _IN_SIZE), self.ops.unlink)

    def rmdir(self, unique: int, parent: int, buf: bytearray) -> None:
        self._remove(unique, parent, _name(buf, _IN_SIZE), self.ops.rmdir)

    def _remove(self, unique: int, parent: int, n: str, remove: Any) -> None:
        """UNLINK/RMDIR: a node the kernel still holds keeps its file (REL-1) before the
        name goes, and is detached from the tree once it is gone."""
        path = self._child(parent, n)
        victim = self._children.get((parent, n))
        self._keep(victim, path)
        try:
            remove(path)
        except BaseException:
            self._unkeep(victim)
            raise
        if victim is not None:
            self._detach(victim)
        self._send(unique)

    def rename(self, unique: int, parent: int, buf: bytearray) -> None:
        newparent = _U64.unpack_from(buf, _IN_SIZE)[0]
        self._rename(unique, parent, newparent, 0, buf, _IN_SIZE + 8)

    def rename2(self, unique: int, parent: int, buf: bytearray) -> None:
        newparent, flags = struct.unpack_from("<QI", buf, _IN_SIZE)
        self._rename(unique, parent, newparent, flags, buf, _IN_SIZE + 16)

    def _rename(self, unique: int, parent: int, newparent: int, flags: int, buf: bytearray,
                at: int) -> None:
        from .fuse import RENAME_EXCHANGE

        end = buf.index(0, at)
        n = buf[at:end].decode("utf-8", "surrogateescape")
        nn = _name(buf, end + 1)
        old, new = self._child(parent, n), self._child(newparent, nn)
        exchange = bool(flags & RENAME_EXCHANGE)
        moving = self._children.get((parent, n))
        victim = self._children.get((newparent, nn))
        if victim is moving:
            victim = None
        if not exchange:
            self._keep(victim, new)
        try:
            self.ops.rename(old, new, flags)
        except BaseException:
            self._unkeep(victim)
            raise
        if (not exchange and victim is not None and moving is not None
                and victim.ino == moving.ino and self._exists(old)):
            # two names of one file: rename(2) does nothing
            self._unkeep(victim)
            self._send(unique)
            return
        if victim is not None and not exchange:
            self._detach(victim)
        if moving is not None:
            del self._children[(parent, n)]
        if exchange and victim is not None:
            del self._children[(newparent, nn)]
            self._place(victim, parent, n, old)
        if moving is not None:
            self._place(moving, newparent, nn, new)
        self._send(unique)

    def _exists(self, path: str) -> bool:
        try:
            self.ops.stat(path)
        except OSError:
            return False
        return True

    def _place(self, node: _Node, parent: int, name: str, path: str) -> None:
        node.parent, node.name = parent, name
        self._children[(parent, name)] = node
        if node.fmt == _stat.S_IFDIR:
            self._gen += 1  # every path below it changed
            self._nodes[_ROOT].gen = self._gen
        else:
            node.path, node.gen = path, self._gen

    def open(self, unique: int, nid: int, buf: bytearray) -> None:
        node = self._node(nid)
        flags = _U32x2.unpack_from(buf, _IN_SIZE)[0]
        if node.orphan:
            keeper = self._keeper(node)
            keep = self.ops._files.get(keeper) if keeper is not None else None
            if keep is None:
                raise OSError(errno.ESTALE, os.strerror(errno.ESTALE))
            fh = self.ops.reopen(keep, keep.path, flags)
            path = None
        else:
            path = self._path(node)
            fh = self.ops.open(path, flags)
        try:
            out, backing = self._mode(node, fh, flags, path, False)
        except BaseException:
            self.ops.release(None, fh)
            raise
        if not self._send(unique, _OPEN_OUT.pack(fh, out, backing)):
            self._closed(fh)
            self.ops.release(None, fh)

    def create(self, unique: int, parent: int, buf: bytearray) -> None:
        flags, mode, _umask = _CREATE_IN.unpack_from(buf, _IN_SIZE)
        n = _name(buf, _IN_SIZE + 16)
        path = self._child(parent, n)
        # the new file and its attributes, without a lookup of the path
        fh, st = self.ops.create_stat(path, mode, flags)
        node = self._node_for(parent, n, path, st.st_ino, st.st_mode)
        try:
            out, backing = self._mode(node, fh, flags, path, True)
        except BaseException:
            self.ops.release(None, fh)
            raise
        node.nlookup += 1
        node.nocap = self._capgen  # a new file has no security.capability
        if not self._send(unique, self._entry(node.id, st) + _OPEN_OUT.pack(fh, out, backing)):
            self._forget(node.id, 1)
            self._closed(fh)
            self.ops.release(None, fh)

    def read(self, unique: int, nid: int, buf: bytearray) -> None:
        fh, off, size = _RW_IN.unpack_from(buf, _IN_SIZE)
        self._send(unique, self.ops._file(fh).pread(size, off))

    def write(self, unique: int, nid: int, buf: bytearray) -> None:
        fh, off, size = _RW_IN.unpack_from(buf, _IN_SIZE)
        ops = self.ops
        path = None
        if ops._ino_of:
            node = self._nodes.get(nid)
            if node is not None and not node.orphan:
                path = self._path(node)
        n = ops.write(path, bytes(buf[80:80 + size]), off, fh)
        self._send(unique, _U32x2.pack(n, 0))

    def release(self, unique: int, nid: int, buf: bytearray) -> None:
        fh = _U64.unpack_from(buf, _IN_SIZE)[0]
        self._closed(fh)
        self.ops.release(None, fh)
        self._send(unique)

    def fsync(self, unique: int, nid: int, buf: bytearray) -> None:
        fh, fsync_flags = struct.unpack_from("<QI", buf, _IN_SIZE)
        self.ops.fsync(None, fsync_flags & 1, fh)
        self._send(unique)

    def opendir(self, unique: int, nid: int, buf: bytearray) -> None:
        if self.dir_noopen:
            self._send(unique, error=errno.ENOSYS)  # once: the kernel opens directories itself
            return
        path = self._path(self._node(nid))
        fh = self.ops.opendir(path)
        out = 0
        if self.dir_cache and self.ops.stable(path):
            # the kernel keeps the listing across opens until the directory changes
            out = _FOPEN_CACHE_DIR | _FOPEN_KEEP_CACHE
        if not self._send(unique, _OPEN_OUT.pack(fh, out, 0)):
            self.ops.releasedir(None, fh)

    def _dots(self, node: _Node) -> tuple[int, int]:
        """The inode numbers of ``.`` and ``..`` (readdir(3) skips an entry numbered 0)."""
        parent = self._nodes.get(node.parent)
        return node.ino, (parent.ino if parent is not None else node.ino)

    def _snap(self, nid: int, items: list[tuple[bytes, int, int]],
              plus: list[tuple[bytes, Any]] | None) -> _Snap:
        """Keep a listing snapshot of node ``nid`` for readers in mid-stream."""
        self._snap_seq += 1
        if len(self._snaps) >= _SNAPS_MAX:
            del self._snaps[next(iter(self._snaps))]  # the oldest
        snap = _Snap(self._snap_seq, nid, items, plus)
        self._snaps[snap.seq] = snap
        return snap

    def _snap_at(self, nid: int, off: int) -> _Snap | None:
        """The snapshot a reader at cookie ``off`` of node ``nid`` is in, if still kept."""
        snap = self._snaps.get(off >> _SNAP_SHIFT) if off else None
        return snap if snap is not None and snap.nid == nid else None

    def _blob(self, node: _Node, snap: _Snap) -> tuple[bytes, list[int]]:
        """``snap`` as packed ``struct fuse_dirent`` records (``.``, ``..``, then the
        entries; record i carries the cookie ``snapshot << 32 | i + 1``) and where each
        record ends."""
        if snap.blob is not None:
            return snap.blob, snap.ends  # type: ignore[return-value]
        parts: list[bytes] = []
        ends: list[int] = []
        pos = 0
        here, up = self._dots(node)
        items = [(b".", _stat.S_IFDIR, here), (b"..", _stat.S_IFDIR, up), *snap.items]
        high = snap.seq << _SNAP_SHIFT
        for i, (name, mode, ino) in enumerate(items):
            rec = _DIRENT.pack(ino, high | (i + 1), len(name), _stat.S_IFMT(mode) >> 12) + name
            rec += b"\0" * (-len(rec) % 8)
            parts.append(rec)
            pos += len(rec)
            ends.append(pos)
        snap.blob = b"".join(parts)
        snap.ends = ends
        return snap.blob, ends

    def _fresh_snap(self, node: _Node, path: str, fh: int) -> _Snap:
        """A snapshot of the listing as it is now (the same one while it does not change)."""
        entries = self.ops.listing(path, fh)
        cached = self._packed.get(path)
        if cached is not None and cached[0] is entries and cached[1].seq in self._snaps:
            return cached[1]
        snap = self._snap(node.id, [(name, c.st_mode, c.st_ino) for name, c in entries],
                          None)
        if len(self._packed) >= 1024:
            self._packed.clear()
        self._packed[path] = (entries, snap)
        return snap

    def readdir(self, unique: int, nid: int, buf: bytearray) -> None:
        fh, off, size = _RW_IN.unpack_from(buf, _IN_SIZE)
        node = self._node(nid)
        if node.orphan:  # a removed directory lists nothing (not even . and ..)
            self._send(unique)
            return
        # from the start, or a snapshot no longer kept: the listing as it is now
        snap = self._snap_at(nid, off) or self._fresh_snap(node, self._path(node), fh)
        blob, ends = self._blob(node, snap)
        idx = off & _SNAP_MASK
        start = ends[idx - 1] if 0 < idx <= len(ends) else (0 if idx == 0 else ends[-1])
        stop = bisect.bisect_right(ends, start + size)
        end = ends[stop - 1] if stop > 0 else 0
        end = max(end, start)
        self._send(unique, blob[start:end])

    def readdirplus(self, unique: int, nid: int, buf: bytearray) -> None:
        fh, off, size = _RW_IN.unpack_from(buf, _IN_SIZE)
        node = self._node(nid)
        if node.orphan:  # a removed directory lists nothing (not even . and ..)
            self._send(unique)
            return
        path = self._path(node)
        snap = self._snap_at(nid, off)
        if snap is None:  # from the start, or a snapshot no longer kept: as it is now
            plus = self.ops.listing_plus(path, fh, fresh=True, native=True)
            snap = self._snap(nid, [(name, c.st_mode, c.st_ino) for name, c in plus], plus)
        elif snap.plus is None:
            # a reader that began with READDIR goes on with attributes: those of the names
            # of its snapshot still there now (a name gone since is skipped)
            now = dict(self.ops.listing_plus(path, fh, fresh=True, native=True))
            snap.plus = [(name, now.get(name)) for name, _mode, _ino in snap.items]
        entries = snap.plus
        high = snap.seq << _SNAP_SHIFT
        parts: list[bytes] = []
        pos = 0
        counted: list[_Node] = []
        i = off & _SNAP_MASK
        prefix = "/" if path == "/" else path + "/"
        dots = self._dots(node)
        while i < len(entries) + 2:
            if i < 2:
                name = b"." if i == 0 else b".."
                # node 0: no entry for the kernel to keep, just the name and inode number
                head = _ENTRY_OUT.pack(0, 0, 0, 0, 0, 0, dots[i], 0, 0, 0, 0, 0, 0, 0, 0,
                                       _stat.S_IFDIR, 0, 0, 0, 0, 0, 0)
                ino, mode, child = dots[i], _stat.S_IFDIR, None
            else:
                name, c = entries[i - 2]
                if c is None:
                    i += 1
                    continue
                n = name.decode("utf-8", "surrogateescape")
                child = self._node_for(nid, n, prefix + n, c.st_ino, c.st_mode)
                head = self._entry(child.id, c)
                ino, mode = c.st_ino, c.st_mode
            rec = head + _DIRENT.pack(ino, high | (i + 1), len(name),
                                      _stat.S_IFMT(mode) >> 12) + name
            rec += b"\0" * (-len(rec) % 8)
            if len(rec) > size - pos:
                if child is not None and child.nlookup <= 0:
                    self._drop(child)
                break
            parts.append(rec)
            pos += len(rec)
            if child is not None:
                child.nlookup += 1
                counted.append(child)
            i += 1
        if not self._send(unique, b"".join(parts)):
            for child in counted:
                self._forget(child.id, 1)

    def releasedir(self, unique: int, nid: int, buf: bytearray) -> None:
        self.ops.releasedir(None, _U64.unpack_from(buf, _IN_SIZE)[0])
        self._send(unique)

    def fsyncdir(self, unique: int, nid: int, buf: bytearray) -> None:
        fh, fsync_flags = struct.unpack_from("<QI", buf, _IN_SIZE)
        node = self._node(nid)
        if not node.orphan:
            self.ops.fsyncdir(self._path(node), fsync_flags & 1, fh)
        self._send(unique)

    def statfs(self, unique: int, nid: int, buf: bytearray) -> None:
        node = self._nodes.get(nid)
        path = "/" if node is None or node.orphan else self._path(node)
        sv = self.ops.statfs(path)
        self._send(unique, _STATFS_OUT.pack(sv["f_blocks"], sv["f_bfree"], sv["f_bavail"],
                                            sv["f_files"], sv["f_ffree"], sv["f_bsize"],
                                            sv["f_namemax"], sv["f_frsize"], 0))

    def getxattr(self, unique: int, nid: int, buf: bytearray) -> None:
        node = self._node(nid)
        if buf[_IN_SIZE + 8:_IN_SIZE + 28] == _CAPABILITY_Z and (
                node.orphan or node.nocap == self._capgen):
            self._send(unique, error=errno.ENODATA)
            return
        size = _U32x2.unpack_from(buf, _IN_SIZE)[0]
        key = _name(buf, _IN_SIZE + 8)
        if key == _CAPABILITY and (node.orphan or node.nocap == self._capgen):
            # asked before every write: answered from memory (only a setxattr or removexattr
            # of this attribute, anywhere, makes it ask the engine again)
            self._send(unique, error=errno.ENODATA)
            return
        try:
            value = self.ops.getxattr(self._path(node), key)
        except OSError as e:
            if key == _CAPABILITY and e.errno == errno.ENODATA:
                node.nocap = self._capgen
            raise
        self._reply_value(unique, value, size)

    def _reply_value(self, unique: int, value: bytes, size: int) -> None:
        if size == 0:
            self._send(unique, _U32x2.pack(len(value), 0))
        elif len(value) > size:
            self._send(unique, error=errno.ERANGE)
        else:
            self._send(unique, value)

    def setxattr(self, unique: int, nid: int, buf: bytearray) -> None:
        size, flags = _U32x2.unpack_from(buf, _IN_SIZE)
        end = buf.index(0, _IN_SIZE + 8)
        key = buf[_IN_SIZE + 8:end].decode("utf-8", "surrogateescape")
        self.ops.setxattr(self._path(self._node(nid)), key, bytes(buf[end + 1:end + 1 + size]),
                          flags)
        if key == _CAPABILITY:
            self._capgen += 1
        self._send(unique)

    def listxattr(self, unique: int, nid: int, buf: bytearray) -> None:
        size = _U32x2.unpack_from(buf, _IN_SIZE)[0]
        names = self.ops.listxattr(self._path(self._node(nid)))
        value = b"".join(n.encode("utf-8", "surrogateescape") + b"\0" for n in names)
        self._reply_value(unique, value, size)

    def removexattr(self, unique: int, nid: int, buf: bytearray) -> None:
        key = _name(buf, _IN_SIZE)
        self.ops.removexattr(self._path(self._node(nid)), key)
        if key == _CAPABILITY:
            self._capgen += 1
        self._send(unique)

    def access(self, unique: int, nid: int, buf: bytearray) -> None:
        mask = _U32x2.unpack_from(buf, _IN_SIZE)[0]
        node = self._node(nid)
        if not node.orphan:
            self.ops.access(self._path(node), mask)
        self._send(unique)

    def _ioctl(self, unique: int, nid: int, buf: bytearray) -> None:
        # no ioctl of its own: what a regular file on a disk answers to an unknown one
        self._send(unique, error=errno.ENOTTY)

    def _interrupt(self, unique: int, nid: int, buf: bytearray) -> None:
        pass  # each request is answered in turn; the one interrupted is answered too

    # -- the session ------------------------------------------------------------------------

    def _make_table(self) -> list[Any]:
        """Opcode -> handler; None: answered ENOSYS (FLUSH, locks, POLL, FALLOCATE, LSEEK,
        COPY_FILE_RANGE, ...: the kernel then does without, or does it itself)."""
        table: list[Any] = [None] * 64
        for op, fn in ((_INIT, self._init), (_DESTROY, self._destroy),
                       (_LOOKUP, self.lookup), (_FORGET, self.forget),
                       (_BATCH_FORGET, self.batch_forget), (_GETATTR, self.getattr),
                       (_SETATTR, self.setattr), (_READLINK, self.readlink),
                       (_MKNOD, self.mknod), (_MKDIR, self.mkdir), (_SYMLINK, self.symlink),
                       (_LINK, self.link), (_UNLINK, self.unlink), (_RMDIR, self.rmdir),
                       (_RENAME, self.rename), (_RENAME2, self.rename2), (_OPEN, self.open),
                       (_CREATE, self.create), (_READ, self.read), (_WRITE, self.write),
                       (_RELEASE, self.release), (_FSYNC, self.fsync),
                       (_OPENDIR, self.opendir), (_READDIR, self.readdir),
                       (_RELEASEDIR, self.releasedir), (_FSYNCDIR, self.fsyncdir),
                       (_STATFS, self.statfs), (_GETXATTR, self.getxattr),
                       (_SETXATTR, self.setxattr), (_LISTXATTR, self.listxattr),
                       (_REMOVEXATTR, self.removexattr), (_ACCESS, self.access),
                       (_IOCTL, self._ioctl), (_INTERRUPT, self._interrupt)):
            table[op] = fn
        table[_READDIRPLUS] = self.readdirplus if self.plus else None
        return table

    def _serve(self, main: bool = True) -> None:
        """Read requests and answer them until unmounted (ENODEV), DESTROY or a signal
        (``main``: the thread signals arrive in; another stops when the mount goes)."""
        fd, table, lock = self.fd, self._table, self._lock
        buf = bytearray(_BUFSIZE)
        bufs = [buf]
        readv, unpack = os.readv, _IN.unpack_from
        send_err = self._send
        debug = self.debug
        spin = self.spin if main and not self.threaded else 0.0
        if spin:
            # wait for the next request by asking again for a moment before sleeping in
            # poll(2): a sleeping daemon is woken by the kernel, and on a virtual machine
            # that wake-up (of an idle virtual CPU) can cost more than the request itself.
            # Only while requests come close together (``busy``: the last one came within
            # the window): a request after a pause is waited for in poll(2) at once, so an
            # idle or slow caller costs no spinning
            os.set_blocking(fd, False)
            poller = select.poll()
            poller.register(fd, select.POLLIN)
            clock, yield_ = time.perf_counter, os.sched_yield
            busy = True
        while not self._stop:
            try:
                if main:
                    self._reading = True
                if not spin:
                    readv(fd, bufs)
                else:
                    start = clock()
                    give_up = start + spin if busy else start
                    while True:
                        try:
                            readv(fd, bufs)
                            break
                        except BlockingIOError:
                            if clock() < give_up:
                                yield_()  # (another task on this CPU goes first)
                            else:
                                poller.poll()
                    busy = clock() - start < spin
                if main:
                    self._reading = False
            except _Stop:
                return
            except OSError as e:
                if main:
                    self._reading = False
                if e.errno in (errno.ENODEV, errno.EBADF):  # unmounted
                    self._stop = True
                    return
                if e.errno in (errno.EINTR, errno.EAGAIN, errno.ENOENT):
                    continue  # (ENOENT: the request was interrupted before we read it)
                raise
            length, op, unique, nid, uid, gid, pid = unpack(buf)
            if debug:
                print(f"unique: {unique}, opcode: {_OPNAMES.get(op, '?')} ({op}), nodeid: "
                      f"{nid}, insize: {length}, pid: {pid}", file=sys.stderr, flush=True)
            fn = table[op] if op < 64 else None
            if fn is None:
                send_err(unique, error=errno.ENOSYS)
                continue
            try:
                if lock is None:
                    self._ctx = (uid, gid, pid)
                    fn(unique, nid, buf)
                else:
                    with lock:
                        self._ctx = (uid, gid, pid)
                        fn(unique, nid, buf)
            except OSError as e:
                if op not in _NO_REPLY:
                    with contextlib.suppress(OSError):  # (the connection may be gone)
                        send_err(unique, error=e.errno or errno.EIO)
            except Exception:
                traceback.print_exc(file=sys.stderr)
                if op not in _NO_REPLY:
                    with contextlib.suppress(OSError):
                        send_err(unique, error=errno.EIO)
            finally:
                self._ctx = None

    def _signalled(self, signum: int, frame: Any) -> None:
        self._stop = True
        if self._reading:
            raise _Stop

    def serve(self, mountpoint: str, options: list[str], threaded: bool) -> None:
        """Mount at ``mountpoint`` with libfuse ``options`` and serve until unmounted or
        signalled. Raises ``MountError`` when libfuse refuses the options or the mount."""
        argv = [b"unionfs"] + [a.encode("utf-8", "surrogateescape") for a in options]
        arr = (ctypes.c_char_p * (len(argv) + 1))(*argv, None)
        args = _Args(len(argv), arr, 0)
        ops = _NoOps()
        try:
            self._conn_opts = _parse_conn_opts(ctypes.byref(args))
            if not self._conn_opts:
                raise MountError(f"libfuse could not mount {mountpoint}: it refused the "
                                 "options (its message is above)")
            se = _session_new(ctypes.byref(args), ctypes.byref(ops), ctypes.sizeof(ops), None)
        finally:
            _opt_free_args(ctypes.byref(args))
        if not se:
            raise MountError(f"libfuse could not mount {mountpoint}: it refused the options "
                             "(its message is above)")
        if self.debug:
            self._send = self._send_debug  # type: ignore[method-assign]
        saved = {sig: signal.signal(sig, self._signalled)
                 for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)}
        try:
            if _session_mount(se, os.fsencode(mountpoint)) != 0:
                raise MountError(f"libfuse could not mount {mountpoint}")
            self.fd = _session_fd(se)
            try:
                workers = []
                if threaded:
                    for i in range(3):
                        t = threading.Thread(target=self._serve, args=(False,),
                                             name=f"unionfs-fuse-{i}", daemon=True)
                        t.start()
                        workers.append(t)
                self._serve()
            finally:
                self._stop = True
                _session_unmount(se)  # (closes the descriptor: the workers see it go)
                self.fd = -1
                if self._connected:
                    self.destroy()
        finally:
            for sig, handler in saved.items():
                with contextlib.suppress(TypeError, ValueError):
                    signal.signal(sig, handler)
            _session_destroy(se)


def _signed(value: int) -> int:
    """A ``u64`` time of the protocol as the signed seconds it stands for."""
    return value - (1 << 64) if value >= 1 << 63 else value


def _lib_caps(kernel: int) -> int:
    """Kernel INIT flags as libfuse's ``FUSE_CAP_*`` bits (for its connection options)."""
    return _swap_caps(kernel, (_K_POSIX_ACL, _LIB_POSIX_ACL), (_K_KILLPRIV, _LIB_KILLPRIV))


def _kernel_caps(lib: int) -> int:
    """libfuse's ``FUSE_CAP_*`` bits as kernel INIT flags."""
    return _swap_caps(lib, (_LIB_POSIX_ACL, _K_POSIX_ACL), (_LIB_KILLPRIV, _K_KILLPRIV))


def _swap_caps(bits: int, *moves: tuple[int, int]) -> int:
    """``bits`` with the bits both numberings share, and each ``(from, to)`` moved."""
    out = bits & _SAME_CAPS
    for frm, to in moves:
        if bits & frm:
            out |= to
    return out


def _option_args(kwargs: dict[str, str | bool], debug: bool) -> list[str]:
    """libfuse's command line for ``kwargs`` (mount and connection options only: those of
    the high-level API are implemented by ``LowLevel``)."""
    parts = []
    for key, value in kwargs.items():
        if key in _OWN_OPTIONS or key == "debug" or value is False:
            continue
        text = key if value is True else f"{key}={value}"
        parts.append(text.replace("\\", "\\\\").replace(",", "\\,"))
    return ["-o", ",".join(parts)] if parts else []


def run_lowlevel(ops: FuseOperations, mountpoint: str, opts: MountOptions | None,
                 kwargs: dict[str, str | bool], *, debug: bool = False,
                 threaded: bool = False) -> None:
    """Serve ``ops`` at ``mountpoint`` until unmounted or until SIGTERM/SIGINT/SIGHUP (the
    mount is removed before this returns). Raises ``MountError`` when libfuse refuses the
    options or the mount point."""
    ll = LowLevel(ops, opts, threaded=threaded, debug=debug or bool(kwargs.get("debug")))
    ll.serve(mountpoint, _option_args(kwargs, debug), threaded)


__all__ = ["LowLevel", "run_lowlevel"]
