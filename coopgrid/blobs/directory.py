"""Blobs as files in a directory: the data dir's (the default), or one several coordinators share.

Each blob is ``ROOT/ab/abcdef...`` (its sha256, under its first two hex digits). Writes go
to a temporary file in the same directory tree and are renamed into place, so a crash or a
second writer never leaves a partial blob under a valid name, and two processes writing the
same blob at once both succeed (the rename is atomic and both carry the same bytes).
No state is kept in the process: a blob another process stored is seen at once.

A shared directory (``--blob-store DIR`` on a disk every coordinator mounts) differs
only in care for the other processes: files are made group-readable (the coordinator's
umask keeps its data dir private), and the directory entry of each new blob is synced, so
a blob whose hash was committed to the database is on disk for the next reader.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from coopgrid.blobs.base import BlobStore, BlobWriter, checked_name
from coopgrid.errors import BlobNotFound
from coopgrid.protocol import is_hash

#: an upload's temporary file untouched this long was left by a process that died mid-upload
STALE_UPLOAD_SECONDS = 24 * 3600.0


class DirectoryBlobStore(BlobStore):
    def __init__(self, root: Path, shared: bool = False) -> None:
        self.root = Path(root)
        self.shared = shared
        self.description = f"{'shared directory' if shared else 'directory'} {self.root}"
        self.root.mkdir(parents=True, exist_ok=True)
        self.sweep()

    def sweep(self, older_than: float = STALE_UPLOAD_SECONDS) -> int:
        """Remove uploads a crashed process left behind (a live one writes to its file all along,
        so one untouched this long is nobody's); returns how many."""
        gone, cutoff = 0, time.time() - older_than
        for tmp in self.root.glob(".upload-*"):
            with contextlib.suppress(FileNotFoundError):  # another coordinator swept it first
                if tmp.stat().st_mtime < cutoff:
                    tmp.unlink()
                    gone += 1
        return gone

    def path(self, digest: str) -> Path:
        digest = checked_name(digest)
        return self.root / digest[:2] / digest

    def local_path(self, digest: str) -> Path | None:
        return self.path(digest)

    def exists(self, digest: str) -> bool:
        return self.path(digest).exists()

    def writer(self) -> DirectoryBlobWriter:
        return DirectoryBlobWriter(self)

    def open(self, digest: str) -> IO[bytes]:
        try:
            return self.path(digest).open("rb")
        except FileNotFoundError:
            raise BlobNotFound(f"no blob {digest}", digest=digest) from None

    def size(self, digest: str) -> int:
        try:
            return self.path(digest).stat().st_size
        except FileNotFoundError:
            raise BlobNotFound(f"no blob {digest}", digest=digest) from None

    def delete(self, digest: str) -> bool:
        try:
            self.path(digest).unlink()
        except FileNotFoundError:
            return False
        return True

    def names(self) -> Iterator[str]:
        for sub in self.root.iterdir():
            if sub.is_dir() and len(sub.name) == 2:
                yield from (f.name for f in sub.iterdir() if is_hash(f.name) and f.name[:2] == sub.name)

    def _place(self, tmp: Path, digest: str) -> None:
        """Move a finished temporary file under the blob's name (or drop it if the blob is there)."""
        target = self.path(digest)
        if target.exists():
            tmp.unlink(missing_ok=True)
            return
        target.parent.mkdir(exist_ok=True)
        if self.shared:
            os.chmod(tmp, 0o640)
            os.chmod(target.parent, 0o750)
        os.replace(tmp, target)
        if self.shared:
            fd = os.open(target.parent, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)


class DirectoryBlobWriter(BlobWriter):
    def __init__(self, store: DirectoryBlobStore) -> None:
        super().__init__()
        self.store = store
        # in the store's root, so the final rename never crosses a file system
        fd, tmp = tempfile.mkstemp(dir=store.root, prefix=".upload-")
        self._tmp = Path(tmp)
        self._fh = os.fdopen(fd, "wb")

    def _spool(self, chunk: bytes) -> None:
        self._fh.write(chunk)

    def _store(self, digest: str) -> None:
        self._fh.flush()
        os.fsync(self._fh.fileno())
        self._fh.close()
        try:
            self.store._place(self._tmp, digest)
        except BaseException:
            self._tmp.unlink(missing_ok=True)
            raise

    def abort(self) -> None:
        if not self._fh.closed:
            self._fh.close()
        self._tmp.unlink(missing_ok=True)
