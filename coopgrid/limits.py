"""Bounds on decoding bytes someone else chose: datasets, and the items in them.

A submitter's dataset is decoded by the coordinator (at submission, and again
to reduce the job) and its items by the workers. A small file may declare a
huge decoded size (a decompression bomb), so each decoder here reads what the
bytes *declare* first and refuses before decompressing anything:

* a dataset .npz (:func:`read_npz`): the zip's end record and central
  directory (member count, sizes, compression methods), then each ``.npy``
  member's header (dtype: numbers or strings only, never objects; shape);
  the sum of the declared sizes must be within :attr:`DatasetLimits.max_bytes`
  and the items within :attr:`DatasetLimits.max_items`. The zip reader stops
  each member at its declared size, so the check bounds what is inflated;
* a Parquet table (:func:`read_parquet`): the footer's row count and
  uncompressed sizes; string columns are read dictionary-encoded and their
  decoded size computed before they are expanded (a dictionary of one large
  value repeated on every row decodes to rows x value);
* an image item (:func:`open_image`): its size in pixels, read from its header
  before the pixels are decoded, at most :data:`MAX_ITEM_PIXELS`; a PDF page,
  its rendered size (:func:`pdf_page_pixels`), likewise.

Item bounds are constants, not settings: a worker's reason for refusing an
item is part of its task's output, which the replicas of the task must agree
on, so every honest worker must apply the same bound.

Not covered: a Parquet page header declares its own uncompressed size (up to
2 GiB), which Arrow inflates whatever the footer says; pdfium parses a PDF's
content streams as it renders. Bounding those takes a process limit
(RLIMIT_AS, a cgroup), not a check here.
"""

from __future__ import annotations

import io
import math
import os
import re
import warnings
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from coopgrid.errors import ConfigError, DatasetError, TooLarge

#: defaults of Settings.max_dataset_bytes / max_dataset_items
DEFAULT_MAX_BYTES = 1 << 30
DEFAULT_MAX_ITEMS = 1_000_000
#: the arrays a dataset .npz may hold (coopgrid.datasets); others are ignored, never read
NPZ_ARRAYS = ("x", "y", "ids", "offsets", "kind", "media", "meta")
#: arrays that hold a word or a JSON header, never data
NPZ_SMALL = {"kind": 64, "media": 1024, "meta": 1 << 20}
#: a dataset .npz has a handful of members; the central directory is parsed only when this small
MAX_NPZ_MEMBERS = 32
MAX_CENTRAL_ENTRY = 1024
#: dtype kinds a dataset array may have: bool, integers, floats, complex, text, bytes (no objects, no records)
NPY_KINDS = "biufcUS"
#: pixels a worker decodes in one image or renders of one PDF page (8192 x 8192)
MAX_ITEM_PIXELS = 1 << 26
#: image formats a worker decodes: those coopgrid.datasets reads as images (Pillow opens multi-picture JPEGs as JPEG)
IMAGE_FORMATS = ("PNG", "JPEG", "TIFF", "BMP", "DIB", "WEBP", "GIF")


@dataclass(frozen=True)
class DatasetLimits:
    """How much a dataset may decode to: bytes (all arrays, or a table's columns) and items."""

    max_bytes: int = DEFAULT_MAX_BYTES
    max_items: int = DEFAULT_MAX_ITEMS

    @classmethod
    def from_env(cls) -> DatasetLimits:
        """The limits COOPGRID_MAX_DATASET_BYTES / _ITEMS set, else the defaults.

        For reading files on a submitter's machine, which has no coordinator
        settings (the coordinator's Settings read the same variables).
        """
        try:
            return cls(
                int(os.environ.get("COOPGRID_MAX_DATASET_BYTES", DEFAULT_MAX_BYTES)),
                int(os.environ.get("COOPGRID_MAX_DATASET_ITEMS", DEFAULT_MAX_ITEMS)),
            )
        except ValueError as exc:
            raise ConfigError(f"COOPGRID_MAX_DATASET_BYTES / _ITEMS must be whole numbers: {exc}") from None

    def check_bytes(self, declared: int, what: str) -> None:
        if declared > self.max_bytes:
            raise TooLarge(
                f"the dataset declares {_size(declared)} ({declared} bytes) once decoded ({what}), more than the "
                f"limit of {_size(self.max_bytes)} ({self.max_bytes} bytes, setting max_dataset_bytes, "
                "env COOPGRID_MAX_DATASET_BYTES); split it into smaller datasets and submit one job for each, "
                "or ask the coordinator's operator to raise the limit",
                limit=self.max_bytes,
                declared=declared,
                setting="max_dataset_bytes",
            )

    def check_items(self, declared: int, what: str = "items") -> None:
        if declared > self.max_items:
            raise TooLarge(
                f"the dataset declares {declared} {what}, more than the limit of {self.max_items} "
                "(setting max_dataset_items, env COOPGRID_MAX_DATASET_ITEMS); split it into smaller datasets and "
                "submit one job for each, or ask the coordinator's operator to raise the limit",
                limit=self.max_items,
                declared=declared,
                setting="max_dataset_items",
            )


