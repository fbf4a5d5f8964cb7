"""The low-level libfuse 3 adapter: a node table of its own over ``FuseOperations``.

libfuse's high-level API names every request by path and forgets a node's name the moment
a rename replaces it, so an ``OPEN`` of that node (the kernel looked the name up just
before) fails with ESTALE inside libfuse (REL-1, docs/reliability.md). Here the adapter
talks to the kernel through libfuse's low-level API (``fuse_session_*``, ``fuse_reply_*``)
and keeps the table itself: node id -> node (parent, name, lookup count, the engine's inode
number). The filesystem logic stays in ``FuseOperations`` (``unionfs.fuse``): every request
becomes one call of its path-based methods with the node's path.

What the table adds:

- a node whose name is replaced by rename(2) or removed by unlink(2) while the kernel holds a
  lookup on it stays usable, as on kernel overlayfs: before the name goes, a regular file is
  opened read-only (a "keeper" handle of ``FuseOperations``), and later ``OPEN``/``GETATTR``
  of the node are served from it (an upper file is unlinked from the upper dir at once, as
  always; only its open descriptor lives on, until the kernel's ``FORGET``);
- ``st_ino`` is the engine's inode number (what ``use_ino`` gave), node ids are never reused;
- open replies set ``keep_cache`` (page cache kept across opens), ``noflush`` (no FLUSH
  round trip on close: nothing is buffered here) and, on directories, ``cache_readdir``;
- directories are opened without a round trip (``FUSE_NO_OPENDIR_SUPPORT``) where every
  directory changes only through the mount: READDIR then carries no handle, and a reader's
  cookies name the listing snapshot it began in (``snapshot << 32 | record``), so removals
  and additions between its reads neither repeat nor skip an entry;
- ``security.capability`` misses are remembered per node (the kernel asks before writes).

Threads: ``threaded`` runs libfuse's multi-threaded loop; the handlers then take one lock
(the Python state is not thread-safe; the GIL serialises the Python work anyway).
"""

from __future__ import annotations

import bisect
import contextlib
import ctypes
import errno
import os
import signal
import stat as _stat
import struct
import sys
import threading
import traceback
from collections.abc import Iterable
from typing import Any

from .fuse import (  # its C types
    _BUF_FD_SEEK,
    _BUF_IS_FD,
    FuseOperations,
    _BufVec,
    _Notifier,
    mfusepy,
)
from .mount import DEFAULT_TIMEOUT, MountError, MountOptions

_lib = ctypes.CDLL("libfuse3.so.3")

# -- C types (libfuse 3.14: fuse_lowlevel.h, fuse_common.h; glibc x86-64 struct stat) -----
_c_stat = mfusepy.c_stat
_fi_p = ctypes.POINTER(mfusepy.fuse_file_info)
_req = ctypes.c_void_p
_ino = ctypes.c_uint64


class _EntryParam(ctypes.Structure):
    _fields_ = (("ino", ctypes.c_uint64), ("generation", ctypes.c_uint64), ("attr", _c_stat),
                ("attr_timeout", ctypes.c_double), ("entry_timeout", ctypes.c_double))


class _Ctx(ctypes.Structure):
    _fields_ = (("uid", ctypes.c_uint32), ("gid", ctypes.c_uint32), ("pid", ctypes.c_int32),
                ("umask", ctypes.c_uint32))


class _Forget(ctypes.Structure):
    _fields_ = (("ino", ctypes.c_uint64), ("nlookup", ctypes.c_uint64))


class _Args(ctypes.Structure):
    _fields_ = (("argc", ctypes.c_int), ("argv", ctypes.POINTER(ctypes.c_char_p)),
                ("allocated", ctypes.c_int))


class _ConnInfo(ctypes.Structure):
    _fields_ = (("proto_major", ctypes.c_uint), ("proto_minor", ctypes.c_uint),
                ("max_write", ctypes.c_uint), ("max_read", ctypes.c_uint),
                ("max_readahead", ctypes.c_uint), ("capable", ctypes.c_uint),
                ("want", ctypes.c_uint), ("max_background", ctypes.c_uint),
                ("congestion_threshold", ctypes.c_uint), ("time_gran", ctypes.c_uint),
                ("reserved", ctypes.c_uint * 22))


