"""Files and directories as dataset items: images and PDF pages, text, CSV records, Parquet rows.

:func:`load_items` reads what :mod:`coopgrid.datasets` describes (a file or
a directory of one kind of file) into a :class:`~coopgrid.datasets.Dataset`
of byte items or a table, on the submitter's machine. Items are decoded by
the workers, so one corrupt file fails only its own item. Reading stops with
TooLarge as soon as the items or bytes read pass the limits
(:class:`coopgrid.limits.DatasetLimits`), and a PDF page too large to render
is kept as a one-page PDF whose worker says why.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from coopgrid.datasets import (
    ANY_IMAGE_SUFFIXES, CSV_SUFFIXES, PAGE_SEP, PARQUET_SUFFIXES, PDF_SUFFIXES, TEXT_SUFFIXES, Dataset,
    produced_dataset,
)
from coopgrid.errors import DatasetError, TooLarge
from coopgrid.limits import Budget, DatasetLimits, lines, pdf_page_pixels, read_parquet


def _category(p: Path) -> str | None:
    s = p.suffix.lower()
    if s in ANY_IMAGE_SUFFIXES or s in PDF_SUFFIXES:
        return "image"
    if s in TEXT_SUFFIXES or s == ".jsonl":
        return "text"
    if s in CSV_SUFFIXES:
        return "csv"
    if s in PARQUET_SUFFIXES:
        return "table"
    return None


def _open_pdf(data: bytes) -> Any:
    try:
        import pypdfium2 as pdfium
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise ValueError("PDF pages need pypdfium2 (pip install 'coopgrid[ocr]')") from exc
    try:
        return pdfium.PdfDocument(data)
    except Exception as exc:  # pdfium raises its own PdfiumError
        raise ValueError(f"cannot open the PDF: {exc}") from exc


def render_page(pdf: Any, i: int, dpi: int = 200) -> bytes:
    """Page ``i`` of an open PDF as a grayscale PNG; ValueError if it would render past MAX_ITEM_PIXELS."""
    page = pdf[i]
    try:
        pdf_page_pixels(page, dpi / 72, i + 1)
        image = page.render(scale=dpi / 72, grayscale=True).to_pil()
        buf = io.BytesIO()
        image.convert("L").save(buf, format="PNG")
        return buf.getvalue()
    finally:
        page.close()


def first_pdf_page(data: bytes, dpi: int = 200) -> bytes:
    """A PDF's first page as a grayscale PNG (the others are not rendered). Raises ValueError."""
    pdf = _open_pdf(data)
    try:
        if len(pdf) == 0:
            raise ValueError("the PDF has no pages")
        return render_page(pdf, 0, dpi)
    finally:
        pdf.close()


def render_pdf(data: bytes, dpi: int = 200, max_pages: int | None = None) -> list[bytes]:
    """Each page of a PDF (the first ``max_pages``) as a grayscale PNG (pypdfium2, a pip-only wheel).

    A page too large to render (see :func:`render_page`) is kept as a one-page
    PDF, so the worker given it reports why. Raises ValueError.
    """
    pdf = _open_pdf(data)
    pages = []
    try:
        for i in range(len(pdf) if max_pages is None else min(len(pdf), max_pages)):
            try:
                pages.append(render_page(pdf, i, dpi))
            except ValueError:
                import pypdfium2 as pdfium

                one = pdfium.PdfDocument.new()
                one.import_pages(pdf, [i])
                buf = io.BytesIO()
                one.save(buf)
                one.close()
                pages.append(buf.getvalue())
    finally:
        pdf.close()
    return pages


def _read(f: Path, budget: Budget) -> bytes:
    budget.expect(1, f.stat().st_size, f.name)
    return f.read_bytes()


def _image_items(files: list[Path], root: Path, pdf_dpi: int, budget: Budget) -> tuple[list[bytes], list[str]]:
    items, ids = [], []
    for f in files:
        name = str(f.relative_to(root)) if f != root else f.name
        data = _read(f, budget)
        if f.suffix.lower() in PDF_SUFFIXES:
            try:
                # one page past what the budget allows, to refuse the document rather than cut it
                pages = render_pdf(data, pdf_dpi, max_pages=budget.limits.max_items - budget.items + 1)
            except ValueError:
                pages = []
            for page in pages:
                budget.take(len(page), name)
            if pages:
                items += pages
                ids += [f"{name}{PAGE_SEP}{k + 1}" for k in range(len(pages))]
                continue
            # unreadable (or no renderer): the whole file goes as one item and its worker says why
        budget.take(len(data), name)
        items.append(data)
        ids.append(name)
    return items, ids