def _size(n: int) -> str:
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= scale:
            return f"{n / scale:.2f} {unit}"
    return f"{n} bytes"


class Budget:
    """Items and bytes taken so far while reading files into a dataset; refuses past the limits."""

    def __init__(self, limits: DatasetLimits) -> None:
        self.limits = limits
        self.items = 0
        self.bytes = 0

    def take(self, n_bytes: int, what: str, n_items: int = 1) -> None:
        """Count ``n_items`` more items (one by default) of ``n_bytes`` in all."""
        self.expect(n_items, n_bytes, what)
        self.items += n_items
        self.bytes += n_bytes

    def expect(self, n_items: int, n_bytes: int, what: str) -> None:
        """Refuse now if ``n_items`` more items of ``n_bytes`` in all would not fit."""
        self.limits.check_items(self.items + n_items, f"items (so far, reading {what})")
        self.limits.check_bytes(self.bytes + n_bytes, f"so far, reading {what}")


# -- .npz ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class NpyHeader:
    shape: tuple[int, ...]
    dtype: np.dtype
    nbytes: int


def read_npz(data: bytes | Path, limits: DatasetLimits | None) -> dict[str, np.ndarray]:
    """The arrays of a dataset .npz (those in :data:`NPZ_ARRAYS`), checked before any is decompressed.

    ``limits=None`` skips the size limits (for a dataset already accepted);
    the structure (dtypes, declared sizes matching the members) is checked
    always. Raises DatasetError (malformed) or TooLarge (over a limit).
    """
    fp: Any = io.BytesIO(data) if isinstance(data, (bytes, bytearray, memoryview)) else open(data, "rb")
    with fp:
        _check_end_record(fp)
        try:
            zf = zipfile.ZipFile(fp)
        except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, OSError, EOFError) as exc:
            raise DatasetError(f"cannot read the dataset as .npz (a zip of .npy arrays): {exc}") from exc
        with zf:
            members = _members(zf)
            if limits is not None:
                limits.check_bytes(sum(i.file_size for i in zf.infolist()), "the sum of its .npz members' sizes")
            headers = {name: _npy_header(zf, name, info) for name, info in members.items()}
            arrays = {name: _read(zf, members[name], name) for name in NPZ_SMALL if name in members}
            n = _items(headers, arrays)
            if limits is not None and n is not None:
                limits.check_items(n)
            for name in NPZ_ARRAYS:
                if name in members and name not in arrays:
                    arrays[name] = _read(zf, members[name], name)
    return arrays


def _check_end_record(fp: Any) -> None:
    # zipfile.ZipFile parses the whole central directory into objects (several
    # hundred bytes each) as it opens; its size comes from the end record,
    # read here with the very function ZipFile uses, so the bound applies to
    # what ZipFile will parse.
    try:
        end = zipfile._EndRecData(fp)  # type: ignore[attr-defined]
    except (OSError, ValueError, EOFError) as exc:
        raise DatasetError(f"cannot read the dataset as .npz: {exc}") from exc
    if end is None:
        raise DatasetError(
            "cannot read the dataset as .npz: it is not a zip file (write datasets with Dataset.to_npz or numpy.savez)"
        )
    entries, cd_size = end[4], end[5]  # zipfile._ECD_ENTRIES_TOTAL, _ECD_SIZE
    if entries > MAX_NPZ_MEMBERS or cd_size > MAX_NPZ_MEMBERS * MAX_CENTRAL_ENTRY:
        raise DatasetError(
            f"the dataset .npz lists {entries} members in a {cd_size}-byte directory; a dataset has at most "
            f"{MAX_NPZ_MEMBERS} (x, y, ids, offsets, kind, media, meta): write it with Dataset.to_npz"
        )


