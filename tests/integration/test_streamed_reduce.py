"""classify and embed reduce in pieces (``TaskType.streams``), into what reducing the whole job gives.

A sharded job is run without workers: the test leases its tasks, runs the task type's real model on
them and records the outputs. With REDUCE_CHUNK_ITEMS = 4 and two items a task, each shard of eight
items is reduced in two pieces of two tasks; the pieces are laid out so that their schemas and
figures differ (an optional column, a label type, an embedding width, every item failed). The
output must still be the table and figures of the whole job's reduce (all shards joined, every
output at once), only in one row group a piece; once per store.
"""

from __future__ import annotations

import random
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from coopgrid import tasks
from coopgrid.app import build
from coopgrid.config import Settings
from coopgrid.coordinator import summary
from coopgrid.coordinator.scheduler import JobSpec
from coopgrid.coordinator.trust import TrustPolicy
from coopgrid.dataset_shards import concat_datasets, slice_dataset
from coopgrid.datasets import Dataset
from coopgrid.protocol import sha256_hex
from coopgrid.registry.embed import tiny_encoder
from coopgrid.registry.models import ModelSpec
from coopgrid.store.base import IncomingResult
from coopgrid.task_demos import COLOR_MANIFEST, color_classifier, color_images, sentences
from coopgrid.tasks.base import TaskOutput

ONE = TrustPolicy(replicas=1, quorum=1, adaptive=False, gold_rate=0)
SHARD = 8  # items a shard: two pieces of two tasks of two items

BROKEN_IMAGE = b"\x89PNG\r\n\x1a\n not an image"
BROKEN_TEXT = b"\xff\xfe not UTF-8"


@pytest.fixture
def app(store_url, tmp_path, monkeypatch):
    monkeypatch.setattr(summary, "REDUCE_CHUNK_ITEMS", 4)
    a = build(Settings(data_dir=tmp_path / "grid", database_url=store_url, ledger="none"))
    yield a
    a.close()


def run_job(app, task_type: str, model: bytes, manifest: dict, data: Dataset, params: dict):
    """Submit ``data`` in shards of SHARD items, run every task with the real model, finalize."""
    t = tasks.get(task_type)
    token, _ = app.auth.issue("t", "operator")  # reads every blob
    digest = app.blobs.put(model)
    app.registry.publish(ModelSpec(sha256=digest, name=f"{task_type}-model", task_type=task_type, **manifest))
    shards = [app.blobs.put(slice_dataset(data, i, i + SHARD).to_npz()) for i in range(0, len(data), SHARD)]
    spec = JobSpec(task_type=task_type, model=digest, dataset=shards[0], shards=shards[1:], task_size=2,
                   params=params, trust=ONE)
    job = app.scheduler.submit(spec, token)
    loaded = t.load_model(model, manifest)
    p = t.validate_params(params)
    w = app.store.register_worker("0x" + "11" * 20, "w", "o", time.time())
    while (lease := app.store.lease(w.id, 100, [], 60, time.time(), rng=random.Random(0))) is not None:
        results = []
        for r in lease.replicas:
            output = t.canonical(t.run(r.input_data or app.blobs.get(r.input_hash), loaded, p))
            results.append(IncomingResult(r.replica_id, sha256_hex(output), output, None))
        outcome = app.store.record_results(lease.id, w.id, "0x" + "00" * 65, results, [], time.time())
        app.scheduler.validator.validate(outcome.tasks)
    done = app.summarizer.finalize(job.id)
    assert done.state == "done" and done.tasks_done == len(data) // 2
    return done


def reduced_whole(app, job, out: Path) -> tuple[pa.Table, dict]:
    """The job reduced as it was before pieces: its shards joined, every accepted output at once."""
    t = tasks.get(job.task_type)
    dataset = concat_datasets([Dataset.from_npz(app.blobs.get(d), limits=None) for d in [job.dataset_hash, *job.shards]])
    outputs = [TaskOutput(o.task_index, o.first_item, o.n_items, o.worker_address, t.decode(o.output))
               for o in app.store.accepted_outputs(job.id)]
    figures = t.reduce(outputs, dataset, t.validate_params(job.params), out)
    return pq.read_table(out), figures


