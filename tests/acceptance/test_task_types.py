"""Every task type through real coordinator and worker processes, and a third-party plugin.

Each test gets its own grid (a coordinator and two workers, started through
the CLI, in the test's tmp dir). The example plugin in tests/plugins/ is
pip-installed once per module into a directory put on the PYTHONPATH of the
grid's processes only (this test process's environment is left alone): the
workers find its task type through importlib.metadata entry points, exactly
as they find the built-ins.
"""

import importlib.util
import io
import math
import os
import shutil
import subprocess
import sys
import time
from importlib.metadata import entry_points
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from coopgrid import datasets
from coopgrid.client import ApiClient
from coopgrid.datasets import Dataset
from coopgrid.errors import InvalidInput
from coopgrid.local import LocalGrid
from coopgrid.protocol import sha256_hex
from coopgrid.registry.embed import tiny_encoder
from coopgrid.task_demos import (
    COLOR_MANIFEST,
    color_classifier,
    color_images,
    image_dataset,
    messy_texts,
    ocr_dataset,
    sentences,
    write_csv_shards,
)
from coopgrid.tasks import get
from coopgrid.tasks.base import run_local
from coopgrid.tasks.ocr import MissingLanguage, find_traineddata

pytestmark = pytest.mark.acceptance

PLUGIN = Path(__file__).parents[1] / "plugins" / "coopgrid-wordcount"


def install_plugin(target: Path) -> Path:
    """``pip install`` the example plugin (built from a copy, so the tree stays clean) into ``target``."""
    src = target.parent / "plugin-src"
    shutil.copytree(PLUGIN, src)
    # offline when the venv has setuptools (build isolation would fetch it from PyPI)
    isolation = [] if importlib.util.find_spec("setuptools") is None else ["--no-build-isolation"]
    run = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", *isolation, "--target", str(target), str(src)],
        capture_output=True, text=True, timeout=120,
    )
    assert run.returncode == 0, run.stderr
    return target


@pytest.fixture(scope="module")
def plugin_site(tmp_path_factory) -> Path:
    """The example plugin, installed once: a read-only directory, not a grid."""
    return install_plugin(tmp_path_factory.mktemp("task-types") / "site")


@pytest.fixture
def grid(plugin_site, tmp_path):
    """This test's own grid; its processes (only they) get the plugin on their PYTHONPATH."""
    env = {"PYTHONPATH": os.pathsep.join([str(plugin_site), *filter(None, [os.environ.get("PYTHONPATH")])])}
    g = LocalGrid(tmp_path / "grid")
    try:
        g.start_coordinator("--ledger", "none", env=env)  # the chain is not what these tests are about
        g.start_worker(0, "--batch", "2", env=env)
        g.start_worker(1, "--batch", "2", env=env)
        yield g
    finally:
        g.stop(timeout=15)


@pytest.fixture
def client(grid):
    with ApiClient(grid.url, grid.token) as c:
        yield c


def run_job(client, grid, spec, data, timeout=120.0):
    job = client.submit({**spec, "dataset": client.put_blob(data.to_npz())})
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.job(job["id"])
        if job["state"] != "running":
            break
        grid.check_workers()
        time.sleep(0.1)
    else:
        raise AssertionError(f"job did not finish: {job}")
    assert job["state"] == "done" and job["tasks_failed"] == 0, job
    out = grid.data_dir / f"{job['id'][:12]}.parquet"
    client.output(job["id"], out)
    return job, pq.read_table(out)


def test_a_pip_installed_plugin_runs_on_real_workers(client, grid, tmp_path):
    # the plugin is not in this (test) process's path: only the grid's processes were given it
    assert "wordcount" not in {ep.name for ep in entry_points(group="coopgrid.tasks")}
    texts = [b"one two three", b"four five", b"\xff\xfe", b"a bb ccc dddd"]
    data = Dataset.from_items(texts, "text", ["a", "b", "c", "d"])
    job, table = run_job(client, grid, {"task_type": "wordcount", "task_size": 2, "params": {"min_length": 2}}, data)
    rows = table.to_pydict()
    assert rows["words"] == [3, 2, None, 3] and rows["error"][2] == "not UTF-8 text"
    assert job["summary"]["total_words"] == 8
    assert set(rows["worker"]) <= {w["address"] for w in client.workers()}
    with pytest.raises(InvalidInput, match="min_length"):
        client.submit({"task_type": "wordcount", "dataset": client.put_blob(data.to_npz()), "params": {"min_length": 0}})


def test_ocr_reads_rendered_lines_and_reports_the_corrupt_image(client, grid):
    data = ocr_dataset(12, seed=11, corrupt=1)
    job, table = run_job(client, grid, {"task_type": "ocr", "task_size": 4, "params": {"lang": "eng", "psm": 7}}, data)
    s = job["summary"]
    print(f"grid OCR character accuracy: {s['character_accuracy']:.4f} over {s['items_read']} lines")
    assert s["character_accuracy"] >= 0.97 and s["item_errors"] == 1 and s["documents"] == 13
    rows = {r["document"]: r for r in table.to_pylist()}
    assert "cannot decode image" in rows["corrupt-0.png"]["error"]
    assert rows["line-00000.png"]["words"] and rows["line-00000.png"]["error"] is None


def test_ocr_job_with_a_language_no_worker_has_fails_with_the_file_named(client, grid):
    data = ocr_dataset(2, corrupt=0)
    job = client.submit({"task_type": "ocr", "task_size": 2, "params": {"lang": "zzz"}, "dataset": client.put_blob(data.to_npz())})
    deadline = time.monotonic() + 60
    while client.job(job["id"])["state"] == "running" and time.monotonic() < deadline:
        time.sleep(0.1)
    job = client.job(job["id"])
    assert job["tasks_failed"] == 1 and job["state"] == "failed"
    # the reason reaches the submitter, not only the workers' logs
    assert "no zzz.traineddata in" in job["summary"]["failure_reasons"][0]["reason"]
    grid_logs = grid.log("worker-0") + grid.log("worker-1")
    assert "no zzz.traineddata in" in grid_logs


