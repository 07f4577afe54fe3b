"""``preprocess``: deterministic transforms whose output is the next job's dataset.

Images (``mode=image``): decoded, converted to ``color`` (L or RGB),
resized to ``size`` (height, width) with a fixed filter (``fit``: stretch,
or ``pad`` to keep the aspect ratio on a black canvas), then either
re-encoded (``format`` png or jpeg) or, with ``normalize`` (``minmax`` per
image, or ``standard`` with ``mean``/``std`` per channel on 0..1 values),
written as a float32 .npy array. Text (``mode=text``): Unicode-normalized
(NFKC by default), control characters removed, whitespace collapsed,
optionally lower-cased, tokenized (words or characters), and deduplicated
across the whole job (the first occurrence of a cleaned text is kept).

Every step is integer arithmetic, IEEE-exact elementwise float32 math or a
pure function of its input, so honest workers produce the same bytes:
``agree`` is exact (workers with different Pillow/libjpeg versions may
differ on JPEG bytes; the trust layer's quorum settles that).

Output: the job's Parquet is a manifest, one row per item: ``item_id``,
``sha256`` and ``size`` of the produced item, the item itself (``data``),
``tokens`` (text), ``duplicate_of``, ``error``. The reducer also writes the
kept items as a dataset (``dataset.npz``; named in the figures under
``blob_files`` so the coordinator can store it as a blob whose hash is the
next job's ``dataset``), and ``coopgrid.datasets.load_items`` reads the
manifest Parquet back as a dataset too.
"""

from __future__ import annotations

import hashlib
import io
import re
import unicodedata
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import BaseModel, Field, model_validator

from coopgrid.datasets import Dataset, pack, produced_dataset, unpack
from coopgrid.errors import InvalidInput
from coopgrid.limits import MAX_ITEM_PIXELS
from coopgrid.tasks.base import BLOB_FILES, ItemParams, TaskOutput, TaskType, item_errors, split_items
from coopgrid.tasks.common import decode_image, input_texts, split_texts

_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u200b-\u200f\u2028\u2029\ufeff]")
_WORDS = re.compile(r"\w+|[^\w\s]")


class PreprocessParams(ItemParams):
    mode: Literal["auto", "image", "text"] = Field("auto", description="auto: from the dataset's items.")
    # images
    size: tuple[int, int] | None = Field(None, description="(height, width) to resize to; None keeps the size.")
    fit: Literal["stretch", "pad"] = "stretch"
    color: Literal["L", "RGB"] = "RGB"
    format: Literal["png", "jpeg", "npy"] = "png"
    jpeg_quality: int = Field(90, ge=1, le=100)
    normalize: Literal["none", "minmax", "standard"] = "none"
    mean: list[float] | None = None
    std: list[float] | None = None
    # text
    column: str | None = Field(None, description="The text column, for CSV or Parquet datasets.")
    unicode_form: Literal["NFC", "NFKC", "none"] = "NFKC"
    lowercase: bool = False
    strip_control: bool = True
    collapse_whitespace: bool = True
    tokenize: Literal["none", "words", "chars"] = "words"
    dedupe: bool = True

    @model_validator(mode="after")
    def _consistent(self) -> PreprocessParams:
        if self.size is not None and min(self.size) < 1:
            raise ValueError("size must be (height, width), both at least 1")
        if self.size is not None and max(self.size) > 16384:
            raise ValueError("size is at most 16384 pixels a side")
        if self.size is not None and self.size[0] * self.size[1] > MAX_ITEM_PIXELS:
            raise ValueError(f"size is at most {MAX_ITEM_PIXELS} pixels (height x width), what a worker decodes")
        if self.normalize != "none" and self.format != "npy":
            raise ValueError(f"normalize={self.normalize!r} makes float pixels: it needs format='npy'")
        channels = 1 if self.color == "L" else 3
        if self.normalize == "standard":
            if self.mean is None or self.std is None:
                raise ValueError("normalize='standard' needs mean and std (one per channel, on 0..1 pixel values)")
            if len(self.mean) != channels or len(self.std) != channels:
                raise ValueError(f"color={self.color!r} has {channels} channel(s): give that many mean and std values")
            if any(s <= 0 for s in self.std):
                raise ValueError("every std must be positive")
        elif self.mean is not None or self.std is not None:
            raise ValueError("mean and std go with normalize='standard'")
        return self