def _text_items(files: list[Path], root: Path, budget: Budget) -> tuple[list[bytes], list[str]]:
    items, ids = [], []
    if len(files) == 1 and root.is_file():
        f = files[0]
        if f.suffix.lower() == ".jsonl":
            for n, line in enumerate(lines(_read(f, budget)), 1):
                if not line.strip():
                    continue
                try:
                    rec = orjson.loads(line)  # not json.loads: see coopgrid.limits.npz_meta
                    text, item_id = rec["text"], str(rec.get("id", f"{f.name}:{n}"))
                    items.append(text.encode("utf-8"))
                except (ValueError, KeyError, TypeError, AttributeError):
                    items.append(line)  # kept raw: its worker reports it
                    item_id = f"{f.name}:{n}"
                budget.take(len(items[-1]), f.name)
                ids.append(item_id)
        else:
            for n, line in enumerate(lines(_read(f, budget)), 1):
                if line.strip():
                    budget.take(len(line), f.name)
                    items.append(line)
                    ids.append(f"{f.name}:{n}")
        return items, ids
    for f in files:
        items.append(_read(f, budget))
        budget.take(len(items[-1]), f.name)
        ids.append(str(f.relative_to(root)))
    return items, ids


def csv_records(data: bytes, budget: Budget | None = None, name: str = "") -> list[tuple[int, bytes]]:
    """Split CSV bytes into records (a quoted field may hold newlines): (line number, record bytes).

    ``budget`` counts each record after the first (the header) as it is found.
    """
    records: list[tuple[int, bytes]] = []
    pending: list[bytes] = []
    start = 0
    quotes = 0
    for n, line in enumerate(lines(data), 1):
        if not pending:
            start = n
        pending.append(line)
        quotes += line.count(b'"')
        if quotes % 2 == 0:
            rec = b"\n".join(pending)
            if rec.strip():
                if budget is not None and records:
                    budget.take(len(rec), name)
                records.append((start, rec))
            pending, quotes = [], 0
    if pending:
        records.append((start, b"\n".join(pending)))  # an unterminated quote: its worker reports it
    return records


_WHITESPACE = np.zeros(256, dtype=bool)
_WHITESPACE[list(b" \t\n\r\x0b\x0c")] = True  # what bytes.strip() strips


def csv_spans(data: bytes) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """:func:`csv_records` of ``data`` as arrays, with no Python object per record: each record's
    (start, end) in ``data`` and its first line's number; None when ``data`` holds a carriage
    return (a line may then end three ways: :func:`csv_records` reads it).

    A record ends with the line that leaves an even number of quotes since the file's start, so
    a quoted field's newlines stay inside its record; blank records are left out."""
    if b"\r" in data:
        return None
    arr = np.frombuffer(data, dtype=np.uint8)
    nl = np.flatnonzero(arr == 10)
    starts = np.concatenate([[0], nl + 1])
    ends = np.concatenate([nl, [len(arr)]])
    if starts[-1] == ends[-1]:  # no line after the last newline (or no data)
        starts, ends = starts[:-1], ends[:-1]
    if not len(starts):
        return starts, ends, starts
    quotes = np.flatnonzero(arr == 34)
    closed = np.searchsorted(quotes, ends) % 2 == 0  # the quotes opened so far are all closed at this line's end
    closed[-1] = True  # an open quote at the end: what is pending is one last record (its worker says why)
    last = np.flatnonzero(closed)
    first = np.concatenate([[0], last[:-1] + 1])
    rec_start, rec_end = starts[first], ends[last]
    # a record's span and the newline after it: any byte that is not whitespace keeps the record
    keep = np.logical_or.reduceat(~_WHITESPACE[arr], rec_start) & (rec_end > rec_start)
    return rec_start[keep], rec_end[keep], first[keep] + 1


