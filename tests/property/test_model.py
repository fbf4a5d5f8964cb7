"""The oracle's own checks: overlayfs outcomes the model must know, with exact errnos (each
also confirmed on kernel overlayfs by tests/interop/test_kernel_overlay.py)."""

from __future__ import annotations

import errno

import pytest

from unionfs.testing.model import (
    Dir,
    Fifo,
    File,
    HardLink,
    LayerSpec,
    StackSpec,
    Symlink,
    UnionModel,
    Whiteout,
    without_stray_whiteouts,
)


def _errno(call, *args) -> int:
    with pytest.raises(OSError) as info:
        call(*args)
    return info.value.errno


def _two_layers() -> StackSpec:
    top = LayerSpec.of({"/d": Dir(), "/d/x": Whiteout(), "/o": Dir(opaque=True),
                        "/o/new": File(b"n"), "/f": File(b"top")})
    bottom = LayerSpec.of({"/d": Dir(0o700), "/d/x": File(b"x"), "/d/y": File(b"y"),
                           "/o": Dir(), "/o/old": File(b"o"), "/f": Dir(), "/f/z": File()})
    return StackSpec((top, bottom))


def test_lookup_merges_whiteouts_and_opaque_dirs():
    m = UnionModel(_two_layers())
    assert m.listdir("/") == ["d", "f", "o"]
    assert m.listdir("/d") == ["y"]           # x whited out
    assert m.listdir("/o") == ["new"]         # opaque: old hidden
    assert m.read_file("/f") == b"top"        # a file hides the dir below
    assert m.lstat("/d").mode == 0o755        # metadata from the top-most dir
    assert _errno(m.lstat, "/d/x") == errno.ENOENT
    assert _errno(m.lstat, "/f/z") == errno.ENOTDIR


@pytest.mark.parametrize(("redirect_dir", "expected"), [(False, errno.EXDEV), (True, None)])
def test_renaming_a_lower_or_merged_dir(redirect_dir, expected):
    m = UnionModel(_two_layers(), redirect_dir=redirect_dir)
    if expected is None:
        m.rename("/d", "/e")
        assert m.listdir("/e") == ["y"]
    else:
        assert _errno(m.rename, "/d", "/e") == expected
        assert _errno(m.rename, "/o", "/e") == expected  # merged at build time too
    m.mkdir("/new")
    m.rename("/new", "/new2")  # a pure upper directory always moves


def test_metacopy_turns_redirect_dir_on():
    m = UnionModel(_two_layers(), metacopy=True)
    m.rename("/d", "/e")


def test_rename_errno_order():
    m = UnionModel(_two_layers())
    m.mkdir("/p")
    m.mkdir("/p/q")
    assert _errno(m.rename, "/p", "/p/q/r") == errno.EINVAL      # into itself
    assert _errno(m.rename, "/p/q", "/p") == errno.ENOTEMPTY     # over its ancestor
    assert _errno(m.rename, "/p", "/f") == errno.ENOTDIR         # dir over a file
    assert _errno(m.rename, "/f", "/p") == errno.EISDIR          # file over a dir
    assert _errno(m.rename, "/d", "/p") == errno.EXDEV           # before ENOTEMPTY
    assert _errno(m.rename, "/nope", "/p") == errno.ENOENT
    m.rename("/p/q", "/p/q")                                     # same object: no-op
    assert m.listdir("/p") == ["q"]


def _linked() -> StackSpec:
    return StackSpec((LayerSpec.of({"/a": File(b"1"), "/b": HardLink("/a")}),))


def test_index_off_copy_up_breaks_lower_hard_links():
    m = UnionModel(_linked())
    assert (m.lstat("/a").nlink, m.lstat("/b").nlink) == (2, 2)
    m.write_file("/a", b"2")
    assert (m.lstat("/a").nlink, m.lstat("/b").nlink) == (1, 2)
    assert m.read_file("/b") == b"1"
    m.rename("/a", "/b")          # two objects: a real rename
    assert m.listdir("/") == ["b"]


def test_index_on_keeps_lower_hard_links():
    m = UnionModel(_linked(), index=True)
    m.write_file("/a", b"2")
    assert (m.read_file("/b"), m.lstat("/b").nlink) == (b"2", 2)
    m.rename("/a", "/b")          # one inode: rename is a no-op
    assert m.listdir("/") == ["a", "b"]
    m.unlink("/a")
    assert m.lstat("/b").nlink == 1


def test_link_and_create_errnos():
    m = UnionModel(StackSpec((LayerSpec.of({"/d": Dir(), "/s": Symlink("missing/x"),
                                            "/p": Fifo()}),)))
    assert _errno(m.link, "/d", "/s") == errno.EEXIST             # EEXIST before EPERM
    assert _errno(m.link, "/d", "/e") == errno.EPERM
    assert _errno(m.write_file, "/s", b"", "w") == errno.ENOENT  # dangling link, O_CREAT
    assert _errno(m.write_file, "/s", b"", "x") == errno.EEXIST
    assert _errno(m.truncate, "/p", 0) == errno.EINVAL
    assert _errno(m.setxattr, "/p", "user.a", b"") == errno.EPERM
    assert _errno(m.getxattr, "/p", "user.a") == errno.ENODATA
    assert _errno(m.unlink, "/d") == errno.EISDIR
    assert _errno(m.rmdir, "/s") == errno.ENOTDIR
    assert _errno(m.mkdir, "/" + "n" * 256) == errno.ENAMETOOLONG
    assert _errno(m.mkdir, "/x/" + "n" * 256) == errno.ENOENT     # the walk fails first
    m.link("/s", "/s2")
    assert m.lstat("/s").nlink == 2


def test_stray_whiteouts_are_dropped():
    stack = StackSpec((LayerSpec.of({"/o": Dir(opaque=True), "/o/w": Whiteout(),
                                     "/m": Dir(), "/m/w": Whiteout()}),
                       LayerSpec.of({"/m": Dir(), "/m/w": File()})))
    cleaned = without_stray_whiteouts(stack)
    assert [p for p, _ in cleaned.lowers[0].entries] == ["/m", "/m/w", "/o"]


def test_specs_are_checked():
    with pytest.raises(ValueError):
        LayerSpec.of({"/a/b": File()})                 # parent missing
    with pytest.raises(ValueError):
        LayerSpec.of({"/a": File(), "/b": HardLink("/c")})
