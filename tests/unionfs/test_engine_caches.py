"""The engine's caches never change an answer.

``UnionFS`` keeps upper lookups, resolved directories, stats and the lower part of each
directory listing across changes: every write to the upper drops only what it can change.
These tests drive one long-lived union through random changes (reading between them so the
caches are full) and, after every step, compare everything it answers -- names, types, inode
numbers, link counts, sizes, modes, times, link targets, xattrs -- with a union built fresh
over the same directories, which has nothing cached.
"""

from __future__ import annotations

import os
import random
import stat

import pytest

from tests.conftest import need_root
from tests.unionfs.stacks import DIR, OPAQUE, WHITEOUT, dir_layer, memory_layer
from unionfs import whiteout as wh
from unionfs.layer import DirLayer, MemoryLayer
from unionfs.union import UnionFS

TOP = {"/a": DIR, "/a/f": b"top", "/b/x": WHITEOUT, "/c": OPAQUE, "/c/n": b"n",
       "/l": ("symlink", "a"), "/s": ("symlink", "/b")}
BOTTOM = {"/a/g": b"g", "/b/x": b"x", "/b/y": b"y", "/c/old": b"o", "/d/e/f": b"deep",
          "/h1": b"h", "/h2": ("hardlink", "/h1"), "/d/k": b"k"}
NAMES = ("a", "b", "c", "d", "e", "f", "g", "x", "y", "n")


def _random_path(rng: random.Random) -> str:
    depth = rng.choice((1, 1, 2, 2, 3))
    parts = [rng.choice(NAMES) for _ in range(depth)]
    if rng.random() < 0.15:  # through a symlink to a directory
        parts[0] = rng.choice(("l", "s"))
    return "/" + "/".join(parts)


def _step(fs: UnionFS, rng: random.Random) -> None:
    """One random change (most fail with an errno; both outcomes are fine here)."""
    p, q = _random_path(rng), _random_path(rng)
    op = rng.randrange(15)
    try:
        if op == 0:
            fs.write_bytes(p, rng.randbytes(rng.randrange(1, 64)))
        elif op == 1:
            with fs.open(p, "ab") as f:
                f.write(b"+")
        elif op == 2:
            fs.mkdir(p)
        elif op == 3:
            fs.rmdir(p)
        elif op == 4:
            fs.unlink(p)
        elif op == 5:
            fs.rename(p, q)
        elif op == 6:
            fs.symlink(rng.choice(("a", "/d", "nowhere")), p)
        elif op == 7:
            fs.link(p, q)
        elif op == 8:
            fs.chmod(p, rng.choice((0o700, 0o755, 0o2775, 0o640)))
        elif op == 9:
            fs.utime(p, ns=(rng.randrange(1, 10**18), rng.randrange(1, 10**18)))
        elif op == 10:
            fs.truncate(p, rng.randrange(0, 8))
        elif op == 11:
            fs.setxattr(p, "user.k", rng.randbytes(3))
        elif op == 12:
            fs.removexattr(p, "user.k")
        elif op == 13:
            fs.mknod(p, 0o644 | stat.S_IFIFO)
        else:
            fs.copy_up(p)
    except (OSError, ValueError):
        pass


def _snapshot(fs: UnionFS) -> dict:
    """Everything ``fs`` answers about its tree (reading it also fills its caches)."""
    out: dict = {}
    todo = ["/"]
    while todo:
        d = todo.pop()
        names = fs.listdir(d)
        out[("listdir", d)] = names
        out[("types", d)] = fs.listdir_types(d)
        for name in names:
            p = d.rstrip("/") + "/" + name
            st = fs.lstat(p)
            out[("lstat", p)] = (st.st_mode, st.st_ino, st.st_nlink, st.st_uid, st.st_gid,
                                 st.st_size, st.st_mtime_ns, st.st_ctime_ns)
            out[("xattrs", p)] = sorted(fs.listxattr(p, follow_symlinks=False))
            if stat.S_ISLNK(st.st_mode):
                out[("link", p)] = fs.readlink(p)
                try:
                    out[("stat", p)] = fs.stat(p).st_ino
                except OSError as e:
                    out[("stat", p)] = e.errno
            elif stat.S_ISDIR(st.st_mode):
                todo.append(p)
    for p in PROBES:  # names that may be gone or never were, also through symlinks
        for follow in (False, True):
            try:
                st = fs.stat(p, follow_symlinks=follow)  # (st_dev is per union: not compared)
                out[("probe", p, follow)] = (st.st_mode, st.st_ino, st.st_nlink, st.st_size,
                                             st.st_mtime_ns)
            except OSError as e:
                out[("probe", p, follow)] = e.errno
    return out


