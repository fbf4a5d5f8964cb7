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
import json
import posixpath
import re
import signal
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from . import oci
from .digest import Digest
from .errors import ImageSimError, ManifestInvalid
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
#
# ``docker commit --change`` and ``docker import --change`` hand the changes to the
# Dockerfile builder (moby ``BuildFromConfig``): the lines are parsed as a Dockerfile and
# dispatched against the runtime config, with the builder's own rules. The ones that matter:
# ``ENV`` replaces a variable in place; ``ENTRYPOINT`` resets ``Cmd`` unless a ``CMD`` with
# arguments came earlier in the same changes; ``WORKDIR`` is taken relative to the current
# working directory; the shell form of ``CMD``/``ENTRYPOINT`` uses the config's ``Shell``;
# ``ENV``, ``LABEL``, ``EXPOSE``, ``USER``, ``VOLUME``, ``WORKDIR`` and ``STOPSIGNAL``
# expand ``$VAR``/``${VAR}`` from the config's ``Env`` and drop quotes.

#: the instructions a change may be (moby ``validCommitCommands``)
CHANGE_INSTRUCTIONS = ("CMD", "ENTRYPOINT", "ENV", "EXPOSE", "HEALTHCHECK", "LABEL", "ONBUILD",
                       "STOPSIGNAL", "USER", "VOLUME", "WORKDIR")
DEFAULT_SHELL = ("/bin/sh", "-c")


class ChangeInvalid(ImageSimError):
    """A ``commit -c`` / ``import -c`` instruction the builder refuses (docker's wording:
    ``run is not a valid change command``, ``ENV names can not be blank``...). HTTP 400, as
    the daemon answers."""

    code = "INVALID"
    status = 400


def _words(text: str) -> list[str]:
    """Split on blanks outside quotes, keeping quotes and escapes (the Dockerfile parser's
    ``parseWords``): ``a="b c" d`` -> ``['a="b c"', 'd']``."""
    words: list[str] = []
    cur: list[str] = []
    quote = ""
    i = 0
    while i < len(text):
        ch = text[i]
        if ch == "\\" and i + 1 < len(text) and quote != "'":
            cur += [ch, text[i + 1]]
            i += 2
            continue
        if quote:
            if ch == quote:
                quote = ""
        elif ch in "'\"":
            quote = ch
        elif ch.isspace():
            if cur:
                words.append("".join(cur))
                cur = []
            i += 1
            continue
        cur.append(ch)
        i += 1
    if cur:
        words.append("".join(cur))
    return words


def _env_get(env: Sequence[str], name: str) -> str | None:
    value = None
    for item in env:
        key, eq, val = item.partition("=")
        if eq and key == name:
            value = val
    return value


def _expand(word: str, env: Sequence[str]) -> str:
    """The builder's word processing: quotes removed, ``\\`` escapes, ``$NAME``, ``${NAME}``,
    ``${NAME:-word}``, ``${NAME-word}``, ``${NAME:+word}``, ``${NAME+word}`` expanded from
    ``env`` (unset: empty). Raises ``ChangeInvalid`` for an unterminated quote or brace."""
    out: list[str] = []
    i, n = 0, len(word)
    quote = ""
    while i < n:
        ch = word[i]
        if quote == "'":
            if ch == "'":
                quote = ""
            else:
                out.append(ch)
            i += 1
            continue
        if ch == "\\" and i + 1 < n:
            nxt = word[i + 1]
            if quote == '"' and nxt not in '"$\\':
                out.append(ch)  # inside double quotes only these are escaped
            out.append(nxt)
            i += 2
            continue
        if ch == '"':
            quote = "" if quote else '"'
            i += 1
            continue
        if ch == "'" and not quote:
            quote = "'"
            i += 1
            continue
        if ch == "$":
            value, i = _dollar(word, i + 1, env)
            out.append(value)
            continue
        out.append(ch)
        i += 1
    if quote:
        raise ChangeInvalid(f"unexpected end of statement while looking for matching {quote}")
    return "".join(out)


