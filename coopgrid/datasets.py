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
* through :func:`~coopgrid.dataset_files.load_items` / :func:`load_for_task`: a file or directory of
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
from coopgrid.limits import DatasetLimits, npz_meta, open_image, parquet_rows, read_npy, read_npz, read_parquet

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
#: what a dataset may decode to unless told otherwise (a coordinator passes its settings')
DEFAULT_LIMITS = DatasetLimits()


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
    #: a shard of a larger job's dataset: where its items start, for their default ids (never stored)
    id_offset: int = 0

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

    def item_ids(self, start: int = 0, stop: int | None = None) -> list[str]:
        """The ids of items ``start`` to ``stop`` (default: all), a shard's continuing its job's numbering."""
        stop = len(self) if stop is None else stop
        if self.ids is not None:
            if self.ids.dtype.kind == "S":  # UTF-8, as to_npz writes them
                return [i.decode("utf-8", "replace") for i in self.ids[start:stop]]
            return [str(i) for i in self.ids[start:stop]]
        return [f"item-{self.id_offset + i}" for i in range(start, stop)]

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
        """The rows of a ``table`` dataset as a pyarrow Table (decoded within the dataset's limits)."""
        import pyarrow as pa

        if self.kind != "table":
            raise DatasetError(f"table(): a {self.kind} dataset is not a table")
        cached = self.__dict__.get("_table")
        if cached is None:
            source = pa.BufferReader(pa.py_buffer(np.ascontiguousarray(self.x)))
            cached = read_parquet(source, self.__dict__.get("_limits", DEFAULT_LIMITS))
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
            arrays["ids"] = _compact_ids(self.ids)
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
    def from_npz(cls, data: bytes | Path, limits: DatasetLimits | None = DEFAULT_LIMITS) -> Dataset:
        """A dataset from .npz bytes or file, refused (TooLarge) past ``limits`` before it is decompressed.

        ``limits=None`` reads a dataset already accepted under other limits
        (its structure is still checked).
        """
        arrays = read_npz(data, limits)
        kind = str(arrays["kind"]) if "kind" in arrays else "array"
        meta = npz_meta(arrays["meta"]) if "meta" in arrays else {}
        if kind == "table":
            import pyarrow as pa

            x = arrays["x"]
            if x.dtype != np.uint8 or x.ndim != 1:
                raise DatasetError("a table dataset's x must be the bytes of a Parquet file (flat uint8)")
            meta["rows"] = parquet_rows(pa.BufferReader(pa.py_buffer(x)), limits)
        dataset = cls(
            x=arrays["x"],
            y=arrays.get("y"),
            ids=arrays.get("ids"),
            offsets=arrays.get("offsets"),
            kind=kind,
            media=str(arrays["media"]) if "media" in arrays else "",
            meta=meta,
        )
        dataset.__dict__["_limits"] = limits
        return dataset


def _compact_ids(ids: np.ndarray) -> np.ndarray:
    """Item ids as UTF-8 bytes (``S``), a quarter of NumPy's four bytes per character for the
    usual ASCII ids ("part-000.csv:17"): a million rows' ids are then 19 MB instead of 76 MB in
    the upload, the blob store and every read of the dataset."""
    if ids.dtype.kind == "S":
        return ids
    text = ids.astype(str)
    try:
        return text.astype("S")  # ASCII: one C pass
    except UnicodeEncodeError:
        return np.strings.encode(text, "utf-8")


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
    from PIL import Image

    files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise DatasetError(f"{path} holds no PNG or JPEG images")
    DatasetLimits.from_env().check_items(len(files), "images")
    rows = []
    for f in files:
        try:
            with open_image(f.read_bytes()) as im:
                arr = np.asarray(im.convert("L").resize((size[1], size[0]), Image.Resampling.BILINEAR), np.float32)
        except ValueError as exc:
            raise DatasetError(f"{f.name}: {exc}") from exc
        rows.append(digit_like(arr, value_max))
    return Dataset(np.stack(rows), None, np.array([f.name for f in files]))


def digit_like(gray: np.ndarray, value_max: float) -> np.ndarray:
    """A grayscale 0..255 image as the digits model sees it: light ink on dark, 0..value_max, flat."""
    arr = gray.astype(np.float32, copy=False)
    border = np.concatenate([arr[0], arr[-1], arr[:, 0], arr[:, -1]])
    if border.mean() > 127:  # dark ink on a light page: turn it into light ink on dark
        arr = 255.0 - arr
    return arr.reshape(-1) * (value_max / 255.0)


def produced_dataset(ids: Sequence[str], items: Sequence[bytes], media: str) -> Dataset:
    """Items a job produced as a dataset: same-shaped .npy arrays (media ``array``) become
    numeric rows, anything else stays byte items."""
    if media == "array":
        arrays = [read_npy(d) for d in items]
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
        return Dataset.from_npz(path, DatasetLimits.from_env())
    if path.exists():
        from coopgrid.dataset_files import load_items

        return load_items(path)
    if "/" in spec or "\\" in spec or Path(spec).suffix:
        raise DatasetError(f"no such file or directory: {spec!r} (the dataset names a path that does not exist)")
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
    from coopgrid.dataset_files import load_items

    return load_items(path)


#: names that moved to :mod:`coopgrid.dataset_files` (which imports this module), still found here
_MOVED = {"load_items", "render_pdf", "render_page", "first_pdf_page", "csv_records", "from_preprocess_output"}


def __getattr__(name: str) -> Any:
    if name in _MOVED:
        from coopgrid import dataset_files

        return getattr(dataset_files, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
