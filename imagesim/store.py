"""The local store: blobs, unpacked layers shared by every image that uses them, tags.

Layout of ``ROOT`` (``--root``, ``IMAGESIM_ROOT``, default ``~/.local/share/imagesim``)::

    blobs/sha256/<hex>          content-addressed blobs (manifests, configs, layer tars)
    tmp/                        temporary files and directories (same filesystem: renames)
    layers/sha256/<hex>/diff    one unpacked layer per diff id, overlayfs on-disk format,
                                shared by every image that uses it; never written after unpack
    state.msgpack               the versioned state document ({"v": 1, ...})
    state.lock                  the lock file (``flock``) every process takes to change state

The state document holds the image records (by manifest digest), tags (full reference ->
manifest digest), layer records (diff id -> unpacked size, blob digests seen), pins (holder ->
manifest digests: containers pin the images they use), leases (writers that put blobs for an
image not yet recorded) and one free namespace per other module (``state_get`` /
``state_update``: containers and volumes keep their records there). It is written atomically
(temp + fsync + rename) under the lock, so two ``imagesim`` processes never corrupt it or lose
each other's changes.

Errors: ``ImageNotFound`` for a reference or id that names nothing, ``Conflict`` when removing
an image a container uses (or an id that is ambiguous), ``StoreCorrupt`` for a state file from
the future or one that does not parse, ``LayerInvalid`` / ``DigestInvalid`` when a layer blob
does not unpack to its diff id (the store is left as it was).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import re
import shutil
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import msgpack

from . import faults, oci
from .blobs import FileBlobStore
from .digest import Digest
from .errors import (
    BlobUnknown,
    Conflict,
    DigestInvalid,
    ImageNotFound,
    ManifestInvalid,
    ReferenceInvalid,
    StoreCorrupt,
)
from .image import Image
from .reference import Reference

STATE_VERSION = 1
_log = logging.getLogger("imagesim.store")
_HEX_PREFIX = re.compile(r"^(?:sha256:)?([a-f0-9]{1,64})$")
#: a lease older than this is taken to belong to a dead process
LEASE_TTL = 6 * 3600.0


def _lease_live(lease: dict[str, Any], now: float) -> bool:
    """A lease still protects its blobs: younger than ``LEASE_TTL`` and its process alive.
    A writer killed with SIGKILL never drops its lease; without the pid check its blobs and
    temporaries would escape gc and fsck for hours."""
    if now - float(lease["t"]) >= LEASE_TTL:
        return False
    pid = lease.get("pid")
    if not isinstance(pid, int) or pid <= 0:
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # alive, owned by someone else
    return True


def default_root() -> str:
    """``$IMAGESIM_ROOT`` or ``~/.local/share/imagesim``."""
    return os.environ.get("IMAGESIM_ROOT") or os.path.join(
        os.path.expanduser("~"), ".local", "share", "imagesim")


def _empty_state() -> dict[str, Any]:
    return {"v": STATE_VERSION, "images": {}, "tags": {}, "layers": {}, "pins": {},
            "leases": {}, "ns": {}}


@dataclass(frozen=True, slots=True)
class ImageRecord:
    """One image in the store as ``images`` lists it."""

    image: Image
    tags: tuple[Reference, ...]
    added: float
    size: int
    pinned_by: tuple[str, ...] = ()

    @property
    def dangling(self) -> bool:
        return not self.tags


@dataclass(frozen=True, slots=True)
class RemoveResult:
    """What ``remove`` did, as ``rmi`` prints it: ``Untagged: X`` then ``Deleted: Y`` lines."""

    untagged: tuple[str, ...] = ()
    deleted: tuple[str, ...] = ()


@dataclass
class _Removal:
    """The lines ``remove`` collects, in order."""

    untagged: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)

    def result(self) -> RemoveResult:
        return RemoveResult(tuple(self.untagged), tuple(self.deleted))


def _single_reference(refs: list[Reference]) -> bool:
    """docker's ``isSingleReference``: every reference is in one repository and at most one
    of them is a tag (False for none)."""
    tags = [r for r in refs if r.digest is None]
    if len(refs) <= 1:
        return len(refs) == 1
    if len(tags) > 1:
        return False
    name = (tags or refs)[0].name
    return {r.name for r in refs if r.digest} == {name}


@dataclass(frozen=True, slots=True)
class GcResult:
    blobs: tuple[Digest, ...] = ()
    layers: tuple[Digest, ...] = ()
    reclaimed: int = 0


@dataclass(frozen=True, slots=True)
class LayerUsage:
    """One unpacked layer and the images that use it (``system df -v``, ``layers``)."""

    diff_id: Digest
    size: int
    images: tuple[Digest, ...] = field(default=())


class Store:
    """The local image store at ``root`` (created when missing).

    ``store.blobs`` is the ``FileBlobStore`` at ``root``. Every method is safe to call from
    several processes at once; state changes happen under an exclusive ``flock`` on
    ``state.lock`` (re-entrant within one process).
    """

    def __init__(self, root: str | os.PathLike | None = None, *, fsync: bool = True) -> None:
        self.root = os.path.abspath(os.fspath(root) if root is not None else default_root())
        os.makedirs(self.root, exist_ok=True)
        self.fsync = fsync
        self.blobs = FileBlobStore(self.root, fsync=fsync)
        self.layers_root = os.path.join(self.root, "layers", "sha256")
        os.makedirs(self.layers_root, exist_ok=True)
        self.tmp_dir = self.blobs.tmp_dir
        self.state_path = os.path.join(self.root, "state.msgpack")
        self.lock_path = os.path.join(self.root, "state.lock")
        self._lock = threading.RLock()
        self._depth = 0
        self._lock_fd: int | None = None
        self._images: dict[Digest, Image] = {}
        self._tx: dict[str, Any] | None = None
        self._after_commit: list[Callable[[], None]] = []

    def __repr__(self) -> str:
        return f"Store({self.root!r})"

    # -- locking and the state document ----------------------------------------------------

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the store's exclusive lock (re-entrant within this process)."""
        with self._lock:
            if self._depth == 0:
                fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX)
                except BaseException:
                    os.close(fd)
                    raise
                self._lock_fd = fd
            self._depth += 1
            try:
                yield
            finally:
                self._depth -= 1
                if self._depth == 0 and self._lock_fd is not None:
                    fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
                    os.close(self._lock_fd)
                    self._lock_fd = None

    def _read_state(self) -> dict[str, Any]:
        if self._tx is not None:
            return self._tx
        try:
            with open(self.state_path, "rb") as f:
                data = f.read()
        except FileNotFoundError:
            return _empty_state()
        try:
            state = msgpack.unpackb(data, raw=False, strict_map_key=False)
        except Exception as e:  # msgpack raises several unrelated types
            raise StoreCorrupt(f"state file {self.state_path} does not parse: {e}") from None
        if not isinstance(state, dict) or not isinstance(state.get("v"), int):
            raise StoreCorrupt(f"state file {self.state_path} has no version")
        if state["v"] > STATE_VERSION:
            raise StoreCorrupt(f"state file {self.state_path} is version {state['v']}; this "
                               f"imagesim reads up to version {STATE_VERSION}")
        base = _empty_state()
        base.update(state)
        return base

    def _write_state(self, state: dict[str, Any]) -> None:
        state["v"] = STATE_VERSION
        data = msgpack.packb(state, use_bin_type=True)
        tmp = os.path.join(self.root, f".state.{os.getpid()}.{uuid.uuid4().hex}")
        try:
            with open(tmp, "wb") as f:
                f.write(data)
                f.flush()
                if self.fsync:
                    os.fsync(f.fileno())
        except BaseException:
            # a full disk: the old document stays; drop the partial new one
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
        faults.point("state.write")
        os.replace(tmp, self.state_path)
        faults.point("state.written")
        if self.fsync:
            fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)

    @contextlib.contextmanager
    def transaction(self) -> Iterator[dict[str, Any]]:
        """Lock, read the state, yield it for changes, write it back (unless an exception
        escaped: then nothing is written). Nested transactions share one document."""
        with self.locked():
            if self._tx is not None:
                yield self._tx
                return
            state = self._read_state()
            self._tx = state
            self._after_commit = []
            try:
                yield state
            except BaseException:
                self._tx = None
                self._after_commit = []
                raise
            self._tx = None
            self._write_state(state)
            # deletions wait until the state no longer names what they delete (a crash
            # before this point leaves garbage, never a record whose files are gone), and
            # run under the lock (no other process can start using them meanwhile)
            pending, self._after_commit = self._after_commit, []
            for action in pending:
                action()

    def _on_commit(self, action: Callable[[], None]) -> None:
        """Run ``action`` once the current transaction's state is written (now, if none)."""
        if self._tx is not None:
            self._after_commit.append(action)
        else:
            action()

    def state_get(self, namespace: str, default: Any = None) -> Any:
        """A module's own record in the state document (``default`` when it has none).

        Read without the lock: the file is replaced atomically, so a reader sees one whole
        version. Values are msgpack types (dict, list, str, int, float, bool, bytes, None)."""
        return self._read_state()["ns"].get(namespace, default)

    def state_update(self, namespace: str, fn: Callable[[Any], Any]) -> Any:
        """Atomically replace a module's record with ``fn(old)`` (``old`` is ``None`` when
        absent) under the store lock, and return the new value. ``fn`` may raise to abort
        (nothing is written). Returning ``None`` deletes the record."""
        with self.transaction() as state:
            new = fn(state["ns"].get(namespace))
            if new is None:
                state["ns"].pop(namespace, None)
            else:
                state["ns"][namespace] = new
            return new

    # -- leases: protect blobs written for an image not yet recorded from gc --------------

    @contextlib.contextmanager
    def lease(self, what: str = "") -> Iterator[str]:
        """While held, ``gc`` removes no blob or layer newer than the lease's start. Wrap any
        sequence that puts blobs and then records an image (pull, load, commit)."""
        lease_id = uuid.uuid4().hex
        with self.transaction() as state:
            state["leases"][lease_id] = {"t": time.time(), "pid": os.getpid(), "what": what}
        try:
            yield lease_id
        finally:
            with self.transaction() as state:
                state["leases"].pop(lease_id, None)

    def discard_unused(self, digests: Iterable[Digest], *, lease: str | None = None
                       ) -> list[Digest]:
        """After a failed pull: remove those of ``digests`` (blobs this writer added) that
        no image uses, so a full disk is not left full of a download nobody can use. Kept
        when any other writer holds a live lease (it may be about to use them: gc takes
        them later). Needs no state write, so it works on a full disk. Returns what went."""
        with self.locked():
            state = self._read_state()
            now = time.time()
            if any(_lease_live(x, now) for lid, x in state["leases"].items() if lid != lease):
                return []
            keep, _ = self._referenced(state)
            gone = [d for d in digests if d not in keep and d in self.blobs]
            for d in gone:
                self.blobs.delete(d)
        return gone

    # -- images ----------------------------------------------------------------------------

    def get_image(self, digest: Digest | str) -> Image:
        """The image with manifest digest ``digest`` from the blobs (``ImageNotFound`` when
        the manifest or its config blob is missing)."""
        d = digest if isinstance(digest, Digest) else Digest.parse(digest)
        img = self._images.get(d)
        if img is not None:
            return img
        try:
            manifest = self.blobs.get(d)
            m = oci.parse_manifest(manifest)
            config = self.blobs.get(m.config.digest)
        except BlobUnknown:
            raise ImageNotFound(f"No such image: {d}") from None
        img = Image.from_bytes(manifest, config)
        self._images[d] = img
        return img

    def put_image(self, image: Image, tags: Iterable[str | Reference] = ()) -> Image:
        """Put an image's config and manifest blobs (its layer blobs must already be in
        ``blobs``) and record it with ``tags``. See ``add_image``."""
        with self.lease("put_image"):
            self.blobs.put(image.config_bytes, image.id)
            self.blobs.put(image.manifest_bytes, image.digest)
            return self.add_image(image.manifest_bytes, tags)

    def add_image(self, manifest_bytes: bytes, tags: Iterable[str | Reference] = (), *,
                  on_layer: Callable[[int, Digest, str], None] | None = None) -> Image:
        """Record the image whose manifest is ``manifest_bytes`` and point ``tags`` at it.

        Every blob the manifest names (config and layers) must already be in ``blobs``
        (``BlobUnknown`` otherwise). Each layer is unpacked once per diff id into
        ``layers/sha256/<hex>/diff`` while its digest and diff id are verified
        (``DigestInvalid`` / ``LayerInvalid``; the store is left as it was); layers already
        unpacked are reused. ``on_layer(index, diff_id, "exists"|"unpacked")`` reports
        progress. Returns the ``Image``."""
        from . import layers as _layers

        refs = [t if isinstance(t, Reference) else Reference.parse(t) for t in tags]
        for r in refs:
            if r.digest is not None:
                raise ReferenceInvalid(f"refusing to create a tag with a digest reference: {r}")
        m = oci.parse_manifest(manifest_bytes)
        digest = Digest.of(manifest_bytes)
        if m.config.digest not in self.blobs:
            raise BlobUnknown(f"config blob {m.config.digest} is not in the store")
        image = Image.from_bytes(manifest_bytes, self.blobs.get(m.config.digest))
        for layer in m.layers:
            if layer.digest not in self.blobs:
                raise BlobUnknown(f"layer blob {layer.digest} is not in the store")
        sizes: dict[Digest, int] = {}
        for _attempt in range(3):
            for i, (desc, diff_id) in enumerate(zip(m.layers, image.diff_ids, strict=True)):
                if diff_id in sizes and os.path.isdir(self.layer_dir(diff_id)):
                    continue
                if os.path.isdir(self.layer_dir(diff_id)):
                    rec = self._read_state()["layers"].get(str(diff_id))
                    if rec is not None:
                        sizes[diff_id] = int(rec.get("size", 0))
                        if on_layer:
                            on_layer(i, diff_id, "exists")
                        continue
                with self.blobs.open(desc.digest) as f:
                    result = _layers.unpack(
                        f, self.layer_dir(diff_id), tmp_dir=self.tmp_dir,
                        expected_digest=desc.digest, expected_diff_id=diff_id,
                        compression=oci.LAYER_COMPRESSION.get(desc.media_type))
                sizes[diff_id] = result.size
                for warning in result.warnings:
                    _log.warning("layer %s: %s", diff_id.hex[:12], warning)
                if on_layer:
                    on_layer(i, diff_id, "unpacked")
            # the manifest blob goes in only once every layer unpacked: a failed add leaves
            # the blobs as they were
            if digest not in self.blobs:
                self.blobs.put(manifest_bytes, digest)
            with self.transaction() as state:
                # a concurrent gc may have removed a layer we found unrecorded: unpack again
                missing = [d for d in image.diff_ids if not os.path.isdir(self.layer_dir(d))]
                if missing:
                    for d in missing:
                        sizes.pop(d, None)
                    continue
                for desc, diff_id in zip(m.layers, image.diff_ids, strict=True):
                    rec = state["layers"].setdefault(str(diff_id), {"size": sizes[diff_id],
                                                                   "blobs": []})
                    if str(desc.digest) not in rec["blobs"]:
                        rec["blobs"].append(str(desc.digest))
                key = str(digest)
                if key not in state["images"]:
                    state["images"][key] = {"added": time.time(), "id": str(image.id)}
                for r in refs:
                    state["tags"][r.full] = key
                self._images[digest] = image
                return image
        raise StoreCorrupt("layers kept disappearing while the image was recorded")

    def _records(self, state: dict[str, Any]) -> dict[str, dict[str, Any]]:
        return state["images"]

    def resolve(self, text: str | Reference | Digest | Image) -> Image:
        """The image ``text`` names, as docker resolves it: a tag (``ubuntu`` ->
        ``ubuntu:latest``), ``name@sha256:...``, a full or short IMAGE ID (config digest,
        with or without ``sha256:``; any unique prefix), or a manifest digest.
        Raises ``ImageNotFound`` (``No such image: X``) or ``Conflict`` for an ambiguous
        short id."""
        if isinstance(text, Image):
            return text
        if isinstance(text, Digest):
            text = str(text)
        state = self._read_state()
        if isinstance(text, Reference):
            ref: Reference | None = text
            text = str(text)
        else:
            ref = Reference.try_parse(text)
        if ref is not None:
            if ref.digest is not None:
                if ref.digest in state["images"]:
                    return self.get_image(ref.digest)
            else:
                key = state["tags"].get(ref.full)
                if key is not None:
                    return self.get_image(key)
        m = _HEX_PREFIX.match(text)
        if m is not None:
            prefix = m.group(1)
            full = text.startswith("sha256:")
            hits = {key for key, rec in state["images"].items()
                    if rec["id"].removeprefix("sha256:").startswith(prefix)}
            if not hits:
                hits = {key for key in state["images"]
                        if key.removeprefix("sha256:").startswith(prefix)
                        and (full or len(prefix) == 64)}
            ids = {state["images"][k]["id"] for k in hits}
            if len(ids) > 1:
                raise Conflict(f"short ID {prefix} is ambiguous: it matches "
                               f"{len(ids)} images")
            if hits:
                # several manifests with one config are one IMAGE ID: prefer a tagged one
                tagged = set(state["tags"].values())
                pick = sorted(hits, key=lambda k: (k not in tagged, k))[0]
                return self.get_image(pick)
        raise ImageNotFound(f"No such image: {text}")

    def exists(self, text: str) -> bool:
        try:
            self.resolve(text)
        except (ImageNotFound, Conflict):
            return False
        return True

    def tags_of(self, image: Image | Digest) -> list[Reference]:
        """The tags pointing at this manifest, sorted."""
        key = str(image.digest if isinstance(image, Image) else image)
        state = self._read_state()
        return sorted((Reference.parse(t) for t, d in state["tags"].items() if d == key),
                      key=str)

    def tags(self) -> dict[str, Digest]:
        """Every tag (full reference) -> manifest digest."""
        return {t: Digest.parse(d) for t, d in self._read_state()["tags"].items()}

    def images(self, *, include_dangling: bool = True) -> list[ImageRecord]:
        """Every image record with its tags, newest first (as ``docker images`` lists)."""
        state = self._read_state()
        by_image: dict[str, list[Reference]] = {}
        for t, d in state["tags"].items():
            by_image.setdefault(d, []).append(Reference.parse(t))
        pins = self._pins_by_image(state)
        out = []
        for key, rec in state["images"].items():
            try:
                img = self.get_image(key)
            except (ImageNotFound, ManifestInvalid, DigestInvalid):
                continue
            tags = tuple(sorted(by_image.get(key, []), key=str))
            if not tags and not include_dangling:
                continue
            size = sum(int(state["layers"].get(str(d), {}).get("size", 0))
                       for d in set(img.diff_ids))
            out.append(ImageRecord(img, tags, float(rec.get("added", 0)), size,
                                   tuple(pins.get(key, ()))))
        out.sort(key=lambda r: ((r.image.created_at.timestamp() if r.image.created_at
                                 else r.added), r.added), reverse=True)
        return out

    def tag(self, source: str | Image, target: str | Reference) -> Reference:
        """Point ``target`` at the image ``source`` names (``imagesim tag``). Raises
        ``ImageNotFound``, ``ReferenceInvalid`` (also for a target with a digest)."""
        ref = target if isinstance(target, Reference) else Reference.parse(target)
        if ref.digest is not None:
            raise ReferenceInvalid(f"refusing to create a tag with a digest reference: {target}")
        with self.transaction() as state:
            image = self.resolve(source)
            key = str(image.digest)
            if key not in state["images"]:
                raise ImageNotFound(f"No such image: {source}")
            state["tags"][ref.full] = key
        return ref

    def untag(self, target: str | Reference) -> bool:
        """Remove one tag; True when it existed."""
        ref = target if isinstance(target, Reference) else Reference.parse(target)
        with self.transaction() as state:
            return state["tags"].pop(ref.full, None) is not None

    # -- pins: containers hold the images they use ----------------------------------------

    def pin(self, holder: str, image: Image | Digest | str) -> None:
        """Record that ``holder`` (a container id) uses ``image``: ``remove`` refuses to delete
        it, ``prune`` and ``gc`` keep it and its layers. ``image`` is resolved like
        ``resolve``."""
        img = image if isinstance(image, Image) else self.resolve(str(image))
        with self.transaction() as state:
            # an rmi may have run between resolve and this lock: never pin a deleted image
            if str(img.digest) not in state["images"]:
                raise ImageNotFound(f"No such image: {image}")
            held = state["pins"].setdefault(holder, [])
            if str(img.digest) not in held:
                held.append(str(img.digest))

    def unpin(self, holder: str) -> None:
        """Drop every pin of ``holder`` (idempotent)."""
        with self.transaction() as state:
            state["pins"].pop(holder, None)

    def pins(self) -> dict[str, list[Digest]]:
        """holder -> manifest digests it pins."""
        return {h: [Digest.parse(d) for d in ds]
                for h, ds in self._read_state()["pins"].items()}

    @staticmethod
    def _pins_by_image(state: dict[str, Any]) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for holder, digests in state["pins"].items():
            for d in digests:
                out.setdefault(d, []).append(holder)
        return out

    # -- removal ---------------------------------------------------------------------------

    def remove(self, text: str, *, force: bool = False, prune: bool = True,
               running: Callable[[str], bool] | None = None) -> RemoveResult:
        """``imagesim rmi``: untag, and delete the image once nothing names it, with the
        lines and refusals of docker's ``ImageDelete``.

        By reference (``ubuntu``, ``ubuntu:22.04``, ``ubuntu@sha256:...``): that reference
        goes (``Untagged: ubuntu:latest``); when it was the repository's last tag, the
        repository's digest references go too (``Untagged: ubuntu@sha256:...``); when no
        reference is left, the image is deleted (``Deleted: sha256:<image id>``, then
        ``Deleted: sha256:<chain id>`` for each layer no other image uses, top-most first).
        By image id: refused unless ``force`` when references from more than one repository
        or several tags name it ("referenced in multiple repositories"); otherwise every
        reference goes and the image is deleted.

        A container pins its image (``running(holder)`` says whether that container runs;
        default: none does). Without ``force``, removing the last reference of a pinned
        image is a ``Conflict`` naming the container; deleting it by id is a ``Conflict``
        even with ``force`` while the container runs ("cannot be forced"). A forced removal
        of a pinned image's references keeps the image, dangling, while a container needs
        it. ``prune=False`` (``--no-prune``) keeps the layers. Raises ``ImageNotFound``."""
        is_running = running or (lambda holder: False)
        out = _Removal()
        with self.transaction() as state:
            try:
                image = self.resolve(text)
            except ImageNotFound:
                # docker names the reference with its tag: "No such image: nosuch:latest"
                named = Reference.try_parse(text)
                if named is None:
                    raise
                raise ImageNotFound(f"No such image: {named}") from None
            image_id = str(image.id)
            keys = sorted(k for k, rec in state["images"].items() if rec["id"] == image_id)
            if str(image.digest) not in keys:
                keys.append(str(image.digest))
            holders = sorted({h for k in keys for h in self._pins_by_image(state).get(k, [])})
            short = image.id.short
            refs = self._references(state, keys)
            ref = Reference.try_parse(text)
            given = None
            if ref is not None:
                full = ref.full if ref.digest is None else f"{ref.name}@{ref.digest}"
                given = next((r for r in refs if r.full == full or
                              (r.digest and f"{r.name}@{r.digest}" == full)), None)
            if given is not None:
                if not force and _single_reference(refs) and holders:
                    raise Conflict(
                        f"conflict: unable to remove repository reference \"{text}\" (must "
                        f"force) - container {_short(holders[0])} is using its referenced "
                        f"image {short}")
                self._drop_reference(state, given, out)
                refs = [r for r in refs if r != given]
                if given.digest is None and not any(
                        r.digest is None and r.name == given.name for r in refs):
                    # the repository's last tag went: its digest references go with it
                    for r in [r for r in refs if r.digest and r.name == given.name]:
                        self._drop_reference(state, r, out)
                        refs.remove(r)
                if refs:
                    return out.result()
                self._delete(state, image, keys, holders, is_running, force=force,
                             quiet=True, prune=prune, out=out)
                return out.result()
            if _single_reference(refs) or not refs:
                live = [h for h in holders if is_running(h)]
                if live:
                    raise Conflict(f"conflict: unable to delete {short} (cannot be forced) - "
                                   f"image is being used by running container "
                                   f"{_short(live[0])}")
                if holders and not force:
                    raise Conflict(f"conflict: unable to delete {short} (must be forced) - "
                                   f"image is being used by stopped container "
                                   f"{_short(holders[0])}")
                for r in refs:
                    self._drop_reference(state, r, out)
            self._delete(state, image, keys, holders, is_running, force=force, quiet=False,
                         prune=prune, out=out)
        return out.result()

    # the namespace of the state document holding docker's RepoDigests
    REPO_DIGESTS_NS = "images.repo-digests"

    def add_repo_digest(self, ref: str | Reference, digest: Digest | str | None = None
                        ) -> Reference:
        """Record that the image with manifest ``digest`` was pulled from or pushed to the
        repository ``ref`` names (its tag does not matter; without ``digest``, ``ref``'s own
        digest is used): docker's ``RepoDigests`` entry ``REPO@sha256:...``, which ``rmi``
        untags and ``images --digests`` shows. Idempotent. Returns the digest reference.
        Raises ``ImageNotFound`` when no image has that manifest, ``ReferenceInvalid``."""
        r = ref if isinstance(ref, Reference) else Reference.parse(ref)
        d = str(digest) if digest is not None else r.digest
        if d is None:
            raise ReferenceInvalid(f"no digest given for the repository digest of {ref}")
        d = str(Digest.parse(d))
        with self.transaction() as state:
            if d not in state["images"]:
                raise ImageNotFound(f"No such image: {r.name}@{d}")
            table = state["ns"].setdefault(self.REPO_DIGESTS_NS, {})
            names = table.setdefault(d, [])
            if r.name not in names:
                names.append(r.name)
                names.sort()
        return Reference(r.domain, r.path, None, d, False)

    def repo_digests(self, image: Image | Digest | str) -> list[Reference]:
        """The digest references (``ubuntu@sha256:...``) recorded for this manifest by
        ``add_repo_digest``, sorted as docker prints them."""
        key = str(image.digest if isinstance(image, Image) else image)
        names = (self._read_state()["ns"].get(self.REPO_DIGESTS_NS) or {}).get(key, [])
        return sorted((Reference.parse(f"{n}@{key}") for n in names), key=str)

    def _references(self, state: dict[str, Any], keys: list[str]) -> list[Reference]:
        """Every tag and digest reference to these manifests, in docker's order (by the
        familiar string: ``ubuntu:latest`` before ``ubuntu@sha256:...``)."""
        refs = [Reference.parse(t) for t, d in state["tags"].items() if d in keys]
        table = state["ns"].get(self.REPO_DIGESTS_NS) or {}
        for k in keys:
            refs.extend(Reference.parse(f"{n}@{k}") for n in table.get(k, []))
        return sorted(refs, key=str)

    def _drop_reference(self, state: dict[str, Any], ref: Reference, out: _Removal) -> None:
        if ref.digest is None:
            state["tags"].pop(ref.full, None)
        else:
            table = state["ns"].get(self.REPO_DIGESTS_NS) or {}
            names = table.get(ref.digest, [])
            if ref.name in names:
                names.remove(ref.name)
            if not names:
                table.pop(ref.digest, None)
        out.untagged.append(str(ref))

    def _delete(self, state: dict[str, Any], image: Image, keys: list[str],
                holders: list[str], is_running: Callable[[str], bool], *, force: bool,
                quiet: bool, prune: bool, out: _Removal) -> None:
        """docker's ``imageDeleteHelper``: refuse (or, when ``quiet``, silently keep the
        image) on a conflict, else drop the remaining references, the image record and the
        layers no other image uses."""
        short = image.id.short
        refs = self._references(state, keys)
        live = [h for h in holders if is_running(h)]
        if live:
            if quiet:
                return
            raise Conflict(f"conflict: unable to delete {short} (cannot be forced) - image is "
                           f"being used by running container {_short(live[0])}")
        if refs and not force:
            if quiet:
                return
            raise Conflict(f"conflict: unable to delete {short} (must be forced) - image is "
                           "referenced in multiple repositories")
        for r in refs:
            self._drop_reference(state, r, out)
        if holders:
            # forced: docker would delete a stopped container's image; here the container's
            # pin keeps it, dangling, while the container needs its layers
            return
        table = state["ns"].get(self.REPO_DIGESTS_NS) or {}
        for k in keys:
            state["images"].pop(k, None)
            table.pop(k, None)
            self._images.pop(Digest.parse(k), None)
        out.deleted.append(str(image.id))
        if not prune:
            return
        # honour other writers' leases exactly as gc does: a concurrent pull may have put
        # blobs that no image records yet
        gone = self._collect(state, grace_start=self._lease_grace(state), remove=True)
        chain = dict(zip(image.diff_ids, image.chain_ids, strict=True))
        for d in reversed(image.diff_ids):
            if d in gone.layers and str(chain[d]) not in out.deleted:
                out.deleted.append(str(chain[d]))

    def prune(self, *, all_images: bool = False) -> tuple[list[str], GcResult]:
        """``image prune``: delete dangling images (with ``all_images``, every image no tag
        or container needs... i.e. also tagged ones no container uses, as ``-a``), then gc.
        Returns the deleted image ids and what gc reclaimed."""
        deleted: list[str] = []
        with self.transaction() as state:
            pinned = self._pins_by_image(state)
            tagged = set(state["tags"].values())
            for key, rec in list(state["images"].items()):
                if key in pinned:
                    continue
                if key in tagged and not all_images:
                    continue
                for t in [t for t, d in state["tags"].items() if d == key]:
                    del state["tags"][t]
                del state["images"][key]
                self._images.pop(Digest.parse(key), None)
                if rec["id"] not in deleted:
                    deleted.append(rec["id"])
            result = self.gc()
        return deleted, result

    # -- garbage collection ----------------------------------------------------------------

    def gc(self) -> GcResult:
        """Remove blobs and unpacked layers no recorded image uses (pinned images count).
        Blobs and layers newer than the oldest live ``lease`` are kept: another process may
        be about to record an image that uses them."""
        with self.transaction() as state:
            return self._collect(state, grace_start=self._lease_grace(state), remove=True)

    @staticmethod
    def _lease_grace(state: dict[str, Any]) -> float | None:
        """The start of the oldest live lease (nothing newer may be collected), dropping the
        leases of dead writers from ``state``; None when no lease is live."""
        now = time.time()
        for lid, lease in list(state["leases"].items()):
            if not _lease_live(lease, now):
                del state["leases"][lid]
        live = [lease["t"] for lease in state["leases"].values()]
        return min(live) if live else None

    def _referenced(self, state: dict[str, Any]) -> tuple[set[Digest], set[Digest]]:
        blobs: set[Digest] = set()
        layers: set[Digest] = set()
        keys = set(state["images"])
        for holder_digests in state["pins"].values():
            keys.update(holder_digests)
        for key in keys:
            d = Digest.parse(key)
            try:
                img = self.get_image(d)
            except (ImageNotFound, ManifestInvalid, DigestInvalid):
                blobs.add(d)
                continue
            blobs.add(d)
            blobs.add(img.id)
            blobs.update(desc.digest for desc in img.layers)
            layers.update(img.diff_ids)
        return blobs, layers

    def _collect(self, state: dict[str, Any], *, grace_start: float | None,
                 remove: bool) -> GcResult:
        keep_blobs, keep_layers = self._referenced(state)

        def young(path: str) -> bool:
            if grace_start is None:
                return False
            try:
                return os.lstat(path).st_mtime >= grace_start - 1
            except FileNotFoundError:
                return True

        gone_blobs: list[Digest] = []
        gone_layers: list[Digest] = []
        reclaimed = 0
        for d in list(self.blobs):
            if d in keep_blobs or young(self.blobs.path(d)):
                continue
            with contextlib.suppress(FileNotFoundError):
                reclaimed += os.lstat(self.blobs.path(d)).st_size
            if remove:
                def drop_blob(d: Digest = d) -> None:
                    faults.point("gc.delete")
                    self.blobs.delete(d)
                self._on_commit(drop_blob)
            gone_blobs.append(d)
        for name in sorted(os.listdir(self.layers_root)):
            if not re.fullmatch(r"[a-f0-9]{64}", name):
                continue
            d = Digest("sha256", name)
            path = os.path.join(self.layers_root, name)
            if d in keep_layers or young(path):
                continue
            rec = state["layers"].get(str(d))
            reclaimed += int(rec.get("size", 0)) if rec else 0
            if remove:
                state["layers"].pop(str(d), None)

                def drop_layer(path: str = path) -> None:
                    faults.point("gc.delete")
                    _rmtree(path, self.tmp_dir)
                self._on_commit(drop_layer)
            gone_layers.append(d)
        return GcResult(tuple(gone_blobs), tuple(gone_layers), reclaimed)

    # -- layers ----------------------------------------------------------------------------

    def commit_layer(self, source: Any, *, compression: str = "gzip",
                     level: int | None = None, threads: int | None = None,
                     exclude: Callable[[str], bool] | None = None) -> Any:
        """Pack ``source`` (a container's upper directory, or any ``unionfs`` layer) into a
        layer blob and, from the same tar bytes in a parallel thread, into the shared
        unpacked layer directory, recording it: the image ``put_image`` then records finds
        its layer already there (no decompress-and-untar of what was just packed). Returns
        the ``layers.PackResult`` (``descriptor()``, ``diff_id``). Call it inside a
        ``lease`` that lasts until the image is recorded, so a concurrent gc keeps the blob.
        Raises what ``layers.pack``/``unpack`` raise; nothing is left behind then."""
        from . import layers as _layers

        with self.lease("commit_layer"):
            tmp = tempfile.mkdtemp(prefix="commit-", dir=self.tmp_dir)
            try:
                staged = os.path.join(tmp, "diff")
                result = _layers.pack_to_blobs(source, self.blobs, compression=compression,
                                               level=level, threads=threads,
                                               exclude=exclude, unpack_to=staged,
                                               unpack_tmp=tmp)
                final = self.layer_dir(result.diff_id)
                os.makedirs(os.path.dirname(final), exist_ok=True)
                try:
                    os.rename(staged, final)
                except OSError as e:
                    if e.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                        raise
                with self.transaction() as state:
                    rec = state["layers"].setdefault(
                        str(result.diff_id), {"size": result.content_size, "blobs": []})
                    if str(result.digest) not in rec["blobs"]:
                        rec["blobs"].append(str(result.digest))
            finally:
                _rmtree(tmp, self.tmp_dir)
        return result

    def fsck(self, *, repair: bool = False, deep: bool = False) -> FsckReport:
        """Check the store: every blob against its digest, every image's manifest, config and
        layer blobs, every image layer unpacked and recorded, tags and pins pointing at
        images, layer records with their directories, left-over temporaries, garbage; with
        ``deep`` every unpacked layer's files against its blob. ``repair`` fixes what it
        can (re-unpacks layers, drops broken records, removes garbage)."""
        return _fsck(self, repair, deep)

    def layer_dir(self, diff_id: Digest | str) -> str:
        """The directory holding the unpacked layer ``diff_id`` (overlayfs on-disk format),
        whether or not it exists. Never write into it."""
        d = diff_id if isinstance(diff_id, Digest) else Digest.parse(diff_id)
        return os.path.join(self.layers_root, d.hex, "diff")

    def has_layer(self, diff_id: Digest) -> bool:
        return os.path.isdir(self.layer_dir(diff_id))

    def layer_size(self, diff_id: Digest) -> int:
        """The unpacked size (sum of regular file sizes) recorded for a layer, 0 if unknown."""
        rec = self._read_state()["layers"].get(str(diff_id))
        return int(rec.get("size", 0)) if rec else 0

    def diff_id_for_blob(self, blob: Digest) -> Digest | None:
        """The diff id of an unpacked layer whose compressed blob was ``blob`` (pull uses it
        to print ``Already exists`` without downloading)."""
        for diff_id, rec in self._read_state()["layers"].items():
            if str(blob) in rec.get("blobs", ()) and self.has_layer(Digest.parse(diff_id)):
                return Digest.parse(diff_id)
        return None

    def lower_layers(self, image: Image | str) -> list[Any]:
        """Read-only ``unionfs.DirLayer``s for the image's layers, top-most first (the order
        of overlayfs ``lowerdir=``), each over the shared unpacked directory."""
        from unionfs.layer import DirLayer

        img = image if isinstance(image, Image) else self.resolve(image)
        n = len(img.diff_ids)
        # named for traces and "which": layer 1 is the base, counted upwards
        # the index caches of the store's layers live with the store, not in ~/.cache
        cache_dir = os.path.join(self.root, "cache", "index")
        return [DirLayer(self.layer_dir(d), name=f"layer {n - i} ({d.hex[:12]})",
                         cache_dir=cache_dir)
                for i, d in enumerate(reversed(img.diff_ids))]

    def lower_dirs(self, image: Image | str) -> list[str]:
        """The unpacked layer directories, top-most first (``GraphDriver.Data.LowerDir``)."""
        img = image if isinstance(image, Image) else self.resolve(image)
        return [self.layer_dir(d) for d in reversed(img.diff_ids)]

    def layer_usage(self) -> list[LayerUsage]:
        """Every recorded layer with the images (manifest digests) that use it."""
        state = self._read_state()
        users: dict[Digest, list[Digest]] = {}
        for key in state["images"]:
            try:
                img = self.get_image(key)
            except (ImageNotFound, ManifestInvalid, DigestInvalid):
                continue
            for d in dict.fromkeys(img.diff_ids):
                users.setdefault(d, []).append(img.digest)
        out = []
        for key, rec in state["layers"].items():
            d = Digest.parse(key)
            out.append(LayerUsage(d, int(rec.get("size", 0)), tuple(users.get(d, ()))))
        return out


