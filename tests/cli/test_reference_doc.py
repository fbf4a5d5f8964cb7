"""docs/cli-reference.md is generated from --help; it must match what the commands say now."""

from __future__ import annotations

import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent.parent


def test_the_command_reference_is_current():
    r = subprocess.run([sys.executable, str(ROOT / "scripts" / "gen_cli_reference.py"),
                        "--check"], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, r.stderr