_CF = ctypes.CFUNCTYPE
_SLOTS: tuple[tuple[str, Any], ...] = (
    ("init", _CF(None, ctypes.c_void_p, ctypes.POINTER(_ConnInfo))),
    ("destroy", _CF(None, ctypes.c_void_p)),
    ("lookup", _CF(None, _req, _ino, ctypes.c_char_p)),
    ("forget", _CF(None, _req, _ino, ctypes.c_uint64)),
    ("getattr", _CF(None, _req, _ino, _fi_p)),
    ("setattr", _CF(None, _req, _ino, ctypes.POINTER(_c_stat), ctypes.c_int, _fi_p)),
    ("readlink", _CF(None, _req, _ino)),
    ("mknod", _CF(None, _req, _ino, ctypes.c_char_p, ctypes.c_uint32, ctypes.c_uint64)),
    ("mkdir", _CF(None, _req, _ino, ctypes.c_char_p, ctypes.c_uint32)),
    ("unlink", _CF(None, _req, _ino, ctypes.c_char_p)),
    ("rmdir", _CF(None, _req, _ino, ctypes.c_char_p)),
    ("symlink", _CF(None, _req, ctypes.c_char_p, _ino, ctypes.c_char_p)),
    ("rename", _CF(None, _req, _ino, ctypes.c_char_p, _ino, ctypes.c_char_p, ctypes.c_uint)),
    ("link", _CF(None, _req, _ino, _ino, ctypes.c_char_p)),
    ("open", _CF(None, _req, _ino, _fi_p)),
    ("read", _CF(None, _req, _ino, ctypes.c_size_t, ctypes.c_int64, _fi_p)),
    ("write", _CF(None, _req, _ino, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int64, _fi_p)),
    ("flush", None),
    ("release", _CF(None, _req, _ino, _fi_p)),
    ("fsync", _CF(None, _req, _ino, ctypes.c_int, _fi_p)),
    ("opendir", _CF(None, _req, _ino, _fi_p)),
    ("readdir", _CF(None, _req, _ino, ctypes.c_size_t, ctypes.c_int64, _fi_p)),
    ("releasedir", _CF(None, _req, _ino, _fi_p)),
    ("fsyncdir", _CF(None, _req, _ino, ctypes.c_int, _fi_p)),
    ("statfs", _CF(None, _req, _ino)),
    ("setxattr", _CF(None, _req, _ino, ctypes.c_char_p, ctypes.c_void_p, ctypes.c_size_t,
                     ctypes.c_int)),
    ("getxattr", _CF(None, _req, _ino, ctypes.c_char_p, ctypes.c_size_t)),
    ("listxattr", _CF(None, _req, _ino, ctypes.c_size_t)),
    ("removexattr", _CF(None, _req, _ino, ctypes.c_char_p)),
    ("access", _CF(None, _req, _ino, ctypes.c_int)),
    ("create", _CF(None, _req, _ino, ctypes.c_char_p, ctypes.c_uint32, _fi_p)),
    ("getlk", None), ("setlk", None), ("bmap", None), ("ioctl", None), ("poll", None),
    ("write_buf", None), ("retrieve_reply", None),
    ("forget_multi", _CF(None, _req, ctypes.c_size_t, ctypes.POINTER(_Forget))),
    ("flock", None), ("fallocate", None),
    ("readdirplus", _CF(None, _req, _ino, ctypes.c_size_t, ctypes.c_int64, _fi_p)),
    ("copy_file_range", None), ("lseek", None),
)


class _LowLevelOps(ctypes.Structure):
    _fields_ = tuple((name, ctypes.c_void_p) for name, _ in _SLOTS)


def _fn(name: str, restype: Any, *argtypes: Any) -> Any:
    f = getattr(_lib, name)
    f.restype, f.argtypes = restype, list(argtypes)
    return f


_vp, _int, _sz = ctypes.c_void_p, ctypes.c_int, ctypes.c_size_t
_session_new = _fn("fuse_session_new", _vp, ctypes.POINTER(_Args), ctypes.POINTER(_LowLevelOps),
                   _sz, _vp)
_session_mount = _fn("fuse_session_mount", _int, _vp, ctypes.c_char_p)
_session_loop = _fn("fuse_session_loop", _int, _vp)
_session_loop_mt = _fn("fuse_session_loop_mt_31", _int, _vp, _int)
_session_unmount = _fn("fuse_session_unmount", None, _vp)
_session_destroy = _fn("fuse_session_destroy", None, _vp)
_set_signal_handlers = _fn("fuse_set_signal_handlers", _int, _vp)
_remove_signal_handlers = _fn("fuse_remove_signal_handlers", None, _vp)
_opt_free_args = _fn("fuse_opt_free_args", None, ctypes.POINTER(_Args))
_parse_conn_opts = _fn("fuse_parse_conn_info_opts", _vp, ctypes.POINTER(_Args))
_apply_conn_opts = _fn("fuse_apply_conn_info_opts", None, _vp, ctypes.POINTER(_ConnInfo))
_reply_err = _fn("fuse_reply_err", _int, _req, _int)
_reply_none = _fn("fuse_reply_none", None, _req)
# entries and attributes are packed by _EntryBuf into one buffer: passed by address
_reply_entry = _fn("fuse_reply_entry", _int, _req, _vp)
_reply_create = _fn("fuse_reply_create", _int, _req, _vp, _fi_p)
_reply_attr = _fn("fuse_reply_attr", _int, _req, _vp, ctypes.c_double)
_reply_readlink = _fn("fuse_reply_readlink", _int, _req, ctypes.c_char_p)
_reply_open = _fn("fuse_reply_open", _int, _req, _fi_p)
_reply_write = _fn("fuse_reply_write", _int, _req, _sz)
_reply_buf = _fn("fuse_reply_buf", _int, _req, _vp, _sz)
_reply_data = _fn("fuse_reply_data", _int, _req, ctypes.POINTER(_BufVec), _int)
_reply_statfs = _fn("fuse_reply_statfs", _int, _req, ctypes.POINTER(mfusepy.c_statvfs))
_reply_xattr = _fn("fuse_reply_xattr", _int, _req, _sz)
_add_direntry_plus = _fn("fuse_add_direntry_plus", _sz, _req, _vp, _sz, ctypes.c_char_p,
                         ctypes.POINTER(_EntryParam), ctypes.c_int64)
