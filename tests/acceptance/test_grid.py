"""The grid as a user runs it: real coordinator and worker processes through the CLI."""

import os
import signal
import subprocess
import sys

import pyarrow.parquet as pq
import pytest
from sqlalchemy import create_engine, text

from coopgrid import datasets
from coopgrid.client import ApiClient
from coopgrid.protocol import sha256_hex

pytestmark = pytest.mark.acceptance



def publish(client, model):
    return client.publish_model(model.onnx, model.spec(sha256_hex(model.onnx)))


# these tests are about leases, crashes and integrity, not about trust: one result per task
NO_REPLICATION = {"replicas": 1, "quorum": 1, "adaptive": False, "gold_rate": 0}


def submit(client, data, model_hash, task_size, task_type="classify"):
    return client.submit(
        {"task_type": task_type, "model": model_hash, "dataset": client.put_blob(data.to_npz()),
         "task_size": task_size, "trust": NO_REPLICATION}
    )



def accepted_rows(database_url):
    engine = create_engine(database_url)
    try:
        with engine.connect() as db:
            rows = db.execute(text("SELECT id, task_id FROM results WHERE status = 'accepted' ORDER BY id")).all()
            return [tuple(r) for r in rows]
    finally:
        engine.dispose()


def test_submit_through_the_cli_labels_every_item_exactly_once(coordinator_db, grid, digits_onnx, tmp_path):
    grid.start_coordinator(*coordinator_db.args)
    with ApiClient(grid.url, grid.token) as client:
        model = publish(client, digits_onnx)
    grid.start_worker(0, "--batch", "3")
    grid.start_worker(1, "--batch", "3")
    out = tmp_path / "labels.parquet"
    env = {**os.environ, "COOPGRID_COORDINATOR": grid.url, "COOPGRID_TOKEN": grid.token}
    run = subprocess.run(
        [sys.executable, "-m", "coopgrid", "submit", "--dataset", "digits:5000", "--model", "digits",
         "--task-size", "250", "--output", str(out)],
        env=env, capture_output=True, text=True, timeout=180,
    )
    assert run.returncode == 0, run.stderr
    assert "accuracy" in run.stdout and "done" in run.stdout
    table = pq.read_table(out).to_pydict()
    expected = datasets.digits(5000)
    assert sorted(table["item_id"]) == sorted(expected.item_ids())  # each item once, none missing
    by_id = dict(zip(table["item_id"], table["label"]))
    truth = dict(zip(expected.item_ids(), expected.y.tolist()))
    assert sum(by_id[i] == truth[i] for i in truth) / len(truth) > 0.9
    with ApiClient(grid.url, grid.token) as client:
        assert set(table["worker"]) <= {w["address"] for w in client.workers()}
    assert model["hash"] == sha256_hex(digits_onnx.onnx)
    codes = grid.stop()
    assert codes == {"worker-0": 0, "worker-1": 0, "coordinator": 0}, codes


def test_a_killed_worker_s_tasks_are_reissued_and_the_job_completes(grid, digits_onnx):
    grid.start_coordinator("--lease-seconds", "2")
    with ApiClient(grid.url, grid.token) as client:
        model = publish(client, digits_onnx)
        doomed = grid.start_worker(0, "--batch", "4")
        job = submit(client, datasets.digits(6000), model["hash"], 50)
        client.wait_for(job["id"], lambda j: j["tasks_done"] >= 4)
        doomed.send_signal(signal.SIGKILL)
        doomed.wait()
        grid.start_worker(1, "--batch", "4")
        job = client.wait_for(job["id"], lambda j: j["state"] == "done", timeout=180)
        assert job["tasks_done"] == job["tasks"] and job["tasks_failed"] == 0
        assert job["replicas"]["expired"] >= 1  # the killed worker's lease ran out and was reissued
        assert job["summary"]["replicas_expired"] == job["replicas"]["expired"]
        output = client.call("GET", f"/v1/jobs/{job['id']}/output").content
    (grid.data_dir / "out.parquet").write_bytes(output)
    ids = pq.read_table(grid.data_dir / "out.parquet").column("item_id").to_pylist()
    assert len(ids) == len(set(ids)) == 6000


