"""Epoch sealing against the real embedded chain (a SQLite file), crashes included.

A "crash" is simulated by making one ledger call raise BaseException at the
chosen point, then throwing the app away and building a new one on the same
data dir: what survives is only what the store and the chain file hold.

Only *final* results are sealed and paid: a quorum-accepted result (and the
results that agreed with it) at once, a result accepted without replication
(provisional) only once checked; a caught worker's provisional results never
reach the chain.
"""

from __future__ import annotations

import random
import time
from pathlib import Path
from typing import Any

import pytest
from eth_account import Account
from sqlalchemy import insert, update

from coopgrid.app import App, build
from coopgrid.config import Settings
from coopgrid.coordinator.scheduler import JobSpec
from coopgrid.coordinator.trust import TrustPolicy
from coopgrid.coordinator.validation import Validator
from coopgrid.datasets import sequence
from coopgrid.errors import Conflict
from coopgrid.ledger import merkle
from coopgrid.protocol import sha256_hex
from coopgrid.store import schema as s
from coopgrid.store.base import IncomingResult, WorkerRecord

#: one replica per task, accepted and final at once
NO_REPLICATION = {"replicas": 1, "quorum": 1, "adaptive": False, "gold_rate": 0}


@pytest.fixture(autouse=True)
def cheap_keystore(monkeypatch: pytest.MonkeyPatch) -> None:
    """The coordinator's key file with a one-round KDF instead of scrypt (seconds per app built):
    the keystore's strength is not what these tests are about."""
    encrypt = Account.encrypt

    def fast(private_key: Any, password: str, kdf: Any = None, iterations: Any = None) -> dict[str, Any]:
        return encrypt(private_key, password, kdf="pbkdf2", iterations=1)

    monkeypatch.setattr(Account, "encrypt", fast)


