"""Datasets are refused from the sizes they declare, before they are decompressed (coopgrid.limits).

The bombs are built by tests/hostile_payloads.py without ever holding their
decompressed bytes; "before decompression" is checked by the process's peak
resident memory (tests/memory_peak.py).
"""

from __future__ import annotations

import io
import sys
import zipfile

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hostile_payloads import npy_header, npz_member, write_npz_bomb, write_zip
from memory_peak import peak_growth

from coopgrid import datasets
from coopgrid.dataset_files import load_items
from coopgrid.datasets import Dataset
from coopgrid.errors import DatasetError, TooLarge
from coopgrid.limits import MAX_NPZ_MEMBERS, DatasetLimits, read_npy, read_parquet

MiB = 1 << 20


def npz(**arrays) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


# -- the bomb -------------------------------------------------------------------------


def test_an_npz_bomb_is_refused_from_its_declared_size_without_decompressing_it(tmp_path):
    bomb = write_npz_bomb(tmp_path / "bomb.npz", 384 * MiB).read_bytes()
    assert len(bomb) < MiB
    err, peak = peak_growth(lambda: Dataset.from_npz(bomb, DatasetLimits(max_bytes=64 * MiB)))
    assert isinstance(err, TooLarge)
    assert peak < 4 * MiB
    assert err.status_code == 413 and err.limit == 64 * MiB and err.declared >= 384 * MiB
    assert err.setting == "max_dataset_bytes"
    # what was declared, the limit, the setting, and what to do
    for part in (str(err.declared), str(64 * MiB), "max_dataset_bytes", "COOPGRID_MAX_DATASET_BYTES", "split"):
        assert part in err.message


def test_the_default_limit_refuses_a_bomb_over_it(tmp_path):
    bomb = write_npz_bomb(tmp_path / "bomb.npz", (1 << 30) + MiB)
    with pytest.raises(TooLarge, match="max_dataset_bytes"):
        Dataset.from_npz(bomb)  # a path, with the default limits


def test_a_dataset_within_the_limits_still_loads(tmp_path):
    path = write_npz_bomb(tmp_path / "zeros.npz", 2 * MiB)  # a "bomb" the limit allows is just zeros
    d = Dataset.from_npz(path.read_bytes(), DatasetLimits(max_bytes=3 * MiB))
    assert d.x.shape == (512, 4096) and not d.x.any()
    for ds in (datasets.digits(), datasets.sequence(10)):
        back = Dataset.from_npz(ds.to_npz())
        assert np.array_equal(back.x, ds.x) and len(back) == len(ds)


def test_items_over_the_limit_are_refused_and_none_skips_the_limits():
    blob = datasets.sequence(11).to_npz()
    with pytest.raises(TooLarge) as caught:
        Dataset.from_npz(blob, DatasetLimits(max_items=10))
    assert caught.value.limit == 10 and caught.value.declared == 11
    assert "max_dataset_items" in caught.value.message
    assert len(Dataset.from_npz(blob, DatasetLimits(max_items=11))) == 11
    assert len(Dataset.from_npz(blob, None)) == 11  # already accepted: no size limits
    byte_items = Dataset.from_items([b"a", b"bb", b"ccc"], "text").to_npz()
    with pytest.raises(TooLarge, match="3 items"):
        Dataset.from_npz(byte_items, DatasetLimits(max_items=2))


# -- what a member may be ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("arrays", "match"),
    [
        ({"x": np.array([1, "a", None], dtype=object)}, "never Python objects"),
        ({"x": np.zeros(3, dtype=[("a", "<i4"), ("b", "<f8")])}, "never Python objects or records"),
        ({"x": np.array(["2024-01-01"], dtype="datetime64[D]")}, "numbers or strings"),
        ({"x": np.arange(3), "meta": np.array("[1, 2]")}, "JSON object"),
        ({"x": np.arange(3), "kind": np.array(["array", "array"])}, "one string"),
        ({"x": np.arange(3), "y": np.arange(4)}, "shape \\(4,\\) for 3 items"),
        ({"y": np.arange(3)}, "no array named 'x'"),
    ],
    ids=["object", "record", "datetime", "meta-list", "kind-array", "y-length", "no-x"],
)
def test_members_that_are_not_plain_arrays_are_refused(arrays, match):
    with pytest.raises(DatasetError, match=match):
        Dataset.from_npz(npz(**arrays))


def test_a_deeply_nested_meta_is_refused_at_the_coordinators_recursion_limit():
    # the coordinator runs with the limit py-evm and py_ecc set on import; json.loads would
    # then overflow the C stack on this document and kill the process (here: the test run)
    blob = npz(x=np.arange(3), meta=np.array("[" * 100_000 + "]" * 100_000))
    old = sys.getrecursionlimit()
    sys.setrecursionlimit(100_000)
    try:
        with pytest.raises(DatasetError, match="not JSON"):
            Dataset.from_npz(blob)
    finally:
        sys.setrecursionlimit(old)


def test_a_header_that_disagrees_with_its_member_is_refused(tmp_path):
    path = tmp_path / "lie.npz"
    write_zip(path, [npz_member("x.npy", npy_header((1000, 1000)), 64)])  # declares 1 MB, holds 64 bytes
    with pytest.raises(DatasetError, match=r"declares shape \(1000, 1000\).*holds 64 bytes"):
        Dataset.from_npz(path.read_bytes())
    write_zip(path, [npz_member("x.npy", npy_header((4,), "|O"), 32)])
    with pytest.raises(DatasetError, match="never Python objects"):
        Dataset.from_npz(path.read_bytes())


