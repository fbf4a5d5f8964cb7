"""Image archives: ``save``, ``load``, ``import`` and the flattening behind ``export``.

``save`` writes what Docker 25+ writes: one tar that is at once an OCI image layout
(``oci-layout``, ``index.json``, ``blobs/sha256/...``) and a docker-archive
(``manifest.json`` whose ``Config`` and ``Layers`` point into ``blobs/``, plus the legacy
``repositories``), so ``docker-archive:`` and ``oci-archive:`` readers both take it. Blobs are
written as stored, so a saved image loads back with the same manifest digest. ``save_oci_dir``
writes an OCI layout directory.

``load`` reads, in one streaming pass (plain, gzip or zstd), docker-archives of every era
(Docker 25 layout-and-archive, the 1.10–24 ``manifest.json`` archive with ``<id>/layer.tar``,
and the pre-1.10 ``repositories`` + ``<id>/json`` chain), oci-archives, and OCI layout
directories; multi-image; tags kept. Names inside an archive are only ever used as keys, never
as paths on disk, so an archive cannot write outside the store. Anything inconsistent
(missing blob, wrong digest or size, a manifest naming a blob the archive does not hold,
nested or cyclic indexes) raises ``ArchiveInvalid``/``DigestInvalid``/``LayerInvalid`` and the
blobs this load added are removed again.

``import_`` makes a one-layer image from a rootfs tar (or a directory), as ``docker import``;
``export_view`` flattens any os-shaped union view (``UnionFS``) into a tar, for
``imagesim export``.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import stat
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, BinaryIO, TextIO

from unionfs.entry import Entry, Kind

from . import faults, oci
from . import layers as _layers
from .digest import Digest
from .errors import ArchiveInvalid, BlobUnknown, DigestInvalid, ImageSimError, ManifestInvalid
from .image import Image, apply_changes, now_rfc3339
from .reference import Reference
from .store import Store

_META = ("manifest.json", "index.json", "oci-layout", "repositories")
_MAX_SMALL_TOTAL = 256 << 20
_MAX_INDEX_DEPTH = 4


# ======================================================================================
# save
# ======================================================================================

@dataclass(frozen=True)
class SaveItem:
    image: Image
    tags: tuple[Reference, ...] = ()


def _select(store: Store, names: Iterable[str]) -> list[SaveItem]:
    """Resolve ``save`` arguments as docker does: ``repo`` alone means every tag of that
    repository, ``repo:tag`` that tag, an id or digest the image with no tags."""
    order: list[str] = []
    items: dict[str, tuple[Image, list[Reference]]] = {}
    all_tags = store.tags()
    for name in names:
        ref = Reference.try_parse(name)
        picked: list[tuple[Image, Reference | None]] = []
        if ref is not None and ref.digest is None and not ref.tag_given:
            for t, d in sorted(all_tags.items()):
                tr = Reference.parse(t)
                if tr.name == ref.name:
                    picked.append((store.get_image(d), tr))
        if not picked:
            image = store.resolve(name)
            tag = ref if ref is not None and ref.digest is None and \
                all_tags.get(ref.full) == image.digest else None
            picked.append((image, tag))
        for image, tag in picked:
            key = str(image.digest)
            if key not in items:
                items[key] = (image, [])
                order.append(key)
            if tag is not None and tag not in items[key][1]:
                items[key][1].append(tag)
    return [SaveItem(items[k][0], tuple(items[k][1])) for k in order]


def _layout_docs(store: Store, items: list[SaveItem]) -> dict[str, bytes]:
    """``oci-layout``, ``index.json``, ``manifest.json`` and ``repositories``."""
    index_entries = []
    manifest_json = []
    repositories: dict[str, dict[str, str]] = {}
    for item in items:
        img = item.image
        if item.tags:
            for tag in item.tags:
                index_entries.append(oci.Descriptor(
                    img.media_type, img.digest, len(img.manifest_bytes),
                    annotations=((oci.ANNOTATION_IMAGE_NAME, tag.full),
                                 (oci.ANNOTATION_REF_NAME, tag.tag or "latest"))))
        else:
            index_entries.append(oci.Descriptor(img.media_type, img.digest,
                                                len(img.manifest_bytes)))
        manifest_json.append({
            "Config": f"blobs/sha256/{img.id.hex}",
            "RepoTags": [str(t) for t in item.tags] or None,
            "Layers": [f"blobs/sha256/{d.digest.hex}" for d in img.layers],
        })
        for tag in item.tags:
            if img.layers:
                repositories.setdefault(tag.familiar_name, {})[tag.tag or "latest"] = \
                    img.layers[-1].digest.hex
    docs = {
        "oci-layout": oci.OCI_LAYOUT_BYTES,
        "index.json": oci.build_index(index_entries),
        "manifest.json": json.dumps(manifest_json, separators=(",", ":")).encode(),
    }
    if repositories:
        docs["repositories"] = json.dumps(repositories, separators=(",", ":")).encode()
    return docs


def _blobs_of(items: list[SaveItem]) -> list[Digest]:
    seen: dict[Digest, None] = {}
    for item in items:
        img = item.image
        seen.setdefault(img.digest)
        seen.setdefault(img.id)
        for d in img.layers:
            seen.setdefault(d.digest)
    return list(seen)


@dataclass(frozen=True)
class SaveResult:
    images: tuple[SaveItem, ...]
    blobs: int
    bytes: int


def save(store: Store, names: Iterable[str], out: BinaryIO,
         progress: Callable[[int], None] | None = None) -> SaveResult:
    """Write the images ``names`` resolve to as one tar into ``out`` (see the module doc).
    Raises ``ImageNotFound`` for a name that resolves to nothing, ``BlobUnknown`` when a
    blob is missing from the store (nothing useful is written then: callers write to a
    temporary file and rename)."""
    items = _select(store, names)
    digests = _blobs_of(items)
    for d in digests:
        if d not in store.blobs:
            raise BlobUnknown(f"blob {d} is missing from the store")
    docs = _layout_docs(store, items)
    total = 0

    def header(name: str, kind: str, size: int = 0, mode: int = 0o644) -> None:
        out.write(_layers.tar_header(name, kind=kind, size=size, mode=mode))

    def file(name: str, data: bytes) -> None:
        nonlocal total
        header(name, "0", len(data))
        out.write(data)
        out.write(b"\0" * (-len(data) % 512))
        total += len(data)

    header("blobs/", "5", mode=0o755)
    header("blobs/sha256/", "5", mode=0o755)
    for d in digests:
        size = store.blobs.size(d)
        header(f"blobs/sha256/{d.hex}", "0", size)
        with store.blobs.open(d) as f:
            left = size
            while left > 0:
                chunk = f.read(min(left, 1 << 20))
                if not chunk:
                    raise BlobUnknown(f"blob {d} shrank while it was saved")
                out.write(chunk)
                left -= len(chunk)
                if progress:
                    progress(len(chunk))
        out.write(b"\0" * (-size % 512))
        faults.point("save.entry")
        total += size
    for name in ("index.json", "manifest.json", "oci-layout", "repositories"):
        if name in docs:
            file(name, docs[name])
    out.write(b"\0" * 1024)
    return SaveResult(tuple(items), len(digests), total)


def _temp_name(path: str) -> str:
    """The temporary file ``save_to_file`` writes before it renames it to ``path``."""
    directory, base = os.path.split(os.path.abspath(path))
    return os.path.join(directory, f".{base}.tmp-{os.getpid()}")


def _pid_alive(pid: int) -> bool:
    """True if process ``pid`` runs here (a zombie, whose files are all closed, is not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # someone else's process
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] not in (b"Z", b"X")
    except (OSError, IndexError):
        return True


