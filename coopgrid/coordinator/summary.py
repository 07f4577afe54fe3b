"""A finished job's output and summary.

When the last task of a job is resolved, its task type's reducer turns the
accepted outputs into one Parquet file (stored as a blob) and the
coordinator adds the grid's own figures: items, tasks, replicas executed,
workers, elapsed time and throughput.
"""

from __future__ import annotations

import logging
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from coopgrid import tasks
from coopgrid.blobs import BlobStore
from coopgrid.dataset_shards import concat_datasets
from coopgrid.datasets import Dataset
from coopgrid.memory import release_unused
from coopgrid.store.base import JobRecord, Store
from coopgrid.tasks.base import TaskOutput, store_blob_files

log = logging.getLogger(__name__)

#: items reduced at once by a task type that streams (its piece of output is then appended); the
#: reduction's peak grows with it (~2.4 KB an item for echo: the rows, the piece's Arrow table and
#: Parquet pages, written and read back), and 16,384 made it the coordinator's peak in a
#: million-task job (+39 MB against +16 MB at 4,096, the time the same within noise)
REDUCE_CHUNK_ITEMS = 4_096


class _Peekable:
    def __init__(self, it: Iterator[Any]) -> None:
        self._it = it
        self._next: Any = None
        self._done = False

    def peek(self) -> Any:
        if self._next is None and not self._done:
            self._next = next(self._it, None)
            self._done = self._next is None
        return self._next

    def __next__(self) -> Any:
        value = self.peek()
        self._next = None
        return value


def put_file(blobs: BlobStore, path: Path) -> str:
    """A file stored as a blob a megabyte at a time (a million-task output is never read whole)."""
    with blobs.writer() as blob, path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            blob.write(chunk)
        return blob.commit()


