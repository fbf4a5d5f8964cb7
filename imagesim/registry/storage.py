"""Repository metadata for the registry server, on the content-addressed blob store.

Layout under the registry root (the same shape ``docker-registry`` uses, flattened)::

    blobs/sha256/<hex>                                   every blob and manifest, once (shared)
    tmp/                                                 the blob store's temporaries
    uploads/<uuid>/data, info.json                       upload sessions in progress
    repositories/<name>/_layers/sha256/<hex>             blob linked into <name> (empty file)
    repositories/<name>/_manifests/revisions/sha256/<hex>  manifest in <name> (JSON: media type)
    repositories/<name>/_manifests/tags/<tag>            tag -> digest (text)
    repositories/<name>/_referrers/sha256/<subject>/sha256/<hex>  descriptor of a referrer

Repository path components always start with ``[a-z0-9]`` (the spec's grammar), so the
``_layers``/``_manifests`` directories can never collide with a nested repository name.

Atomicity: blobs are published by the blob store (temporary file, fsync, rename); every
metadata file is written the same way; an upload becomes a blob only after its digest is
verified, by renaming the session's file into the store. So a killed server, a dropped
connection or a digest mismatch leaves at most an upload session or temporary file, never a
visible partial blob; ``gc`` sweeps those.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import threading
import time
import uuid as uuidlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from .. import faults
from ..blobs import FileBlobStore
from ..digest import Digest
from ..errors import (
    BlobUnknown,
    BlobUploadUnknown,
    DigestInvalid,
    ManifestBlobUnknown,
    ManifestInvalid,
    ManifestUnknown,
    NameInvalid,
    NameUnknown,
    RangeInvalid,
    SizeInvalid,
    TagInvalid,
)

# -- grammar (OCI distribution spec v1.1, "Pulling manifests") --------------------------------

_COMPONENT = r"[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*"
NAME_RE = re.compile(rf"^{_COMPONENT}(?:/{_COMPONENT})*$")
TAG_RE = re.compile(r"^[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}$")
#: docker/distribution limits a repository name to 255 characters (with its host)
NAME_MAX = 255
#: manifests larger than this are refused with 413 (docker/distribution uses 4 MiB too)
MANIFEST_MAX = 4 * 1024 * 1024

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
IMAGE_TYPES = frozenset({OCI_MANIFEST, DOCKER_MANIFEST})
INDEX_TYPES = frozenset({OCI_INDEX, DOCKER_LIST})
MANIFEST_TYPES = IMAGE_TYPES | INDEX_TYPES

#: upload sessions untouched for longer than this are purged (the reference registry's
#: ``storage.maintenance.uploadpurging.age``, whose default is 168h; ours is a day)
DEFAULT_UPLOAD_EXPIRY = 24 * 3600.0
#: how often a running server looks for expired sessions (``uploadpurging.interval``)
DEFAULT_PURGE_INTERVAL = 3600.0

_DURATION_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0,
                   "h": 3600.0, "d": 86400.0}
_DURATION_RE = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h|d)")


def parse_duration(text: str) -> float:
    """Seconds in a duration written as Go writes them (``168h``, ``1h30m``, ``90s``,
    ``250ms``; also ``2d``), or a plain number of seconds. Raises ``ValueError`` for anything
    else, and for a negative duration."""
    t = text.strip()
    try:
        seconds = float(t)
    except ValueError:
        pos = 0
        seconds = 0.0
        for m in _DURATION_RE.finditer(t):
            if m.start() != pos:
                break
            seconds += float(m.group(1)) * _DURATION_UNITS[m.group(2)]
            pos = m.end()
        if pos != len(t) or not t:
            raise ValueError(f"invalid duration {text!r} (examples: 24h, 90m, 1h30m, 45s)"
                             ) from None
    if not seconds >= 0:
        raise ValueError(f"invalid duration {text!r}: must not be negative")
    return seconds


def check_name(name: str) -> str:
    """Return ``name`` if it is a valid repository name; raise ``NameInvalid`` otherwise
    (upper case, ``..``, empty components, leading separators, over 255 characters)."""
    if not isinstance(name, str) or len(name) > NAME_MAX or not NAME_RE.match(name):
        raise NameInvalid(f"invalid repository name {name!r}", detail={"name": name})
    return name


def check_tag(tag: str) -> str:
    """Return ``tag`` if it matches ``[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}``; else ``TagInvalid``."""
    if not isinstance(tag, str) or not TAG_RE.match(tag):
        raise TagInvalid(f"invalid tag {tag!r}", detail={"tag": tag})
    return tag


def is_digest(reference: str) -> bool:
    return ":" in reference


def _listdir(path: str) -> list[str]:
    try:
        return sorted(os.listdir(path))
    except (FileNotFoundError, NotADirectoryError):
        return []


# -- atomic small files ------------------------------------------------------------------------

def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: str, data: bytes, *, fsync: bool = True) -> None:
    """Write ``data`` to ``path`` so readers see the old file or the whole new one, never a
    part: temporary file in the same directory, fsync, rename, fsync of the directory."""
    directory = os.path.dirname(path)
    os.makedirs(directory, exist_ok=True)
    tmp = f"{path}.tmp-{os.getpid()}-{threading.get_ident()}-{uuidlib.uuid4().hex[:8]}"
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            if fsync:
                f.flush()
                os.fsync(f.fileno())
        os.rename(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    if fsync:
        _fsync_dir(directory)


# -- manifests ---------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Descriptor:
    media_type: str
    digest: Digest
    size: int
    platform: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class ParsedManifest:
    """What the server needs from a pushed manifest: its type and what it references."""

    media_type: str
    config: Descriptor | None
    layers: tuple[Descriptor, ...]
    manifests: tuple[Descriptor, ...]
    subject: Descriptor | None
    artifact_type: str | None
    annotations: dict[str, str] | None


def _descriptor(obj: Any, where: str) -> Descriptor:
    if not isinstance(obj, dict):
        raise ManifestInvalid(f"{where}: descriptor is not an object")
    mt, dg, size = obj.get("mediaType"), obj.get("digest"), obj.get("size")
    if not isinstance(mt, str) or not mt:
        raise ManifestInvalid(f"{where}: descriptor has no mediaType")
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise ManifestInvalid(f"{where}: descriptor has no valid size")
    try:
        digest = Digest.parse(dg)
    except DigestInvalid:
        raise ManifestInvalid(f"{where}: invalid digest {dg!r}") from None
    platform = obj.get("platform")
    return Descriptor(mt, digest, size, platform if isinstance(platform, dict) else None)


def parse_manifest(data: bytes, content_type: str | None) -> ParsedManifest:
    """Validate a manifest's JSON and return its references. Raises ``ManifestInvalid`` for
    bad JSON, an unknown or inconsistent media type, a wrong ``schemaVersion`` or a malformed
    descriptor. ``content_type`` is the request's Content-Type (may be None or generic)."""
    try:
        doc = json.loads(data)
    except (UnicodeDecodeError, ValueError) as e:
        raise ManifestInvalid(f"manifest is not valid JSON: {e}") from None
    except RecursionError:
        # json's C scanner recurses per nesting level: "[[[[...]]]]" must not be a 500
        raise ManifestInvalid("manifest is nested too deeply") from None
    if not isinstance(doc, dict):
        raise ManifestInvalid("manifest is not a JSON object")
    body_type = doc.get("mediaType")
    ct = (content_type or "").split(";")[0].strip().lower() or None
    if ct in (None, "application/json", "application/octet-stream"):
        ct = None
    if body_type is not None and not isinstance(body_type, str):
        raise ManifestInvalid("mediaType is not a string")
    if ct is not None and body_type is not None and ct != body_type:
        raise ManifestInvalid(f"Content-Type {ct} does not match the manifest's mediaType "
                              f"{body_type}")
    media_type = body_type or ct
    if media_type is None:
        # OCI makes mediaType optional; infer it from the shape as the spec suggests
        media_type = OCI_INDEX if "manifests" in doc else OCI_MANIFEST
    if media_type not in MANIFEST_TYPES:
        raise ManifestInvalid(f"unsupported manifest media type {media_type!r}")
    if doc.get("schemaVersion") != 2:
        raise ManifestInvalid("schemaVersion must be 2")
    subject = _descriptor(doc["subject"], "subject") if doc.get("subject") is not None else None
    artifact_type = doc.get("artifactType")
    if artifact_type is not None and not isinstance(artifact_type, str):
        raise ManifestInvalid("artifactType is not a string")
    annotations = doc.get("annotations")
    if annotations is not None and not isinstance(annotations, dict):
        raise ManifestInvalid("annotations is not an object")
    if media_type in IMAGE_TYPES:
        config = _descriptor(doc.get("config"), "config")
        layers = doc.get("layers")
        if not isinstance(layers, list):
            raise ManifestInvalid("manifest has no layers array")
        parsed_layers = tuple(_descriptor(x, f"layers[{i}]") for i, x in enumerate(layers))
        return ParsedManifest(media_type, config, parsed_layers, (), subject, artifact_type,
                              annotations)
    manifests = doc.get("manifests")
    if not isinstance(manifests, list):
        raise ManifestInvalid("index has no manifests array")
    parsed = tuple(_descriptor(x, f"manifests[{i}]") for i, x in enumerate(manifests))
    return ParsedManifest(media_type, None, (), parsed, subject, artifact_type, annotations)


