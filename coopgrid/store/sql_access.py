"""Who may read a blob, in the SQL store (a mixin of :class:`SqlStore`).

Every lookup is a statement or two on indexes: ``blob_readers``' primary key,
``ix_jobs_dataset``, ``ix_tasks_input_blob`` (blob inputs only) and
``ix_leases_worker_open`` (a worker's open leases, a handful of rows); none
scans a table. The decision itself is :func:`coopgrid.coordinator.access.can_read`.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy import text
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from coopgrid.store import schema as s
from coopgrid.store.schema import ReplicaState

# Published models' bytes (a manifest lives in the models row, not in a blob).
_PUBLIC = text("SELECT 1 FROM models WHERE hash = :blob")
# A token's own: a grant, or a job it owns using the blob as its dataset or as a task's input.
_TOKEN_READS = text(
    "SELECT EXISTS (SELECT 1 FROM blob_readers WHERE blob = :blob AND token_id = :token)"
    " OR EXISTS (SELECT 1 FROM jobs WHERE dataset_hash = :blob AND owner_token_id = :token)"
    " OR EXISTS (SELECT 1 FROM tasks t JOIN jobs j ON j.id = t.job_id"
    " WHERE t.input_hash = :blob AND t.input_data IS NULL AND j.owner_token_id = :token)"
)
# A worker's live replicas: leased, not answered yet, in an open lease not past its deadline.
# An input is looked up from its task (a task has a few replicas): the read workers make.
_WORKER_READS_INPUT = text(
    "SELECT 1 FROM tasks t JOIN replicas r ON r.task_id = t.id JOIN leases l ON l.id = r.lease_id"
    " WHERE t.input_hash = :blob AND t.input_data IS NULL AND r.worker_id = :worker AND r.state = :leased"
    " AND l.state = 'open' AND l.expires_at >= :now LIMIT 1"
)
# A dataset from the worker's open leases: a job's leased replicas may be thousands, one
# worker's are its batch. CROSS JOIN keeps that order in SQLite; PostgreSQL plans it as a join.
_WORKER_READS_DATASET = text(
    "SELECT 1 FROM leases l CROSS JOIN replicas r CROSS JOIN jobs j"
    " WHERE l.worker_id = :worker AND l.state = 'open' AND l.expires_at >= :now"
    " AND r.lease_id = l.id AND r.state = :leased AND j.id = r.job_id AND j.dataset_hash = :blob LIMIT 1"
)


class AccessQueries:
    """Mixed into SqlStore, which provides ``_read``, ``_write`` and ``dialect``."""

    _read: Any
    _write: Any
    dialect: str

    def grant_blob(self, blob: str, token_id: int) -> None:
        with self._write() as conn:
            self._grant_blobs(conn, [blob], token_id)

    def _grant_blobs(self, conn: Any, blobs: Iterable[str], token_id: int) -> None:
        rows = [{"blob": b, "token_id": token_id} for b in sorted(set(blobs))]
        if rows:
            ins = (pg_insert if self.dialect == "postgresql" else sqlite_insert)(s.blob_readers)
            conn.execute(ins.on_conflict_do_nothing(), rows)

    def public_blob(self, blob: str) -> bool:
        with self._read() as conn:
            return conn.execute(_PUBLIC, {"blob": blob}).first() is not None

    def token_reads_blob(self, blob: str, token_id: int) -> bool:
        with self._read() as conn:
            return bool(conn.execute(_TOKEN_READS, {"blob": blob, "token": token_id}).scalar())

    def worker_reads_blob(self, blob: str, worker_id: int, now: float) -> bool:
        params = {"blob": blob, "worker": worker_id, "now": now, "leased": int(ReplicaState.LEASED)}
        with self._read() as conn:
            for query in (_WORKER_READS_INPUT, _WORKER_READS_DATASET):
                if conn.execute(query, params).first() is not None:
                    return True
        return False
