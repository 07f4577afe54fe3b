import math

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from coopgrid import datasets, tasks
from coopgrid.errors import InvalidInput
from coopgrid.task_demos import write_csv_shards
from coopgrid.tasks.base import run_local
from coopgrid.tasks.stats import column_partial, merge_partials, sketch_k


def check_against_numpy(summary_rows, truth, bins, alpha, quantiles):
    by_col = {r["column"]: r for r in summary_rows if r["kind"] == "column"}
    for c, v in truth.items():
        r = by_col[c]
        assert r["count"] == len(v)  # exact
        assert r["min"] == v.min() and r["max"] == v.max()  # exact
        assert math.isclose(r["mean"], v.mean(), rel_tol=1e-9)
        assert math.isclose(r["variance"], v.var(ddof=1), rel_tol=1e-9)
        assert math.isclose(r["variance_population"], v.var(), rel_tol=1e-9)
        assert math.isclose(r["sum"], v.sum(), rel_tol=1e-9)
        counts, edges = np.histogram(v, bins=bins, range=(v.min(), v.max()))
        assert r["histogram_counts"] == counts.tolist()  # exact
        np.testing.assert_array_equal(r["histogram_edges"], edges)
        assert r["quantile_relative_error"] <= alpha
        for q in r["quantiles"]:
            exact = np.quantile(v, q["q"], method="lower")
            assert abs(q["value"] - exact) <= r["quantile_relative_error"] * abs(exact) + 1e-12, (c, q, exact)
        assert [q["q"] for q in r["quantiles"]] == quantiles


def test_stats_over_csv_shards_matches_a_single_numpy_pass_and_reports_bad_rows(tmp_path):
    truth = write_csv_shards(tmp_path / "shards", 5000, shards=3, bad_rows=4)
    data = datasets.load_items(tmp_path / "shards")
    assert data.media == "csv" and len(data) == 5000
    t = tasks.get("stats")
    figures, outputs = run_local(t, data, 700, {"bins": 16}, out=tmp_path / "o.parquet")
    rows = pq.read_table(tmp_path / "o.parquet").to_pylist()
    check_against_numpy(rows, truth, 16, 0.01, t.validate_params({}).quantiles)
    bad = [r for r in rows if r["kind"] == "bad_item"]
    assert len(bad) == 4 and figures["bad_items"] == 4 and figures["rows"] == len(truth["id"])  # short rows out
    reasons = " ".join(r["error"] for r in bad)
    assert "not a number" in reasons or "fields" in reasons
    assert all(r["item_id"].startswith("part-") for r in bad)
    assert {c for c in figures["columns"]} == {"id", "x", "y"}  # label is text: not summarized


def test_one_bad_value_is_reported_and_costs_only_its_own_cell(tmp_path):
    # issue 12: a column with one bad value was dropped silently (bad_items 0), and with explicit
    # columns the bad row was dropped from the other columns too
    (tmp_path / "d.csv").write_text("a,b,name\n1,10,x\noops,20,y\n3,30,z\n")
    data = datasets.load_items(tmp_path / "d.csv")
    t = tasks.get("stats")
    for params in ({}, {"columns": ["a", "b"]}):
        figures, _ = run_local(t, data, 10, params, out=tmp_path / "o.parquet")
        assert set(figures["columns"]) == {"a", "b"} and figures["text_columns"] == ["name"]
        assert figures["bad_items"] == 1 and figures["rows"] == 3
        assert figures["columns"]["a"]["count"] == 2 and figures["columns"]["a"]["mean"] == 2.0
        assert figures["columns"]["b"]["count"] == 3 and figures["columns"]["b"]["mean"] == 20.0
        (bad,) = [r for r in pq.read_table(tmp_path / "o.parquet").to_pylist() if r["kind"] == "bad_item"]
        assert "column 'a'" in bad["error"] and "'oops' is not a number" in bad["error"]


