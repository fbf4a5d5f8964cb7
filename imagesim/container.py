"""Containers: an image, a thin writable layer on top of it, and volumes.

A container's files are a ``UnionFS`` over the image's shared unpacked layers (read-only
``DirLayer``s, top-most first) with its own writable upper directory in overlayfs format at
``ROOT/containers/<id>/upper`` (and a work directory beside it, as overlayfs wants), so the
kernel or fuse-overlayfs could mount the same directories. ``Container.fs`` is that union;
``Container.view`` is the union with the volumes mounted in (``unionfs.mounts.MountTable``):
what a program inside the container sees.

``diff()`` lists docker's ``A``/``C``/``D`` changes computed from the upper layer alone;
``commit()`` packs the upper layer into one OCI layer on top of the image's layers (reused by
digest), never touching the volumes.

Nothing is executed on the host. A container started by ``run``/``start`` counts as running
until ``stop`` or ``rm -f``; its command is recorded and shown. The built-in shell
(``imagesim.shell``) runs shell commands on ``view`` in-process. The library image
``registry`` is the exception that starts a real process: ``imagesim registry serve`` on the
published port, storing into the bound host directory.

Records live in the store's state document (namespace ``containers``), so every change is
atomic and locked against other ``imagesim`` processes.

Errors: ``ContainerNotFound`` (``No such container: X``), ``Conflict`` (a name in use, an
ambiguous prefix, removing a running container, a volume in use), ``ImageNotFound``,
``ContainerError`` for a bad argument (port spec, a stopped container), ``ChangeInvalid`` for a
bad ``commit -c`` instruction (``imagesim.image.apply_changes``, shared with ``import -c``).
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import io
import json
import os
import random
import re
import secrets
import shlex
import shutil
import socket
import stat as _stat
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from unionfs.mounts import HostFS, Mount, MountTable

from .errors import Conflict, ContainerNotFound, ImageNotFound, ImageSimError
from .image import apply_changes  # commit -c: the builder's rules, shared with import -c
from .units import human_duration
from .volumes import (
    MountPoint,
    VolumeStore,
    now_rfc3339,
    parse_volume_spec,
    parse_volumes_from,
    prefill,
    resolve_mounts,
)

NAMESPACE = "containers"
NAME_RE = re.compile(r"^/?[a-zA-Z0-9][a-zA-Z0-9_.-]+$")
ZERO_TIME = "0001-01-01T00:00:00Z"
REGISTRY_DATA_DIRS = ("/var/lib/registry", "/tmp/registry")


class ContainerError(ImageSimError):
    """A request docker's daemon would refuse (bad port spec, bad ``-c``, not running...)."""

    code = "INVALID"
    status = 400


# -- docker-style random names -----------------------------------------------------------

_ADJECTIVES = [
    "admiring", "adoring", "affectionate", "agitated", "amazing", "angry", "awesome", "beautiful",
    "blissful", "bold", "boring", "brave", "busy", "charming", "clever", "compassionate",
    "competent", "condescending", "confident", "cool", "cranky", "crazy", "dazzling", "determined",
    "distracted", "dreamy", "eager", "ecstatic", "elastic", "elated", "elegant", "eloquent",
    "epic", "exciting", "fervent", "festive", "flamboyant", "focused", "friendly", "frosty",
    "funny", "gallant", "gifted", "goofy", "gracious", "great", "happy", "hardcore", "heuristic",
    "hopeful", "hungry", "infallible", "inspiring", "intelligent", "interesting", "jolly",
    "jovial", "keen", "kind", "laughing", "loving", "lucid", "magical", "modest", "musing",
    "mystifying", "naughty", "nervous", "nice", "nifty", "nostalgic", "objective", "optimistic",
    "peaceful", "pedantic", "pensive", "practical", "priceless", "quirky", "quizzical",
    "recursing", "relaxed", "reverent", "romantic", "sad", "serene", "sharp", "silly", "sleepy",
    "stoic", "strange", "stupefied", "suspicious", "sweet", "tender", "thirsty", "trusting",
    "unruffled", "upbeat", "vibrant", "vigilant", "vigorous", "wizardly", "wonderful",
    "xenodochial", "youthful", "zealous", "zen"
]
_SURNAMES = [
    "albattani", "allen", "almeida", "agnesi", "archimedes", "ardinghelli", "aryabhata", "austin",
    "babbage", "banach", "bardeen", "bartik", "bassi", "beaver", "bell", "benz", "bhabha",
    "bhaskara", "blackwell", "bohr", "booth", "borg", "bose", "boyd", "brahmagupta", "brattain",
    "brown", "buck", "burnell", "cannon", "carson", "cartwright", "cerf", "chandrasekhar",
    "chaplygin", "chatelet", "chatterjee", "chebyshev", "cohen", "curie", "darwin", "davinci",
    "dewdney", "dijkstra", "dirac", "driscoll", "dubinsky", "easley", "edison", "einstein",
    "elbakyan", "elgamal", "elion", "ellis", "engelbart", "euclid", "euler", "faraday", "feistel",
    "fermat", "fermi", "feynman", "franklin", "gagarin", "galileo", "galois", "ganguly", "gates",
    "gauss", "germain", "goldberg", "goldstine", "goldwasser", "golick", "goodall", "gould",
    "greider", "grothendieck", "haibt", "hamilton", "haslett", "hawking", "heisenberg", "hellman",
    "hermann", "herschel", "hertz", "heyrovsky", "hodgkin", "hofstadter", "hoover", "hopper",
    "hugle", "hypatia", "jackson", "jang", "jemison", "jennings", "jepsen", "johnson", "joliot",
    "jones", "kalam", "kapitsa", "kare", "keldysh", "keller", "kepler", "khayyam", "khorana",
    "kilby", "kirch", "knuth", "kowalevski", "lalande", "lamarr", "lamport", "leakey", "leavitt",
    "lederberg", "lehmann", "lewin", "lichterman", "liskov", "lovelace", "lumiere", "mahavira",
    "margulis", "matsumoto", "maxwell", "mayer", "mccarthy", "mcclintock", "mclean", "mcnulty",
    "meitner", "mendel", "mendeleev", "meninsky", "merkle", "mestorf", "mirzakhani", "montalcini",
    "moore", "morse", "murdock", "moser", "napier", "nash", "neumann", "newton", "nightingale",
    "nobel", "noether", "northcutt", "noyce", "panini", "pare", "pascal", "pasteur", "payne",
    "perlman", "pike", "poincare", "poitras", "proskuriakova", "ptolemy", "raman", "ramanujan",
    "ride", "ritchie", "robinson", "roentgen", "rosalind", "rubin", "saha", "sammet", "sanderson",
    "satoshi", "shamir", "shannon", "shaw", "shirley", "shockley", "shtern", "sinoussi", "snyder",
    "solomon", "spence", "stonebraker", "sutherland", "swanson", "swartz", "swirles", "taussig",
    "tesla", "tharp", "thompson", "torvalds", "tu", "turing", "varahamihira", "vaughan", "villani",
    "visvesvaraya", "volhard", "wescoff", "wilbur", "wiles", "williams", "williamson", "wilson",
    "wing", "wozniak", "wright", "wu", "yalow", "yonath", "zhukovsky"
]


