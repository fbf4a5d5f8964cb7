"""``unionfs diff UPPERDIR``: an upper dir written by the engine, shown three ways."""

from __future__ import annotations

import errno
import os

import pytest

from unionfs.layer import DirLayer
from unionfs.union import UnionFS
from unionfs.upperview import format_side_by_side, upper_view


@pytest.fixture
def dirs(tmp_path):
    lower = tmp_path / "lower"
    for d in ("etc", "var/cache", "opt/old"):
        (lower / d).mkdir(parents=True)
    (lower / "etc/hostname").write_text("base\n")
    (lower / "etc/passwd").write_text("root:x:0:0\n")
    (lower / "var/cache/junk").write_text("j")
    (lower / "opt/old/x").write_text("x")
    upper = tmp_path / "upper"
    upper.mkdir()
    fs = UnionFS(lowers=[DirLayer(str(lower))], upper=DirLayer(str(upper), writable=True))
    with fs.open("/etc/hostname", "r+b") as f:
        f.write(b"HOST")
    fs.unlink("/etc/passwd")
    with fs.open("/new.txt", "wb") as f:
        f.write(b"new\n")
    for name in fs.listdir("/var/cache"):
        fs.unlink(f"/var/cache/{name}")
    fs.rmdir("/var/cache")
    fs.mkdir("/var/cache")           # re-created over a deleted lower dir: opaque
    return str(lower), str(upper)


def test_three_views_of_the_same_changes(dirs):
    lower, upper = dirs
    view = upper_view(upper, [lower])
    rows = {r.path: r for r in view.rows}
    assert rows["/etc/passwd"].diff == "D /etc/passwd"
    assert rows["/etc/passwd"].oci == ("etc/.wh.passwd",)
    raw = " ".join(rows["/etc/passwd"].overlay)
    assert "(whiteout)" in raw or ".wh.passwd" in raw or "overlay.whiteout" in raw
    assert rows["/etc/hostname"].diff == "C /etc/hostname"
    assert rows["/etc/hostname"].oci == ("etc/hostname",)
    assert rows["/new.txt"].diff == "A /new.txt"
    assert rows["/etc"].diff == "C /etc" and rows["/etc"].oci == ("etc/",)
    assert rows["/var/cache"].oci == ("var/cache/", "var/cache/.wh..wh..opq")
    assert "overlay.opaque" in " ".join(rows["/var/cache"].overlay) or \
        ".wh..wh..opq" in " ".join(rows["/var/cache"].overlay)
    assert "/opt/old/x" not in rows          # untouched lower content is not in the upper
    text = "\n".join(format_side_by_side(view))
    assert text.splitlines()[0].startswith("overlayfs (on disk)")
    assert "D /etc/passwd" in text and "etc/.wh.passwd" in text


def test_without_lowers_added_and_changed_are_unknown(dirs):
    _, upper = dirs
    view = upper_view(upper)
    rows = {r.path: r for r in view.rows}
    assert rows["/new.txt"].diff == "? /new.txt"
    assert rows["/etc/passwd"].diff == "D /etc/passwd"
    assert "tell A from C" in format_side_by_side(view)[-1]


def test_missing_upper_dir(tmp_path):
    with pytest.raises(FileNotFoundError) as e:
        upper_view(tmp_path / "nope")
    assert e.value.errno == errno.ENOENT
    (tmp_path / "f").write_text("x")
    with pytest.raises(NotADirectoryError) as e:
        upper_view(tmp_path / "f")
    assert e.value.errno == errno.ENOTDIR
    assert os.path.exists(tmp_path / "f")


def test_redirected_directory_is_named_in_all_three_views(tmp_path):
    lower = tmp_path / "lower"
    (lower / "olddir").mkdir(parents=True)
    (lower / "olddir/f").write_text("f")
    upper = tmp_path / "upper"
    upper.mkdir()
    fs = UnionFS(lowers=[DirLayer(str(lower))], upper=DirLayer(str(upper), writable=True),
                 redirect_dir=True)
    fs.rename("/olddir", "/newdir")
    rows = {r.path: r for r in upper_view(str(upper), [str(lower)]).rows}
    assert rows["/olddir"].diff == "D /olddir"
    assert rows["/newdir"].diff == "A /newdir"
    assert "overlay.redirect" in " ".join(rows["/newdir"].overlay)
    assert rows["/newdir"].oci[-1] == "(+ every entry merged from /olddir)"
