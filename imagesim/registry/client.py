"""A docker-like registry client: ``push``, ``pull``, ``login`` against any OCI distribution
registry (ours, ``docker-registry``, a cloud registry), over httpx.

* Transport: plain HTTP only for ``localhost``, ``127.0.0.0/8`` and hosts the config file lists
  as insecure; HTTPS with verification for everything else, never silently downgraded. For a
  listed host HTTPS is tried first without verification, then plain HTTP, as docker does; for
  a loopback host plain HTTP is tried first (the common local registry: no failed handshake,
  no warning in its log), then HTTPS without verification.
* Trust: the system's CA store plus the ``*.crt`` files in ``certs.d/HOST:PORT/`` next to the
  config file (docker's ``/etc/docker/certs.d``), and a client certificate from a
  ``NAME.cert``/``NAME.key`` pair there. A refused certificate or a plain-HTTP answer to a
  registry that must use HTTPS is an error that says what failed and how to fix it.
* Auth: the registry's ``WWW-Authenticate`` challenge decides: ``Basic`` sends the stored
  credentials; ``Bearer`` fetches a token from the realm (with the credentials when there are
  some) for the scope the request needs, caches it, and retries.
* Blobs stream both ways in 1 MiB pieces (never whole in memory); uploads larger than
  ``chunk_size`` go as several ``PATCH`` chunks with ``Content-Range``; downloads are written
  through the blob store's verifying writer, so a wrong digest stores nothing.
* Layers move ``TRANSFERS`` at a time (default 3, like docker's downloads;
  ``$IMAGESIM_TRANSFERS`` overrides), output still in layer order.
* Output: docker's lines, through a ``Reporter`` (plain lines, or rich progress bars on a
  terminal).
"""

from __future__ import annotations

import contextlib
import os
import platform as _platform
import queue
import re
import socket
import ssl
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import IO, Any, Protocol

import httpx

from .. import faults, oci
from ..config import ClientConfig, Credentials, is_loopback
from ..digest import Digest
from ..errors import (
    BlobUnknown,
    DigestInvalid,
    ImageSimError,
    ManifestInvalid,
    ManifestUnknown,
    Unauthorized,
    from_json,
)
from ..reference import Reference

CHUNK = 1 << 20
#: blobs larger than this are uploaded as several PATCH requests of this size
DEFAULT_CHUNK_SIZE = 256 << 20
MANIFEST_ACCEPT = ", ".join((oci.OCI_MANIFEST, oci.OCI_INDEX, oci.DOCKER_MANIFEST,
                             oci.DOCKER_MANIFEST_LIST))
MANIFEST_MAX = 4 * 1024 * 1024
#: blobs transferred at once by push and pull (docker: 5 uploads, 3 downloads)
TRANSFERS = int(os.environ.get("IMAGESIM_TRANSFERS", "3")) or 3
USER_AGENT = "imagesim/0.1 (registry client)"
SOURCES_NS = "registry.blob-sources"


class RegistryUnreachable(ImageSimError):
    code = "UNREACHABLE"
    status = 502


# -- TLS ---------------------------------------------------------------------------------------

def ssl_context(config: ClientConfig, registry: str, *, verify: bool) -> ssl.SSLContext:
    """The TLS settings for ``registry``: with ``verify``, the system's CA store (OpenSSL's
    default paths; ``SSL_CERT_FILE``/``SSL_CERT_DIR`` override them) plus the ``*.crt`` files
    in ``certs.d/REGISTRY/``; without, no certificate or name check at all (an insecure
    registry, as docker). A ``NAME.cert``/``NAME.key`` pair there is offered as the client
    certificate either way. Raises ``ConfigInvalid`` for an unpaired client file or a file
    that is not a certificate (or key) in PEM."""
    from ..config import ConfigInvalid
    certs = config.certs(registry)
    if verify:
        ctx = ssl.create_default_context()
    else:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    try:
        if verify:
            for ca in certs.ca_files:
                ctx.load_verify_locations(cafile=ca)
        for cert, key in certs.client_pairs:
            def no_password(key: str = key) -> bytes:
                # never OpenSSL's prompt on the terminal
                raise ConfigInvalid(f"{key}: the client key is encrypted; docker needs an "
                                    f"unencrypted one too")

            ctx.load_cert_chain(cert, key, password=no_password)
    except (ssl.SSLError, OSError) as e:
        raise ConfigInvalid(f"{certs.directory}: cannot load a certificate: "
                            f"{getattr(e, 'reason', None) or e}") from None
    return ctx


def _ssl_error(exc: BaseException) -> ssl.SSLError | None:
    """The ``ssl.SSLError`` behind an httpx error (httpx wraps httpcore's, which wraps it)."""
    seen: set[int] = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        if isinstance(e, ssl.SSLError):
            return e
        seen.add(id(e))
        e = e.__cause__ or e.__context__
    return None


