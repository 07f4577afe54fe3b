"""What every blob store offers, whichever backend holds the bytes.

A blob's name is the sha256 of its bytes, so a blob can be fetched from any
untrusted party (a shared disk, an object store, a presigned URL) and checked.
Backends: :mod:`coopgrid.blobs.directory` (the data dir, or a directory several
coordinator processes share) and :mod:`coopgrid.blobs.s3` (an S3-compatible
object store); :func:`coopgrid.blobs.spec.open_blob_store` picks one from
``--blob-store``.

Bytes travel in pieces where they can be large (uploads of up to
``max_upload_bytes``): :meth:`BlobStore.writer` hashes while it spools, and
:meth:`BlobStore.open` reads back in chunks. :meth:`BlobStore.get` holds the whole
blob, so only callers that need it whole anyway (a dataset being split, a tree
dump) use it, and it checks the bytes against their name.
"""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from coopgrid.errors import IntegrityError, InvalidInput
from coopgrid.protocol import is_hash, sha256_hex

#: chunk size for streamed reads and writes
CHUNK = 1 << 20


def checked_name(digest: str) -> str:
    """``digest`` if it is a blob name; a clear error before anything is looked up otherwise."""
    if not isinstance(digest, str) or not is_hash(digest):
        raise InvalidInput(f"{digest!r} is not a sha256 hash (64 lowercase hex characters)")
    return digest


def mismatch(expected: str, actual: str) -> IntegrityError:
    return IntegrityError(f"the bytes hash to {actual}, not {expected}", expected=expected, actual=actual)


def check_bytes(data: bytes, digest: str) -> bytes:
    actual = sha256_hex(data)
    if actual != digest:
        raise IntegrityError(
            f"blob {digest} is corrupt in the blob store: its bytes hash to {actual}; upload it again",
            expected=digest, actual=actual,
        )
    return data


class BlobWriter(ABC):
    """A blob written in pieces (an upload streamed while it is hashed).

    ``commit()`` stores it under its sha256; ``abort()`` (or leaving the ``with``
    block on an error) drops it, so a broken upload leaves nothing behind."""

    def __init__(self) -> None:
        self.size = 0
        self._hash = hashlib.sha256()

    def write(self, chunk: bytes) -> None:
        self._spool(chunk)
        self._hash.update(chunk)
        self.size += len(chunk)

    def commit(self, expected: str | None = None) -> str:
        """Store the bytes under their sha256 (which must be ``expected`` when given); returns it."""
        digest = self._hash.hexdigest()
        if expected is not None and expected != digest:
            self.abort()
            raise mismatch(expected, digest)
        self._store(digest)
        return digest

    @abstractmethod
    def _spool(self, chunk: bytes) -> None: ...

    @abstractmethod
    def _store(self, digest: str) -> None: ...

    @abstractmethod
    def abort(self) -> None: ...

    def __enter__(self) -> BlobWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.abort()  # after commit() the spooled bytes are gone: nothing to do


class BlobStore(ABC):
    """A content-addressed blob store. Every method takes or returns blob names (sha256 hex)."""

    #: what ``coopgrid coordinator`` logs at start: where the blobs are
    description: str = ""

    @abstractmethod
    def exists(self, digest: str) -> bool: ...

    @abstractmethod
    def writer(self) -> BlobWriter: ...

    @abstractmethod
    def open(self, digest: str) -> IO[bytes]:
        """The blob's bytes as a stream (raises BlobNotFound); the caller closes it."""

    @abstractmethod
    def size(self, digest: str) -> int:
        """The blob's length in bytes (raises BlobNotFound)."""

    @abstractmethod
    def delete(self, digest: str) -> bool:
        """Remove the blob; False if there was none."""

    @abstractmethod
    def names(self) -> Iterator[str]:
        """Every stored blob's name (no order promised)."""

    def put(self, data: bytes, expected: str | None = None) -> str:
        """Store ``data``; returns its hash. ``expected`` must match when given."""
        digest = sha256_hex(data)
        if expected is not None and expected != digest:
            raise mismatch(expected, digest)
        if not self.exists(digest):
            with self.writer() as w:
                w.write(data)
                w.commit()
        return digest

    def get(self, digest: str) -> bytes:
        """The whole blob, checked against its name (IntegrityError if the store corrupted it)."""
        with self.open(digest) as fh:
            return check_bytes(fh.read(), digest)

    def verify(self, digest: str) -> bool:
        """True when the stored bytes still hash to their name."""
        h = hashlib.sha256()
        with self.open(digest) as fh:
            for chunk in iter(lambda: fh.read(CHUNK), b""):
                h.update(chunk)
        return h.hexdigest() == digest

    def local_path(self, digest: str) -> Path | None:
        """A file holding the blob, for backends that keep files on this machine (else None)."""
        return None

    def url(self, digest: str, seconds: int) -> str | None:
        """A URL anyone holding it may GET the blob from for ``seconds`` (None: this backend has none).

        Whoever calls this has checked that the URL's recipient may read the blob (coordinator/access.py)."""
        return None