def test_a_coordinator_killed_mid_job_restarts_and_loses_nothing(coordinator_db, grid, digits_onnx):
    url = grid.start_coordinator(*coordinator_db.args, "--lease-seconds", "3")
    port = int(url.rsplit(":", 1)[1])
    with ApiClient(url, grid.token) as client:
        model = publish(client, digits_onnx)
        grid.start_worker(0, "--batch", "2")
        grid.start_worker(1, "--batch", "2")
        job = submit(client, datasets.digits(8000), model["hash"], 40)
        client.wait_for(job["id"], lambda j: 10 <= j["tasks_done"])
    grid.kill_coordinator()
    before = accepted_rows(coordinator_db.url)
    assert 0 < len(before) < job["tasks"]

    grid.start_coordinator(*coordinator_db.args, "--lease-seconds", "3", port=port)  # workers keep retrying the same address
    with ApiClient(grid.url, grid.token) as client:
        job = client.wait_for(job["id"], lambda j: j["state"] == "done", timeout=180)
        output = client.call("GET", f"/v1/jobs/{job['id']}/output").content
    after = accepted_rows(coordinator_db.url)
    assert set(before) <= set(after)  # every result accepted before the crash is still there
    assert len(after) == len({task for _, task in after}) == job["tasks"]  # each task counted once
    (grid.data_dir / "out.parquet").write_bytes(output)
    ids = pq.read_table(grid.data_dir / "out.parquet").column("item_id").to_pylist()
    assert sorted(ids) == sorted(datasets.digits(8000).item_ids())


def test_a_worker_refuses_model_bytes_that_do_not_match_their_hash(grid, digits_onnx):
    grid.start_coordinator()
    with ApiClient(grid.url, grid.token) as client:
        model = publish(client, digits_onnx)
        # the coordinator's copy is tampered with: it now serves other bytes under the model's hash
        blob = grid.data_dir / "blobs" / model["hash"][:2] / model["hash"]
        blob.write_bytes(digits_onnx.onnx[:-10] + b"0123456789")
        grid.start_worker(0, "--batch", "1")
        job = submit(client, datasets.digits(100), model["hash"], 50)
        job = client.wait_for(job["id"], lambda j: j["state"] != "running", timeout=180)
    assert job["tasks_failed"] == job["tasks"] and job["tasks_done"] == 0  # nothing computed with bad bytes
    assert job["state"] == "failed" and "refused model" in job["summary"]["failure_reasons"][0]["reason"]
    grid.stop()
    log = grid.log("worker-0")
    assert f"refused model {model['hash']}" in log
    assert not list((grid.data_dir / "workers" / "0" / "cache").glob("*.model"))


def test_a_lease_whose_results_are_over_the_body_limit_is_submitted_in_several_signed_batches(grid):
    # the coordinator's limit for one result batch, in its process only
    grid.start_coordinator("--ledger", "none", env={"COOPGRID_MAX_RESULTS_BYTES": "4096"})
    grid.start_worker(0, "--batch", "200")
    with ApiClient(grid.url, grid.token) as client:
        job = client.submit({"task_type": "echo", "dataset": client.put_blob(datasets.sequence(300).to_npz()),
                             "task_size": 1, "trust": NO_REPLICATION})
        done = client.wait_for(job["id"], lambda j: j["state"] != "running", timeout=120)
    assert done["state"] == "done" and done["tasks_done"] == 300
    assert len(accepted_rows(f"sqlite:///{grid.data_dir / 'coopgrid.sqlite'}")) == 300  # every task once
    assert "results refused" not in (grid.log_dir / "worker-0.log").read_text()
