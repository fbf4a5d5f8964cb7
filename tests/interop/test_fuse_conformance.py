"""The conformance state machine of ``unionfs.testing`` driven through a real FUSE mount of the
engine (real system calls, next to the reference model), and the same machine on kernel
overlayfs: both must give the model's result or errno at every step."""

from __future__ import annotations

import os
import shutil
import tempfile
from typing import ClassVar

import pytest
from hypothesis import settings

from tests.conftest import need_fuse, need_kernel_overlay, need_root
from tests.interop.fuse_helpers import force_unmount, in_mounts, run_cli
from unionfs.testing.conformance import KernelOverlayTarget, MountTarget, UnionConformance
from unionfs.testing.model import LayerSpec
from unionfs.testing.strategies import write_layer_dir

pytestmark = [pytest.mark.fuse, pytest.mark.root]


class FuseMountTarget(MountTarget):
    """A stack written in overlayfs form to a temp dir and mounted with ``unionfs mount``;
    ``close`` unmounts and removes it."""

    def __init__(self, stack, **options: bool) -> None:
        self.base = tempfile.mkdtemp(prefix="unionfs-fconf-")
        lowers = [write_layer_dir(spec, f"{self.base}/lower{i}")
                  for i, spec in enumerate(stack.lowers)]
        upper = write_layer_dir(stack.upper or LayerSpec(), f"{self.base}/upper")
        work, mnt = f"{self.base}/work", f"{self.base}/mnt"
        os.mkdir(work)
        os.mkdir(mnt)
        opts = ("lowerdir=" + ":".join(lowers) + f",upperdir={upper},workdir={work},"
                + ",".join(f"{k}={'on' if v else 'off'}" for k, v in options.items()))
        super().__init__(mnt)
        r = run_cli("mount", "-o", opts.rstrip(","), mnt)
        if r.returncode != 0:
            shutil.rmtree(self.base, ignore_errors=True)
            raise AssertionError(f"mount failed: {r.stderr}")

    def close(self) -> None:
        if in_mounts(self.root):
            run_cli("umount", self.root)
        force_unmount(self.root)
        shutil.rmtree(self.base, ignore_errors=True)


class FuseConformance(UnionConformance):
    def make_target(self, stack, **options):
        return FuseMountTarget(stack, **options)


class FuseRedirectConformance(FuseConformance):
    options: ClassVar[dict[str, bool]] = {"redirect_dir": True}


class KernelConformance(UnionConformance):
    def make_target(self, stack, **options):
        return KernelOverlayTarget(stack, **options)


# each example is a real mount: fewer examples and steps than the in-process machines
_fewer = settings(max_examples=max(5, settings().max_examples // 3), stateful_step_count=25)


class TestFuseMount(FuseConformance.TestCase):
    settings = _fewer

    def setUp(self) -> None:
        need_root()
        need_fuse()


class TestFuseMountRedirectDir(FuseRedirectConformance.TestCase):
    settings = _fewer

    def setUp(self) -> None:
        need_root()
        need_fuse()


class TestKernelOverlaySameSequences(KernelConformance.TestCase):
    settings = _fewer

    def setUp(self) -> None:
        need_kernel_overlay()
