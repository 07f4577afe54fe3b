"""Homogeneous redundancy in the store: replicas of a task of such a job stay in one platform class.

Both backends (the ``store`` fixture). The scheduler passes the running jobs whose task
type declares ``homogeneous`` and the worker's class; gold replicas follow the same rule.
"""

from __future__ import annotations

import secrets

from coopgrid.platforms import describe, platform_class
from sqlalchemy import update

from coopgrid.store import SqlStore
from coopgrid.store import schema
from coopgrid.store.base import WorkerRecord
from tests.integration.test_api import Grid, Worker, grid, make_grid  # noqa: F401 (fixtures)
from tests.integration.test_store import LEASE, NO_REPLICATION, QUORUM_TWO, T0, echo_ok, make_job, sig, validate

AVX512 = {"arch": "x86_64", "cpu_flags": ["SSE42", "AVX", "FMA3", "AVX2", "AVX512F"], "ort_version": "1.32.0",
          "execution_provider": "CPUExecutionProvider", "threads": 1}
SSE = {**AVX512, "cpu_flags": ["SSE42"]}


def worker(store: SqlStore, name: str, platform: dict | None) -> WorkerRecord:
    return store.register_worker(
        "0x" + secrets.token_hex(20), name, f"owner-of-{name}", T0, None, platform,
        platform_class(platform) if platform is not None else None,
    )


def lease(store: SqlStore, w: WorkerRecord, homogeneous: list[str], gold: int = 0):
    return store.lease(w.id, 5, [], LEASE, T0, gold=gold, platform_class=w.platform_class, homogeneous_jobs=homogeneous)


def test_the_reported_platform_is_kept_and_updated_on_registering_again(store: SqlStore) -> None:
    w = worker(store, "a", AVX512)
    assert store.get_worker(w.address).platform == AVX512
    assert store.get_worker(w.address).platform_class == "x86_64-avx512/ort1.32/cpu"
    again = store.register_worker(w.address, "a", "owner-of-a", T0 + 1, None, SSE, platform_class(SSE))
    assert (again.id, again.platform_class) == (w.id, "x86_64-sse/ort1.32/cpu")
    silent = store.register_worker(w.address, "a", "owner-of-a", T0 + 2)
    assert (silent.platform, silent.platform_class) == (None, None)


def test_the_second_replica_goes_only_to_a_worker_of_the_first_ones_class(store: SqlStore) -> None:
    job = make_job(store, 1, policy=QUORUM_TWO, initial_replicas=2)
    a, b, c, d = worker(store, "a", AVX512), worker(store, "b", SSE), worker(store, "c", AVX512), worker(store, "d", SSE)
    assert d.platform_class == b.platform_class  # b is not alone in its class: that is not why it gets nothing
    first = lease(store, a, [job.id])
    assert first is not None and first.replicas[0].task_index == 0
    assert lease(store, b, [job.id]) is None
    second = lease(store, c, [job.id])
    assert second is not None and second.replicas[0].task_index == 0


def test_a_job_whose_type_needs_no_homogeneity_mixes_classes(store: SqlStore) -> None:
    job = make_job(store, 1, policy=QUORUM_TWO, initial_replicas=2)
    a, b = worker(store, "a", AVX512), worker(store, "b", SSE)
    worker(store, "c", AVX512), worker(store, "d", SSE)
    assert lease(store, a, []) is not None
    second = lease(store, b, [])
    assert second is not None and second.replicas[0].job_id == job.id


def test_a_worker_alone_in_its_class_gets_none_of_that_work_until_a_peer_registers(store: SqlStore) -> None:
    job = make_job(store, 2, policy=QUORUM_TWO, initial_replicas=2)
    worker(store, "a", AVX512), worker(store, "b", AVX512)
    lone = worker(store, "lone", SSE)
    assert lease(store, lone, [job.id]) is None  # nobody could give its results a second opinion
    assert lease(store, lone, []) is not None  # the rule is for homogeneous jobs only
    job2 = make_job(store, 1, policy=QUORUM_TWO, initial_replicas=2)
    worker(store, "peer", SSE)
    assert lease(store, lone, [job2.id]) is not None