#: OpenSSL verify codes -> the words docker's Go client uses (x509: ...)
_X509_WORDS = {
    2: "certificate signed by unknown authority",    # unable to get issuer certificate
    9: "certificate has expired or is not yet valid",
    10: "certificate has expired or is not yet valid",
    18: "certificate signed by unknown authority",   # self-signed certificate
    19: "certificate signed by unknown authority",   # self-signed certificate in chain
    20: "certificate signed by unknown authority",   # unable to get local issuer
    21: "certificate signed by unknown authority",   # unable to verify the first certificate
}


#: TLS alerts a server sends about the client's certificate
_CLIENT_CERT_ALERTS = frozenset({
    "SSLV3_ALERT_BAD_CERTIFICATE", "SSLV3_ALERT_UNSUPPORTED_CERTIFICATE",
    "SSLV3_ALERT_CERTIFICATE_REVOKED", "SSLV3_ALERT_CERTIFICATE_EXPIRED",
    "SSLV3_ALERT_CERTIFICATE_UNKNOWN", "TLSV13_ALERT_CERTIFICATE_REQUIRED",
    "TLSV1_ALERT_UNKNOWN_CA"})


def speaks_plain_http(host: str, port: int, timeout: float = 5.0) -> bool:
    """True if the server at ``host:port`` answers a TLS ClientHello with plain HTTP (what Go
    reports as "server gave HTTP response to HTTPS client"). Only the handshake's first
    message is sent: no request, no credentials leave in clear text."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(incoming, outgoing, server_hostname=host)
    with contextlib.suppress(ssl.SSLWantReadError):
        obj.do_handshake()
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.sendall(outgoing.read())
            head = b""
            while len(head) < 5:
                data = sock.recv(5 - len(head))
                if not data:
                    break
                head += data
    except OSError:
        return False
    return head.startswith(b"HTTP/")


def _split_host_port(registry: str) -> tuple[str, int]:
    if registry.startswith("["):
        host, _, rest = registry[1:].partition("]")
        return host, int(rest[1:]) if rest.startswith(":") else 443
    host, sep, port = registry.rpartition(":")
    if sep and port.isdigit():
        return host, int(port)
    return registry, 443


# -- reporting ---------------------------------------------------------------------------------

class Reporter(Protocol):
    """Receives docker's progress lines. ``ident`` is a 12-hex layer id or None for a plain
    line; ``done``/``total`` come with ``Pushing``/``Downloading``."""

    def status(self, ident: str | None, text: str) -> None: ...
    def progress(self, ident: str, text: str, done: int, total: int) -> None: ...
    def close(self) -> None: ...


class PlainReporter:
    """Docker's non-terminal output: one line per status change, no progress lines."""

    def __init__(self, stream: IO[str] | None = None) -> None:
        self.stream = stream or sys.stdout

    def status(self, ident: str | None, text: str) -> None:
        self.stream.write(f"{ident}: {text}\n" if ident else f"{text}\n")
        self.stream.flush()

    def progress(self, ident: str, text: str, done: int, total: int) -> None:
        return None

    def close(self) -> None:
        return None


_FINAL = frozenset({"Pushed", "Verifying Checksum", "Download complete", "Pull complete"})


class RichReporter:
    """Per-layer progress bars on a terminal (rich), the final lines left on screen."""

    def __init__(self, stream: IO[str] | None = None) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            Progress,
            TextColumn,
            TransferSpeedColumn,
        )
        self.console = Console(file=stream or sys.stdout)
        self._progress = Progress(TextColumn("{task.description}", markup=False), BarColumn(),
                                  DownloadColumn(), TransferSpeedColumn(),
                                  console=self.console, transient=False)
        self._tasks: dict[str, Any] = {}
        self._totals: dict[str, int] = {}
        self._progress.start()

    def _task(self, ident: str) -> Any:
        if ident not in self._tasks:
            self._tasks[ident] = self._progress.add_task(ident, total=None, start=False)
        return self._tasks[ident]

    def status(self, ident: str | None, text: str) -> None:
        if ident is None:
            self._progress.console.print(text, highlight=False, markup=False)
            return
        task = self._task(ident)
        total = self._totals.get(ident)
        if total is not None and text in _FINAL:
            self._progress.update(task, description=f"{ident}: {text}", completed=total)
        else:
            self._progress.update(task, description=f"{ident}: {text}")

    def progress(self, ident: str, text: str, done: int, total: int) -> None:
        task = self._task(ident)
        self._totals[ident] = total
        self._progress.start_task(task)
        self._progress.update(task, description=f"{ident}: {text}", completed=done,
                              total=total)

    def close(self) -> None:
        self._progress.stop()


class NullReporter:
    def status(self, ident: str | None, text: str) -> None:
        return None

    def progress(self, ident: str, text: str, done: int, total: int) -> None:
        return None

    def close(self) -> None:
        return None


def reporter_for(stream: IO[str] | None = None, *, quiet: bool = False) -> Reporter:
    """Rich bars when ``stream`` is a terminal, docker's plain lines otherwise."""
    if quiet:
        return NullReporter()
    s = stream or sys.stdout
    if hasattr(s, "isatty") and s.isatty():
        return RichReporter(s)
    return PlainReporter(s)


