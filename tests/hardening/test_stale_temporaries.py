"""A ``save -o FILE`` killed by SIGKILL leaves ``.FILE.tmp-PID`` beside FILE (never a half
FILE); the next save to FILE removes it, and leaves alone the temporaries of writers that
are still alive and those of other files."""

from __future__ import annotations

import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import hardening_kit as kit

from imagesim import archive


def _store_with_image(tmp_path) -> str:
    root = str(tmp_path / "root")
    tar = tmp_path / "rootfs.tar"
    tar.write_bytes(kit.tar_bytes(kit.sample_files("stale", n=6, size=20_000)))
    kit.cli(root, "import", str(tar), "stale:1")
    return root


def _temps(directory, base: str) -> list[str]:
    return sorted(n for n in os.listdir(directory) if n.startswith(f".{base}.tmp-"))


def _holder(path: str) -> subprocess.Popen:
    """A live process that holds ``path`` open with an flock, as a saving writer does."""
    code = ("import fcntl, sys, time\n"
            f"f = open({path!r}, 'wb')\n"
            "fcntl.flock(f, fcntl.LOCK_EX)\n"
            "print('locked', flush=True)\n"
            "sys.stdin.read()\n")
    proc = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline() == "locked\n"
    return proc


def test_next_save_removes_what_a_killed_save_left(tmp_path):
    root = _store_with_image(tmp_path)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    out = out_dir / "img.tar"
    # a real crash: SIGKILL at the first blob written into the archive
    r = kit.cli(root, "save", "-o", str(out), "stale:1", check=False,
                IMAGESIM_KILL_AT="save.entry:1")
    assert r.returncode == -9, (r.returncode, r.stderr)
    assert not out.exists()
    left = _temps(out_dir, "img.tar")
    assert len(left) == 1  # (empty or partial: the kill skipped the flush)
    # a save to another file left its own temporary (its writer is gone too): not ours
    other_tmp = out_dir / f".other.tar.tmp-{left[0].rsplit('-', 1)[1]}"
    other_tmp.write_bytes(b"partial")
    # a writer of img.tar that is still running, in its own process
    live = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"],
                            stdin=subprocess.PIPE)
    holder = None
    try:
        live_tmp = out_dir / f".img.tar.tmp-{live.pid}"
        live_tmp.write_bytes(b"in progress")
        # and one whose pid is not running here but whose flock is held (a writer in
        # another pid namespace sharing the directory)
        holder_tmp = out_dir / ".img.tar.tmp-999999999"
        holder = _holder(str(holder_tmp))

        kit.cli(root, "save", "-o", str(out), "stale:1")

        assert _temps(out_dir, "img.tar") == sorted([live_tmp.name, holder_tmp.name])
        assert other_tmp.exists()
        assert out.stat().st_size > 0
        # the archive is whole: it loads into a fresh store
        fresh = str(tmp_path / "fresh")
        kit.cli(fresh, "load", "-i", str(out))
        assert "stale:1" in kit.cli(fresh, "images", "--format",
                                    "{{.Repository}}:{{.Tag}}").stdout
    finally:
        live.communicate(b"")
        if holder is not None:
            holder.communicate("")
    # once those writers are gone, the next save cleans their temporaries as well
    kit.cli(root, "save", "-o", str(out), "stale:1")
    assert _temps(out_dir, "img.tar") == []
    assert other_tmp.exists()


def test_oci_dir_save_sweeps_dead_writers_temporaries(tmp_path):
    root = _store_with_image(tmp_path)
    layout = tmp_path / "layout"
    kit.cli(root, "save", "--oci-dir", str(layout), "stale:1")
    blobs = layout / "blobs" / "sha256"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    pid = int(dead.stdout)
    stale = [blobs / f"{'a' * 64}.tmp-{pid}", layout / f"index.json.tmp-{pid}"]
    for p in stale:
        p.write_bytes(b"half")
    keep = layout / "notes.txt"
    keep.write_text("mine\n")
    kit.cli(root, "save", "--oci-dir", str(layout), "stale:1")
    assert [p for p in stale if p.exists()] == []
    assert keep.read_text() == "mine\n"


def test_remove_stale_temporaries_api(tmp_path):
    target = tmp_path / "x.tar"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    mine = tmp_path / f".x.tar.tmp-{os.getpid()}"
    gone = tmp_path / f".x.tar.tmp-{int(dead.stdout)}"
    odd = tmp_path / ".x.tar.tmp-notapid"
    subdir = tmp_path / f".x.tar.tmp-{int(dead.stdout) + 1}"
    for p in (mine, gone, odd):
        p.write_bytes(b"")
    subdir.mkdir()
    assert archive.remove_stale_temporaries(target) == [str(gone)]
    assert mine.exists() and odd.exists() and subdir.is_dir()
