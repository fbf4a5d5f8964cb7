"""The conformance state machine of ``unionfs.testing`` against ``UnionFS`` in-process: over
``MemoryLayer``s and over ``DirLayer``s on disk, with each overlayfs option set. Every step must
give the model's value or errno and the visible trees must stay equal.

Open engine bugs (``known_bugs.py``) are skipped step by step inside the machines and pinned by
strict-xfail reproductions; the bugs the kit found and the engine fixed (KIT-n) keep their
exact reproductions at the end of this file as regression tests."""

from __future__ import annotations

import os
import shutil
import tempfile
from typing import ClassVar

import pytest
from hypothesis import settings

from tests.property.known_bugs import known_engine_bug
from unionfs.testing.conformance import EngineTarget, UnionConformance, run_ops
from unionfs.testing.model import Dir, Fifo, File, HardLink, LayerSpec, StackSpec, UnionModel
from unionfs.testing.strategies import LONG_NAME, Op

# max_examples comes from the dev/ci profile; the option variants run half as many
STEPS = settings(stateful_step_count=10)
VARIANT_STEPS = settings(stateful_step_count=10,
                         max_examples=max(5, settings.default.max_examples // 2))


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
TestMemoryEngine.settings = TestDirEngine.settings = STEPS
for _case in (TestMemoryEngineRedirect, TestMemoryEngineIndex, TestMemoryEngineAll,
              TestDirEngineRedirectIndex, TestDirEngineMetacopy):
    _case.settings = VARIANT_STEPS
del _case


# ---------------------------------------------------------------------------------------------
# exact reproductions of the engine bugs found by the kit: fixed ones are plain regression
# tests, open ones strict xfails (they fail loudly once fixed: then drop the known_bugs entry)
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


def test_kit1_enametoolong_after_walk():
    stack = StackSpec((LayerSpec.of({"/c": File(b"")}),))
    pairs = _engine_errnos(stack, [
        Op("rename", (f"/{LONG_NAME}", "/c/a")),   # new parent is a file: ENOTDIR
        Op("lstat", (f"/c/{LONG_NAME}",)),         # ENOTDIR
        Op("mkdir", (f"/nodir/{LONG_NAME}", 0o755)),  # ENOENT
    ])
    assert all(model == engine for model, engine in pairs), pairs


def test_kit2_user_xattr_on_fifo():
    stack = StackSpec((LayerSpec.of({"/f": Fifo()}),))
    pairs = _engine_errnos(stack, [Op("setxattr", ("/f", "user.a", b"v")),
                                   Op("removexattr", ("/f", "user.a"))])
    assert all(model == engine for model, engine in pairs), pairs


def test_kit3_private_link_xattr_hidden():
    stack = StackSpec((LayerSpec.of({"/b": File(b"x"), "/a": HardLink("/b")}),))
    with tempfile.TemporaryDirectory() as base:
        fmt = "overlay" if os.geteuid() == 0 else "oci"
        engine = EngineTarget.on_disk(stack, base, fmt=fmt, redirect_dir=True, index=True)
        engine.link("/b", "/d")
        assert engine.fs.listxattr("/b") == []


@pytest.mark.parametrize("where", ["memory", "disk"])
def test_kit4_metacopy_link_then_write(where):
    stack = StackSpec((LayerSpec.of({"/a": Dir(), "/a/d": File(b"x")}),))
    options = {"redirect_dir": True, "metacopy": True}
    with tempfile.TemporaryDirectory() as base:
        fmt = "overlay" if os.geteuid() == 0 else "oci"
        engine = (EngineTarget.memory(stack, **options) if where == "memory"
                  else EngineTarget.on_disk(stack, base, fmt=fmt, **options))
        engine.link("/a/d", "/a/c")
        engine.write_file("/a/d", b"y", "a")
        assert (engine.read_file("/a/c"), engine.lstat("/a/c").nlink) == (b"xy", 2)


@pytest.mark.parametrize("where", ["memory", "disk"])
def test_kit5_index_unlink_lowers_nlink(where):
    stack = StackSpec((LayerSpec.of({"/c": Dir(), "/c/d": File(b""), "/c/b": HardLink("/c/d")}),))
    with tempfile.TemporaryDirectory() as base:
        fmt = "overlay" if os.geteuid() == 0 else "oci"
        engine = (EngineTarget.memory(stack, index=True) if where == "memory"
                  else EngineTarget.on_disk(stack, base, fmt=fmt, index=True))
        engine.unlink("/c/b")
        assert engine.lstat("/c/d").nlink == 1


@pytest.mark.parametrize("where", ["memory", "disk"])
def test_kit6_index_metacopy_chmod_keeps_link_data(where):
    stack = StackSpec((LayerSpec.of({"/b": Dir(), "/b/a": File(b"x"), "/a": HardLink("/b/a")}),))
    options = {"redirect_dir": True, "index": True, "metacopy": True}
    with tempfile.TemporaryDirectory() as base:
        fmt = "overlay" if os.geteuid() == 0 else "oci"
        engine = (EngineTarget.memory(stack, **options) if where == "memory"
                  else EngineTarget.on_disk(stack, base, fmt=fmt, **options))
        engine.chmod("/a", 0o600)
        assert (engine.read_file("/b/a"), engine.read_file("/a")) == (b"x", b"x")


@pytest.mark.parametrize("where", ["memory", "disk"])
def test_kit7_index_rename_over_lower_link(where):
    stack = StackSpec((LayerSpec.of({"/c": Dir(), "/c/b": File(b"b"), "/c/d": File(b""),
                                     "/c/l": HardLink("/c/d")}),))
    with tempfile.TemporaryDirectory() as base:
        fmt = "overlay" if os.geteuid() == 0 else "oci"
        engine = (EngineTarget.memory(stack, index=True) if where == "memory"
                  else EngineTarget.on_disk(stack, base, fmt=fmt, index=True))
        engine.rename("/c/b", "/c/l")
        assert engine.lstat("/c/d").nlink == 1


@pytest.mark.parametrize("where", ["memory", "disk"])
def test_kit9_index_rename_between_links(where):
    stack = StackSpec((LayerSpec.of({"/c": File(b"x"), "/b": HardLink("/c")}),))
    with tempfile.TemporaryDirectory() as base:
        fmt = "overlay" if os.geteuid() == 0 else "oci"
        engine = (EngineTarget.memory(stack, index=True) if where == "memory"
                  else EngineTarget.on_disk(stack, base, fmt=fmt, index=True))
        engine.rename("/c", "/b")  # same inode: rename(2) returns 0 and changes nothing
        assert engine.listdir("/") == ["b", "c"]
