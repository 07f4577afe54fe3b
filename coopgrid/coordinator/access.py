"""Who may read a blob: knowing its hash is no credential.

Blobs are content-addressed (the same bytes are stored once, under their
sha256), so a hash says nothing about who may read the bytes. The rules:

- a published model's bytes: anyone authenticated (tokens and registered workers);
- operators: every blob;
- a submitter: what it uploaded (PUT /v1/blobs), the dataset and task input blobs of
  its jobs, and its jobs' outputs and other reduced artefacts;
- a worker: the input blob of a task, and the dataset of a job, while it holds a live
  lease on one of its replicas (not after the lease expired or the replica was answered).

A refused read is answered exactly like a missing blob (:func:`unreadable`, 404), so
nobody learns whether some hash is stored. Sealed epoch dumps are served by
``/v1/ledger/epochs/{n}/results-tree`` to anyone and are no concern of this module.
"""

from __future__ import annotations

from coopgrid.errors import BlobNotFound
from coopgrid.store.base import Store, Token, WorkerRecord


def can_read(store: Store, who: Token | WorkerRecord, digest: str, now: float) -> bool:
    """Whether ``who`` (an API token or a registered worker) may read the blob ``digest`` at ``now``."""
    if isinstance(who, Token) and who.role == "operator":
        return True
    if store.public_blob(digest):
        return True
    if isinstance(who, Token):
        return store.token_reads_blob(digest, who.id)
    return store.worker_reads_blob(digest, who.id, now)


def unreadable(digest: str) -> BlobNotFound:
    """The one answer to a blob that is missing or that the caller may not read."""
    return BlobNotFound(f"no blob {digest} that you may read", digest=digest)


def unreadable_dataset(digest: str) -> BlobNotFound:
    """The one answer to a job naming a dataset that is missing or that its submitter may not read."""
    return BlobNotFound(
        f"no dataset {digest} that you may read: upload it first (PUT /v1/blobs), "
        "or name the output of one of your own jobs",
        digest=digest,
    )
