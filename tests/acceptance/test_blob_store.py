"""A grid whose blobs live in an S3-compatible object store: a real coordinator process started
with ``--blob-store s3://...`` (moto's standalone server on loopback), real worker processes
reading their inputs from the store through the presigned URLs their leases carry."""

import re

import httpx
import numpy as np
import pytest

from coopgrid.client import ApiClient
from coopgrid.datasets import Dataset

pytestmark = pytest.mark.acceptance

NO_REPLICATION = {"replicas": 1, "quorum": 1, "adaptive": False, "gold_rate": 0}


def test_workers_read_a_job_s_inputs_from_the_object_store_and_never_through_the_coordinator(
    grid, s3_server, tmp_path
):
    bucket = s3_server.new_bucket()
    # the endpoint and credentials as boto3 users give them (AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID...)
    grid.start_coordinator("--blob-store", f"s3://{bucket}/grid", "--ledger", "none", env=s3_server.env)
    assert f"blobs in the s3://{bucket}/grid/" in grid.log("coordinator")
    # 6 rows of 24 KB, a row a task: every input is over inline_input_bytes, so a blob
    data = Dataset(x=np.arange(6 * 6000, dtype=np.float32).reshape(6, 6000))
    with ApiClient(grid.url, grid.token) as client:
        job = client.submit({"task_type": "echo", "dataset": client.put_blob(data.to_npz()), "task_size": 1,
                             "trust": NO_REPLICATION})
        grid.start_worker(0, "--batch", "2")  # the workers are given no credentials of the store
        grid.start_worker(1, "--batch", "2")
        done = client.wait_for(job["id"], lambda j: j["state"] == "done", timeout=120)
        assert done["tasks_done"] == 6 and done["summary"]["echo_mismatches"] == 0
        metrics = httpx.get(f"{grid.url}/metrics", headers={"Authorization": f"Bearer {grid.token}"}).text
        out = client.output(job["id"], tmp_path / "out.parquet")

    urls = re.search(r"^coopgrid_blob_urls_total (\S+)$", metrics, re.M)
    assert urls and float(urls.group(1)) >= 6, metrics
    assert not re.search(r'coopgrid_http_request_duration_seconds_count\{method="GET",route="/v1/blobs/\{digest\}"',
                         metrics), "a worker fetched an input through the coordinator"
    # each input was read from the store with a presigned GET, answered 200
    presigned = {m.group(1) for m in re.finditer(
        rf'"GET /{bucket}/grid/[0-9a-f]{{2}}/([0-9a-f]{{64}})\?[^ ]*X-Amz-Signature=[^ ]* HTTP/1\.1" 200',
        "\n".join(s3_server.requests()))}
    assert len(presigned) == 6, s3_server.requests()[-20:]

    stored = {o["Key"] for o in s3_server.client().list_objects_v2(Bucket=bucket, Prefix="grid/")["Contents"]}
    assert {f"grid/{d[:2]}/{d}" for d in (job["dataset"], done["output"], *presigned)} <= stored
    assert not [p for p in (grid.data_dir / "blobs").rglob("*") if p.is_file()]  # none in the data dir
    assert out.stat().st_size > 6 * 6000 * 4  # the output, streamed from the store by the coordinator