def _dollar(word: str, i: int, env: Sequence[str]) -> tuple[str, int]:
    """Expand the variable reference after a ``$`` at ``word[i:]``; return (value, next)."""
    n = len(word)
    if i < n and word[i] == "{":
        close = i + 1
        depth = 1
        while close < n and depth:
            if word[close] == "{":
                depth += 1
            elif word[close] == "}":
                depth -= 1
            close += 1
        if depth:
            raise ChangeInvalid(f"missing '}}' in {word!r}")
        body = word[i + 1:close - 1]
        name_end = 0
        while name_end < len(body) and (body[name_end].isalnum() or body[name_end] == "_"):
            name_end += 1
        name, rest = body[:name_end], body[name_end:]
        if not name:
            raise ChangeInvalid(f"bad substitution: ${{{body}}}")
        value = _env_get(env, name)
        if not rest:
            return value or "", close
        colon = rest.startswith(":")
        op, alt = (rest[1:2], rest[2:]) if colon else (rest[:1], rest[1:])
        is_set = value is not None and (value != "" or not colon)
        if op == "-":
            return (value if is_set else _expand(alt, env)) or "", close
        if op == "+":
            return (_expand(alt, env) if is_set else ""), close
        if op == "?":
            if not is_set:
                raise ChangeInvalid(f"{name}: {_expand(alt, env) or 'is not allowed to be unset'}")
            return value or "", close
        raise ChangeInvalid(f"unsupported modifier ({rest[:2]}) in substitution: ${{{body}}}")
    start = i
    while i < n and (word[i].isalnum() or word[i] == "_"):
        i += 1
    if i == start:
        return "$", i  # a lone "$" stays as it is
    return _env_get(env, word[start:i]) or "", i


def _json_list(arg: str) -> list[str] | None:
    """The JSON form of an argument (``["a", "b"]``), or None for the shell form."""
    if not arg.startswith("["):
        return None
    try:
        value = json.loads(arg)
    except ValueError:
        return None
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return value
    return None


def _command_line(arg: str, cfg: Mapping[str, Any]) -> list[str]:
    """``CMD``/``ENTRYPOINT``: the JSON form as it is, else the shell form run by the
    config's ``Shell`` (default ``/bin/sh -c``)."""
    value = _json_list(arg)
    if value is not None:
        return value
    return [*(cfg.get("Shell") or DEFAULT_SHELL), arg]


def _pairs(arg: str, instr: str, env: Sequence[str]) -> list[tuple[str, str]]:
    """``KEY=VALUE ...`` (or the legacy ``KEY VALUE...``) of ``ENV``/``LABEL``, expanded."""
    words = _words(arg)
    if not words:
        raise ChangeInvalid(f"{instr} requires at least one argument")
    if "=" not in words[0]:
        # the legacy form: KEY then everything after it is the value
        parts = arg.split(None, 1)
        if len(parts) < 2:
            raise ChangeInvalid(f"{instr} must have two arguments")
        return [(_expand(parts[0], env), _expand(parts[1], env))]
    out = []
    for w in words:
        if "=" not in w:
            raise ChangeInvalid(f"Syntax error - can't find = in \"{w}\". "
                                "Must be of the form: name=value")
        key, _, value = w.partition("=")
        if not key:
            raise ChangeInvalid(f"{instr} names can not be blank")
        out.append((_expand(key, env), _expand(value, env)))
    return out


def _ports(specs: Sequence[str]) -> list[str]:
    """``EXPOSE`` specs as docker's ``nat.ParsePortSpecs`` reads them: ``80``, ``53/udp``,
    ``8000-8002`` (each port of the range), ``[ip:][host:]port``; ``port/proto`` keys."""
    out: list[str] = []
    for spec in specs:
        body, _, proto = spec.rpartition("/") if "/" in spec else (spec, "", "tcp")
        proto = proto.lower()
        if proto not in ("tcp", "udp", "sctp"):
            raise ChangeInvalid(f"invalid proto: {proto}")
        port = body.rsplit(":", 1)[-1]
        first, dash, last = port.partition("-")
        if not first.isdigit() or (dash and not last.isdigit()):
            raise ChangeInvalid(f"invalid containerPort: {port}")
        lo, hi = int(first), int(last) if dash else int(first)
        if hi < lo or hi > 65535:
            raise ChangeInvalid(f"invalid range specified for container port: {port}")
        out += [f"{p}/{proto}" for p in range(lo, hi + 1)]
    return out


