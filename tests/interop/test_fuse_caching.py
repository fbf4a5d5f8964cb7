"""What the mount lets the kernel and the adapter keep never goes stale: directory listings
cached by the kernel (``cache_readdir``) and by the adapter, attributes handed out with
READDIRPLUS, and read-only file objects shared between opens."""

from __future__ import annotations

import errno
import os
import shutil
import time

import pytest

from tests.interop.fuse_helpers import mounted

pytestmark = [pytest.mark.fuse, pytest.mark.root]


def _ls(path) -> list[str]:
    return sorted(os.listdir(path))


@pytest.mark.parametrize("extra", ["", "cache_readdir=off,readdirplus=off"])
def test_listings_follow_every_change_made_through_the_mount(stack, extra):
    with mounted(stack, extra=extra) as m:
        d = m / "dir"
        assert _ls(d) == ["bottom.txt", "top.txt"]
        assert _ls(d) == ["bottom.txt", "top.txt"]  # now from the caches
        (d / "new").write_text("x")
        assert _ls(d) == ["bottom.txt", "new", "top.txt"]
        os.unlink(d / "bottom.txt")
        assert _ls(d) == ["new", "top.txt"]
        os.mkdir(d / "sub")
        (d / "sub" / "inner").write_text("y")
        assert _ls(d / "sub") == ["inner"]
        os.rename(d / "sub", m / "moved")
        assert _ls(d) == ["new", "top.txt"]
        assert _ls(m / "moved") == ["inner"]
        with pytest.raises(FileNotFoundError):
            os.listdir(d / "sub")
        os.mkdir(d / "sub")  # a new directory under the old name starts empty
        assert _ls(d / "sub") == []
        os.symlink("new", d / "ln")
        os.link(d / "new", d / "hard")
        os.mkfifo(d / "fifo")
        assert _ls(d) == ["fifo", "hard", "ln", "new", "sub", "top.txt"]
        os.rename(d / "new", d / "top.txt")  # replaces
        assert _ls(d) == ["fifo", "hard", "ln", "sub", "top.txt"]
        for name in ("fifo", "hard", "ln", "top.txt"):
            os.unlink(d / name)
        os.rmdir(d / "sub")
        assert _ls(d) == []
        with pytest.raises(OSError) as e:
            os.rmdir(m / "moved")
        assert e.value.errno == errno.ENOTEMPTY
    # the upper dir says the same after unmounting
    with mounted(stack, extra=extra) as m:
        assert _ls(m / "dir") == []
        assert _ls(m / "moved") == ["inner"]


@pytest.mark.parametrize("extra", ["", "readdirplus=off", "cache_readdir=off"])
def test_a_reader_in_mid_listing_survives_removals_and_additions(stack, extra):
    """The ``rm -rf`` pattern: a directory read a buffer at a time while its entries are
    removed (and others added) between the reads. Directories are opened without a request
    to the daemon, so the listing's cookies must lead a reader on whatever changed: no entry
    twice, none invented, and every entry present throughout is seen."""
    names = [f"{i:05d}-" + "y" * 60 for i in range(2000)]
    with mounted(stack, extra=extra) as m:
        d = m / "churn"
        d.mkdir()
        for name in names:
            (d / name).write_bytes(b"")
        seen: list[str] = []
        with os.scandir(d) as it:
            for e in it:
                seen.append(e.name)
                if len(seen) == 50:
                    for name in names[:1000]:  # half of them gone, read or not
                        os.unlink(d / name)
                    for i in range(300):
                        (d / f"late-{i}").write_bytes(b"")
        assert len(seen) == len(set(seen))
        assert set(seen) <= set(names) | {f"late-{i}" for i in range(300)}
        assert set(names[1000:]) <= set(seen)
        assert sorted(os.listdir(d)) == sorted(names[1000:] + [f"late-{i}" for i in range(300)])
        shutil.rmtree(d)  # rm -rf through the mount: reads and removes in turn
        assert not d.exists()
    assert not (stack.upper / "churn").exists()


@pytest.mark.parametrize("extra", ["", "readdirplus=off"])
def test_a_listing_larger_than_one_reply_comes_whole(stack, extra):
    big = stack.lowers[-1] / "many"
    big.mkdir()
    names = [f"{i:05d}-" + "x" * 80 for i in range(1500)]
    for name in names:
        (big / name).write_bytes(b"")
    with mounted(stack, extra=extra) as m:
        rounds = []
        for _ in range(2):  # from the daemon, then from the kernel's cache
            listed = []
            with os.scandir(m / "many") as it:
                for e in it:
                    listed.append(e.name)
                    assert e.is_file(follow_symlinks=False)
            assert sorted(listed) == names  # none lost, none repeated
            rounds.append(listed)
        assert rounds[0] == rounds[1]


