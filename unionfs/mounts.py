"""Mounts on top of a union: a composite filesystem, and a host directory as a filesystem.

A container's view is its ``UnionFS`` with volumes mounted in at some paths. Two pieces make
that view, both shaped like ``os`` (the same method names as ``UnionFS``) so every consumer
(the built-in shell, ``cp``, the FUSE adapter) takes either:

- ``HostFS(directory, read_only=False)``: a host directory, or a single host file, seen as a
  filesystem rooted at ``/``. No path ever leaves it: ``..`` stops at its root and symlinks are
  resolved inside it (an absolute target is taken from its root, as in a chroot), walking the
  path one component at a time with ``O_NOFOLLOW`` directory descriptors so a symlink swapped
  in by another process cannot redirect the operation either. With ``read_only`` every change
  fails with ``EROFS``.
- ``MountTable(root_fs, mounts)``: routes each path to the mount with the longest matching
  prefix, the way the kernel's mount table does. Symlinks are resolved over the whole view (a
  link inside the root filesystem may point into a volume, and the reverse), so each mounted
  filesystem only ever sees paths without symlinks. Renames and hard links between mounts fail
  with ``EXDEV``; removing or renaming a mount point fails with ``EBUSY``; writing through a
  read-only mount fails with ``EROFS``.

This module knows nothing of images or containers (``imagesim`` builds on it, never the reverse).
"""

from __future__ import annotations

import errno
import io
import os
import stat as _stat
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, BinaryIO, Protocol

from . import path as _path
from .errors import (
    IsADir,
    Loop,
    NotADir,
    NotFound,
    ReadOnly,
    UnionFSError,
    from_errno,
    from_oserror,
)

#: how many symlinks one path resolution may follow (Linux's MAXSYMLINKS)
MAX_SYMLINKS = 40

_WRITE_CHARS = set("wax+")


class FileSystem(Protocol):
    """The ``os``-shaped calls a mount must answer (``UnionFS``, ``HostFS``, ``MountTable``)."""

    def lstat(self, path: str) -> os.stat_result: ...
    def stat(self, path: str) -> os.stat_result: ...
    def listdir(self, path: str) -> list[str]: ...
    def open(self, path: str, mode: str = "rb") -> BinaryIO: ...
    def readlink(self, path: str) -> str: ...
    def mkdir(self, path: str, mode: int = 0o777) -> None: ...
    def rmdir(self, path: str) -> None: ...
    def unlink(self, path: str) -> None: ...
    def rename(self, src: str, dst: str) -> None: ...
    def symlink(self, target: str, path: str) -> None: ...
    def link(self, src: str, dst: str) -> None: ...
    def chmod(self, path: str, mode: int) -> None: ...
    def chown(self, path: str, uid: int, gid: int) -> None: ...
    def truncate(self, path: str, size: int) -> None: ...


@dataclass(frozen=True, slots=True)
class DirEntry:
    """One entry of ``scandir``: like ``os.DirEntry`` (never follows symlinks for the kind)."""

    name: str
    path: str
    st: os.stat_result

    def is_dir(self, *, follow_symlinks: bool = False) -> bool:
        return _stat.S_ISDIR(self.st.st_mode)

    def is_file(self, *, follow_symlinks: bool = False) -> bool:
        return _stat.S_ISREG(self.st.st_mode)

    def is_symlink(self) -> bool:
        return _stat.S_ISLNK(self.st.st_mode)

    def stat(self, *, follow_symlinks: bool = False) -> os.stat_result:
        return self.st

    def inode(self) -> int:
        return self.st.st_ino


def _open_flags(mode: str) -> int:
    """``open()`` mode string (binary only) -> ``os.open`` flags. EINVAL for text modes."""
    core = mode.replace("b", "")
    table = {
        "r": os.O_RDONLY, "r+": os.O_RDWR,
        "w": os.O_WRONLY | os.O_CREAT | os.O_TRUNC, "w+": os.O_RDWR | os.O_CREAT | os.O_TRUNC,
        "a": os.O_WRONLY | os.O_CREAT | os.O_APPEND, "a+": os.O_RDWR | os.O_CREAT | os.O_APPEND,
        "x": os.O_WRONLY | os.O_CREAT | os.O_EXCL, "x+": os.O_RDWR | os.O_CREAT | os.O_EXCL,
    }
    if "b" not in mode or core not in table:
        raise from_errno(errno.EINVAL, None, f"unsupported open mode {mode!r} (binary only)")
    return table[core] | os.O_CLOEXEC


def _is_write_mode(mode: str | int) -> bool:
    if isinstance(mode, int):
        return bool(mode & (os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND))
    return bool(_WRITE_CHARS & set(mode))


def _fileio_mode(flags: int) -> str:
    acc = flags & os.O_ACCMODE
    if flags & os.O_APPEND:
        return "a+b" if acc == os.O_RDWR else "ab"
    return {os.O_RDONLY: "rb", os.O_WRONLY: "wb"}.get(acc, "r+b")