def _remove_if_stale(path: str, pid: int) -> bool:
    """Remove the temporary ``path`` of writer ``pid`` if that writer is gone: its pid is not
    running here and nobody holds the ``flock`` every writer keeps on its temporary (which the
    kernel drops when a process dies, even by SIGKILL, and which also covers writers in other
    pid namespaces sharing the directory). True if it was removed."""
    if pid == os.getpid() or _pid_alive(pid):
        return False
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return False  # gone already, or not a file we may open: leave it
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return False  # a live writer holds it
        try:
            # still the same file under that name (not replaced since we opened it)
            if os.path.samestat(os.fstat(fd), os.lstat(path)):
                os.unlink(path)
                return True
        except FileNotFoundError:
            pass
        return False
    finally:
        os.close(fd)


def _sweep(directory: str, head: str | None = None) -> list[str]:
    """Remove the stale ``HEAD.tmp-PID`` files in ``directory`` (any ``HEAD`` when None; see
    ``_remove_if_stale``); returns the paths removed."""
    removed = []
    try:
        names = os.listdir(directory)
    except OSError:
        return removed
    for name in names:
        stem, sep, pid = name.rpartition(".tmp-")
        if not sep or not stem or not pid.isdigit() or head not in (None, stem):
            continue
        candidate = os.path.join(directory, name)
        if _remove_if_stale(candidate, int(pid)):
            removed.append(candidate)
    return removed