def test_readdirplus_attributes_match_lstat_and_follow_writes(stack):
    def key(st: os.stat_result) -> tuple[int, ...]:
        return (st.st_ino, st.st_mode, st.st_size, st.st_nlink, st.st_mtime_ns)

    with mounted(stack) as m:
        for entry in os.scandir(m / "data"):
            assert key(entry.stat(follow_symlinks=False)) == key(os.lstat(entry.path))
        with open(m / "data" / "hl1", "a") as f:  # a copy-up and a change of size and time
            f.write("more\n")
        os.chmod(m / "data" / "big", 0o600)
        seen = {e.name: key(e.stat(follow_symlinks=False)) for e in os.scandir(m / "data")}
        assert seen["hl1"][2] == len("linked\nmore\n")
    with mounted(stack) as m:  # what a fresh daemon and kernel say is the truth
        assert seen == {e.name: key(os.lstat(e.path)) for e in os.scandir(m / "data")}


def test_read_only_opens_see_every_change_made_since(stack):
    with mounted(stack) as m:
        path = m / "etc" / "passwd"
        old = open(path, "rb")  # noqa: SIM115 - kept open across the change
        try:
            assert old.read() == b"root:x:0:0::/root:/bin/sh\n"
            with open(path, "r+b") as w:  # copy-up, then a change
                w.write(b"ROOT")
            with open(path, "rb") as again:
                assert again.read() == b"ROOT:x:0:0::/root:/bin/sh\n"
            os.truncate(path, 4)
            assert path.read_bytes() == b"ROOT"
            os.rename(path, m / "etc" / "renamed")
            with pytest.raises(FileNotFoundError):
                path.read_bytes()
            (m / "etc" / "motd").rename(path)
            assert path.read_bytes() == b"top\n"
        finally:
            old.close()
    assert (stack.upper / "etc" / "passwd").read_bytes() == b"top\n"
    assert (stack.upper / "etc" / "renamed").read_bytes() == b"ROOT"
    assert (stack.lowers[-1] / "etc" / "passwd").read_bytes() == b"root:x:0:0::/root:/bin/sh\n"


def test_many_read_only_opens_leak_no_descriptors(stack):
    with mounted(stack) as m:
        pid = int(os.getxattr(str(m), "user.unionfs.pid"))
        for i in range(400):
            (m / "dir" / f"f{i}").write_text(str(i))
        before = len(os.listdir(f"/proc/{pid}/fd"))
        for _ in range(3):
            for i in range(400):
                assert (m / "dir" / f"f{i}").read_text() == str(i)
        # one shared object per file at most, however often it is opened
        assert len(os.listdir(f"/proc/{pid}/fd")) <= before + 400
        for i in range(400):  # and unlinking a file lets its object go
            os.unlink(m / "dir" / f"f{i}")
        # once the kernel forgets the file (the low-level adapter keeps a file it still
        # knows openable, as overlayfs does): the kernel sends its FORGETs between requests,
        # up to 16 ahead of each, so a few requests deliver them all
        deadline = time.monotonic() + 10
        while len(os.listdir(f"/proc/{pid}/fd")) > before and time.monotonic() < deadline:
            os.getxattr(str(m), "user.unionfs.pid")
            time.sleep(0.01)
        assert len(os.listdir(f"/proc/{pid}/fd")) <= before


def test_symlink_targets_kept_by_the_kernel_follow_replacements(stack):
    with mounted(stack) as m:
        assert os.readlink(m / "link") == "etc/passwd"
        assert os.readlink(m / "link") == "etc/passwd"  # kept by the kernel now
        os.unlink(m / "link")
        os.symlink("etc/motd", m / "link")
        assert os.readlink(m / "link") == "etc/motd"
        assert (m / "link").read_text() == "top\n"
        os.symlink("dir", m / "other")
        os.rename(m / "other", m / "link")
        assert os.readlink(m / "link") == "dir"
        assert sorted(os.listdir(m / "link")) == ["bottom.txt", "top.txt"]
    assert os.readlink(stack.upper / "link") == "dir"
