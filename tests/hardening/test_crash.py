"""Crash safety: SIGKILL real ``imagesim`` processes mid-operation, then fsck and retry.

A short, seeded campaign (``HARDENING_SEED``, default 8) from ``crash_matrix``: per scenario
the first and the last crash point it passes plus a seeded one, a few timing kills, and a
registry server killed while receiving uploads. Longer runs:
``python tests/hardening/crash_matrix.py --kills 40 --timing 6 --uploads 12``.
"""

from __future__ import annotations

import os
import re
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import crash_matrix as cm
import hardening_kit as kit

from imagesim import faults

SEED = int(os.environ.get("HARDENING_SEED", "8"))


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    w = cm.World.build(str(tmp_path_factory.mktemp("crash")))
    yield w
    w.close()


def test_every_fault_point_is_declared_and_used():
    """faults.POINTS lists exactly the points production code calls (so the campaigns know
    every place to kill)."""
    used: set[str] = set()
    for dirpath, _dirs, files in os.walk(os.path.join(kit.REPO, "imagesim")):
        for name in files:
            if name.endswith(".py"):
                with open(os.path.join(dirpath, name)) as f:
                    used.update(re.findall(r'faults\.point\("([^"]+)"\)', f.read()))
    assert used == set(faults.POINTS)


@pytest.mark.parametrize("name", list(cm.SCENARIOS))
def test_kill_at_crash_points(world, name):
    trials = cm.plan(world, [name], kills_each=3, timing_each=0, seed=SEED)
    assert len(trials) >= 2
    results = [cm.trial(world, sc, kill) for sc, kill in trials]
    # the traced points were really reached: every trial died there
    assert all(r.killed for r in results), [(r.kill, r.killed) for r in results]


@pytest.mark.parametrize("name", ["commit", "pull", "load"])
def test_kill_after_seeded_delay(world, name):
    trials = cm.plan(world, [name], kills_each=0, timing_each=2, seed=SEED)
    trials = [t for t in trials if not isinstance(t[1], tuple)]
    for sc, delay in trials:
        cm.trial(world, sc, delay)


@pytest.mark.parametrize("kill", [("upload.chunk", 3), ("upload.commit", 1)])
def test_kill_registry_server_during_upload(tmp_path, kill):
    r = cm.upload_trial(str(tmp_path), kill)
    assert r.killed


def test_kill_point_env_is_validated(tmp_path):
    """A malformed IMAGESIM_KILL_AT fails loudly instead of silently testing nothing."""
    src = tmp_path / "x.tar"
    src.write_bytes(kit.tar_bytes({"a": b"1"}))
    r = kit.cli(str(tmp_path / "root"), "import", str(src), "x:1", check=False,
                IMAGESIM_KILL_AT="blob.publish")
    assert r.returncode != 0 and "IMAGESIM_KILL_AT" in r.stderr