class HostFile(io.FileIO):
    """A host file opened through ``HostFS``: a ``FileIO`` plus the positional and metadata
    calls the FUSE adapter makes on an open file (``pread``, ``pwrite``, ``stat``...)."""

    def pread(self, size: int, offset: int) -> bytes:
        return os.pread(self.fileno(), size, offset)

    def pwrite(self, data: bytes, offset: int) -> int:
        return os.pwrite(self.fileno(), data, offset)

    def stat(self) -> os.stat_result:
        return os.fstat(self.fileno())

    def chmod(self, mode: int) -> None:
        os.fchmod(self.fileno(), mode)

    def chown(self, uid: int, gid: int) -> None:
        os.fchown(self.fileno(), uid, gid)

    def utime(self, times: tuple[float, float] | None = None, *,
              ns: tuple[int, int] | None = None) -> None:
        if ns is not None:
            os.utime(self.fileno(), ns=ns)
        else:
            os.utime(self.fileno(), times)

    def fsync(self) -> None:
        os.fsync(self.fileno())

    def fdatasync(self) -> None:
        os.fdatasync(self.fileno())


RENAME_NOREPLACE = 1  # renameat2(2) flag, as union.RENAME_NOREPLACE


def _renameat2(olddirfd: int, old: str, newdirfd: int, new: str, flags: int) -> None:
    """``renameat2(2)`` (RENAME_NOREPLACE / RENAME_EXCHANGE), which ``os`` does not offer."""
    import ctypes
    import ctypes.util

    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    rc = libc.renameat2(olddirfd, os.fsencode(old), newdirfd, os.fsencode(new),
                        ctypes.c_uint(flags))
    if rc != 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code), old)


def _with_ino(st: os.stat_result, ino: int) -> os.stat_result:
    """A copy of ``st`` with another inode number (keeps every hidden field, ns times too)."""
    seq = list(st)
    seq[1] = ino
    extra = {name: getattr(st, name) for name in dir(st) if name.startswith("st_")}
    extra["st_ino"] = ino
    return os.stat_result(seq, extra)


