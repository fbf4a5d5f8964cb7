"""Volumes: ``-v`` specs, bind mounts, named and anonymous volumes, ``--volumes-from``.

What docker does, done on host directories:

- ``-v /host/path:/ctr/path[:ro|:rw]`` binds a host directory or a single host file; the host
  path replaces that path in the container's view (image content underneath is hidden); a
  missing host path is created as a directory.
- ``-v NAME:/path`` uses the named volume ``NAME`` (created on first use); ``-v /path`` and the
  image's ``VOLUME`` entries get a new anonymous volume (a 64-hex name). A volume that is
  empty when first mounted is pre-filled with the image's content at that path (unless
  ``nocopy``), as docker does.
- ``--volumes-from C[:ro|:rw]`` repeats every mount of container ``C``.

Volumes live in ``ROOT/volumes/<name>/_data`` (docker's layout); their records are in the
store's state document (namespace ``volumes``). Data in volumes survives the containers;
``rm -v`` removes anonymous volumes only; a volume in use cannot be removed (``Conflict``).
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import re
import secrets
import shutil
import stat
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from unionfs import path as upath
from unionfs.mounts import HostFS, Mount, copy_tree

from .errors import Conflict, ImageSimError

VOLUME_NAME = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]+$")
#: the options docker accepts after the last colon of a -v spec (Linux)
_MODE_WORDS = {"rw", "ro", "z", "Z", "nocopy", "consistent", "cached", "delegated",
               "shared", "rshared", "slave", "rslave", "private", "rprivate"}
ANONYMOUS_LABEL = "com.docker.volume.anonymous"


class VolumeSpecInvalid(ImageSimError):
    """A ``-v`` spec docker would refuse (``invalid volume specification``)."""

    code = "INVALID"
    status = 400


class VolumeNotFound(ImageSimError):
    code = "NOT_FOUND"
    status = 404


def now_rfc3339() -> str:
    """Current UTC time as docker writes it (RFC 3339 with nanoseconds, ``Z``)."""
    t = _dt.datetime.now(_dt.UTC)
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond:06d}000Z"


# -- -v specs ------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class VolumeSpec:
    """One parsed ``-v`` argument. ``type`` is ``"bind"`` or ``"volume"``; ``source`` is the
    absolute host path (bind), the volume name (named volume) or ``""`` (anonymous)."""

    type: str
    source: str
    destination: str
    mode: str = ""

    @property
    def read_only(self) -> bool:
        return "ro" in self.mode.split(",")

    @property
    def nocopy(self) -> bool:
        return "nocopy" in self.mode.split(",")

    @property
    def anonymous(self) -> bool:
        return self.type == "volume" and not self.source


def _check_mode(mode: str, spec: str) -> None:
    words = [w for w in mode.split(",") if w]
    if not words or any(w not in _MODE_WORDS for w in words) or (
            "ro" in words and "rw" in words):
        raise VolumeSpecInvalid(f"invalid mode: {mode}")
    del spec


def parse_volume_spec(spec: str, cwd: str | None = None) -> VolumeSpec:
    """Parse ``-v SRC:DST[:MODE]`` / ``-v NAME:DST[:MODE]`` / ``-v DST[:MODE]`` as docker does
    on Linux. A relative host path (``./x``) is taken from ``cwd``. Raises
    ``VolumeSpecInvalid`` with docker's wording."""
    if not spec:
        raise VolumeSpecInvalid("invalid empty volume spec")
    parts = spec.split(":")
    mode = ""
    if len(parts) == 1:
        source, dest = "", parts[0]
    elif len(parts) == 2:
        if parts[1] and not parts[1].startswith("/") and parts[0].startswith("/") and all(
                w in _MODE_WORDS for w in parts[1].split(",")):
            source, dest, mode = "", parts[0], parts[1]
        else:
            source, dest = parts
    elif len(parts) == 3:
        source, dest, mode = parts
    else:
        raise VolumeSpecInvalid(f"invalid volume specification: '{spec}'")
    if mode:
        _check_mode(mode, spec)
    if not dest.startswith("/"):
        raise VolumeSpecInvalid(
            f"invalid volume specification: '{spec}': invalid mount config for type "
            f"\"{'bind' if source.startswith(('/', '.')) else 'volume'}\": invalid mount path: "
            f"'{dest}' mount path must be absolute")
    dest = upath.normalize(dest)
    if dest == "/":
        raise VolumeSpecInvalid(f"invalid volume specification: '{spec}': "
                                "invalid mount config: destination can't be '/'")
    if not source:
        return VolumeSpec("volume", "", dest, mode)
    if source.startswith(("/", ".", "~")):
        host = os.path.expanduser(source)
        host = os.path.normpath(os.path.join(cwd or os.getcwd(), host))
        return VolumeSpec("bind", host, dest, mode)
    if not VOLUME_NAME.match(source):
        raise VolumeSpecInvalid(
            f"create {source}: \"{source}\" includes invalid characters for a local volume "
            "name, only \"[a-zA-Z0-9][a-zA-Z0-9_.-]\" are allowed. If you intended to pass a "
            "host directory, use absolute path")
    return VolumeSpec("volume", source, dest, mode)


