"""The Store contract suite, run against both backends (SQLite file, PostgreSQL).

Every test but the last runs once per backend through the parametrized
``store`` fixture (see conftest.py). Times are passed explicitly (the Store
takes ``now``), so lease deadlines are exercised without sleeping.

Most jobs here run under the no-replication trust policy (a quorum of one):
``record_results`` accepts a result for an open task of such a job at once
(accepted, final, counted, the worker credited) and reports the jobs it
completed. Every other result (a second replica of a decided task, a gold or
audit replica, any result of a job with a quorum of two or more) is stored as
``pending`` and a validation round
(:class:`~coopgrid.coordinator.validation.Validator`) decides it; the tests
about that round use a quorum of two. Replication, quorum, gold tasks and
reputation are exercised at length in test_validation.py.
"""

from __future__ import annotations

import secrets
import threading
from collections import Counter

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import func, insert, inspect, select, update

from coopgrid.coordinator.validation import Validator
from coopgrid.errors import Conflict, JobNotFound, LeaseError
from coopgrid.protocol import sha256_hex
from coopgrid.store import SqlStore
from coopgrid.store import schema as s
from coopgrid.store.base import (
    IncomingResult,
    JobRecord,
    ModelRecord,
    NewJob,
    NewTask,
    RecordOutcome,
    WorkerRecord,
)
from coopgrid.store.migrate import alembic_config
from coopgrid.store.schema import (
    EpochState,
    JobState,
    ReplicaKind,
    ReplicaState,
    ResultStatus,
    TaskState,
)
from coopgrid.store.sql import MAX_TASK_ERRORS

T0 = 1_700_000_000.0  # a fixed "now"; every call gets its time explicitly
LEASE = 30.0
#: one replica per task, accepted (and final) as soon as it is recorded: the pre-trust behaviour
NO_REPLICATION = {"replicas": 1, "quorum": 1, "adaptive": False, "gold_rate": 0}
#: two replicas per task issued at once, accepted by a validation round when both agree
QUORUM_TWO = {"replicas": 2, "quorum": 2, "adaptive": False, "gold_rate": 0, "record_run": 0}  # every worker has a record


# -- helpers ----------------------------------------------------------------------


def task_input(job_tag: str, idx: int) -> bytes:
    return f"{job_tag}/input/{idx}".encode()


def make_job(
    store: SqlStore,
    n_tasks: int,
    task_type: str = "echo",
    owner: int | None = None,
    now: float = T0,
    policy: dict | None = None,
    initial_replicas: int = 1,
) -> JobRecord:
    if owner is None:
        owner = store.add_token("submitter", "submitter", secrets.token_hex(32), now).id
    job_id = secrets.token_hex(32)
    tasks = [NewTask(sha256_hex(task_input(job_id, i)), task_input(job_id, i), 3 * i, 3) for i in range(n_tasks)]
    job = NewJob(
        id=job_id,
        owner_token_id=owner,
        name=f"{task_type} job",
        task_type=task_type,
        model_hash=None,
        params={"k": 1},
        dataset_hash=sha256_hex(job_id.encode()),
        n_items=3 * n_tasks,
        task_size=3,
        reward_per_task=7,
        policy=NO_REPLICATION if policy is None else policy,
        initial_replicas=initial_replicas,
    )
    return store.create_job(job, tasks, now)


def make_worker(store: SqlStore, name: str = "w", now: float = T0) -> WorkerRecord:
    return store.register_worker("0x" + secrets.token_hex(20), name, f"owner-of-{name}", now)


def output_for(replica_id: int, worker: WorkerRecord) -> bytes:
    return f"output of replica {replica_id} by {worker.address}".encode()


def ok(replica_id: int, worker: WorkerRecord) -> IncomingResult:
    out = output_for(replica_id, worker)
    return IncomingResult(replica_id, sha256_hex(out), out, None)


def echo_ok(replica_id: int, job: JobRecord, idx: int) -> IncomingResult:
    """The answer every honest worker gives (echo: the task's input); ``ok`` differs per worker."""
    out = task_input(job.id, idx)
    return IncomingResult(replica_id, sha256_hex(out), out, None)


def err(replica_id: int) -> IncomingResult:
    return IncomingResult(replica_id, "0" * 64, None, "RuntimeError: cannot compute")


def sig() -> str:
    return "0x" + secrets.token_hex(65)


def validate(store: SqlStore, outcome: RecordOutcome) -> list[str]:
    """The validation round the scheduler runs after each batch; returns the jobs it completed."""
    return Validator(store).validate(outcome.tasks)


def results_by_status(store: SqlStore, job_id: str) -> Counter[str]:
    with store.engine.connect() as conn:
        rows = conn.execute(
            select(s.results.c.status, func.count()).where(s.results.c.job_id == job_id).group_by(s.results.c.status)
        ).all()
    return Counter({status: n for status, n in rows})


def final_results(store: SqlStore, job_id: str) -> Counter[str]:
    """Statuses of a job's results that are final (sealed and paid)."""
    with store.engine.connect() as conn:
        rows = conn.execute(
            select(s.results.c.status, func.count())
            .where(s.results.c.job_id == job_id, s.results.c.final.is_(True))
            .group_by(s.results.c.status)
        ).all()
    return Counter({status: n for status, n in rows})


def reputation(store: SqlStore, w: WorkerRecord, task_type: str = "echo") -> tuple[int, int, int]:
    """(run, valid, invalid) of a worker for a task type; zeros before it has a record."""
    for worker, r in store.reputations():
        if worker.id == w.id and r.task_type == task_type:
            return r.run, r.valid, r.invalid
    return 0, 0, 0


# -- schema -----------------------------------------------------------------------


