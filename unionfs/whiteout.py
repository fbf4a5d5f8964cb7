"""The on-disk forms of whiteouts, opaque directories and the other overlayfs markers.

This is the only module that knows how a deletion or an opaque directory is spelled in a
directory on disk. Everything above it sees ``Entry(kind=Kind.WHITEOUT)`` and
``Entry(opaque=True)``.

Forms read (all of them, in every layer, whatever format the layer writes):

=====================  ==========================================================================
whiteout               a character device with rdev 0/0 (the kernel's own form);
                       a zero-size regular file carrying ``trusted.overlay.whiteout`` or
                       ``user.overlay.whiteout`` inside a directory marked
                       ``overlay.opaque="x"`` (kernel >= 6.8) or carrying ``overlay.whiteouts``
                       (kernel 6.7) -- the kernel's "xattr whiteout";
                       an OCI/AUFS marker file ``.wh.NAME`` (hides ``NAME``)
opaque directory       ``trusted.overlay.opaque="y"`` or ``user.overlay.opaque="y"``
                       (fuse-overlayfs also ``user.fuseoverlayfs.opaque="y"``);
                       an OCI marker file ``.wh..wh..opq`` inside the directory
redirect               ``trusted.overlay.redirect`` / ``user.overlay.redirect``: an absolute
                       path from the layer root, or a plain name relative to the parent
metacopy               ``trusted.overlay.metacopy`` / ``user.overlay.metacopy`` present
=====================  ==========================================================================

Forms written (``Format``):

- ``OVERLAY``: what the kernel writes by default: char device 0/0 whiteouts and
  ``trusted.overlay.*`` xattrs. Needs ``CAP_MKNOD`` and ``CAP_SYS_ADMIN`` (root).
- ``USER``: what the kernel reads with ``-o userxattr``: ``user.overlay.*`` xattrs. Whiteouts
  are char devices 0/0 when ``mknod`` is allowed (root, or inside a user namespace), otherwise
  the xattr whiteout (zero-size file with ``user.overlay.whiteout``, parent marked
  ``user.overlay.opaque="x"``), which needs no privilege at all.
- ``OCI``: ``.wh.NAME`` files and ``.wh..wh..opq``; needs nothing but plain files. This is
  what fuse-overlayfs falls back to when ``mknod`` fails with ``EPERM``.

``default_format(dir)`` probes a directory and picks the first that works, in that order.

Names starting with ``.wh.`` are reserved in every format: a layer never shows them.
"""

from __future__ import annotations

import contextlib
import enum
import errno
import os
import stat
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass

from .errors import Exists, NotSupported, from_oserror

#: OCI/AUFS whiteout prefix: ``.wh.NAME`` hides ``NAME``.
WH_PREFIX = ".wh."
#: OCI/AUFS marker of an opaque directory.
OPAQUE_MARKER = ".wh..wh..opq"
#: AUFS meta prefix (``.wh..wh.plnk`` and friends): never shown, never a whiteout.
WH_META_PREFIX = ".wh..wh."

TRUSTED = "trusted.overlay."
USER = "user.overlay."
FUSE_OVERLAYFS_OPAQUE = "user.fuseoverlayfs.opaque"
#: every xattr prefix that is overlay-private (never shown to users of the union)
PRIVATE_PREFIXES = (TRUSTED, USER, "user.fuseoverlayfs.")

#: escaped overlay-namespace xattrs: a user's ``trusted.overlay.x`` is stored as
#: ``trusted.overlay.overlay.x`` (the kernel's escaping, 6.7+)
ESCAPED_PREFIXES = (TRUSTED + "overlay.", USER + "overlay.")

#: the engine's own private record of a copied-up object's union inode number; lives in the
#: overlay namespace so the kernel hides it and otherwise ignores it
INO_SUFFIX = "unionfs.ino"


