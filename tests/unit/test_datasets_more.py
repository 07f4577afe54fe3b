import io
import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from coopgrid import datasets
from coopgrid.datasets import Dataset, pack, unpack
from coopgrid.errors import DatasetError


def png(color=128, size=(10, 12)):
    buf = io.BytesIO()
    Image.new("L", size, color).save(buf, format="PNG")
    return buf.getvalue()


def test_byte_items_round_trip_through_npz_without_pickle():
    items = [b"alpha", b"", b"\x00\xff" * 1000, "ünï".encode()]
    d = Dataset.from_items(items, "text", ["a", "b", "c", "d"], y=np.array(["x", "y", "z", "w"]), meta={"k": [1, 2]})
    blob = d.to_npz()
    with np.load(io.BytesIO(blob), allow_pickle=False) as npz:  # loads with pickle off
        assert npz["x"].dtype == np.uint8 and npz["offsets"].tolist() == [0, 5, 5, 2005, 2010]
    back = Dataset.from_npz(blob)
    assert back.kind == "bytes" and back.media == "text" and len(back) == 4
    assert back.items() == items and back.item_ids() == ["a", "b", "c", "d"] and back.meta == {"k": [1, 2]}
    assert back.y.tolist() == ["x", "y", "z", "w"]


def test_old_npz_without_kind_is_an_array_dataset():
    d = Dataset.from_npz(Dataset(np.arange(6).reshape(3, 2)).to_npz())
    assert d.kind == "array" and len(d) == 3


def test_bad_offsets_are_refused():
    with pytest.raises(DatasetError, match="offsets"):
        Dataset(np.zeros(4, np.uint8), offsets=np.array([0, 5]), kind="bytes")


def test_split_by_count_and_by_bytes():
    d = Dataset.from_items([b"x" * n for n in [10, 10, 50, 5, 5, 5, 100, 1]], "text")
    assert list(d.ranges(3)) == [(0, 3), (3, 6), (6, 8)]
    # at most 25 bytes a task, but never fewer than one item (the 50- and 100-byte items go alone)
    assert list(d.ranges(100, 25)) == [(0, 2), (2, 3), (3, 6), (6, 7), (7, 8)]
    assert list(d.ranges(2, 25)) == [(0, 2), (2, 3), (3, 5), (5, 6), (6, 7), (7, 8)]


def test_bundles_are_deterministic_and_checked():
    a = pack([b"one", b"", b"three"], {"media": "text", "z": 1, "a": 2})
    assert a == pack([b"one", b"", b"three"], {"a": 2, "z": 1, "media": "text"})
    meta, items = unpack(a)
    assert meta == {"a": 2, "media": "text", "z": 1} and items == [b"one", b"", b"three"]
    with pytest.raises(ValueError):
        unpack(b"nope")
    with pytest.raises(ValueError):
        unpack(a[:-1])


def test_directory_of_images_and_a_pdf_become_items_with_page_ids(tmp_path):
    (tmp_path / "a.png").write_bytes(png())
    (tmp_path / "b.jpg").write_bytes(b"corrupt")  # kept: its worker reports it
    pages = [Image.new("L", (200, 100), 255), Image.new("L", (200, 100), 0)]
    pages[0].save(tmp_path / "doc.pdf", save_all=True, append_images=pages[1:])
    d = datasets.load_items(tmp_path)
    assert d.media == "image"
    assert d.item_ids() == ["a.png", "b.jpg", "doc.pdf#page=1", "doc.pdf#page=2"]
    assert d.item(1) == b"corrupt"
    page = Image.open(io.BytesIO(d.item(2)))
    assert page.format == "PNG" and page.width > 200  # rendered at 200 dpi from a 72-dpi page


def test_text_sources(tmp_path):
    (tmp_path / "lines.txt").write_text("first line\n\nsecond line\n")
    d = datasets.load_items(tmp_path / "lines.txt")
    assert d.items() == [b"first line", b"second line"] and d.item_ids() == ["lines.txt:1", "lines.txt:3"]
    (tmp_path / "c.jsonl").write_text(json.dumps({"id": "q1", "text": "hello"}) + "\n" + "{broken\n")
    j = datasets.load_items(tmp_path / "c.jsonl")
    assert j.item_ids() == ["q1", "c.jsonl:2"] and j.items() == [b"hello", b"{broken"]
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "x.txt").write_text("one document\nwith two lines")
    (docs / "y.md").write_text("another")
    dd = datasets.load_items(docs)
    assert dd.item_ids() == ["x.txt", "y.md"] and dd.item(0) == b"one document\nwith two lines"


