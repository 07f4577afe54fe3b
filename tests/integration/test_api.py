"""The coordinator's HTTP API, driven in process with FastAPI's TestClient.

Each test builds a real coordinator (``coopgrid.app.build``) once on each store
(a SQLite file in its tmp dir, and a fresh PostgreSQL database: the
``store_url`` fixture of conftest.py); the client is used as a context manager so the lifespan runs
(unfinished-job recovery, the lease reaper). Workers are real identities that
sign their requests and result batches exactly as ``coopgrid worker`` does.

Most tests run jobs under the no-replication trust policy (one replica per
task, a quorum of one: accepted, final and counted as the result batch is
recorded, so the response already says "accepted") so that one worker can
finish a job; the tests at the end run the default policy (a quorum of two
owners), whose results are "pending" as recorded and decided by validation.
"""

from __future__ import annotations

import io
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pyarrow.parquet as pq
import pytest
from fastapi.testclient import TestClient
from httpx import Response

from coopgrid import tasks
from coopgrid.app import App, build
from coopgrid.client import ApiClient
from coopgrid.config import Settings
from coopgrid.coordinator.api import create_api
from coopgrid.datasets import sequence
from coopgrid.errors import IntegrityError
from coopgrid.identity import Identity
from coopgrid.protocol import ZERO_HASH, ResultRef, b64decode, b64encode, sha256_hex

# -- harness ----------------------------------------------------------------------

#: one replica per task, accepted and final at once: a job one worker can finish
NO_REPLICATION = {"replicas": 1, "quorum": 1, "adaptive": False, "gold_rate": 0}


@dataclass
class Grid:
    """One coordinator under test: the wired app, an HTTP client, the operator token."""

    app: App
    client: TestClient
    operator: str

    def headers(self, token: str | None = None) -> dict[str, str]:
        return {"Authorization": f"Bearer {token or self.operator}"}

    def new_token(self, name: str, role: str = "submitter") -> str:
        r = self.client.post("/v1/tokens", json={"name": name, "role": role}, headers=self.headers())
        assert r.status_code == 201, r.text
        assert r.json()["role"] == role
        return r.json()["token"]

    def upload(self, data: bytes, token: str | None = None) -> str:
        r = self.client.put("/v1/blobs", content=data, headers=self.headers(token))
        assert r.status_code == 201, r.text
        assert r.json() == {"sha256": sha256_hex(data), "size": len(data)}
        return r.json()["sha256"]

    def submit_echo(
        self, n_items: int, task_size: int, token: str | None = None, trust: dict[str, Any] | None = NO_REPLICATION
    ) -> dict[str, Any]:
        """An echo job; ``trust=None`` leaves the trust policy to the coordinator's defaults."""
        dataset = self.upload(sequence(n_items).to_npz(), token)
        spec = {"task_type": "echo", "dataset": dataset, "task_size": task_size}
        if trust is not None:
            spec["trust"] = trust
        r = self.client.post("/v1/jobs", json=spec, headers=self.headers(token))
        assert r.status_code == 201, r.text
        return r.json()

    def job(self, job_id: str, token: str | None = None) -> dict[str, Any]:
        r = self.client.get(f"/v1/jobs/{job_id}", headers=self.headers(token))
        assert r.status_code == 200, r.text
        return r.json()

    def wait_until_done(self, job_id: str, token: str | None = None) -> dict[str, Any]:
        """The job once its output exists (the coordinator reduces it in the background)."""
        deadline = time.monotonic() + 10
        while True:
            job = self.job(job_id, token)
            if job["state"] == "done" or time.monotonic() > deadline:
                assert job["state"] == "done", f"job never finished: {job}"
                return job
            time.sleep(0.02)


def coordinator_settings(data_dir: Path, **overrides: Any) -> Settings:
    # The ledger has its own tests; these are about the API, so no chain here.
    return Settings(data_dir=data_dir, **({"ledger": "none"} | overrides))


@pytest.fixture
def make_grid(tmp_path: Path, store_url: str) -> Iterator[Callable[..., Grid]]:
    with ExitStack() as stack:

        def make(**settings: Any) -> Grid:
            app = build(coordinator_settings(tmp_path / "coordinator", **({"database_url": store_url} | settings)))
            stack.callback(app.close)
            operator = app.auth.ensure_operator()
            assert operator is not None
            client = stack.enter_context(TestClient(create_api(app)))
            return Grid(app, client, operator)

        yield make


@pytest.fixture
def grid(make_grid: Callable[..., Grid]) -> Grid:
    return make_grid()


