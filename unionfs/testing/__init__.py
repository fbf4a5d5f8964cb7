"""The testing kit shipped for users of ``unionfs``.

- ``unionfs.testing.model``: ``UnionModel``, a plain reference model of an overlay union (the
  oracle), and the plain-data layer specs it is built from (``StackSpec``, ``LayerSpec``,
  ``File``, ``Dir``, ``Symlink``, ``Fifo``, ``HardLink``, ``Whiteout``).
- ``unionfs.testing.strategies``: hypothesis strategies for layer stacks and operation
  sequences, and writers that turn a spec into a ``MemoryLayer``, an overlayfs-format
  directory or an OCI layer tar.
- ``unionfs.testing.conformance``: ``UnionConformance``, a reusable hypothesis state machine
  that checks any union (this engine, a FUSE mount, kernel overlayfs) against the model, with
  the ``EngineTarget`` and ``MountTarget`` adapters.

``model`` needs only the standard library; the other two need ``hypothesis``. See
``docs/testing.md`` for a walk-through.
"""

from __future__ import annotations

from .model import (
    Dir,
    Fifo,
    File,
    HardLink,
    LayerSpec,
    StackSpec,
    Stat,
    Symlink,
    UnionModel,
    Whiteout,
)

__all__ = ["Dir", "Fifo", "File", "HardLink", "LayerSpec", "StackSpec", "Stat", "Symlink",
           "UnionModel", "Whiteout"]