class Format(enum.Enum):
    """How a writable layer spells whiteouts and overlay metadata on disk."""

    OVERLAY = "overlay"
    USER = "user"
    OCI = "oci"

    @property
    def xattr_prefix(self) -> str | None:
        """``trusted.overlay.``, ``user.overlay.``, or ``None`` for OCI."""
        return {Format.OVERLAY: TRUSTED, Format.USER: USER}.get(self)


@dataclass(frozen=True, slots=True)
class Marks:
    """The overlay metadata decoded from one object on disk."""

    whiteout: bool = False
    opaque: bool = False
    #: the directory holds xattr whiteouts (``overlay.opaque="x"`` or ``overlay.whiteouts``)
    xwhiteouts: bool = False
    redirect: str | None = None
    metacopy: bool = False
    #: the union inode number recorded at copy-up by this engine
    origin_ino: int | None = None


@dataclass(frozen=True, slots=True)
class ScanItem:
    """One visible name of a directory on disk, decoded.

    ``name`` is the union name; ``host_name`` the name on disk (differs for ``.wh.NAME``).
    ``whiteout`` says it is a deletion marker; ``st`` is the host ``lstat`` of ``host_name``.
    """

    name: str
    host_name: str
    whiteout: bool
    st: os.stat_result


def is_private_xattr(name: str) -> bool:
    """True for overlay-private xattrs (``trusted.overlay.*``, ``user.overlay.*``,
    ``user.fuseoverlayfs.*``): the union hides them. Escaped names
    (``trusted.overlay.overlay.*``) are not private: they hold a user's own overlay-namespace
    xattr, shown unescaped (kernel >= 6.7)."""
    return name.startswith(PRIVATE_PREFIXES) and not name.startswith(ESCAPED_PREFIXES)


def escape_xattr(name: str) -> str:
    """The on-disk name of a user's xattr: overlay-namespace names get one more
    ``overlay.`` (``trusted.overlay.x`` -> ``trusted.overlay.overlay.x``)."""
    for prefix in (TRUSTED, USER):
        if name.startswith(prefix):
            return prefix + "overlay." + name[len(prefix):]
    return name


def unescape_xattr(name: str) -> str:
    """Inverse of ``escape_xattr`` for names read from disk."""
    for prefix in ESCAPED_PREFIXES:
        if name.startswith(prefix):
            return name[:len(prefix) - len("overlay.")] + name[len(prefix):]
    return name


def is_reserved_name(name: str) -> bool:
    """True for names starting with ``.wh.``: on-disk markers, never union names."""
    return name.startswith(WH_PREFIX)


def whiteout_target(name: str) -> str | None:
    """``".wh.foo"`` -> ``"foo"``; ``None`` for other names and for ``.wh..wh.*`` meta names."""
    if name.startswith(WH_PREFIX) and not name.startswith(WH_META_PREFIX):
        target = name[len(WH_PREFIX):]
        return target or None
    return None


def is_chardev_whiteout(st: os.stat_result) -> bool:
    """True for the kernel's whiteout: a character device with device number 0/0."""
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == 0


def _getxattr(path: str, name: str) -> bytes | None:
    try:
        return os.getxattr(path, name, follow_symlinks=False)
    except OSError as e:
        if e.errno in (errno.ENODATA, errno.ENOTSUP, errno.EPERM, errno.E2BIG, errno.ERANGE):
            return None
        raise


def _listxattr(path: str) -> list[str]:
    try:
        return os.listxattr(path, follow_symlinks=False)
    except OSError as e:
        if e.errno in (errno.ENOTSUP, errno.EPERM):
            return []
        raise


def read_xattrs(path: str) -> tuple[tuple[tuple[str, bytes], ...], Marks]:
    """All xattrs of the host object ``path`` (not following symlinks), split into the
    user-visible ones (sorted ``(name, value)`` pairs) and the decoded overlay ``Marks``.

    The chardev whiteout and the ``.wh.`` forms are not seen here (they are not xattrs);
    ``Marks.whiteout`` only reports the xattr flag, which is a whiteout only when the object
    is a zero-size file in a directory with ``Marks.xwhiteouts``.
    """
    names = _listxattr(path)
    if not names:  # the common case: nothing to decode
        return (), _NO_MARKS
    visible: list[tuple[str, bytes]] = []
    private: dict[str, bytes] = {}
    for name in names:
        value = _getxattr(path, name)
        if value is None:
            continue
        if is_private_xattr(name):
            private[name] = value
        else:
            visible.append((unescape_xattr(name), value))
    visible.sort()
    return tuple(visible), marks_from_private(private)