def parse_volumes_from(arg: str) -> tuple[str, str]:
    """``C[:ro|:rw]`` -> ``(container, mode)`` with mode ``""``, ``"ro"`` or ``"rw"``."""
    name, _, mode = arg.partition(":")
    if mode not in ("", "ro", "rw") or not name:
        raise VolumeSpecInvalid(f"invalid mode: {mode}" if name else
                                f"invalid volumes-from specification: '{arg}'")
    return name, mode


# -- mount points (what a container records) --------------------------------------------

@dataclass(frozen=True, slots=True)
class MountPoint:
    """One mount of a container, as ``docker inspect`` shows it under ``Mounts``."""

    type: str              # "bind" | "volume"
    source: str            # host path (a volume's _data directory for volumes)
    destination: str
    mode: str = ""
    rw: bool = True
    name: str = ""         # the volume name (volumes only)
    anonymous: bool = False

    def to_docker(self) -> dict[str, Any]:
        """The ``Mounts`` element of ``docker inspect`` (same keys and order)."""
        if self.type == "bind":
            return {"Type": "bind", "Source": self.source, "Destination": self.destination,
                    "Mode": self.mode, "RW": self.rw, "Propagation": "rprivate"}
        return {"Type": "volume", "Name": self.name, "Source": self.source,
                "Destination": self.destination, "Driver": "local", "Mode": self.mode,
                "RW": self.rw, "Propagation": ""}

    def to_record(self) -> dict[str, Any]:
        return {"type": self.type, "source": self.source, "destination": self.destination,
                "mode": self.mode, "rw": self.rw, "name": self.name,
                "anonymous": self.anonymous}

    @classmethod
    def from_record(cls, d: dict[str, Any]) -> MountPoint:
        return cls(d["type"], d["source"], d["destination"], d.get("mode", ""),
                   bool(d.get("rw", True)), d.get("name", ""), bool(d.get("anonymous")))

    def host_fs(self) -> HostFS:
        """The host side as a filesystem (EROFS for writes when not ``rw``)."""
        return HostFS(self.source, read_only=not self.rw)

    def as_mount(self) -> Mount:
        return Mount(self.destination, self.host_fs(), read_only=not self.rw)


# -- the volume store ------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Volume:
    """A named or anonymous volume of the local driver."""

    name: str
    mountpoint: str
    created: str
    labels: dict[str, str] = field(default_factory=dict)
    options: dict[str, str] | None = None
    anonymous: bool = False

    def to_docker(self) -> dict[str, Any]:
        """``docker volume inspect``'s object (keys in docker's order)."""
        return {"CreatedAt": self.created[:19] + "Z", "Driver": "local",
                "Labels": dict(self.labels) or None, "Mountpoint": self.mountpoint,
                "Name": self.name, "Options": self.options, "Scope": "local"}

    def size(self) -> int:
        total = 0
        for d, _, files in os.walk(self.mountpoint):
            for f in files:
                try:
                    total += os.lstat(os.path.join(d, f)).st_size
                except OSError:
                    pass
        return total


