"""A reusable conformance suite: drive any union filesystem next to the reference model.

Any implementation is reached through a ``Target``: a few os-shaped calls on union paths
(``"/a/b"``) that return values or raise ``OSError``. Three come with the kit:

- ``EngineTarget``: ``unionfs.UnionFS`` in-process (over ``MemoryLayer`` or ``DirLayer``);
- ``MountTarget(root)``: real system calls below a mounted directory (kernel overlayfs, a
  FUSE mount of this engine, fuse-overlayfs, ...);
- ``UnionModel`` itself (``model.py``) has the same calls: it is the oracle.

``UnionConformance`` is a hypothesis ``RuleBasedStateMachine``: it draws a layer stack, builds
the model and your target from it, then applies random steps to both; every step must give the
same result or the same errno, and after every step the whole visible trees must be equal
(names, types, modes, owners, sizes, link counts, contents, link targets, xattrs other than the
overlay's private ``trusted.overlay.*``/``user.overlay.*`` and the host's ``security.*``).
Each step is ``note()``-d, so a failure prints as a short script.

Testing an implementation takes a three-line subclass::

    from unionfs.testing.conformance import EngineTarget, UnionConformance

    class MemoryEngine(UnionConformance):
        def make_target(self, stack, **options):
            return EngineTarget.memory(stack, **options)

    TestMemoryEngine = MemoryEngine.TestCase      # collected by pytest / unittest

Set ``options = {"redirect_dir": True}`` (or ``index``, ``metacopy``) on the subclass to test
another overlayfs option set; ``stack_strategy`` to change the generated stacks. A target with a
``close()`` method is closed after each example (unmount there).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import stat
import subprocess
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol, runtime_checkable

from hypothesis import note
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from .model import LayerSpec, StackSpec, Stat, UnionModel, UnsupportedStep
from .strategies import (
    NAMES,
    READ_CALLS,
    WRITE_CALLS,
    Op,
    memory_layer,
    near_paths,
    ops,
    stacks,
    write_layer_dir,
)

#: xattr name prefixes that are not part of the visible tree being compared
HIDDEN_XATTR_PREFIXES = ("trusted.overlay.", "user.overlay.", "security.")


@runtime_checkable
class Target(Protocol):
    """The calls the suite makes. Paths are absolute union paths. Each returns what ``os``
    returns (``lstat`` a ``model.Stat``, ``listdir``/``listxattr`` sorted lists) or raises
    ``OSError`` with the errno of the failure. Calls follow symlinks where ``os`` does by
    default (``read_file``, ``truncate``, ``chmod``, ``chown``, ``utime``, ``*xattr``), and
    ``link`` does not (``link(2)``). Created objects get exactly ``mode`` (no umask)."""

    def lstat(self, path: str) -> Stat: ...
    def listdir(self, path: str) -> list[str]: ...
    def read_file(self, path: str) -> bytes: ...
    def readlink(self, path: str) -> str: ...
    def getxattr(self, path: str, name: str) -> bytes: ...
    def listxattr(self, path: str) -> list[str]: ...
    def write_file(self, path: str, data: bytes, how: str = "w", mode: int = 0o644) -> None:
        ...
    def truncate(self, path: str, size: int) -> None: ...
    def mkdir(self, path: str, mode: int = 0o755) -> None: ...
    def rmdir(self, path: str) -> None: ...
    def unlink(self, path: str) -> None: ...
    def rename(self, src: str, dst: str) -> None: ...
    def symlink(self, target: str, path: str) -> None: ...
    def link(self, src: str, dst: str) -> None: ...
    def mkfifo(self, path: str, mode: int = 0o644) -> None: ...
    def chmod(self, path: str, mode: int) -> None: ...
    def chown(self, path: str, uid: int, gid: int) -> None: ...
    def utime(self, path: str, atime_ns: int, mtime_ns: int) -> None: ...
    def setxattr(self, path: str, name: str, value: bytes) -> None: ...
    def removexattr(self, path: str, name: str) -> None: ...


def _visible_xattrs(names: Sequence[str]) -> list[str]:
    return sorted(n for n in names if not n.startswith(HIDDEN_XATTR_PREFIXES))


_OPEN_FLAGS = {
    "w": os.O_WRONLY | os.O_CREAT | os.O_TRUNC,
    "x": os.O_WRONLY | os.O_CREAT | os.O_EXCL,
    "a": os.O_WRONLY | os.O_CREAT | os.O_APPEND,
    "r+": os.O_WRONLY,
}


@contextlib.contextmanager
def _no_umask() -> Iterator[None]:
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


class MountTarget:
    """Real system calls below the directory ``root`` (a mount point, or any directory).

    Works for kernel overlayfs, a FUSE mount and a plain directory alike. ``close`` is a no-op;
    unmounting belongs to whoever mounted.
    """

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = os.fspath(root).rstrip("/") or "/"

    def host(self, path: str) -> str:
        """The host path of the union path ``path``."""
        if not path.startswith("/"):
            raise ValueError(f"union paths are absolute: {path!r}")
        return self.root if path == "/" else self.root + path

    def __repr__(self) -> str:
        return f"MountTarget({self.root!r})"

    def lstat(self, path: str) -> Stat:
        return Stat.from_os(os.lstat(self.host(path)))

    def mtime_ns(self, path: str) -> int:
        return os.stat(self.host(path)).st_mtime_ns

    def listdir(self, path: str) -> list[str]:
        return sorted(os.listdir(self.host(path)))

    def read_file(self, path: str) -> bytes:
        fd = os.open(self.host(path), os.O_RDONLY)
        try:
            chunks = []
            while chunk := os.read(fd, 1 << 16):
                chunks.append(chunk)
            return b"".join(chunks)
        finally:
            os.close(fd)

    def readlink(self, path: str) -> str:
        return os.readlink(self.host(path))

    def getxattr(self, path: str, name: str) -> bytes:
        return os.getxattr(self.host(path), name)

    def listxattr(self, path: str) -> list[str]:
        return _visible_xattrs(os.listxattr(self.host(path)))

    def write_file(self, path: str, data: bytes, how: str = "w", mode: int = 0o644) -> None:
        with _no_umask():
            fd = os.open(self.host(path), _OPEN_FLAGS[how], mode)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
        finally:
            os.close(fd)

    def truncate(self, path: str, size: int) -> None:
        os.truncate(self.host(path), size)

    def mkdir(self, path: str, mode: int = 0o755) -> None:
        with _no_umask():
            os.mkdir(self.host(path), mode)

    def rmdir(self, path: str) -> None:
        os.rmdir(self.host(path))

    def unlink(self, path: str) -> None:
        os.unlink(self.host(path))

    def rename(self, src: str, dst: str) -> None:
        os.rename(self.host(src), self.host(dst))

    def symlink(self, target: str, path: str) -> None:
        os.symlink(target, self.host(path))

    def link(self, src: str, dst: str) -> None:
        os.link(self.host(src), self.host(dst), follow_symlinks=False)

    def mkfifo(self, path: str, mode: int = 0o644) -> None:
        with _no_umask():
            os.mkfifo(self.host(path), mode)

    def chmod(self, path: str, mode: int) -> None:
        os.chmod(self.host(path), mode)

    def chown(self, path: str, uid: int, gid: int) -> None:
        os.chown(self.host(path), uid, gid)

    def utime(self, path: str, atime_ns: int, mtime_ns: int) -> None:
        os.utime(self.host(path), ns=(atime_ns, mtime_ns))

    def setxattr(self, path: str, name: str, value: bytes) -> None:
        os.setxattr(self.host(path), name, value)

    def removexattr(self, path: str, name: str) -> None:
        os.removexattr(self.host(path), name)

    def close(self) -> None:
        pass


_HOW_TO_MODE = {"w": "wb", "x": "xb", "a": "ab", "r+": "r+b"}


class EngineTarget:
    """``unionfs.UnionFS`` in-process. Build one with ``EngineTarget.memory(stack)`` (every
    layer a ``MemoryLayer``), ``EngineTarget.on_disk(stack, workdir)`` (``DirLayer``s written in
    overlayfs form; needs root for whiteouts) or ``EngineTarget(fs)`` around any union."""

    def __init__(self, fs: Any, close: Any = None) -> None:
        self.fs = fs
        self._close = close

    def __repr__(self) -> str:
        return f"EngineTarget({self.fs!r})"

    @classmethod
    def memory(cls, stack: StackSpec, **options: bool) -> EngineTarget:
        """A union of ``MemoryLayer``s built from ``stack`` (upper: its spec, or empty)."""
        from ..union import UnionFS

        lowers = [memory_layer(spec, f"lower{i}") for i, spec in enumerate(stack.lowers)]
        upper = memory_layer(stack.upper or LayerSpec(), "upper")
        return cls(UnionFS(lowers=lowers, upper=upper, **options))

    @classmethod
    def on_disk(cls, stack: StackSpec, workdir: str | os.PathLike[str], *, fmt: str = "overlay",
                **options: bool) -> EngineTarget:
        """A union of ``DirLayer``s written below ``workdir`` (``lower0``.., ``upper``,
        ``work``; the lower layers' index cache in ``index-cache``, so nothing is left
        outside ``workdir``)."""
        from ..layer import DirLayer
        from ..union import UnionFS

        workdir = os.fspath(workdir)
        cache_dir = f"{workdir}/index-cache"
        lowers = [DirLayer(write_layer_dir(spec, f"{workdir}/lower{i}", fmt),
                           cache_dir=cache_dir)
                  for i, spec in enumerate(stack.lowers)]
        upper_dir = write_layer_dir(stack.upper or LayerSpec(), f"{workdir}/upper", fmt)
        os.makedirs(f"{workdir}/work", exist_ok=True)
        return cls(UnionFS(lowers=lowers, upper=DirLayer(upper_dir, writable=True),
                           workdir=f"{workdir}/work", **options))

    def lstat(self, path: str) -> Stat:
        return Stat.from_os(self.fs.lstat(path))

    def mtime_ns(self, path: str) -> int:
        return self.fs.stat(path).st_mtime_ns

    def listdir(self, path: str) -> list[str]:
        return sorted(self.fs.listdir(path))

    def read_file(self, path: str) -> bytes:
        with self.fs.open(path, "rb") as f:
            return f.read()

    def readlink(self, path: str) -> str:
        return self.fs.readlink(path)

    def getxattr(self, path: str, name: str) -> bytes:
        return self.fs.getxattr(path, name)

    def listxattr(self, path: str) -> list[str]:
        return _visible_xattrs(self.fs.listxattr(path))

    def write_file(self, path: str, data: bytes, how: str = "w", mode: int = 0o644) -> None:
        with self.fs.open(path, _HOW_TO_MODE[how], perm=mode) as f:
            f.write(data)

    def truncate(self, path: str, size: int) -> None:
        self.fs.truncate(path, size)

    def mkdir(self, path: str, mode: int = 0o755) -> None:
        self.fs.mkdir(path, mode)

    def rmdir(self, path: str) -> None:
        self.fs.rmdir(path)

    def unlink(self, path: str) -> None:
        self.fs.unlink(path)

    def rename(self, src: str, dst: str) -> None:
        self.fs.rename(src, dst)

    def symlink(self, target: str, path: str) -> None:
        self.fs.symlink(target, path)

    def link(self, src: str, dst: str) -> None:
        self.fs.link(src, dst)

    def mkfifo(self, path: str, mode: int = 0o644) -> None:
        self.fs.mknod(path, stat.S_IFIFO | mode)

    def chmod(self, path: str, mode: int) -> None:
        self.fs.chmod(path, mode)

    def chown(self, path: str, uid: int, gid: int) -> None:
        self.fs.chown(path, uid, gid)

    def utime(self, path: str, atime_ns: int, mtime_ns: int) -> None:
        self.fs.utime(path, ns=(atime_ns, mtime_ns))

    def setxattr(self, path: str, name: str, value: bytes) -> None:
        self.fs.setxattr(path, name, value)

    def removexattr(self, path: str, name: str) -> None:
        self.fs.removexattr(path, name)

    def close(self) -> None:
        if self._close is not None:
            self._close()


# ---------------------------------------------------------------------------------------------
# comparing
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    """What one step gave: ``value`` when it returned, or the ``errno`` it raised."""

    value: Any = None
    errno: int | None = None

    def __str__(self) -> str:
        if self.errno is not None:
            return errno.errorcode.get(self.errno, str(self.errno))
        return "ok" if self.value is None else f"-> {self.value!r}"


def outcome(target: Any, op: Op) -> Outcome:
    """Run ``op`` on ``target``; its value or its errno (``UnsupportedStep`` propagates)."""
    try:
        return Outcome(value=op.apply(target))
    except OSError as e:
        return Outcome(errno=e.errno)


@dataclass(frozen=True)
class Seen:
    """One path of a snapshot: its stat plus contents, link target and visible xattrs."""

    stat: Stat
    data: bytes | None = None
    target: str | None = None
    xattrs: tuple[tuple[str, bytes], ...] = field(default=())


def snapshot(target: Any, hidden: Sequence[str] = HIDDEN_XATTR_PREFIXES) -> dict[str, Seen]:
    """The whole visible tree of ``target``: ``{path: Seen}``, FIFOs not opened, xattrs whose
    names start with one of ``hidden`` left out."""
    out: dict[str, Seen] = {}

    def visit(path: str) -> None:
        st = target.lstat(path)
        data = link = None
        attrs: tuple[tuple[str, bytes], ...] = ()
        if st.kind == "file":
            data = target.read_file(path)
        elif st.kind == "symlink":
            link = target.readlink(path)
        if st.kind in ("file", "dir"):
            attrs = tuple((n, target.getxattr(path, n)) for n in target.listxattr(path)
                          if not n.startswith(tuple(hidden)))
        out[path] = Seen(st, data, link, attrs)
        if st.kind == "dir":
            for name in target.listdir(path):
                visit(("" if path == "/" else path) + "/" + name)

    visit("/")
    return out


def diff_snapshots(expected: Mapping[str, Seen], got: Mapping[str, Seen]) -> list[str]:
    """Human-readable differences, empty when equal."""
    lines = []
    for path in sorted(set(expected) | set(got)):
        a, b = expected.get(path), got.get(path)
        if a != b:
            lines.append(f"{path}: expected {a}, got {b}")
    return lines


def run_ops(targets: Mapping[str, Any], sequence: Sequence[Op], *,
            model: UnionModel | None = None) -> list[tuple[Op, dict[str, Outcome]]]:
    """Apply ``sequence`` to every target in turn; per step, each target's outcome. Steps the
    ``model`` (when given) cannot answer are skipped on all."""
    results = []
    for op in sequence:
        if model is not None and not model.supports(op.call, *op.args):
            continue
        results.append((op, {name: outcome(t, op) for name, t in targets.items()}))
    return results


def dir_fingerprint(root: str | os.PathLike[str]) -> str:
    """A digest of everything a layer directory holds: names, types, modes, owners, rdev,
    mtimes, link targets, contents and all xattrs (``trusted.*`` included). Equal before and
    after means the directory was not changed."""
    h = hashlib.sha256()
    root = os.fspath(root)
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in [".", *sorted(dirnames + filenames)]:
            full = os.path.join(dirpath, name) if name != "." else dirpath
            st = os.lstat(full)
            rel = os.path.relpath(full, root)
            h.update(repr((rel, st.st_mode, st.st_uid, st.st_gid, st.st_rdev, st.st_nlink,
                           st.st_mtime_ns, st.st_size)).encode())
            if os.path.islink(full):
                h.update(os.readlink(full).encode())
            else:
                for x in sorted(os.listxattr(full, follow_symlinks=False)):
                    h.update(x.encode() + os.getxattr(full, x, follow_symlinks=False))
                if os.path.isfile(full):
                    with open(full, "rb") as f:
                        h.update(hashlib.sha256(f.read()).digest())
    return h.hexdigest()


# ---------------------------------------------------------------------------------------------
# kernel overlayfs (root only)
# ---------------------------------------------------------------------------------------------


def overlay_options(*, redirect_dir: bool = False, index: bool = False,
                    metacopy: bool = False) -> str:
    """The mount option text for these overlayfs options (``metacopy`` needs
    ``redirect_dir=on``; the kernel refuses the pair otherwise, so it is turned on)."""
    redirect_dir = redirect_dir or metacopy
    return (f"redirect_dir={'on' if redirect_dir else 'off'},index={'on' if index else 'off'},"
            f"metacopy={'on' if metacopy else 'off'}")


def mount_overlay(lowers: Sequence[str], upper: str, work: str, merged: str,
                  **options: bool) -> None:
    """``mount -t overlay`` with ``lowers`` top-most first. Raises ``OSError`` with the mount
    tool's message when the kernel refuses."""
    opts = (f"lowerdir={':'.join(lowers)},upperdir={upper},workdir={work},"
            + overlay_options(**options))
    r = subprocess.run(["mount", "-t", "overlay", "overlay", "-o", opts, merged],
                       capture_output=True, text=True)
    if r.returncode != 0:
        raise OSError(errno.EINVAL, f"mount -t overlay -o {opts}: {r.stderr.strip()}")


