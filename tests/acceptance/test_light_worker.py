"""A volunteer's worker needs no web framework, ORM, chain node, compiler or training stack.

pyproject.toml keeps those in extras (coordinator, ledger, torch-export); this checks what a
real worker process imports while it runs a job, from ``python -X importtime``.
"""

import os
import subprocess
import sys

import pytest

from coopgrid.client import ApiClient
from coopgrid.local import KEY_PASSWORD
from coopgrid.protocol import sha256_hex

pytestmark = pytest.mark.acceptance

#: top-level modules of the coordinator's, the ledger's and central training's dependencies
NOT_ON_A_WORKER = {
    "fastapi", "starlette", "uvicorn", "sqlalchemy", "alembic", "pydantic_settings", "prometheus_client",
    "web3", "eth_tester", "evm", "vyper", "snekmate", "sklearn", "skl2onnx", "onnx", "torch", "scipy",
}


def imported(stderr: str) -> set[str]:
    """Top-level module names from ``-X importtime`` lines: ``import time: self | cumulative | name``."""
    names = set()
    for line in stderr.splitlines():
        if line.startswith("import time:") and line.count("|") == 2:
            name = line.rsplit("|", 1)[1].strip()
            if name and name != "imported package":
                names.add(name.split(".")[0])
    return names


def test_a_worker_running_a_job_imports_nothing_of_the_coordinator_or_the_chain(grid, digits_onnx, tmp_path):
    grid.start_coordinator("--ledger", "none")
    with ApiClient(grid.url, grid.token) as client:
        model = client.publish_model(digits_onnx.onnx, digits_onnx.spec(sha256_hex(digits_onnx.onnx)))
        from coopgrid import datasets

        job = client.submit({
            "task_type": "classify", "model": model["hash"], "dataset": client.put_blob(datasets.digits(40).to_npz()),
            "task_size": 20, "trust": {"replicas": 1, "quorum": 1, "adaptive": False, "gold_rate": 0},
        })
    run = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "coopgrid", "worker", "--coordinator", grid.url,
         "--key-file", str(tmp_path / "key.json"), "--cache-dir", str(tmp_path / "cache"), "--exit-when-idle", "2"],
        capture_output=True, text=True, timeout=120, env={**os.environ, "COOPGRID_KEY_PASSWORD": KEY_PASSWORD},
    )
    assert run.returncode == 0, run.stdout + run.stderr[-3000:]
    assert "2 replicas" in run.stdout  # it did the work
    modules = imported(run.stderr)
    assert {"coopgrid", "httpx", "onnxruntime"} <= modules  # the parse sees what was imported
    assert not modules & NOT_ON_A_WORKER, sorted(modules & NOT_ON_A_WORKER)
    with ApiClient(grid.url, grid.token) as client:
        assert client.job(job["id"])["state"] == "done"


def test_coordinator_modules_missing_on_a_light_install_are_a_message(tmp_path):
    # a worker-only install, simulated: fastapi cannot be imported
    blocker = tmp_path / "fastapi"
    blocker.mkdir()
    (blocker / "__init__.py").write_text("raise ModuleNotFoundError('No module named fastapi', name='fastapi')\n")
    run = subprocess.run(
        [sys.executable, "-m", "coopgrid", "coordinator", "--data-dir", str(tmp_path / "d"), "--port", "0"],
        capture_output=True, text=True, timeout=60,
        env={**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")])},
    )
    assert run.returncode == 1 and "Traceback" not in run.stderr
    assert "pip install coopgrid[coordinator]" in run.stderr