def streamed(app, job) -> tuple[pq.ParquetFile, dict]:
    """The job's output file and the figures its task type added to the summary."""
    grid = set(app.summarizer.figures(job, time.time())) | {"failure_reasons"}
    return (pq.ParquetFile(pa.BufferReader(app.blobs.get(job.output_hash))),
            {k: v for k, v in job.summary.items() if k not in grid})


def test_classify_reduces_in_pieces_into_the_whole_job_s_table_and_figures(app, tmp_path):
    # the manifest names two of the model's three classes: blue is labelled by its index, 2 (an int)
    manifest = {**COLOR_MANIFEST, "classes": ["red", "green"]}
    r, g, b, x = "red", "green", "blue", None  # x: an item that is not an image
    pieces = [
        [b, b, b, b],  # int labels only: this piece's label column is int64, and no error column
        [x, x, x, x],  # every item failed: no label at all, an error column
        [r, g, r, g],  # string labels: the job's are strings
        [r, x, b, g],
        [g, b, x, r],
        [b, b, r, x],
    ]
    names = [n for piece in pieces for n in piece]
    items = [color_images([n])[0] if n else BROKEN_IMAGE for n in names]
    truth = ["2" if n == b else (n or r) for n in names]
    truth[0] = truth[8] = g  # two wrong labels: one of the int piece, one of a string piece
    data = Dataset.from_items(items, "image", [f"img-{i:02d}" for i in range(len(items))], y=truth)

    job = run_job(app, "classify", color_classifier(), manifest, data, {"top_k": 2})
    out, figures = streamed(app, job)
    whole, whole_figures = reduced_whole(app, job, tmp_path / "whole.parquet")

    assert out.metadata.num_row_groups == len(pieces)
    table = out.read()
    assert table.schema.equals(whole.schema, check_metadata=True) and table.equals(whole)
    assert figures == whole_figures
    # and what that is, built independently: the whole job's labels are strings, so the int piece's too
    assert table.column_names == ["item_id", "label", "confidence", "top_labels", "top_scores", "error", "task_index", "worker"]
    assert table.schema.field("label").type == pa.string()
    assert table.column("label").to_pylist() == ["2" if n == b else n for n in names]
    assert [e is not None for e in table.column("error").to_pylist()] == [n is None for n in names]
    good = [n is not None for n in names]
    correct = sum(ok and ("2" if n == b else n) == y for ok, n, y in zip(good, names, truth))
    top2 = sum(ok and y in t for ok, y, t in zip(good, truth, table.column("top_labels").to_pylist()))
    assert figures == {"item_errors": names.count(None), "labelled_items": len(names),
                       "accuracy": round(correct / len(names), 6), "top_2_accuracy": round(top2 / len(names), 6)}


def test_embed_reduces_in_pieces_into_the_whole_job_s_table_and_figures(app, tmp_path):
    model = tiny_encoder(sentences(200))
    texts = [s.encode() for s in sentences(24, seed=3)]
    bad = set(range(0, 4)) | {9, 14, 21}  # the first piece wholly (dim 0), then one item here and there
    items = [BROKEN_TEXT if i in bad else t for i, t in enumerate(texts)]
    data = Dataset.from_items(items, "text", [f"s-{i:02d}" for i in range(len(items))])

    job = run_job(app, "embed", model.onnx, {"input": model.input}, data, {})
    out, figures = streamed(app, job)
    whole, whole_figures = reduced_whole(app, job, tmp_path / "whole.parquet")

    assert out.metadata.num_row_groups == len(items) // 4
    table = out.read()
    assert table.schema.equals(whole.schema, check_metadata=True) and table.equals(whole)
    assert figures == whole_figures
    assert figures == {"dim": 32, "items_embedded": len(items) - len(bad), "item_errors": len(bad)}
    assert table.schema.field("embedding").type.list_size == 32
    embeddings = table.column("embedding").to_pylist()
    assert [e is None for e in embeddings] == [i in bad for i in range(len(items))]
    assert all(len(e) == 32 for e in embeddings if e is not None)
