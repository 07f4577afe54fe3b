"""Datasets: what a job's items are, and how a submitter names them.

A dataset travels to the coordinator as one .npz blob (never pickled). It has
one of three kinds:

* ``array`` (the original form): ``x`` holds one numeric row per item;
* ``bytes``: variable-length items (encoded images, text, CSV records) stored
  as a flat ``uint8`` array ``x`` plus ``offsets`` (``n + 1`` int64 positions
  into ``x``); ``media`` says what they are (``image``, ``text``, ``csv``);
* ``table``: ``x`` holds the bytes of one Parquet file, one row per item.

Any kind may carry ``y`` (ground truth: labels, or the true text of an OCR
image; used only for the job's accuracy figures) and ``ids`` (item ids;
default ``item-<n>``). ``meta`` (stored as JSON text) holds what a kind needs
besides, e.g. a CSV file's header.

Names a submitter can give (``coopgrid submit --dataset ...``):

* ``digits``: scikit-learn's bundled 8x8 digits (1,797 images);
* ``digits:N``: N digit images, the set repeated with small deterministic
  augmentations (seeded noise and contrast jitter), e.g. ``digits:20000``;
* ``sequence:N``: the integers 0..N-1, one per item (for ``echo``);
* a ``.npz`` file written by :meth:`Dataset.to_npz` (or any .npz with ``x``);
* through :func:`load_items` / :func:`load_for_task`: a file or directory of
  images (PNG, JPEG, TIFF, BMP, WebP, GIF), PDFs (each page rendered to a PNG
  page image with pypdfium2 when it is installed, else kept whole), text files
  (a directory: one item per file; a ``.txt`` file: one item per non-empty
  line; ``.jsonl``: one item per line's ``text``), CSV files (one item per
  record, the header kept once) and Parquet files (one item per row); a
  directory of CSV or Parquet shards is read as one table;
* the Parquet output of a ``preprocess`` job (its ``data`` column holds the
  produced items), so one job's output is the next job's dataset.

Items are decoded on the workers, not here: a corrupt image or a bad CSV row
is reported for that item in the job's output, and the other items go on.
(:func:`images_dir`, the digits classifier's original path, still decodes
at load and refuses a corrupt image.)
"""

from __future__ import annotations

import io
import json
import struct
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from coopgrid.errors import DatasetError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg"}
#: files read as image items (decoded by the workers)
ANY_IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp", ".gif"}
PDF_SUFFIXES = {".pdf"}
TEXT_SUFFIXES = {".txt", ".md", ".text"}
CSV_SUFFIXES = {".csv", ".tsv"}
PARQUET_SUFFIXES = {".parquet", ".pq"}
KINDS = ("array", "bytes", "table")
#: ids of rendered PDF pages: ``<file>#page=<n>``; the part before ``#`` names the document
PAGE_SEP = "#page="


