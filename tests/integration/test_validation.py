"""Validation through the real store: quorum, placement, gold, adaptive finality, audits, quarantine.

Each test drives ``store.lease`` / ``store.record_results`` / ``Validator.validate``
the way the scheduler does, with several registered workers, on both backends
(the parametrized ``store`` fixture: a SQLite file, and PostgreSQL when a server
answers). Echo tasks: an honest answer is the task's input; a cheat sends
something else. Adaptive acceptance and audits draw from a fixed "random"
value, so which results are trusted alone is decided in advance.

Jobs with a quorum of one (``NO_REPLICATION``, used here for gold tasks and
filler work) need no validation round: ``record_results`` accepts a result
for an open task at once. Everything else is decided by the validator, and
every test runs twice: once with each result judged by a validation round
only, and once as the scheduler records them, where a task's only result is
judged in ``record_results`` itself (``Validator.lone``, adaptive replication
without a round). Both must come to the same decisions.
"""

from __future__ import annotations

import random
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import insert, select, update

from coopgrid.config import Settings
from coopgrid.coordinator.scheduler import Scheduler
from coopgrid.coordinator.trust import TrustPolicy
from coopgrid.coordinator.validation import Validator
from coopgrid.errors import Forbidden, LeaseError
from coopgrid.protocol import LeaseRequest, sha256_hex
from coopgrid.store import SqlStore
from coopgrid.store import schema as s
from coopgrid.store.base import (
    IncomingResult,
    JobRecord,
    Lease,
    LeasedReplica,
    NewJob,
    NewTask,
    Reputation,
    WorkerRecord,
)
from coopgrid.store.sql_trust import QUOTA_MAX, QUOTA_MIN

T0 = 1_700_000_000.0
LEASE = 30.0

NO_REPLICATION = {"replicas": 1, "quorum": 1, "adaptive": False, "gold_rate": 0}
#: the default policy without random gold (gold replicas are asked for explicitly here), where every
#: worker counts as having a record (newcomers' quorums are tested in test_collusion.py)
QUORUM = {"gold_rate": 0, "record_run": 0}

Answer = Callable[[LeasedReplica], bytes]


def honest(r: LeasedReplica) -> bytes:
    return r.input_data or b""


def wrong(r: LeasedReplica) -> bytes:
    return b"not the answer to " + (r.input_data or b"")


class Fixed(random.Random):
    """Always draws ``value``: with 0.5 a worker with run >= max(trust_run, 2) is accepted alone,
    and audited when the audit probability is above one half."""

    def __init__(self, value: float = 0.5) -> None:
        super().__init__(0)
        self.value = value

    def random(self) -> float:
        return self.value