def test_migrations_produce_exactly_the_declared_schema(store: SqlStore) -> None:
    with store.engine.connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"compare_type": True, "compare_server_default": True})
        assert compare_metadata(ctx, s.metadata) == []
        head = ScriptDirectory.from_config(alembic_config(store.engine)).get_current_head()
        assert ctx.get_current_revision() == head

    insp = inspect(store.engine)
    assert set(insp.get_table_names()) == set(s.metadata.tables) | {"alembic_version"}
    # the indexes, including which are unique and which are partial (autogenerate
    # does not compare partial-index predicates, so check their presence here)
    for table in s.metadata.sorted_tables:
        declared = {
            ix.name: (
                [c.name for c in ix.columns],
                bool(ix.unique),
                ix.dialect_options["sqlite"]["where"] is not None,
            )
            for ix in table.indexes
        }
        found = {}
        for ix in insp.get_indexes(table.name):
            if ix.get("duplicates_constraint"):  # PostgreSQL's own index behind a UNIQUE constraint
                continue
            where = ix.get("dialect_options", {}).get(f"{store.dialect}_where")
            found[ix["name"]] = (ix["column_names"], bool(ix["unique"]), where is not None)
        assert found == declared, table.name


def test_every_state_name_fits_its_column(store: SqlStore) -> None:
    # SQLite does not enforce VARCHAR lengths; PostgreSQL refuses a value that does not fit
    columns = [
        (s.tasks.c.state, TaskState),
        (s.jobs.c.state, JobState),
        (s.results.c.status, ResultStatus),
        (s.replicas.c.kind, ReplicaKind),
        (s.epochs.c.state, EpochState),
    ]
    for column, values in columns:
        too_long = [v.value for v in values if len(v.value) > column.type.length]
        assert too_long == [], f"{column.table.name}.{column.name} is VARCHAR({column.type.length}): {too_long}"
    job = make_job(store, 1)
    for state in TaskState:  # as the store writes it
        with store.engine.begin() as conn:
            conn.execute(update(s.tasks).where(s.tasks.c.job_id == job.id).values(state=state.value))
            assert conn.execute(select(s.tasks.c.state).where(s.tasks.c.job_id == job.id)).scalar() == state.value


# -- tokens, models, workers -------------------------------------------------------


def test_tokens_are_found_by_the_hash_of_their_secret(store: SqlStore) -> None:
    op_hash, sub_hash = secrets.token_hex(32), secrets.token_hex(32)
    op = store.add_token("ops", "operator", op_hash, T0)
    sub = store.add_token("alice", "submitter", sub_hash, T0)

    assert store.token_by_hash(op_hash) == op
    assert store.token_by_hash(sub_hash) == sub
    assert (sub.name, sub.role) == ("alice", "submitter")
    assert op.id != sub.id
    assert store.token_by_hash(secrets.token_hex(32)) is None
    assert store.count_tokens() == 2
    assert store.count_tokens("operator") == 1
    assert store.count_tokens("submitter") == 1


def _model(name: str, version: int, created: float, task_type: str = "classify") -> ModelRecord:
    digest = sha256_hex(f"{name}:{version}:{created}".encode())
    return ModelRecord(digest, name, version, task_type, {"name": name, "version": version}, 1234, created)


def test_models_by_hash_name_and_version(store: SqlStore) -> None:
    assert store.next_model_version("digits") == 1
    v1 = store.add_model(_model("digits", store.next_model_version("digits"), T0))
    v2 = store.add_model(_model("digits", store.next_model_version("digits"), T0 + 1))
    other = store.add_model(_model("other", store.next_model_version("other"), T0 + 2, "echo"))

    assert (v1.version, v2.version, other.version) == (1, 2, 1)
    assert store.next_model_version("digits") == 3
    assert store.get_model(v1.hash) == v1
    assert store.get_model(v2.hash) == v2
    assert store.get_model("digits") == v2  # a bare name is the latest version
    assert store.get_model("digits:1") == v1
    assert store.get_model("digits:2") == v2
    assert store.get_model("other") == other
    assert store.get_model("digits:3") is None
    assert store.get_model("digits:latest") is None
    assert store.get_model("nope") is None
    assert store.get_model("0" * 64) is None
    assert [m.hash for m in store.list_models()] == [other.hash, v2.hash, v1.hash]

    # the same bytes published again are the existing model, not a new version
    again = store.add_model(ModelRecord(v1.hash, "digits", 3, "classify", {}, 1234, T0 + 3))
    assert again == v1
    assert len(store.list_models()) == 3
    assert store.next_model_version("digits") == 3


def test_register_worker_creates_then_updates(store: SqlStore) -> None:
    w = store.register_worker("0x" + "ab" * 20, "first", "me", T0)
    again = store.register_worker("0x" + "ab" * 20, "renamed", "me", T0 + 5)
    assert again.id == w.id
    assert (again.name, again.registered_at, again.last_seen) == ("renamed", T0, T0 + 5)
    assert store.get_worker("0x" + "ab" * 20) == again
    assert store.get_worker("0x" + "cd" * 20) is None
    assert store.list_workers() == [(again, 0)]


def test_a_fresh_key_of_a_quarantined_workers_owner_or_network_is_no_clean_slate(store: SqlStore) -> None:
    from sqlalchemy import update

    from coopgrid.store import schema

    cheater = store.register_worker("0x" + "01" * 20, "c", "mallory", T0, "198.51.100.0/24")
    with store.engine.begin() as conn:  # what validation does when it quarantines a worker
        conn.execute(update(schema.workers).where(schema.workers.c.id == cheater.id).values(quarantined_at=T0))
    same_owner = store.register_worker("0x" + "02" * 20, "c2", "mallory", T0 + 1, "203.0.113.0/24")
    same_network = store.register_worker("0x" + "03" * 20, "c3", "someone else", T0 + 1, "198.51.100.0/24")
    stranger = store.register_worker("0x" + "04" * 20, "s", "alice", T0 + 1, "192.0.2.0/24")
    anonymous = store.register_worker("0x" + "05" * 20, "a", "", T0 + 1, None)
    assert (same_owner.prior_quarantines, same_network.prior_quarantines) == (1, 1)
    assert (stranger.prior_quarantines, anonymous.prior_quarantines) == (0, 0)
    assert store.get_worker(same_owner.address).prior_quarantines == 1  # kept, not only returned


# -- jobs -------------------------------------------------------------------------