# -- uploads -----------------------------------------------------------------------------------

def _last_active(path: str, upload_id: str = "") -> float:
    """The newest mtime of an upload session directory and what it holds (``data`` grows
    with every chunk); ``BlobUploadUnknown`` if the session is gone."""
    times = []
    for p in (path, os.path.join(path, "data"), os.path.join(path, "info.json")):
        with contextlib.suppress(FileNotFoundError, NotADirectoryError):
            times.append(os.stat(p).st_mtime)
    if not times:
        raise BlobUploadUnknown(f"upload {upload_id} is unknown")
    return max(times)


class _HashState:
    """The running hash of an upload session, kept in memory between requests so a chunked
    upload is hashed once, as it arrives. Lost on restart: then commit re-reads the file."""

    __slots__ = ("h", "offset")

    def __init__(self) -> None:
        self.h = hashlib.sha256()
        self.offset = 0


class Upload:
    """One upload session (``uploads/<uuid>``). Use ``append`` for each chunk, then
    ``commit``; ``cancel`` drops it."""

    def __init__(self, storage: RegistryStorage, name: str, upload_id: str) -> None:
        self.storage = storage
        self.name = name
        self.id = upload_id
        self.dir = os.path.join(storage.uploads_dir, upload_id)
        self.data_path = os.path.join(self.dir, "data")

    def last_active(self) -> float:
        """When the session last changed (started, or received a chunk), as a Unix time;
        ``BlobUploadUnknown`` if it is gone."""
        return _last_active(self.dir, self.id)

    @property
    def offset(self) -> int:
        """Bytes received so far."""
        try:
            return os.stat(self.data_path).st_size
        except FileNotFoundError:
            raise BlobUploadUnknown(f"upload {self.id} is unknown") from None

    def appender(self, start: int | None = None) -> UploadAppender:
        """A writer for one chunk. ``start`` (from Content-Range) must equal the current
        offset, else ``RangeInvalid`` (416). On an error inside the ``with`` block the session
        is rolled back to where the chunk began (a dropped connection loses only its chunk)."""
        offset = self.offset
        if start is not None and start != offset:
            raise RangeInvalid(f"chunk starts at {start}, upload has {offset} bytes",
                               detail={"offset": offset})
        return UploadAppender(self, offset)

    def commit(self, digest: Digest, *, expected_size: int | None = None) -> Digest:
        """Verify the received bytes hash to ``digest`` and publish them as that blob, linked
        into the repository. Raises ``DigestInvalid`` (and drops the session) on a mismatch."""
        state = self.storage._hashes.pop(self.id, None)
        size = self.offset
        if expected_size is not None and size != expected_size:
            self.cancel()
            raise SizeInvalid(f"upload has {size} bytes, {expected_size} were declared")
        if state is not None and state.offset == size and digest.algorithm == "sha256":
            actual = Digest("sha256", state.h.hexdigest())
        else:
            with open(self.data_path, "rb") as f:
                actual, _ = Digest.of_stream(f, digest.algorithm)
        if actual != digest:
            self.cancel()
            raise DigestInvalid(f"digest mismatch: expected {digest}, got {actual}",
                                expected=str(digest), actual=str(actual))
        store = self.storage.blobs
        if store.fsync:
            with open(self.data_path, "rb+") as f:
                os.fsync(f.fileno())
        faults.point("upload.commit")
        # the session file is on the same filesystem: a rename publishes it atomically
        store.install(self.data_path, digest)
        self.storage.link_blob(self.name, digest)
        shutil.rmtree(self.dir, ignore_errors=True)
        return digest

    def cancel(self) -> None:
        """Drop the session and its bytes. Idempotent."""
        self.storage._hashes.pop(self.id, None)
        shutil.rmtree(self.dir, ignore_errors=True)