def unmount(path: str) -> None:
    """Unmount ``path``; a lazy unmount when busy, so no test ever leaves a mount behind."""
    r = subprocess.run(["umount", path], capture_output=True)
    if r.returncode != 0:
        subprocess.run(["umount", "-l", path], capture_output=True)


@dataclass(frozen=True)
class OverlayDirs:
    """Where a kernel overlay's parts live."""

    lowers: tuple[str, ...]
    upper: str
    work: str
    merged: str


@contextlib.contextmanager
def kernel_overlay(stack: StackSpec, workdir: str | os.PathLike[str] | None = None,
                   **options: bool) -> Iterator[tuple[MountTarget, OverlayDirs]]:
    """Write ``stack`` in overlayfs form below ``workdir`` (a new temp dir when None), mount it
    with the kernel, yield ``(MountTarget, OverlayDirs)``; always unmounts on exit."""
    with contextlib.ExitStack() as stack_cm:
        base = os.fspath(workdir) if workdir is not None else stack_cm.enter_context(
            tempfile.TemporaryDirectory(prefix="unionfs-kovl-"))
        lowers = tuple(write_layer_dir(spec, f"{base}/lower{i}")
                       for i, spec in enumerate(stack.lowers))
        upper = write_layer_dir(stack.upper or LayerSpec(), f"{base}/upper")
        dirs = OverlayDirs(lowers, upper, f"{base}/work", f"{base}/merged")
        os.makedirs(dirs.work)
        os.makedirs(dirs.merged)
        mount_overlay(list(lowers), upper, dirs.work, dirs.merged, **options)
        try:
            yield MountTarget(dirs.merged), dirs
        finally:
            unmount(dirs.merged)