def test_create_job_makes_its_tasks_with_one_ready_replica_each(store: SqlStore) -> None:
    job = make_job(store, 5)
    assert (job.n_tasks, job.n_items, job.tasks_done, job.tasks_failed) == (5, 15, 0, 0)
    assert (job.state, job.reward_per_task, job.params) == ("running", 7, {"k": 1})
    assert (job.tasks_inconclusive, job.policy) == (0, NO_REPLICATION)
    assert not job.complete
    assert store.get_job(job.id) == job
    assert store.get_job("f" * 64) is None
    assert store.replica_counts(job.id) == {"ready": 5}

    lease = store.lease(make_worker(store).id, 100, [], LEASE, T0)
    assert lease is not None
    assert sorted(r.task_index for r in lease.replicas) == [0, 1, 2, 3, 4]
    for r in lease.replicas:
        assert r.job_id == job.id
        assert r.input_data == task_input(job.id, r.task_index)
        assert r.input_hash == sha256_hex(r.input_data)
        assert r.n_items == 3
    assert lease.jobs[job.id].task_type == "echo"
    assert lease.jobs[job.id].params == {"k": 1}


@pytest.mark.postgres
def test_postgres_sessions_do_not_jit_compile_statements(pg_database) -> None:
    store = SqlStore.open(pg_database())
    try:
        with store.engine.connect() as conn:
            assert conn.exec_driver_sql("SHOW jit").scalar() == "off"
    finally:
        store.close()


def test_work_behind_a_long_run_of_replicas_a_worker_may_not_take_still_reaches_it(store: SqlStore) -> None:
    # PostgreSQL leases look at the queue a window at a time: the windows here hold only second
    # replicas of tasks the worker already holds, and the work it may take lies past all of them
    policy = {"replicas": 2, "quorum": 2, "adaptive": False, "gold_rate": 0}
    first = make_job(store, 20, policy=policy, initial_replicas=2)
    w = make_worker(store, "w")
    held = store.lease(w.id, 100, [], LEASE, T0)
    assert held is not None and len(held.replicas) == 20  # one of each task: the other 20 are not for it
    later = make_job(store, 5)
    got = store.lease(w.id, 2, [], LEASE, T0 + 1)
    assert got is not None and [r.job_id for r in got.replicas] == [later.id, later.id]
    assert store.replica_counts(first.id) == {"leased": 20, "ready": 20}


def test_queue_depth_counts_only_as_far_as_each_active_workers_share_needs(store: SqlStore) -> None:
    make_job(store, 10)
    make_worker(store, "a")
    make_worker(store, "b")
    make_worker(store, "gone", now=T0 - 3600)  # not seen lately: not active
    assert store.queue_depth(T0 - 60) == (10, 2)
    assert store.queue_depth(T0 - 60, cap=3, per_worker=64) == (6, 2)  # a batch of 3 for each of 2
    assert store.queue_depth(T0 - 60, cap=3, per_worker=1) == (3, 2)  # for at most one worker
    assert store.queue_depth(T0 - 60, cap=100, per_worker=64) == (10, 2)  # fewer than that wait


def test_list_jobs_by_owner(store: SqlStore) -> None:
    alice = store.add_token("alice", "submitter", secrets.token_hex(32), T0).id
    bob = store.add_token("bob", "submitter", secrets.token_hex(32), T0).id
    a1 = make_job(store, 1, owner=alice, now=T0)
    b1 = make_job(store, 1, owner=bob, now=T0 + 1)
    a2 = make_job(store, 1, owner=alice, now=T0 + 2)
    assert [j.id for j in store.list_jobs(alice)] == [a2.id, a1.id]
    assert [j.id for j in store.list_jobs(bob)] == [b1.id]
    assert [j.id for j in store.list_jobs()] == [a2.id, b1.id, a1.id]


# -- leasing ----------------------------------------------------------------------


def test_lease_returns_none_when_nothing_is_ready(store: SqlStore) -> None:
    w = make_worker(store)
    assert store.lease(w.id, 10, [], LEASE, T0) is None
    job = make_job(store, 2)
    assert store.lease(w.id, 10, [], LEASE, T0) is not None
    assert store.lease(w.id, 10, [], LEASE, T0) is None
    assert store.replica_counts(job.id) == {"leased": 2}


def test_lease_takes_at_most_n_and_never_the_same_replica_twice(store: SqlStore) -> None:
    job = make_job(store, 10)
    w1, w2 = make_worker(store, "one"), make_worker(store, "two")
    first = store.lease(w1.id, 4, [], LEASE, T0)
    second = store.lease(w2.id, 4, [], LEASE, T0)
    third = store.lease(w1.id, 4, [], LEASE, T0)
    assert first and second and third
    assert (len(first.replicas), len(second.replicas), len(third.replicas)) == (4, 4, 2)
    assert len({first.id, second.id, third.id}) == 3
    assert first.expires_at == T0 + LEASE

    ids = [r.replica_id for lease in (first, second, third) for r in lease.replicas]
    assert len(ids) == len(set(ids)) == 10
    assert sorted(r.task_index for lease in (first, second, third) for r in lease.replicas) == list(range(10))
    assert store.lease(w2.id, 4, [], LEASE, T0) is None

    view = store.lease_view(second.id)
    assert view is not None
    assert (view.worker_id, view.worker_address, view.state) == (w2.id, w2.address, "open")
    assert set(view.replicas) == {r.replica_id for r in second.replicas}
    assert store.lease_view(999_999) is None


def test_lease_filters_by_task_types(store: SqlStore) -> None:
    echo = make_job(store, 3, "echo")
    classify = make_job(store, 2, "classify")
    w = make_worker(store)
    assert store.lease(w.id, 100, ["translate"], LEASE, T0) is None

    got = store.lease(w.id, 100, ["classify"], LEASE, T0)
    assert got is not None
    assert {r.job_id for r in got.replicas} == {classify.id}
    assert len(got.replicas) == 2
    assert set(got.jobs) == {classify.id}

    got = store.lease(w.id, 100, ["classify", "translate"], LEASE, T0)
    assert got is None
    got = store.lease(w.id, 100, ["echo", "classify"], LEASE, T0)
    assert got is not None
    assert {r.job_id for r in got.replicas} == {echo.id}
    assert len(got.replicas) == 3


# -- results ----------------------------------------------------------------------