def test_workers_that_report_no_platform_are_a_class_of_their_own(store: SqlStore) -> None:
    job = make_job(store, 1, policy=QUORUM_TWO, initial_replicas=2)
    old_a, old_b, new = worker(store, "old-a", None), worker(store, "old-b", None), worker(store, "new", AVX512)
    worker(store, "new-peer", AVX512)
    assert lease(store, old_a, [job.id]) is not None
    assert lease(store, new, [job.id]) is None
    assert lease(store, old_b, [job.id]) is not None


def test_gold_of_a_homogeneous_job_is_only_given_within_its_class(store: SqlStore) -> None:
    decided = make_job(store, 1, policy=QUORUM_TWO, initial_replicas=2)
    a, c = worker(store, "a", AVX512), worker(store, "c", AVX512)
    b, e = worker(store, "b", SSE), worker(store, "e", AVX512)
    worker(store, "d", SSE)
    for w in (a, c):
        got = lease(store, w, [decided.id])
        outcome = store.record_results(got.id, w.id, sig(), [echo_ok(got.replicas[0].replica_id, decided, 0)], [], T0)
        validate(store, outcome)
    assert store.get_job(decided.id).tasks_done == 1
    fresh = make_job(store, 10, policy=NO_REPLICATION)
    other_class = lease(store, b, [decided.id], gold=1)
    assert {r.job_id for r in other_class.replicas} == {fresh.id}  # no gold from the other class's answer
    same_class = lease(store, e, [decided.id], gold=1)
    assert {r.job_id for r in same_class.replicas} == {fresh.id, decided.id}  # gold from its own class


def test_a_quarantined_workers_replica_binds_the_task_to_no_class(store: SqlStore) -> None:
    job = make_job(store, 1, policy=QUORUM_TWO, initial_replicas=2)
    a, b = worker(store, "a", AVX512), worker(store, "b", SSE)
    worker(store, "c", AVX512), worker(store, "d", SSE)
    assert lease(store, a, [job.id]) is not None
    assert lease(store, b, [job.id]) is None
    with store.engine.begin() as conn:  # a is caught lying elsewhere: its word binds nothing now
        conn.execute(update(schema.workers).where(schema.workers.c.id == a.id).values(quarantined_at=T0))
    assert lease(store, b, [job.id]) is not None


def test_where_no_class_has_two_workers_the_rule_is_dropped_rather_than_stalling_the_job(store: SqlStore) -> None:
    job = make_job(store, 1, policy=QUORUM_TWO, initial_replicas=2)
    a, b = worker(store, "a", AVX512), worker(store, "b", SSE)
    assert lease(store, a, [job.id]) is not None
    assert lease(store, b, [job.id]) is not None  # else the task would wait forever for a second opinion


def test_over_the_api_the_platform_is_signed_validated_and_listed(grid: Grid) -> None:
    w = Worker(grid)
    bad = w.post("/v1/workers", {"name": "w", "platform": {**AVX512, "cpu_flags": ["AVX2; rm -rf /"]}})
    assert bad.status_code == 422 and "cpu_flags" in bad.text
    long = w.post("/v1/workers", {"name": "w", "platform": {**AVX512, "ort_version": "1" * 33}})
    assert long.status_code == 422 and "ort_version" in long.text
    ok = w.post("/v1/workers", {"name": "w", "platform": describe().model_dump()})
    assert ok.status_code == 201 and ok.json()["platform_class"] == platform_class(describe())
    listed = {x["address"]: x for x in grid.client.get("/v1/workers", headers=grid.headers()).json()}
    assert listed[w.address]["platform"] == describe().model_dump()
    assert listed[w.address]["platform_class"] == platform_class(describe())
