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
import stat as _stat
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

if not os.environ.get("FUSE_LIBRARY_PATH") and not os.environ.get("FUSE_LIBRARY_NAME"):
    # libfuse 3 by its soname: dlopen finds it without find_library's ldconfig subprocess
    # (the mount is live sooner); mfusepy checks the version it got either way
    os.environ["FUSE_LIBRARY_PATH"] = "libfuse3.so.3"

import mfusepy  # after the library choice above

from .mount import DEFAULT_TIMEOUT, XATTR_PID, XATTR_WHICH, MountOptions

if mfusepy.fuse_version_major != 3:  # pragma: no cover - depends on the host
    raise ImportError(
        f"unionfs needs libfuse 3, but mfusepy loaded libfuse "
        f"{mfusepy.fuse_version_major}.{mfusepy.fuse_version_minor}; "
        "set FUSE_LIBRARY_PATH=libfuse3.so.3")

RENAME_NOREPLACE = 1
RENAME_EXCHANGE = 2
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


class _Open:
    """One open file: the engine's file object, the union path it is open under (kept up to
    date across renames), and once it is unlinked, the union inode number it had."""

    __slots__ = ("file", "ino", "path")

    def __init__(self, file: Any, path: str) -> None:
        self.file = file
        self.path = path
        self.ino = 0