@pytest.fixture(autouse=True)
def database(store_url: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """Every test once per store (conftest.py's ``store_url``: a SQLite file, a fresh PostgreSQL
    database), given as a user gives it: every app these tests build reads COOPGRID_DATABASE_URL."""
    monkeypatch.setenv("COOPGRID_DATABASE_URL", store_url)
    return store_url


class Crash(BaseException):
    """Stands for the process being killed at this point."""


def open_app(data_dir: Path) -> App:
    return build(Settings(data_dir=data_dir, seal_every_results=10**9, seal_every_seconds=10**9))


def submit(app: App, n_tasks: int, reward: int, trust: dict[str, Any] | None = None) -> str:
    """An echo job of ``n_tasks`` one-item tasks; a paid one is funded by a fresh submitter account
    (gas and tokens from the coordinator) and activated, as ``coopgrid submit --reward`` does."""
    token, _ = app.auth.issue("t", "operator")
    dataset = app.blobs.put(sequence(n_tasks).to_npz())
    policy = TrustPolicy.model_validate(NO_REPLICATION if trust is None else trust)
    funder = Account.create() if reward else None
    spec = JobSpec(task_type="echo", dataset=dataset, task_size=1, reward_per_task=reward, trust=policy,
                   funder=funder.address if funder else None, min_stake=0)
    job = app.scheduler.submit(spec, token)
    if funder is not None:
        need = reward * job.n_tasks
        app.ledger.send_gas(funder.address, 10**18)
        app.ledger.mint(funder.address, need)
        app.ledger.with_signer(funder.key).fund("0x" + job.id, need, int(time.time()) + 30 * 24 * 3600)
        app.sealer.escrow.activate(job)
    return job.id


def worker(app: App, i: int) -> WorkerRecord:
    return app.store.register_worker(f"0x{i:040x}", f"w{i}", f"o{i}", time.time())


def compute(
    app: App, w: WorkerRecord, n: int = 2, gold: int = 0, wrong: bool = False, validator: Validator | None = None
) -> int:
    """One lease of up to ``n`` replicas (plus ``gold``), answered and validated as the scheduler would."""
    lease = app.store.lease(w.id, n, [], 60, time.time(), gold=gold, rng=random.Random(0))
    if lease is None:
        return 0
    items = []
    for r in lease.replicas:
        out = b"wrong" if wrong else (r.input_data or b"")
        items.append(IncomingResult(r.replica_id, sha256_hex(out), out, None))
    outcome = app.store.record_results(lease.id, w.id, "0x" + "00" * 65, items, [], time.time())
    (validator or app.scheduler.validator).validate(outcome.tasks)
    return len(items)


def run_job(app: App, n_tasks: int, reward: int, workers: int = 2, trust: dict[str, Any] | None = None) -> str:
    """An echo job whose every task is computed and accepted (through the store and the validator, as the
    API would); one replica per task unless ``trust`` says otherwise."""
    job_id = submit(app, n_tasks, reward, trust)
    ws = [worker(app, i) for i in range(1, workers + 1)]
    for _ in range(100):
        if app.store.get_job(job_id).complete:
            return job_id
        for w in ws:
            compute(app, w)
    pytest.fail(f"job never completed: {app.store.get_job(job_id)}")


def test_sealing_commits_every_accepted_result_and_pays_by_proof(tmp_path):
    app = open_app(tmp_path)
    try:
        job_id = run_job(app, 9, reward=5)
        (epoch,) = app.sealer.step(force=True)
        assert (epoch.number, epoch.state, epoch.result_count) == (1, "committed", 9)
        assert app.ledger.last_epoch() == 1 and app.ledger.epoch_roots(1).results_root == epoch.results_root
        for task in range(9):
            p = app.sealer.result_proof(job_id, task)
            assert app.ledger.verify_result(1, p["leaf_hash"], p["proof"])
            assert merkle.verify_leaf(p["results_root"], p["leaf_hash"], p["proof"])
        assert not app.ledger.verify_result(1, "0x" + "ab" * 32, p["proof"])  # a forged leaf

        total = 0
        for worker in ("0x" + f"{1:040x}", "0x" + f"{2:040x}"):
            address = app.store.get_worker(worker).address
            status = app.sealer.reward_status(address)
            assert int(status["claimable"]) == int(status["cumulative"]) > 0 and status["pending"] == "0"
            claimed = app.sealer.claim(address)
            assert claimed["balance"] == status["cumulative"] and claimed["claimable"] == "0"
            total += int(claimed["balance"])
            with pytest.raises(Conflict, match="nothing to claim"):
                app.sealer.claim(address)
        assert total == 9 * 5  # every accepted task paid once, to the worker that computed it
        assert app.sealer.step(force=True) == []  # nothing new: no empty epoch
    finally:
        app.close()


@pytest.mark.parametrize("crash_in", ["broadcast", "wait_receipt"])
def test_a_crash_around_sending_an_epoch_commits_it_exactly_once(tmp_path, crash_in, monkeypatch):
    app = open_app(tmp_path)
    run_job(app, 4, reward=1)
    real = getattr(app.ledger, crash_in)

    def crash(*args, **kwargs):
        if crash_in == "wait_receipt":
            real(*args, **kwargs)  # the receipt exists; the process dies before it records it
        raise Crash()

    monkeypatch.setattr(app.ledger, crash_in, crash)
    with pytest.raises(Crash):
        app.sealer.step(force=True)
    stored = app.store.get_epoch(1)
    assert stored.state == "sent" and stored.tx_hash  # signed and stored before it was sent
    app.close()

    app = open_app(tmp_path)  # the restart
    try:
        (epoch,) = app.sealer.reconcile()
        assert epoch.state == "committed"
        assert app.ledger.last_epoch() == 1
        commit = app.ledger.epoch_commit(1)
        assert commit.results_root == epoch.results_root and commit.result_count == 4
        assert app.ledger.totals() == (4, 0)  # the job's spend committed once, not twice
        # the next epoch still goes through: no nonce or sequence left behind
        run_job(app, 3, reward=1)
        (second,) = app.sealer.step(force=True)
        assert second.number == 2 and app.ledger.last_epoch() == 2
        assert app.ledger.totals() == (7, 0)
    finally:
        app.close()


def test_rewards_and_epochs_survive_a_restart_of_the_embedded_chain(tmp_path):
    app = open_app(tmp_path)
    run_job(app, 6, reward=7, workers=1)
    app.sealer.step(force=True)
    address = app.store.get_worker("0x" + f"{1:040x}").address
    app.sealer.claim(address)
    contract = app.ledger.address
    app.close()

    app = open_app(tmp_path)
    try:
        assert app.ledger.address == contract
        assert app.ledger.last_epoch() == 1
        assert app.ledger.balance_of(address) == 42
        assert app.sealer.reward_status(address)["claimable"] == "0"
    finally:
        app.close()


# -- only final results are sealed and paid -----------------------------------------------


class Fixed(random.Random):
    """A random source that always draws ``value``: adaptive acceptance and audits decided in advance."""

    def __init__(self, value: float) -> None:
        super().__init__(0)
        self.value = value

    def random(self) -> float:
        return self.value


def set_run(app: App, w: WorkerRecord, run: int, task_type: str = "echo") -> None:
    """A shortcut for a long run of validated results (instead of driving hundreds of tasks)."""
    with app.store.engine.begin() as conn:
        conn.execute(insert(s.reputation).values(worker_id=w.id, task_type=task_type, quota=100))
        conn.execute(
            update(s.reputation).where(s.reputation.c.worker_id == w.id).values(run=run, valid=run)
        )


def test_a_quorum_seals_one_leaf_per_task_and_pays_every_agreeing_worker(tmp_path):
    app = open_app(tmp_path)
    try:
        # the default policy (with every worker counted as having a record): two owners agree
        job_id = run_job(app, 3, reward=5, trust={"gold_rate": 0, "record_run": 0})
        (epoch,) = app.sealer.step(force=True)
        assert epoch.result_count == 3  # the canonical result of each task, once
        for task in range(3):
            p = app.sealer.result_proof(job_id, task)
            assert app.ledger.verify_result(1, p["leaf_hash"], p["proof"])
        paid = [int(app.sealer.reward_status(worker(app, i).address)["cumulative"]) for i in (1, 2)]
        # both computed every task and agreed: each task's 5 shared (2 each, the odd unit to the accepted one)
        assert sum(paid) == 15 and min(paid) >= 6
    finally:
        app.close()


def test_a_provisional_result_is_sealed_and_paid_only_once_audited(tmp_path):
    app = open_app(tmp_path)
    try:
        # accepted without replication (a long run), and always audited
        job_id = submit(app, 1, reward=5, trust={"gold_rate": 0, "audit_scale": 1000, "finality_checks": 40,
                                                  "record_run": 0})
        veteran, auditor = worker(app, 1), worker(app, 2)
        set_run(app, veteran, 1000)
        validator = Validator(app.store, rng=Fixed(0.5))
        assert compute(app, veteran, validator=validator) == 1
        assert app.store.get_job(job_id).tasks_done == 1
        assert app.store.trust_counts(job_id)["tasks_provisional"] == 1

        assert app.sealer.step(force=True) == []  # nothing final: no epoch
        assert app.sealer.result_proof(job_id, 0) is None

        assert compute(app, auditor, validator=validator) == 1  # the audit replica agrees
        assert app.store.trust_counts(job_id)["tasks_provisional"] == 0
        (epoch,) = app.sealer.step(force=True)
        assert epoch.result_count == 1
        p = app.sealer.result_proof(job_id, 0)
        assert p["worker"] == veteran.address and app.ledger.verify_result(1, p["leaf_hash"], p["proof"])
        # the task's 5 is shared with the audit that made it final: 3 to the accepted result, 2 to the auditor
        assert app.sealer.reward_status(veteran.address)["cumulative"] == "3"
        assert app.sealer.reward_status(auditor.address)["cumulative"] == "2"
    finally:
        app.close()


def test_rewards_for_a_provisional_result_show_as_pending(tmp_path):
    # the trust issue: "the epoch sealer takes final results only ... and rewards for
    # provisional results show as pending"
    app = open_app(tmp_path)
    try:
        submit(app, 1, reward=5, trust={"gold_rate": 0, "audit_scale": 0, "record_run": 0})
        veteran = worker(app, 1)
        set_run(app, veteran, 1000)
        assert compute(app, veteran, validator=Validator(app.store, rng=Fixed(0.5))) == 1
        assert app.sealer.step(force=True) == []
        status = app.sealer.reward_status(veteran.address)
        assert status["cumulative"] == "0"
        assert status["pending"] == "5", f"a provisional result's reward is not shown as pending: {status}"
    finally:
        app.close()


def test_a_caught_workers_provisional_result_never_reaches_the_chain(tmp_path):
    app = open_app(tmp_path)
    try:
        # answers known from the operator's own worker (w1, --trusted): gold that quarantines
        app.store.register_worker(f"0x{1:040x}", "w1", "o1", time.time(), trusted=True)
        gold_job = run_job(app, 1, reward=1, workers=1)
        job_id = submit(app, 2, reward=5, trust={"gold_rate": 0, "audit_scale": 0, "record_run": 0})
        honest, other, cheat = worker(app, 1), worker(app, 2), worker(app, 3)
        set_run(app, cheat, 1000)
        validator = Validator(app.store, rng=Fixed(0.5))
        assert compute(app, cheat, n=1, validator=validator) == 1  # accepted, provisional
        assert app.store.trust_counts(job_id)["tasks_provisional"] == 1
        # its next lease carries a gold replica, which it gets wrong
        assert compute(app, cheat, n=1, gold=1, wrong=True, validator=validator) == 2
        assert app.store.get_worker(cheat.address).quarantined_at is not None
        assert app.store.get_job(job_id).tasks_done == 0  # its provisional result was revoked

        for _ in range(5):  # the others redo both tasks
            compute(app, honest, validator=validator)
            compute(app, other, validator=validator)
        assert app.store.get_job(job_id).complete
        (epoch,) = app.sealer.step(force=True)
        leaves = app.store.epoch_results(epoch.number)
        assert {(r.job_id, r.task_index) for r in leaves} == {(gold_job, 0), (job_id, 0), (job_id, 1)}
        assert cheat.address not in {r.worker_address for r in leaves}
        status = app.sealer.reward_status(cheat.address)
        assert (status["cumulative"], status["pending"]) == ("0", "0")
    finally:
        app.close()


# -- bounded rewards, and sealing that no job can wedge (issue 8, finding 6) -----------------------


def test_rewards_that_could_overflow_are_refused_at_submission(tmp_path):
    from pydantic import ValidationError

    from coopgrid.errors import InvalidInput

    with pytest.raises(ValidationError):  # the wire schema itself refuses what no bound could allow
        JobSpec(task_type="echo", dataset="0" * 64, reward_per_task=2**256 - 1)
    app = build(Settings(data_dir=tmp_path, max_reward_per_task=100, max_job_reward=1_000))
    try:
        with pytest.raises(InvalidInput, match="max_reward_per_task"):
            submit(app, 2, reward=101)
        with pytest.raises(InvalidInput, match="max_job_reward"):
            submit(app, 11, reward=100)  # 11 tasks x 100 could spend 1,100
        submit(app, 10, reward=100)  # exactly the bound
    finally:
        app.close()


def _legacy_job(app: App, n_tasks: int, reward: int) -> str:
    """A job written straight to the store with a reward no submission accepts any more
    (a database from before rewards were bounded)."""
    from coopgrid.store.base import NewJob, NewTask

    token, _ = app.auth.issue("legacy", "operator")
    job_id = f"{n_tasks:02x}" * 32
    tasks_ = [NewTask(sha256_hex(bytes([i])), bytes([i]), i, 1) for i in range(n_tasks)]
    app.store.create_job(
        NewJob(id=job_id, owner_token_id=token.id, name="legacy", task_type="echo", model_hash=None, params={},
               dataset_hash="0" * 64, n_items=n_tasks, task_size=1, reward_per_task=reward, policy=NO_REPLICATION),
        tasks_, time.time(),
    )
    return job_id


def test_a_job_that_cannot_be_sealed_is_held_and_later_epochs_go_on(tmp_path):
    app = open_app(tmp_path)
    try:
        bad = _legacy_job(app, 3, 2**256 - 1)
        good = run_job(app, 2, reward=5)  # the same workers compute the legacy job's tasks too
        assert app.store.get_job(bad).complete
        (epoch,) = app.sealer.step(force=True)
        assert (epoch.number, epoch.state, epoch.result_count) == (1, "committed", 2)
        assert {r.job_id for r in app.store.epoch_results(1)} == {good}
        (held,) = app.store.held_jobs()
        assert held.id == bad and "above the bound" in held.seal_error
        assert app.sealer.result_proof(bad, 0) is None

        again = run_job(app, 3, reward=7)  # the next epochs are not blocked
        (second,) = app.sealer.step(force=True)
        assert second.number == 2 and {r.job_id for r in app.store.epoch_results(2)} == {again}
        assert app.store.unsealed()[0] == 0  # the held job's results wait for nobody
    finally:
        app.close()


def test_an_epoch_of_held_jobs_only_gives_its_number_to_the_next(tmp_path, monkeypatch):
    app = open_app(tmp_path)
    try:
        first = run_job(app, 2, reward=5)
        # a failure no single job explains: every job of the epoch is held
        monkeypatch.setattr(app.sealer, "_job_problems", lambda n: {})
        real_build = app.sealer._build
        monkeypatch.setattr(app.sealer, "_build", lambda n: (_ for _ in ()).throw(ValueError("unencodable")))
        assert app.sealer.step(force=True) == []
        assert app.store.list_epochs() == [] and app.store.get_job(first).seal_error
        assert "unencodable" in app.store.get_job(first).seal_error
        monkeypatch.setattr(app.sealer, "_build", real_build)
        later = run_job(app, 2, reward=5)
        (epoch,) = app.sealer.step(force=True)
        assert epoch.number == 1 and {r.job_id for r in app.store.epoch_results(1)} == {later}
    finally:
        app.close()


def test_results_trees_kept_for_proofs_are_bounded_by_leaves_and_proofs_still_work(tmp_path, monkeypatch):
    # each epoch's tree was kept, up to nine of them whatever their size (~650 B a leaf: a
    # million-task job held ~120 MB of them); now the cache holds a bounded number of leaves and
    # an older epoch's proof is read back from its dump
    from coopgrid.coordinator import epochs

    monkeypatch.setattr(epochs, "TREE_CACHE_LEAVES", 5)
    app = open_app(tmp_path)
    try:
        jobs = []
        for _ in range(3):
            jobs.append(run_job(app, 4, reward=0))
            app.sealer.step(force=True)
            assert sum(map(len, app.sealer._trees.values())) <= 5 and len(app.sealer._trees) == 1
        for n, job_id in enumerate(jobs, 1):
            for task in range(4):
                p = app.sealer.result_proof(job_id, task)
                assert p["epoch"] == n and app.ledger.verify_result(n, p["leaf_hash"], p["proof"])
        assert sum(map(len, app.sealer._trees.values())) <= 5
    finally:
        app.close()
