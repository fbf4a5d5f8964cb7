"""The conformance state machine of ``unionfs.testing`` against ``UnionFS`` in-process: over
``MemoryLayer``s and over ``DirLayer``s on disk, with each overlayfs option set. Every step must
give the model's value or errno and the visible trees must stay equal.

Open engine bugs (``known_bugs.py``) are skipped step by step inside the machines and pinned by
the strict-xfail reproductions at the end of this file."""

from __future__ import annotations

import os
import shutil
import tempfile
from typing import ClassVar

import pytest
from hypothesis import settings

from tests.property.known_bugs import known_engine_bug
from unionfs.testing.conformance import EngineTarget, UnionConformance, run_ops
from unionfs.testing.model import Fifo, File, LayerSpec, StackSpec, UnionModel
from unionfs.testing.strategies import LONG_NAME, Op

STEPS = settings(stateful_step_count=20)  # max_examples comes from the dev/ci profile


class EngineConformance(UnionConformance):
    """The engine's machines: open engine bugs are left out step by step."""

    def known_difference(self, op: Op) -> str | None:
        assert self.model is not None
        return known_engine_bug(self.model, op)


class MemoryEngine(EngineConformance):
    def make_target(self, stack, **options):
        return EngineTarget.memory(stack, **options)


class MemoryEngineRedirect(MemoryEngine):
    options: ClassVar[dict[str, bool]] = {"redirect_dir": True}


class MemoryEngineIndex(MemoryEngine):
    options: ClassVar[dict[str, bool]] = {"index": True}


class MemoryEngineAll(MemoryEngine):
    options: ClassVar[dict[str, bool]] = {"redirect_dir": True, "index": True, "metacopy": True}


class DirEngine(EngineConformance):
    """``DirLayer``s in a temp dir: overlayfs-format whiteouts as root, OCI form otherwise."""

    def make_target(self, stack, **options):
        base = tempfile.mkdtemp(prefix="unionfs-prop-")
        fmt = "overlay" if os.geteuid() == 0 else "oci"
        try:
            target = EngineTarget.on_disk(stack, base, fmt=fmt, **options)
        except BaseException:
            shutil.rmtree(base, ignore_errors=True)
            raise
        target._close = lambda: shutil.rmtree(base, ignore_errors=True)
        return target


class DirEngineRedirectIndex(DirEngine):
    options: ClassVar[dict[str, bool]] = {"redirect_dir": True, "index": True}


class DirEngineMetacopy(DirEngine):
    options: ClassVar[dict[str, bool]] = {"redirect_dir": True, "metacopy": True}


TestMemoryEngine = MemoryEngine.TestCase
TestMemoryEngineRedirect = MemoryEngineRedirect.TestCase
TestMemoryEngineIndex = MemoryEngineIndex.TestCase
TestMemoryEngineAll = MemoryEngineAll.TestCase
TestDirEngine = DirEngine.TestCase
TestDirEngineRedirectIndex = DirEngineRedirectIndex.TestCase
TestDirEngineMetacopy = DirEngineMetacopy.TestCase
for _case in (TestMemoryEngine, TestMemoryEngineRedirect, TestMemoryEngineIndex,
              TestMemoryEngineAll, TestDirEngine, TestDirEngineRedirectIndex,
              TestDirEngineMetacopy):
    _case.settings = STEPS
del _case


# ---------------------------------------------------------------------------------------------
# exact reproductions of the open engine bugs (strict: they fail loudly once fixed)
# ---------------------------------------------------------------------------------------------


def _engine_errnos(stack: StackSpec, steps: list[Op]) -> list[tuple[int | None, int | None]]:
    """(model errno, engine errno) per step, MemoryLayer engine and DirLayer engine."""
    out = []
    with tempfile.TemporaryDirectory() as base:
        fmt = "overlay" if os.geteuid() == 0 else "oci"
        targets = {"model": UnionModel(stack), "memory": EngineTarget.memory(stack),
                   "disk": EngineTarget.on_disk(stack, base, fmt=fmt)}
        for _op, got in run_ops(targets, steps):
            out.extend((got["model"].errno, got[name].errno) for name in ("memory", "disk"))
    return out


def test_the_engine_agrees_with_the_model_on_a_lower_file_rewrite():
    # a plain, known-good case for the helper above, so the xfails below cannot pass by accident
    stack = StackSpec((LayerSpec.of({"/f": File(b"lower")}),))
    pairs = _engine_errnos(stack, [Op("write_file", ("/f", b"new", "w", 0o644)),
                                   Op("unlink", ("/nodir/x",))])
    assert pairs == [(None, None), (None, None), (2, 2), (2, 2)]


@pytest.mark.xfail(strict=True, reason="engine bug KIT-1: ENAMETOOLONG before the path walk")
def test_kit1_enametoolong_after_walk():
    stack = StackSpec((LayerSpec.of({"/c": File(b"")}),))
    pairs = _engine_errnos(stack, [
        Op("rename", (f"/{LONG_NAME}", "/c/a")),   # new parent is a file: ENOTDIR
        Op("lstat", (f"/c/{LONG_NAME}",)),         # ENOTDIR
        Op("mkdir", (f"/nodir/{LONG_NAME}", 0o755)),  # ENOENT
    ])
    assert all(model == engine for model, engine in pairs), pairs


@pytest.mark.xfail(strict=True, reason="engine bug KIT-2: user.* xattrs on a FIFO must be EPERM")
def test_kit2_user_xattr_on_fifo():
    stack = StackSpec((LayerSpec.of({"/f": Fifo()}),))
    pairs = _engine_errnos(stack, [Op("setxattr", ("/f", "user.a", b"v")),
                                   Op("removexattr", ("/f", "user.a"))])
    assert all(model == engine for model, engine in pairs), pairs
