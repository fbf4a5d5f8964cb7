"""Hypothesis strategies for layer stacks and operation sequences, and the code that turns a
generated stack into real layers.

A stack is plain data (``model.StackSpec`` of ``model.LayerSpec``), so one generated example
can be materialised three ways and run on several implementations at once:

- ``memory_layer(spec)``: a ``unionfs.MemoryLayer`` (in-process);
- ``write_layer_dir(spec, path, fmt="overlay")``: a directory in overlayfs form (char device 0/0
  whiteouts, ``trusted.overlay.opaque=y``; needs root), usable by ``DirLayer`` and as a kernel
  ``lowerdir=``/``upperdir=``; ``fmt="oci"`` writes ``.wh.NAME`` / ``.wh..wh..opq`` instead;
- ``oci_layer_tar(spec)``: an OCI layer tar (``.wh.`` names, hard links, pax xattrs).

Names come from a tiny alphabet (``NAMES``) so layers overlap and lookups merge, shadow and
white out each other often. Symlink targets all start with ``missing/``, a name that never
exists, so every symlink is dangling (the model relies on it).

Operations are ``Op`` values (a call name and its arguments, as the ``Target`` calls take them)
drawn over paths that exist or nearly exist (a new name in an existing directory, a name under
a file, a name that is too long).
"""

from __future__ import annotations

import io
import os
import stat as _stat
import tarfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from hypothesis import strategies as st

from .model import (
    Dir,
    Fifo,
    File,
    HardLink,
    LayerSpec,
    Node,
    StackSpec,
    Symlink,
    Whiteout,
    without_stray_whiteouts,
)

NAMES = ("a", "b", "c", "d")
LONG_NAME = "n" * 256  # one byte over NAME_MAX
FILE_MODES = (0o644, 0o600, 0o755, 0o444, 0o640)
DIR_MODES = (0o755, 0o700, 0o750, 0o777)
# owners other than the caller need root to materialise (chown)
OWNERS = (0, 1000) if os.geteuid() == 0 else (os.geteuid(),)
XATTR_NAMES = ("user.a", "user.b")
DATA = st.one_of(st.sampled_from([b"", b"x", b"hello\n", b"lower data", b"\0" * 5]),
                 st.binary(max_size=24))
SYMLINK_TARGETS = st.sampled_from(["missing/a", "missing/b/c", "../missing/x", "/missing/y"])

# ---------------------------------------------------------------------------------------------
# layer and stack strategies
# ---------------------------------------------------------------------------------------------


def xattrs(max_size: int = 2) -> st.SearchStrategy[tuple[tuple[str, bytes], ...]]:
    """Sorted ``user.*`` extended attributes."""
    return st.dictionaries(st.sampled_from(XATTR_NAMES), st.binary(max_size=8),
                           max_size=max_size).map(lambda d: tuple(sorted(d.items())))


@st.composite
def layer_specs(draw: st.DrawFn, *, names: Sequence[str] = NAMES, max_depth: int = 3,
                max_entries: int = 10, whiteouts: bool = True, opaque: bool = True,
                hard_links: bool = True, fifos: bool = True) -> LayerSpec:
    """One layer: a small tree of files, dirs, symlinks, FIFOs, hard links, whiteouts and
    opaque dirs, with modes, owners and ``user.*`` xattrs."""
    entries: dict[str, Node] = {}
    kinds = ["file", "file", "file", "dir", "dir", "symlink"]
    if whiteouts:
        kinds += ["whiteout", "whiteout"]
    if hard_links:
        kinds.append("hardlink")
    if fifos:
        kinds.append("fifo")

    def fill(prefix: str, depth: int) -> None:
        chosen = draw(st.lists(st.sampled_from(list(names)), unique=True, max_size=3))
        for name in chosen:
            if len(entries) >= max_entries:
                return
            path = f"{prefix}/{name}"
            kind = draw(st.sampled_from(kinds if depth < max_depth else
                                        [k for k in kinds if k != "dir"]))
            if kind == "file":
                entries[path] = File(draw(DATA), draw(st.sampled_from(FILE_MODES)),
                                     draw(st.sampled_from(OWNERS)),
                                     draw(st.sampled_from(OWNERS)), draw(xattrs()))
            elif kind == "dir":
                entries[path] = Dir(draw(st.sampled_from(DIR_MODES)),
                                    draw(st.sampled_from(OWNERS)),
                                    draw(st.sampled_from(OWNERS)), draw(xattrs(1)),
                                    opaque=opaque and draw(st.integers(0, 4)) == 0)
                fill(path, depth + 1)
            elif kind == "symlink":
                entries[path] = Symlink(draw(SYMLINK_TARGETS))
            elif kind == "fifo":
                entries[path] = Fifo(draw(st.sampled_from(FILE_MODES)))
            elif kind == "whiteout":
                entries[path] = Whiteout()
            else:
                files = sorted(p for p, n in entries.items() if isinstance(n, File))
                entries[path] = (HardLink(draw(st.sampled_from(files))) if files
                                 else File(draw(DATA)))

    fill("", 1)
    return LayerSpec.of(entries)