FIRST = (*NAMES, "l", "s")
PROBES = ([f"/{a}" for a in FIRST] + [f"/{a}/{b}" for a in FIRST for b in NAMES[:6]]
          + [f"/{a}/{b}/{c}" for a in FIRST[:4] for b in NAMES[:3] for c in NAMES[:3]])


def _check(cached: UnionFS, fresh: UnionFS, steps: int, rng: random.Random) -> None:
    for k in range(steps):
        _step(cached, rng)
        want = _snapshot(fresh())  # type: ignore[operator]
        got = _snapshot(cached)
        diff = {key: (got.get(key), want.get(key)) for key in set(got) | set(want)
                if got.get(key) != want.get(key)}
        assert not diff, f"step {k}: cached answers differ from a fresh union: {diff}"


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("fmt", [wh.Format.OVERLAY, wh.Format.OCI])
def test_dir_upper_cached_answers_equal_fresh(tmp_path, fmt, seed):
    if fmt is wh.Format.OVERLAY:
        need_root()  # char device whiteouts and trusted xattrs
    lowers = [dir_layer(str(tmp_path), TOP, "top", fmt),
              dir_layer(str(tmp_path), BOTTOM, "bottom", fmt)]
    upper_dir = tmp_path / "upper"
    upper_dir.mkdir()
    work = str(tmp_path / "work")
    options = {"redirect_dir": seed % 2 == 1}
    cached = UnionFS(lowers, DirLayer(upper_dir, writable=True, fmt=fmt), workdir=work,
                     **options)

    def fresh() -> UnionFS:
        return UnionFS(lowers, DirLayer(upper_dir, writable=True, fmt=fmt), workdir=work,
                       **options)

    _check(cached, fresh, 25, random.Random(seed))


@pytest.mark.parametrize("seed", range(3))
def test_memory_upper_cached_answers_equal_fresh(seed):
    lowers = [memory_layer(TOP, "top"), memory_layer(BOTTOM, "bottom")]
    upper = MemoryLayer("upper")
    options = {"redirect_dir": seed > 0, "metacopy": seed == 1}
    cached = UnionFS(lowers, upper, **options)
    _check(cached, lambda: UnionFS(lowers, upper, **options), 30, random.Random(100 + seed))


def test_parent_times_follow_a_create_without_a_new_walk(tmp_path):
    """Creating an entry moves the parent directory's mtime and link count; a cached stat of
    the parent must show it at once (the engine keeps the parent's node, marks it stale)."""
    lower = tmp_path / "lower"
    (lower / "d").mkdir(parents=True)
    upper = tmp_path / "upper"
    upper.mkdir()
    fs = UnionFS([DirLayer(lower, cache=False)], DirLayer(upper, writable=True),
                 workdir=str(tmp_path / "work"))
    fs.mkdir("/d/sub")
    before = fs.lstat("/d/sub")
    os.utime(upper / "d" / "sub", ns=(1, 1))  # an old time, so the change must show
    fs.invalidate()
    assert fs.lstat("/d/sub").st_mtime_ns == 1
    fs.mkdir("/d/sub/inner")
    after = fs.lstat("/d/sub")
    host = os.lstat(upper / "d" / "sub")
    assert after.st_mtime_ns == host.st_mtime_ns != 1
    assert after.st_nlink == host.st_nlink == before.st_nlink + 1
    assert after.st_ino == before.st_ino


def test_listdir_types_matches_lstat(tmp_path):
    lowers = [dir_layer(str(tmp_path), TOP, "top"), dir_layer(str(tmp_path), BOTTOM, "bottom")]
    upper = tmp_path / "upper"
    upper.mkdir()
    fs = UnionFS(lowers, DirLayer(upper, writable=True), workdir=str(tmp_path / "work"))
    fs.write_bytes("/a/new", b"n")
    fs.unlink("/b/y")
    fs.copy_up("/a/g")
    for d in ("/", "/a", "/b", "/c", "/d", "/d/e"):
        got = fs.listdir_types(d)
        assert [n for n, _, _ in got] == fs.listdir(d)
        for name, fmt, ino in got:
            st = fs.lstat(f"{d.rstrip('/')}/{name}")
            assert (fmt, ino) == (stat.S_IFMT(st.st_mode), st.st_ino)
    assert [n for n, _, _ in fs.listdir_types("/b")] == []
    with pytest.raises(NotADirectoryError):
        fs.listdir_types("/a/f")
    with pytest.raises(FileNotFoundError):
        fs.listdir_types("/b/x")


