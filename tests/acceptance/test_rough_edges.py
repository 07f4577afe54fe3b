"""What a new user hits first (issue 12), through the CLI against real coordinator and worker processes."""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from coopgrid import datasets
from coopgrid.client import ApiClient
from coopgrid.local import KEY_PASSWORD
from coopgrid.platforms import describe, platform_class
from coopgrid.protocol import sha256_hex

pytestmark = pytest.mark.acceptance

NO_REPLICATION = ["--replicas", "1", "--quorum", "1", "--no-adaptive", "--gold-rate", "0"]


def cli(*args, env=None, timeout=120, **kw):
    return subprocess.run([sys.executable, "-m", "coopgrid", *args], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})}, **kw)


def user_env(grid, token=None):
    return {"COOPGRID_COORDINATOR": grid.url, "COOPGRID_TOKEN": token or grid.token}


def clean(run):
    """A user-facing failure: a message on stderr, never a traceback."""
    assert "Traceback" not in run.stderr + run.stdout, run.stderr
    return run.stderr


# -- 1. messages instead of tracebacks -------------------------------------------------------------


def test_a_port_in_use_is_reported_before_any_token_is_printed(tmp_path):
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    port = busy.getsockname()[1]
    try:
        run = cli("coordinator", "--data-dir", str(tmp_path / "d"), "--port", str(port), "--ledger", "none")
    finally:
        busy.close()
    assert run.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port}" in clean(run) and "--port" in run.stderr
    assert "operator token" not in run.stdout  # no token shown and then lost


def test_a_data_dir_that_is_a_file_is_a_message(tmp_path):
    f = tmp_path / "not-a-dir"
    f.write_text("x")
    run = cli("coordinator", "--data-dir", str(f), "--port", "0", "--ledger", "none")
    assert run.returncode == 1 and "is a file, not a directory" in clean(run)


def test_output_paths_are_checked_before_the_job_runs(grid, tmp_path):
    grid.start_coordinator("--ledger", "none")
    env = user_env(grid)
    for bad, says in [(tmp_path / "missing" / "out.parquet", "does not exist"), (tmp_path, "is a directory")]:
        run = cli("submit", "--dataset", "sequence:10", "--task-type", "echo", "--output", str(bad), env=env)
        assert run.returncode == 1 and says in clean(run)
    with ApiClient(grid.url, grid.token) as client:
        assert client.jobs() == []  # refused before submitting anything


def test_a_url_without_scheme_and_a_missing_dataset_file_say_what_is_wrong(tmp_path):
    run = cli("status", "-c", "localhost:8750", "--token", "x")
    assert run.returncode == 1 and "has no scheme: write http://localhost:8750" in clean(run)
    run = cli("submit", "--dataset", str(tmp_path / "data[v2].npz"), "--task-type", "echo",
              "-c", "http://127.0.0.1:9", "--token", "x")
    # 7: the brackets survive Rich
    assert run.returncode == 1 and "no such file or directory" in clean(run) and "data[v2].npz" in run.stderr


def test_help_keeps_square_brackets():
    run = cli("train", "embed", "--help")
    assert "coopgrid[torch-export]" in run.stdout.replace("\n", "")


def test_version():
    from coopgrid import __version__

    run = cli("--version")
    assert run.returncode == 0 and run.stdout.strip() == f"coopgrid {__version__}"


# -- 2. a job whose tasks all fail ---------------------------------------------------------------------


def _ocr_items(tmp_path):
    from coopgrid.task_demos import render_text

    d = tmp_path / "pages"
    d.mkdir()
    for i in range(3):
        (d / f"p{i}.png").write_bytes(render_text(f"line {i}"))
    return d


def test_a_job_whose_tasks_all_fail_is_failed_with_its_reasons_and_a_non_zero_exit(grid, tmp_path):
    grid.start_coordinator("--ledger", "none")
    grid.start_worker(0, "--batch", "1")
    run = cli("submit", "--dataset", str(_ocr_items(tmp_path)), "--task-type", "ocr", "--param", "lang=zzz",
              "--task-size", "1", *NO_REPLICATION, env=user_env(grid), timeout=180)
    assert run.returncode == 2, run.stdout + run.stderr
    out = run.stdout.replace("\n", " ")
    assert "failed because" in out and "'zzz' is not installed" in out  # the worker's reason, not only in its log
    assert "3 of 3 tasks failed" in clean(run)
    with ApiClient(grid.url, grid.token) as client:
        (job,) = client.jobs()
    assert job["state"] == "failed"
    assert "not installed" in job["summary"]["failure_reasons"][0]["reason"]
    status = cli("status", job["id"][:8], env=user_env(grid))  # 5: a prefix
    assert status.returncode == 2 and "failed because" in status.stdout


