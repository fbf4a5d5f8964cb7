"""Shared test set-up: hypothesis profiles and the skip-or-fail rule for real-system tests.

A test that needs root, kernel overlayfs, FUSE or an interop tool skips where that is truly
unavailable, with the reason. Under ``CI=true`` the same condition fails the test instead:
CI installs everything, so a skip there would hide a broken set-up.
"""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest
from hypothesis import HealthCheck, Phase, settings

# No "explain" phase: its tracer makes shrinking a failing state machine many times slower,
# and a failure report with the shrunk steps (note()s) already reads like a script.
_PHASES = [Phase.explicit, Phase.reuse, Phase.generate, Phase.target, Phase.shrink]
settings.register_profile(
    "dev", max_examples=30, deadline=None, phases=_PHASES,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile(
    "ci", max_examples=150, deadline=None, print_blob=True, phases=_PHASES,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE",
                                     "ci" if os.environ.get("CI") == "true" else "dev"))

IN_CI = os.environ.get("CI") == "true"


def unavailable(reason: str) -> None:
    """Skip with ``reason`` locally; fail under CI=true, where everything must be present."""
    if IN_CI:
        pytest.fail(f"required in CI but unavailable: {reason}")
    pytest.skip(reason)


def need_root() -> None:
    if os.geteuid() != 0:
        unavailable("needs root")


def need_tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        unavailable(f"{name} is not installed (scripts/install-sysdeps installs it as root)")
    return path  # type: ignore[return-value]


_overlay_ok: bool | None = None


def need_kernel_overlay() -> None:
    """Root, and a kernel that mounts overlayfs here (probed once by a real mount)."""
    global _overlay_ok
    need_root()
    if _overlay_ok is None:
        import tempfile
        with tempfile.TemporaryDirectory() as d:
            for sub in ("l", "u", "w", "m"):
                os.mkdir(os.path.join(d, sub))
            r = subprocess.run(
                ["mount", "-t", "overlay", "overlay", "-o",
                 f"lowerdir={d}/l,upperdir={d}/u,workdir={d}/w", f"{d}/m"],
                capture_output=True)
            _overlay_ok = r.returncode == 0
            if _overlay_ok:
                subprocess.run(["umount", f"{d}/m"], check=False)
    if not _overlay_ok:
        unavailable("kernel overlayfs cannot be mounted here")


def need_fuse() -> None:
    if not os.path.exists("/dev/fuse"):
        unavailable("/dev/fuse is missing")
    need_tool("fusermount3")
    try:
        import mfusepy  # noqa: F401
    except Exception as e:  # OSError when libfuse itself is missing
        unavailable(f"mfusepy cannot load libfuse: {e}")
