"""Frozen value types shared by every layer and by the union: ``Entry`` and ``Change``."""

from __future__ import annotations

import enum
import stat as _stat
from dataclasses import dataclass, field, replace


class Kind(enum.Enum):
    """What an entry is. ``WHITEOUT`` is the one internal form of a deletion marker; the
    on-disk forms (char device 0/0, ``.wh.NAME``, xattr whiteouts) never leave ``whiteout.py``
    and the layer classes."""

    FILE = "file"
    DIR = "dir"
    SYMLINK = "symlink"
    CHAR = "char"
    BLOCK = "block"
    FIFO = "fifo"
    SOCKET = "socket"
    WHITEOUT = "whiteout"

    @property
    def s_ifmt(self) -> int:
        """The ``stat.S_IF*`` bits for this kind (a whiteout has none: it is never shown)."""
        return _S_IFMT[self]

    @classmethod
    def from_mode(cls, st_mode: int) -> Kind:
        """The kind of a host ``st_mode`` (no whiteout detection: that is the layer's job)."""
        fmt = _stat.S_IFMT(st_mode)
        for kind, bits in _S_IFMT.items():
            if bits == fmt and kind is not Kind.WHITEOUT:
                return kind
        raise ValueError(f"unknown file type in mode {st_mode:o}")


_S_IFMT = {
    Kind.FILE: _stat.S_IFREG,
    Kind.DIR: _stat.S_IFDIR,
    Kind.SYMLINK: _stat.S_IFLNK,
    Kind.CHAR: _stat.S_IFCHR,
    Kind.BLOCK: _stat.S_IFBLK,
    Kind.FIFO: _stat.S_IFIFO,
    Kind.SOCKET: _stat.S_IFSOCK,
    Kind.WHITEOUT: 0,
}


@dataclass(frozen=True, slots=True)
class Entry:
    """One object as one layer holds it.

    ``mode`` holds the permission bits only (``0o7777``); the type is ``kind``. ``ino`` is the
    object's identity inside its layer (hard links in one layer share it). ``xattrs`` are the
    user-visible extended attributes, sorted by name; the overlay private ones
    (``trusted.overlay.*`` / ``user.overlay.*``) are turned into ``opaque``, ``redirect`` and
    ``metacopy`` by the layer and never appear here.
    """

    kind: Kind
    mode: int = 0o644
    uid: int = 0
    gid: int = 0
    size: int = 0
    atime_ns: int = 0
    mtime_ns: int = 0
    ctime_ns: int = 0
    nlink: int = 1
    rdev: int = 0
    ino: int = 0
    target: str | None = None
    xattrs: tuple[tuple[str, bytes], ...] = field(default=())
    opaque: bool = False
    redirect: str | None = None
    metacopy: bool = False
    #: the union inode number this object had before copy-up (recorded by the engine in a
    #: private overlay xattr), so ``st_ino`` survives copy-up and remounts; ``None`` if never
    #: copied up by this engine
    origin_ino: int | None = None

    @property
    def is_dir(self) -> bool:
        return self.kind is Kind.DIR

    @property
    def is_whiteout(self) -> bool:
        return self.kind is Kind.WHITEOUT

    @property
    def st_mode(self) -> int:
        """Type bits plus permission bits, as ``os.stat_result.st_mode``."""
        return self.kind.s_ifmt | (self.mode & 0o7777)

    def xattr(self, name: str) -> bytes | None:
        for key, value in self.xattrs:
            if key == name:
                return value
        return None

    def evolve(self, **changes: object) -> Entry:
        """A copy with some fields changed (entries are immutable)."""
        return replace(self, **changes)


class ChangeKind(enum.Enum):
    """The three letters of ``docker diff``."""

    ADDED = "A"
    CHANGED = "C"
    DELETED = "D"


@dataclass(frozen=True, slots=True, order=True)
class Change:
    """One line of a container diff: ``Change("/etc/foo", ChangeKind.ADDED)`` prints
    ``A /etc/foo``. Ordered by path, as docker sorts its output."""

    path: str
    kind: ChangeKind

    def __str__(self) -> str:
        return f"{self.kind.value} {self.path}"