def test_record_results_accepts_and_counts_each_task(store: SqlStore) -> None:
    job = make_job(store, 4)
    w = make_worker(store)
    lease = store.lease(w.id, 10, [], LEASE, T0)
    assert lease is not None
    ids = [r.replica_id for r in lease.replicas]

    half = store.record_results(lease.id, w.id, sig(), [ok(i, w) for i in ids[:2]], [], T0 + 1)
    assert half.statuses == {i: "accepted" for i in ids[:2]}  # a quorum of one: accepted as recorded
    assert half.tasks == []  # nothing left for a validation round
    assert half.completed_jobs == []
    assert not half.lease_expired
    assert store.get_job(job.id).tasks_done == 2
    assert results_by_status(store, job.id) == {"accepted": 2}
    assert final_results(store, job.id) == {"accepted": 2}
    assert reputation(store, w) == (2, 2, 0)  # credited as validated results
    assert validate(store, half) == []  # a round changes nothing
    assert store.get_job(job.id).tasks_done == 2
    assert reputation(store, w) == (2, 2, 0)
    assert store.lease_view(lease.id).state == "open"  # two replicas are still out

    rest = store.record_results(lease.id, w.id, sig(), [ok(i, w) for i in ids[2:]], [], T0 + 2)
    assert rest.statuses == {i: "accepted" for i in ids[2:]}
    assert rest.tasks == []
    assert rest.completed_jobs == [job.id]  # the batch that answers the last task completes the job
    assert validate(store, rest) == []  # completed once, not twice
    done = store.get_job(job.id)
    assert (done.tasks_done, done.complete, done.state) == (4, True, "running")
    assert store.replica_counts(job.id) == {"done": 4}
    assert store.lease_view(lease.id).state == "closed"
    assert store.job_workers(job.id) == {w.address: 4}
    assert store.list_workers()[0][1] == 4
    assert reputation(store, w) == (4, 4, 0)
    assert store.reward_totals(None) == {w.address: 4 * 7}  # final: each task paid once
    assert [o.task_index for o in store.accepted_outputs(job.id)] == [0, 1, 2, 3]
    assert store.complete_unfinished_jobs() == [job.id]

    # the same results again: recorded, not counted again
    again = store.record_results(lease.id, w.id, sig(), [ok(i, w) for i in ids], [], T0 + 3)
    assert set(again.statuses.values()) == {"duplicate"}
    assert again.completed_jobs == [] and again.tasks == []  # nothing for validation either
    assert validate(store, again) == []
    assert store.get_job(job.id).tasks_done == 4
    assert results_by_status(store, job.id) == {"accepted": 4, "duplicate": 4}
    assert final_results(store, job.id) == {"accepted": 4}
    assert reputation(store, w) == (4, 4, 0)  # duplicates credit nothing
    assert store.reward_totals(None) == {w.address: 4 * 7}

    store.finish_job(job.id, {"items": 12}, "e" * 64, T0 + 4)
    finished = store.get_job(job.id)
    assert (finished.state, finished.summary, finished.output_hash) == ("done", {"items": 12}, "e" * 64)
    assert finished.finished_at == T0 + 4
    assert store.complete_unfinished_jobs() == []


def test_record_results_refuses_unknown_lease_foreign_worker_and_foreign_replica(store: SqlStore) -> None:
    make_job(store, 3)
    w1, w2 = make_worker(store, "one"), make_worker(store, "two")
    l1 = store.lease(w1.id, 2, [], LEASE, T0)
    l2 = store.lease(w2.id, 2, [], LEASE, T0)
    assert l1 and l2
    mine, theirs = l1.replicas[0].replica_id, l2.replicas[0].replica_id

    with pytest.raises(LeaseError):
        store.record_results(999_999, w1.id, sig(), [ok(mine, w1)], [], T0)
    with pytest.raises(LeaseError):  # w2 answering w1's lease
        store.record_results(l1.id, w2.id, sig(), [ok(mine, w2)], [], T0)
    with pytest.raises(LeaseError):  # a replica from another lease
        store.record_results(l1.id, w1.id, sig(), [ok(mine, w1), ok(theirs, w1)], [], T0)
    # nothing of the refused batches was kept
    assert store.replica_counts(l1.replicas[0].job_id) == {"leased": 3}
    assert results_by_status(store, l1.replicas[0].job_id) == {}


@pytest.mark.parametrize("twin_agrees", [True, False])
def test_a_second_replica_of_a_done_task_is_checked_and_not_counted(store: SqlStore, twin_agrees: bool) -> None:
    job = make_job(store, 2)
    # Put a second ready replica of task 0 in place by hand (as a reissue would),
    # so that one arrives after the task was accepted from the first.
    with store.engine.begin() as conn:
        task0 = conn.execute(select(s.tasks.c.id).where(s.tasks.c.job_id == job.id, s.tasks.c.idx == 0)).scalar_one()
        conn.execute(
            insert(s.replicas).values(task_id=task0, job_id=job.id, state=int(ReplicaState.READY), created_at=T0)
        )
    w1, w2 = make_worker(store, "one"), make_worker(store, "two")
    l1 = store.lease(w1.id, 2, [], LEASE, T0)  # task 0 and task 1
    l2 = store.lease(w2.id, 2, [], LEASE, T0)  # the second replica of task 0
    assert l1 and l2
    assert sorted(r.task_index for r in l1.replicas) == [0, 1]
    assert [r.task_index for r in l2.replicas] == [0]
    r2 = l2.replicas[0].replica_id
    r1 = next(r.replica_id for r in l1.replicas if r.task_index == 0)

    first = store.record_results(l1.id, w1.id, sig(), [ok(r.replica_id, w1) for r in l1.replicas], [], T0 + 1)
    assert set(first.statuses.values()) == {"accepted"}  # a quorum of one: decided as recorded
    assert first.completed_jobs == [job.id] and first.tasks == []
    assert validate(store, first) == []
    assert store.get_job(job.id).tasks_done == 2

    # the late twin is compared with the accepted result: rewarded if it agrees, never counted again
    twin = ok(r1, w1) if twin_agrees else ok(r2, w2)  # the same bytes as w1's, or other ones
    late_twin = store.record_results(l2.id, w2.id, sig(), [IncomingResult(r2, twin.output_hash, twin.output, None)],
                                     [], T0 + 2)
    assert late_twin.statuses == {r2: "pending"}  # the task is decided: validation compares it
    assert late_twin.tasks == [task0]
    assert late_twin.completed_jobs == []
    assert not late_twin.lease_expired
    assert store.get_job(job.id).tasks_done == 2  # not counted at record time...
    assert validate(store, late_twin) == []  # ...nor by validation: completed once, not twice
    assert store.get_job(job.id).tasks_done == 2
    verdict = "valid" if twin_agrees else "invalid"
    assert results_by_status(store, job.id) == {"accepted": 2, verdict: 1}
    assert final_results(store, job.id) == {"accepted": 2, **({"valid": 1} if twin_agrees else {})}
    assert reputation(store, w2) == ((1, 1, 0) if twin_agrees else (0, 0, 1))
    assert reputation(store, w1) == (2, 2, 0)
    # tasks per worker: the results that count for it (accepted, or valid beside the accepted one)
    assert store.job_workers(job.id) == {w1.address: 2, **({w2.address: 1} if twin_agrees else {})}
    outputs = list(store.accepted_outputs(job.id))
    assert [(o.task_index, o.worker_address) for o in outputs] == [(0, w1.address), (1, w1.address)]
    assert outputs[0].output == output_for(r1, w1)


