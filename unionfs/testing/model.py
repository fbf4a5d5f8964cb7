"""A plain reference model of an overlay union: the oracle of the conformance suite.

The overlayfs documentation describes the union as if ``cp -a lower upper`` were done on
demand. This module is that sentence in code: the whole visible tree is held in memory, built
once from a stack of layer *specs* (plain data, below), and every operation changes the tree
the way Linux overlayfs (kernel 6.x) does, or raises the ``OSError`` with the errno the kernel
returns. It keeps only the state that changes an answer a user can see:

- for each directory, whether a lower layer takes part in it (a lower or merged directory
  cannot be renamed without ``redirect_dir``: ``EXDEV``);
- for each non-directory, whether it is still the lower object (not copied up yet): with
  ``index=off`` copy-up makes a new object for that one name, so hard links in a lower layer
  are broken (the copy has ``st_nlink == 1``, the other names still show the lower count);
  with ``index=on`` all names keep sharing one object.

Everything else (whiteouts, opaque directories, redirects, the index, metacopy) is how an
implementation stores the tree; the model does not need it, which is what makes it an oracle.

Assumptions, stated because the oracle is only right inside them:

- the caller is root (no permission checks: ``CAP_DAC_OVERRIDE``);
- every symlink is dangling: following one always ends in ``ENOENT`` (the strategies only
  generate targets under a name that never exists, ``missing/``);
- FIFOs are never opened (opening one blocks): ``supports(call, *args)`` says which steps
  to skip.

The model has the same calls as a conformance ``Target`` (os-shaped, see ``conformance.py``),
so one snapshot function reads the model, the engine and a mounted filesystem alike.
"""

from __future__ import annotations

import errno
import os
import stat as _stat
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

NAME_MAX = 255

# ---------------------------------------------------------------------------------------------
# Layer specs: a layer as plain data (what the strategies generate and materialise)
# ---------------------------------------------------------------------------------------------

Xattrs = tuple[tuple[str, bytes], ...]


@dataclass(frozen=True)
class File:
    """A regular file. ``xattrs`` are user-visible extended attributes (``user.*``)."""

    data: bytes = b""
    mode: int = 0o644
    uid: int = 0
    gid: int = 0
    xattrs: Xattrs = ()


@dataclass(frozen=True)
class Dir:
    """A directory; ``opaque`` hides every layer below it (``trusted.overlay.opaque=y``)."""

    mode: int = 0o755
    uid: int = 0
    gid: int = 0
    xattrs: Xattrs = ()
    opaque: bool = False


@dataclass(frozen=True)
class Symlink:
    target: str
    uid: int = 0
    gid: int = 0


@dataclass(frozen=True)
class Fifo:
    mode: int = 0o644
    uid: int = 0
    gid: int = 0


@dataclass(frozen=True)
class Whiteout:
    """Deletes the name in every layer below."""


@dataclass(frozen=True)
class HardLink:
    """Another name for the regular file at ``to`` (an absolute path in the same layer)."""

    to: str


Node = File | Dir | Symlink | Fifo | Whiteout | HardLink


@dataclass(frozen=True)
class LayerSpec:
    """One layer: ``entries`` maps absolute paths (``"/a/b"``, never ``"/"``) to nodes. The
    root is always a directory ``0o755`` owned by the caller (0:0 as root). Every parent of an
    entry must be a ``Dir`` entry of the same layer, and a ``HardLink`` must point at a
    ``File`` of it: ``ValueError`` otherwise."""

    entries: tuple[tuple[str, Node], ...] = ()

    def __post_init__(self) -> None:
        table = dict(self.entries)
        if len(table) != len(self.entries):
            raise ValueError("duplicate path in layer spec")
        for path, node in self.entries:
            if not path.startswith("/") or path == "/" or path.endswith("/") or "//" in path:
                raise ValueError(f"bad layer path {path!r}")
            parent = path.rsplit("/", 1)[0]
            if parent and not isinstance(table.get(parent), Dir):
                raise ValueError(f"{path!r}: parent {parent!r} is not a Dir in this layer")
            if isinstance(node, HardLink) and not isinstance(table.get(node.to), File):
                raise ValueError(f"{path!r}: hard link to {node.to!r}, which is not a File")

    @classmethod
    def of(cls, entries: Mapping[str, Node]) -> LayerSpec:
        """A spec from a mapping, stored sorted (parents before children)."""
        return cls(tuple(sorted(entries.items())))

    def as_dict(self) -> dict[str, Node]:
        return dict(self.entries)

    def resolve(self, node: Node) -> Node:
        """The ``File`` behind a ``HardLink``; any other node unchanged."""
        return self.as_dict()[node.to] if isinstance(node, HardLink) else node


