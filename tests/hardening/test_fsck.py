"""``imagesim fsck`` finds what crashes and tampering leave, and ``--repair`` fixes it: the
checks added for crash safety (container records and pins, orphan container directories,
stale leases of dead processes, state temporaries, files written into a shared layer)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time

import msgpack

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import hardening_kit as kit

from imagesim.container import ContainerStore
from imagesim.store import Store


def _store(tmp_path) -> Store:
    root = str(tmp_path / "root")
    src = tmp_path / "base.tar"
    files = kit.sample_files("base", n=3, size=1000)
    files["gone/x"] = b"x"
    src.write_bytes(kit.tar_bytes(files))
    kit.cli(root, "import", str(src), "base:1")
    return Store(root, fsync=False)


def _edit_state(store: Store, fn) -> None:
    with open(store.state_path, "rb") as f:
        state = msgpack.unpackb(f.read(), raw=False, strict_map_key=False)
    fn(state)
    with open(store.state_path, "wb") as f:
        f.write(msgpack.packb(state, use_bin_type=True))


def _fsck_cli(root: str, *flags: str) -> subprocess.CompletedProcess:
    return kit.cli(root, "fsck", *flags, check=False)


def test_whiteouts_and_opaque_dirs_pass_deep_fsck(tmp_path):
    store = _store(tmp_path)
    c = ContainerStore(store).create("base:1")
    fs = c.fs
    fs.unlink("/etc/base.conf")                 # a whiteout
    shutil_target = "/gone"
    fs.unlink(f"{shutil_target}/x")
    fs.rmdir(shutil_target)
    fs.mkdir(shutil_target)                     # an opaque directory
    with fs.open("/gone/new", "wb") as f:
        f.write(b"n")
    fs.symlink("/data", "/link")
    kit.cli(store.root, "commit", c.id, "base:2")
    r = _fsck_cli(store.root, "--deep")
    assert r.returncode == 0, r.stdout
    assert r.stdout.strip().endswith("0 problems, 0 repaired")


def test_a_file_written_into_a_shared_layer_is_found_and_repaired(tmp_path):
    store = _store(tmp_path)
    diff = store.layer_dir(store.resolve("base:1").diff_ids[0])
    with open(os.path.join(diff, "data", "intruder"), "w") as f:
        f.write("x")
    r = _fsck_cli(store.root, "--deep")
    assert r.returncode == 1
    assert "/data/intruder is not in the layer" in r.stdout
    assert _fsck_cli(store.root, "--deep", "--repair").returncode == 0
    assert not os.path.exists(os.path.join(diff, "data", "intruder"))
    assert _fsck_cli(store.root, "--deep").returncode == 0


def test_container_records_pins_and_orphans(tmp_path):
    store = _store(tmp_path)
    cs = ContainerStore(store)
    c = cs.create("base:1")
    orphan = os.path.join(cs.root, "ab" * 32)
    os.makedirs(os.path.join(orphan, "upper"))
    os.makedirs(os.path.join(cs.root, ".trash-" + "cd" * 32))
    key = str(store.resolve("base:1").digest)
    _edit_state(store, lambda s: (s["pins"].pop(c.id), s["pins"].update({"ef" * 32: [key]})))
    r = _fsck_cli(store.root)
    assert r.returncode == 1
    out = r.stdout
    assert f"container {c.id[:12]} does not pin its image {key}" in out
    assert f"pin held by container {'ef' * 6}, which has no record" in out
    assert f"container directory {'ab' * 10} has no record" in out
    assert f"container directory {('.trash-' + 'cd' * 32)[:20]} has no record" in out
    r = _fsck_cli(store.root, "--repair")
    assert r.returncode == 0, r.stdout
    assert Store(store.root).pins() == {c.id: [store.resolve("base:1").digest]}
    assert sorted(os.listdir(cs.root)) == [c.id]
    assert _fsck_cli(store.root).returncode == 0


def test_stale_lease_and_state_temporary_of_a_killed_process(tmp_path):
    store = _store(tmp_path)
    dead = subprocess.Popen(["true"])
    dead.wait()
    _edit_state(store, lambda s: s["leases"].update(
        {"l" * 32: {"t": time.time(), "pid": dead.pid, "what": "pull x"}}))
    with open(os.path.join(store.root, ".state.123.abc"), "wb") as f:
        f.write(b"half")
    with open(os.path.join(store.tmp_dir, "blob-xyz"), "wb") as f:
        f.write(b"half")
    r = _fsck_cli(store.root)
    assert r.returncode == 1
    assert f"stale lease {'l' * 12} (pull x, pid {dead.pid}): its process is gone" in r.stdout
    assert "left-over temporary .state.123.abc" in r.stdout
    # the dead lease no longer hides tmp/ from fsck
    assert "left-over temporary blob-xyz" in r.stdout
    assert _fsck_cli(store.root, "--repair").returncode == 0
    assert os.listdir(store.tmp_dir) == []
    assert not os.path.exists(os.path.join(store.root, ".state.123.abc"))
    assert Store(store.root)._read_state()["leases"] == {}


def test_a_live_lease_keeps_tmp_and_young_blobs(tmp_path):
    """A writer in progress (its lease alive) keeps its temporaries from --repair."""
    store = _store(tmp_path)
    with store.lease("test"):
        with open(os.path.join(store.tmp_dir, "blob-inflight"), "wb") as f:
            f.write(b"x")
        r = _fsck_cli(store.root, "--repair")
        assert "blob-inflight" not in r.stdout
        assert os.path.exists(os.path.join(store.tmp_dir, "blob-inflight"))
    shutil.rmtree(store.tmp_dir)
    os.makedirs(store.tmp_dir)
