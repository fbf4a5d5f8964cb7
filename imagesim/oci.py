"""The OCI image specification's documents: media types, descriptors, image manifests, image
indexes, image configs and the ``oci-layout`` file, plus the Docker v2 schema 2 types a peer
may send or want.

JSON documents are always carried as the exact bytes they were hashed from: functions here
*build* bytes (``dumps``: compact, keys in the spec's order, as Go's encoder writes them) and
*parse* bytes into dicts after validating the parts the rest of imagesim relies on. Nothing
re-serialises a document it received.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .digest import Digest
from .errors import ArchiveInvalid, DigestInvalid, ManifestInvalid

# -- media types ------------------------------------------------------------------------

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_LAYER_ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"
OCI_LAYER_NONDIST = "application/vnd.oci.image.layer.nondistributable.v1.tar"
OCI_LAYER_NONDIST_GZIP = "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
OCI_EMPTY = "application/vnd.oci.empty.v1+json"

DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar"
DOCKER_LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"
DOCKER_LAYER_FOREIGN = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"

MANIFEST_TYPES = (OCI_MANIFEST, DOCKER_MANIFEST)
INDEX_TYPES = (OCI_INDEX, DOCKER_MANIFEST_LIST)
CONFIG_TYPES = (OCI_CONFIG, DOCKER_CONFIG)
LAYER_TYPES = (OCI_LAYER, OCI_LAYER_GZIP, OCI_LAYER_ZSTD, OCI_LAYER_NONDIST,
               OCI_LAYER_NONDIST_GZIP, DOCKER_LAYER, DOCKER_LAYER_GZIP, DOCKER_LAYER_FOREIGN)

#: layer compression by media type: "gzip", "zstd" or "" (plain tar)
LAYER_COMPRESSION = {
    OCI_LAYER: "", OCI_LAYER_NONDIST: "", DOCKER_LAYER: "",
    OCI_LAYER_GZIP: "gzip", OCI_LAYER_NONDIST_GZIP: "gzip", DOCKER_LAYER_GZIP: "gzip",
    DOCKER_LAYER_FOREIGN: "gzip", OCI_LAYER_ZSTD: "zstd",
}

#: OCI annotation keys used by image layouts and docker save
ANNOTATION_REF_NAME = "org.opencontainers.image.ref.name"
ANNOTATION_IMAGE_NAME = "io.containerd.image.name"
ANNOTATION_CREATED = "org.opencontainers.image.created"

OCI_LAYOUT_VERSION = "1.0.0"
OCI_LAYOUT_BYTES = b'{"imageLayoutVersion":"1.0.0"}'

#: the largest JSON document we parse (manifests, configs, indexes); a bigger one is hostile
MAX_DOCUMENT = 4 * 1024 * 1024


def layer_media_type(compression: str, docker: bool = False) -> str:
    """The layer media type for ``compression`` ("gzip", "zstd", "" or "none")."""
    if docker:
        if compression == "gzip":
            return DOCKER_LAYER_GZIP
        if compression in ("", "none"):
            return DOCKER_LAYER
        raise ManifestInvalid(f"docker schema 2 has no media type for {compression} layers")
    return {"gzip": OCI_LAYER_GZIP, "zstd": OCI_LAYER_ZSTD, "": OCI_LAYER,
            "none": OCI_LAYER}[compression]


def dumps(doc: Mapping[str, Any]) -> bytes:
    """Compact JSON bytes with keys in insertion order (as Go's encoder writes structs),
    ``<``, ``>`` and ``&`` escaped as Go does so documents read the same to Go tools."""
    text = json.dumps(doc, separators=(",", ":"), ensure_ascii=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026") \
        .encode()


def loads(data: bytes, what: str = "document", error: type[Exception] = ManifestInvalid
          ) -> dict[str, Any]:
    """Parse a JSON object, raising ``error`` (``ManifestInvalid`` by default) with a clear
    message for anything that is not a JSON object of reasonable size."""
    if len(data) > MAX_DOCUMENT:
        raise error(f"{what} is too large ({len(data)} bytes)")
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError) as e:
        raise error(f"{what} is not valid JSON: {e}") from None
    except RecursionError:  # e.g. [[[[...]]]] 50,000 deep from a hostile peer
        raise error(f"{what} is nested too deeply") from None
    if not isinstance(doc, dict):
        raise error(f"{what} is not a JSON object")
    return doc


# -- descriptors -------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Platform:
    architecture: str = "amd64"
    os: str = "linux"
    variant: str | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"architecture": self.architecture, "os": self.os}
        if self.variant:
            out["variant"] = self.variant
        return out


@dataclass(frozen=True, slots=True)
class Descriptor:
    """An OCI content descriptor: what a manifest or index says about one blob."""

    media_type: str
    digest: Digest
    size: int
    annotations: tuple[tuple[str, str], ...] = field(default=())
    platform: Platform | None = None
    urls: tuple[str, ...] = field(default=())
    artifact_type: str | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"mediaType": self.media_type, "digest": str(self.digest),
                               "size": self.size}
        if self.urls:
            out["urls"] = list(self.urls)
        if self.annotations:
            out["annotations"] = dict(self.annotations)
        if self.platform is not None:
            out["platform"] = self.platform.to_json()
        if self.artifact_type:
            out["artifactType"] = self.artifact_type
        return out

    @classmethod
    def from_json(cls, doc: Any, what: str = "descriptor") -> Descriptor:
        """Validate one descriptor object. Raises ``ManifestInvalid``."""
        if not isinstance(doc, dict):
            raise ManifestInvalid(f"{what} is not an object")
        media_type = doc.get("mediaType")
        size = doc.get("size")
        if not isinstance(media_type, str) or not media_type:
            raise ManifestInvalid(f"{what} has no mediaType")
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise ManifestInvalid(f"{what} has an invalid size {size!r}")
        try:
            digest = Digest.parse(doc.get("digest"))  # type: ignore[arg-type]
        except DigestInvalid as e:
            raise ManifestInvalid(f"{what}: {e}") from None
        ann = doc.get("annotations") or {}
        if not isinstance(ann, dict):
            raise ManifestInvalid(f"{what} has invalid annotations")
        plat = doc.get("platform")
        platform = None
        if isinstance(plat, dict):
            platform = Platform(str(plat.get("architecture", "")), str(plat.get("os", "")),
                                plat.get("variant"))
        return cls(media_type, digest, size,
                   tuple((str(k), str(v)) for k, v in ann.items()), platform,
                   tuple(doc.get("urls") or ()), doc.get("artifactType"))

    def annotation(self, key: str) -> str | None:
        for k, v in self.annotations:
            if k == key:
                return v
        return None

    @classmethod
    def of(cls, media_type: str, data: bytes, **kw: Any) -> Descriptor:
        """The descriptor of ``data``."""
        return cls(media_type, Digest.of(data), len(data), **kw)


# -- manifests and indexes -----------------------------------------------------------------

def build_manifest(config: Descriptor, layers: Iterable[Descriptor],
                   media_type: str = OCI_MANIFEST,
                   annotations: Mapping[str, str] | None = None) -> bytes:
    """The bytes of an image manifest (OCI, or Docker v2s2 when ``media_type`` says so)."""
    doc: dict[str, Any] = {"schemaVersion": 2, "mediaType": media_type,
                           "config": config.to_json(),
                           "layers": [d.to_json() for d in layers]}
    if annotations:
        doc["annotations"] = dict(annotations)
    return dumps(doc)


def build_index(manifests: Iterable[Descriptor], media_type: str = OCI_INDEX,
                annotations: Mapping[str, str] | None = None) -> bytes:
    """The bytes of an image index (OCI, or a Docker manifest list)."""
    doc: dict[str, Any] = {"schemaVersion": 2, "mediaType": media_type,
                           "manifests": [d.to_json() for d in manifests]}
    if annotations:
        doc["annotations"] = dict(annotations)
    return dumps(doc)


@dataclass(frozen=True, slots=True)
class Manifest:
    """A validated image manifest's parts."""

    media_type: str
    config: Descriptor
    layers: tuple[Descriptor, ...]
    annotations: tuple[tuple[str, str], ...] = ()


def media_type_of(data: bytes) -> str:
    """The ``mediaType`` a manifest or index declares (guessing from its shape when it does
    not: OCI allows leaving it out)."""
    doc = loads(data, "manifest")
    mt = doc.get("mediaType")
    if isinstance(mt, str) and mt:
        return mt
    if "manifests" in doc:
        return OCI_INDEX
    if "config" in doc and "layers" in doc:
        return OCI_MANIFEST
    raise ManifestInvalid("document is neither an image manifest nor an index")


def parse_manifest(data: bytes) -> Manifest:
    """Validate an image manifest (OCI or Docker v2s2). Raises ``ManifestInvalid``."""
    doc = loads(data, "manifest")
    if doc.get("schemaVersion") != 2:
        raise ManifestInvalid(f"unsupported manifest schemaVersion {doc.get('schemaVersion')!r}")
    media_type = doc.get("mediaType") or OCI_MANIFEST
    if media_type not in MANIFEST_TYPES:
        raise ManifestInvalid(f"not an image manifest: mediaType {media_type!r}")
    config = Descriptor.from_json(doc.get("config"), "manifest config")
    layers_doc = doc.get("layers")
    if not isinstance(layers_doc, list):
        raise ManifestInvalid("manifest has no layers list")
    layers = tuple(Descriptor.from_json(d, f"layer {i}") for i, d in enumerate(layers_doc))
    for i, layer in enumerate(layers):
        if layer.media_type not in LAYER_TYPES:
            raise ManifestInvalid(f"layer {i} has unsupported media type {layer.media_type!r}")
    ann = doc.get("annotations") or {}
    return Manifest(media_type, config, layers,
                    tuple((str(k), str(v)) for k, v in dict(ann).items()))


def parse_index(data: bytes, error: type[Exception] = ManifestInvalid) -> list[Descriptor]:
    """The descriptors an index (OCI index, Docker manifest list, ``index.json``) lists."""
    doc = loads(data, "index", error)
    if doc.get("schemaVersion") != 2:
        raise error(f"unsupported index schemaVersion {doc.get('schemaVersion')!r}")
    items = doc.get("manifests")
    if not isinstance(items, list):
        raise error("index has no manifests list")
    try:
        return [Descriptor.from_json(d, f"index entry {i}") for i, d in enumerate(items)]
    except ManifestInvalid as e:
        raise error(str(e)) from None


def pick_platform(descriptors: Iterable[Descriptor], architecture: str = "amd64",
                  os_name: str = "linux") -> Descriptor | None:
    """The manifest of an index for this platform (or the only/first image manifest when no
    descriptor names a platform, as ``docker save`` indexes do)."""
    candidates = [d for d in descriptors if d.media_type in MANIFEST_TYPES + INDEX_TYPES]
    for d in candidates:
        if d.platform and d.platform.architecture == architecture and \
                d.platform.os == os_name:
            return d
    unnamed = [d for d in candidates if d.platform is None]
    return unnamed[0] if unnamed else None


# -- image config --------------------------------------------------------------------------

#: the order docker writes a config's keys in
_CONFIG_KEYS = ("User", "ExposedPorts", "Env", "Entrypoint", "Cmd", "Volumes", "WorkingDir",
                "Labels", "StopSignal", "Healthcheck", "OnBuild", "Shell", "ArgsEscaped")


def build_config(*, created: str, architecture: str = "amd64", os_name: str = "linux",
                 config: Mapping[str, Any] | None = None, diff_ids: Iterable[Digest] = (),
                 history: Iterable[Mapping[str, Any]] = (), author: str | None = None,
                 extra: Mapping[str, Any] | None = None) -> bytes:
    """The bytes of an image config. ``config`` holds the runtime keys (Env, Cmd, ...).

    Checks the spec's invariant: non-empty history entries == diff ids (when history is
    given). Raises ``ManifestInvalid`` when it does not hold."""
    hist = [dict(h) for h in history]
    ids = [str(d) for d in diff_ids]
    if hist and sum(1 for h in hist if not h.get("empty_layer")) != len(ids):
        raise ManifestInvalid(f"history has {sum(1 for h in hist if not h.get('empty_layer'))}"
                              f" non-empty entries for {len(ids)} layers")
    doc: dict[str, Any] = {}
    if extra:
        doc.update(extra)
    doc["architecture"] = architecture
    if author:
        doc["author"] = author
    doc["config"] = order_runtime_config(config or {})
    doc["created"] = created
    if hist:
        doc["history"] = hist
    doc["os"] = os_name
    doc["rootfs"] = {"type": "layers", "diff_ids": ids}
    return dumps(doc)


def order_runtime_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """The runtime config with keys in docker's order and empty values dropped."""
    out: dict[str, Any] = {}
    for key in _CONFIG_KEYS:
        value = config.get(key)
        if value not in (None, "", [], {}):
            out[key] = value
    for key, value in config.items():
        if key not in out and key not in _CONFIG_KEYS and value not in (None, "", [], {}):
            out[key] = value
    return out


def parse_config(data: bytes) -> dict[str, Any]:
    """Validate an image config: ``rootfs.diff_ids`` present and well-formed, history (when
    present) consistent with it. Raises ``ManifestInvalid``."""
    doc = loads(data, "image config")
    rootfs = doc.get("rootfs")
    if not isinstance(rootfs, dict) or not isinstance(rootfs.get("diff_ids"), list):
        raise ManifestInvalid("image config has no rootfs.diff_ids")
    for d in rootfs["diff_ids"]:
        try:
            Digest.parse(d)
        except DigestInvalid as e:
            raise ManifestInvalid(f"image config: {e}") from None
    hist = doc.get("history")
    if hist is not None:
        if not isinstance(hist, list) or not all(isinstance(h, dict) for h in hist):
            raise ManifestInvalid("image config history is not a list of objects")
        non_empty = sum(1 for h in hist if not h.get("empty_layer"))
        if hist and non_empty != len(rootfs["diff_ids"]):
            raise ManifestInvalid(f"image config history has {non_empty} non-empty entries "
                                  f"for {len(rootfs['diff_ids'])} layers")
    cfg = doc.get("config")
    if cfg is not None and not isinstance(cfg, dict):
        raise ManifestInvalid("image config 'config' is not an object")
    return doc


def parse_layout(data: bytes) -> None:
    """Check an ``oci-layout`` file. Raises ``ArchiveInvalid``."""
    doc = loads(data, "oci-layout", ArchiveInvalid)
    version = doc.get("imageLayoutVersion")
    if not isinstance(version, str) or not version.startswith("1."):
        raise ArchiveInvalid(f"unsupported imageLayoutVersion {version!r}")
