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
