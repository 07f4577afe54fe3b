"""Labelled items a submitter supplies (``coopgrid submit --gold FILE``), through the real HTTP API.

The items become gold tasks of the job: a worker failing one is quarantined as on failing gold
from a trusted worker, one passing them is not, and the job as its submitter sees it (its task
count, its output) is exactly what it would be without them. Both stores (the ``store_url``
fixture), real signed worker requests (tests/integration/test_api.py's harness).
"""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import Any

import pyarrow.parquet as pq
from sqlalchemy import select

from coopgrid.datasets import sequence
from coopgrid.store import schema as s
from tests.integration.test_api import Grid, Worker, error_of, grid, make_grid  # noqa: F401 (fixtures)

#: a quorum of one (the cheater's answers count until it is caught) and every draw a gold test
POLICY = {"replicas": 1, "quorum": 1, "adaptive": False, "gold_rate": 1.0}
#: echo's labelled items: an item is a row of the dataset, its answer the row itself
GOLD = [{"input": [1000 + i], "output": [1000 + i], "line": 1 + i} for i in range(5)]


def submit(grid: Grid, n: int, gold: list[dict[str, Any]] | None, trust: dict[str, Any] = POLICY) -> Any:
    dataset = grid.upload(sequence(n).to_npz())
    spec = {"task_type": "echo", "dataset": dataset, "task_size": 1, "trust": trust}
    if gold is not None:
        spec["gold"] = gold
    return grid.client.post("/v1/jobs", json=spec, headers=grid.headers())


def work(w: Worker, max_replicas: int, cheat: bool = False) -> tuple[dict[str, Any], Any]:
    lease = w.lease(max_replicas)
    return lease, w.submit(lease["lease_id"], w.batch(lease, cheat=cheat))


def gold_inputs(grid: Grid, lease: dict[str, Any]) -> list[int]:
    """Which of a lease's replicas are the submitter's gold items (by their task's idx)."""
    ids = [r["id"] for r in lease["replicas"]]
    with grid.app.store.engine.connect() as conn:
        return list(conn.execute(
            select(s.tasks.c.idx).join(s.replicas, s.replicas.c.task_id == s.tasks.c.id)
            .where(s.replicas.c.id.in_(ids), s.tasks.c.state == "gold")
        ).scalars())


def test_a_worker_failing_the_submitters_gold_is_quarantined_and_the_job_is_as_if_it_had_none(grid: Grid) -> None:
    r = submit(grid, 20, GOLD)
    assert r.status_code == 201, r.text
    job = r.json()
    assert (job["tasks"], job["items"]) == (20, 20)  # the labelled items are not the job's tasks

    cheater, honest = Worker(grid, owner="mallory").register(), Worker(grid, owner="ann").register()
    lease, r = work(cheater, 5, cheat=True)
    assert r.status_code == 200, r.text
    assert len(lease["replicas"]) == 10 and sorted(gold_inputs(grid, lease)) == [20, 21, 22, 23, 24]
    listed = {w["address"]: w for w in grid.client.get("/v1/workers", headers=grid.headers()).json()}
    assert listed[cheater.address]["quarantined"] is True
    assert "gold" in listed[cheater.address]["quarantine_reason"]
    assert cheater.post("/v1/leases", {"max_replicas": 10}).status_code == 403

    while True:  # the honest worker does the rest, its own gold tests included, and the cheater's again
        got = honest.post("/v1/leases", {"max_replicas": 50})
        if got.status_code == 204:
            break
        lease = got.json()
        r = honest.submit(lease["lease_id"], honest.batch(lease))
        assert r.status_code == 200, r.text
    listed = {w["address"]: w for w in grid.client.get("/v1/workers", headers=grid.headers()).json()}
    assert listed[honest.address]["quarantined"] is False
    assert listed[honest.address]["reputation"][0]["gold_passed"] == 5

    done = grid.wait_until_done(job["id"])
    assert (done["tasks"], done["tasks_done"], done["summary"]["echo_mismatches"]) == (20, 20, 0)
    with_gold = pq.read_table(io.BytesIO(grid.client.get(f"/v1/jobs/{job['id']}/output",
                                                         headers=grid.headers()).content))

    # the same job without labelled items, done by the same honest worker: the same output
    plain = submit(grid, 20, None, {"replicas": 1, "quorum": 1, "adaptive": False, "gold_rate": 0}).json()
    while (got := honest.post("/v1/leases", {"max_replicas": 50})).status_code == 201:
        assert honest.submit(got.json()["lease_id"], honest.batch(got.json())).status_code == 200
    grid.wait_until_done(plain["id"])
    without = pq.read_table(io.BytesIO(grid.client.get(f"/v1/jobs/{plain['id']}/output",
                                                       headers=grid.headers()).content))
    columns = ["item_id", "value", "task_index"]
    assert with_gold.select(columns).to_pylist() == without.select(columns).to_pylist()
    assert with_gold.num_rows == 20


def test_a_worker_passing_the_submitters_gold_is_not_quarantined(grid: Grid) -> None:
    job = submit(grid, 10, GOLD).json()
    honest = Worker(grid, owner="ann").register()
    lease, r = work(honest, 5)
    assert r.status_code == 200, r.text
    assert len(gold_inputs(grid, lease)) == 5
    assert sorted(r.json()["results"]) == ["accepted", "pending"]  # the gold ones wait for validation
    listed = {w["address"]: w for w in grid.client.get("/v1/workers", headers=grid.headers()).json()}
    assert listed[honest.address]["quarantined"] is False
    rep = listed[honest.address]["reputation"][0]
    assert (rep["gold_passed"], rep["gold_failed"]) == (5, 0)
    assert grid.job(job["id"])["tasks_done"] == 5


def test_a_labelled_item_the_job_cannot_use_is_422_naming_its_line(grid: Grid) -> None:
    bad = GOLD[:2] + [{"input": [1, 2], "output": [1, 2], "line": 7}]
    r = submit(grid, 10, bad)
    assert r.status_code == 422, r.text
    detail = error_of(r)["detail"]
    assert "line 7" in detail and "shape [2]" in detail and "shape [1]" in detail
    r = submit(grid, 10, [{"input": [1], "output": [2.5], "line": 3}])
    assert r.status_code == 422 and "line 3" in error_of(r)["detail"]
    # gold items are gold tests only: a job that draws none is told so
    r = submit(grid, 10, GOLD, {"replicas": 1, "quorum": 1, "adaptive": False, "gold_rate": 0})
    assert r.status_code == 422 and "gold rate" in error_of(r)["detail"]
    assert grid.client.get("/v1/jobs", headers=grid.headers()).json() == []  # nothing was created
