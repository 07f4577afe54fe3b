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


def _add_figures(total: dict[str, Any], more: dict[str, Any]) -> None:
    """Figures of consecutive pieces of one job: counts add up; anything else is the first piece's."""
    for key, value in more.items():
        if key in total and isinstance(value, int) and not isinstance(value, bool):
            total[key] += value
        else:
            total.setdefault(key, value)


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
        """Reduce shard by shard and, within a shard, REDUCE_CHUNK_ITEMS at a time, each piece's
        Parquet appended to ``out`` as row groups: memory holds one shard and one piece, never the job."""
        figures: dict[str, Any] = {}
        piece = out.with_name("piece.parquet")
        writer: pq.ParquetWriter | None = None
        outputs = _Peekable(self.store.accepted_outputs(job.id))
        offset = 0
        try:
            for digest in [job.dataset_hash, *job.shards]:
                dataset = Dataset.from_npz(self.blobs.get(digest), limits=None)
                dataset.id_offset = offset
                end = offset + len(dataset)
                while True:
                    chunk, n = [], 0
                    while n < REDUCE_CHUNK_ITEMS and (o := outputs.peek()) is not None and o.first_item < end:
                        next(outputs)
                        chunk.append(TaskOutput(o.task_index, o.first_item - offset, o.n_items, o.worker_address,
                                                task_type.decode(o.output)))
                        n += o.n_items
                    if not chunk and writer is not None:
                        break
                    _add_figures(figures, task_type.reduce(chunk, dataset, params, piece))
                    table = pq.read_table(piece)
                    if writer is None:
                        writer = pq.ParquetWriter(out, table.schema)
                    writer.write_table(table)
                    del table, chunk
                    if outputs.peek() is None or outputs.peek().first_item >= end:
                        break
                offset = end
                del dataset
        finally:
            if writer is not None:
                writer.close()
        return figures

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