def test_stats_over_parquet_with_nulls_and_byte_split(tmp_path):
    rng = np.random.default_rng(3)
    x = rng.normal(size=3000) * 1e6
    ints = rng.integers(-50, 50, size=3000)
    xs = pa.array([None if i % 97 == 0 else float(v) for i, v in enumerate(x)], pa.float64())
    pq.write_table(pa.table({"x": xs, "k": pa.array(ints), "name": ["n"] * 3000}), tmp_path / "t.parquet")
    data = datasets.load_items(tmp_path / "t.parquet")
    assert data.kind == "table" and len(data) == 3000
    t = tasks.get("stats")
    figures, outputs = run_local(t, data, 10_000, {"task_bytes": 8000, "quantiles": [0.5, 0.9], "relative_accuracy": 0.001}, out=tmp_path / "o.parquet")
    assert len(outputs) > 3  # split by bytes, not by the 10,000-item task size
    good_x = x[[i % 97 != 0 for i in range(3000)]]
    rows = pq.read_table(tmp_path / "o.parquet").to_pylist()
    check_against_numpy(rows, {"x": good_x, "k": ints.astype(np.float64)}, 20, 0.001, [0.5, 0.9])
    assert [r["missing"] for r in rows if r["column"] == "x"] == [sum(i % 97 == 0 for i in range(3000))]


def test_chan_merge_equals_one_pass_in_any_split():
    rng = np.random.default_rng(0)
    v = rng.normal(1e3, 1.0, 10_001)  # large mean, small variance: the naive formula would lose digits
    k = sketch_k(0.01)
    whole = column_partial(v, 0, (v.min(), v.max()), 10, k)
    for cuts in ([1, 2], [5000], [3, 9000, 9001]):
        parts = np.split(v, cuts)
        merged = column_partial(parts[0], 0, (v.min(), v.max()), 10, k)
        for p in parts[1:]:
            merged = merge_partials(merged, column_partial(p, 0, (v.min(), v.max()), 10, k))
        assert merged["n"] == whole["n"] and merged["hist"] == whole["hist"] and merged["sketch"] == whole["sketch"]
        assert math.isclose(merged["mean"], v.mean(), rel_tol=1e-12)
        assert math.isclose(merged["m2"] / (len(v) - 1), v.var(ddof=1), rel_tol=1e-9)


def test_stats_agree_is_exact_on_counts_and_tolerant_on_float_rounding(tmp_path):
    truth = write_csv_shards(tmp_path / "s", 300, shards=1, bad_rows=0)
    t = tasks.get("stats")
    _, outputs = run_local(t, datasets.load_items(tmp_path / "s"), 300, {})
    a = outputs[0].output
    b = t.decode(t.canonical(a))
    assert t.agree(a, b)
    b["columns"]["x"]["mean"] *= 1 + 1e-15
    assert t.agree(a, b)
    b["columns"]["x"]["n"] += 1
    assert not t.agree(a, b)
    assert truth["x"].size == 300


def test_stats_refuses_unknown_columns_and_bad_params_clearly(tmp_path):
    write_csv_shards(tmp_path / "s", 50, shards=1, bad_rows=0)
    data = datasets.load_items(tmp_path / "s")
    t = tasks.get("stats")
    with pytest.raises(InvalidInput, match="no column 'nope'.*columns: id, x, y, label"):
        list(t.split(data, 10, t.validate_params({"columns": ["nope"]})))
    with pytest.raises(Exception, match="quantiles must be"):
        t.validate_params({"quantiles": [1.5]})
    with pytest.raises(InvalidInput, match="stats needs a CSV or Parquet"):
        list(t.split(datasets.sequence(5), 2, t.validate_params({})))


TRICKY = [
    b"1,10,x", b' 2 ,"2_0",y', b"inf,30,z", b"1e999,40,w", b"NULL,N/A,v", b"oops,50,u", b"6,60",
    b'7,"7\n0",t', b"8,80,s,extra", b"-.5e1,+9,r", b"nan,1.,q",
]