_req_ctx = _fn("fuse_req_ctx", ctypes.POINTER(_Ctx), _req)
_notify_inval_inode = _fn("fuse_lowlevel_notify_inval_inode", _int, _vp, _ino, ctypes.c_int64,
                          ctypes.c_int64)

# fuse_lowlevel.h / fuse_common.h constants
_SET_MODE, _SET_UID, _SET_GID, _SET_SIZE = 1 << 0, 1 << 1, 1 << 2, 1 << 3
_SET_ATIME, _SET_MTIME, _SET_ATIME_NOW, _SET_MTIME_NOW = 1 << 4, 1 << 5, 1 << 7, 1 << 8
_CAP_READDIRPLUS, _CAP_READDIRPLUS_AUTO = 1 << 13, 1 << 14
_CAP_HANDLE_KILLPRIV, _CAP_CACHE_SYMLINKS = 1 << 20, 1 << 23
_CAP_NO_OPENDIR_SUPPORT = 1 << 24
#: a directory listing's cookies: the snapshot's number in the high bits, the record's in the
#: low ones (a reader continues in the snapshot it began, whatever changed since)
_SNAP_SHIFT = 32
_SNAP_MASK = (1 << _SNAP_SHIFT) - 1
#: listing snapshots kept for readers in mid-stream
_SNAPS_MAX = 256
_CAPABILITY = "security.capability"
#: options of libfuse's high-level API that this adapter implements itself (or ignores)
_OWN_OPTIONS = frozenset({"direct_io", "noauto_cache", "umask", "uid", "gid",
                          "ac_attr_timeout", "entry_timeout", "attr_timeout",
                          "negative_timeout", "kernel_cache", "auto_cache"})
_DIRENT = struct.Struct("<QQII")
# struct fuse_entry_param: ino, generation, struct stat (glibc x86-64: dev, ino, nlink, mode,
# uid, gid, pad, rdev, size, blksize, blocks, three timespecs, 3 reserved longs), timeouts
_STAT_FMT = "QQQIIIIQqqqqqqqqq24x"
_ENTRY = struct.Struct("<QQ" + _STAT_FMT + "dd")
_STAT_AT = 16  # where the struct stat starts in it
assert _ENTRY.size == ctypes.sizeof(_EntryParam) and struct.calcsize(_STAT_FMT) == 144
_ROOT = 1


class _Node:
    """One kernel inode: the name it was looked up by (``parent`` node id and ``name``),
    how many lookups the kernel holds, the engine's inode number and file type; once its
    name is gone (``orphan``), the keeper handle or attributes it is served from."""

    __slots__ = ("fmt", "gen", "id", "ino", "keep", "lower", "name", "nlookup", "nocap",
                 "orphan", "parent", "path", "snap")

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


class _Snap:
    """One listing of a directory as a reader saw it begin: its entries (name, mode, inode
    number), packed as READDIR records once asked, and with attributes for READDIRPLUS."""

    __slots__ = ("blob", "ends", "items", "nid", "plus", "seq")

    def __init__(self, seq: int, nid: int, items: list[tuple[bytes, int, int]],
                 plus: list[tuple[bytes, Any]] | None) -> None:
        self.seq, self.nid, self.items, self.plus = seq, nid, items, plus
        self.blob: Any = None
        self.ends: list[int] | None = None


class _Invalidator(_Notifier):
    """``FuseOperations._invalidate`` for the low-level API: drops the kernel's cached
    attributes and pages of the other names of a hard-linked file (on the notifier's thread,
    as in the high-level adapter)."""

    def __init__(self, adapter: LowLevel) -> None:
        super().__init__()
        self._adapter = adapter

    def __call__(self, paths: Iterable[str], wait: float = 0.2) -> None:
        ids = [n.id for n in map(self._adapter.node_at, paths) if n is not None]
        se = self._adapter.session
        if ids and se:
            self._submit((se, ids), wait)

    def _notify(self, batch: tuple[int, list[int]]) -> None:
        se, ids = batch
        for nid in ids:
            _notify_inval_inode(se, nid, 0, 0)  # -ENOENT: the kernel forgot it already