@dataclass
class FsckReport:
    """What ``fsck`` found: ``problems`` (lines fit for a user), ``repaired`` (what
    ``repair`` fixed), and the counts it checked."""

    problems: list[str] = field(default_factory=list)
    repaired: list[str] = field(default_factory=list)
    blobs: int = 0
    images: int = 0
    layers: int = 0

    @property
    def clean(self) -> bool:
        return not self.problems or len(self.repaired) >= len(self.problems)


def _fsck(store: Store, repair: bool, deep: bool) -> FsckReport:
    from . import layers as _layers

    rep = FsckReport()

    def problem(text: str, fix: Callable[[], None] | None = None) -> None:
        rep.problems.append(text)
        if repair and fix is not None:
            fix()
            rep.repaired.append(text)

    with store.transaction() as state:
        live_leases = [lease for lease in state["leases"].values()
                       if _lease_live(lease, time.time())]
        corrupt: set[Digest] = set()
        for d in list(store.blobs):
            rep.blobs += 1
            try:
                store.blobs.verify(d)
            except DigestInvalid:
                corrupt.add(d)
                problem(f"blob {d} is corrupt (its bytes hash to something else)",
                        lambda d=d: store.blobs.delete(d))
        broken: list[str] = []
        for key in list(state["images"]):
            rep.images += 1
            d = Digest.parse(key)
            try:
                if d in corrupt:
                    raise ImageNotFound("corrupt manifest")
                img = store.get_image(d)
            except (ImageNotFound, ManifestInvalid, DigestInvalid, BlobUnknown):
                broken.append(key)
                continue
            missing = [x.digest for x in img.layers if x.digest not in store.blobs
                       or x.digest in corrupt]
            if missing:
                broken.append(key)
                continue
            for desc, diff_id in zip(img.layers, img.diff_ids, strict=True):
                if not store.has_layer(diff_id) or str(diff_id) not in state["layers"]:
                    def reunpack(desc=desc, diff_id=diff_id) -> None:
                        _rmtree(os.path.dirname(store.layer_dir(diff_id)), store.tmp_dir)
                        with store.blobs.open(desc.digest) as f:
                            r = _layers.unpack(f, store.layer_dir(diff_id),
                                               tmp_dir=store.tmp_dir,
                                               expected_digest=desc.digest,
                                               expected_diff_id=diff_id)
                        state["layers"][str(diff_id)] = {"size": r.size,
                                                         "blobs": [str(desc.digest)]}
                    problem(f"image {img.id.short}: layer {diff_id.hex[:12]} is not unpacked",
                            reunpack)
        for key in broken:
            def drop(key: str = key) -> None:
                state["images"].pop(key, None)
                for t in [t for t, k in state["tags"].items() if k == key]:
                    del state["tags"][t]
            problem(f"image {key}: its manifest, config or a layer blob is missing or "
                    "corrupt", drop)
        for tag, key in list(state["tags"].items()):
            if key not in state["images"]:
                problem(f"tag {tag} points at {key}, which is not an image",
                        lambda tag=tag: state["tags"].pop(tag, None))
        for holder, keys in list(state["pins"].items()):
            for key in keys:
                if key not in state["images"]:
                    problem(f"{holder[:12]} pins {key}, which is not an image")
        _fsck_containers(store, state, problem, check_orphans=not live_leases)
        for lid, lease in list(state["leases"].items()):
            if not _lease_live(lease, time.time()):
                problem(f"stale lease {lid[:12]} ({lease.get('what', '')}, pid "
                        f"{lease.get('pid')}): its process is gone",
                        lambda lid=lid: state["leases"].pop(lid, None))
        for key, rec in list(state["layers"].items()):
            rep.layers += 1
            d = Digest.parse(key)
            if not store.has_layer(d):
                problem(f"layer {d.hex[:12]} is recorded but its directory is missing",
                        lambda key=key: state["layers"].pop(key, None))
            elif deep:
                blob = next((Digest.parse(b) for b in rec.get("blobs", ())
                             if Digest.parse(b) in store.blobs), None)
                if blob is not None:
                    diff = _compare_layer(store, blob, store.layer_dir(d))
                    if diff:
                        def redo(d=d, blob=blob) -> None:
                            _rmtree(os.path.dirname(store.layer_dir(d)), store.tmp_dir)
                            with store.blobs.open(blob) as f:
                                _layers.unpack(f, store.layer_dir(d), tmp_dir=store.tmp_dir,
                                               expected_diff_id=d)
                        problem(f"layer {d.hex[:12]} differs from its blob: {diff}", redo)
        for name in os.listdir(store.root):
            # a state document's temporary: its writer died (a live one holds this lock)
            if name.startswith(".state."):
                path = os.path.join(store.root, name)
                problem(f"left-over temporary {name}",
                        lambda path=path: os.unlink(path))
        if not live_leases:
            for name in os.listdir(store.tmp_dir):
                path = os.path.join(store.tmp_dir, name)
                problem(f"left-over temporary {name}",
                        lambda path=path: _rmtree(path, store.tmp_dir)
                        if os.path.isdir(path) else os.unlink(path))
        garbage = store._collect(state, grace_start=None, remove=False)
        if garbage.blobs or garbage.layers:
            problem(f"{len(garbage.blobs)} unreferenced blobs and {len(garbage.layers)} "
                    "unreferenced layers (garbage)",
                    lambda: store._collect(state, grace_start=None, remove=True))
    return rep