def _same(fast, slow):
    (fv, fm, fe), (sv, sm, se) = fast, slow
    assert fm == sm and fe == se
    for c in sv:
        assert np.array_equal(np.sort(fv[c]), np.sort(sv[c])), c


@pytest.mark.parametrize("records", [
    TRICKY,
    TRICKY[:5] + [b""] + TRICKY[5:],  # an empty line: pyarrow would skip it, so each record is read alone
    TRICKY[:3] + [b'4,"40,p'] + TRICKY[3:],  # a quote left open swallows the next records in one pass
])
def test_pyarrow_reading_counts_every_value_and_bad_row_as_the_row_by_row_reader_does(records):
    from coopgrid.tasks.stats import _python_columns, csv_columns

    header = ["a", "b", "name"]
    fast = csv_columns(records, header, ",", ["a", "b"])
    _same(fast, _python_columns(records, header, ",", ["a", "b"]))
    if len(records) == len(TRICKY):
        values, missing, errors = fast
        assert sorted(values["a"]) == [-5.0, 1.0, 2.0, 7.0] and missing == {"a": 2, "b": 1}
        assert errors[2] == "column 'a': 'inf' is not a finite number" and "'oops' is not a number" in errors[5]
        assert errors[6].startswith("bad CSV row: 2 fields") and errors[8].startswith("bad CSV row: 4 fields")


def test_a_task_split_before_csv_blocks_still_runs(tmp_path):
    # a worker may meet tasks split by an older coordinator: records one by one
    from coopgrid.datasets import pack

    t = tasks.get("stats")
    params = t.validate_params({"columns": ["a"]})
    meta = {"format": "csv", "header": ["a", "b"], "delimiter": ",", "columns": ["a"], "edges": {"a": [0.0, 4.0]},
            "bins": 4, "k": 64}
    out = t.run(pack([b"1,x", b"3,y", b"oops,z"], meta), None, params)
    assert out["rows"] == 3 and out["columns"]["a"]["n"] == 2 and out["errors"] == [[2, "column 'a': 'oops' is not a number"]]


def test_bad_values_in_a_later_chunk_are_pinned_on_their_own_rows():
    # each chunk is cast on its own: a bad value costs its chunk the slow path, and the rows it
    # reports count from the column's start, not the chunk's
    from coopgrid.tasks.stats import column_numbers

    col = pa.chunked_array([["1", "2", "3"], ["4", "oops", ""], ["7", "inf"], ["8"]])
    values, missing, problems = column_numbers(col)
    assert sorted(values.tolist()) == [1.0, 2.0, 3.0, 4.0, 7.0, 8.0] and missing == 1
    assert problems == [(4, "'oops' is not a number"), (7, "'inf' is not a finite number")]
    assert column_numbers(pa.chunked_array([], pa.string()))[0].tolist() == []


def test_every_bad_row_of_a_big_csv_keeps_its_own_id_and_reason(tmp_path):
    # past pyarrow's one-block size the reader hands back several chunks per column; the bad rows
    # of every task still come back one by one, each under its own file:line id
    truth = write_csv_shards(tmp_path / "shards", 60_000, shards=2, bad_rows=12)
    data = datasets.load_items(tmp_path / "shards")
    t = tasks.get("stats")
    figures, _ = run_local(t, data, 30_000, {"columns": ["x", "y"]}, out=tmp_path / "o.parquet")
    rows = pq.read_table(tmp_path / "o.parquet").to_pylist()
    bad = {r["item_id"]: r["error"] for r in rows if r["kind"] == "bad_item"}
    assert figures["bad_items"] == 12 and len(bad) == 12
    x = next(r for r in rows if r["column"] == "x")
    assert x["count"] == len(truth["x"])
    for item_id, error in bad.items():
        name, line = item_id.split(":")
        record = (tmp_path / "shards" / name).read_text().splitlines()[int(line) - 1]
        assert ("oops" in record) == ("'oops' is not a number" in error), (record, error)
        assert (record.count(",") == 1) == error.startswith("bad CSV row: 2 fields"), (record, error)
