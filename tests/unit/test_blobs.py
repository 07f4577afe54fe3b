import pytest

from coopgrid.blobs import DirectoryBlobStore, open_blob_store
from coopgrid.blobs.s3 import parse_s3_url
from coopgrid.errors import BlobNotFound, ConfigError, IntegrityError, InvalidInput
from coopgrid.protocol import sha256_hex


def test_blobs_are_named_by_their_hash(tmp_path):
    store = DirectoryBlobStore(tmp_path)
    digest = store.put(b"hello")
    assert digest == sha256_hex(b"hello")
    assert store.get(digest) == b"hello" and store.verify(digest)
    assert store.put(b"hello") == digest


def test_blob_errors(tmp_path):
    store = DirectoryBlobStore(tmp_path)
    with pytest.raises(IntegrityError):
        store.put(b"x", expected=sha256_hex(b"y"))
    with pytest.raises(BlobNotFound):
        store.get(sha256_hex(b"absent"))
    with pytest.raises(InvalidInput, match="not a sha256"):
        store.get("../../etc/passwd")


def test_the_blob_store_flag_picks_a_backend(tmp_path):
    default = open_blob_store(None, tmp_path / "data")
    assert isinstance(default, DirectoryBlobStore) and default.root == tmp_path / "data" / "blobs"
    assert not default.shared
    shared = open_blob_store(str(tmp_path / "nfs" / "blobs"), tmp_path / "data")
    assert isinstance(shared, DirectoryBlobStore) and shared.shared and shared.root == tmp_path / "nfs" / "blobs"
    assert parse_s3_url("s3://grid-blobs") == ("grid-blobs", "")
    assert parse_s3_url("s3://grid-blobs/eu/prod/") == ("grid-blobs", "eu/prod/")


@pytest.mark.parametrize("spec, says", [
    ("s3://", "no s3://BUCKET"),
    ("s3://bucket?region=x", "no s3://BUCKET"),
    ("gs://bucket/blobs", "give a directory or an s3://"),
    ("FILE", "is a file, not a directory"),
])
def test_a_blob_store_flag_that_names_nothing_usable_says_what_to_give(tmp_path, spec, says):
    (tmp_path / "FILE").write_text("not a directory")
    with pytest.raises(ConfigError, match=says):
        open_blob_store(str(tmp_path / spec) if spec == "FILE" else spec, tmp_path / "data")


def test_uploads_left_by_a_crashed_process_are_swept_at_start_and_live_ones_kept(tmp_path):
    import os
    import time

    store = DirectoryBlobStore(tmp_path)
    with store.writer() as live:
        live.write(b"still arriving")
        dead = tmp_path / ".upload-dead"
        dead.write_bytes(b"half an upload")
        old = time.time() - 2 * 24 * 3600
        os.utime(dead, (old, old))
        DirectoryBlobStore(tmp_path)  # another coordinator starting on the shared directory
        assert not dead.exists() and live._tmp.exists()
        assert live.commit() == sha256_hex(b"still arriving")
