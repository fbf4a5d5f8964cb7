"""Mounting a union with FUSE: the fuse-overlayfs command line, the daemon, and unmounting.

``unionfs mount [-f] [-d] [-o OPTS] MOUNTPOINT`` takes the options fuse-overlayfs and the
kernel take (``lowerdir=L1:L2`` top-most first, ``upperdir=``, ``workdir=``, ``redirect_dir=``,
``index=``, ``metacopy=``, ``xino=``, ``ro``) plus the usual FUSE mount options, which pass
through to libfuse. Everything is checked before anything is mounted, so a bad option never
leaves a half mount.

Without ``-f`` the call returns only once the mount is live: the daemon (a double-forked
child) builds the engine, mounts, and reports through a pipe when the kernel's ``INIT`` has
been answered; the parent then checks ``/proc/self/mountinfo`` and a ``stat`` of the mount
root before it returns. Any error the daemon meets before that point (bad layer, libfuse
refusing the mount point) comes back through the same pipe and the parent exits non-zero.

The daemon unmounts cleanly on SIGTERM, SIGINT and SIGHUP (libfuse's own handlers end the
session loop, then the session is unmounted), and when the mount is removed from outside
(``unionfs umount``, ``fusermount3 -u``, ``umount``). ``-o api=lowlevel`` (the default,
``unionfs.fuse_ll``) or ``api=highlevel`` (libfuse's path API through mfusepy) chooses the
adapter; the ``UNIONFS_FUSE_API`` environment variable chooses when the option is absent.
"""

from __future__ import annotations

import contextlib
import gc
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TextIO

if TYPE_CHECKING:
    from .union import UnionFS

#: ``fsname`` and ``subtype`` of our mounts: ``/proc/mounts`` shows ``unionfs MP fuse.unionfs``
FSNAME = "unionfs"
SUBTYPE = "unionfs"

#: the virtual extended attributes the daemon answers (never stored, never listed)
XATTR_WHICH = "user.unionfs.which"
XATTR_PID = "user.unionfs.pid"

_READY = b"\0unionfs-ready\n"

#: entry/attr timeout when none is given: lower layers never change and the upper layer is
#: changed only through this mount, so the kernel may keep its answers (fuse-overlayfs uses
#: 1e9 s for the same reason)
DEFAULT_TIMEOUT = 1e9

#: the libfuse API a mount uses when neither ``-o api=`` nor ``UNIONFS_FUSE_API`` chooses:
#: ``lowlevel`` (``unionfs.fuse_ll``, its own node table) or ``highlevel`` (libfuse's path API)
DEFAULT_API = "lowlevel"
#: ``spin=``'s default: microseconds of asking for the next request before sleeping, while
#: requests come that close together (measured: a program creating files back to back
#: waits ~10-30 % less per file on this 2-CPU virtual machine; see docs/mount.md)
DEFAULT_SPIN = 200.0
APIS = ("lowlevel", "highlevel")


class OptionError(ValueError):
    """A mount option is unknown, malformed or inconsistent (nothing has been mounted)."""


class MountError(RuntimeError):
    """The mount or unmount itself failed (message says why; nothing is left mounted)."""


# FUSE mount options handed to libfuse unchanged: flags ...
_FUSE_FLAGS = frozenset({
    "allow_other", "allow_root", "default_permissions", "auto_unmount", "blkdev",
    "suid", "nosuid", "dev", "nodev", "exec", "noexec", "atime", "noatime", "diratime",
    "nodiratime", "relatime", "norelatime", "strictatime", "nostrictatime", "lazytime",
    "nolazytime", "sync", "async", "dirsync", "rw", "ro", "kernel_cache", "auto_cache",
    "noauto_cache", "direct_io", "no_remote_lock", "no_remote_posix_lock", "no_remote_flock",
    "splice_write", "no_splice_write", "splice_move", "no_splice_move", "splice_read",
    "no_splice_read", "silent", "user", "nouser", "auto", "noauto", "_netdev", "nofail",
    "defaults",
})
# ... and options with a value
_FUSE_VALUES = frozenset({
    "fsname", "subtype", "blksize", "max_read", "max_write", "max_readahead", "max_background",
    "congestion_threshold", "context", "fscontext", "defcontext", "rootcontext", "umask",
    "uid", "gid", "entry_timeout", "negative_timeout", "attr_timeout", "ac_attr_timeout",
    "modules", "x-systemd.requires", "x-systemd.automount",
})
# mount(8) flags that are not libfuse options and must not reach it
#: the mount options that choose how access times are kept. libfuse sets MS_NOATIME or not
#: and nothing else (the kernel's default, relatime, otherwise), so each is passed on as
#: ``noatime`` or ``atime``; ``fuse_kwargs`` adds ``noatime`` where none is given
_ATIME_OPTIONS = {"atime": "atime", "noatime": "noatime", "relatime": "atime",
                  "norelatime": "atime", "strictatime": "atime", "nostrictatime": "atime",
                  "diratime": "atime", "nodiratime": "noatime"}
