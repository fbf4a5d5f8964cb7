"""Engine deviations found by the testing kit and not fixed yet, one predicate per bug.

Fixed since they were found (their tests in ``test_engine_conformance.py`` now pass as plain
regression tests): KIT-1 (ENAMETOOLONG before the path walk), KIT-2 (``user.*`` xattrs on a
FIFO must be EPERM), KIT-3 (a private ``user.unionfs.*`` xattr shown with index=on), KIT-4
(metacopy: link then write lost data), KIT-5 (index=on: unlink of a lower hard link kept the
other name's nlink), KIT-6 (index+metacopy: chmod through one link zeroed the other), KIT-7
(index=on: rename over a lower hard link kept the other name's nlink), KIT-9 (index=on: rename
between two names of one lower hard link gave EEXIST).

Each open bug has a strict-xfail test that reproduces it exactly (``test_kit<n>_*`` in
``test_engine_conformance.py`` or ``tests/interop/test_kernel_overlay.py``); when the engine is
fixed, that test XPASSes and fails, which is the signal to delete the predicate here so the
generated runs cover the case again. Until then the runs skip only the steps a predicate
matches (noted in the failure script). Open now: KIT-8 (the engine does not read the index
kernel overlayfs keeps with ``index=on``).
"""

from __future__ import annotations

from collections.abc import Callable

from unionfs.testing.model import UnionModel
from unionfs.testing.strategies import Op

Predicate = Callable[[UnionModel, Op], bool]


#: open engine bugs any machine can meet (none at the moment: KIT-1..7 and KIT-9 are fixed)
KNOWN_ENGINE_BUGS: dict[str, Predicate] = {}

_COPY_UP_CALLS = ("write_file", "truncate", "chmod", "chown", "utime", "setxattr",
                  "removexattr", "link", "rename", "unlink")


def kit8_kernel_index_copy_up(model: UnionModel, op: Op) -> bool:
    """KIT-8 (interop): the engine does not read the kernel's ``index=on`` index, so a step that
    makes the kernel copy a lower hard link up into its index is left out when the engine is to
    read the kernel's upper afterwards."""
    if not model.index or op.call not in _COPY_UP_CALLS:
        return False
    follow = op.call not in ("link", "rename", "unlink")
    names = [op.args[0], op.args[1]] if op.call == "rename" else [op.args[0]]
    for name in names:  # rename also copies a linked victim up before replacing it
        try:
            obj = model._lookup(name, follow=follow)
        except (OSError, ValueError):
            continue
        if obj.kind == "file" and obj.lower and obj.nlink > 1:
            return True
    return False


#: bugs only seen when the engine reads an upper dir the kernel wrote
KERNEL_UPPER_BUGS: dict[str, Predicate] = {"KIT-8": kit8_kernel_index_copy_up}


def known_engine_bug(model: UnionModel, op: Op, *, kernel_upper: bool = False) -> str | None:
    """The id of the open engine bug ``op`` would hit on this model state, or None.
    ``kernel_upper``: the engine will read an upper dir the kernel writes."""
    bugs = dict(KNOWN_ENGINE_BUGS)
    if kernel_upper:
        bugs.update(KERNEL_UPPER_BUGS)
    for bug, matches in bugs.items():
        if matches(model, op):
            return f"engine bug {bug}"
    return None