def random_name(rng: random.Random | None = None) -> str:
    """``adjective_surname`` as docker's name generator makes them (never
    ``boring_wozniak``, as docker's rule says)."""
    rng = rng or random.SystemRandom()
    while True:
        name = f"{rng.choice(_ADJECTIVES)}_{rng.choice(_SURNAMES)}"
        if name != "boring_wozniak":
            return name


# -- ports ------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class PortBinding:
    """``-p [IP:][HOSTPORT:]CTRPORT[/PROTO]``: a published container port."""

    container_port: int
    proto: str = "tcp"
    host_ip: str = ""
    host_port: int = 0

    @property
    def key(self) -> str:
        return f"{self.container_port}/{self.proto}"

    def __str__(self) -> str:
        ip = self.host_ip or "0.0.0.0"
        return f"{ip}:{self.host_port}->{self.container_port}/{self.proto}"


def _port_number(text: str, spec: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise ContainerError(f"invalid containerPort: {text}" if text else
                             f"invalid port specification: \"{spec}\"")
    return int(text)


def parse_port(spec: str) -> PortBinding:
    """Parse one ``-p`` value as docker does (single ports; no ranges). A host port left
    out is chosen free on 127.0.0.1, as docker picks an ephemeral port."""
    body, _, proto = spec.partition("/")
    proto = proto or "tcp"
    if proto not in ("tcp", "udp", "sctp"):
        raise ContainerError(f"invalid proto: {proto}")
    parts = body.rsplit(":", 2)
    if len(parts) == 1:
        ip, host, ctr = "", "", parts[0]
    elif len(parts) == 2:
        ip, (host, ctr) = "", parts
    else:
        ip, host, ctr = parts
    cport = _port_number(ctr, spec)
    hport = _port_number(host, spec) if host else _free_port()
    if ip and not re.fullmatch(r"[0-9.]+|\[?[0-9a-fA-F:]+\]?", ip):
        raise ContainerError(f"invalid IP address: {ip}")
    return PortBinding(cport, proto, ip, hport)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# -- formatting helpers docker uses -----------------------------------------------------

def parse_time(text: str | None) -> _dt.datetime | None:
    """RFC 3339 (nanoseconds allowed) -> aware datetime; None for empty or the zero time."""
    if not text or text.startswith("0001-01-01"):
        return None
    t = text.rstrip("Z")
    if "." in t:
        head, frac = t.split(".", 1)
        t = f"{head}.{frac[:6]}"
    return _dt.datetime.fromisoformat(t).replace(tzinfo=_dt.UTC)


def ellipsis(text: str, width: int) -> str:
    """docker's ``formatter.Ellipsis``: cut to ``width`` characters ending with ``…``."""
    if len(text) <= width:
        return text
    return text[: width - 1] + "…"


def _since(text: str | None) -> float:
    t = parse_time(text)
    if t is None:
        return 0.0
    return max(0.0, (_dt.datetime.now(_dt.UTC) - t).total_seconds())


# -- the container --------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class CreateOptions:
    """Everything ``create``/``run`` take besides the image (docker's names)."""

    name: str | None = None
    command: tuple[str, ...] = ()
    entrypoint: str | None = None
    env: tuple[str, ...] = ()
    workdir: str | None = None
    user: str | None = None
    hostname: str | None = None
    ports: tuple[str, ...] = ()
    volumes: tuple[str, ...] = ()
    volumes_from: tuple[str, ...] = ()
    read_only: bool = False
    auto_remove: bool = False
    privileged: bool = False
    tty: bool = False
    interactive: bool = False
    detach: bool = False
    labels: tuple[str, ...] = ()
    expose: tuple[str, ...] = ()
    cwd: str | None = None
    extra_host_env: Mapping[str, str] = field(default_factory=dict)


class Container:
    """One container: its record (from the state document) and its filesystems.

    ``fs`` is the ``UnionFS`` (image layers + upper), ``view`` the same with volumes mounted
    in. Changing the record goes through ``ContainerStore`` (``self.containers``)."""

    def __init__(self, containers: ContainerStore, record: dict[str, Any]) -> None:
        self.containers = containers
        self.record = record
        self._fs: Any = None
        self._view: Any = None
        #: applied to modes of files the in-process tools create (a container process's
        #: usual umask); a FUSE mount uses 0: the kernel already applied the caller's
        self.umask = 0o022

    def __repr__(self) -> str:
        return f"Container({self.short_id}, {self.name!r}, {self.image_ref!r})"

    # -- identity and config ------------------------------------------------------------

    @property
    def id(self) -> str:
        return self.record["id"]

    @property
    def short_id(self) -> str:
        return self.id[:12]

    @property
    def name(self) -> str:
        return self.record["name"]

    @property
    def image_ref(self) -> str:
        """The image as the user named it (``ps``'s IMAGE column)."""
        return self.record["image"]

    @property
    def image_digest(self) -> str:
        return self.record["image_digest"]

    @property
    def image_id(self) -> str:
        return self.record["image_id"]

    @property
    def config(self) -> dict[str, Any]:
        return self.record["config"]

    @property
    def argv(self) -> list[str]:
        """Entrypoint + Cmd: the command the container runs."""
        return [*(self.config.get("Entrypoint") or []), *(self.config.get("Cmd") or [])]

    @property
    def command_text(self) -> str:
        return " ".join(self.argv)

    @property
    def status(self) -> str:
        return self.record["state"]["status"]

    @property
    def running(self) -> bool:
        return self.status == "running"

    @property
    def mounts(self) -> list[MountPoint]:
        return [MountPoint.from_record(m) for m in self.record.get("mounts", [])]

    @property
    def ports(self) -> list[PortBinding]:
        return [PortBinding(p["container_port"], p["proto"], p["host_ip"], p["host_port"])
                for p in self.record.get("ports", [])]

    @property
    def directory(self) -> str:
        return os.path.join(self.containers.root, self.id)

    @property
    def upper_dir(self) -> str:
        return os.path.join(self.directory, "upper")

    @property
    def work_dir(self) -> str:
        return os.path.join(self.directory, "work")

    @property
    def log_path(self) -> str:
        return os.path.join(self.directory, "container.log")

    @property
    def env(self) -> dict[str, str]:
        out: dict[str, str] = {}
        for item in self.config.get("Env") or []:
            k, _, v = item.partition("=")
            out[k] = v
        return out

    # -- filesystems --------------------------------------------------------------------

    @property
    def lower_dirs(self) -> list[str]:
        """The image's unpacked layer directories, top-most first."""
        return self.containers.store.lower_dirs(self.containers.store.get_image(
            self.image_digest))

    @property
    def fs(self) -> Any:
        """The container's ``UnionFS``: image layers below, its own upper layer on top."""
        if self._fs is None:
            from unionfs.layer import DirLayer
            from unionfs.union import UnionFS

            store = self.containers.store
            lowers = store.lower_layers(store.get_image(self.image_digest))
            upper = DirLayer(self.upper_dir, writable=True, workdir=self.work_dir,
                             name=f"container {self.name} ({self.short_id})")
            self._fs = UnionFS(lowers=lowers, upper=upper, umask=self.umask)
        return self._fs

    @property
    def view(self) -> MountTable:
        """The container's filesystem as a program inside it sees it: ``fs`` with every
        volume and bind mount at its path (``:ro`` ones give EROFS), the root read-only
        with ``--read-only``."""
        if self._view is None:
            live = self.mounted_at()
            if live is not None:
                # while `imagesim mount` serves this container, every in-process change goes
                # through that mount: the daemon's engine and the kernel's caches then see
                # each change (a second engine writing the same upper would not be seen)
                self._view = HostFS(live)
                return self._view
            for m in self.mounts:
                if m.type == "bind" and not os.path.lexists(m.source):
                    os.makedirs(m.source, exist_ok=True)  # docker re-creates it on start
            mounts = [Mount(m.destination, m.host_fs(), read_only=not m.rw)
                      for m in self.mounts]
            self._view = MountTable(self.fs, mounts,
                                    read_only=bool(self.record["host"].get("ReadonlyRootfs")))
        return self._view

    def mounted_at(self) -> str | None:
        """The mount point where ``imagesim mount`` serves this container right now, or
        None (a record left by a mount that is gone is ignored)."""
        point = (self.record.get("fuse") or {}).get("mountpoint")
        if not point:
            return None
        from unionfs import mount as _m

        info = _m.mount_at(point)
        return point if _m.is_unionfs(info) else None

    def diff(self) -> list[Any]:
        """docker's ``diff``: ``Change`` values (``A``/``C``/``D`` + path) from the upper
        layer only, sorted by path. Volume contents never appear (volumes are not in the
        upper layer).

        Cost grows with the upper layer only: ``unionfs.diff.upper_changes`` walks the upper
        directory and asks the image's layer directories about those paths alone (a few
        ``lstat`` per layer and path), never lists, indexes or reads a lower layer."""
        from unionfs.diff import upper_changes

        return upper_changes(self.upper_dir, self.lower_dirs)

    def size_rw(self) -> int:
        """Bytes of regular files in the upper layer (docker's ``SizeRw``)."""
        total = 0
        for d, _, files in os.walk(self.upper_dir):
            for f in files:
                with contextlib.suppress(OSError):
                    st = os.lstat(os.path.join(d, f))
                    if _stat.S_ISREG(st.st_mode):
                        total += st.st_size
        return total

    def size_image(self) -> int:
        store = self.containers.store
        img = store.get_image(self.image_digest)
        return sum(store.layer_size(d) for d in set(img.diff_ids))

    # -- state --------------------------------------------------------------------------

    def _update(self, fn) -> None:
        self.record = self.containers._update_record(self.id, fn)

    def status_text(self) -> str:
        """``ps``'s STATUS column: ``Up 2 minutes``, ``Exited (0) 5 seconds ago``,
        ``Created``."""
        st = self.record["state"]
        if st["status"] == "running":
            return "Up " + human_duration(_since(st.get("started_at")))
        if st["status"] == "exited":
            return (f"Exited ({st.get('exit_code', 0)}) "
                    f"{human_duration(_since(st.get('finished_at')))} ago")
        return "Created"

    def ports_text(self) -> str:
        """``ps``'s PORTS column: published ports while running, then exposed ones."""
        if not self.running:
            return ""
        seen = set()
        parts = []
        for p in sorted(self.ports, key=lambda p: (p.container_port, p.proto)):
            parts.append(str(p))
            seen.add(p.key)
        for key in sorted(self.config.get("ExposedPorts") or {},
                          key=lambda k: (int(k.split("/")[0]), k)):
            if key not in seen:
                parts.append(key)
        return ", ".join(parts)

    def is_registry(self) -> bool:
        ref = self.image_ref.split("@")[0]
        name = ref.rsplit(":", 1)[0] if ":" in ref.rsplit("/", 1)[-1] else ref
        return name in ("registry", "library/registry", "docker.io/library/registry")

    def start(self) -> None:
        """Mark the container running (idempotent); a ``registry`` container starts the
        registry server on its published port."""
        if self.running:
            return
        self._check_ports_free()
        pid = None
        if self.is_registry():
            pid = self._start_registry()

        def up(rec):
            rec["state"].update(status="running", started_at=now_rfc3339(),
                                finished_at=ZERO_TIME, exit_code=0, pid=pid or 0)
            return rec
        self._update(up)

    def _check_ports_free(self) -> None:
        """docker refuses to start a container whose published host port another running
        container holds (``port is already allocated``)."""
        mine = {(p.host_ip or "0.0.0.0", p.host_port, p.proto) for p in self.ports}
        if not mine:
            return
        for other in self.containers.list():
            if other.id == self.id:
                continue
            for p in other.ports:
                ip = p.host_ip or "0.0.0.0"
                for mip, mport, mproto in mine:
                    if mport == p.host_port and mproto == p.proto and (
                            ip == mip or "0.0.0.0" in (ip, mip)):
                        raise Conflict(
                            f"driver failed programming external connectivity on endpoint "
                            f"{self.name} ({self.id}): Bind for {mip}:{mport} failed: port "
                            "is already allocated")

    def _start_registry(self) -> int | None:
        """Start the registry server of a ``registry`` container on its published port,
        configured as the reference registry reads its environment: ``REGISTRY_HTTP_ADDR``
        (the container port, default 5000), ``REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY``,
        ``REGISTRY_HTTP_TLS_CERTIFICATE``/``_KEY`` and ``REGISTRY_AUTH=htpasswd`` with
        ``REGISTRY_AUTH_HTPASSWD_PATH`` (container paths, found through the container's
        mounts; the realm is the server's own). None when the port is not published."""
        from .registry import server

        env = self.env
        listen = env.get("REGISTRY_HTTP_ADDR", "")
        cport = int(listen.rpartition(":")[2]) if listen.rpartition(":")[2].isdigit() else 5000
        port = next((p for p in self.ports if p.container_port == cport), None)
        if port is None:
            return None  # not published: nothing can reach it, as with docker
        data = None
        # the user's own -v wins over the image's anonymous VOLUME: the lesson binds a host
        # directory at /tmp/registry (older images) or /var/lib/registry (the real path)
        dirs = (env["REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY"].rstrip("/"),) if env.get(
            "REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY") else REGISTRY_DATA_DIRS
        candidates = [m for m in self.mounts if m.destination in dirs]
        candidates.sort(key=lambda m: (m.anonymous, m.type != "bind"))
        if candidates:
            data = candidates[0].source
        if data is None:
            data = os.path.join(self.directory, "registry-data")
        cert, key = env.get("REGISTRY_HTTP_TLS_CERTIFICATE"), env.get("REGISTRY_HTTP_TLS_KEY")
        htpasswd = env.get("REGISTRY_AUTH_HTPASSWD_PATH") if \
            env.get("REGISTRY_AUTH") == "htpasswd" else None
        return server.start_background(
            f"127.0.0.1:{port.host_port}", data, log_path=self.log_path,
            tls_cert=self.host_file(cert) if cert and key else None,
            tls_key=self.host_file(key) if cert and key else None,
            htpasswd=self.host_file(htpasswd) if htpasswd else None)

    def host_file(self, path: str) -> str:
        """A host path holding the container's file ``path`` for a host process: the same
        file through the bind mount or volume that covers ``path``, else a copy taken out
        of the container's view into its directory. Raises ``FileNotFoundError`` (ENOENT)
        when the container has no such file."""
        for m in sorted(self.mounts, key=lambda m: len(m.destination), reverse=True):
            dest = m.destination.rstrip("/")
            if path == dest or path.startswith(dest + "/"):
                return m.source.rstrip("/") + path[len(dest):]
        with self.view.open(path, "rb") as f:
            data = f.read()
        out = os.path.join(self.directory, "files", path.lstrip("/"))
        os.makedirs(os.path.dirname(out), exist_ok=True)
        tmp = out + ".tmp"
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, out)
        return out

    def stop(self, exit_code: int = 0) -> None:
        """Mark the container exited (stopping its registry server, if any)."""
        if not self.running:
            return
        self._stop_processes()

        def down(rec):
            rec["state"].update(status="exited", finished_at=now_rfc3339(),
                                exit_code=exit_code, pid=0)
            return rec
        self._update(down)
        if self.record["host"].get("AutoRemove"):
            self.containers.remove(self.id, volumes=True)  # --rm: gone once it stops

    def _stop_processes(self) -> None:
        pid = self.record["state"].get("pid") or 0
        if pid and self.is_registry():
            from .registry import server

            server.stop_background(pid)

    def finished(self, exit_code: int) -> None:
        """Record that the container's command ended (a shell session exited)."""
        def down(rec):
            rec["state"].update(status="exited", finished_at=now_rfc3339(),
                                exit_code=exit_code, pid=0)
            return rec
        self._update(down)

    # -- commit -------------------------------------------------------------------------

    def commit(self, reference: str | None = None, *, author: str | None = None,
               message: str | None = None, changes: Sequence[str] = ()) -> Any:
        """A new image: the image's layers (reused by digest) plus the upper layer as one
        new OCI layer, one history row with ``author`` and ``message``, the container's
        config with ``changes`` applied. Tagged ``reference`` when given. Returns the
        ``Image``."""
        from . import layers as _layers
        from .image import Image
        from .oci import Descriptor

        store = self.containers.store
        base: Image = store.get_image(self.image_digest)
        config = self.commit_config(changes)
        with store.lease("commit " + self.short_id):
            # the upper directory is already a layer in overlayfs form: it is packed once
            # (whiteouts and opaque dirs become .wh. entries) into the blob store and, from
            # the same tar bytes, into the shared unpacked layer directory, so recording
            # the image unpacks nothing again
            commit_layer = getattr(store, "commit_layer", None)
            if commit_layer is not None:
                packed = commit_layer(self.upper_dir)
            else:
                packed = _layers.pack_to_blobs(self.upper_dir, store.blobs)
            layer = Descriptor(packed.media_type, packed.digest, packed.size)
            created_by = self.command_text
            image = base.append_layer(layer, packed.diff_id, created_by=created_by,
                                      comment=message or None, author=author or None,
                                      config=config)
            tags = [reference] if reference else []
            return store.put_image(image, tags)

    def commit_config(self, changes: Sequence[str] = ()) -> dict[str, Any]:
        """The runtime config a commit records: the container's, with ``changes`` applied."""
        keep = ("User", "ExposedPorts", "Env", "Cmd", "Entrypoint", "WorkingDir", "Volumes",
                "Labels", "StopSignal", "OnBuild", "Healthcheck", "Shell")
        cfg = {k: v for k, v in self.config.items() if k in keep and v not in (None, "")}
        return apply_changes(cfg, changes)

    # -- docker inspect -----------------------------------------------------------------

    def inspect(self) -> dict[str, Any]:
        """The object ``docker inspect`` prints for a container (the keys a lesson reads)."""
        rec = self.record
        st = rec["state"]
        cfg = dict(self.config)
        host = rec["host"]
        port_bindings: dict[str, list[dict[str, str]]] = {}
        for p in self.ports:
            port_bindings.setdefault(p.key, []).append(
                {"HostIp": p.host_ip, "HostPort": str(p.host_port)})
        net_ports: dict[str, Any] = {}
        if self.running:
            for key in cfg.get("ExposedPorts") or {}:
                net_ports[key] = None
            for p in self.ports:
                net_ports.setdefault(p.key, None)
                net_ports[p.key] = [*(net_ports[p.key] or []),
                                    {"HostIp": p.host_ip or "0.0.0.0",
                                     "HostPort": str(p.host_port)}]
        argv = self.argv
        return {
            "Id": self.id,
            "Created": rec["created"],
            "Path": argv[0] if argv else "",
            "Args": argv[1:],
            "State": {
                "Status": st["status"], "Running": st["status"] == "running",
                "Paused": False, "Restarting": False, "OOMKilled": False, "Dead": False,
                "Pid": st.get("pid") or 0, "ExitCode": st.get("exit_code", 0), "Error": "",
                "StartedAt": st.get("started_at") or ZERO_TIME,
                "FinishedAt": st.get("finished_at") or ZERO_TIME,
            },
            "Image": self.image_id,
            "LogPath": self.log_path,
            "Name": "/" + self.name,
            "RestartCount": 0,
            "Driver": "overlay2",
            "Platform": "linux",
            "HostConfig": {
                "Binds": host.get("Binds") or None,
                "PortBindings": port_bindings,
                "AutoRemove": bool(host.get("AutoRemove")),
                "VolumesFrom": host.get("VolumesFrom") or None,
                "Privileged": bool(host.get("Privileged")),
                "ReadonlyRootfs": bool(host.get("ReadonlyRootfs")),
            },
            "GraphDriver": {
                "Data": {
                    "LowerDir": ":".join(self.lower_dirs),
                    "MergedDir": os.path.join(self.directory, "merged"),
                    "UpperDir": self.upper_dir,
                    "WorkDir": self.work_dir,
                },
                "Name": "overlay2",
            },
            "Mounts": [m.to_docker() for m in self.mounts],
            "Config": cfg,
            "NetworkSettings": {"Ports": net_ports},
        }