def _fsck_containers(store: Store, state: dict[str, Any],
                     problem: Callable[[str, Callable[[], None] | None], None], *,
                     check_orphans: bool) -> None:
    """Container records (namespace ``containers``) against their directories and pins:
    a record whose image pin is missing is re-pinned (else gc could delete its image); a pin
    held by a container id with no record is dropped; a container directory without a
    record (a create or rm killed half-way) is removed, but only while no writer holds a
    lease (a create in progress makes its directory before its record)."""
    records = state["ns"].get("containers") or {}
    root = os.path.join(store.root, "containers")
    for cid, rec in list(records.items()):
        key = rec.get("image_digest") if isinstance(rec, dict) else None
        if not os.path.isdir(os.path.join(root, cid)):
            problem(f"container {cid[:12]}: its directory is missing", None)
        if key and key not in state["pins"].get(cid, []):
            if key in state["images"]:
                problem(f"container {cid[:12]} does not pin its image {key}",
                        lambda cid=cid, key=key: state["pins"].setdefault(cid, []).append(key))
            else:
                problem(f"container {cid[:12]}: its image {key} is missing", None)
    for holder in list(state["pins"]):
        if re.fullmatch(r"[a-f0-9]{64}", holder) and holder not in records:
            problem(f"pin held by container {holder[:12]}, which has no record",
                    lambda holder=holder: state["pins"].pop(holder, None))
    if not check_orphans or not os.path.isdir(root):
        return
    for name in sorted(os.listdir(root)):
        if name in records:
            continue
        path = os.path.join(root, name)
        if re.fullmatch(r"[a-f0-9]{64}", name) or name.startswith(".trash-"):
            problem(f"container directory {name[:20]} has no record (left by a killed "
                    "create or rm)", lambda path=path: _rmtree(path, store.tmp_dir))


