"""``stats``: mergeable aggregates over CSV or Parquet shards.

Each task computes, per numeric column of its rows, a partial that merges
exactly or with a stated error:

* count, missing (empty/NA/null), min, max: exact;
* sum, mean and M2 (sum of squared deviations): each task's with
  ``math.fsum`` (correctly rounded, so the same on any hardware), merged in
  task order with Chan et al.'s parallel formula; variance = M2 / (n - 1)
  (``variance``, as pandas) and M2 / n (``variance_population``);
* a histogram with fixed edges (``bins`` equal bins between the column's
  min and max over the whole dataset, found when the job is split, or
  ``ranges`` from the params); bin placement is NumPy's
  (``numpy.histogram``), counts merge by addition; values outside a given
  range are counted as ``below``/``above``;
* a quantile sketch: a log-linear histogram of |x| (each power of two cut
  into K equal sub-buckets, K a power of two >= 1 / (2 * relative_accuracy)),
  so merging is adding counts and the bucket of a value comes from its
  binary exponent and mantissa alone (exact on any hardware). The
  q-quantile it returns is within ``relative_accuracy`` (relative, of the
  value) of the exact "lower" quantile: the element of rank
  floor(q * (n - 1)) in sorted order (``numpy.quantile(..., method="lower")``).

A CSV row with the wrong number of fields is left out of every aggregate; a
value that is not a number is left out of its own column only (the row's
other columns still count it). Both are reported, with the reason, in the
job's output (rows with ``kind = "bad_item"``). Without ``columns``, a CSV
column is summarized when most of its values are numbers; the others are
named in the summary (``text_columns``), never dropped silently.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
from pydantic import BaseModel, Field, field_validator

from coopgrid.datasets import Dataset, pack, unpack
from coopgrid.errors import InvalidInput
from coopgrid.limits import DatasetLimits, read_parquet
from coopgrid.tasks.base import ItemParams, TaskOutput, TaskType, item_errors
from coopgrid.tasks.common import csv_row

MISSING = {"", "na", "n/a", "nan", "null", "none"}
FLOAT_REL = 1e-12


class StatsParams(ItemParams):
    columns: list[str] | None = Field(None, description="Numeric columns to summarize; default: every numeric column.")
    bins: int = Field(20, ge=1, le=100_000, description="Histogram bins per column.")
    ranges: dict[str, tuple[float, float]] | None = Field(
        None, description="Histogram (low, high) per column; default: the column's min and max."
    )
    quantiles: list[float] = Field(default_factory=lambda: [0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99])
    relative_accuracy: float = Field(0.01, ge=1e-4, le=0.25, description="The quantile sketch's relative error bound.")

    @field_validator("quantiles")
    @classmethod
    def _quantiles(cls, v: list[float]) -> list[float]:
        if not v or any(not 0 <= q <= 1 for q in v):
            raise ValueError("quantiles must be a non-empty list of numbers between 0 and 1")
        return v

    @field_validator("ranges")
    @classmethod
    def _ranges(cls, v: dict[str, tuple[float, float]] | None) -> dict[str, tuple[float, float]] | None:
        for col, (lo, hi) in (v or {}).items():
            if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
                raise ValueError(f"ranges[{col!r}] must be finite (low, high) with low < high")
        return v


def sketch_k(relative_accuracy: float) -> int:
    """Sub-buckets per power of two for a sketch within ``relative_accuracy``."""
    return 1 << max(0, math.ceil(math.log2(1 / (2 * relative_accuracy))))


# -- the sketch ---------------------------------------------------------------------


def sketch_add(values: np.ndarray, k: int) -> dict[str, Any]:
    """The log-linear sketch of finite ``values``: {"pos": [[bucket, count]...], "neg": [...], "zero": n}."""
    out: dict[str, Any] = {"zero": int((values == 0).sum())}
    for sign, part in (("pos", values[values > 0]), ("neg", -values[values < 0])):
        m, e = np.frexp(part)  # part = m * 2**e, m in [0.5, 1): exact
        j = np.floor((m - 0.5) * (2 * k)).astype(np.int64)  # (m - 0.5) and * 2k (a power of two) are exact
        idx = e.astype(np.int64) * k + np.minimum(j, k - 1)
        buckets, counts = np.unique(idx, return_counts=True)
        out[sign] = [[int(b), int(c)] for b, c in zip(buckets, counts)]
    return out


def sketch_merge(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"zero": a["zero"] + b["zero"]}
    for sign in ("pos", "neg"):
        merged: dict[int, int] = {}
        for bucket, count in a[sign] + b[sign]:
            merged[bucket] = merged.get(bucket, 0) + count
        out[sign] = [[k, merged[k]] for k in sorted(merged)]
    return out


def bucket_value(bucket: int, k: int) -> float:
    """A bucket's representative |x| (the middle of [low, high))."""
    e, j = divmod(bucket, k)
    low = math.ldexp(0.5 + j / (2 * k), e)
    high = math.ldexp(0.5 + (j + 1) / (2 * k), e)
    return (low + high) / 2


