"""Idle workers' long polls: a lease request held until work appears (issue 11, "work starts at once").

On PostgreSQL a job created through one coordinator process wakes the lease
requests held by another, through LISTEN/NOTIFY: here two apps on one
database, with the periodic re-check pushed past the wait, so only the
notification can hand the held request its work.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from coopgrid.app import build
from coopgrid.coordinator.api import create_api
from tests.integration.test_api import (  # noqa: F401 (fixtures)
    NO_REPLICATION, Grid, Worker, coordinator_settings, error_of, grid, make_grid,
)


def hold(worker: Worker, body: dict[str, Any]) -> tuple[threading.Thread, dict[str, Any]]:
    """POST /v1/leases on a thread (it is held); the answer lands in the dict."""
    answer: dict[str, Any] = {}
    t = threading.Thread(target=lambda: answer.update(r=worker.post("/v1/leases", body)), daemon=True)
    t.start()
    return t, answer


def until(what: str, check: Any) -> None:
    deadline = time.monotonic() + 20
    while not check():
        assert time.monotonic() < deadline, what
        time.sleep(0.01)


def test_an_idle_lease_request_is_held_until_a_job_comes_and_gets_its_work(grid: Grid) -> None:
    w = Worker(grid).register()
    assert grid.client.get("/v1/info").json()["long_poll_seconds"] == 30
    thread, answer = hold(w, {"max_replicas": 5, "wait": 25})
    until("the request is held", lambda: grid.app.scheduler.wakeup.waiting == 1)
    job = grid.submit_echo(3, 1)
    thread.join(30)
    r = answer["r"]
    assert r.status_code == 201, r.text
    assert {rep["job"] for rep in r.json()["replicas"]} == {job["id"]} and len(r.json()["replicas"]) == 3


def test_a_held_request_with_nothing_to_do_ends_204_and_waits_are_bounded(grid: Grid) -> None:
    w = Worker(grid).register()
    assert w.post("/v1/leases", {"max_replicas": 5, "wait": 0.2}).status_code == 204
    r = w.post("/v1/leases", {"max_replicas": 5, "wait": 31})
    assert r.status_code == 422 and "wait" in str(error_of(r)["detail"])
    assert w.post("/v1/leases", {"max_replicas": 5, "wait": -1}).status_code == 422


def test_a_coordinator_that_does_not_hold_answers_at_once(make_grid: Any) -> None:
    grid = make_grid(long_poll_seconds=0)
    w = Worker(grid).register()
    assert grid.client.get("/v1/info").json()["long_poll_seconds"] == 0
    thread, answer = hold(w, {"max_replicas": 5, "wait": 30})
    thread.join(20)  # held, it would wait 30 s: the join would end first, with no answer
    assert answer["r"].status_code == 204 and grid.app.scheduler.wakeup.waiting == 0


@pytest.mark.postgres
def test_a_job_posted_to_one_coordinator_wakes_the_workers_waiting_on_another(
    pg_database: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import coopgrid.coordinator.api as api

    monkeypatch.setattr(api, "RECHECK", 60.0)  # no periodic look while held: only a notification wakes it
    url = pg_database()
    first = build(coordinator_settings(tmp_path / "one", database_url=url))
    second = build(coordinator_settings(tmp_path / "two", database_url=url))
    try:
        operator = first.auth.ensure_operator()
        with TestClient(create_api(first)) as c1, TestClient(create_api(second)) as c2:
            one, two = Grid(first, c1, operator), Grid(second, c2, operator)
            assert first.scheduler.wakeup.listening.wait(20)
            w = Worker(one).register()
            thread, answer = hold(w, {"max_replicas": 5, "wait": 25})
            until("the request is held by the first process", lambda: first.scheduler.wakeup.waiting == 1)
            job = two.submit_echo(2, 1, trust=NO_REPLICATION)
            thread.join(30)
            r = answer["r"]
            assert r.status_code == 201, r.text  # 204 after 25 s: the notification never came
            assert {rep["job"] for rep in r.json()["replicas"]} == {job["id"]}
    finally:
        first.close()
        second.close()