class Grid:
    """Workers leasing, answering and validating against one store, on a clock of its own."""

    def __init__(self, store: SqlStore, at_record: bool = False) -> None:
        self.store = store
        self.validator = Validator(store, rng=Fixed())
        self.at_record = at_record  # lone results judged as they are recorded, as the scheduler does
        self.now = T0
        self.completed: list[str] = []
        self._owner = store.add_token("submitter", "submitter", secrets.token_hex(32), T0).id

    def tick(self) -> float:
        self.now += 1
        return self.now

    def job(self, n_tasks: int, policy: dict[str, Any], reward: int = 5) -> JobRecord:
        job_id = secrets.token_hex(32)
        inputs = [f"{job_id[:8]}/input/{i}".encode() for i in range(n_tasks)]
        tasks = [NewTask(sha256_hex(x), x, i, 1) for i, x in enumerate(inputs)]
        trust = TrustPolicy.model_validate(policy)
        job = NewJob(
            id=job_id, owner_token_id=self._owner, name="echo job", task_type="echo", model_hash=None, params={},
            dataset_hash=sha256_hex(job_id.encode()), n_items=n_tasks, task_size=1, reward_per_task=reward,
            policy=trust.model_dump(), initial_replicas=trust.initial_replicas,
        )
        return self.store.create_job(job, tasks, self.tick())

    def worker(self, name: str, owner: str | None = None, trusted: bool = False) -> WorkerRecord:
        owner = f"owner-of-{name}" if owner is None else owner
        return self.store.register_worker("0x" + secrets.token_hex(20), name, owner, self.now, trusted=trusted)

    def lease(self, w: WorkerRecord, n: int = 1, gold: int = 0) -> Lease | None:
        return self.store.lease(w.id, n, [], LEASE, self.tick(), gold=gold, rng=random.Random(1))

    def answer(self, w: WorkerRecord, lease: Lease, answer: Answer = honest) -> dict[int, str]:
        """Record the lease's results and validate them; the record-time statuses.

        The jobs completed are those the store completed as it recorded (quorum of one)
        and those the validation round completed, as the scheduler reports them."""
        items = [IncomingResult(r.replica_id, sha256_hex(answer(r)), answer(r), None) for r in lease.replicas]
        outcome = self.store.record_results(lease.id, w.id, "0x" + "00" * 65, items, [], self.tick(),
                                            judge=self.validator.lone if self.at_record else None)
        self.completed += outcome.completed_jobs + self.validator.validate(outcome.tasks)
        return outcome.statuses

    def work(self, w: WorkerRecord, n: int = 1, answer: Answer = honest, gold: int = 0) -> Lease:
        """Lease up to ``n`` replicas (plus ``gold``), answer and validate them.

        At record time a normal replica of a quorum-of-one job is accepted at once; any other
        result is pending (or rejected: a quarantined worker's), or, judged at record time, accepted
        when it was its task's only one and adaptive replication trusted it."""
        lease = self.lease(w, n, gold)
        assert lease is not None, f"no work for {w.name}"
        statuses = self.answer(w, lease, answer)
        quarantined = statuses and set(statuses.values()) == {"rejected"}
        for r in lease.replicas:
            at_once = self.store.get_job(r.job_id).policy["quorum"] == 1 and self.kind(r.replica_id) == "normal"
            expected = {"rejected"} if quarantined else {"accepted"} if at_once else {"pending"}
            if self.at_record and not quarantined and self.kind(r.replica_id) == "normal":
                expected.add("accepted")
            assert statuses[r.replica_id] in expected, (r, statuses)
        return lease

    # -- what the store holds ------------------------------------------------------------

    def task_id(self, job: JobRecord, idx: int) -> int:
        with self.store.engine.connect() as conn:
            return conn.execute(
                select(s.tasks.c.id).where(s.tasks.c.job_id == job.id, s.tasks.c.idx == idx)
            ).scalar_one()

    def task(self, job: JobRecord, idx: int) -> tuple[str, int]:
        """(state, normal replicas issued)."""
        with self.store.engine.connect() as conn:
            row = conn.execute(
                select(s.tasks.c.state, s.tasks.c.issued).where(s.tasks.c.job_id == job.id, s.tasks.c.idx == idx)
            ).one()
        return row.state, row.issued

    def results(self, job: JobRecord, idx: int) -> dict[str, tuple[str, bool]]:
        """Worker name -> (status, final) of each result for a task."""
        q = (
            select(s.workers.c.name, s.results.c.status, s.results.c.final)
            .join(s.workers, s.workers.c.id == s.results.c.worker_id)
            .join(s.tasks, s.tasks.c.id == s.results.c.task_id)
            .where(s.tasks.c.job_id == job.id, s.tasks.c.idx == idx)
            .order_by(s.results.c.id)
        )
        with self.store.engine.connect() as conn:
            rows = conn.execute(q).all()
        assert len({r.name for r in rows}) == len(rows), rows
        return {r.name: (r.status, bool(r.final)) for r in rows}

    def kind(self, replica_id: int) -> str:
        with self.store.engine.connect() as conn:
            return conn.execute(select(s.replicas.c.kind).where(s.replicas.c.id == replica_id)).scalar_one()

    def kinds(self, job: JobRecord, idx: int, state: int | None = None) -> list[str]:
        """Kinds of a task's replicas (in ``state`` only when given), oldest first."""
        q = select(s.replicas.c.kind).where(s.replicas.c.task_id == self.task_id(job, idx))
        if state is not None:
            q = q.where(s.replicas.c.state == state)
        with self.store.engine.connect() as conn:
            return list(conn.execute(q.order_by(s.replicas.c.id)).scalars())

    def rep(self, w: WorkerRecord) -> Reputation:
        (r,) = [r for wr, r in self.store.reputations() if wr.id == w.id and r.task_type == "echo"]
        return r

    def set_run(self, w: WorkerRecord, run: int) -> None:
        """A shortcut for a long run of validated results."""
        with self.store.engine.begin() as conn:
            if not conn.execute(select(s.reputation.c.run).where(s.reputation.c.worker_id == w.id)).first():
                conn.execute(insert(s.reputation).values(worker_id=w.id, task_type="echo", quota=QUOTA_MAX))
            conn.execute(update(s.reputation).where(s.reputation.c.worker_id == w.id).values(run=run, valid=run))

    def quarantined(self, w: WorkerRecord) -> str | None:
        record = self.store.get_worker(w.address)
        assert record is not None
        return record.quarantine_reason if record.quarantined_at is not None else None


@pytest.fixture(params=["round", "at-record"])
def grid(store: SqlStore, request: pytest.FixtureRequest) -> Grid:
    return Grid(store, at_record=request.param == "at-record")


def scheduler(store: SqlStore, tmp_path: Path) -> Scheduler:
    """The scheduler's leasing path (quarantine, quotas) on this store; nothing else of it is used."""
    settings = Settings(data_dir=tmp_path, ledger="none", audit_wait_seconds=0)  # audits at once (waiting: own test)
    return Scheduler(settings, store, None, None, None, Validator(store))  # type: ignore[arg-type]


READY, LEASED, DONE = int(s.ReplicaState.READY), int(s.ReplicaState.LEASED), int(s.ReplicaState.DONE)


# -- quorum -----------------------------------------------------------------------------------


