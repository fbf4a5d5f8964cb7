"""A full disk: the store root on a small tmpfs, filled up during commit, pull, load
(layer unpack) and a plain state write. Each must fail with a clear ``No space left on
device`` error and leave the store as it was: fsck clean without repair, same tags, no
temporaries left behind."""

from __future__ import annotations

import contextlib
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import hardening_kit as kit

from imagesim.registry.server import ServerThread
from imagesim.store import Store
from tests.conftest import need_root, need_tool

ENOSPC_TEXT = "No space left on device"


@contextlib.contextmanager
def tmpfs(path, size: str):
    need_root()
    need_tool("mount")
    os.makedirs(path, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs",
                    str(path)], check=True)
    try:
        yield str(path)
    finally:
        if subprocess.run(["umount", str(path)]).returncode != 0:
            subprocess.run(["umount", "-l", str(path)], check=False)


def random_tar(path, mb: float, seed: int = 1) -> str:
    rnd = random.Random(seed)
    with open(path, "wb") as f:
        f.write(kit.tar_bytes({"big/blob.bin": rnd.randbytes(int(mb * 1_000_000))}))
    return str(path)


def snapshot(root: str) -> dict:
    s = Store(root, fsync=False)
    return {"tags": s.tags(), "blobs": sorted(map(str, s.blobs)),
            "layers": sorted(os.listdir(s.layers_root))}


def assert_untouched(root: str, before: dict) -> None:
    assert Store(root, fsync=False).fsck(deep=True).problems == []
    assert snapshot(root) == before
    assert os.listdir(os.path.join(root, "tmp")) == []
    assert not [n for n in os.listdir(root) if n.startswith(".state.")]


def fail_enospc(r: subprocess.CompletedProcess) -> None:
    assert r.returncode == 1, (r.stdout, r.stderr)
    assert ENOSPC_TEXT in r.stderr, r.stderr
    assert "Traceback" not in r.stderr


def test_commit_on_a_full_disk(tmp_path):
    with tmpfs(tmp_path / "mnt", "5m") as mnt:
        root = os.path.join(mnt, "root")
        kit.cli(root, "import", random_tar(tmp_path / "small.tar", 0.01), "base:1")
        kit.cli(root, "create", "--name", "c1", "base:1")
        big = tmp_path / "big.bin"
        big.write_bytes(random.Random(2).randbytes(2_200_000))
        kit.cli(root, "cp", str(big), "c1:/big.bin")
        before = snapshot(root)
        # the layer blob (2.2 MB) and its unpacked copy (2.2 MB) do not both fit
        r = kit.cli(root, "commit", "c1", "base:2", check=False)
        fail_enospc(r)
        assert_untouched(root, before)
        # once there is room the same commit works
        subprocess.run(["mount", "-o", "remount,size=12m", mnt], check=True)
        kit.cli(root, "commit", "c1", "base:2")
        assert Store(root, fsync=False).fsck(deep=True).problems == []


def test_pull_on_a_full_disk(tmp_path):
    src = str(tmp_path / "src")
    with ServerThread(tmp_path / "reg", fsync=False) as srv:
        kit.cli(src, "import", random_tar(tmp_path / "big.tar", 3), f"{srv.host}/big:1")
        kit.cli(src, "push", f"{srv.host}/big:1")
        with tmpfs(tmp_path / "mnt", "4m") as mnt:
            root = os.path.join(mnt, "root")
            kit.cli(root, "import", random_tar(tmp_path / "small.tar", 0.01), "base:1")
            before = snapshot(root)
            r = kit.cli(root, "pull", f"{srv.host}/big:1", check=False)
            fail_enospc(r)
            assert_untouched(root, before)


def test_load_fails_while_unpacking(tmp_path):
    """The layer blob fits, its unpacked copy does not: unpack fails, the blob goes again."""
    scratch = str(tmp_path / "scratch")
    kit.cli(scratch, "import", random_tar(tmp_path / "big.tar", 2.5), "big:1")
    archive = str(tmp_path / "big-archive.tar")
    kit.cli(scratch, "save", "-o", archive, "big:1")
    with tmpfs(tmp_path / "mnt", "4m") as mnt:
        root = os.path.join(mnt, "root")
        kit.cli(root, "import", random_tar(tmp_path / "small.tar", 0.01), "base:1")
        before = snapshot(root)
        r = kit.cli(root, "load", "-i", archive, check=False)
        fail_enospc(r)
        assert_untouched(root, before)


@pytest.mark.parametrize("args", [("tag", "base:1", "base:other"), ("rmi", "base:1"),
                                  ("create", "--name", "c9", "base:1")])
def test_state_write_on_a_full_disk(tmp_path, args):
    """Even the state document cannot be written: the old one stays whole."""
    with tmpfs(tmp_path / "mnt", "1m") as mnt:
        root = os.path.join(mnt, "root")
        kit.cli(root, "import", random_tar(tmp_path / "small.tar", 0.01), "base:1")
        before = snapshot(root)
        state_file = Path(root, "state.msgpack")
        state_before = state_file.read_bytes()
        with open(os.path.join(mnt, "filler"), "wb") as f, contextlib.suppress(OSError):
            while True:
                f.write(b"\0" * 65536)
                f.flush()
        r = kit.cli(root, *args, check=False)
        fail_enospc(r)
        assert state_file.read_bytes() == state_before
        os.unlink(os.path.join(mnt, "filler"))
        assert_untouched(root, before)
