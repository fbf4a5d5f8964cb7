"""``Image``: an immutable image, its raw manifest and config bytes beside their parsed views.

Digests are always over the raw bytes: ``Image.digest`` is the sha256 of ``manifest_bytes``
(what a registry calls the image), ``Image.id`` the sha256 of ``config_bytes`` (docker's
IMAGE ID). Edits are functions returning a new ``Image``; nothing is mutated. An ``Image``
does not hold layer data: the blobs live in a blob store (``Store.blobs``), and whoever makes
a new image puts its config, layer and manifest blobs there (``Store.put_image`` does it).
"""

from __future__ import annotations

import copy
import datetime as _dt
import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from . import oci
from .digest import Digest
from .errors import ManifestInvalid
from .oci import Descriptor


def now_rfc3339() -> str:
    """The current UTC time as docker writes it in configs (nanosecond RFC 3339, ``Z``)."""
    now = _dt.datetime.now(_dt.UTC)
    return now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond:06d}000Z"


def parse_time(text: str | None) -> _dt.datetime | None:
    """Parse an RFC 3339 time with up to nanosecond precision; ``None`` when absent or bad."""
    if not text or not isinstance(text, str):
        return None
    t = text.strip().replace("z", "Z")
    if t.endswith("Z"):
        t = t[:-1] + "+00:00"
    # Python takes at most 6 fractional digits
    if "." in t:
        head, _, frac = t.partition(".")
        digits = ""
        i = 0
        while i < len(frac) and frac[i].isdigit():
            digits += frac[i]
            i += 1
        t = head + "." + (digits[:6].ljust(6, "0")) + frac[i:]
    try:
        value = _dt.datetime.fromisoformat(t)
    except ValueError:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=_dt.UTC)
    return value


def chain_ids(diff_ids: Sequence[Digest]) -> list[Digest]:
    """The OCI chain ids of a stack of diff ids, bottom first:
    ``ChainID(L0) = DiffID(L0)``, ``ChainID(Ln) = sha256(ChainID(Ln-1) + " " + DiffID(Ln))``.
    """
    out: list[Digest] = []
    for diff_id in diff_ids:
        if not out:
            out.append(diff_id)
        else:
            text = f"{out[-1]} {diff_id}".encode()
            out.append(Digest("sha256", hashlib.sha256(text).hexdigest()))
    return out