def test_csv_records_keep_quoted_newlines_and_shards_must_share_a_header(tmp_path):
    (tmp_path / "a.csv").write_text('id,text\n1,"two\nlines"\n2,plain\n')
    d = datasets.load_items(tmp_path / "a.csv")
    assert d.media == "csv" and d.meta["header"] == ["id", "text"]
    assert d.items() == [b'1,"two\nlines"', b"2,plain"] and d.item_ids() == ["a.csv:2", "a.csv:4"]
    (tmp_path / "b.csv").write_text("id,other\n3,x\n")
    with pytest.raises(DatasetError, match="header"):
        datasets.load_items(tmp_path)


def test_parquet_is_a_table_and_a_mixed_directory_is_refused(tmp_path):
    pq.write_table(pa.table({"a": [1, 2, 3], "item_id": ["p", "q", "r"]}), tmp_path / "t.parquet")
    t = datasets.load_items(tmp_path / "t.parquet")
    assert t.kind == "table" and len(t) == 3 and t.item_ids() == ["p", "q", "r"]
    back = Dataset.from_npz(t.to_npz())
    assert back.table().column("a").to_pylist() == [1, 2, 3]
    (tmp_path / "x.txt").write_text("hi")
    with pytest.raises(DatasetError, match="mixes"):
        datasets.load_items(tmp_path)


def test_load_for_task_keeps_named_sets_and_reads_files_as_items(tmp_path):
    assert datasets.load_for_task("digits:10", "classify").x.shape == (10, 64)
    (tmp_path / "a.png").write_bytes(png())
    d = datasets.load_for_task(str(tmp_path), "classify", {"input": {"image_size": [8, 8], "value_max": 16}})
    assert d.kind == "bytes" and d.media == "image"
    assert datasets.load(str(tmp_path)).kind == "array"  # the digits path still decodes at load


def test_item_ids_travel_as_utf8_and_come_back_as_given():
    # ids are stored as UTF-8 bytes (a quarter of NumPy's four bytes per character) and read
    # back as the same text, ASCII or not, whole or a slice at a time
    from coopgrid.datasets import Dataset

    ids = [f"part-{i % 3:03d}.csv:{i + 2}" for i in range(1000)]
    d = Dataset.from_items([b"x"] * 1000, "text", ids=ids)
    back = Dataset.from_npz(d.to_npz())
    assert back.item_ids() == ids and back.item_ids(10, 12) == ids[10:12]
    assert back.ids.dtype.kind == "S" and back.ids.nbytes < d.ids.nbytes / 3
    odd = ["naïve.csv:2", "数据.csv:3", "plain"]
    back = Dataset.from_npz(Dataset.from_items([b"a", b"b", b"c"], "text", ids=odd).to_npz())
    assert back.item_ids() == odd and back.item_ids(1, 2) == ["数据.csv:3"]


def _records_by_reference(data: bytes) -> list[tuple[int, bytes]]:
    from coopgrid.dataset_files import csv_records

    return csv_records(data)


@pytest.mark.parametrize("seed", range(40))
def test_csv_records_found_with_arrays_are_those_the_line_reader_finds(seed):
    # the array path (no Python object per record) against csv_records, on CSV with quoted
    # newlines, blank and whitespace-only lines, a quote left open at the end, no final newline
    import random

    from coopgrid.dataset_files import csv_spans

    rng = random.Random(seed)
    pieces = [b"a,b", b"1,2", b'"x\ny",3', b"", b"  ", b"\t", b'4,"5', b'6"', b"7,8", b'""', b'"q",""""']
    data = b"\n".join(rng.choice(pieces) for _ in range(rng.randint(0, 30)))
    if rng.random() < 0.5:
        data += b"\n"
    starts, ends, lines = csv_spans(data)
    got = [(int(n), data[a:b]) for n, a, b in zip(lines, starts, ends)]
    assert got == _records_by_reference(data), data


def test_a_csv_with_carriage_returns_is_read_line_by_line_as_before(tmp_path):
    from coopgrid.dataset_files import csv_spans

    assert csv_spans(b"a,b\r\n1,2\r\n") is None
    (tmp_path / "w.csv").write_bytes(b"a,b\r\n1,2\r\n\r\n3,\"4\r\n5\"\r\n")
    (tmp_path / "x.csv").write_bytes(b"a,b\n6,7\n\n  \n\"8\n9\",10")
    d = datasets.load_items(tmp_path)
    assert d.items() == [b"1,2", b'3,"4\n5"', b"6,7", b'"8\n9",10']
    assert d.item_ids() == ["w.csv:2", "w.csv:4", "x.csv:2", "x.csv:5"]
    assert d.meta == {"header": ["a", "b"], "delimiter": ","}