def _members(zf: zipfile.ZipFile) -> dict[str, zipfile.ZipInfo]:
    infos = zf.infolist()
    if len(infos) > MAX_NPZ_MEMBERS:
        raise DatasetError(f"the dataset .npz has {len(infos)} members; a dataset has at most {MAX_NPZ_MEMBERS}")
    found: dict[str, zipfile.ZipInfo] = {}
    for info in infos:
        if info.flag_bits & 0x1:
            raise DatasetError(f"the dataset .npz member {info.filename!r} is encrypted")
        if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
            raise DatasetError(
                f"the dataset .npz member {info.filename!r} uses zip compression method {info.compress_type}; "
                "only stored and deflated members are read (numpy.savez / savez_compressed)"
            )
        # numpy.load takes "x.npy" and a bare "x" alike: so does this, and a name given twice is refused
        name = info.filename[:-4] if info.filename.endswith(".npy") else info.filename
        if name in NPZ_ARRAYS:
            if name in found:
                raise DatasetError(f"the dataset .npz holds {name!r} twice")
            found[name] = info
    return found


def _header(f: Any) -> tuple[tuple[int, ...], bool, np.dtype]:
    """(shape, fortran order, dtype) of the .npy array ``f`` is at; ValueError if it is not one."""
    fmt = np.lib.format
    version = fmt.read_magic(f)
    if version == (1, 0):
        return fmt.read_array_header_1_0(f)
    if version == (2, 0):
        return fmt.read_array_header_2_0(f)
    raise ValueError(f".npy format version {version[0]}.{version[1]} is not read (1.0 and 2.0 are)")


def _npy_header(zf: zipfile.ZipFile, name: str, info: zipfile.ZipInfo) -> NpyHeader:
    try:
        with zf.open(info) as f:
            shape, _, dtype = _header(f)
            header_len = f.tell()
    except (ValueError, OSError, EOFError, zipfile.BadZipFile, SyntaxError) as exc:
        raise DatasetError(f"the dataset .npz member {name!r} is not a readable .npy array: {exc}") from exc
    if dtype.hasobject or dtype.kind not in NPY_KINDS or dtype.fields is not None or dtype.subdtype is not None:
        raise DatasetError(
            f"the dataset's {name!r} has dtype {dtype}; datasets hold numbers or strings "
            "(bool, int, uint, float, complex, str, bytes), never Python objects or records"
        )
    nbytes = math.prod(shape) * dtype.itemsize
    if header_len + nbytes != info.file_size:
        raise DatasetError(
            f"the dataset's {name!r} declares shape {shape} of {dtype} ({nbytes} bytes) but its .npz member "
            f"holds {info.file_size - header_len} bytes of data; the file is corrupt or was not written by numpy"
        )
    small = NPZ_SMALL.get(name)
    if small is not None and (len(shape) != 0 or nbytes > small):
        raise DatasetError(
            f"the dataset's {name!r} must be one string of at most {small} bytes, not shape {shape} ({nbytes} bytes)"
        )
    return NpyHeader(tuple(shape), dtype, nbytes)


def _items(headers: dict[str, NpyHeader], small: dict[str, np.ndarray]) -> int | None:
    """The item count the headers declare (None for a table: its rows are in the Parquet footer)."""
    kind = str(small["kind"]) if "kind" in small else "array"
    if "x" not in headers:
        raise DatasetError("the .npz has no array named 'x' (one row per item)")
    if kind == "table":  # rows are in the Parquet footer; y and ids must match them later
        return max((headers[k].shape[0] if headers[k].shape else 0 for k in ("y", "ids") if k in headers), default=None)
    if kind == "bytes":
        offsets = headers.get("offsets")
        if offsets is None or len(offsets.shape) != 1:
            raise DatasetError("a bytes dataset needs offsets (n + 1 positions into x)")
        n = offsets.shape[0] - 1
    else:
        shape = headers["x"].shape
        n = shape[0] if shape else 0
    for name in ("y", "ids"):
        h = headers.get(name)
        if h is not None and (not h.shape or h.shape[0] != n):
            raise DatasetError(f"the dataset's {name} has shape {h.shape} for {n} items")
    return n


def _read(zf: zipfile.ZipFile, info: zipfile.ZipInfo, name: str) -> np.ndarray:
    try:
        with zf.open(info) as f:
            return np.lib.format.read_array(f, allow_pickle=False)
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
        raise DatasetError(f"cannot read the dataset's {name!r}: {exc}") from exc


