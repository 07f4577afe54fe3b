import pytest

from coopgrid.blobs import BlobStore
from coopgrid.errors import BlobNotFound, IntegrityError, InvalidInput
from coopgrid.protocol import sha256_hex


def test_blobs_are_named_by_their_hash(tmp_path):
    store = BlobStore(tmp_path)
    digest = store.put(b"hello")
    assert digest == sha256_hex(b"hello")
    assert store.get(digest) == b"hello" and store.verify(digest)
    assert store.put(b"hello") == digest


def test_blob_errors(tmp_path):
    store = BlobStore(tmp_path)
    with pytest.raises(IntegrityError):
        store.put(b"x", expected=sha256_hex(b"y"))
    with pytest.raises(BlobNotFound):
        store.get(sha256_hex(b"absent"))
    with pytest.raises(InvalidInput, match="not a sha256"):
        store.get("../../etc/passwd")