def test_embed_writes_embeddings_with_ids_that_match_a_direct_run(client, grid):
    corpus = sentences(300, seed=2)
    model = tiny_encoder(corpus, dim=32)
    published = client.publish_model(model.onnx, model.spec(sha256_hex(model.onnx)))
    data = Dataset.from_items([s.encode() for s in corpus] + [b"\xc3"], "text", [f"s{i}" for i in range(301)])
    job, table = run_job(client, grid, {"task_type": "embed", "model": published["hash"], "task_size": 40}, data)
    assert job["summary"]["items_embedded"] == 300 and job["summary"]["item_errors"] == 1
    rows = table.to_pydict()
    assert rows["item_id"] == data.item_ids() and rows["embedding"][-1] is None
    _, direct = run_local(get("embed"), data, 301, {}, model.onnx, model.spec(""))
    grid_emb = np.array(rows["embedding"][:-1], dtype=np.float64)
    cos = (grid_emb * direct[0].output["emb"][:-1]).sum(axis=1)
    assert cos.min() >= 0.999


def test_a_model_for_another_task_type_and_bad_params_are_refused_at_submission(client, grid):
    model = tiny_encoder(["a b c"], dim=4)
    published = client.publish_model(model.onnx, model.spec(sha256_hex(model.onnx)))
    digits = client.put_blob(datasets.digits(10).to_npz())
    with pytest.raises(InvalidInput, match="is for 'embed' tasks, not 'classify'"):
        client.submit({"task_type": "classify", "model": published["hash"], "dataset": digits})
    with pytest.raises(InvalidInput, match="normalize='minmax' makes float pixels: it needs format='npy'"):
        client.submit({"task_type": "preprocess", "dataset": digits, "params": {"normalize": "minmax"}})
    with pytest.raises(InvalidInput, match="ocr needs image items"):
        client.submit({"task_type": "ocr", "dataset": digits})


def test_preprocess_output_is_the_next_job_s_dataset(client, grid):
    images = image_dataset(30, corrupt=1)
    job, table = run_job(
        client, grid,
        {"task_type": "preprocess", "task_size": 8, "params": {"size": [16, 16], "color": "L", "format": "png"}},
        images,
    )
    assert job["summary"]["items_out"] == 30 and job["summary"]["item_errors"] == 1
    rows = table.to_pylist()
    assert all(Image.open(io.BytesIO(r["data"])).size == (16, 16) for r in rows[:-1])
    texts = messy_texts(40)
    job, table = run_job(client, grid, {"task_type": "preprocess", "task_size": 6, "params": {"lowercase": True}}, texts)
    assert job["summary"]["duplicates"] == 5 and job["summary"]["item_errors"] == 1
    path = grid.data_dir / "clean.parquet"
    pq.write_table(table, path)
    cleaned = datasets.load_items(path)  # the output, read back as a dataset
    assert len(cleaned) == 41 - 5 - 1
    job2, table2 = run_job(
        client, grid, {"task_type": "preprocess", "task_size": 10, "params": {"tokenize": "chars", "dedupe": False}}, cleaned
    )
    assert table2.column("item_id").to_pylist() == cleaned.item_ids()
    assert table2.column("data").to_pylist() == cleaned.items()  # cleaning is idempotent


def test_stats_over_csv_shards_match_numpy(client, grid):
    truth = write_csv_shards(grid.data_dir / "shards", 20_000, shards=5, bad_rows=6)
    data = datasets.load_items(grid.data_dir / "shards")
    job, table = run_job(client, grid, {"task_type": "stats", "task_size": 3000, "params": {"columns": ["x", "y"], "bins": 12}}, data)
    assert job["summary"]["bad_items"] == 6 and job["summary"]["rows"] == len(truth["id"])  # short rows out
    by = {r["column"]: r for r in table.to_pylist() if r["kind"] == "column"}
    for c in ("x", "y"):
        v, r = truth[c], by[c]
        assert r["count"] == len(v) and r["min"] == v.min() and r["max"] == v.max()
        assert math.isclose(r["mean"], v.mean(), rel_tol=1e-9) and math.isclose(r["variance"], v.var(ddof=1), rel_tol=1e-9)
        assert r["histogram_counts"] == np.histogram(v, 12, (v.min(), v.max()))[0].tolist()
        for q in r["quantiles"]:
            exact = np.quantile(v, q["q"], method="lower")
            assert abs(q["value"] - exact) <= r["quantile_relative_error"] * abs(exact)


def test_classify_with_a_generic_onnx_image_classifier_and_top_k(client, grid):
    onnx_bytes = color_classifier()
    published = client.publish_model(onnx_bytes, {**COLOR_MANIFEST, "name": "colors", "task_type": "classify", "sha256": sha256_hex(onnx_bytes)})
    names = ["red", "blue", "green"] * 4
    data = Dataset.from_items(color_images(names) + [b"nope"], "image", y=np.array(names + ["red"]))
    job, table = run_job(client, grid, {"task_type": "classify", "model": published["hash"], "task_size": 5, "params": {"top_k": 3}}, data)
    rows = table.to_pydict()
    assert rows["label"] == names + [None] and rows["error"][-1].startswith("cannot decode image")
    assert all(len(t) == 3 for t in rows["top_labels"][:-1])
    assert job["summary"]["item_errors"] == 1
