"""Retention: a sealed job's per-replica rows archived to Parquet and purged, proofs still checked
on the real embedded chain; once per store (a SQLite file, a fresh PostgreSQL database)."""

from __future__ import annotations

import time

import pytest
from sqlalchemy import func, select

from coopgrid.coordinator.retention import archived_table, purge_sealed_jobs
from coopgrid.ledger import merkle
from coopgrid.store import schema as s

from test_sealing import cheap_keystore, database, open_app, run_job  # noqa: F401  (fixtures)


def rows(app, table, job_id) -> int:
    t = getattr(s, table)
    with app.store.engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(t).where(t.c.job_id == job_id)).scalar_one()


def test_a_sealed_job_is_archived_and_purged_and_its_proofs_still_verify(tmp_path):
    app = open_app(tmp_path)
    try:
        job_id = run_job(app, 6, reward=0, trust={"replicas": 2, "quorum": 2, "adaptive": False, "gold_rate": 0, "record_run": 0})
        other = run_job(app, 3, reward=0)
        app.summarizer.finalize(job_id)
        app.summarizer.finalize(other)
        done = time.time() + 1
        # not yet sealed: nothing may go, however old
        assert purge_sealed_jobs(app.store, app.blobs, 0, sealed=True, now=done) == []
        (epoch,) = app.sealer.step(force=True)
        before = {t: rows(app, t, job_id) for t in ("tasks", "replicas", "results")}
        assert before == {"tasks": 6, "replicas": 12, "results": 12}
        proofs = {i: app.sealer.result_proof(job_id, i) for i in range(6)}

        # sealed, but younger than the retention: kept
        assert purge_sealed_jobs(app.store, app.blobs, 3600, sealed=True, now=done) == []
        assert set(purge_sealed_jobs(app.store, app.blobs, 0, sealed=True, now=done)) == {job_id, other}

        assert {t: rows(app, t, job_id) for t in ("tasks", "replicas", "results")} == {
            "tasks": 0, "replicas": 0, "results": 0}
        with app.store.engine.connect() as conn:  # the batches and leases went with their last rows
            assert conn.execute(select(func.count()).select_from(s.result_batches)).scalar_one() == 0
            assert conn.execute(select(func.count()).select_from(s.leases)).scalar_one() == 0
        job = app.store.get_job(job_id)
        assert job.archive_hash and job.output_hash and job.summary["tasks_done"] == 6
        archived = archived_table(app.blobs, job, "results")
        assert archived.num_rows == 12
        assert sorted(archived.column("task_index").to_pylist()) == sorted(list(range(6)) * 2)
        assert archived_table(app.blobs, job, "replicas").num_rows == 12
        assert archived_table(app.blobs, job, "tasks").num_rows == 6

        for i in range(6):  # the same proofs, served from the archive and the epoch's tree dump
            again = app.sealer.result_proof(job_id, i)
            assert again == proofs[i]
            assert merkle.verify_leaf(again["results_root"], again["leaf_hash"], again["proof"])
            assert app.ledger.verify_result(epoch.number, again["leaf_hash"], again["proof"])
        assert app.sealer.result_proof(job_id, 6) is None
        # archived once: a second round finds nothing
        assert purge_sealed_jobs(app.store, app.blobs, 0, sealed=True, now=done) == []
        # the grid goes on: a new job after the purge is leased, sealed and proven as usual
        third = run_job(app, 2, reward=0)
        (epoch2,) = app.sealer.step(force=True)
        p = app.sealer.result_proof(third, 1)
        assert p["epoch"] == epoch2.number and app.ledger.verify_result(epoch2.number, p["leaf_hash"], p["proof"])
    finally:
        app.close()


def test_a_running_job_or_one_with_unsealed_results_is_kept(tmp_path):
    app = open_app(tmp_path)
    try:
        job_id = run_job(app, 2, reward=0)
        # complete but not reduced (still "running"), then done but not sealed
        assert purge_sealed_jobs(app.store, app.blobs, 0, sealed=True, now=time.time() + 1) == []
        app.summarizer.finalize(job_id)
        assert purge_sealed_jobs(app.store, app.blobs, 0, sealed=True, now=time.time() + 1) == []
        assert rows(app, "results", job_id) == 2
        # without a ledger there is nothing to seal: final results are enough
        assert purge_sealed_jobs(app.store, app.blobs, 0, sealed=False, now=time.time() + 1) == [job_id]
        assert rows(app, "results", job_id) == 0
    finally:
        app.close()


def test_a_negative_retention_is_refused_with_the_setting_named(tmp_path):
    from pydantic import ValidationError

    from coopgrid.config import Settings

    with pytest.raises(ValidationError, match="retention_seconds"):
        Settings(data_dir=tmp_path, retention_seconds=-1)


def test_result_batches_are_archived_a_few_at_a_time(tmp_path, monkeypatch):
    # a result batch's row carries its signed list (~80 KB for a lease of 1,000 results): read
    # 5,000 at a time, a million-task job's batches all came at once and the coordinator's memory
    # peaked at ~900 MB while archiving them
    from coopgrid.coordinator.retention import archive_job
    from coopgrid.store import sql_retention

    monkeypatch.setattr(sql_retention, "ARCHIVE_BATCH_ROWS", {"result_batches": 4})
    app = open_app(tmp_path)
    try:
        job_id = run_job(app, 30, reward=0)  # two replicas a lease: 15 result batches
        app.summarizer.finalize(job_id)
        sizes = [len(b) for b in app.store.archive_rows(job_id, "result_batches")]
        assert sizes == [4, 4, 4, 3]
        assert [len(b) for b in app.store.archive_rows(job_id, "results")] == [30]  # the others as before
        app.store.purge_job(job_id, archive_job(app.store, app.blobs, job_id), time.time())
        batches = archived_table(app.blobs, app.store.get_job(job_id), "result_batches")
        assert batches.num_rows == 15 and all(batches.column("signed").to_pylist())
    finally:
        app.close()
