"""Several coordinator processes on one PostgreSQL database: two apps built on one fresh database in
each test, driven at once from threads exactly as their HTTP routes drive them.

What must hold whichever process a request reaches: no replica is leased twice at a time, every task
is accepted exactly once (validation of a task happens once, whichever app received its results), a
signed request is used once on the whole grid, each periodic duty has one holder at a time and moves on
when it expires, and one sealer at a time commits epochs in an unbroken sequence.
"""

from __future__ import annotations

import random
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import orjson
import pytest
from eth_account import Account
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from coopgrid.app import App, build, coordinator_identity, open_coordinator_ledger
from coopgrid.config import Settings
from coopgrid.coordinator.api import create_api
from coopgrid.coordinator.duties import REAPER, SEALER, Duties
from coopgrid.coordinator.scheduler import JobSpec
from coopgrid.coordinator.trust import TrustPolicy
from coopgrid.datasets import sequence
from coopgrid.identity import Identity
from coopgrid.protocol import sha256_hex
from coopgrid.store import schema as s
from coopgrid.store.base import IncomingResult, WorkerRecord
from coopgrid.store.schema import ResultStatus

from tests.integration.conftest_ledger import anvil  # noqa: F401 - fixture

pytestmark = pytest.mark.postgres

NO_REPLICATION = {"replicas": 1, "quorum": 1, "adaptive": False, "gold_rate": 0}
#: two agreeing results of two owners per task, no shortcut: every task goes through a validation round
#: (record_run 0: these fresh workers' quorums are final at once, so any replica past the first two would be
#: a task validated twice, not a newcomer quorum's audit)
QUORUM_TWO = {"replicas": 2, "quorum": 2, "adaptive": False, "gold_rate": 0, "record_run": 0}


@pytest.fixture(autouse=True)
def cheap_keystore(monkeypatch: pytest.MonkeyPatch) -> None:
    """A one-round KDF for the coordinator key (what these tests are about is not the keystore)."""
    encrypt = Account.encrypt
    monkeypatch.setattr(Account, "encrypt", lambda key, password, kdf=None, iterations=None: encrypt(
        key, password, kdf="pbkdf2", iterations=1))


@pytest.fixture
def two_apps(tmp_path: Path, pg_database: Callable[[], str]) -> Iterator[Callable[..., tuple[App, App]]]:
    """Two coordinators of one grid: one PostgreSQL database, each app its own data dir unless told."""
    url = pg_database()
    with ExitStack() as stack:

        def make(shared_dir: bool = False, **settings: Any) -> tuple[App, App]:
            apps = []
            for name in ("a", "b"):
                data_dir = tmp_path / ("shared" if shared_dir else name)
                app = build(Settings(data_dir=data_dir, database_url=url, **({"ledger": "none"} | settings)))
                stack.callback(app.close)
                apps.append(app)
            return apps[0], apps[1]

        yield make


def submit(app: App, n_tasks: int, trust: dict[str, Any]) -> str:
    token, _ = app.auth.issue(f"t{random.random()}", "operator")
    dataset = app.blobs.put(sequence(n_tasks).to_npz())
    spec = JobSpec(task_type="echo", dataset=dataset, task_size=1, trust=TrustPolicy.model_validate(trust))
    return app.scheduler.submit(spec, token).id


def register(app: App, i: int) -> WorkerRecord:
    return app.store.register_worker(f"0x{i:040x}", f"w{i}", f"owner{i}", time.time())