class _ThreadedSink:
    """Hands chunks to ``write`` on a worker thread, so hashing and the disk write (both
    release the GIL) overlap with receiving the next chunk. The queue is bounded: at most
    ``depth`` chunks are ever held in memory."""

    def __init__(self, write: Callable[[bytes], Any], depth: int = 32) -> None:
        self._write = write
        self._queue: queue.Queue[bytes | None] = queue.Queue(depth)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            if self._error is None:
                try:
                    self._write(item)
                except BaseException as e:  # re-raised in the caller's thread
                    self._error = e

    def put(self, chunk: bytes) -> None:
        if self._error is not None:
            raise self._error
        self._queue.put(chunk)

    def close(self, *, raise_error: bool = True) -> None:
        """Wait until every chunk is written; re-raise a write error if asked."""
        self._queue.put(None)
        self._thread.join()
        if raise_error and self._error is not None:
            raise self._error


# -- auth challenges ---------------------------------------------------------------------------

_PARAM = re.compile(r'(\w+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^,\s]*))')


@dataclass(frozen=True, slots=True)
class Challenge:
    scheme: str
    params: dict[str, str] = field(default_factory=dict)

    @classmethod
    def parse(cls, header: str) -> Challenge | None:
        """``Bearer realm="...",service="...",scope="..."`` or ``Basic realm="..."``."""
        if not header:
            return None
        scheme, _, rest = header.strip().partition(" ")
        params = {m.group(1).lower(): m.group(2) if m.group(2) is not None else m.group(3)
                  for m in _PARAM.finditer(rest)}
        return cls(scheme.lower(), params)


def _raise_for(resp: httpx.Response, what: str) -> None:
    """Turn an error response into the matching ``ImageSimError`` (the spec's JSON body when
    there is one)."""
    if resp.is_success:
        return
    with contextlib.suppress(Exception):
        resp.read()
    try:
        body = resp.json()
        errors = body.get("errors") if isinstance(body, dict) else None
    except Exception:
        errors = None
    if errors:
        err = from_json(errors[0], resp.status_code)
        err.message = f"{what}: {err.message}"
        err.args = (err.message,)
        raise err
    if resp.status_code == 401:
        raise Unauthorized(f"{what}: authentication required")
    if resp.status_code == 404:
        raise ManifestUnknown(f"{what}: not found")
    err = ImageSimError(f"{what}: HTTP {resp.status_code} {resp.reason_phrase}")
    err.status = resp.status_code  # type: ignore[misc]
    raise err


# -- the session with one registry -------------------------------------------------------------

Body = bytes | Callable[[], Iterable[bytes]] | None