class ContainerStore:
    """Every container of one store: records in the store's state document, directories
    under ``ROOT/containers/<id>``."""

    def __init__(self, store: Any) -> None:
        self.store = store
        self.root = os.path.join(store.root, "containers")
        os.makedirs(self.root, exist_ok=True)
        self.volumes = VolumeStore(store, users=self.volume_users)

    # -- records ------------------------------------------------------------------------

    def _records(self) -> dict[str, dict[str, Any]]:
        return self.store.state_get(NAMESPACE) or {}

    def _update_record(self, cid: str, fn) -> dict[str, Any]:
        out: dict[str, Any] = {}

        def change(old):
            recs = dict(old or {})
            if cid not in recs:
                raise ContainerNotFound(f"No such container: {cid}")
            recs[cid] = fn(json.loads(json.dumps(recs[cid])))
            out.update(recs[cid])
            return recs
        self.store.state_update(NAMESPACE, change)
        return out

    def list(self, all: bool = False) -> list[Container]:
        """Containers newest first (``ps``); only running ones unless ``all``."""
        recs = sorted(self._records().values(), key=lambda r: r["created"], reverse=True)
        out = [Container(self, r) for r in recs]
        return out if all else [c for c in out if c.running]

    def get(self, ref: str) -> Container:
        """A container by full id, name (with or without ``/``), or unique id prefix.
        ``ContainerNotFound`` / ``Conflict`` (ambiguous prefix)."""
        recs = self._records()
        if ref in recs:
            return Container(self, recs[ref])
        name = ref[1:] if ref.startswith("/") else ref
        for r in recs.values():
            if r["name"] == name:
                return Container(self, r)
        if ref and re.fullmatch(r"[0-9a-f]+", ref):
            hits = [r for cid, r in recs.items() if cid.startswith(ref)]
            if len(hits) == 1:
                return Container(self, hits[0])
            if len(hits) > 1:
                raise Conflict(f"multiple IDs found with provided prefix: {ref}")
        raise ContainerNotFound(f"No such container: {ref}")

    def volume_users(self, name: str) -> list[str]:
        return [cid for cid, r in self._records().items()
                if any(m.get("name") == name for m in r.get("mounts", []))]

    def images_in_use(self) -> set[str]:
        """Manifest digests of the images containers use."""
        return {r["image_digest"] for r in self._records().values()}

    # -- create ---------------------------------------------------------------------------

    def create(self, image_ref: str, options: CreateOptions | None = None) -> Container:
        """``docker create``: resolve the image (the store's resolver, which may consult the
        built-in library), reserve a unique name, make the upper and work directories,
        set up the mounts (creating named and anonymous volumes and pre-filling empty ones
        from the image), and record the container as ``created``."""
        # the lease keeps fsck --repair from taking the directory made before the record
        with self.store.lease("create"):
            return self._create(image_ref, options)

    def _create(self, image_ref: str, options: CreateOptions | None) -> Container:
        opts = options or CreateOptions()
        store = self.store
        image = self._resolve_image(image_ref)
        icfg = dict(image.runtime_config or {})
        cid = secrets.token_hex(32)
        if opts.name is not None and not NAME_RE.match(opts.name):
            raise ContainerError(f"Invalid container name ({opts.name}), only "
                                 "[a-zA-Z0-9][a-zA-Z0-9_.-] are allowed")
        ports = [parse_port(p) for p in opts.ports]
        specs = [parse_volume_spec(v, opts.cwd) for v in opts.volumes]
        inherited = []
        for vf in opts.volumes_from:
            ref, mode = parse_volumes_from(vf)
            inherited.append((self.get(ref).mounts, mode))
        env = self._env(icfg.get("Env") or [], opts)
        cmd = list(opts.command) if opts.command else icfg.get("Cmd")
        entry = icfg.get("Entrypoint")
        if opts.entrypoint is not None:
            entry = shlex.split(opts.entrypoint) if opts.entrypoint else None
            if not opts.command:
                cmd = None
        labels = dict(icfg.get("Labels") or {})
        for item in opts.labels:
            k, _, v = item.partition("=")
            labels[k] = v
        exposed = dict(icfg.get("ExposedPorts") or {})
        for p in ports:
            exposed.setdefault(p.key, {})
        for e in opts.expose:
            num, _, proto = e.partition("/")
            exposed.setdefault(f"{num}/{proto or 'tcp'}", {})
        config = {
            "Hostname": opts.hostname or cid[:12], "Domainname": "",
            "User": opts.user if opts.user is not None else icfg.get("User", ""),
            "AttachStdin": opts.interactive and not opts.detach,
            "AttachStdout": not opts.detach, "AttachStderr": not opts.detach,
            "ExposedPorts": exposed or None, "Tty": opts.tty, "OpenStdin": opts.interactive,
            "StdinOnce": opts.interactive and not opts.detach,
            "Env": env, "Cmd": cmd, "Image": image_ref,
            "Volumes": icfg.get("Volumes") or None,
            "WorkingDir": opts.workdir if opts.workdir is not None
            else icfg.get("WorkingDir", ""),
            "Entrypoint": entry, "Labels": labels,
        }
        os.makedirs(os.path.join(self.root, cid, "upper"))
        os.makedirs(os.path.join(self.root, cid, "work"))
        try:
            mounts = resolve_mounts(self.volumes, specs, inherited,
                                    (icfg.get("Volumes") or {}).keys())
            record = {
                "v": 1, "id": cid, "name": "", "created": now_rfc3339(),
                "image": image_ref, "image_digest": str(image.digest),
                "image_id": str(image.id), "config": config,
                "host": {
                    "Binds": [f"{s.source}:{s.destination}" + (f":{s.mode}" if s.mode else "")
                              for s in specs if s.type == "bind"] or None,
                    "VolumesFrom": list(opts.volumes_from) or None,
                    "Privileged": opts.privileged, "ReadonlyRootfs": opts.read_only,
                    "AutoRemove": opts.auto_remove,
                },
                "mounts": [m.to_record() for m in mounts],
                "ports": [{"container_port": p.container_port, "proto": p.proto,
                           "host_ip": p.host_ip, "host_port": p.host_port} for p in ports],
                "state": {"status": "created", "started_at": ZERO_TIME,
                          "finished_at": ZERO_TIME, "exit_code": 0, "pid": 0},
            }
            # record and pin in one state write: a kill between them would leave a
            # container whose image gc may delete
            with store.transaction():
                self._insert(record, opts.name)
                store.pin(cid, image)
        except BaseException:
            shutil.rmtree(os.path.join(self.root, cid), ignore_errors=True)
            raise
        try:
            container = self.get(cid)
            self._prepare_mounts(container)
        except BaseException:
            # a container that cannot be set up is not left half made
            with contextlib.suppress(Exception):
                self.remove(cid, force=True, volumes=True)
            raise
        return container

    def _resolve_image(self, ref: str) -> Any:
        """The image ``ref`` names; a missing library image is pulled from the built-in
        library first, as ``docker run`` pulls what it lacks."""
        try:
            return self.store.resolve(ref)
        except ImageNotFound:
            pass
        from . import library
        from .reference import Reference

        ref_obj = Reference.try_parse(ref)
        if ref_obj is None or ref_obj.registry_host is not None:
            raise ImageNotFound(f"Unable to find image '{ref}' locally")
        # silently, as an API call: the CLI prints the pull lines itself
        return library.pull(self.store, ref_obj, io.StringIO(), quiet=True)

    @staticmethod
    def _env(image_env: Sequence[str], opts: CreateOptions) -> list[str]:
        env: dict[str, str] = {}
        for item in image_env:
            k, _, v = item.partition("=")
            env[k] = v
        for item in opts.env:
            k, eq, v = item.partition("=")
            if not eq:
                host = opts.extra_host_env.get(k, os.environ.get(k))
                if host is None:
                    continue  # `-e NAME` with NAME unset on the host: dropped, as docker
                v = host
            env[k] = v
        return [f"{k}={v}" for k, v in env.items()]

    def _insert(self, record: dict[str, Any], name: str | None) -> None:
        def add(old):
            recs = dict(old or {})
            taken = {r["name"]: cid for cid, r in recs.items()}
            wanted = name[1:] if name and name.startswith("/") else name
            if wanted is not None:
                if wanted in taken:
                    raise Conflict(
                        f"Conflict. The container name \"/{wanted}\" is already in use by "
                        f"container \"{taken[wanted]}\". You have to remove (or rename) that "
                        "container to be able to reuse that name.")
                record["name"] = wanted
            else:
                candidate = random_name()
                while candidate in taken:
                    candidate = random_name()
                record["name"] = candidate
            recs[record["id"]] = record
            return recs
        self.store.state_update(NAMESPACE, add)

    def _prepare_mounts(self, container: Container) -> None:
        """Pre-fill empty volumes from the image and create the mount points in the
        container's root (as runc does), so the view shows each mount at its path."""
        fs = container.fs
        for m in container.mounts:
            prefill(m, fs)
            with contextlib.suppress(OSError):
                if fs.exists(m.destination) if hasattr(fs, "exists") else False:
                    continue
            parent = os.path.dirname(m.destination)
            with contextlib.suppress(FileExistsError):
                fs.makedirs(parent, exist_ok=True)
            is_file = m.type == "bind" and not os.path.isdir(m.source)
            if is_file:
                with fs.open(m.destination, "wb"):
                    pass
            else:
                with contextlib.suppress(FileExistsError):
                    fs.mkdir(m.destination, 0o755)

    # -- lifecycle --------------------------------------------------------------------------

    def remove(self, ref: str, *, force: bool = False, volumes: bool = False) -> Container:
        """``docker rm``: refuse a running container unless ``force``; drop the record, the
        upper directory and the image pin; with ``volumes`` also its anonymous volumes
        (named ones and bind mounts stay)."""
        c = self.get(ref)
        if c.running:
            if not force:
                raise Conflict(f"You cannot remove a running container {c.id}. Stop the "
                               "container before attempting removal or force remove")
            c._stop_processes()
        point = c.mounted_at()
        if point is not None:
            # its files are about to go: take the FUSE mount away first (lazily if busy)
            from unionfs import mount as _m

            with contextlib.suppress(Exception):
                _m.umount(point, lazy=True)

        def drop(old):
            recs = dict(old or {})
            recs.pop(c.id, None)
            return recs
        self.store.state_update(NAMESPACE, drop)
        self.store.unpin(c.id)
        trash = os.path.join(self.root, f".trash-{c.id}")
        with contextlib.suppress(FileNotFoundError):
            os.rename(c.directory, trash)
        shutil.rmtree(trash, ignore_errors=True)
        if volumes:
            for m in c.mounts:
                if m.anonymous and m.name:
                    with contextlib.suppress(ImageSimError):
                        self.volumes.remove(m.name)
        return c

    def unmounted(self, mountpoint: str) -> list[str]:
        """Forget the FUSE mount at ``mountpoint`` in every container record that names it
        (``imagesim umount``). Returns the container ids changed."""
        point = os.path.realpath(mountpoint)
        changed: list[str] = []

        def clear(old):
            recs = dict(old or {})
            for cid, r in recs.items():
                if (r.get("fuse") or {}).get("mountpoint") == point:
                    r = dict(r)
                    r.pop("fuse", None)
                    recs[cid] = r
                    changed.append(cid)
            return recs
        self.store.state_update(NAMESPACE, clear)
        return changed

    def rename(self, ref: str, new_name: str) -> None:
        """``docker rename`` (``Conflict`` if ``new_name`` is taken)."""
        c = self.get(ref)
        new = new_name[1:] if new_name.startswith("/") else new_name
        if not NAME_RE.match(new):
            raise ContainerError(f"Invalid container name ({new_name}), only "
                                 "[a-zA-Z0-9][a-zA-Z0-9_.-] are allowed")
        if new == c.name:
            raise ContainerError("Renaming a container with the same name as its current "
                                 "name")

        def change(old):
            recs = dict(old or {})
            for cid, r in recs.items():
                if r["name"] == new and cid != c.id:
                    raise Conflict(f"Conflict. The container name \"/{new}\" is already in "
                                   f"use by container \"{cid}\". You have to remove (or "
                                   "rename) that container to be able to reuse that name.")
            rec = dict(recs[c.id])
            rec["name"] = new
            recs[c.id] = rec
            return recs
        self.store.state_update(NAMESPACE, change)