class HostFS:
    """A host directory (or one host file) as an ``os``-shaped filesystem rooted at ``/``.

    ``directory`` must exist (``NotFound`` otherwise). Paths are union-style (``"/a/b"``).
    Errors are ``unionfs.errors`` classes naming the path inside this filesystem. A single
    file answers only for ``"/"``; any path below it is ``ENOTDIR``.
    """

    def __init__(self, directory: str | os.PathLike, read_only: bool = False) -> None:
        real = os.path.realpath(os.fspath(directory))
        try:
            st = os.stat(real)
        except OSError as e:
            raise from_oserror(e, os.fspath(directory)) from None
        self.root = real
        self.read_only = read_only
        self.is_file = not _stat.S_ISDIR(st.st_mode)
        self.name = real

    def __repr__(self) -> str:
        return f"HostFS({self.root!r}, read_only={self.read_only})"

    # -- resolution ---------------------------------------------------------------------

    def _root_fd(self) -> int:
        return os.open(self.root, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)

    def _resolve(self, path: str, follow: bool) -> tuple[int, str]:
        """``(dirfd, name)`` of ``path``'s final component, every parent resolved inside the
        root. ``name`` is ``""`` for the root itself (then ``dirfd`` is the root). The caller
        closes ``dirfd``. Raises ENOENT/ENOTDIR for a missing or non-directory parent, ELOOP
        after ``MAX_SYMLINKS`` links."""
        if self.is_file:
            raise from_errno(errno.ENOTDIR, path)
        todo = [p for p in _path.normalize(path).split("/") if p]
        todo.reverse()  # a stack: next component at the end
        stack = [self._root_fd()]
        hops = 0
        try:
            while todo:
                name = todo.pop()
                if name in ("", "."):
                    continue
                if name == "..":
                    if len(stack) > 1:
                        os.close(stack.pop())
                    continue
                last = not todo
                try:
                    st = os.stat(name, dir_fd=stack[-1], follow_symlinks=False)
                except FileNotFoundError:
                    if last:
                        return stack.pop(), name
                    raise NotFound(path) from None
                if _stat.S_ISLNK(st.st_mode) and (follow or not last):
                    hops += 1
                    if hops > MAX_SYMLINKS:
                        raise Loop(path)
                    target = os.readlink(name, dir_fd=stack[-1])
                    if target.startswith("/"):
                        while len(stack) > 1:
                            os.close(stack.pop())
                    todo.extend(reversed([p for p in target.split("/") if p]))
                    if not todo:  # a link to "/" or to ""
                        return stack.pop(), ""
                    continue
                if last:
                    return stack.pop(), name
                if not _stat.S_ISDIR(st.st_mode):
                    raise NotADir(path)
                stack.append(os.open(name, os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW
                                     | os.O_CLOEXEC, dir_fd=stack[-1]))
            return stack.pop(), ""
        except OSError as e:
            raise from_oserror(e, path) from None
        finally:
            for fd in stack:
                os.close(fd)

    def _check_writable(self, path: str) -> None:
        if self.read_only:
            raise ReadOnly(path)

    def _call(self, path: str, fn, follow: bool = False) -> Any:
        """Run ``fn(dirfd, name)`` on the resolved ``path`` (``name`` may be ``""``: root)."""
        if self.is_file:
            if _path.normalize(path) != "/":
                raise NotADir(path)
            try:
                return fn(None, self.root)
            except OSError as e:
                raise from_oserror(e, path) from None
        fd, name = self._resolve(path, follow)
        try:
            if name == "":
                return fn(None, self.root)
            return fn(fd, name)
        except OSError as e:
            raise from_oserror(e, path) from None
        finally:
            os.close(fd)

    # -- reading ------------------------------------------------------------------------

    def lstat(self, path: str) -> os.stat_result:
        """``lstat`` inside the root (ENOENT, ENOTDIR)."""
        return self._call(path, lambda fd, n: os.stat(n, dir_fd=fd, follow_symlinks=False))

    def stat(self, path: str, follow_symlinks: bool = True) -> os.stat_result:
        """``stat`` following symlinks inside the root (ENOENT, ENOTDIR, ELOOP)."""
        if not follow_symlinks:
            return self.lstat(path)
        return self._call(path, lambda fd, n: os.stat(n, dir_fd=fd, follow_symlinks=False),
                          follow=True)

    def exists(self, path: str) -> bool:
        try:
            self.stat(path)
        except OSError:
            return False
        return True

    def listdir(self, path: str = "/") -> list[str]:
        """Names in the directory ``path`` (ENOENT, ENOTDIR)."""
        def run(fd, name):
            dfd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC,
                          dir_fd=fd)
            try:
                return os.listdir(dfd)
            finally:
                os.close(dfd)
        return self._call(path, run, follow=True)

    def readlink(self, path: str) -> str:
        """The target of the symlink ``path`` (EINVAL when not a symlink)."""
        return self._call(path, lambda fd, n: os.readlink(n, dir_fd=fd))

    def open(self, path: str, mode: str | int = "rb", perm: int = 0o666) -> HostFile:
        """A ``HostFile`` on ``path``: ``mode`` is a binary mode string (``"rb"``, ``"r+b"``,
        ``"wb"``...) or ``os.open`` flags; created files get ``perm`` (less the umask).
        ``O_NOFOLLOW`` applies to the resolved name. EROFS for a write on a read-only
        filesystem, EISDIR for a directory opened for writing or as a file object."""
        flags = mode if isinstance(mode, int) else _open_flags(mode)
        flags |= os.O_CLOEXEC
        if _is_write_mode(mode):
            self._check_writable(path)

        def run(fd, name):
            if fd is None:
                return os.open(name, flags & ~os.O_EXCL, perm)
            return os.open(name, flags | os.O_NOFOLLOW, perm, dir_fd=fd)
        raw = self._call(path, run, follow=True)
        if _stat.S_ISDIR(os.fstat(raw).st_mode):
            os.close(raw)
            raise IsADir(path)
        return HostFile(raw, _fileio_mode(flags))

    def check_access(self, path: str, amode: int, follow_symlinks: bool = True) -> None:
        """``access(2)`` on the resolved path: raises EACCES, ENOENT, or EROFS for ``W_OK``
        when read-only."""
        if amode & os.W_OK:
            self._check_writable(path)
        ok = self._call(path, lambda fd, n: os.access(n, amode, dir_fd=fd,
                                                      follow_symlinks=False),
                        follow=follow_symlinks)
        if not ok:
            raise from_errno(errno.EACCES, path)

    def access(self, path: str, amode: int, follow_symlinks: bool = True) -> bool:
        """``os.access``: True when allowed (never raises for a missing path)."""
        try:
            self.check_access(path, amode, follow_symlinks)
        except OSError:
            return False
        return True

    def getxattr(self, path: str, name: str, follow_symlinks: bool = True) -> bytes:
        return self._call(path, lambda fd, n: os.getxattr(self._proc(fd, n), name,
                                                          follow_symlinks=False), follow=True)

    def listxattr(self, path: str, follow_symlinks: bool = True) -> list[str]:
        return self._call(path, lambda fd, n: os.listxattr(self._proc(fd, n),
                                                           follow_symlinks=False), follow=True)

    @staticmethod
    def _proc(fd: int | None, name: str) -> str:
        # xattr calls take no dir_fd; /proc/self/fd keeps them on the resolved directory
        return name if fd is None else f"/proc/self/fd/{fd}/{name}"

    # -- writing ------------------------------------------------------------------------

    def mkdir(self, path: str, mode: int = 0o777) -> None:
        self._check_writable(path)
        self._call(path, lambda fd, n: os.mkdir(n, mode, dir_fd=fd) if fd is not None
                   else _raise(errno.EEXIST, path))

    def rmdir(self, path: str) -> None:
        self._check_writable(path)
        self._call(path, lambda fd, n: os.rmdir(n, dir_fd=fd) if fd is not None
                   else _raise(errno.EBUSY, path))

    def unlink(self, path: str) -> None:
        self._check_writable(path)
        self._call(path, lambda fd, n: os.unlink(n, dir_fd=fd) if fd is not None
                   else _raise(errno.EBUSY if self.is_file else errno.EISDIR, path))

    remove = unlink

    def rename(self, src: str, dst: str, flags: int = 0) -> None:
        """``rename(2)`` inside the root (EBUSY for the root itself); ``flags`` as
        ``renameat2`` (RENAME_NOREPLACE, RENAME_EXCHANGE)."""
        self._check_writable(src)
        if self.is_file:
            raise from_errno(errno.EBUSY, src)
        sfd, sname = self._resolve(src, False)
        try:
            dfd, dname = self._resolve(dst, False)
            try:
                if not sname or not dname:
                    raise from_errno(errno.EBUSY, src)
                if flags:
                    _renameat2(sfd, sname, dfd, dname, flags)
                else:
                    os.rename(sname, dname, src_dir_fd=sfd, dst_dir_fd=dfd)
            except OSError as e:
                raise from_oserror(e, src) from None
            finally:
                os.close(dfd)
        finally:
            os.close(sfd)

    replace = rename

    def symlink(self, target: str, path: str) -> None:
        """Create the symlink ``path`` -> ``target`` (the target is stored as given)."""
        self._check_writable(path)
        self._call(path, lambda fd, n: os.symlink(target, n, dir_fd=fd) if fd is not None
                   else _raise(errno.EEXIST, path))

    def link(self, src: str, dst: str) -> None:
        self._check_writable(dst)
        if self.is_file:
            raise from_errno(errno.EEXIST, dst)
        sfd, sname = self._resolve(src, False)
        try:
            dfd, dname = self._resolve(dst, False)
            try:
                if not dname:
                    raise from_errno(errno.EEXIST, dst)
                if not sname:
                    raise from_errno(errno.EPERM, src)
                os.link(sname, dname, src_dir_fd=sfd, dst_dir_fd=dfd, follow_symlinks=False)
            except OSError as e:
                raise from_oserror(e, dst) from None
            finally:
                os.close(dfd)
        finally:
            os.close(sfd)

    def chmod(self, path: str, mode: int, follow_symlinks: bool = True) -> None:
        self._check_writable(path)
        # chmod of a symlink itself is not supported by Linux: go through the resolved name
        self._call(path, lambda fd, n: os.chmod(self._proc(fd, n), mode), follow=True)

    def chown(self, path: str, uid: int, gid: int, follow_symlinks: bool = True) -> None:
        self._check_writable(path)
        self._call(path, lambda fd, n: os.chown(n, uid, gid, dir_fd=fd, follow_symlinks=False),
                   follow=follow_symlinks)

    def utime(self, path: str, times: tuple[float, float] | None = None, *,
              ns: tuple[int, int] | None = None, follow_symlinks: bool = True) -> None:
        self._check_writable(path)

        def run(fd, n):
            if ns is not None:
                os.utime(n, ns=ns, dir_fd=fd, follow_symlinks=False)
            else:
                os.utime(n, times, dir_fd=fd, follow_symlinks=False)
        self._call(path, run, follow=follow_symlinks)

    def truncate(self, path: str, size: int) -> None:
        self._check_writable(path)
        with self.open(path, "r+b") as f:
            f.truncate(size)

    def mknod(self, path: str, mode: int = 0o600 | _stat.S_IFIFO, device: int = 0) -> None:
        self._check_writable(path)
        self._call(path, lambda fd, n: os.mknod(n, mode, device, dir_fd=fd) if fd is not None
                   else _raise(errno.EEXIST, path))

    def setxattr(self, path: str, name: str, value: bytes, flags: int = 0,
                 follow_symlinks: bool = True) -> None:
        self._check_writable(path)
        self._call(path, lambda fd, n: os.setxattr(self._proc(fd, n), name, value, flags,
                                                   follow_symlinks=False), follow=True)

    def removexattr(self, path: str, name: str, follow_symlinks: bool = True) -> None:
        self._check_writable(path)
        self._call(path, lambda fd, n: os.removexattr(self._proc(fd, n), name,
                                                      follow_symlinks=False), follow=True)

    def statvfs(self, path: str = "/") -> os.statvfs_result:
        return os.statvfs(self.root)

    def host_path(self, path: str) -> str | None:
        """The host path of ``path`` (parents resolved inside the root), for copies that want
        ``copy_file_range``; ``None`` when it cannot be resolved."""
        if self.is_file:
            return self.root if _path.normalize(path) == "/" else None
        try:
            fd, name = self._resolve(path, True)
        except OSError:
            return None
        try:
            parent = os.readlink(f"/proc/self/fd/{fd}")
        finally:
            os.close(fd)
        return os.path.join(parent, name) if name else parent


