"""A content-addressed blob store on the local file system.

A blob's name is the sha256 of its bytes, so a blob can be fetched from any
untrusted party and checked. Writes go to a temporary file and are renamed
into place, so a crash never leaves a partial blob under a valid name.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

from coopgrid.errors import BlobNotFound, IntegrityError, InvalidInput
from coopgrid.protocol import is_hash, sha256_hex


class BlobStore:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True)

    def path(self, digest: str) -> Path:
        if not is_hash(digest):
            raise InvalidInput(f"{digest!r} is not a sha256 hash (64 lowercase hex characters)")
        return self.root / digest[:2] / digest

    def exists(self, digest: str) -> bool:
        return self.path(digest).exists()

    def put(self, data: bytes, expected: str | None = None) -> str:
        """Store ``data``; returns its hash. ``expected`` must match when given."""
        digest = sha256_hex(data)
        if expected is not None and expected != digest:
            raise IntegrityError(f"the bytes hash to {digest}, not {expected}", expected=expected, actual=digest)
        target = self.path(digest)
        if target.exists():
            return digest
        target.parent.mkdir(exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return digest

    def writer(self) -> BlobWriter:
        """A blob written in pieces (an upload streamed to disk while it is hashed)."""
        return BlobWriter(self)

    def get(self, digest: str) -> bytes:
        try:
            return self.path(digest).read_bytes()
        except FileNotFoundError:
            raise BlobNotFound(f"no blob {digest}", digest=digest) from None

    def verify(self, digest: str) -> bool:
        """True when the stored bytes still hash to their name."""
        h = hashlib.sha256()
        with self.path(digest).open("rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
        return h.hexdigest() == digest


class BlobWriter:
    """Writes a blob piece by piece into a temporary file, hashing as it goes.

    ``commit()`` moves it under its hash; ``abort()`` (or leaving the ``with``
    block on an error) removes it, so a broken upload leaves nothing behind."""

    def __init__(self, store: BlobStore) -> None:
        self.store = store
        self.size = 0
        self._hash = hashlib.sha256()
        fd, tmp = tempfile.mkstemp(dir=store.root, prefix=".upload-")
        self._tmp = Path(tmp)
        self._fh = os.fdopen(fd, "wb")

    def write(self, chunk: bytes) -> None:
        self._fh.write(chunk)
        self._hash.update(chunk)
        self.size += len(chunk)

    def commit(self) -> str:
        """Close the file and store it under its sha256; returns the hash."""
        digest = self._hash.hexdigest()
        self._fh.flush()
        os.fsync(self._fh.fileno())
        self._fh.close()
        target = self.store.path(digest)
        if target.exists():
            self._tmp.unlink(missing_ok=True)
            return digest
        target.parent.mkdir(exist_ok=True)
        os.replace(self._tmp, target)
        return digest

    def abort(self) -> None:
        if not self._fh.closed:
            self._fh.close()
        self._tmp.unlink(missing_ok=True)

    def __enter__(self) -> BlobWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.abort()  # after commit() the temporary file is gone: nothing to do
