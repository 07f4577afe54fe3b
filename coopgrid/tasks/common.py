"""Helpers the built-in task types share: decoding items, edit distance, bundles."""

from __future__ import annotations

import io
from typing import Any

from coopgrid.datasets import pack, unpack
from coopgrid.limits import open_image

__all__ = ["onnx_session", "OPTIMIZATION_LEVELS", "decode_image", "decode_text", "levenshtein", "normalized_distance", "pack", "unpack", "items_input"]


#: ONNX Runtime's graph optimisation levels by the names platform reports and benchmarks use
OPTIMIZATION_LEVELS = ("disable_all", "basic", "extended", "all")


def onnx_session(
    model_bytes: bytes, threads: int = 1, optimization: str = "all", config: dict[str, str] | None = None
) -> Any:
    """An ONNX Runtime CPU session as workers run it, or with other settings (bench/platform_variation.py).

    One intra-op thread by default: a worker process is one unit of the grid, and several
    workers (and the coordinator) share the machine's cores. ``optimization`` is one of
    :data:`OPTIMIZATION_LEVELS`; ``config`` holds session config entries (e.g.
    ``session.disable_prepacking``).
    """
    import onnxruntime as ort

    levels = {
        "disable_all": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    }
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.graph_optimization_level = levels[optimization]
    for key, value in (config or {}).items():
        opts.add_session_config_entry(key, value)
    return ort.InferenceSession(model_bytes, sess_options=opts, providers=["CPUExecutionProvider"])


def items_input(data: bytes, media: tuple[str, ...] | None = None) -> tuple[dict[str, Any], list[bytes]]:
    """A task input made by :func:`coopgrid.tasks.base.split_items`, checked for its media."""
    meta, items = unpack(data)
    if media is not None and meta.get("media") not in media:
        raise ValueError(f"this task takes {' or '.join(media)} items, not {meta.get('media')!r}")
    return meta, items


def decode_image(data: bytes) -> Any:
    """Bytes of an image (or a PDF: its first page) as a loaded PIL image. Raises ValueError with the reason.

    Images larger than :data:`coopgrid.limits.MAX_ITEM_PIXELS` (a PDF page:
    once rendered) are refused from their header, before they are decoded.
    """
    if data[:5] == b"%PDF-":
        from coopgrid.dataset_files import first_pdf_page

        data = first_pdf_page(data)
    return open_image(data)


def decode_text(data: bytes) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"not UTF-8 text: {exc}") from exc


def levenshtein(a: str, b: str) -> int:
    """Edit distance (insertions, deletions, substitutions), bit-parallel (Myers/Hyyrö) on Python ints."""
    if a == b:
        return 0
    if len(a) < len(b):
        a, b = b, a
    m = len(b)
    if m == 0:
        return len(a)
    peq: dict[str, int] = {}
    for i, c in enumerate(b):
        peq[c] = peq.get(c, 0) | (1 << i)
    mask = (1 << m) - 1
    high = 1 << (m - 1)
    pv, mv, score = mask, 0, m
    for c in a:
        eq = peq.get(c, 0)
        xv = eq | mv
        xh = (((eq & pv) + pv) ^ pv) | eq
        ph = mv | (~(xh | pv) & mask)
        mh = pv & xh
        if ph & high:
            score += 1
        elif mh & high:
            score -= 1
        ph = ((ph << 1) | 1) & mask
        mh = (mh << 1) & mask
        pv = mh | (~(xv | ph) & mask)
        mv = ph & xv
    return score


def normalized_distance(a: str, b: str) -> float:
    """Edit distance over the longer string's length: 0 same, 1 nothing in common."""
    longest = max(len(a), len(b))
    return levenshtein(a, b) / longest if longest else 0.0


def csv_row(record: bytes, header: list[str], delimiter: str = ",") -> dict[str, str]:
    """One CSV record (bytes) as {column: value}; ValueError says what is wrong with it."""
    import csv

    try:
        rows = list(csv.reader(io.StringIO(decode_text(record), newline=""), delimiter=delimiter, strict=True))
    except csv.Error as exc:
        raise ValueError(f"bad CSV record: {exc}") from None
    if len(rows) != 1:
        raise ValueError(f"bad CSV record: it parses as {len(rows)} rows")
    row = rows[0]
    if len(row) != len(header):
        raise ValueError(f"bad CSV row: {len(row)} fields, the header has {len(header)}")
    return dict(zip(header, row))


def split_texts(dataset: Any, task_size: int, params: Any, column: str | None, what: str) -> Any:
    """Text items for text task types: text files/lines, a CSV column, or a table's string column.

    Yields (bundle, n) like :func:`coopgrid.tasks.base.split_items`; the worker
    reads them back with :func:`input_texts`.
    """
    from coopgrid.errors import InvalidInput
    from coopgrid.tasks.base import split_items

    if dataset.kind == "bytes" and dataset.media == "text":
        yield from split_items(dataset, task_size, params)
        return
    if dataset.kind == "bytes" and dataset.media == "csv":
        header = dataset.meta.get("header", [])
        if column is None or column not in header:
            raise InvalidInput(f"{what} over a CSV needs params.column, one of: {', '.join(header)}")
        yield from split_items(
            dataset, task_size, params, {"header": header, "delimiter": dataset.meta.get("delimiter", ","), "column": column}
        )
        return
    if dataset.kind == "table":
        import pyarrow as pa

        table = dataset.table()
        strings = [f.name for f in table.schema if pa.types.is_string(f.type) or pa.types.is_large_string(f.type)]
        if column is None or column not in strings:
            raise InvalidInput(f"{what} over a table needs params.column, one of its text columns: {', '.join(strings) or 'none'}")
        values = table.column(column).to_pylist()
        max_bytes = getattr(params, "task_bytes", None)
        for start, stop in dataset.ranges(task_size, max_bytes):
            chunk = values[start:stop]
            nulls = [i for i, v in enumerate(chunk) if v is None]
            yield pack([(v or "").encode("utf-8") for v in chunk], {"media": "text", "nulls": nulls}), stop - start
        return
    raise InvalidInput(
        f"{what} needs text: a directory of text files, a .txt/.jsonl file, or a CSV/Parquet file with params.column; "
        f"not a {dataset.kind} dataset" + (f" of {dataset.media}" if dataset.media else "")
    )


def input_texts(data: bytes) -> list[str | ValueError]:
    """Each item of a :func:`split_texts` bundle as its text, or the ValueError that says why not."""
    meta, items = items_input(data, ("text", "csv"))
    nulls = set(meta.get("nulls", []))
    out: list[str | ValueError] = []
    for i, raw in enumerate(items):
        try:
            if i in nulls:
                raise ValueError("no text (null)")
            if meta["media"] == "csv":
                out.append(csv_row(raw, meta["header"], meta.get("delimiter", ","))[meta["column"]])
            else:
                out.append(decode_text(raw))
        except ValueError as exc:
            out.append(exc)
    return out
