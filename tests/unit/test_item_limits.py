"""Items are decoded within bounds: a bomb among a task's items fails alone, with its reason.

Images are refused from their header's size (coopgrid.limits.MAX_ITEM_PIXELS)
before their pixels are decoded, PDF pages from their size at the rendering
resolution; reading files into a dataset stops at the dataset limits.
"""

from __future__ import annotations

import io
import json

import pytest
from hostile_payloads import pdf_with_pages, png_bomb
from memory_peak import peak_growth
from PIL import Image
from pydantic import ValidationError

from coopgrid import tasks
from coopgrid.dataset_files import load_items, render_pdf
from coopgrid.datasets import Dataset
from coopgrid.errors import ConfigError, TooLarge
from coopgrid.limits import MAX_ITEM_PIXELS, DatasetLimits
from coopgrid.tasks.base import run_local
from coopgrid.tasks.common import decode_image
from coopgrid.tasks.preprocess import PreprocessParams

MiB = 1 << 20


def png(size=(6, 4), value=200) -> bytes:
    buf = io.BytesIO()
    Image.new("L", size, value).save(buf, format="PNG")
    return buf.getvalue()


# -- images ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "side",
    [
        9_000,  # 81 Mpx: over ours, under Pillow's own warning (89 Mpx): Pillow alone would decode it
        10_000,  # 100 Mpx: Pillow would only warn
        20_000,  # 400 Mpx: over Pillow's own limit too
    ],
)
def test_an_image_bomb_is_refused_from_its_header(side):
    bomb = png_bomb(side, side)
    assert len(bomb) < side * side // 500
    err, peak = peak_growth(lambda: decode_image(bomb))
    assert isinstance(err, ValueError)
    assert peak < 4 * MiB
    reason = str(err)
    assert reason.startswith("cannot decode image") and str(MAX_ITEM_PIXELS) in reason
    if side * side <= 2 * Image.MAX_IMAGE_PIXELS:
        assert f"{side}x{side} = {side * side} pixels" in reason and "MAX_ITEM_PIXELS" in reason


def test_images_within_the_bound_decode_and_other_formats_are_not_opened():
    assert decode_image(png()).size == (6, 4)
    assert decode_image(png_bomb(300, 200)).getextrema() == (0, 0)
    buf = io.BytesIO()
    Image.new("L", (4, 4)).save(buf, format="PPM")
    with pytest.raises(ValueError, match="not a known image format"):
        decode_image(buf.getvalue())
    with pytest.raises(ValueError, match="empty file"):
        decode_image(b"")


def test_a_pdf_page_is_refused_from_its_rendered_size():
    with pytest.raises(ValueError, match=r"page 1 rendered at 200 dpi is 55556x55556 = 3086469136 pixels"):
        decode_image(pdf_with_pages((20_000, 20_000)))
    # only the first page of a PDF item is rendered: a huge second page costs nothing
    assert decode_image(pdf_with_pages((72, 72), (20_000, 20_000))).size == (200, 200)


def test_a_bomb_among_a_tasks_items_fails_alone_with_its_reason():
    items = [png(), png_bomb(9_000, 9_000), pdf_with_pages((20_000, 20_000)), png((3, 3))]
    dataset = Dataset.from_items(items, "image", ids=["ok", "png-bomb", "pdf-bomb", "ok-too"])
    figures, (out,) = run_local(tasks.get("preprocess"), dataset, 10, {"size": [2, 2]})
    reasons = dict(out.output["errors"])
    assert set(reasons) == {1, 2}
    assert "81000000 pixels" in reasons[1] and "MAX_ITEM_PIXELS" in reasons[1]
    assert "PDF's page 1" in reasons[2] and "MAX_ITEM_PIXELS" in reasons[2]
    assert figures["items_out"] == 2 and figures["item_errors"] == 2


