"""The on-disk forms: written in each format, read back in every form."""

from __future__ import annotations

import errno
import os
import stat

import pytest

from unionfs import whiteout as wh

FORMATS = list(wh.Format)


@pytest.mark.parametrize("fmt", FORMATS)
def test_whiteout_round_trip(tmp_path, fmt):
    d = tmp_path / "d"
    d.mkdir()
    (d / "keep").write_bytes(b"k")
    written = wh.write_whiteout(d, "gone", fmt)
    assert os.path.lexists(written)
    assert wh.write_whiteout(d, "gone", fmt) == written  # idempotent
    items, opaque = wh.scan_dir(str(d))
    assert {(i.name, i.whiteout) for i in items} == {("keep", False), ("gone", True)}
    assert not opaque
    assert wh.find_whiteout(str(d), "gone") == written
    assert wh.find_whiteout(str(d), "keep") is None
    assert wh.remove_whiteout(d, "gone")
    assert not wh.remove_whiteout(d, "gone")
    assert [i.name for i in wh.scan_dir(str(d))[0]] == ["keep"]


@pytest.mark.parametrize("fmt", FORMATS)
def test_opaque_round_trip(tmp_path, fmt):
    d = tmp_path / "d"
    d.mkdir()
    wh.write_opaque(d, fmt)
    assert wh.is_opaque_dir(str(d))
    assert wh.scan_dir(str(d)) == ([], True)
    wh.write_opaque(d, fmt, opaque=False)
    assert not wh.is_opaque_dir(str(d))
    assert os.listdir(d) == []


def test_whiteout_over_a_real_file_is_refused(tmp_path):
    (tmp_path / "x").write_bytes(b"")
    with pytest.raises(FileExistsError) as info:
        wh.write_whiteout(tmp_path, "x", wh.Format.OVERLAY)
    assert info.value.errno == errno.EEXIST


def test_forms_written_by_others_are_read(tmp_path):
    # the kernel's chardev, fuse-overlayfs's opaque xattr, the kernel's xattr whiteout
    os.mknod(tmp_path / "c", stat.S_IFCHR, os.makedev(0, 0))
    os.mknod(tmp_path / "realdev", stat.S_IFCHR | 0o600, os.makedev(1, 3))
    xw = tmp_path / "xw"
    xw.mkdir()
    (xw / "w").write_bytes(b"")
    os.setxattr(xw / "w", "user.overlay.whiteout", b"")
    os.setxattr(xw, "user.overlay.whiteouts", b"")
    (xw / "plain").write_bytes(b"")
    os.setxattr(xw / "plain", "user.note", b"1")
    fo = tmp_path / "fo"
    fo.mkdir()
    os.setxattr(fo, "user.fuseoverlayfs.opaque", b"y")
    items, _ = wh.scan_dir(str(tmp_path))
    kinds = {i.name: i.whiteout for i in items}
    assert kinds == {"c": True, "realdev": False, "xw": False, "fo": False}
    items, opaque = wh.scan_dir(str(xw))
    assert {i.name: i.whiteout for i in items} == {"w": True, "plain": False}
    assert not opaque
    assert wh.is_opaque_dir(str(fo))
    # a zero-size file with the flag is not a whiteout without the directory's mark
    nomark = tmp_path / "nomark"
    nomark.mkdir()
    (nomark / "w").write_bytes(b"")
    os.setxattr(nomark / "w", "user.overlay.whiteout", b"")
    assert [i.whiteout for i in wh.scan_dir(str(nomark))[0]] == [False]


def test_oci_names_and_meta_names(tmp_path):
    for name in (".wh.a", ".wh..wh..opq", ".wh..wh.plnk", "b"):
        (tmp_path / name).write_bytes(b"")
    items, opaque = wh.scan_dir(str(tmp_path))
    assert sorted((i.name, i.whiteout) for i in items) == [("a", True), ("b", False)]
    assert opaque
    assert wh.whiteout_target(".wh.a") == "a"
    assert wh.whiteout_target(".wh..wh..opq") is None
    assert wh.is_reserved_name(".wh.x") and not wh.is_reserved_name("x.wh.")