def test_zips_that_are_not_plain_npz_files_are_refused(tmp_path):
    with pytest.raises(DatasetError, match="not a zip file"):
        Dataset.from_npz(b"\x93NUMPY" + b"\0" * 100)
    with pytest.raises(DatasetError, match=f"at most {MAX_NPZ_MEMBERS}"):
        Dataset.from_npz(npz(x=np.arange(3), **{f"extra{i}": np.arange(1) for i in range(MAX_NPZ_MEMBERS)}))
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_BZIP2) as zf:
        zf.writestr("x.npy", npy_header((3,)) + b"\0\0\0")
    with pytest.raises(DatasetError, match="compression method 12"):
        Dataset.from_npz(buf.getvalue())
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("x.npy", npy_header((3,)) + b"\0\0\0")
        zf.writestr("x", npy_header((3,)) + b"\0\0\0")
    with pytest.raises(DatasetError, match="'x' twice"):
        Dataset.from_npz(buf.getvalue())


def test_read_npy_checks_the_declared_size_first():
    buf = io.BytesIO()
    np.save(buf, np.arange(6, dtype="<f4").reshape(2, 3))
    assert read_npy(buf.getvalue()).tolist() == [[0, 1, 2], [3, 4, 5]]
    with pytest.raises(ValueError, match="declares 800000000000 bytes"):
        read_npy(npy_header((100_000, 1_000_000, 8)) + b"\0" * 16)


# -- Parquet -----------------------------------------------------------------------------


def parquet(table: pa.Table, **kwargs) -> bytes:
    buf = io.BytesIO()
    pq.write_table(table, buf, **kwargs)
    return buf.getvalue()


def test_a_parquet_dictionary_bomb_is_refused_before_it_is_expanded():
    # one 64 KiB string, referenced by 8,192 rows: 512 MiB once decoded, a few KiB on disk (sized
    # so that, were the check to break, the test fails without exhausting the machine)
    rows, value = 8192, 64 * 1024
    bomb = pa.DictionaryArray.from_arrays(pa.array(np.zeros(rows, dtype=np.int32)), pa.array(["a" * value]))
    data = parquet(pa.table({"s": bomb}), compression="zstd", store_schema=False)
    assert len(data) < 64 * 1024
    limits = DatasetLimits(max_bytes=64 * MiB)
    read_parquet(pa.BufferReader(parquet(pa.table({"s": ["warm", "up"]}), compression="zstd")), limits)
    err, peak = peak_growth(lambda: read_parquet(pa.BufferReader(data), limits))
    assert isinstance(err, TooLarge) and err.declared >= rows * value
    assert peak < 8 * MiB  # Arrow's memory is not seen by tracemalloc: this is the process's peak
    # the same table inside a dataset: its footer is fine, and it is refused when the coordinator splits it
    blob = Dataset(np.frombuffer(data, np.uint8).copy(), kind="table", meta={"rows": rows}).to_npz()
    d = Dataset.from_npz(blob, limits)
    with pytest.raises(TooLarge):
        d.table()


def test_parquet_rows_and_declared_bytes_are_checked_from_the_footer():
    table = pa.table({"a": np.arange(1000, dtype=np.int64), "s": [str(i) for i in range(1000)]})
    blob = Dataset.from_table(table).to_npz()
    with pytest.raises(TooLarge, match="1000 rows"):
        Dataset.from_npz(blob, DatasetLimits(max_items=999))
    # decoded, the ints are 8 bytes a row however they are stored: more than the file
    with pytest.raises(TooLarge, match="footer"):
        Dataset.from_npz(blob, DatasetLimits(max_bytes=len(blob) + 100))
    back = Dataset.from_npz(blob)
    assert back.table().equals(table) and len(back) == 1000
    # a table's rows come from its footer, not from what meta claims
    lying = Dataset(np.frombuffer(parquet(table), np.uint8).copy(), kind="table", meta={"rows": 5}).to_npz()
    assert len(Dataset.from_npz(lying)) == 1000


def test_reading_parquet_keeps_types_and_metadata():
    table = pa.table(
        {
            "s": ["a", None, "ccc"],
            "b": pa.array([b"x", b"", None], pa.binary()),
            "l": [["p", "q"], [], None],
            "st": [{"k": "v"}, None, {"k": None}],
            "d": pa.array(["u", "u", "v"]).dictionary_encode(),
            "n": [1.5, 2.5, None],
        }
    ).replace_schema_metadata({"coopgrid.media": "text"})
    back = read_parquet(pa.BufferReader(parquet(table)), DatasetLimits())
    assert back.equals(table) and back.schema.metadata == table.schema.metadata


def test_load_items_refuses_parquet_shards_past_the_limits(tmp_path):
    (tmp_path / "s").mkdir()
    pq.write_table(pa.table({"a": list(range(6))}), tmp_path / "s" / "one.parquet")
    pq.write_table(pa.table({"a": list(range(6))}), tmp_path / "s" / "two.parquet")
    assert len(load_items(tmp_path / "s", limits=DatasetLimits(max_items=12))) == 12
    with pytest.raises(TooLarge, match="12"):
        load_items(tmp_path / "s", limits=DatasetLimits(max_items=11))
    with pytest.raises(TooLarge, match="one.parquet"):
        load_items(tmp_path / "s", limits=DatasetLimits(max_items=5))
