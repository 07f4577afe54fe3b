"""Retention in the SQL store (a mixin of :class:`SqlStore`): a sealed job's task, replica and
result rows are read out for their Parquet archive, then purged, as BOINC's db_purge does.

The job row stays (its summary, output and archive hash); what proofs need afterwards is in
the epochs' tree dumps and the archive (coordinator/retention.py).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from sqlalchemy import delete, exists, select, update

from coopgrid.store import schema as s
from coopgrid.store.schema import EpochState, JobState, ReplicaState, ResultStatus

#: rows read (and written to the archive) at a time
ARCHIVE_BATCH = 5_000
#: a result batch's row holds its signed list (~80 B a result, so ~80 KB for a lease of 1,000):
#: 5,000 of them at once were a million-task job's every batch, ~80 MB of text that its Python
#: rows, Arrow table and Parquet pages held several times over (the coordinator peaked ~900 MB)
ARCHIVE_BATCH_ROWS = {"result_batches": 20}


class RetentionQueries:
    """Mixed into SqlStore, which provides ``_read`` and ``_write``."""

    _read: Any
    _write: Any

    def jobs_to_archive(self, finished_before: float, sealed: bool, limit: int = 10) -> list[str]:
        """Finished jobs whose rows may go: nothing of theirs is still leased, provisional or (when
        ``sealed``) waiting for a committed epoch, and they are not held out of sealing."""
        j, r = s.jobs, s.results
        paid = r.c.status.in_([ResultStatus.ACCEPTED.value, ResultStatus.VALID.value])
        committed = select(s.epochs.c.number).where(s.epochs.c.state == EpochState.COMMITTED.value)
        unsettled = ~r.c.final
        if sealed:
            unsettled = unsettled | r.c.epoch.is_(None) | r.c.epoch.not_in(committed)
        # a quarantined worker not slashed yet: the evidence for its slash is read from these rows
        to_slash = select(s.workers.c.id).where(
            s.workers.c.quarantined_at.is_not(None), s.workers.c.id.not_in(select(s.slashes.c.worker_id))
        )
        q = (
            select(j.c.id)
            .where(
                j.c.archived_at.is_(None),
                j.c.state.in_([JobState.DONE.value, JobState.FAILED.value, JobState.CANCELLED.value]),
                j.c.finished_at <= finished_before,
                j.c.seal_error.is_(None),
                ~exists().where(r.c.job_id == j.c.id, paid & unsettled),
                ~exists().where(r.c.job_id == j.c.id, r.c.worker_id.in_(to_slash)),
                ~exists().where(s.replicas.c.job_id == j.c.id, s.replicas.c.state == int(ReplicaState.LEASED)),
            )
            .order_by(j.c.finished_at)
            .limit(limit)
        )
        with self._read() as conn:
            return [row.id for row in conn.execute(q)]

    def archive_rows(self, job_id: str, table: str) -> Iterator[list[dict[str, Any]]]:
        """The job's rows of ``table`` (tasks, replicas, results, result_batches), a batch at a time;
        results carry the task index, input hash and worker address a proof needs."""
        if table == "results":
            q = (
                select(s.results, s.tasks.c.idx.label("task_index"), s.tasks.c.input_hash,
                       s.workers.c.address.label("worker_address"))
                .join(s.tasks, s.tasks.c.id == s.results.c.task_id)
                .join(s.workers, s.workers.c.id == s.results.c.worker_id)
                .where(s.results.c.job_id == job_id)
                .order_by(s.results.c.id)
            )
        elif table == "result_batches":
            q = (
                select(s.result_batches)
                .where(s.result_batches.c.id.in_(select(s.results.c.batch_id).where(s.results.c.job_id == job_id)))
                .order_by(s.result_batches.c.id)
            )
        else:
            t = {"tasks": s.tasks, "replicas": s.replicas}[table]
            q = select(t).where(t.c.job_id == job_id).order_by(t.c.id)
        size = ARCHIVE_BATCH_ROWS.get(table, ARCHIVE_BATCH)
        with self._read() as conn:
            result = conn.execute(q.execution_options(yield_per=size))
            for part in result.partitions(size):
                yield [row._asdict() for row in part]

    def purge_job(self, job_id: str, archive_hash: str, now: float) -> int:
        """Delete the job's task, replica and result rows (and the batches and leases left with no
        rows), record its archive; returns the rows deleted. Nothing is deleted if the job was
        archived meanwhile (another process) or is no longer purgeable."""
        with self._write() as conn:
            done = conn.execute(
                update(s.jobs)
                .where(s.jobs.c.id == job_id, s.jobs.c.archived_at.is_(None))
                .values(archive_hash=archive_hash, archived_at=now)
            ).rowcount
            if not done:
                return 0
            batches = select(s.results.c.batch_id).where(s.results.c.job_id == job_id).distinct()
            leases = select(s.replicas.c.lease_id).where(s.replicas.c.job_id == job_id, s.replicas.c.lease_id.is_not(None))
            batch_ids = [b for (b,) in conn.execute(batches)]
            lease_ids = [lid for (lid,) in conn.execute(leases.distinct())]
            n = conn.execute(delete(s.results).where(s.results.c.job_id == job_id)).rowcount
            n += conn.execute(delete(s.replicas).where(s.replicas.c.job_id == job_id)).rowcount
            n += conn.execute(delete(s.tasks).where(s.tasks.c.job_id == job_id)).rowcount
            # a batch or lease may hold other jobs' replicas too: it goes with the last of them
            for chunk in _chunked(batch_ids):
                n += conn.execute(
                    delete(s.result_batches).where(
                        s.result_batches.c.id.in_(chunk),
                        ~exists().where(s.results.c.batch_id == s.result_batches.c.id),
                    )
                ).rowcount
            for chunk in _chunked(lease_ids):
                n += conn.execute(
                    delete(s.leases).where(
                        s.leases.c.id.in_(chunk),
                        s.leases.c.state != "open",
                        ~exists().where(s.replicas.c.lease_id == s.leases.c.id),
                        ~exists().where(s.result_batches.c.lease_id == s.leases.c.id),
                    )
                ).rowcount
        return n


def _chunked(ids: list[int], size: int = 500) -> Iterator[list[int]]:
    for i in range(0, len(ids), size):
        yield ids[i : i + size]