class Worker:
    """A grid worker as seen on the wire: signs every request and every result batch."""

    def __init__(self, grid: Grid, identity: Identity | None = None, owner: str = "tests") -> None:
        self.grid = grid
        self.identity = identity or Identity.generate()
        self.owner = owner

    @property
    def address(self) -> str:
        return self.identity.address

    def post(self, path: str, body: Any, signer: Identity | None = None) -> Response:
        content = orjson.dumps(body)
        headers = (signer or self.identity).request_headers("POST", path, content, self.grid.app.auth.grid)
        headers["content-type"] = "application/json"
        return self.grid.client.post(path, content=content, headers=headers)

    def register(self) -> Worker:
        r = self.post("/v1/workers", {"name": "test worker", "owner": self.owner})
        assert r.status_code == 201, r.text
        assert r.json()["address"] == self.address
        return self

    def lease(self, max_replicas: int = 100) -> dict[str, Any]:
        r = self.post("/v1/leases", {"max_replicas": max_replicas})
        assert r.status_code == 201, r.text
        return r.json()

    def compute(
        self, lease: dict[str, Any], cheat: bool = False
    ) -> tuple[list[dict[str, Any]], list[ResultRef]]:
        """Run every leased replica like coopgrid.worker.loop does; the items and what they sign.

        ``cheat``: send (and sign) a made-up output instead of computing it."""
        items, refs = [], []
        for replica in lease["replicas"]:
            job = lease["jobs"][replica["job"]]
            task_type = tasks.get(job["task_type"])
            data = b64decode(replica["input"])
            assert sha256_hex(data) == replica["input_hash"]
            if cheat:
                output = b"a made-up answer to replica %d" % replica["id"]
            else:
                output = task_type.canonical(task_type.run(data, None, task_type.validate_params(job["params"])))
            items.append({"replica_id": replica["id"], "output_hash": sha256_hex(output), "output": b64encode(output)})
            refs.append(
                ResultRef(
                    replica["job"],
                    replica["task_index"],
                    replica["input_hash"],
                    job["model_hash"] or ZERO_HASH,
                    sha256_hex(output),
                )
            )
        return items, refs

    def batch(self, lease: dict[str, Any], signer: Identity | None = None, cheat: bool = False) -> dict[str, Any]:
        items, refs = self.compute(lease, cheat)
        signature = (signer or self.identity).sign_batch(lease["chain_id"], lease["lease_id"], refs)
        return {"signature": signature, "results": items}

    def submit(self, lease_id: int, batch: dict[str, Any]) -> Response:
        return self.post(f"/v1/leases/{lease_id}/results", batch)


def error_of(r: Response) -> dict[str, Any]:
    body = r.json()
    assert "error" in body and "detail" in body, body
    return body


# -- the happy path -----------------------------------------------------------------