def iter_tree(fs: Any, top: str = "/") -> Iterator[str]:
    """Every path below ``top`` of an os-shaped filesystem, parents first, names sorted."""
    yield top
    try:
        names = sorted(fs.listdir(top))
    except OSError:
        return
    for n in names:
        p = top.rstrip("/") + "/" + n
        st = fs.lstat(p)
        if _stat.S_ISDIR(st.st_mode):
            yield from iter_tree(fs, p)
        else:
            yield p


# -- export -----------------------------------------------------------------------------

def export_tar(container: Container, out: Any) -> int:
    """``docker export``: a flattened tar of the container's union (image layers + writable
    layer, whiteouts applied; volume contents excluded) written to ``out`` (a path, written
    atomically, or a binary stream). Entries sorted, parents first. Returns the entry count."""
    import tarfile

    if isinstance(out, (str, os.PathLike)):
        path = os.fspath(out)
        tmp = f"{path}.{secrets.token_hex(4)}.tmp"
        try:
            with open(tmp, "wb") as f:
                n = export_tar(container, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
        return n
    fs = container.fs
    count = 0
    links: dict[int, str] = {}
    with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tar:
        for path in iter_tree(fs, "/"):
            if path == "/":
                continue
            st = fs.lstat(path)
            info = tarfile.TarInfo(path.lstrip("/"))
            info.mode = _stat.S_IMODE(st.st_mode)
            info.uid, info.gid = st.st_uid, st.st_gid
            info.mtime = st.st_mtime_ns / 1e9
            if _stat.S_ISDIR(st.st_mode):
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            elif _stat.S_ISLNK(st.st_mode):
                info.type = tarfile.SYMTYPE
                info.linkname = fs.readlink(path)
                tar.addfile(info)
            elif _stat.S_ISREG(st.st_mode):
                if st.st_nlink > 1 and st.st_ino in links:
                    info.type = tarfile.LNKTYPE
                    info.linkname = links[st.st_ino]
                    tar.addfile(info)
                else:
                    if st.st_nlink > 1:
                        links[st.st_ino] = info.name
                    info.size = st.st_size
                    with fs.open(path, "rb") as f:
                        tar.addfile(info, f)
            elif _stat.S_ISFIFO(st.st_mode):
                info.type = tarfile.FIFOTYPE
                tar.addfile(info)
            elif _stat.S_ISCHR(st.st_mode) or _stat.S_ISBLK(st.st_mode):
                info.type = tarfile.CHRTYPE if _stat.S_ISCHR(st.st_mode) else tarfile.BLKTYPE
                info.devmajor, info.devminor = os.major(st.st_rdev), os.minor(st.st_rdev)
                tar.addfile(info)
            else:
                continue
            count += 1
    return count


# -- FUSE mount of the view ---------------------------------------------------------------

def mount_view(container: Container, mountpoint: str, timeout: float = 60.0) -> int:
    """Mount ``container.view`` (union + volumes) at ``mountpoint`` through FUSE and return
    the daemon's pid once the mount is live (``unionfs.mount.mount_object``: a background
    daemon in its own session); unmount with ``unionfs.mount.umount`` (``imagesim umount``).
    The mount point is recorded so in-process changes go through the mount while it lives.
    Raises ``ContainerError`` for a mount point that is not a directory or already serves a
    union, and with the daemon's message when the mount does not come up (nothing is left
    mounted)."""
    from unionfs import mount as _m

    mountpoint = os.path.realpath(mountpoint)
    if not os.path.isdir(mountpoint):
        raise ContainerError(f"mount point {mountpoint} is not a directory")
    if _m.is_unionfs(_m.mount_at(mountpoint)):
        raise ContainerError(f"{mountpoint} is already mounted")

    def build() -> MountTable:
        # runs in the daemon: a fresh view shares nothing with this process's objects, and
        # applies no umask of its own (the kernel applied the caller's already)
        fresh = container.containers.get(container.id)
        fresh.umask = 0
        return fresh.view

    try:
        daemon = _m.mount_object(build, mountpoint, timeout=timeout)
    except _m.MountError as e:
        raise ContainerError(f"imagesim mount: {e}") from None

    def note(rec: dict[str, Any]) -> dict[str, Any]:
        rec["fuse"] = {"mountpoint": mountpoint, "pid": daemon}
        return rec

    container._update(note)
    return daemon
