"""The README's promises: it opens with the two commands, and its Python example runs as
printed (in a fresh interpreter, on real directories)."""

from __future__ import annotations

import pathlib
import re
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def test_readme_opens_with_make_demo_and_make_test():
    first_block = re.search(r"```\n(.*?)```", README, re.S).group(1)
    commands = [line.split("#")[0].strip() for line in first_block.splitlines()]
    assert commands == ["make demo", "make test"]


def test_the_engine_example_runs_and_leaves_the_lower_layer_untouched():
    blocks = re.findall(r"```python\n(.*?)```", README, re.S)
    example = next(b for b in blocks if "UnionFS(" in b)
    r = subprocess.run([sys.executable, "-c", example], capture_output=True, text=True,
                       cwd=ROOT, timeout=60)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.strip().splitlines()
    assert lines[0] == "['motd', 'new']"
    assert lines[-1] == "from the image"      # the lower file, read from the host
    assert "upper" in r.stdout.lower()