_MOUNT8_ONLY = frozenset({"user", "nouser", "auto", "noauto", "_netdev", "nofail", "defaults",
                          "silent"})
# fuse-overlayfs options we accept for script compatibility and that change nothing here
_IGNORED = frozenset({"noacl", "nonempty", "fast_ino", "static_nlink", "writeback",
                      "squash_to_root", "noxattrs", "userxattr", "nfs_export", "uuid"})
# fuse-overlayfs options whose behaviour we do not implement: refused rather than ignored
_UNSUPPORTED = frozenset({"uidmapping", "gidmapping", "squash_to_uid", "squash_to_gid",
                          "plugins", "lowerdir+", "datadir+"})

_ON_OFF = {"on": True, "off": False, "yes": True, "no": False, "1": True, "0": False,
           "true": True, "false": False}


@dataclass(frozen=True, slots=True)
class MountOptions:
    """A parsed ``-o`` string. Paths are absolute; ``lowerdirs`` are top-most first."""

    lowerdirs: tuple[str, ...]
    upperdir: str | None = None
    workdir: str | None = None
    redirect_dir: bool = False
    index: bool = False
    metacopy: bool = False
    xino: str = "auto"
    read_only: bool = False
    trace: str | None = None
    threaded: bool = False
    timeout: float | None = None
    #: let the kernel keep directory listings until the directory changes (``cache_readdir=``)
    cache_readdir: bool = True
    #: answer the kernel's READDIRPLUS with full attributes (``readdirplus=``)
    readdirplus: bool = True
    #: open files whose data is an upper file in FUSE passthrough mode (``passthrough=``):
    #: the kernel reads and writes them without asking the daemon (Linux 6.9+, as root)
    passthrough: bool = True
    #: microseconds the daemon keeps asking for the next request before it sleeps, while
    #: requests come that close together (``spin=``; 0: it sleeps at once)
    spin: float = DEFAULT_SPIN
    #: no sync call reaches the upper dir (``volatile``, ``fsync=0``, as kernel overlayfs and
    #: fuse-overlayfs take them): a program's fsync/fdatasync/fsyncdir answer at once
    volatile: bool = False
    #: flush copied-up data to disk before renaming it into place, as kernel overlayfs does
    #: (``sync_copyup``); off, as in fuse-overlayfs: still atomic, not power-loss safe
    sync_copyup: bool = False
    #: options handed to libfuse: ``name -> True`` for flags, ``name -> str`` for values
    fuse: tuple[tuple[str, str | bool], ...] = field(default=())
    #: which libfuse API serves the mount (``api=lowlevel|highlevel``); ``None``: the
    #: ``UNIONFS_FUSE_API`` environment variable, else ``DEFAULT_API``
    api: str | None = None

    @property
    def writable(self) -> bool:
        """Changes allowed: an upper dir and no ``ro``; for an object mount (no layer
        directories, see ``mount_object``) just no ``ro``."""
        if not self.lowerdirs:
            return not self.read_only
        return self.upperdir is not None and not self.read_only

    def fuse_option(self, name: str) -> str | bool | None:
        for key, value in self.fuse:
            if key == name:
                return value
        return None


def split_options(text: str) -> list[str]:
    """Split an ``-o`` string at unescaped commas (``\\,`` is a literal comma; other escapes
    are kept for the per-option parser, as the kernel's overlayfs does)."""
    out: list[str] = []
    cur: list[str] = []
    i = 0
    while i < len(text):
        ch = text[i]
        if ch == "\\" and i + 1 < len(text):
            nxt = text[i + 1]
            cur.append(nxt if nxt == "," else ch + nxt)
            i += 2
            continue
        if ch == ",":
            out.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
        i += 1
    out.append("".join(cur))
    return [o for o in out if o]


