"""``WritableLayer``: a ``Layer`` that can also be changed. No union logic lives here: the
layer does exactly the one-layer operation it is told (the parent must already exist in this
layer), and ``UnionFS`` decides what to copy up, where to leave whiteouts and when a directory
becomes opaque.

Implementations: ``MemoryLayer`` and ``DirLayer(path, writable=True)`` (see ``layer.py``).
A writable ``DirLayer`` writes whiteouts and opaque markers in the format chosen for it
(``whiteout.Format``): overlayfs form when it can, as the kernel and fuse-overlayfs expect.
"""

from __future__ import annotations

import io as _io
import os as _os
import threading as _threading
from typing import BinaryIO, Protocol, runtime_checkable

from .entry import Kind
from .errors import BadFile as _BadFile
from .errors import InvalidPath as _InvalidPath
from .layer import Layer


@runtime_checkable
class WritableLayer(Layer, Protocol):
    """The one-layer write operations. Errors are ``unionfs.errors`` classes."""

    def mkdir(self, path: str, mode: int = 0o755) -> None:
        """Create the directory ``path`` (EEXIST if something is there)."""
        ...

    def open_write(self, path: str, *, create: bool = False, truncate: bool = False,
                   mode: int = 0o644) -> BinaryIO:
        """A read/write binary file object on the regular file ``path`` (``r+b``), created
        with ``mode`` when ``create`` and absent, emptied when ``truncate``."""
        ...

    def copy_in(self, path: str, source: Layer, source_path: str) -> None:
        """Create the regular file ``path`` holding the data of ``source_path`` in ``source``,
        without reading it whole into memory (``copy_file_range`` between host files)."""
        ...

    def symlink(self, path: str, target: str) -> None:
        ...

    def link(self, existing: str, new: str) -> None:
        """A hard link inside this layer."""
        ...

    def mknod(self, path: str, kind: Kind, mode: int = 0o644, rdev: int = 0) -> None:
        """Create a FIFO, socket or device node (devices need privilege on a DirLayer)."""
        ...

    def remove(self, path: str) -> None:
        """Remove this layer's own entry at ``path``: a file, a whiteout, or an empty directory
        (an opaque marker inside it does not count as content)."""
        ...

    def rename(self, src: str, dst: str) -> None:
        """``rename(2)`` inside this layer (replaces a file or empty directory at ``dst``)."""
        ...

    def whiteout(self, path: str) -> None:
        """Place a whiteout at ``path`` (replacing nothing: ``path`` must be absent here)."""
        ...

    def set_opaque(self, path: str, opaque: bool = True) -> None:
        """Mark the directory ``path`` opaque (or clear the mark)."""
        ...

    def set_redirect(self, path: str, target: str | None) -> None:
        """Record (or clear) the overlayfs redirect of the directory ``path``."""
        ...

    def set_metacopy(self, path: str, metacopy: bool) -> None:
        """Mark the regular file ``path`` as holding metadata only (data below)."""
        ...

    def chmod(self, path: str, mode: int) -> None:
        ...

    def chown(self, path: str, uid: int, gid: int) -> None:
        ...

    def utime(self, path: str, atime_ns: int, mtime_ns: int) -> None:
        ...

    def truncate(self, path: str, size: int) -> None:
        ...

    def setxattr(self, path: str, name: str, value: bytes, flags: int = 0) -> None:
        ...

    def removexattr(self, path: str, name: str) -> None:
        ...


# --------------------------------------------------------------------------- shared helpers
# File objects the layers hand out. Both are unbuffered (``io.RawIOBase``) so that every
# write reaches the layer at once, and both add positional, thread-safe ``pread``/``pwrite``
# for the FUSE adapter, which serves several threads on one open file.


