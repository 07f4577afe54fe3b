"""Coordinators on a blob store other than their data dir, through the HTTP API: two coordinators
(two data dirs, one database) sharing a directory; and a coordinator on an S3 blob store (moto's
server process), blobs in the bucket, workers reading a lease's inputs and models straight from
the store through presigned URLs.

Every task input here is a blob (``inline_input_bytes=0``), as large inputs are in production.
The access rules of coopgrid/coordinator/access.py hold for URLs: a lease carries URLs of its
own inputs only, and valid no longer than the lease.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from coopgrid.app import build
from coopgrid.coordinator.api import create_api
from coopgrid.datasets import sequence
from coopgrid.protocol import sha256_hex
from tests.integration.test_api import NO_REPLICATION, Grid, Worker, coordinator_settings
from tests.integration.test_blob_access import assert_unreadable, fetch, finish, input_hashes, run, worker_get
from tests.s3_server import S3Server

LEASE = 30


@pytest.fixture
def s3_grid(
    s3_server: S3Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Callable[..., tuple[Grid, str]]]:
    """Makes a coordinator whose blob store is a fresh bucket; (grid, bucket)."""
    for name, value in s3_server.env.items():  # the endpoint and credentials as boto3 users give them
        monkeypatch.setenv(name, value)
    with ExitStack() as stack:

        def make(**settings: Any) -> tuple[Grid, str]:
            bucket = s3_server.new_bucket()
            app = build(coordinator_settings(
                tmp_path / "coordinator", blob_store=f"s3://{bucket}/grid", inline_input_bytes=0,
                lease_seconds=LEASE, **settings,
            ))
            stack.callback(app.close)
            operator = app.auth.ensure_operator()
            assert operator is not None
            return Grid(app, stack.enter_context(TestClient(create_api(app))), operator), bucket

        yield make


def stored(s3_server: S3Server, bucket: str) -> set[str]:
    listing = s3_server.client().list_objects_v2(Bucket=bucket, Prefix="grid/")
    return {obj["Key"].rsplit("/", 1)[1] for obj in listing.get("Contents", [])}


def test_a_lease_carries_urls_of_its_own_inputs_and_a_worker_reads_them_from_the_store(
    s3_grid: Callable[..., tuple[Grid, str]], s3_server: S3Server, tmp_path: Path
) -> None:
    grid, bucket = s3_grid()
    alice = grid.new_token("alice")
    job = grid.submit_echo(8, 4, alice)
    inputs = input_hashes(grid, job["id"])
    assert len(inputs) == 2 and {job["dataset"], *inputs} <= stored(s3_server, bucket)
    assert not any(p.is_file() for p in (tmp_path / "coordinator").rglob("blobs/**/*"))  # nothing in the data dir

    w = Worker(grid, owner="ann").register()
    lease = w.lease(max_replicas=1)
    (replica,) = lease["replicas"]
    held, other = replica["input_hash"], next(h for h in inputs if h != replica["input_hash"])
    url = replica["input_url"]
    assert re.search(r"[?&]X-Amz-Expires=30(&|$)", url)  # no longer than the lease
    assert held in url and other not in str(lease)  # a URL of its own input only
    r = httpx.get(url)  # no coordinator, no credentials of the worker's: the URL is the credential
    assert r.status_code == 200 and sha256_hex(r.content) == held

    via_coordinator = fetch(grid, held, w)  # the fallback path streams the object through
    assert via_coordinator.status_code == 200 and via_coordinator.content == r.content
    assert_unreadable(grid, other, w)
    missing = fetch(grid, secrets.token_hex(32), grid.operator)  # may read anything: the store has no such object
    assert missing.status_code == 404 and "that you may read" in missing.text
    metrics = grid.client.get("/metrics", headers=grid.headers()).text
    assert re.search(r"^coopgrid_blob_urls_total 1\.0$", metrics, re.M), metrics

    assert w.submit(lease["lease_id"], run(w, lease)).status_code == 200
    done = finish(grid, job, alice)
    assert done["state"] == "done" and done["output"] in stored(s3_server, bucket)
    out = fetch(grid, done["output"], alice)
    assert out.status_code == 200 and sha256_hex(out.content) == done["output"]


def test_a_worker_is_given_a_url_of_a_published_model_in_the_store(s3_grid: Callable[..., tuple[Grid, str]]) -> None:
    grid, _ = s3_grid()
    onnx = b"model bytes " + secrets.token_bytes(16)
    model = grid.upload(onnx)
    spec = {"sha256": model, "name": "m", "task_type": "classify"}
    r = grid.client.post("/v1/models", json=spec, headers=grid.headers())
    assert r.status_code == 201, r.text
    w = Worker(grid).register()
    manifest = worker_get(w, f"/v1/worker/models/{model}").json()
    assert manifest["hash"] == model and httpx.get(manifest["url"]).content == onnx
    assert "url" not in grid.client.get(f"/v1/models/{model}", headers=grid.headers()).json()  # for workers only


def test_with_blob_urls_off_workers_fetch_inputs_through_the_coordinator(
    s3_grid: Callable[..., tuple[Grid, str]],
) -> None:
    grid, _ = s3_grid(blob_url_seconds=0)
    alice = grid.new_token("alice")
    job = grid.submit_echo(8, 4, alice)
    w = Worker(grid, owner="ann").register()
    lease = w.lease(max_replicas=2)
    assert len(lease["replicas"]) == 2 and not any("input_url" in r for r in lease["replicas"])
    assert w.submit(lease["lease_id"], run(w, lease)).status_code == 200
    assert finish(grid, job, alice)["state"] == "done"


def test_a_coordinator_on_the_data_dir_gives_no_urls(tmp_path: Path) -> None:
    app = build(coordinator_settings(tmp_path / "coordinator", inline_input_bytes=0))
    try:
        operator = app.auth.ensure_operator()
        assert operator is not None
        with TestClient(create_api(app)) as client:
            grid = Grid(app, client, operator)
            job = grid.submit_echo(4, 4)
            lease = Worker(grid, owner="ann").register().lease()
            assert job["id"] in lease["jobs"] and lease["replicas"]
            assert not any("input_url" in r for r in lease["replicas"])
            assert (tmp_path / "coordinator" / "blobs" / job["dataset"][:2] / job["dataset"]).is_file()
    finally:
        app.close()


def test_two_coordinators_on_different_data_dirs_share_a_blob_directory(tmp_path: Path) -> None:
    shared, db = tmp_path / "shared-blobs", f"sqlite:///{tmp_path / 'grid.sqlite'}"
    with ExitStack() as stack:
        grids = []
        for name in ("a", "b"):
            app = build(coordinator_settings(tmp_path / name, database_url=db, blob_store=str(shared),
                                             inline_input_bytes=0))
            stack.callback(app.close)
            operator = app.auth.ensure_operator() or grids[0].operator  # one database: one operator token
            grids.append(Grid(app, stack.enter_context(TestClient(create_api(app))), operator))
        a, b = grids
        alice = a.new_token("alice")
        dataset = a.upload(sequence(8).to_npz(), alice)  # uploaded through a...
        r = b.client.post("/v1/jobs", headers=b.headers(alice), json={  # ...split by b
            "task_type": "echo", "dataset": dataset, "task_size": 4, "trust": NO_REPLICATION})
        assert r.status_code == 201, r.text
        job = r.json()
        w = Worker(a, owner="ann").register()
        lease = w.lease()
        assert {rep["input_hash"] for rep in lease["replicas"]} == set(input_hashes(a, job["id"]))
        w.grid = b  # the same worker, now talking to b
        for rep in lease["replicas"]:
            got = fetch(b, rep["input_hash"], w)
            assert got.status_code == 200 and sha256_hex(got.content) == rep["input_hash"]
        assert w.submit(lease["lease_id"], run(w, lease)).status_code == 200
        done = b.wait_until_done(job["id"], alice)
        assert fetch(a, done["output"], alice).status_code == 200
        for name in ("a", "b"):  # nothing in either data dir
            assert not any(p.is_file() for p in (tmp_path / name).rglob("blobs/**/*"))