def split_lowerdir(value: str) -> list[str]:
    """``"a:b\\:c"`` -> ``["a", "b:c"]``: colons separate layers, a backslash escapes the next
    character. Raises ``OptionError`` for an empty layer (``a::b``, a leading or trailing
    colon), which overlayfs reserves for data-only layers we do not support."""
    parts: list[str] = []
    cur: list[str] = []
    i = 0
    while i < len(value):
        ch = value[i]
        if ch == "\\" and i + 1 < len(value):
            cur.append(value[i + 1])
            i += 2
            continue
        if ch == ":":
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
        i += 1
    parts.append("".join(cur))
    if any(p == "" for p in parts):
        raise OptionError(f"lowerdir={value!r}: empty layer path (data-only '::' layers are "
                          "not supported)")
    return parts


def _unescape(value: str) -> str:
    out: list[str] = []
    i = 0
    while i < len(value):
        if value[i] == "\\" and i + 1 < len(value):
            out.append(value[i + 1])
            i += 2
        else:
            out.append(value[i])
            i += 1
    return "".join(out)


def parse_options(option_strings: Iterable[str], *, cwd: str | None = None) -> MountOptions:
    """Parse every ``-o`` argument (each a comma-separated list) into ``MountOptions``.

    Checks the options only (see ``check_paths`` for the directories). Raises ``OptionError``
    for an unknown or unsupported option, a bad value, a missing ``lowerdir``, ``upperdir``
    without ``workdir`` (or the reverse).
    """
    cwd = cwd or os.getcwd()

    def absolute(p: str) -> str:
        return os.path.normpath(os.path.join(cwd, os.path.expanduser(p)))

    lowers: list[str] | None = None
    upper = work = trace = None
    flags = {"redirect_dir": False, "index": False, "metacopy": False,
             "cache_readdir": True, "readdirplus": True, "passthrough": True}
    xino = "auto"
    read_only = False
    threaded = False
    volatile = False
    sync_copyup = False
    timeout: float | None = None
    spin = DEFAULT_SPIN
    api: str | None = None
    fuse: dict[str, str | bool] = {}

    for text in option_strings:
        for opt in split_options(text):
            key, eq, raw = opt.partition("=")
            value = _unescape(raw)
            if key == "lowerdir":
                if not raw:
                    raise OptionError("lowerdir= needs at least one directory")
                lowers = [absolute(p) for p in split_lowerdir(raw)]
            elif key in ("upperdir", "workdir", "trace"):
                if not value:
                    raise OptionError(f"{key}= needs a path")
                if key == "upperdir":
                    upper = absolute(value)
                elif key == "workdir":
                    work = absolute(value)
                else:
                    trace = absolute(value)
            elif key in flags:
                if key == "redirect_dir" and value in ("follow", "nofollow"):
                    # follow: read redirects, never create them (what we do with "off")
                    flags[key] = False
                    continue
                if value.lower() not in _ON_OFF:
                    raise OptionError(f"{key}={value!r}: expected on or off")
                flags[key] = _ON_OFF[value.lower()]
            elif key == "xino":
                if value not in ("on", "off", "auto"):
                    raise OptionError(f"xino={value!r}: expected on, off or auto")
                xino = value
            elif key == "ro" and not eq:
                read_only = True
                fuse["ro"] = True
            elif key == "rw" and not eq:
                read_only = False
                fuse.pop("ro", None)
            elif key == "volatile" and not eq:
                volatile = True
            elif key == "fsync":
                if value.lower() not in _ON_OFF:
                    raise OptionError(f"fsync={value!r}: expected 0 or 1")
                volatile = not _ON_OFF[value.lower()]
            elif key == "sync_copyup":
                if eq and value.lower() not in _ON_OFF:
                    raise OptionError(f"sync_copyup={value!r}: expected on or off")
                sync_copyup = _ON_OFF[value.lower()] if eq else True
            elif key == "threaded":
                threaded = value in ("", "1", "on", "yes", "true")
            elif key == "timeout":
                timeout = _seconds(key, value)
            elif key == "spin":
                try:
                    spin = float(value)
                except ValueError:
                    spin = -1.0
                if not 0 <= spin <= 1_000_000:
                    raise OptionError(f"spin={value!r}: expected microseconds, 0 to 1000000")
            elif key == "api":
                if value not in APIS:
                    raise OptionError(f"api={value!r}: expected lowlevel or highlevel")
                api = value
            elif key in ("debug",) and not eq:
                fuse["debug"] = True
            elif key in _IGNORED:
                continue
            elif key in _UNSUPPORTED:
                raise OptionError(f"option {key!r} is not supported by unionfs")
            elif key in _ATIME_OPTIONS and not eq:
                fuse.pop("atime", None)
                fuse.pop("noatime", None)
                fuse[_ATIME_OPTIONS[key]] = True
            elif key in _FUSE_FLAGS and not eq:
                if key not in _MOUNT8_ONLY:
                    fuse[key] = True
            elif key in _FUSE_VALUES and eq:
                if key.endswith("_timeout"):
                    _seconds(key, value)
                fuse[key] = value
            elif key in _FUSE_FLAGS or key in _FUSE_VALUES:
                raise OptionError(f"option {key!r} " +
                                  ("takes no value" if eq else "needs a value (name=value)"))
            else:
                raise OptionError(f"unknown option {key!r}")

    if lowers is None:
        raise OptionError("no lowerdir specified (-o lowerdir=DIR[:DIR...])")
    if upper is not None and work is None:
        raise OptionError("upperdir given without workdir (-o workdir=DIR)")
    if work is not None and upper is None:
        raise OptionError("workdir given without upperdir (-o upperdir=DIR)")
    if volatile and sync_copyup:
        raise OptionError("sync_copyup conflicts with volatile (fsync=0): a volatile mount "
                          "makes no sync calls")
    return MountOptions(
        lowerdirs=tuple(lowers), upperdir=upper, workdir=work, xino=xino, read_only=read_only,
        trace=trace, threaded=threaded, timeout=timeout, fuse=tuple(fuse.items()),
        volatile=volatile, sync_copyup=sync_copyup, api=api, spin=spin, **flags)