def test_a_pdf_page_too_large_to_render_becomes_its_own_item(tmp_path):
    (tmp_path / "doc.pdf").write_bytes(pdf_with_pages((72, 72), (20_000, 20_000), (144, 72)))
    d = load_items(tmp_path / "doc.pdf")
    assert d.item_ids() == ["doc.pdf#page=1", "doc.pdf#page=2", "doc.pdf#page=3"]
    pages = d.items()
    assert pages[1][:5] == b"%PDF-" and len(pages[1]) < 2000  # the page alone, not rendered
    assert [Image.open(io.BytesIO(pages[k])).size for k in (0, 2)] == [(200, 200), (400, 200)]
    _, (out,) = run_local(tasks.get("preprocess"), d, 10, {"size": [2, 2]})
    assert [i for i, _ in out.output["errors"]] == [1]


def test_a_pdf_with_more_pages_than_the_item_limit_is_refused(tmp_path):
    (tmp_path / "long.pdf").write_bytes(pdf_with_pages(*[(72, 72)] * 6))
    assert len(render_pdf(pdf_with_pages(*[(72, 72)] * 6), max_pages=2)) == 2
    assert len(load_items(tmp_path / "long.pdf", limits=DatasetLimits(max_items=6))) == 6
    with pytest.raises(TooLarge, match="max_dataset_items"):
        load_items(tmp_path / "long.pdf", limits=DatasetLimits(max_items=5))


def test_preprocess_will_not_make_images_larger_than_a_worker_decodes():
    assert PreprocessParams(size=(16384, 4096)).size == (16384, 4096)  # exactly the bound
    with pytest.raises(ValidationError, match="pixels"):
        PreprocessParams(size=(16384, 4097))


# -- reading files --------------------------------------------------------------------


def test_text_lines_and_csv_records_stop_at_the_item_limit(tmp_path):
    (tmp_path / "lines.txt").write_bytes(b"\n".join(b"line %d" % i for i in range(11)) + b"\n\n\n")
    assert len(load_items(tmp_path / "lines.txt", limits=DatasetLimits(max_items=11))) == 11
    with pytest.raises(TooLarge, match="lines.txt"):
        load_items(tmp_path / "lines.txt", limits=DatasetLimits(max_items=10))
    (tmp_path / "t.csv").write_text("a,b\n" + "".join(f"{i},{i}\n" for i in range(10)))
    assert len(load_items(tmp_path / "t.csv", limits=DatasetLimits(max_items=10))) == 10  # the header is no item
    with pytest.raises(TooLarge, match="max_dataset_items"):
        load_items(tmp_path / "t.csv", limits=DatasetLimits(max_items=9))
    with pytest.raises(TooLarge, match="max_dataset_bytes"):
        load_items(tmp_path / "t.csv", limits=DatasetLimits(max_bytes=20))


def test_jsonl_lines_are_bounded_and_a_deep_one_is_kept_raw(tmp_path):
    deep = b"[" * 100_000 + b"]" * 100_000
    (tmp_path / "c.jsonl").write_bytes(b'{"text": "hello"}\n' + deep + b"\n" + json.dumps({"text": "x"}).encode())
    d = load_items(tmp_path / "c.jsonl")
    assert d.items() == [b"hello", deep, b"x"]
    with pytest.raises(TooLarge):
        load_items(tmp_path / "c.jsonl", limits=DatasetLimits(max_items=2))


def test_a_directory_of_files_stops_at_the_byte_limit_before_reading_past_it(tmp_path):
    for i in range(3):
        (tmp_path / f"{i}.txt").write_bytes(b"x" * 1000)
    assert len(load_items(tmp_path, limits=DatasetLimits(max_bytes=3000))) == 3
    with pytest.raises(TooLarge, match="2.txt"):
        load_items(tmp_path, limits=DatasetLimits(max_bytes=2999))


def test_reading_files_takes_its_limits_from_the_environment(tmp_path, monkeypatch):
    (tmp_path / "lines.txt").write_text("a\nb\nc\n")
    assert len(load_items(tmp_path / "lines.txt")) == 3
    monkeypatch.setenv("COOPGRID_MAX_DATASET_ITEMS", "2")
    with pytest.raises(TooLarge, match="limit of 2"):
        load_items(tmp_path / "lines.txt")
    monkeypatch.setenv("COOPGRID_MAX_DATASET_ITEMS", "many")
    with pytest.raises(ConfigError, match="whole numbers"):
        load_items(tmp_path / "lines.txt")