def test_an_echo_job_runs_to_a_complete_output(grid: Grid) -> None:
    alice = grid.new_token("alice")
    job = grid.submit_echo(50, 8, alice)
    assert (job["state"], job["items"], job["tasks"], job["replicas"]) == ("running", 50, 7, {"ready": 7})
    r = grid.client.get(f"/v1/jobs/{job['id']}/output", headers=grid.headers(alice))
    assert r.status_code == 409  # no output before the job is done

    first, second = Worker(grid).register(), Worker(grid).register()
    leases: list[tuple[Worker, dict[str, Any]]] = []
    for _ in range(10):  # both workers ask in turn until nothing is left (7 tasks: a few rounds)
        answers = [(w, w.post("/v1/leases", {"max_replicas": 4})) for w in (first, second)]
        granted = [(w, r.json()) for w, r in answers if r.status_code == 201]
        assert all(r.status_code in (201, 204) for _, r in answers), [r.text for _, r in answers]
        if not granted:
            break
        leases += granted
    else:
        pytest.fail(f"the coordinator kept handing out replicas: {leases}")
    leased = [rep["task_index"] for _, lease in leases for rep in lease["replicas"]]
    assert sorted(leased) == list(range(7))  # every task handed out, none twice
    assert all(1 <= len(lease["replicas"]) <= 4 for _, lease in leases)

    w, lease = leases[-1]
    hb = w.post(f"/v1/leases/{lease['lease_id']}/heartbeat", {})
    assert hb.status_code == 200, hb.text
    assert hb.json()["expires_at"] >= lease["expires_at"]

    counted = 0
    for w, lease in leases:
        r = w.submit(lease["lease_id"], w.batch(lease))
        assert r.status_code == 200, r.text
        assert r.json()["results"] == {"accepted": len(lease["replicas"])}  # a quorum of one: accepted as recorded
        counted += len(lease["replicas"])
        assert grid.job(job["id"], alice)["tasks_done"] == counted  # counted before the response, each task once

    done = grid.wait_until_done(job["id"], alice)
    assert (done["tasks_done"], done["tasks_failed"]) == (7, 0)
    r = grid.client.get(f"/v1/jobs/{job['id']}/output", headers=grid.headers(alice))
    assert r.status_code == 200
    assert r.headers["x-coopgrid-sha256"] == sha256_hex(r.content) == done["output"]
    table = pq.read_table(io.BytesIO(r.content)).to_pylist()

    assert sorted(row["item_id"] for row in table) == sorted(f"item-{i}" for i in range(50))  # each exactly once
    leased_by = {rep["task_index"]: w.address for w, lease in leases for rep in lease["replicas"]}
    per_worker = {w.address: sum(1 for a in leased_by.values() if a == w.address) for w in (first, second)}
    per_worker = {a: n for a, n in per_worker.items() if n}
    for row in table:
        i = int(row["item_id"].removeprefix("item-"))
        assert np.frombuffer(row["value"], dtype=np.int64).tolist() == [i]
        assert row["task_index"] == i // 8
        assert row["worker"] == leased_by[i // 8]

    summary = done["summary"]
    assert (summary["items"], summary["tasks"], summary["tasks_done"], summary["tasks_failed"]) == (50, 7, 7, 0)
    assert summary["replicas_executed"] == 7
    assert summary["replicas_per_task"] == 1.0
    assert summary["replicas_expired"] == 0
    assert (summary["tasks_inconclusive"], summary["tasks_provisional"]) == (0, 0)
    assert summary["results"] == {"accepted": 7}
    assert summary["workers"] == len(per_worker)
    assert summary["tasks_per_worker"] == per_worker
    assert summary["echo_mismatches"] == 0
    assert done["replicas"] == {"done": 7}

    listed = grid.client.get("/v1/workers", headers=grid.headers()).json()
    workers = {w["address"]: w["accepted"] for w in listed}
    assert workers == {w.address: per_worker.get(w.address, 0) for w in (first, second)}
    # each accepted result counts as a validated one in its worker's record
    credited = {w["address"]: [(r["run"], r["valid"], r["invalid"]) for r in w["reputation"]] for w in listed}
    assert credited == {
        w.address: [(per_worker[w.address],) * 2 + (0,)] if w.address in per_worker else [] for w in (first, second)
    }


def test_the_output_is_streamed_to_a_file_checked_against_its_hash_and_a_corrupt_one_leaves_nothing(
    grid: Grid, tmp_path: Path
) -> None:
    job = grid.submit_echo(40, 8)
    w = Worker(grid).register()
    while (r := w.post("/v1/leases", {"max_replicas": 3})).status_code == 201:
        assert w.submit(r.json()["lease_id"], w.batch(r.json())).status_code == 200
    done = grid.wait_until_done(job["id"])
    client = ApiClient("http://testserver", grid.operator)
    client.http = TestClient(grid.client.app, headers=grid.headers())
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    out = client.output(job["id"], downloads / "out.parquet")
    assert sha256_hex(out.read_bytes()) == done["output"]
    assert pq.read_table(out).num_rows == 40

    # a known hash is checked too (an artefact's, named in the job's summary)
    with pytest.raises(IntegrityError):
        client.download(f"/v1/blobs/{done['output']}", downloads / "artefact", expected="0" * 64)
    assert client.download(f"/v1/blobs/{done['output']}", downloads / "same", expected=done["output"]).exists()
    (downloads / "same").unlink()

    # the blob store's copy rots: the download is refused and no file (whole or partial) is left
    stored = grid.app.blobs.local_path(done["output"])
    stored.write_bytes(stored.read_bytes()[:-1] + b"x")
    with pytest.raises(IntegrityError, match="corrupted on the way; download it again"):
        client.output(job["id"], downloads / "again.parquet")
    assert sorted(p.name for p in downloads.iterdir()) == ["out.parquet"]


def test_a_complete_job_left_unreduced_is_finished_when_the_coordinator_restarts(
    tmp_path: Path, store_url: str
) -> None:
    from coopgrid.store.base import IncomingResult

    settings = coordinator_settings(tmp_path / "coordinator", database_url=store_url)
    app = build(settings)
    try:
        operator = app.auth.ensure_operator()
        with TestClient(create_api(app)) as client:
            grid = Grid(app, client, operator)
            job = grid.submit_echo(10, 5)
            w = Worker(grid).register()
            lease = w.lease()
            items, refs = w.compute(lease)
            # the results reach the database, then the coordinator dies before reducing the job
            outcome = app.store.record_results(
                lease["lease_id"],
                app.store.get_worker(w.address).id,
                w.identity.sign_batch(lease["chain_id"], lease["lease_id"], refs),
                [IncomingResult(i["replica_id"], i["output_hash"], b64decode(i["output"]), None) for i in items],
                [],
                time.time(),
            )
            assert outcome.completed_jobs == [job["id"]]  # a quorum of one: complete as recorded...
            after = grid.job(job["id"])
            assert (after["state"], after["tasks_done"]) == ("running", 2)  # ...but never reduced

            # a job with a quorum of two whose results were recorded, never validated
            pair = grid.submit_echo(2, 2, trust={"replicas": 2, "quorum": 2, "adaptive": False, "gold_rate": 0})
            for owner in ("ann", "bob"):
                v = Worker(grid, owner=owner).register()
                lease = v.lease()
                assert [rep["job"] for rep in lease["replicas"]] == [pair["id"]]  # its one task
                items, refs = v.compute(lease)
                outcome = app.store.record_results(
                    lease["lease_id"],
                    app.store.get_worker(v.address).id,
                    v.identity.sign_batch(lease["chain_id"], lease["lease_id"], refs),
                    [IncomingResult(i["replica_id"], i["output_hash"], b64decode(i["output"]), None) for i in items],
                    [],
                    time.time(),
                )
                assert set(outcome.statuses.values()) == {"pending"} and outcome.completed_jobs == []
            after = grid.job(pair["id"])
            assert (after["state"], after["tasks_done"]) == ("running", 0)  # recorded, never validated
    finally:
        app.close()

    restarted = build(settings)  # a new coordinator on the same data dir
    try:
        assert restarted.auth.ensure_operator() is None  # the operator token survived too
        with TestClient(create_api(restarted)) as client:
            r = client.get(f"/v1/jobs/{job['id']}", headers={"Authorization": f"Bearer {operator}"})
            assert r.status_code == 200, r.text
            assert r.json()["state"] == "done"
            assert r.json()["summary"]["tasks_done"] == 2
            out = client.get(f"/v1/jobs/{job['id']}/output", headers={"Authorization": f"Bearer {operator}"})
            assert out.status_code == 200
            assert pq.read_table(io.BytesIO(out.content)).num_rows == 10
            # the pending results were validated at start, and that job finished too
            r = client.get(f"/v1/jobs/{pair['id']}", headers={"Authorization": f"Bearer {operator}"})
            assert r.status_code == 200, r.text
            assert r.json()["state"] == "done"
            assert r.json()["summary"]["tasks_done"] == 1
            assert r.json()["summary"]["results"] == {"accepted": 1, "valid": 1}
    finally:
        restarted.close()


# -- tokens and who sees what -------------------------------------------------------


def test_requests_without_a_valid_token_are_refused(grid: Grid) -> None:
    for headers in ({}, {"Authorization": "Bearer cgt_not-a-token"}, {"Authorization": grid.operator}):
        for method, path in (("GET", "/v1/jobs"), ("GET", "/v1/models"), ("PUT", "/v1/blobs"), ("POST", "/v1/jobs")):
            r = grid.client.request(method, path, headers=headers, content=b"{}")
            assert r.status_code == 401, (method, path, headers, r.text)
            assert error_of(r)["error"] == "AuthError"
    assert grid.client.get("/v1/jobs", headers=grid.headers()).status_code == 200


def test_jobs_are_listed_a_page_at_a_time_newest_first_and_filtered_by_state_and_id_prefix(grid: Grid) -> None:
    alice, bob = grid.new_token("alice"), grid.new_token("bob")
    mine = [grid.submit_echo(4, 2, alice)["id"] for _ in range(5)]
    theirs = grid.submit_echo(4, 2, bob)["id"]
    grid.client.post(f"/v1/jobs/{mine[1]}/cancel", headers=grid.headers(alice))

    seen, before, pages = [], None, 0
    while True:
        r = grid.client.get("/v1/jobs", params={"limit": 2, **({"before": before} if before else {})},
                            headers=grid.headers(alice))
        assert r.status_code == 200, r.text
        seen += [j["id"] for j in r.json()]
        pages += 1
        if (before := r.headers.get("x-coopgrid-next")) is None:
            break
        assert before == seen[-1]
    assert seen == mine[::-1] and pages == 3  # every job once, newest first; never bob's
    everyone = grid.client.get("/v1/jobs", params={"limit": 2}, headers=grid.headers()).json()
    assert [j["id"] for j in everyone] == [theirs, mine[-1]]  # an operator pages through every job

    cancelled = grid.client.get("/v1/jobs", params={"state": "cancelled"}, headers=grid.headers(alice)).json()
    assert [j["id"] for j in cancelled] == [mine[1]]
    r = grid.client.get("/v1/jobs", params={"prefix": mine[3][:10]}, headers=grid.headers(alice))
    assert [j["id"] for j in r.json()] == [mine[3]] and "x-coopgrid-next" not in r.headers
    assert grid.client.get("/v1/jobs", params={"prefix": theirs[:10]}, headers=grid.headers(alice)).json() == []

    for bad in ({"limit": 0}, {"limit": 1001}, {"state": "lost"}, {"prefix": "XYZ"}, {"before": "x"}):
        assert grid.client.get("/v1/jobs", params=bad, headers=grid.headers(alice)).status_code == 422, bad
    # a page after someone else's job is no way to learn of it
    r = grid.client.get("/v1/jobs", params={"before": theirs}, headers=grid.headers(alice))
    assert r.status_code == 404 and error_of(r)["error"] == "JobNotFound"


def test_a_submitter_sees_only_its_own_jobs(grid: Grid) -> None:
    alice, bob = grid.new_token("alice"), grid.new_token("bob")
    job = grid.submit_echo(10, 5, alice)["id"]

    paths = (("GET", f"/v1/jobs/{job}"), ("GET", f"/v1/jobs/{job}/output"), ("POST", f"/v1/jobs/{job}/cancel"))
    for method, path in paths:
        r = grid.client.request(method, path, headers=grid.headers(bob))
        assert r.status_code == 404, (path, r.text)
        assert error_of(r)["error"] == "JobNotFound"
    assert grid.client.get("/v1/jobs", headers=grid.headers(bob)).json() == []
    assert grid.job(job)["state"] == "running"  # bob's cancel did nothing

    assert grid.job(job, alice)["id"] == job
    assert [j["id"] for j in grid.client.get("/v1/jobs", headers=grid.headers(alice)).json()] == [job]
    assert grid.job(job)["id"] == job  # the operator sees every job
    assert job in [j["id"] for j in grid.client.get("/v1/jobs", headers=grid.headers()).json()]

    r = grid.client.post("/v1/tokens", json={"name": "mallory"}, headers=grid.headers(bob))
    assert r.status_code == 403  # only an operator issues tokens
    r = grid.client.post(f"/v1/jobs/{job}/cancel", headers=grid.headers(alice))
    assert r.status_code == 200 and r.json()["state"] == "cancelled"


# -- bad job specs -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "field", "problem"),
    [
        ({"task_size": 0}, "task_size", "greater than or equal to 1"),
        ({"dataset": "not-a-hash"}, "dataset", "pattern"),
        ({"task_type": None}, "task_type", "Field required"),  # None: left out
        ({"task_size": "many"}, "task_size", "valid integer"),
        ({"reward_per_task": -1}, "reward_per_task", "greater than or equal to 0"),
        ({"colour": "blue"}, "colour", "Extra inputs are not permitted"),
    ],
)
def test_a_malformed_job_spec_is_422_naming_the_field(grid: Grid, change: dict, field: str, problem: str) -> None:
    spec = {"task_type": "echo", "dataset": grid.upload(sequence(4).to_npz()), "task_size": 2} | change
    spec = {k: v for k, v in spec.items() if v is not None}
    r = grid.client.post("/v1/jobs", json=spec, headers=grid.headers())
    assert r.status_code == 422, r.text
    problems = error_of(r)["detail"]
    assert any(p["loc"][-1] == field and problem in p["msg"] for p in problems), problems
    assert grid.client.get("/v1/jobs", headers=grid.headers()).json() == []


