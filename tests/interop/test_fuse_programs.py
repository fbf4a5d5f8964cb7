"""Real programs on a real FUSE mount of the engine, then the upper dir checked in overlayfs
format (whiteouts are char devices 0/0, opaque dirs carry trusted.overlay.opaque=y) and the
lower layers checked untouched."""

from __future__ import annotations

import hashlib
import os
import stat
import subprocess

import pytest

from tests.conftest import need_tool
from tests.interop.fuse_helpers import mounted

pytestmark = [pytest.mark.fuse, pytest.mark.root]


def tree_digest(root) -> str:
    """A digest of every path, mode and content below ``root`` (to prove lowers unchanged)."""
    h = hashlib.sha256()
    for dirpath, dirnames, filenames in sorted(os.walk(root)):
        dirnames.sort()
        for name in sorted(dirnames + filenames):
            p = os.path.join(dirpath, name)
            st = os.lstat(p)
            h.update(f"{os.path.relpath(p, root)} {st.st_mode:o} {st.st_mtime_ns}".encode())
            if stat.S_ISREG(st.st_mode):
                with open(p, "rb") as f:
                    h.update(f.read())
    return h.hexdigest()


def is_whiteout(path) -> bool:
    st = os.lstat(path)
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == 0


def sh(cmd: str, cwd=None, **kw) -> subprocess.CompletedProcess:
    r = subprocess.run(cmd, shell=True, capture_output=True, text=True, cwd=cwd, timeout=120,
                       **kw)
    assert r.returncode == 0, f"{cmd}: {r.stdout}{r.stderr}"
    return r


def test_rm_mv_ln_chmod_touch_leave_overlayfs_format_in_upper(stack):
    before = [tree_digest(p) for p in stack.lowers]
    with mounted(stack) as m:
        sh(f"rm {m}/etc/passwd")
        sh(f"rm -rf {m}/dir")
        sh(f"mkdir {m}/dir && echo new > {m}/dir/fresh")
        sh(f"mv {m}/etc/motd {m}/motd.moved")
        sh(f"ln {m}/data/hl1 {m}/data/hl3")
        sh(f"ln -s /etc/hostname {m}/sym")
        sh(f"chmod 0700 {m}/emptydir")
        sh(f"touch -d @981173106 {m}/data/big")
        assert sorted(os.listdir(m / "etc")) == []
        assert sorted(os.listdir(m / "dir")) == ["fresh"]
        assert (m / "motd.moved").read_text() == "top\n"
        assert os.lstat(m / "data" / "hl1").st_nlink == os.lstat(m / "data" / "hl3").st_nlink
        assert os.readlink(m / "sym") == "/etc/hostname"
        assert stat.S_IMODE(os.stat(m / "emptydir").st_mode) == 0o700
        assert os.stat(m / "data" / "big").st_mtime_ns == 981173106 * 10**9
    up = stack.upper
    assert is_whiteout(up / "etc" / "passwd")
    assert is_whiteout(up / "etc" / "motd")
    assert os.getxattr(up / "dir", "trusted.overlay.opaque") == b"y"
    assert (up / "dir" / "fresh").read_text() == "new\n"
    assert (up / "motd.moved").read_text() == "top\n"
    assert os.readlink(up / "sym") == "/etc/hostname"
    assert stat.S_IMODE(os.stat(up / "emptydir").st_mode) == 0o700
    assert os.stat(up / "data" / "big").st_size == 1 << 20  # copied up whole by touch
    assert not any(n.startswith(".fuse_hidden") for n in os.listdir(up / "data"))
    assert [tree_digest(p) for p in stack.lowers] == before


def test_cp_a_and_tar_round_trip_through_the_mount(stack, tmp_path):
    need_tool("tar")
    src = tmp_path / "src"
    src.mkdir()
    (src / "a").write_bytes(os.urandom(70000))
    (src / "sub").mkdir(mode=0o750)
    (src / "sub" / "b").write_text("bee\n")
    os.symlink("../a", src / "sub" / "to_a")
    os.link(src / "a", src / "a_link")
    os.utime(src / "a", ns=(1_000_000_000_123_456_789, 1_000_000_000_123_456_789))
    with mounted(stack) as m:
        sh(f"cp -a {src} {m}/copied")
        sh(f"diff -r --no-dereference {src} {m}/copied")
        st = os.lstat(m / "copied" / "a")
        assert st.st_mtime_ns == 1_000_000_000_123_456_789
        assert st.st_nlink == 2
        assert os.lstat(m / "copied" / "a").st_ino == os.lstat(m / "copied" / "a_link").st_ino
        # tar c of the whole mount, then x back into it
        sh(f"tar -C {m} -cf {tmp_path}/all.tar .")
        names = sh(f"tar -tf {tmp_path}/all.tar").stdout.split()
        assert "./etc/motd" in names and "./dir/top.txt" in names
        sh(f"mkdir {m}/restore && tar -C {m}/restore -xpf {tmp_path}/all.tar")
        sh(f"diff -r --no-dereference {m}/copied {m}/restore/copied")
        assert (m / "restore" / "etc" / "motd").read_text() == "top\n"
        sh(f"cp -a {m}/dir {m}/dir2")  # a merged dir copied whole
        assert sorted(os.listdir(m / "dir2")) == ["bottom.txt", "top.txt"]
    assert (stack.upper / "copied" / "sub" / "b").read_text() == "bee\n"
    assert (stack.upper / "dir2" / "top.txt").read_text() == "from the top\n"


