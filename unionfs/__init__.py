"""unionfs: a copy-on-write union filesystem engine with Linux overlayfs semantics.

    from unionfs import UnionFS, DirLayer, MemoryLayer
    fs = UnionFS(lowers=[DirLayer("l2"), DirLayer("l1")], upper=DirLayer("up", writable=True))
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "UnionFS": "union",
    "Provenance": "union",
    "DirLayer": "layer",
    "MemoryLayer": "layer",
    "Layer": "layer",
    "WritableLayer": "upper",
    "Entry": "entry",
    "Kind": "entry",
    "Change": "entry",
    "ChangeKind": "entry",
    "changes": "diff",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:  # imported on first use: `import unionfs` stays cheap
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'unionfs' has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)