def test_job_specs_the_coordinator_cannot_run_are_422(grid: Grid) -> None:
    dataset = grid.upload(sequence(4).to_npz())
    r = grid.client.post("/v1/jobs", json={"task_type": "paint", "dataset": dataset}, headers=grid.headers())
    assert r.status_code == 422
    assert "unknown task type 'paint'" in error_of(r)["detail"]
    r = grid.client.post(
        "/v1/jobs", json={"task_type": "echo", "dataset": dataset, "params": {"speed": 3}}, headers=grid.headers()
    )
    assert r.status_code == 422
    assert "params" in error_of(r)["detail"] and "speed" in error_of(r)["detail"]
    r = grid.client.post("/v1/jobs", json={"task_type": "echo", "dataset": "a" * 64}, headers=grid.headers())
    assert r.status_code == 404  # no such dataset blob
    assert "a" * 64 in error_of(r)["detail"]


def test_an_unknown_model_is_404_with_a_hint(grid: Grid) -> None:
    dataset = grid.upload(sequence(4).to_npz())
    r = grid.client.post(
        "/v1/jobs", json={"task_type": "classify", "model": "no-such-model", "dataset": dataset}, headers=grid.headers()
    )
    assert r.status_code == 404, r.text
    assert error_of(r)["error"] == "ModelNotFound"
    assert "no-such-model" in error_of(r)["detail"]
    assert "coopgrid models list" in error_of(r)["detail"]


