"""Big jobs as a user runs them: a dataset above the coordinator's upload limit submitted in shards
through `coopgrid submit`, and retention (a sealed job's rows archived and purged) with
`coopgrid verify` still proving its results; real coordinator and worker processes."""

import json
import time

import pyarrow.parquet as pq
import pytest

from coopgrid.client import ApiClient
from coopgrid.task_demos import write_csv_shards
from tests.acceptance.test_ledger_cli import cli

pytestmark = pytest.mark.acceptance

#: the coordinator's upload limit in these tests: below every dataset submitted, above each shard
UPLOAD_LIMIT = 40_000


def job_id_of(out) -> str:
    return out.stdout.split("job ", 1)[1].split(":", 1)[0]


def test_datasets_above_the_upload_limit_go_in_shards(grid, tmp_path):
    grid.start_coordinator("--ledger", "none", "--dataset-urls", f"file://{tmp_path}/near/",
                           env={"COOPGRID_MAX_UPLOAD_BYTES": str(UPLOAD_LIMIT)})
    grid.start_worker(0, "--batch", "20")
    grid.start_worker(1, "--batch", "20")
    with ApiClient(grid.url, grid.token) as client:
        # one upload of the whole is refused: the limit is real
        from coopgrid.datasets import sequence
        from coopgrid.errors import CoopgridError

        with pytest.raises(CoopgridError):
            client.put_blob(sequence(6000).to_npz())

        # a directory of CSV files (each file above the limit too once packed: cut further)
        truth = write_csv_shards(tmp_path / "csv", 2000, shards=4, bad_rows=2)
        out = cli(grid, "submit", "--task-type", "stats", "--dataset", str(tmp_path / "csv"), "--task-size", "300",
                  "--param", 'columns=["x","y"]', "--replicas", "1", "--quorum", "1", "--no-adaptive",
                  "--gold-rate", "0", "--output", str(tmp_path / "stats.parquet"))
        job = client.job(job_id_of(out))
        assert job["state"] == "done" and len(job["dataset_shards"]) >= 3
        assert job["summary"]["rows"] == len(truth["id"]) and job["summary"]["bad_items"] == 2
        x = {r["column"]: r for r in pq.read_table(tmp_path / "stats.parquet").to_pylist() if r["kind"] == "column"}["x"]
        assert x["count"] == len(truth["x"]) and x["min"] == truth["x"].min() and x["max"] == truth["x"].max()

        # shards the coordinator reads itself, from files near it (--dataset-url), never through the submitter
        near = write_csv_shards(tmp_path / "near", 600, shards=2, bad_rows=1)
        files = sorted((tmp_path / "near").iterdir())
        out = cli(grid, "submit", "--task-type", "stats", *[a for f in files for a in ("--dataset-url", f"file://{f}")],
                  "--task-size", "100", "--param", 'columns=["x"]', "--replicas", "1", "--quorum", "1",
                  "--no-adaptive", "--gold-rate", "0")
        job = client.job(job_id_of(out))
        assert job["state"] == "done" and len(job["dataset_shards"]) == 1
        assert job["summary"]["rows"] == len(near["id"]) and job["summary"]["bad_items"] == 1
        refused = cli(grid, "submit", "--task-type", "stats", "--dataset-url", f"file://{tmp_path}/csv/{files[0].name}",
                      check=False)
        assert refused.returncode != 0 and "only under the prefixes its operator allowed" in refused.stderr

        # items of an echo job, reduced shard by shard: every item once, in order, its own value
        out = cli(grid, "submit", "--task-type", "echo", "--dataset", "sequence:6000", "--task-size", "7",
                  "--replicas", "1", "--quorum", "1", "--no-adaptive", "--gold-rate", "0",
                  "--output", str(tmp_path / "echo.parquet"))
        job = client.job(job_id_of(out))
        assert job["items"] == 6000 and job["tasks"] >= 6000 // 7 and len(job["dataset_shards"]) >= 1
        assert job["summary"]["echo_mismatches"] == 0
        table = pq.read_table(tmp_path / "echo.parquet")
        assert table.column("item_id").to_pylist() == [f"item-{i}" for i in range(6000)]
        import numpy as np

        values = [np.frombuffer(v, dtype=np.int64)[0] for v in table.column("value").to_pylist()]
        assert values == list(range(6000))


def test_a_purged_job_still_verifies_through_the_cli(coordinator_db, grid):
    grid.start_coordinator("--seal-every-seconds", "3600", "--retention-seconds", "0", *coordinator_db.args,
                           env={"COOPGRID_REAP_INTERVAL": "0.1"})
    grid.start_worker(0, "--batch", "5")
    out = cli(grid, "submit", "--task-type", "echo", "--dataset", "sequence:12", "--task-size", "3",
              "--replicas", "1", "--quorum", "1", "--no-adaptive", "--gold-rate", "0")
    job_id = job_id_of(out)
    with ApiClient(grid.url, grid.token) as client:
        time.sleep(2)  # retention rounds pass: nothing sealed yet, so nothing is purged
        assert client.job(job_id)["archive"] is None
        assert "epoch 1: 4 results committed" in cli(grid, "ledger", "seal").stdout
        job = client.wait_for(job_id, lambda j: j["archive"] is not None, timeout=60)
        assert job["replicas"] == {} and job["tasks_done"] == 4  # the rows are gone, the job's figures stay
    verified = cli(grid, "verify", job_id, "2")
    assert "verified" in verified.stdout, verified.stdout
    export = grid.data_dir.parent / "proof.json"
    cli(grid, "verify", job_id, "3", "--export", str(export))
    assert json.loads(export.read_text())["leaf"]["taskIndex"] == 3
    assert "verified" in cli(grid, "verify", "--proof", str(export)).stdout
