"""Copy-up leaves the parent directories' times as they were (kernel overlayfs: copy_up.c
restores the upper parent's atime/mtime once the child is linked in), so a one-file edit
changes the file only, as ``docker diff`` shows it."""

from __future__ import annotations

import os

import pytest

from tests.unionfs.stacks import memory_layer, write_dir
from unionfs.layer import DirLayer, MemoryLayer
from unionfs.union import UnionFS

OLD = 1_600_000_000_000_000_000
OLDER = 1_500_000_000_000_000_000


def _on_disk(tmp_path) -> tuple[UnionFS, str]:
    lower = str(tmp_path / "lower")
    write_dir(lower, {"/app/x/f": b"data", "/app/y": b"y"})
    for rel, t in (("/app/x/f", OLDER), ("/app/x", OLD), ("/app", OLD + 1), ("", OLD + 2)):
        os.utime(lower + rel, ns=(t, t))
    upper = tmp_path / "upper"
    upper.mkdir()
    return UnionFS([DirLayer(lower, cache=False)], DirLayer(upper, writable=True),
                   workdir=str(tmp_path / "work")), str(upper)


def test_append_keeps_copied_up_parents_times(tmp_path):
    fs, upper = _on_disk(tmp_path)
    with fs.open("/app/x/f", "ab") as f:
        f.write(b"+")
    assert os.lstat(upper + "/app/x").st_mtime_ns == OLD
    assert os.lstat(upper + "/app").st_mtime_ns == OLD + 1
    assert fs.lstat("/app/x").st_mtime_ns == OLD
    assert fs.lstat("/app").st_mtime_ns == OLD + 1
    assert fs.lstat("/app/x").st_atime_ns == OLD
    assert fs.read_bytes("/app/x/f") == b"data+"
    assert fs.lstat("/app/x/f").st_mtime_ns > OLDER  # the file itself did change


def test_copy_up_into_an_existing_upper_directory_keeps_its_times(tmp_path):
    fs, upper = _on_disk(tmp_path)
    fs.chmod("/app/y", 0o600)  # /app is copied up (lower times), then y into it
    assert os.lstat(upper + "/app").st_mtime_ns == OLD + 1
    os.utime(upper + "/app", ns=(OLD + 5, OLD + 5))
    fs.invalidate()
    fs.chmod("/app/x/f", 0o600)  # /app/x goes into /app: /app keeps the time it had
    assert fs.lstat("/app").st_mtime_ns == OLD + 5
    assert fs.lstat("/app/x").st_mtime_ns == OLD


def test_a_real_change_of_the_directory_still_moves_its_time(tmp_path):
    fs, _upper = _on_disk(tmp_path)
    fs.write_bytes("/app/x/new", b"n")  # a create changes /app/x (after its copy-up)
    assert fs.lstat("/app/x").st_mtime_ns > OLD
    assert fs.lstat("/app").st_mtime_ns == OLD + 1  # only copied up, not changed
    fs.unlink("/app/y")
    assert fs.lstat("/app").st_mtime_ns > OLD + 1


@pytest.mark.parametrize("metacopy", [False, True])
def test_memory_upper_keeps_parent_times(metacopy):
    lower = memory_layer({"/d/e/f": b"data"}, "lower")
    for p in ("/d", "/d/e"):
        lower.utime(p, OLD, OLD)
    fs = UnionFS([lower], MemoryLayer("upper"), redirect_dir=metacopy, metacopy=metacopy)
    fs.chmod("/d/e/f", 0o600)
    assert fs.lstat("/d/e").st_mtime_ns == OLD
    assert fs.lstat("/d").st_mtime_ns == OLD
