"""Retention: a sealed job's per-replica rows move to a Parquet archive and leave the database.

As BOINC's db_purge does, a finished job whose accepted results are all in committed epochs
(or, without a ledger, final) keeps only its ``jobs`` row once ``retention_seconds`` have
passed: its task, replica and result rows (and the result batches and leases left empty) are
written to Parquet blobs, indexed by one JSON blob (``jobs.archive_hash``), and deleted.

Proofs keep working: the leaf values of a task's result are read back from the archive and
its proof from the epoch's results tree dump, which sealing stored as a blob.
:func:`purge_sealed_jobs` is the periodic duty (the coordinator's duty loop calls it).
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from sqlalchemy import Boolean, Float, Integer, LargeBinary

from coopgrid.blobs import BlobStore
from coopgrid.coordinator.summary import put_file
from coopgrid.memory import release_unused
from coopgrid.store import schema as s
from coopgrid.store.base import JobRecord, SealedResult, Store
from coopgrid.store.schema import ResultStatus

log = logging.getLogger(__name__)

ARCHIVE_FORMAT = "coopgrid-archive/1"
TABLES = ("tasks", "replicas", "results", "result_batches")
#: columns the results archive adds to the table's own (what a proof needs without the tasks table)
_RESULT_EXTRA = {"task_index": pa.int64(), "input_hash": pa.string(), "worker_address": pa.string()}


def _arrow_schema(table: str) -> pa.Schema:
    fields = []
    for col in getattr(s, table).columns:
        t = col.type
        kind = (pa.binary() if isinstance(t, LargeBinary) else pa.bool_() if isinstance(t, Boolean)
                else pa.float64() if isinstance(t, Float) else pa.int64() if isinstance(t, Integer) else pa.string())
        fields.append(pa.field(col.name, kind))
    if table == "results":
        fields += [pa.field(name, kind) for name, kind in _RESULT_EXTRA.items()]
    return pa.schema(fields)


def archive_job(store: Store, blobs: BlobStore, job_id: str) -> str:
    """Write the job's rows to Parquet blobs (a row group per batch) and their index; its hash."""
    index: dict[str, Any] = {"format": ARCHIVE_FORMAT, "job": job_id, "rows": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for table in TABLES:
            schema = _arrow_schema(table)
            path = Path(tmp) / f"{table}.parquet"
            rows = 0
            with pq.ParquetWriter(path, schema) as writer:
                for batch in store.archive_rows(job_id, table):
                    writer.write_table(pa.Table.from_pylist(batch, schema=schema))
                    rows += len(batch)
                if not rows:
                    writer.write_table(schema.empty_table())
            index[table] = put_file(blobs, path)
            index["rows"][table] = rows
    return blobs.put(json.dumps(index, sort_keys=True).encode())


def purge_sealed_jobs(store: Store, blobs: BlobStore, retention_seconds: float, sealed: bool,
                      now: float | None = None, limit: int = 10) -> list[str]:
    """Archive and purge up to ``limit`` jobs finished more than ``retention_seconds`` ago whose
    results are settled (``sealed``: in committed epochs); the jobs purged."""
    now = time.time() if now is None else now
    purged = []
    for job_id in store.jobs_to_archive(now - retention_seconds, sealed, limit):
        archive = archive_job(store, blobs, job_id)
        rows = store.purge_job(job_id, archive, now)
        release_unused()  # the archive's Parquet buffers and row dicts: job-sized, not needed again
        if rows:
            purged.append(job_id)
            log.info("job %s archived to %s and %d rows purged", job_id, archive, rows,
                     extra={"event": "job_archived", "job": job_id, "archive": archive, "rows": rows})
    return purged


def _table(blobs: BlobStore, digest: str, filters: Any = None) -> pa.Table:
    path = blobs.path(digest) if hasattr(blobs, "path") else None
    source: Any = path if path is not None and path.exists() else pa.BufferReader(blobs.get(digest))
    return pq.read_table(source, filters=filters)


def archive_index(blobs: BlobStore, job: JobRecord) -> dict[str, Any]:
    return json.loads(blobs.get(job.archive_hash or ""))


def archived_result(blobs: BlobStore, job: JobRecord, task_index: int) -> SealedResult | None:
    """The sealed result of a purged job's task, read from its archive (None if it had none)."""
    index = archive_index(blobs, job)
    found = _table(blobs, index["results"],
                   filters=[("task_index", "=", task_index), ("status", "=", ResultStatus.ACCEPTED.value)])
    if not found.num_rows:
        return None
    row = found.slice(0, 1).to_pylist()[0]
    return SealedResult(row["epoch"], job.id, task_index, job.model_hash, row["input_hash"], row["output_hash"],
                        row["worker_address"])


def archived_table(blobs: BlobStore, job: JobRecord, table: str) -> pa.Table:
    """One table of a purged job's archive (e.g. for an operator's audit)."""
    if table not in TABLES:
        raise ValueError(f"an archive holds {', '.join(TABLES)}, not {table!r}")
    return _table(blobs, archive_index(blobs, job)[table])