def _gather(data: bytes, starts: np.ndarray, ends: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The spans ``starts[i]:ends[i]`` of ``data`` end to end, and their offsets (n + 1)."""
    arr = np.frombuffer(data, dtype=np.uint8)
    lengths = (ends - starts).astype(np.int64)
    offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    # +1 where a span starts, -1 where one ends: inside a span the running sum is 1 (spans never overlap)
    mark = np.zeros(len(arr) + 1, dtype=np.int8)
    mark[starts] += 1
    mark[ends] -= 1
    return arr[np.cumsum(mark[:-1], dtype=np.int8) > 0], offsets


def _csv_dataset(files: list[Path], root: Path, budget: Budget) -> Dataset:
    import csv

    xs, offs, ids = [], [], []
    header: list[str] | None = None
    delimiter = "\t" if files[0].suffix.lower() == ".tsv" else ","
    total = 0
    for f in files:
        name = str(f.relative_to(root)) if f != root else f.name
        data = _read(f, budget)
        spans = csv_spans(data)
        if spans is None:
            records = csv_records(data, budget, name)
            if not records:
                continue
            first = records[0][1]
            body = [rec for _, rec in records[1:]]
            x = np.frombuffer(b"".join(body), dtype=np.uint8)
            offsets = np.zeros(len(body) + 1, dtype=np.int64)
            np.cumsum([len(r) for r in body], out=offsets[1:])
            line_numbers = np.array([line for line, _ in records[1:]], dtype=np.int64)
        else:
            starts, ends, line_numbers = spans
            if not len(starts):
                continue
            first = data[starts[0] : ends[0]]
            starts, ends, line_numbers = starts[1:], ends[1:], line_numbers[1:]
            budget.take(int((ends - starts).sum()), name, len(starts))  # as csv_records counts them
            x, offsets = _gather(data, starts, ends)
        try:
            this = next(csv.reader([first.decode("utf-8-sig")], delimiter=delimiter))
        except (UnicodeDecodeError, csv.Error) as exc:
            raise DatasetError(f"cannot read the header of {name}: {exc}") from exc
        if header is None:
            header = this
        elif this != header:
            raise DatasetError(f"{name}'s header {this} differs from the first shard's {header}")
        xs.append(x)
        offs.append(offsets[1:] + total)
        total += int(offsets[-1])
        # "file:line" as UTF-8 bytes, the form Dataset.to_npz stores ids in
        width = len(str(int(line_numbers.max()))) if len(line_numbers) else 1
        ids.append(np.strings.add(np.bytes_(f"{name}:".encode()), line_numbers.astype(f"S{width}")))
    if header is None or not sum(len(o) for o in offs):
        raise DatasetError(f"{root} holds no CSV records")
    offsets = np.concatenate([np.zeros(1, dtype=np.int64), *offs])
    return Dataset(
        x=np.concatenate(xs) if xs else np.zeros(0, dtype=np.uint8), ids=np.concatenate(ids), offsets=offsets,
        kind="bytes", media="csv", meta={"header": header, "delimiter": delimiter},
    )


def load_items(path: Path | str, pdf_dpi: int = 200, limits: DatasetLimits | None = None) -> Dataset:
    """A file or directory of images/PDFs, text, CSV or Parquet as items (see the module docstring).

    Refused (TooLarge) as soon as what is read passes ``limits`` (default:
    :meth:`DatasetLimits.from_env`).
    """
    import pyarrow as pa

    limits = limits or DatasetLimits.from_env()
    budget = Budget(limits)
    root = Path(path)
    if root.is_dir():
        files = sorted(p for p in root.rglob("*") if p.is_file() and _category(p) is not None)
    elif root.is_file():
        files = [root]
    else:
        raise DatasetError(f"no such file or directory: {root}")
    cats = {_category(p) for p in files} - {None}
    if not cats:
        raise DatasetError(
            f"{root} holds no images, PDFs, text, CSV or Parquet files "
            f"(suffixes: {', '.join(sorted(ANY_IMAGE_SUFFIXES | PDF_SUFFIXES | TEXT_SUFFIXES | CSV_SUFFIXES | PARQUET_SUFFIXES))})"
        )
    if len(cats) > 1:
        raise DatasetError(f"{root} mixes {' and '.join(sorted(c for c in cats if c))} files; give one kind per dataset")
    cat = cats.pop()
    if cat == "image":
        items, ids = _image_items(files, root, pdf_dpi, budget)
        return Dataset.from_items(items, "image", ids)
    if cat == "text":
        items, ids = _text_items(files, root, budget)
        return Dataset.from_items(items, "text", ids)
    if cat == "csv":
        return _csv_dataset(files, root, budget)
    # parquet: one table; a preprocess job's output becomes its items again
    tables, ids = [], []
    for f in files:
        name = str(f.relative_to(root)) if root.is_dir() else f.name
        try:
            t = read_parquet(f, limits)
        except (DatasetError, TooLarge) as exc:  # name the file
            raise type(exc)(f"{name}: {exc.message}", **exc.data) from exc
        budget.take(t.nbytes, name, t.num_rows)
        tables.append(t)
        if "item_id" not in t.column_names:
            ids += [f"{name}:{i}" for i in range(t.num_rows)]
    try:
        table = pa.concat_tables(tables) if len(tables) > 1 else tables[0]
    except pa.ArrowInvalid as exc:
        raise DatasetError(f"the Parquet shards in {root} do not share one schema: {exc}") from exc
    produced = from_preprocess_output(table)
    if produced is not None:
        return produced
    if "item_id" in table.column_names:
        ids = [str(v) for v in table.column("item_id").to_pylist()]
    return Dataset.from_table(table, ids)


def from_preprocess_output(table: Any) -> Dataset | None:
    """A ``preprocess`` job's output (kept, decodable rows) as a dataset, or None if it is not one."""
    meta = table.schema.metadata or {}
    media = meta.get(b"coopgrid.media")
    if media is None or "data" not in table.column_names:
        return None
    cols = table.to_pydict()
    keep = [
        i
        for i in range(table.num_rows)
        if cols["data"][i] is not None and not cols.get("error", [None] * table.num_rows)[i]
        and not cols.get("duplicate_of", [None] * table.num_rows)[i]
    ]
    if not keep:
        raise DatasetError("the preprocess output has no usable items (every row failed or was a duplicate)")
    return produced_dataset([str(cols["item_id"][i]) for i in keep], [cols["data"][i] for i in keep], media.decode())