class RegistrySession:
    """Requests to one registry (``host[:port]``) with scheme selection and auth handled.

    Raises ``RegistryUnreachable`` when no connection can be made, ``Unauthorized`` when the
    registry refuses the credentials (or there are none)."""

    def __init__(self, registry: str, config: ClientConfig | None = None, *,
                 credentials: Credentials | None = None, timeout: float = 60.0) -> None:
        self.registry = registry
        self.config = config or ClientConfig.load()
        self.credentials = credentials or self.config.credentials(registry)
        self.insecure = self.config.is_insecure(registry)
        self._client = httpx.Client(timeout=httpx.Timeout(timeout, connect=10.0),
                                    headers={"User-Agent": USER_AGENT},
                                    verify=ssl_context(self.config, registry,
                                                       verify=not self.insecure),
                                    follow_redirects=True)
        self._base: str | None = None
        self._basic = False
        self._tokens: dict[str, tuple[str, float]] = {}
        self._challenge: Challenge | None = None

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> RegistrySession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # connection
    @property
    def base(self) -> str:
        """``scheme://host`` after probing ``/v2/`` (once)."""
        if self._base is None:
            self._base = self._probe()
        return self._base

    def _tls_failure(self, exc: BaseException) -> str | None:
        """Say what went wrong in a failed HTTPS probe of a registry that must use HTTPS, and
        how to fix it; None when it was not a TLS problem (connection refused...)."""
        err = _ssl_error(exc)
        if err is None:
            return None
        allow = (f"add {self.registry!r} to insecure-registries in {self.config.path} "
                 f"(as docker's daemon.json)")
        if isinstance(err, ssl.SSLCertVerificationError):
            code = err.verify_code
            if code == 62:  # hostname mismatch
                x509 = f"certificate is not valid for {_split_host_port(self.registry)[0]}"
            else:
                x509 = _X509_WORDS.get(code, err.verify_message or str(err))
            ca = f"{self.config.certs_dir}/{self.registry}/ca.crt"
            return (f"TLS certificate verification failed: x509: {x509} "
                    f"({err.verify_message}); to trust this registry put its CA certificate "
                    f"in {ca}, or to skip verification {allow}")
        host, port = _split_host_port(self.registry)
        if speaks_plain_http(host, port):
            return (f"http: server gave HTTP response to HTTPS client: {self.registry} "
                    f"speaks plain HTTP, which is refused for a registry that is not "
                    f"insecure; to allow it {allow}")
        reason = err.reason or str(err)
        if reason in _CLIENT_CERT_ALERTS:
            # the server complains about a certificate: ours (it checks no other)
            return (f"TLS handshake failed: the registry refused the client certificate, or "
                    f"wants one ({reason}); put a certificate it accepts and its key as "
                    f"NAME.cert and NAME.key in {self.config.certs_dir}/{self.registry}/")
        return f"TLS handshake failed: {reason}"

    def _probe(self) -> str:
        if is_loopback(self.registry):
            # plain HTTP first: the usual local registry answers without a failed handshake;
            # a TLS one on localhost still works through the second try
            schemes = ["http", "https"]
        elif self.insecure:
            schemes = ["https", "http"]  # docker tries TLS first for an insecure registry
        else:
            schemes = ["https"]
        failures: list[str] = []
        for scheme in schemes:
            url = f"{scheme}://{self.registry}"
            try:
                resp = self._client.get(f"{url}/v2/")
            except httpx.HTTPError as e:
                failures.append(f"{url}/v2/: {str(e) or type(e).__name__}")
                if schemes == ["https"]:
                    problem = self._tls_failure(e)
                    if problem is not None:
                        raise RegistryUnreachable(f"cannot reach registry {self.registry}: "
                                                  f"{problem}") from None
                continue
            if resp.status_code == 401:
                self._challenge = Challenge.parse(resp.headers.get("www-authenticate", ""))
                if (self._challenge is not None and self._challenge.scheme == "basic"
                        and self.credentials is not None):
                    self._basic = True  # send them up front: saves a 401 per request
            elif resp.status_code != 200:
                # e.g. docker's registry answers 400 to plain HTTP on its TLS port
                failures.append(f"{url}/v2/ answered HTTP {resp.status_code}: not a "
                                f"registry")
                continue
            return url
        raise RegistryUnreachable(f"cannot reach registry {self.registry}: "
                                  + "; ".join(failures))

    def url(self, path: str) -> str:
        return path if path.startswith(("http://", "https://")) else self.base + path

    # auth
    def _auth_header(self, scope: str) -> dict[str, str]:
        token = self._tokens.get(scope)
        if token is not None and token[1] > time.time():
            return {"Authorization": f"Bearer {token[0]}"}
        if self._basic and self.credentials is not None:
            return {"Authorization": httpx.BasicAuth(self.credentials.username,
                                                     self.credentials.password)
                    ._auth_header}
        return {}

    def authenticate(self, challenge: Challenge, scope: str) -> None:
        """Act on a 401 challenge so the next request with ``scope`` carries credentials.
        Raises ``Unauthorized`` when there are none to give or the token service refuses."""
        if challenge.scheme == "basic":
            if self.credentials is None:
                raise Unauthorized(f"{self.registry}: authentication required (use "
                                   f"`imagesim login {self.registry}`)")
            if self._basic:
                raise Unauthorized(f"{self.registry}: unauthorized: incorrect username or "
                                   f"password")
            self._basic = True
            return
        if challenge.scheme != "bearer" or "realm" not in challenge.params:
            raise Unauthorized(f"{self.registry}: unsupported auth challenge "
                               f"{challenge.scheme!r}")
        params: list[tuple[str, str]] = []
        if challenge.params.get("service"):
            params.append(("service", challenge.params["service"]))
        for s in scope.split():
            params.append(("scope", s))
        auth = None
        if self.credentials is not None:
            auth = httpx.BasicAuth(self.credentials.username, self.credentials.password)
            params.append(("account", self.credentials.username))
        try:
            resp = self._client.get(challenge.params["realm"], params=params, auth=auth)
        except httpx.HTTPError as e:
            raise RegistryUnreachable(f"token service {challenge.params['realm']}: {e}") \
                from None
        if resp.status_code in (401, 403):
            what = ("incorrect username or password" if self.credentials is not None
                    else "authentication required")
            raise Unauthorized(f"{self.registry}: unauthorized: {what} (refused by the token "
                               f"service {challenge.params['realm']})")
        _raise_for(resp, "token request")
        body = resp.json()
        token = body.get("token") or body.get("access_token")
        if not token:
            raise Unauthorized(f"{self.registry}: the token service sent no token")
        lifetime = int(body.get("expires_in") or 60)
        self._tokens[scope] = (token, time.time() + max(lifetime - 10, 5))

    def request(self, method: str, path: str, *, scope: str, body: Body = None,
                headers: dict[str, str] | None = None, params: Any = None,
                stream: bool = False) -> httpx.Response:
        """Send a request with auth; on 401 answer the challenge and retry once (a streamed
        ``body`` is given as a factory so it can be produced again)."""
        _ = self.base
        for attempt in range(2):
            h = dict(headers or {})
            h.update(self._auth_header(scope))
            content = body() if callable(body) else body
            try:
                req = self._client.build_request(method, self.url(path), headers=h,
                                                 params=params, content=content)
                resp = self._client.send(req, stream=stream)
            except httpx.TransportError as e:
                raise RegistryUnreachable(f"{method} {self.url(path)}: {e}") from None
            if resp.status_code != 401 or attempt == 1:
                return resp
            challenge = Challenge.parse(resp.headers.get("www-authenticate", ""))
            resp.close()
            if challenge is None:
                raise Unauthorized(f"{self.registry}: 401 without a challenge")
            if challenge.scheme == "bearer" and not scope:
                scope = challenge.params.get("scope", "")
            self.authenticate(challenge, scope)
        raise AssertionError("unreachable")

    def login(self) -> None:
        """Check the credentials against ``/v2/`` (what ``docker login`` does). Raises
        ``Unauthorized`` if the registry refuses them."""
        resp = self.request("GET", "/v2/", scope="")
        if resp.status_code == 401:
            raise Unauthorized(f"login to {self.registry} failed: unauthorized: incorrect "
                               f"username or password")
        _raise_for(resp, "login")

    # manifests
    def get_manifest(self, repo: str, reference: str) -> tuple[bytes, str, Digest]:
        """The manifest's exact bytes, media type and digest (verified: against the
        reference when it is a digest, else against ``Docker-Content-Digest``)."""
        resp = self.request("GET", f"/v2/{repo}/manifests/{reference}",
                            scope=f"repository:{repo}:pull", headers={"Accept": MANIFEST_ACCEPT},
                            stream=True)
        try:
            _raise_for(resp, f"manifest for {self.registry}/{repo}:{reference} not found")
            body = bytearray()
            for chunk in resp.iter_bytes():
                body += chunk
                if len(body) > MANIFEST_MAX:  # a hostile registry cannot exhaust memory
                    raise ManifestInvalid(f"manifest for {repo}:{reference} is over 4 MiB")
            data = bytes(body)
        except httpx.TransportError as e:
            raise RegistryUnreachable(f"manifest for {repo}:{reference}: {e}") from None
        finally:
            resp.close()
        if ":" in reference:
            expected = Digest.parse(reference)
        else:
            header = resp.headers.get("docker-content-digest")
            expected = Digest.parse(header) if header else Digest.of(data)
        expected.verify(data)
        media_type = resp.headers.get("content-type", "").split(";")[0].strip()
        if media_type not in oci.MANIFEST_TYPES + oci.INDEX_TYPES:
            media_type = oci.media_type_of(data)
        return data, media_type, expected

    def put_manifest(self, repo: str, reference: str, data: bytes, media_type: str) -> Digest:
        resp = self.request("PUT", f"/v2/{repo}/manifests/{reference}",
                            scope=f"repository:{repo}:pull,push", body=data,
                            headers={"Content-Type": media_type})
        _raise_for(resp, f"manifest {repo}:{reference}")
        digest = Digest.of(data)
        header = resp.headers.get("docker-content-digest")
        if header and Digest.parse(header) != digest:
            raise DigestInvalid(f"registry stored manifest as {header}, expected {digest}")
        return digest

    # blobs
    def has_blob(self, repo: str, digest: Digest) -> bool:
        resp = self.request("HEAD", f"/v2/{repo}/blobs/{digest}",
                            scope=f"repository:{repo}:pull,push")
        if resp.status_code == 404:
            return False
        _raise_for(resp, f"blob {digest}")
        return True

    def _with_digest(self, location: str, digest: Digest) -> str:
        url = httpx.URL(self.url(location))
        return str(url.copy_merge_params({"digest": str(digest)}))

    def push_blob(self, repo: str, digest: Digest, size: int, opener: Callable[[], IO[bytes]],
                  *, mount_from: Iterable[str] = (), chunk_size: int = DEFAULT_CHUNK_SIZE,
                  on_progress: Callable[[int], None] | None = None) -> tuple[str, str | None]:
        """Make ``digest`` present in ``repo``: ("exists", None) if it already is, ("mounted",
        source) after a cross-repository mount, ("pushed", None) after an upload streamed
        from ``opener()`` (monolithic PUT, or PATCH chunks when larger than ``chunk_size``)."""
        if self.has_blob(repo, digest):
            return "exists", None
        push_scope = f"repository:{repo}:pull,push"
        location = None
        for source in mount_from:
            if source == repo:
                continue
            try:
                resp = self.request("POST", f"/v2/{repo}/blobs/uploads/",
                                    scope=f"{push_scope} repository:{source}:pull",
                                    params={"mount": str(digest), "from": source})
            except Unauthorized:
                continue
            if resp.status_code == 201:
                return "mounted", source
            if resp.status_code == 202:
                location = resp.headers.get("location")
                break
            if resp.status_code in (401, 403, 404):
                continue  # no access to the source here: upload instead, as docker does
            _raise_for(resp, f"mount of {digest} from {source}")
        if location is None:
            resp = self.request("POST", f"/v2/{repo}/blobs/uploads/", scope=push_scope)
            _raise_for(resp, f"upload of {digest}")
            location = resp.headers.get("location")
        if not location:
            raise ImageSimError(f"registry gave no upload location for {digest}")

        def stream(start: int, length: int) -> Callable[[], Iterator[bytes]]:
            def gen() -> Iterator[bytes]:
                with opener() as f:
                    f.seek(start)
                    left = length
                    while left > 0:
                        chunk = f.read(min(CHUNK, left))
                        if not chunk:
                            raise BlobUnknown(f"local blob {digest} is shorter than {size}")
                        left -= len(chunk)
                        yield chunk
                        if on_progress is not None:
                            on_progress(start + length - left)
            return gen

        if size <= chunk_size:
            resp = self.request("PUT", self._with_digest(location, digest), scope=push_scope,
                                body=stream(0, size),
                                headers={"Content-Type": "application/octet-stream",
                                         "Content-Length": str(size)})
            _raise_for(resp, f"upload of {digest}")
            return "pushed", None
        offset = 0
        while offset < size:
            length = min(chunk_size, size - offset)
            resp = self.request("PATCH", location, scope=push_scope, body=stream(offset, length),
                                headers={"Content-Type": "application/octet-stream",
                                         "Content-Length": str(length),
                                         "Content-Range": f"{offset}-{offset + length - 1}"})
            _raise_for(resp, f"upload of {digest}")
            location = resp.headers.get("location") or location
            offset += length
        resp = self.request("PUT", self._with_digest(location, digest), scope=push_scope,
                            body=b"", headers={"Content-Length": "0"})
        _raise_for(resp, f"upload of {digest}")
        return "pushed", None

    def fetch_blob(self, repo: str, digest: Digest, size: int | None, writer: Any, *,
                   on_progress: Callable[[int], None] | None = None) -> None:
        """Stream a blob into ``writer`` (a ``BlobWriter``: it hashes, and ``commit`` refuses
        a wrong digest or size). Raises ``BlobUnknown``/``DigestInvalid``/``SizeInvalid``."""
        resp = self.request("GET", f"/v2/{repo}/blobs/{digest}",
                            scope=f"repository:{repo}:pull", stream=True)
        sink = _ThreadedSink(writer.write)
        ok = False
        try:
            _raise_for(resp, f"blob {digest}")
            done = 0
            for chunk in resp.iter_raw():
                sink.put(chunk)
                done += len(chunk)
                if on_progress is not None:
                    on_progress(done)
            ok = True
        except httpx.TransportError as e:
            raise RegistryUnreachable(f"download of {digest} failed: {e}") from None
        finally:
            resp.close()
            sink.close(raise_error=ok)
        writer.commit()

    def tags(self, repo: str) -> list[str]:
        """Every tag of ``repo`` (following ``Link`` pagination)."""
        out: list[str] = []
        path: str | None = f"/v2/{repo}/tags/list"
        while path:
            resp = self.request("GET", path, scope=f"repository:{repo}:pull")
            _raise_for(resp, f"tags of {repo}")
            out.extend(resp.json().get("tags") or [])
            m = re.search(r"<([^>]+)>;\s*rel=\"?next\"?", resp.headers.get("link", ""))
            path = m.group(1) if m else None
        return out

    def catalog(self) -> list[str]:
        out: list[str] = []
        path: str | None = "/v2/_catalog"
        while path:
            resp = self.request("GET", path, scope="registry:catalog:*")
            _raise_for(resp, "catalog")
            out.extend(resp.json().get("repositories") or [])
            m = re.search(r"<([^>]+)>;\s*rel=\"?next\"?", resp.headers.get("link", ""))
            path = m.group(1) if m else None
        return out