def remove_stale_temporaries(path: str | os.PathLike) -> list[str]:
    """Remove the ``.NAME.tmp-PID`` files that killed ``save -o NAME`` runs left beside
    ``path`` (writers that are gone; see ``_remove_if_stale``); returns the paths removed.
    Temporaries of live writers, and of other files, are left alone. Never raises for a
    file it cannot remove."""
    directory, base = os.path.split(os.path.abspath(os.fspath(path)))
    return _sweep(directory, f".{base}")


def _open_temp(path: str) -> BinaryIO:
    """Create (or truncate) the temporary ``path`` and hold an ``flock`` on it for as long as
    it is open: the mark ``_remove_if_stale`` looks for."""
    f = open(path, "wb")  # noqa: SIM115 (the caller closes it)
    try:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
    except BaseException:
        f.close()
        raise
    return f


def save_to_file(store: Store, names: Iterable[str], path: str | os.PathLike,
                 progress: Callable[[int], None] | None = None) -> SaveResult:
    """``save`` into ``path`` atomically (temporary ``.NAME.tmp-PID`` in the same directory,
    fsync, rename): a failed save leaves no partial archive, and a killed one at most its
    temporary, which the next save to ``path`` removes (``remove_stale_temporaries``)."""
    path = os.fspath(path)
    tmp = _temp_name(path)
    remove_stale_temporaries(path)
    try:
        with _open_temp(tmp) as f:
            result = save(store, names, f, progress)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return result


def save_oci_dir(store: Store, names: Iterable[str], directory: str | os.PathLike
                 ) -> SaveResult:
    """Write an OCI image layout directory (created if missing; blobs already there are
    kept, ``index.json`` is replaced atomically and lists exactly these images)."""
    directory = os.fspath(directory)
    items = _select(store, names)
    digests = _blobs_of(items)
    docs = _layout_docs(store, items)
    blob_dir = os.path.join(directory, "blobs", "sha256")
    os.makedirs(blob_dir, exist_ok=True)
    # what killed earlier runs left: NAME.tmp-PID of writers that are gone
    _sweep(directory)
    _sweep(blob_dir)
    total = 0
    for d in digests:
        target = os.path.join(blob_dir, d.hex)
        size = store.blobs.size(d)
        total += size
        if os.path.exists(target) and os.path.getsize(target) == size:
            continue
        tmp = target + f".tmp-{os.getpid()}"
        with store.blobs.open(d) as src, _open_temp(tmp) as dst:
            while chunk := src.read(1 << 20):
                dst.write(chunk)
            dst.flush()
            os.fsync(dst.fileno())
        os.replace(tmp, target)
    for name in ("oci-layout", "index.json"):
        _atomic_write(os.path.join(directory, name), docs[name])
    return SaveResult(tuple(items), len(digests), total)


def _atomic_write(path: str, data: bytes) -> None:
    tmp = f"{path}.tmp-{os.getpid()}"
    with _open_temp(tmp) as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


# ======================================================================================
# load
# ======================================================================================

def _clean(name: str) -> str:
    parts = [p for p in name.split("/") if p not in ("", ".")]
    return "/".join(parts)