def _as_job_schema(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """A piece's rows under the job's schema: a column the piece lacks, or holds only as nulls of
    another type (embed's embeddings of a piece where every item failed), as nulls of the job's
    type; any other column cast to it (e.g. classify's int labels to the strings they read as)."""
    columns = []
    for field in schema:
        col = table.column(field.name) if field.name in table.column_names else None
        if col is None or (col.null_count == len(col) and col.type != field.type):
            columns.append(pa.nulls(len(table), field.type))
        else:
            columns.append(col.cast(field.type))
    return pa.Table.from_arrays(columns, schema=schema)


class Summarizer:
    def __init__(self, store: Store, blobs: BlobStore) -> None:
        self.store = store
        self.blobs = blobs
        self._lock = threading.Lock()

    def finalize(self, job_id: str) -> JobRecord | None:
        """Reduce a complete job into its output; idempotent, safe to call twice."""
        with self._lock:
            job = self.store.get_job(job_id)
            if job is None or job.state != "running" or not job.complete:
                return job
            try:
                figures, output_hash = self._reduce(job)
            finally:
                release_unused()  # the reduction's buffers are job-sized and not needed again
            now = time.time()
            summary = self.figures(job, now) | figures
            if job.tasks_failed or job.tasks_inconclusive:
                # the reasons workers gave, where the submitter looks (status, summary, dashboard)
                summary["failure_reasons"] = [
                    {"reason": reason, "replicas": n} for reason, n in self.store.failure_reasons(job_id, limit=10)
                ]
            failed = job.tasks_done == 0 and job.n_tasks > 0
            # the owner reads its output and artefacts (e.g. the next job's dataset); no one else
            artefacts = list((figures.get("blobs") or {}).values())
            self.store.finish_job(job_id, summary, output_hash, now, artefacts, failed=failed)
            log.log(
                logging.WARNING if failed else logging.INFO,
                "job %s %s: %d/%d tasks done, %d failed, %d inconclusive, in %.1fs",
                job_id, "FAILED" if failed else "finished", job.tasks_done, job.n_tasks, job.tasks_failed,
                job.tasks_inconclusive, summary["elapsed_seconds"],
                extra={"event": "job_finished", "job": job_id, "state": "failed" if failed else "done", "tasks": job.n_tasks,
                       "tasks_done": job.tasks_done, "tasks_failed": job.tasks_failed,
                       "tasks_inconclusive": job.tasks_inconclusive, "elapsed_seconds": summary["elapsed_seconds"]},
            )
            return self.store.get_job(job_id)

    def finalize_cancelled(self, job_id: str) -> JobRecord | None:
        """Reduce what a cancelled job had accepted, so its owner can download it; idempotent.

        Results that arrive after this (replicas already in workers' hands) are recorded but not
        added to this output."""
        with self._lock:
            job = self.store.get_job(job_id)
            if job is None or job.state != "cancelled" or job.output_hash is not None or not job.tasks_done:
                return job
            figures, output_hash = self._reduce(job)
            summary = self.figures(job, job.finished_at or time.time()) | figures | {"cancelled": True}
            artefacts = list((figures.get("blobs") or {}).values())
            self.store.set_cancelled_output(job_id, summary, output_hash, artefacts)
            return self.store.get_job(job_id)

    def _reduce(self, job: JobRecord) -> tuple[dict[str, Any], str]:
        """The job's accepted outputs reduced: (the task type's figures, the output blob's hash)."""
        task_type = tasks.get(job.task_type)
        params = task_type.validate_params(job.params)
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "output.parquet"
            if task_type.streams:
                figures = self._reduce_streaming(job, task_type, params, out)
            else:
                # accepted at submission, under the limits of then (which may since have been lowered);
                # a task type that reduces the whole dataset gets its shards joined again
                dataset = concat_datasets(
                    [Dataset.from_npz(self.blobs.get(d), limits=None) for d in [job.dataset_hash, *job.shards]]
                )
                outputs = [
                    TaskOutput(o.task_index, o.first_item, o.n_items, o.worker_address, task_type.decode(o.output))
                    for o in self.store.accepted_outputs(job.id)
                ]
                figures = task_type.reduce(outputs, dataset, params, out)
            # extra files a reducer wrote (e.g. preprocess's dataset.npz, the next job's input)
            figures = store_blob_files(figures, out.parent, self.blobs.put)
            output_hash = put_file(self.blobs, out)
        return figures, output_hash

    def _reduce_streaming(self, job: JobRecord, task_type: Any, params: Any, out: Path) -> dict[str, Any]:
        """Reduce shard by shard and, within a shard, REDUCE_CHUNK_ITEMS at a time, each piece to its
        own Parquet file; then copy the pieces into ``out``, a row group each, under one schema.

        The pieces' schemas may differ (a column only some have, a type picked from a piece's rows),
        and the job's is only known once all are written (``task_type.job_schema``). Memory holds
        one shard and one piece, never the job; the disk, the job's output about twice."""
        figures: dict[str, Any] = {}
        pieces: list[Path] = []
        for dataset, chunk in self._pieces(job, task_type):
            pieces.append(out.with_name(f"piece-{len(pieces)}.parquet"))
            task_type.merge_figures(figures, task_type.reduce_piece(chunk, dataset, params, pieces[-1]))
            del dataset, chunk  # or the shard stays alive while the next one is read
        schema = task_type.job_schema([pq.read_schema(p) for p in pieces])
        with pq.ParquetWriter(out, schema) as writer:
            for piece in pieces:
                writer.write_table(_as_job_schema(pq.read_table(piece), schema))
                piece.unlink()
        return task_type.finish_figures(figures, params)

    def _pieces(self, job: JobRecord, task_type: Any) -> Iterator[tuple[Dataset, list[TaskOutput]]]:
        """The job's accepted outputs in runs of whole tasks of about REDUCE_CHUNK_ITEMS items within a
        shard, each with its shard (their first items relative to it); one shard loaded at a time."""
        outputs = _Peekable(self.store.accepted_outputs(job.id))
        if outputs.peek() is None:  # nothing accepted: one empty piece, so that the output has its columns
            yield Dataset.from_npz(self.blobs.get(job.dataset_hash), limits=None), []
            return
        offset = 0
        for digest in [job.dataset_hash, *job.shards]:
            if outputs.peek() is None:
                return
            dataset = Dataset.from_npz(self.blobs.get(digest), limits=None)
            dataset.id_offset = offset
            end = offset + len(dataset)
            while (o := outputs.peek()) is not None and o.first_item < end:
                chunk, n = [], 0
                while n < REDUCE_CHUNK_ITEMS and (o := outputs.peek()) is not None and o.first_item < end:
                    next(outputs)
                    chunk.append(TaskOutput(o.task_index, o.first_item - offset, o.n_items, o.worker_address,
                                            task_type.decode(o.output)))
                    n += o.n_items
                yield dataset, chunk
            offset = end
            del dataset

    def figures(self, job: JobRecord, now: float) -> dict[str, Any]:
        counts = self.store.replica_counts(job.id)
        per_worker = self.store.job_workers(job.id)
        trust = self.store.trust_counts(job.id)
        elapsed = max((job.finished_at or now) - job.created_at, 1e-9)
        executed = counts.get("done", 0) + counts.get("failed", 0)
        return {
            "items": job.n_items,
            "tasks": job.n_tasks,
            "tasks_done": job.tasks_done,
            "tasks_provisional": trust["tasks_provisional"],
            "tasks_failed": job.tasks_failed,
            "tasks_inconclusive": job.tasks_inconclusive,
            "replicas_executed": executed,
            "replicas_expired": counts.get("expired", 0),
            "replicas_by_kind": trust["replicas_by_kind"],
            # compute overhead: replicas run per accepted task (1.0 = no redundancy)
            "replicas_per_task": round(executed / job.tasks_done, 3) if job.tasks_done else None,
            "results": trust["results"],
            "workers": len(per_worker),
            "tasks_per_worker": per_worker,
            "elapsed_seconds": round(elapsed, 3),
            "items_per_second": round(job.n_items / elapsed, 1),
        }