_NO_MARKS = Marks()


def marks_from_private(private: dict[str, bytes]) -> Marks:
    """Decode overlay-private xattrs (``name -> value``) into ``Marks``; the trusted form
    wins over the user form when both are present."""

    def get(suffix: str) -> bytes | None:
        for prefix in (TRUSTED, USER):
            if prefix + suffix in private:
                return private[prefix + suffix]
        return None

    opaque_v = get("opaque")
    if opaque_v is None:
        opaque_v = private.get(FUSE_OVERLAYFS_OPAQUE)
    opaque = opaque_v is not None and opaque_v[:1] == b"y"
    xwhiteouts = (opaque_v is not None and opaque_v[:1] == b"x") or get("whiteouts") is not None
    redirect_v = get("redirect")
    redirect = os.fsdecode(redirect_v) if redirect_v else None
    ino_v = get(INO_SUFFIX)
    origin = None
    if ino_v:
        with contextlib.suppress(ValueError):
            origin = int(ino_v.decode("ascii"))
    return Marks(whiteout=get("whiteout") is not None, opaque=opaque, xwhiteouts=xwhiteouts,
                 redirect=redirect, metacopy=get("metacopy") is not None, origin_ino=origin)


def read_marks(path: str) -> Marks:
    """The overlay ``Marks`` of the host object ``path`` (xattrs only; an OCI opaque marker
    inside a directory is reported by ``scan_dir``/``dir_has_opaque_marker``)."""
    return read_xattrs(path)[1]


def dir_has_opaque_marker(dirpath: str) -> bool:
    """True when the directory holds the OCI ``.wh..wh..opq`` marker."""
    return os.path.lexists(os.path.join(dirpath, OPAQUE_MARKER))


def is_opaque_dir(dirpath: str) -> bool:
    """True when the host directory is opaque in any form."""
    return read_marks(dirpath).opaque or dir_has_opaque_marker(dirpath)


def is_xattr_whiteout(path: str, st: os.stat_result, parent_marks: Marks) -> bool:
    """True for the kernel's xattr whiteout: a zero-size regular file with
    ``overlay.whiteout`` in a directory whose marks say it holds such whiteouts."""
    if not (parent_marks.xwhiteouts and stat.S_ISREG(st.st_mode) and st.st_size == 0):
        return False
    return (_getxattr(path, TRUSTED + "whiteout") is not None
            or _getxattr(path, USER + "whiteout") is not None)


def scan_dir(dirpath: str, marks: Marks | None = None) -> tuple[list[ScanItem], bool]:
    """Decode one host directory: its visible names (whiteouts included, as their union names,
    flagged) and whether it is opaque in any form.

    ``marks`` are the directory's own marks when the caller already has them. A ``.wh.NAME``
    marker and a real ``NAME`` in the same directory cannot both be meant; the marker wins,
    as OCI applies whiteouts before the layer's own entries. Raises the host ``OSError``.
    """
    if marks is None:
        marks = read_marks(dirpath)
    opaque = marks.opaque
    items: dict[str, ScanItem] = {}
    oci_whiteouts: dict[str, ScanItem] = {}
    with os.scandir(dirpath) as it:
        for de in it:
            name = de.name
            if name.startswith(WH_PREFIX):
                if name == OPAQUE_MARKER:
                    opaque = True
                    continue
                target = whiteout_target(name)
                if target is not None:
                    oci_whiteouts[target] = ScanItem(target, name, True,
                                                     de.stat(follow_symlinks=False))
                continue  # .wh..wh.* meta names (aufs plnk and the like) are never shown
            st = de.stat(follow_symlinks=False)
            wh = is_chardev_whiteout(st) or (
                marks.xwhiteouts and is_xattr_whiteout(de.path, st, marks))
            items[name] = ScanItem(name, name, wh, st)
    items.update(oci_whiteouts)
    return list(items.values()), opaque