def test_an_input_of_the_wrong_shape_is_refused_at_submission(grid, digits_onnx, tmp_path):
    import numpy as np

    grid.start_coordinator("--ledger", "none")
    model = tmp_path / "digits.onnx"
    model.write_bytes(digits_onnx.onnx)
    run = cli("models", "publish", str(model), "--task-type", "classify", "--name", "mine",
              "--input", '{"shape": [64], "image_size": [8, 8], "value_max": 16.0}', env=user_env(grid))
    assert run.returncode == 0 and f"sha256 {sha256_hex(digits_onnx.onnx)}" in run.stdout  # 8: publish
    wrong = tmp_path / "wrong.npz"
    wrong.write_bytes(datasets.Dataset(np.zeros((10, 7, 7), dtype=np.float32)).to_npz())
    run = cli("submit", "--dataset", str(wrong), "--model", sha256_hex(digits_onnx.onnx)[:10], env=user_env(grid))
    assert run.returncode == 1
    assert "shape [7, 7] (49 values), but the model takes input.shape [64]" in clean(run).replace("\n", " ")


# -- 4, 5, 6: waiting, prefixes, Ctrl-C --------------------------------------------------------------------


def test_submit_without_workers_says_so_and_ctrl_c_says_the_job_keeps_running(grid):
    grid.start_coordinator("--ledger", "none")
    proc = subprocess.Popen(
        [sys.executable, "-m", "coopgrid", "submit", "--dataset", "sequence:10", "--task-type", "echo"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, **user_env(grid)},
    )
    lines = []
    for line in proc.stdout:  # blocks until the note comes (the test's own timeout bounds it)
        lines.append(line)
        if "no worker has taken work" in line:
            break
    proc.send_signal(signal.SIGINT)
    rest, err = proc.communicate(timeout=30)
    assert proc.returncode == 130
    job_id = lines[0].split()[1].rstrip(":")
    assert len(job_id) == 64  # shown whole, ready to paste
    assert "keeps running" in err and f"coopgrid cancel {job_id}" in err.replace("\n", "")
    with ApiClient(grid.url, grid.token) as client:
        assert client.job(job_id)["state"] == "running"
    run = cli("cancel", job_id[:6], env=user_env(grid))
    assert run.returncode == 0 and f"job {job_id} cancelled" in run.stdout.replace("\n", "")


def test_an_ambiguous_or_unknown_prefix_is_a_message(grid):
    grid.start_coordinator("--ledger", "none")
    env = user_env(grid)
    with ApiClient(grid.url, grid.token) as client:
        digest = client.put_blob(datasets.sequence(4).to_npz())
        ids = [client.submit({"task_type": "echo", "dataset": digest})["id"] for _ in range(40)]
    first = {}
    for i in ids:
        first.setdefault(i[0], []).append(i)
    shared = next(v for v in first.values() if len(v) > 1)
    prefix = os.path.commonprefix(shared)
    run = cli("status", prefix + "0" * (4 - len(prefix)) if len(prefix) < 4 else prefix, env=env)
    assert run.returncode == 1 and ("ambiguous" in clean(run) or "no job starts with" in run.stderr)
    run = cli("status", "ffffffffffff", env=env) if not any(i.startswith("ffffffffffff") for i in ids) else None
    assert run is None or ("no job starts with" in clean(run))


# -- 11: tokens ------------------------------------------------------------------------------------------------


def test_tokens_list_revoke_recover_and_duplicates(grid):
    grid.start_coordinator("--ledger", "none")
    env = user_env(grid)
    made = cli("tokens", "create", "alice", env=env)
    assert made.returncode == 0
    alice = made.stdout.split()[-1]
    again = cli("tokens", "create", "alice", env=env)
    assert again.returncode == 1 and "exists already" in clean(again)
    role = cli("tokens", "create", "bob", "--role", "admin", env=env)
    assert role.returncode == 1 and "--role must be submitter or operator" in clean(role) and "{" not in role.stderr
    listed = cli("tokens", "list", env=env)
    assert "alice" in listed.stdout and "live" in listed.stdout and alice not in listed.stdout
    assert cli("status", env=user_env(grid, alice)).returncode == 0
    assert cli("tokens", "revoke", "alice", env=env).returncode == 0
    refused = cli("status", env=user_env(grid, alice))
    assert refused.returncode == 1 and "not valid" in clean(refused)
    train = cli("train", "digits", env=user_env(grid, alice))  # 13: refused before training, not after
    assert train.returncode == 1 and "not valid" in clean(train) and "trained" not in train.stdout
    last = cli("tokens", "revoke", "operator", env=env)
    assert last.returncode == 1 and "last operator token" in clean(last)
    # the operator token lost: recovered on the coordinator's machine, from its data dir
    recovered = cli("tokens", "recover", "--data-dir", str(grid.data_dir), "--name", "second")
    assert recovered.returncode == 0, recovered.stderr
    second = recovered.stdout.split("keep it):")[1].split()[0]
    assert "second" in cli("tokens", "list", env=user_env(grid, second)).stdout


