"""Building layer stacks for the engine tests: one description, every layer kind.

A layer is described by a dict ``path -> spec``: ``bytes`` (a regular file), ``DIR``,
``OPAQUE`` (an opaque directory), ``WHITEOUT``, ``("symlink", target)``,
``("hardlink", other_path)``, ``("fifo",)``. Parents are made as needed.
"""

from __future__ import annotations

import os
import stat

from unionfs import whiteout as wh
from unionfs.entry import Kind
from unionfs.layer import DirLayer, MemoryLayer
from unionfs.path import split

DIR = "dir"
OPAQUE = "opaque"
WHITEOUT = "whiteout"


def _sorted(spec: dict) -> list:
    return sorted(spec.items(), key=lambda kv: kv[0].count("/"))


def memory_layer(spec: dict, name: str) -> MemoryLayer:
    layer = MemoryLayer(name)
    for path, what in _sorted(spec):
        layer.makedirs(split(path)[0])
        if isinstance(what, bytes):
            layer.write_file(path, what)
        elif what in (DIR, OPAQUE):
            layer.makedirs(path)
            if what == OPAQUE:
                layer.set_opaque(path, True)
        elif what == WHITEOUT:
            layer.whiteout(path)
        elif what[0] == "symlink":
            layer.symlink(path, what[1])
        elif what[0] == "hardlink":
            layer.link(what[1], path)
        elif what[0] == "fifo":
            layer.mknod(path, Kind.FIFO, 0o644)
    return layer


def write_dir(root: str, spec: dict, fmt: wh.Format = wh.Format.OVERLAY) -> None:
    """Materialise ``spec`` under the host directory ``root`` in whiteout format ``fmt``."""
    os.makedirs(root, exist_ok=True)
    for path, what in _sorted(spec):
        host = root + path
        os.makedirs(os.path.dirname(host), exist_ok=True)
        if isinstance(what, bytes):
            with open(host, "wb") as f:
                f.write(what)
        elif what in (DIR, OPAQUE):
            os.makedirs(host, exist_ok=True)
            if what == OPAQUE:
                wh.write_opaque(host, fmt)
        elif what == WHITEOUT:
            wh.write_whiteout(os.path.dirname(host), os.path.basename(host), fmt)
        elif what[0] == "symlink":
            os.symlink(what[1], host)
        elif what[0] == "hardlink":
            os.link(root + what[1], host)
        elif what[0] == "fifo":
            os.mkfifo(host)
    os.chmod(root, 0o755)


def dir_layer(tmp: str, spec: dict, name: str,
              fmt: wh.Format = wh.Format.OVERLAY) -> DirLayer:
    root = os.path.join(tmp, name)
    if not os.path.exists(root):  # a second call on the same place is a remount
        write_dir(root, spec, fmt)
    return DirLayer(root, name=name, cache=False)


def is_whiteout_on_disk(path: str) -> bool:
    st = os.lstat(path)
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == 0


def fuse_operations(low: str, up: str, work: str, extra: str = ""):
    """A ``FuseOperations`` over a ``lowerdir=low,upperdir=up,workdir=work`` union (``extra``:
    more ``-o`` options, with their leading comma), as the mount daemon builds it; the test
    is skipped where libfuse 3 cannot be loaded (the mounted tests say so too)."""
    import pytest

    try:
        from unionfs.fuse import FuseOperations
    except (ImportError, OSError) as e:
        pytest.skip(f"unionfs.fuse cannot load libfuse 3: {e}")
    from unionfs.mount import build_union, parse_options

    opts = parse_options([f"lowerdir={low},upperdir={up},workdir={work}{extra}"])
    return FuseOperations(build_union(opts), opts)