def _compare_layer(store: Store, blob: Digest, directory: str) -> str:
    """The first difference between a layer blob and its unpacked directory: a regular
    file missing or with other content, a symlink with another target, or a path in the
    directory the blob does not have (something wrote into a shared layer); "" when they
    agree."""
    import hashlib

    from . import layers as _layers
    expected: set[str] = set()
    with store.blobs.open(blob) as f:
        for e, data in _layers.read_entries(f):
            rel = _layers._clean_name(e.name)
            parent, _, base = rel.rpartition("/")
            parts = rel.split("/")
            expected.update("/".join(parts[:i]) for i in range(1, len(parts)))
            if base.startswith(".wh..wh."):
                continue  # the opaque marker (an xattr on parent) and AUFS meta entries
            if base.startswith(".wh."):
                # a whiteout is unpacked as the whited-out name (overlayfs format)
                expected.add(f"{parent}/{base[4:]}" if parent else base[4:])
                continue
            expected.add(rel)
            if e.kind == "2":
                try:
                    target = os.readlink(os.path.join(directory, rel))
                except OSError:
                    return f"/{rel} is missing"
                if target != e.linkname:
                    return f"/{rel} points elsewhere"
            if e.kind not in ("0", "7") or data is None:
                continue
            path = os.path.join(directory, rel)
            try:
                with open(path, "rb") as g:
                    actual = g.read()
            except OSError:
                return f"/{rel} is missing"
            if hashlib.sha256(actual).digest() != hashlib.sha256(data).digest():
                return f"/{rel} has other content"
    for dirpath, dirs, files in os.walk(directory):
        for name in dirs + files:
            rel = os.path.relpath(os.path.join(dirpath, name), directory)
            if rel not in expected:
                return f"/{rel} is not in the layer"
    return ""


def _short(holder: str) -> str:
    return holder[:12] if re.fullmatch(r"[a-f0-9]{64}", holder) else holder


def _rmtree(path: str, tmp_dir: str) -> None:
    """Remove a layer directory: rename it away first so a reader never sees half of it."""
    trash = os.path.join(tmp_dir, f"trash-{uuid.uuid4().hex}")
    try:
        os.rename(path, trash)
    except FileNotFoundError:
        return
    except OSError:
        trash = path
    shutil.rmtree(trash, ignore_errors=True)