def _seconds(key: str, value: str) -> float:
    try:
        seconds = float(value)
    except ValueError:
        raise OptionError(f"{key}={value!r}: expected a number of seconds") from None
    if not seconds >= 0:
        raise OptionError(f"{key}={value!r}: must not be negative")
    return seconds


def check_paths(opts: MountOptions, mountpoint: str) -> None:
    """Check the directories before mounting. Raises ``OptionError`` naming the first
    problem: a missing or non-directory layer, upper or work dir, a layer repeated, a work dir
    inside the upper dir (or the reverse), the mount point missing or not a directory."""
    def need_dir(what: str, path: str) -> None:
        if not os.path.exists(path):
            raise OptionError(f"{what} {path}: no such directory")
        if not os.path.isdir(path):
            raise OptionError(f"{what} {path}: not a directory")

    for path in opts.lowerdirs:
        need_dir("lowerdir", path)
    real_lowers = [os.path.realpath(p) for p in opts.lowerdirs]
    if len(set(real_lowers)) != len(real_lowers):
        raise OptionError("lowerdir: the same directory is listed twice")
    if opts.upperdir is not None:
        need_dir("upperdir", opts.upperdir)
        if opts.workdir is not None:
            need_dir("workdir", opts.workdir)
            up, wk = os.path.realpath(opts.upperdir), os.path.realpath(opts.workdir)
            if up == wk or _inside(wk, up) or _inside(up, wk):
                raise OptionError("workdir and upperdir must be separate directories, "
                                  "neither inside the other")
            if os.stat(up).st_dev != os.stat(wk).st_dev:
                raise OptionError("workdir and upperdir must be on the same filesystem")
        if not opts.read_only and not os.access(opts.upperdir, os.W_OK):
            raise OptionError(f"upperdir {opts.upperdir}: not writable")
        if os.path.realpath(opts.upperdir) in real_lowers:
            raise OptionError("upperdir is also a lowerdir")
    need_dir("mount point", mountpoint)


def _inside(path: str, ancestor: str) -> bool:
    return path.startswith(ancestor.rstrip("/") + "/")


# ---------------------------------------------------------------------------------------------
# /proc/self/mountinfo

@dataclass(frozen=True, slots=True)
class MountInfo:
    """One line of ``/proc/self/mountinfo``."""

    mountpoint: str
    fstype: str
    source: str
    options: str