def test_one_replica_named_twice_in_a_batch_counts_once(store: SqlStore) -> None:
    job = make_job(store, 2)
    w = make_worker(store)
    lease = store.lease(w.id, 2, [], LEASE, T0)
    assert lease is not None
    a, b = (r.replica_id for r in lease.replicas)
    outcome = store.record_results(lease.id, w.id, sig(), [ok(a, w), ok(a, w), ok(b, w)], [], T0 + 1)
    assert results_by_status(store, job.id) == {"accepted": 2, "duplicate": 1}
    assert store.replica_counts(job.id) == {"done": 2}
    # both tasks are done and accepted, so the job must count both and be complete;
    # otherwise nothing will ever reissue them and the job never finishes
    assert outcome.completed_jobs == [job.id]
    assert store.get_job(job.id).tasks_done == 2, "an accepted task was not counted"
    assert validate(store, outcome) == []
    assert store.get_job(job.id).tasks_done == 2, "an accepted task was counted twice"
    assert reputation(store, w) == (2, 2, 0)  # credited once per replica, not per mention
    assert store.reward_totals(None) == {w.address: 2 * 7}  # paid once per replica, not per mention


def test_a_replica_named_first_as_an_error_then_with_an_output_does_not_stall_the_job(store: SqlStore) -> None:
    # a replica named twice is answered by its first mention; here that is an error, so
    # the task must stay open and be reissued, as for any error, whatever the second mention says
    job = make_job(store, 2)
    w, other = make_worker(store, "w"), make_worker(store, "other")
    lease = store.lease(w.id, 2, [], LEASE, T0)
    assert lease is not None
    a, b = (r.replica_id for r in lease.replicas)
    a_index = next(r.task_index for r in lease.replicas if r.replica_id == a)
    outcome = store.record_results(lease.id, w.id, sig(), [err(a), ok(a, w), ok(b, w)], [], T0 + 1)
    assert outcome.statuses[b] == "accepted"
    assert results_by_status(store, job.id) == {"error": 1, "duplicate": 1, "accepted": 1}
    assert store.get_job(job.id).tasks_done == 1
    assert store.replica_counts(job.id) == {"done": 1, "failed": 1, "ready": 1}, "the errored task was not reissued"
    validate(store, outcome)
    again = store.lease(other.id, 10, [], LEASE, T0 + 2)
    assert again is not None and [r.task_index for r in again.replicas] == [a_index]
    out = store.record_results(again.id, other.id, sig(), [ok(again.replicas[0].replica_id, other)], [], T0 + 3)
    assert out.completed_jobs == [job.id]
    assert store.get_job(job.id).tasks_done == 2
    assert {o.task_index: o.worker_address for o in store.accepted_outputs(job.id)}[a_index] == other.address


def test_a_result_after_the_deadline_is_late_and_not_counted(store: SqlStore) -> None:
    job = make_job(store, 2)
    w = make_worker(store)
    lease = store.lease(w.id, 2, [], 10.0, T0)
    assert lease is not None
    ids = [r.replica_id for r in lease.replicas]

    outcome = store.record_results(lease.id, w.id, sig(), [ok(i, w) for i in ids], [], T0 + 10.5)
    assert outcome.lease_expired
    assert outcome.statuses == {i: "late" for i in ids}
    assert outcome.completed_jobs == []
    assert store.get_job(job.id).tasks_done == 0
    assert results_by_status(store, job.id) == {"late": 2}
    assert list(store.accepted_outputs(job.id)) == []
    # the tasks are still open: reaping reissues them
    assert store.reap_expired(T0 + 11) == 2
    assert store.replica_counts(job.id) == {"expired": 2, "ready": 2}

    # and after the reap, a result under the old lease is still late, whatever time it claims
    again = store.record_results(lease.id, w.id, sig(), [ok(ids[0], w)], [], T0 + 1)
    assert again.lease_expired
    assert again.statuses == {ids[0]: "late"}
    assert store.get_job(job.id).tasks_done == 0


