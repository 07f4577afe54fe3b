"""Million-task jobs in bounded memory: a job streams into the store shard by shard and chunk by
chunk (COPY on PostgreSQL), and reduces into Parquet row groups; once per store."""

from __future__ import annotations

import random
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from sqlalchemy import func, select

from coopgrid.app import build
from coopgrid.config import Settings
from coopgrid.coordinator import summary
from coopgrid.coordinator.scheduler import JobSpec
from coopgrid.coordinator.trust import TrustPolicy
from coopgrid.dataset_shards import slice_dataset
from coopgrid.datasets import Dataset, sequence
from coopgrid.errors import DatasetError
from coopgrid.protocol import sha256_hex
from coopgrid.store import schema as s
from coopgrid.store.base import IncomingResult
from memory_peak import peak_growth

ONE = TrustPolicy(replicas=1, quorum=1, adaptive=False, gold_rate=0)


@pytest.fixture
def app(store_url, tmp_path):
    a = build(Settings(data_dir=tmp_path / "grid", database_url=store_url, ledger="none"))
    yield a
    a.close()


def shards_of(app, data: Dataset, n: int) -> list[str]:
    size = -(-len(data) // n)
    return [app.blobs.put(slice_dataset(data, i, min(i + size, len(data))).to_npz()) for i in range(0, len(data), size)]


def submit(app, digests: list[str], task_size: int = 1):
    token, _ = app.auth.issue("t", "operator")
    for d in digests:
        app.store.grant_blob(d, token.id)
    spec = JobSpec(task_type="echo", dataset=digests[0], shards=digests[1:], task_size=task_size, trust=ONE)
    return app.scheduler.submit(spec, token)


def test_a_100k_task_job_in_shards_is_split_and_inserted_in_bounded_memory(app):
    n = 100_000
    digests = shards_of(app, sequence(n), 4)
    job, peak = peak_growth(lambda: submit(app, digests))
    assert not isinstance(job, Exception), job
    assert (job.n_tasks, job.n_items, len(job.shards)) == (n, n, 3)
    with app.store.engine.connect() as conn:
        tasks = conn.execute(
            select(func.count(), func.min(s.tasks.c.first_item), func.max(s.tasks.c.first_item),
                   func.count(func.distinct(s.tasks.c.first_item)), func.max(s.tasks.c.idx))
            .where(s.tasks.c.job_id == job.id)
        ).one()
        replicas = conn.execute(select(func.count()).select_from(s.replicas).where(s.replicas.c.job_id == job.id))
        assert tuple(tasks) == (n, 0, n - 1, n, n - 1) and replicas.scalar_one() == n
    # held whole, as before, 100,000 tasks took ~180 MB (their objects, then SQLAlchemy's parameter rows)
    assert peak < 48 * 2**20, f"splitting {n} tasks peaked {peak / 2**20:.0f} MB above where it started"


def test_a_sharded_job_reduces_in_row_groups_with_its_items_in_order(app, monkeypatch):
    monkeypatch.setattr(summary, "REDUCE_CHUNK_ITEMS", 5)  # several pieces per shard
    data = sequence(30)
    job = submit(app, shards_of(app, data, 3), task_size=4)
    assert job.n_tasks == 3 * 3 and job.n_items == 30  # 10 items a shard: tasks never span two shards
    w = app.store.register_worker("0x" + "11" * 20, "w", "o", time.time())
    while (lease := app.store.lease(w.id, 100, [], 60, time.time(), rng=random.Random(0))) is not None:
        items = [IncomingResult(r.replica_id, sha256_hex(r.input_data), r.input_data, None) for r in lease.replicas]
        outcome = app.store.record_results(lease.id, w.id, "0x" + "00" * 65, items, [], time.time())
        app.scheduler.validator.validate(outcome.tasks)
    done = app.summarizer.finalize(job.id)
    assert done.state == "done" and done.summary["echo_mismatches"] == 0
    out = pq.ParquetFile(pa.BufferReader(app.blobs.get(done.output_hash)))
    assert out.metadata.num_row_groups > 3
    table = out.read()
    assert table.column("item_id").to_pylist() == [f"item-{i}" for i in range(30)]
    assert [int(np.frombuffer(v, np.int64)[0]) for v in table.column("value").to_pylist()] == list(range(30))


def test_a_shard_of_another_kind_of_items_is_refused_and_nothing_is_created(app):
    first = app.blobs.put(sequence(10).to_npz())
    other = app.blobs.put(Dataset.from_items([b"a", b"b"], "text").to_npz())
    with pytest.raises(DatasetError, match="does not match the dataset's first shard"):
        submit(app, [first, other])
    assert app.store.list_jobs() == []


def test_a_lease_walks_ready_replicas_in_task_order_and_stops_at_its_batch(app):
    # through (job_id, state) every lease read all of a job's ready replicas and sorted them for
    # the first batch: a million-task job's leases slowed down as it ran. SQLite's plan for the
    # lease's UPDATE must walk ix_replicas_ready_task in order, with no sort of its own
    if app.store.dialect != "sqlite":
        pytest.skip("the plan checked here is SQLite's (PostgreSQL takes rows with FOR UPDATE SKIP LOCKED)")
    from sqlalchemy import event

    submit(app, [app.blobs.put(sequence(2_000).to_npz())])
    w = app.store.register_worker("0x" + "22" * 20, "w", "o", time.time())
    seen = []

    def capture(conn, cursor, statement, parameters, context, executemany):
        if statement.lstrip().startswith("UPDATE replicas SET state"):
            seen.append((statement, parameters))

    event.listen(app.store.engine, "before_cursor_execute", capture)
    try:
        lease = app.store.lease(w.id, 100, ["echo"], 60, time.time(), rng=random.Random(0))
    finally:
        event.remove(app.store.engine, "before_cursor_execute", capture)
    assert lease is not None and sorted(r.task_index for r in lease.replicas) == list(range(100))
    (statement, parameters), = seen
    with app.store.engine.connect() as conn:
        plan = " | ".join(row[-1] for row in conn.exec_driver_sql("EXPLAIN QUERY PLAN " + statement, parameters))
    assert "ix_replicas_ready_task" in plan and "TEMP B-TREE" not in plan, plan
