"""Kernel overlayfs as the reference (root only; skips elsewhere, fails under CI=true):

- the conformance machine on a real ``mount -t overlay``: this validates the model itself;
- differential runs: the same generated stack and operation sequence on the kernel and on the
  engine (DirLayers), for every option set this kernel accepts; same value or errno at every
  step, same visible tree at the end;
- interchangeable upper dirs: the engine's upper mounted by the kernel, and the kernel's upper
  read by the engine, give the same view.

Every mount is undone in a ``finally`` (lazy unmount as the fallback)."""

from __future__ import annotations

import contextlib
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


def _apply(target, model: UnionModel, steps: list[Op]) -> None:
    for op in steps:
        if not model.supports(op.call, *op.args) or known_engine_bug(model, op):
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
                _apply(kernel, UnionModel(stack, **options), steps)
                seen_kernel = snapshot(kernel, HIDDEN)
            engine = EngineTarget(UnionFS(lowers=[DirLayer(d, cache=False) for d in dirs.lowers],
                                          upper=DirLayer(dirs.upper, writable=True),
                                          workdir=dirs.work, **options))
            assert diff_snapshots(seen_kernel, snapshot(engine, HIDDEN)) == []

    check()


def _hard_link_stack() -> StackSpec:
    # lower hard-link groups in one layer and across directories, in two lowers
    from unionfs.testing.model import Dir, File, HardLink, LayerSpec
    return StackSpec((LayerSpec.of({"/a": Dir(), "/a/a": File(b""), "/b": HardLink("/a/a"),
                                    "/a/c": File(b"c"), "/c": HardLink("/a/c"),
                                    "/d": HardLink("/a/c")}),
                      LayerSpec.of({"/a": Dir(), "/e": File(b"e"), "/a/e": HardLink("/e")})))


@pytest.mark.parametrize("options", [{"index": True}, {"redirect_dir": True, "index": True}],
                         ids=["index", "redirect+index"])
def test_the_engine_reads_the_kernels_index(options):
    # KIT-8: generated steps on lower hard links (about half the runs make the kernel copy
    # one up into its index); the engine, given the kernel's work dir, sees what it saw
    from unionfs.layer import DirLayer
    from unionfs.union import UnionFS

    stack = _hard_link_stack()

    @FEW
    @given(data=st.data())
    def check(data):
        steps = data.draw(op_sequences(stack, max_size=15), label="steps")
        with tempfile.TemporaryDirectory(prefix="unionfs-k2e-index-") as base:
            with kernel_overlay(stack, base, **options) as (kernel, dirs):
                _apply(kernel, UnionModel(stack, **options), steps)
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


# ---------------------------------------------------------------------------------------------
# KIT-8: the index kernel overlayfs keeps with index=on, read and extended by the engine
# ---------------------------------------------------------------------------------------------


@contextlib.contextmanager
def _kit8_base(fs: str):
    """A temp dir on the test machine's disk, or on a fresh tmpfs (a filesystem whose uuid is
    not null, so the kernel's index names carry it)."""
    with tempfile.TemporaryDirectory(prefix="unionfs-kit8-") as base:
        if fs == "tmpfs":
            subprocess.run(["mount", "-t", "tmpfs", "tmpfs", base], check=True)
        try:
            yield base
        finally:
            if fs == "tmpfs":
                unmount(base)


def _kit8_mount(base: str, upper: str, work: str, extra: str = "") -> str:
    merged = f"{base}/merged"
    os.makedirs(merged, exist_ok=True)
    opts = f"lowerdir={base}/lower,upperdir={upper},workdir={work},index=on{extra}"
    subprocess.run(["mount", "-t", "overlay", "overlay", "-o", opts, merged], check=True,
                   capture_output=True)
    return merged


def _kit8_lower(base: str) -> None:
    # /a/a and /b: one lower hard-link group; /c and /d/c: another, never copied up
    os.makedirs(f"{base}/lower/a")
    os.makedirs(f"{base}/lower/d")
    open(f"{base}/lower/a/a", "wb").close()
    os.link(f"{base}/lower/a/a", f"{base}/lower/b")
    with open(f"{base}/lower/c", "wb") as f:
        f.write(b"c")
    os.link(f"{base}/lower/c", f"{base}/lower/d/c")