def _raise(code: int, path: str) -> None:
    raise from_errno(code, path)


@dataclass(frozen=True, slots=True)
class MountProvenance:
    """``MountTable.which`` for a path served by a mount (a volume or bind mount)."""

    path: str
    mount_point: str
    source: str
    read_only: bool
    reasons: list[str]

    def describe(self) -> str:
        head = f"{self.path}: from the mount at {self.mount_point} ({self.source})"
        return "\n".join([head, *(f"  - {r}" for r in self.reasons)])


@dataclass(frozen=True, slots=True)
class Mount:
    """One entry of a ``MountTable``: ``fs`` appears at ``path``; ``read_only`` adds EROFS on
    top of whatever ``fs`` allows."""

    path: str
    fs: Any
    read_only: bool = False


class MountTable:
    """A root filesystem with other filesystems mounted at paths inside it.

    ``mounts`` is any sequence of ``Mount`` (or ``(path, fs[, read_only])`` tuples); a later
    mount at the same path hides an earlier one, as with ``mount(8)``. The mount points are
    expected to exist in the root filesystem (they are listed in ``listdir`` either way).
    Same method names and errors as ``UnionFS``; plus ``route(path)`` saying which mount serves
    a path and ``EXDEV``/``EBUSY``/``EROFS`` at mount boundaries.
    """

    def __init__(self, root_fs: Any, mounts: Sequence[Mount | tuple] = (),
                 read_only: bool = False) -> None:
        table: dict[str, Mount] = {}
        for m in mounts:
            if not isinstance(m, Mount):
                m = Mount(*m)
            p = _path.normalize(m.path)
            if p == "/":
                raise from_errno(errno.EINVAL, p, "cannot mount over the root")
            table[p] = Mount(p, m.fs, m.read_only)
        self.root = Mount("/", root_fs, read_only)
        # longest prefix first: the first match in this list is the route
        self.mounts: list[Mount] = sorted(table.values(), key=lambda m: -len(m.path))
        self._children: dict[str, set[str]] = {}
        for m in self.mounts:
            parent, name = _path.split(m.path)
            self._children.setdefault(parent, set()).add(name)
        self._ino_base = {m.path: (i + 1) << 56 for i, m in enumerate(self.mounts)}
        self.name = getattr(root_fs, "name", "view")

    def __repr__(self) -> str:
        return f"MountTable({self.root.fs!r}, {[(m.path, m.fs) for m in self.mounts]!r})"

    # -- routing ------------------------------------------------------------------------

    def route(self, path: str) -> tuple[Mount, str]:
        """The mount serving the symlink-free ``path`` and the path inside it."""
        for m in self.mounts:
            if path == m.path:
                return m, "/"
            if path.startswith(m.path + "/"):
                return m, path[len(m.path):]
        return self.root, path

    def is_mount_point(self, path: str) -> bool:
        return any(m.path == path for m in self.mounts)

    def _resolve(self, path: str, follow: bool) -> str:
        """``path`` with every symlink resolved over the whole view (the last component only
        when ``follow``). Raises ENOENT/ENOTDIR for a bad parent, ELOOP after 40 links."""
        norm = _path.normalize(path)
        if not self.mounts:
            return norm
        todo = [p for p in norm.split("/") if p]
        todo.reverse()
        done: list[str] = []
        hops = 0
        while todo:
            name = todo.pop()
            if name == ".":
                continue
            if name == "..":
                if done:
                    done.pop()
                continue
            last = not todo
            candidate = "/" + "/".join([*done, name])
            if last and not follow:
                done.append(name)
                break
            mount, sub = self.route(candidate)
            if sub == "/" and mount.path != "/":
                done.append(name)  # a mount point is its filesystem's root: never a link
                continue
            try:
                st = mount.fs.lstat(sub)
            except FileNotFoundError:
                if last:
                    done.append(name)
                    break
                raise NotFound(path) from None
            except OSError as e:
                raise from_oserror(e, path) from None
            if _stat.S_ISLNK(st.st_mode):
                hops += 1
                if hops > MAX_SYMLINKS:
                    raise Loop(path)
                target = mount.fs.readlink(sub)
                if target.startswith("/"):
                    done = []
                todo.extend(reversed([p for p in target.split("/") if p]))
                continue
            if not last and not _stat.S_ISDIR(st.st_mode):
                raise NotADir(path)
            done.append(name)
        return "/" + "/".join(done)

    def _at(self, path: str, follow: bool) -> tuple[Mount, str, str]:
        full = self._resolve(path, follow)
        mount, sub = self.route(full)
        return mount, sub, full

    def _writable(self, path: str, follow: bool, intent: str = "exist",
                  flags: int = 0) -> tuple[Mount, str, str]:
        """Resolve ``path`` for a change and raise what Linux raises on a read-only mount,
        in the kernel's order for each kind of call (``intent``):

        - ``"parent"`` (unlink, rmdir, rename): EROFS as soon as the parent is found;
        - ``"create"`` (mkdir, symlink, mknod, link): EEXIST for an existing name first;
        - ``"exist"`` (chmod, chown, utime, truncate, xattrs): ENOENT for a missing one first;
        - ``"open"`` (``flags``): ENOENT without O_CREAT, EEXIST with O_EXCL, EISDIR for a
          directory, then EROFS.

        A mount point's own name belongs to the mount below it (rmdir of a read-only mount
        point is EBUSY, not EROFS, as the kernel says)."""
        mount, sub, full = self._at(path, follow)
        check = mount
        if intent in ("parent", "create") and sub == "/" and mount is not self.root:
            check = self.route(_path.split(full)[0])[0]
        if not check.read_only:
            return mount, sub, full
        if intent == "parent":
            raise ReadOnly(path)
        try:
            st = mount.fs.lstat(sub)
        except FileNotFoundError:
            st = None
        if intent == "create" and st is not None:
            raise from_errno(errno.EEXIST, path)
        if intent == "exist" and st is None:
            raise NotFound(path)
        if intent == "open":
            if st is None and not flags & os.O_CREAT:
                raise NotFound(path)
            if st is not None and flags & os.O_CREAT and flags & os.O_EXCL:
                raise from_errno(errno.EEXIST, path)
            if st is not None and _stat.S_ISDIR(st.st_mode):
                raise IsADir(path)
        raise ReadOnly(path)

    def _not_mount_point(self, full: str, path: str) -> None:
        if self.is_mount_point(full):
            raise from_errno(errno.EBUSY, path)

    def _fix(self, mount: Mount, st: os.stat_result) -> os.stat_result:
        base = self._ino_base.get(mount.path)
        if base is None:
            return st
        return _with_ino(st, base | (st.st_ino & ((1 << 56) - 1)))

    @staticmethod
    def _err(e: OSError, path: str) -> UnionFSError:
        return from_oserror(e, path)

    # -- reading ------------------------------------------------------------------------

    def lstat(self, path: str) -> os.stat_result:
        """``lstat`` over the view (ENOENT, ENOTDIR, ELOOP for the parents)."""
        mount, sub, _ = self._at(path, False)
        return self._fix(mount, mount.fs.lstat(sub))

    def stat(self, path: str, follow_symlinks: bool = True) -> os.stat_result:
        """``stat`` over the view, following symlinks across mounts."""
        if not self.mounts:
            return self.root.fs.stat(_path.normalize(path))
        mount, sub, _ = self._at(path, follow_symlinks)
        return self._fix(mount, mount.fs.lstat(sub))

    def exists(self, path: str) -> bool:
        try:
            self.stat(path)
        except OSError:
            return False
        return True

    def isdir(self, path: str) -> bool:
        try:
            return _stat.S_ISDIR(self.stat(path).st_mode)
        except OSError:
            return False

    def listdir(self, path: str = "/") -> list[str]:
        """Names in the directory, with the mount points below it (ENOENT, ENOTDIR)."""
        mount, sub, full = self._at(path, True)
        names = list(mount.fs.listdir(sub))
        extra = self._children.get(full)
        if extra:
            # mount points live in the mounted filesystem's parent: only show the ones that
            # are routed through here (a deeper mount may cover this directory entirely)
            have = set(names)
            names.extend(sorted(n for n in extra if n not in have))
        return names

    def scandir(self, path: str = "/") -> Iterator[DirEntry]:
        full = self._resolve(path, True)
        for name in self.listdir(full):
            p = _path.join(full, name)
            try:
                st = self.lstat(p)
            except FileNotFoundError:
                continue  # removed meanwhile
            yield DirEntry(name, p, st)

    def walk(self, top: str = "/", topdown: bool = True
             ) -> Iterator[tuple[str, list[str], list[str]]]:
        """``os.walk`` over the view (never follows symlinks to directories)."""
        top = _path.normalize(top)
        try:
            entries = list(self.scandir(top))
        except OSError:
            return
        dirs = [e.name for e in entries if e.is_dir()]
        files = [e.name for e in entries if not e.is_dir()]
        if topdown:
            yield top, dirs, files
        for d in dirs:
            yield from self.walk(_path.join(top, d), topdown)
        if not topdown:
            yield top, dirs, files

    def readlink(self, path: str) -> str:
        mount, sub, _ = self._at(path, False)
        return mount.fs.readlink(sub)

    def open(self, path: str, mode: str | int = "rb", perm: int = 0o666) -> Any:
        """A file object (``mode`` a binary mode string or ``os.open`` flags); a write through
        a read-only mount raises EROFS."""
        if _is_write_mode(mode):
            flags = mode if isinstance(mode, int) else _open_flags(mode)
            mount, sub, _ = self._writable(path, True, "open", flags)
        else:
            mount, sub, _ = self._at(path, True)
        if perm != 0o666:
            return mount.fs.open(sub, mode, perm=perm)
        return mount.fs.open(sub, mode)

    def check_access(self, path: str, amode: int, follow_symlinks: bool = True) -> None:
        """``access(2)``: EROFS for ``W_OK`` under a read-only mount, else the mount's answer
        (EACCES, ENOENT)."""
        if amode & os.W_OK:
            mount, sub, _ = self._writable(path, follow_symlinks)
        else:
            mount, sub, _ = self._at(path, follow_symlinks)
        fn = getattr(mount.fs, "check_access", None)
        if fn is not None:
            fn(sub, amode)
        else:
            mount.fs.stat(sub)

    def access(self, path: str, amode: int, follow_symlinks: bool = True) -> bool:
        """``os.access`` over the view: True when allowed."""
        try:
            self.check_access(path, amode, follow_symlinks)
        except OSError:
            return False
        return True

    def getxattr(self, path: str, name: str, follow_symlinks: bool = True) -> bytes:
        mount, sub, _ = self._at(path, follow_symlinks)
        return mount.fs.getxattr(sub, name, follow_symlinks=follow_symlinks)

    def listxattr(self, path: str, follow_symlinks: bool = True) -> list[str]:
        mount, sub, _ = self._at(path, follow_symlinks)
        return mount.fs.listxattr(sub, follow_symlinks=follow_symlinks)

    def which(self, path: str) -> Any:
        """Where ``path`` comes from: the root filesystem's own answer (``UnionFS.which``:
        the layer, what it shadows...) or, under a mount, a ``MountProvenance`` naming the
        mount and its host source (no image layer is involved there)."""
        mount, sub, full = self._at(path, False)
        if mount is self.root and hasattr(mount.fs, "which"):
            return mount.fs.which(sub)
        source = getattr(mount.fs, "root", None) or getattr(mount.fs, "name", "?")
        host = source if sub == "/" else source.rstrip("/") + sub
        mode = "read-only" if mount.read_only else "read-write"
        return MountProvenance(full, mount.path, str(source), mount.read_only, [
            f"{full} is under the {mode} mount at {mount.path}: it is the host file "
            f"{host}, not part of any image layer or of the container's writable layer",
            "changes here go straight to the host and never show in diff or commit"])

    def statvfs(self, path: str = "/") -> Any:
        mount, sub, _ = self._at(path, True)
        fn = getattr(mount.fs, "statvfs", None)
        if fn is None:
            raise from_errno(errno.ENOSYS, path)
        return fn(sub)

    # -- writing ------------------------------------------------------------------------

    def mkdir(self, path: str, mode: int = 0o777) -> None:
        mount, sub, _ = self._writable(path, False, "create")
        if sub == "/":
            raise from_errno(errno.EEXIST, path)
        mount.fs.mkdir(sub, mode)

    def makedirs(self, path: str, mode: int = 0o777, exist_ok: bool = False) -> None:
        """``os.makedirs`` over the view (EEXIST unless ``exist_ok``, ENOTDIR)."""
        norm = _path.normalize(path)
        for parent in [*_path.parents(norm)[1:], norm]:
            try:
                self.mkdir(parent, mode)
            except FileExistsError:
                if parent == norm and not exist_ok:
                    raise
                if not self.isdir(parent):
                    raise NotADir(parent) from None

    def rmdir(self, path: str) -> None:
        """``rmdir(2)``: ENOTDIR/ENOENT first, then EBUSY for a mount point (or a directory
        holding one), as the kernel orders them."""
        mount, sub, full = self._writable(path, False, "parent")
        if self.is_mount_point(full) or full in self._children:
            if not _stat.S_ISDIR(mount.fs.lstat(sub).st_mode):
                raise NotADir(path)
            raise from_errno(errno.EBUSY, path)
        mount.fs.rmdir(sub)

    def unlink(self, path: str) -> None:
        """``unlink(2)``: EISDIR for a directory first, then EBUSY for a mount point."""
        mount, sub, full = self._writable(path, False, "parent")
        if self.is_mount_point(full):
            if _stat.S_ISDIR(mount.fs.lstat(sub).st_mode):
                raise IsADir(path)
            raise from_errno(errno.EBUSY, path)
        mount.fs.unlink(sub)

    remove = unlink

    def rename(self, src: str, dst: str, flags: int = 0) -> None:
        """``rename(2)`` (``flags`` as ``renameat2``) in the kernel's order: EXDEV when the
        two parent directories are on different mounts, EROFS, ENOENT for the source,
        ENOTDIR/EISDIR for mismatched types, EBUSY for a mount point (and, unlike the kernel,
        for a directory holding one: routes are by path here)."""
        sfull = self._resolve(src, False)
        dfull = self._resolve(dst, False)
        if sfull == "/" or dfull == "/":
            raise from_errno(errno.EBUSY, src)
        sparent = self.route(_path.split(sfull)[0])[0]
        dparent = self.route(_path.split(dfull)[0])[0]
        if sparent is not dparent:
            raise from_errno(errno.EXDEV, src)
        if sparent.read_only:
            raise ReadOnly(src)
        smount, ssub = self.route(sfull)
        dmount, dsub = self.route(dfull)
        sst = smount.fs.lstat(ssub)
        try:
            dst_st = dmount.fs.lstat(dsub)
        except FileNotFoundError:
            dst_st = None
        if dst_st is not None and flags & RENAME_NOREPLACE:
            raise from_errno(errno.EEXIST, dst)
        if dst_st is not None and smount is dmount and \
                (sst.st_dev, sst.st_ino) == (dst_st.st_dev, dst_st.st_ino):
            # one inode under both names (the same path, or two hard links): the kernel's
            # vfs_rename returns 0 and does nothing, before its mount point checks
            return
        if dst_st is not None and sfull != dfull:
            if _stat.S_ISDIR(sst.st_mode) and not _stat.S_ISDIR(dst_st.st_mode):
                raise NotADir(dst)
            if not _stat.S_ISDIR(sst.st_mode) and _stat.S_ISDIR(dst_st.st_mode):
                raise IsADir(dst)
        if self.is_mount_point(sfull) or self.is_mount_point(dfull):
            raise from_errno(errno.EBUSY, src)
        if any(_path.is_within(m.path, sfull) or _path.is_within(m.path, dfull)
               for m in self.mounts):
            raise from_errno(errno.EBUSY, src)
        if flags:
            smount.fs.rename(ssub, dsub, flags)
        else:
            smount.fs.rename(ssub, dsub)

    def replace(self, src: str, dst: str) -> None:
        self.rename(src, dst)

    def symlink(self, target: str, path: str) -> None:
        mount, sub, _ = self._writable(path, False, "create")
        if sub == "/":
            raise from_errno(errno.EEXIST, path)
        mount.fs.symlink(target, sub)

    def link(self, src: str, dst: str) -> None:
        smount, ssub, _ = self._at(src, False)
        dmount, dsub, _ = self._writable(dst, False, "create")
        if smount is not dmount:
            raise from_errno(errno.EXDEV, src)
        dmount.fs.link(ssub, dsub)

    def chmod(self, path: str, mode: int) -> None:
        mount, sub, _ = self._writable(path, True)
        mount.fs.chmod(sub, mode)

    def chown(self, path: str, uid: int, gid: int, follow_symlinks: bool = True) -> None:
        mount, sub, _ = self._writable(path, follow_symlinks)
        mount.fs.chown(sub, uid, gid, follow_symlinks=follow_symlinks)

    def utime(self, path: str, times: tuple[float, float] | None = None, *,
              ns: tuple[int, int] | None = None, follow_symlinks: bool = True) -> None:
        mount, sub, _ = self._writable(path, follow_symlinks)
        if ns is not None:
            mount.fs.utime(sub, ns=ns, follow_symlinks=follow_symlinks)
        else:
            mount.fs.utime(sub, times, follow_symlinks=follow_symlinks)

    def truncate(self, path: str, size: int) -> None:
        mount, sub, _ = self._writable(path, True)
        mount.fs.truncate(sub, size)

    def mknod(self, path: str, mode: int = 0o600 | _stat.S_IFIFO, device: int = 0) -> None:
        mount, sub, _ = self._writable(path, False, "create")
        if sub == "/":
            raise from_errno(errno.EEXIST, path)
        mount.fs.mknod(sub, mode, device)

    def setxattr(self, path: str, name: str, value: bytes, flags: int = 0,
                 follow_symlinks: bool = True) -> None:
        mount, sub, _ = self._writable(path, follow_symlinks)
        mount.fs.setxattr(sub, name, value, flags, follow_symlinks=follow_symlinks)

    def removexattr(self, path: str, name: str, follow_symlinks: bool = True) -> None:
        mount, sub, _ = self._writable(path, follow_symlinks)
        mount.fs.removexattr(sub, name, follow_symlinks=follow_symlinks)


