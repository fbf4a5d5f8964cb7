"""An OCI distribution (v1.1) / Docker Registry HTTP API v2 server: a starlette app over
``RegistryStorage``, served by uvicorn.

Endpoints (``NAME`` may contain ``/``; ``REF`` is a tag or a digest)::

    GET    /v2/                                   API version check (auth probe)
    GET    /v2/_catalog?n=&last=                  repositories, paginated with Link
    GET    /v2/NAME/tags/list?n=&last=            tags, paginated with Link
    GET    /v2/NAME/manifests/REF  (HEAD, PUT, DELETE)
    GET    /v2/NAME/blobs/DIGEST   (HEAD, DELETE; Range on GET)
    POST   /v2/NAME/blobs/uploads/[?digest=|?mount=&from=]
    GET    /v2/NAME/blobs/uploads/UUID            upload status (Range)
    PATCH  /v2/NAME/blobs/uploads/UUID            chunk (Content-Range optional)
    PUT    /v2/NAME/blobs/uploads/UUID?digest=    finish (optional last chunk)
    DELETE /v2/NAME/blobs/uploads/UUID            cancel
    GET    /v2/NAME/referrers/DIGEST?artifactType=
    GET    /token  (and POST)                     token endpoint for ``auth="token"``

Running it:

* ``serve(addr, root, htpasswd=None, auth="none")`` blocks serving (the CLI's ``registry
  serve``); with ``tls_cert``/``tls_key`` (PEM files, docker's ``http.tls.certificate`` and
  ``http.tls.key``) it serves HTTPS.
* ``ServerThread(root, ...)`` runs it in a thread on 127.0.0.1 with a free port (tests, tour).
* ``start_background(addr, root, ...) -> pid`` starts ``imagesim registry serve`` as a detached
  process and returns its pid once the port answers; ``stop_background(pid)`` stops it. These
  are what ``imagesim run -d -p 5000:5000 -v DIR:/tmp/registry registry`` calls.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import os
import re
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
import urllib.parse
from collections.abc import AsyncIterator, Callable
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from ..digest import Digest
from ..errors import (
    BlobUploadInvalid,
    DigestInvalid,
    ImageSimError,
    ManifestInvalid,
    ManifestUnknown,
    RangeInvalid,
    Unauthorized,
    Unsupported,
)
from .auth import SERVICE, Access, Htpasswd, TokenIssuer, basic_credentials, granted, parse_scopes
from .storage import (
    DEFAULT_PURGE_INTERVAL,
    DEFAULT_UPLOAD_EXPIRY,
    DOCKER_LIST,
    DOCKER_MANIFEST,
    IMAGE_TYPES,
    INDEX_TYPES,
    MANIFEST_MAX,
    OCI_INDEX,
    OCI_MANIFEST,
    RegistryStorage,
    check_name,
    parse_duration,
    parse_manifest,
)

API_VERSION = ("Docker-Distribution-API-Version", "registry/2.0")
READ_CHUNK = 1 << 20
WRITE_BATCH = 1 << 20
AUTH_MODES = ("none", "basic", "token")


class PaginationInvalid(ImageSimError):
    code = "PAGINATION_NUMBER_INVALID"
    status = 400


class NotFound(ImageSimError):
    code = "NOT_FOUND"
    status = 404


def _error_response(err: ImageSimError, headers: dict[str, str] | None = None) -> Response:
    if headers:
        headers = {k: v for k, v in headers.items() if k.lower() != "content-length"}
    return JSONResponse({"errors": [err.to_json()]}, status_code=err.status, headers=headers)


# -- routing -----------------------------------------------------------------------------------

_ROUTES: list[tuple[re.Pattern[str], str]] = [
    (re.compile(r"^(?P<name>.+)/blobs/uploads/?$"), "uploads"),
    (re.compile(r"^(?P<name>.+)/blobs/uploads/(?P<uuid>[^/]+)$"), "upload"),
    (re.compile(r"^(?P<name>.+)/blobs/(?P<digest>[^/]+)$"), "blob"),
    (re.compile(r"^(?P<name>.+)/manifests/(?P<reference>[^/]+)$"), "manifest"),
    (re.compile(r"^(?P<name>.+)/tags/list$"), "tags"),
    (re.compile(r"^(?P<name>.+)/referrers/(?P<digest>[^/]+)$"), "referrers"),
]


def _accepted(request: Request) -> set[str] | None:
    """Media types from every ``Accept`` header line (each may list several); None means
    anything (no header, or a wildcard)."""
    values = request.headers.getlist("accept")
    types = set()
    for value in values:
        for part in value.split(","):
            mt = part.split(";")[0].strip().lower()
            if mt:
                types.add(mt)
    if not types or types & {"*/*", "application/*", "application/json"}:
        return None
    return types


def _page(items: list[str], request: Request, path: str) -> tuple[list[str], str | None]:
    """Apply ``n``/``last`` to a sorted list; return the page and the Link header if more."""
    last = request.query_params.get("last")
    if last:
        items = [x for x in items if x > last]
    n_text = request.query_params.get("n")
    if n_text is None or n_text == "":
        return items, None
    try:
        n = int(n_text)
        if n < 0:
            raise ValueError
    except ValueError:
        raise PaginationInvalid(f"invalid number of results requested: {n_text!r}") from None
    page = items[:n]
    if len(items) > n and page:
        query = urllib.parse.urlencode({"last": page[-1], "n": n})
        return page, f'<{path}?{query}>; rel="next"'
    return page, None


def _content_range(text: str) -> tuple[int, int]:
    """``start-end`` (inclusive) from ``0-1023``, ``bytes=0-1023`` or ``bytes 0-1023/*``."""
    t = text.strip()
    for prefix in ("bytes=", "bytes "):
        if t.startswith(prefix):
            t = t[len(prefix):]
    t = t.split("/")[0]
    m = re.fullmatch(r"(\d+)-(\d+)", t)
    if not m or int(m.group(2)) < int(m.group(1)):
        raise RangeInvalid(f"invalid Content-Range {text!r}")
    return int(m.group(1)), int(m.group(2))


def _write_all(writer: Any, chunks: list[bytes]) -> None:
    for chunk in chunks:
        writer.write(chunk)


class _ReadFile:
    """An async iterator over part of a file in 1 MiB reads, closed at the end."""

    def __init__(self, path: str, start: int, length: int) -> None:
        self.path, self.start, self.length = path, start, length

    async def __aiter__(self) -> AsyncIterator[bytes]:  # type: ignore[misc]
        with open(self.path, "rb") as f:
            f.seek(self.start)
            left = self.length
            while left > 0:
                chunk = f.read(min(READ_CHUNK, left))
                if not chunk:
                    break
                left -= len(chunk)
                yield chunk


# -- the app -----------------------------------------------------------------------------------

class Registry:
    """Request handlers bound to one storage and one auth policy."""

    def __init__(self, storage: RegistryStorage, *, auth: str = "none",
                 htpasswd: Htpasswd | None = None, anonymous_pull: bool = False,
                 token_key: bytes | None = None,
                 upload_purge_interval: float | None = DEFAULT_PURGE_INTERVAL) -> None:
        if auth not in AUTH_MODES:
            raise ValueError(f"auth must be one of {AUTH_MODES}, not {auth!r}")
        if auth != "none" and htpasswd is None:
            raise ValueError(f"auth={auth!r} needs an htpasswd file")
        self.storage = storage
        self.auth = auth
        self.htpasswd = htpasswd
        self.anonymous_pull = anonymous_pull
        self.tokens = TokenIssuer(token_key)
        self._locks: dict[str, asyncio.Lock] = {}
        #: seconds between two purges of expired upload sessions (None: never); the first
        #: purge runs now, at startup
        self.upload_purge_interval = upload_purge_interval
        if upload_purge_interval is not None and storage.purge_due(upload_purge_interval):
            storage.purge_uploads()

    # auth
    def _challenge(self, request: Request, needed: list[Access], error: str | None) -> str:
        if self.auth == "basic":
            return f'Basic realm="{SERVICE}"'
        realm = str(request.base_url).rstrip("/") + "/token"
        parts = [f'realm="{realm}"', f'service="{SERVICE}"']
        if needed:
            parts.append('scope="' + " ".join(str(a) for a in needed) + '"')
        if error:
            parts.append(f'error="{error}"')
        return "Bearer " + ",".join(parts)

    def authorize(self, request: Request, needed: list[Access]) -> None:
        """Raise ``Unauthorized`` (rendered with a challenge) unless the request may do
        ``needed``. Basic: valid htpasswd credentials allow everything. Token: a valid token
        whose access covers every item of ``needed``."""
        if self.auth == "none":
            return
        header = request.headers.get("authorization")
        error = None
        if self.auth == "basic":
            creds = basic_credentials(header)
            assert self.htpasswd is not None
            if creds is not None and self.htpasswd.verify(*creds):
                return
        else:
            scheme, _, token = (header or "").partition(" ")
            if scheme.lower() == "bearer" and token:
                try:
                    have = self.tokens.verify(token.strip())
                except Unauthorized:
                    error = "invalid_token"
                else:
                    if all(any(h.allows(n) for h in have) for n in needed):
                        return
                    error = "insufficient_scope"
        err = Unauthorized("authentication required", detail=[
            {"Type": a.type, "Name": a.name, "Action": act}
            for a in needed for act in sorted(a.actions)] or None)
        err.challenge = self._challenge(request, needed, error)  # type: ignore[attr-defined]
        raise err

    async def token(self, request: Request) -> Response:
        """The token endpoint (docker's token spec; GET with Basic, or OAuth2 POST form)."""
        if self.auth != "token":
            raise NotFound("no token endpoint: the server does not use token auth")
        if request.method == "POST":
            # OAuth2 password grant (application/x-www-form-urlencoded), parsed here so no
            # multipart dependency is needed
            body = await request.body()
            if len(body) > 65536:
                return JSONResponse({"error": "invalid_request"}, status_code=400)
            form = urllib.parse.parse_qs(body.decode("utf-8", "replace"))
            if form.get("grant_type", [""])[0] != "password":
                return JSONResponse({"error": "unsupported_grant_type"}, status_code=400)
            creds = (form.get("username", [""])[0], form.get("password", [""])[0])
            scopes = parse_scopes(form.get("scope", []))
        else:
            creds = basic_credentials(request.headers.get("authorization"))
            scopes = parse_scopes(request.query_params.getlist("scope"))
        user = None
        if creds is not None:
            assert self.htpasswd is not None
            if not self.htpasswd.verify(*creds):
                return _error_response(Unauthorized("invalid username or password"),
                                       {"WWW-Authenticate": f'Basic realm="{SERVICE}"'})
            user = creds[0]
        access = granted(scopes, user, anonymous_pull=self.anonymous_pull)
        token, expires, issued = self.tokens.issue(user or "", access)
        issued_at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(issued))
        return JSONResponse({"token": token, "access_token": token, "expires_in": expires,
                             "issued_at": issued_at,
                             "scope": " ".join(str(a) for a in access)})

    # base endpoints
    async def base(self, request: Request) -> Response:
        self.authorize(request, [])
        return JSONResponse({})

    async def catalog(self, request: Request) -> Response:
        self.authorize(request, [Access("registry", "catalog", frozenset({"*"}))])
        repos, link = _page(self.storage.repositories(), request, "/v2/_catalog")
        return JSONResponse({"repositories": repos}, headers={"Link": link} if link else None)

    async def dispatch(self, request: Request) -> Response:
        path = request.path_params["path"]
        for pattern, route in _ROUTES:
            m = pattern.match(path)
            if m:
                kind = route
                break
        else:
            raise NotFound(f"no such endpoint: /v2/{path}")
        params = m.groupdict()
        name = check_name(params.pop("name"))
        handler: Callable[..., Any] | None = getattr(
            self, f"{kind}_{request.method.lower()}", None)
        if handler is None:
            raise Unsupported(f"{request.method} is not supported on /v2/{path}")
        await self._purge_uploads_if_due()
        return await handler(request, name, **params)

    def _pull(self, name: str) -> list[Access]:
        return [Access("repository", name, frozenset({"pull"}))]

    def _push(self, name: str) -> list[Access]:
        return [Access("repository", name, frozenset({"pull", "push"}))]

    def _delete(self, name: str) -> list[Access]:
        return [Access("repository", name, frozenset({"delete"}))]

    # tags and referrers
    async def tags_get(self, request: Request, name: str) -> Response:
        self.authorize(request, self._pull(name))
        tags, link = _page(self.storage.tags(name), request, f"/v2/{name}/tags/list")
        return JSONResponse({"name": name, "tags": tags},
                            headers={"Link": link} if link else None)

    async def referrers_get(self, request: Request, name: str, digest: str) -> Response:
        self.authorize(request, self._pull(name))
        subject = Digest.parse(digest)
        artifact_type = request.query_params.get("artifactType")
        found = self.storage.referrers(name, subject, artifact_type)
        headers = {"OCI-Filters-Applied": "artifactType"} if artifact_type else {}
        body = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": found})
        return Response(body, media_type=OCI_INDEX, headers=headers)

    # manifests
    def _choose(self, request: Request, name: str, reference: str
                ) -> tuple[Digest, str, int]:
        """The manifest to answer with, honouring every Accept line: the stored one when its
        type is accepted; for an index the client cannot take, its linux/amd64 image manifest
        (docker/distribution's fallback); otherwise ``ManifestUnknown``."""
        digest, media_type, size = self.storage.manifest_info(name, reference)
        accepted = _accepted(request)
        if accepted is None or media_type in accepted:
            return digest, media_type, size
        if media_type in INDEX_TYPES and accepted & IMAGE_TYPES:
            index = parse_manifest(self.storage.blobs.get(digest), media_type)
            for desc in index.manifests:
                plat = desc.platform or {}
                if (desc.media_type in accepted and plat.get("os") == "linux"
                        and plat.get("architecture") == "amd64"):
                    return self.storage.manifest_info(name, str(desc.digest))
        raise ManifestUnknown(f"manifest {name}:{reference} is {media_type}, which the "
                              f"request's Accept header does not allow",
                              detail={"mediaType": media_type, "accept": sorted(accepted)})

    def _manifest_headers(self, digest: Digest, media_type: str, size: int) -> dict[str, str]:
        return {"Docker-Content-Digest": str(digest), "Content-Type": media_type,
                "Content-Length": str(size), "ETag": f'"{digest}"'}

    async def manifest_get(self, request: Request, name: str, reference: str) -> Response:
        self.authorize(request, self._pull(name))
        digest, media_type, _ = self._choose(request, name, reference)
        data = self.storage.blobs.get(digest)
        return Response(data, headers=self._manifest_headers(digest, media_type, len(data)))

    async def manifest_head(self, request: Request, name: str, reference: str) -> Response:
        self.authorize(request, self._pull(name))
        digest, media_type, size = self._choose(request, name, reference)
        return Response(b"", headers=self._manifest_headers(digest, media_type, size))

    async def manifest_put(self, request: Request, name: str, reference: str) -> Response:
        self.authorize(request, self._push(name))
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > MANIFEST_MAX:
            err = parse_error_413()
            return _error_response(err)
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > MANIFEST_MAX:
                return _error_response(parse_error_413())
        digest, parsed = await asyncio.to_thread(
            self.storage.put_manifest, name, reference, bytes(body),
            request.headers.get("content-type"))
        headers = {"Location": self._url(request, f"/v2/{name}/manifests/{digest}"),
                   "Docker-Content-Digest": str(digest)}
        if parsed.subject is not None:
            headers["OCI-Subject"] = str(parsed.subject.digest)
        return Response(status_code=201, headers=headers)

    async def manifest_delete(self, request: Request, name: str, reference: str) -> Response:
        self.authorize(request, self._delete(name))
        self.storage.delete_manifest(name, reference)
        return Response(status_code=202)

    # blobs
    def _blob(self, name: str, digest: str) -> tuple[Digest, int]:
        d = Digest.parse(digest)
        return d, self.storage.blob_size(name, d)

    async def blob_head(self, request: Request, name: str, digest: str) -> Response:
        self.authorize(request, self._pull(name))
        d, size = self._blob(name, digest)
        return Response(b"", headers={"Content-Length": str(size),
                                      "Docker-Content-Digest": str(d),
                                      "Content-Type": "application/octet-stream",
                                      "Accept-Ranges": "bytes", "ETag": f'"{d}"'})

    async def blob_get(self, request: Request, name: str, digest: str) -> Response:
        self.authorize(request, self._pull(name))
        d, size = self._blob(name, digest)
        headers = {"Docker-Content-Digest": str(d), "Accept-Ranges": "bytes",
                   "ETag": f'"{d}"', "Cache-Control": "max-age=31536000"}
        start, length, status = 0, size, 200
        rng = request.headers.get("range")
        if rng:
            m = re.fullmatch(r"\s*bytes=(\d*)-(\d*)\s*", rng)
            if not m or (not m.group(1) and not m.group(2)):
                return _error_response(RangeInvalid(f"unsupported Range {rng!r}"),
                                       {"Content-Range": f"bytes */{size}"})
            if m.group(1):
                start = int(m.group(1))
                end = int(m.group(2)) if m.group(2) else size - 1
            else:  # suffix form: the last N bytes
                start = max(0, size - int(m.group(2)))
                end = size - 1
            end = min(end, size - 1)
            if start >= size or end < start:
                return _error_response(RangeInvalid(f"Range {rng!r} is outside the blob"),
                                       {"Content-Range": f"bytes */{size}"})
            length, status = end - start + 1, 206
            headers["Content-Range"] = f"bytes {start}-{end}/{size}"
        headers["Content-Length"] = str(length)
        return StreamingResponse(_ReadFile(self.storage.blobs.path(d), start, length),
                                 status_code=status, headers=headers,
                                 media_type="application/octet-stream")

    async def blob_delete(self, request: Request, name: str, digest: str) -> Response:
        self.authorize(request, self._delete(name))
        self.storage.unlink_blob(name, Digest.parse(digest))
        return Response(status_code=202)

    # uploads
    async def _purge_uploads_if_due(self) -> None:
        """Purge expired upload sessions when ``upload_purge_interval`` has passed since the
        last purge: the periodic part of upload purging, run by the request that finds it
        due (an idle server has nobody to serve an expired session to; each session is also
        checked for expiry whenever it is used)."""
        interval = self.upload_purge_interval
        if interval is None or not self.storage.purge_due(interval):
            return
        for upload_id in await asyncio.to_thread(self.storage.purge_uploads):
            self._locks.pop(upload_id, None)

    def _url(self, request: Request, path: str) -> str:
        return str(request.base_url).rstrip("/") + path

    def _upload_headers(self, request: Request, name: str, upload_id: str,
                        offset: int) -> dict[str, str]:
        return {"Location": self._url(request, f"/v2/{name}/blobs/uploads/{upload_id}"),
                "Range": f"0-{max(offset - 1, 0)}", "Docker-Upload-UUID": upload_id,
                "Content-Length": "0"}

    def _created(self, request: Request, name: str, digest: Digest) -> Response:
        return Response(status_code=201, headers={
            "Location": self._url(request, f"/v2/{name}/blobs/{digest}"),
            "Docker-Content-Digest": str(digest), "Content-Length": "0"})

    async def _receive(self, request: Request, upload: Any, start: int | None) -> int:
        """Stream the request body into the session. A body shorter than its Content-Length
        (dropped connection) or a failed write rolls the chunk back and raises."""
        declared = request.headers.get("content-length")
        want = int(declared) if declared and declared.isdigit() else None
        lock = self._locks.setdefault(upload.id, asyncio.Lock())
        async with lock:
            with upload.appender(start) as w:
                # hashing and writing (which release the GIL) run on a worker thread, one
                # ~1 MiB batch behind the receiving loop: both cores work, memory stays small
                pending: asyncio.Future | None = None
                batch: list[bytes] = []
                batch_bytes = 0
                try:
                    async for chunk in request.stream():
                        if not chunk:
                            continue
                        batch.append(chunk)
                        batch_bytes += len(chunk)
                        if batch_bytes >= WRITE_BATCH:
                            if pending is not None:
                                await pending
                            pending = asyncio.ensure_future(
                                asyncio.to_thread(_write_all, w, batch))
                            batch, batch_bytes = [], 0
                    if pending is not None:
                        await pending
                        pending = None
                    _write_all(w, batch)
                except ClientDisconnect:
                    raise BlobUploadInvalid("client disconnected mid-upload") from None
                finally:
                    if pending is not None:
                        # the worker must be done before the appender rolls the chunk back
                        with contextlib.suppress(Exception):
                            await pending
                if want is not None and w.written != want:
                    raise BlobUploadInvalid(f"body has {w.written} bytes, Content-Length "
                                            f"said {want}")
                return w.start + w.written

    async def uploads_post(self, request: Request, name: str) -> Response:
        q = request.query_params
        mount = q.get("mount")
        if mount:
            source = q.get("from")
            needed = self._push(name)
            if source:
                check_name(source)
                needed = needed + self._pull(source)
            self.authorize(request, needed)
            d = Digest.parse(mount)
            if self.storage.mount_blob(name, d, source):
                return self._created(request, name, d)
        else:
            self.authorize(request, self._push(name))
        upload = self.storage.start_upload(name)
        digest = q.get("digest")
        if digest:
            try:
                d = Digest.parse(digest)
                await self._receive(request, upload, 0)
                await asyncio.to_thread(upload.commit, d)
            except BaseException:
                upload.cancel()
                raise
            return self._created(request, name, d)
        return Response(status_code=202, headers=self._upload_headers(request, name,
                                                                      upload.id, 0))

    async def upload_get(self, request: Request, name: str, uuid: str) -> Response:
        self.authorize(request, self._push(name))
        upload = self.storage.upload(name, uuid)
        return Response(status_code=204, headers=self._upload_headers(request, name, uuid,
                                                                      upload.offset))

    async def upload_patch(self, request: Request, name: str, uuid: str) -> Response:
        self.authorize(request, self._push(name))
        upload = self.storage.upload(name, uuid)
        start = None
        cr = request.headers.get("content-range")
        if cr:
            try:
                start, end = _content_range(cr)
                declared = request.headers.get("content-length")
                if declared and declared.isdigit() and int(declared) != end - start + 1:
                    raise RangeInvalid(f"Content-Range {cr} does not match Content-Length "
                                       f"{declared}")
                offset = await self._receive(request, upload, start)
            except RangeInvalid as e:
                return _error_response(_upload_range_error(e),
                                       self._upload_headers(request, name, uuid, upload.offset))
        else:
            offset = await self._receive(request, upload, None)
        return Response(status_code=202, headers=self._upload_headers(request, name, uuid,
                                                                      offset))

    async def upload_put(self, request: Request, name: str, uuid: str) -> Response:
        self.authorize(request, self._push(name))
        upload = self.storage.upload(name, uuid)
        digest = request.query_params.get("digest")
        if not digest:
            raise DigestInvalid("the digest query parameter is required to finish an upload")
        d = Digest.parse(digest)
        cr = request.headers.get("content-range")
        start = _content_range(cr)[0] if cr else None
        try:
            await self._receive(request, upload, start)
        except RangeInvalid as e:
            return _error_response(_upload_range_error(e),
                                   self._upload_headers(request, name, uuid, upload.offset))
        lock = self._locks.setdefault(upload.id, asyncio.Lock())
        async with lock:
            await asyncio.to_thread(upload.commit, d)
        self._locks.pop(upload.id, None)
        return self._created(request, name, d)

    async def upload_delete(self, request: Request, name: str, uuid: str) -> Response:
        self.authorize(request, self._push(name))
        self.storage.upload(name, uuid).cancel()
        self._locks.pop(uuid, None)
        return Response(status_code=204)