class HostFile(_io.RawIOBase):
    """A file object over a host file descriptor (``DirLayer`` files).

    ``read``/``write``/``seek`` share one offset as a normal file does; ``pread``/``pwrite``
    use the kernel's positional calls and never move it. ``fileno()`` is the host fd.
    Raises ``BadFile`` (EBADF) on use after close or a write on a read-only file.
    """

    # Open and close are on the path of every file a FUSE program creates, so this class
    # keeps its own state: ``_fd`` is -1 once closed, and ``closed`` reads it (io.IOBase's
    # own flag, set by its ``close``, cost a microsecond more per file). IOBase's finalizer
    # and its checks ask ``closed``, so they see this one.

    # Slots, for the same reason: a file object without an instance dict until one is needed
    # (io.IOBase gives its objects one) is made in two thirds of the time. ``entry`` (the
    # new file's description, see DirLayer.open_write(describe=True)) and ``entry_gen``
    # (UnionFS's change count then) are set by the layer and the union on a created file.
    __slots__ = ("_append", "_fd", "_readable", "_writable", "entry", "entry_gen", "name")

    def __init__(self, fd: int, *, readable: bool = True, writable: bool = True,
                 append: bool = False, name: str | None = None) -> None:
        # (io.RawIOBase.__init__ does nothing: not called)
        self._fd = fd
        self._readable = readable
        self._writable = writable
        self._append = append
        self.name = name

    @property
    def closed(self) -> bool:  # type: ignore[override]
        return self._fd < 0

    def _check(self, write: bool = False) -> None:
        if self._fd < 0:
            raise _BadFile(self.name, "I/O operation on closed file")
        if write and not self._writable:
            raise _BadFile(self.name, "file not open for writing")
        if not write and not self._readable:
            raise _BadFile(self.name, "file not open for reading")

    def fileno(self) -> int:
        if self._fd < 0:
            raise _BadFile(self.name, "I/O operation on closed file")
        return self._fd

    def readable(self) -> bool:
        return self._readable

    def writable(self) -> bool:
        return self._writable

    def seekable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:  # type: ignore[override]
        self._check()
        return _os.readv(self._fd, [buffer])

    def write(self, data) -> int:  # type: ignore[override]
        self._check(write=True)
        return _os.write(self._fd, data)

    def seek(self, offset: int, whence: int = 0) -> int:
        if self._fd < 0:
            raise _BadFile(self.name, "I/O operation on closed file")
        try:
            return _os.lseek(self._fd, offset, whence)
        except OSError as e:
            raise _InvalidPath(self.name, e.strerror) from None

    def tell(self) -> int:
        return self.seek(0, _os.SEEK_CUR)

    def truncate(self, size: int | None = None) -> int:
        self._check(write=True)
        if size is None:
            size = self.tell()
        _os.ftruncate(self._fd, size)
        return size

    def pread(self, size: int, offset: int) -> bytes:
        """Up to ``size`` bytes from ``offset``; the file position does not move."""
        self._check()
        return _os.pread(self._fd, size, offset)

    def pwrite(self, data: bytes, offset: int) -> int:
        """Write ``data`` at ``offset`` (at the end for append-mode files, as ``O_APPEND``
        makes the kernel do); the file position does not move."""
        if self._fd < 0 or not self._writable:
            self._check(write=True)  # (raises)
        return _os.pwrite(self._fd, data, offset)

    def fsync(self) -> None:
        self._check(write=False) if self._readable else None
        _os.fsync(self._fd)

    def flush(self) -> None:
        # what io.IOBase.flush does, with this class's own closed state
        if self._fd < 0:
            raise ValueError("I/O operation on closed file.")

    def close(self) -> None:
        fd = self._fd
        if fd >= 0:
            self._fd = -1  # closed even if the host's close fails, as io.IOBase.close
            _os.close(fd)


class MemoryData:
    """The bytes of one in-memory regular file, shared by every link and open file."""

    __slots__ = ("buf", "lock")

    def __init__(self, data: bytes = b"") -> None:
        self.buf = bytearray(data)
        self.lock = _threading.RLock()


class MemoryFile(_io.RawIOBase):
    """A file object over a ``MemoryData`` (``MemoryLayer`` files). It keeps working after the
    file is unlinked, as a host file would. ``on_change`` is called after each change of
    size or content (the layer updates mtime/ctime there)."""

    def __init__(self, data: MemoryData, *, readable: bool = True, writable: bool = True,
                 append: bool = False, name: str | None = None, on_change=None) -> None:
        super().__init__()
        self._data = data
        self._pos = 0
        self._readable = readable
        self._writable = writable
        self._append = append
        self._on_change = on_change
        self.name = name

    def _check(self, write: bool = False) -> None:
        if self.closed:
            raise _BadFile(self.name, "I/O operation on closed file")
        if write and not self._writable:
            raise _BadFile(self.name, "file not open for writing")
        if not write and not self._readable:
            raise _BadFile(self.name, "file not open for reading")

    def readable(self) -> bool:
        return self._readable

    def writable(self) -> bool:
        return self._writable

    def seekable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:  # type: ignore[override]
        self._check()
        with self._data.lock:
            chunk = self._data.buf[self._pos:self._pos + len(buffer)]
            n = len(chunk)
            buffer[:n] = chunk
            self._pos += n
            return n

    def _write_at(self, data: bytes, offset: int) -> int:
        buf = self._data.buf
        data = bytes(data)
        if offset > len(buf):
            buf.extend(b"\0" * (offset - len(buf)))
        buf[offset:offset + len(data)] = data
        if self._on_change is not None:
            self._on_change()
        return len(data)

    def write(self, data) -> int:  # type: ignore[override]
        self._check(write=True)
        with self._data.lock:
            if self._append:
                self._pos = len(self._data.buf)
            n = self._write_at(data, self._pos)
            self._pos += n
            return n

    def seek(self, offset: int, whence: int = 0) -> int:
        if self.closed:
            raise _BadFile(self.name, "I/O operation on closed file")
        with self._data.lock:
            base = {0: 0, 1: self._pos, 2: len(self._data.buf)}.get(whence)
            if base is None or base + offset < 0:
                raise _InvalidPath(self.name, "invalid seek")
            self._pos = base + offset
            return self._pos

    def tell(self) -> int:
        return self.seek(0, 1)

    def truncate(self, size: int | None = None) -> int:
        self._check(write=True)
        with self._data.lock:
            if size is None:
                size = self._pos
            if size < 0:
                raise _InvalidPath(self.name, "negative size")
            buf = self._data.buf
            if size < len(buf):
                del buf[size:]
            else:
                buf.extend(b"\0" * (size - len(buf)))
            if self._on_change is not None:
                self._on_change()
            return size

    def pread(self, size: int, offset: int) -> bytes:
        """Up to ``size`` bytes from ``offset``; the file position does not move."""
        self._check()
        with self._data.lock:
            return bytes(self._data.buf[offset:offset + size])

    def pwrite(self, data: bytes, offset: int) -> int:
        """Write at ``offset`` (at the end in append mode); the position does not move."""
        self._check(write=True)
        with self._data.lock:
            if self._append:
                offset = len(self._data.buf)
            return self._write_at(data, offset)

    def fsync(self) -> None:
        if self.closed:
            raise _BadFile(self.name, "I/O operation on closed file")

    def fileno(self) -> int:
        raise _io.UnsupportedOperation("an in-memory file has no file descriptor")
