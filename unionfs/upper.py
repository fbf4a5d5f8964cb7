"""``WritableLayer``: a ``Layer`` that can also be changed. No union logic lives here: the
layer does exactly the one-layer operation it is told (the parent must already exist in this
layer), and ``UnionFS`` decides what to copy up, where to leave whiteouts and when a directory
becomes opaque.

Implementations: ``MemoryLayer`` and ``DirLayer(path, writable=True)`` (see ``layer.py``).
A writable ``DirLayer`` writes whiteouts and opaque markers in the format chosen for it
(``whiteout.Format``): overlayfs form when it can, as the kernel and fuse-overlayfs expect.
"""

from __future__ import annotations

from typing import BinaryIO, Protocol, runtime_checkable

from .entry import Kind
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