def test_two_agreeing_workers_make_a_quorum_and_a_disagreeing_third_is_invalid(grid: Grid, tmp_path: Path) -> None:
    job = grid.job(2, QUORUM)
    assert grid.store.replica_counts(job.id) == {"ready": 2}  # adaptive: one replica each at first
    ann, bob, cat = grid.worker("ann"), grid.worker("bob"), grid.worker("cat")
    grid.set_run(cat, 7)

    grid.work(ann, 2)  # the first opinion on both tasks: alone, not enough
    for idx in (0, 1):
        assert grid.task(job, idx) == ("open", 2)
        assert grid.results(job, idx) == {"ann": ("pending", False)}
    assert grid.store.replica_counts(job.id) == {"done": 2, "ready": 2}
    assert grid.store.get_job(job.id).tasks_done == 0

    agreed = grid.work(bob).replicas[0].task_index  # bob agrees with ann on one task...
    disputed = 1 - agreed
    grid.work(cat, answer=wrong)  # ...cat disagrees with her on the other
    assert grid.task(job, agreed) == ("done", 2)
    assert grid.results(job, agreed) == {"ann": ("accepted", True), "bob": ("valid", True)}
    assert grid.task(job, disputed) == ("open", 3)  # a tie: a third opinion
    assert grid.results(job, disputed) == {"ann": ("pending", False), "cat": ("pending", False)}
    assert grid.completed == []

    grid.work(bob)  # the tie-breaker sides with ann
    assert grid.task(job, disputed) == ("done", 3)
    assert grid.results(job, disputed) == {
        "ann": ("accepted", True), "cat": ("invalid", False), "bob": ("valid", True)
    }
    assert grid.completed == [job.id]
    assert grid.store.get_job(job.id).tasks_done == 2
    assert [o.worker_address for o in grid.store.accepted_outputs(job.id)] == [ann.address, ann.address]

    for w in (ann, bob):
        r = grid.rep(w)
        assert (r.run, r.valid, r.invalid) == (2, 2, 0)
    r = grid.rep(cat)
    assert (r.run, r.invalid, r.quota) == (0, 1, QUOTA_MIN)  # the run resets; the quota drops
    assert grid.quarantined(cat) is None  # once is not enough (max_invalid 3)
    assert grid.store.reward_totals(None) == {ann.address: 10, bob.address: 10}  # cat earns nothing

    # with its quota down, the scheduler leases it one replica at a time
    grid.job(3, QUORUM)
    lease = scheduler(grid.store, tmp_path).lease(grid.store.get_worker(cat.address), LeaseRequest(max_replicas=100))
    assert lease is not None and len(lease["replicas"]) == 1


def test_suspects_never_decide_a_task_together_but_each_pairs_with_others(store: SqlStore) -> None:
    grid = Grid(store)
    job = grid.job(2, {"replicas": 3, "quorum": 2, "adaptive": False, "gold_rate": 0, "record_run": 0})
    s1, s2, clean = grid.worker("s1"), grid.worker("s2"), grid.worker("clean")
    with store.engine.begin() as conn:  # both shared a real part of a quarantined worker's decisions
        conn.execute(update(s.workers).where(s.workers.c.id.in_([s1.id, s2.id])).values(partner_quarantines=1))
    first = grid.lease(s1, 100)
    assert first is not None and sorted(r.task_index for r in first.replicas) == [0, 1]
    assert grid.lease(s2, 100) is None  # every task it could take, its fellow suspect holds
    got = grid.lease(clean, 100)  # an unflagged worker pairs with a suspect as with anyone
    assert got is not None and sorted(r.task_index for r in got.replicas) == [0, 1]


def test_placement_never_gives_two_replicas_of_a_task_to_one_worker_or_one_owner(grid: Grid) -> None:
    job = grid.job(4, {"replicas": 4, "quorum": 2, "adaptive": False, "gold_rate": 0, "record_run": 0})
    assert grid.store.replica_counts(job.id) == {"ready": 16}  # every replica made at once
    assert grid.task(job, 0) == ("open", 4)
    a1, a2, bob = grid.worker("a1", "acme"), grid.worker("a2", "acme"), grid.worker("bob")
    anon1, anon2, late = grid.worker("anon1", ""), grid.worker("anon2", ""), grid.worker("late")

    first = grid.lease(a1, 100)
    assert first is not None
    assert sorted(r.task_index for r in first.replicas) == [0, 1, 2, 3]  # one replica of each task, not more
    assert grid.lease(a1, 100) is None
    assert grid.lease(a2, 100) is None  # acme already holds every task
    for w in (bob, anon1, anon2):  # workers without a declared owner are each their own owner
        got = grid.lease(w, 100)
        assert got is not None and sorted(r.task_index for r in got.replicas) == [0, 1, 2, 3], w.name
    assert grid.lease(late, 100) is None  # 16 replicas, 16 leased

    q = (
        select(s.replicas.c.task_id, s.workers.c.id, s.workers.c.owner)
        .join(s.workers, s.workers.c.id == s.replicas.c.worker_id)
        .where(s.replicas.c.job_id == job.id)
    )
    with grid.store.engine.connect() as conn:
        rows = conn.execute(q).all()
    by_task: dict[int, list[Any]] = {}
    for r in rows:
        by_task.setdefault(r.task_id, []).append(r)
    assert len(by_task) == 4
    for held in by_task.values():
        assert len({r.id for r in held}) == 4
        assert len({r.owner or f"#{r.id}" for r in held}) == 4


