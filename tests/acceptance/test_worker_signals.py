"""A real ``coopgrid worker`` process stopped by SIGINT or SIGTERM while it holds a lease.

The README promises: "Workers stop on SIGINT/SIGTERM: they lease nothing
more, finish or release what they hold, submit, and exit 0." To catch a worker
mid-lease, its tasks must take a while: a test-only task type ``sleepy`` (an
echo that sleeps), made known to the coordinator and worker processes the way
any plugin is, through an entry point of a distribution on their PYTHONPATH
(written by hand here, no build needed). Leases last ten minutes, so anything
back in the ready queue right after the worker exits was released by it, not
reaped after expiry.
"""

from __future__ import annotations

import os
import signal
import sqlite3
from pathlib import Path

import pytest

from coopgrid.client import ApiClient
from coopgrid.datasets import sequence

pytestmark = pytest.mark.acceptance

SECONDS_PER_TASK = 1.5
SLEEPY = f'''"""TEST FACILITY: an echo task that takes {SECONDS_PER_TASK} s per task."""
import time

from coopgrid.tasks.echo import EchoTask


class SleepyTask(EchoTask):
    name = "sleepy"

    def run(self, task_input, model, params):
        time.sleep({SECONDS_PER_TASK})
        return task_input
'''


def sleepy_site(root: Path) -> Path:
    """A directory that, on PYTHONPATH, holds the ``sleepy`` task type and its entry point."""
    site = root / "site"
    (site / "coopgrid_sleepy-0.1.dist-info").mkdir(parents=True)
    (site / "coopgrid_sleepy.py").write_text(SLEEPY)
    (site / "coopgrid_sleepy-0.1.dist-info" / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: coopgrid-sleepy\nVersion: 0.1\n"
    )
    (site / "coopgrid_sleepy-0.1.dist-info" / "entry_points.txt").write_text(
        "[coopgrid.tasks]\nsleepy = coopgrid_sleepy:SleepyTask\n"
    )
    return site


def process_env(site: Path) -> dict[str, str]:
    """The PYTHONPATH of the grid's processes only: this test process's environment is untouched."""
    return {"PYTHONPATH": os.pathsep.join([str(site), *filter(None, [os.environ.get("PYTHONPATH")])])}


def leases_of(grid) -> list[tuple[int, str]]:
    with sqlite3.connect(f"file:{grid.data_dir / 'coopgrid.sqlite'}?mode=ro", uri=True) as db:
        return db.execute("SELECT id, state FROM leases ORDER BY id").fetchall()


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_worker_signalled_while_holding_a_lease_submits_or_releases_it_and_exits_0(grid, tmp_path, signum):
    env = process_env(sleepy_site(tmp_path))
    grid.start_coordinator("--lease-seconds", "600", env=env)
    with ApiClient(grid.url, grid.token) as client:
        job = client.submit({
            "task_type": "sleepy", "dataset": client.put_blob(sequence(10).to_npz()), "task_size": 1,
            "trust": {"replicas": 1, "quorum": 1, "adaptive": False, "gold_rate": 0},
        })
        worker = grid.start_worker(0, "--batch", "4", env=env)
        # a batch of four in hand, the first task running: the moment to stop it
        held = client.wait_for(job["id"], lambda j: j["replicas"].get("leased", 0) == 4, timeout=120, poll=0.05)
        assert held["replicas"].get("done", 0) == 0
        worker.send_signal(signum)
        code = worker.wait(timeout=60)  # generous: it finishes one task of 1.5 s, then submits
        assert code == 0, grid.log("worker-0")

        after = client.job(job["id"])
        replicas = after["replicas"]
        # nothing is held any more, long before the leases could expire
        assert replicas.get("leased", 0) == 0, replicas
        # what it held is done (finished in hand and submitted) or back in the ready queue (released)
        assert 1 <= replicas.get("done", 0) < 4, replicas
        assert replicas.get("done", 0) + replicas.get("ready", 0) == 10, replicas
        assert after["tasks_done"] == replicas["done"]
        assert after["replicas"].get("expired", 0) == 0
    # it leased nothing after the signal: one lease in all, closed by its last submission
    assert leases_of(grid) == [(leases_of(grid)[0][0], "closed")]
    log = " ".join(grid.log("worker-0").split())  # the console wraps long lines
    assert f"{signal.Signals(signum).name}, finishing the batch in hand" in log
    assert f"stopped: {replicas['done']} replicas in 1 leases, 0 errors, {4 - replicas['done']} released" in log
    assert "Traceback" not in log

    # the released tasks are not lost: another worker finishes the job
    grid.start_worker(1, "--batch", "4", env=env)
    with ApiClient(grid.url, grid.token) as client:
        done = client.wait_for(job["id"], lambda j: j["state"] == "done", timeout=120)
    assert done["tasks_done"] == 10 and done["tasks_failed"] == 0