class UploadAppender:
    """Appends one chunk to an upload session, hashing as it writes."""

    def __init__(self, upload: Upload, start: int) -> None:
        self.upload = upload
        self.start = start
        self.written = 0
        storage = upload.storage
        state = storage._hashes.get(upload.id)
        if state is not None and state.offset != start:
            state = None
            storage._hashes.pop(upload.id, None)
        self._state = state
        self._saved = state.h.copy() if state is not None else None
        if state is None and start == 0:
            self._state = storage._hashes.setdefault(upload.id, _HashState())
            self._saved = self._state.h.copy()
        self._file = open(upload.data_path, "r+b")  # noqa: SIM115 (closed in __exit__)
        self._file.seek(start)

    def write(self, data: bytes | memoryview) -> None:
        self._file.write(data)
        if self._state is not None:
            self._state.h.update(data)
        self.written += len(data)
        faults.point("upload.chunk")

    def __enter__(self) -> UploadAppender:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        try:
            if exc_type is not None:
                # roll back: the chunk did not arrive whole, so none of it counts
                self._file.truncate(self.start)
                if self._state is not None and self._saved is not None:
                    self._state.h = self._saved
            else:
                self._file.truncate(self.start + self.written)
                if self._state is not None:
                    self._state.offset = self.start + self.written
        finally:
            self._file.close()