@st.composite
def stacks(draw: st.DrawFn, *, min_lowers: int = 1, max_lowers: int = 3,
           upper: bool | None = None, **layer_options: Any) -> StackSpec:
    """A stack of 1..3 lower layers, and (when ``upper`` is None, sometimes) an initial upper
    layer holding earlier changes: its own files, whiteouts and opaque directories."""
    lowers = tuple(draw(st.lists(layer_specs(**layer_options), min_size=min_lowers,
                                 max_size=max_lowers)))
    with_upper = draw(st.booleans()) if upper is None else upper
    stack = StackSpec(lowers, draw(layer_specs(**layer_options)) if with_upper else None)
    return without_stray_whiteouts(stack)


# ---------------------------------------------------------------------------------------------
# operations
# ---------------------------------------------------------------------------------------------

READ_CALLS = ("lstat", "listdir", "read_file", "readlink", "getxattr", "listxattr")
WRITE_CALLS = ("write_file", "truncate", "mkdir", "rmdir", "unlink", "rename", "symlink",
               "link", "mkfifo", "chmod", "chown", "utime", "setxattr", "removexattr")


@dataclass(frozen=True)
class Op:
    """One step: ``getattr(target, call)(*args)``. Prints as the call it makes."""

    call: str
    args: tuple[Any, ...]

    def __str__(self) -> str:
        def fmt(a: Any) -> str:
            if isinstance(a, int) and a > 7 and self.call in ("chmod", "mkdir", "mkfifo",
                                                              "write_file"):
                return oct(a)
            return repr(a)
        return f"{self.call}({', '.join(fmt(a) for a in self.args)})"

    def apply(self, target: Any) -> Any:
        return getattr(target, self.call)(*self.args)


def stack_paths(stack: StackSpec) -> list[str]:
    """Every path named in any layer of ``stack`` (whether visible or not), sorted."""
    return sorted({p for layer in stack.layers() for p, _ in layer.entries})


def near_paths(existing: Iterable[str], dirs: Iterable[str], *,
               names: Sequence[str] = NAMES) -> list[str]:
    """Paths that exist or nearly exist: ``existing``, every name of ``names`` in each of
    ``dirs`` (``"/"`` included), a name below each non-directory (ENOTDIR), a path below a
    missing directory (ENOENT) and one over-long name (ENAMETOOLONG)."""
    existing = set(existing)
    dirs = set(dirs) | {"/"}
    out = set(existing)
    for d in dirs:
        prefix = "" if d == "/" else d
        out.update(f"{prefix}/{n}" for n in names)
    out.update(f"{p}/a" for p in existing - dirs)
    out.add("/nodir/a")
    out.add(f"/{LONG_NAME}")
    out.discard("/")
    return sorted(out)


