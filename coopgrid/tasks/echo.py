"""``echo``: returns its input. For benchmarks of the grid itself."""

from __future__ import annotations

import io
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import BaseModel

from coopgrid.datasets import Dataset
from coopgrid.limits import read_npy
from coopgrid.tasks.base import TaskOutput, TaskType


# .npy headers are the same for every task of a job: parse and build each once.
# (np.save/np.load parse the header with ast.literal_eval, ~40 us a call, which
# dominated reducing 20,000 small outputs.)
_SAVED: dict[tuple[str, tuple[int, ...]], bytes] = {}
_LOADED: dict[bytes, tuple[np.dtype, tuple[int, ...], bool]] = {}
_CACHE_MAX = 256


def npy_bytes(arr: np.ndarray) -> bytes:
    arr = np.ascontiguousarray(arr)
    key = (arr.dtype.str, arr.shape)
    header = _SAVED.get(key)
    if header is None or arr.dtype.hasobject:
        buf = io.BytesIO()
        np.save(buf, arr, allow_pickle=False)
        data = buf.getvalue()
        if len(_SAVED) < _CACHE_MAX:
            _SAVED[key] = data[: len(data) - arr.nbytes]
        return data
    return header + arr.tobytes()


def npy_load(data: bytes) -> np.ndarray:
    if len(data) >= 10 and data[:6] == b"\x93NUMPY" and data[6] == 1:
        end = 10 + int.from_bytes(data[8:10], "little")
        meta = _LOADED.get(data[:end])
        if meta is not None:
            dtype, shape, fortran = meta
            count = int(np.prod(shape))
            if len(data) - end != count * dtype.itemsize:
                raise ValueError(f"the .npy payload is {len(data) - end} bytes, not {count * dtype.itemsize}")
            return np.frombuffer(data, dtype=dtype, count=count, offset=end).reshape(shape, order="F" if fortran else "C")
    arr = read_npy(data)  # not numpy.load: it allocates what the header declares before reading
    if len(data) >= 10 and not arr.dtype.hasobject and len(_LOADED) < _CACHE_MAX:
        end = 10 + int.from_bytes(data[8:10], "little")
        _LOADED[data[:end]] = (arr.dtype, arr.shape, bool(np.isfortran(arr)) and arr.ndim > 1)
    return arr


def split_rows(dataset: Dataset, task_size: int, dtype: Any = None) -> Iterator[tuple[bytes, int]]:
    x = dataset.x
    for start in range(0, len(x), task_size):
        # converted a task at a time: the whole array converted at once (uint8 to float32) is 4 times the dataset
        chunk = x[start : start + task_size] if dtype is None else x[start : start + task_size].astype(dtype, copy=False)
        yield npy_bytes(chunk), len(chunk)


class EchoTask(TaskType):
    name = "echo"
    streams = True

    def split(self, dataset: Dataset, task_size: int, params: BaseModel) -> Iterator[tuple[bytes, int]]:
        return split_rows(dataset, task_size)

    def run(self, task_input: bytes, model: Any, params: BaseModel) -> bytes:
        return task_input

    def canonical(self, output: bytes) -> bytes:
        return output

    def decode(self, data: bytes) -> bytes:
        return data

    def gold_output(self, output: Any, like: Dataset) -> bytes:
        # echo's answer is its input: the row, as the .npy bytes an honest worker returns for it
        raw = np.asarray(output)
        row = like.x.shape[1:]
        if raw.dtype.kind not in "biuf" or raw.shape != row:
            raise ValueError(f"output of echo is the item itself: numbers of shape {list(row)}")
        arr = raw.astype(like.x.dtype)
        if not np.array_equal(arr, raw):
            raise ValueError(f"output does not fit the dataset's type {like.x.dtype} (it would be rounded)")
        return npy_bytes(arr.reshape((1, *row)))

    def reduce(self, outputs: Sequence[TaskOutput], dataset: Dataset, params: BaseModel, out: Path) -> dict[str, Any]:
        item_ids: list[str] = []
        values: list[bytes] = []
        tasks: list[int] = []
        workers: list[str] = []
        mismatched = 0
        for o in outputs:
            expected = dataset.x[o.first_item : o.first_item + o.n_items].reshape(o.n_items, -1)
            try:
                rows = npy_load(o.output).reshape(o.n_items, -1)
            except (ValueError, EOFError, OSError):  # not even an array: every item of the task is wrong
                rows = np.zeros((o.n_items, 0), dtype=expected.dtype)
            if rows.shape != expected.shape:
                mismatched += o.n_items
                item_ids += dataset.item_ids(o.first_item, o.first_item + o.n_items)
                values += [b""] * o.n_items
                tasks += [o.task_index] * o.n_items
                workers += [o.worker] * o.n_items
                continue
            mismatched += int((rows != expected).any(axis=1).sum())
            item_ids += dataset.item_ids(o.first_item, o.first_item + o.n_items)
            values += [r.tobytes() for r in rows]
            tasks += [o.task_index] * o.n_items
            workers += [o.worker] * o.n_items
        table = pa.table(
            {"item_id": pa.array(item_ids, pa.string()), "value": pa.array(values, pa.binary()),
             "task_index": pa.array(tasks, pa.int64()), "worker": pa.array(workers, pa.string())}
        )
        pq.write_table(table, out)
        return {"echo_mismatches": mismatched}