_DURATION_UNITS = {"ns": 1, "us": 1_000, "µs": 1_000, "ms": 1_000_000, "s": 1_000_000_000,
                   "m": 60_000_000_000, "h": 3_600_000_000_000}
_DURATION_RE = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")


def _duration(flag: str, text: str) -> int:
    """A Go duration (``30s``, ``1m30s``, ``500ms``) in nanoseconds; at least 1 ms."""
    pos, total = 0, 0.0
    while pos < len(text):
        m = _DURATION_RE.match(text, pos)
        if m is None:
            raise ChangeInvalid(f"time: invalid duration \"{text}\"")
        total += float(m.group(1)) * _DURATION_UNITS[m.group(2)]
        pos = m.end()
    if not text or (text != "0" and pos == 0):
        raise ChangeInvalid(f"time: invalid duration \"{text}\"")
    if total < 1_000_000:
        raise ChangeInvalid(f"Interval \"{flag}\" cannot be less than 1ms")
    return int(total)


def _healthcheck(arg: str) -> dict[str, Any]:
    """``HEALTHCHECK [--interval=D --timeout=D --start-period=D --start-interval=D
    --retries=N] CMD ...`` or ``HEALTHCHECK NONE`` as the config's ``Healthcheck``."""
    rest = arg.strip()
    flags: dict[str, str] = {}
    while rest.startswith("--"):
        flag, _, rest = rest.partition(" ")
        name, eq, value = flag[2:].partition("=")
        if not eq or name not in ("interval", "timeout", "start-period", "start-interval",
                                  "retries"):
            raise ChangeInvalid(f"Unknown flag: {name}")
        flags[name] = value
        rest = rest.strip()
    kind, _, cmd = rest.partition(" ")
    kind, cmd = kind.upper(), cmd.strip()
    if not kind:
        raise ChangeInvalid("HEALTHCHECK requires at least one argument")
    if kind == "NONE":
        if cmd or flags:
            raise ChangeInvalid("HEALTHCHECK NONE takes no arguments")
        return {"Test": ["NONE"]}
    if kind != "CMD":
        raise ChangeInvalid(f"Unknown type \"{kind}\" in HEALTHCHECK (try CMD)")
    if not cmd:
        raise ChangeInvalid("Missing command after HEALTHCHECK CMD")
    as_json = _json_list(cmd)
    hc: dict[str, Any] = {"Test": ["CMD", *as_json] if as_json is not None else
                          ["CMD-SHELL", cmd]}
    for flag, key in (("interval", "Interval"), ("timeout", "Timeout"),
                      ("start-period", "StartPeriod"), ("start-interval", "StartInterval")):
        if flags.get(flag):
            hc[key] = _duration(flag, flags[flag])
    if "retries" in flags:
        try:
            retries = int(flags["retries"])
        except ValueError:
            raise ChangeInvalid(f"strconv.ParseInt: parsing \"{flags['retries']}\": "
                                "invalid syntax") from None
        if retries < 1:
            raise ChangeInvalid(f"--retries must be at least 1 (not {retries})")
        hc["Retries"] = retries
    return hc


_SIGNAL_NAMES = {s.name[3:] for s in signal.Signals if s.name.startswith("SIG")}


def _check_signal(sig: str) -> None:
    """docker's ``signal.ParseSignal``: a number above 0 or a Linux signal name, with or
    without ``SIG`` (``RTMIN+3`` and ``RTMAX-2`` too)."""
    if sig.isdigit():
        if int(sig) > 0:
            return
    else:
        name = sig.upper().removeprefix("SIG")
        if name in _SIGNAL_NAMES or re.fullmatch(r"RTMIN\+([1-9]|1[0-5])|RTMAX-([1-9]|1[0-4])",
                                                 name):
            return
    raise ChangeInvalid(f"Invalid signal: {sig}")


def normalize_workdir(current: str | None, requested: str) -> str:
    """``WORKDIR requested`` after ``current`` as the builder does (``normalizeWorkdir``):
    an absolute path as given, a relative one joined to ``current`` (or ``/``) and cleaned."""
    if not requested:
        raise ChangeInvalid("cannot normalize nothing")
    if requested.startswith("/"):
        return requested
    return posixpath.normpath(posixpath.join("/", current or "/", requested))


