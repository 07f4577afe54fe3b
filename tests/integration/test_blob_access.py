"""Who may read a blob: knowing its hash is no credential (coopgrid/coordinator/access.py).

The store's relations first (grants, job owners, live leases), once per backend
through the ``store`` fixture, and migration 0008's grants for jobs finished
before it; then the HTTP API in process, on a coordinator
whose database is each backend in turn, with real signed worker requests.
Every job here runs with ``inline_input_bytes=0``, so each task input is a blob
a worker has to fetch with GET /v1/blobs, as large inputs are in production.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from fastapi.testclient import TestClient
from httpx import Response
from sqlalchemy import insert, select

from coopgrid import tasks
from coopgrid.app import build
from coopgrid.coordinator.api import create_api
from coopgrid.datasets import Dataset
from coopgrid.protocol import ZERO_HASH, ResultRef, b64encode, sha256_hex
from coopgrid.store import SqlStore
from coopgrid.store import schema as s
from coopgrid.store.base import IncomingResult, ModelRecord, NewJob, NewTask
from coopgrid.store.migrate import alembic_config, upgrade
from coopgrid.store.sql import open_engine

try:  # the tests tree as packages (python -m pytest from the repo root)
    from tests.integration.test_api import NO_REPLICATION, Grid, Worker, coordinator_settings
except ImportError:  # pragma: no cover - rootdir-relative imports (prepend mode)
    from test_api import NO_REPLICATION, Grid, Worker, coordinator_settings  # type: ignore[no-redef]

T0 = 1_700_000_000.0
LEASE = 30.0


def a_hash() -> str:
    return secrets.token_hex(32)


# -- the store's relations ---------------------------------------------------------------


def blob_job(store: SqlStore, owner: int, n_tasks: int = 2, inline: bool = False) -> tuple[str, str, list[str]]:
    """A job whose task inputs are blobs (or inline); (job id, dataset hash, input hashes)."""
    job_id, dataset = secrets.token_hex(32), a_hash()
    inputs = [f"{job_id}/{i}".encode() for i in range(n_tasks)]
    store.create_job(
        NewJob(job_id, owner, "echo job", "echo", None, {}, dataset, n_tasks, 1, 0, NO_REPLICATION),
        [NewTask(sha256_hex(d), d if inline else None, i, 1) for i, d in enumerate(inputs)],
        T0,
    )
    return job_id, dataset, [sha256_hex(d) for d in inputs]


def token(store: SqlStore, name: str) -> int:
    return store.add_token(name, "submitter", secrets.token_hex(32), T0).id


def test_a_grant_lets_one_token_read_a_blob_and_granting_again_changes_nothing(store: SqlStore) -> None:
    alice, bob, blob = token(store, "alice"), token(store, "bob"), a_hash()
    assert not store.token_reads_blob(blob, alice)
    store.grant_blob(blob, alice)
    store.grant_blob(blob, alice)
    assert store.token_reads_blob(blob, alice)
    assert not store.token_reads_blob(blob, bob)
    assert not store.public_blob(blob)


def test_a_published_model_is_public(store: SqlStore) -> None:
    model = a_hash()
    store.add_model(ModelRecord(model, "m", 1, "classify", {}, 10, T0))
    assert store.public_blob(model)
    assert not store.public_blob(a_hash())


def test_a_job_owner_reads_its_dataset_and_input_blobs_and_no_one_else_does(store: SqlStore) -> None:
    alice, bob = token(store, "alice"), token(store, "bob")
    _, dataset, inputs = blob_job(store, alice)
    for blob in (dataset, *inputs):
        assert store.token_reads_blob(blob, alice)
        assert not store.token_reads_blob(blob, bob)
    _, _, inline = blob_job(store, alice, inline=True)
    assert not store.token_reads_blob(inline[0], alice)  # an inline input is no blob


def test_finishing_a_job_grants_its_owner_alone_the_output_and_artefacts(store: SqlStore) -> None:
    alice, bob = token(store, "alice"), token(store, "bob")
    job_id, _, _ = blob_job(store, alice)
    output, artefact = a_hash(), a_hash()
    assert not store.token_reads_blob(output, alice)
    store.finish_job(job_id, {"items": 2}, output, T0 + 1, [artefact])
    for blob in (output, artefact):
        assert store.token_reads_blob(blob, alice)
        assert not store.token_reads_blob(blob, bob)
    later = a_hash()
    store.finish_job(job_id, {"items": 2}, later, T0 + 2, [])  # already done: a no-op
    assert not store.token_reads_blob(later, alice)


def test_a_worker_reads_a_blob_only_while_it_holds_a_live_lease_needing_it(store: SqlStore) -> None:
    alice = token(store, "alice")
    job_id, dataset, inputs = blob_job(store, alice, n_tasks=2)
    _, other_dataset, other_inputs = blob_job(store, alice, n_tasks=1)
    w = store.register_worker("0x" + secrets.token_hex(20), "w", "ann", T0)
    v = store.register_worker("0x" + secrets.token_hex(20), "v", "bob", T0)
    assert not any(store.worker_reads_blob(b, w.id, T0) for b in (dataset, *inputs))  # no lease yet

    lease = store.lease(w.id, 2, ["echo"], LEASE, T0)
    assert lease is not None
    mine = {r.input_hash: r for r in lease.replicas}
    assert {r.job_id for r in lease.replicas} == {job_id} and set(mine) == set(inputs)
    for blob in (dataset, *inputs):
        assert store.worker_reads_blob(blob, w.id, T0 + 1)
        assert not store.worker_reads_blob(blob, v.id, T0 + 1)  # another worker, no lease on it
    for blob in (other_dataset, *other_inputs):
        assert not store.worker_reads_blob(blob, w.id, T0 + 1)  # a job it holds no lease on
    assert not store.worker_reads_blob(dataset, w.id, lease.expires_at + 1)  # past the deadline

    # once a replica is answered its input is no longer needed; the other one still is
    first = mine[inputs[0]]
    out = b"output"
    store.record_results(lease.id, w.id, "0x" + "00" * 65, [IncomingResult(first.replica_id, sha256_hex(out), out, None)], [], T0 + 2)
    assert not store.worker_reads_blob(inputs[0], w.id, T0 + 3)
    assert store.worker_reads_blob(inputs[1], w.id, T0 + 3)
    assert store.worker_reads_blob(dataset, w.id, T0 + 3)

    store.reap_expired(lease.expires_at + 1)  # the lease ends; the task goes to another worker
    assert not any(store.worker_reads_blob(b, w.id, T0 + 3) for b in (dataset, *inputs))
    again = store.lease(v.id, 5, ["echo"], LEASE, lease.expires_at + 2)
    assert again is not None and inputs[1] in {r.input_hash for r in again.replicas}
    assert store.worker_reads_blob(inputs[1], v.id, lease.expires_at + 3)


def test_the_migration_grants_finished_jobs_owners_their_outputs_and_downgrades(store_url: str) -> None:
    engine = open_engine(store_url)
    try:
        upgrade(engine, "0007")
        output, artefact = a_hash(), a_hash()
        job = {"owner_token_id": 1, "name": "j", "task_type": "preprocess", "params": "{}", "n_items": 1,
               "n_tasks": 1, "task_size": 1, "reward_per_task": "0", "created_at": T0}
        with engine.begin() as conn:
            conn.execute(insert(s.tokens).values(id=1, name="alice", role="submitter", secret_hash="x" * 64, created_at=T0))
            conn.execute(insert(s.jobs).values(id="a" * 64, dataset_hash=a_hash(), state="running", **job))
            conn.execute(insert(s.jobs).values(
                id="b" * 64, dataset_hash=a_hash(), state="done", output_hash=output,
                summary=f'{{"blobs": {{"dataset": "{artefact}"}}, "items": 1}}', **job,
            ))
        upgrade(engine)
        store = SqlStore(engine)
        assert store.token_reads_blob(output, 1) and store.token_reads_blob(artefact, 1)
        with engine.connect() as conn:
            assert sorted(conn.execute(select(s.blob_readers.c.blob)).scalars()) == sorted([output, artefact])
        command.downgrade(alembic_config(engine), "0007")
        command.upgrade(alembic_config(engine), "head")
    finally:
        engine.dispose()


# -- the HTTP API --------------------------------------------------------------------------


@pytest.fixture
def grid(store_url: str, tmp_path: Path) -> Iterator[Grid]:
    """A coordinator on ``store_url`` (SQLite file or PostgreSQL) sending every task input as a blob."""
    with ExitStack() as stack:
        app = build(coordinator_settings(tmp_path / "coordinator", database_url=store_url, inline_input_bytes=0))
        stack.callback(app.close)
        operator = app.auth.ensure_operator()
        assert operator is not None
        client = stack.enter_context(TestClient(create_api(app)))
        yield Grid(app, client, operator)


def worker_get(w: Worker, path: str) -> Response:
    return w.grid.client.get(path, headers=w.identity.request_headers("GET", path, b"", w.grid.app.auth.grid))


def fetch(grid: Grid, digest: str, who: str | Worker) -> Response:
    if isinstance(who, Worker):
        return worker_get(who, f"/v1/blobs/{digest}")
    return grid.client.get(f"/v1/blobs/{digest}", headers=grid.headers(who))


def assert_unreadable(grid: Grid, digest: str, who: str | Worker) -> None:
    """404 with the very body a hash never stored gets: nothing says the blob exists."""
    r = fetch(grid, digest, who)
    missing = a_hash()
    expected = fetch(grid, missing, who)
    assert (r.status_code, expected.status_code) == (404, 404), f"blob {digest} answered {r.status_code}"
    assert r.content == expected.content.replace(missing.encode(), digest.encode())


def submit(grid: Grid, dataset: str, tok: str, task_type: str = "echo", **spec: Any) -> Response:
    body = {"task_type": task_type, "dataset": dataset, "task_size": 4, "trust": NO_REPLICATION, **spec}
    return grid.client.post("/v1/jobs", json=body, headers=grid.headers(tok))


def run(w: Worker, lease: dict[str, Any]) -> dict[str, Any]:
    """Compute a lease as coopgrid.worker does: each input fetched as a blob while the lease holds."""
    items, refs = [], []
    for rep in lease["replicas"]:
        assert rep["input"] is None  # inline_input_bytes=0: every input is a blob
        r = worker_get(w, f"/v1/blobs/{rep['input_hash']}")
        assert r.status_code == 200, r.text
        job = lease["jobs"][rep["job"]]
        task_type = tasks.get(job["task_type"])
        output = task_type.canonical(task_type.run(r.content, None, task_type.validate_params(job["params"])))
        items.append({"replica_id": rep["id"], "output_hash": sha256_hex(output), "output": b64encode(output)})
        refs.append(ResultRef(rep["job"], rep["task_index"], rep["input_hash"], ZERO_HASH, sha256_hex(output)))
    return {"signature": w.identity.sign_batch(lease["chain_id"], lease["lease_id"], refs), "results": items}


def finish(grid: Grid, job: dict[str, Any], tok: str) -> dict[str, Any]:
    w = Worker(grid, owner=f"runner-{secrets.token_hex(4)}").register()
    while (r := w.post("/v1/leases", {"max_replicas": 100})).status_code == 201:
        lease = r.json()
        assert w.submit(lease["lease_id"], run(w, lease)).status_code == 200
    return grid.wait_until_done(job["id"], tok)


def input_hashes(grid: Grid, job_id: str) -> list[str]:
    with grid.app.store.engine.connect() as conn:
        return list(conn.execute(select(s.tasks.c.input_hash).where(s.tasks.c.job_id == job_id)).scalars())


def test_another_submitter_reads_nothing_of_a_job_and_its_owner_and_operators_read_all(grid: Grid) -> None:
    alice, bob = grid.new_token("alice"), grid.new_token("bob")
    job = grid.submit_echo(10, 4, alice)
    done = finish(grid, job, alice)
    inputs = input_hashes(grid, job["id"])
    assert len(inputs) == 3
    for blob in (done["dataset"], *inputs, done["output"]):
        assert_unreadable(grid, blob, bob)
        for reader in (alice, grid.operator):
            r = fetch(grid, blob, reader)
            assert r.status_code == 200 and sha256_hex(r.content) == blob
    assert grid.client.get(f"/v1/jobs/{job['id']}/output", headers=grid.headers(bob)).status_code == 404


def test_a_worker_reads_a_jobs_inputs_only_while_it_holds_a_lease_on_them(grid: Grid) -> None:
    alice = grid.new_token("alice")
    job = grid.submit_echo(8, 4, alice)
    inputs = input_hashes(grid, job["id"])
    w, idle = Worker(grid, owner="ann").register(), Worker(grid, owner="bob").register()  # self-registered keys
    for blob in (job["dataset"], *inputs):
        assert_unreadable(grid, blob, w)

    lease = w.lease(max_replicas=1)
    held = lease["replicas"][0]["input_hash"]
    assert fetch(grid, held, w).status_code == 200
    assert fetch(grid, job["dataset"], w).status_code == 200  # a lease on the job
    for blob in (job["dataset"], held):
        assert_unreadable(grid, blob, idle)
    assert_unreadable(grid, next(h for h in inputs if h != held), w)  # a task it holds no lease on

    assert w.submit(lease["lease_id"], run(w, lease)).status_code == 200  # answered: the lease is over
    for blob in (job["dataset"], held):
        assert_unreadable(grid, blob, w)

    lease = w.lease(max_replicas=1)
    held = lease["replicas"][0]["input_hash"]
    assert fetch(grid, held, w).status_code == 200
    grid.app.store.reap_expired(lease["expires_at"] + 1)  # the lease expires
    assert_unreadable(grid, held, w)

    done = finish(grid, job, alice)
    for who in (w, idle):
        assert_unreadable(grid, done["output"], who)


def test_a_published_model_is_readable_by_every_authenticated_caller(grid: Grid) -> None:
    onnx = b"model bytes " + secrets.token_bytes(16)
    model = grid.upload(onnx)
    r = grid.client.post("/v1/models", json={"sha256": model, "name": "m", "task_type": "classify"}, headers=grid.headers())
    assert r.status_code == 201, r.text
    for who in (grid.new_token("bob"), Worker(grid).register()):
        r = fetch(grid, model, who)
        assert r.status_code == 200 and r.content == onnx
    assert grid.client.get(f"/v1/blobs/{model}").status_code == 401  # but not by anybody
    assert fetch(grid, model, Worker(grid)).status_code == 401  # nor by an unregistered key


def test_an_upload_is_readable_by_its_uploader_alone(grid: Grid) -> None:
    alice, bob = grid.new_token("alice"), grid.new_token("bob")
    data = secrets.token_bytes(100)
    digest = grid.upload(data, alice)
    assert fetch(grid, digest, alice).content == data
    assert_unreadable(grid, digest, bob)
    assert grid.upload(data, bob) == digest  # the same bytes are stored once...
    assert fetch(grid, digest, bob).content == data  # ...and whoever has them may read them


def test_a_submitter_cannot_run_a_job_on_a_dataset_it_may_not_read(grid: Grid) -> None:
    alice, bob = grid.new_token("alice"), grid.new_token("bob")
    job = grid.submit_echo(6, 3, alice)
    done = finish(grid, job, alice)
    never = a_hash()
    refused = submit(grid, never, bob)
    assert refused.status_code == 404
    assert "no dataset" in refused.json()["detail"]
    for learnt in (job["dataset"], done["output"]):
        r = submit(grid, learnt, bob)
        assert r.status_code == 404
        assert r.content == refused.content.replace(never.encode(), learnt.encode())  # as if it did not exist
    assert grid.client.get("/v1/jobs", headers=grid.headers(bob)).json() == []
    assert submit(grid, job["dataset"], alice).status_code == 201  # its owner may run it again
    assert submit(grid, job["dataset"], grid.operator).status_code == 201


def test_a_preprocess_output_is_its_owners_next_dataset_and_no_one_elses(grid: Grid) -> None:
    alice, bob = grid.new_token("alice"), grid.new_token("bob")
    texts = Dataset.from_items([b"Some  TEXT", b"more\ttext", b"and more"], "text", ["a", "b", "c"])
    r = submit(grid, grid.upload(texts.to_npz(), alice), alice, "preprocess", params={"lowercase": True})
    assert r.status_code == 201, r.text
    done = finish(grid, r.json(), alice)
    cleaned = done["summary"]["blobs"]["dataset"]
    assert Dataset.from_npz(fetch(grid, cleaned, alice).content).items() == [b"some text", b"more text", b"and more"]
    assert_unreadable(grid, cleaned, bob)
    assert submit(grid, cleaned, bob, "preprocess").status_code == 404
    nxt = submit(grid, cleaned, alice, "preprocess", params={"tokenize": "chars"})
    assert nxt.status_code == 201, nxt.text
    assert nxt.json()["items"] == 3


def test_a_malformed_hash_is_422_before_any_lookup(grid: Grid) -> None:
    r = grid.client.get("/v1/blobs/not-a-hash", headers=grid.headers())
    assert r.status_code == 422
    assert fetch(grid, "A" * 64, grid.operator).status_code == 422  # hashes are lowercase