# -- 10, 12: the worker ---------------------------------------------------------------------------------------


def test_worker_refuses_unknown_task_types_and_empty_passwords_and_says_which_key_it_made(grid, tmp_path):
    grid.start_coordinator("--ledger", "none")
    key = tmp_path / "w" / "key.json"
    base = ["worker", "--coordinator", grid.url, "--key-file", str(key), "--cache-dir", str(tmp_path / "w" / "c")]
    run = cli(*base, "--task-type", "ocrr", env={"COOPGRID_KEY_PASSWORD": KEY_PASSWORD})
    assert run.returncode == 1 and "ocrr: not installed here" in clean(run) and "ocr" in run.stderr
    run = cli(*base, env={"COOPGRID_KEY_PASSWORD": ""})
    assert run.returncode == 1 and "is empty" in clean(run) and not key.exists()
    run = cli(*base, "--exit-when-idle", "0.5", env={"COOPGRID_KEY_PASSWORD": KEY_PASSWORD})
    assert run.returncode == 0, run.stderr
    assert f"created a new worker key {key}" in run.stdout.replace("\n", " ")
    workers = cli("workers", "--json", env=user_env(grid))
    assert workers.returncode == 0 and '"last_seen"' in workers.stdout  # 15
    # the worker reported its platform in its signed registration; the coordinator derived its class
    (listed,) = json.loads(workers.stdout)
    assert listed["platform"] == describe().model_dump()
    assert listed["platform_class"] == platform_class(describe())


def test_worker_with_an_unreachable_coordinator_says_so_and_exits_when_idle(tmp_path):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now
    run = cli("worker", "--coordinator", f"http://127.0.0.1:{port}", "--key-file", str(tmp_path / "k.json"),
              "--cache-dir", str(tmp_path / "c"), "--exit-when-idle", "1",
              env={"COOPGRID_KEY_PASSWORD": KEY_PASSWORD}, timeout=60)
    assert run.returncode == 4
    assert "cannot reach the coordinator yet" in run.stdout and "working for" not in run.stdout
    assert "has not answered for 1s" in clean(run)


def test_a_quarantined_worker_hears_it_once(grid, tmp_path):
    grid.start_coordinator("--ledger", "none")
    proc = grid.start_worker(0, "--exit-when-idle", "30")
    with ApiClient(grid.url, grid.token) as client:
        grid.wait_for_workers(client, 1)
    import sqlite3

    with sqlite3.connect(grid.data_dir / "coopgrid.sqlite") as db:
        db.execute("UPDATE workers SET quarantined_at = 1, quarantine_reason = 'test'")
    proc.wait(timeout=60)
    log = grid.log("worker-0")
    assert proc.returncode == 3 and log.count("is quarantined") == 1, log


# -- 13: a cancelled job's accepted results -------------------------------------------------------------------


def test_a_cancelled_job_s_accepted_results_can_be_downloaded(grid, tmp_path):
    import pyarrow.parquet as pq

    grid.start_coordinator("--ledger", "none")
    with ApiClient(grid.url, grid.token) as client:
        job = client.submit({"task_type": "echo", "dataset": client.put_blob(datasets.sequence(40).to_npz()),
                             "task_size": 1, "trust": {"replicas": 1, "quorum": 1, "adaptive": False, "gold_rate": 0}})
        worker = grid.start_worker(0, "--batch", "1", "--max-replicas", "5")
        worker.wait(timeout=60)
        client.wait_for(job["id"], lambda j: j["tasks_done"] >= 5)
    run = cli("cancel", job["id"][:8], env=user_env(grid))
    assert run.returncode == 0, run.stderr
    out = tmp_path / "partial.parquet"
    run = cli("output", job["id"][:8], str(out), env=user_env(grid))
    assert run.returncode == 0, run.stderr
    table = pq.read_table(out).to_pydict()
    assert len(table["item_id"]) == 5
