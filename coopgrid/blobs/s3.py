"""Blobs in an S3-compatible object store (``--blob-store s3://bucket/prefix``), through boto3.

Each blob is the object ``PREFIX/ab/abcdef...``. The endpoint, region and credentials are
boto3's own: AWS_ENDPOINT_URL (or ``--s3-endpoint-url``), AWS_REGION / AWS_DEFAULT_REGION,
AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, AWS_PROFILE, an instance role...

An upload's name is known only once its last byte is hashed, so it is spooled to a local
temporary file (anonymous: gone with the process) and then sent, as a multipart upload in
parts of 8 MiB when it is larger than one part (memory holds one part at a time). Objects
are written only if absent (a conditional write), so two processes storing the same blob at
once leave the first copy, and neither fails.
Reads stream the object's body; :meth:`S3BlobStore.url` presigns a GET, so a worker can
fetch a task's input from the store itself (it checks the sha256 of what it gets).
"""

from __future__ import annotations

import contextlib
import io
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlsplit

from coopgrid.blobs.base import CHUNK, BlobStore, BlobWriter, checked_name, mismatch
from coopgrid.errors import BlobNotFound, BlobStoreError, ConfigError
from coopgrid.protocol import is_hash, sha256_hex

#: uploads above this go in parts of this size (S3's smallest part is 5 MiB)
PART = 8 * CHUNK
MISSING = {"404", "NoSuchKey", "NotFound"}


def parse_s3_url(spec: str) -> tuple[str, str]:
    """``s3://bucket/some/prefix`` -> (bucket, "some/prefix/")."""
    parts = urlsplit(spec)
    if parts.scheme != "s3" or not parts.netloc or parts.query or parts.fragment:
        raise ConfigError(f"--blob-store {spec!r} is no s3://BUCKET[/PREFIX] URL")
    prefix = parts.path.strip("/")
    return parts.netloc, f"{prefix}/" if prefix else ""