def _unoctal(s: str) -> str:
    # mountinfo escapes space, tab, newline and backslash as \ooo
    out = bytearray()
    b = s.encode("utf-8", "surrogateescape")
    i = 0
    while i < len(b):
        if b[i] == 0x5C and i + 3 < len(b) and b[i + 1:i + 4].isdigit():
            out.append(int(b[i + 1:i + 4], 8))
            i += 4
        else:
            out.append(b[i])
            i += 1
    return out.decode("utf-8", "surrogateescape")


def mounts() -> list[MountInfo]:
    """Every mount this process sees, in mount order."""
    out = []
    with open("/proc/self/mountinfo", encoding="utf-8", errors="surrogateescape") as f:
        for line in f:
            left, _, right = line.rstrip("\n").partition(" - ")
            fields = left.split(" ")
            rfields = right.split(" ")
            if len(fields) < 6 or len(rfields) < 3:
                continue
            out.append(MountInfo(_unoctal(fields[4]), rfields[0], _unoctal(rfields[1]),
                                 fields[5] + "," + rfields[2]))
    return out


def mount_at(mountpoint: str) -> MountInfo | None:
    """The top-most mount at exactly ``mountpoint`` (a real path), or ``None``."""
    found = None
    for info in mounts():
        if info.mountpoint == mountpoint:
            found = info
    return found


def is_unionfs(info: MountInfo | None) -> bool:
    return info is not None and info.fstype == f"fuse.{SUBTYPE}"


def mount_containing(path: str) -> MountInfo | None:
    """The mount that holds ``path`` (the longest mount point that is a prefix of it)."""
    real = os.path.realpath(path)
    best = None
    for info in mounts():
        mp = info.mountpoint
        if (real == mp or mp == "/" or real.startswith(mp + "/")) and (
                best is None or len(mp) >= len(best.mountpoint)):
            best = info
    return best


# ---------------------------------------------------------------------------------------------
# mounting

def choose_api(opts: MountOptions | None) -> str:
    """The libfuse API for a mount: ``-o api=``, else ``UNIONFS_FUSE_API``, else
    ``DEFAULT_API``. Raises ``OptionError`` for an unknown name in the environment."""
    api = opts.api if opts is not None else None
    if api is None:
        api = os.environ.get("UNIONFS_FUSE_API") or DEFAULT_API
    if api not in APIS:
        raise OptionError(f"UNIONFS_FUSE_API={api!r}: expected lowlevel or highlevel")
    if api == "lowlevel" and opts is not None and opts.fuse_option("modules"):
        return "highlevel"  # libfuse's stacked modules exist in its high-level API only
    return api


def fuse_kwargs(opts: MountOptions, *, debug: bool = False) -> dict[str, str | bool]:
    """The keyword arguments for ``mfusepy.FUSE``: libfuse mount options, fsname/subtype."""
    kwargs: dict[str, str | bool] = {k: v for k, v in opts.fuse
                                     if k not in ("entry_timeout", "attr_timeout",
                                                  "negative_timeout", "kernel_cache",
                                                  "auto_cache")}
    kwargs.setdefault("fsname", FSNAME)
    kwargs.setdefault("subtype", SUBTYPE)
    if "atime" not in kwargs and "noatime" not in kwargs:
        # as fuse-overlayfs mounts: the kernel then never drops a directory's cached
        # attributes after a listing (or a file's after a read) to ask for a new access
        # time, which the daemon would answer with the host's, unchanged by reads the page
        # cache served: a warm walk asks the daemon nothing
        kwargs["noatime"] = True
    if not opts.writable:
        kwargs["ro"] = True
    if debug:
        kwargs["debug"] = True
    return kwargs


def build_union(opts: MountOptions) -> UnionFS:
    """The engine for ``opts``: ``DirLayer`` lowers (top-most first) and a writable
    ``DirLayer`` upper staging its copy-ups in the work dir, or none for a read-only mount.
    With ``ro`` and an upper dir, the upper dir is shown as the top-most read-only layer, as
    the kernel does."""
    from .layer import DirLayer
    from .union import UnionFS

    lowers = [DirLayer(p) for p in opts.lowerdirs]
    upper = None
    workdir = None
    if opts.upperdir is not None:
        if opts.writable:
            upper = DirLayer(opts.upperdir, writable=True, workdir=opts.workdir)
            workdir = opts.workdir
        else:
            lowers.insert(0, DirLayer(opts.upperdir))
    return UnionFS(lowers=lowers, upper=upper, redirect_dir=opts.redirect_dir,
                   index=opts.index, metacopy=opts.metacopy, workdir=workdir, umask=0,
                   volatile=not opts.sync_copyup)