class _Invalidator:
    """Drops the kernel's cached attributes of other names of a hard-linked file.

    libfuse's high-level API gives each name its own kernel inode, so after ``link``, an
    unlink, a write or a copy-up through one name the kernel still holds the old ``st_nlink``,
    size or times for the others until their attribute timeout. ``fuse_invalidate_path`` fixes
    that, but it may wait for a page lock held by a request this daemon has yet to answer, so
    it runs on its own thread; the request waits for it a short while only.
    """

    def __init__(self) -> None:
        self.fuse_ptr: int | None = None
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        fn = mfusepy._libfuse.fuse_invalidate_path
        fn.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
        fn.restype = ctypes.c_int
        self._fn = fn

    def __call__(self, paths: Iterable[str], wait: float = 0.2) -> None:
        todo = [p.encode("utf-8", "surrogateescape") for p in paths]
        if not todo or self.fuse_ptr is None:
            return
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="unionfs-inval",
                                             daemon=True)
            self._thread.start()
        done = threading.Event()
        self._queue.put((todo, done))
        done.wait(wait)

    def _run(self) -> None:
        while True:
            todo, done = self._queue.get()
            for path in todo:
                self._fn(self.fuse_ptr, path)  # -ENOENT for a name the kernel never saw
            done.set()


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
        # the names seen for each hard-linked inode (nlink > 1), for cache invalidation
        self._names: dict[int, set[str]] = {}
        self._ino_of: dict[str, int] = {}
        self._invalidate = _Invalidator()

    # -- set-up -----------------------------------------------------------------------------

    def init_with_config(self, conn: Any, config: Any) -> None:
        """Configure libfuse once the kernel has connected, then report readiness."""
        with contextlib.suppress(Exception):
            self._invalidate.fuse_ptr = mfusepy._libfuse.fuse_get_context().contents.fuse
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
        """The open file behind a name libfuse gave to a file unlinked while open."""
        if path is None or not self._hidden:
            return None
        if path not in self._hidden:
            return None
        for o in self._files.values():
            if o.path == path:
                return o
        raise OSError(errno.ENOENT, os.strerror(errno.ENOENT), path)

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
        uid, gid, _pid = mfusepy.fuse_get_context()
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
            self._names.setdefault(st.st_ino, set()).add(path)
            self._ino_of[path] = st.st_ino

    def _changed(self, path: str, *, including: bool = False, forget: bool = False) -> None:
        """``path`` changed: refresh the kernel's view of its other hard-linked names."""
        ino = self._ino_of.get(path)
        if ino is None:
            return
        names = self._names.get(ino, set())
        if forget:
            names.discard(path)
            self._ino_of.pop(path, None)
        others = [n for n in names if including or n != path]
        self._invalidate(others)

    # -- metadata ---------------------------------------------------------------------------

    def stat(self, path: str | None, fh: int | None = None) -> os.stat_result:
        """The attributes FUSE asks for: the engine's ``lstat``, or for a file unlinked while
        open, its open handle's."""
        if path is None or (self._hidden and path in self._hidden):
            return self._open_stat(self._unlinked(path, fh))
        st = self.union.lstat(path)
        if st.st_nlink > 1:
            self._note(path, st)
        return st

    def getattr(self, path: str | None, fh: int | None = None) -> dict[str, int]:
        return _stat_dict(self.stat(path, fh))

    def readlink(self, path: str) -> str:
        return self.union.readlink(path)

    def opendir(self, path: str) -> int:
        self.union.lstat(path)
        fh = next(self._next_fh)
        self._dirs[fh] = path
        return fh

    def releasedir(self, path: str | None, fh: int) -> int:
        self._dirs.pop(fh, None)
        return 0

    def readdir(self, path: str | None, fh: int) -> list:
        if path is None:
            path = self._dirs.get(fh)
            if path is None:
                raise OSError(errno.EBADF, os.strerror(errno.EBADF))
        out: list = [(".", {"st_mode": _stat.S_IFDIR}, 0), ("..", {"st_mode": _stat.S_IFDIR}, 0)]
        fast = getattr(self.union, "listdir_types", None)
        if fast is not None:
            out.extend((name, {"st_mode": mode, "st_ino": ino}, 0)
                       for name, mode, ino in fast(path))
            return out
        for entry in self.union.scandir(path):
            st = entry.stat(follow_symlinks=False)
            out.append((entry.name, {"st_mode": st.st_mode, "st_ino": st.st_ino}, 0))
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
        if path is None or path in self._hidden:
            os.fchmod(self._host_fd(self._unlinked(path, fh), change=True), _stat.S_IMODE(mode))
        else:
            self.union.chmod(path, _stat.S_IMODE(mode))
            self._changed(path)  # type: ignore[arg-type]
        return 0

    def chown(self, path: str | None, uid: int, gid: int, fh: int | None = None) -> int:
        if path is None or path in self._hidden:
            os.fchown(self._host_fd(self._unlinked(path, fh), change=True), uid, gid)
        else:
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
        if path is None or path in self._hidden:
            os.utime(self._host_fd(self._unlinked(path, fh), change=True), ns=(atime, mtime))
        else:
            try:
                self.union.utime(path, ns=(atime, mtime), follow_symlinks=False)
            except TypeError:
                self.union.utime(path, ns=(atime, mtime))
            self._changed(path)
        return 0

    # -- namespace --------------------------------------------------------------------------

    def mknod(self, path: str, mode: int, dev: int) -> int:
        self.union.mknod(path, mode, dev)
        self._give_to_caller(path)
        return 0

    def mkdir(self, path: str, mode: int) -> int:
        self.union.mkdir(path, mode)
        self._give_to_caller(path)
        return 0

    def unlink(self, path: str) -> int:
        if self._hidden.pop(path, None) is not None:
            return 0  # the engine unlinked it when libfuse hid it
        self.union.unlink(path)
        self._changed(path, forget=True)
        return 0

    def rmdir(self, path: str) -> int:
        self.union.rmdir(path)
        return 0

    def symlink(self, target: str, source: str) -> int:
        """``target`` is the new link's path, ``source`` what it points to (mfusepy order)."""
        self.union.symlink(source, target)
        self._give_to_caller(target)
        return 0

    def rename(self, old: str, new: str, flags: int = 0) -> int:
        if flags == 0 and os.path.basename(new).startswith(_HIDDEN_PREFIX) and self._files:
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
        return 0

    def link(self, target: str, source: str) -> int:
        """A hard link ``target`` to the existing ``source`` (mfusepy order)."""
        self.union.link(source, target)
        st = self.union.lstat(target)
        self._note(source, st)
        self._note(target, st)
        self._changed(target)  # every other name, the source included
        return 0

    # -- files ------------------------------------------------------------------------------

    def open(self, path: str, flags: int) -> int:
        fh = self._add(self.union.open(path, flags), path)
        if flags & (os.O_WRONLY | os.O_RDWR | os.O_TRUNC):
            self._changed(path)  # a copy-up may have broken a hard link
        return fh

    def create(self, path: str, mode: int, flags: int = os.O_WRONLY) -> int:
        f = self.union.open(path, flags | os.O_CREAT, perm=_stat.S_IMODE(mode))
        try:
            self._give_to_caller(path)
            return self._add(f, path)
        except BaseException:
            f.close()
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
            self._files[fh].file.truncate(length)
            if path is not None:
                self._changed(path)
        elif path is not None and path in self._hidden:
            self._unlinked(path, None).file.truncate(length)
        elif path is not None:
            self.union.truncate(path, length)
            self._changed(path)
        else:
            raise OSError(errno.EBADF, os.strerror(errno.EBADF))
        return 0

    def fsync(self, path: str | None, datasync: int, fh: int) -> int:
        f = self._file(fh)
        if datasync and hasattr(f, "fdatasync"):
            f.fdatasync()
        else:
            f.fsync()
        return 0

    def release(self, path: str | None, fh: int) -> int:
        o = self._files.pop(fh, None)
        if o is not None:
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

    def _path(self, path: bytes | None) -> str | None:
        return None if path is None else path.decode(self.encoding, self.errors)

    @staticmethod
    def _fh(fip: Any) -> int | None:
        return fip.contents.fh if fip else None

    def getattr_fuse_3(self, path: bytes | None, buf: Any, fip: Any) -> int:
        # fill the C struct directly (libfuse zeroed it): the hottest call of all
        st = self.operations.stat(self._path(path), self._fh(fip))
        c = buf.contents
        c.st_ino, c.st_mode, c.st_nlink = st.st_ino, st.st_mode, st.st_nlink
        c.st_uid, c.st_gid, c.st_rdev, c.st_size = st.st_uid, st.st_gid, st.st_rdev, st.st_size
        c.st_blksize, c.st_blocks = st.st_blksize or 4096, st.st_blocks or 0
        c.st_atimespec.tv_sec, c.st_atimespec.tv_nsec = divmod(st.st_atime_ns, 1_000_000_000)
        c.st_mtimespec.tv_sec, c.st_mtimespec.tv_nsec = divmod(st.st_mtime_ns, 1_000_000_000)
        c.st_ctimespec.tv_sec, c.st_ctimespec.tv_nsec = divmod(st.st_ctime_ns, 1_000_000_000)
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
    try:
        _FUSE(ops, mountpoint, foreground=True, nothreads=not threaded, **kwargs)
    except RuntimeError as e:  # fuse_main's status; libfuse has printed the reason
        from .mount import MountError

        raise MountError(f"libfuse could not mount {mountpoint} (status {e})") from None


__all__ = ["FuseOperations", "provenance_dict", "run_fuse"]