@dataclass(frozen=True)
class StackSpec:
    """A union: ``lowers`` top-most first (as ``lowerdir=``), and an optional initial upper."""

    lowers: tuple[LayerSpec, ...]
    upper: LayerSpec | None = None

    def layers(self) -> tuple[LayerSpec, ...]:
        """Every layer, top-most first (the upper first when there is one)."""
        return ((self.upper,) if self.upper is not None else ()) + self.lowers


def without_stray_whiteouts(stack: StackSpec) -> StackSpec:
    """``stack`` minus the whiteouts that hide nothing: those in a directory that only one
    layer makes up (not merged with any layer below; e.g. below an opaque directory).

    Linux overlayfs reads such a directory straight from its layer, so ``readdir`` lists the
    whiteout's name while ``lstat`` says ENOENT: a kernel quirk no model should copy. Layers
    written by overlayfs never hold such whiteouts; the strategies remove them with this.
    """
    view = UnionModel(stack)
    layers = stack.layers()
    has_upper = stack.upper is not None
    cleaned = []
    for i, layer in enumerate(layers):
        keep = []
        for path, node in layer.entries:
            if isinstance(node, Whiteout):
                parent = path.rsplit("/", 1)[0] or "/"
                merged = view.dir_layers.get(parent, ())
                if i in merged and len(merged) == 1:
                    continue
            keep.append((path, node))
        cleaned.append(LayerSpec(tuple(keep)))
    if has_upper:
        return StackSpec(tuple(cleaned[1:]), cleaned[0])
    return StackSpec(tuple(cleaned), None)


# ---------------------------------------------------------------------------------------------
# What a Target answers: a small stat
# ---------------------------------------------------------------------------------------------

KINDS = ("file", "dir", "symlink", "fifo", "char", "block", "socket")


@dataclass(frozen=True)
class Stat:
    """The part of ``lstat`` every union must agree on. ``size`` is ``None`` for directories
    (its value is up to the filesystem); ``nlink`` is ``None`` for directories (overlayfs
    reports 1 for merged ones)."""

    kind: str
    mode: int
    uid: int
    gid: int
    size: int | None
    nlink: int | None

    @classmethod
    def from_os(cls, st: os.stat_result) -> Stat:
        """From a host ``os.stat_result`` (or anything with the same ``st_*`` fields)."""
        fmt = _stat.S_IFMT(st.st_mode)
        kind = {_stat.S_IFREG: "file", _stat.S_IFDIR: "dir", _stat.S_IFLNK: "symlink",
                _stat.S_IFIFO: "fifo", _stat.S_IFCHR: "char", _stat.S_IFBLK: "block",
                _stat.S_IFSOCK: "socket"}[fmt]
        is_dir = kind == "dir"
        return cls(kind, _stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid,
                   None if is_dir else st.st_size, None if is_dir else st.st_nlink)


def oserror(code: int, path: str, path2: str | None = None) -> OSError:
    """A plain ``OSError`` with ``code`` (what the model raises)."""
    if path2 is None:
        return OSError(code, os.strerror(code), path)
    return OSError(code, os.strerror(code), path, None, path2)


class UnsupportedStep(Exception):
    """The step is outside what the model answers (e.g. opening a FIFO would block)."""


# ---------------------------------------------------------------------------------------------
# The model
# ---------------------------------------------------------------------------------------------


@dataclass(eq=False)
class _Obj:
    """One visible object. Identity matters: names sharing an ``_Obj`` are hard links."""

    kind: str
    mode: int
    uid: int
    gid: int
    data: bytes = b""
    target: str = ""
    xattrs: dict[str, bytes] = field(default_factory=dict)
    nlink: int = 1
    children: dict[str, _Obj] = field(default_factory=dict)
    # dir: a lower layer takes part (lower-only or merged); non-dir: not copied up yet
    lower: bool = False

    def clone(self) -> _Obj:
        return _Obj(self.kind, self.mode, self.uid, self.gid, self.data, self.target,
                    dict(self.xattrs), self.nlink, dict(self.children), self.lower)