def sketch_quantile(sketch: dict[str, Any], q: float, k: int, lo: float, hi: float) -> float | None:
    n = sketch["zero"] + sum(c for _, c in sketch["pos"]) + sum(c for _, c in sketch["neg"])
    if n == 0:
        return None
    rank = math.floor(q * (n - 1))
    seen = 0
    walk = [(-bucket_value(b, k), c) for b, c in reversed(sketch["neg"])] + [(0.0, sketch["zero"])]
    walk += [(bucket_value(b, k), c) for b, c in sketch["pos"]]
    for value, count in walk:
        seen += count
        if seen > rank:
            return min(max(value, lo), hi)
    return hi


# -- per-column partials ------------------------------------------------------------------


def hist_counts(values: np.ndarray, lo: float, hi: float, bins: int) -> tuple[list[int], int, int]:
    """numpy.histogram's bin placement (so counts match it exactly), plus values below/above the range."""
    inside = values[(values >= lo) & (values <= hi)]
    counts, _ = np.histogram(inside, bins=bins, range=(lo, hi))
    return [int(c) for c in counts], int((values < lo).sum()), int((values > hi).sum())


def column_partial(values: np.ndarray, missing: int, edges: tuple[float, float] | None, bins: int, k: int) -> dict[str, Any]:
    n = len(values)
    part: dict[str, Any] = {"n": n, "missing": missing}
    if n:
        values = np.ascontiguousarray(values, dtype=np.float64)
        # fsum over a memoryview: its floats are made one at a time, not as NumPy scalars or a list
        total = math.fsum(memoryview(values))
        mean = total / n
        part |= {
            "sum": total,
            "mean": mean,
            "m2": math.fsum(memoryview((values - mean) ** 2)),
            "min": float(values.min()),
            "max": float(values.max()),
        }
    else:
        part |= {"sum": 0.0, "mean": None, "m2": 0.0, "min": None, "max": None}
    if edges is not None:
        part["hist"], part["below"], part["above"] = hist_counts(values, edges[0], edges[1], bins)
    else:
        part["hist"], part["below"], part["above"] = [0] * bins, 0, 0
    part["edges"] = list(edges) if edges is not None else None
    part["sketch"] = sketch_add(values, k)
    return part