def test_a_worker_outvoted_max_invalid_times_is_quarantined_and_its_provisional_results_redone(
    grid: Grid, tmp_path: Path
) -> None:
    policy = QUORUM | {"max_invalid": 2, "audit_scale": 0, "finality_checks": 40}
    job = grid.job(3, policy)
    mole, ann, bob = grid.worker("mole"), grid.worker("ann"), grid.worker("bob")
    grid.set_run(mole, 100)  # trusted: its lone result is accepted without replication

    trusted = grid.work(mole).replicas[0].task_index
    assert grid.task(job, trusted) == ("provisional", 1)
    assert grid.results(job, trusted) == {"mole": ("accepted", False)}
    assert grid.store.get_job(job.id).tasks_done == 1
    assert grid.store.trust_counts(job.id)["tasks_provisional"] == 1
    others = sorted({0, 1, 2} - {trusted})

    grid.work(ann, 2)  # ann first on the other two tasks, then the mole lies on both
    grid.work(mole, 2, answer=wrong)
    assert grid.quarantined(mole) is None
    grid.work(bob, 2)  # bob breaks both ties: the mole is outvoted twice
    assert grid.quarantined(mole) == "outvoted 2 times (echo)"
    for idx in others:
        assert grid.results(job, idx) == {"ann": ("accepted", True), "mole": ("invalid", False), "bob": ("valid", True)}

    # its provisional result is revoked and the task redone, by others
    assert grid.results(job, trusted) == {"mole": ("rejected", False)}
    assert grid.task(job, trusted) == ("open", 2)
    assert grid.kinds(job, trusted, READY) == ["normal"]
    assert grid.store.get_job(job.id).tasks_done == 2
    assert grid.completed == []

    with pytest.raises(Forbidden, match="quarantined"):
        scheduler(grid.store, tmp_path).lease(grid.store.get_worker(mole.address), LeaseRequest())
    grid.work(ann)
    assert grid.kinds(job, trusted, READY) == ["normal"], "the task waits for the revoked result as if still out"
    grid.work(bob)
    assert grid.results(job, trusted) == {
        "mole": ("rejected", False), "ann": ("accepted", True), "bob": ("valid", True)
    }
    assert grid.completed == [job.id]
    assert mole.address not in {o.worker_address for o in grid.store.accepted_outputs(job.id)}
    assert mole.address not in grid.store.reward_totals(None)


def test_a_result_dropped_by_quarantine_is_not_waited_for(grid: Grid) -> None:
    known = grid.job(1, NO_REPLICATION)
    grid.work(grid.worker("oracle", trusted=True))  # a gold task (a trusted worker's answer)
    job = grid.job(1, QUORUM)
    ann, mole, bob, cat = (grid.worker(n) for n in ("ann", "mole", "bob", "cat"))
    grid.work(ann)
    grid.work(mole, 1, answer=wrong, gold=1)  # disagrees with ann, and fails its gold task
    assert grid.quarantined(mole) == "failed a gold task (echo)"
    assert grid.results(job, 0) == {"ann": ("pending", False), "mole": ("rejected", False)}
    assert grid.task(job, 0) == ("open", 3)
    assert grid.store.replica_counts(known.id) == {"done": 2}

    grid.work(bob, answer=lambda r: b"yet another answer")  # no quorum yet: ann and bob disagree
    assert grid.kinds(job, 0, READY) == ["normal"], "the task waits for the dropped result as if still out"
    grid.work(cat)
    assert grid.results(job, 0) == {
        "ann": ("accepted", True), "mole": ("rejected", False), "bob": ("invalid", False), "cat": ("valid", True)
    }
    assert grid.completed == [known.id, job.id]
    assert grid.store.replica_counts(job.id) == {"done": 4}  # and no spare replica left over


# -- gold ---------------------------------------------------------------------------------------


def test_gold_comes_from_running_jobs_whatever_the_grid_finished_before(grid: Grid) -> None:
    """Gold is searched within each running job's own tasks: a finished job's many done tasks
    are neither offered nor in the way, and every done task of a running job can be found,
    wherever the random starting point falls."""
    ann = grid.worker("ann")
    old = grid.job(40, NO_REPLICATION)
    grid.work(ann, 40)
    grid.store.finish_job(old.id, {}, "00" * 32, grid.tick())
    known = grid.job(3, NO_REPLICATION)
    grid.work(ann, 3)
    later = grid.job(20, QUORUM)
    for seed in range(6):
        hal = grid.worker(f"hal{seed}")
        lease = grid.store.lease(hal.id, 1, [], LEASE, grid.tick(), gold=3, rng=random.Random(seed))
        assert lease is not None
        gold = sorted(r.task_index for r in lease.replicas if r.job_id != later.id)
        assert {r.job_id for r in lease.replicas} == {known.id, later.id}, seed
        assert gold == [0, 1, 2], seed


def test_gold_replicas_test_workers_passing_counts_failing_quarantines(grid: Grid) -> None:
    known = grid.job(2, NO_REPLICATION)
    ann, ann_too = grid.worker("ann", "acme", trusted=True), grid.worker("ann_too", "acme")
    grid.work(ann, 2)  # answers now known from a trusted worker: gold for everyone else
    assert [grid.task(known, i)[0] for i in (0, 1)] == ["done", "done"]
    job = grid.job(6, QUORUM)

    # no gold for the worker that computed the known tasks, nor for its owner's other workers
    for w in (ann, ann_too):
        lease = grid.lease(w, 1, gold=2)
        assert lease is not None and [r.job_id for r in lease.replicas] == [job.id], w.name

    hal, zed = grid.worker("hal"), grid.worker("zed")
    lease = grid.lease(hal, 1, gold=1)
    assert lease is not None and len(lease.replicas) == 2
    (gold,) = [r for r in lease.replicas if r.job_id == known.id]
    assert gold.input_data == f"{known.id[:8]}/input/{gold.task_index}".encode()  # an ordinary-looking replica
    assert grid.kinds(known, gold.task_index) == ["normal", "gold"]
    # a gold replica of a quorum-of-one job is not accepted as recorded: validation compares it
    assert set(grid.answer(hal, lease).values()) == {"pending"}
    assert grid.results(known, gold.task_index)["hal"] == ("valid", True)  # rewarded like any task
    r = grid.rep(hal)
    assert (r.gold_passed, r.gold_failed, r.checks_passed) == (1, 0, 1)
    assert grid.quarantined(hal) is None
    assert grid.store.get_job(known.id).tasks_done == 2  # a gold replica does not count the task again

    lease = grid.lease(zed, 1, gold=1)
    assert lease is not None and len(lease.replicas) == 2
    (gold,) = [r for r in lease.replicas if r.job_id == known.id]
    (normal,) = [r for r in lease.replicas if r.job_id == job.id]
    trusting = grid.job(1, NO_REPLICATION)
    held = grid.lease(zed, 100)  # work it still holds when it is caught, a quorum-of-one task among it
    assert held is not None and trusting.id in {r.job_id for r in held.replicas}
    assert set(grid.answer(zed, lease, wrong).values()) == {"pending"}
    assert grid.results(known, gold.task_index)["zed"] == ("invalid", False)
    assert grid.rep(zed).gold_failed == 1
    assert grid.quarantined(zed) == "failed a gold task (echo)"
    # its other result earns nothing, and its task is still open to others
    assert grid.results(job, normal.task_index)["zed"] == ("rejected", False)
    assert grid.task(job, normal.task_index)[0] == "open"
    assert "normal" in grid.kinds(job, normal.task_index, READY)
    # what it held went back to the queue: an answer now is refused, not accepted under a quorum of one
    with pytest.raises(LeaseError):
        grid.answer(zed, held)
    assert grid.task(trusting, 0) == ("open", 1)
    assert grid.kinds(trusting, 0, READY) == ["normal"]
    assert grid.store.get_job(trusting.id).tasks_done == 0
    assert trusting.id not in grid.completed


