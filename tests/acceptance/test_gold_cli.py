"""`coopgrid submit --gold FILE` with real processes: the submitter's labelled items catch a cheater
on a grid where no worker is vouched for, and a bad file is refused before anything is uploaded."""

import json
import os
import subprocess
import sys
import time

import pytest

from coopgrid.client import ApiClient

pytestmark = pytest.mark.acceptance


def submit(grid, *args):
    env = {**os.environ, **({"COOPGRID_COORDINATOR": grid.url, "COOPGRID_TOKEN": grid.token} if grid else {})}
    return subprocess.run([sys.executable, "-m", "coopgrid", "submit", *args], env=env, capture_output=True,
                          text=True, timeout=300)


def test_a_cheater_fails_the_submitters_labelled_items_and_is_quarantined(grid, tmp_path):
    gold = tmp_path / "gold.jsonl"
    gold.write_text("".join(json.dumps({"input": [10_000 + i], "output": [10_000 + i]}) + "\n" for i in range(20)))
    grid.start_coordinator()
    with ApiClient(grid.url, grid.token) as client:
        for i in range(3):  # fresh keys only: nobody vouched for, so the only root of trust is the file
            grid.start_worker(i, "--batch", "4")
        grid.start_worker(3, "--batch", "4", "--dishonest", "random")
        grid.wait_for_workers(client, 4)
        out = submit(grid, "--dataset", "sequence:200", "--task-type", "echo", "--task-size", "1",
                     "--gold", str(gold), "--gold-rate", "0.3", "--no-wait")
        assert out.returncode == 0, out.stdout + out.stderr
        assert "200 items in 200 tasks" in out.stdout  # the labelled items are not the job's tasks
        deadline = time.monotonic() + 240
        while True:
            workers = {w["name"]: w for w in client.workers()}
            if workers["local-3"]["quarantined"]:
                break
            assert time.monotonic() < deadline, {n: w["reputation"] for n, w in workers.items()}
            grid.check_workers()
            time.sleep(0.2)
    assert workers["local-3"]["quarantine_reason"].startswith("failed a gold task")
    assert not any(workers[f"local-{i}"]["quarantined"] for i in range(3))


def test_a_gold_file_with_a_bad_line_is_refused_naming_it(tmp_path):
    gold = tmp_path / "gold.jsonl"
    gold.write_text('{"input": [1], "output": [1]}\n{"input": [2], "output": }\n')
    out = submit(None, "--dataset", "sequence:10", "--task-type", "echo", "--gold", str(gold), "--no-wait",
                 "--coordinator", "http://127.0.0.1:9")  # refused before any connection is tried
    assert out.returncode != 0
    assert f"{gold}, line 2: not JSON" in out.stdout + out.stderr
