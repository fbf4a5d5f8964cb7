"""The ``ImageSimError`` family. Each error carries the OCI distribution error ``code`` and an
HTTP ``status``, so the registry server renders any of them as the spec's JSON body and the
client maps a response back to the same class, in one place each."""

from __future__ import annotations

from typing import Any, ClassVar


class ImageSimError(Exception):
    """Base class. ``str(err)`` is a message fit for a user; ``detail`` is extra JSON data."""

    code: ClassVar[str] = "UNKNOWN"
    status: ClassVar[int] = 500

    def __init__(self, message: str, *, detail: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.detail = detail

    def to_json(self) -> dict[str, Any]:
        """The error as one element of the spec's ``{"errors": [...]}`` body."""
        out: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.detail is not None:
            out["detail"] = self.detail
        return out


class BlobUnknown(ImageSimError):
    code = "BLOB_UNKNOWN"
    status = 404


class BlobUploadInvalid(ImageSimError):
    code = "BLOB_UPLOAD_INVALID"
    status = 400


class BlobUploadUnknown(ImageSimError):
    code = "BLOB_UPLOAD_UNKNOWN"
    status = 404


class DigestInvalid(ImageSimError):
    """The content does not hash to the digest it was given. Keeps both values."""

    code = "DIGEST_INVALID"
    status = 400

    def __init__(self, message: str, *, expected: str | None = None,
                 actual: str | None = None, detail: Any = None) -> None:
        super().__init__(message, detail=detail)
        self.expected = expected
        self.actual = actual


class SizeInvalid(ImageSimError):
    code = "SIZE_INVALID"
    status = 400


class ManifestBlobUnknown(ImageSimError):
    code = "MANIFEST_BLOB_UNKNOWN"
    status = 404


class ManifestInvalid(ImageSimError):
    code = "MANIFEST_INVALID"
    status = 400


class ManifestUnknown(ImageSimError):
    code = "MANIFEST_UNKNOWN"
    status = 404


class NameInvalid(ImageSimError):
    code = "NAME_INVALID"
    status = 400


class NameUnknown(ImageSimError):
    code = "NAME_UNKNOWN"
    status = 404


class TagInvalid(ImageSimError):
    code = "TAG_INVALID"
    status = 400


class Unauthorized(ImageSimError):
    code = "UNAUTHORIZED"
    status = 401


class Denied(ImageSimError):
    code = "DENIED"
    status = 403


class Unsupported(ImageSimError):
    code = "UNSUPPORTED"
    status = 405


class TooManyRequests(ImageSimError):
    code = "TOOMANYREQUESTS"
    status = 429


class RangeInvalid(ImageSimError):
    code = "RANGE_INVALID"
    status = 416


# -- local errors (never sent over the wire as such) -------------------------------------

class ReferenceInvalid(ImageSimError):
    """A reference that docker's grammar does not accept (``invalid reference format``)."""

    code = "NAME_INVALID"
    status = 400


class ImageNotFound(ImageSimError):
    code = "MANIFEST_UNKNOWN"
    status = 404


class ContainerNotFound(ImageSimError):
    code = "NOT_FOUND"
    status = 404


class Conflict(ImageSimError):
    """The operation would break something in use (rmi of an image a container uses, a name
    already taken, a volume in use)."""

    code = "CONFLICT"
    status = 409


class LayerInvalid(ImageSimError):
    """A layer tar that cannot be applied safely or is broken (escape, truncation, bomb)."""

    code = "BLOB_UNKNOWN"
    status = 400


class ArchiveInvalid(ImageSimError):
    """An image archive or OCI layout that is malformed or inconsistent."""

    code = "MANIFEST_INVALID"
    status = 400


class StoreCorrupt(ImageSimError):
    code = "UNKNOWN"
    status = 500


BY_CODE: dict[str, type[ImageSimError]] = {
    cls.code: cls
    for cls in (BlobUnknown, BlobUploadInvalid, BlobUploadUnknown, DigestInvalid, SizeInvalid,
                ManifestBlobUnknown, ManifestInvalid, ManifestUnknown, NameInvalid, NameUnknown,
                TagInvalid, Unauthorized, Denied, Unsupported, TooManyRequests, RangeInvalid)
}


def from_json(body: dict[str, Any], status: int) -> ImageSimError:
    """The error for one element of a registry's ``errors`` array (unknown codes kept)."""
    code = str(body.get("code", "UNKNOWN"))
    cls = BY_CODE.get(code, ImageSimError)
    err = cls(str(body.get("message") or code), detail=body.get("detail"))
    if cls is ImageSimError:
        err.code = code  # type: ignore[misc]
        err.status = status  # type: ignore[misc]
    return err
