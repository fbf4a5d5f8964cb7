"""The life of a mount: it is live when `mount` returns, shows in /proc/mounts, unmounts by
`unionfs umount`, `fusermount3 -u` and SIGTERM, refuses to unmount while busy, can be mounted
again at once on the same dirs, leaks nothing over 50 cycles; read-only without an upper dir;
`which` and the trace file on a live mount."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from tests.interop.fuse_helpers import (
    daemon_pid,
    in_mounts,
    mounted,
    process_gone,
    run_cli,
)

pytestmark = [pytest.mark.fuse, pytest.mark.root]


def test_mount_is_live_on_return_and_recognisable_in_proc_mounts(stack):
    with mounted(stack) as m:
        # no sleep: mount returned, so the first access must already be served
        assert (m / "etc" / "motd").read_text() == "top\n"
        (line,) = in_mounts(m)
        source, _, fstype, options = line.split()[:4]
        assert (source, fstype) == ("unionfs", "fuse.unionfs")
        assert "default_permissions" in options and "allow_other" in options
        pid = daemon_pid(m)
        assert os.getppid() != pid and pid != os.getpid()
    assert in_mounts(stack.mnt) == []
    assert process_gone(pid)


def test_fsname_and_fuse_options_pass_through(stack):
    with mounted(stack, extra="fsname=mystack,noatime") as m:
        (line,) = in_mounts(m)
        assert line.split()[0] == "mystack"
        assert "noatime" in line.split()[3]


def test_no_upperdir_means_read_only_with_erofs(stack):
    with mounted(stack, upper=False) as m:
        assert (m / "etc" / "motd").read_text() == "top\n"
        for action in (lambda: (m / "etc" / "motd").write_text("x"),
                       lambda: os.mkdir(m / "x"),
                       lambda: os.unlink(m / "etc" / "passwd"),
                       lambda: os.chmod(m / "etc", 0o700),
                       lambda: os.setxattr(m / "etc", "user.x", b"1")):
            with pytest.raises(OSError) as e:
                action()
            assert e.value.errno == errno.EROFS
        assert " ro," in in_mounts(m)[0] or ",ro," in in_mounts(m)[0] or \
            in_mounts(m)[0].split()[3].startswith("ro")
    assert os.listdir(stack.upper) == []


def test_fusermount3_u_and_plain_umount_both_work(stack):
    with mounted(stack) as m:
        pid = daemon_pid(m)
        r = subprocess.run(["fusermount3", "-u", str(m)], capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        assert in_mounts(m) == []
        assert process_gone(pid)
    with mounted(stack) as m:
        pid = daemon_pid(m)
        r = subprocess.run(["umount", str(m)], capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        assert in_mounts(m) == []
        assert process_gone(pid)


@pytest.mark.parametrize("extra", ["", "spin=0"])
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP])
def test_signals_unmount_cleanly(stack, sig, extra):
    # (the daemon waits for a request by asking again for a moment, then in poll(2); with
    # spin=0 in poll(2) at once: a signal ends either wait)
    with mounted(stack, extra=extra) as m:
        (m / "written").write_text("kept\n")
        pid = daemon_pid(m)
        os.kill(pid, sig)
        deadline = time.monotonic() + 10
        while in_mounts(m) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert in_mounts(m) == []
        assert process_gone(pid)
    assert (stack.upper / "written").read_text() == "kept\n"
    assert not [n for n in os.listdir(stack.work) if not n.startswith("work")]


def test_busy_mount_refuses_to_unmount_and_stays_usable(stack):
    with mounted(stack) as m:
        holder = subprocess.Popen(["sleep", "30"], cwd=m)
        try:
            time.sleep(0.1)
            r = run_cli("umount", str(m))
            assert r.returncode == 1
            assert "busy" in r.stderr
            assert in_mounts(m)
            assert (m / "etc" / "motd").read_text() == "top\n"
        finally:
            holder.kill()
            holder.wait()
        r = run_cli("umount", str(m))
        assert r.returncode == 0, r.stderr
        assert in_mounts(m) == []


def test_immediate_remount_on_the_same_dirs_sees_what_was_written(stack):
    with mounted(stack) as m:
        (m / "etc" / "motd").write_text("changed\n")
        os.unlink(m / "etc" / "passwd")
        ino = os.stat(m / "etc" / "motd").st_ino
        dir_ino = os.stat(m / "dir").st_ino
    with mounted(stack) as m:
        assert (m / "etc" / "motd").read_text() == "changed\n"
        assert not (m / "etc" / "passwd").exists()
        assert os.stat(m / "etc" / "motd").st_ino == ino  # stable across remount
        assert os.stat(m / "dir").st_ino == dir_ino


def test_mount_onto_a_missing_mountpoint_leaves_nothing(stack):
    r = run_cli("mount", "-o", stack.options(), str(stack.root / "absent"))
    assert r.returncode == 2
    assert "mount point" in r.stderr


def test_fifty_mount_cycles_leak_nothing(stack):
    def fds() -> int:
        return len(os.listdir("/proc/self/fd"))

    def unionfs_mounts() -> int:
        # only this test's mount point: other tests mount in parallel (pytest -n)
        return sum(1 for line in in_mounts(stack.mnt) if " fuse.unionfs " in line)

    from unionfs.mount import mount, parse_options, umount

    base_fds, base_mounts = fds(), unionfs_mounts()
    pids = []
    for i in range(50):
        # the command line for the first cycles, then the same daemon code called from here
        # (no interpreter start-up per cycle, and this process's descriptors are counted)
        if i < 5:
            r = run_cli("mount", "-o", stack.options(), str(stack.mnt))
            assert r.returncode == 0, f"cycle {i}: {r.stderr}"
        else:
            assert mount(parse_options([stack.options()]), str(stack.mnt)) == 0
        try:
            pid = daemon_pid(stack.mnt)
            pids.append(pid)
            (stack.mnt / f"f{i}").write_text(str(i))
            with open(f"/proc/{pid}/status") as f:
                threads = int(next(line for line in f if line.startswith("Threads:"))
                              .split()[1])
            assert threads <= 3, f"cycle {i}: {threads} threads in the daemon"
            assert len(os.listdir(f"/proc/{pid}/fd")) < 32
        finally:
            if i < 5:
                r = run_cli("umount", str(stack.mnt))
                assert r.returncode == 0, f"cycle {i}: {r.stderr}"
            else:
                umount(str(stack.mnt))
    assert unionfs_mounts() == base_mounts
    assert fds() == base_fds
    assert all(process_gone(p, timeout=1) for p in pids)
    assert sorted(os.listdir(stack.upper)) == sorted(f"f{i}" for i in range(50))


def test_which_on_a_live_mount_says_where_a_path_comes_from(stack):
    with mounted(stack) as m:
        (m / "etc" / "motd").write_text("mine\n")
        os.unlink(m / "dir" / "bottom.txt")
        r = run_cli("which", str(m / "dir" / "top.txt"))
        assert r.returncode == 0, r.stderr
        assert str(stack.lowers[0]) in r.stdout or "lower" in r.stdout
        r = run_cli("which", "--json", str(m / "etc" / "motd"))
        assert r.returncode == 0, r.stderr
        info = json.loads(r.stdout)
        assert info["text"]
        assert "upper" in json.dumps(info).lower()
        r = run_cli("which", str(m / "link"))  # a symlink: asked through its parent
        assert r.returncode == 0, r.stderr
        assert r.stdout.strip()
        r = run_cli("which", str(m / "dir" / "bottom.txt"))
        assert r.returncode == 1
        assert "No such file" in r.stderr


def test_trace_file_gets_a_line_per_copy_up_and_whiteout(stack):
    trace = stack.root / "trace.log"
    with mounted(stack, args=("--trace", str(trace))) as m:
        (m / "etc" / "motd").write_text("x\n")
        os.unlink(m / "etc" / "passwd")
        with pytest.raises(OSError) as e:
            os.rename(m / "dir", m / "elsewhere")
        assert e.value.errno == errno.EXDEV
    lines = trace.read_text().splitlines()
    kinds = {line.split()[0] for line in lines}
    assert {"copy_up", "whiteout", "exdev"} <= kinds, lines
    motd = [line for line in lines if line.startswith("copy_up") and "/etc/motd" in line]
    assert motd and "layer=" in motd[0] and "reason=" in motd[0]


def test_sigkill_mid_copy_up_leaves_no_half_written_file(stack):
    size = 48 << 20
    with open(stack.lowers[-1] / "data" / "huge", "wb") as f:
        f.write(b"L" * size)
    with mounted(stack) as m:
        pid = daemon_pid(m)
        writer = subprocess.Popen(
            [sys.executable, "-c",
             f"f = open({str(m / 'data' / 'huge')!r}, 'r+b'); f.write(b'W'); f.close()"],
            stderr=subprocess.DEVNULL)
        time.sleep(0.05)  # the copy-up of 48 MiB is under way (or done)
        os.kill(pid, signal.SIGKILL)
        writer.wait(timeout=30)
        assert process_gone(pid)
    assert in_mounts(stack.mnt) == []
    copied = stack.upper / "data" / "huge"
    if copied.exists():  # all or nothing: never a prefix of the data
        assert copied.stat().st_size == size
        with open(copied, "rb") as f:
            head = f.read(1)
            f.seek(size - 1)
            assert f.read(1) == b"L" and head in (b"L", b"W")
    with mounted(stack) as m:  # and the stack mounts again with a whole file
        assert os.path.getsize(m / "data" / "huge") == size


def test_libfuse_refusing_the_mount_is_reported_and_leaves_nothing(stack):
    r = run_cli("mount", "-o", stack.options(extra="max_read=lots"), str(stack.mnt))
    assert r.returncode == 1
    assert "max_read=lots" in r.stderr and "could not mount" in r.stderr
    assert in_mounts(stack.mnt) == []