# -- platform ----------------------------------------------------------------------------------

_ARCH = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64",
         "armv7l": "arm", "i686": "386", "i386": "386", "ppc64le": "ppc64le",
         "s390x": "s390x", "riscv64": "riscv64"}


def host_platform() -> tuple[str, str]:
    """(os, architecture) of this machine in OCI terms (``linux``, ``amd64``)."""
    return "linux", _ARCH.get(_platform.machine().lower(), "amd64")


def select_platform(index_bytes: bytes, want: tuple[str, str] | None = None
                    ) -> oci.Descriptor:
    """The manifest of an index for ``want`` (default: this machine, then linux/amd64).
    Raises ``ManifestUnknown`` with docker's message when there is none."""
    doc = oci.loads(index_bytes, "index")
    manifests = [oci.Descriptor.from_json(d, f"manifests[{i}]")
                 for i, d in enumerate(doc.get("manifests") or [])]
    wanted = [want] if want else [host_platform(), ("linux", "amd64")]
    for os_name, arch in wanted:
        for desc in manifests:
            p = desc.platform
            if (p is not None and p.os == os_name and p.architecture == arch
                    and desc.media_type in oci.MANIFEST_TYPES):
                return desc
    os_name, arch = wanted[0]
    raise ManifestUnknown(f"no matching manifest for {os_name}/{arch} in the manifest list "
                          f"entries")