def test_mv_of_a_lower_directory_falls_back_to_copy_and_whiteouts(stack):
    with mounted(stack) as m:
        # rename(2) of a lower dir is EXDEV (redirect_dir=off); mv copies and deletes
        with pytest.raises(OSError) as e:
            os.rename(m / "dir", m / "dir_renamed")
        assert e.value.errno == 18  # EXDEV
        sh(f"mv {m}/dir {m}/dir_renamed")
        assert sorted(os.listdir(m / "dir_renamed")) == ["bottom.txt", "top.txt"]
        assert not (m / "dir").exists()
        sh(f"mv {m}/etc/passwd {m}/dir_renamed/")  # a file rename: copy-up + whiteout
        assert (m / "dir_renamed" / "passwd").read_text().startswith("root:")
    assert is_whiteout(stack.upper / "dir")
    assert is_whiteout(stack.upper / "etc" / "passwd")
    assert sorted(os.listdir(stack.upper / "dir_renamed")) == ["bottom.txt", "passwd",
                                                               "top.txt"]


def test_rename_with_redirect_dir_on_keeps_the_kernel_format(stack):
    with mounted(stack, extra="redirect_dir=on") as m:
        os.rename(m / "dir", m / "moved")
        assert sorted(os.listdir(m / "moved")) == ["bottom.txt", "top.txt"]
    assert os.getxattr(stack.upper / "moved", "trusted.overlay.redirect") in (b"/dir", b"dir")
    assert is_whiteout(stack.upper / "dir")


def test_python_file_io(stack):
    with mounted(stack) as m:
        p = m / "etc" / "motd"
        with open(p, "r+") as f:  # copy-up on open for write
            assert f.read() == "top\n"
            f.seek(0, 2)
            f.write("more\n")
        assert p.read_text() == "top\nmore\n"
        with open(m / "data" / "big", "r+b") as f:  # a partial write into a big lower file
            f.seek(4096)
            f.write(b"X" * 10)
        data = (m / "data" / "big").read_bytes()
        assert data[4096:4106] == b"X" * 10 and len(data) == 1 << 20
        with open(m / "new.bin", "wb") as f:
            for i in range(64):
                f.write(bytes([i]) * 65536)
        assert os.path.getsize(m / "new.bin") == 64 * 65536
        with open(m / "new.bin", "rb") as f:
            f.seek(63 * 65536)
            assert f.read(3) == b"\x3f\x3f\x3f"
        with open(m / "app.log", "a") as f:
            f.write("1\n")
        with open(m / "app.log", "a") as f:
            f.write("2\n")
        assert (m / "app.log").read_text() == "1\n2\n"
        os.truncate(m / "dir" / "bottom.txt", 4)
        assert (m / "dir" / "bottom.txt").read_text() == "from"
        fd = os.open(m / "tmpfile", os.O_CREAT | os.O_RDWR, 0o600)
        try:
            os.write(fd, b"still here")
            os.unlink(m / "tmpfile")
            st = os.fstat(fd)
            assert st.st_nlink == 0
            assert os.pread(fd, 5, 6) == b"here"
        finally:
            os.close(fd)
    assert (stack.lowers[-1] / "dir" / "bottom.txt").read_text() == "from the bottom\n"
    assert (stack.upper / "etc" / "motd").read_text() == "top\nmore\n"
    assert not (stack.upper / "tmpfile").exists()
    assert not [n for n in os.listdir(stack.upper) if n.startswith(".fuse_hidden")]


def test_git_init_and_commit_inside_the_mount(stack):
    need_tool("git")
    with mounted(stack) as m:
        repo = m / "repo"
        repo.mkdir()
        env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.com",
               "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.com",
               "HOME": str(m)}
        sh("git init -q . && echo hello > a.txt && git add a.txt && git commit -qm first",
           cwd=repo, env=env)
        sh("echo again >> a.txt && git commit -qam second && git gc -q", cwd=repo, env=env)
        log = sh("git log --format=%s", cwd=repo, env=env).stdout.split()
        assert log == ["second", "first"]
        sh("git fsck --strict", cwd=repo, env=env)
    assert (stack.upper / "repo" / ".git" / "HEAD").exists()


def test_sqlite3_writes(stack):
    need_tool("sqlite3")
    with mounted(stack) as m:
        db = m / "data" / "app.db"
        sh(f"sqlite3 {db} 'create table t(x); begin; "
           + " ".join(f"insert into t values({i});" for i in range(500))
           + " commit;'")
        sh(f"sqlite3 {db} 'pragma journal_mode=wal; insert into t values(1000);'")
        out = sh(f"sqlite3 {db} 'select count(*), sum(x) from t; pragma integrity_check;'")
        assert out.stdout.split() == ["501|125750", "ok"]
    out = sh(f"sqlite3 {stack.upper}/data/app.db 'select count(*) from t'")
    assert out.stdout.strip() == "501"