def test_a_model_of_another_task_type_is_422(grid: Grid) -> None:
    weights = grid.upload(b"bytes published as an echo model")
    r = grid.client.post(
        "/v1/models", json={"sha256": weights, "name": "echoer", "task_type": "echo"}, headers=grid.headers()
    )
    assert r.status_code == 201, r.text
    assert (r.json()["name"], r.json()["version"], r.json()["task_type"]) == ("echoer", 1, "echo")

    dataset = grid.upload(sequence(4).to_npz())
    r = grid.client.post(
        "/v1/jobs", json={"task_type": "classify", "model": "echoer", "dataset": dataset}, headers=grid.headers()
    )
    assert r.status_code == 422, r.text
    detail = error_of(r)["detail"]
    assert "'echo'" in detail and "'classify'" in detail
    assert grid.client.get("/v1/jobs", headers=grid.headers()).json() == []


# -- uploads ------------------------------------------------------------------------


def test_an_upload_over_the_limit_is_413(make_grid: Callable[..., Grid]) -> None:
    grid = make_grid(max_upload_bytes=1000)
    assert grid.upload(b"x" * 1000) == sha256_hex(b"x" * 1000)  # the limit itself is fine

    too_big = b"y" * 1001
    r = grid.client.put("/v1/blobs", content=too_big, headers=grid.headers())
    assert r.status_code == 413, r.text
    assert error_of(r)["error"] == "TooLarge"
    assert "1000" in error_of(r)["detail"]

    # without a Content-Length (chunked), the size is counted as it streams
    chunked = b"z" * 1500
    r = grid.client.put("/v1/blobs", content=iter([chunked[:700], chunked[700:]]), headers=grid.headers())
    assert r.status_code == 413, r.text

    for data in (too_big, chunked):
        r = grid.client.get(f"/v1/blobs/{sha256_hex(data)}", headers=grid.headers())
        assert r.status_code == 404  # nothing of the refused uploads was kept