class _Source:
    """The files of an archive or layout: small ones readable, every one placeable in the
    store as a blob."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.new_blobs: list[Digest] = []

    def names(self) -> set[str]:
        raise NotImplementedError

    def read(self, name: str) -> bytes:
        raise NotImplementedError

    def blob_for(self, name: str, expected: Digest | None = None) -> Digest:
        """Make sure the file ``name`` is in the store; return its digest (checked against
        ``expected``)."""
        raise NotImplementedError

    def read_blob(self, digest: Digest, size: int | None = None) -> bytes:
        name = f"blobs/{digest.algorithm}/{digest.hex}"
        if name not in self.names():
            raise ArchiveInvalid(f"the archive does not contain blob {digest}")
        data = self.read(name)
        digest.verify(data)
        if size is not None and size != len(data):
            raise ArchiveInvalid(f"blob {digest} has {len(data)} bytes, its descriptor says "
                                 f"{size}")
        return data

    def ensure_blob(self, desc: oci.Descriptor) -> None:
        name = f"blobs/{desc.digest.algorithm}/{desc.digest.hex}"
        if name not in self.names():
            raise ArchiveInvalid(f"the archive does not contain blob {desc.digest}")
        self.blob_for(name, desc.digest)
        if self.store.blobs.size(desc.digest) != desc.size:
            raise ArchiveInvalid(f"blob {desc.digest} has {self.store.blobs.size(desc.digest)}"
                                 f" bytes, its descriptor says {desc.size}")


class _TarSource(_Source):
    """One streaming pass over a (compressed) tar: every regular file goes into the store
    as a blob while it streams; small files are also kept in memory."""

    def __init__(self, store: Store, stream: BinaryIO) -> None:
        super().__init__(store)
        self.digests: dict[str, Digest] = {}
        self.small: dict[str, bytes] = {}
        self.links: dict[str, str] = {}
        small_total = 0
        limits = _layers.Limits(max_bytes=1 << 42, max_entries=1_000_000)
        inp = _layers._Input(stream, limits, None)
        try:
            for e in _layers.iter_tar(inp, limits):
                name = _clean(e.name)
                if e.kind in ("0", "7"):
                    keep = e.size <= oci.MAX_DOCUMENT and small_total + e.size <= \
                        _MAX_SMALL_TOTAL
                    buf = bytearray() if keep else None
                    with store.blobs.writer() as w:
                        left = e.size
                        while left > 0:
                            chunk = inp.read_some(min(left, 1 << 20))
                            w.write(chunk)
                            if buf is not None:
                                buf += chunk
                            left -= len(chunk)
                        existed = None
                        digest = w.hasher.digest()
                        existed = digest in store.blobs
                        w.commit()
                    if not existed:
                        self.new_blobs.append(digest)
                    self.digests[name] = digest
                    if buf is not None:
                        self.small[name] = bytes(buf)
                        small_total += len(buf)
                elif e.kind in ("1", "2"):
                    target = e.linkname
                    if e.kind == "2" and not target.startswith("/"):
                        target = os.path.join(os.path.dirname(name), target)
                    self.links[name] = os.path.normpath(target).lstrip("/")
            inp.drain()
        except ImageSimError as err:
            self.discard()
            raise ArchiveInvalid(f"not a readable image archive: {err}") from None
        except BaseException:
            self.discard()
            raise
        finally:
            inp.close()

    def discard(self) -> None:
        for d in self.new_blobs:
            self.store.blobs.delete(d)
        self.new_blobs.clear()

    def ensure_blob(self, desc: oci.Descriptor) -> None:
        # a docker-archive names blobs by path (<id>/layer.tar): any file of this archive
        # with the right digest will do
        name = f"blobs/{desc.digest.algorithm}/{desc.digest.hex}"
        if name in self.names():
            self.blob_for(name, desc.digest)      # DigestInvalid when it lies
        elif desc.digest not in set(self.digests.values()):
            raise ArchiveInvalid(f"the archive does not contain blob {desc.digest}")
        if self.store.blobs.size(desc.digest) != desc.size:
            raise ArchiveInvalid(f"blob {desc.digest} has {self.store.blobs.size(desc.digest)}"
                                 f" bytes, its descriptor says {desc.size}")

    def add_generated(self, data: bytes) -> Digest:
        """Put a document this load made (a rebuilt config) and count it as the archive's."""
        existed = Digest.of(data) in self.store.blobs
        d = self.store.blobs.put(data)
        if not existed:
            self.new_blobs.append(d)
        self.digests[f"<generated>/{d.hex}"] = d
        return d

    def _resolve(self, name: str) -> str:
        seen = 0
        name = _clean(name)
        while name in self.links and seen < 16:
            name = self.links[name]
            seen += 1
        return name

    def names(self) -> set[str]:
        return set(self.digests) | set(self.links)

    def read(self, name: str) -> bytes:
        real = self._resolve(name)
        if real in self.small:
            return self.small[real]
        if real in self.digests:
            d = self.digests[real]
            if self.store.blobs.size(d) > oci.MAX_DOCUMENT:
                raise ArchiveInvalid(f"{name} is too large for a metadata document")
            return self.store.blobs.get(d)
        raise ArchiveInvalid(f"the archive does not contain {name}")

    def blob_for(self, name: str, expected: Digest | None = None) -> Digest:
        real = self._resolve(name)
        if real not in self.digests:
            raise ArchiveInvalid(f"the archive does not contain {name}")
        d = self.digests[real]
        if expected is not None and d != expected:
            raise DigestInvalid(f"{name} hashes to {d}, not {expected}", expected=str(expected),
                                actual=str(d))
        return d


