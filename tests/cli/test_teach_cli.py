"""`imagesim which`, `tree` and `graph` through main() on a real store with the built-in
library images, and `graph` once as a real subprocess."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from imagesim.cli import main


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("teach-root"))
    assert main(["--root", root, "pull", "ubuntu"]) == 0
    assert main(["--root", root, "pull", "tomcat"]) == 0
    assert main(["--root", root, "run", "--name", "u1", "ubuntu", "sh", "-c",
                 "echo hi >> /etc/hostname; rm /etc/os-release; mkdir /app; "
                 "echo x > /app/new"]) == 0
    return root


def run(capsys, root, *args):
    capsys.readouterr()
    status = main(["--root", root, *args])
    out, err = capsys.readouterr()
    return status, out, err


def test_which_in_a_container_and_its_image(capsys, root):
    status, out, _ = run(capsys, root, "which", "u1", "/etc/hostname")
    assert status == 0
    assert out.splitlines()[0].startswith("/etc/hostname  (container u1 (")
    assert "supplied by: [+] the container's writable layer" in out
    assert "shadows:     [a] layer 1" in out and "docker diff: C" in out
    status, out, _ = run(capsys, root, "which", "ubuntu", "/etc/hostname")
    assert status == 0 and "supplied by: [a] layer 1" in out and "[+]" not in out
    status, out, _ = run(capsys, root, "which", "u1", "/app/new")
    assert "docker diff: A" in out
    status, out, _ = run(capsys, root, "which", "--json", "u1", "/etc/hostname")
    doc = json.loads(out)
    assert doc["supplier"]["container"] is True and doc["change"] == "C"
    assert [s["layer"]["index"] for s in doc["shadows"]] == [1]
    assert doc["entry"]["kind"] == "file"


def test_which_explains_a_deleted_path(capsys, root):
    status, out, err = run(capsys, root, "which", "u1", "/etc/os-release")
    assert status == 1 and out == ""
    assert "a whiteout at /etc/os-release in the container's writable layer hides it" in err
    status, _, err = run(capsys, root, "which", "nosuch", "/x")
    assert status == 1 and "No such container or image: nosuch" in err


def test_tree_marks_and_letters(capsys, root):
    status, out, _ = run(capsys, root, "tree", "u1", "/etc", "-L", "1", "--no-color")
    assert status == 0
    lines = out.splitlines()
    assert lines[0].startswith("container u1 (")
    assert any(line.startswith("C [+] ├── hostname") for line in lines)
    assert any(line.startswith("D [ ] ├── os-release") for line in lines)
    assert any(line.startswith("  [a] ") and line.endswith("passwd") for line in lines)
    assert "\x1b[" not in out
    status, out, _ = run(capsys, root, "tree", "u1", "/etc", "-L", "1", "--layers",
                         "--no-color")
    assert any(line.startswith("C [+,a]") and line.endswith("├── hostname")
               for line in out.splitlines())
    status, out, _ = run(capsys, root, "tree", "u1", "/etc", "-L", "1", "--color")
    assert "\x1b[" in out and "hostname" in out


def test_graph_text_dot_and_svg(capsys, root, tmp_path):
    status, out, _ = run(capsys, root, "graph", "--format", "text")
    assert status == 0
    assert out.count("shared by 2 images") == 3          # the three base layers, once each
    assert "container u1 (" in out
    status, out, _ = run(capsys, root, "graph")          # not a terminal: DOT
    assert status == 0 and out.startswith("digraph imagesim {")
    assert out.count('label="layer ') == len({line for line in out.splitlines()
                                              if 'label="layer ' in line})
    if shutil.which("dot") is None:
        pytest.skip("graphviz `dot` is not installed")
    target = tmp_path / "g.svg"
    status, _, err = run(capsys, root, "graph", "-o", str(target))
    assert status == 0 and f"wrote {target}" in err
    assert b"<svg" in target.read_bytes()
    assert not [p for p in os.listdir(tmp_path) if ".tmp-" in p]


def test_graph_as_a_real_subprocess(root, tmp_path):
    proc = subprocess.run([sys.executable, "-m", "imagesim", "--root", root, "graph",
                           "--format", "dot"], capture_output=True, text=True, timeout=120,
                          check=False)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("->") >= 4


def test_which_and_tree_name_a_bind_mount(capsys, root, tmp_path):
    host = tmp_path / "host_data"
    host.mkdir()
    (host / "x.txt").write_text("on the host\n")
    assert main(["--root", root, "run", "-d", "-v", f"{host}:/data:ro", "--name", "vol1",
                 "ubuntu"]) == 0
    status, out, _ = run(capsys, root, "which", "vol1", "/data/x.txt")
    assert status == 0
    assert f"a bind mount of the host directory {host} is mounted, read-only" in out
    assert "`imagesim diff` does not list them" in out
    status, out, _ = run(capsys, root, "tree", "vol1", "/", "-L", "0", "--no-color")
    assert status == 0
    status, out, _ = run(capsys, root, "tree", "vol1", "/data", "--no-color")
    assert f"(bind mount of {host}, read-only covers this path inside the container)" in out