# -- results the coordinator refuses ---------------------------------------------------


def test_results_for_an_unknown_lease_are_409_naming_it(grid: Grid) -> None:
    grid.submit_echo(4, 2)
    w = Worker(grid).register()
    lease = w.lease()
    batch = w.batch(lease)
    r = w.submit(987654, batch)
    assert r.status_code == 409, r.text
    assert error_of(r)["error"] == "LeaseError"
    assert "987654" in error_of(r)["detail"]
    assert error_of(r)["lease_id"] == 987654

    # a lease that exists but is another worker's is unknown to this one
    other = Worker(grid).register()
    r = other.submit(lease["lease_id"], other.batch(lease))
    assert r.status_code == 409, r.text
    assert str(lease["lease_id"]) in error_of(r)["detail"]

    r = w.post("/v1/leases/987654/heartbeat", {})
    assert r.status_code == 409
    assert "987654" in error_of(r)["detail"]

    assert w.submit(lease["lease_id"], batch).json()["results"] == {"accepted": 2}
    assert grid.job(lease["replicas"][0]["job"])["tasks_done"] == 2


def test_results_for_an_expired_lease_are_409_saying_so(make_grid: Callable[..., Grid]) -> None:
    grid = make_grid(lease_seconds=0.2)
    job = grid.submit_echo(6, 2)
    slow = Worker(grid).register()
    lease = slow.lease()
    assert len(lease["replicas"]) == 3
    batch = slow.batch(lease)
    while time.time() <= lease["expires_at"]:
        time.sleep(0.05)
    grid.app.scheduler.reap()  # (the background reaper may have done it already)

    r = slow.submit(lease["lease_id"], batch)
    assert r.status_code == 409, r.text
    assert error_of(r)["error"] == "LeaseError"
    assert "expired" in error_of(r)["detail"]
    assert error_of(r)["lease_id"] == lease["lease_id"]
    r = slow.post(f"/v1/leases/{lease['lease_id']}/heartbeat", {})
    assert r.status_code == 409 and "expired" in error_of(r)["detail"]
    assert grid.job(job["id"])["tasks_done"] == 0

    # the tasks were reissued; another worker completes the job (under a lease long
    # enough that this test does not race it)
    grid.app.settings.lease_seconds = 60.0
    fast = Worker(grid).register()
    reissued = []
    while (r := fast.post("/v1/leases", {"max_replicas": 100})).status_code == 201 and len(reissued) < 10:
        reissued.append(r.json())
    assert r.status_code == 204, r.text
    assert sorted(rep["task_index"] for lease in reissued for rep in lease["replicas"]) == [0, 1, 2]
    for lease in reissued:
        r = fast.submit(lease["lease_id"], fast.batch(lease))
        assert r.status_code == 200, r.text
    done = grid.wait_until_done(job["id"])
    assert done["summary"]["tasks_per_worker"] == {fast.address: 3}


def test_a_batch_signed_by_another_key_is_401(grid: Grid) -> None:
    job = grid.submit_echo(4, 2)
    w = Worker(grid).register()
    lease = w.lease()
    forged = w.batch(lease, signer=Identity.generate())
    r = w.submit(lease["lease_id"], forged)  # the request is w's, the batch signature is not
    assert r.status_code == 401, r.text
    assert error_of(r)["error"] == "AuthError"
    assert w.address in error_of(r)["detail"]

    # a signature over other values (here: another task index) recovers to someone else too
    items, refs = w.compute(lease)
    refs[0] = refs[0]._replace(task_index=refs[0].task_index + 1)
    signature = w.identity.sign_batch(lease["chain_id"], lease["lease_id"], refs)
    r = w.submit(lease["lease_id"], {"signature": signature, "results": items})
    assert r.status_code == 401, r.text
    assert grid.job(job["id"])["tasks_done"] == 0

    r = w.submit(lease["lease_id"], w.batch(lease))
    assert r.status_code == 200 and r.json()["results"] == {"accepted": 2}
    assert grid.job(job["id"])["tasks_done"] == 2


