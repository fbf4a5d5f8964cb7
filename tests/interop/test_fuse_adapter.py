"""The FUSE adapter's own translation steps, called directly (no mount): libfuse's hiding of
files unlinked while open, paths of open files across renames, readdir entries, the virtual
attributes, UTIME_OMIT, errnos passed through unchanged. The mounted tests cover the rest."""

from __future__ import annotations

import errno
import json
import os
import stat

import pytest

try:
    from unionfs.fuse import FuseOperations, provenance_dict
except (ImportError, OSError) as e:  # libfuse 3 missing: the mounted tests say so too
    pytest.skip(f"unionfs.fuse cannot load libfuse 3: {e}", allow_module_level=True)

from unionfs.mount import XATTR_PID, XATTR_WHICH, build_union, parse_options


@pytest.fixture
def ops(tmp_path):
    for d in ("low", "up", "work"):
        (tmp_path / d).mkdir()
    (tmp_path / "low" / "etc").mkdir()
    (tmp_path / "low" / "etc" / "motd").write_text("lower\n")
    os.symlink("etc/motd", tmp_path / "low" / "link")
    opts = parse_options([f"lowerdir={tmp_path}/low,upperdir={tmp_path}/up,"
                          f"workdir={tmp_path}/work"])
    return FuseOperations(build_union(opts), opts)


def test_getattr_is_the_engines_lstat(ops):
    st = ops.union.lstat("/etc/motd")
    d = ops.getattr("/etc/motd")
    assert (d["st_ino"], d["st_mode"], d["st_size"]) == (st.st_ino, st.st_mode, 6)
    assert d["st_mtime"] == st.st_mtime_ns
    with pytest.raises(FileNotFoundError) as e:
        ops.getattr("/nope")
    assert e.value.errno == errno.ENOENT


def test_readdir_gives_types_and_inode_numbers(ops):
    entries = {name: attrs for name, attrs, _off in ops.readdir("/", ops.opendir("/"))}
    assert set(entries) == {".", "..", "etc", "link"}
    assert stat.S_ISDIR(entries["etc"]["st_mode"])
    assert stat.S_ISLNK(entries["link"]["st_mode"])
    assert entries["etc"]["st_ino"] == ops.union.lstat("/etc").st_ino


def test_libfuse_hiding_an_open_file_becomes_a_real_unlink(ops, tmp_path, monkeypatch):
    fh = ops.open("/etc/motd", os.O_RDWR)  # copies it up
    ino = ops.union.lstat("/etc/motd").st_ino
    hidden = "/etc/.fuse_hidden0000000100000001"
    ops.rename("/etc/motd", hidden)  # what libfuse does on unlink of an open file
    assert ops.union.listdir("/etc") == []
    assert os.listdir(tmp_path / "up" / "etc") == ["motd"]  # the whiteout, nothing hidden
    st = ops.getattr(hidden)
    assert (st["st_nlink"], st["st_ino"], st["st_size"]) == (0, ino, 6)
    assert ops.write(hidden, b"L", 0, fh) == 1
    assert ops.read(hidden, 10, 0, fh) == b"Lower\n"
    ops.truncate(hidden, 2, fh)
    ops.chmod(hidden, 0o600)
    assert ops.getattr(hidden)["st_size"] == 2
    assert stat.S_IMODE(ops.getattr(hidden)["st_mode"]) == 0o600
    ops.release(hidden, fh)
    ops.unlink(hidden)  # libfuse removes the hidden name after the last close
    assert ops.union.listdir("/etc") == []
    # a process that looked the file up before may still open that inode (libfuse asks
    # by the hidden name): for a moment it still can, as on overlayfs
    again = ops.open(hidden, os.O_RDONLY)
    assert ops.read(hidden, 10, 0, again) == b"Lo"
    assert ops.getattr(hidden)["st_nlink"] == 0
    import unionfs.fuse

    monkeypatch.setattr(unionfs.fuse, "_GRAVE_SECONDS", 0.0)
    ops.release(hidden, again)  # after that moment it is gone
    with pytest.raises(FileNotFoundError):
        ops.getattr(hidden)
    with pytest.raises(FileNotFoundError):
        ops.open(hidden, os.O_RDONLY)
    assert os.listdir(tmp_path / "up" / "etc") == ["motd"]


