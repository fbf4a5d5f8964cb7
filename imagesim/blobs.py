"""Content-addressed blob stores.

The contract every store keeps (and ``tests/imagesim/test_blobs.py`` checks for each one):

* ``put`` is idempotent: putting the same bytes twice stores them once and returns the same
  digest; putting bytes under an ``expected`` digest they do not hash to raises
  ``DigestInvalid`` and stores nothing.
* ``get`` verifies: bytes that no longer hash to their name raise ``DigestInvalid``.
* Writes are atomic: a blob is visible under its digest only once it is complete and flushed
  (temporary file, ``fsync``, ``rename``); a killed writer leaves at most a temporary file,
  which ``sweep_temporaries`` removes.
* ``delete`` is idempotent.
"""

from __future__ import annotations

import contextlib
import io
import os
import tempfile
import time
from collections.abc import Iterator
from typing import BinaryIO, Protocol, runtime_checkable

from . import faults
from .digest import CHUNK, Digest, Hasher
from .errors import BlobUnknown, DigestInvalid, SizeInvalid


@runtime_checkable
class BlobStore(Protocol):
    def __contains__(self, digest: object) -> bool: ...
    def __iter__(self) -> Iterator[Digest]: ...
    def size(self, digest: Digest) -> int: ...
    def get(self, digest: Digest) -> bytes: ...
    def open(self, digest: Digest) -> BinaryIO: ...
    def put(self, data: bytes, expected: Digest | None = None) -> Digest: ...
    def put_stream(self, stream: BinaryIO, expected: Digest | None = None,
                   size: int | None = None) -> tuple[Digest, int]: ...
    def writer(self, expected: Digest | None = None,
               size: int | None = None) -> BlobWriter: ...
    def delete(self, digest: Digest) -> None: ...


class BlobWriter:
    """Streams one blob in: ``write`` chunks, then ``commit`` (verifies and publishes) or
    ``abort``. As a context manager it aborts on an exception and on exit without commit."""

    def __init__(self, expected: Digest | None, size: int | None) -> None:
        self.expected = expected
        self.expected_size = size
        self.hasher = Hasher(expected.algorithm if expected else "sha256")
        self.digest: Digest | None = None

    @property
    def written(self) -> int:
        return self.hasher.size

    def write(self, data: bytes | memoryview) -> int:
        if self.expected_size is not None and self.hasher.size + len(data) > self.expected_size:
            self.abort()
            raise SizeInvalid(f"blob is larger than the {self.expected_size} bytes declared")
        self.hasher.update(data)
        self._write(data)
        return len(data)

    def commit(self) -> Digest:
        actual = self.hasher.digest()
        if self.expected_size is not None and self.hasher.size != self.expected_size:
            self.abort()
            raise SizeInvalid(f"blob has {self.hasher.size} bytes, "
                              f"{self.expected_size} were declared")
        if self.expected is not None and actual != self.expected:
            self.abort()
            raise DigestInvalid(f"digest mismatch: expected {self.expected}, got {actual}",
                                expected=str(self.expected), actual=str(actual))
        self._publish(actual)
        self.digest = actual
        return actual

    def abort(self) -> None:
        self._discard()

    def __enter__(self) -> BlobWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.digest is None:
            self.abort()

    # implementation hooks
    def _write(self, data: bytes | memoryview) -> None:
        raise NotImplementedError

    def _publish(self, digest: Digest) -> None:
        raise NotImplementedError

    def _discard(self) -> None:
        raise NotImplementedError


def _copy_into(writer: BlobWriter, stream: BinaryIO) -> tuple[Digest, int]:
    with writer:
        while chunk := stream.read(CHUNK):
            writer.write(chunk)
        digest = writer.commit()
    return digest, writer.written


class MemoryBlobStore:
    """A dict-backed store for tests and in-memory registries."""

    def __init__(self) -> None:
        self._blobs: dict[Digest, bytes] = {}

    def __contains__(self, digest: object) -> bool:
        return digest in self._blobs

    def __iter__(self) -> Iterator[Digest]:
        return iter(list(self._blobs))

    def size(self, digest: Digest) -> int:
        return len(self._raw(digest))

    def _raw(self, digest: Digest) -> bytes:
        try:
            return self._blobs[digest]
        except KeyError:
            raise BlobUnknown(f"blob unknown: {digest}") from None

    def get(self, digest: Digest) -> bytes:
        data = self._raw(digest)
        digest.verify(data)
        return data

    def open(self, digest: Digest) -> BinaryIO:
        return io.BytesIO(self._raw(digest))

    def put(self, data: bytes, expected: Digest | None = None) -> Digest:
        digest = Digest.of(data, expected.algorithm if expected else "sha256")
        if expected is not None and digest != expected:
            raise DigestInvalid(f"digest mismatch: expected {expected}, got {digest}",
                                expected=str(expected), actual=str(digest))
        self._blobs.setdefault(digest, bytes(data))
        return digest

    def put_stream(self, stream: BinaryIO, expected: Digest | None = None,
                   size: int | None = None) -> tuple[Digest, int]:
        return _copy_into(self.writer(expected, size), stream)

    def writer(self, expected: Digest | None = None, size: int | None = None) -> BlobWriter:
        return _MemoryWriter(self, expected, size)

    def delete(self, digest: Digest) -> None:
        self._blobs.pop(digest, None)


class _MemoryWriter(BlobWriter):
    def __init__(self, store: MemoryBlobStore, expected: Digest | None,
                 size: int | None) -> None:
        super().__init__(expected, size)
        self._store = store
        self._buf = bytearray()

    def _write(self, data: bytes | memoryview) -> None:
        self._buf += data

    def _publish(self, digest: Digest) -> None:
        self._store._blobs.setdefault(digest, bytes(self._buf))

    def _discard(self) -> None:
        self._buf = bytearray()


