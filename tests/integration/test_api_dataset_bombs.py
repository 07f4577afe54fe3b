"""A decompression bomb named as a job's dataset, through the coordinator's HTTP API.

The coordinator is the in-process one of ``test_api`` (a real app on a
SQLite file, driven over HTTP with TestClient), so its memory is this
process's: its peak resident memory while refusing the bomb is measured. The bomb is a 0.4 MiB
.npz whose ``x`` member declares 384 MiB of zeros (as in the report) or more
than the default limit; the coordinator must refuse it from the declared
sizes, before decompressing anything.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hostile_payloads import write_npz_bomb
from memory_peak import peak_growth
from test_api import NO_REPLICATION, Grid, error_of, make_grid  # noqa: F401 (make_grid is a fixture)

from coopgrid.config import Settings
from coopgrid.datasets import Dataset, sequence

MiB = 1 << 20


def submit(grid: Grid, dataset: str, token: str) -> object:
    spec = {"task_type": "echo", "dataset": dataset, "task_size": 1000, "trust": NO_REPLICATION}
    return grid.client.post("/v1/jobs", json=spec, headers=grid.headers(token))


@pytest.mark.parametrize(
    ("settings", "declared"),
    [
        # the report's bomb: 384 MiB declared, against a coordinator that takes 64 MiB datasets
        ({"max_dataset_bytes": 64 * MiB}, 384 * MiB),
        # the default limit: a bomb just over it
        ({}, Settings.model_fields["max_dataset_bytes"].default + 64 * MiB),
    ],
    ids=["384MiB-over-64MiB", "over-the-default"],
)
def test_a_bomb_dataset_is_refused_before_it_is_decompressed(
    make_grid: Callable[..., Grid], tmp_path: Path, settings: dict, declared: int
) -> None:
    grid = make_grid(**settings)
    alice = grid.new_token("alice")
    # warm up every path the bomb takes (upload, submission, a job) so what is measured is the bomb
    r = submit(grid, grid.upload(sequence(100).to_npz(), alice), alice)
    assert r.status_code == 201, r.text
    bomb = write_npz_bomb(tmp_path / "bomb.npz", declared).read_bytes()
    assert len(bomb) < declared // 500  # small on the wire
    digest = grid.upload(bomb, alice)
    del bomb

    r, grown = peak_growth(lambda: submit(grid, digest, alice))

    assert r.status_code == 413, r.text
    body = error_of(r)
    limit = grid.app.settings.max_dataset_bytes
    assert body["error"] == "TooLarge"
    assert body["limit"] == limit and body["declared"] >= declared
    # the message names the limit, the declared size and what to do
    assert "max_dataset_bytes" in body["detail"] and str(limit) in body["detail"]
    assert str(body["declared"]) in body["detail"] and "split" in body["detail"]
    assert grown < 8 * MiB, f"the coordinator grew by {grown / MiB:.1f} MiB refusing the bomb"
    assert grid.client.get("/healthz").json() == {"status": "ok"}
    # and it still takes a legitimate dataset
    r = submit(grid, grid.upload(sequence(10).to_npz(), alice), alice)
    assert r.status_code == 201, r.text


def test_a_parquet_dictionary_bomb_is_refused_before_it_is_expanded(make_grid: Callable[..., Grid]) -> None:
    grid = make_grid(max_dataset_bytes=64 * MiB)
    alice = grid.new_token("alice")

    def table_spec(column: pa.Array) -> dict[str, Any]:
        buf = io.BytesIO()
        pq.write_table(pa.table({"v": column, "n": np.arange(len(column))}), buf, compression="zstd", store_schema=False)
        table = Dataset(np.frombuffer(buf.getvalue(), np.uint8).copy(), kind="table", meta={"rows": len(column)})
        digest = grid.upload(table.to_npz(), alice)
        return {"task_type": "stats", "dataset": digest, "task_size": 1000, "trust": NO_REPLICATION}

    # warm up: a legitimate table job of the same shape (Arrow's pools and codecs start)
    r = grid.client.post("/v1/jobs", json=table_spec(pa.array(["a", "b"] * 50).dictionary_encode()), headers=grid.headers(alice))
    assert r.status_code == 201, r.text
    # one 64 KiB string on each of 8,192 rows: 512 MiB decoded, a few KiB stored (sized so that,
    # were the check to break, the test would fail without exhausting the machine)
    rows, value = 8192, 64 * 1024
    spec = table_spec(pa.DictionaryArray.from_arrays(pa.array(np.zeros(rows, dtype=np.int32)), pa.array(["7" * value])))

    r, grown = peak_growth(lambda: grid.client.post("/v1/jobs", json=spec, headers=grid.headers(alice)))

    assert r.status_code == 413, r.text
    assert error_of(r)["declared"] >= rows * value and "max_dataset_bytes" in error_of(r)["detail"]
    assert grown < 16 * MiB, f"the coordinator grew by {grown / MiB:.1f} MiB refusing the bomb"
    assert grid.client.get("/healthz").json() == {"status": "ok"}


def test_a_dataset_with_more_items_than_allowed_is_refused(make_grid: Callable[..., Grid]) -> None:
    grid = make_grid(max_dataset_items=1000)
    alice = grid.new_token("alice")
    r = submit(grid, grid.upload(sequence(1001).to_npz(), alice), alice)
    assert r.status_code == 413, r.text
    body = error_of(r)
    assert body["limit"] == 1000 and body["declared"] == 1001
    assert "max_dataset_items" in body["detail"]
    assert submit(grid, grid.upload(sequence(1000).to_npz(), alice), alice).status_code == 201