# -- the storage -------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class StoredManifest:
    data: bytes
    media_type: str
    digest: Digest


class RegistryStorage:
    """Repositories, tags, manifests and upload sessions over one shared ``FileBlobStore``.

    Thread-safe for the server's use: every write is atomic on disk, and concurrent uploads of
    the same blob both succeed (the second finds it present)."""

    def __init__(self, root: str | os.PathLike, *, fsync: bool = True,
                 upload_expiry: float | None = DEFAULT_UPLOAD_EXPIRY) -> None:
        """``upload_expiry``: seconds after its last activity that an upload session expires
        (``None``: never); an expired session is unknown (``BLOB_UPLOAD_UNKNOWN``) and
        ``purge_uploads`` deletes it."""
        if upload_expiry is not None and not upload_expiry > 0:
            raise ValueError(f"upload_expiry must be positive, not {upload_expiry!r}")
        self.upload_expiry = upload_expiry
        self._purge_lock = threading.Lock()
        self._last_purge: float | None = None
        self.root = os.fspath(root)
        self.blobs = FileBlobStore(self.root, fsync=fsync)
        self.fsync = fsync
        self.repos_dir = os.path.join(self.root, "repositories")
        self.uploads_dir = os.path.join(self.root, "uploads")
        os.makedirs(self.repos_dir, exist_ok=True)
        os.makedirs(self.uploads_dir, exist_ok=True)
        self._hashes: dict[str, _HashState] = {}

    # paths
    def _repo(self, name: str) -> str:
        return os.path.join(self.repos_dir, check_name(name))

    def _layer_link(self, name: str, digest: Digest) -> str:
        return os.path.join(self._repo(name), "_layers", digest.algorithm, digest.hex)

    def _revision(self, name: str, digest: Digest) -> str:
        return os.path.join(self._repo(name), "_manifests", "revisions", digest.algorithm,
                            digest.hex)

    def _tag_path(self, name: str, tag: str) -> str:
        return os.path.join(self._repo(name), "_manifests", "tags", check_tag(tag))

    def _referrer_dir(self, name: str, subject: Digest) -> str:
        return os.path.join(self._repo(name), "_referrers", subject.algorithm, subject.hex)

    # repositories
    def repositories(self) -> list[str]:
        """Every repository holding at least one manifest, sorted (the catalog)."""
        out: list[str] = []
        for dirpath, dirnames, _ in os.walk(self.repos_dir):
            revisions = os.path.join(dirpath, "_manifests", "revisions")
            if "_manifests" in dirnames and any(
                    os.listdir(os.path.join(revisions, a)) for a in _listdir(revisions)):
                out.append(os.path.relpath(dirpath, self.repos_dir).replace(os.sep, "/"))
            dirnames[:] = [d for d in dirnames if not d.startswith("_")]
        return sorted(out)

    def has_repository(self, name: str) -> bool:
        return os.path.isdir(os.path.join(self._repo(name), "_manifests"))

    # blobs
    def link_blob(self, name: str, digest: Digest) -> None:
        """Make ``digest`` (already in the store) visible in ``name``."""
        path = self._layer_link(name, digest)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o644))

    def blob_linked(self, name: str, digest: Digest) -> bool:
        return os.path.exists(self._layer_link(name, digest)) and digest in self.blobs

    def blob_size(self, name: str, digest: Digest) -> int:
        """Size of a blob visible in ``name``; ``BlobUnknown`` otherwise."""
        if not self.blob_linked(name, digest):
            raise BlobUnknown(f"blob unknown to registry: {digest}",
                              detail={"digest": str(digest)})
        return self.blobs.size(digest)

    def unlink_blob(self, name: str, digest: Digest) -> None:
        """Remove ``digest`` from ``name`` (``BlobUnknown`` if it was not there). The bytes
        stay in the shared store until ``gc``."""
        path = self._layer_link(name, digest)
        try:
            os.unlink(path)
        except FileNotFoundError:
            raise BlobUnknown(f"blob unknown to registry: {digest}",
                              detail={"digest": str(digest)}) from None

    def mount_blob(self, name: str, digest: Digest, from_repo: str | None) -> bool:
        """Link a blob from ``from_repo`` (or, with None, from anywhere in this registry) into
        ``name``. False if it is not there (the caller then starts a normal upload)."""
        if from_repo is not None:
            try:
                check_name(from_repo)
            except NameInvalid:
                return False
            if not self.blob_linked(from_repo, digest):
                return False
        elif digest not in self.blobs:
            return False
        self.link_blob(name, digest)
        return True

    # uploads
    def start_upload(self, name: str) -> Upload:
        check_name(name)
        upload_id = str(uuidlib.uuid4())
        up = Upload(self, name, upload_id)
        os.makedirs(up.dir)
        write_atomic(os.path.join(up.dir, "info.json"),
                     json.dumps({"v": 1, "name": name, "started": time.time()}).encode(),
                     fsync=False)
        open(up.data_path, "wb").close()
        return up

    def upload(self, name: str, upload_id: str) -> Upload:
        """The session ``upload_id`` of ``name``; ``BlobUploadUnknown`` if there is none (or
        it belongs to another repository, or the id is malformed)."""
        check_name(name)
        try:
            uuidlib.UUID(upload_id)
        except (ValueError, TypeError):
            raise BlobUploadUnknown(f"upload {upload_id!r} is unknown") from None
        up = Upload(self, name, upload_id)
        try:
            with open(os.path.join(up.dir, "info.json"), "rb") as f:
                info = json.load(f)
        except (FileNotFoundError, ValueError):
            raise BlobUploadUnknown(f"upload {upload_id!r} is unknown") from None
        if info.get("name") != name:
            raise BlobUploadUnknown(f"upload {upload_id!r} is unknown in {name}")
        if self.upload_expiry is not None and \
                time.time() - up.last_active() >= self.upload_expiry:
            # expired but not purged yet: it is gone for clients all the same
            up.cancel()
            raise BlobUploadUnknown(f"upload {upload_id!r} has expired")
        return up

    def purge_uploads(self, older_than: float | None = None, *, dry_run: bool = False,
                      now: float | None = None) -> list[str]:
        """Delete the upload sessions (and stray entries of ``uploads/``) whose last activity
        is ``older_than`` seconds or more ago (default: ``upload_expiry``; nothing when that
        is ``None``); returns their ids, sorted. What the reference registry's upload purging
        does, by the time of last activity rather than of the start, so a slow upload that
        keeps sending chunks is never cut off. Safe while the server runs: a session that
        gets a chunk meanwhile is at worst gone, and its client gets BLOB_UPLOAD_UNKNOWN."""
        age = self.upload_expiry if older_than is None else older_than
        if age is None:
            return []
        now = time.time() if now is None else now
        gone = []
        for entry in _listdir(self.uploads_dir):
            path = os.path.join(self.uploads_dir, entry)
            try:
                last = _last_active(path, entry)
            except BlobUploadUnknown:
                continue
            if now - last < age:
                continue
            gone.append(entry)
            if dry_run:
                continue
            self._hashes.pop(entry, None)
            if os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path, ignore_errors=True)
            else:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path)
        return sorted(gone)

    def purge_due(self, interval: float) -> bool:
        """True (and the clock restarted) when the last ``purge_uploads`` run through this
        method was ``interval`` seconds ago or more, or never happened: the periodic check of
        a running server, cheap enough for every request."""
        with self._purge_lock:
            now = time.monotonic()
            if self._last_purge is not None and now - self._last_purge < interval:
                return False
            self._last_purge = now
            return True

    # manifests
    def put_manifest(self, name: str, reference: str, data: bytes,
                     content_type: str | None) -> tuple[Digest, ParsedManifest]:
        """Validate and store a manifest under a tag or its digest. The exact bytes are kept.
        Raises ``ManifestInvalid`` (413 status when over 4 MiB), ``ManifestBlobUnknown`` for a
        missing config/layer/child manifest, ``DigestInvalid`` if ``reference`` is a digest the
        bytes do not hash to, ``TagInvalid``/``NameInvalid`` for bad names."""
        check_name(name)
        if len(data) > MANIFEST_MAX:
            err = ManifestInvalid(f"manifest is {len(data)} bytes, over the "
                                  f"{MANIFEST_MAX}-byte limit")
            err.status = 413  # type: ignore[misc]
            raise err
        if is_digest(reference):
            expected = Digest.parse(reference)
            digest = Digest.of(data, expected.algorithm)
            if digest != expected:
                raise DigestInvalid(f"manifest digest mismatch: expected {expected}, got "
                                    f"{digest}", expected=str(expected), actual=str(digest))
            tag = None
        else:
            tag = check_tag(reference)
            digest = Digest.of(data)
        parsed = parse_manifest(data, content_type)
        for desc in ([parsed.config] if parsed.config else []) + list(parsed.layers):
            if not self.blob_linked(name, desc.digest):
                raise ManifestBlobUnknown(f"blob unknown to registry: {desc.digest}",
                                          detail={"digest": str(desc.digest)})
            if self.blobs.size(desc.digest) != desc.size:
                raise ManifestInvalid(f"descriptor size {desc.size} of {desc.digest} does not "
                                      f"match the blob ({self.blobs.size(desc.digest)} bytes)")
        for desc in parsed.manifests:
            if not os.path.exists(self._revision(name, desc.digest)):
                raise ManifestBlobUnknown(f"manifest unknown to registry: {desc.digest}",
                                          detail={"digest": str(desc.digest)})
        self.blobs.put(data, digest)
        meta = {"mediaType": parsed.media_type}
        write_atomic(self._revision(name, digest), json.dumps(meta).encode(), fsync=self.fsync)
        if parsed.subject is not None:
            write_atomic(os.path.join(self._referrer_dir(name, parsed.subject.digest),
                                      digest.algorithm, digest.hex),
                         json.dumps(self._referrer_descriptor(parsed, digest, len(data)))
                         .encode(), fsync=self.fsync)
        if tag is not None:
            write_atomic(self._tag_path(name, tag), str(digest).encode(), fsync=self.fsync)
        return digest, parsed

    @staticmethod
    def _referrer_descriptor(parsed: ParsedManifest, digest: Digest, size: int) -> dict:
        desc: dict[str, Any] = {"mediaType": parsed.media_type, "digest": str(digest),
                                "size": size}
        artifact = parsed.artifact_type
        if artifact is None and parsed.config is not None:
            artifact = parsed.config.media_type  # the spec's fallback for image manifests
        if artifact is not None:
            desc["artifactType"] = artifact
        if parsed.annotations:
            desc["annotations"] = parsed.annotations
        return desc

    def resolve(self, name: str, reference: str) -> Digest:
        """The digest a tag or digest reference names in ``name``. ``ManifestUnknown`` if
        absent, ``NameUnknown`` if the repository does not exist."""
        check_name(name)
        if is_digest(reference):
            digest = Digest.parse(reference)
        else:
            try:
                with open(self._tag_path(name, reference), "rb") as f:
                    digest = Digest.parse(f.read().decode())
            except FileNotFoundError:
                if not self.has_repository(name):
                    raise NameUnknown(f"repository name not known to registry: {name}",
                                      detail={"name": name}) from None
                raise ManifestUnknown(f"manifest unknown: {name}:{reference}",
                                      detail={"tag": reference}) from None
        if not os.path.exists(self._revision(name, digest)):
            if not self.has_repository(name):
                raise NameUnknown(f"repository name not known to registry: {name}",
                                  detail={"name": name})
            raise ManifestUnknown(f"manifest unknown: {name}@{digest}",
                                  detail={"digest": str(digest)})
        return digest

    def get_manifest(self, name: str, reference: str) -> StoredManifest:
        """The exact bytes, media type and digest of a manifest (see ``resolve`` for errors)."""
        digest = self.resolve(name, reference)
        with open(self._revision(name, digest), "rb") as f:
            media_type = json.load(f)["mediaType"]
        try:
            data = self.blobs.get(digest)
        except BlobUnknown:
            raise ManifestUnknown(f"manifest unknown: {name}@{digest}") from None
        return StoredManifest(data, media_type, digest)

    def manifest_info(self, name: str, reference: str) -> tuple[Digest, str, int]:
        """Digest, media type and size of a manifest without reading its bytes (for HEAD)."""
        digest = self.resolve(name, reference)
        with open(self._revision(name, digest), "rb") as f:
            media_type = json.load(f)["mediaType"]
        return digest, media_type, self.blobs.size(digest)

    def tags(self, name: str) -> list[str]:
        """Sorted tags of ``name``; ``NameUnknown`` if the repository does not exist."""
        if not self.has_repository(name):
            raise NameUnknown(f"repository name not known to registry: {name}",
                              detail={"name": name})
        try:
            return sorted(n for n in os.listdir(os.path.join(self._repo(name), "_manifests",
                                                             "tags"))
                          if TAG_RE.match(n))
        except FileNotFoundError:
            return []

    def delete_manifest(self, name: str, reference: str) -> None:
        """By digest: remove the manifest and every tag naming it. By tag: remove the tag.
        ``ManifestUnknown``/``NameUnknown`` if absent."""
        digest = self.resolve(name, reference)
        if not is_digest(reference):
            os.unlink(self._tag_path(name, reference))
            return
        for tag in self.tags(name):
            with contextlib.suppress(FileNotFoundError, DigestInvalid), \
                    open(self._tag_path(name, tag), "rb") as f:
                if Digest.parse(f.read().decode()) == digest:
                    os.unlink(self._tag_path(name, tag))
        try:
            data = self.blobs.get(digest)
            parsed = parse_manifest(data, None)
        except Exception:
            parsed = None
        if parsed is not None and parsed.subject is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(self._referrer_dir(name, parsed.subject.digest),
                                       digest.algorithm, digest.hex))
        os.unlink(self._revision(name, digest))

    def referrers(self, name: str, subject: Digest,
                  artifact_type: str | None = None) -> list[dict[str, Any]]:
        """Descriptors of the manifests in ``name`` whose ``subject`` is ``subject``
        (optionally only those of ``artifact_type``), sorted by digest."""
        check_name(name)
        base = self._referrer_dir(name, subject)
        out = []
        for algorithm in sorted(os.listdir(base)) if os.path.isdir(base) else []:
            for hexpart in sorted(os.listdir(os.path.join(base, algorithm))):
                if ".tmp-" in hexpart:
                    continue
                with open(os.path.join(base, algorithm, hexpart), "rb") as f:
                    desc = json.load(f)
                if artifact_type is None or desc.get("artifactType") == artifact_type:
                    out.append(desc)
        return out

    def revisions(self, name: str) -> Iterator[Digest]:
        base = os.path.join(self._repo(name), "_manifests", "revisions")
        for algorithm in sorted(os.listdir(base)) if os.path.isdir(base) else []:
            for hexpart in sorted(os.listdir(os.path.join(base, algorithm))):
                with contextlib.suppress(DigestInvalid):
                    yield Digest.parse(f"{algorithm}:{hexpart}")

    # garbage collection
    def gc(self, *, dry_run: bool = False, upload_grace: float | None = None) -> GcResult:
        """Remove blobs no manifest references (mark: every manifest of every repository and
        the blobs and child manifests it names; sweep: the rest), their repository links, and
        upload sessions and temporaries idle for ``upload_grace`` seconds (default: an hour,
        or ``upload_expiry`` when that is shorter). Run it while no push is in progress (as
        with ``registry garbage-collect``). ``dry_run`` changes nothing; its
        ``uploads_removed`` counts the sessions that would go."""
        if upload_grace is None:
            upload_grace = min(3600.0, self.upload_expiry or 3600.0)
        marked: set[Digest] = set()
        all_repos = []
        for dirpath, dirnames, _ in os.walk(self.repos_dir):
            if "_layers" in dirnames or "_manifests" in dirnames:
                all_repos.append(os.path.relpath(dirpath, self.repos_dir).replace(os.sep, "/"))
            dirnames[:] = [d for d in dirnames if not d.startswith("_")]
        for repo in all_repos:
            for digest in self.revisions(repo):
                marked.add(digest)
                try:
                    parsed = parse_manifest(self.blobs.get(digest), None)
                except Exception:
                    continue
                for desc in ([parsed.config] if parsed.config else []) + list(parsed.layers):
                    marked.add(desc.digest)
                marked.update(d.digest for d in parsed.manifests)
        removed = [d for d in self.blobs if d not in marked]
        freed = 0
        for digest in removed:
            with contextlib.suppress(BlobUnknown):
                freed += self.blobs.size(digest)
            if not dry_run:
                self.blobs.delete(digest)
        if not dry_run:
            gone = set(removed)
            for repo in all_repos:
                layers = os.path.join(self.repos_dir, repo, "_layers")
                for algorithm in os.listdir(layers) if os.path.isdir(layers) else []:
                    for hexpart in os.listdir(os.path.join(layers, algorithm)):
                        with contextlib.suppress(DigestInvalid):
                            if Digest.parse(f"{algorithm}:{hexpart}") in gone:
                                os.unlink(os.path.join(layers, algorithm, hexpart))
            uploads = len(self.purge_uploads(upload_grace))
            self.blobs.sweep_temporaries(older_than=upload_grace)
        else:
            uploads = len(self.purge_uploads(upload_grace, dry_run=True))
        return GcResult(tuple(removed), freed, uploads, len(marked))


@dataclass(frozen=True, slots=True)
class GcResult:
    removed: tuple[Digest, ...]
    freed_bytes: int
    uploads_removed: int
    kept: int


__all__ = [
    "DEFAULT_PURGE_INTERVAL", "DEFAULT_UPLOAD_EXPIRY", "DOCKER_LIST", "DOCKER_MANIFEST",
    "INDEX_TYPES", "MANIFEST_MAX", "MANIFEST_TYPES", "OCI_INDEX", "OCI_MANIFEST", "GcResult",
    "RegistryStorage", "StoredManifest", "Upload", "check_name", "check_tag", "parse_duration",
    "parse_manifest", "write_atomic",
]