def test_a_hidden_lower_file_is_reopened_for_reading_only(ops):
    fh = ops.open("/etc/motd", os.O_RDONLY)  # a lower file, not copied up
    hidden = "/etc/.fuse_hidden0000000200000001"
    ops.rename("/etc/motd", hidden)
    second = ops.open(hidden, os.O_RDONLY)
    assert ops.read(hidden, 10, 0, second) == b"lower\n"
    with pytest.raises(OSError) as e:
        ops.open(hidden, os.O_RDWR)
    assert e.value.errno == errno.EROFS  # a lower file is never written
    ops.release(hidden, second)
    ops.release(hidden, fh)


def test_a_rename_that_is_not_libfuse_hiding_is_a_rename(ops):
    ops.rename("/etc/motd", "/etc/.fuse_hidden_by_a_user")  # nothing open: a plain rename
    assert ops.union.listdir("/etc") == [".fuse_hidden_by_a_user"]


def test_open_files_follow_renames_of_their_parents(ops):
    ops.mkdir("/d", 0o755)
    ops.union.write_bytes("/d/f", b"data")
    fh = ops.open("/d/f", os.O_RDONLY)
    with pytest.raises(OSError) as e:  # a lower directory: EXDEV, straight from the engine
        ops.rename("/etc", "/elsewhere")
    assert e.value.errno == errno.EXDEV
    ops.rename("/d", "/e")  # an upper directory moves; the open file goes with it
    assert ops._files[fh].path == "/e/f"
    ops.rename("/e/f", "/e/.fuse_hidden0000000200000002")  # so libfuse's hiding still works
    assert ops.union.listdir("/e") == []
    assert ops.read("/e/.fuse_hidden0000000200000002", 4, 0, fh) == b"data"
    ops.release(None, fh)


def test_utimens_keeps_an_omitted_time(ops):
    ops.utimens("/etc/motd", (5_000_000_001, 7_000_000_002))
    ops.utimens("/etc/motd", (None, 9_000_000_003))  # UTIME_OMIT for atime
    st = ops.union.lstat("/etc/motd")
    assert (st.st_atime_ns, st.st_mtime_ns) == (5_000_000_001, 9_000_000_003)


def test_virtual_attributes(ops):
    assert int(ops.getxattr("/", XATTR_PID)) == os.getpid()
    info = json.loads(ops.getxattr("/etc/motd", XATTR_WHICH))
    assert info["text"] and "low" in info["text"]
    info = json.loads(ops.getxattr("/", XATTR_WHICH + ".link"))  # asked through the parent
    assert "/link" in info["text"]
    with pytest.raises(OSError) as e:
        ops.getxattr("/", XATTR_WHICH + ".")
    assert e.value.errno == errno.ENODATA
    assert XATTR_WHICH not in ops.listxattr("/etc/motd")
    with pytest.raises(OSError) as e:
        ops.getxattr("/etc/motd", "user.absent")
    assert e.value.errno == errno.ENODATA


def test_provenance_dict_is_plain_json():
    class Prov:
        reasons = ("a", "b")

    assert provenance_dict(Prov())["text"] == "a\nb"


def test_read_only_union_refuses_changes_with_erofs(tmp_path):
    (tmp_path / "low").mkdir()
    (tmp_path / "low" / "f").write_text("x")
    opts = parse_options([f"lowerdir={tmp_path}/low"])
    ro = FuseOperations(build_union(opts), opts)
    for call in (lambda: ro.mkdir("/d", 0o755), lambda: ro.unlink("/f"),
                 lambda: ro.open("/f", os.O_WRONLY), lambda: ro.chmod("/f", 0o600)):
        with pytest.raises(OSError) as e:
            call()
        assert e.value.errno == errno.EROFS
