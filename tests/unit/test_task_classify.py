
import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from coopgrid import datasets, tasks
from coopgrid.datasets import Dataset
from coopgrid.task_demos import COLOR_MANIFEST as MANIFEST
from coopgrid.task_demos import color_classifier
from coopgrid.task_demos import color_images as images
from coopgrid.tasks.base import run_local


def test_any_onnx_image_classifier_from_its_manifest_with_top_k_and_a_corrupt_image(tmp_path):
    names = ["red", "green", "blue", "blue", "red"]
    data = Dataset.from_items(images(names) + [b"broken"], "image", [f"i{k}" for k in range(6)], y=np.array(names + ["red"]))
    t = tasks.get("classify")
    figures, outputs = run_local(t, data, 4, {"top_k": 2}, color_classifier(), MANIFEST, out=tmp_path / "o.parquet")
    rows = pq.read_table(tmp_path / "o.parquet").to_pylist()
    assert [r["label"] for r in rows] == names + [None]
    assert rows[-1]["error"].startswith("cannot decode image")
    assert all(len(r["top_labels"]) == 2 and r["top_labels"][0] == r["label"] for r in rows[:-1])
    assert all(r["top_scores"][0] >= r["top_scores"][1] and abs(r["confidence"] - r["top_scores"][0]) < 1e-9 for r in rows[:-1])
    assert figures["item_errors"] == 1 and figures["accuracy"] == pytest.approx(5 / 6) and figures["top_2_accuracy"] == pytest.approx(5 / 6)
    a = outputs[0].output
    assert t.agree(a, t.decode(t.canonical(a)))
    assert not t.agree(a, {**a, "labels": ["blue"] + a["labels"][1:]})


@pytest.fixture
def digits_model(digits_onnx):
    return digits_onnx  # trained once per session (tests/conftest.py)


def test_digits_model_reads_image_files_on_the_worker_as_the_old_loader_did(tmp_path, digits_model):
    model = digits_model
    base = datasets.digits(6)
    for i, row in enumerate(base.x):  # dark ink on a light page, larger than 8x8
        img = Image.fromarray((255 - row.reshape(8, 8) * 255 / 16).astype(np.uint8)).resize((32, 32), Image.Resampling.NEAREST)
        img.save(tmp_path / f"{i}.png")
    manifest = model.spec("0" * 64)
    as_items = datasets.load_for_task(str(tmp_path), "classify", manifest)
    as_arrays = datasets.load(str(tmp_path), (8, 8), 16.0)
    t = tasks.get("classify")
    _, items_out = run_local(t, as_items, 10, {}, model.onnx, manifest)
    _, array_out = run_local(t, as_arrays, 10, {}, model.onnx, manifest)
    assert items_out[0].output["labels"] == array_out[0].output["labels"]
    assert "errors" not in items_out[0].output


def test_top_k_on_numeric_digits_and_the_legacy_output_bytes_are_unchanged(digits_model):
    model = digits_model
    t = tasks.get("classify")
    data = datasets.digits(50)
    _, plain = run_local(t, data, 50, {}, model.onnx, {})
    assert set(plain[0].output) == {"labels", "confidence"}
    _, top = run_local(t, data, 50, {"top_k": 3}, model.onnx, {"classes": list(range(10))})
    assert [tk[0][0] for tk in top[0].output["top_k"]] == plain[0].output["labels"]
    with pytest.raises(Exception, match="top_k"):
        t.validate_params({"top_k": 0})