def test_an_output_that_does_not_hash_to_its_output_hash_is_422(grid: Grid) -> None:
    job = grid.submit_echo(4, 2)
    w = Worker(grid).register()
    lease = w.lease()
    items, refs = w.compute(lease)
    items[1]["output"] = b64encode(b"something else entirely")  # signed hash stays the honest one
    signature = w.identity.sign_batch(lease["chain_id"], lease["lease_id"], refs)
    r = w.submit(lease["lease_id"], {"signature": signature, "results": items})
    assert r.status_code == 422, r.text
    assert error_of(r)["error"] == "IntegrityError"
    assert str(items[1]["replica_id"]) in error_of(r)["detail"]
    assert grid.job(job["id"])["tasks_done"] == 0  # the whole batch was refused


def test_a_batch_naming_one_replica_twice_does_not_stall_the_job(grid: Grid) -> None:
    job = grid.submit_echo(4, 2)
    w = Worker(grid).register()
    lease = w.lease()
    items, refs = w.compute(lease)
    items, refs = [items[0], *items], [refs[0], *refs]
    signature = w.identity.sign_batch(lease["chain_id"], lease["lease_id"], refs)
    r = w.submit(lease["lease_id"], {"signature": signature, "results": items})
    if r.status_code == 422:  # refusing such a batch outright is fine; the worker then sends an honest one
        r = w.submit(lease["lease_id"], w.batch(lease))
    assert r.status_code == 200, r.text
    assert r.json()["results"] == {"accepted": 2}  # one per replica, not per mention
    after = grid.job(job["id"])
    assert after["replicas"] == {"done": 2}  # both tasks are answered, so nothing will reissue them...
    assert after["tasks_done"] == 2, f"...and yet the job counts {after['tasks_done']} of 2 done: it can never finish"
    assert grid.wait_until_done(job["id"])["summary"]["tasks_done"] == 2


# -- worker authentication ------------------------------------------------------------


def test_unsigned_or_badly_signed_worker_requests_are_401(grid: Grid) -> None:
    grid.submit_echo(4, 2)
    w = Worker(grid).register()
    body = orjson.dumps({"max_replicas": 10})

    r = grid.client.post("/v1/leases", content=body, headers={"content-type": "application/json"})
    assert r.status_code == 401 and error_of(r)["error"] == "AuthError"
    r = grid.client.post("/v1/workers", content=b"{}", headers={"content-type": "application/json"})
    assert r.status_code == 401
    # a token is no substitute for a signature
    r = grid.client.post("/v1/leases", content=body, headers=grid.headers())
    assert r.status_code == 401

    # signed over another body
    grid_id = grid.app.auth.grid
    headers = w.identity.request_headers("POST", "/v1/leases", orjson.dumps({"max_replicas": 1}), grid_id)
    r = grid.client.post("/v1/leases", content=body, headers=headers)
    assert r.status_code == 401
    # signed for another path
    headers = w.identity.request_headers("POST", "/v1/workers", body, grid_id)
    r = grid.client.post("/v1/leases", content=body, headers=headers)
    assert r.status_code == 401
    # signed long ago (a replayed request)
    headers = w.identity.request_headers("POST", "/v1/leases", body, grid_id, now=time.time() - 3600)
    r = grid.client.post("/v1/leases", content=body, headers=headers)
    assert r.status_code == 401
    # claiming another worker's address
    headers = Identity.generate().request_headers("POST", "/v1/leases", body, grid_id) | {"x-coopgrid-worker": w.address}
    r = grid.client.post("/v1/leases", content=body, headers=headers)
    assert r.status_code == 401

    assert w.post("/v1/leases", {"max_replicas": 10}).status_code == 201  # the real thing works


def test_a_signed_request_cannot_be_replayed_nor_sent_to_another_grid(grid: Grid) -> None:
    w = Worker(grid).register()
    grid.submit_echo(4, 1)
    body = orjson.dumps({"max_replicas": 1})
    headers = w.identity.request_headers("POST", "/v1/leases", body, grid.app.auth.grid)
    headers["content-type"] = "application/json"
    first = grid.client.post("/v1/leases", content=body, headers=headers)
    assert first.status_code == 201
    again = grid.client.post("/v1/leases", content=body, headers=headers)
    assert again.status_code == 401 and "already used" in error_of(again)["detail"]
    assert grid.app.store.replica_counts(first.json()["replicas"][0]["job"]) == {"leased": 1, "ready": 3}

    elsewhere = w.identity.request_headers("POST", "/v1/leases", body, "0" * 32)  # signed for another grid
    r = grid.client.post("/v1/leases", content=body, headers=elsewhere | {"content-type": "application/json"})
    assert r.status_code == 401
    # an unregistered key is refused before its nonce is remembered
    stranger = Identity.generate().request_headers("POST", "/v1/leases", body, grid.app.auth.grid)
    r = grid.client.post("/v1/leases", content=body, headers=stranger | {"content-type": "application/json"})
    assert r.status_code == 401 and "not registered" in error_of(r)["detail"]
    grid.app.auth.nonces.remember(stranger["x-coopgrid-worker"], stranger["x-coopgrid-nonce"])  # not used up