class _DirSource(_Source):
    """An OCI layout directory, read in place; blobs are copied (verified) on demand."""

    def __init__(self, store: Store, directory: str) -> None:
        super().__init__(store)
        self.dir = os.path.realpath(directory)

    def _path(self, name: str) -> str:
        path = os.path.realpath(os.path.join(self.dir, _clean(name)))
        if not path.startswith(self.dir + os.sep):
            raise ArchiveInvalid(f"{name} points outside the layout")
        return path

    def names(self) -> set[str]:
        out = set()
        for base, _dirs, files in os.walk(self.dir):
            for f in files:
                out.add(os.path.relpath(os.path.join(base, f), self.dir).replace(os.sep, "/"))
        return out

    def _open(self, name: str, path: str) -> BinaryIO:
        """Open a layout file that must be a regular file: O_NONBLOCK so a FIFO planted in
        the layout cannot hang the load, then fstat (no check-then-open race)."""
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise ArchiveInvalid(f"{name} in the layout is not a regular file")
        return os.fdopen(fd, "rb")

    def read(self, name: str) -> bytes:
        path = self._path(name)
        try:
            if os.path.getsize(path) > oci.MAX_DOCUMENT:
                raise ArchiveInvalid(f"{name} is too large for a metadata document")
            with self._open(name, path) as f:
                return f.read()
        except FileNotFoundError:
            raise ArchiveInvalid(f"the layout does not contain {name}") from None

    def blob_for(self, name: str, expected: Digest | None = None) -> Digest:
        path = self._path(name)
        if expected is not None and expected in self.store.blobs:
            return expected
        try:
            with self._open(name, path) as f:
                d, _ = self.store.blobs.put_stream(f, expected)
        except FileNotFoundError:
            raise ArchiveInvalid(f"the layout does not contain {name}") from None
        self.new_blobs.append(d)
        return d

    def discard(self) -> None:
        for d in self.new_blobs:
            self.store.blobs.delete(d)
        self.new_blobs.clear()


@dataclass
class _Found:
    manifest: bytes
    tags: list[Reference] = field(default_factory=list)


def _tags_from_annotations(desc: oci.Descriptor) -> list[Reference]:
    name = desc.annotation(oci.ANNOTATION_IMAGE_NAME)
    if name:
        ref = Reference.try_parse(name)
        if ref is not None and ref.digest is None:
            return [ref]
    ref_name = desc.annotation(oci.ANNOTATION_REF_NAME)
    # a ref.name that is only a tag ("latest") names no repository; one with a repository
    # ("ubuntu:latest", as skopeo writes for oci-archive:FILE:NAME) does
    if ref_name and ("/" in ref_name or ":" in ref_name):
        ref = Reference.try_parse(ref_name)
        if ref is not None and ref.digest is None:
            return [ref]
    return []


def _from_index(src: _Source, index_bytes: bytes, depth: int = 0,
                inherited: list[Reference] | None = None) -> list[_Found]:
    if depth > _MAX_INDEX_DEPTH:
        raise ArchiveInvalid("image indexes are nested too deeply (cyclic?)")
    out: list[_Found] = []
    descs = oci.parse_index(index_bytes, ArchiveInvalid)
    if len(descs) > 10_000:
        raise ArchiveInvalid(f"index lists {len(descs)} manifests")
    for desc in descs:
        tags = _tags_from_annotations(desc) or list(inherited or [])
        if desc.media_type in oci.INDEX_TYPES:
            nested = src.read_blob(desc.digest, desc.size)
            sub = oci.parse_index(nested, ArchiveInvalid)
            pick = oci.pick_platform(sub)
            if pick is None:
                raise ArchiveInvalid(f"index {desc.digest} has no linux/amd64 image")
            if pick.media_type in oci.INDEX_TYPES:
                out += _from_index(src, oci.build_index([pick]), depth + 1, tags)
                continue
            manifest = src.read_blob(pick.digest, pick.size)
            out.append(_Found(manifest, tags))
        elif desc.media_type in oci.MANIFEST_TYPES:
            out.append(_Found(src.read_blob(desc.digest, desc.size), tags))
        # other artifacts (signatures, attestations) are skipped, as docker does
    return out


def _detect(src: _Source, name: str) -> str:
    d = src.blob_for(name)
    with src.store.blobs.open(d) as f:
        head = f.read(4)
    if head.startswith(b"\x1f\x8b"):
        return oci.OCI_LAYER_GZIP
    if head.startswith(b"\x28\xb5\x2f\xfd"):
        return oci.OCI_LAYER_ZSTD
    return oci.OCI_LAYER


