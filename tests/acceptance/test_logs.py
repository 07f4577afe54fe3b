"""The coordinator's log as a log collector reads it: `--log-format json`, one event per line."""

import json

import pytest

from coopgrid import datasets
from coopgrid.client import ApiClient

pytestmark = pytest.mark.acceptance

NO_REPLICATION = {"replicas": 1, "quorum": 1, "adaptive": False, "gold_rate": 0}


def test_the_coordinator_logs_each_event_as_one_json_object_per_line(grid):
    grid.start_coordinator("--ledger", "none", "--log-format", "json")
    with ApiClient(grid.url, grid.token) as client:
        grid.start_worker(0)
        grid.wait_for_workers(client, 1)
        job = client.submit({"task_type": "echo", "task_size": 5, "dataset": client.put_blob(datasets.sequence(20).to_npz()),
                             "trust": NO_REPLICATION})
        client.wait_for(job["id"], lambda j: j["state"] == "done", timeout=120)
    assert grid.stop()["coordinator"] == 0
    lines = [json.loads(line) for line in grid.log("coordinator").splitlines() if line.strip()]  # each one JSON
    events = {entry.get("event"): entry for entry in lines}
    assert events["worker_registered"]["worker_name"] == "local-0"
    assert events["job_submitted"]["job"] == job["id"] and events["job_submitted"]["tasks"] == 4
    assert events["job_finished"]["job"] == job["id"] and events["job_finished"]["tasks_done"] == 4
    assert any("listening on" in entry["message"] for entry in lines)
    assert all({"time", "level", "logger", "message"} <= set(entry) for entry in lines)