@dataclass
class Dataset:
    x: np.ndarray
    y: np.ndarray | None = None
    ids: np.ndarray | None = None
    #: ``bytes`` kind: ``n + 1`` offsets into the flat uint8 ``x``
    offsets: np.ndarray | None = None
    kind: str = "array"
    #: what ``bytes`` items are: image, text, csv (free-form for plugins)
    media: str = ""
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise DatasetError(f"unknown dataset kind {self.kind!r}; one of {', '.join(KINDS)}")
        if self.kind == "bytes":
            if self.offsets is None:
                raise DatasetError("a bytes dataset needs offsets (n + 1 positions into x)")
            self.offsets = np.asarray(self.offsets, dtype=np.int64)
            if self.x.dtype != np.uint8 or self.x.ndim != 1:
                raise DatasetError("a bytes dataset's x must be a flat uint8 array")
            if (
                self.offsets.ndim != 1
                or len(self.offsets) < 2
                or self.offsets[0] != 0
                or self.offsets[-1] != len(self.x)
                or (np.diff(self.offsets) < 0).any()
            ):
                raise DatasetError("the dataset's offsets do not describe its bytes (need 0 = o[0] <= ... <= o[n] = len(x))")
        elif self.kind == "table":
            if "rows" not in self.meta:
                self.meta["rows"] = self.table().num_rows
        n = len(self)
        if n == 0 or (self.kind == "array" and self.x.ndim < 1):
            raise DatasetError("the dataset has no items")
        for name, arr in (("y", self.y), ("ids", self.ids)):
            if arr is not None and len(arr) != n:
                raise DatasetError(f"the dataset's {name} has {len(arr)} entries for {n} items")

    def __len__(self) -> int:
        if self.kind == "bytes":
            assert self.offsets is not None
            return len(self.offsets) - 1
        if self.kind == "table":
            return int(self.meta["rows"])
        return len(self.x)

    def item_ids(self) -> list[str]:
        if self.ids is not None:
            return [str(i) for i in self.ids]
        return [f"item-{i}" for i in range(len(self))]

    # -- bytes items ------------------------------------------------------------

    @classmethod
    def from_items(
        cls,
        items: Sequence[bytes],
        media: str,
        ids: Sequence[str] | None = None,
        y: np.ndarray | Sequence[Any] | None = None,
        meta: dict[str, Any] | None = None,
    ) -> Dataset:
        if not items:
            raise DatasetError("the dataset has no items")
        offsets = np.zeros(len(items) + 1, dtype=np.int64)
        offsets[1:] = np.cumsum([len(i) for i in items])
        flat = np.frombuffer(b"".join(items), dtype=np.uint8).copy()
        return cls(
            x=flat,
            y=None if y is None else np.asarray(y),
            ids=None if ids is None else np.asarray(list(ids), dtype=str),
            offsets=offsets,
            kind="bytes",
            media=media,
            meta=dict(meta or {}),
        )

    def item(self, i: int) -> bytes:
        if self.kind != "bytes":
            raise DatasetError(f"item(): a {self.kind} dataset has no byte items")
        assert self.offsets is not None
        return self.x[self.offsets[i] : self.offsets[i + 1]].tobytes()

    def items(self, start: int = 0, stop: int | None = None) -> list[bytes]:
        stop = len(self) if stop is None else stop
        return [self.item(i) for i in range(start, stop)]

    # -- tables -----------------------------------------------------------------

    @classmethod
    def from_table(cls, table: Any, ids: Sequence[str] | None = None, y: Any = None, meta: dict | None = None) -> Dataset:
        import pyarrow.parquet as pq

        if table.num_rows == 0:
            raise DatasetError("the dataset has no items")
        buf = io.BytesIO()
        pq.write_table(table, buf)
        return cls(
            x=np.frombuffer(buf.getvalue(), dtype=np.uint8).copy(),
            y=None if y is None else np.asarray(y),
            ids=None if ids is None else np.asarray(list(ids), dtype=str),
            kind="table",
            media="parquet",
            meta={**(meta or {}), "rows": table.num_rows},
        )

    def table(self) -> Any:
        """The rows of a ``table`` dataset as a pyarrow Table."""
        import pyarrow.parquet as pq

        if self.kind != "table":
            raise DatasetError(f"table(): a {self.kind} dataset is not a table")
        cached = self.__dict__.get("_table")
        if cached is None:
            cached = pq.read_table(io.BytesIO(self.x.tobytes()))
            self.__dict__["_table"] = cached
        return cached

    # -- splitting --------------------------------------------------------------

    def item_sizes(self) -> np.ndarray:
        """Bytes per item (a per-row estimate for tables)."""
        n = len(self)
        if self.kind == "bytes":
            assert self.offsets is not None
            return np.diff(self.offsets)
        if self.kind == "table":
            return np.full(n, max(1, self.table().nbytes // n), dtype=np.int64)
        return np.full(n, max(1, self.x[:1].nbytes), dtype=np.int64)

    def ranges(self, task_size: int, max_bytes: int | None = None) -> Iterator[tuple[int, int]]:
        """``[start, stop)`` item ranges: at most ``task_size`` items and (when given)
        ``max_bytes`` bytes each, but never fewer than one item."""
        if task_size < 1:
            raise DatasetError("task_size must be at least 1")
        n = len(self)
        if max_bytes is None:
            for start in range(0, n, task_size):
                yield start, min(start + task_size, n)
            return
        ends = np.cumsum(self.item_sizes())
        start = 0
        while start < n:
            base = int(ends[start - 1]) if start else 0
            # the last item whose end still fits in max_bytes from here
            fit = int(np.searchsorted(ends, base + max_bytes, side="right"))
            stop = min(max(fit, start + 1), start + task_size, n)
            yield start, stop
            start = stop

    # -- the blob ---------------------------------------------------------------

    def to_npz(self) -> bytes:
        buf = io.BytesIO()
        arrays: dict[str, np.ndarray] = {"x": self.x}
        if self.y is not None:
            arrays["y"] = self.y.astype(str) if self.y.dtype == object else self.y
        if self.ids is not None:
            arrays["ids"] = self.ids.astype(str)
        if self.kind != "array":
            arrays["kind"] = np.array(self.kind)
            arrays["media"] = np.array(self.media)
            if self.offsets is not None:
                arrays["offsets"] = self.offsets
        if self.meta:
            arrays["meta"] = np.array(json.dumps(self.meta, sort_keys=True))
        np.savez(buf, **arrays)
        return buf.getvalue()

    @classmethod
    def from_npz(cls, data: bytes | Path) -> Dataset:
        try:
            with np.load(io.BytesIO(data) if isinstance(data, bytes) else data, allow_pickle=False) as npz:
                if "x" not in npz:
                    raise DatasetError("the .npz has no array named 'x' (one row per item)")
                return cls(
                    x=npz["x"],
                    y=npz["y"] if "y" in npz else None,
                    ids=npz["ids"] if "ids" in npz else None,
                    offsets=npz["offsets"] if "offsets" in npz else None,
                    kind=str(npz["kind"]) if "kind" in npz else "array",
                    media=str(npz["media"]) if "media" in npz else "",
                    meta=json.loads(str(npz["meta"])) if "meta" in npz else {},
                )
        except (ValueError, OSError, EOFError) as exc:
            raise DatasetError(f"cannot read the dataset as .npz: {exc}") from exc


# -- task input bundles ---------------------------------------------------------------

BUNDLE_MAGIC = b"CGB1"


def pack(items: Sequence[bytes], meta: dict[str, Any] | None = None) -> bytes:
    """Several byte items plus a JSON header in one deterministic blob (a task's input or output).

    Layout: ``CGB1``, u32 header length, u32 item count, the header (sorted-key
    JSON), ``n + 1`` little-endian u64 offsets, the items back to back.
    """
    import orjson

    head = orjson.dumps(meta or {}, option=orjson.OPT_SORT_KEYS | orjson.OPT_SERIALIZE_NUMPY)
    offsets = np.zeros(len(items) + 1, dtype="<u8")
    if items:
        offsets[1:] = np.cumsum([len(i) for i in items])
    return b"".join([BUNDLE_MAGIC, struct.pack("<II", len(head), len(items)), head, offsets.tobytes(), *items])


def unpack(data: bytes) -> tuple[dict[str, Any], list[bytes]]:
    """Inverse of :func:`pack`; raises ValueError on anything else."""
    import orjson

    if data[:4] != BUNDLE_MAGIC or len(data) < 12:
        raise ValueError("not a coopgrid bundle (no CGB1 header)")
    head_len, n = struct.unpack_from("<II", data, 4)
    pos = 12 + head_len
    meta = orjson.loads(data[12:pos])
    end = pos + 8 * (n + 1)
    if len(data) < end:
        raise ValueError("truncated bundle")
    offsets = np.frombuffer(data[pos:end], dtype="<u8").astype(np.int64)
    body = memoryview(data)[end:]
    if offsets[-1] != len(body):
        raise ValueError("bundle offsets do not match its size")
    return meta, [bytes(body[offsets[i] : offsets[i + 1]]) for i in range(n)]


# -- named and synthetic datasets ---------------------------------------------------------


def digits(n: int | None = None) -> Dataset:
    """scikit-learn's digits; with ``n``, repeated with deterministic augmentations."""
    from sklearn.datasets import load_digits

    d = load_digits()
    images = d.images.astype(np.float32)  # (1797, 8, 8), values 0..16
    labels = d.target.astype(np.int64)
    if n is None:
        return Dataset(images.reshape(len(images), -1), labels, np.array([f"digits-{i}" for i in range(len(images))]))
    if n < 1:
        raise DatasetError("digits:N needs N >= 1")
    base = len(images)
    copies = -(-n // base)
    xs, ys, ids = [], [], []
    for k in range(copies):
        copy = augment(images, k) if k else images  # copy 0 is the original
        xs.append(copy.reshape(base, -1))
        ys.append(labels)
        ids.extend(f"digits-{k}-{i}" for i in range(base))
    return Dataset(np.concatenate(xs)[:n], np.concatenate(ys)[:n], np.array(ids[:n]))


def augment(images: np.ndarray, seed: int) -> np.ndarray:
    """Seeded noise and contrast jitter on 0..16 digit images (any shape)."""
    rng = np.random.default_rng(seed)
    contrast = rng.uniform(0.85, 1.15, size=(len(images),) + (1,) * (images.ndim - 1)).astype(np.float32)
    noise = rng.normal(0.0, 0.6, size=images.shape).astype(np.float32)
    return np.clip(images * contrast + noise, 0.0, 16.0)


def sequence(n: int) -> Dataset:
    if n < 1:
        raise DatasetError("sequence:N needs N >= 1")
    return Dataset(np.arange(n, dtype=np.int64).reshape(n, 1))


def images_dir(path: Path, size: tuple[int, int], value_max: float) -> Dataset:
    """Grayscale images resized to ``size``, dark background, ink scaled to 0..value_max."""
    from PIL import Image, UnidentifiedImageError

    files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise DatasetError(f"{path} holds no PNG or JPEG images")
    rows = []
    for f in files:
        try:
            with Image.open(f) as im:
                arr = np.asarray(im.convert("L").resize((size[1], size[0]), Image.Resampling.BILINEAR), np.float32)
        except (UnidentifiedImageError, OSError) as exc:
            raise DatasetError(f"cannot decode image {f.name}: {exc}") from exc
        rows.append(digit_like(arr, value_max))
    return Dataset(np.stack(rows), None, np.array([f.name for f in files]))


def digit_like(gray: np.ndarray, value_max: float) -> np.ndarray:
    """A grayscale 0..255 image as the digits model sees it: light ink on dark, 0..value_max, flat."""
    arr = gray.astype(np.float32, copy=False)
    border = np.concatenate([arr[0], arr[-1], arr[:, 0], arr[:, -1]])
    if border.mean() > 127:  # dark ink on a light page: turn it into light ink on dark
        arr = 255.0 - arr
    return arr.reshape(-1) * (value_max / 255.0)


# -- files and directories as items ----------------------------------------------------------


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


def render_pdf(data: bytes, dpi: int = 200) -> list[bytes]:
    """Each page of a PDF as a grayscale PNG (pypdfium2, a pip-only wheel). Raises ValueError."""
    try:
        import pypdfium2 as pdfium
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise ValueError("PDF pages need pypdfium2 (pip install 'coopgrid[ocr]')") from exc
    try:
        pdf = pdfium.PdfDocument(data)
    except Exception as exc:  # pdfium raises its own PdfiumError
        raise ValueError(f"cannot open the PDF: {exc}") from exc
    pages = []
    try:
        for i in range(len(pdf)):
            page = pdf[i]
            image = page.render(scale=dpi / 72, grayscale=True).to_pil()
            buf = io.BytesIO()
            image.convert("L").save(buf, format="PNG")
            pages.append(buf.getvalue())
            page.close()
    finally:
        pdf.close()
    return pages


def _image_items(files: list[Path], root: Path, pdf_dpi: int) -> tuple[list[bytes], list[str]]:
    items, ids = [], []
    for f in files:
        name = str(f.relative_to(root)) if f != root else f.name
        data = f.read_bytes()
        if f.suffix.lower() in PDF_SUFFIXES:
            try:
                pages = render_pdf(data, pdf_dpi)
            except ValueError:
                pages = []
            if pages:
                items += pages
                ids += [f"{name}{PAGE_SEP}{k + 1}" for k in range(len(pages))]
                continue
            # unreadable (or no renderer): the whole file goes as one item and its worker says why
        items.append(data)
        ids.append(name)
    return items, ids


def _text_items(files: list[Path], root: Path) -> tuple[list[bytes], list[str]]:
    items, ids = [], []
    if len(files) == 1 and root.is_file():
        f = files[0]
        if f.suffix.lower() == ".jsonl":
            for n, line in enumerate(f.read_bytes().splitlines(), 1):
                if not line.strip():
                    continue
                try:
                    rec = json.loads(line)
                    text, item_id = rec["text"], str(rec.get("id", f"{f.name}:{n}"))
                    items.append(text.encode("utf-8"))
                except (ValueError, KeyError, TypeError, AttributeError):
                    items.append(line)  # kept raw: its worker reports it
                    item_id = f"{f.name}:{n}"
                ids.append(item_id)
        else:
            for n, line in enumerate(f.read_bytes().splitlines(), 1):
                if line.strip():
                    items.append(line)
                    ids.append(f"{f.name}:{n}")
        return items, ids
    for f in files:
        items.append(f.read_bytes())
        ids.append(str(f.relative_to(root)))
    return items, ids


def csv_records(data: bytes) -> list[tuple[int, bytes]]:
    """Split CSV bytes into records (a quoted field may hold newlines): (line number, record bytes)."""
    records: list[tuple[int, bytes]] = []
    pending: list[bytes] = []
    start = 0
    quotes = 0
    for n, line in enumerate(data.splitlines(), 1):
        if not pending:
            start = n
        pending.append(line)
        quotes += line.count(b'"')
        if quotes % 2 == 0:
            rec = b"\n".join(pending)
            if rec.strip():
                records.append((start, rec))
            pending, quotes = [], 0
    if pending:
        records.append((start, b"\n".join(pending)))  # an unterminated quote: its worker reports it
    return records


def _csv_items(files: list[Path], root: Path) -> tuple[list[bytes], list[str], dict[str, Any]]:
    import csv

    items, ids = [], []
    header: list[str] | None = None
    delimiter = "\t" if files[0].suffix.lower() == ".tsv" else ","
    for f in files:
        records = csv_records(f.read_bytes())
        if not records:
            continue
        name = str(f.relative_to(root)) if f != root else f.name
        try:
            this = next(csv.reader([records[0][1].decode("utf-8-sig")], delimiter=delimiter))
        except (UnicodeDecodeError, csv.Error) as exc:
            raise DatasetError(f"cannot read the header of {name}: {exc}") from exc
        if header is None:
            header = this
        elif this != header:
            raise DatasetError(f"{name}'s header {this} differs from the first shard's {header}")
        for line, rec in records[1:]:
            items.append(rec)
            ids.append(f"{name}:{line}")
    if header is None or not items:
        raise DatasetError(f"{root} holds no CSV records")
    return items, ids, {"header": header, "delimiter": delimiter}


def load_items(path: Path | str, pdf_dpi: int = 200) -> Dataset:
    """A file or directory of images/PDFs, text, CSV or Parquet as items (see the module docstring)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

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
        items, ids = _image_items(files, root if root.is_dir() else root, pdf_dpi)
        return Dataset.from_items(items, "image", ids)
    if cat == "text":
        items, ids = _text_items(files, root)
        return Dataset.from_items(items, "text", ids)
    if cat == "csv":
        items, ids, meta = _csv_items(files, root)
        return Dataset.from_items(items, "csv", ids, meta=meta)
    # parquet: one table; a preprocess job's output becomes its items again
    tables, ids = [], []
    for f in files:
        try:
            t = pq.read_table(f)
        except (pa.ArrowInvalid, OSError) as exc:
            raise DatasetError(f"cannot read {f.name} as Parquet: {exc}") from exc
        tables.append(t)
        name = str(f.relative_to(root)) if root.is_dir() else f.name
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


def produced_dataset(ids: Sequence[str], items: Sequence[bytes], media: str) -> Dataset:
    """Items a job produced as a dataset: same-shaped .npy arrays (media ``array``) become
    numeric rows, anything else stays byte items."""
    if media == "array":
        arrays = [np.load(io.BytesIO(d), allow_pickle=False) for d in items]
        if len({a.shape for a in arrays}) == 1:
            return Dataset(np.stack(arrays).reshape(len(arrays), -1), None, np.asarray(list(ids), dtype=str))
    return Dataset.from_items(items, media, ids)


def load(spec: str, image_size: tuple[int, int] = (8, 8), value_max: float = 16.0) -> Dataset:
    """Resolve a dataset name or path (see the module docstring).

    A directory of PNG/JPEG images is decoded here for the digits classifier;
    every other file or directory is read as items (:func:`load_items`).
    """
    name, _, arg = spec.partition(":")
    if name in ("digits", "sequence") and not Path(spec).exists():
        if arg and not arg.isdigit():
            raise DatasetError(f"{spec!r}: the part after ':' must be a number of items")
        if name == "digits":
            return digits(int(arg) if arg else None)
        if not arg:
            raise DatasetError("sequence needs a length: sequence:N")
        return sequence(int(arg))
    path = Path(spec)
    if path.is_dir() and any(p.suffix.lower() in IMAGE_SUFFIXES for p in path.iterdir()) and all(
        p.suffix.lower() in IMAGE_SUFFIXES for p in path.iterdir() if p.is_file()
    ):
        return images_dir(path, image_size, value_max)
    if path.suffix == ".npz" and path.is_file():
        return Dataset.from_npz(path)
    if path.exists():
        return load_items(path)
    raise DatasetError(
        f"unknown dataset {spec!r}: give digits, digits:N, sequence:N, an .npz file, or a file or directory of "
        "images, PDFs, text, CSV or Parquet"
    )


def load_for_task(spec: str, task_type: str, manifest: dict[str, Any] | None = None) -> Dataset:
    """The dataset a job of ``task_type`` (with the model ``manifest``, if any) should get.

    Named datasets and .npz files load as always. Files and directories are
    read as items, decoded by the workers (so one corrupt file fails only its
    own item) — also for ``classify``, whose workers resize and normalise each
    image as the model's manifest says.
    """
    path = Path(spec)
    if not path.exists() or (path.is_file() and path.suffix == ".npz"):
        inp = (manifest or {}).get("input", {})
        return load(spec, tuple(inp.get("image_size", (8, 8))), float(inp.get("value_max", 16.0)))
    return load_items(path)