def _from_docker_manifest(src: _Source, data: bytes) -> list[_Found]:
    try:
        entries = json.loads(data)
    except ValueError as e:
        raise ArchiveInvalid(f"manifest.json is not valid JSON: {e}") from None
    if not isinstance(entries, list):
        raise ArchiveInvalid("manifest.json is not a list")
    out = []
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict) or not isinstance(entry.get("Config"), str) or \
                not isinstance(entry.get("Layers"), list):
            raise ArchiveInvalid(f"manifest.json entry {i} has no Config or Layers")
        config_bytes = src.read(entry["Config"])
        try:
            config = oci.parse_config(config_bytes)
        except ManifestInvalid as e:
            raise ArchiveInvalid(f"{entry['Config']}: {e}") from None
        config_digest = src.blob_for(entry["Config"])
        layer_names = [str(n) for n in entry["Layers"]]
        if len(layer_names) != len(config["rootfs"]["diff_ids"]):
            raise ArchiveInvalid(f"manifest.json entry {i} lists {len(layer_names)} layers, "
                                 f"its config {len(config['rootfs']['diff_ids'])}")
        descs = []
        for n in layer_names:
            d = src.blob_for(n)
            descs.append(oci.Descriptor(_detect(src, n), d, src.store.blobs.size(d)))
        manifest = oci.build_manifest(
            oci.Descriptor(oci.OCI_CONFIG, config_digest, len(config_bytes)), descs)
        tags = []
        for t in entry.get("RepoTags") or []:
            ref = Reference.try_parse(str(t))
            if ref is None or ref.digest is not None:
                raise ArchiveInvalid(f"manifest.json entry {i} has an invalid tag {t!r}")
            tags.append(ref)
        out.append(_Found(manifest, tags))
    return out


def _from_repositories(src: _Source, data: bytes) -> list[_Found]:
    """The pre-1.10 format: ``repositories`` names top layer ids; each ``<id>/json`` has a
    ``parent``; the image config is rebuilt from the top layer's json."""
    try:
        repos = json.loads(data)
    except ValueError as e:
        raise ArchiveInvalid(f"repositories is not valid JSON: {e}") from None
    if not isinstance(repos, dict):
        raise ArchiveInvalid("repositories is not an object")
    by_top: dict[str, list[Reference]] = {}
    for repo, tags in repos.items():
        if not isinstance(tags, dict):
            raise ArchiveInvalid("repositories entry is not an object")
        for tag, top in tags.items():
            ref = Reference.try_parse(f"{repo}:{tag}")
            if ref is None:
                raise ArchiveInvalid(f"repositories has an invalid name {repo}:{tag}")
            by_top.setdefault(str(top), []).append(ref)
    out = []
    for top, tags in by_top.items():
        chain: list[tuple[str, dict[str, Any]]] = []
        layer_id: str | None = top
        while layer_id:
            if len(chain) > 500 or any(c[0] == layer_id for c in chain):
                raise ArchiveInvalid("layer parent chain is cyclic or too long")
            try:
                meta = json.loads(src.read(f"{layer_id}/json"))
            except ValueError as e:
                raise ArchiveInvalid(f"{layer_id}/json is not valid JSON: {e}") from None
            chain.append((layer_id, meta))
            layer_id = meta.get("parent")
        chain.reverse()
        descs, diff_ids, history = [], [], []
        for lid, meta in chain:
            name = f"{lid}/layer.tar"
            d = src.blob_for(name)
            with src.store.blobs.open(d) as f:
                _, diff_id, _ = _layers.digests_of(f)
            descs.append(oci.Descriptor(_detect(src, name), d, src.store.blobs.size(d)))
            diff_ids.append(diff_id)
            cmd = (meta.get("container_config") or {}).get("Cmd") or []
            history.append({"created": meta.get("created") or now_rfc3339(),
                            "created_by": " ".join(cmd) if isinstance(cmd, list) else ""})
        top_meta = chain[-1][1]
        config_bytes = oci.build_config(
            created=top_meta.get("created") or now_rfc3339(),
            architecture=top_meta.get("architecture") or "amd64",
            os_name=top_meta.get("os") or "linux", config=top_meta.get("config") or {},
            diff_ids=diff_ids, history=history, author=top_meta.get("author"))
        if isinstance(src, _TarSource):
            src.add_generated(config_bytes)
        else:
            src.store.blobs.put(config_bytes)
        manifest = oci.build_manifest(oci.Descriptor.of(oci.OCI_CONFIG, config_bytes), descs)
        out.append(_Found(manifest, tags))
    return out


@dataclass(frozen=True)
class Loaded:
    image: Image
    tags: tuple[Reference, ...]


