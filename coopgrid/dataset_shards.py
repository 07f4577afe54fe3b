"""A dataset larger than one upload, cut into shards the submitter uploads one by one.

The coordinator splits a job shard after shard (coordinator/scheduler.py), holding one
shard at a time; a task type that streams its reduction (``TaskType.streams``) reduces it
shard by shard too, any other gets the shards joined again (:func:`concat_datasets`). A
directory of CSV or Parquet files is sent a file at a time (each file its own shard, cut
further if one file alone is above the limit); anything else is loaded as usual and cut
into consecutive runs of items.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from coopgrid.datasets import CSV_SUFFIXES, PARQUET_SUFFIXES, Dataset
from coopgrid.errors import DatasetError


def slice_dataset(d: Dataset, start: int, stop: int) -> Dataset:
    """Items ``start`` to ``stop`` of ``d`` as a dataset of the same kind (default ids left to the job)."""
    y = None if d.y is None else d.y[start:stop]
    ids = None if d.ids is None else d.ids[start:stop]
    if d.kind == "array":
        return Dataset(d.x[start:stop], y=y, ids=ids, meta=dict(d.meta))
    if d.kind == "bytes":
        assert d.offsets is not None
        lo, hi = int(d.offsets[start]), int(d.offsets[stop])
        return Dataset(d.x[lo:hi], y=y, ids=ids, offsets=d.offsets[start : stop + 1] - lo, kind="bytes",
                       media=d.media, meta=dict(d.meta))
    import pyarrow.parquet as pq

    buf = io.BytesIO()
    pq.write_table(d.table().slice(start, stop - start), buf)
    meta = {**d.meta, "rows": stop - start}
    return Dataset(np.frombuffer(buf.getvalue(), dtype=np.uint8).copy(), y=y, ids=ids, kind="table",
                   media=d.media, meta=meta)


def cut(d: Dataset, max_bytes: int) -> Iterator[bytes]:
    """``d`` as .npz shards of at most ``max_bytes`` each (one item over the limit is refused)."""
    whole = d.to_npz()
    if len(whole) <= max_bytes:
        yield whole
        return
    del whole
    n = len(d)
    start = 0
    step = max(1, n // 2)
    while start < n:
        stop = min(n, start + step)
        data = slice_dataset(d, start, stop).to_npz()
        if len(data) > max_bytes:
            if stop - start == 1:
                raise DatasetError(
                    f"item {start} alone is {len(data)} bytes as a shard, above the upload limit of {max_bytes}; "
                    "the coordinator's operator can raise max_upload_bytes"
                )
            step = max(1, (stop - start) // 2)
            continue
        yield data
        start = stop


def shards(spec: str, task_type: str, manifest: dict[str, Any] | None, limit: Callable[[], int]) -> Iterator[bytes]:
    """The dataset ``spec`` names (as :func:`coopgrid.datasets.load_for_task` reads it) as .npz
    shards of at most ``limit()`` bytes each, in item order (``limit`` is asked once the dataset
    is found: a missing file is reported before the coordinator is contacted)."""
    from coopgrid.datasets import load_for_task

    path = Path(spec)
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file())
        tabular = [p for p in files if p.suffix.lower() in CSV_SUFFIXES | PARQUET_SUFFIXES]
        # past the limit on disk already: a file at a time (under it, one blob as always)
        if len(tabular) > 1 and len(tabular) == len(files) and sum(p.stat().st_size for p in files) > (max_bytes := limit()):
            from coopgrid.dataset_files import load_items

            for f in tabular:  # the whole directory is never loaded at once
                yield from cut(load_items(f), max_bytes)
            return
    data = load_for_task(spec, task_type, manifest)
    yield from cut(data, limit())


def concat_datasets(parts: list[Dataset]) -> Dataset:
    """Shards of one job's dataset as one dataset (for a task type that reduces its dataset whole)."""
    if len(parts) == 1:
        return parts[0]
    first = parts[0]
    offset = 0
    for p in parts:  # default ids continue across shards
        p.id_offset, offset = offset, offset + len(p)
    y = None if any(p.y is None for p in parts) else np.concatenate([p.y for p in parts])
    ids = None
    if any(p.ids is not None for p in parts):
        ids = np.asarray([i for p in parts for i in p.item_ids()], dtype=str)
    if first.kind == "array":
        return Dataset(np.concatenate([p.x for p in parts]), y=y, ids=ids, meta=dict(first.meta))
    if first.kind == "bytes":
        starts = np.cumsum([0] + [len(p.x) for p in parts[:-1]])
        offsets = np.concatenate([parts[0].offsets[:1]] + [p.offsets[1:] + s for p, s in zip(parts, starts)])
        return Dataset(np.concatenate([p.x for p in parts]), y=y, ids=ids, offsets=offsets, kind="bytes",
                       media=first.media, meta=dict(first.meta))
    import pyarrow as pa

    return Dataset.from_table(pa.concat_tables([p.table() for p in parts]), ids=None if ids is None else list(ids), y=y,
                              meta={k: v for k, v in first.meta.items() if k != "rows"})