def merge_partials(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """Chan, Golub and LeVeque's pairwise update for mean and M2; everything else adds or compares."""
    if a["n"] == 0:
        return {**b, "missing": a["missing"] + b["missing"], "hist": [x + y for x, y in zip(a["hist"], b["hist"])],
                "below": a["below"] + b["below"], "above": a["above"] + b["above"], "sketch": sketch_merge(a["sketch"], b["sketch"])}
    if b["n"] == 0:
        return merge_partials(b, a)
    n = a["n"] + b["n"]
    delta = b["mean"] - a["mean"]
    return {
        "n": n,
        "missing": a["missing"] + b["missing"],
        "sum": a["sum"] + b["sum"],
        "mean": a["mean"] + delta * b["n"] / n,
        "m2": a["m2"] + b["m2"] + delta * delta * a["n"] * b["n"] / n,
        "min": min(a["min"], b["min"]),
        "max": max(a["max"], b["max"]),
        "hist": [x + y for x, y in zip(a["hist"], b["hist"])],
        "below": a["below"] + b["below"],
        "above": a["above"] + b["above"],
        "edges": a["edges"],
        "sketch": sketch_merge(a["sketch"], b["sketch"]),
    }


# -- reading rows -------------------------------------------------------------------------


def _number(text: str) -> float | None:
    s = text.strip()
    if s.lower() in MISSING:
        return None
    try:
        v = float(s)
    except ValueError:
        raise ValueError(f"{text!r} is not a number") from None
    if not math.isfinite(v):
        raise ValueError(f"{text!r} is not a finite number")
    return v


def csv_rows(records: Sequence[bytes], header: list[str], delimiter: str) -> list[dict[str, str] | ValueError]:
    """Each record as {column: text}, or the ValueError that says what is wrong with it.

    One C-speed ``csv.reader`` pass over all the records when they parse one
    row each (the usual case); record by record otherwise, to pin each error
    on its own row.
    """
    try:
        text = b"\n".join(records).decode("utf-8")
        rows = list(csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=True))
    except (UnicodeDecodeError, csv.Error):
        rows = []
    if len(rows) != len(records):
        out: list[dict[str, str] | ValueError] = []
        for rec in records:
            try:
                out.append(csv_row(rec, header, delimiter))
            except ValueError as exc:
                out.append(exc)
        return out
    width = len(header)
    return [
        dict(zip(header, r)) if len(r) == width else ValueError(f"bad CSV row: {len(r)} fields, the header has {width}")
        for r in rows
    ]


def csv_columns(records: Sequence[bytes], header: list[str], delimiter: str, columns: list[str]) -> tuple[dict[str, np.ndarray], dict[str, int], dict[int, str]]:
    """Parse CSV records: per column the values (float64) and missing counts, and the bad rows' reasons.

    A malformed row counts nowhere; a bad value is left out of its own column only."""
    return block_columns(b"\n".join(records), len(records), header, delimiter, columns, lambda: list(records))


def block_columns(
    block: bytes | pa.Buffer, n: int, header: list[str], delimiter: str, columns: list[str],
    records: Callable[[], Sequence[bytes]], threads: bool = False,
) -> tuple[dict[str, np.ndarray], dict[str, int], dict[int, str]]:
    """:func:`csv_columns` of ``n`` records joined by newlines into ``block``.

    pyarrow's CSV reader parses the block in one pass (malformed rows reported
    through its invalid-row handler, each by its row number; values typed in
    one cast per column). Records it cannot account for one row each (a quote
    left open, an empty line) are parsed one by one with the standard library
    (``records()``), to pin each error on its own row. With ``threads`` the
    reader uses every core but cannot number rows: the errors are then left out."""
    parsed = _arrow_table(block, n, header, delimiter, columns, threads)
    if parsed is None:
        return _python_columns(records(), header, delimiter, columns)
    table, errors = parsed
    good_rows: np.ndarray | None = None  # table row -> record index, made only when a value is bad
    values: dict[str, np.ndarray] = {}
    missing: dict[str, int] = {}
    bad: dict[int, list[str]] = {}
    for c in columns:
        values[c], missing[c], problems = column_numbers(table.column(c))
        if threads:
            continue
        if problems and good_rows is None:
            good_rows = np.delete(np.arange(n), sorted(errors))
        for row, reason in problems:
            bad.setdefault(int(good_rows[row]), []).append(f"column {c!r}: {reason}")  # type: ignore[index]
    if threads:
        return values, missing, {}
    for i, reasons in bad.items():
        errors[i] = "; ".join(reasons)
    return values, missing, dict(sorted(errors.items()))


def _arrow_table(
    block: bytes | pa.Buffer, n: int, header: list[str], delimiter: str, columns: list[str], threads: bool = False
) -> tuple[pa.Table, dict[int, str]] | None:
    """The records' ``columns`` as strings, one row per good record, and the malformed rows' reasons; None
    when the records do not parse one row each."""
    width = len(header)
    malformed: dict[int, str] = {}

    def invalid(row: Any) -> str:
        if row.number is None and not threads:  # never with one thread; without it no row could be named
            raise ValueError("a malformed row without a number")
        at = row.number - 1 if row.number is not None else -1 - len(malformed)
        malformed[at] = f"bad CSV row: {row.actual_columns} fields, the header has {width}"
        return "skip"

    if len(set(header)) != width or len(delimiter) != 1:
        return None
    try:
        table = pacsv.read_csv(
            block if isinstance(block, pa.Buffer) else pa.py_buffer(block),
            read_options=pacsv.ReadOptions(column_names=header, use_threads=threads),
            parse_options=pacsv.ParseOptions(delimiter=delimiter, newlines_in_values=True, invalid_row_handler=invalid),
            convert_options=pacsv.ConvertOptions(
                include_columns=columns, column_types=dict.fromkeys(columns, pa.string()),
                strings_can_be_null=False, quoted_strings_can_be_null=False, check_utf8=True,
            ),
        )
    except (pa.ArrowException, ValueError):
        return None
    if table.num_rows + len(malformed) != n:
        return None
    return table, malformed