def load(store: Store, source: str | os.PathLike | BinaryIO, out: TextIO | None = None, *,
         quiet: bool = False) -> list[Loaded]:
    """``imagesim load``: read an archive file, a stream, or an OCI layout directory into
    the store and print ``Loaded image: NAME:TAG`` (``Loaded image ID: sha256:...`` for an
    untagged image) per image. Raises ``ArchiveInvalid`` (and digest/layer errors) for a
    bad archive; blobs this load added are removed again then."""
    out = out if out is not None else sys.stdout
    with store.lease("load"):
        if isinstance(source, (str, os.PathLike)) and os.path.isdir(source):
            src: _Source = _DirSource(store, os.fspath(source))
        elif isinstance(source, (str, os.PathLike)):
            with open(source, "rb") as f:
                src = _TarSource(store, f)
        else:
            src = _TarSource(store, source)
        try:
            found = _interpret(src)
            loaded = []
            for item in found:
                m = oci.parse_manifest(item.manifest)
                src.ensure_blob(m.config)
                for layer in m.layers:
                    src.ensure_blob(layer)
                img = store.add_image(item.manifest, item.tags)
                loaded.append(Loaded(img, tuple(item.tags)))
        except RecursionError:
            # json's C scanner recurses per nesting level: "[[[[...]]]]" gets here
            src.discard()
            raise ArchiveInvalid("a metadata document is nested too deeply") from None
        except BaseException:
            src.discard()
            raise
        # the archive's other files (manifest.json, <id>/json, VERSION...) went in as blobs
        # while streaming; keep only what the loaded images use
        used: set[Digest] = set()
        for item in loaded:
            used.update((item.image.digest, item.image.id))
            used.update(d.digest for d in item.image.layers)
        for d in src.new_blobs:
            if d not in used:
                store.blobs.delete(d)
    if not quiet:
        for item in loaded:
            if item.tags:
                for t in item.tags:
                    print(f"Loaded image: {t}", file=out)
            else:
                print(f"Loaded image ID: {item.image.id}", file=out)
    return loaded


def _interpret(src: _Source) -> list[_Found]:
    names = src.names()
    found: list[_Found] = []
    if "index.json" in names:
        if "oci-layout" in names:
            oci.parse_layout(src.read("oci-layout"))
        found = _from_index(src, src.read("index.json"))
        if "manifest.json" in names:
            # docker 25 archives: RepoTags name what the index may not annotate
            by_config: dict[Digest, list[Reference]] = {}
            for f in _from_docker_manifest_tags(src):
                by_config.setdefault(f[0], []).extend(f[1])
            for item in found:
                cfg = oci.parse_manifest(item.manifest).config.digest
                for t in by_config.get(cfg, []):
                    if t not in item.tags:
                        item.tags.append(t)
        merged: dict[bytes, _Found] = {}
        for item in found:
            if item.manifest in merged:
                merged[item.manifest].tags.extend(t for t in item.tags
                                                  if t not in merged[item.manifest].tags)
            else:
                merged[item.manifest] = item
        found = list(merged.values())
    elif "manifest.json" in names:
        found = _from_docker_manifest(src, src.read("manifest.json"))
    elif "repositories" in names:
        found = _from_repositories(src, src.read("repositories"))
    else:
        raise ArchiveInvalid("not an image archive: it has no index.json, manifest.json or "
                             "repositories")
    if not found:
        raise ArchiveInvalid("the archive holds no image")
    return found


def _from_docker_manifest_tags(src: _Source) -> list[tuple[Digest, list[Reference]]]:
    try:
        entries = json.loads(src.read("manifest.json"))
    except (ValueError, ArchiveInvalid):
        return []
    out = []
    for entry in entries if isinstance(entries, list) else []:
        if not isinstance(entry, dict) or not isinstance(entry.get("Config"), str):
            continue
        try:
            d = src.blob_for(entry["Config"])
        except ArchiveInvalid:
            continue
        tags = [r for r in (Reference.try_parse(str(t)) for t in entry.get("RepoTags") or [])
                if r is not None and r.digest is None]
        out.append((d, tags))
    return out


# ======================================================================================
# import and export
# ======================================================================================