def _upload_range_error(err: RangeInvalid) -> ImageSimError:
    """A chunk out of order: 416, with the spec's ``BLOB_UPLOAD_INVALID`` code (the spec's
    code table has no range code; docker/distribution answers the same way)."""
    out = BlobUploadInvalid(err.message, detail=err.detail)
    out.status = 416  # type: ignore[misc]
    return out


def parse_error_413() -> ImageSimError:
    err = ManifestInvalid(f"manifest is over the {MANIFEST_MAX}-byte limit")
    err.status = 413  # type: ignore[misc]
    return err


class _ApiVersionMiddleware:
    """Adds ``Docker-Distribution-API-Version`` to every response (clients probe for it)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_header(message: Any) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers.append((API_VERSION[0].lower().encode(), API_VERSION[1].encode()))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_header)


_PURGING_ENV = "REGISTRY_STORAGE_MAINTENANCE_UPLOADPURGING_"


def upload_purging(expiry: float | None = None, interval: float | None = None
                   ) -> tuple[float | None, float | None]:
    """(expiry, interval) in seconds for upload purging: the values given, else the reference
    registry's environment overrides (``REGISTRY_STORAGE_MAINTENANCE_UPLOADPURGING_AGE``,
    ``_INTERVAL`` as Go durations, ``_ENABLED=false`` turns purging off: ``(None, None)``),
    else 24h and 1h. Raises ``ValueError`` for a malformed or non-positive value."""
    env = os.environ
    if expiry is None and interval is None and \
            env.get(_PURGING_ENV + "ENABLED", "").strip().lower() == "false":
        return None, None
    if expiry is None:
        raw = env.get(_PURGING_ENV + "AGE")
        expiry = parse_duration(raw) if raw else DEFAULT_UPLOAD_EXPIRY
    if interval is None:
        raw = env.get(_PURGING_ENV + "INTERVAL")
        interval = parse_duration(raw) if raw else DEFAULT_PURGE_INTERVAL
    if not expiry > 0 or not interval > 0:
        raise ValueError("upload expiry and purge interval must be positive")
    return expiry, interval


def create_app(root: str | os.PathLike, *, htpasswd: str | os.PathLike | None = None,
               auth: str | None = None, anonymous_pull: bool = False, fsync: bool = True,
               token_key: bytes | None = None, upload_expiry: float | None = None,
               upload_purge_interval: float | None = None) -> Any:
    """The ASGI app serving the registry stored at ``root``. ``auth`` is ``"none"``,
    ``"basic"`` or ``"token"`` (default: ``"basic"`` when ``htpasswd`` is given, else
    ``"none"``). Raises ``ValueError`` for an auth mode without an htpasswd file, and
    ``FileNotFoundError`` for a missing htpasswd file."""
    if auth is None:
        auth = "basic" if htpasswd is not None else "none"
    users = Htpasswd(htpasswd) if htpasswd is not None else None
    expiry, interval = upload_purging(upload_expiry, upload_purge_interval)
    reg = Registry(RegistryStorage(root, fsync=fsync, upload_expiry=expiry), auth=auth,
                   htpasswd=users, anonymous_pull=anonymous_pull, token_key=token_key,
                   upload_purge_interval=interval)

    async def on_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, ImageSimError)
        headers = {}
        challenge = getattr(exc, "challenge", None)
        if challenge:
            headers["WWW-Authenticate"] = challenge
        return _error_response(exc, headers)

    async def on_os_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, OSError)
        return _error_response(ImageSimError(f"storage error: {exc.strerror or exc}"))

    async def v2_redirect(request: Request) -> Response:
        return Response(status_code=301, headers={"Location": "/v2/"})

    all_methods = ["GET", "HEAD", "PUT", "POST", "PATCH", "DELETE"]
    app = Starlette(routes=[
        Route("/v2", v2_redirect, methods=["GET", "HEAD"]),
        Route("/v2/", reg.base, methods=["GET", "HEAD"]),
        Route("/v2/_catalog", reg.catalog, methods=["GET"]),
        Route("/v2/{path:path}", reg.dispatch, methods=all_methods),
        Route("/token", reg.token, methods=["GET", "POST"]),
    ], exception_handlers={ImageSimError: on_error, OSError: on_os_error})
    app.state.registry = reg
    return _ApiVersionMiddleware(app)


# -- serving -----------------------------------------------------------------------------------

def parse_addr(addr: str) -> tuple[str, int]:
    """``HOST:PORT``, ``:PORT`` or ``PORT`` -> (host, port); the host defaults to 127.0.0.1.
    Raises ``ValueError`` for anything else."""
    host, sep, port = addr.rpartition(":")
    if not sep:
        host, port = "", addr
    host = host.strip("[]") or "127.0.0.1"
    if not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"invalid address {addr!r} (want HOST:PORT)")
    return host, int(port)


def _config(app: Any, host: str, port: int | None = None, *, access_log: bool = False,
            tls_cert: str | os.PathLike | None = None,
            tls_key: str | os.PathLike | None = None) -> uvicorn.Config:
    # TLS as docker's registry does it (http.tls.certificate / http.tls.key): a PEM
    # certificate chain and its key; uvicorn wraps the listening socket
    return uvicorn.Config(app, host=host, port=port or 0,
                          log_level="info" if access_log else "warning",
                          access_log=access_log, timeout_keep_alive=30, lifespan="off",
                          server_header=False,
                          ssl_certfile=os.fspath(tls_cert) if tls_cert else None,
                          ssl_keyfile=os.fspath(tls_key) if tls_key else None)


def check_tls_files(tls_cert: str | os.PathLike | None,
                    tls_key: str | os.PathLike | None) -> None:
    """Load the certificate and key once, so a bad pair is a clear error before the port is
    bound. Raises ``ValueError`` when only one is given or they do not load (not PEM, or the
    key does not match the certificate), ``OSError`` when a file cannot be read."""
    if tls_cert is None and tls_key is None:
        return
    if tls_cert is None or tls_key is None:
        raise ValueError("TLS needs both a certificate and its key")
    for path in (tls_cert, tls_key):
        with open(path, "rb"):
            pass  # ENOENT/EACCES as an OSError naming the file
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)

    def no_password() -> bytes:
        # never OpenSSL's prompt on the terminal (a background server has none)
        raise ValueError(f"the TLS key {os.fspath(tls_key)} is encrypted: give an "
                         f"unencrypted key (docker's registry needs one too)")

    try:
        ctx.load_cert_chain(os.fspath(tls_cert), os.fspath(tls_key), password=no_password)
    except ssl.SSLError as e:
        raise ValueError(f"cannot use TLS certificate {os.fspath(tls_cert)} with key "
                         f"{os.fspath(tls_key)}: {e.reason or e}") from None


def serve(addr: str, root: str | os.PathLike, htpasswd: str | os.PathLike | None = None,
          auth: str | None = None, *, anonymous_pull: bool = False,
          access_log: bool = False, tls_cert: str | os.PathLike | None = None,
          tls_key: str | os.PathLike | None = None, upload_expiry: float | None = None,
          upload_purge_interval: float | None = None) -> None:
    """Serve the registry at ``root`` on ``addr`` until SIGINT/SIGTERM (blocks), logging one
    line per request to stderr when ``access_log`` (what ``docker logs registry`` shows); over
    HTTPS when ``tls_cert``/``tls_key`` (PEM) are given. Upload sessions idle for
    ``upload_expiry`` seconds expire, and are purged at startup and every
    ``upload_purge_interval`` seconds (see ``upload_purging`` for the defaults). Raises
    ``ValueError`` for a bad address, auth mode, TLS pair or purging setting, ``OSError``
    (EADDRINUSE, ENOENT...) if the port cannot be bound or a file cannot be read."""
    host, port = parse_addr(addr)
    check_tls_files(tls_cert, tls_key)
    app = create_app(root, htpasswd=htpasswd, auth=auth, anonymous_pull=anonymous_pull,
                     upload_expiry=upload_expiry, upload_purge_interval=upload_purge_interval)
    # bind first so a busy port is a clear OSError rather than a uvicorn log line and exit
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    sock.listen(128)
    server = uvicorn.Server(_config(app, host, port, access_log=access_log,
                                    tls_cert=tls_cert, tls_key=tls_key))
    server.run(sockets=[sock])


class ServerThread:
    """The registry served by uvicorn in a background thread on 127.0.0.1 (port 0 picks a free
    port). ``url`` and ``host`` (``127.0.0.1:PORT``) are set once it accepts connections;
    ``url`` is ``https://`` when ``tls_cert``/``tls_key`` are given.
    Use as a context manager, or ``start()``/``stop()``."""

    def __init__(self, root: str | os.PathLike, *, htpasswd: str | os.PathLike | None = None,
                 auth: str | None = None, port: int = 0, anonymous_pull: bool = False,
                 fsync: bool = True, tls_cert: str | os.PathLike | None = None,
                 tls_key: str | os.PathLike | None = None, upload_expiry: float | None = None,
                 upload_purge_interval: float | None = None) -> None:
        check_tls_files(tls_cert, tls_key)
        self.app = create_app(root, htpasswd=htpasswd, auth=auth,
                              anonymous_pull=anonymous_pull, fsync=fsync,
                              upload_expiry=upload_expiry,
                              upload_purge_interval=upload_purge_interval)
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", port))
        self._sock.listen(128)
        self.port = self._sock.getsockname()[1]
        self.host = f"127.0.0.1:{self.port}"
        self.url = f"{'https' if tls_cert else 'http'}://{self.host}"
        self._server = uvicorn.Server(_config(self.app, "127.0.0.1", self.port,
                                              tls_cert=tls_cert, tls_key=tls_key))
        self._server.install_signal_handlers = lambda: None  # type: ignore[method-assign]
        self._thread = threading.Thread(target=self._server.run,
                                        kwargs={"sockets": [self._sock]}, daemon=True)

    def start(self) -> ServerThread:
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("registry server did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)
        self._sock.close()

    def __enter__(self) -> ServerThread:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


# -- a detached server process (for `imagesim run -d ... registry`) -----------------------------

_children: dict[int, subprocess.Popen] = {}


def _answers(host: str, port: int, *, tls: bool = False) -> bool:
    """True once something on host:port answers an HTTP request to /v2/ (any status); over
    TLS without verification when ``tls`` (only "is it up" is asked)."""
    try:
        with socket.create_connection((host, port), timeout=0.5) as raw:
            s = raw
            if tls:
                ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
                ctx.check_hostname = False
                ctx.verify_mode = ssl.CERT_NONE
                s = ctx.wrap_socket(raw, server_hostname=host)
            s.sendall(b"GET /v2/ HTTP/1.1\r\nHost: " + host.encode() + b"\r\n"
                      b"Connection: close\r\n\r\n")
            return s.recv(12).startswith(b"HTTP/1.")
    except OSError:  # ssl.SSLError included
        return False


def start_background(addr: str, root: str | os.PathLike, *,
                     htpasswd: str | os.PathLike | None = None, auth: str | None = None,
                     log_path: str | os.PathLike | None = None,
                     timeout: float = 20.0, tls_cert: str | os.PathLike | None = None,
                     tls_key: str | os.PathLike | None = None) -> int:
    """Start ``imagesim registry serve --addr ADDR --root ROOT`` as a detached process (its own
    session, stdin from /dev/null, output to ``log_path`` or discarded) and return its pid once
    ``http://ADDR/v2/`` answers (``https://`` with ``tls_cert``/``tls_key``, docker's
    ``REGISTRY_HTTP_TLS_CERTIFICATE``/``REGISTRY_HTTP_TLS_KEY``). ``root`` is created if
    missing; a bad TLS pair is a ``ValueError`` before anything starts.

    Raises ``OSError(EADDRINUSE)`` if something already answers on the port, and
    ``OSError(ETIMEDOUT)`` / ``ChildProcessError`` (with the log's last lines) if the server
    does not come up or exits first. Stop it with ``stop_background(pid)``."""
    host, port = parse_addr(addr)
    check_tls_files(tls_cert, tls_key)
    tls = tls_cert is not None
    if _answers(host, port) or _answers(host, port, tls=True):
        raise OSError(errno.EADDRINUSE, f"something already listens on {host}:{port}")
    os.makedirs(root, exist_ok=True)
    cmd = [sys.executable, "-m", "imagesim", "registry", "serve", "--addr",
           f"{host}:{port}", "--root", os.fspath(root)]
    if htpasswd is not None:
        cmd += ["--htpasswd", os.fspath(htpasswd)]
    if auth is not None:
        cmd += ["--auth", auth]
    if tls:
        cmd += ["--tls-cert", os.fspath(tls_cert), "--tls-key", os.fspath(tls_key)]  # type: ignore[arg-type]
    log = open(log_path, "ab") if log_path is not None else subprocess.DEVNULL  # noqa: SIM115
    env = dict(os.environ)
    pkg_parent = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env["PYTHONPATH"] = pkg_parent + (os.pathsep + env["PYTHONPATH"]
                                      if env.get("PYTHONPATH") else "")
    try:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                start_new_session=True, env=env, close_fds=True)
    finally:
        if log is not subprocess.DEVNULL:
            log.close()
    _children[proc.pid] = proc
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            _children.pop(proc.pid, None)
            tail = ""
            if log_path is not None:
                with open(log_path, "rb") as f:
                    tail = f.read()[-2000:].decode(errors="replace")
            raise ChildProcessError(f"registry server exited with status {proc.returncode}"
                                    + (f":\n{tail}" if tail else ""))
        if _answers(host, port, tls=tls):
            return proc.pid
        if time.monotonic() > deadline:
            stop_background(proc.pid)
            raise OSError(errno.ETIMEDOUT, f"registry server did not answer on {host}:{port} "
                                           f"within {timeout:.0f}s")
        time.sleep(0.05)


def _alive(pid: int) -> bool:
    proc = _children.get(pid)
    if proc is not None:
        return proc.poll() is None
    with contextlib.suppress(ChildProcessError):
        if os.waitpid(pid, os.WNOHANG)[0] == pid:
            return False  # a zombie child of ours, now reaped
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _is_registry(pid: int) -> bool:
    """True if ``pid`` runs ``imagesim registry serve`` (so a recycled pid is never signalled).
    Where /proc is unavailable, trust the caller."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            argv = f.read().split(b"\0")
    except FileNotFoundError:
        return not os.path.isdir("/proc/self")
    except OSError:
        return True
    return b"registry" in argv and b"serve" in argv


def stop_background(pid: int, timeout: float = 10.0) -> bool:
    """Stop a server started by ``start_background``: SIGTERM (uvicorn finishes in-flight
    requests and exits), SIGKILL after ``timeout`` seconds. Returns False if it was not
    running (or the pid now belongs to some other program, which is left alone). Works from
    another process too (the pid is all it needs)."""
    if not _alive(pid) or not _is_registry(pid):
        _children.pop(pid, None)
        return False
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while _alive(pid):
        if time.monotonic() > deadline:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            deadline = time.monotonic() + 5
        time.sleep(0.05)
    proc = _children.pop(pid, None)
    if proc is not None:
        proc.wait()
    return True


__all__ = ["AUTH_MODES", "DOCKER_LIST", "DOCKER_MANIFEST", "OCI_MANIFEST", "Registry",
           "ServerThread", "create_app", "parse_addr", "serve", "start_background",
           "stop_background"]
