"""``FuseOperations``: the FUSE calls of libfuse 3's high-level API, translated onto ``UnionFS``.

A thin adapter: every call becomes one engine call (paths are already union paths; the
engine raises ``OSError`` subclasses and the binding turns them into ``-errno``). What lives
here is only what FUSE itself needs:

- a table of open file handles (``fh`` numbers -> engine file objects);
- the caller's identity: the daemon runs as root, so an object a user creates is given to
  that user (``fuse_get_context``), keeping the group of a set-group-ID parent directory;
- the libfuse configuration (inode numbers from the engine, timeouts, page cache, files
  unlinked while open kept by handle, not renamed to ``.fuse_hidden*``);
- two virtual extended attributes that let ``unionfs which`` and ``unionfs umount`` talk to
  the daemon of a live mount: ``user.unionfs.which`` (the provenance of a file or directory;
  ``user.unionfs.which.NAME`` on a directory asks about its entry ``NAME``, for symlinks and
  special files, which cannot carry ``user.*`` attributes) and ``user.unionfs.pid`` on the
  root.

mfusepy loads libfuse 2 when both versions are installed; unless ``FUSE_LIBRARY_PATH`` or
``FUSE_LIBRARY_NAME`` says otherwise, this module points it at libfuse 3 by its soname
(``libfuse3.so.3``) before importing it, and refuses to run on another major version.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import io
import itertools
import json
import os
import queue
import random
import stat as _stat
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

_CHOSEN = bool(os.environ.get("FUSE_LIBRARY_PATH") or os.environ.get("FUSE_LIBRARY_NAME"))
if not _CHOSEN:
    # libfuse 3 by its soname: dlopen finds it without find_library's ldconfig subprocess
    # (the mount is live sooner); mfusepy checks the version it got either way
    os.environ["FUSE_LIBRARY_PATH"] = "libfuse3.so.3"

import mfusepy  # noqa: E402 - after the library choice above

if mfusepy.fuse_version_major != 3 and not _CHOSEN:  # pragma: no cover - import order
    # someone imported mfusepy before us, without a library choice, and it took libfuse 2:
    # load it again now that the choice is made (nothing has been mounted through it yet)
    import importlib

    mfusepy = importlib.reload(mfusepy)

from .mount import DEFAULT_TIMEOUT, XATTR_PID, XATTR_WHICH, MountOptions  # noqa: E402

if mfusepy.fuse_version_major != 3:  # pragma: no cover - depends on the host
    raise ImportError(
        f"unionfs needs libfuse 3, but mfusepy loaded libfuse "
        f"{mfusepy.fuse_version_major}.{mfusepy.fuse_version_minor}; "
        "set FUSE_LIBRARY_PATH=libfuse3.so.3")

RENAME_NOREPLACE = 1
RENAME_EXCHANGE = 2
_S_IFMT, _S_IFDIR = 0o170000, _stat.S_IFDIR
_UTIME_NOW = (1 << 30) - 1
_UTIME_OMIT = (1 << 30) - 2


def _stat_dict(st: os.stat_result) -> dict[str, int]:
    return {
        "st_mode": st.st_mode, "st_ino": st.st_ino, "st_nlink": st.st_nlink,
        "st_uid": st.st_uid, "st_gid": st.st_gid, "st_size": st.st_size,
        "st_rdev": st.st_rdev, "st_blocks": st.st_blocks, "st_blksize": st.st_blksize,
        "st_atime": st.st_atime_ns, "st_mtime": st.st_mtime_ns, "st_ctime": st.st_ctime_ns,
    }


_HIDDEN_PREFIX = ".fuse_hidden"
#: how long a file unlinked while open stays openable by its hidden name after its last
#: handle closed (the kernel may still open the inode it looked up before), and how many
_GRAVE_SECONDS = 2.0
_GRAVES_MAX = 256

# struct fuse_buf / fuse_bufvec of libfuse 3 (fuse_common.h), for read_buf; libfuse frees
# the vector (and any memory buffer) with free(), so both come from libc's malloc
_BUF_IS_FD = 1 << 1
_BUF_FD_SEEK = 1 << 2


class _Buf(ctypes.Structure):
    _fields_ = (("size", ctypes.c_size_t), ("flags", ctypes.c_int), ("mem", ctypes.c_void_p),
                ("fd", ctypes.c_int), ("pos", ctypes.c_int64))


class _BufVec(ctypes.Structure):
    _fields_ = (("count", ctypes.c_size_t), ("idx", ctypes.c_size_t), ("off", ctypes.c_size_t),
                ("buf", _Buf * 1))


_libc = ctypes.CDLL(None)
_libc_malloc = _libc.malloc
_libc_malloc.argtypes = [ctypes.c_size_t]
_libc_malloc.restype = ctypes.c_void_p
_libc_free = _libc.free
_libc_free.argtypes = [ctypes.c_void_p]

# readdir flags of libfuse 3 (fuse.h): the kernel asked for READDIRPLUS; an entry carries
# full attributes (libfuse then answers the kernel's lookup of it from the reply)
_READDIR_PLUS = 1
_FILL_DIR_PLUS = 2
#: directories whose listings the adapter keeps before it starts again from empty
_LISTINGS_MAX = 4096
# a capability bit of libfuse 3's struct fuse_conn_info (fuse_common.h)
_CAP_CACHE_SYMLINKS = 1 << 23


def _fill_stat(c: Any, st: os.stat_result) -> None:
    """Copy ``st`` into the C ``struct stat`` ``c`` (zeroed by its allocator)."""
    c.st_ino, c.st_mode, c.st_nlink = st.st_ino, st.st_mode, st.st_nlink
    c.st_uid, c.st_gid, c.st_rdev, c.st_size = st.st_uid, st.st_gid, st.st_rdev, st.st_size
    c.st_blksize, c.st_blocks = st.st_blksize or 4096, st.st_blocks or 0
    c.st_atimespec.tv_sec, c.st_atimespec.tv_nsec = divmod(st.st_atime_ns, 1_000_000_000)
    c.st_mtimespec.tv_sec, c.st_mtimespec.tv_nsec = divmod(st.st_mtime_ns, 1_000_000_000)
    c.st_ctimespec.tv_sec, c.st_ctimespec.tv_nsec = divmod(st.st_ctime_ns, 1_000_000_000)


def _dirent(name: str, mode: int, ino: int) -> tuple[bytes, Any]:
    """One prepared readdir entry: the encoded name and a ``struct stat`` with the type
    and inode number (all that a plain readdir reply carries)."""
    c = mfusepy.c_stat()
    c.st_mode, c.st_ino = mode, ino
    return name.encode("utf-8", "surrogateescape"), c


_DOTS = (_dirent(".", _stat.S_IFDIR, 0), _dirent("..", _stat.S_IFDIR, 0))


def _text_range(prefix: str) -> tuple[int, int] | None:
    """The address range of the executable mappings of the loaded library whose file name
    starts with ``prefix`` (the soname links to a versioned file)."""
    lo = hi = None
    with open("/proc/self/maps") as f:
        for line in f:
            parts = line.split()
            if (len(parts) >= 6 and "x" in parts[1]
                    and os.path.basename(parts[5]).startswith(prefix)):
                a, b = (int(x, 16) for x in parts[0].split("-"))
                lo = a if lo is None else min(lo, a)
                hi = b if hi is None else max(hi, b)
    return None if lo is None else (lo, hi)


_LL_OPENDIR = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_uint64,
                               ctypes.POINTER(mfusepy.fuse_file_info))
# slots in libfuse 3's struct fuse_lowlevel_ops (fuse_lowlevel.h): init=0 ... read=15,
# write=16 (unset by the high-level API, which uses write_buf), opendir=20
_LL_WRITE, _LL_OPENDIR_SLOT, _LL_SLOTS = 16, 20, 23


class _DirCacheHook:
    """Lets our ``opendir`` set ``cache_readdir``/``keep_cache`` on the reply to the kernel.

    libfuse before 3.16 (libfuse PR #822) drops both flags that a high-level ``opendir``
    sets: ``fuse_lib_opendir`` hands the file system a copy of the request's
    ``fuse_file_info`` and replies with the original. This hook wraps the low-level opendir
    handler in the session's operation table (found by its shape: a run of pointers into
    libfuse's code with the unused ``write`` slot at its place) and exposes the original
    ``fuse_file_info`` to our handler while it runs, so the flags reach the kernel, which
    then keeps directory listings in its page cache until the directory changes.
    """

    def __init__(self) -> None:
        self._local = threading.local()
        self._orig: Any = None
        self._cb: Any = None

    @property
    def current(self) -> Any:
        return getattr(self._local, "llfi", None)

    def install(self, fuse_ptr: int) -> bool:
        """Hook the session of the ``struct fuse`` at ``fuse_ptr``; False if its operation
        table cannot be recognised (nothing is changed then)."""
        span = _text_range("libfuse3.so")
        get_session = mfusepy._libfuse.fuse_get_session
        get_session.argtypes = [ctypes.c_void_p]
        get_session.restype = ctypes.c_void_p
        se = get_session(fuse_ptr)
        if span is None or not se:
            return False
        lo, hi = span
        words = (ctypes.c_void_p * 64).from_address(se)

        def code(i: int) -> bool:
            return words[i] is not None and lo <= words[i] < hi

        for start in range(0, 64 - _LL_SLOTS):
            if (all(code(start + i) for i in range(_LL_SLOTS) if i != _LL_WRITE)
                    and words[start + _LL_WRITE] is None):
                break
        else:
            return False
        slot = ctypes.c_void_p.from_address(se + (start + _LL_OPENDIR_SLOT)
                                            * ctypes.sizeof(ctypes.c_void_p))
        self._orig = _LL_OPENDIR(slot.value)
        self._cb = _LL_OPENDIR(self._opendir)  # kept referenced for the mount's lifetime
        slot.value = ctypes.cast(self._cb, ctypes.c_void_p).value
        return True

    def _opendir(self, req: int, ino: int, llfi: Any) -> None:
        self._local.llfi = llfi
        try:
            self._orig(req, ino, llfi)  # libfuse calls our opendir, then replies
        finally:
            self._local.llfi = None


class _Open:
    """One open file: the engine's file object, the union path it is open under (kept up to
    date across renames), and once it is unlinked, the union inode number it had; ``shared``
    when the file object is a read-only one from the ``_ReadPool``."""

    __slots__ = ("file", "ino", "path", "shared")

    def __init__(self, file: Any, path: str, shared: bool = False) -> None:
        self.file = file
        self.path = path
        self.ino = 0
        self.shared = shared


class _ReadPool:
    """Read-only engine file objects shared by every read-only open of the same path.

    A read-only open of a file no call has changed since (all changes come through this
    mount) may reuse the file object an earlier open made: reads are positional (``pread``
    or libfuse reading the host descriptor at an offset), so sharing is invisible, and an
    open costs a dictionary look-up instead of a walk of the layers and a host ``open``.
    A path is dropped from the pool by any call that changes it or its place (write opens,
    truncation, metadata, unlink, rename); handles already open keep their object, as they
    would keep their descriptor. Objects no handle uses stay open, ``limit`` at most.
    """

    def __init__(self, limit: int = 256) -> None:
        self.limit = limit
        self._by_path: dict[str, Any] = {}
        self._refs: dict[int, int] = {}
        # paths whose object no handle uses, in a list for eviction at random (a scan of
        # more files than the pool holds would evict every one before its reuse under LRU)
        self._idle: list[str] = []
        self._idle_at: dict[str, int] = {}
        self._rng = random.Random(0)

    def _unidle(self, path: str) -> None:
        i = self._idle_at.pop(path, None)
        if i is None:
            return
        last = self._idle.pop()
        if i < len(self._idle):
            self._idle[i] = last
            self._idle_at[last] = i

    def get(self, path: str) -> Any:
        f = self._by_path.get(path)
        if f is not None:
            self._refs[id(f)] += 1
            self._unidle(path)
        return f

    def get_nowait(self, path: str) -> Any:
        """The pooled object of ``path``, if any, without taking a reference."""
        return self._by_path.get(path)

    def add(self, path: str, f: Any) -> None:
        self.drop(path)
        self._by_path[path] = f
        self._refs[id(f)] = 1

    def release(self, path: str, f: Any) -> None:
        """A handle of ``f`` (opened as ``path``) is closed."""
        refs = self._refs.get(id(f), 1) - 1
        if refs > 0:
            self._refs[id(f)] = refs
            return
        if self._by_path.get(path) is f:
            self._refs[id(f)] = 0
            if path not in self._idle_at:
                self._idle_at[path] = len(self._idle)
                self._idle.append(path)
            while len(self._idle) > self.limit:
                self.drop(self._idle[self._rng.randrange(len(self._idle))])
        else:
            self._refs.pop(id(f), None)
            with contextlib.suppress(OSError):
                f.close()

    def drop(self, path: str) -> None:
        f = self._by_path.pop(path, None)
        if f is None:
            return
        self._unidle(path)
        if not self._refs.get(id(f)):
            self._refs.pop(id(f), None)
            with contextlib.suppress(OSError):
                f.close()

    def drop_tree(self, path: str) -> None:
        prefix = path.rstrip("/") + "/"
        for p in [p for p in self._by_path if p == path or p.startswith(prefix)]:
            self.drop(p)

    def close(self) -> None:
        for p in list(self._by_path):
            self.drop(p)


def _pool_size() -> int:
    """How many unused read-only objects the pool may keep open: raise the limit of open
    files to 65536 (the hard limit too when we may, as root) and use half of it."""
    import resource

    want = 65536
    try:
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if hard != resource.RLIM_INFINITY and hard < want:
            with contextlib.suppress(OSError, ValueError):
                resource.setrlimit(resource.RLIMIT_NOFILE, (want, want))
                soft, hard = want, want
        target = want if hard == resource.RLIM_INFINITY else min(hard, want)
        if soft != resource.RLIM_INFINITY and soft < target:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
    except (OSError, ValueError):
        return 256
    return max(64, min(32768, soft // 2))


class _Notifier:
    """Sends kernel notifications from a thread of their own: a notification may wait for a
    page lock held by a request this daemon has yet to answer, so the request that asks for
    it waits a short while only. Subclasses say what one batch does (``_notify``)."""

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._thread: threading.Thread | None = None

    def _submit(self, batch: Any, wait: float) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="unionfs-inval",
                                             daemon=True)
            self._thread.start()
        done = threading.Event()
        self._queue.put((batch, done))
        done.wait(wait)

    def _run(self) -> None:
        while True:
            batch, done = self._queue.get()
            self._notify(batch)
            done.set()

    def _notify(self, batch: Any) -> None:
        raise NotImplementedError


class _Invalidator(_Notifier):
    """Drops the kernel's cached attributes of other names of a hard-linked file.

    libfuse's high-level API gives each name its own kernel inode, so after ``link``, an
    unlink, a write or a copy-up through one name the kernel still holds the old ``st_nlink``,
    size or times for the others until their attribute timeout. ``fuse_invalidate_path`` fixes
    that (on the notifier's thread).
    """

    def __init__(self) -> None:
        super().__init__()
        self.fuse_ptr: int | None = None
        fn = mfusepy._libfuse.fuse_invalidate_path
        fn.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
        fn.restype = ctypes.c_int
        self._fn = fn

    def __call__(self, paths: Iterable[str], wait: float = 0.2) -> None:
        todo = [p.encode("utf-8", "surrogateescape") for p in paths]
        if todo and self.fuse_ptr is not None:
            self._submit(todo, wait)

    def _notify(self, batch: list[bytes]) -> None:
        for path in batch:
            self._fn(self.fuse_ptr, path)  # -ENOENT for a name the kernel never saw


class FuseOperations(mfusepy.Operations):
    """The FUSE operations of one mount over ``union`` (a ``UnionFS``).

    There is deliberately no ``flush``: the engine's files are unbuffered, and without it the
    kernel stops sending FLUSH on every close (one round trip less per file).
    """

    use_ns = True  # times in integer nanoseconds, both ways

    def __init__(self, union: Any, opts: MountOptions | None = None,
                 on_ready: Callable[[], None] | None = None) -> None:
        self.union = union
        self.opts = opts
        self._on_ready = on_ready
        self._files: dict[int, _Open] = {}
        self._dirs: dict[int, str] = {}
        self._next_fh = itertools.count(1)
        self._uid = os.geteuid()
        self._gid = os.getegid()
        # names libfuse gave to files unlinked while open (already unlinked in the engine)
        self._hidden: dict[str, int] = {}
        # hidden files whose last handle closed: hidden name -> (a read-only duplicate of
        # their host descriptor, when it was closed); see release()
        self._graves: dict[str, tuple[_Open, float]] = {}
        # the names seen for each hard-linked inode (nlink > 1), for cache invalidation: one
        # name as a str (most such files are only ever seen by one: no set per file), more
        # as a set
        self._names: dict[int, str | set[str]] = {}
        self._ino_of: dict[str, int] = {}
        self._invalidate = _Invalidator()
        self._reads = _ReadPool(_pool_size())
        self._plus: dict[int, list[tuple[bytes, Any]]] = {}  # READDIRPLUS entries by handle
        self._key: dict[int, str] = {}  # handle -> the path its shared object is pooled as
        # prepared readdir entries per directory (names, types and inode numbers change
        # only through this mount): dropped by every call that changes a listing
        self._listings: dict[str, list[tuple[bytes, Any]]] = {}
        #: the kernel may keep listings (set when the entry timeout is long, see init)
        self.kernel_dir_cache = False
        #: answer READDIRPLUS with full attributes (the kernel needs no LOOKUP afterwards)
        self.readdirplus = True
        self.dir_hook: _DirCacheHook | None = None
        #: turn libfuse's rename of a file unlinked while open to ``.fuse_hidden*`` into the
        #: real unlink (high-level API only: the low-level adapter never hides files)
        self.hide_renames = True
        #: ``(uid, gid, pid)`` of the request being served; the low-level adapter replaces it
        self.caller: Callable[[], tuple[int, int, int]] = mfusepy.fuse_get_context
        from .union import UnionFS

        #: the engine's stat of an open file (``fstat``); None for a union of another kind
        #: (a ``MountTable``), whose open files are stat'ed by path
        engine = union if isinstance(union, UnionFS) else None
        self._union_fstat = engine.fstat if engine is not None else None
        self._union_lstat_or_none = engine.lstat_or_none if engine is not None else None
        self._union_lstat_child = engine.lstat_child if engine is not None else None
        self._union_created_stat = engine.created_stat if engine is not None else None
        self._union_create_new = engine.create_new if engine is not None else None
        # a MountTable's router (see stable()); a UnionFS has none
        self._route = getattr(union, "route", None)

    # -- set-up -----------------------------------------------------------------------------

    def init_with_config(self, conn: Any, config: Any) -> None:
        """Configure libfuse once the kernel has connected, then report readiness."""
        with contextlib.suppress(Exception):
            self._invalidate.fuse_ptr = mfusepy._libfuse.fuse_get_context().contents.fuse
        if conn is not None:
            # a symlink never changes in place (only a new one replaces it): the kernel may
            # keep its target instead of asking READLINK at every resolution
            conn.want |= conn.capable & _CAP_CACHE_SYMLINKS
        if config is not None:
            opts = self.opts
            timeout = DEFAULT_TIMEOUT if opts is None or opts.timeout is None else opts.timeout

            def option(name: str, default: float) -> float:
                value = opts.fuse_option(name) if opts is not None else None
                return float(value) if isinstance(value, str) else default

            config.use_ino = 1          # st_ino from the engine: stable through copy-up
            config.readdir_ino = 0
            # a file unlinked while open is "hidden" by libfuse (a rename we turn into the
            # real unlink, see rename()): fstat on it still reaches us, by that name
            config.hard_remove = 0
            config.nullpath_ok = 0
            config.entry_timeout = option("entry_timeout", timeout)
            # listings cached by the kernel are dropped when the directory changes through
            # this mount; like entries, only worth keeping when the timeout is long
            self.kernel_dir_cache = config.entry_timeout >= 1.0 and (
                opts is None or opts.cache_readdir)
            self.readdirplus = opts is None or opts.readdirplus
            fuse_ptr = self._invalidate.fuse_ptr
            if self.kernel_dir_cache and fuse_ptr:
                hook = _DirCacheHook()
                with contextlib.suppress(Exception):
                    if hook.install(fuse_ptr):
                        self.dir_hook = hook
            config.attr_timeout = option("attr_timeout", timeout)
            config.negative_timeout = option("negative_timeout", timeout)
            explicit = opts is not None and any(
                opts.fuse_option(k) for k in ("kernel_cache", "auto_cache", "noauto_cache"))
            if explicit:
                config.kernel_cache = 1 if opts.fuse_option("kernel_cache") else 0
                config.auto_cache = 1 if opts.fuse_option("auto_cache") else 0
            else:
                # file data changes only through this mount, so pages stay valid across
                # opens; the one exception, a write through another name of a hard-linked
                # file (its own kernel inode in the high-level API), is handled by
                # _changed(), which invalidates the other names
                config.kernel_cache = 1
        if self._on_ready is not None:
            ready, self._on_ready = self._on_ready, None
            ready()

    def destroy(self, path: str) -> None:
        """Close every handle the kernel did not release (forced unmount)."""
        files, self._files = self._files, {}
        for o in files.values():
            with contextlib.suppress(OSError):
                o.file.close()
        graves, self._graves = self._graves, {}
        for g, _when in graves.values():
            with contextlib.suppress(OSError):
                g.file.close()
        self._reads = _ReadPool(self._reads.limit)

    # -- helpers ----------------------------------------------------------------------------

    def _add(self, f: Any, path: str) -> int:
        fh = next(self._next_fh)
        self._files[fh] = _Open(f, path)
        return fh

    def _moved(self, old: str, new: str, exchange: bool) -> None:
        """Keep the paths of open files right after a rename (of them or of a parent)."""
        if not self._files:
            return
        for o in self._files.values():
            for a, b in ((old, new), (new, old)) if exchange else ((old, new),):
                if o.path == a or o.path.startswith(a + "/"):
                    o.path = b + o.path[len(a):]
                    break

    def _file(self, fh: int | None) -> Any:
        o = self._files.get(fh) if fh is not None else None
        if o is None:
            raise OSError(errno.EBADF, os.strerror(errno.EBADF))
        return o.file

    def _hidden_open(self, path: str | None) -> _Open | None:
        """The open file behind a name libfuse gave to a file unlinked while open (or
        closed a moment ago, see ``release``)."""
        if path is None:
            return None
        if self._hidden and path in self._hidden:
            for o in self._files.values():
                if o.path == path:
                    return o
        grave = self._graves.get(path) if self._graves else None
        if grave is not None:
            return grave[0]
        if self._hidden and path in self._hidden:
            raise OSError(errno.ENOENT, os.strerror(errno.ENOENT), path)
        return None

    def _is_hidden(self, path: str | None) -> bool:
        if path is None:
            return False
        return path in self._hidden or path in self._graves

    def _bury(self, o: _Open) -> None:
        """The last handle of a hidden file closes: keep a read-only duplicate of its host
        descriptor for a moment. A process that looked the file up before it was replaced
        by a rename or unlinked may still open that inode, which works on overlayfs; libfuse
        then asks us to open the hidden name it gave the file, which it has just unlinked."""
        from .upper import HostFile

        try:
            fd = os.dup(o.file.fileno())
        except (OSError, ValueError, AttributeError, io.UnsupportedOperation):
            return
        g = _Open(HostFile(fd, readable=True, writable=False, name=o.path), o.path)
        g.ino = o.ino
        self._graves[o.path] = (g, time.monotonic())
        self._prune_graves()

    def _prune_graves(self) -> None:
        now = time.monotonic()
        while self._graves:
            path, (g, when) = next(iter(self._graves.items()))
            if now - when < _GRAVE_SECONDS and len(self._graves) <= _GRAVES_MAX:
                break
            del self._graves[path]
            with contextlib.suppress(OSError):
                g.file.close()

    def _unlinked(self, path: str | None, fh: int | None) -> _Open:
        """The open file a call without a usable path is about (EBADF if none)."""
        o = self._files.get(fh) if fh is not None else None
        if o is None:
            o = self._hidden_open(path)
        if o is None:
            raise OSError(errno.EBADF, os.strerror(errno.EBADF))
        return o

    @staticmethod
    def _host_fd(o: _Open, change: bool) -> int:
        """The host descriptor of an unlinked open file. Changing it is allowed only when
        the host file is itself unlinked (an upper file): a lower file is never modified."""
        fd = o.file.fileno()
        if change:
            try:
                deleted = os.readlink(f"/proc/self/fd/{fd}").endswith(" (deleted)")
            except OSError:
                deleted = False
            if not deleted:
                raise OSError(errno.EROFS, os.strerror(errno.EROFS))
        return fd

    def _open_stat(self, o: _Open) -> os.stat_result:
        """The attributes of an open file whose name is gone: the host file's, under the
        union's inode number, with no link left."""
        st = os.fstat(self._host_fd(o, change=False))
        return os.stat_result(
            (st.st_mode, o.ino, st.st_dev, 0, st.st_uid, st.st_gid, st.st_size,
             int(st.st_atime), int(st.st_mtime), int(st.st_ctime)),
            {"st_atime_ns": st.st_atime_ns, "st_mtime_ns": st.st_mtime_ns,
             "st_ctime_ns": st.st_ctime_ns, "st_blocks": st.st_blocks,
             "st_blksize": st.st_blksize, "st_rdev": st.st_rdev})

    def _give_to_caller(self, path: str) -> None:
        """Own a new object as the calling user; its group is the caller's, or the parent
        directory's when that has the set-group-ID bit (which the host already applied)."""
        uid, gid, _pid = self.caller()
        if uid == self._uid and gid == self._gid:
            return
        parent = os.path.dirname(path) or "/"
        if self.union.stat(parent).st_mode & _stat.S_ISGID:
            gid = -1
        self._chown(path, uid, gid)

    def _chown(self, path: str, uid: int, gid: int) -> None:
        try:
            self.union.chown(path, uid, gid, follow_symlinks=False)
        except TypeError:
            self.union.chown(path, uid, gid)

    def _note(self, path: str, st: os.stat_result) -> None:
        if st.st_nlink > 1 and not _stat.S_ISDIR(st.st_mode):
            ino = st.st_ino
            names = self._names.get(ino)
            if names is None:
                self._names[ino] = path
            elif type(names) is str:
                if names != path:
                    self._names[ino] = {names, path}
            else:
                names.add(path)
            self._ino_of[path] = ino

    def _names_of(self, ino: int) -> set[str]:
        """The names seen for the hard-linked inode ``ino`` (the stored set, if it is one)."""
        names = self._names.get(ino)
        if names is None:
            return set()
        return {names} if type(names) is str else names

    def _changed(self, path: str, *, including: bool = False, forget: bool = False) -> None:
        """``path`` changed: refresh the kernel's view of its other hard-linked names."""
        ino = self._ino_of.get(path)
        if ino is None:
            return
        names = self._names_of(ino)
        if forget:
            names.discard(path)
            self._ino_of.pop(path, None)
            self._names[ino] = names
        others = [n for n in names if including or n != path]
        self._invalidate(others)

    # -- metadata ---------------------------------------------------------------------------

    def stat(self, path: str | None, fh: int | None = None) -> os.stat_result:
        """The attributes FUSE asks for: the engine's ``lstat``, or for a file unlinked while
        open, its open handle's."""
        if path is None or self._is_hidden(path):
            return self._open_stat(self._unlinked(path, fh))
        st = self.union.lstat(path)
        if st.st_nlink > 1 and (st.st_mode & _S_IFMT) != _S_IFDIR:  # (as _note checks)
            self._note(path, st)
        return st

    def stat_or_none(self, path: str) -> os.stat_result | None:
        """``stat(path)``, or None where it raises ``FileNotFoundError`` (ENOENT): for a
        lookup, which answers a missing name with a negative entry, without the cost of an
        exception where the engine knows the name is absent."""
        get = self._union_lstat_or_none
        if get is None or path is None or self._is_hidden(path):
            try:
                return self.stat(path)
            except FileNotFoundError:
                return None
        st = get(path)
        if st is not None and st.st_nlink > 1 and (st.st_mode & _S_IFMT) != _S_IFDIR:
            self._note(path, st)
        return st

    def stat_child(self, head: str, name: str, path: str) -> os.stat_result | None:
        """``stat_or_none(path)`` where ``path`` is ``name`` in the directory ``head`` (the
        lookup of one name, as the low-level adapter asks it: the engine answers a plain
        lower object without taking the path apart)."""
        get = self._union_lstat_child
        if get is None or self._hidden or self._graves:
            return self.stat_or_none(path)
        st = get(head, name)
        if st is not None and st.st_nlink > 1 and (st.st_mode & _S_IFMT) != _S_IFDIR:
            self._note(path, st)
        return st

    def fstat(self, fh: int) -> os.stat_result:
        """The attributes of the open file ``fh``: exactly what ``stat(path)`` returns for
        the path it is open under (kept up to date across renames), read from its host
        descriptor with one ``os.fstat`` where the engine can vouch for it
        (``UnionFS.fstat``), else by path. EBADF for a handle that is not open; otherwise
        the errors of ``stat``."""
        o = self._files.get(fh)
        if o is None:
            raise OSError(errno.EBADF, os.strerror(errno.EBADF))
        path = o.path
        fast = self._union_fstat
        if fast is None or self._is_hidden(path):
            return self.stat(path, fh)
        st = fast(o.file, path)
        if st.st_nlink > 1 and (st.st_mode & _S_IFMT) != _S_IFDIR:
            self._note(path, st)
        return st

    def getattr(self, path: str | None, fh: int | None = None) -> dict[str, int]:
        return _stat_dict(self.stat(path, fh))

    def readlink(self, path: str) -> str:
        return self.union.readlink(path)

    def opendir(self, path: str) -> int:
        # no engine call: the kernel opens only a directory it has looked up through us
        # (and checked permissions on), and readdir reports any error the engine has
        fh = next(self._next_fh)
        self._dirs[fh] = path
        return fh

    def releasedir(self, path: str | None, fh: int) -> int:
        self._dirs.pop(fh, None)
        self._plus.pop(fh, None)
        return 0

    def stable(self, path: str) -> bool:
        """Whether ``path`` changes only through this mount, so that listings and open
        objects may be kept: always in a ``UnionFS``; in a ``MountTable`` only inside its
        unions (a host directory mounted as a volume changes under the host's hands)."""
        route = self._route
        if route is None:
            return True
        from .union import UnionFS

        try:
            mount, _inner = route(path)
        except (OSError, ValueError):
            return False
        return isinstance(mount.fs, UnionFS)

    def _dir_path(self, path: str | None, fh: int) -> str:
        if path is None:
            path = self._dirs.get(fh)
            if path is None:
                raise OSError(errno.EBADF, os.strerror(errno.EBADF))
        return path

    def listing(self, path: str | None, fh: int = 0) -> list[tuple[bytes, Any]]:
        """The prepared entries of directory ``path`` (without ``.`` and ``..``): encoded
        names with their type and inode number, kept until the directory changes."""
        path = self._dir_path(path, fh)
        out = self._listings.get(path)
        if out is not None:
            return out
        fast = getattr(self.union, "listdir_types", None)
        if fast is not None:
            out = [_dirent(name, mode, ino) for name, mode, ino in fast(path)]
        else:
            out = []
            for entry in self.union.scandir(path):
                st = entry.stat(follow_symlinks=False)
                out.append(_dirent(entry.name, st.st_mode, st.st_ino))
        if self.stable(path):
            if len(self._listings) >= _LISTINGS_MAX:
                self._listings.clear()
            self._listings[path] = out
        return out

    def listing_plus(self, path: str | None, fh: int = 0, *, fresh: bool = True,
                     native: bool = False) -> list[tuple[bytes, Any]]:
        """The entries of directory ``path`` with their full attributes (C ``struct stat``
        for libfuse; ``native``: the ``os.stat_result`` itself): read now when ``fresh`` (a
        listing from its start), else as read for the same handle ``fh``."""
        out = None if fresh else self._plus.get(fh)
        if out is not None:
            return out
        path = self._dir_path(path, fh)
        out = []
        for entry in self.union.scandir(path):
            st = entry.stat(follow_symlinks=False)
            if st.st_nlink > 1:
                # the kernel learns this name here, not from getattr: remember it for
                # the invalidation of hard-linked names (_changed)
                self._note(entry.path, st)
            if native:
                out.append((entry.name.encode("utf-8", "surrogateescape"), st))
                continue
            c = mfusepy.c_stat()
            _fill_stat(c, st)
            out.append((entry.name.encode("utf-8", "surrogateescape"), c))
        if fh in self._dirs and not native:
            self._plus[fh] = out
        return out

    def _dirty(self, *paths: str | None) -> None:
        """``paths`` are created, removed or replaced: their parents' listings changed, and
        no read-only open may reuse an object opened under their names before."""
        for p in paths:
            if p is not None:
                self._reads.drop(p)
                if self._listings:
                    self._listings.pop(os.path.dirname(p) or "/", None)

    def _dirty_tree(self, path: str) -> None:
        """``path`` (a directory, perhaps) moved or went: forget its listings and those of
        everything below it, and the read-only objects opened below it."""
        self._reads.drop_tree(path)
        if self._listings:
            prefix = path.rstrip("/") + "/"
            for key in [k for k in self._listings if k == path or k.startswith(prefix)]:
                del self._listings[key]

    def readdir(self, path: str | None, fh: int) -> list:
        """mfusepy's form of a listing: ``(name, attrs, 0)`` with ``.`` and ``..`` first."""
        out: list = [(".", {"st_mode": _stat.S_IFDIR}, 0), ("..", {"st_mode": _stat.S_IFDIR}, 0)]
        for name, c in self.listing(path, fh):
            out.append((name.decode("utf-8", "surrogateescape"),
                        {"st_mode": c.st_mode, "st_ino": c.st_ino}, 0))
        return out

    def statfs(self, path: str) -> dict[str, int]:
        sv = self.union.statvfs(path)
        return {k: getattr(sv, k) for k in (
            "f_bsize", "f_frsize", "f_blocks", "f_bfree", "f_bavail", "f_files", "f_ffree",
            "f_favail", "f_namemax")}

    def access(self, path: str, amode: int) -> int:
        self.union.check_access(path, amode, follow_symlinks=False)
        return 0

    def chmod(self, path: str | None, mode: int, fh: int | None = None) -> int:
        if path is None or self._is_hidden(path):
            os.fchmod(self._host_fd(self._unlinked(path, fh), change=True), _stat.S_IMODE(mode))
        else:
            self._reads.drop(path)
            self.union.chmod(path, _stat.S_IMODE(mode))
            self._changed(path)  # type: ignore[arg-type]
        return 0

    def chown(self, path: str | None, uid: int, gid: int, fh: int | None = None) -> int:
        if path is None or self._is_hidden(path):
            os.fchown(self._host_fd(self._unlinked(path, fh), change=True), uid, gid)
        else:
            self._reads.drop(path)
            self._chown(path, uid, gid)
            self._changed(path)
        return 0

    def utimens(self, path: str | None, times: tuple[Any, Any] | None = None,
                fh: int | None = None) -> int:
        now = time.time_ns()
        if times is None:
            atime = mtime = now
        else:
            atime, mtime = (now if t == "now" else t for t in times)
            if atime is None or mtime is None:  # UTIME_OMIT: keep the current value
                st = self.stat(path, fh)
                atime = st.st_atime_ns if atime is None else atime
                mtime = st.st_mtime_ns if mtime is None else mtime
        if path is None or self._is_hidden(path):
            os.utime(self._host_fd(self._unlinked(path, fh), change=True), ns=(atime, mtime))
        else:
            self._reads.drop(path)
            try:
                self.union.utime(path, ns=(atime, mtime), follow_symlinks=False)
            except TypeError:
                self.union.utime(path, ns=(atime, mtime))
            self._changed(path)
        return 0

    # -- namespace --------------------------------------------------------------------------

    def mknod(self, path: str, mode: int, dev: int) -> int:
        self._dirty(path)
        self.union.mknod(path, mode, dev)
        self._give_to_caller(path)
        return 0

    def mkdir(self, path: str, mode: int) -> int:
        self._dirty(path)
        self.union.mkdir(path, mode)
        self._give_to_caller(path)
        return 0

    def unlink(self, path: str) -> int:
        self._dirty(path)
        if self._hidden.pop(path, None) is not None:
            return 0  # the engine unlinked it when libfuse hid it
        self.union.unlink(path)
        self._changed(path, forget=True)
        return 0

    def rmdir(self, path: str) -> int:
        self._dirty(path)
        self._dirty_tree(path)
        self.union.rmdir(path)
        return 0

    def symlink(self, target: str, source: str) -> int:
        """``target`` is the new link's path, ``source`` what it points to (mfusepy order)."""
        self._dirty(target)
        self.union.symlink(source, target)
        self._give_to_caller(target)
        return 0

    def rename(self, old: str, new: str, flags: int = 0) -> int:
        self._dirty(old, new)
        self._dirty_tree(old)
        self._dirty_tree(new)
        if (flags == 0 and self.hide_renames and self._files
                and os.path.basename(new).startswith(_HIDDEN_PREFIX)):
            # libfuse hides a file unlinked while open by renaming it; do the real unlink
            # instead (nothing named .fuse_hidden* ever reaches the upper layer) and keep
            # serving the open handles under the new name
            handles = [o for o in self._files.values() if o.path == old]
            if handles:
                ino = self.union.lstat(old).st_ino
                self.union.unlink(old)
                for o in handles:
                    o.path, o.ino = new, ino
                self._hidden[new] = ino
                self._changed(old, forget=True)
                return 0
        self.union.rename(old, new, flags)
        self._moved(old, new, bool(flags & RENAME_EXCHANGE))
        self._changed(old, forget=True)
        self._changed(new, forget=True)
        self._rename_names(old, new, bool(flags & RENAME_EXCHANGE))
        return 0

    def _rename_names(self, old: str, new: str, exchange: bool) -> None:
        """Hard-linked names below a renamed directory move with it (both ways for
        RENAME_EXCHANGE), so a later write through another name still invalidates them."""
        moves = ((old, new), (new, old)) if exchange else ((old, new),)

        def moved(path: str) -> str:
            for a, b in moves:
                if path.startswith(a + "/"):
                    return b + path[len(a):]
            return path

        if not any(moved(p) != p for p in self._ino_of):
            return
        self._ino_of = {moved(p): ino for p, ino in self._ino_of.items()}
        for ino, names in self._names.items():
            self._names[ino] = moved(names) if type(names) is str else {moved(p) for p in names}

    def link(self, target: str, source: str) -> int:
        """A hard link ``target`` to the existing ``source`` (mfusepy order)."""
        self._dirty(target, source)
        self.union.link(source, target)
        st = self.union.lstat(target)
        self._note(source, st)
        self._note(target, st)
        self._changed(target)  # every other name, the source included
        return 0

    # -- files ------------------------------------------------------------------------------

    def _reopen(self, path: str, flags: int) -> int:
        """Open once more a file unlinked while open (libfuse gave it a hidden name): the
        kernel may still hold its inode from a lookup made before the unlink or the rename
        over it, and opening that inode must work, as it does on overlayfs. Reopens the
        host file of an open handle; a change needs it to be an upper file (EROFS: a lower
        file is never written)."""
        return self.reopen(self._unlinked(path, None), path, flags)

    def reopen(self, o: _Open, path: str, flags: int) -> int:
        """A new handle on the host file of the open (or kept) file ``o``, with ``flags``;
        EROFS for a change to a file that is not an unlinked upper file."""
        change = bool(flags & (os.O_WRONLY | os.O_RDWR | os.O_TRUNC | os.O_APPEND))
        fd = self._host_fd(o, change=change)
        keep = flags & (os.O_ACCMODE | os.O_APPEND | os.O_TRUNC)
        from .upper import HostFile

        new = os.open(f"/proc/self/fd/{fd}", keep | os.O_CLOEXEC)
        acc = flags & os.O_ACCMODE
        f = HostFile(new, readable=acc != os.O_WRONLY, writable=acc != os.O_RDONLY,
                     append=bool(flags & os.O_APPEND), name=path)
        fh = self._add(f, path)
        self._files[fh].ino = o.ino
        return fh

    def open(self, path: str, flags: int) -> int:
        if self._is_hidden(path):
            return self._reopen(path, flags)
        if flags & (os.O_WRONLY | os.O_RDWR | os.O_TRUNC | os.O_APPEND):
            self._reads.drop(path)
            fh = self._add(self.union.open(path, flags), path)
            # a copy-up may have broken a hard link: every name's attributes the kernel
            # keeps are stale, this one's too (its link count fell to 1)
            self._changed(path, including=True)
            return fh
        if flags & os.O_DIRECT or not self.stable(path):
            return self._add(self.union.open(path, flags), path)
        f = self._reads.get(path)
        if f is None:
            f = self.union.open(path, flags)
            self._reads.add(path, f)
        fh = next(self._next_fh)
        self._files[fh] = _Open(f, path, shared=True)
        self._key[fh] = path
        return fh

    def create(self, path: str, mode: int, flags: int = os.O_WRONLY) -> int:
        self._dirty(path)
        f = self.union.open(path, flags | os.O_CREAT, perm=_stat.S_IMODE(mode))
        try:
            self._give_to_caller(path)
            return self._add(f, path)
        except BaseException:
            f.close()
            raise

    def create_stat(self, path: str, mode: int, flags: int = os.O_WRONLY
                    ) -> tuple[int, os.stat_result]:
        """``create``, and the new file's attributes: exactly what ``fstat(fh)`` returns
        right after it, with no host call where the engine kept the stat it took when it
        made the file (``UnionFS.created_stat``); for a caller who is the daemon's own user
        (nothing to give away) and a name the engine knows is free, both in one engine call
        (``UnionFS.create_new``). For a create handler, which replies with both before
        anything else can use the handle. Errors as ``create``."""
        fast = self._union_create_new
        if fast is not None:
            uid, gid, _pid = self.caller()
            if uid == self._uid and gid == self._gid:  # (_give_to_caller: nothing to give)
                self._dirty(path)
                made = fast(path, flags | os.O_CREAT, mode & 0o7777)
                if made is not None:
                    f, st = made
                    fh = next(self._next_fh)  # (_add)
                    self._files[fh] = _Open(f, path)
                    return fh, st if st is not None else self._fstat_or_release(fh)
        fh = self.create(path, mode, flags)
        get = self._union_created_stat
        st = get(self._files[fh].file) if get is not None else None
        return fh, st if st is not None else self._fstat_or_release(fh)

    def _fstat_or_release(self, fh: int) -> os.stat_result:
        """``fstat(fh)`` of a handle just made; if that fails, the handle is released (no
        one else has it yet) and the error raised."""
        try:
            return self.fstat(fh)
        except BaseException:
            self.release(None, fh)
            raise

    def read(self, path: str | None, size: int, offset: int, fh: int) -> bytes:
        return self._file(fh).pread(size, offset)

    def read_buf(self, path: str | None, bufpp: Any, size: int, offset: int, fh: int) -> int:
        """``read`` without copying through Python: hand libfuse the host descriptor and
        offset, and it reads (or splices) straight into the reply."""
        f = self._file(fh)
        try:
            fd = f.fileno()
        except (OSError, ValueError, AttributeError, io.UnsupportedOperation):
            fd = -1
        vec = _libc_malloc(ctypes.sizeof(_BufVec))
        if not vec:
            raise OSError(errno.ENOMEM, os.strerror(errno.ENOMEM))
        v = _BufVec.from_address(vec)
        v.count, v.idx, v.off = 1, 0, 0
        b = v.buf[0]
        if fd >= 0:
            b.size, b.flags, b.mem, b.fd, b.pos = size, _BUF_IS_FD | _BUF_FD_SEEK, None, fd, offset
        else:
            data = f.pread(size, offset)
            mem = _libc_malloc(max(1, len(data)))
            if not mem:
                _libc_free(vec)
                raise OSError(errno.ENOMEM, os.strerror(errno.ENOMEM))
            ctypes.memmove(mem, data, len(data))
            b.size, b.flags, b.mem, b.fd, b.pos = len(data), 0, mem, -1, 0
        ctypes.cast(bufpp, ctypes.POINTER(ctypes.c_void_p))[0] = vec
        return 0

    def write(self, path: str | None, data: bytes, offset: int, fh: int) -> int:
        o = self._files.get(fh)
        if o is None:
            raise OSError(errno.EBADF, os.strerror(errno.EBADF))
        n = o.file.pwrite(data, offset)
        if self._ino_of and path is not None and path in self._ino_of:
            self._changed(path)  # another name of this file must not show stale pages
        return n

    def truncate(self, path: str | None, length: int, fh: int | None = None) -> int:
        if fh is not None and fh in self._files:
            if path is not None:
                self._reads.drop(path)
            self._files[fh].file.truncate(length)
            if path is not None:
                self._changed(path)
        elif self._is_hidden(path):
            os.ftruncate(self._host_fd(self._unlinked(path, None), change=True), length)
        elif path is not None:
            self._reads.drop(path)
            self.union.truncate(path, length)
            self._changed(path)
        else:
            raise OSError(errno.EBADF, os.strerror(errno.EBADF))
        return 0

    def fsync(self, path: str | None, datasync: int, fh: int) -> int:
        f = self._file(fh)
        if self.opts is not None and self.opts.volatile:
            return 0  # a volatile mount makes no sync calls (kernel overlayfs' volatile)
        if datasync and hasattr(f, "fdatasync"):
            f.fdatasync()
        else:
            f.fsync()
        return 0

    def fsyncdir(self, path: str, datasync: int, fh: int) -> int:
        """Flush the directory's upper part (a directory of the lower layers alone has nothing
        to flush: they never change)."""
        upper = getattr(self.union, "upper", None)
        host = upper.host_path(path) if upper is not None else None
        if host is None or (self.opts is not None and self.opts.volatile):
            return 0
        try:
            fd = os.open(host, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
        except (FileNotFoundError, NotADirectoryError):
            return 0
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        return 0

    def release(self, path: str | None, fh: int) -> int:
        o = self._files.pop(fh, None)
        if o is None:
            return 0
        if self._graves:
            self._prune_graves()
        if (self._hidden and o.path in self._hidden
                and not any(x.path == o.path for x in self._files.values())):
            self._bury(o)
        if o.shared:
            self._reads.release(self._key.pop(fh, o.path), o.file)
        else:
            o.file.close()
        return 0

    # -- extended attributes ----------------------------------------------------------------

    def getxattr(self, path: str, name: str, position: int = 0) -> bytes:
        if name.startswith(XATTR_WHICH):
            return self._which(path, name)
        if name == XATTR_PID and path == "/":
            return str(os.getpid()).encode()
        try:
            return self.union.getxattr(path, name, follow_symlinks=False)
        except TypeError:
            return self.union.getxattr(path, name)

    def setxattr(self, path: str, name: str, value: bytes, options: int,
                 position: int = 0) -> int:
        self._reads.drop(path)
        try:
            self.union.setxattr(path, name, value, options, follow_symlinks=False)
        except TypeError:
            self.union.setxattr(path, name, value, options)
        self._changed(path)
        return 0

    def listxattr(self, path: str) -> list[str]:
        try:
            return list(self.union.listxattr(path, follow_symlinks=False))
        except TypeError:
            return list(self.union.listxattr(path))

    def removexattr(self, path: str, name: str) -> int:
        self._reads.drop(path)
        try:
            self.union.removexattr(path, name, follow_symlinks=False)
        except TypeError:
            self.union.removexattr(path, name)
        self._changed(path)
        return 0

    def _which(self, path: str, name: str) -> bytes:
        if name != XATTR_WHICH:
            child = name[len(XATTR_WHICH) + 1:]
            if not name.startswith(XATTR_WHICH + ".") or not child or "/" in child:
                raise OSError(errno.ENODATA, os.strerror(errno.ENODATA))
            path = path.rstrip("/") + "/" + child
        # ASCII JSON: names that are not UTF-8 travel as \udcXX escapes
        return json.dumps(provenance_dict(self.union.which(path))).encode()


def provenance_dict(prov: Any) -> dict[str, Any]:
    """A JSON-ready view of an engine ``Provenance`` (layers by name), with its description
    in words under ``"text"``."""
    import dataclasses

    def plain(value: Any) -> Any:
        if value is None or isinstance(value, str | int | float | bool):
            return value
        if isinstance(value, bytes):
            return value.decode("utf-8", "replace")
        if isinstance(value, list | tuple | set | frozenset):
            return [plain(v) for v in value]
        if isinstance(value, dict):
            return {str(k): plain(v) for k, v in value.items()}
        if hasattr(value, "value") and hasattr(value, "name") and not hasattr(value, "lookup"):
            return plain(value.value)  # an enum
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
        name = getattr(value, "name", None)
        return name if isinstance(name, str) else str(value)

    out = plain(prov)
    if not isinstance(out, dict):
        out = {"value": out}
    reasons = getattr(prov, "reasons", None)
    describe = getattr(prov, "describe", None)
    if reasons:
        out["text"] = "\n".join(str(r) for r in reasons)
    else:
        out["text"] = describe() if callable(describe) else str(prov)
    return out


class _FUSE(mfusepy.FUSE):
    """mfusepy's binding with the libfuse 3 arguments it drops passed on: rename flags,
    the file handle of ``fchmod``/``fchown``/``ftruncate``/``futimens``, and raw
    ``UTIME_NOW``/``UTIME_OMIT``."""

    #: set for a threaded daemon: one request at a time in Python (``FuseOperations`` keeps
    #: state across engine calls, which release the GIL); libfuse's own work stays parallel
    lock: threading.Lock | None = None

    def _wrapper(self, func: Any, *args: Any, **kwargs: Any) -> Any:
        lock = self.lock
        if lock is None:
            return super()._wrapper(func, *args, **kwargs)
        with lock:
            return super()._wrapper(func, *args, **kwargs)

    def _path(self, path: bytes | None) -> str | None:
        return None if path is None else path.decode(self.encoding, self.errors)

    @staticmethod
    def _fh(fip: Any) -> int | None:
        return fip.contents.fh if fip else None

    def getattr_fuse_3(self, path: bytes | None, buf: Any, fip: Any) -> int:
        # fill the C struct directly (libfuse zeroed it): the hottest call of all
        _fill_stat(buf.contents, self.operations.stat(self._path(path), self._fh(fip)))
        return 0

    def opendir(self, path: bytes, fip: Any) -> int:
        ops = self.operations
        p = self._path(path)
        fip.contents.fh = ops.opendir(p)
        hook = ops.dir_hook
        llfi = hook.current if hook is not None else None
        if llfi and ops.stable(p):
            # the kernel keeps the listing across opens until the directory changes
            llfi.contents.cache_readdir = 1
            llfi.contents.keep_cache = 1
        return 0

    def readdir_fuse_3(self, path: bytes | None, buf: Any, filler: Any, offset: int,
                       fip: Any, flags: int) -> int:
        # prepared entries straight into libfuse's filler, each with its offset (index + 1):
        # libfuse 3.14 passes attributes on to the kernel only from a filler given offsets
        # (without them it answers READDIRPLUS with "no attributes" for every entry), and
        # offsets let each request start where the last one ended
        ops = self.operations
        fh = fip.contents.fh
        if flags & _READDIR_PLUS and ops.readdirplus:
            entries, fill = ops.listing_plus(self._path(path), fh, fresh=offset == 0), \
                _FILL_DIR_PLUS
        else:
            entries, fill = ops.listing(self._path(path), fh), 0
        i = offset
        while i < 2:
            name, c = _DOTS[i]
            i += 1
            if filler(buf, name, c, i, 0):
                return 0
        for name, c in itertools.islice(entries, i - 2, None):
            i += 1
            if filler(buf, name, c, i, fill):
                break
        return 0

    def create(self, path: bytes, mode: int, fip: Any) -> int:
        # mfusepy's create inspects the handler's signature on every call
        fi = fip.contents
        fi.fh = self.operations.create(self._path(path), mode, fi.flags)
        return 0

    def read_buf(self, path: bytes | None, bufpp: Any, size: int, offset: int, fip: Any) -> int:
        return self.operations.read_buf(self._path(path), bufpp, size, offset, fip.contents.fh)

    def rename_fuse_3(self, old: bytes, new: bytes, flags: int) -> int:
        return self.operations.rename(self._path(old), self._path(new), flags)

    def chmod_fuse_3(self, path: bytes | None, mode: int, fip: Any) -> int:
        return self.operations.chmod(self._path(path), mode, self._fh(fip))

    def chown_fuse_3(self, path: bytes | None, uid: int, gid: int, fip: Any) -> int:
        if mfusepy.c_uid_t(uid + 1).value == 0:
            uid = -1
        if mfusepy.c_gid_t(gid + 1).value == 0:
            gid = -1
        return self.operations.chown(self._path(path), uid, gid, self._fh(fip))

    def truncate_fuse_3(self, path: bytes | None, length: int, fip: Any) -> int:
        return self.operations.truncate(self._path(path), length, self._fh(fip))

    def utimens_fuse_3(self, path: bytes | None, buf: Any, fip: Any) -> int:
        times = None
        if buf:
            def one(ts: Any) -> int | str | None:
                if ts.tv_nsec == _UTIME_NOW:
                    return "now"
                if ts.tv_nsec == _UTIME_OMIT:
                    return None
                return ts.tv_sec * 1_000_000_000 + ts.tv_nsec
            times = (one(buf.contents.actime), one(buf.contents.modtime))
        return self.operations.utimens(self._path(path), times, self._fh(fip))


def run_fuse(union: Any, mountpoint: str, opts: MountOptions | None = None, *,
             debug: bool = False, on_ready: Callable[[], None] | None = None) -> None:
    """Mount ``union`` at ``mountpoint`` and serve in this thread until unmounted or until
    SIGTERM/SIGINT/SIGHUP (libfuse unmounts before returning). Raises ``MountError`` when
    libfuse cannot mount (its own message is on stderr)."""
    from .mount import fuse_kwargs

    ops = FuseOperations(union, opts, on_ready)
    kwargs = fuse_kwargs(opts, debug=debug) if opts is not None else {}
    if os.geteuid() == 0:
        # as root, serve every user (containers run as many uids), with the kernel doing
        # the permission checks on our attributes, as kernel overlayfs does
        kwargs.setdefault("allow_other", True)
    kwargs.setdefault("default_permissions", True)
    threaded = opts is not None and opts.threaded
    from .mount import choose_api

    if choose_api(opts) == "lowlevel":
        from .fuse_ll import run_lowlevel

        run_lowlevel(ops, mountpoint, opts, kwargs, debug=debug, threaded=threaded)
        return
    try:
        fuse_cls = _FUSE
        if threaded:
            class _Locked(_FUSE):
                lock = threading.Lock()

            fuse_cls = _Locked
        fuse_cls(ops, mountpoint, foreground=True, nothreads=not threaded, **kwargs)
    except RuntimeError as e:  # fuse_main's status; libfuse has printed the reason
        from .mount import MountError

        raise MountError(f"libfuse could not mount {mountpoint} (status {e})") from None


__all__ = ["FuseOperations", "provenance_dict", "run_fuse"]
