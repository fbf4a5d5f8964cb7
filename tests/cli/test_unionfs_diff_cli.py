"""`unionfs diff UPPERDIR`: an upper dir three ways, through the real command."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.conftest import need_root


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "unionfs", "diff", *args],
                          capture_output=True, text=True, timeout=60)


def test_three_views_of_an_overlayfs_upper(tmp_path):
    need_root()
    lower, upper = tmp_path / "lower", tmp_path / "upper"
    (lower / "d").mkdir(parents=True)
    (lower / "a").write_text("a")
    (lower / "b").write_text("b")
    (lower / "d" / "x").write_text("x")
    upper.mkdir()
    (upper / "a").write_text("a changed")                 # copied up and changed
    os.mknod(upper / "b", 0o020000, os.makedev(0, 0))      # whiteout: deleted
    (upper / "d").mkdir()                                  # recreated: opaque
    os.setxattr(upper / "d", "trusted.overlay.opaque", b"y")
    (upper / "new").write_text("n")                        # added
    r = _run(str(upper), "--lowerdir", str(lower), "--width", "150")
    assert r.returncode == 0, r.stderr
    rows = {line.split("|")[0].split()[0]: [c.strip() for c in line.split("|")]
            for line in r.stdout.splitlines()[2:] if line.split("|")[0].strip()}
    assert rows["a"][2] == "C /a" and rows["a"][1] == "a"
    assert "whiteout" in rows["b"][0] and rows["b"][1] == ".wh.b" and rows["b"][2] == "D /b"
    assert rows["d"][2] == "C /d" and ".wh..wh..opq" in r.stdout
    assert rows["new"][2] == "A /new"
    # nothing was written: the upper is as it was
    assert sorted(os.listdir(upper)) == ["a", "b", "d", "new"]


def test_without_lowers_added_and_changed_are_unknown(tmp_path):
    (tmp_path / "up").mkdir()
    (tmp_path / "up" / "f").write_text("f")
    r = _run(str(tmp_path / "up"), "--width", "100")
    assert r.returncode == 0, r.stderr
    assert "? /f" in r.stdout


def test_a_missing_upper_dir_is_a_usage_error(tmp_path):
    r = _run(str(tmp_path / "nope"))
    assert r.returncode == 2
    assert "does not exist" in r.stderr
