"""The built-in shell on a real terminal: `imagesim run -it ubuntu bash` in a pseudo-terminal
shows bash's prompt with the short container id, runs commands, and exits with `exit N`."""

from __future__ import annotations

import os
import pty
import select
import subprocess
import sys
import time

from imagesim.cli import main


def _read_until(fd: int, marker: bytes, timeout: float = 60.0) -> bytes:
    data = b""
    deadline = time.monotonic() + timeout
    while marker not in data and time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.5)
        if ready:
            try:
                chunk = os.read(fd, 4096)
            except OSError:
                break
            if not chunk:
                break
            data += chunk
    return data


def test_interactive_bash_on_a_pty(tmp_path, capsys):
    root = str(tmp_path / "root")
    assert main(["--root", root, "pull", "ubuntu"]) == 0
    master, slave = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "imagesim", "--root", root, "run", "-it",
                             "--name", "tty1", "ubuntu", "bash"],
                            stdin=slave, stdout=slave, stderr=slave, close_fds=True)
    os.close(slave)
    try:
        seen = _read_until(master, b":/# ")
        assert b"root@" in seen, seen
        os.write(master, b"cd /etc && echo \"$(cat hostname)x\" > /tmp/made\n")
        seen = _read_until(master, b":/etc# ")
        assert b"root@" in seen and b":/etc# " in seen, seen
        os.write(master, b"cat /tmp/made; nosuch\n")
        seen = _read_until(master, b"command not found")
        assert b"bash: nosuch: command not found" in seen, seen
        os.write(master, b"exit 7\n")
        assert proc.wait(timeout=60) == 7
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)
    # the container's writable layer kept the file the interactive session wrote
    capsys.readouterr()
    assert main(["--root", root, "diff", "tty1"]) == 0
    assert "A /tmp/made" in capsys.readouterr().out.splitlines()