@dataclass(frozen=True)
class Image:
    """An image manifest and its config, kept as the exact bytes they were hashed from.

    Construct with ``Image.from_bytes`` (validates both and checks that the manifest names
    this config and as many layers as the config has diff ids: ``ManifestInvalid``
    otherwise) or ``Image.new`` for an image built from nothing.
    """

    manifest_bytes: bytes
    config_bytes: bytes

    # -- construction -----------------------------------------------------------------

    @classmethod
    def from_bytes(cls, manifest_bytes: bytes, config_bytes: bytes) -> Image:
        """Validate and wrap. Raises ``ManifestInvalid`` (or ``DigestInvalid`` when the
        manifest's config descriptor does not describe ``config_bytes``)."""
        image = cls(bytes(manifest_bytes), bytes(config_bytes))
        m = image.parsed_manifest
        m.config.digest.verify(image.config_bytes)
        if m.config.size != len(image.config_bytes):
            raise ManifestInvalid(f"config descriptor size {m.config.size} but the config has "
                                  f"{len(image.config_bytes)} bytes")
        if len(m.layers) != len(image.diff_ids):
            raise ManifestInvalid(f"manifest lists {len(m.layers)} layers but the config has "
                                  f"{len(image.diff_ids)} diff ids")
        return image

    @classmethod
    def new(cls, *, config: Mapping[str, Any] | None = None, architecture: str = "amd64",
            os_name: str = "linux", created: str | None = None, author: str | None = None,
            media_type: str = oci.OCI_MANIFEST) -> Image:
        """An image with no layers (``FROM scratch``)."""
        config_bytes = oci.build_config(created=created or now_rfc3339(),
                                        architecture=architecture, os_name=os_name,
                                        config=config or {}, author=author)
        cfg_type = oci.DOCKER_CONFIG if media_type == oci.DOCKER_MANIFEST else oci.OCI_CONFIG
        manifest = oci.build_manifest(Descriptor.of(cfg_type, config_bytes), [], media_type)
        return cls.from_bytes(manifest, config_bytes)

    # -- parsed views -----------------------------------------------------------------

    @cached_property
    def parsed_manifest(self) -> oci.Manifest:
        return oci.parse_manifest(self.manifest_bytes)

    @cached_property
    def manifest(self) -> dict[str, Any]:
        """The manifest as a dict (a copy: changing it changes nothing)."""
        return oci.loads(self.manifest_bytes, "manifest")

    @cached_property
    def config(self) -> dict[str, Any]:
        """The image config as a dict (a copy: changing it changes nothing)."""
        return oci.parse_config(self.config_bytes)

    @property
    def media_type(self) -> str:
        return self.parsed_manifest.media_type

    @cached_property
    def digest(self) -> Digest:
        """The manifest digest (``RepoDigests``, what a registry serves)."""
        return Digest.of(self.manifest_bytes)

    @cached_property
    def id(self) -> Digest:
        """The config digest: docker's IMAGE ID."""
        return Digest.of(self.config_bytes)

    @property
    def config_descriptor(self) -> Descriptor:
        return self.parsed_manifest.config

    @property
    def layers(self) -> tuple[Descriptor, ...]:
        """The layer descriptors, bottom first."""
        return self.parsed_manifest.layers

    @cached_property
    def diff_ids(self) -> tuple[Digest, ...]:
        """The uncompressed layer digests, bottom first."""
        return tuple(Digest.parse(d) for d in self.config["rootfs"]["diff_ids"])

    @cached_property
    def chain_ids(self) -> tuple[Digest, ...]:
        return tuple(chain_ids(self.diff_ids))

    @property
    def runtime_config(self) -> dict[str, Any]:
        """``config.config``: Env, Cmd, Entrypoint, WorkingDir, ExposedPorts, Volumes, ..."""
        return copy.deepcopy(self.config.get("config") or {})

    @property
    def history(self) -> list[dict[str, Any]]:
        return copy.deepcopy(self.config.get("history") or [])

    @property
    def created(self) -> str | None:
        return self.config.get("created")

    @property
    def created_at(self) -> _dt.datetime | None:
        return parse_time(self.created)

    @property
    def architecture(self) -> str:
        return str(self.config.get("architecture", ""))

    @property
    def os(self) -> str:
        return str(self.config.get("os", ""))

    @property
    def manifest_descriptor(self) -> Descriptor:
        return Descriptor(self.media_type, self.digest, len(self.manifest_bytes))

    # -- functional edits -------------------------------------------------------------

    def with_config(self, *, config: Mapping[str, Any] | None = None,
                    created: str | None = None, author: str | None = None,
                    history: Iterable[Mapping[str, Any]] | None = None,
                    diff_ids: Iterable[Digest] | None = None,
                    layers: Iterable[Descriptor] | None = None,
                    **top: Any) -> Image:
        """A new image with parts of the config replaced.

        ``config`` replaces the runtime config (``Env``, ``Cmd``, ...) as a whole; ``top``
        sets other top-level keys (``architecture``, ``os_name``...). Keys not named keep
        their values. Raises ``ManifestInvalid`` when the result breaks the history/diff-id
        invariant or the layer count."""
        doc = copy.deepcopy(self.config)
        cfg = config if config is not None else doc.get("config") or {}
        hist = list(history) if history is not None else doc.get("history") or []
        ids = list(diff_ids) if diff_ids is not None else list(self.diff_ids)
        extra = {k: v for k, v in doc.items()
                 if k not in ("architecture", "os", "config", "created", "history", "rootfs",
                              "author")}
        arch = top.pop("architecture", doc.get("architecture", "amd64"))
        os_name = top.pop("os_name", doc.get("os", "linux"))
        extra.update(top)
        config_bytes = oci.build_config(
            created=created or doc.get("created") or now_rfc3339(),
            architecture=arch, os_name=os_name, config=cfg, diff_ids=ids, history=hist,
            author=author if author is not None else doc.get("author"), extra=extra)
        descs = list(layers) if layers is not None else list(self.layers)
        return self._rebuild(config_bytes, descs)

    def append_layer(self, layer: Descriptor, diff_id: Digest, *,
                     created_by: str = "", comment: str | None = None,
                     author: str | None = None, created: str | None = None,
                     config: Mapping[str, Any] | None = None) -> Image:
        """A new image with one more layer on top and one history row for it (``created``
        is used for both the row and the config). ``config`` optionally replaces the
        runtime config at the same time (commit ``-c``)."""
        when = created or now_rfc3339()
        row: dict[str, Any] = {"created": when}
        if created_by:
            row["created_by"] = created_by
        if author:
            row["author"] = author
        if comment:
            row["comment"] = comment
        return self.with_config(config=config, created=when,
                                author=author if author is not None else None,
                                history=[*self.history, row],
                                diff_ids=[*self.diff_ids, diff_id],
                                layers=[*self.layers, layer])

    def append_history(self, created_by: str, *, created: str | None = None,
                       comment: str | None = None, config: Mapping[str, Any] | None = None
                       ) -> Image:
        """A new image with an ``empty_layer`` history row (a Dockerfile ``ENV``/``CMD``)."""
        when = created or now_rfc3339()
        row: dict[str, Any] = {"created": when, "created_by": created_by}
        if comment:
            row["comment"] = comment
        row["empty_layer"] = True
        return self.with_config(config=config, created=when, history=[*self.history, row])

    def with_media_type(self, media_type: str) -> Image:
        """The same config under a manifest of another type (OCI <-> Docker v2s2). Layer
        media types are mapped; zstd layers cannot be Docker v2s2 (``ManifestInvalid``)."""
        docker = media_type == oci.DOCKER_MANIFEST
        layers = []
        for d in self.layers:
            comp = oci.LAYER_COMPRESSION.get(d.media_type, "gzip")
            layers.append(Descriptor(oci.layer_media_type(comp, docker), d.digest, d.size,
                                     d.annotations, d.platform, d.urls))
        cfg_type = oci.DOCKER_CONFIG if docker else oci.OCI_CONFIG
        manifest = oci.build_manifest(Descriptor(cfg_type, self.id, len(self.config_bytes)),
                                      layers, media_type)
        return Image.from_bytes(manifest, self.config_bytes)

    def _rebuild(self, config_bytes: bytes, layers: list[Descriptor]) -> Image:
        m = self.parsed_manifest
        cfg = Descriptor(m.config.media_type, Digest.of(config_bytes), len(config_bytes))
        manifest = oci.build_manifest(cfg, layers, m.media_type, dict(m.annotations) or None)
        return Image.from_bytes(manifest, config_bytes)

    # -- history as docker shows it -----------------------------------------------------

    def history_rows(self) -> list[tuple[dict[str, Any], int | None]]:
        """Each history row paired with the index of the layer it made (``None`` for an
        empty-layer row), oldest first. Without history, one synthetic row per layer."""
        hist = self.history
        if not hist:
            return [({}, i) for i in range(len(self.diff_ids))]
        out: list[tuple[dict[str, Any], int | None]] = []
        i = 0
        for row in hist:
            if row.get("empty_layer"):
                out.append((row, None))
            else:
                out.append((row, i))
                i += 1
        return out


