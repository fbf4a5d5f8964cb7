"""Registry authentication: htpasswd (bcrypt) for HTTP Basic, and the Bearer token flow that
Docker Hub and cloud registries use (``WWW-Authenticate: Bearer realm=...,service=...,
scope=...``; the client fetches a token from the realm and retries).

Tokens are JWTs signed with HMAC-SHA256 under a key private to the server process, carrying
the granted ``access`` list as docker's token spec defines it. Clients treat them as opaque.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import os
import secrets
import threading
import time
from dataclasses import dataclass
from typing import Any

import bcrypt

from ..errors import Unauthorized

SERVICE = "imagesim-registry"


@dataclass(frozen=True, slots=True)
class Access:
    """One scope: ``repository:NAME:pull,push`` or ``registry:catalog:*``."""

    type: str
    name: str
    actions: frozenset[str]

    @classmethod
    def parse(cls, scope: str) -> Access:
        """Parse ``TYPE:NAME:ACTIONS`` (NAME may contain ``:`` for a host:port, so split from
        both ends). Raises ``ValueError`` for anything else."""
        kind, sep, rest = scope.partition(":")
        name, sep2, actions = rest.rpartition(":")
        if not sep or not sep2 or not kind or not name:
            raise ValueError(f"invalid scope {scope!r}")
        return cls(kind, name, frozenset(a for a in actions.split(",") if a))

    def __str__(self) -> str:
        return f"{self.type}:{self.name}:{','.join(sorted(self.actions))}"

    def allows(self, other: Access) -> bool:
        return (self.type == other.type and self.name == other.name
                and ("*" in self.actions or other.actions <= self.actions))


def parse_scopes(values: list[str]) -> list[Access]:
    """Scopes from ``scope=`` query values (each may hold several, space separated); invalid
    ones are ignored, as registries do."""
    out = []
    for value in values:
        for part in value.split():
            try:
                out.append(Access.parse(part))
            except ValueError:
                continue
    return out


class Htpasswd:
    """Users from an Apache htpasswd file. Only bcrypt entries (``htpasswd -B``) are accepted,
    as in docker-registry; the file is re-read when its mtime changes. Successful checks are
    remembered (keyed by a salted hash) so bcrypt's deliberate slowness is paid once."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = os.fspath(path)
        self._users: dict[str, bytes] = {}
        self._mtime: float | None = None
        self._ok: set[bytes] = set()
        self._salt = secrets.token_bytes(16)
        self._lock = threading.Lock()
        self._load()

    def _load(self) -> None:
        st = os.stat(self.path)  # FileNotFoundError for a missing file: a clear start-up error
        if st.st_mtime == self._mtime:
            return
        users: dict[str, bytes] = {}
        with open(self.path, encoding="utf-8") as f:
            for line in f:
                line = line.strip()
                if not line or line.startswith("#") or ":" not in line:
                    continue
                user, _, hashed = line.partition(":")
                if hashed.startswith(("$2y$", "$2a$", "$2b$")):
                    users[user] = hashed.encode()
        self._users, self._mtime, self._ok = users, st.st_mtime, set()

    def verify(self, user: str, password: str) -> bool:
        """True if ``user`` exists and ``password`` matches its bcrypt hash."""
        with self._lock:
            try:
                self._load()
            except FileNotFoundError:
                return False
            hashed = self._users.get(user)
            key = hashlib.sha256(self._salt + user.encode() + b"\0" + password.encode()
                                 ).digest()
            if hashed is None:
                return False
            if key in self._ok:
                return True
        try:
            ok = bcrypt.checkpw(password.encode(), hashed)
        except ValueError:
            ok = False
        if ok:
            with self._lock:
                self._ok.add(key)
        return ok


def basic_credentials(header: str | None) -> tuple[str, str] | None:
    """``(user, password)`` from an ``Authorization: Basic ...`` header, else None."""
    if not header:
        return None
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    user, sep, password = decoded.partition(":")
    return (user, password) if sep else None


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class TokenIssuer:
    """Issues and checks HS256 JWTs carrying docker's ``access`` claim."""

    def __init__(self, key: bytes | None = None, *, service: str = SERVICE,
                 lifetime: int = 300) -> None:
        self.key = key or secrets.token_bytes(32)
        self.service = service
        self.lifetime = lifetime

    def issue(self, subject: str, access: list[Access]) -> tuple[str, int, int]:
        """A token for ``subject`` granting ``access``: (token, expires_in, issued_at)."""
        now = int(time.time())
        header = {"alg": "HS256", "typ": "JWT"}
        claims = {
            "iss": "imagesim", "sub": subject, "aud": self.service, "iat": now, "nbf": now - 1,
            "exp": now + self.lifetime, "jti": secrets.token_hex(8),
            "access": [{"type": a.type, "name": a.name, "actions": sorted(a.actions)}
                       for a in access],
        }
        signing = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}"
        sig = hmac.new(self.key, signing.encode(), hashlib.sha256).digest()
        return f"{signing}.{_b64(sig)}", self.lifetime, now

    def verify(self, token: str) -> list[Access]:
        """The access a valid token grants. Raises ``Unauthorized`` for a malformed, forged,
        expired or foreign token."""
        try:
            head, body, sig = token.split(".")
            want = hmac.new(self.key, f"{head}.{body}".encode(), hashlib.sha256).digest()
            if not hmac.compare_digest(want, _unb64(sig)):
                raise Unauthorized("invalid token signature")
            claims: dict[str, Any] = json.loads(_unb64(body))
        except (ValueError, binascii.Error):
            raise Unauthorized("malformed token") from None
        now = time.time()
        if claims.get("aud") != self.service:
            raise Unauthorized("token is for another service")
        if not (claims.get("nbf", 0) <= now < claims.get("exp", 0)):
            raise Unauthorized("token expired")
        out = []
        for item in claims.get("access") or []:
            out.append(Access(str(item.get("type")), str(item.get("name")),
                              frozenset(item.get("actions") or ())))
        return out


def granted(requested: list[Access], user: str | None, *, anonymous_pull: bool) -> list[Access]:
    """What a token should carry: an authenticated user gets what it asked for (this registry
    has no per-repository ACLs); anonymous callers get pull only when allowed."""
    if user is not None:
        return requested
    if not anonymous_pull:
        return []
    out = []
    for a in requested:
        if a.type == "repository" and "pull" in a.actions:
            out.append(Access(a.type, a.name, frozenset({"pull"})))
    return out