def test_a_released_gold_replica_is_dropped_not_reissued(grid: Grid) -> None:
    known = grid.job(1, NO_REPLICATION)
    grid.work(grid.worker("ann"))
    job = grid.job(1, QUORUM)
    quitter = grid.worker("quitter")
    lease = grid.lease(quitter, 1, gold=1)
    assert lease is not None and len(lease.replicas) == 2
    out = grid.store.record_results(lease.id, quitter.id, "0x" + "00" * 65, [], [r.replica_id for r in lease.replicas],
                                    grid.tick())
    assert out.statuses == {}
    assert grid.store.replica_counts(known.id) == {"done": 1, "cancelled": 1}
    assert grid.store.replica_counts(job.id) == {"ready": 1}


# -- adaptive replication and finality ---------------------------------------------------------


def test_a_long_run_earns_provisional_acceptance_which_becomes_final_after_finality_checks(grid: Grid) -> None:
    policy = QUORUM | {"trust_run": 3, "audit_scale": 0, "finality_checks": 2}
    vet, ann = grid.worker("vet"), grid.worker("ann")
    warmup = grid.job(3, policy)
    grid.work(vet, 3)  # a run built the honest way: three results confirmed by a quorum
    for _ in range(3):  # (one partner lengthens a run once per validation round)
        grid.work(ann)
    assert grid.completed == [warmup.id]
    assert grid.rep(vet).run == 3
    paid_before = grid.store.unsealed()[0]

    job = grid.job(1, policy)
    grid.work(vet)
    assert grid.task(job, 0) == ("provisional", 1)
    assert grid.results(job, 0) == {"vet": ("accepted", False)}
    assert grid.completed == [warmup.id, job.id]  # counted as done, so the job can be reduced...
    assert grid.store.unsealed()[0] == paid_before  # ...but not sealed, not paid
    assert grid.store.sealed_result(job.id, 0).epoch is None

    grid.job(3, NO_REPLICATION)  # gold tasks for the veteran, computed by ann
    grid.work(ann, 3)
    grid.job(2, NO_REPLICATION)  # ordinary work for the leases that carry the gold
    grid.work(vet, 1, gold=1)
    assert grid.rep(vet).checks_passed == 1
    assert grid.results(job, 0) == {"vet": ("accepted", False)}  # one check of two
    grid.work(vet, 1, gold=1)
    assert grid.rep(vet).checks_passed == 2
    assert grid.results(job, 0) == {"vet": ("accepted", True)}
    # final in its result alone: the task keeps the state it was accepted with (no second write),
    # and the job's summary no longer counts it as provisional
    assert grid.task(job, 0) == ("provisional", 1)
    assert grid.store.trust_counts(job.id)["tasks_provisional"] == 0
    assert grid.store.get_job(job.id).tasks_done == 1
    # paid: 3 warm-up tasks, this one, 2 gold tasks (rewarded like any), 2 ordinary ones; 5 each
    assert grid.store.reward_totals(None)[vet.address] == (3 + 1 + 2 + 2) * 5
    assert grid.rep(vet).gold_passed == 2


def test_an_audit_that_agrees_makes_a_provisional_result_final(grid: Grid) -> None:
    job = grid.job(1, QUORUM | {"audit_scale": 1000})  # audit every provisional result
    vet, auditor = grid.worker("vet"), grid.worker("auditor")
    grid.set_run(vet, 400)
    grid.work(vet)
    assert grid.task(job, 0) == ("provisional", 1)
    assert grid.kinds(job, 0, READY) == ["audit"]

    lease = grid.work(auditor)
    assert grid.kinds(job, 0) == ["normal", "audit"] and len(lease.replicas) == 1
    assert grid.results(job, 0) == {"vet": ("accepted", True), "auditor": ("valid", True)}
    assert grid.task(job, 0) == ("done", 1)
    assert grid.rep(vet).checks_passed == 1
    assert grid.store.get_job(job.id).tasks_done == 1