def serve(opts: MountOptions, mountpoint: str, *, debug: bool = False,
          on_ready: Callable[[], None] | None = None) -> None:
    """Build the engine, mount it at ``mountpoint`` and serve until unmounted or signalled.
    ``on_ready`` runs when the kernel's ``INIT`` request arrives, before any other request
    is served. Raises ``MountError`` if libfuse cannot mount."""
    serve_object(build_union(opts), mountpoint, opts, debug=debug, on_ready=on_ready)


#: the cyclic collector's thresholds while a mount serves: the objects it makes and keeps
#: (nodes, the lower view's stats, made on first visit) are collected in batches of 10,000,
#: not Python's 700. A cold 8-layer walk of 20k files spent 13 % of the daemon's
#: instructions in the collector with the defaults, 7 % with these
#: (``benchmarks/mount_instructions.py``)
GC_THRESHOLDS = (10_000, 50, 10)


def serve_object(fs: Any, mountpoint: str, opts: MountOptions, *, debug: bool = False,
                 on_ready: Callable[[], None] | None = None) -> None:
    """Serve the os-shaped object ``fs`` (a ``UnionFS``, a ``unionfs.mounts.MountTable``)
    at ``mountpoint`` in this thread until unmounted or signalled, with the trace file of
    ``opts`` if it names one; close ``fs`` (if it has ``close``) afterwards. Raises
    ``MountError`` if libfuse cannot mount."""
    from .fuse import run_fuse

    trace_file = None
    unsubscribe = None
    try:
        if opts.trace is not None:
            trace_file = open(opts.trace, "a", buffering=1, encoding="utf-8",  # noqa: SIM115
                              errors="backslashreplace")
            unsubscribe = _subscribe_trace(fs, trace_file)
        # the lower layers' indexes, built above, live as long as the mount and never hold
        # garbage: out of the cyclic collector's reach, which would otherwise walk them
        # again and again while requests are served
        gc.collect()
        gc.freeze()
        gc.set_threshold(*GC_THRESHOLDS)
        run_fuse(fs, mountpoint, opts, debug=debug, on_ready=on_ready)
    finally:
        if unsubscribe is not None:
            with contextlib.suppress(Exception):
                unsubscribe()
        close = getattr(fs, "close", None)
        if close is not None:
            with contextlib.suppress(Exception):
                close()
        if trace_file is not None:
            trace_file.close()


def _subscribe_trace(union: UnionFS, out: TextIO) -> Callable[[], None] | None:
    """Write one line per engine event: ``kind path layer=NAME reason=...``."""
    def write(event: object) -> None:
        out.write(format_event(event) + "\n")

    result = union.subscribe(write)
    if callable(result):
        return result
    unsubscribe = getattr(union, "unsubscribe", None)
    return (lambda: unsubscribe(write)) if unsubscribe is not None else None


def format_event(event: object) -> str:
    """``copy-up /etc/passwd layer=upper reason="open for write"``: one trace line."""
    kind = getattr(event, "kind", "?")
    kind = getattr(kind, "value", kind)
    parts = [str(kind), _quote(str(getattr(event, "path", "")))]
    layer = getattr(event, "layer", None)
    if layer is not None:
        parts.append("layer=" + _quote(str(getattr(layer, "name", layer))))
    reason = getattr(event, "reason", None)
    if reason:
        parts.append("reason=" + _quote(str(reason)))
    return " ".join(parts)


def _quote(s: str) -> str:
    if s and not any(c.isspace() or c in "\"\\=" for c in s) and s.isprintable():
        return s
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def mount(opts: MountOptions, mountpoint: str, *, foreground: bool = False,
          debug: bool = False, timeout: float = 60.0, stderr: TextIO | None = None) -> int:
    """Mount ``opts`` at ``mountpoint``.

    Foreground: serve in this process until unmounted; returns 0. Background (default): start
    the daemon, wait until the mount is live and answering, return 0; on any failure the
    daemon's message is written to ``stderr``, nothing is left mounted, and ``MountError`` is
    raised. Raises ``OptionError`` for bad directories (checked before anything starts).
    """
    mountpoint = os.path.realpath(mountpoint)
    check_paths(opts, mountpoint)
    if foreground or debug:
        # libfuse's -d also keeps the process in the foreground (as fuse-overlayfs does)
        serve(opts, mountpoint, debug=debug)
        return 0
    return _mount_background(opts, mountpoint, timeout, stderr or sys.stderr)