# -- Dockerfile instructions for commit -c / import -c ---------------------------------------

CHANGE_INSTRUCTIONS = ("CMD", "ENTRYPOINT", "ENV", "EXPOSE", "LABEL", "ONBUILD", "STOPSIGNAL",
                       "USER", "VOLUME", "WORKDIR")


def _json_or_shell(arg: str, shell: bool) -> list[str]:
    import json as _json
    text = arg.strip()
    if text.startswith("["):
        try:
            value = _json.loads(text)
        except ValueError:
            value = None
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            return value
    return ["/bin/sh", "-c", text] if shell else text.split()


def _pairs(arg: str, instruction: str) -> list[tuple[str, str]]:
    import shlex
    try:
        words = shlex.split(arg, posix=True)
    except ValueError as e:
        raise ManifestInvalid(f"{instruction}: {e}") from None
    if not words:
        raise ManifestInvalid(f"{instruction} requires at least one argument")
    if "=" not in words[0]:
        # legacy form: ENV KEY VALUE...
        if len(words) < 2:
            raise ManifestInvalid(f"{instruction} names {words[0]} but gives no value")
        return [(words[0], arg.strip()[len(words[0]):].strip())]
    out = []
    for w in words:
        key, eq, value = w.partition("=")
        if not eq or not key:
            raise ManifestInvalid(f"{instruction}: {w!r} is not KEY=VALUE")
        out.append((key, value))
    return out