class LowLevel:
    """Serves ``ops`` (a ``FuseOperations``) through libfuse's low-level API."""

    def __init__(self, ops: FuseOperations, opts: MountOptions | None,
                 threaded: bool = False) -> None:
        self.ops = ops
        self.opts = opts
        self.session: int | None = None
        ops.hide_renames = False
        ops.caller = self._caller
        ops._invalidate = _Invalidator(self)  # type: ignore[assignment]
        self._nodes: dict[int, _Node] = {}
        self._children: dict[tuple[int, str], _Node] = {}
        self._next_id = 2
        self._gen = 0  # bumped when a directory moves: cached node paths are recomputed
        self._capgen = 0  # bumped when a security.capability attribute is set or removed
        self._req: int | None = None
        self._lock = threading.Lock() if threaded else None
        #: directory path -> (the operations' listing, its snapshot)
        self._packed: dict[str, tuple[list, _Snap]] = {}
        #: snapshot number -> snapshot: the listings readers may be in the middle of
        self._snaps: dict[int, _Snap] = {}
        self._snap_seq = 0
        #: directories are opened without a request (FUSE_NO_OPENDIR_SUPPORT; see init)
        self.dir_noopen = False
        timeout = DEFAULT_TIMEOUT if opts is None or opts.timeout is None else opts.timeout
        self.entry_timeout = self._option("entry_timeout", timeout)
        self.attr_timeout = self._option("attr_timeout", timeout)
        self.negative_timeout = self._option("negative_timeout", timeout)
        explicit = opts is not None and any(
            opts.fuse_option(k) for k in ("kernel_cache", "auto_cache", "noauto_cache"))
        # file data changes only through this mount (see FuseOperations.init_with_config)
        self.keep_cache = not explicit or bool(
            opts.fuse_option("kernel_cache") or opts.fuse_option("auto_cache"))
        self.direct_io = bool(opts is not None and opts.fuse_option("direct_io"))
        self.dir_cache = self.entry_timeout >= 1.0 and (opts is None or opts.cache_readdir)
        self.plus = opts is None or opts.readdirplus
        self._uid = self._int_option("uid")
        self._gid = self._int_option("gid")
        umask = opts.fuse_option("umask") if opts is not None else None
        self._umask = int(umask, 8) if isinstance(umask, str) else None
        self._overrides = (self._uid, self._gid, self._umask) != (None, None, None)
        self._buf = ctypes.create_string_buffer(_ENTRY.size)
        self._addr = ctypes.addressof(self._buf)
        self._negative = ctypes.create_string_buffer(
            _ENTRY.pack(*([0] * 19), 0.0, self.negative_timeout), _ENTRY.size)
        self._negative_addr = ctypes.addressof(self._negative)
        root = ops.stat("/")
        node = _Node(_ROOT, _ROOT, "", root.st_ino, _stat.S_IFDIR)
        node.path, node.nlookup = "/", 1
        self._nodes[_ROOT] = node
        self._callbacks: list[Any] = []
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

    def _child(self, parent: int, name: bytes) -> tuple[str, str]:
        """The decoded ``name`` and its union path below node ``parent``."""
        n = name.decode("utf-8", "surrogateescape")
        p = self._path(self._node(parent))
        return n, ("/" if p == "/" else p + "/") + n

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

    def _override(self, c: Any) -> None:
        """The ``uid=``, ``gid=`` and ``umask=`` options: shown instead of the real ones."""
        if self._uid is not None:
            c.st_uid = self._uid
        if self._gid is not None:
            c.st_gid = self._gid
        if self._umask is not None:
            c.st_mode = _stat.S_IFMT(c.st_mode) | (0o7777 & ~self._umask & c.st_mode)

    def _pack(self, nid: int, st: os.stat_result) -> int:
        """``st`` as a ``struct fuse_entry_param`` for node ``nid`` in the reply buffer (one
        ``struct.pack_into``: building ctypes structures field by field costs more than the
        rest of a LOOKUP); its address. The ``struct stat`` is at ``+ _STAT_AT``."""
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
        _ENTRY.pack_into(self._buf, 0, nid, 0, 0, st.st_ino, st.st_nlink, mode, uid, gid, 0,
                         st.st_rdev, st.st_size, st.st_blksize or 4096, st.st_blocks or 0,
                         a_s, a_n, m_s, m_n, c_s, c_n, self.attr_timeout, self.entry_timeout)
        return self._addr

    def _reply_entry(self, req: int, node: _Node, st: os.stat_result) -> None:
        node.nlookup += 1
        if _reply_entry(req, self._pack(node.id, st)) != 0:
            self._forget(node.id, 1)  # the kernel never got it (request interrupted)

    def _reply_attr(self, req: int, nid: int, st: os.stat_result) -> None:
        _reply_attr(req, self._pack(nid, st) + _STAT_AT, self.attr_timeout)

    def _new_entry(self, req: int, parent: int, name: str, path: str) -> None:
        st = self.ops.stat(path)
        self._reply_entry(req, self._node_for(parent, name, path, st.st_ino, st.st_mode), st)

    def _caller(self) -> tuple[int, int, int]:
        if self._req is None:
            return os.geteuid(), os.getegid(), 0
        c = _req_ctx(self._req).contents
        return c.uid, c.gid, c.pid

    def _open_flags(self, fi: Any, path: str | None) -> None:
        if self.direct_io:
            fi.direct_io = 1
        elif self.keep_cache and (path is None or self.ops.stable(path)):
            fi.keep_cache = 1
        # no flush handler: nothing is buffered here, and without FLUSH a close costs no
        # round trip (the kernel keeps POSIX locks itself: no lock handlers either)
        fi.noflush = 1

    # -- handlers ---------------------------------------------------------------------------
    # each replies exactly once, as its last step; an exception before that becomes the
    # error reply (see _wrap)

    def init(self, userdata: int, conn: Any) -> None:
        c = conn.contents
        if self._conn_opts:
            _apply_conn_opts(self._conn_opts, conn)
        # a symlink never changes in place: the kernel may keep its target
        c.want |= c.capable & _CAP_CACHE_SYMLINKS
        # the kernel clears set-user-ID/set-group-ID bits on write, truncate and chown
        # itself (by a SETATTR) unless told the file system does it: we do not
        c.want &= ~_CAP_HANDLE_KILLPRIV
        if not self.plus:
            c.want &= ~(_CAP_READDIRPLUS | _CAP_READDIRPLUS_AUTO)
        # every directory changes only through this mount (no host volume below it): the
        # kernel may open directories without asking and keep their listings until they
        # change (an OPENDIR answered ENOSYS stops OPENDIR and RELEASEDIR for good, and the
        # kernel then caches listings as for FOPEN_KEEP_CACHE | FOPEN_CACHE_DIR); READDIR
        # comes without a handle, so listings are kept as numbered snapshots instead
        if (self.dir_cache and c.capable & _CAP_NO_OPENDIR_SUPPORT
                and getattr(self.ops.union, "route", None) is None):
            c.want |= _CAP_NO_OPENDIR_SUPPORT
            self.dir_noopen = True
        on_ready, self.ops._on_ready = self.ops._on_ready, None
        if on_ready is not None:
            on_ready()

    def destroy(self, userdata: int) -> None:
        for node in list(self._nodes.values()):
            if node.keep is not None:
                node.keep = None
        self.ops.destroy("/")

    def lookup(self, req: int, parent: int, name: bytes) -> None:
        n, path = self._child(parent, name)
        st = self.ops.stat_or_none(path)
        if st is None:
            if self.negative_timeout > 0:
                # a negative entry (node 0), kept by the kernel for the negative timeout
                _reply_entry(req, self._negative_addr)
            else:
                _reply_err(req, errno.ENOENT)
            return
        self._reply_entry(req, self._node_for(parent, n, path, st.st_ino, st.st_mode), st)

    def forget(self, req: int, nid: int, nlookup: int) -> None:
        self._forget(nid, nlookup)
        _reply_none(req)

    def forget_multi(self, req: int, count: int, forgets: Any) -> None:
        for i in range(count):
            f = forgets[i]
            self._forget(f.ino, f.nlookup)
        _reply_none(req)

    def getattr(self, req: int, nid: int, fi: Any) -> None:
        node = self._node(nid)
        fh = fi.contents.fh if fi else None
        st = self._orphan_stat(node, fh) if node.orphan else self.ops.stat(self._path(node))
        self._reply_attr(req, nid, st)

    def setattr(self, req: int, nid: int, attr: Any, to_set: int, fi: Any) -> None:
        node = self._node(nid)
        ops = self.ops
        fh = fi.contents.fh if fi else None
        if node.orphan:
            path = None
            fh = fh if fh is not None else self._keeper(node)
        else:
            path = self._path(node)
        a = attr.contents
        if to_set & _SET_MODE:
            ops.chmod(path, a.st_mode, fh)
        if to_set & (_SET_UID | _SET_GID):
            ops.chown(path, a.st_uid if to_set & _SET_UID else -1,
                      a.st_gid if to_set & _SET_GID else -1, fh)
        if to_set & _SET_SIZE:
            ops.truncate(path, a.st_size, fh)
        if to_set & (_SET_ATIME | _SET_MTIME | _SET_ATIME_NOW | _SET_MTIME_NOW):
            def one(now: int, given: int, ts: Any) -> int | str | None:
                if to_set & now:
                    return "now"
                if to_set & given:
                    return ts.tv_sec * 1_000_000_000 + ts.tv_nsec
                return None
            ops.utimens(path, (one(_SET_ATIME_NOW, _SET_ATIME, a.st_atimespec),
                               one(_SET_MTIME_NOW, _SET_MTIME, a.st_mtimespec)), fh)
        st = self._orphan_stat(node, fh) if node.orphan else ops.stat(path)
        self._reply_attr(req, nid, st)

    def readlink(self, req: int, nid: int) -> None:
        target = self.ops.readlink(self._path(self._node(nid)))
        _reply_readlink(req, target.encode("utf-8", "surrogateescape"))

    def mknod(self, req: int, parent: int, name: bytes, mode: int, rdev: int) -> None:
        self._make(req, parent, name, self.ops.mknod, mode, rdev)

    def mkdir(self, req: int, parent: int, name: bytes, mode: int) -> None:
        self._make(req, parent, name, self.ops.mkdir, mode)

    def symlink(self, req: int, target: bytes, parent: int, name: bytes) -> None:
        self._make(req, parent, name, self.ops.symlink,
                   target.decode("utf-8", "surrogateescape"))

    def _make(self, req: int, parent: int, name: bytes, make: Any, *args: Any) -> None:
        """MKNOD/MKDIR/SYMLINK: ``make(path, *args)`` as the request's caller (``_req``
        names it to ``_caller``), then the new entry's reply."""
        n, path = self._child(parent, name)
        self._req = req
        try:
            make(path, *args)
        finally:
            self._req = None
        self._new_entry(req, parent, n, path)

    def link(self, req: int, nid: int, parent: int, name: bytes) -> None:
        n, path = self._child(parent, name)
        self.ops.link(path, self._path(self._node(nid)))
        self._new_entry(req, parent, n, path)

    def unlink(self, req: int, parent: int, name: bytes) -> None:
        self._remove(req, parent, name, self.ops.unlink)

    def rmdir(self, req: int, parent: int, name: bytes) -> None:
        self._remove(req, parent, name, self.ops.rmdir)

    def _remove(self, req: int, parent: int, name: bytes, remove: Any) -> None:
        """UNLINK/RMDIR: a node the kernel still holds keeps its file (REL-1) before the
        name goes, and is detached from the tree once it is gone."""
        n, path = self._child(parent, name)
        victim = self._children.get((parent, n))
        self._keep(victim, path)
        try:
            remove(path)
        except BaseException:
            self._unkeep(victim)
            raise
        if victim is not None:
            self._detach(victim)
        _reply_err(req, 0)

    def rename(self, req: int, parent: int, name: bytes, newparent: int, newname: bytes,
               flags: int) -> None:
        from .fuse import RENAME_EXCHANGE

        n, old = self._child(parent, name)
        nn, new = self._child(newparent, newname)
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
            _reply_err(req, 0)
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
        _reply_err(req, 0)

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

    def open(self, req: int, nid: int, fi: Any) -> None:
        node = self._node(nid)
        f = fi.contents
        if node.orphan:
            keeper = self._keeper(node)
            keep = self.ops._files.get(keeper) if keeper is not None else None
            if keep is None:
                raise OSError(errno.ESTALE, os.strerror(errno.ESTALE))
            f.fh = self.ops.reopen(keep, keep.path, f.flags)
            path = None
        else:
            path = self._path(node)
            f.fh = self.ops.open(path, f.flags)
        self._open_flags(f, path)
        if _reply_open(req, fi) != 0:
            self.ops.release(None, f.fh)

    def create(self, req: int, parent: int, name: bytes, mode: int, fi: Any) -> None:
        n, path = self._child(parent, name)
        f = fi.contents
        self._req = req
        try:
            # the new file and its attributes, without a lookup of the path
            fh, st = self.ops.create_stat(path, mode, f.flags)
        finally:
            self._req = None
        node = self._node_for(parent, n, path, st.st_ino, st.st_mode)
        f.fh = fh
        self._open_flags(f, path)
        node.nlookup += 1
        node.nocap = self._capgen  # a new file has no security.capability
        if _reply_create(req, self._pack(node.id, st), fi) != 0:
            self._forget(node.id, 1)
            self.ops.release(None, fh)

    def read(self, req: int, nid: int, size: int, off: int, fi: Any) -> None:
        f = self.ops._file(fi.contents.fh)
        try:
            fd = f.fileno()
        except (OSError, ValueError, AttributeError):
            fd = -1
        if fd < 0:
            data = f.pread(size, off)
            _reply_buf(req, data, len(data))
            return
        v = _BufVec()
        v.count = 1
        b = v.buf[0]
        b.size, b.flags, b.fd, b.pos = size, _BUF_IS_FD | _BUF_FD_SEEK, fd, off
        _reply_data(req, ctypes.byref(v), 0)

    def write(self, req: int, nid: int, buf: int, size: int, off: int, fi: Any) -> None:
        ops = self.ops
        path = None
        if ops._ino_of:
            node = self._nodes.get(nid)
            if node is not None and not node.orphan:
                path = self._path(node)
        n = ops.write(path, ctypes.string_at(buf, size), off, fi.contents.fh)
        _reply_write(req, n)

    def release(self, req: int, nid: int, fi: Any) -> None:
        self.ops.release(None, fi.contents.fh)
        _reply_err(req, 0)

    def fsync(self, req: int, nid: int, datasync: int, fi: Any) -> None:
        self.ops.fsync(None, datasync, fi.contents.fh)
        _reply_err(req, 0)

    def opendir(self, req: int, nid: int, fi: Any) -> None:
        if self.dir_noopen:
            _reply_err(req, errno.ENOSYS)  # once: the kernel opens directories itself
            return
        path = self._path(self._node(nid))
        f = fi.contents
        f.fh = self.ops.opendir(path)
        if self.dir_cache and self.ops.stable(path):
            # the kernel keeps the listing across opens until the directory changes
            f.cache_readdir = 1
            f.keep_cache = 1
        if _reply_open(req, fi) != 0:
            self.ops.releasedir(None, f.fh)

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

    def _blob(self, node: _Node, snap: _Snap) -> tuple[Any, list[int]]:
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
        snap.blob = ctypes.create_string_buffer(b"".join(parts), max(1, pos))
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

    def readdir(self, req: int, nid: int, size: int, off: int, fi: Any) -> None:
        node = self._node(nid)
        if node.orphan:  # a removed directory lists nothing (not even . and ..)
            _reply_buf(req, None, 0)
            return
        # from the start, or a snapshot no longer kept: the listing as it is now
        snap = self._snap_at(nid, off) or self._fresh_snap(node, self._path(node),
                                                          fi.contents.fh)
        blob, ends = self._blob(node, snap)
        idx = off & _SNAP_MASK
        start = ends[idx - 1] if 0 < idx <= len(ends) else (0 if idx == 0 else ends[-1])
        stop = bisect.bisect_right(ends, start + size)
        end = ends[stop - 1] if stop > 0 else 0
        end = max(end, start)
        _reply_buf(req, ctypes.addressof(blob) + start, end - start)

    def readdirplus(self, req: int, nid: int, size: int, off: int, fi: Any) -> None:
        node = self._node(nid)
        if node.orphan:  # a removed directory lists nothing (not even . and ..)
            _reply_buf(req, None, 0)
            return
        path = self._path(node)
        fh = fi.contents.fh
        snap = self._snap_at(nid, off)
        if snap is None:  # from the start, or a snapshot no longer kept: as it is now
            plus = self.ops.listing_plus(path, fh, fresh=True)
            snap = self._snap(nid, [(name, c.st_mode, c.st_ino) for name, c in plus], plus)
        elif snap.plus is None:
            # a reader that began with READDIR goes on with attributes: those of the names
            # of its snapshot still there now (a name gone since is skipped)
            now = dict(self.ops.listing_plus(path, fh, fresh=True))
            snap.plus = [(name, now.get(name)) for name, _mode, _ino in snap.items]
        entries = snap.plus
        high = snap.seq << _SNAP_SHIFT
        buf = ctypes.create_string_buffer(max(1, size))
        base = ctypes.addressof(buf)
        pos = 0
        counted: list[_Node] = []
        i = off & _SNAP_MASK
        prefix = "/" if path == "/" else path + "/"
        dots = self._dots(node)
        while i < len(entries) + 2:
            e = _EntryParam()
            if i < 2:
                name = b"." if i == 0 else b".."
                e.attr.st_mode, e.attr.st_ino = _stat.S_IFDIR, dots[i]
                child = None
            else:
                name, c = entries[i - 2]
                if c is None:
                    i += 1
                    continue
                n = name.decode("utf-8", "surrogateescape")
                child = self._node_for(nid, n, prefix + n, c.st_ino, c.st_mode)
                e.ino = child.id
                e.attr = c
                self._override(e.attr)
                e.attr_timeout, e.entry_timeout = self.attr_timeout, self.entry_timeout
            need = _add_direntry_plus(req, base + pos, size - pos, name, ctypes.byref(e),
                                      high | (i + 1))
            if need > size - pos:
                if child is not None and child.nlookup <= 0:
                    self._drop(child)
                break
            pos += need
            if child is not None:
                child.nlookup += 1
                counted.append(child)
            i += 1
        if _reply_buf(req, base, pos) != 0:
            for child in counted:
                self._forget(child.id, 1)

    def releasedir(self, req: int, nid: int, fi: Any) -> None:
        self.ops.releasedir(None, fi.contents.fh)
        _reply_err(req, 0)

    def fsyncdir(self, req: int, nid: int, datasync: int, fi: Any) -> None:
        node = self._node(nid)
        if not node.orphan:
            self.ops.fsyncdir(self._path(node), datasync, fi.contents.fh)
        _reply_err(req, 0)

    def statfs(self, req: int, nid: int) -> None:
        node = self._nodes.get(nid)
        path = "/" if node is None or node.orphan else self._path(node)
        sv = mfusepy.c_statvfs()
        for k, v in self.ops.statfs(path).items():
            setattr(sv, k, v)
        _reply_statfs(req, ctypes.byref(sv))

    def getxattr(self, req: int, nid: int, name: bytes, size: int) -> None:
        node = self._node(nid)
        key = name.decode("utf-8", "surrogateescape")
        if key == _CAPABILITY and (node.orphan or node.nocap == self._capgen):
            # asked before every write: answered from memory (only a setxattr or removexattr
            # of this attribute, anywhere, makes it ask the engine again)
            _reply_err(req, errno.ENODATA)
            return
        try:
            value = self.ops.getxattr(self._path(node), key)
        except OSError as e:
            if key == _CAPABILITY and e.errno == errno.ENODATA:
                node.nocap = self._capgen
            raise
        self._reply_value(req, value, size)

    @staticmethod
    def _reply_value(req: int, value: bytes, size: int) -> None:
        if size == 0:
            _reply_xattr(req, len(value))
        elif len(value) > size:
            _reply_err(req, errno.ERANGE)
        else:
            _reply_buf(req, value, len(value))

    def setxattr(self, req: int, nid: int, name: bytes, value: int, size: int,
                 flags: int) -> None:
        key = name.decode("utf-8", "surrogateescape")
        self.ops.setxattr(self._path(self._node(nid)), key, ctypes.string_at(value, size),
                          flags)
        if key == _CAPABILITY:
            self._capgen += 1
        _reply_err(req, 0)

    def listxattr(self, req: int, nid: int, size: int) -> None:
        names = self.ops.listxattr(self._path(self._node(nid)))
        value = b"".join(n.encode("utf-8", "surrogateescape") + b"\0" for n in names)
        self._reply_value(req, value, size)

    def removexattr(self, req: int, nid: int, name: bytes) -> None:
        key = name.decode("utf-8", "surrogateescape")
        self.ops.removexattr(self._path(self._node(nid)), key)
        if key == _CAPABILITY:
            self._capgen += 1
        _reply_err(req, 0)

    def access(self, req: int, nid: int, mask: int) -> None:
        node = self._node(nid)
        if not node.orphan:
            self.ops.access(self._path(node), mask)
        _reply_err(req, 0)

    # -- the session ------------------------------------------------------------------------

    def _wrap(self, name: str, proto: Any) -> Any:
        fn = getattr(self, name)
        lock = self._lock
        no_reply = name in ("init", "destroy", "forget", "forget_multi")

        def call(*args: Any) -> None:
            try:
                if lock is None:
                    fn(*args)
                else:
                    with lock:
                        fn(*args)
            except OSError as e:
                if not no_reply:
                    _reply_err(args[0], e.errno or errno.EIO)
            except BaseException:
                traceback.print_exc(file=sys.stderr)
                if not no_reply:
                    _reply_err(args[0], errno.EIO)
                elif name in ("forget", "forget_multi"):
                    _reply_none(args[0])

        return proto(call)

    def _make_table(self) -> _LowLevelOps:
        table = _LowLevelOps()
        for name, proto in _SLOTS:
            if proto is None or (name == "readdirplus" and not self.plus):
                continue
            cb = self._wrap(name, proto)
            self._callbacks.append(cb)  # referenced for the session's lifetime
            setattr(table, name, ctypes.cast(cb, ctypes.c_void_p).value)
        return table

    _conn_opts: int | None = None

    def serve(self, mountpoint: str, options: list[str], threaded: bool) -> None:
        """Mount at ``mountpoint`` with libfuse ``options`` and serve until unmounted or
        signalled. Raises ``MountError`` when libfuse refuses the options or the mount."""
        argv = [b"unionfs"] + [a.encode("utf-8", "surrogateescape") for a in options]
        arr = (ctypes.c_char_p * (len(argv) + 1))(*argv, None)
        args = _Args(len(argv), arr, 0)
        try:
            self._conn_opts = _parse_conn_opts(ctypes.byref(args))
            if not self._conn_opts:
                raise MountError(f"libfuse could not mount {mountpoint}: it refused the "
                                 "options (its message is above)")
            se = _session_new(ctypes.byref(args), ctypes.byref(self._table),
                              ctypes.sizeof(self._table), None)
        finally:
            _opt_free_args(ctypes.byref(args))
        if not se:
            raise MountError(f"libfuse could not mount {mountpoint}: it refused the options "
                             "(its message is above)")
        self.session = se
        # libfuse installs its handlers (end the loop, then unmount) only over the default
        # disposition: Python's SIGINT handler, or a SIGHUP ignored by whoever started us,
        # would keep them out
        saved = {sig: signal.signal(sig, signal.SIG_DFL)
                 for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)}
        try:
            if _set_signal_handlers(se) != 0:
                raise MountError("libfuse could not set its signal handlers")
            try:
                if _session_mount(se, os.fsencode(mountpoint)) != 0:
                    raise MountError(f"libfuse could not mount {mountpoint}")
                try:
                    if threaded:
                        _session_loop_mt(se, 0)
                    else:
                        _session_loop(se)
                finally:
                    _session_unmount(se)
            finally:
                _remove_signal_handlers(se)
        finally:
            for sig, handler in saved.items():
                with contextlib.suppress(TypeError, ValueError):
                    signal.signal(sig, handler)
            self.session = None
            _session_destroy(se)  # calls destroy() when the kernel had connected


def _option_args(kwargs: dict[str, str | bool], debug: bool) -> list[str]:
    """libfuse's command line for ``kwargs`` (mount and connection options only: those of
    the high-level API are implemented by ``LowLevel``)."""
    parts = []
    for key, value in kwargs.items():
        if key in _OWN_OPTIONS or key == "debug" or value is False:
            continue
        text = key if value is True else f"{key}={value}"
        parts.append(text.replace("\\", "\\\\").replace(",", "\\,"))
    out = ["-o", ",".join(parts)] if parts else []
    if debug or kwargs.get("debug"):
        out.append("-d")
    return out


def run_lowlevel(ops: FuseOperations, mountpoint: str, opts: MountOptions | None,
                 kwargs: dict[str, str | bool], *, debug: bool = False,
                 threaded: bool = False) -> None:
    """Serve ``ops`` at ``mountpoint`` through libfuse's low-level API until unmounted or
    until SIGTERM/SIGINT/SIGHUP (the mount is removed before this returns). Raises
    ``MountError`` when libfuse refuses the options or the mount point."""
    ll = LowLevel(ops, opts, threaded=threaded)
    ll.serve(mountpoint, _option_args(kwargs, debug), threaded)


__all__ = ["LowLevel", "run_lowlevel"]