def _mount_background(opts: MountOptions, mountpoint: str, timeout: float,
                      stderr: TextIO) -> int:
    mount_object(lambda: build_union(opts), mountpoint, timeout=timeout, options=opts,
                 stderr=stderr)
    return 0


def object_options(*, fsname: str = FSNAME, read_only: bool = False,
                   fuse: Iterable[tuple[str, str | bool]] = ()) -> MountOptions:
    """The ``MountOptions`` of an object mount (no layer directories): ``fsname``,
    ``ro`` when ``read_only``, and any further libfuse options from ``fuse``."""
    extra: dict[str, str | bool] = {"fsname": fsname, **dict(fuse)}
    if read_only:
        extra["ro"] = True
    return MountOptions(lowerdirs=(), read_only=read_only, fuse=tuple(extra.items()))


def mount_object(build: Callable[[], Any], mountpoint: str, *, timeout: float = 60.0,
                 fsname: str = FSNAME, read_only: bool = False,
                 options: MountOptions | None = None, stderr: TextIO | None = None) -> int:
    """Serve what ``build()`` returns at ``mountpoint`` from a background daemon; return the
    daemon's pid once the mount is live (in ``/proc/self/mountinfo`` and answering ``stat``).

    ``build`` runs in the daemon, after the fork, so the served object (a ``UnionFS``, a
    ``unionfs.mounts.MountTable``, anything os-shaped) shares nothing with the caller's; it
    should apply no umask of its own (the kernel has applied the caller's already). The
    daemon is double-forked into its own session; ``umount(mountpoint)`` unmounts it and
    waits for it to exit. ``options`` (default: ``object_options(fsname=, read_only=)``)
    gives the libfuse options, timeouts and trace file.

    Raises ``MountError`` with the daemon's message (an exception from ``build``, libfuse
    refusing the mount point) or a timeout; nothing is left mounted then.
    """
    mountpoint = os.path.realpath(mountpoint)
    if not os.path.isdir(mountpoint):
        raise MountError(f"mount point {mountpoint}: not a directory")
    if options is None:
        options = object_options(fsname=fsname, read_only=read_only)
    stderr = stderr or sys.stderr
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the daemon
        os.close(r)
        _daemon(build, options, mountpoint, w)
    os.close(w)
    os.waitpid(pid, 0)  # the intermediate child exits at once (double fork)
    chunks: list[bytes] = []
    deadline = time.monotonic() + timeout
    ready = False
    daemon_pid = None
    import select
    try:
        while time.monotonic() < deadline:
            rl, _, _ = select.select([r], [], [], max(0.0, deadline - time.monotonic()))
            if not rl:
                break
            data = os.read(r, 65536)
            if not data:
                break
            chunks.append(data)
            blob = b"".join(chunks)
            if _READY in blob:
                head, _, tail = blob.partition(_READY)
                chunks = [head]
                with contextlib.suppress(ValueError):
                    daemon_pid = int(tail.split(b"\n", 1)[0])
                ready = True
                break
    finally:
        os.close(r)
    message = b"".join(chunks).decode("utf-8", "replace").strip()
    if ready and daemon_pid is not None and _wait_live(mountpoint, deadline):
        if message:
            print(message, file=stderr)
        return daemon_pid
    # failed: never leave a half mount behind
    if daemon_pid is not None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(daemon_pid, 15)
    if is_unionfs(mount_at(mountpoint)):
        subprocess.run(["fusermount3", "-u", "-z", mountpoint], capture_output=True)
    if not message:
        message = "the mount did not become ready in time" if not ready else \
            "the mount did not appear in /proc/self/mountinfo"
    raise MountError(message)


def _wait_live(mountpoint: str, deadline: float) -> bool:
    while time.monotonic() < deadline:
        if is_unionfs(mount_at(mountpoint)):
            with contextlib.suppress(OSError):
                os.stat(mountpoint)  # answered by the daemon: it is serving
                return True
        time.sleep(0.01)
    return False