class UnionModel:
    """The oracle: the visible tree of ``stack`` under the overlayfs options given.

    Calls mirror ``os`` (and the conformance ``Target``): they return what the call returns
    or raise ``OSError`` with the kernel's errno. ``uid``/``gid`` own what the caller creates
    (default: this process's effective ids).
    """

    def __init__(self, stack: StackSpec, *, redirect_dir: bool = False, index: bool = False,
                 metacopy: bool = False, uid: int | None = None,
                 gid: int | None = None) -> None:
        self.redirect_dir = redirect_dir or metacopy  # the kernel turns it on for metacopy
        self.index = index
        self.metacopy = metacopy  # changes how data is stored, never what is visible
        self.uid = os.geteuid() if uid is None else uid
        self.gid = os.getegid() if gid is None else gid
        #: visible directory -> the layers (indexes into ``stack.layers()``) merged into it
        self.dir_layers: dict[str, tuple[int, ...]] = {}
        self.root = self._build(stack)

    # -- building the initial view: overlayfs lookup rules over the specs ---------------------

    def _build(self, stack: StackSpec) -> _Obj:
        layers = stack.layers()
        has_upper = stack.upper is not None
        tables = [layer.as_dict() for layer in layers]
        # hard-link groups: one object per (layer, file) when the kernel shares the inode
        shared: dict[tuple[int, str], _Obj] = {}
        counts: list[dict[str, int]] = []
        for table in tables:
            count: dict[str, int] = {}
            for path, node in table.items():
                key = node.to if isinstance(node, HardLink) else path
                if isinstance(node, File | HardLink):
                    count[key] = count.get(key, 0) + 1
            counts.append(count)

        def non_dir(i: int, path: str) -> _Obj:
            node = tables[i][path]
            is_upper = has_upper and i == 0
            if isinstance(node, File | HardLink):
                key = node.to if isinstance(node, HardLink) else path
                spec = tables[i][key]
                assert isinstance(spec, File)
                # index=on (or an upper layer) shares one inode per link group; index=off
                # gives each lower name its own overlay inode showing the lower nlink
                if is_upper or self.index:
                    obj = shared.get((i, key))
                    if obj is None:
                        obj = shared[(i, key)] = _Obj(
                            "file", spec.mode, spec.uid, spec.gid, data=spec.data,
                            xattrs=dict(spec.xattrs), nlink=counts[i][key], lower=not is_upper)
                    return obj
                return _Obj("file", spec.mode, spec.uid, spec.gid, data=spec.data,
                            xattrs=dict(spec.xattrs), nlink=counts[i][key], lower=True)
            if isinstance(node, Symlink):
                return _Obj("symlink", 0o777, node.uid, node.gid, target=node.target,
                            lower=not is_upper)
            assert isinstance(node, Fifo)
            return _Obj("fifo", node.mode, node.uid, node.gid, lower=not is_upper)

        def merged_dir(path: str, contributors: list[int]) -> _Obj:
            self.dir_layers[path] = tuple(contributors)
            top = tables[contributors[0]].get(path) if path != "/" else None
            meta = top if isinstance(top, Dir) else Dir(uid=self.uid, gid=self.gid)
            lower = any(not (has_upper and i == 0) for i in contributors)
            obj = _Obj("dir", meta.mode, meta.uid, meta.gid, xattrs=dict(meta.xattrs),
                       lower=lower)
            prefix = "" if path == "/" else path
            names: set[str] = set()
            for i in contributors:
                for p in tables[i]:
                    head, _, name = p.rpartition("/")
                    if head == prefix:
                        names.add(name)
            for name in sorted(names):
                child = f"{prefix}/{name}"
                found_dirs: list[int] = []
                found: _Obj | None = None
                for i in contributors:
                    node = tables[i].get(child)
                    if node is None:
                        continue
                    if isinstance(node, Whiteout):
                        break
                    if isinstance(node, Dir):
                        found_dirs.append(i)
                        if node.opaque:
                            break
                        continue
                    if not found_dirs:  # a non-directory on top hides everything below
                        found = non_dir(i, child)
                    break  # a non-directory below a directory ends the merge
                if found is not None:
                    obj.children[name] = found
                elif found_dirs:
                    obj.children[name] = merged_dir(child, found_dirs)
            return obj

        return merged_dir("/", list(range(len(layers))))

    # -- path resolution (no symlink ever resolves: see the module docstring) -----------------

    @staticmethod
    def _parts(path: str) -> list[str]:
        if not path.startswith("/"):
            raise ValueError(f"union paths are absolute: {path!r}")
        return [p for p in path.split("/") if p]

    def _parent(self, path: str) -> tuple[_Obj, str]:
        """The directory holding ``path``'s last component, and that name (not looked up)."""
        parts = self._parts(path)
        if not parts:
            raise ValueError("the root has no parent")
        node = self.root
        walked = ""
        for name in parts[:-1]:
            walked += "/" + name
            if len(name.encode()) > NAME_MAX:
                raise oserror(errno.ENAMETOOLONG, path)
            child = node.children.get(name)
            if child is None or child.kind == "symlink":  # dangling: ENOENT
                raise oserror(errno.ENOENT, path)
            if child.kind != "dir":
                raise oserror(errno.ENOTDIR, path)
            node = child
        return node, parts[-1]

    def _child(self, parent: _Obj, name: str, path: str) -> _Obj | None:
        if len(name.encode()) > NAME_MAX:
            raise oserror(errno.ENAMETOOLONG, path)
        return parent.children.get(name)

    def _lookup(self, path: str, follow: bool) -> _Obj:
        if not self._parts(path):
            return self.root
        parent, name = self._parent(path)
        obj = self._child(parent, name, path)
        if obj is None or (follow and obj.kind == "symlink"):
            raise oserror(errno.ENOENT, path)
        return obj

    def kind_of(self, path: str) -> str | None:
        """The visible kind at ``path`` (no symlink followed), or ``None`` if absent."""
        try:
            return self._lookup(path, follow=False).kind
        except (OSError, ValueError):
            return None

    def paths(self) -> list[str]:
        """Every visible path but the root, parents before children, sorted."""
        out: list[str] = []

        def walk(obj: _Obj, prefix: str) -> None:
            for name in sorted(obj.children):
                child = obj.children[name]
                out.append(f"{prefix}/{name}")
                if child.kind == "dir":
                    walk(child, f"{prefix}/{name}")

        walk(self.root, "")
        return out

    def supports(self, call: str, *args: object) -> bool:
        """False when the step would open a FIFO (the real call would block)."""
        if call in ("read_file", "write_file"):
            try:
                return self._lookup(str(args[0]), follow=True).kind != "fifo"
            except OSError:
                return True
        return True

    # -- copy-up --------------------------------------------------------------------------

    def _copy_up(self, parent: _Obj, name: str) -> _Obj:
        """Make the object named ``name`` in ``parent`` an upper one; returns it. With
        ``index=off`` a lower non-directory becomes a new object (its hard links break)."""
        obj = parent.children[name]
        if obj.kind == "dir" or not obj.lower:
            return obj
        if self.index:
            obj.lower = False  # the index keeps every name on one upper inode
            return obj
        copy = obj.clone()
        copy.lower = False
        copy.nlink = 1
        parent.children[name] = copy
        return copy

    def _drop_name(self, parent: _Obj, name: str) -> None:
        """Remove one name of a non-directory, keeping the other names' ``nlink`` right."""
        obj = parent.children.pop(name)
        if not obj.lower:
            obj.nlink -= 1
        elif self.index and obj.nlink > 1:
            # the kernel copies an indexed lower hard link up before whiting it out, so the
            # persistent overlay nlink can drop
            obj.lower = False
            obj.nlink -= 1

    # -- reading --------------------------------------------------------------------------

    def lstat(self, path: str) -> Stat:
        obj = self._lookup(path, follow=False)
        return self._stat(obj)

    def stat(self, path: str) -> Stat:
        return self._stat(self._lookup(path, follow=True))

    @staticmethod
    def _stat(obj: _Obj) -> Stat:
        if obj.kind == "dir":
            return Stat("dir", obj.mode, obj.uid, obj.gid, None, None)
        size = len(obj.data) if obj.kind == "file" else (
            len(obj.target.encode()) if obj.kind == "symlink" else 0)
        return Stat(obj.kind, obj.mode, obj.uid, obj.gid, size, obj.nlink)

    def listdir(self, path: str) -> list[str]:
        obj = self._lookup(path, follow=True)
        if obj.kind != "dir":
            raise oserror(errno.ENOTDIR, path)
        return sorted(obj.children)

    def read_file(self, path: str) -> bytes:
        obj = self._lookup(path, follow=True)
        if obj.kind == "dir":
            raise oserror(errno.EISDIR, path)
        if obj.kind == "fifo":
            raise UnsupportedStep("opening a FIFO blocks")
        return obj.data

    def readlink(self, path: str) -> str:
        obj = self._lookup(path, follow=False)
        if obj.kind != "symlink":
            raise oserror(errno.EINVAL, path)
        return obj.target

    def getxattr(self, path: str, name: str) -> bytes:
        obj = self._lookup(path, follow=True)
        value = obj.xattrs.get(name)
        if value is None:  # also for user.* on a FIFO: reading it is ENODATA, not EPERM
            raise oserror(errno.ENODATA, path)
        return value

    def listxattr(self, path: str) -> list[str]:
        return sorted(self._lookup(path, follow=True).xattrs)

    # -- writing --------------------------------------------------------------------------

    def write_file(self, path: str, data: bytes, how: str = "w", mode: int = 0o644) -> None:
        """``how``: ``"w"`` create/truncate, ``"x"`` exclusive create, ``"a"`` append
        (creating), ``"r+"`` overwrite from offset 0 (no create)."""
        if how not in ("w", "x", "a", "r+"):
            raise ValueError(f"bad open mode {how!r}")
        parent, name = self._parent(path)
        obj = self._child(parent, name, path)
        if obj is None:
            if how == "r+":
                raise oserror(errno.ENOENT, path)
            parent.children[name] = _Obj("file", mode & 0o7777, self.uid, self.gid,
                                         data=bytes(data))
            return
        if how == "x":
            raise oserror(errno.EEXIST, path)
        if obj.kind == "symlink":  # O_CREAT through a dangling link: its target's parent is absent
            raise oserror(errno.ENOENT, path)
        if obj.kind == "dir":
            raise oserror(errno.EISDIR, path)
        if obj.kind == "fifo":
            raise UnsupportedStep("opening a FIFO blocks")
        obj = self._copy_up(parent, name)
        if how == "w":
            obj.data = bytes(data)
        elif how == "a":
            obj.data = obj.data + bytes(data)
        else:
            obj.data = bytes(data) + obj.data[len(data):]

    def truncate(self, path: str, size: int) -> None:
        obj = self._lookup(path, follow=True)
        if obj.kind == "dir":
            raise oserror(errno.EISDIR, path)
        if obj.kind != "file":
            raise oserror(errno.EINVAL, path)
        parent, name = self._parent(path)
        obj = self._copy_up(parent, name)
        obj.data = obj.data[:size] + b"\0" * max(0, size - len(obj.data))

    def _create(self, path: str, obj: _Obj) -> None:
        parent, name = self._parent(path)
        if self._child(parent, name, path) is not None:
            raise oserror(errno.EEXIST, path)
        parent.children[name] = obj

    def mkdir(self, path: str, mode: int = 0o755) -> None:
        if not self._parts(path):
            raise oserror(errno.EEXIST, path)
        self._create(path, _Obj("dir", mode & 0o7777, self.uid, self.gid))

    def symlink(self, target: str, path: str) -> None:
        self._create(path, _Obj("symlink", 0o777, self.uid, self.gid, target=target))

    def mkfifo(self, path: str, mode: int = 0o644) -> None:
        self._create(path, _Obj("fifo", mode & 0o7777, self.uid, self.gid))

    def rmdir(self, path: str) -> None:
        if not self._parts(path):
            raise oserror(errno.EBUSY, path)
        parent, name = self._parent(path)
        obj = self._child(parent, name, path)
        if obj is None:
            raise oserror(errno.ENOENT, path)
        if obj.kind != "dir":
            raise oserror(errno.ENOTDIR, path)
        if obj.children:
            raise oserror(errno.ENOTEMPTY, path)
        del parent.children[name]

    def unlink(self, path: str) -> None:
        if not self._parts(path):
            raise oserror(errno.EISDIR, path)
        parent, name = self._parent(path)
        obj = self._child(parent, name, path)
        if obj is None:
            raise oserror(errno.ENOENT, path)
        if obj.kind == "dir":
            raise oserror(errno.EISDIR, path)
        self._drop_name(parent, name)

    def rename(self, src: str, dst: str) -> None:
        """``rename(2)``, in the order the VFS and overlayfs check things."""
        if not self._parts(src) or not self._parts(dst):
            raise oserror(errno.EBUSY, src, dst)
        sparent, sname = self._parent(src)
        dparent, dname = self._parent(dst)
        sobj = self._child(sparent, sname, src)
        if sobj is None:
            raise oserror(errno.ENOENT, src, dst)
        dobj = self._child(dparent, dname, dst)
        sparts, dparts = self._parts(src), self._parts(dst)
        if dparts[:len(sparts)] == sparts and len(dparts) > len(sparts):
            raise oserror(errno.EINVAL, src, dst)  # source is an ancestor of the target
        if sparts[:len(dparts)] == dparts and len(sparts) > len(dparts):
            raise oserror(errno.ENOTEMPTY, src, dst)  # target is an ancestor of the source
        if dobj is sobj:
            return  # same inode (one name, or hard links sharing an overlay inode): no-op
        if dobj is not None:
            if sobj.kind == "dir" and dobj.kind != "dir":
                raise oserror(errno.ENOTDIR, src, dst)
            if sobj.kind != "dir" and dobj.kind == "dir":
                raise oserror(errno.EISDIR, src, dst)
        if sobj.kind == "dir" and sobj.lower and not self.redirect_dir:
            raise oserror(errno.EXDEV, src, dst)  # overlayfs does not copy up a dir tree
        if dobj is not None and dobj.kind == "dir" and dobj.children:
            raise oserror(errno.ENOTEMPTY, src, dst)
        sobj = self._copy_up(sparent, sname)
        if dobj is not None and dobj.kind != "dir":
            self._drop_name(dparent, dname)
        del sparent.children[sname]
        dparent.children[dname] = sobj

    def link(self, src: str, dst: str) -> None:
        sparent, sname = self._parent(src)
        sobj = self._child(sparent, sname, src)
        if sobj is None:
            raise oserror(errno.ENOENT, src, dst)
        dparent, dname = self._parent(dst)
        if self._child(dparent, dname, dst) is not None:
            raise oserror(errno.EEXIST, src, dst)
        if sobj.kind == "dir":
            raise oserror(errno.EPERM, src, dst)
        sobj = self._copy_up(sparent, sname)
        sobj.nlink += 1
        dparent.children[dname] = sobj

    def _meta_target(self, path: str) -> tuple[_Obj, str | None]:
        """(object, name in parent or None for root) for a metadata change (follows links)."""
        self._lookup(path, follow=True)
        if not self._parts(path):
            return self.root, None
        parent, name = self._parent(path)
        return self._copy_up(parent, name), name

    def chmod(self, path: str, mode: int) -> None:
        obj, _ = self._meta_target(path)
        obj.mode = mode & 0o7777

    def chown(self, path: str, uid: int, gid: int) -> None:
        obj, _ = self._meta_target(path)
        if uid != -1:
            obj.uid = uid
        if gid != -1:
            obj.gid = gid

    def utime(self, path: str, atime_ns: int, mtime_ns: int) -> None:
        """Times are not part of the compared tree; the call still copies up and can fail."""
        self._meta_target(path)

    def _xattr_target(self, path: str, name: str) -> _Obj:
        obj = self._lookup(path, follow=True)
        if name.startswith("user.") and obj.kind not in ("file", "dir"):
            raise oserror(errno.EPERM, path)
        return obj

    def setxattr(self, path: str, name: str, value: bytes) -> None:
        self._xattr_target(path, name)
        obj, _ = self._meta_target(path)
        obj.xattrs[name] = bytes(value)

    def removexattr(self, path: str, name: str) -> None:
        obj = self._xattr_target(path, name)
        if name not in obj.xattrs:
            raise oserror(errno.ENODATA, path)
        obj, _ = self._meta_target(path)
        del obj.xattrs[name]

    # -- whole tree ------------------------------------------------------------------------

    def walk(self) -> Iterator[tuple[str, Stat]]:
        """Every visible ``(path, Stat)``, the root first."""
        yield "/", self._stat(self.root)
        for path in self.paths():
            yield path, self.lstat(path)
