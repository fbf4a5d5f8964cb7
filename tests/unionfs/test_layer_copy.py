"""Copy-up of file data by ``DirLayer``: the flushed copy overlaps its disk writes with the
copy (chunks written back with ``sync_file_range`` as they are copied, one ``fsync`` at the
end), and gives the same bytes whichever path it takes."""

from __future__ import annotations

import os

import pytest

import unionfs.layer as layer_mod
from unionfs.layer import DirLayer, MemoryLayer
from unionfs.union import UnionFS


def _stack(tmp_path, data: bytes, *, volatile: bool = False) -> tuple[UnionFS, str]:
    lower = tmp_path / "lower"
    (lower / "d").mkdir(parents=True)
    (lower / "d" / "big").write_bytes(data)
    upper = tmp_path / "upper"
    upper.mkdir()
    fs = UnionFS([DirLayer(str(lower), cache=False)], DirLayer(str(upper), writable=True),
                 workdir=str(tmp_path / "work"), volatile=volatile)
    return fs, str(upper)


@pytest.fixture
def small_chunks(monkeypatch):
    """64 KiB chunks and a window of 2, so a file of a few hundred KiB takes every step of
    the chunked copy (start writeback, wait for the oldest, final fsync)."""
    monkeypatch.setattr(layer_mod, "_FLUSH_CHUNK", 64 << 10)
    monkeypatch.setattr(layer_mod, "_FLUSH_WINDOW", 2)


def _payload(n: int) -> bytes:
    return bytes((i * 7 + i // 251) & 0xFF for i in range(n))


def test_flushed_copy_in_chunks_gives_the_same_bytes(tmp_path, small_chunks, monkeypatch):
    data = _payload((64 << 10) * 9 + 123)  # ten chunks, the last one short
    fs, upper = _stack(tmp_path, data)
    calls: list[tuple[int, int, int]] = []
    real = layer_mod._writeback_call()
    assert real is not None  # glibc on Linux has sync_file_range

    def counting(fd: int, off: int, n: int, flags: int) -> int:
        calls.append((off, n, flags))
        return real(fd, off, n, flags)

    monkeypatch.setattr(layer_mod, "_sync_file_range", counting)
    with fs.open("/d/big", "r+b") as f:
        f.write(b"X")
    with open(os.path.join(upper, "d", "big"), "rb") as f:
        assert f.read() == b"X" + data[1:]
    starts = [(off, n) for off, n, flags in calls if flags == layer_mod._SFR_WRITE]
    assert [off for off, _ in starts] == [k * (64 << 10) for k in range(10)]
    assert sum(n for _, n in starts) == len(data)
    waited = [off for off, _, flags in calls if flags != layer_mod._SFR_WRITE]
    assert waited == [k * (64 << 10) for k in range(8)]  # all but the window of two
    # nothing left behind in the work dir
    assert [n for n in os.listdir(fs.upper.workdir) if n.startswith("#")] == []


def test_flushed_copy_without_sync_file_range(tmp_path, small_chunks, monkeypatch):
    """No ``sync_file_range`` (another libc): the plain copy and the fsync still run."""
    monkeypatch.setattr(layer_mod, "_sync_file_range", None)
    data = _payload(300_000)
    fs, upper = _stack(tmp_path, data)
    with fs.open("/d/big", "ab") as f:
        f.write(b"!")
    with open(os.path.join(upper, "d", "big"), "rb") as f:
        assert f.read() == data + b"!"


def test_volatile_copy_is_one_unflushed_copy(tmp_path, small_chunks, monkeypatch):
    calls: list[int] = []
    monkeypatch.setattr(layer_mod, "_sync_file_range",
                        lambda fd, off, n, flags: calls.append(flags) or 0)
    data = _payload(300_000)
    fs, upper = _stack(tmp_path, data, volatile=True)
    with fs.open("/d/big", "ab") as f:
        f.write(b"!")
    assert calls == []
    with open(os.path.join(upper, "d", "big"), "rb") as f:
        assert f.read() == data + b"!"


def test_flushed_copy_from_a_layer_without_host_files(tmp_path):
    """A lower that is not on disk (``MemoryLayer``) is streamed, then flushed."""
    lower = MemoryLayer()
    lower.makedirs("/d")
    data = _payload(200_000)
    lower.write_file("/d/big", data)
    upper = tmp_path / "upper"
    upper.mkdir()
    fs = UnionFS([lower], DirLayer(str(upper), writable=True), workdir=str(tmp_path / "w"))
    with fs.open("/d/big", "ab") as f:
        f.write(b"?")
    assert (upper / "d" / "big").read_bytes() == data + b"?"


def test_writeback_failure_is_only_a_lost_hint(tmp_path, small_chunks, monkeypatch):
    """``sync_file_range`` refusing (EINVAL on some filesystems) stops the hints; the copy
    and its fsync go on."""
    calls: list[int] = []
    monkeypatch.setattr(layer_mod, "_sync_file_range",
                        lambda fd, off, n, flags: calls.append(flags) or -1)
    data = _payload(500_000)
    fs, upper = _stack(tmp_path, data)
    with fs.open("/d/big", "r+b") as f:
        f.write(b"Y")
    assert os.path.getsize(os.path.join(upper, "d", "big")) == len(data)
    assert set(calls) == {layer_mod._SFR_WRITE}
    assert (tmp_path / "upper" / "d" / "big").read_bytes() == b"Y" + data[1:]
