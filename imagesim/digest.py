"""``Digest``: the ``algorithm:hex`` value type of the OCI specs, and hashing while streaming."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import BinaryIO

from .errors import DigestInvalid

_HEX = {"sha256": 64, "sha512": 128}
_GRAMMAR = re.compile(r"^[a-z0-9]+(?:[+._-][a-z0-9]+)*:[a-zA-Z0-9=_-]+$")
CHUNK = 1 << 20


@dataclass(frozen=True, slots=True, order=True)
class Digest:
    """``sha256:<64 hex>`` (or ``sha512``). Construct with ``Digest.parse`` to validate."""

    algorithm: str
    hex: str

    @classmethod
    def parse(cls, text: str) -> Digest:
        """Validate and split a digest string. Raises ``DigestInvalid`` for anything that is not
        a supported algorithm followed by the right number of lower-case hex digits (this is
        also what keeps a digest from ever naming a path outside the store)."""
        if not isinstance(text, str) or not _GRAMMAR.match(text):
            raise DigestInvalid(f"invalid digest {text!r}")
        algorithm, _, hexpart = text.partition(":")
        want = _HEX.get(algorithm)
        if want is None:
            raise DigestInvalid(f"unsupported digest algorithm {algorithm!r}")
        if len(hexpart) != want or any(c not in "0123456789abcdef" for c in hexpart):
            raise DigestInvalid(f"invalid {algorithm} digest {text!r}")
        return cls(algorithm, hexpart)

    @classmethod
    def of(cls, data: bytes, algorithm: str = "sha256") -> Digest:
        """The digest of ``data``."""
        return cls(algorithm, hashlib.new(algorithm, data).hexdigest())

    @classmethod
    def of_stream(cls, stream: BinaryIO, algorithm: str = "sha256") -> tuple[Digest, int]:
        """Digest and size of everything left in ``stream``, read in 1 MiB chunks."""
        h = Hasher(algorithm)
        while chunk := stream.read(CHUNK):
            h.update(chunk)
        return h.digest(), h.size

    @property
    def short(self) -> str:
        """The 12-hex-digit id docker prints."""
        return self.hex[:12]

    def __str__(self) -> str:
        return f"{self.algorithm}:{self.hex}"

    def verify(self, data: bytes) -> None:
        """Raise ``DigestInvalid`` (with both values) unless ``data`` hashes to this digest."""
        actual = Digest.of(data, self.algorithm)
        if actual != self:
            raise DigestInvalid(f"digest mismatch: expected {self}, got {actual}",
                                expected=str(self), actual=str(actual))


class Hasher:
    """Hashes and counts bytes as they stream past (one pass over the data)."""

    def __init__(self, algorithm: str = "sha256") -> None:
        self.algorithm = algorithm
        self._h = hashlib.new(algorithm)
        self.size = 0

    def update(self, data: bytes | memoryview) -> None:
        self._h.update(data)
        self.size += len(data)

    def digest(self) -> Digest:
        return Digest(self.algorithm, self._h.hexdigest())


def digest_chunks(chunks: Iterable[bytes], algorithm: str = "sha256") -> tuple[Digest, int]:
    """Digest and size of a sequence of byte chunks."""
    h = Hasher(algorithm)
    for chunk in chunks:
        h.update(chunk)
    return h.digest(), h.size