def test_an_unregistered_worker_is_401(grid: Grid) -> None:
    grid.submit_echo(4, 2)
    stranger = Worker(grid)
    r = stranger.post("/v1/leases", {"max_replicas": 10})
    assert r.status_code == 401, r.text
    assert "not registered" in error_of(r)["detail"]
    assert stranger.address in error_of(r)["detail"]
    stranger.register()
    assert stranger.post("/v1/leases", {"max_replicas": 10}).status_code == 201


# -- the default trust policy: a quorum of two owners ------------------------------------


def lease_all(workers: list[Worker], max_replicas: int = 100) -> list[tuple[Worker, dict[str, Any]]]:
    """Each worker in turn asks for work until none is granted any; the leases granted."""
    granted: list[tuple[Worker, dict[str, Any]]] = []
    for _ in range(20):
        got = [(w, w.post("/v1/leases", {"max_replicas": max_replicas})) for w in workers]
        assert all(r.status_code in (201, 204) for _, r in got), [r.text for _, r in got]
        new = [(w, r.json()) for w, r in got if r.status_code == 201]
        if not new:
            return granted
        granted += new
    pytest.fail(f"the coordinator kept handing out replicas: {granted}")


def test_under_the_default_policy_each_task_is_accepted_by_two_owners_agreeing(grid: Grid) -> None:
    job = grid.submit_echo(30, 5, trust=None)  # the coordinator's default trust policy
    assert job["replicas"] == {"ready": 6}  # adaptive: one replica per task at first, more on demand
    assert (job["trust"]["replicas"], job["trust"]["quorum"], job["trust"]["adaptive"]) == (2, 2, True)
    ann, ann_too, bob = Worker(grid, owner="ann").register(), Worker(grid, owner="ann").register(), Worker(
        grid, owner="bob"
    ).register()
    computed_by: dict[int, list[Worker]] = {}
    for _ in range(5):  # the first results ask for a second opinion; then the second opinions come in
        leases = lease_all([ann, ann_too, bob])
        if not leases:
            break
        for w, lease in leases:
            for rep in lease["replicas"]:
                computed_by.setdefault(rep["task_index"], []).append(w)
            r = w.submit(lease["lease_id"], w.batch(lease))
            assert r.status_code == 200, r.text
            assert set(r.json()["results"]) == {"pending"}

    done = grid.wait_until_done(job["id"])
    assert sorted(computed_by) == list(range(6))
    for task, ws in computed_by.items():  # two replicas per task, on two different owners
        assert len(ws) == 2 and len({w.owner for w in ws}) == 2, (task, [w.owner for w in ws])
    assert (done["tasks_done"], done["tasks_inconclusive"]) == (6, 0)
    summary = done["summary"]
    assert (summary["tasks_done"], summary["tasks_inconclusive"], summary["echo_mismatches"]) == (6, 0, 0)
    assert summary["results"] == {"accepted": 6, "valid": 6}
    assert summary["replicas_per_task"] == 2.0  # the price of the quorum
    listed = {w["address"]: w for w in grid.client.get("/v1/workers", headers=grid.headers()).json()}
    assert not any(w["quarantined"] for w in listed.values())
    assert listed[bob.address]["reputation"][0]["valid"] == 6  # bob's half of every pair
    r = grid.client.get(f"/v1/jobs/{job['id']}/output", headers=grid.headers())
    assert pq.read_table(io.BytesIO(r.content)).num_rows == 30


def test_a_worker_outvoted_is_quarantined_and_refused_work_with_403(grid: Grid) -> None:
    job = grid.submit_echo(2, 2, trust={"max_invalid": 1, "gold_rate": 0, "record_run": 0})  # one task
    honest, cheat, tiebreak = (Worker(grid, owner=o).register() for o in ("ann", "carl", "bob"))
    for w, lies in ((honest, False), (cheat, True), (tiebreak, False)):  # one replica each, in turn
        lease = w.lease()
        assert [rep["task_index"] for rep in lease["replicas"]] == [0]
        r = w.submit(lease["lease_id"], w.batch(lease, cheat=lies))
        assert r.status_code == 200, r.text

    done = grid.wait_until_done(job["id"])
    assert done["summary"]["results"] == {"accepted": 1, "valid": 1, "invalid": 1}
    assert done["summary"]["echo_mismatches"] == 0  # the made-up answer is not in the output
    assert done["summary"]["tasks_per_worker"] == {honest.address: 1, tiebreak.address: 1}

    grid.submit_echo(4, 2, trust=None)  # there is work, but not for the cheat
    r = cheat.post("/v1/leases", {"max_replicas": 10})
    assert r.status_code == 403, r.text
    assert error_of(r)["error"] == "Forbidden"
    assert "quarantined" in error_of(r)["detail"]
    listed = {w["address"]: w for w in grid.client.get("/v1/workers", headers=grid.headers()).json()}
    assert listed[cheat.address]["quarantined"] is True
    assert "outvoted" in listed[cheat.address]["quarantine_reason"]
    assert listed[honest.address]["quarantined"] is False
    assert honest.post("/v1/leases", {"max_replicas": 10}).status_code == 201