@pytest.mark.parametrize("redirect_dir", [False, True])
def test_moved_directory_takes_its_cached_subtree_along(tmp_path, redirect_dir):
    """After a directory is renamed, nothing cached under its old name may answer: not the
    stat of a deep entry, not a resolved directory on the way to it."""
    lowers = [dir_layer(str(tmp_path), TOP, "top"), dir_layer(str(tmp_path), BOTTOM, "bottom")]
    upper = tmp_path / "upper"
    upper.mkdir()
    fs = UnionFS(lowers, DirLayer(upper, writable=True), workdir=str(tmp_path / "work"),
                 redirect_dir=redirect_dir)
    fs.makedirs("/n/o/p")
    fs.write_bytes("/n/o/p/q", b"q")
    moved = ["/n/o", "/n/o/p", "/n/o/p/q"]
    if redirect_dir:  # a merged lower directory, moved by recording a redirect
        moved += ["/d/e", "/d/e/f"]
        inos = {p: fs.lstat(p).st_ino for p in ("/d/e", "/d/e/f")}
    before = {p: fs.lstat(p) for p in moved}
    fs.rename("/n/o", "/n/r")
    if redirect_dir:
        fs.rename("/d", "/m")
    for p in moved:
        with pytest.raises(FileNotFoundError):
            fs.lstat(p)
    assert fs.lstat("/n/r/p/q").st_ino == before["/n/o/p/q"].st_ino
    assert fs.listdir("/n/r/p") == ["q"]
    if redirect_dir:
        assert {p: fs.lstat(p.replace("/d", "/m", 1)).st_ino for p in inos} == inos
        assert fs.read_bytes("/m/e/f") == b"deep"
    fs.unlink("/n/r/p/q")
    fs.rmdir("/n/r/p")
    with pytest.raises(FileNotFoundError):
        fs.lstat("/n/r/p/q")
    with pytest.raises(FileNotFoundError):
        fs.lstat("/n/r/p")


def test_directory_replaced_over_lower_one_hides_cached_lower_names(tmp_path):
    """A directory moved onto a deleted lower directory's name is opaque: the lower names
    cached from before must not show through it."""
    lowers = [dir_layer(str(tmp_path), TOP, "top"), dir_layer(str(tmp_path), BOTTOM, "bottom")]
    upper = tmp_path / "upper"
    upper.mkdir()
    fs = UnionFS(lowers, DirLayer(upper, writable=True), workdir=str(tmp_path / "work"))
    assert fs.listdir("/d") == ["e", "k"]
    fs.lstat("/d/e/f")
    fs.unlink("/d/e/f")
    fs.rmdir("/d/e")
    fs.unlink("/d/k")
    fs.rmdir("/d")
    fs.makedirs("/t/e")
    fs.rename("/t", "/d")
    assert fs.listdir("/d") == ["e"]
    assert fs.listdir("/d/e") == []
    for gone in ("/d/k", "/d/e/f", "/t", "/t/e"):
        with pytest.raises(FileNotFoundError):
            fs.lstat(gone)


def test_dir_layer_without_index_reads_the_host_live(tmp_path):
    """``DirLayer(path, index=False)``: read-only, no scan at construction, every answer
    probed on the host (so later changes to the directory show), whiteouts decoded."""
    root = tmp_path / "layer"
    root.mkdir()
    (root / "f").write_bytes(b"one")
    wh.write_whiteout(str(root), "gone", wh.Format.OCI)
    layer = DirLayer(root, index=False)
    assert (layer.writable, layer.indexed, layer.index_source) == (False, False, "live")
    assert layer.lookup("/f").size == 3
    assert layer.lookup("/gone").is_whiteout
    assert sorted(layer.listdir("/")) == ["f", "gone"]
    (root / "g").write_bytes(b"later")
    assert layer.lookup("/g").size == 5
    assert layer.lookup("/nothing") is None
    with pytest.raises(NotADirectoryError):
        layer.listdir("/f")
    indexed = DirLayer(root, cache=False)
    assert indexed.indexed and indexed.lookup("/g").size == 5


@pytest.mark.parametrize("index", [True, False])
def test_dir_layer_entries_match_listdir_and_lookup(tmp_path, index):
    """``DirLayer.entries`` (one call per directory, used to merge lowers) gives exactly
    ``(name, lookup(name))`` for every name ``listdir`` gives, whiteouts included."""
    layer = dir_layer(str(tmp_path), {**TOP, **{"/c/m": b"m", "/d/e/g": WHITEOUT}}, "top")
    if not index:
        layer = DirLayer(layer.root, index=False)
    for d in ("/", "/a", "/b", "/c", "/d", "/d/e"):
        want = sorted((n, layer.lookup(f"{d.rstrip('/')}/{n}")) for n in layer.listdir(d))
        assert sorted(layer.entries(d)) == want
    assert dict(layer.entries("/b"))["x"].is_whiteout
    with pytest.raises(NotADirectoryError):
        layer.entries("/a/f")
    with pytest.raises(FileNotFoundError):
        layer.entries("/nowhere")
