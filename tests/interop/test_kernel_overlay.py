"""Kernel overlayfs as the reference (root only; skips elsewhere, fails under CI=true):

- the conformance machine on a real ``mount -t overlay``: this validates the model itself;
- differential runs: the same generated stack and operation sequence on the kernel and on the
  engine (DirLayers), for every option set this kernel accepts; same value or errno at every
  step, same visible tree at the end;
- interchangeable upper dirs: the engine's upper mounted by the kernel, and the kernel's upper
  read by the engine, give the same view.

Every mount is undone in a ``finally`` (lazy unmount as the fallback)."""

from __future__ import annotations

import os
import subprocess
import tempfile
from typing import ClassVar

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.conftest import need_kernel_overlay
from tests.property.known_bugs import known_engine_bug
from unionfs.testing.conformance import (
    HIDDEN_XATTR_PREFIXES,
    EngineTarget,
    KernelOverlayTarget,
    MountTarget,
    UnionConformance,
    diff_snapshots,
    kernel_overlay,
    mount_overlay,
    outcome,
    snapshot,
    unmount,
)
from unionfs.testing.model import StackSpec, UnionModel, UnsupportedStep
from unionfs.testing.strategies import Op, op_sequences, stacks

pytestmark = pytest.mark.root

#: the option sets this kernel mounts (checked by hand on 6.x: metacopy=on needs redirect_dir=on)
OPTION_SETS = [
    {},
    {"redirect_dir": True},
    {"index": True},
    {"redirect_dir": True, "index": True},
    {"redirect_dir": True, "metacopy": True},
    {"redirect_dir": True, "index": True, "metacopy": True},
]
IDS = ["default", "redirect", "index", "redirect+index", "metacopy", "all"]
HIDDEN = HIDDEN_XATTR_PREFIXES
FEW = settings(max_examples=max(4, settings.default.max_examples // 4))


@pytest.fixture(autouse=True)
def _kernel_overlay():
    need_kernel_overlay()


# ---------------------------------------------------------------------------------------------
# the model against the kernel
# ---------------------------------------------------------------------------------------------


class KernelModel(UnionConformance):
    def make_target(self, stack, **options):
        return KernelOverlayTarget(stack, **options)


class KernelModelAll(KernelModel):
    options: ClassVar[dict[str, bool]] = {"redirect_dir": True, "index": True,
                                          "metacopy": True}


TestKernelModel = KernelModel.TestCase
TestKernelModelAll = KernelModelAll.TestCase
TestKernelModel.settings = TestKernelModelAll.settings = settings(
    max_examples=max(5, settings.default.max_examples // 2), stateful_step_count=12)


def test_kernel_overlay_refuses_metacopy_without_redirect_dir():
    # why OPTION_SETS has no metacopy without redirect_dir, and why overlay_options adds it
    with tempfile.TemporaryDirectory() as base:
        for sub in ("l", "u", "w", "m"):
            os.mkdir(f"{base}/{sub}")
        r = subprocess.run(["mount", "-t", "overlay", "overlay", "-o",
                            f"lowerdir={base}/l,upperdir={base}/u,workdir={base}/w,"
                            "redirect_dir=off,metacopy=on", f"{base}/m"], capture_output=True)
        if r.returncode == 0:
            unmount(f"{base}/m")
        assert r.returncode != 0


# ---------------------------------------------------------------------------------------------
# differential: kernel and engine, step by step
# ---------------------------------------------------------------------------------------------


def _differential(stack: StackSpec, steps: list[Op], options: dict[str, bool]) -> None:
    model = UnionModel(stack, **options)
    with tempfile.TemporaryDirectory(prefix="unionfs-diff-") as base, \
            kernel_overlay(stack, f"{base}/k", **options) as (kernel, _dirs):
        engine = EngineTarget.on_disk(stack, f"{base}/e", **options)
        for op in steps:
            if not model.supports(op.call, *op.args):
                continue
            if known_engine_bug(model, op):
                continue  # left out on all three, so their states stay comparable
            try:
                expected = outcome(model, op)
            except UnsupportedStep:
                continue
            got_kernel = outcome(kernel, op)
            got_engine = outcome(engine, op)
            assert got_kernel == expected, f"model is wrong: {op}: {expected} vs {got_kernel}"
            assert got_engine == got_kernel, f"{op}: kernel {got_kernel}, engine {got_engine}"
        seen_kernel = snapshot(kernel, HIDDEN)
        assert diff_snapshots(seen_kernel, snapshot(engine, HIDDEN)) == []
        assert diff_snapshots(snapshot(model, HIDDEN), seen_kernel) == []


@pytest.mark.parametrize("options", OPTION_SETS, ids=IDS)
def test_kernel_and_engine_agree(options):
    @FEW
    @given(data=st.data(), stack=stacks())
    def check(data, stack):
        _differential(stack, data.draw(op_sequences(stack, max_size=15), label="steps"),
                      options)

    check()


# ---------------------------------------------------------------------------------------------
# interchangeable upper dirs
# ---------------------------------------------------------------------------------------------


def _apply(target, model: UnionModel, steps: list[Op], kernel_upper: bool = False) -> None:
    for op in steps:
        if not model.supports(op.call, *op.args) or known_engine_bug(
                model, op, kernel_upper=kernel_upper):
            continue
        try:
            outcome(model, op)
        except UnsupportedStep:
            continue
        outcome(target, op)


@pytest.mark.parametrize("options", [{}, {"redirect_dir": True},
                                     {"redirect_dir": True, "metacopy": True}],
                         ids=["default", "redirect", "metacopy"])
def test_the_kernel_mounts_the_engines_upper(options):
    @FEW
    @given(data=st.data(), stack=stacks())
    def check(data, stack):
        steps = data.draw(op_sequences(stack, max_size=15), label="steps")
        with tempfile.TemporaryDirectory(prefix="unionfs-e2k-") as base:
            engine = EngineTarget.on_disk(stack, base, **options)
            _apply(engine, UnionModel(stack, **options), steps)
            seen_engine = snapshot(engine, HIDDEN)
            lowers = [layer.root for layer in engine.fs.lowers]
            os.makedirs(f"{base}/kwork")
            os.makedirs(f"{base}/merged")
            mount_overlay(lowers, engine.fs.upper.root, f"{base}/kwork", f"{base}/merged",
                          **options)
            try:
                seen_kernel = snapshot(MountTarget(f"{base}/merged"), HIDDEN)
            finally:
                unmount(f"{base}/merged")
            assert diff_snapshots(seen_engine, seen_kernel) == []

    check()


@pytest.mark.parametrize("options", [{}, {"redirect_dir": True}, {"index": True},
                                     {"redirect_dir": True, "metacopy": True}],
                         ids=["default", "redirect", "index", "metacopy"])
def test_the_engine_reads_the_kernels_upper(options):
    @FEW
    @given(data=st.data(), stack=stacks())
    def check(data, stack):
        from unionfs.layer import DirLayer
        from unionfs.union import UnionFS

        steps = data.draw(op_sequences(stack, max_size=15), label="steps")
        with tempfile.TemporaryDirectory(prefix="unionfs-k2e-") as base:
            with kernel_overlay(stack, base, **options) as (kernel, dirs):
                _apply(kernel, UnionModel(stack, **options), steps, kernel_upper=True)
                seen_kernel = snapshot(kernel, HIDDEN)
            engine = EngineTarget(UnionFS(lowers=[DirLayer(d, cache=False) for d in dirs.lowers],
                                          upper=DirLayer(dirs.upper, writable=True),
                                          workdir=dirs.work, **options))
            assert diff_snapshots(seen_kernel, snapshot(engine, HIDDEN)) == []

    check()


def _script_stack() -> StackSpec:
    from unionfs.testing.model import Dir, File, HardLink, LayerSpec
    return StackSpec((LayerSpec.of({"/d": Dir(), "/d/x": File(b"x"), "/d/y": File(b"y"),
                                    "/e": Dir(), "/e/z": File(b"z"), "/f": File(b"data"),
                                    "/g": HardLink("/f")}),
                      LayerSpec.of({"/d": Dir(), "/d/w": File(b"w")})))


SCRIPT = [Op("unlink", ("/d/x",)), Op("rename", ("/d", "/d2")), Op("unlink", ("/e/z",)),
          Op("rmdir", ("/e",)), Op("mkdir", ("/e", 0o700)), Op("write_file", ("/f", b"new", "a")),
          Op("chmod", ("/d2/y", 0o600)), Op("setxattr", ("/d2/w", "user.a", b"1"))]


@pytest.mark.parametrize("direction", ["engine-to-kernel", "kernel-to-engine"])
def test_a_scripted_upper_reads_the_same_both_ways(direction):
    # whiteouts, a redirected merged dir, an opaque dir, copy-up of data, mode and xattr
    from unionfs.layer import DirLayer
    from unionfs.union import UnionFS

    stack, options = _script_stack(), {"redirect_dir": True}
    model = UnionModel(stack, **options)
    for op in SCRIPT:
        op.apply(model)
    expected = snapshot(model, HIDDEN)
    assert sorted(expected) == ["/", "/d2", "/d2/w", "/d2/y", "/e", "/f", "/g"]
    with tempfile.TemporaryDirectory(prefix="unionfs-script-") as base:
        if direction == "engine-to-kernel":
            engine = EngineTarget.on_disk(stack, base, **options)
            for op in SCRIPT:
                op.apply(engine)
            assert diff_snapshots(expected, snapshot(engine, HIDDEN)) == []
            os.makedirs(f"{base}/kwork")
            os.makedirs(f"{base}/merged")
            mount_overlay([layer.root for layer in engine.fs.lowers], engine.fs.upper.root,
                          f"{base}/kwork", f"{base}/merged", **options)
            try:
                seen = snapshot(MountTarget(f"{base}/merged"), HIDDEN)
            finally:
                unmount(f"{base}/merged")
        else:
            with kernel_overlay(stack, base, **options) as (kernel, dirs):
                for op in SCRIPT:
                    op.apply(kernel)
                assert diff_snapshots(expected, snapshot(kernel, HIDDEN)) == []
            seen = snapshot(EngineTarget(UnionFS(
                lowers=[DirLayer(d, cache=False) for d in dirs.lowers],
                upper=DirLayer(dirs.upper, writable=True), **options)), HIDDEN)
        assert diff_snapshots(expected, seen) == []


@pytest.mark.xfail(strict=True, reason="engine bug KIT-8: the kernel's index=on index is not read")
def test_kit8_engine_reads_kernel_index():
    from unionfs.layer import DirLayer
    from unionfs.testing.model import Dir, File, HardLink, LayerSpec
    from unionfs.union import UnionFS

    stack = StackSpec((LayerSpec.of({"/a": Dir(), "/a/a": File(b""), "/b": HardLink("/a/a")}),))
    with tempfile.TemporaryDirectory(prefix="unionfs-kit8-") as base:
        with kernel_overlay(stack, base, index=True) as (kernel, dirs):
            kernel.truncate("/a/a", 1)
            assert (kernel.read_file("/b"), kernel.lstat("/b").nlink) == (b"\0", 2)
        engine = EngineTarget(UnionFS(lowers=[DirLayer(d, cache=False) for d in dirs.lowers],
                                      upper=DirLayer(dirs.upper, writable=True),
                                      workdir=dirs.work, index=True))
        assert engine.read_file("/b") == b"\0"