def test_reap_expired_reissues_open_tasks_to_another_worker(store: SqlStore) -> None:
    job = make_job(store, 5)
    slow, steady, fresh = make_worker(store, "slow"), make_worker(store, "steady"), make_worker(store, "fresh")
    expiring = store.lease(slow.id, 3, [], 10.0, T0)
    lasting = store.lease(steady.id, 2, [], 100.0, T0)
    assert expiring and lasting
    answered = expiring.replicas[0]
    out = store.record_results(expiring.id, slow.id, sig(), [ok(answered.replica_id, slow)], [], T0 + 1)
    assert out.statuses == {answered.replica_id: "accepted"}
    assert store.get_job(job.id).tasks_done == 1

    assert store.reap_expired(T0 + 5) == 0  # nothing is past its deadline yet
    assert store.reap_expired(T0 + 20) == 2  # the two unanswered replicas of the expired lease
    assert store.reap_expired(T0 + 21) == 0  # reaping is done once
    assert store.lease_view(expiring.id).state == "expired"
    assert store.lease_view(lasting.id).state == "open"
    assert store.replica_counts(job.id) == {"done": 1, "expired": 2, "leased": 2, "ready": 2}

    reissued = store.lease(fresh.id, 10, [], LEASE, T0 + 21)
    assert reissued is not None
    assert sorted(r.task_index for r in reissued.replicas) == sorted(r.task_index for r in expiring.replicas[1:])
    assert not {r.replica_id for r in reissued.replicas} & {r.replica_id for r in expiring.replicas}
    out = store.record_results(
        reissued.id, fresh.id, sig(), [ok(r.replica_id, fresh) for r in reissued.replicas], [], T0 + 22
    )
    assert set(out.statuses.values()) == {"accepted"}
    assert out.completed_jobs == []
    assert store.get_job(job.id).tasks_done == 3
    out = store.record_results(
        lasting.id, steady.id, sig(), [ok(r.replica_id, steady) for r in lasting.replicas], [], T0 + 23
    )
    assert set(out.statuses.values()) == {"accepted"}
    assert out.completed_jobs == [job.id]
    assert store.get_job(job.id).tasks_done == 5
    # the slow worker's answered replica was credited; its timeout reset the run
    assert reputation(store, slow) == (0, 1, 0)
    assert store.job_workers(job.id) == {slow.address: 1, fresh.address: 2, steady.address: 2}


def test_error_results_reissue_until_max_errors_then_the_task_fails(store: SqlStore) -> None:
    job = make_job(store, 2)
    w = make_worker(store)
    first = store.lease(w.id, 10, [], LEASE, T0)
    assert first is not None
    bad = next(r for r in first.replicas if r.task_index == 0)
    good = next(r for r in first.replicas if r.task_index == 1)
    out = store.record_results(first.id, w.id, sig(), [err(bad.replica_id), ok(good.replica_id, w)], [], T0 + 1)
    assert out.statuses == {bad.replica_id: "error", good.replica_id: "accepted"}
    assert out.tasks == [] and out.completed_jobs == []
    assert store.get_job(job.id).tasks_done == 1
    assert store.replica_counts(job.id) == {"done": 1, "failed": 1, "ready": 1}  # the error is reissued

    now = T0 + 2
    for attempt in range(2, MAX_TASK_ERRORS + 1):
        again = store.lease(w.id, 10, [], LEASE, now)
        assert again is not None, f"task 0 was not reissued after {attempt - 1} errors"
        assert [r.task_index for r in again.replicas] == [0]
        out = store.record_results(again.id, w.id, sig(), [err(again.replicas[0].replica_id)], [], now + 1)
        assert out.statuses == {again.replicas[0].replica_id: "error"}
        now += 2

    assert out.completed_jobs == [job.id]
    assert store.lease(w.id, 10, [], LEASE, now) is None
    failed = store.get_job(job.id)
    assert (failed.tasks_done, failed.tasks_failed, failed.complete) == (1, 1, True)
    assert store.replica_counts(job.id) == {"done": 1, "failed": MAX_TASK_ERRORS}
    assert results_by_status(store, job.id) == {"accepted": 1, "error": MAX_TASK_ERRORS}
    assert store.complete_unfinished_jobs() == [job.id]
    assert [o.task_index for o in store.accepted_outputs(job.id)] == [1]


def test_release_puts_replicas_back_in_the_ready_queue(store: SqlStore) -> None:
    job = make_job(store, 4)
    quitter, other = make_worker(store, "quitter"), make_worker(store, "other")
    lease = store.lease(quitter.id, 4, [], LEASE, T0)
    assert lease is not None
    done, *given_back = [r.replica_id for r in lease.replicas]

    out = store.record_results(lease.id, quitter.id, sig(), [ok(done, quitter)], given_back, T0 + 1)
    assert out.statuses == {done: "accepted"}
    assert out.completed_jobs == []
    assert store.get_job(job.id).tasks_done == 1
    assert store.replica_counts(job.id) == {"done": 1, "ready": 3}
    assert store.lease_view(lease.id).state == "closed"

    taken = store.lease(other.id, 10, [], LEASE, T0 + 2)
    assert taken is not None
    assert sorted(r.replica_id for r in taken.replicas) == sorted(given_back)
    out = store.record_results(taken.id, other.id, sig(), [ok(i, other) for i in given_back], [], T0 + 3)
    assert set(out.statuses.values()) == {"accepted"}
    assert out.completed_jobs == [job.id]
    assert store.get_job(job.id).tasks_done == 4
    assert store.job_workers(job.id) == {quitter.address: 1, other.address: 3}


def test_cancel_job_stops_leasing_and_keeps_accepted_results(store: SqlStore) -> None:
    doomed = make_job(store, 3)
    kept = make_job(store, 2)
    w = make_worker(store)
    lease = store.lease(w.id, 2, [], LEASE, T0)  # two of the doomed job's replicas
    assert lease is not None and {r.job_id for r in lease.replicas} == {doomed.id}
    a, b = (r.replica_id for r in lease.replicas)
    assert store.record_results(lease.id, w.id, sig(), [ok(a, w)], [], T0 + 1).statuses == {a: "accepted"}

    cancelled = store.cancel_job(doomed.id, T0 + 2)
    assert (cancelled.state, cancelled.finished_at, cancelled.tasks_done) == ("cancelled", T0 + 2, 1)
    assert store.replica_counts(doomed.id) == {"done": 1, "cancelled": 2}

    rest = store.lease(w.id, 10, [], LEASE, T0 + 3)
    assert rest is not None
    assert {r.job_id for r in rest.replicas} == {kept.id}
    assert store.lease(w.id, 10, [], LEASE, T0 + 3) is None

    # a result for a replica of the cancelled job is recorded but not counted
    out = store.record_results(lease.id, w.id, sig(), [ok(b, w)], [], T0 + 4)
    assert out.statuses[b] not in ("accepted", "pending")
    assert out.completed_jobs == []
    assert validate(store, out) == []
    assert store.get_job(doomed.id).tasks_done == 1
    assert [o.task_index for o in store.accepted_outputs(doomed.id)] == [
        next(r.task_index for r in lease.replicas if r.replica_id == a)
    ]
    assert store.complete_unfinished_jobs() == []

    with pytest.raises(Conflict):
        store.cancel_job(doomed.id, T0 + 5)
    with pytest.raises(JobNotFound):
        store.cancel_job("0" * 64, T0 + 5)


