import io

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from coopgrid import datasets, tasks
from coopgrid.datasets import Dataset
from coopgrid.task_demos import image_dataset, messy_texts
from coopgrid.tasks.base import run_local, store_blob_files


def test_images_are_resized_and_re_encoded_identically_every_time_and_a_corrupt_one_fails_alone(tmp_path):
    data = image_dataset(12, corrupt=1)
    t = tasks.get("preprocess")
    params = {"size": [16, 24], "color": "L", "format": "png"}
    figures, outputs = run_local(t, data, 5, params, out=tmp_path / "o.parquet")
    _, again = run_local(t, data, 5, params)
    assert [t.canonical(o.output) for o in outputs] == [t.canonical(o.output) for o in again]  # exact agreement
    assert all(t.agree(a.output, b.output) for a, b in zip(outputs, again))
    assert figures["items_out"] == 12 and figures["item_errors"] == 1
    rows = pq.read_table(tmp_path / "o.parquet").to_pylist()
    assert "cannot decode image" in rows[-1]["error"] and rows[-1]["data"] is None
    im = Image.open(io.BytesIO(rows[0]["data"]))
    assert im.size == (24, 16) and im.mode == "L" and im.format == "PNG"
    # the produced dataset: as a blob the next job names, and as the manifest read back
    blobs = {}
    figures = store_blob_files(figures, tmp_path, lambda b: blobs.setdefault("h" * 64, b) and "h" * 64)
    assert figures["blobs"] == {"dataset": "h" * 64}
    nxt = Dataset.from_npz(blobs["h" * 64])
    assert nxt.media == "image" and len(nxt) == 12 and nxt.item_ids() == data.item_ids()[:12]
    again_ds = datasets.load_items(tmp_path / "o.parquet")
    assert again_ds.items() == nxt.items()


def test_standard_normalization_to_npy_makes_a_numeric_next_dataset(tmp_path):
    data = image_dataset(4, corrupt=0)
    t = tasks.get("preprocess")
    p = {"size": [8, 8], "color": "RGB", "format": "npy", "normalize": "standard", "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]}
    figures, outputs = run_local(t, data, 4, p, out=tmp_path / "o.parquet")
    first = np.load(io.BytesIO(outputs[0].output["items"][0]))
    src = np.asarray(Image.open(io.BytesIO(data.item(0))).convert("RGB").resize((8, 8), Image.Resampling.BILINEAR), np.float32)
    np.testing.assert_array_equal(first, ((src / np.float32(255) - np.float32(0.5)) / np.float32(0.25)).astype(np.float32))
    nxt = Dataset.from_npz((tmp_path / "dataset.npz").read_bytes())
    assert nxt.kind == "array" and nxt.x.shape == (4, 8 * 8 * 3)


def test_text_is_cleaned_tokenized_and_deduplicated_across_tasks(tmp_path):
    data = messy_texts(30, duplicate_every=7)
    t = tasks.get("preprocess")
    figures, outputs = run_local(t, data, 4, {"lowercase": True}, out=tmp_path / "o.parquet")
    rows = pq.read_table(tmp_path / "o.parquet").to_pylist()
    assert rows[-1]["error"].startswith("not UTF-8")
    texts = [r["data"].decode() for r in rows if r["data"] is not None]
    assert all(t == " ".join(t.split()) and t == t.lower() for t in texts)
    assert not any(ch in "".join(texts) for ch in "\ufeff\x07\t\u00a0\uff11")
    dups = [r for r in rows if r["duplicate_of"]]
    assert figures["duplicates"] == len(dups) == 4  # items 6, 13, 20, 27 repeat the one before
    assert all(r["duplicate_of"] == f"doc-{int(r['item_id'][4:]) - 1:05d}" for r in dups)
    assert rows[0]["tokens"] == [tok for tok in rows[0]["tokens"] if tok.strip()] and rows[0]["tokens"]
    nxt = datasets.load_items(tmp_path / "o.parquet")
    assert len(nxt) == 30 - 4 and nxt.media == "text"


@pytest.mark.parametrize(
    "params, message",
    [
        ({"normalize": "minmax"}, "needs format='npy'"),
        ({"normalize": "standard", "format": "npy"}, "needs mean and std"),
        ({"normalize": "standard", "format": "npy", "mean": [0.5], "std": [0.2]}, "3 channel"),
        ({"size": [0, 5]}, "at least 1"),
        ({"mode": "video"}, "mode"),
    ],
)
def test_params_are_checked_with_a_clear_message(params, message):
    with pytest.raises(Exception, match=message):
        tasks.get("preprocess").validate_params(params)