def npz_meta(arr: np.ndarray) -> dict[str, Any]:
    """The dataset's ``meta`` array (JSON text) as a dict."""
    import orjson

    try:
        # not json.loads: its C parser recurses once per nesting level, and the
        # coordinator runs with a recursion limit of 100,000 (py-evm and py_ecc
        # raise it on import), so a deep enough document overflows the C stack
        # and kills the process; orjson stops at depth 1024
        meta = orjson.loads(str(arr))
    except ValueError as exc:
        raise DatasetError(f"the dataset's meta is not JSON: {exc}") from None
    if not isinstance(meta, dict):
        raise DatasetError(f"the dataset's meta must be a JSON object, not {type(meta).__name__}")
    return meta


def read_npy(data: bytes) -> np.ndarray:
    """One .npy array from bytes, its declared size checked against the bytes first.

    (numpy.load allocates what the header declares before it reads the data.)
    """
    f = io.BytesIO(data)
    try:
        shape, fortran, dtype = _header(f)
    except (ValueError, EOFError, SyntaxError) as exc:
        raise ValueError(f"not a .npy array: {exc}") from None
    if dtype.hasobject:
        raise ValueError("a .npy array of Python objects is not read")
    nbytes = math.prod(shape) * dtype.itemsize
    if len(data) - f.tell() != nbytes:
        raise ValueError(f"the .npy array declares {nbytes} bytes of data but holds {len(data) - f.tell()}")
    return np.frombuffer(data, dtype=dtype, count=math.prod(shape), offset=f.tell()).reshape(
        shape, order="F" if fortran else "C"
    )


# -- Parquet ------------------------------------------------------------------------------


def parquet_rows(source: Any, limits: DatasetLimits | None) -> int:
    """The rows a Parquet file's footer declares, refused over the limits (rows, uncompressed bytes)."""
    return _parquet_file(source, limits)[1]


def read_parquet(source: Any, limits: DatasetLimits | None) -> Any:
    """A Parquet file as a pyarrow Table, refused before it is decoded past the limits.

    The footer is checked first (:func:`parquet_rows`); then byte-array
    columns are read dictionary-encoded, their decoded size computed from the
    dictionary and the indices, and only then expanded to the file's types.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    pf, _ = _parquet_file(source, limits)
    schema = pf.schema_arrow  # the file's own types, which dictionary-encoded reads are cast back to
    byte_columns = [c.path for c in pf.schema if c.physical_type == "BYTE_ARRAY"]
    try:
        if byte_columns:
            pf = pq.ParquetFile(source, read_dictionary=byte_columns)
        table = pf.read()
        if byte_columns:
            if limits is not None:
                limits.check_bytes(sum(dense_nbytes(c) for c in table.columns), "its Parquet columns, decoded")
            table = table.cast(schema)
    except (pa.ArrowException, OSError) as exc:
        raise DatasetError(f"cannot read the Parquet table: {exc}") from exc
    if limits is not None:
        limits.check_bytes(table.nbytes, "its Parquet columns, decoded")
    return table


#: bytes per value of each Parquet physical type once decoded (byte arrays: their offset, plus their data)
_PARQUET_WIDTH = {"BOOLEAN": 1, "INT32": 4, "INT64": 8, "INT96": 12, "FLOAT": 4, "DOUBLE": 8, "BYTE_ARRAY": 8}


def _parquet_file(source: Any, limits: DatasetLimits | None) -> tuple[Any, int]:
    """The opened file and its rows; refuses over the limits from what the footer declares.

    Decoded bytes are estimated per column chunk as its value count times the
    decoded width of its type (run-length and dictionary encodings make
    fixed-width values far larger decoded than stored), plus the uncompressed
    size of byte-array data (whose dictionaries :func:`read_parquet` checks
    after reading).
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(source)
        md = pf.metadata
        widths, byte_arrays = [], []
        for j in range(md.num_columns):
            col = pf.schema.column(j)
            width = col.length if col.physical_type == "FIXED_LEN_BYTE_ARRAY" else _PARQUET_WIDTH[col.physical_type]
            widths.append(max(width, 32) if col.logical_type.type == "DECIMAL" else width)
            byte_arrays.append(col.physical_type == "BYTE_ARRAY")
        rows = decoded = 0
        for i in range(md.num_row_groups):
            group = md.row_group(i)
            rows += group.num_rows
            for j in range(md.num_columns):
                chunk = group.column(j)
                if chunk.num_values < 0 or chunk.total_uncompressed_size < 0:
                    raise DatasetError(f"the Parquet footer declares a negative size for column {j} of row group {i}")
                decoded += chunk.num_values * widths[j] + (chunk.total_uncompressed_size if byte_arrays[j] else 0)
    except (pa.ArrowException, OSError, KeyError) as exc:
        raise DatasetError(f"cannot read the Parquet table: {exc}") from exc
    if rows < 0 or md.num_rows != rows:
        raise DatasetError(f"the Parquet footer is inconsistent: {md.num_rows} rows, but row groups of {rows}")
    if limits is not None:
        limits.check_items(rows, "rows")
        limits.check_bytes(decoded, "its Parquet columns, decoded, as the footer declares them")
    return pf, rows