def import_(store: Store, source: str | os.PathLike | BinaryIO, reference: str | None = None,
            *, changes: Iterable[str] = (), message: str | None = None,
            source_name: str | None = None, compression: str = "gzip",
            platform: str | None = None) -> Image:
    """``imagesim import``: a one-layer image from a rootfs tar (plain or compressed; a file,
    ``-``/a stream, or a directory, which is packed), tagged ``reference`` when given.
    History gets one row with comment ``Imported from SOURCE`` (or ``message``); ``changes``
    are Dockerfile instructions applied to the config (``-c``). Raises ``LayerInvalid`` for a
    broken tar, ``ChangeInvalid`` (``imagesim.image``) for a bad change, ``ReferenceInvalid``
    for a bad name."""
    ref = Reference.parse(reference) if reference else None
    name = source_name or (os.fspath(source) if isinstance(source, (str, os.PathLike))
                           else "-")
    config = apply_changes({}, changes)
    with store.lease("import"):
        if isinstance(source, (str, os.PathLike)) and os.path.isdir(source):
            result = _layers.pack_to_blobs(os.fspath(source), store.blobs,
                                           compression=compression)
            desc, diff_id = result.descriptor(), result.diff_id
        else:
            stream: BinaryIO
            own = isinstance(source, (str, os.PathLike)) and os.fspath(source) != "-"
            stream = open(source, "rb") if own else (  # noqa: SIM115
                sys.stdin.buffer if isinstance(source, (str, os.PathLike)) else source)
            try:
                desc, diff_id = _recompress(store, stream, compression)
            finally:
                if own:
                    stream.close()
        arch, os_name = "amd64", "linux"
        if platform:
            os_name, _, arch = platform.partition("/")
            arch = arch or "amd64"
        created = now_rfc3339()
        image = Image.new(config=config, created=created, architecture=arch, os_name=os_name)
        image = image.append_layer(desc, diff_id, created=created,
                                   comment=message or f"Imported from {name}")
        return store.put_image(image, [ref] if ref else [])


def _recompress(store: Store, stream: BinaryIO, compression: str
                ) -> tuple[oci.Descriptor, Digest]:
    """Copy a (possibly compressed) tar into the store as a layer blob in ``compression``,
    checking on the way that it is a complete, readable tar (entries are parsed, not
    applied: ``add_image`` applies them safely)."""
    limits = _layers.Limits()
    inp = _layers._Input(stream, limits, None)
    with store.blobs.writer() as w:
        sink = _layers._Sink(w, compression, None, None)
        inp.on_data = sink.write
        try:
            for e in _layers.iter_tar(inp, limits):
                if e.kind in ("0", "7"):
                    left = e.size
                    while left > 0:
                        left -= len(inp.read_some(min(left, 1 << 20)))
            inp.drain()
            digest, size, diff_id, _ = sink.close()
        except BaseException:
            sink.shutdown()
            raise
        finally:
            inp.close()
        w.commit()
    comp = "" if compression == "none" else compression
    return oci.Descriptor(oci.layer_media_type(comp), digest, size), diff_id


def export_view(fs: Any, out: BinaryIO, *, exclude: Callable[[str], bool] | None = None,
                compression: str = "none") -> _layers.PackResult:
    """Flatten an os-shaped view (``UnionFS``, a mount table) into a tar on ``out`` (plain
    by default, as ``docker export``): every visible entry with its metadata, hard links
    kept, nothing of the layers' whiteouts. ``exclude(path)`` drops a subtree (volumes)."""
    writer = _layers.TarWriter(out, compression=compression)
    try:
        _export_dir(fs, "/", writer, exclude)
        return writer.close()
    except BaseException:
        writer.abort()
        raise


def _entry_of(fs: Any, path: str, st: os.stat_result) -> Entry:
    kind = Kind.from_mode(st.st_mode)
    xattrs: tuple[tuple[str, bytes], ...] = ()
    if hasattr(fs, "listxattr"):
        with contextlib.suppress(OSError, TypeError):
            names = sorted(fs.listxattr(path))
            xattrs = tuple((n, fs.getxattr(path, n)) for n in names)
    return Entry(kind, mode=stat.S_IMODE(st.st_mode), uid=st.st_uid, gid=st.st_gid,
                 size=st.st_size if kind is Kind.FILE else 0, mtime_ns=st.st_mtime_ns,
                 nlink=st.st_nlink, rdev=st.st_rdev, ino=st.st_ino,
                 target=fs.readlink(path) if kind is Kind.SYMLINK else None, xattrs=xattrs)


def _export_dir(fs: Any, path: str, writer: _layers.TarWriter,
                exclude: Callable[[str], bool] | None) -> None:
    for name in sorted(fs.listdir(path)):
        child = f"/{name}" if path == "/" else f"{path}/{name}"
        if exclude is not None and exclude(child):
            continue
        st = fs.lstat(child)
        entry = _entry_of(fs, child, st)
        if entry.kind is Kind.FILE and not (entry.nlink > 1 and (0, entry.ino) in
                                             writer._links):
            with fs.open(child, "rb") as f:
                writer.add(child, entry, f)
        else:
            writer.add(child, entry)
        if entry.kind is Kind.DIR:
            _export_dir(fs, child, writer, exclude)