def ops(paths: Sequence[str], *, calls: Sequence[str] = READ_CALLS + WRITE_CALLS
        ) -> st.SearchStrategy[Op]:
    """One operation over ``paths`` (use ``near_paths`` for a good spread of errnos)."""
    path = st.sampled_from(list(paths))
    makers: dict[str, st.SearchStrategy[Op]] = {
        "lstat": st.builds(lambda p: Op("lstat", (p,)), path),
        "listdir": st.builds(lambda p: Op("listdir", (p,)), path | st.just("/")),
        "read_file": st.builds(lambda p: Op("read_file", (p,)), path),
        "readlink": st.builds(lambda p: Op("readlink", (p,)), path),
        "getxattr": st.builds(lambda p, n: Op("getxattr", (p, n)), path,
                              st.sampled_from(XATTR_NAMES)),
        "listxattr": st.builds(lambda p: Op("listxattr", (p,)), path),
        "write_file": st.builds(lambda p, d, h, m: Op("write_file", (p, d, h, m)), path, DATA,
                                st.sampled_from(["w", "x", "a", "r+"]),
                                st.sampled_from(FILE_MODES)),
        "truncate": st.builds(lambda p, n: Op("truncate", (p, n)), path,
                              st.sampled_from([0, 1, 3, 30])),
        "mkdir": st.builds(lambda p, m: Op("mkdir", (p, m)), path, st.sampled_from(DIR_MODES)),
        "rmdir": st.builds(lambda p: Op("rmdir", (p,)), path),
        "unlink": st.builds(lambda p: Op("unlink", (p,)), path),
        "rename": st.builds(lambda a, b: Op("rename", (a, b)), path, path),
        "symlink": st.builds(lambda t, p: Op("symlink", (t, p)), SYMLINK_TARGETS, path),
        "link": st.builds(lambda a, b: Op("link", (a, b)), path, path),
        "mkfifo": st.builds(lambda p, m: Op("mkfifo", (p, m)), path,
                            st.sampled_from(FILE_MODES)),
        "chmod": st.builds(lambda p, m: Op("chmod", (p, m)), path,
                           st.sampled_from(FILE_MODES + DIR_MODES)),
        "chown": st.builds(lambda p, u, g: Op("chown", (p, u, g)), path,
                           st.sampled_from(OWNERS), st.sampled_from(OWNERS)),
        "utime": st.builds(lambda p, t: Op("utime", (p, t, t + 1_000_000_000)), path,
                           st.integers(0, 2**31 - 2).map(lambda s: s * 1_000_000_000)),
        "setxattr": st.builds(lambda p, n, v: Op("setxattr", (p, n, v)), path,
                              st.sampled_from(XATTR_NAMES), st.binary(max_size=8)),
        "removexattr": st.builds(lambda p, n: Op("removexattr", (p, n)), path,
                                 st.sampled_from(XATTR_NAMES)),
    }
    return st.one_of([makers[c] for c in calls])


def op_sequences(stack: StackSpec, *, min_size: int = 1, max_size: int = 12,
                 calls: Sequence[str] = READ_CALLS + WRITE_CALLS
                 ) -> st.SearchStrategy[list[Op]]:
    """A list of operations over the paths of ``stack`` and names near them (paths are fixed
    before the run, so later steps also hit names that earlier steps created or removed)."""
    named = stack_paths(stack)
    dirs = {p for layer in stack.layers() for p, n in layer.entries if isinstance(n, Dir)}
    return st.lists(ops(near_paths(named, dirs), calls=calls), min_size=min_size,
                    max_size=max_size)


# ---------------------------------------------------------------------------------------------
# materialising a layer
# ---------------------------------------------------------------------------------------------


def fill_layer(spec: LayerSpec, layer: Any) -> Any:
    """Write ``spec`` into an empty ``unionfs.WritableLayer`` (through its protocol only) and
    return it."""
    from ..entry import Kind

    table = spec.as_dict()
    for path, node in spec.entries:
        if isinstance(node, Dir):
            layer.mkdir(path, node.mode)
        elif isinstance(node, File):
            with layer.open_write(path, create=True, truncate=True, mode=node.mode) as f:
                f.write(node.data)
        elif isinstance(node, Symlink):
            layer.symlink(path, node.target)
        elif isinstance(node, Fifo):
            layer.mknod(path, Kind.FIFO, node.mode)
        elif isinstance(node, Whiteout):
            layer.whiteout(path)
    for path, node in spec.entries:
        if isinstance(node, HardLink):
            layer.link(node.to, path)
    for path, node in reversed(spec.entries):
        if isinstance(node, HardLink | Whiteout):
            continue
        if not isinstance(node, Symlink):
            layer.chmod(path, node.mode)
        layer.chown(path, node.uid, node.gid)
        for name, value in getattr(node, "xattrs", ()):
            layer.setxattr(path, name, value)
        if isinstance(node, Dir) and node.opaque:
            layer.set_opaque(path, True)
    del table
    return layer


def memory_layer(spec: LayerSpec, name: str = "memory") -> Any:
    """A ``unionfs.MemoryLayer`` holding ``spec``."""
    from ..layer import MemoryLayer

    try:
        layer = MemoryLayer(name=name)
    except TypeError:
        layer = MemoryLayer()
    return fill_layer(spec, layer)


