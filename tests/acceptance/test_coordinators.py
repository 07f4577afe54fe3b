"""Two real ``coopgrid coordinator`` processes on one PostgreSQL database, workers failing over between them.

Mid-job one coordinator is SIGKILLed, then PostgreSQL itself is restarted: the job completes, every task
accepted exactly once and counted once, and its output holds every item once. The coordinators share one
data dir (the grid's blobs; ``--ledger none``, so no chain file is shared). Tasks take a little while
(a ``nap`` task type: an echo that sleeps, made known to every process through an entry point on its
PYTHONPATH, as any plugin is) so that the job is still running when each blow lands.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psycopg
import pyarrow.parquet as pq
import pytest
from sqlalchemy import create_engine, text

from coopgrid.client import ApiClient
from coopgrid.datasets import sequence
from coopgrid.local import LocalGrid
from tests.acceptance.test_sealing_faults import deploy_on, open_chain, run_echo_job, stored_epochs
from tests.integration.conftest import PG_HOST, PG_PORT, pg_user
from tests.integration.conftest_ledger import anvil  # noqa: F401 - fixture

pytestmark = [pytest.mark.acceptance, pytest.mark.postgres]

N_TASKS = 600
NAP = f'''"""TEST FACILITY: an echo task that takes 0.06 s."""
import time

from coopgrid.tasks.echo import EchoTask


class NapTask(EchoTask):
    name = "nap"

    def run(self, task_input, model, params):
        time.sleep(0.06)
        return task_input
'''


def nap_site(root: Path) -> dict[str, str]:
    site = root / "site"
    (site / "coopgrid_nap-0.1.dist-info").mkdir(parents=True)
    (site / "coopgrid_nap.py").write_text(NAP)
    (site / "coopgrid_nap-0.1.dist-info" / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: coopgrid-nap\nVersion: 0.1\n")
    (site / "coopgrid_nap-0.1.dist-info" / "entry_points.txt").write_text(
        "[coopgrid.tasks]\nnap = coopgrid_nap:NapTask\n")
    return {"PYTHONPATH": os.pathsep.join([str(site), *filter(None, [os.environ.get("PYTHONPATH")])])}


def restart_postgres() -> None:
    """Restart this machine's PostgreSQL cluster and wait until it takes connections again."""
    if os.geteuid() != 0 or not Path("/etc/postgresql").is_dir():
        pytest.skip("restarting PostgreSQL needs root and a pg_ctlcluster cluster on this machine")
    (version,) = os.listdir("/etc/postgresql")
    subprocess.run(["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", "restart"],
                   check=True, capture_output=True, timeout=120)
    deadline = time.monotonic() + 60
    while True:
        try:
            with psycopg.connect(host=PG_HOST, port=PG_PORT, user=pg_user(), dbname="postgres", connect_timeout=2):
                return
        except psycopg.OperationalError:
            assert time.monotonic() < deadline, "PostgreSQL did not come back within 60 s"
            time.sleep(0.2)