def apply_changes(config: Mapping[str, Any], changes: Iterable[str]) -> dict[str, Any]:
    """The runtime config after ``commit -c`` / ``import -c`` changes, with the Dockerfile
    builder's rules (see the comment above): ``CMD``, ``ENTRYPOINT``, ``ENV``, ``EXPOSE``,
    ``HEALTHCHECK``, ``LABEL``, ``ONBUILD``, ``STOPSIGNAL``, ``USER``, ``VOLUME``,
    ``WORKDIR``; blank lines and ``#`` comments are skipped. ``config`` is not changed.
    Raises ``ChangeInvalid`` (with docker's message) for any other instruction or a bad
    argument; then nothing is applied."""
    cfg = copy.deepcopy(dict(config))
    cmd_set = False  # a CMD with arguments came earlier in these changes
    for change in changes:
        text = change.strip()
        if not text or text.startswith("#"):
            continue
        word, _, arg = text.partition(" ")
        if "\t" in word:
            word, _, more = word.partition("\t")
            arg = more + " " + arg
        instr = word.upper()
        arg = arg.strip()
        if instr not in CHANGE_INSTRUCTIONS:
            # the Dockerfile parser lowercases the instruction, so docker says "run is..."
            raise ChangeInvalid(f"{word.lower()} is not a valid change command")
        env = list(cfg.get("Env") or [])
        if instr == "CMD":
            cfg["Cmd"] = _command_line(arg, cfg)
            if cfg["Cmd"] and arg:
                cmd_set = True
        elif instr == "ENTRYPOINT":
            entry = _command_line(arg, cfg)
            cfg["Entrypoint"] = entry if arg else None
            if not cmd_set:
                cfg["Cmd"] = None
        elif instr == "ENV":
            for key, value in _pairs(arg, "ENV", env):
                item = f"{key}={value}"
                for i, old in enumerate(env):
                    if old.partition("=")[0] == key:
                        env[i] = item  # replaced in place, as the builder does
                        break
                else:
                    env.append(item)
            cfg["Env"] = env
        elif instr == "LABEL":
            labels = dict(cfg.get("Labels") or {})
            labels.update(_pairs(arg, "LABEL", env))
            cfg["Labels"] = labels
        elif instr == "EXPOSE":
            words = [w for w in (_expand(x, env) for x in _words(arg)) for w in w.split()]
            if not words:
                raise ChangeInvalid("EXPOSE requires at least one argument")
            ports = dict(cfg.get("ExposedPorts") or {})
            for key in _ports(words):
                ports.setdefault(key, {})
            cfg["ExposedPorts"] = ports
        elif instr == "VOLUME":
            listed = _json_list(arg)
            paths = listed if listed is not None else _words(arg)
            if not paths:
                raise ChangeInvalid("VOLUME requires at least one argument")
            vols = dict(cfg.get("Volumes") or {})
            for v in paths:
                v = _expand(v, env).strip()
                if not v:
                    raise ChangeInvalid("VOLUME specified can not be an empty string")
                vols[v] = {}
            cfg["Volumes"] = vols
        elif instr == "WORKDIR":
            if not arg:
                raise ChangeInvalid("WORKDIR requires exactly one argument")
            cfg["WorkingDir"] = normalize_workdir(cfg.get("WorkingDir"), _expand(arg, env))
        elif instr == "USER":
            if not arg:
                raise ChangeInvalid("USER requires exactly one argument")
            cfg["User"] = _expand(arg, env)
        elif instr == "STOPSIGNAL":
            if not arg:
                raise ChangeInvalid("STOPSIGNAL requires exactly one argument")
            sig = _expand(arg, env)
            _check_signal(sig)
            cfg["StopSignal"] = sig
        elif instr == "HEALTHCHECK":
            cfg["Healthcheck"] = _healthcheck(arg)
        elif instr == "ONBUILD":
            trigger = arg.split(None, 1)[0].upper() if arg else ""
            if not trigger:
                raise ChangeInvalid("ONBUILD requires at least one argument")
            if trigger == "ONBUILD":
                raise ChangeInvalid("Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed")
            if trigger in ("MAINTAINER", "FROM"):
                raise ChangeInvalid(f"{trigger} isn't allowed as an ONBUILD trigger")
            cfg["OnBuild"] = [*(cfg.get("OnBuild") or []), arg]
    return cfg
