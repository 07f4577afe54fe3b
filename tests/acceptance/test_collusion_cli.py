"""Collusion with real worker processes (issue 10): a trusted worker's answers are the root of trust
that catches a colluding pair, and what the pair decided is decided again without it."""

import os
import subprocess
import sys
import time

import pytest

from coopgrid import datasets
from coopgrid.client import ApiClient

pytestmark = pytest.mark.acceptance


def test_a_colluding_pair_is_caught_by_gold_from_a_trusted_worker_and_its_decisions_unwound(grid):
    grid.start_coordinator()
    with ApiClient(grid.url, grid.token) as client:
        grid.start_worker(0, "--batch", "2", "--trusted", "--token", grid.token)  # the operator's own machine
        grid.start_worker(1, "--batch", "2")
        grid.start_worker(2, "--batch", "2")
        grid.start_worker(3, "--batch", "2", "--dishonest", "collude:pair")
        grid.start_worker(4, "--batch", "2", "--dishonest", "collude:pair")
        grid.wait_for_workers(client, 5)
        job = client.submit({
            "task_type": "echo", "task_size": 2, "dataset": client.put_blob(datasets.sequence(400).to_npz()),
            "trust": {"replicas": 2, "quorum": 2, "adaptive": False, "gold_rate": 0.3},
        })
        colluders = {"local-3", "local-4"}
        deadline = time.monotonic() + 300
        while True:  # the pair is caught while the job runs; the job may finish, reopen and finish again
            workers = {w["name"]: w for w in client.workers()}
            job = client.job(job["id"])
            if all(workers[c]["quarantined"] for c in colluders) and job["state"] == "done":
                break
            assert time.monotonic() < deadline, (job["state"], {n: w["quarantined"] for n, w in workers.items()})
            grid.check_workers()
            time.sleep(0.2)
    assert workers["local-0"]["trusted"] and not any(workers[f"local-{i}"]["trusted"] for i in range(1, 5))
    for c in colluders:  # by a rooted gold test, or outvoted by a quorum with a record
        assert workers[c]["quarantine_reason"].startswith(("failed a gold task", "outvoted")), workers[c]
    assert not any(workers[f"local-{i}"]["quarantined"] for i in range(3))
    # every task was decided without them: nothing credited to them, every echo right
    assert job["tasks_done"] == job["tasks"]
    assert not {workers[c]["address"] for c in colluders} & set(job["summary"]["tasks_per_worker"])
    assert job["summary"].get("echo_mismatches", 0) == 0
    # what was sealed before they were caught is reported, with its epoch, and blames only them
    assert {d["worker"] for d in job["disputed"]} <= {workers[c]["address"] for c in colluders}
    assert all(d["epoch"] >= 1 for d in job["disputed"])
    # the collusion signal shows beside each worker
    assert all(0 <= w["suspicion"] <= 1 for w in workers.values())


def test_a_trusted_worker_needs_the_operators_token():
    out = subprocess.run([sys.executable, "-m", "coopgrid", "worker", "--trusted", "--coordinator", "http://127.0.0.1:9"],
                         capture_output=True, text=True, timeout=60,
                         env={k: v for k, v in os.environ.items() if k != "COOPGRID_TOKEN"})
    assert out.returncode != 0
    assert "--trusted needs the operator's token" in out.stdout + out.stderr