class Ledgerless:
    """What the threads saw: every lease (replica ids, when taken and answered), every error."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.leases: list[tuple[int, list[int]]] = []
        self.errors: list[BaseException] = []


def work(apps: tuple[App, App], w: WorkerRecord, job_id: str, seen: Ledgerless, k: int) -> None:
    """A worker's loop, alternating between the two apps for every call (a load balancer's worst case):
    lease through one, answer through the other, validate as the results route does."""
    turn = k
    try:
        for _ in range(400):
            lessor, receiver = apps[turn % 2], apps[(turn + 1) % 2]
            turn += 1
            lease = lessor.store.lease(w.id, 3, [], 60, time.time(), rng=random.Random(turn))
            if lease is None:
                if lessor.store.get_job(job_id).complete:
                    return
                time.sleep(0.01)
                continue
            with seen.lock:
                seen.leases.append((lease.id, [r.replica_id for r in lease.replicas]))
            items = [IncomingResult(r.replica_id, sha256_hex(r.input_data or b""), r.input_data or b"", None)
                     for r in lease.replicas]
            outcome = receiver.store.record_results(lease.id, w.id, "0x" + "00" * 65, items, [], time.time())
            receiver.scheduler.validator.validate(outcome.tasks)
    except BaseException as exc:  # noqa: BLE001 - reported by the test
        with seen.lock:
            seen.errors.append(exc)


def run_concurrently(apps: tuple[App, App], job_id: str, workers: list[WorkerRecord]) -> Ledgerless:
    seen = Ledgerless()
    threads = [threading.Thread(target=work, args=(apps, w, job_id, seen, k)) for k, w in enumerate(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not seen.errors, seen.errors
    return seen


def accepted_per_task(app: App, job_id: str) -> Counter[int]:
    with app.store.engine.connect() as conn:
        rows = conn.execute(
            select(s.tasks.c.idx, func.count(s.results.c.id))
            .select_from(s.tasks)
            .outerjoin(s.results, (s.results.c.task_id == s.tasks.c.id)
                       & (s.results.c.status == ResultStatus.ACCEPTED.value))
            .where(s.tasks.c.job_id == job_id)
            .group_by(s.tasks.c.idx)
        ).all()
    return Counter({idx: n for idx, n in rows})


@pytest.mark.parametrize("trust", [NO_REPLICATION, QUORUM_TWO], ids=["quorum-1", "quorum-2"])
def test_two_coordinators_lease_each_replica_once_and_accept_each_task_once(two_apps, trust) -> None:
    a, b = two_apps()
    n = 60
    job_id = submit(a, n, trust)
    workers = [register(a if i % 2 else b, i) for i in range(1, 5)]  # four owners, registered through either
    seen = run_concurrently((a, b), job_id, workers)

    leased = [r for _, reps in seen.leases for r in reps]
    assert len(leased) == len(set(leased))  # no replica was ever in two leases
    job = b.store.get_job(job_id)
    assert job.complete and (job.tasks_done, job.tasks_failed, job.tasks_inconclusive) == (n, 0, 0)
    assert accepted_per_task(a, job_id) == Counter({i: 1 for i in range(n)})  # each task accepted exactly once
    # validation decided each task once: no task got more replicas than its policy's first ones
    assert b.store.replica_counts(job_id) == {"done": n * trust["replicas"]}
    results = b.store.trust_counts(job_id)["results"]
    assert results.get("pending", 0) == 0


def test_coordinators_starting_at_once_on_a_fresh_database_migrate_it_once(pg_database) -> None:
    url = pg_database()
    # processes, as coordinators are: Alembic's migration context is one per process
    opening = "import sys; from coopgrid.store import SqlStore; print(SqlStore.open(sys.argv[1]).grid_id())"
    procs = [subprocess.Popen([sys.executable, "-c", opening, url], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for _ in range(3)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], [err for _, err in outs]
    assert len({out.strip() for out, _ in outs}) == 1  # one grid


def test_a_signed_request_is_used_once_on_the_whole_grid(two_apps) -> None:
    a, b = two_apps()
    assert a.store.grid_id() == b.store.grid_id()
    operator = a.auth.ensure_operator()
    assert operator is not None and b.auth.ensure_operator() is None  # one grid, one first operator token
    with TestClient(create_api(a)) as ca, TestClient(create_api(b)) as cb:
        assert cb.get("/v1/grid", headers={"Authorization": f"Bearer {operator}"}).status_code == 200
        me = Identity.generate()
        body = orjson.dumps({"name": "w", "owner": "o"})
        headers = me.request_headers("POST", "/v1/workers", body, a.store.grid_id()) | {
            "content-type": "application/json"}
        assert ca.post("/v1/workers", content=body, headers=headers).status_code == 201
        again = cb.post("/v1/workers", content=body, headers=headers)  # the same request, to the other process
        assert again.status_code == 401 and "already used" in again.json()["detail"]
        fresh = me.request_headers("POST", "/v1/workers", body, a.store.grid_id()) | {
            "content-type": "application/json"}
        assert cb.post("/v1/workers", content=body, headers=fresh).status_code == 201
    assert a.store.purge_nonces(time.time() + 3 * a.settings.auth_skew_seconds) == 2  # forgotten once stale


def test_each_duty_has_one_holder_and_moves_on_when_its_lease_expires(two_apps) -> None:
    a, b = two_apps()
    first, second = Duties(a.store, ttl=5, holder="first"), Duties(b.store, ttl=5, holder="second")
    assert first.lead(REAPER) and not second.lead(REAPER)
    assert second.lead(SEALER) and not first.lead(SEALER)  # duties are led independently
    assert first.lead(REAPER)  # renewed by its holder
    assert a.store.duty_holders(time.time()) == {REAPER: "first", SEALER: "second"}
    # the first process stops renewing (killed): its lease runs out, and the next to ask takes over
    later = time.time() + 6
    assert b.store.hold_duty(REAPER, "second", 5, later)
    assert not a.store.hold_duty(REAPER, "first", 5, later + 1)
    # a clean stop hands a duty over at once
    second.release()
    assert first.lead(SEALER)
    # many processes racing for an expired duty: exactly one wins
    won: list[str] = []
    expired = time.time() + 60

    def race(name: str) -> None:
        if a.store.hold_duty("race", name, 5, expired) if name < "m" else b.store.hold_duty("race", name, 5, expired):
            won.append(name)

    threads = [threading.Thread(target=race, args=(f"{c}{i}",)) for i, c in enumerate("abcdwxyz")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(won) == 1


def test_one_sealer_at_a_time_commits_epochs_in_sequence(two_apps, anvil, tmp_path) -> None:  # noqa: F811
    settings = Settings(data_dir=tmp_path / "shared", ledger="rpc", rpc_url=anvil.url,
                        seal_every_results=5, seal_every_seconds=10**9)
    settings.data_dir.mkdir(mode=0o700)
    identity = coordinator_identity(settings)
    anvil.fund(identity.address)
    open_coordinator_ledger(settings, identity).close()  # deploys the contract once, for the grid
    a, b = two_apps(shared_dir=True, ledger="rpc", rpc_url=anvil.url, seal_every_results=5,
                    seal_every_seconds=10**9, duty_ttl=2)
    stop = threading.Event()
    a_seals = threading.Event()
    a_seals.set()
    leads = [lambda: a_seals.is_set() and a.duties.lead(SEALER), lambda: b.duties.lead(SEALER)]
    sealers = [threading.Thread(target=app.sealer.run, args=(stop,), kwargs={"lead": lead, "leading": False})
               for app, lead in zip((a, b), leads)]
    for t in sealers:
        t.start()

    def all_sealed() -> None:
        deadline = time.monotonic() + 60
        while a.store.unsealed()[0] or a.store.list_epochs(["open", "sealed", "sent"]):
            assert time.monotonic() < deadline, a.store.list_epochs()
            time.sleep(0.2)

    try:
        for part in range(2):
            job_id = submit(a, 20, NO_REPLICATION)
            run_concurrently((a, b), job_id, [register(a, 10 * part + i) for i in range(1, 4)])
            all_sealed()
            if part == 0:  # the process sealing so far stops; the other carries on from the next epoch
                a_seals.clear()
                a.duties.release()
    finally:
        stop.set()
        for t in sealers:
            t.join(30)
    epochs = a.store.list_epochs()
    assert [e.number for e in epochs] == list(range(1, len(epochs) + 1))  # no gap, no number twice
    assert all(e.state == "committed" for e in epochs) and len(epochs) >= 2
    assert sum(e.result_count for e in epochs) == 40  # every accepted result sealed once
    assert a.ledger.last_epoch() == len(epochs)
    assert b.store.duty_holders(time.time())[SEALER] == b.duties.holder