#: what pyarrow's cast to float64 reads exactly as Python's float() does; anything else is read by float()
_PLAIN_NUMBER = r"^[-+]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][-+]?[0-9]+)?$"


def column_numbers(col: pa.ChunkedArray | pa.Array) -> tuple[np.ndarray, int, list[tuple[int, str]]]:
    """A string column's finite numbers, its count of missing values, and (row, reason) of the others.

    One cast per chunk when every value of the chunk is a plain finite number
    (a few bad values slow down their own chunk only, not the column); otherwise
    the plain ones are cast and only the rest go through :func:`_number` one by
    one (missing, a word, spaces around a number, ``inf``)."""
    chunks = col.chunks if isinstance(col, pa.ChunkedArray) else [col]
    kept: list[np.ndarray] = []
    n_missing = 0
    problems: list[tuple[int, str]] = []
    offset = 0
    for chunk in chunks:
        vals, missing, bad = _chunk_numbers(chunk)
        kept.append(vals)
        n_missing += missing
        problems += [(offset + row, reason) for row, reason in bad]
        offset += len(chunk)
    if not kept:
        return np.zeros(0, dtype=np.float64), 0, []
    return (kept[0] if len(kept) == 1 else np.concatenate(kept)), n_missing, problems


def _chunk_numbers(chunk: pa.Array) -> tuple[np.ndarray, int, list[tuple[int, str]]]:
    try:
        vals = pc.cast(chunk, pa.float64()).to_numpy(zero_copy_only=False)
        if np.isfinite(vals).all():
            return np.ascontiguousarray(vals, dtype=np.float64), 0, []
    except pa.ArrowInvalid:
        pass
    plain = np.array(pc.match_substring_regex(chunk, _PLAIN_NUMBER).to_numpy(zero_copy_only=False), dtype=bool)
    vals = pc.cast(chunk.filter(pa.array(plain)), pa.float64()).to_numpy(zero_copy_only=False)
    finite = np.isfinite(vals)
    if not finite.all():  # 1e999 is plain, and infinite
        plain[np.flatnonzero(plain)[~finite]] = False
        vals = vals[finite]
    rest = ~plain
    kept = [vals]
    n_missing = 0
    problems: list[tuple[int, str]] = []
    for row, text in zip(np.flatnonzero(rest).tolist(), chunk.filter(pa.array(rest)).to_pylist()):
        try:
            v = _number(text)
        except ValueError as exc:
            problems.append((row, str(exc)))
            continue
        if v is None:
            n_missing += 1
        else:
            kept.append(np.array([v]))
    return np.concatenate(kept).astype(np.float64, copy=False), n_missing, problems


def csv_block(dataset: Dataset, start: int, stop: int) -> tuple[pa.Buffer, np.ndarray]:
    """Records ``start:stop`` of a CSV dataset joined by newlines, and their offsets without the newlines.

    Joined by pyarrow straight from the dataset's buffer, with no Python object per record."""
    assert dataset.offsets is not None
    offs = dataset.offsets[start : stop + 1]
    rel = (offs - offs[0]).astype(np.int64)
    n = stop - start
    records = pa.LargeBinaryArray.from_buffers(
        pa.large_binary(), n, [None, pa.py_buffer(rel), pa.py_buffer(dataset.x[offs[0] : offs[-1]])]
    )
    joined = pc.binary_join(pa.LargeListArray.from_arrays(pa.array([0, n], pa.int64()), records),
                            pa.scalar(b"\n", pa.large_binary()))
    ends = np.frombuffer(joined.buffers()[1], dtype=np.int64, count=2)
    return joined.buffers()[2].slice(int(ends[0]), int(ends[1] - ends[0])), rel


