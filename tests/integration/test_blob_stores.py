"""The blob store contract, run against every backend (coopgrid/blobs/).

- ``datadir``: the data dir's directory (the default);
- ``shared``: a directory two stores use at once, as coordinator processes on different data
  dirs do (every test below writes through one store and reads through the other);
- ``s3``: an S3-compatible object store, moto's standalone server in a process of its own.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from coopgrid.blobs import BlobStore, DirectoryBlobStore, open_blob_store
from coopgrid.blobs.s3 import PART, S3BlobStore
from coopgrid.errors import BlobNotFound, ConfigError, IntegrityError, InvalidInput
from coopgrid.protocol import sha256_hex
from memory_peak import peak_growth
from tests.s3_server import S3Server

MiB = 1 << 20


@dataclass
class Backend:
    name: str
    writer: BlobStore  # where a test writes
    reader: BlobStore  # where it reads: another process's store for a shared backend
    new: Callable[[], BlobStore]  # one more store on the same bytes (another coordinator)
    corrupt: Callable[[str, bytes], None]  # replace a stored blob's bytes behind the store's back


@pytest.fixture(params=["datadir", "shared", "s3"])
def backend(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Backend]:
    if request.param == "s3":
        server: S3Server = request.getfixturevalue("s3_server")
        bucket = server.new_bucket()

        for name, value in server.env.items():  # configured as boto3 users do, through the environment
            monkeypatch.setenv(name, value)

        def new() -> BlobStore:
            return S3BlobStore(bucket, "grid-a/", spool_dir=tmp_path / "spool")

        def corrupt(digest: str, data: bytes) -> None:
            server.client().put_object(Bucket=bucket, Key=f"grid-a/{digest[:2]}/{digest}", Body=data)

        store = new()
        yield Backend("s3", store, new(), new, corrupt)
        return

    root = tmp_path / "blobs"
    shared = request.param == "shared"

    def new() -> BlobStore:  # type: ignore[no-redef]
        return DirectoryBlobStore(root, shared=shared)

    def corrupt(digest: str, data: bytes) -> None:  # type: ignore[no-redef]
        path = root / digest[:2] / digest
        os.chmod(path, 0o600)
        path.write_bytes(data)

    first = new()
    yield Backend(request.param, first, new() if shared else first, new, corrupt)


def test_a_blob_is_stored_under_its_hash_and_read_back(backend: Backend) -> None:
    digest = backend.writer.put(b"hello")
    assert digest == sha256_hex(b"hello")
    r = backend.reader
    assert r.exists(digest) and r.get(digest) == b"hello" and r.size(digest) == 5 and r.verify(digest)
    assert backend.writer.put(b"hello") == digest  # storing it again changes nothing
    assert list(r.names()) == [digest]


def test_a_large_blob_streams_in_and_out_in_pieces(backend: Backend) -> None:
    piece = os.urandom(MiB)
    n = 2 * PART // MiB + 1  # past the multipart threshold: three parts for S3
    with backend.writer.writer() as w:
        for i in range(n):
            w.write(bytes([i]) + piece[1:])
        digest = w.commit()
    expected = hashlib.sha256()
    for i in range(n):
        expected.update(bytes([i]) + piece[1:])
    assert digest == expected.hexdigest() and w.size == n * MiB
    got, pieces = hashlib.sha256(), 0
    with backend.reader.open(digest) as fh:
        while chunk := fh.read(MiB):
            got.update(chunk)
            pieces += 1
    assert got.hexdigest() == digest and pieces >= n
    assert backend.reader.size(digest) == n * MiB
    if backend.name == "s3":  # a multipart object's ETag counts its parts
        head = backend.writer.client.head_object(Bucket=backend.writer.bucket, Key=backend.writer.key(digest))
        assert head["ETag"].strip('"').endswith(f"-{-(-n * MiB // PART)}")


def test_a_missing_blob_is_not_found_and_a_malformed_name_is_refused(backend: Backend) -> None:
    missing = sha256_hex(b"never stored")
    r = backend.reader
    assert not r.exists(missing)
    for read in (r.get, r.open, r.size):
        with pytest.raises(BlobNotFound):
            read(missing)
    assert r.delete(missing) is False
    for bad in ("../../etc/passwd", missing.upper(), missing[:-1], ""):
        with pytest.raises(InvalidInput, match="not a sha256"):
            r.get(bad)


def test_bytes_that_do_not_match_the_expected_hash_are_refused_and_not_stored(backend: Backend) -> None:
    with pytest.raises(IntegrityError):
        backend.writer.put(b"x", expected=sha256_hex(b"y"))
    with backend.writer.writer() as w:
        w.write(b"x")
        with pytest.raises(IntegrityError):
            w.commit(expected=sha256_hex(b"y"))
    assert list(backend.reader.names()) == []
    assert not backend.reader.exists(sha256_hex(b"x")) and not backend.reader.exists(sha256_hex(b"y"))


def test_a_blob_corrupted_in_the_store_is_refused_when_read(backend: Backend) -> None:
    digest = backend.writer.put(b"the true bytes")
    backend.corrupt(digest, b"other bytes")
    assert not backend.reader.verify(digest)
    with pytest.raises(IntegrityError, match="corrupt"):
        backend.reader.get(digest)


def test_an_aborted_upload_leaves_nothing_behind(backend: Backend) -> None:
    with pytest.raises(RuntimeError), backend.writer.writer() as w:
        w.write(b"half an upload")
        raise RuntimeError("the client went away")
    assert list(backend.reader.names()) == []
    if isinstance(backend.writer, DirectoryBlobStore):  # no temporary file either
        assert [p for p in backend.writer.root.rglob("*") if p.is_file()] == []


def test_stores_writing_the_same_blob_at_once_all_succeed_with_one_copy(backend: Backend) -> None:
    data = os.urandom(3 * MiB)
    digest, results, errors = sha256_hex(data), [], []
    stores = [backend.new() for _ in range(6)]  # one per writer, as separate coordinators have
    start = threading.Barrier(len(stores))

    def write(store: BlobStore, streamed: bool) -> None:
        try:
            start.wait()
            if streamed:
                with store.writer() as w:
                    for i in range(0, len(data), 256 * 1024):
                        w.write(data[i:i + 256 * 1024])
                    results.append(w.commit())
            else:
                results.append(store.put(data))
        except Exception as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(s, i % 2 == 0)) for i, s in enumerate(stores)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and results == [digest] * len(stores)
    assert list(backend.reader.names()) == [digest] and backend.reader.get(digest) == data


def test_blobs_are_listed_and_deleted(backend: Backend) -> None:
    digests = {backend.writer.put(f"blob {i}".encode()) for i in range(5)}
    assert set(backend.reader.names()) == digests
    gone = sorted(digests)[0]
    assert backend.reader.delete(gone) is True
    assert not backend.writer.exists(gone) and set(backend.writer.names()) == digests - {gone}
    with pytest.raises(BlobNotFound):
        backend.writer.get(gone)


def test_only_an_object_store_gives_urls_and_its_url_serves_the_blob(backend: Backend) -> None:
    digest = backend.writer.put(b"fetch me directly")
    url = backend.reader.url(digest, 60)
    if backend.name != "s3":
        assert url is None  # workers fetch through the coordinator
        return
    assert url is not None and "X-Amz-Signature=" in url and "X-Amz-Expires=60" in url
    r = httpx.get(url)
    assert r.status_code == 200 and r.content == b"fetch me directly"


def test_a_shared_directory_is_readable_by_the_coordinators_group_and_the_data_dir_stays_private(
    tmp_path: Path,
) -> None:
    old = os.umask(0o077)  # the coordinator's umask (coordinator/server.py)
    try:
        for shared, mode in ((True, 0o640), (False, 0o600)):
            store = DirectoryBlobStore(tmp_path / f"shared-{shared}", shared=shared)
            digest = store.put(b"for every coordinator")
            with store.writer() as w:
                w.write(b"streamed, for every coordinator")
                streamed = w.commit()
            for d in (digest, streamed):
                path = store.root / d[:2] / d
                assert path.stat().st_mode & 0o777 == mode, (shared, oct(path.stat().st_mode))
                assert path.parent.stat().st_mode & 0o777 == mode | 0o100 | (0o010 if shared else 0)
    finally:
        os.umask(old)


def test_a_blob_larger_than_memory_allows_streams_through_in_bounded_memory(backend: Backend) -> None:
    piece, n = os.urandom(MiB), 64  # 64 MiB in and out; neither side may hold it whole

    def write() -> str:
        with backend.writer.writer() as w:
            for _ in range(n):
                w.write(piece)
            return w.commit()

    def read(digest: str) -> int:
        size = 0
        with backend.reader.open(digest) as fh:
            while chunk := fh.read(MiB):
                size += len(chunk)
        return size

    digest, grew_writing = peak_growth(write)
    size, grew_reading = peak_growth(lambda: read(digest))
    assert size == n * MiB and backend.reader.verify(digest)
    print(f"{backend.name}: memory grew {grew_writing / MiB:.1f} MiB writing, {grew_reading / MiB:.1f} MiB reading")
    assert grew_writing < n * MiB / 2 and grew_reading < n * MiB / 2


def test_a_bucket_that_does_not_exist_is_named_at_start(
    s3_server: S3Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in s3_server.env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError, match="has no bucket no-such-bucket: create it"):
        open_blob_store("s3://no-such-bucket/grid", tmp_path)
