"""Trust with real worker processes: cheaters caught, dead workers survived, doubt reported."""

import signal

import numpy as np
import onnxruntime as ort
import pyarrow.parquet as pq
import pytest

from coopgrid import datasets
from coopgrid.client import ApiClient
from coopgrid.protocol import sha256_hex

pytestmark = pytest.mark.acceptance




def test_a_random_output_worker_is_quarantined_and_no_wrong_label_is_in_the_output(grid, digits_onnx):
    grid.start_coordinator()
    data = datasets.digits(3000)
    with ApiClient(grid.url, grid.token) as client:
        model = client.publish_model(digits_onnx.onnx, digits_onnx.spec(sha256_hex(digits_onnx.onnx)))
        # one of the honest workers is the operator's own (--trusted): among fresh keys only, being
        # outvoted is no evidence (they could be Sybils), so someone with a record must take part
        grid.start_worker(0, "--batch", "2", "--trusted", "--token", grid.token)
        for i in range(1, 3):
            grid.start_worker(i, "--batch", "2")
        grid.start_worker(3, "--batch", "2", "--dishonest", "random")
        grid.wait_for_workers(client, 4)
        job = client.submit({"task_type": "classify", "model": model["hash"], "dataset": client.put_blob(data.to_npz()),
                             "task_size": 50})
        job = client.wait_for(job["id"], lambda j: j["state"] == "done", timeout=180)
        output = client.call("GET", f"/v1/jobs/{job['id']}/output").content
        workers = {w["name"]: w for w in client.workers()}
    cheater = workers["local-3"]
    assert cheater["quarantined"], cheater
    assert all(not workers[f"local-{i}"]["quarantined"] for i in range(3))
    assert cheater["address"] not in job["summary"]["tasks_per_worker"]  # nothing credited to it

    sess = ort.InferenceSession(digits_onnx.onnx, providers=["CPUExecutionProvider"])
    honest = sess.run(None, {sess.get_inputs()[0].name: data.x.astype(np.float32)})[0]
    (grid.data_dir / "out.parquet").write_bytes(output)
    table = pq.read_table(grid.data_dir / "out.parquet").to_pydict()
    by_id = dict(zip(table["item_id"], table["label"]))
    assert len(by_id) == len(data)
    wrong = [i for i, item in enumerate(data.item_ids()) if by_id[item] != honest[i]]
    assert wrong == []  # every label is the model's own answer
    assert cheater["address"] not in set(table["worker"])


def test_a_replicated_job_completes_when_a_worker_dies_mid_job(grid, digits_onnx):
    grid.start_coordinator("--lease-seconds", "3")
    with ApiClient(grid.url, grid.token) as client:
        model = client.publish_model(digits_onnx.onnx, digits_onnx.spec(sha256_hex(digits_onnx.onnx)))
        procs = [grid.start_worker(i, "--batch", "2") for i in range(3)]
        grid.wait_for_workers(client, 3)
        job = client.submit({
            "task_type": "classify", "model": model["hash"], "task_size": 50,
            "dataset": client.put_blob(datasets.digits(4000).to_npz()),
            "trust": {"replicas": 2, "quorum": 2, "adaptive": False},
        })
        client.wait_for(job["id"], lambda j: j["tasks_done"] >= 10)
        procs[0].send_signal(signal.SIGKILL)
        procs[0].wait()
        job = client.wait_for(job["id"], lambda j: j["state"] == "done", timeout=180)
    assert job["tasks_done"] == job["tasks"] and job["tasks_inconclusive"] == 0
    assert job["summary"]["replicas_per_task"] >= 2.0  # every task had its quorum of two


def test_an_inconclusive_task_is_reported_not_dropped(grid):
    grid.start_coordinator()
    with ApiClient(grid.url, grid.token) as client:
        grid.start_worker(0, "--dishonest", "random")
        grid.start_worker(1, "--dishonest", "random")
        grid.wait_for_workers(client, 2)
        job = client.submit({
            "task_type": "echo", "task_size": 5, "dataset": client.put_blob(datasets.sequence(20).to_npz()),
            "trust": {"replicas": 2, "quorum": 2, "max_replicas": 2, "adaptive": False, "gold_rate": 0},
        })
        job = client.wait_for(job["id"], lambda j: j["state"] != "running", timeout=180)
        status = client.job(job["id"])
    # not one task accepted: the job failed, it is not "done"
    assert status["state"] == "failed" and status["tasks_inconclusive"] == 4 and status["tasks_done"] == 0
    assert status["summary"]["tasks_inconclusive"] == 4