def block_records(block: bytes | pa.Buffer, rel: np.ndarray) -> list[bytes]:
    """The records of a :func:`csv_block`, one by one again."""
    data = block.to_pybytes() if isinstance(block, pa.Buffer) else block
    return [data[rel[i] + i : rel[i + 1] + i] for i in range(len(rel) - 1)]


def _python_columns(records: Sequence[bytes], header: list[str], delimiter: str, columns: list[str]) -> tuple[dict[str, np.ndarray], dict[str, int], dict[int, str]]:
    values: dict[str, list[float]] = {c: [] for c in columns}
    missing = dict.fromkeys(columns, 0)
    errors: dict[int, str] = {}
    for i, row in enumerate(csv_rows(records, header, delimiter)):
        if isinstance(row, ValueError):
            errors[i] = str(row)
            continue
        bad = []
        for c in columns:
            try:
                v = _number(row[c])
            except ValueError as exc:
                bad.append(f"column {c!r}: {exc}")
                continue
            if v is None:
                missing[c] += 1
            else:
                values[c].append(v)
        if bad:
            errors[i] = "; ".join(bad)
    return {c: np.asarray(v, dtype=np.float64) for c, v in values.items()}, missing, errors


def numeric_table_columns(table: pa.Table) -> list[str]:
    return [f.name for f in table.schema if pa.types.is_integer(f.type) or pa.types.is_floating(f.type) or pa.types.is_decimal(f.type)]


def table_column(table: pa.Table, name: str) -> tuple[np.ndarray, int]:
    col = table.column(name).cast(pa.float64())
    arr = col.to_numpy(zero_copy_only=False).astype(np.float64, copy=False)
    keep = ~(np.isnan(arr) | np.isinf(arr)) if col.null_count == 0 else ~(np.asarray(col.is_null().to_numpy(zero_copy_only=False)) | np.isnan(arr))
    return arr[keep], int(len(arr) - keep.sum())


