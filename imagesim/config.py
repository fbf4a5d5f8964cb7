"""The client configuration file, ``~/.config/imagesim/config.json`` (or ``$IMAGESIM_CONFIG``).

It merges the two docker files a lesson touches::

    {
      "insecure-registries": ["myhost:5000"],          # as in /etc/docker/daemon.json
      "auths": {"myhost:5000": {"auth": "base64(user:password)"}}   # as ~/.docker/config.json
    }

Registries on ``localhost`` and ``127.0.0.0/8`` are always reachable over plain HTTP (docker
treats them as insecure too); any other host needs HTTPS unless it is listed. An entry is
``host:port`` (or ``host`` for a registry named without a port), or a CIDR such as
``10.1.0.0/16``, which matches a registry named by an IP address inside it (docker also
resolves names for that; we never do, so checking the config sends no DNS query).
Unknown keys are kept as they are when the file is rewritten. Writes are atomic (temp +
fsync + rename) and the file is created with mode 0600 because it holds credentials.

Trusting a registry's certificate works as docker's ``/etc/docker/certs.d``: the directory
``certs.d/HOST:PORT/`` next to the config file (``~/.config/imagesim/certs.d/myhost:5000/``)
holds ``*.crt`` files, CA certificates trusted for that registry in addition to the system's
store, and optionally ``NAME.cert`` + ``NAME.key`` pairs, a client certificate for registries
that ask for one. A registry listed as insecure is used over HTTPS without verification when
it speaks TLS, else over plain HTTP.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import ipaddress
import json
import os
import tempfile
from dataclasses import dataclass
from typing import Any

from .errors import ImageSimError

ENV_VAR = "IMAGESIM_CONFIG"
#: how docker names Docker Hub in ``auths``
HUB_AUTH_KEY = "https://index.docker.io/v1/"


class ConfigInvalid(ImageSimError):
    code = "CONFIG_INVALID"
    status = 400


def config_path() -> str:
    """``$IMAGESIM_CONFIG`` if set, else ``~/.config/imagesim/config.json`` (XDG aware)."""
    env = os.environ.get(ENV_VAR)
    if env:
        return env
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return os.path.join(base, "imagesim", "config.json")


def _host_only(registry: str) -> str:
    """``host`` of ``host[:port]`` (IPv6 in brackets supported)."""
    if registry.startswith("["):
        return registry[1:registry.index("]")] if "]" in registry else registry
    return registry.rsplit(":", 1)[0] if registry.count(":") == 1 else registry


def is_loopback(registry: str) -> bool:
    """True for ``localhost[:port]``, ``127.x.y.z[:port]`` and ``[::1][:port]``."""
    host = _host_only(registry).lower()
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _normalise_key(server: str) -> str:
    """The ``auths`` key for a server as given on the command line: scheme and path dropped
    (docker keeps ``https://index.docker.io/v1/`` for the Hub; we do the same)."""
    s = server.strip()
    if s in ("", "docker.io", "index.docker.io", "registry-1.docker.io", HUB_AUTH_KEY):
        return HUB_AUTH_KEY
    for prefix in ("https://", "http://"):
        if s.startswith(prefix):
            s = s[len(prefix):]
    return s.split("/", 1)[0]


@dataclass(frozen=True, slots=True)
class Credentials:
    username: str
    password: str


@dataclass(frozen=True, slots=True)
class RegistryCerts:
    """What ``certs.d/HOST:PORT/`` holds for one registry: CA files (``*.crt``) and client
    certificate + key pairs (``NAME.cert`` + ``NAME.key``), sorted by name."""

    directory: str
    ca_files: tuple[str, ...] = ()
    client_pairs: tuple[tuple[str, str], ...] = ()


class ClientConfig:
    """The parsed config file. ``load()`` reads it (a missing file is an empty config);
    mutators change this object, ``save()`` writes it back atomically."""

    def __init__(self, path: str | None = None, data: dict[str, Any] | None = None) -> None:
        self.path = path or config_path()
        self.data: dict[str, Any] = data if data is not None else {}

    @classmethod
    def load(cls, path: str | None = None) -> ClientConfig:
        """Read the config. Raises ``ConfigInvalid`` for a file that is not a JSON object or
        has wrongly typed ``insecure-registries``/``auths``."""
        p = path or config_path()
        try:
            with open(p, encoding="utf-8") as f:
                data = json.load(f)
        except FileNotFoundError:
            data = {}
        except (ValueError, UnicodeDecodeError) as e:
            raise ConfigInvalid(f"{p}: not valid JSON: {e}") from None
        if not isinstance(data, dict):
            raise ConfigInvalid(f"{p}: the top level must be a JSON object")
        if not isinstance(data.get("insecure-registries", []), list):
            raise ConfigInvalid(f"{p}: insecure-registries must be a list")
        if not isinstance(data.get("auths", {}), dict):
            raise ConfigInvalid(f"{p}: auths must be an object")
        return cls(p, data)

    def save(self) -> None:
        """Write the config atomically with mode 0600 (it holds credentials)."""
        directory = os.path.dirname(os.path.abspath(self.path))
        os.makedirs(directory, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=".config-")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(self.data, f, indent="\t", sort_keys=True)
                f.write("\n")
                f.flush()
                os.fsync(f.fileno())
            os.chmod(tmp, 0o600)
            os.rename(tmp, self.path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise

    # insecure registries
    @property
    def insecure_registries(self) -> list[str]:
        return [str(x) for x in self.data.get("insecure-registries", [])]

    def is_insecure(self, registry: str) -> bool:
        """True if ``registry`` (``host[:port]``) may be used over plain HTTP (and over HTTPS
        without verifying its certificate): loopback names and addresses always; others when
        listed exactly (``host:port``, or ``host`` for a registry named without a port) or
        named by an IP address inside a listed CIDR, as docker's ``insecure-registries``."""
        if is_loopback(registry):
            return True
        host = _host_only(registry)
        for entry in self.insecure_registries:
            e = entry.strip().removeprefix("http://").removeprefix("https://").rstrip("/")
            if e == registry:
                return True
            if "/" in e:
                with contextlib.suppress(ValueError):
                    if ipaddress.ip_address(host) in ipaddress.ip_network(e, strict=False):
                        return True
        return False

    # certificates
    @property
    def certs_dir(self) -> str:
        """``certs.d`` next to the config file (docker's ``/etc/docker/certs.d``)."""
        return os.path.join(os.path.dirname(os.path.abspath(self.path)), "certs.d")

    def certs(self, registry: str) -> RegistryCerts:
        """The CA files and client certificate pairs in ``certs.d/REGISTRY/`` (``registry`` as
        named: ``host:port``, or ``host``); empty when the directory does not exist. Raises
        ``ConfigInvalid`` for a ``NAME.cert`` without ``NAME.key`` or the reverse (docker
        refuses those too: CA certificates must end in ``.crt``)."""
        directory = os.path.join(self.certs_dir, registry)
        try:
            names = sorted(os.listdir(directory))
        except (FileNotFoundError, NotADirectoryError):
            return RegistryCerts(directory)
        cas, pairs = [], []
        present = set(names)
        for name in names:
            stem, ext = os.path.splitext(name)
            if ext == ".crt":
                cas.append(os.path.join(directory, name))
            elif ext == ".cert":
                if stem + ".key" not in present:
                    raise ConfigInvalid(f"missing key {stem}.key for client certificate "
                                        f"{os.path.join(directory, name)} (CA certificates "
                                        f"must use the extension .crt)")
                pairs.append((os.path.join(directory, name),
                              os.path.join(directory, stem + ".key")))
            elif ext == ".key" and stem + ".cert" not in present:
                raise ConfigInvalid(f"missing client certificate {stem}.cert for key "
                                    f"{os.path.join(directory, name)}")
        return RegistryCerts(directory, tuple(cas), tuple(pairs))

    def add_insecure(self, registry: str) -> None:
        regs = self.insecure_registries
        if registry not in regs:
            regs.append(registry)
        self.data["insecure-registries"] = regs

    # credentials
    def credentials(self, server: str) -> Credentials | None:
        """Stored credentials for ``server`` (``host[:port]``), or None. Raises
        ``ConfigInvalid`` for an ``auth`` value that is not base64 of ``user:password``."""
        auths = self.data.get("auths", {})
        entry = auths.get(_normalise_key(server))
        if entry is None:
            for key, value in auths.items():
                if _normalise_key(key) == _normalise_key(server):
                    entry = value
                    break
        if not isinstance(entry, dict):
            return None
        if entry.get("username") and entry.get("password"):
            return Credentials(str(entry["username"]), str(entry["password"]))
        auth = entry.get("auth")
        if not auth:
            return None
        try:
            user, sep, password = base64.b64decode(auth, validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            raise ConfigInvalid(f"{self.path}: the auth entry for {server} is not "
                                f"base64") from None
        if not sep:
            raise ConfigInvalid(f"{self.path}: the auth entry for {server} has no ':'")
        return Credentials(user, password)

    def set_credentials(self, server: str, username: str, password: str) -> None:
        token = base64.b64encode(f"{username}:{password}".encode()).decode()
        self.data.setdefault("auths", {})[_normalise_key(server)] = {"auth": token}

    def remove_credentials(self, server: str) -> bool:
        """Forget ``server``'s credentials; False if there were none."""
        auths = self.data.get("auths", {})
        key = _normalise_key(server)
        found = [k for k in auths if _normalise_key(k) == key]
        for k in found:
            del auths[k]
        return bool(found)