def write_layer_dir(spec: LayerSpec, root: str | os.PathLike[str], fmt: str = "overlay") -> str:
    """Write ``spec`` below the directory ``root`` (created if absent, must be empty).

    ``fmt="overlay"``: whiteouts are char devices 0/0 and opaque dirs carry
    ``trusted.overlay.opaque=y`` (needs root; the form kernel overlayfs reads).
    ``fmt="oci"``: whiteouts are empty ``.wh.NAME`` files, opaque dirs hold ``.wh..wh..opq``.
    Root is ``0o755`` owned by 0:0 in both. Raises ``PermissionError`` where privilege lacks.
    """
    if fmt not in ("overlay", "oci"):
        raise ValueError(f"unknown whiteout format {fmt!r}")
    root = os.fspath(root)
    os.makedirs(root, exist_ok=True)
    if os.listdir(root):
        raise FileExistsError(root)

    def host(path: str) -> str:
        return root + path

    for path, node in spec.entries:
        if isinstance(node, Dir):
            os.mkdir(host(path), 0o700)
        elif isinstance(node, File):
            fd = os.open(host(path), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                os.write(fd, node.data)
            finally:
                os.close(fd)
        elif isinstance(node, Symlink):
            os.symlink(node.target, host(path))
        elif isinstance(node, Fifo):
            os.mkfifo(host(path), 0o600)
        elif isinstance(node, Whiteout):
            if fmt == "overlay":
                os.mknod(host(path), _stat.S_IFCHR | 0o600, os.makedev(0, 0))
            else:
                head, _, name = path.rpartition("/")
                open(f"{root}{head}/.wh.{name}", "xb").close()
    for path, node in spec.entries:
        if isinstance(node, HardLink):
            os.link(host(node.to), host(path))
    # metadata last, children before parents: a read-only dir must not stop its filling
    for path, node in reversed(spec.entries):
        if isinstance(node, HardLink | Whiteout):
            continue
        os.lchown(host(path), node.uid, node.gid)
        if not isinstance(node, Symlink):
            os.chmod(host(path), node.mode)
        for name, value in getattr(node, "xattrs", ()):
            os.setxattr(host(path), name, value)
        if isinstance(node, Dir) and node.opaque:
            if fmt == "overlay":
                os.setxattr(host(path), "trusted.overlay.opaque", b"y")
            else:
                open(host(path) + "/.wh..wh..opq", "xb").close()
    os.chmod(root, 0o755)
    os.chown(root, 0, 0) if os.geteuid() == 0 else None
    return root


def oci_layer_tar(spec: LayerSpec) -> bytes:
    """``spec`` as an uncompressed OCI layer tar: ``.wh.NAME`` whiteouts, ``.wh..wh..opq``
    opaque markers, hard links as link entries, ``user.*`` xattrs as pax
    ``SCHILY.xattr.*`` records. Deterministic (fixed mtime, sorted)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT,
                      encoding="utf-8", errors="surrogateescape") as tar:
        def add(name: str, node: Node, **kw: Any) -> None:
            info = tarfile.TarInfo(name.lstrip("/"))
            info.mtime = 0
            for key, value in kw.items():
                setattr(info, key, value)
            data = None
            if isinstance(node, File) and info.type == tarfile.REGTYPE:
                info.size = len(node.data)
                data = io.BytesIO(node.data)
            for attr in ("mode", "uid", "gid"):
                if hasattr(node, attr) and attr not in kw:
                    setattr(info, attr, getattr(node, attr))
            if getattr(node, "xattrs", ()):
                info.pax_headers = {f"SCHILY.xattr.{k}": v.decode("utf-8", "surrogateescape")
                                    for k, v in node.xattrs}
            tar.addfile(info, data)

        for path, node in spec.entries:
            head, _, name = path.rpartition("/")
            if isinstance(node, Dir):
                add(path + "/", node, type=tarfile.DIRTYPE)
                if node.opaque:
                    add(f"{path}/.wh..wh..opq", File(), mode=0o644)
            elif isinstance(node, File):
                add(path, node, type=tarfile.REGTYPE)
            elif isinstance(node, Symlink):
                add(path, node, type=tarfile.SYMTYPE, linkname=node.target, mode=0o777)
            elif isinstance(node, Fifo):
                add(path, node, type=tarfile.FIFOTYPE)
            elif isinstance(node, Whiteout):
                add(f"{head}/.wh.{name}", File(), mode=0o644)
            elif isinstance(node, HardLink):
                add(path, spec.as_dict()[node.to], type=tarfile.LNKTYPE,
                    linkname=node.to.lstrip("/"))
    return buf.getvalue()