def apply_changes(config: Mapping[str, Any], changes: Iterable[str]) -> dict[str, Any]:
    """The runtime config with Dockerfile instructions applied, as ``docker commit -c`` and
    ``docker import -c`` do: ``CMD``, ``ENTRYPOINT`` (JSON or shell form), ``ENV``,
    ``EXPOSE``, ``LABEL``, ``ONBUILD``, ``STOPSIGNAL``, ``USER``, ``VOLUME``, ``WORKDIR``.
    Raises ``ManifestInvalid`` for anything else or a malformed argument."""
    cfg = copy.deepcopy(dict(config))
    for change in changes:
        text = change.strip()
        if not text:
            continue
        word, _, arg = text.partition(" ")
        instr = word.upper()
        if instr not in CHANGE_INSTRUCTIONS:
            raise ManifestInvalid(f"{word} is not a valid change command")
        arg = arg.strip()
        if instr == "CMD":
            cfg["Cmd"] = _json_or_shell(arg, True)
        elif instr == "ENTRYPOINT":
            cfg["Entrypoint"] = _json_or_shell(arg, True)
        elif instr == "ENV":
            env = list(cfg.get("Env") or [])
            for key, value in _pairs(arg, "ENV"):
                env = [e for e in env if e.partition("=")[0] != key] + [f"{key}={value}"]
            cfg["Env"] = env
        elif instr == "LABEL":
            labels = dict(cfg.get("Labels") or {})
            labels.update(_pairs(arg, "LABEL"))
            cfg["Labels"] = labels
        elif instr == "EXPOSE":
            ports = dict(cfg.get("ExposedPorts") or {})
            for p in arg.split():
                port, _, proto = p.partition("/")
                if not port.replace("-", "").isdigit():
                    raise ManifestInvalid(f"EXPOSE: invalid port {p!r}")
                ports[f"{port}/{(proto or 'tcp').lower()}"] = {}
            cfg["ExposedPorts"] = ports
        elif instr == "VOLUME":
            vols = dict(cfg.get("Volumes") or {})
            paths = _json_or_shell(arg, False)
            if not paths:
                raise ManifestInvalid("VOLUME requires at least one argument")
            for v in paths:
                vols[v] = {}
            cfg["Volumes"] = vols
        elif instr == "WORKDIR":
            if not arg:
                raise ManifestInvalid("WORKDIR requires exactly one argument")
            cfg["WorkingDir"] = arg
        elif instr == "USER":
            if not arg:
                raise ManifestInvalid("USER requires exactly one argument")
            cfg["User"] = arg
        elif instr == "STOPSIGNAL":
            cfg["StopSignal"] = arg
        elif instr == "ONBUILD":
            cfg["OnBuild"] = [*(cfg.get("OnBuild") or []), arg]
    return cfg
