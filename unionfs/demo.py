"""``unionfs demo``: a short walk through lookup, copy-up, whiteouts and opaque directories,
on real directories in a temporary place, with the engine's trace events printed as they
happen."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable

from .diff import changes
from .layer import DirLayer
from .union import UnionFS


def _write(path: str, data: str) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(data)


def _tree(layer_dir: str) -> list[str]:
    out = []
    for root, dirs, files in os.walk(layer_dir):
        dirs.sort()
        for name in sorted(dirs + files):
            p = os.path.join(root, name)
            rel = os.path.relpath(p, layer_dir)
            st = os.lstat(p)
            if os.path.isdir(p) and not os.path.islink(p):
                kind = "dir"
            elif (st.st_mode & 0o170000) == 0o020000 and st.st_rdev == 0:
                kind = "whiteout (char 0/0)"
            else:
                kind = "file"
            out.append(f"{rel} [{kind}]")
    return out


def run(echo: Callable[[str], None] = print) -> None:
    """Print the demonstration through ``echo`` (one line per call)."""
    with tempfile.TemporaryDirectory(prefix="unionfs-demo-") as tmp:
        base, app, up = (os.path.join(tmp, n) for n in ("base", "app", "upper"))
        _write(f"{base}/etc/os-release", "NAME=base\n")
        _write(f"{base}/etc/motd", "hello from base\n")
        _write(f"{base}/var/cache/old.db", "old cache\n")
        _write(f"{app}/etc/motd", "hello from app\n")
        _write(f"{app}/srv/app.py", "print('hi')\n")
        os.makedirs(up)
        fs = UnionFS([DirLayer(app, cache=False, name="app"),
                      DirLayer(base, cache=False, name="base")],
                     DirLayer(up, writable=True, name="upper"))
        fs.subscribe(lambda ev: echo(f"    trace: {ev}"))

        echo("Layers: lower 'app' on top of lower 'base', and an empty writable 'upper'.")
        echo("")
        echo("1. Lookup goes top-down; directories merge, files shadow.")
        echo(f"   ls /       -> {fs.listdir('/')}")
        echo(f"   ls /etc    -> {fs.listdir('/etc')}  (merged from app and base)")
        echo(f"   cat /etc/motd -> {fs.read_bytes('/etc/motd').decode().strip()!r}")
        for reason in fs.which("/etc/motd").reasons:
            echo(f"   which: {reason}")
        echo("")
        echo("2. Writing a lower file copies it up first (data then change, in the upper).")
        with fs.open("/etc/os-release", "ab") as f:
            f.write(b"VERSION=2\n")
        echo(f"   cat /etc/os-release -> {fs.read_bytes('/etc/os-release').decode()!r}")
        with open(f"{base}/etc/os-release") as f:
            echo(f"   base still holds     -> {f.read()!r}")
        echo("")
        echo("3. Deleting a lower file leaves a whiteout in the upper.")
        fs.unlink("/etc/motd")
        echo(f"   ls /etc -> {fs.listdir('/etc')}")
        echo("")
        echo("4. Removing a lower directory and making it again gives an opaque directory.")
        fs.unlink("/var/cache/old.db")
        fs.rmdir("/var/cache")
        fs.mkdir("/var/cache", 0o755)
        fs.write_bytes("/var/cache/new.db", b"fresh\n")
        echo(f"   ls /var/cache -> {fs.listdir('/var/cache')}  (old.db stays hidden)")
        echo("")
        echo("5. Renaming a lower directory without redirect_dir: EXDEV, as the kernel says.")
        try:
            fs.rename("/srv", "/opt")
        except OSError as e:
            echo(f"   rename /srv /opt -> errno {e.errno} ({e.strerror})")
        echo("")
        echo("The upper directory on disk (what the kernel would mount):")
        for line in _tree(up):
            echo(f"   {line}")
        echo("")
        echo("docker diff of the container:")
        for change in changes(fs):
            echo(f"   {change}")