def test_an_audit_that_disagrees_reopens_the_task_and_a_tie_breaker_decides(grid: Grid) -> None:
    job = grid.job(1, QUORUM | {"audit_scale": 1000})
    vet, auditor, judge = grid.worker("vet"), grid.worker("auditor"), grid.worker("judge")
    grid.set_run(vet, 400)
    grid.work(vet, answer=wrong)  # a trusted worker's wrong answer, accepted provisionally...
    assert grid.task(job, 0) == ("provisional", 1)
    assert grid.completed == [job.id]
    grid.store.finish_job(job.id, {"items": 1}, "e" * 64, grid.tick())  # ...and the job even reduced

    grid.work(auditor)  # the audit disagrees: the acceptance is withdrawn
    assert grid.task(job, 0) == ("open", 2)
    assert grid.results(job, 0)["vet"] == ("pending", False)
    reopened = grid.store.get_job(job.id)
    assert (reopened.state, reopened.tasks_done, reopened.output_hash) == ("running", 0, None)
    assert grid.kinds(job, 0, READY) == ["normal"]

    grid.work(judge)
    assert grid.results(job, 0) == {
        "vet": ("invalid", False), "auditor": ("accepted", True), "judge": ("valid", True)
    }
    assert grid.task(job, 0) == ("done", 2)
    assert grid.store.get_job(job.id).tasks_done == 1
    assert grid.completed == [job.id, job.id]  # complete again, to be reduced anew
    r = grid.rep(vet)
    assert (r.run, r.invalid) == (0, 1)
    assert [o.output for o in grid.store.accepted_outputs(job.id)] == [f"{job.id[:8]}/input/0".encode()]


# -- giving up, timeouts ---------------------------------------------------------------------


def test_a_task_without_a_quorum_after_max_replicas_is_inconclusive_and_the_job_still_completes(grid: Grid) -> None:
    job = grid.job(2, QUORUM | {"max_replicas": 3})
    workers = [grid.worker(n) for n in ("ann", "bob", "cat")]

    def split(r: LeasedReplica) -> bytes:  # task 0: everybody says something else; task 1: honest
        return wrong(r) + r.input_data if r.task_index == 0 else honest(r)

    for w in workers:
        grid.work(w, 2, answer=lambda r, w=w: split(r) + (w.name.encode() if r.task_index == 0 else b""))
    assert grid.task(job, 0) == ("inconclusive", 3)
    assert grid.results(job, 0) == {n: ("rejected", False) for n in ("ann", "bob", "cat")}  # no reward, no blame
    assert grid.task(job, 1)[0] == "done"
    done = grid.store.get_job(job.id)
    assert (done.tasks_done, done.tasks_inconclusive, done.tasks_failed, done.complete) == (1, 1, 0, True)
    assert grid.completed == [job.id]
    assert grid.store.complete_unfinished_jobs() == [job.id]
    assert [o.task_index for o in grid.store.accepted_outputs(job.id)] == [1]
    assert all(r.invalid == 0 for _, r in grid.store.reputations())
    assert grid.store.replica_counts(job.id) == {"done": 5}