def _daemon(build: Callable[[], Any], opts: MountOptions, mountpoint: str,
            w: int) -> None:  # pragma: no cover - runs in the forked children
    """The intermediate child: start a new session, fork the daemon, exit. The daemon
    builds the object and serves it; until the mount is ready its stderr is the pipe."""
    code = 0
    try:
        os.setsid()
        if os.fork() != 0:
            os._exit(0)
        os.chdir("/")
        os.umask(0)  # modes come from the caller (the kernel applied its umask already)
        devnull = os.open(os.devnull, os.O_RDWR)
        os.dup2(devnull, 0)
        os.dup2(devnull, 1)
        # until ready, everything written to stderr (ours and libfuse's) reaches the parent
        os.dup2(w, 2)
        sys.stderr = open(2, "w", buffering=1, closefd=False)  # noqa: SIM115

        def ready() -> None:
            os.write(w, _READY + str(os.getpid()).encode() + b"\n")
            os.dup2(devnull, 2)
            os.close(w)

        try:
            serve_object(build(), mountpoint, opts, on_ready=ready)
        except BaseException as e:
            msg = f"unionfs: {e.strerror or e}" if isinstance(e, OSError) else f"unionfs: {e}"
            with contextlib.suppress(OSError):
                os.write(2, (msg + "\n").encode())
            code = 1
    finally:
        os._exit(code)


# ---------------------------------------------------------------------------------------------
# unmounting

def daemon_pid(mountpoint: str) -> int | None:
    """The pid of the daemon serving the unionfs mount at ``mountpoint`` (asked through the
    virtual ``user.unionfs.pid`` attribute of its root), or ``None``."""
    try:
        return int(os.getxattr(mountpoint, XATTR_PID))
    except (OSError, ValueError):
        return None


def umount(mountpoint: str, *, lazy: bool = False, timeout: float = 30.0) -> None:
    """Unmount ``mountpoint`` and wait until its daemon has exited (so the same upper and work
    dirs can be mounted again at once). Raises ``MountError`` with the reason when nothing is
    mounted there or the mount is busy (EBUSY)."""
    real = os.path.realpath(mountpoint)
    info = mount_at(real)
    if info is None:
        raise MountError(f"{mountpoint}: not mounted")
    pid = daemon_pid(real) if is_unionfs(info) else None
    if info.fstype.startswith("fuse"):
        cmd = ["fusermount3", "-u"] + (["-z"] if lazy else []) + [real]
    else:
        cmd = ["umount"] + (["-l"] if lazy else []) + [real]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        err = (r.stderr or r.stdout).strip()
        if "busy" in err.lower():
            raise MountError(f"{mountpoint}: target is busy (a process has a file open or its "
                             "working directory there); nothing was unmounted")
        raise MountError(err or f"{mountpoint}: unmount failed")
    if pid is not None:
        wait_exit(pid, timeout)


def wait_exit(pid: int, timeout: float) -> bool:
    """Wait until process ``pid`` is gone (or a zombie); True if it went in time."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with open(f"/proc/{pid}/stat", "rb") as f:
                state = f.read().rsplit(b")", 1)[1].split()[0]
            if state in (b"Z", b"X"):
                return True
        except (FileNotFoundError, ProcessLookupError, IndexError):
            return True
        time.sleep(0.01)
    return False


# ---------------------------------------------------------------------------------------------
# asking a live mount

def query_which(path: str) -> dict:
    """The provenance of ``path`` on a live unionfs mount, from its daemon, as a dict whose
    ``"text"`` says it in words. Raises ``OSError``: ENOENT when ``path`` does not exist,
    EINVAL when it is not on a unionfs mount."""
    import errno
    import json
    import stat

    st = os.lstat(path)  # ENOENT before anything else
    parent, name = os.path.split(os.path.abspath(path))
    info = mount_containing(parent if stat.S_ISLNK(st.st_mode) else path)
    if not is_unionfs(info):
        raise OSError(errno.EINVAL, "not on a unionfs mount", path)
    if stat.S_ISREG(st.st_mode) or stat.S_ISDIR(st.st_mode):
        raw = os.getxattr(path, XATTR_WHICH, follow_symlinks=False)
    else:
        # user.* attributes exist only on files and directories: ask the parent about it
        raw = os.getxattr(parent, f"{XATTR_WHICH}.{name}")
    return json.loads(raw)