def copy_tree(src_fs: Any, src: str, dst_fs: Any, dst: str, *, owners: bool = True,
              follow_top: bool = False, chunk: int = 1 << 20) -> int:
    """Copy ``src`` (a file, symlink, directory tree or FIFO) from ``src_fs`` to the new path
    ``dst`` in ``dst_fs``, both ``os``-shaped (``UnionFS``, ``HostFS``, ``MountTable``).

    Keeps modes and mtimes, and uid/gid when ``owners`` (silently not when the caller may not
    chown). Symlinks are copied as links, except ``src`` itself when ``follow_top``. Data is
    streamed in ``chunk`` pieces, never read whole. Returns the number of bytes of file data
    copied. An existing non-directory at a destination path is replaced and an existing
    directory is merged into, as ``cp -a`` and ``docker cp`` do; a directory where a file
    must go is ``EISDIR``, a file where a directory must go ``EEXIST``. Other errors are the
    filesystems' own (ENOENT, EROFS...).
    """
    st = src_fs.stat(src) if follow_top else src_fs.lstat(src)
    mode = st.st_mode
    copied = 0
    if not _stat.S_ISDIR(mode):
        try:
            old = dst_fs.lstat(dst)
        except FileNotFoundError:
            pass
        else:
            if _stat.S_ISDIR(old.st_mode):
                raise IsADir(dst)
            dst_fs.unlink(dst)
    if _stat.S_ISDIR(mode):
        try:
            dst_fs.mkdir(dst, 0o700)
        except FileExistsError:
            if not _stat.S_ISDIR(dst_fs.stat(dst).st_mode):
                raise
        for name in sorted(src_fs.listdir(src)):
            copied += copy_tree(src_fs, _path.join(src, name), dst_fs, _path.join(dst, name),
                                owners=owners, chunk=chunk)
    elif _stat.S_ISLNK(mode):
        dst_fs.symlink(src_fs.readlink(src), dst)
        if owners:
            _try_chown(dst_fs, dst, st, follow=False)
        return 0
    elif _stat.S_ISREG(mode):
        with src_fs.open(src, "rb") as fin, dst_fs.open(dst, "wb") as fout:
            while True:
                block = fin.read(chunk)
                if not block:
                    break
                fout.write(block)
                copied += len(block)
    elif _stat.S_ISFIFO(mode):
        dst_fs.mknod(dst, _stat.S_IFIFO | 0o600)
    else:
        return 0  # device nodes and sockets are not copied (they need privilege, or a peer)
    if owners:
        _try_chown(dst_fs, dst, st, follow=True)
    dst_fs.chmod(dst, _stat.S_IMODE(mode))
    try:
        dst_fs.utime(dst, ns=(st.st_atime_ns, st.st_mtime_ns))
    except OSError as e:
        if e.errno not in (errno.EPERM, errno.EACCES):
            raise
    return copied


def _try_chown(fs: Any, path: str, st: os.stat_result, follow: bool) -> None:
    try:
        if follow:
            fs.chown(path, st.st_uid, st.st_gid)
        else:
            fs.chown(path, st.st_uid, st.st_gid, follow_symlinks=False)
    except TypeError:
        pass  # a filesystem whose chown cannot act on a link itself
    except OSError as e:
        if e.errno not in (errno.EPERM, errno.EINVAL):
            raise
