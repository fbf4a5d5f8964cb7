"""The error family of the union engine.

Every failure is an ``OSError`` whose ``errno`` is what Linux overlayfs returns for the same
call, and whose class also subclasses the matching builtin, so callers write
``except FileNotFoundError`` and the FUSE binding turns any of them into ``-errno`` without a
try/except of its own.
"""

from __future__ import annotations

import errno as _errno
import os


class UnionFSError(OSError):
    """Base of every engine error. ``errno``, ``strerror`` and ``filename`` are set."""

    default_errno: int = _errno.EIO

    def __init__(self, path: str | None = None, message: str | None = None,
                 code: int | None = None, path2: str | None = None) -> None:
        code = self.default_errno if code is None else code
        text = message or os.strerror(code)
        if path2 is not None:
            super().__init__(code, text, path, None, path2)
        else:
            super().__init__(code, text, path)

    def __reduce__(self):  # keep the subclass across pickling (multiprocessing, hypothesis)
        return (type(self), (self.filename, self.strerror, self.errno, self.filename2))


class NotFound(UnionFSError, FileNotFoundError):
    default_errno = _errno.ENOENT


class Exists(UnionFSError, FileExistsError):
    default_errno = _errno.EEXIST


class NotADir(UnionFSError, NotADirectoryError):
    default_errno = _errno.ENOTDIR


class IsADir(UnionFSError, IsADirectoryError):
    default_errno = _errno.EISDIR


class NotEmpty(UnionFSError):
    default_errno = _errno.ENOTEMPTY


class CrossDevice(UnionFSError):
    """EXDEV: overlayfs refuses to rename a lower or merged directory without redirect_dir."""

    default_errno = _errno.EXDEV


class ReadOnly(UnionFSError):
    default_errno = _errno.EROFS


class InvalidPath(UnionFSError):
    """EINVAL: e.g. renaming a directory into itself, or a malformed path."""

    default_errno = _errno.EINVAL


class Loop(UnionFSError):
    default_errno = _errno.ELOOP


class NameTooLong(UnionFSError):
    default_errno = _errno.ENAMETOOLONG


class PermissionDenied(UnionFSError, PermissionError):
    """EACCES by default; EPERM where POSIX says 'operation not permitted'."""

    default_errno = _errno.EACCES


class NotPermitted(UnionFSError, PermissionError):
    default_errno = _errno.EPERM


class NoData(UnionFSError):
    """ENODATA: the extended attribute does not exist."""

    default_errno = _errno.ENODATA


class NotSupported(UnionFSError):
    default_errno = _errno.EOPNOTSUPP


class BadFile(UnionFSError):
    """EBADF: the file object is closed or not open for that kind of access."""

    default_errno = _errno.EBADF


class TooManyLinks(UnionFSError):
    default_errno = _errno.EMLINK


_BY_ERRNO: dict[int, type[UnionFSError]] = {
    cls.default_errno: cls
    for cls in (NotFound, Exists, NotADir, IsADir, NotEmpty, CrossDevice, ReadOnly, InvalidPath,
                Loop, NameTooLong, PermissionDenied, NotPermitted, NoData, NotSupported, BadFile,
                TooManyLinks)
}


def from_errno(code: int, path: str | None = None, message: str | None = None) -> UnionFSError:
    """The engine error for ``code``: the matching subclass, or ``UnionFSError`` itself."""
    cls = _BY_ERRNO.get(code, UnionFSError)
    return cls(path, message, code)


def from_oserror(exc: OSError, path: str | None = None) -> UnionFSError:
    """Re-raise a host ``OSError`` (from a ``DirLayer``) as the engine's error for its errno,
    naming the union path rather than the host path."""
    if isinstance(exc, UnionFSError):
        return exc
    code = exc.errno if exc.errno is not None else _errno.EIO
    return from_errno(code, path, exc.strerror)