def test_only_open_tasks_of_quorum_one_jobs_are_accepted_as_recorded(store: SqlStore) -> None:
    # one lease holding replicas of a quorum-one job and of a quorum-two job: only the
    # former are decided by record_results, the latter wait for a validation round
    single = make_job(store, 2)
    pair = make_job(store, 1, policy=QUORUM_TWO, initial_replicas=2)
    w, v = make_worker(store, "w"), make_worker(store, "v")
    lease = store.lease(w.id, 10, [], LEASE, T0)
    assert lease is not None
    assert sorted(r.job_id == pair.id for r in lease.replicas) == [False, False, True]  # one replica of the pair
    items = [
        echo_ok(r.replica_id, pair, r.task_index) if r.job_id == pair.id else ok(r.replica_id, w)
        for r in lease.replicas
    ]
    out = store.record_results(lease.id, w.id, sig(), items, [], T0 + 1)
    assert out.statuses == {r.replica_id: "pending" if r.job_id == pair.id else "accepted" for r in lease.replicas}
    assert out.completed_jobs == [single.id]
    assert len(out.tasks) == 1  # only the quorum-two task goes to validation
    assert store.get_job(single.id).tasks_done == 2
    assert (store.get_job(pair.id).tasks_done, results_by_status(store, pair.id)) == (0, {"pending": 1})
    assert validate(store, out) == []  # the second replica is still out: nothing decided yet
    assert store.get_job(pair.id).tasks_done == 0
    assert reputation(store, w) == (2, 2, 0)  # credited for the quorum-one results only

    second = store.lease(v.id, 10, [], LEASE, T0 + 2)
    assert second is not None and [r.job_id for r in second.replicas] == [pair.id]
    out = store.record_results(
        second.id, v.id, sig(), [echo_ok(second.replicas[0].replica_id, pair, 0)], [], T0 + 3
    )
    assert set(out.statuses.values()) == {"pending"} and out.completed_jobs == []
    assert validate(store, out) == [pair.id]
    assert results_by_status(store, pair.id) == {"accepted": 1, "valid": 1}
    assert final_results(store, pair.id) == {"accepted": 1, "valid": 1}
    assert store.get_job(pair.id).tasks_done == 1
    assert reputation(store, w) == (3, 3, 0) and reputation(store, v) == (1, 1, 0)


def test_extend_lease(store: SqlStore) -> None:
    make_job(store, 3)
    w, stranger = make_worker(store, "w"), make_worker(store, "stranger")
    lease = store.lease(w.id, 3, [], 10.0, T0)
    assert lease is not None
    ids = [r.replica_id for r in lease.replicas]

    with pytest.raises(LeaseError):
        store.extend_lease(999_999, w.id, 10.0, T0 + 1)
    with pytest.raises(LeaseError):
        store.extend_lease(lease.id, stranger.id, 10.0, T0 + 1)

    assert store.extend_lease(lease.id, w.id, 10.0, T0 + 8) == T0 + 18
    assert store.lease_view(lease.id).expires_at == T0 + 18
    # the extension is real: a result past the first deadline still counts
    out = store.record_results(lease.id, w.id, sig(), [ok(ids[0], w)], [], T0 + 15)
    assert out.statuses == {ids[0]: "accepted"}
    assert not out.lease_expired
    assert results_by_status(store, lease.replicas[0].job_id) == {"accepted": 1}
    assert store.get_job(lease.replicas[0].job_id).tasks_done == 1
    assert store.reap_expired(T0 + 15) == 0

    with pytest.raises(LeaseError, match="expired"):  # past the deadline, not yet reaped
        store.extend_lease(lease.id, w.id, 10.0, T0 + 19)
    assert store.reap_expired(T0 + 19) == 2
    with pytest.raises(LeaseError, match="expired"):  # reaped
        store.extend_lease(lease.id, w.id, 10.0, T0 + 19)


def test_extend_lease_refuses_a_closed_lease(store: SqlStore) -> None:
    make_job(store, 1)
    w = make_worker(store)
    lease = store.lease(w.id, 1, [], 10.0, T0)
    assert lease is not None
    store.record_results(lease.id, w.id, sig(), [ok(lease.replicas[0].replica_id, w)], [], T0 + 1)
    with pytest.raises(LeaseError):
        store.extend_lease(lease.id, w.id, 10.0, T0 + 2)


def test_accepted_outputs_come_in_task_order(store: SqlStore) -> None:
    job = make_job(store, 6)
    workers = [make_worker(store, f"w{i}") for i in range(3)]
    leases = [(w, store.lease(w.id, 2, [], LEASE, T0)) for w in workers]
    # answer the last lease first, and each lease's replicas in reverse
    for w, lease in reversed(leases):
        assert lease is not None
        out = store.record_results(
            lease.id, w.id, sig(), [ok(r.replica_id, w) for r in reversed(lease.replicas)], [], T0 + 1
        )
        assert set(out.statuses.values()) == {"accepted"}

    by_task = {r.task_index: (r.replica_id, w) for w, lease in leases for r in lease.replicas}
    outputs = list(store.accepted_outputs(job.id))
    assert [o.task_index for o in outputs] == list(range(6))
    for o in outputs:
        replica_id, w = by_task[o.task_index]
        assert (o.first_item, o.n_items, o.worker_address) == (3 * o.task_index, 3, w.address)
        assert o.output == output_for(replica_id, w)