def test_private_xattrs_and_escaping(tmp_path):
    f = tmp_path / "f"
    f.write_bytes(b"")
    os.setxattr(f, "user.overlay.redirect", b"/a/b")
    os.setxattr(f, "user.overlay.metacopy", b"")
    os.setxattr(f, "user.overlay.overlay.mine", b"1")
    os.setxattr(f, "user.plain", b"2")
    visible, marks = wh.read_xattrs(str(f))
    assert visible == (("user.overlay.mine", b"1"), ("user.plain", b"2"))
    assert marks.redirect == "/a/b" and marks.metacopy
    assert wh.escape_xattr("trusted.overlay.x") == "trusted.overlay.overlay.x"
    assert wh.unescape_xattr("trusted.overlay.overlay.x") == "trusted.overlay.x"
    assert wh.escape_xattr("user.x") == "user.x"


def test_default_format_as_root(tmp_path):
    fmt = wh.default_format(tmp_path)
    if os.geteuid() == 0:
        assert fmt is wh.Format.OVERLAY
    else:
        assert fmt in (wh.Format.USER, wh.Format.OCI)
    assert os.listdir(tmp_path) == []  # the probe cleans up


def test_redirect_and_metacopy_need_xattrs(tmp_path):
    d = tmp_path / "d"
    d.mkdir()
    wh.write_redirect(d, "/old/place", wh.Format.USER)
    assert wh.read_marks(str(d)).redirect == "/old/place"
    wh.write_redirect(d, None, wh.Format.USER)
    assert wh.read_marks(str(d)).redirect is None
    with pytest.raises(OSError) as info:
        wh.write_redirect(d, "/x", wh.Format.OCI)
    assert info.value.errno == errno.EOPNOTSUPP


def test_origin_handle_is_the_kernels_ovl_fb(tmp_path):
    # the bytes the kernel records as overlay.origin / names its index entries by (checked
    # against kernel overlayfs in tests/interop/test_kernel_overlay.py::test_kit8_*)
    f = tmp_path / "f"
    f.write_bytes(b"x")
    os.link(f, tmp_path / "g")
    h = wh.origin_handle(str(f))
    if h is None:
        pytest.skip("this filesystem encodes no file handles")
    assert wh.origin_handle(str(tmp_path / "g")) == h  # one inode, one handle
    assert wh.origin_handle(str(tmp_path / "missing")) is None
    raw = h.encode(bytes(range(16)))
    assert raw[:2] == b"\x00\xfb" and raw[2] == len(raw) == 21 + len(h.fid)
    assert raw[4] == h.handle_type and raw[5:21] == bytes(range(16)) and raw[21:] == h.fid
    names = h.index_names()
    assert names[-1] == h.encode(bytes(16)).hex()  # uuid=off: the null uuid
    assert all(h.matches(n) for n in names) and h.matches(raw.hex())
    assert not h.matches(raw.hex()[:-2] + "ff") and not h.matches("0-12") \
        and not h.matches("zz")


@pytest.mark.parametrize(("value", "expected"), [
    (b"U+0", ("U", 0)), (b"U-1", ("U", -1)), (b"L+2", ("L", 2)), (b"X+1", None),
    (b"U1", None), (b"U+x", None)])
def test_kernel_nlink_record(tmp_path, value, expected):
    f = tmp_path / "f"
    f.write_bytes(b"")
    name = wh.USER + wh.NLINK_SUFFIX
    try:
        os.setxattr(f, name, value)
    except OSError as e:
        pytest.skip(f"no user xattrs here: {e}")
    got = wh.read_nlink(str(f))
    assert (got[1:] if got else None) == expected
    if got is not None:
        assert got[0] == name
        wh.write_nlink(str(f), name, "U", -3)
        assert wh.read_nlink(str(f)) == (name, "U", -3)
        assert os.getxattr(f, name) == b"U-3"