def parse_platform(text: str) -> tuple[str, str]:
    """``linux/amd64`` -> ("linux", "amd64"). Raises ``ValueError``."""
    parts = text.split("/")
    if len(parts) < 2 or not all(parts[:2]):
        raise ValueError(f"invalid platform {text!r} (want OS/ARCH)")
    return parts[0], parts[1]


# -- push and pull -----------------------------------------------------------------------------

def _sources(store: Any, registry: str) -> dict[str, list[str]]:
    data = store.state_get(SOURCES_NS, {}) or {}
    return dict(data.get(registry, {}))


def _remember_sources(store: Any, registry: str, repo: str, digests: Iterable[Digest]) -> None:
    keys = [str(d) for d in digests]

    def update(old: Any) -> Any:
        data = dict(old or {})
        reg = dict(data.get(registry, {}))
        for k in keys:
            repos = [r for r in reg.get(k, []) if r != repo]
            reg[k] = ([repo, *repos])[:5]
        data[registry] = reg
        return data

    store.state_update(SOURCES_NS, update)


@dataclass(frozen=True, slots=True)
class PushResult:
    digest: Digest
    size: int
    layers: dict[str, str]


def push(store: Any, ref: Reference | str, *, config: ClientConfig | None = None,
         reporter: Reporter | None = None, chunk_size: int = DEFAULT_CHUNK_SIZE,
         session: RegistrySession | None = None) -> PushResult:
    """Push the local image ``ref`` names (``HOST[:PORT]/PATH[:TAG]``) to its registry:
    layers (HEAD to skip present ones, cross-repo mount where a source is known, streamed
    upload otherwise), config, then the manifest under the tag. Prints docker's lines.
    Raises ``ImageNotFound`` (no such local image), ``Denied`` (no registry host in the name),
    ``Unauthorized``, ``RegistryUnreachable`` and the registry's errors."""
    r = ref if isinstance(ref, Reference) else Reference.parse(ref)
    if r.registry_host is None:
        from ..errors import Denied
        raise Denied(f"cannot push {r}: no registry host in the name (tag it as "
                     f"HOST:PORT/{r.path.removeprefix('library/')}:{r.tag or 'latest'})")
    image = store.resolve(r)
    rep = reporter or PlainReporter()
    registry, repo = r.registry_host, r.repository
    own = session is None
    sess = session or RegistrySession(registry, config)
    try:
        rep.status(None, f"The push refers to repository [{r.name}]")
        layers = list(image.layers)
        for desc in reversed(layers):
            rep.status(desc.digest.short, "Preparing")
        sources = _sources(store, registry)
        outcome: dict[str, str] = {}

        def send(desc: oci.Descriptor) -> tuple[str, str | None]:
            ident = desc.digest.short

            def progress(done: int) -> None:
                rep.progress(ident, "Pushing", done, desc.size)

            return sess.push_blob(repo, desc.digest, desc.size,
                                  lambda: store.blobs.open(desc.digest),
                                  mount_from=sources.get(str(desc.digest), []),
                                  chunk_size=chunk_size, on_progress=progress)

        # layers go up in parallel (docker uses several too); lines are printed in order
        with ThreadPoolExecutor(max_workers=TRANSFERS) as pool:
            futures = {}
            for desc in reversed(layers):
                if desc.digest not in futures:
                    futures[desc.digest] = pool.submit(send, desc)
            try:
                for d, fut in futures.items():
                    state, source = fut.result()
                    faults.point("push.blob")
                    outcome[str(d)] = state
                    if state == "exists":
                        rep.status(d.short, "Layer already exists")
                    elif state == "mounted":
                        rep.status(d.short, f"Mounted from {source}")
                    else:
                        rep.status(d.short, "Pushed")
            finally:
                for fut in futures.values():
                    fut.cancel()
        cfg = image.config_descriptor
        sess.push_blob(repo, cfg.digest, cfg.size, lambda: store.blobs.open(cfg.digest),
                       chunk_size=chunk_size)
        tag = r.tag or "latest"
        digest = sess.put_manifest(repo, r.digest or tag, image.manifest_bytes,
                                   image.media_type)
        _remember_sources(store, registry, repo, [d.digest for d in layers])
        with contextlib.suppress(ImageSimError):  # docker records RepoDigests on push too
            store.add_repo_digest(r, image.digest)
        rep.status(None, f"{tag}: digest: {digest} size: {len(image.manifest_bytes)}")
        return PushResult(digest, len(image.manifest_bytes), outcome)
    finally:
        rep.close()
        if own:
            sess.close()