def find_whiteout(parent_dir: str, name: str) -> str | None:
    """The host path of the marker that whites out ``name`` in ``parent_dir`` in any form, or
    ``None`` when ``name`` is not whited out there."""
    oci = os.path.join(parent_dir, WH_PREFIX + name)
    if os.path.lexists(oci):
        return oci
    path = os.path.join(parent_dir, name)
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return None
    if is_chardev_whiteout(st):
        return path
    if stat.S_ISREG(st.st_mode) and st.st_size == 0 and is_xattr_whiteout(
            path, st, read_marks(parent_dir)):
        return path
    return None


# --------------------------------------------------------------------------- writing


def write_whiteout(parent_dir: str | os.PathLike, name: str, fmt: Format, *,
                   known_absent: bool = False) -> str:
    """Place a whiteout for ``name`` in the host directory ``parent_dir`` in format ``fmt``;
    return the host path written. Idempotent when ``name`` is already whited out.

    ``USER`` writes a char device 0/0 when ``mknod`` is allowed, else the xattr whiteout.
    Raises ``Exists`` (EEXIST) when a real object named ``name`` is there, ``NotPermitted``
    (EPERM) when ``OVERLAY`` is asked for without the privilege to ``mknod``.
    ``known_absent``: the caller knows nothing is there under ``name`` in any form, no
    whiteout either (skips the probes: the caller's promise; a char device whiteout still
    fails with EEXIST over an object there after all, an OCI marker is another name).
    """
    parent_dir = os.fspath(parent_dir)
    path = os.path.join(parent_dir, name)
    if not known_absent:
        found = find_whiteout(parent_dir, name)
        if found is not None:
            return found
        if os.path.lexists(path):
            raise Exists(path)
    try:
        if fmt is Format.OCI:
            oci = os.path.join(parent_dir, WH_PREFIX + name)
            fd = os.open(oci, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            os.close(fd)
            return oci
        if fmt is Format.OVERLAY:
            os.mknod(path, stat.S_IFCHR | 0o000, os.makedev(0, 0))
            return path
        try:  # USER
            os.mknod(path, stat.S_IFCHR | 0o000, os.makedev(0, 0))
            return path
        except PermissionError:
            pass
        _mark_xwhiteouts(parent_dir)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        os.close(fd)
        os.setxattr(path, USER + "whiteout", b"y", follow_symlinks=False)
        return path
    except OSError as e:
        raise from_oserror(e, path) from None


def _mark_xwhiteouts(dirpath: str) -> None:
    """Mark a directory as holding xattr whiteouts (``user.overlay.opaque="x"``) unless it is
    already opaque (an opaque directory needs no whiteouts at all)."""
    current = _getxattr(dirpath, USER + "opaque")
    if current is None or current[:1] not in (b"y", b"x"):
        os.setxattr(dirpath, USER + "opaque", b"x", follow_symlinks=False)


def remove_whiteout(parent_dir: str | os.PathLike, name: str) -> bool:
    """Remove the whiteout for ``name`` in ``parent_dir``, whatever its form; return whether
    there was one."""
    parent_dir = os.fspath(parent_dir)
    path = find_whiteout(parent_dir, name)
    if path is None:
        return False
    try:
        os.unlink(path)
    except OSError as e:
        raise from_oserror(e, path) from None
    return True


def write_opaque(dirpath: str | os.PathLike, fmt: Format, opaque: bool = True) -> None:
    """Mark the host directory ``dirpath`` opaque in format ``fmt`` (or clear every form of
    the mark when ``opaque`` is false). Raises the engine error for the host failure
    (EPERM for trusted xattrs without privilege, EOPNOTSUPP without xattr support)."""
    dirpath = os.fspath(dirpath)
    try:
        if opaque:
            if fmt is Format.OCI:
                fd = os.open(os.path.join(dirpath, OPAQUE_MARKER),
                             os.O_WRONLY | os.O_CREAT, 0o600)
                os.close(fd)
            else:
                os.setxattr(dirpath, fmt.xattr_prefix + "opaque", b"y",  # type: ignore[operator]
                            follow_symlinks=False)
            return
        with contextlib.suppress(FileNotFoundError):
            os.unlink(os.path.join(dirpath, OPAQUE_MARKER))
        for name in (TRUSTED + "opaque", USER + "opaque", FUSE_OVERLAYFS_OPAQUE):
            value = _getxattr(dirpath, name)
            if value is None or value[:1] != b"y":
                continue
            if name == USER + "opaque" and _has_xattr_whiteouts(dirpath):
                os.setxattr(dirpath, name, b"x", follow_symlinks=False)
            else:
                os.removexattr(dirpath, name, follow_symlinks=False)
    except OSError as e:
        raise from_oserror(e, dirpath) from None


def _has_xattr_whiteouts(dirpath: str) -> bool:
    with os.scandir(dirpath) as it:
        for de in it:
            if de.is_file(follow_symlinks=False) and (
                    _getxattr(de.path, USER + "whiteout") is not None
                    or _getxattr(de.path, TRUSTED + "whiteout") is not None):
                return True
    return False


def write_private(path: str | os.PathLike, suffix: str, value: bytes | None,
                  fmt: Format) -> None:
    """Set (or remove, when ``value`` is None) the overlay-private xattr ``<prefix>suffix``
    (e.g. ``redirect``, ``metacopy``) on the host object ``path``. Raises ``NotSupported``
    (EOPNOTSUPP) for the OCI format, which has no place for it."""
    path = os.fspath(path)
    prefix = fmt.xattr_prefix
    if prefix is None:
        raise NotSupported(path, f"the OCI whiteout format cannot record overlay.{suffix}")
    try:
        if value is None:
            for p in (TRUSTED, USER):
                with contextlib.suppress(OSError):
                    os.removexattr(path, p + suffix, follow_symlinks=False)
        else:
            os.setxattr(path, prefix + suffix, value, follow_symlinks=False)
    except OSError as e:
        raise from_oserror(e, path) from None


def write_redirect(dirpath: str | os.PathLike, target: str | None, fmt: Format) -> None:
    """Record the kernel's ``overlay.redirect`` on a directory: ``target`` is an absolute
    union path (``/a/b``) or a plain name in the same parent; ``None`` clears it."""
    write_private(dirpath, "redirect", None if target is None else os.fsencode(target), fmt)


def write_metacopy(path: str | os.PathLike, metacopy: bool, fmt: Format) -> None:
    """Set or clear the kernel's ``overlay.metacopy`` (empty value) on a regular file."""
    write_private(path, "metacopy", b"" if metacopy else None, fmt)


# --------------------------------------------------------------------------- probing


def _probe(dirpath: str) -> Iterator[Format]:
    """Yield every format this directory and this process's privilege allow, best first."""
    with tempfile.TemporaryDirectory(prefix=".unionfs-probe-", dir=dirpath) as tmp:
        node = os.path.join(tmp, "wh")
        can_mknod = True
        try:
            os.mknod(node, stat.S_IFCHR | 0o000, os.makedev(0, 0))
        except OSError:
            can_mknod = False
        try:
            os.setxattr(tmp, TRUSTED + "opaque", b"y")
            trusted = os.getxattr(tmp, TRUSTED + "opaque") == b"y"
        except OSError:
            trusted = False
        if can_mknod and trusted:
            yield Format.OVERLAY
        try:
            os.setxattr(tmp, USER + "opaque", b"y")
            user = True
        except OSError:
            user = False
        if user:
            yield Format.USER
        yield Format.OCI


def default_format(dirpath: str | os.PathLike) -> Format:
    """The best format the host directory ``dirpath`` supports for this process, probed with
    a scratch directory inside it: ``OVERLAY`` (root: mknod 0/0 and trusted xattrs), else
    ``USER`` (user xattrs), else ``OCI`` (plain files), the order fuse-overlayfs falls back
    in. Raises the host error when ``dirpath`` is not a writable directory."""
    try:
        return next(_probe(os.fspath(dirpath)))
    except OSError as e:
        raise from_oserror(e, os.fspath(dirpath)) from None


# ---------------------------------------------------------------------------------------------
# the kernel's origin file handles, index names and nlink records (index=on)
# ---------------------------------------------------------------------------------------------
#
# With index=on, kernel overlayfs copies a lower hard link up into ``<workdir>/index/<name>``,
# where ``name`` is the hex of the lower file's handle encoded as ``struct ovl_fb``
# (fs/overlayfs/overlayfs.h): version 0, magic 0xfb, total length, flags (bit 0: big-endian
# host), the handle type of exportfs, the 16-byte uuid of the lower filesystem (the null uuid
# when mounted with ``uuid=off``) and the handle itself, exactly what ``name_to_handle_at(2)``
# returns. The same bytes are the ``overlay.origin`` xattr of the copied-up file. The union
# nlink of such a group is kept in ``overlay.nlink`` as ``"U%+d"`` (relative to the upper
# inode's nlink) or ``"L%+d"`` (relative to the lower's), see ovl_get_nlink().

OVL_FH_VERSION = 0
OVL_FH_MAGIC = 0xFB
_OVL_FH_FLAG_BIG_ENDIAN = 1
#: version, magic, len, flags, type, uuid
_OVL_FB_HEADER = 5 + 16
_NULL_UUID = bytes(16)
_MAX_HANDLE_SZ = 128
_AT_FDCWD = -100
#: FS_IOC_GETFSUUID = _IOR(0x15, 0, struct fsuuid2 {u8 len; u8 uuid[16];}), Linux >= 6.5
_FS_IOC_GETFSUUID = 0x80111500
NLINK_SUFFIX = "nlink"


@dataclass(frozen=True, slots=True)
class OriginHandle:
    """A lower file's handle as overlayfs records it: ``handle_type`` and ``fid`` from
    ``name_to_handle_at(2)``, ``uuid`` of its filesystem (``None`` when this kernel cannot
    tell it: ``FS_IOC_GETFSUUID`` is Linux >= 6.5)."""

    handle_type: int
    fid: bytes
    uuid: bytes | None

    def encode(self, uuid: bytes) -> bytes:
        """The ``struct ovl_fb`` bytes with ``uuid`` (the ``overlay.origin`` value)."""
        flags = _OVL_FH_FLAG_BIG_ENDIAN if sys.byteorder == "big" else 0
        return bytes((OVL_FH_VERSION, OVL_FH_MAGIC, _OVL_FB_HEADER + len(self.fid), flags,
                      self.handle_type)) + uuid + self.fid

    def index_names(self) -> tuple[str, ...]:
        """The names the kernel may have given this file's index entry: with the
        filesystem's uuid (``uuid=on``/``auto``/``null``) or the null uuid (``uuid=off``)."""
        uuids = [u for u in (self.uuid, _NULL_UUID) if u is not None]
        return tuple(dict.fromkeys(self.encode(u).hex() for u in uuids))

    def matches(self, name: str) -> bool:
        """True when ``name`` is an index name of this handle with any uuid (for kernels
        that cannot report the filesystem's uuid)."""
        try:
            raw = bytes.fromhex(name)
        except ValueError:
            return False
        mine = self.encode(_NULL_UUID)
        return len(raw) == len(mine) and raw[:5] == mine[:5] and \
            raw[_OVL_FB_HEADER:] == self.fid


_libc_fn = None


def _name_to_handle_at():
    global _libc_fn
    if _libc_fn is None:
        import ctypes

        try:
            fn = ctypes.CDLL(None, use_errno=True).name_to_handle_at
        except (OSError, AttributeError):
            fn = False
        else:
            fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_void_p,
                           ctypes.POINTER(ctypes.c_int), ctypes.c_int]
            fn.restype = ctypes.c_int
        _libc_fn = fn
    return _libc_fn or None