class StatsTask(TaskType):
    name = "stats"
    Params = StatsParams
    accepts = ("bytes", "table")
    # Reduced whole, not in pieces (streams): its rows are one per column, from the sketches of every
    # task merged, which no piece can write; and its outputs are those small sketches (and the bad
    # rows' reasons), not a row per item, so holding them all costs little.
    streams = False

    def split(self, dataset: Dataset, task_size: int, params: BaseModel) -> Iterator[tuple[bytes, int]]:
        assert isinstance(params, StatsParams)
        k = sketch_k(params.relative_accuracy)
        if dataset.kind == "bytes" and dataset.media == "csv":
            header = dataset.meta.get("header", [])
            delimiter = dataset.meta.get("delimiter", ",")
            n = len(dataset)
            block, _ = csv_block(dataset, 0, n)
            if params.columns is None:
                columns = self._numeric_csv_columns(block, n, header, delimiter, dataset.items)
            else:
                columns = self._check_columns(params.columns, header)
            values, _, _ = block_columns(block, n, header, delimiter, columns, dataset.items, threads=True)
            del block
            edges = self._edges(params, {c: v for c, v in values.items()})
            # a task's records travel as one block (and their offsets), parsed by pyarrow in one pass
            meta = {"format": "csv-block", "header": header, "delimiter": delimiter}

            def csv_chunks() -> Iterator[tuple[list[bytes], int]]:
                for a, b in dataset.ranges(task_size, params.task_bytes):
                    blk, rel = csv_block(dataset, a, b)
                    yield [blk.to_pybytes(), rel.astype("<u8").tobytes()], b - a

            chunks = csv_chunks()
        elif dataset.kind == "table":
            table = dataset.table()
            numeric = numeric_table_columns(table)
            columns = numeric if params.columns is None else self._check_columns(params.columns, numeric, "numeric ")
            edges = self._edges(params, {c: table_column(table, c)[0] for c in columns})
            meta = {"format": "parquet"}

            def parquet_chunks() -> Iterator[tuple[list[bytes], int]]:
                for a, b in dataset.ranges(task_size, params.task_bytes):
                    buf = io.BytesIO()
                    pq.write_table(table.slice(a, b - a).select(columns), buf)
                    yield [buf.getvalue()], b - a

            chunks = parquet_chunks()
        else:
            raise InvalidInput(
                f"stats needs a CSV or Parquet dataset (a file or a directory of shards), not a {dataset.kind} dataset"
                + (f" of {dataset.media}" if dataset.media else "")
            )
        if not columns:
            raise InvalidInput("stats found no numeric column; name them with params.columns")
        meta |= {"columns": columns, "edges": edges, "bins": params.bins, "k": k}
        for items, n in chunks:
            yield pack(items, meta), n

    @staticmethod
    def _check_columns(wanted: list[str], have: list[str], what: str = "") -> list[str]:
        unknown = [c for c in wanted if c not in have]
        if unknown:
            raise InvalidInput(f"no {what}column {', '.join(map(repr, unknown))} in the data; {what}columns: {', '.join(have) or 'none'}")
        return list(wanted)

    @staticmethod
    def _numeric_csv_columns(
        block: pa.Buffer, n: int, header: list[str], delimiter: str, records: Callable[[], Sequence[bytes]]
    ) -> list[str]:
        """Columns whose values are mostly numbers (a stray word is then a bad row, not a text column)."""
        parsed = _arrow_table(block, n, header, delimiter, header, threads=True)
        if parsed is not None:
            out = []
            for c in header:
                vals, _, problems = column_numbers(parsed[0].column(c))
                if len(vals) > 0 and len(vals) > len(problems):
                    out.append(c)
            return out
        numbers = dict.fromkeys(header, 0)
        words = dict.fromkeys(header, 0)
        for row in csv_rows(records(), header, delimiter):
            if isinstance(row, ValueError):
                continue
            for c, v in row.items():
                try:
                    if _number(v) is not None:
                        numbers[c] += 1
                except ValueError:
                    words[c] += 1
        return [c for c in header if numbers[c] > 0 and numbers[c] > words[c]]

    @staticmethod
    def _edges(params: StatsParams, values: dict[str, np.ndarray]) -> dict[str, list[float] | None]:
        edges: dict[str, list[float] | None] = {}
        for c, v in values.items():
            if params.ranges and c in params.ranges:
                edges[c] = list(params.ranges[c])
            elif len(v):
                lo, hi = float(v.min()), float(v.max())
                edges[c] = [lo, hi if hi > lo else lo + 1.0]
            else:
                edges[c] = None
        return edges

    def run(self, task_input: bytes, model: Any, params: BaseModel) -> dict[str, Any]:
        meta, items = unpack(task_input)
        columns, k, bins = meta["columns"], meta["k"], meta["bins"]
        errors: dict[int, str] = {}
        if meta["format"] == "csv-block":
            block, rel = items[0], np.frombuffer(items[1], dtype="<u8").astype(np.int64)
            n = len(rel) - 1
            values, missing, errors = block_columns(
                block, n, meta["header"], meta["delimiter"], columns, lambda: block_records(block, rel)
            )
            rows = n - sum(r.startswith("bad CSV") for r in errors.values())  # malformed rows only
        elif meta["format"] == "csv":  # records one by one (tasks split by earlier versions)
            values, missing, errors = csv_columns(items, meta["header"], meta["delimiter"], columns)
            rows = len(items) - sum(r.startswith("bad CSV") for r in errors.values())  # malformed rows only
        else:
            table = read_parquet(pa.BufferReader(items[0]), DatasetLimits())
            values, missing = {}, {}
            for c in columns:
                values[c], missing[c] = table_column(table, c)
            rows = table.num_rows
        partials = {
            c: column_partial(values[c], missing[c], tuple(meta["edges"][c]) if meta["edges"][c] else None, bins, k)
            for c in columns
        }
        return {"rows": rows, "columns": partials, "errors": item_errors(errors), "k": k}

    def canonical(self, output: dict[str, Any]) -> bytes:
        return orjson.dumps(output, option=orjson.OPT_SORT_KEYS)

    def decode(self, data: bytes) -> dict[str, Any]:
        return orjson.loads(data)

    def agree(self, a: dict[str, Any], b: dict[str, Any]) -> bool:
        if a["rows"] != b["rows"] or a["errors"] != b["errors"] or a["k"] != b["k"] or a["columns"].keys() != b["columns"].keys():
            return False
        for c, x in a["columns"].items():
            y = b["columns"][c]
            for key in ("n", "missing", "min", "max", "hist", "below", "above", "edges", "sketch"):
                if x[key] != y[key]:
                    return False
            for key in ("sum", "mean", "m2"):
                if (x[key] is None) != (y[key] is None):
                    return False
                if x[key] is not None and not math.isclose(x[key], y[key], rel_tol=FLOAT_REL, abs_tol=1e-300):
                    return False
        return True

    def reduce(self, outputs: Sequence[TaskOutput], dataset: Dataset, params: BaseModel, out: Path) -> dict[str, Any]:
        assert isinstance(params, StatsParams)
        merged: dict[str, dict[str, Any]] = {}
        bad_ids, bad_reasons = [], []
        rows = 0
        k = sketch_k(params.relative_accuracy)
        for o in sorted(outputs, key=lambda o: o.first_item):
            rows += o.output["rows"]
            k = o.output["k"]
            for i, reason in o.output["errors"]:
                # the ids of the bad rows only: a million rows' ids would cost more than the reduction
                bad_ids += dataset.item_ids(o.first_item + i, o.first_item + i + 1)
                bad_reasons.append(reason)
            for c, part in o.output["columns"].items():
                merged[c] = merge_partials(merged[c], part) if c in merged else part
        alpha = 1 / (2 * k)
        cols = list(merged)
        summary: dict[str, Any] = {}
        records = []
        for c in cols:
            m = merged[c]
            n = m["n"]
            quantiles = [
                {"q": q, "value": sketch_quantile(m["sketch"], q, k, m["min"], m["max"]) if n else None}
                for q in params.quantiles
            ]
            lo_hi = m.get("edges")
            rec = {
                "kind": "column",
                "column": c,
                "count": n,
                "missing": m["missing"],
                "sum": m["sum"],
                "mean": m["mean"],
                "variance": m["m2"] / (n - 1) if n > 1 else None,
                "variance_population": m["m2"] / n if n else None,
                "std": math.sqrt(m["m2"] / (n - 1)) if n > 1 else None,
                "min": m["min"],
                "max": m["max"],
                "quantiles": quantiles,
                "quantile_relative_error": alpha,
                "histogram_edges": np.linspace(lo_hi[0], lo_hi[1], params.bins + 1).tolist() if lo_hi else None,
                "histogram_counts": m["hist"],
                "below": m["below"],
                "above": m["above"],
                "item_id": None,
                "error": None,
            }
            records.append(rec)
            summary[c] = {key: rec[key] for key in ("count", "missing", "mean", "variance", "min", "max")} | {
                "quantiles": {str(q["q"]): q["value"] for q in quantiles}
            }
        for item_id, reason in zip(bad_ids, bad_reasons):
            records.append({"kind": "bad_item", "column": None, "item_id": item_id, "error": reason})
        schema = pa.schema(
            [
                ("kind", pa.string()), ("column", pa.string()), ("count", pa.int64()), ("missing", pa.int64()),
                ("sum", pa.float64()), ("mean", pa.float64()), ("variance", pa.float64()),
                ("variance_population", pa.float64()), ("std", pa.float64()), ("min", pa.float64()), ("max", pa.float64()),
                ("quantiles", pa.list_(pa.struct([("q", pa.float64()), ("value", pa.float64())]))),
                ("quantile_relative_error", pa.float64()),
                ("histogram_edges", pa.list_(pa.float64())), ("histogram_counts", pa.list_(pa.int64())),
                ("below", pa.int64()), ("above", pa.int64()), ("item_id", pa.string()), ("error", pa.string()),
            ]
        )
        pq.write_table(pa.Table.from_pylist(records, schema=schema), out)
        every = dataset.meta.get("header", []) if dataset.kind == "bytes" else dataset.table().column_names
        return {"rows": rows, "bad_items": len(bad_ids), "quantile_relative_error": alpha, "columns": summary,
                # not summarized (mostly not numbers, or not asked for): said, not dropped silently
                "text_columns": [c for c in every if c not in merged]}