def download_blobs(sess: RegistrySession, repo: str, descs: Iterable[oci.Descriptor],
                   blobs: Any, reporter: Reporter | None = None) -> Iterator[Digest]:
    """Download ``descs`` from ``repo`` into the blob store ``blobs``, ``TRANSFERS`` at a time,
    each streamed through the store's verifying writer (a blob that does not match its digest
    or size is never stored). Yields each digest, in the order given, once it is stored;
    raises the first failure (``DigestInvalid``, ``SizeInvalid``, ``BlobUnknown``, ...)."""
    rep = reporter or NullReporter()

    def fetch(desc: oci.Descriptor) -> None:
        ident = desc.digest.short

        def progress(done: int) -> None:
            rep.progress(ident, "Downloading", done, desc.size)

        with blobs.writer(desc.digest, desc.size) as w:
            sess.fetch_blob(repo, desc.digest, desc.size, w, on_progress=progress)

    with ThreadPoolExecutor(max_workers=TRANSFERS) as pool:
        futures = {}
        for desc in descs:
            if desc.digest not in futures:
                futures[desc.digest] = pool.submit(fetch, desc)
        try:
            for d, fut in futures.items():
                fut.result()
                yield d
        finally:
            for fut in futures.values():
                fut.cancel()


@dataclass(frozen=True, slots=True)
class PullResult:
    digest: Digest          # what the reference pointed at (an index, or the manifest)
    image_digest: Digest    # the image manifest recorded in the store
    up_to_date: bool
    layers: dict[str, str]