def clean_text(text: str, p: PreprocessParams) -> str:
    if p.unicode_form != "none":
        text = unicodedata.normalize(p.unicode_form, text)
    if p.strip_control:
        text = _CONTROL.sub(" ", text)
    if p.collapse_whitespace:
        text = " ".join(text.split())
    if p.lowercase:
        text = text.lower()
    return text


def tokens_of(text: str, how: str) -> list[str]:
    if how == "words":
        return _WORDS.findall(text)
    if how == "chars":
        return [c for c in text if not c.isspace()]
    return []


def transform_image(data: bytes, p: PreprocessParams) -> bytes:
    from PIL import Image

    im = decode_image(data)
    if im.mode in ("RGBA", "LA", "P") and p.color == "RGB":
        im = im.convert("RGBA")
        bg = Image.new("RGBA", im.size, (0, 0, 0, 255))
        im = Image.alpha_composite(bg, im)
    im = im.convert(p.color)
    if p.size is not None:
        h, w = p.size
        if p.fit == "stretch":
            im = im.resize((w, h), Image.Resampling.BILINEAR)
        else:
            scale = min(w / im.width, h / im.height)
            inner = (max(1, round(im.width * scale)), max(1, round(im.height * scale)))
            canvas = Image.new(p.color, (w, h))
            canvas.paste(im.resize(inner, Image.Resampling.BILINEAR), ((w - inner[0]) // 2, (h - inner[1]) // 2))
            im = canvas
    buf = io.BytesIO()
    if p.format == "png":
        im.save(buf, format="PNG", optimize=False, compress_level=6)
        return buf.getvalue()
    if p.format == "jpeg":
        im.save(buf, format="JPEG", quality=p.jpeg_quality, optimize=False, progressive=False, subsampling=0)
        return buf.getvalue()
    arr = np.asarray(im, dtype=np.float32)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    arr = arr / np.float32(255.0)
    if p.normalize == "minmax":
        lo, hi = arr.min(), arr.max()
        arr = (arr - lo) / (hi - lo) if hi > lo else np.zeros_like(arr)
    elif p.normalize == "standard":
        assert p.mean is not None and p.std is not None
        arr = (arr - np.asarray(p.mean, np.float32)) / np.asarray(p.std, np.float32)
    np.save(buf, np.ascontiguousarray(arr.astype("<f4")), allow_pickle=False)
    return buf.getvalue()


class PreprocessTask(TaskType):
    name = "preprocess"
    Params = PreprocessParams
    accepts = ("bytes", "table")
    # Reduced whole, not in pieces (streams): besides its rows it writes the next job's dataset
    # (dataset.npz, one blob of every kept item, built in memory), and a text is a duplicate of the
    # first one like it anywhere in the job: both need the whole job.
    streams = False

    @staticmethod
    def _mode(dataset: Dataset, p: PreprocessParams) -> str:
        if p.mode != "auto":
            return p.mode
        return "image" if dataset.kind == "bytes" and dataset.media == "image" else "text"

    def split(self, dataset: Dataset, task_size: int, params: BaseModel) -> Iterator[tuple[bytes, int]]:
        assert isinstance(params, PreprocessParams)
        mode = self._mode(dataset, params)
        if mode == "image":
            if dataset.kind != "bytes" or dataset.media != "image":
                raise InvalidInput(f"preprocess mode=image needs image items, not a {dataset.kind} dataset of {dataset.media or 'numbers'}")
            return split_items(dataset, task_size, params, {"mode": "image"})
        return split_texts(dataset, task_size, params, params.column, "preprocess mode=text")

    def run(self, task_input: bytes, model: Any, params: BaseModel) -> dict[str, Any]:
        assert isinstance(params, PreprocessParams)
        meta, _ = unpack(task_input)
        errors: dict[int, str] = {}
        out_items: list[bytes] = []
        tokens: list[list[str]] = []
        if meta.get("mode") == "image":
            _, items = unpack(task_input)
            for i, data in enumerate(items):
                try:
                    out_items.append(transform_image(data, params))
                except ValueError as exc:
                    errors[i] = str(exc)
                    out_items.append(b"")
            media = "array" if params.format == "npy" else "image"
        else:
            for i, text in enumerate(input_texts(task_input)):
                if isinstance(text, ValueError):
                    errors[i] = str(text)
                    out_items.append(b"")
                    tokens.append([])
                    continue
                cleaned = clean_text(text, params)
                out_items.append(cleaned.encode("utf-8"))
                tokens.append(tokens_of(cleaned, params.tokenize))
            media = "text"
        return {"media": media, "items": out_items, "tokens": tokens, "errors": item_errors(errors)}

    def canonical(self, output: dict[str, Any]) -> bytes:
        return pack(output["items"], {"media": output["media"], "tokens": output["tokens"], "errors": output["errors"]})

    def decode(self, data: bytes) -> dict[str, Any]:
        meta, items = unpack(data)
        return {"media": meta["media"], "items": items, "tokens": meta["tokens"], "errors": meta["errors"]}

    def reduce(self, outputs: Sequence[TaskOutput], dataset: Dataset, params: BaseModel, out: Path) -> dict[str, Any]:
        assert isinstance(params, PreprocessParams)
        ids = dataset.item_ids()
        media = next((o.output["media"] for o in outputs), "image")
        cols: dict[str, list[Any]] = {k: [] for k in ("item_id", "sha256", "size", "data", "tokens", "duplicate_of", "error", "task_index", "worker")}
        first_seen: dict[str, str] = {}
        kept: list[tuple[str, bytes]] = []
        for o in sorted(outputs, key=lambda o: o.first_item):
            reasons = dict((i, r) for i, r in o.output["errors"])
            for k, data in enumerate(o.output["items"]):
                item_id = ids[o.first_item + k]
                err = reasons.get(k)
                digest = hashlib.sha256(data).hexdigest() if err is None else None
                dup = None
                if err is None and media == "text" and params.dedupe:
                    dup = first_seen.get(digest)  # type: ignore[arg-type]
                    if dup is None:
                        first_seen[digest] = item_id  # type: ignore[index]
                if err is None and dup is None:
                    kept.append((item_id, data))
                cols["item_id"].append(item_id)
                cols["sha256"].append(digest)
                cols["size"].append(len(data) if err is None else None)
                cols["data"].append(data if err is None else None)
                cols["tokens"].append(o.output["tokens"][k] if o.output["tokens"] else None)
                cols["duplicate_of"].append(dup)
                cols["error"].append(err)
                cols["task_index"].append(o.task_index)
                cols["worker"].append(o.worker)
        table = pa.table(
            {
                "item_id": pa.array(cols["item_id"], pa.string()),
                "sha256": pa.array(cols["sha256"], pa.string()),
                "size": pa.array(cols["size"], pa.int64()),
                "data": pa.array(cols["data"], pa.binary()),
                "tokens": pa.array(cols["tokens"], pa.list_(pa.string())),
                "duplicate_of": pa.array(cols["duplicate_of"], pa.string()),
                "error": pa.array(cols["error"], pa.string()),
                "task_index": pa.array(cols["task_index"], pa.int32()),
                "worker": pa.array(cols["worker"], pa.string()),
            }
        ).replace_schema_metadata({"coopgrid.media": media})
        pq.write_table(table, out)
        figures: dict[str, Any] = {
            "items_out": len(kept),
            "item_errors": sum(e is not None for e in cols["error"]),
            "duplicates": sum(d is not None for d in cols["duplicate_of"]),
            "bytes_out": int(sum(len(d) for _, d in kept)),
        }
        if kept:
            next_ds = produced_dataset([i for i, _ in kept], [d for _, d in kept], media)
            (out.parent / "dataset.npz").write_bytes(next_ds.to_npz())
            figures[BLOB_FILES] = {"dataset": "dataset.npz"}
        return figures

