"""Engine deviations found by the testing kit and not fixed yet, one predicate per bug.

Fixed since they were found (their tests in ``test_engine_conformance.py`` now pass as plain
regression tests): KIT-1 (ENAMETOOLONG before the path walk), KIT-2 (``user.*`` xattrs on a
FIFO must be EPERM), KIT-3 (a private ``user.unionfs.*`` xattr shown with index=on), KIT-4
(metacopy: link then write lost data), KIT-5 (index=on: unlink of a lower hard link kept the
other name's nlink), KIT-6 (index+metacopy: chmod through one link zeroed the other), KIT-7
(index=on: rename over a lower hard link kept the other name's nlink), KIT-8 (the kernel's
``index=on`` index was not read), KIT-9 (index=on: rename between two names of one lower hard
link gave EEXIST).

Each open bug has a strict-xfail test that reproduces it exactly (``test_kit<n>_*`` in
``test_engine_conformance.py`` or ``tests/interop/test_kernel_overlay.py``); when the engine is
fixed, that test XPASSes and fails, which is the signal to delete the predicate here so the
generated runs cover the case again. Until then the runs skip only the steps a predicate
matches (noted in the failure script). Open now: none.
"""

from __future__ import annotations

from collections.abc import Callable

from unionfs.testing.model import UnionModel
from unionfs.testing.strategies import Op

Predicate = Callable[[UnionModel, Op], bool]


#: open engine bugs (none at the moment: KIT-1..9 are fixed)
KNOWN_ENGINE_BUGS: dict[str, Predicate] = {}

def known_engine_bug(model: UnionModel, op: Op) -> str | None:
    """The id of the open engine bug ``op`` would hit on this model state, or None."""
    for bug, matches in KNOWN_ENGINE_BUGS.items():
        if matches(model, op):
            return f"engine bug {bug}"
    return None