def test_a_job_survives_closing_and_reopening_the_store(open_store) -> None:
    # a quorum of two, so that results wait for a validation round, and one can be left pending
    first = open_store()
    job = make_job(first, 4, policy=QUORUM_TWO, initial_replicas=2)
    w, v = make_worker(first, "w"), make_worker(first, "v")
    lease = first.lease(w.id, 4, [], LEASE, T0)
    other = first.lease(v.id, 4, [], LEASE, T0)
    assert lease is not None and other is not None
    mine = {r.task_index: r.replica_id for r in lease.replicas}
    theirs = {r.task_index: r.replica_id for r in other.replicas}
    assert sorted(mine) == sorted(theirs) == [0, 1, 2, 3]
    out = first.record_results(
        other.id, v.id, sig(), [echo_ok(theirs[i], job, i) for i in range(4)], [], T0 + 1
    )
    assert set(out.statuses.values()) == {"pending"}
    assert validate(first, out) == []  # one opinion of two per task
    out = first.record_results(lease.id, w.id, sig(), [echo_ok(mine[i], job, i) for i in (0, 1)], [], T0 + 1)
    assert set(out.statuses.values()) == {"pending"}
    assert validate(first, out) == []
    assert first.get_job(job.id).tasks_done == 2
    outputs_before = list(first.accepted_outputs(job.id))
    # a third result is recorded, and the process stops before validating it
    first.record_results(lease.id, w.id, sig(), [echo_ok(mine[2], job, 2)], [], T0 + 1)
    first.close()

    second = open_store()  # the same file / database, migrated again (a no-op)
    again = second.get_job(job.id)
    assert (again.n_tasks, again.tasks_done, again.state, again.params) == (4, 2, "running", {"k": 1})
    assert second.replica_counts(job.id) == {"done": 7, "leased": 1}
    assert list(second.accepted_outputs(job.id)) == outputs_before
    assert second.get_worker(w.address).id == w.id
    assert results_by_status(second, job.id) == {"accepted": 2, "valid": 2, "pending": 3}
    # what was left pending is found and validated after the restart (the coordinator does this at start)
    assert Validator(second).validate() == []
    assert second.get_job(job.id).tasks_done == 3
    assert results_by_status(second, job.id) == {"accepted": 3, "valid": 3, "pending": 1}
    # the open lease carries on where it was
    assert second.lease_view(lease.id).state == "open"
    out = second.record_results(lease.id, w.id, sig(), [echo_ok(mine[3], job, 3)], [], T0 + 2)
    assert out.statuses == {mine[3]: "pending"}
    assert validate(second, out) == [job.id]
    assert second.get_job(job.id).tasks_done == 4
    assert [o.task_index for o in second.accepted_outputs(job.id)] == [0, 1, 2, 3]


# -- PostgreSQL only ------------------------------------------------------------------


@pytest.mark.postgres
def test_two_coordinators_leasing_concurrently_never_share_a_replica(pg_database) -> None:
    url = pg_database()
    stores = [SqlStore.open(url), SqlStore.open(url)]  # two engines: two coordinator processes' view
    try:
        n_tasks = 600
        make_job(stores[0], n_tasks)
        workers = [make_worker(stores[0], f"w{i}") for i in range(6)]
        start = threading.Barrier(len(workers))
        taken: list[list[int]] = [[] for _ in workers]
        failures: list[BaseException] = []

        def lease_until_dry(i: int) -> None:
            st = stores[i % 2]
            try:
                start.wait()
                types = ["echo"] if i % 3 == 0 else []  # the task-type filter takes the same path
                while (lease := st.lease(workers[i].id, 7, types, LEASE, T0)) is not None:
                    taken[i].extend(r.replica_id for r in lease.replicas)
            except BaseException as exc:  # surfaced below
                failures.append(exc)

        threads = [threading.Thread(target=lease_until_dry, args=(i,)) for i in range(len(workers))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
        assert not any(t.is_alive() for t in threads)
        assert failures == []

        everything = [rid for ids in taken for rid in ids]
        assert len(everything) == len(set(everything)) == n_tasks
        # both coordinators handed out work (not one waiting on the other's lock throughout)
        assert sum(map(len, taken[0::2])) > 0 and sum(map(len, taken[1::2])) > 0
        with stores[1].engine.connect() as conn:
            states = dict(conn.execute(select(s.replicas.c.state, func.count()).group_by(s.replicas.c.state)).all())
            per_lease_worker = conn.execute(
                select(func.count()).select_from(s.replicas.join(s.leases, s.leases.c.id == s.replicas.c.lease_id))
                .where(s.replicas.c.worker_id != s.leases.c.worker_id)
            ).scalar_one()
        assert states == {int(ReplicaState.LEASED): n_tasks}
        assert per_lease_worker == 0
    finally:
        for st in stores:
            st.close()



def test_with_separate_networks_a_task_never_goes_to_two_workers_of_one_network(store: SqlStore) -> None:
    # the trust issue: "optionally also the same source network, a setting that is off for loopback"
    make_job(store, 1, policy=QUORUM_TWO, initial_replicas=2)
    a = store.register_worker("0x" + secrets.token_hex(20), "a", "alice", T0, network="198.51.100.0/24")
    b = store.register_worker("0x" + secrets.token_hex(20), "b", "bob", T0, network="198.51.100.0/24")
    c = store.register_worker("0x" + secrets.token_hex(20), "c", "carol", T0, network="203.0.113.0/24")
    assert store.lease(a.id, 5, [], LEASE, T0, separate_networks=True) is not None
    assert store.lease(b.id, 5, [], LEASE, T0, separate_networks=True) is None  # a's neighbour: not the twin
    assert store.lease(b.id, 5, [], LEASE, T0) is not None  # with the setting off (loopback grids) it may


def test_with_separate_networks_another_network_gets_the_second_replica(store: SqlStore) -> None:
    make_job(store, 1, policy=QUORUM_TWO, initial_replicas=2)
    a = store.register_worker("0x" + secrets.token_hex(20), "a", "alice", T0, network="198.51.100.0/24")
    c = store.register_worker("0x" + secrets.token_hex(20), "c", "carol", T0, network="203.0.113.0/24")
    first = store.lease(a.id, 5, [], LEASE, T0, separate_networks=True)
    second = store.lease(c.id, 5, [], LEASE, T0, separate_networks=True)
    assert first is not None and second is not None
    assert first.replicas[0].task_index == second.replicas[0].task_index == 0
