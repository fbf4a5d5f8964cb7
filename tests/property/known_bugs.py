"""Engine deviations found by the testing kit and not fixed yet, one predicate per bug.

Each bug is listed with its reproduction in the shared bug file of the session
(``engine-bugs.md``, ``KIT-n``) and has a strict-xfail test that reproduces it exactly
(``test_engine_conformance.py::test_kit*``): when the engine is fixed, that test XPASSes and
fails, which is the signal to delete the predicate here so the state machines cover the case
again. Until then the machines skip only the steps a predicate matches (noted in the script).
"""

from __future__ import annotations

import copy
import errno

from unionfs.testing.conformance import outcome
from unionfs.testing.model import UnionModel
from unionfs.testing.strategies import LONG_NAME, Op


def _model_errno(model: UnionModel, op: Op) -> int | None:
    try:
        return outcome(copy.deepcopy(model), op).errno
    except Exception:
        return None


def kit1_long_name_checked_before_walk(model: UnionModel, op: Op) -> bool:
    """KIT-1: the engine rejects an over-long name before walking the path, the kernel only
    when the walk reaches it (ENOENT/ENOTDIR from an earlier component win)."""
    if not any(isinstance(a, str) and LONG_NAME in a for a in op.args):
        return False
    return _model_errno(model, op) != errno.ENAMETOOLONG


def kit2_user_xattr_on_special_file(model: UnionModel, op: Op) -> bool:
    """KIT-2: setxattr/removexattr of ``user.*`` on a FIFO must be EPERM."""
    if op.call not in ("setxattr", "removexattr"):
        return False
    try:
        return model.stat(op.args[0]).kind not in ("file", "dir")
    except OSError:
        return False


KNOWN_ENGINE_BUGS = {
    "KIT-1": kit1_long_name_checked_before_walk,
    "KIT-2": kit2_user_xattr_on_special_file,
}


def known_engine_bug(model: UnionModel, op: Op) -> str | None:
    """The id of the open engine bug ``op`` would hit on this model state, or None."""
    for bug, matches in KNOWN_ENGINE_BUGS.items():
        if matches(model, op):
            return f"engine bug {bug}"
    return None
