"""Who may read a blob, in the SQL store (a mixin of :class:`SqlStore`).

Each lookup is one statement on indexes: ``blob_readers``' primary key,
``ix_jobs_dataset``, ``ix_tasks_input_blob`` (blob inputs only) and
``ix_leases_worker_open`` (a worker's open leases, a handful of rows). The
decision itself is :func:`coopgrid.coordinator.access.can_read`.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy import exists, select, text
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from coopgrid.store import schema as s
from coopgrid.store.schema import ReplicaState

# A worker's live replicas: leased, not answered yet, in an open lease not past its deadline.
# Inputs are looked up from the task (its replicas are few); the dataset from the worker's
# open leases (a job's leased replicas may be thousands, one worker's are one batch).
# CROSS JOIN makes SQLite keep that order; PostgreSQL plans it as any inner join.
_WORKER_READS = text(
    "SELECT EXISTS (SELECT 1 FROM tasks t JOIN replicas r ON r.task_id = t.id JOIN leases l ON l.id = r.lease_id"
    " WHERE t.input_hash = :blob AND t.input_data IS NULL AND r.worker_id = :worker AND r.state = :leased"
    " AND l.state = 'open' AND l.expires_at >= :now)"
    " OR EXISTS (SELECT 1 FROM leases l CROSS JOIN replicas r CROSS JOIN jobs j"
    " WHERE l.worker_id = :worker AND l.state = 'open' AND l.expires_at >= :now"
    " AND r.lease_id = l.id AND r.state = :leased AND j.id = r.job_id AND j.dataset_hash = :blob)"
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
            return conn.execute(select(s.models.c.hash).where(s.models.c.hash == blob)).first() is not None

    def token_reads_blob(self, blob: str, token_id: int) -> bool:
        granted = exists().where(s.blob_readers.c.blob == blob, s.blob_readers.c.token_id == token_id)
        dataset = exists().where(s.jobs.c.dataset_hash == blob, s.jobs.c.owner_token_id == token_id)
        task_input = (
            exists()
            .select_from(s.tasks.join(s.jobs, s.jobs.c.id == s.tasks.c.job_id))
            .where(s.tasks.c.input_hash == blob, s.tasks.c.input_data.is_(None), s.jobs.c.owner_token_id == token_id)
        )
        with self._read() as conn:
            return bool(conn.execute(select(granted | dataset | task_input)).scalar())

    def worker_reads_blob(self, blob: str, worker_id: int, now: float) -> bool:
        params = {"blob": blob, "worker": worker_id, "now": now, "leased": int(ReplicaState.LEASED)}
        with self._read() as conn:
            return bool(conn.execute(_WORKER_READS, params).scalar())
