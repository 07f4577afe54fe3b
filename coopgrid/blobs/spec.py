"""Which blob store ``--blob-store`` names: nothing (the data dir), a directory, or s3://bucket/prefix."""

from __future__ import annotations

from pathlib import Path

from coopgrid.blobs.base import BlobStore
from coopgrid.blobs.directory import DirectoryBlobStore
from coopgrid.errors import ConfigError


def open_blob_store(spec: str | None, data_dir: Path, endpoint_url: str | None = None) -> BlobStore:
    """The blob store ``spec`` names; None keeps the blobs in ``data_dir/blobs`` as before."""
    if not spec:
        return DirectoryBlobStore(data_dir / "blobs")
    if spec.startswith("s3://"):
        from coopgrid.blobs.s3 import S3BlobStore, parse_s3_url

        bucket, prefix = parse_s3_url(spec)
        # uploads are spooled next to the database, not in a /tmp that may be a small tmpfs
        return S3BlobStore(bucket, prefix, endpoint_url=endpoint_url, spool_dir=data_dir / "spool")
    if "://" in spec:
        raise ConfigError(f"--blob-store {spec!r}: give a directory or an s3://BUCKET[/PREFIX] URL")
    root = Path(spec).expanduser()
    if root.exists() and not root.is_dir():
        raise ConfigError(f"--blob-store {spec} is a file, not a directory; name a directory every coordinator mounts")
    try:
        return DirectoryBlobStore(root, shared=True)
    except OSError as exc:
        raise ConfigError(f"--blob-store {spec} cannot be created ({exc.strerror or exc})") from exc
