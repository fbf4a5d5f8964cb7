"""``unionfs.diff.upper_changes``: docker's A/C/D from the upper layer alone.

Exact outputs for the cases docker users meet (copy-up, whiteouts, opaque directories,
renamed directories, metadata-only changes, deletions in lower layers), a property test that
holds the result to a comparison of the two whole trees (the union view against the lower
view), and the cost: the lower layers are asked about the upper's paths only, never read.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import subprocess
import tempfile

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.conftest import need_kernel_overlay
from unionfs import whiteout as wh
from unionfs.diff import LowerProbe, changes, probe_layer, upper_changes
from unionfs.entry import Change, ChangeKind, Kind
from unionfs.layer import DirLayer
from unionfs.mounts import HostFS
from unionfs.testing.conformance import EngineTarget
from unionfs.testing.strategies import WRITE_CALLS, op_sequences, stacks
from unionfs.union import UnionFS


def _write(root: str, rel: str, data: bytes = b"x", mode: int = 0o644) -> None:
    path = os.path.join(root, rel.lstrip("/"))
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)
    os.chmod(path, mode)


def _whiteout(root: str, rel: str) -> None:
    os.mknod(os.path.join(root, rel.lstrip("/")), 0o600 | 0o020000, os.makedev(0, 0))


@contextlib.contextmanager
def kernel_mount(lowers: list[str], upper: str | None, base: str, **opts: bool):
    """The kernel's overlayfs over ``lowers`` and ``upper`` (``redirect_dir=True`` adds
    ``redirect_dir=on``; no upper: read-only): the upper layer it leaves is what docker's
    overlay2 diffs."""
    need_kernel_overlay()
    work, merged = os.path.join(base, "kwork"), os.path.join(base, "merged")
    os.makedirs(work)
    os.makedirs(merged)
    options = f"lowerdir={':'.join(lowers)}"
    if upper is not None:
        options += f",upperdir={upper},workdir={work}"
    if opts.get("redirect_dir"):
        options += ",redirect_dir=on"
    subprocess.run(["mount", "-t", "overlay", "overlay", "-o", options, merged], check=True)
    try:
        yield merged
    finally:
        subprocess.run(["umount", merged], check=True)


@pytest.fixture
def layers(tmp_path):
    """Two lower layer directories in overlayfs form and an empty upper: returns
    ``(lower_dirs top-most first, upper_dir, mount, engine)``: ``mount(**opts)`` mounts them
    with the kernel (a context manager giving the merged directory), ``engine()`` is our
    union over the same directories."""
    base, top = str(tmp_path / "l0"), str(tmp_path / "l1")
    for rel in ("/etc/passwd", "/etc/hosts", "/app/webapps.dist/ROOT/index.html",
                "/app/webapps.dist/docs/a.html", "/usr/bin/ls", "/gone/in/top",
                "/var/lib/x"):
        _write(base, rel, rel.encode())
    os.makedirs(os.path.join(base, "app", "webapps"))
    _write(top, "/etc/hosts", b"top hosts\n")
    _write(top, "/usr/bin/vi", b"vi")
    os.makedirs(os.path.join(top, "gone"))
    _whiteout(top, "/gone/in")          # deleted in the top lower layer
    _whiteout(top, "/var")              # a whole directory deleted below
    upper = str(tmp_path / "upper")
    os.makedirs(upper)
    lowers = [top, base]
    mounts = iter(range(1000))

    def mount(**opts: bool):
        return kernel_mount(lowers, upper, str(tmp_path / f"m{next(mounts)}"), **opts)

    def engine(**opts: bool) -> UnionFS:
        return UnionFS([DirLayer(d, cache=False) for d in lowers],
                       DirLayer(upper, writable=True, fmt=wh.Format.OVERLAY,
                                workdir=str(tmp_path / "work")), **opts)

    return lowers, upper, mount, engine


def lines(changes_: list[Change]) -> list[str]:
    return [str(c) for c in changes_]


def _put(path: str, data: bytes, mode: str = "wb") -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, mode) as f:
        f.write(data)


def test_copy_up_whiteout_and_new_files(layers):
    lowers, upper, mount, engine = layers
    with mount() as m:
        _put(f"{m}/etc/passwd", b"changed")        # copy-up: C
        os.unlink(f"{m}/etc/hosts")                # whiteout: D, parent C
        _put(f"{m}/new/dir/f", b"1")               # A all the way down
        os.chmod(f"{m}/usr/bin/ls", 0o700)         # metadata only: C
    got = upper_changes(upper, lowers)
    assert lines(got) == ["C /etc", "D /etc/hosts", "C /etc/passwd", "A /new", "A /new/dir",
                          "A /new/dir/f", "C /usr/bin/ls"]
    assert got == list(changes(engine()))  # the engine's union reads the same
    assert all(isinstance(c.kind, ChangeKind) for c in got)


def test_directories_only_copied_up_on_the_way_are_not_listed(layers):
    """The kernel restores a parent's times after a copy-up: parents copied up unchanged
    are listed only as parents of an A or a D, as docker does."""
    lowers, upper, mount, _ = layers
    with mount() as m:
        _put(f"{m}/app/webapps.dist/ROOT/index.html", b"edited", "ab")
    assert lines(upper_changes(upper, lowers)) == ["C /app/webapps.dist/ROOT/index.html"]
    with mount() as m:
        _put(f"{m}/app/webapps.dist/ROOT/new.html", b"n")
    assert lines(upper_changes(upper, lowers)) == [
        "C /app/webapps.dist/ROOT", "C /app/webapps.dist/ROOT/index.html",
        "A /app/webapps.dist/ROOT/new.html"]


def test_tomcat_copy_of_webapps_dist_into_the_empty_lower_dir(layers):
    lowers, upper, mount, _ = layers
    with mount() as m:
        shutil.copytree(f"{m}/app/webapps.dist", f"{m}/app/webapps", dirs_exist_ok=True)
    assert lines(upper_changes(upper, lowers)) == [
        "C /app/webapps", "A /app/webapps/ROOT", "A /app/webapps/ROOT/index.html",
        "A /app/webapps/docs", "A /app/webapps/docs/a.html"]


def test_lower_whiteouts_hide_lower_paths(layers):
    lowers, upper, mount, _ = layers
    with mount() as m:
        # /var and /gone/in are deleted in the top lower layer: writing there is an A
        _put(f"{m}/var/lib/x", b"again")
        os.makedirs(f"{m}/gone/in")
    probe = LowerProbe([probe_layer(d) for d in lowers])
    assert probe.lookup("/var") is None and probe.lookup("/gone/in/top") is None
    assert probe.lookup("/gone").kind is Kind.DIR
    assert probe.names("/gone") == set()
    assert probe.names("/etc") == {"hosts", "passwd"}
    assert probe.lookup("/etc/hosts").size == len(b"top hosts\n")  # the top layer's
    assert lines(upper_changes(upper, probe)) == [
        "C /gone", "A /gone/in", "A /var", "A /var/lib", "A /var/lib/x"]


def test_opaque_directory_lists_what_it_hides(layers):
    lowers, upper, mount, engine = layers
    with mount() as m:
        shutil.rmtree(f"{m}/app/webapps.dist/ROOT")
        os.rmdir(f"{m}/app/webapps")
        os.mkdir(f"{m}/app/webapps")        # over a whiteout: an opaque directory
        _put(f"{m}/app/webapps/new", b"n")
        shutil.rmtree(f"{m}/etc")
        os.mkdir(f"{m}/etc")
        _put(f"{m}/etc/hosts", b"new hosts")  # the name of a hidden lower file
    up = DirLayer(upper, writable=True)
    assert up.lookup("/app/webapps").opaque and up.lookup("/etc").opaque
    got = upper_changes(upper, lowers)
    # sorted by bytes, as docker sorts: "." (0x2e) before "/" (0x2f)
    assert lines(got) == [
        "C /app", "C /app/webapps", "C /app/webapps.dist", "D /app/webapps.dist/ROOT",
        "A /app/webapps/new", "C /etc", "A /etc/hosts", "D /etc/passwd"]
    assert got == list(changes(engine()))


def test_renamed_directory_with_redirect_dir(layers):
    lowers, upper, mount, engine = layers
    with mount(redirect_dir=True) as m:
        os.rename(f"{m}/app/webapps.dist", f"{m}/app/webapps2")
    assert DirLayer(upper, writable=True).lookup("/app/webapps2").redirect
    got = upper_changes(upper, lowers)
    assert lines(got) == ["C /app", "D /app/webapps.dist", "A /app/webapps2",
                          "A /app/webapps2/ROOT", "A /app/webapps2/ROOT/index.html",
                          "A /app/webapps2/docs", "A /app/webapps2/docs/a.html"]
    assert got == list(changes(engine(redirect_dir=True)))
    # moved again, over the empty lower directory: the lower path there is a C, the
    # old name's whiteout stays a D
    with mount(redirect_dir=True) as m:
        os.rmdir(f"{m}/app/webapps")
        os.rename(f"{m}/app/webapps2", f"{m}/app/webapps")
        _put(f"{m}/app/webapps/docs/b.html", b"b")
    got = upper_changes(upper, lowers)
    assert lines(got) == ["C /app", "C /app/webapps", "D /app/webapps.dist",
                          "A /app/webapps/ROOT", "A /app/webapps/ROOT/index.html",
                          "A /app/webapps/docs", "A /app/webapps/docs/a.html",
                          "A /app/webapps/docs/b.html"]
    assert got == list(changes(engine(redirect_dir=True)))


def test_directory_renamed_over_an_emptied_lower_directory(layers):
    """The lower names at the new place that the moved contents do not have are D."""
    lowers, upper, mount, engine = layers
    with mount(redirect_dir=True) as m:
        os.unlink(f"{m}/usr/bin/ls")
        os.unlink(f"{m}/usr/bin/vi")
        os.rename(f"{m}/etc", f"{m}/usr/bin")
        assert sorted(os.listdir(f"{m}/usr/bin")) == ["hosts", "passwd"]
    got = upper_changes(upper, lowers)
    assert lines(got) == ["D /etc", "C /usr", "C /usr/bin", "A /usr/bin/hosts",
                          "D /usr/bin/ls", "A /usr/bin/passwd", "D /usr/bin/vi"]
    assert got == list(changes(engine(redirect_dir=True)))


def test_directory_renamed_into_a_new_directory_keeps_its_lower_contents(layers):
    """An absolute redirect is followed from the lower root even below a directory that
    has no lower part (the kernel's lookup), so the moved files are listed."""
    lowers, upper, mount, _ = layers
    with mount(redirect_dir=True) as m:
        os.mkdir(f"{m}/new")
        os.rename(f"{m}/etc", f"{m}/new/etc")
        assert sorted(os.listdir(f"{m}/new/etc")) == ["hosts", "passwd"]
    assert DirLayer(upper, writable=True).lookup("/new/etc").redirect == "/etc"
    assert lines(upper_changes(upper, lowers)) == [
        "D /etc", "A /new", "A /new/etc", "A /new/etc/hosts", "A /new/etc/passwd"]


def test_deleted_then_recreated_file_is_changed(layers):
    lowers, upper, mount, _ = layers
    with mount() as m:
        os.unlink(f"{m}/usr/bin/vi")
        _put(f"{m}/usr/bin/vi", b"vim")
    # the whiteout changed the directory for good (its mtime), so it is listed too
    assert lines(upper_changes(upper, lowers)) == ["C /usr/bin", "C /usr/bin/vi"]


def test_an_empty_upper_has_no_changes_and_a_missing_one_is_enoent(layers, tmp_path):
    lowers, upper, _, _ = layers
    assert upper_changes(upper, lowers) == []
    with pytest.raises(FileNotFoundError) as e:
        upper_changes(str(tmp_path / "nope"), lowers)
    assert e.value.errno == errno.ENOENT
    with pytest.raises(OSError) as e:
        next(changes(UnionFS([DirLayer(lowers[0], cache=False)])))
    assert e.value.errno == errno.EROFS


class Counting:
    """A lower layer that counts the questions it gets and refuses to be read."""

    def __init__(self, inner) -> None:
        self.inner, self.name = inner, inner.name
        self.lookups = self.listdirs = 0

    def lookup(self, path):
        self.lookups += 1
        return self.inner.lookup(path)

    def listdir(self, path):
        self.listdirs += 1
        return self.inner.listdir(path)

    def read(self, path, offset, size):
        raise AssertionError(f"lower file read: {path}")

    def open_read(self, path):
        raise AssertionError(f"lower file opened: {path}")

    def readlink(self, path):
        raise AssertionError(f"lower link read: {path}")

    def host_path(self, path):
        return self.inner.host_path(path)


@pytest.mark.parametrize("big", [False, True])
def test_lower_layers_are_asked_about_upper_paths_only(tmp_path, big):
    """The same 30 changes over a lower of 50 or 2000 files: the same lower lookups, no
    listing, nothing read (the cost grows with the upper only)."""
    lower = str(tmp_path / "lower")
    n = 2000 if big else 50
    for i in range(n):
        _write(lower, f"/data/d{i % 10}/f{i:05d}", b"lower")
    upper = str(tmp_path / "upper")
    os.makedirs(upper)
    with kernel_mount([lower], upper, str(tmp_path)) as m:
        for i in range(30):
            f = f"{m}/data/d{i % 10}/f{i:05d}"
            if i % 3 == 0:
                _put(f, b"changed", "ab")
            elif i % 3 == 1:
                os.unlink(f)
            else:
                _put(f"{m}/data/d{i % 10}/new{i:05d}", b"new")
    counted = Counting(probe_layer(lower))
    got = upper_changes(upper, [counted])
    assert len(got) == 30 + 10  # the changes and their parent directories d0..d9
    assert counted.listdirs == 0
    # one lookup per upper path ("/", /data, d0..d9, the 30 names), each asked once
    assert counted.lookups == 1 + 1 + 10 + 30
    assert got == list(changes(UnionFS([DirLayer(lower, cache=False)],
                                       DirLayer(upper, writable=True))))


# -------------------------------------------------------------------------- property


def _tree(fs) -> dict[str, tuple]:
    """Every path of a view (a ``UnionFS``, or a mount as ``HostFS``) with what docker's
    tree comparison looks at."""
    out: dict[str, tuple] = {}

    def visit(path: str) -> None:
        try:
            st_ = fs.lstat(path)
        except FileNotFoundError:
            return  # the kernel lists a whiteout of a lower-only directory; lookup hides it
        kind = Kind.from_mode(st_.st_mode)
        data: bytes | str | None = None
        if kind is Kind.FILE:
            with fs.open(path, "rb") as f:
                data = f.read()
        elif kind is Kind.SYMLINK:
            data = fs.readlink(path)
        # (Linux allows no user.* xattrs on a symlink)
        xattrs = () if kind is Kind.SYMLINK else tuple(sorted(
            (n, fs.getxattr(path, n, follow_symlinks=False))
            for n in fs.listxattr(path, follow_symlinks=False) if n.startswith("user.")))
        mtime = st_.st_mtime_ns // 1000
        out[path] = (kind, st_.st_mode & 0o7777, st_.st_uid, st_.st_gid, data, xattrs, mtime)
        if kind is Kind.DIR:
            for name in fs.listdir(path):
                visit(path.rstrip("/") + "/" + name)

    visit("/")
    return out


def _parent(path: str) -> str:
    return path.rsplit("/", 1)[0] or "/"


def check_against_trees(base: str, n_lowers: int, fs: UnionFS) -> list[Change]:
    """``upper_changes`` of the stack below ``base`` (``lower0``.., ``upper``, changed by
    the engine ``fs``), held to a comparison of two whole trees as the kernel's overlayfs
    shows them (the reference): the union of the upper over the lowers, and the lowers
    alone. Returns it."""
    lower_dirs = [f"{base}/lower{i}" for i in range(n_lowers)]
    got = upper_changes(f"{base}/upper", lower_dirs)
    assert got == list(changes(fs))  # probing and indexed lower layers agree
    empty = tempfile.mkdtemp(dir=base)
    with kernel_mount(lower_dirs, f"{base}/upper", tempfile.mkdtemp(dir=base),
                      redirect_dir=True) as m:
        new = _tree(HostFS(m))
    with kernel_mount([*lower_dirs, empty], None, tempfile.mkdtemp(dir=base)) as m:
        old = _tree(HostFS(m))
    up = DirLayer(f"{base}/upper", writable=True)
    kinds = {c.path: c.kind for c in got}
    paths = [c.path for c in got]
    assert paths == sorted(set(paths)) and "/" not in kinds

    def under_opaque(p: str) -> bool:
        a = _parent(p)
        while a != "/":
            e = up.lookup(a)
            if e is not None and (e.opaque or e.redirect):
                return True
            a = _parent(a)
        return False

    for p, k in kinds.items():
        if k is ChangeKind.ADDED:
            assert p in new and (p not in old or under_opaque(p)), p
        elif k is ChangeKind.DELETED:
            assert p in old and p not in new and new[_parent(p)][0] is Kind.DIR, p
        else:
            assert p in new and p in old, p
        if k is not ChangeKind.CHANGED and _parent(p) != "/":
            assert _parent(p) in kinds, f"parent of {p}"
    for p, seen in new.items():
        if p == "/":
            continue
        if p not in old:
            assert kinds.get(p) is ChangeKind.ADDED, p
        elif seen != old[p]:
            assert p in kinds, f"{p} differs: {old[p]} -> {seen}"
    for p in old:
        if p not in new and _parent(p) in new and new[_parent(p)][0] is Kind.DIR:
            assert kinds.get(p) is ChangeKind.DELETED, p
    return got


@given(data=st.data(), redirect=st.booleans())
def test_upper_changes_agrees_with_a_whole_tree_comparison(data, redirect):
    stack = data.draw(stacks(), label="stack")
    steps = data.draw(op_sequences(stack, max_size=12, calls=WRITE_CALLS), label="steps")
    with tempfile.TemporaryDirectory(prefix="diff-prop-") as base:
        target = EngineTarget.on_disk(stack, base, redirect_dir=redirect)
        for op in steps:
            try:
                op.apply(target)
            except OSError:
                pass  # refused steps change nothing; the diff must still be right
        check_against_trees(base, len(stack.lowers), target.fs)


def _remove_tree(fs: UnionFS, path: str) -> None:
    if Kind.from_mode(fs.lstat(path).st_mode) is Kind.DIR:
        for name in fs.listdir(path):
            _remove_tree(fs, path.rstrip("/") + "/" + name)
        fs.rmdir(path)
    else:
        fs.unlink(path)


STEPS = ("rename_dir", "rename_over", "rename_into_new", "replace_dir", "remove", "write",
         "new_file", "mkdir", "chmod")


@given(data=st.data())
def test_upper_changes_after_directory_level_steps(data):
    """Steps drawn from what the union holds at each moment, so that directories are
    replaced (opaque), renamed (``redirect_dir``) and emptied far more often than by
    random paths; the result is held to the same whole-tree comparison."""
    stack = data.draw(stacks(min_lowers=1, max_lowers=2), label="stack")
    with tempfile.TemporaryDirectory(prefix="diff-dirs-") as base:
        target = EngineTarget.on_disk(stack, base, redirect_dir=True)
        fs = target.fs
        for _ in range(data.draw(st.integers(1, 6), label="steps")):
            tree = _tree(fs)
            dirs = sorted(p for p, v in tree.items() if v[0] is Kind.DIR)
            others = sorted(p for p, v in tree.items() if v[0] is not Kind.DIR)
            step = data.draw(st.sampled_from(STEPS), label="step")
            d = data.draw(st.sampled_from(dirs), label="dir")
            name = data.draw(st.sampled_from(["a", "b", "n"]), label="name")
            target_path = d.rstrip("/") + "/" + name
            try:
                if step == "replace_dir" and d != "/":
                    _remove_tree(fs, d)
                    fs.mkdir(d)
                    fs.write_bytes(d + "/" + name, b"new")
                elif step == "rename_dir" and d != "/":
                    # to a fresh name in a directory outside the moved one
                    outside = [x for x in dirs if x != d and not x.startswith(d + "/")]
                    to = data.draw(st.sampled_from(outside), label="to")
                    fs.rename(d, to.rstrip("/") + "/moved-" + name)
                elif step == "remove" and (others or d != "/"):
                    victim = data.draw(st.sampled_from([*others, d]), label="victim")
                    if victim != "/":
                        _remove_tree(fs, victim)
                elif step == "write" and others:
                    fs.write_bytes(data.draw(st.sampled_from(others), label="file"), b"w")
                elif step == "new_file":
                    fs.write_bytes(target_path, b"n")
                elif step == "mkdir":
                    fs.mkdir(target_path)
                elif step == "chmod" and d != "/":
                    fs.chmod(d, 0o700)
            except OSError:
                pass  # refused (a name taken, a file where a directory is wanted...)
        check_against_trees(base, len(stack.lowers), fs)


def test_probe_follows_metacopy_files_and_lower_redirects(tmp_path):
    """A former upper used as a lower layer: its metacopy file leads down to the data, its
    redirected directory merges the directory it came from (the kernel's lookup rules)."""
    low = str(tmp_path / "low")
    _write(low, "/f", b"data")
    _write(low, "/dir/x", b"x")
    mid = str(tmp_path / "mid")
    os.makedirs(mid)
    fs = UnionFS([DirLayer(low, cache=False)],
                 DirLayer(mid, writable=True, fmt=wh.Format.OVERLAY,
                          workdir=str(tmp_path / "work")), metacopy=True, redirect_dir=True)
    fs.chmod("/f", 0o600)
    fs.rename("/dir", "/moved")
    probe = LowerProbe([probe_layer(mid), probe_layer(low)])
    stack = probe.stack("/f")
    assert [(i, p) for i, p, _ in stack] == [(0, "/f"), (1, "/f")]
    assert stack[0][2].metacopy and stack[0][2].mode == 0o600 and not stack[1][2].metacopy
    assert [(i, p) for i, p, _ in probe.stack("/moved")] == [(0, "/moved"), (1, "/dir")]
    assert probe.names("/moved") == {"x"} and probe.lookup("/moved/x").size == 1
    assert probe.lookup("/dir") is None  # the whiteout left at the old name


def test_sorted_by_the_bytes_of_the_path_as_docker_sorts(tmp_path):
    lower, upper = tmp_path / "lower", tmp_path / "upper"
    lower.mkdir()
    upper.mkdir()
    for name in (b"\xff", "\ue000".encode(), b"a.b", b"a"):
        (upper / os.fsdecode(name)).mkdir()
    (upper / "a" / "b").write_bytes(b"")
    got = [os.fsencode(c.path) for c in upper_changes(str(upper), [str(lower)])]
    assert got == [b"/a", b"/a.b", b"/a/b", "/\ue000".encode(), b"/\xff"]