class KernelOverlayTarget(MountTarget):
    """A kernel overlayfs mount of a stack in a temp dir, unmounted by ``close``."""

    def __init__(self, stack: StackSpec, **options: bool) -> None:
        self._cm = kernel_overlay(stack, **options)
        target, self.dirs = self._cm.__enter__()
        super().__init__(target.root)

    def close(self) -> None:
        if self._cm is not None:
            cm, self._cm = self._cm, None
            cm.__exit__(None, None, None)


# ---------------------------------------------------------------------------------------------
# the state machine
# ---------------------------------------------------------------------------------------------


class UnionConformance(RuleBasedStateMachine):
    """Drives ``make_target(stack, **options)`` next to ``UnionModel`` (see module docs).

    Override ``make_target``; optionally set ``options`` and ``stack_strategy``.
    """

    options: ClassVar[dict[str, bool]] = {}
    stack_strategy: ClassVar[st.SearchStrategy[StackSpec]] = stacks()
    #: xattr name prefixes left out of the tree comparison
    hidden_xattrs: ClassVar[tuple[str, ...]] = HIDDEN_XATTR_PREFIXES

    def __init__(self) -> None:
        super().__init__()
        self.model: UnionModel | None = None
        self.target: Any = None
        self.steps = 0

    def make_target(self, stack: StackSpec, **options: bool) -> Target:
        """Build the implementation under test holding ``stack``."""
        raise NotImplementedError("subclasses say how to build the union under test")

    def known_difference(self, op: Op) -> str | None:
        """A reason to leave ``op`` out, or ``None`` (the default: every step counts).

        Override to park a known, reported deviation of the implementation under test (name
        the bug) while the rest of the suite keeps running; ``self.model`` is the model's
        state before the step. Every skipped step is ``note()``-d with its reason.
        """
        return None

    def teardown(self) -> None:
        if self.target is not None and hasattr(self.target, "close"):
            self.target.close()

    # -- set-up and steps --------------------------------------------------------------------

    @initialize(data=st.data())
    def build(self, data: st.DataObject) -> None:
        stack = data.draw(self.stack_strategy, label="stack")
        note(f"options = {self.options!r}")
        self.model = UnionModel(stack, **self.options)
        self.target = self.make_target(stack, **self.options)

    def _paths(self) -> list[str]:
        assert self.model is not None
        existing = self.model.paths()
        dirs = [p for p in existing if self.model.kind_of(p) == "dir"]
        return near_paths(existing, dirs, names=NAMES)

    def _existing(self) -> list[str]:
        assert self.model is not None
        return self.model.paths() or ["/a"]

    def step(self, op: Op) -> None:
        """Do ``op`` on the model and the target; same value or same errno, or fail."""
        assert self.model is not None
        if not self.model.supports(op.call, *op.args):
            note(f"# skipped fs.{op} (would open a FIFO)")
            return
        reason = self.known_difference(op)
        if reason is not None:
            note(f"# skipped fs.{op} ({reason})")
            return
        try:
            expected = outcome(self.model, op)
        except UnsupportedStep:
            note(f"# skipped fs.{op}")
            return
        got = outcome(self.target, op)
        self.steps += 1
        note(f"fs.{op}  # {expected}")
        assert got == expected, f"fs.{op}: expected {expected}, got {got}"
        if op.call == "utime" and expected.errno is None and hasattr(self.target, "mtime_ns"):
            assert self.target.mtime_ns(op.args[0]) == op.args[2], "utime did not set mtime"

    @precondition(lambda self: self.model is not None)
    @rule(data=st.data())
    def read_something(self, data: st.DataObject) -> None:
        self.step(data.draw(ops(self._paths(), calls=READ_CALLS), label="op"))

    @precondition(lambda self: self.model is not None)
    @rule(data=st.data())
    def change_something(self, data: st.DataObject) -> None:
        self.step(data.draw(ops(self._paths(), calls=WRITE_CALLS), label="op"))

    @precondition(lambda self: self.model is not None)
    @rule(data=st.data())
    def change_existing(self, data: st.DataObject) -> None:
        """Data and metadata changes on names that exist: copy-up happens here."""
        self.step(data.draw(ops(self._existing(), calls=(
            "write_file", "truncate", "chmod", "chown", "setxattr", "removexattr", "utime")),
            label="op"))

    @precondition(lambda self: self.model is not None)
    @rule(data=st.data())
    def create_something(self, data: st.DataObject) -> None:
        """New names (or clashes with existing ones): mkdir over whiteouts makes opaque
        directories, creation in lower directories copies parents up."""
        self.step(data.draw(ops(self._paths(), calls=("mkdir", "write_file", "symlink",
                                                      "mkfifo")), label="op"))

    @precondition(lambda self: self.model is not None)
    @rule(data=st.data())
    def remove_existing(self, data: st.DataObject) -> None:
        """Removal of names that exist: whiteouts happen here."""
        self.step(data.draw(ops(self._existing(), calls=("unlink", "rmdir")), label="op"))

    @precondition(lambda self: self.model is not None)
    @rule(data=st.data())
    def move_existing(self, data: st.DataObject) -> None:
        """``rename`` and ``link`` from names that exist, directories favoured: EXDEV,
        redirects, broken or kept hard links happen here."""
        assert self.model is not None
        existing = self._existing()
        dirs = [p for p in existing if self.model.kind_of(p) == "dir"]
        source = st.sampled_from(dirs) | st.sampled_from(existing) if dirs else \
            st.sampled_from(existing)
        target = st.sampled_from(self._paths())
        self.step(data.draw(st.one_of(
            st.builds(lambda a, b: Op("rename", (a, b)), source, target),
            st.builds(lambda a, b: Op("link", (a, b)), st.sampled_from(existing), target),
        ), label="op"))

    @precondition(lambda self: self.model is not None)
    @invariant()
    def same_tree(self) -> None:
        expected = snapshot(self.model, self.hidden_xattrs)
        got = snapshot(self.target, self.hidden_xattrs)
        differences = diff_snapshots(expected, got)
        assert not differences, "visible trees differ:\n" + "\n".join(differences)