def test_an_expired_lease_counts_a_timeout_and_halves_the_quota(grid: Grid) -> None:
    job = grid.job(4, NO_REPLICATION)
    slow, other = grid.worker("slow"), grid.worker("other")
    grid.set_run(slow, 5)
    assert grid.store.lease_quota(slow.id, ["echo"]) == (QUOTA_MAX, 5)
    assert grid.lease(slow, 2) is not None
    assert grid.store.reap_expired(grid.now + LEASE + 1) == 2
    r = grid.rep(slow)
    assert (r.timeouts, r.run, r.quota) == (1, 0, QUOTA_MAX // 2)
    assert grid.store.lease_quota(slow.id, ["echo"])[0] == QUOTA_MAX // 2

    grid.now += LEASE + 1
    assert grid.lease(slow, 1) is not None
    assert grid.store.reap_expired(grid.now + LEASE + 1) == 1
    assert grid.rep(slow).quota == QUOTA_MAX // 4
    assert grid.rep(slow).timeouts == 2

    grid.now += LEASE + 1
    grid.work(slow)  # a valid result grows the quota back a little
    assert grid.rep(slow).quota == QUOTA_MAX // 4 + 2
    grid.work(other, 100)
    assert grid.store.get_job(job.id).complete


def test_a_lone_worker_can_redo_its_own_expired_replica_when_nothing_is_replicated(grid: Grid) -> None:
    # placement counts the replicas a worker holds or answered, not those it let expire:
    # otherwise a one-worker grid would never finish a job after a timeout
    job = grid.job(1, NO_REPLICATION)
    solo = grid.worker("solo")
    assert grid.lease(solo) is not None
    assert grid.store.reap_expired(grid.now + LEASE + 1) == 1
    grid.now += LEASE + 1
    lease = grid.lease(solo)
    assert lease is not None, "the reissued replica is never leased to the only worker"
    grid.answer(solo, lease)
    assert grid.completed == [job.id]


# -- problems found (these fail until the code is fixed; see the report) ------------------------


def test_fixed_replication_issues_no_replica_beyond_those_still_out(grid: Grid) -> None:
    # BOINC's default, 2 replicas and a quorum of 2, issued at once: when the first result
    # comes back the second replica is still being computed, so nothing more is needed
    job = grid.job(3, {"replicas": 2, "quorum": 2, "adaptive": False, "gold_rate": 0, "record_run": 0})
    ann, bob = grid.worker("ann"), grid.worker("bob")
    first, second = grid.lease(ann, 3), grid.lease(bob, 3)
    assert first and second
    grid.answer(ann, first)
    assert grid.store.replica_counts(job.id) == {"done": 3, "leased": 3}, "replicas issued while others are out"
    grid.answer(bob, second)
    assert grid.completed == [job.id]
    assert grid.store.replica_counts(job.id) == {"done": 6}


def test_a_task_is_not_inconclusive_while_replicas_it_issued_are_still_out(grid: Grid) -> None:
    job = grid.job(1, {"replicas": 2, "quorum": 2, "max_replicas": 2, "adaptive": False, "gold_rate": 0, "record_run": 0})
    ann, bob = grid.worker("ann"), grid.worker("bob")
    first, second = grid.lease(ann), grid.lease(bob)
    assert first and second
    grid.answer(ann, first)
    assert grid.task(job, 0)[0] == "open", "given up after one result of two"
    grid.answer(bob, second)  # agrees
    assert grid.task(job, 0)[0] == "done"
    assert grid.results(job, 0) == {"ann": ("accepted", True), "bob": ("valid", True)}


def test_with_no_finality_checks_a_result_accepted_alone_is_final_at_once(grid: Grid) -> None:
    # finality_checks: "checks a worker must pass after a provisional result before it is
    # final"; with none to pass, nothing should hold the result back from the chain
    job = grid.job(1, QUORUM | {"audit_scale": 0, "finality_checks": 0})
    vet = grid.worker("vet")
    grid.set_run(vet, 100)
    grid.work(vet)
    assert grid.results(job, 0) == {"vet": ("accepted", True)}, "still provisional with no checks to pass"
    assert grid.task(job, 0) == ("done", 1)
    assert grid.store.unsealed()[0] == 1


def test_a_lone_result_is_judged_as_it_is_recorded_without_a_validation_round(store: SqlStore) -> None:
    grid = Grid(store, at_record=True)
    policy = QUORUM | {"trust_run": 3, "audit_scale": 1000}  # every provisional result audited
    jobs = [grid.job(1, policy) for _ in range(3)]
    vet, newbie, boss = grid.worker("vet"), grid.worker("newbie"), grid.worker("boss", trusted=True)
    grid.set_run(vet, 400)

    def record(w: WorkerRecord, job: JobRecord, n: int = 1) -> Any:
        others = [j.id for j in jobs if j.id != job.id]
        lease = store.lease(w.id, n, [], LEASE, grid.tick(), exclude_jobs=others)
        assert lease is not None and len(lease.replicas) == 1
        items = [IncomingResult(r.replica_id, sha256_hex(honest(r)), honest(r), None) for r in lease.replicas]
        return store.record_results(lease.id, w.id, "0x" + "00" * 65, items, [], grid.tick(),
                                    judge=grid.validator.lone)

    out = record(vet, jobs[0])  # a proven worker: accepted alone, provisionally, and audited
    assert out.tasks == [] and out.judged == {"provisional": 1} and (out.replicas_added, out.audits_added) == (0, 1)
    assert grid.task(jobs[0], 0) == ("provisional", 1) and grid.kinds(jobs[0], 0, READY) == ["audit"]
    assert grid.results(jobs[0], 0) == {"vet": ("accepted", False)}
    assert store.get_job(jobs[0].id).tasks_done == 1 and out.completed_jobs == [jobs[0].id]

    out = record(newbie, jobs[1])  # no run: a second opinion is issued at once, and its result waits for it
    assert out.tasks == [] and out.judged == {"more_replicas": 1} and (out.replicas_added, out.audits_added) == (1, 0)
    assert grid.task(jobs[1], 0) == ("open", 2) and grid.results(jobs[1], 0) == {"newbie": ("pending", False)}

    out = record(boss, jobs[2])  # the operator vouches for it: final alone, a root of trust, its record grows
    assert out.tasks == [] and out.judged == {"accepted": 1} and (out.replicas_added, out.audits_added) == (0, 0)
    assert grid.task(jobs[2], 0) == ("done", 1) and grid.results(jobs[2], 0) == {"boss": ("accepted", True)}
    with store.engine.connect() as conn:
        assert conn.execute(select(s.tasks.c.rooted).where(s.tasks.c.id == grid.task_id(jobs[2], 0))).scalar_one()
    assert grid.rep(boss).run == 1 and grid.rep(boss).valid == 1

    # the newbie's task: its second replica goes to the vet, and a round decides the pair
    out = record(vet, jobs[1], n=5)
    assert out.tasks == [grid.task_id(jobs[1], 0)] and out.judged == {}
    grid.validator.validate(out.tasks)
    assert grid.task(jobs[1], 0) == ("done", 2)
    assert grid.results(jobs[1], 0) == {"newbie": ("accepted", True), "vet": ("valid", True)}


def test_a_lease_taken_in_the_instant_before_its_worker_was_quarantined_goes_back_to_the_queue(grid: Grid) -> None:
    job = grid.job(1, QUORUM)
    cheat, a, b = grid.worker("cheat"), grid.worker("a"), grid.worker("b")
    lease = grid.lease(cheat)
    assert lease is not None
    # the round that quarantines it committed after this lease was taken (their write transactions
    # queued one behind the other), so quarantine found nothing held to release
    with grid.store.engine.begin() as conn:
        conn.execute(update(s.workers).where(s.workers.c.id == cheat.id).values(quarantined_at=grid.tick()))
    assert grid.lease(cheat) is None  # and no more leases, whatever its caller last read
    assert set(grid.answer(cheat, lease).values()) == {"rejected"}
    assert grid.kinds(job, 0, READY) == ["normal"]  # its replica is not spent: someone else does it
    grid.work(a)
    grid.work(b)
    assert grid.task(job, 0)[0] == "done" and grid.completed == [job.id]


# -- rounds deferred past the upload ------------------------------------------------------------


class CountingStore:
    """The store, with its validation rounds counted and, when ``hold`` is set, held open at their
    start until ``release`` is set (a round in progress in another thread)."""

    def __init__(self, store: SqlStore) -> None:
        self._store = store
        self.rounds = 0
        self.fail_next = False
        self.hold: Any = None
        self.entered: Any = None
        self.release: Any = None

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    def tasks_to_validate(self, task_ids: Any = None) -> Any:
        self.rounds += 1
        if self.hold is not None:
            self.hold = None
            self.entered.set()
            assert self.release.wait(10)
        return self._store.tasks_to_validate(task_ids)

    def apply_validation(self, w: Any, now: float) -> Any:
        if self.fail_next:
            self.fail_next = False
            raise RuntimeError("the database went away mid-round")
        return self._store.apply_validation(w, now)


def deferring(store: SqlStore) -> tuple[Grid, CountingStore, Validator]:
    """A grid on ``store`` and a validator whose rounds are counted (and may be held or failed)."""
    counting = CountingStore(store)
    return Grid(store), counting, Validator(counting, rng=Fixed())  # type: ignore[arg-type]


def deferred_uploads(grid: Grid, validator: Validator, workers: list[WorkerRecord]) -> None:
    """Each worker uploads its lease as the API does: recorded now, its round deferred."""
    for w in workers:
        lease = grid.lease(w, 4)
        assert lease is not None
        items = [IncomingResult(r.replica_id, sha256_hex(honest(r)), honest(r), None) for r in lease.replicas]
        out = grid.store.record_results(lease.id, w.id, "0x" + "00" * 65, items, [], grid.tick(), judge=validator.lone)
        assert set(out.statuses.values()) == {"pending"} and out.tasks  # nothing decided before the round
        validator.defer(out.tasks)


def test_rounds_deferred_by_uploads_that_came_together_run_as_one(store: SqlStore) -> None:
    grid, counting, validator = deferring(store)
    job = grid.job(4, QUORUM | {"adaptive": False})  # two replicas of each task from the start
    ann, bob = grid.worker("ann"), grid.worker("bob")

    deferred_uploads(grid, validator, [ann, bob])
    assert [grid.task(job, i)[0] for i in range(4)] == ["open"] * 4  # uploads answered, rounds not run

    completed, urgent = validator.drain()
    assert counting.rounds == 1  # both uploads' tasks in one round
    assert completed == [job.id] and not urgent  # nothing issued that a task waits for
    assert [grid.results(job, i) for i in range(4)] == [{"ann": ("accepted", True), "bob": ("valid", True)}] * 4
    assert validator.drain() == ([], False)  # nothing left


def test_a_drain_that_finds_another_running_leaves_its_tasks_to_that_one(store: SqlStore) -> None:
    import threading

    grid, counting, validator = deferring(store)
    first = grid.job(2, QUORUM | {"adaptive": False})
    ann, bob, cat, dan = (grid.worker(n) for n in ("ann", "bob", "cat", "dan"))

    deferred_uploads(grid, validator, [ann, bob])  # the first job's two opinions
    counting.hold, counting.entered, counting.release = True, threading.Event(), threading.Event()
    results: list[Any] = []
    drainer = threading.Thread(target=lambda: results.append(validator.drain()))
    drainer.start()
    assert counting.entered.wait(10)  # its round is in progress

    second = grid.job(2, QUORUM | {"adaptive": False})
    deferred_uploads(grid, validator, [cat, dan])  # a second job's, meanwhile
    assert validator.drain() == ([], False)  # another thread drains: this upload leaves its tasks to it
    counting.release.set()
    drainer.join(10)
    assert results and sorted(results[0][0]) == sorted([first.id, second.id])
    assert counting.rounds == 2  # its own round, then the tasks deferred while it ran
    for job in (first, second):
        assert [grid.task(job, i)[0] for i in range(2)] == ["done", "done"]


def test_a_deferred_round_that_fails_leaves_its_results_pending_for_the_catch_up_round(store: SqlStore) -> None:
    grid, counting, validator = deferring(store)
    job = grid.job(2, QUORUM | {"adaptive": False})
    deferred_uploads(grid, validator, [grid.worker("ann"), grid.worker("bob")])

    counting.fail_next = True
    with pytest.raises(RuntimeError, match="went away"):
        validator.drain()
    assert [grid.task(job, i)[0] for i in range(2)] == ["open", "open"]
    assert set(grid.results(job, 0).values()) == {("pending", False)}  # recorded, nothing lost

    assert validator.drain() == ([], False)  # the failed round's tasks are not queued twice...
    assert validator.validate() == [job.id]  # ...the periodic catch-up round decides them
    assert [grid.task(job, i)[0] for i in range(2)] == ["done", "done"]


def test_settling_runs_the_rounds_deferred_before_it_and_returns_the_jobs_they_completed(store: SqlStore) -> None:
    grid, counting, validator = deferring(store)
    job = grid.job(4, QUORUM | {"adaptive": False})
    deferred_uploads(grid, validator, [grid.worker("ann"), grid.worker("bob")])
    assert validator.settle() == [job.id]  # a job is reduced only once these have run
    assert [grid.task(job, i)[0] for i in range(4)] == ["done"] * 4
    assert validator.settle() == []  # nothing deferred: returns at once