class VolumeStore:
    """Volumes of the local driver: records in the store's state document (namespace
    ``volumes``, changed under the store lock), data in ``ROOT/volumes/<name>/_data``.

    ``store`` is an ``imagesim.store.Store`` (anything with ``root``, ``state_get``,
    ``state_update`` and ``transaction``). ``users(name)`` answers which containers use a
    volume (the container store supplies it) so ``remove`` refuses a volume in use."""

    NAMESPACE = "volumes"

    def __init__(self, store: Any, users: Callable[[str], list[str]] | None = None) -> None:
        self.store = store
        self.root = os.path.join(store.root, "volumes")
        self.users = users or (lambda name: [])
        os.makedirs(self.root, exist_ok=True)

    def _dir(self, name: str) -> str:
        return os.path.join(self.root, name)

    def _volume(self, name: str, d: dict[str, Any]) -> Volume:
        return Volume(name, os.path.join(self._dir(name), "_data"), d["created"],
                      dict(d.get("labels") or {}), d.get("options"), bool(d.get("anonymous")))

    def exists(self, name: str) -> bool:
        return name in (self.store.state_get(self.NAMESPACE) or {})

    def get(self, name: str) -> Volume:
        """The volume ``name`` (``VolumeNotFound``: ``get NAME: no such volume``)."""
        rec = (self.store.state_get(self.NAMESPACE) or {}).get(name)
        if rec is None:
            raise VolumeNotFound(f"get {name}: no such volume")
        return self._volume(name, rec)

    def create(self, name: str | None = None, labels: dict[str, str] | None = None,
               options: dict[str, str] | None = None, anonymous: bool = False) -> Volume:
        """Create a volume (a new 64-hex name when ``name`` is None); an existing name is
        returned as it is, as docker does. ``VolumeSpecInvalid`` for a bad name."""
        if name is None:
            name = secrets.token_hex(32)
        if not VOLUME_NAME.match(name):
            raise VolumeSpecInvalid(
                f"create {name}: \"{name}\" includes invalid characters for a local volume "
                "name, only \"[a-zA-Z0-9][a-zA-Z0-9_.-]\" are allowed")
        labels = dict(labels or {})
        if anonymous:
            labels.setdefault(ANONYMOUS_LABEL, "")
        # the directory first: a record never points at a missing directory
        os.makedirs(os.path.join(self._dir(name), "_data"), exist_ok=True)
        record = {"created": now_rfc3339(), "labels": labels, "options": options,
                  "anonymous": anonymous}

        def add(old: dict | None) -> dict:
            vols = dict(old or {})
            vols.setdefault(name, record)
            return vols
        vols = self.store.state_update(self.NAMESPACE, add)
        return self._volume(name, vols[name])

    def list(self) -> list[Volume]:
        vols = self.store.state_get(self.NAMESPACE) or {}
        return [self._volume(n, vols[n]) for n in sorted(vols)]

    def remove(self, name: str, force: bool = False) -> None:
        """Remove a volume and its data. ``Conflict`` when a container uses it (even with
        ``force``, as docker); ``VolumeNotFound`` when absent (unless ``force``)."""
        with self.store.transaction():
            try:
                self.get(name)
            except VolumeNotFound:
                if force:
                    return
                raise
            users = self.users(name)
            if users:
                raise Conflict(f"remove {name}: volume is in use - [{', '.join(users)}]")

            def drop(old: dict | None) -> dict:
                vols = dict(old or {})
                vols.pop(name, None)
                return vols
            self.store.state_update(self.NAMESPACE, drop)
        # the record went first: a crash here leaves data without a record (reclaimable by
        # fsck), never a record pointing at half-deleted data
        trash = os.path.join(self.root, f".trash-{secrets.token_hex(8)}")
        try:
            os.rename(self._dir(name), trash)
        except FileNotFoundError:
            return
        shutil.rmtree(trash, ignore_errors=True)

    def prune(self, all_volumes: bool = False,
              filters: Sequence[str] = ()) -> tuple[list[str], int]:
        """Remove unused volumes (anonymous ones only unless ``all_volumes``, as docker 23+).
        Returns the names removed and the bytes reclaimed."""
        removed, reclaimed = [], 0
        for vol in self.list():
            if not (all_volumes or vol.anonymous) or self.users(vol.name):
                continue
            if not _label_filters_match(vol, filters):
                continue
            size = vol.size()
            try:
                self.remove(vol.name)
            except Conflict:
                continue  # taken by a container created meanwhile
            removed.append(vol.name)
            reclaimed += size
        return removed, reclaimed