def pull(store: Any, ref: Reference | str, *, config: ClientConfig | None = None,
         reporter: Reporter | None = None, platform: tuple[str, str] | None = None,
         session: RegistrySession | None = None) -> PullResult:
    """Pull ``ref`` from its registry into ``store``: manifest (an index resolved for
    ``platform``, default this machine), missing blobs streamed and verified, then the image
    recorded and tagged. Prints docker's lines. Raises ``ManifestUnknown``/``NameUnknown``,
    ``DigestInvalid`` (nothing is stored for a blob that does not verify), ``Unauthorized``,
    ``RegistryUnreachable``."""
    r = ref if isinstance(ref, Reference) else Reference.parse(ref)
    if r.registry_host is None:
        raise ImageSimError(f"{r} has no registry host: the built-in library serves it")
    rep = reporter or PlainReporter()
    registry, repo = r.registry_host, r.repository
    own = session is None
    sess = session or RegistrySession(registry, config)
    try:
        if not r.tag_given and r.digest is None:
            rep.status(None, "Using default tag: latest")
        _ = sess.base  # reach the registry first: a TLS or connection error comes alone
        rep.status(None, f"{r.digest or r.tag}: Pulling from {repo}")
        data, media_type, top = sess.get_manifest(repo, r.reference)
        manifest_bytes, manifest_digest = data, top
        if media_type in oci.INDEX_TYPES:
            desc = select_platform(data, platform)
            manifest_bytes, _, manifest_digest = sess.get_manifest(repo, str(desc.digest))
        m = oci.parse_manifest(manifest_bytes)
        before = None
        with contextlib.suppress(ImageSimError):
            if r.digest is None:
                before = store.resolve(r).digest
        outcome: dict[str, str] = {}
        with store.lease(f"pull {r}") as lease_id:
            todo = []
            for desc in m.layers:
                ident = desc.digest.short
                if desc.digest in store.blobs:
                    rep.status(ident, "Already exists")
                    outcome[str(desc.digest)] = "exists"
                else:
                    rep.status(ident, "Pulling fs layer")
                    todo.append(desc)
            new = [d.digest for d in todo]
            if m.config.digest not in store.blobs:
                new.append(m.config.digest)
            try:
                if m.config.digest not in store.blobs:
                    with store.blobs.writer(m.config.digest, m.config.size) as w:
                        sess.fetch_blob(repo, m.config.digest, m.config.size, w)
                for d in download_blobs(sess, repo, todo, store.blobs, rep):
                    rep.status(d.short, "Verifying Checksum")
                    rep.status(d.short, "Download complete")
                    outcome[str(d)] = "pulled"
                pulled = {d.digest for d in todo}

                def on_layer(i: int, diff_id: Digest, state: str) -> None:
                    desc = m.layers[i]
                    if desc.digest in pulled:
                        rep.status(desc.digest.short, "Pull complete")

                tags = [r] if r.digest is None else []
                image = store.add_image(manifest_bytes, tags=tags, on_layer=on_layer)
            except BaseException:
                # a failed pull (full disk, bad layer, dropped connection) takes back
                # what it downloaded
                with contextlib.suppress(Exception):
                    store.discard_unused(new, lease=lease_id)
                raise
        _remember_sources(store, registry, repo, [d.digest for d in m.layers])
        store.add_repo_digest(r, image.digest)
        up_to_date = before is not None and before == image.digest
        rep.status(None, f"Digest: {top}")
        if up_to_date:
            rep.status(None, f"Status: Image is up to date for {r}")
        else:
            rep.status(None, f"Status: Downloaded newer image for {r}")
        rep.status(None, r.full if r.digest is None else f"{r.name}@{r.digest}")
        return PullResult(top, manifest_digest, up_to_date, outcome)
    finally:
        rep.close()
        if own:
            sess.close()


def login(registry: str, username: str, password: str, *,
          config: ClientConfig | None = None) -> ClientConfig:
    """Check ``username``/``password`` against ``registry`` and store them in the config file
    (``auths``, as ``~/.docker/config.json``). Raises ``Unauthorized`` when refused."""
    cfg = config or ClientConfig.load()
    with RegistrySession(registry, cfg, credentials=Credentials(username, password)) as sess:
        sess.login()
    cfg.set_credentials(registry, username, password)
    cfg.save()
    return cfg


def logout(registry: str, *, config: ClientConfig | None = None) -> bool:
    """Forget the stored credentials for ``registry``; False if there were none."""
    cfg = config or ClientConfig.load()
    removed = cfg.remove_credentials(registry)
    if removed:
        cfg.save()
    return removed


__all__ = ["Challenge", "PlainReporter", "PullResult", "PushResult", "RegistrySession",
           "RegistryUnreachable", "Reporter", "RichReporter", "host_platform", "login",
           "logout", "parse_platform", "pull", "push", "reporter_for", "select_platform"]