@pytest.mark.serial  # restarts the PostgreSQL server every other test uses
def test_a_job_survives_a_killed_coordinator_and_a_database_restart(pg_database, tmp_path) -> None:
    url = pg_database()
    # duties change hands 3 s after their holder dies (10 s by default): within the job
    env = nap_site(tmp_path) | {"COOPGRID_DUTY_TTL": "3"}
    shared = tmp_path / "grid"
    flags = ("--database-url", url, "--ledger", "none", "--lease-seconds", "5")
    first, second = (LocalGrid(shared, log_dir=tmp_path / f"logs-{n}") for n in ("a", "b"))
    workers = LocalGrid(shared, log_dir=tmp_path / "logs-workers")
    try:
        first.start_coordinator(*flags, env=env)
        second.start_coordinator(*flags, env=env)
        token = first.token
        assert token
        for i, order in enumerate([(first, second), (second, first), (first, second)]):
            workers.url = ",".join(g.url for g in order)  # workers spread over both, each knowing both
            workers.start_worker(i, "--batch", "4", env=env)
        with ApiClient(second.url, token) as client:
            job = client.submit({
                "task_type": "nap", "dataset": client.put_blob(sequence(N_TASKS).to_npz()), "task_size": 1,
                "trust": {"replicas": 1, "quorum": 1, "adaptive": False, "gold_rate": 0},
            })
            client.wait_for(job["id"], lambda j: j["tasks_done"] >= N_TASKS // 5, timeout=120, poll=0.05)
            first.kill_coordinator()
            at_kill = client.job(job["id"])["tasks_done"]
            assert at_kill < N_TASKS, "the job finished before the coordinator could be killed mid-job"
            _wait_for_line(second, "now leads the reaper duty")  # the periodic duties moved to the survivor

            client.wait_for(job["id"], lambda j: j["tasks_done"] >= at_kill + N_TASKS // 5, timeout=120, poll=0.05)
            restart_postgres()
            at_restart = _tasks_done(url)
            assert at_restart < N_TASKS, "the job finished before PostgreSQL could be restarted mid-job"

            done = client.wait_for(job["id"], lambda j: j["state"] == "done", timeout=180, poll=0.1)
            out = client.output(job["id"], tmp_path / "out.parquet")
        assert (done["tasks_done"], done["tasks_failed"]) == (N_TASKS, 0)
        assert _accepted_per_task(url) == [1] * N_TASKS  # nothing lost, nothing accepted twice
        items = sorted(r["item_id"] for r in pq.read_table(out).to_pylist())
        assert items == sorted(f"item-{i}" for i in range(N_TASKS))
        assert all(w.poll() is None for w in workers.workers), "a worker died"  # they failed over instead
    finally:
        workers.stop(timeout=15)
        second.stop(timeout=15)
        first.stop(timeout=15)


def test_coopgrid_sealer_seals_on_its_own_beside_a_coordinator_without_a_ledger(
    pg_database, anvil, tmp_path  # noqa: F811
) -> None:
    url = pg_database()
    grid = LocalGrid(tmp_path / "grid")
    grid.data_dir.chmod(0o700)
    contract = deploy_on(grid, anvil)  # the grid's coordinator key owns it
    log = open(tmp_path / "sealer.log", "wb")
    sealer = subprocess.Popen(
        [sys.executable, "-m", "coopgrid", "sealer", "--database-url", url, "--data-dir", str(grid.data_dir),
         "--rpc-url", anvil.url, "--contract", contract, "--seal-every-results", "4", "--seal-every-seconds", "1"],
        stdout=log, stderr=subprocess.STDOUT,
    )
    try:
        grid.start_coordinator("--database-url", url, "--ledger", "none")
        job = run_echo_job(grid, items=12, task_size=1)
        assert job["tasks_done"] == 12
        deadline = time.monotonic() + 60
        while True:
            epochs = stored_epochs(url)
            if sum(e["result_count"] for e in epochs if e["state"] == "committed") == 12:
                break
            assert time.monotonic() < deadline and sealer.poll() is None, (tmp_path / "sealer.log").read_text()
            time.sleep(0.2)
        assert [e["number"] for e in epochs] == list(range(1, len(epochs) + 1))
        assert all(e["state"] == "committed" for e in epochs)
        ledger = open_chain(grid, "rpc", contract, anvil.url)
        try:
            assert ledger.last_epoch() == len(epochs)  # the chain has exactly what the store says
        finally:
            ledger.close()
        sealer.send_signal(signal.SIGTERM)
        assert sealer.wait(timeout=30) == 0
    finally:
        if sealer.poll() is None:
            sealer.kill()
            sealer.wait()
        log.close()
        grid.stop(timeout=15)


def _wait_for_line(grid: LocalGrid, line: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while line not in " ".join(grid.log("coordinator").split()):  # the console wraps long lines
        assert time.monotonic() < deadline, f"{line!r} never logged: {grid.log('coordinator')}"
        time.sleep(0.1)


def _query(url: str, sql: str) -> list[tuple]:
    engine = create_engine(url)
    try:
        with engine.connect() as db:
            return [tuple(r) for r in db.execute(text(sql))]
    finally:
        engine.dispose()


def _tasks_done(url: str) -> int:
    return _query(url, "SELECT tasks_done FROM jobs")[0][0]


def _accepted_per_task(url: str) -> list[int]:
    return [n for (n,) in _query(
        url, "SELECT count(r.id) FROM tasks t LEFT JOIN results r ON r.task_id = t.id AND r.status = 'accepted' "
             "GROUP BY t.idx ORDER BY t.idx")]


def test_coopgrid_sealer_refuses_a_store_only_one_process_may_use(tmp_path) -> None:
    run = subprocess.run(
        [sys.executable, "-m", "coopgrid", "sealer", "--database-url", f"sqlite:///{tmp_path / 'db.sqlite'}",
         "--data-dir", str(tmp_path)], capture_output=True, text=True, timeout=60,
    )
    assert run.returncode != 0
    message = " ".join((run.stdout + run.stderr).split())
    assert "PostgreSQL" in message and "with SQLite the coordinator seals by itself" in message
