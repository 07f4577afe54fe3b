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
from pathlib import Path
from typing import Any

from coopgrid import tasks
from coopgrid.blobs import BlobStore
from coopgrid.datasets import Dataset
from coopgrid.store.base import JobRecord, Store
from coopgrid.tasks.base import TaskOutput, store_blob_files

log = logging.getLogger(__name__)


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
            task_type = tasks.get(job.task_type)
            params = task_type.validate_params(job.params)
            # accepted at submission, under the limits of then (which may since have been lowered)
            dataset = Dataset.from_npz(self.blobs.get(job.dataset_hash), limits=None)
            outputs = [
                TaskOutput(o.task_index, o.first_item, o.n_items, o.worker_address, task_type.decode(o.output))
                for o in self.store.accepted_outputs(job_id)
            ]
            with tempfile.TemporaryDirectory() as tmp:
                out = Path(tmp) / "output.parquet"
                figures = task_type.reduce(outputs, dataset, params, out)
                # extra files a reducer wrote (e.g. preprocess's dataset.npz, the next job's input)
                figures = store_blob_files(figures, out.parent, self.blobs.put)
                output_hash = self.blobs.put(out.read_bytes())
            now = time.time()
            summary = self.figures(job, now) | figures
            # the owner reads its output and artefacts (e.g. the next job's dataset); no one else
            artefacts = list((figures.get("blobs") or {}).values())
            self.store.finish_job(job_id, summary, output_hash, now, artefacts)
            log.info(
                "job %s finished: %d/%d tasks done, %d failed, %d inconclusive, in %.1fs",
                job_id, job.tasks_done, job.n_tasks, job.tasks_failed, job.tasks_inconclusive,
                summary["elapsed_seconds"],
                extra={"event": "job_finished", "job": job_id, "state": "done", "tasks": job.n_tasks,
                       "tasks_done": job.tasks_done, "tasks_failed": job.tasks_failed,
                       "tasks_inconclusive": job.tasks_inconclusive, "elapsed_seconds": summary["elapsed_seconds"]},
            )
            return self.store.get_job(job_id)

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