class FileBlobStore:
    """Blobs as files ``ROOT/blobs/<algorithm>/<hex>`` (the OCI image-layout shape), written
    through ``ROOT/tmp`` on the same filesystem so the final ``rename`` is atomic."""

    def __init__(self, root: str | os.PathLike, *, fsync: bool = True) -> None:
        self.root = os.fspath(root)
        self.blob_dir = os.path.join(self.root, "blobs")
        self.tmp_dir = os.path.join(self.root, "tmp")
        self.fsync = fsync
        os.makedirs(self.blob_dir, exist_ok=True)
        os.makedirs(self.tmp_dir, exist_ok=True)

    def path(self, digest: Digest) -> str:
        """Where the blob lives (whether or not it exists). Safe: ``Digest`` only holds hex."""
        return os.path.join(self.blob_dir, digest.algorithm, digest.hex)

    def __contains__(self, digest: object) -> bool:
        return isinstance(digest, Digest) and os.path.isfile(self.path(digest))

    def __iter__(self) -> Iterator[Digest]:
        try:
            algorithms = sorted(os.listdir(self.blob_dir))
        except FileNotFoundError:
            return
        for algorithm in algorithms:
            for name in sorted(os.listdir(os.path.join(self.blob_dir, algorithm))):
                try:
                    yield Digest.parse(f"{algorithm}:{name}")
                except DigestInvalid:
                    continue

    def size(self, digest: Digest) -> int:
        try:
            return os.stat(self.path(digest)).st_size
        except FileNotFoundError:
            raise BlobUnknown(f"blob unknown: {digest}") from None

    def open(self, digest: Digest) -> BinaryIO:
        """The raw blob file (not verified: stream it through a ``Hasher`` to check)."""
        try:
            return open(self.path(digest), "rb")
        except FileNotFoundError:
            raise BlobUnknown(f"blob unknown: {digest}") from None

    def get(self, digest: Digest) -> bytes:
        with self.open(digest) as f:
            data = f.read()
        digest.verify(data)
        return data

    def verify(self, digest: Digest) -> None:
        """Re-hash the stored blob; ``DigestInvalid`` if it was corrupted on disk."""
        with self.open(digest) as f:
            actual, _ = Digest.of_stream(f, digest.algorithm)
        if actual != digest:
            raise DigestInvalid(f"stored blob {digest} is corrupt (hashes to {actual})",
                                expected=str(digest), actual=str(actual))

    def put(self, data: bytes, expected: Digest | None = None) -> Digest:
        with self.writer(expected, len(data)) as w:
            w.write(data)
            return w.commit()

    def put_stream(self, stream: BinaryIO, expected: Digest | None = None,
                   size: int | None = None) -> tuple[Digest, int]:
        return _copy_into(self.writer(expected, size), stream)

    def writer(self, expected: Digest | None = None, size: int | None = None) -> BlobWriter:
        return _FileWriter(self, expected, size)

    def add_file(self, path: str, digest: Digest) -> None:
        """Publish an already-complete temporary file (created by ``temporary``) under
        ``digest``, after checking it. The file is moved, not copied."""
        with open(path, "rb") as f:
            actual, _ = Digest.of_stream(f, digest.algorithm)
        if actual != digest:
            os.unlink(path)
            raise DigestInvalid(f"digest mismatch: expected {digest}, got {actual}",
                                expected=str(digest), actual=str(actual))
        self.install(path, digest)

    def temporary(self) -> tuple[int, str]:
        """A new temporary file in this store's ``tmp`` (fd, path)."""
        return tempfile.mkstemp(dir=self.tmp_dir, prefix="blob-")

    def install(self, tmp_path: str, digest: Digest) -> None:
        """Publish a complete, already verified file under ``digest`` by renaming it into place
        (it must be on this store's filesystem, e.g. from ``temporary``). Idempotent: if the
        blob exists, the file is removed instead."""
        final = self.path(digest)
        if os.path.exists(final):
            os.unlink(tmp_path)  # idempotent: the same bytes are already there
            return
        os.makedirs(os.path.dirname(final), exist_ok=True)
        os.chmod(tmp_path, 0o444)
        faults.point("blob.publish")
        os.rename(tmp_path, final)
        faults.point("blob.installed")
        if self.fsync:
            _fsync_dir(os.path.dirname(final))

    def delete(self, digest: Digest) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path(digest))

    def sweep_temporaries(self, older_than: float = 0.0) -> list[str]:
        """Remove temporary files left by killed writers; returns what it removed."""
        removed = []
        now = time.time()
        for name in os.listdir(self.tmp_dir):
            p = os.path.join(self.tmp_dir, name)
            with contextlib.suppress(FileNotFoundError):
                if now - os.lstat(p).st_mtime >= older_than:
                    os.unlink(p)
                    removed.append(p)
        return removed


class _FileWriter(BlobWriter):
    def __init__(self, store: FileBlobStore, expected: Digest | None, size: int | None) -> None:
        super().__init__(expected, size)
        self._store = store
        fd, self._tmp = store.temporary()
        self._file: BinaryIO | None = os.fdopen(fd, "wb")

    def _write(self, data: bytes | memoryview) -> None:
        assert self._file is not None
        self._file.write(data)

    def _publish(self, digest: Digest) -> None:
        assert self._file is not None
        self._file.flush()
        if self._store.fsync:
            os.fsync(self._file.fileno())
        self._file.close()
        self._file = None
        self._store.install(self._tmp, digest)

    def _discard(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._tmp)


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