def _label_filters_match(vol: Volume, filters: Iterable[str]) -> bool:
    for flt in filters:
        key, _, value = flt.partition("=")
        if key == "label":
            k, eq, v = value.partition("=")
            if k not in vol.labels or (eq and vol.labels[k] != v):
                return False
        elif key == "label!":
            k, eq, v = value.partition("=")
            if k in vol.labels and (not eq or vol.labels[k] == v):
                return False
        elif key == "all":
            continue
        else:
            raise VolumeSpecInvalid(f"invalid filter '{key}'")
    return True


# -- putting a container's mounts together -------------------------------------------------

def resolve_mounts(store: VolumeStore, specs: Sequence[VolumeSpec],
                   inherited: Sequence[tuple[Sequence[MountPoint], str]] = (),
                   image_volumes: Iterable[str] = ()) -> list[MountPoint]:
    """The mounts of a new container, in docker's order of precedence: ``--volumes-from``
    first, then ``-v`` (a later mount at the same destination wins), then an anonymous
    volume for each image ``VOLUME`` nothing else covers. Named volumes are created on
    first use; bind sources that do not exist are created as directories (as docker does).
    ``inherited`` holds ``(mounts of the other container, "ro"|"rw"|"")`` pairs."""
    by_dest: dict[str, MountPoint] = {}
    for mounts, mode in inherited:
        for m in mounts:
            if mode == "ro":
                m = replace(m, rw=False, mode=_set_mode(m.mode, "ro"))
            elif mode == "rw":
                m = replace(m, rw=True, mode=_set_mode(m.mode, "rw"))
            by_dest[m.destination] = m
    for spec in specs:
        by_dest[spec.destination] = _mount_for(store, spec)
    for dest in image_volumes:
        dest = upath.normalize(dest)
        if dest not in by_dest and dest != "/":
            by_dest[dest] = _mount_for(store, VolumeSpec("volume", "", dest, ""))
    return list(by_dest.values())


def _set_mode(mode: str, rw: str) -> str:
    words = [w for w in mode.split(",") if w and w not in ("ro", "rw")]
    return ",".join([*words, rw])


def _mount_for(store: VolumeStore, spec: VolumeSpec) -> MountPoint:
    rw = not spec.read_only
    if spec.type == "bind":
        if not os.path.lexists(spec.source):
            os.makedirs(spec.source, exist_ok=True)
        return MountPoint("bind", spec.source, spec.destination, spec.mode, rw)
    vol = store.create(spec.source or None, anonymous=spec.anonymous)
    return MountPoint("volume", vol.mountpoint, spec.destination, spec.mode, rw, vol.name,
                      vol.anonymous)


def prefill(mount: MountPoint, image_fs: Any) -> bool:
    """Copy the image's content at the mount's destination into an empty volume, as docker
    does on first mount (never for binds, nor with ``nocopy``). ``image_fs`` is the
    container's union before any mount. Returns True when something was copied."""
    if mount.type != "volume" or "nocopy" in mount.mode.split(","):
        return False
    if os.listdir(mount.source):
        return False
    try:
        if not stat.S_ISDIR(image_fs.stat(mount.destination).st_mode):
            return False
        names = image_fs.listdir(mount.destination)
    except OSError:
        return False  # nothing at that path in the image: the volume starts empty
    target = HostFS(mount.source)
    for name in sorted(names):
        copy_tree(image_fs, upath.join(mount.destination, name), target, upath.join("/", name))
    return bool(names)


def mounts_json(mounts: Sequence[MountPoint]) -> str:
    return json.dumps([m.to_docker() for m in mounts], indent=4)