def dense_nbytes(arr: Any) -> int:
    """Bytes ``arr`` (a pyarrow Array or ChunkedArray) takes once every dictionary is expanded."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if isinstance(arr, pa.ChunkedArray):
        return sum(dense_nbytes(c) for c in arr.chunks)
    if isinstance(arr, pa.DictionaryArray):
        values = arr.dictionary
        if pa.types.is_binary(values.type) or pa.types.is_string(values.type) or pa.types.is_large_binary(
            values.type
        ) or pa.types.is_large_string(values.type):
            lengths = pc.binary_length(values).cast(pa.int64())
            total = pc.sum(pc.take(lengths, arr.indices)).as_py() or 0
            return int(total) + 8 * len(arr)
        try:
            width = max(1, values.type.bit_width // 8)
        except ValueError:  # not fixed-width: at most its largest value per row
            width = values.nbytes
        return len(arr) * width
    if isinstance(arr, (pa.ListArray, pa.LargeListArray, pa.FixedSizeListArray)):
        return 8 * len(arr) + dense_nbytes(arr.flatten())
    if isinstance(arr, pa.StructArray):
        return len(arr) + sum(dense_nbytes(f) for f in arr.flatten())
    return arr.nbytes


# -- images and PDF pages ----------------------------------------------------------------


def check_pixels(width: int, height: int, what: str) -> None:
    if width * height > MAX_ITEM_PIXELS:
        raise ValueError(
            f"{what} is {width}x{height} = {width * height} pixels, more than the {MAX_ITEM_PIXELS} a worker "
            "decodes (coopgrid.limits.MAX_ITEM_PIXELS); downscale it or cut it into smaller images"
        )


def open_image(data: bytes) -> Any:
    """The bytes of an image as a loaded PIL image, its pixel count checked before it is decoded.

    Raises ValueError with the reason (no object reprs: reasons are part of
    outputs every replica must agree on).
    """
    from PIL import Image, UnidentifiedImageError

    if not data:
        raise ValueError("cannot decode image: empty file")
    try:
        with warnings.catch_warnings():
            # Pillow only warns between its own limit and twice it; the bound that counts is checked below
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(io.BytesIO(data), formats=IMAGE_FORMATS)
        check_pixels(im.width, im.height, "the image")
        im.load()
    except UnidentifiedImageError:
        raise ValueError(
            f"cannot decode image: not a known image format ({', '.join(IMAGE_FORMATS)}), or corrupt"
        ) from None
    except Image.DecompressionBombError as exc:
        raise ValueError(f"cannot decode image: {exc} (a worker decodes at most {MAX_ITEM_PIXELS} pixels)") from None
    except ValueError as exc:
        raise ValueError(f"cannot decode image: {_no_reprs(str(exc))}") from None
    except (OSError, SyntaxError) as exc:
        raise ValueError(f"cannot decode image: {_no_reprs(str(exc))}") from None
    return im


def _no_reprs(text: str) -> str:
    return re.sub(r" <[^>]*at 0x[0-9a-f]+>", "", text)


def pdf_page_pixels(page: Any, scale: float, number: int) -> None:
    """Refuse (ValueError) a PDF page whose rendering at ``scale`` would pass :data:`MAX_ITEM_PIXELS`."""
    width, height = page.get_size()
    w, h = math.ceil(abs(width) * scale), math.ceil(abs(height) * scale)
    check_pixels(w, h, f"the PDF's page {number} rendered at {round(scale * 72)} dpi")


_LINE = re.compile(rb"([^\r\n]*)(?:\r\n|\r|\n)|([^\r\n]+)\Z")


def lines(data: bytes) -> Iterator[bytes]:
    """``data.splitlines()``, one at a time (so a file of millions of lines is counted as it is read)."""
    for m in _LINE.finditer(data):
        yield m.group(1) if m.group(2) is None else m.group(2)
