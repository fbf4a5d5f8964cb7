"""The read-only ``Layer`` protocol and its implementations.

A layer answers questions about its own paths only: it knows nothing of the layers above or
below it. ``lookup`` returns an ``Entry`` (a whiteout is ``Entry(kind=Kind.WHITEOUT)``, an
opaque directory ``Entry(opaque=True)``); the names on disk that encode those
(``.wh.NAME``, ``.wh..wh..opq``, char device 0/0, overlay xattrs) are decoded here through
``whiteout.py`` and never seen above this module.

Paths are normalised union paths (``unionfs.path.normalize``). A layer never resolves
symlinks: ``lookup("/a/b")`` where ``/a`` is a symlink in this layer returns ``None``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import BinaryIO, Protocol, runtime_checkable

from .entry import Entry


@runtime_checkable
class Layer(Protocol):
    """A read-only layer.

    Contract: answers never change for a lower layer during a union's life (lower layers are
    immutable), so the union may cache them. ``listdir`` lists whiteouts as their plain names
    (their entries say ``WHITEOUT``) and never lists the on-disk marker names.
    """

    #: a short human name for provenance and traces (e.g. the directory, or "layer 3")
    name: str

    def lookup(self, path: str) -> Entry | None:
        """The entry at exactly ``path`` in this layer, or ``None`` when absent (also when a
        parent is not a directory in this layer)."""
        ...

    def listdir(self, path: str) -> list[str]:
        """Names directly inside the directory ``path`` of this layer (whiteouts included,
        on-disk markers excluded), in no particular order. Raises ``NotFound``/``NotADir``."""
        ...

    def read(self, path: str, offset: int, size: int) -> bytes:
        """Up to ``size`` bytes of the regular file at ``path`` from ``offset``."""
        ...

    def open_read(self, path: str) -> BinaryIO:
        """A binary file object reading the regular file at ``path`` (caller closes it)."""
        ...

    def readlink(self, path: str) -> str:
        """The target of the symlink at ``path``. Raises ``InvalidPath`` if not a symlink."""
        ...

    def host_path(self, path: str) -> str | None:
        """The host file that holds ``path``'s data, when the layer is a directory on disk
        (lets copy-up use ``copy_file_range``); ``None`` for in-memory layers."""
        ...


def walk_layer(layer: Layer, top: str = "/") -> Iterator[tuple[str, Entry]]:
    """Every ``(path, entry)`` of one layer below ``top`` (``top`` itself first when present),
    parents before children, names sorted: the order a deterministic tar needs."""
    from .path import join

    entry = layer.lookup(top)
    if entry is None:
        return
    yield top, entry
    if entry.is_dir:
        for name in sorted(layer.listdir(top)):
            yield from walk_layer(layer, join(top, name))