class S3BlobStore(BlobStore):
    def __init__(
        self, bucket: str, prefix: str = "", *, endpoint_url: str | None = None,
        spool_dir: Path | None = None, client: Any = None,
    ) -> None:
        self.bucket = bucket
        self.prefix = prefix
        self.spool_dir = spool_dir
        self.client = client or make_client(endpoint_url)
        self.description = f"s3://{bucket}/{prefix} at {self.client.meta.endpoint_url}"
        try:
            self.client.head_bucket(Bucket=bucket)
        except Exception as exc:  # noqa: BLE001 - every boto/transport error is reported the same way
            raise self._error(exc, f"bucket {bucket}", start=True) from exc

    def key(self, digest: str) -> str:
        digest = checked_name(digest)
        return f"{self.prefix}{digest[:2]}/{digest}"

    def _error(self, exc: Exception, what: str, start: bool = False) -> Exception:
        code = _code(exc)
        if code in MISSING and not start:
            return BlobNotFound(f"no blob {what}", digest=what)
        if code in {"NoSuchBucket", "404"} and start:
            return ConfigError(f"the object store at {self.client.meta.endpoint_url} has no bucket {self.bucket}: "
                               f"create it (e.g. `aws s3 mb s3://{self.bucket}`) or name another in --blob-store")
        if start:
            return ConfigError(f"cannot use the blob store s3://{self.bucket}/{self.prefix} at "
                               f"{self.client.meta.endpoint_url}: {exc}; check the endpoint (--s3-endpoint-url or "
                               "AWS_ENDPOINT_URL) and the credentials (AWS_ACCESS_KEY_ID... or AWS_PROFILE)")
        return BlobStoreError(f"the blob store failed on {what}: {exc}", what=what)

    def exists(self, digest: str) -> bool:
        key = self.key(digest)
        try:
            self.client.head_object(Bucket=self.bucket, Key=key)
        except Exception as exc:  # noqa: BLE001
            err = self._error(exc, digest)
            if isinstance(err, BlobNotFound):
                return False
            raise err from exc
        return True

    def size(self, digest: str) -> int:
        key = self.key(digest)
        try:
            return int(self.client.head_object(Bucket=self.bucket, Key=key)["ContentLength"])
        except Exception as exc:  # noqa: BLE001
            raise self._error(exc, digest) from exc

    def open(self, digest: str) -> IO[bytes]:
        key = self.key(digest)
        try:
            return self.client.get_object(Bucket=self.bucket, Key=key)["Body"]
        except Exception as exc:  # noqa: BLE001
            raise self._error(exc, digest) from exc

    def writer(self) -> S3BlobWriter:
        return S3BlobWriter(self)

    def delete(self, digest: str) -> bool:
        if not self.exists(digest):
            return False
        try:
            self.client.delete_object(Bucket=self.bucket, Key=self.key(digest))
        except Exception as exc:  # noqa: BLE001
            raise self._error(exc, digest) from exc
        return True

    def names(self) -> Iterator[str]:
        pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=self.prefix)
        for page in pages:
            for obj in page.get("Contents", []):
                name = obj["Key"][len(self.prefix):]
                if len(name) == 67 and name[2] == "/" and is_hash(name[3:]) and name[:2] == name[3:5]:
                    yield name[3:]

    def url(self, digest: str, seconds: int) -> str | None:
        key = self.key(digest)
        try:
            return self.client.generate_presigned_url("get_object", Params={"Bucket": self.bucket, "Key": key},
                                                      ExpiresIn=int(seconds))
        except Exception as exc:  # noqa: BLE001 - e.g. no credentials to sign with: workers use the coordinator
            raise self._error(exc, digest) from exc

    def put(self, data: bytes, expected: str | None = None) -> str:
        # no HEAD first: the conditional write answers "already there" itself
        digest = sha256_hex(data)
        if expected is not None and expected != digest:
            raise mismatch(expected, digest)
        self._upload(io.BytesIO(data), len(data), digest, look_first=False)
        return digest

    def _upload(self, fh: IO[bytes], size: int, digest: str, look_first: bool = True) -> None:
        """Send a spooled blob: one PUT, or a multipart upload when it is large; written only if absent.

        "If-None-Match: *" makes the object store keep the first copy when several processes store
        the same blob at once, instead of each overwriting it with the same bytes. A large upload
        looks first (one HEAD), to send nothing when the blob is there already."""
        if look_first and self.exists(digest):
            return
        key = self.key(digest)
        try:
            if size <= PART:
                self.client.put_object(Bucket=self.bucket, Key=key, Body=fh.read(), IfNoneMatch="*")
                return
            upload = self.client.create_multipart_upload(Bucket=self.bucket, Key=key)["UploadId"]
            try:
                parts = []
                for number, chunk in enumerate(iter(lambda: fh.read(PART), b""), start=1):
                    etag = self.client.upload_part(
                        Bucket=self.bucket, Key=key, UploadId=upload, PartNumber=number, Body=chunk
                    )["ETag"]
                    parts.append({"PartNumber": number, "ETag": etag})
                self.client.complete_multipart_upload(
                    Bucket=self.bucket, Key=key, UploadId=upload, MultipartUpload={"Parts": parts}, IfNoneMatch="*"
                )
            except BaseException:
                with contextlib.suppress(Exception):  # the parts would otherwise be kept (and billed)
                    self.client.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload)
                raise
        except Exception as exc:  # noqa: BLE001
            if _code(exc) in {"PreconditionFailed", "412"}:
                return  # another process stored these very bytes first
            raise self._error(exc, digest) from exc


class S3BlobWriter(BlobWriter):
    def __init__(self, store: S3BlobStore) -> None:
        super().__init__()
        self.store = store
        if store.spool_dir is not None:
            store.spool_dir.mkdir(parents=True, exist_ok=True)
        self._fh = tempfile.TemporaryFile(dir=store.spool_dir, prefix="upload-")

    def _spool(self, chunk: bytes) -> None:
        self._fh.write(chunk)

    def _store(self, digest: str) -> None:
        try:
            self._fh.flush()
            self._fh.seek(0)
            self.store._upload(self._fh, self.size, digest, look_first=self.size > PART)
        finally:
            self._fh.close()

    def abort(self) -> None:
        self._fh.close()


def _code(exc: Exception) -> str:
    """The S3 error code of a botocore ClientError ("" for any other error)."""
    return str(getattr(exc, "response", {}).get("Error", {}).get("Code", ""))


def make_client(endpoint_url: str | None) -> Any:
    """A boto3 S3 client configured the way boto3 users expect (environment, config files)."""
    try:
        import boto3
        from botocore.config import Config
    except ImportError as exc:
        raise ConfigError("an s3:// blob store needs boto3: pip install 'coopgrid[s3]'") from exc
    session = boto3.session.Session()
    custom = endpoint_url or os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    config = Config(
        signature_version="s3v4",
        retries={"max_attempts": 5, "mode": "standard"},
        # an S3-compatible server on a host name or address of its own serves buckets as paths
        s3={"addressing_style": "path"} if custom else None,
    )
    return session.client(
        "s3", endpoint_url=endpoint_url, region_name=session.region_name or "us-east-1", config=config
    )
