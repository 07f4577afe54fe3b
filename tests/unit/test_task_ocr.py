import io
import shutil

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from coopgrid import datasets
from coopgrid.datasets import Dataset
from coopgrid.task_demos import ocr_dataset, render_text
from coopgrid.tasks.base import run_local
from coopgrid.tasks.common import levenshtein, normalized_distance
from coopgrid.tasks.ocr import MissingLanguage, OcrTask, find_traineddata, tessdata_dirs


def test_rendered_lines_are_read_with_high_character_accuracy_and_a_corrupt_image_fails_alone(tmp_path):
    data = ocr_dataset(16, seed=3, corrupt=1)
    figures, outputs = run_local(OcrTask(), data, 6, {"psm": 7}, out=tmp_path / "o.parquet")
    print(f"OCR character accuracy on {figures['items_read']} rendered lines: {figures['character_accuracy']:.4f}")
    assert figures["character_accuracy"] >= 0.97
    assert figures["item_errors"] == 1 and figures["items_read"] == 16 and figures["documents"] == 17
    rows = {r["document"]: r for r in pq.read_table(tmp_path / "o.parquet").to_pylist()}
    assert "cannot decode image" in rows["corrupt-0.png"]["error"] and rows["corrupt-0.png"]["text"] == ""
    good = rows["line-00000.png"]
    assert good["error"] is None and good["mean_confidence"] > 50
    assert [w["word"] for w in good["words"]] == good["text"].split()
    assert all(0 <= w["confidence"] <= 100 for w in good["words"])


def test_pdf_pages_make_one_document(tmp_path):
    pages = [Image.open(io.BytesIO(render_text(t, size=36))).convert("L") for t in ("Page one text", "Second page here")]
    pages[0].save(tmp_path / "report.pdf", save_all=True, append_images=pages[1:], resolution=100)
    data = datasets.load_items(tmp_path / "report.pdf")
    assert data.item_ids() == ["report.pdf#page=1", "report.pdf#page=2"]
    figures, _ = run_local(OcrTask(), data, 1, {"psm": 6}, out=tmp_path / "o.parquet")
    (doc,) = pq.read_table(tmp_path / "o.parquet").to_pylist()
    assert doc["document"] == "report.pdf" and doc["pages"] == 2
    first, second = doc["text"].split("\f")
    assert normalized_distance(first, "Page one text") < 0.1 and normalized_distance(second, "Second page here") < 0.1
    assert {w["page"] for w in doc["words"]} == {1, 2}


def test_a_missing_language_names_the_file_and_where_it_looked(monkeypatch, tmp_path):
    monkeypatch.setenv("COOPGRID_TESSDATA_PATH", str(tmp_path))
    # a machine may have the Debian Korean data installed: look only where kor is surely absent
    monkeypatch.setattr("coopgrid.tasks.ocr.DEBIAN_TESSDATA", ())
    with pytest.raises(MissingLanguage, match=r"no kor\.traineddata in .*" + str(tmp_path).replace("/", ".")):
        find_traineddata(["kor"])
    data = Dataset.from_items([render_text("hello")], "image")
    with pytest.raises(MissingLanguage, match="tesseract-ocr-kor"):
        run_local(OcrTask(), data, 1, {"lang": "kor"})


def test_languages_on_the_configured_path_are_found_even_across_directories(monkeypatch, tmp_path):
    eng = next(d / "eng.traineddata" for d in tessdata_dirs() if (d / "eng.traineddata").is_file())
    extra = tmp_path / "more"
    extra.mkdir()
    shutil.copy(eng, extra / "engcopy.traineddata")
    monkeypatch.setenv("COOPGRID_TESSDATA_PATH", str(extra))
    assert find_traineddata(["engcopy"]) == extra
    both = find_traineddata(["eng", "engcopy"])  # in two directories: linked into one
    assert sorted(p.name for p in both.iterdir()) == ["eng.traineddata", "engcopy.traineddata"]
    data = Dataset.from_items([render_text("Seven green windows")], "image", y=np.array(["Seven green windows"]))
    figures, _ = run_local(OcrTask(), data, 1, {"lang": "engcopy", "psm": 7})
    assert figures["character_accuracy"] > 0.9


def test_agree_by_normalized_edit_distance():
    t = OcrTask()
    a = {"items": [{"text": "The quick brown fox jumps over the lazy dog", "conf": 90.0, "words": []}, None], "errors": [[1, "x"]]}
    near = {"items": [{"text": "The quick brown fox jumps over the 1azy dog", "conf": 80.0, "words": []}, None], "errors": [[1, "x"]]}
    far = {"items": [{"text": "The quick brown cat leaps over the lazy dog", "conf": 90.0, "words": []}, None], "errors": [[1, "x"]]}
    assert t.agree(a, near) and not t.agree(a, far)
    assert not t.agree(a, {"items": [a["items"][0], a["items"][0]], "errors": []})
    assert levenshtein("kitten", "sitting") == 3 and normalized_distance("", "") == 0.0


def test_ocr_params_are_validated():
    with pytest.raises(Exception, match="lang"):
        OcrTask().validate_params({"lang": "../etc/passwd"})
    with pytest.raises(Exception, match="psm"):
        OcrTask().validate_params({"psm": 99})