def _fs_uuid(dirpath: str) -> bytes | None:
    """The 16-byte ``s_uuid`` of the filesystem holding ``dirpath``, or None when the kernel
    cannot report it."""
    import fcntl

    try:
        fd = os.open(dirpath, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        buf = bytearray(17)
        fcntl.ioctl(fd, _FS_IOC_GETFSUUID, buf)
    except OSError:
        return None
    finally:
        os.close(fd)
    n = min(buf[0], 16)
    return bytes(buf[1:1 + n]).ljust(16, b"\0")


def origin_handle(host: str) -> OriginHandle | None:
    """The overlayfs origin handle of the host object ``host`` (not following a symlink), or
    None when its filesystem cannot encode file handles (then the kernel keeps no index for
    it either)."""
    import ctypes
    import struct

    fn = _name_to_handle_at()
    if fn is None:
        return None
    buf = ctypes.create_string_buffer(8 + _MAX_HANDLE_SZ)
    struct.pack_into("=Ii", buf, 0, _MAX_HANDLE_SZ, 0)
    mount_id = ctypes.c_int()
    if fn(_AT_FDCWD, os.fsencode(host), buf, ctypes.byref(mount_id), 0) != 0:
        return None
    nbytes, htype = struct.unpack_from("=Ii", buf, 0)
    if not 0 <= htype < 0xFF or nbytes > _MAX_HANDLE_SZ:
        return None  # FILEID_INVALID, or a type the one-byte ovl_fb field cannot hold
    return OriginHandle(htype, buf.raw[8:8 + nbytes], _fs_uuid(os.path.dirname(host) or "."))


def read_nlink(path: str) -> tuple[str, str, int] | None:
    """The kernel's ``overlay.nlink`` record of the host object ``path``:
    ``(xattr name, "U" or "L", difference)``, or None when absent or malformed (the kernel
    then falls back to the real nlink)."""
    for prefix in (TRUSTED, USER):
        v = _getxattr(path, prefix + NLINK_SUFFIX)
        if v is None:
            continue
        if v[:1] not in (b"U", b"L") or v[1:2] not in (b"+", b"-"):
            return None
        try:
            return prefix + NLINK_SUFFIX, v[:1].decode(), int(v[1:].decode("ascii"))
        except ValueError:
            return None
    return None


def write_nlink(path: str, name: str, base: str, diff: int) -> None:
    """Write the kernel's ``overlay.nlink`` record (``name`` from ``read_nlink``)."""
    try:
        os.setxattr(path, name, f"{base}{diff:+d}".encode(), follow_symlinks=False)
    except OSError as e:
        raise from_oserror(e, path) from None


__all__ = [
    "ESCAPED_PREFIXES",
    "FUSE_OVERLAYFS_OPAQUE",
    "INO_SUFFIX",
    "OPAQUE_MARKER",
    "PRIVATE_PREFIXES",
    "TRUSTED",
    "USER",
    "WH_META_PREFIX",
    "WH_PREFIX",
    "Format",
    "Marks",
    "OriginHandle",
    "ScanItem",
    "default_format",
    "dir_has_opaque_marker",
    "escape_xattr",
    "find_whiteout",
    "is_chardev_whiteout",
    "is_opaque_dir",
    "is_private_xattr",
    "is_reserved_name",
    "is_xattr_whiteout",
    "marks_from_private",
    "origin_handle",
    "read_marks",
    "read_nlink",
    "read_xattrs",
    "remove_whiteout",
    "scan_dir",
    "unescape_xattr",
    "whiteout_target",
    "write_metacopy",
    "write_nlink",
    "write_opaque",
    "write_private",
    "write_redirect",
    "write_whiteout",
]