def _kit8_engine(base: str, upper: str, work: str):
    from unionfs.layer import DirLayer
    from unionfs.union import UnionFS

    return UnionFS(lowers=[DirLayer(f"{base}/lower", cache=False)],
                   upper=DirLayer(upper, writable=True), workdir=work, index=True)


@pytest.mark.parametrize(("fs", "uuid"), [("disk", ""), ("tmpfs", ""), ("tmpfs", "off")],
                         ids=["disk", "tmpfs", "tmpfs-uuid-off"])
def test_kit8_engine_reads_kernel_index(fs, uuid):
    extra = f",uuid={uuid}" if uuid else ""
    with _kit8_base(fs) as base:
        _kit8_lower(base)
        upper, work = f"{base}/upper", f"{base}/work"
        os.makedirs(upper)
        os.makedirs(work)
        merged = _kit8_mount(base, upper, work, extra)
        try:
            os.truncate(f"{merged}/a/a", 1)
            kernel = MountTarget(merged)
            assert (kernel.read_file("/b"), kernel.lstat("/b").nlink) == (b"\0", 2)
            seen_kernel = snapshot(kernel, HIDDEN)
        finally:
            unmount(merged)
        # the kernel's index entry is named by the lower file handle it records as origin
        (name,) = os.listdir(f"{work}/index")
        assert os.getxattr(f"{upper}/a/a", "trusted.overlay.origin").hex() == name
        if uuid == "off":
            assert name[10:42] == "00" * 16  # the null uuid in place of the tmpfs one
        fs_ = _kit8_engine(base, upper, work)
        engine = EngineTarget(fs_)
        assert diff_snapshots(seen_kernel, snapshot(engine, HIDDEN)) == []
        assert engine.read_file("/b") == b"\0"
        assert fs_.lstat("/b").st_nlink == fs_.lstat("/a/a").st_nlink == 2
        assert fs_.lstat("/b").st_ino == fs_.lstat("/a/a").st_ino
        assert fs_.lstat("/c").st_ino != fs_.lstat("/b").st_ino  # the untouched group


def test_kit8_kernel_and_engine_share_the_index():
    """The kernel copies a lower hard link up into its index; the engine writes through
    another name of it and unlinks one; a kernel mount then sees what the engine saw, and
    the engine reads the nlink record the kernel left."""
    with _kit8_base("tmpfs") as base:
        _kit8_lower(base)
        upper, work = f"{base}/upper", f"{base}/work"
        os.makedirs(upper)
        os.makedirs(work)
        merged = _kit8_mount(base, upper, work)
        try:
            os.truncate(f"{merged}/a/a", 1)
        finally:
            unmount(merged)
        fs_ = _kit8_engine(base, upper, work)
        with fs_.open("/b", "r+b") as f:  # links /b up to the kernel's index entry
            f.write(b"Z")
        engine = EngineTarget(fs_)
        assert engine.read_file("/a/a") == b"Z"
        assert fs_.lstat("/a/a").st_nlink == fs_.lstat("/b").st_nlink == 2
        assert os.lstat(f"{upper}/b").st_ino == os.lstat(f"{upper}/a/a").st_ino
        seen_engine = snapshot(engine, HIDDEN)
        merged = _kit8_mount(base, upper, work)
        try:
            assert diff_snapshots(seen_engine, snapshot(MountTarget(merged), HIDDEN)) == []
            os.unlink(f"{merged}/b")  # the kernel rewrites the group's nlink record
            assert os.lstat(f"{merged}/a/a").st_nlink == 1
        finally:
            unmount(merged)
        fs_ = _kit8_engine(base, upper, work)
        assert fs_.lstat("/a/a").st_nlink == 1
        assert not fs_.exists("/b")
        fs_.unlink("/a/a")  # the group's last name: the index entry is left an orphan
        seen_engine = snapshot(EngineTarget(fs_), HIDDEN)
        assert sorted(seen_engine) == ["/", "/a", "/c", "/d", "/d/c"]
        merged = _kit8_mount(base, upper, work)  # the kernel accepts the orphan (and drops it)
        try:
            assert diff_snapshots(seen_engine, snapshot(MountTarget(merged), HIDDEN)) == []
        finally:
            unmount(merged)
