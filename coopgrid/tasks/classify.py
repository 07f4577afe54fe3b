"""``classify``: an ONNX image classifier over a batch of images.

Input: an .npy float32 array, one flattened image per row, already in the
model's value range (see :mod:`coopgrid.datasets`). Output: the label and
the confidence (highest class probability, rounded to 4 decimals so that
honest workers on different hardware produce the same bytes) per image.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import BaseModel

from coopgrid.datasets import Dataset
from coopgrid.errors import InvalidInput
from coopgrid.tasks.base import TaskOutput, TaskType
from coopgrid.tasks.echo import npy_load, split_rows

CONFIDENCE_DECIMALS = 4


class ClassifyTask(TaskType):
    name = "classify"
    needs_model = True

    def split(self, dataset: Dataset, task_size: int, params: BaseModel) -> Iterator[tuple[bytes, int]]:
        if dataset.x.dtype.kind not in "fiu":
            raise InvalidInput(f"classify needs numeric images, not {dataset.x.dtype}")
        return split_rows(dataset, task_size, np.float32)

    def load_model(self, model_bytes: bytes, manifest: dict[str, Any]) -> Any:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        # one thread per session: a worker process is one unit of the grid, and
        # several workers (and the coordinator) share the machine's cores
        opts.intra_op_num_threads = 1
        opts.inter_op_num_threads = 1
        return ort.InferenceSession(model_bytes, sess_options=opts, providers=["CPUExecutionProvider"])

    def run(self, task_input: bytes, model: Any, params: BaseModel) -> dict[str, list[Any]]:
        x = npy_load(task_input).astype(np.float32, copy=False)
        x = x.reshape(len(x), -1)
        inp = model.get_inputs()[0]
        labels, probs = model.run(None, {inp.name: x})[:2]
        confidence = np.round(np.asarray(probs, dtype=np.float64).max(axis=1), CONFIDENCE_DECIMALS)
        return {"labels": np.asarray(labels).astype(np.int64).tolist(), "confidence": confidence.tolist()}

    def canonical(self, output: dict[str, list[Any]]) -> bytes:
        return orjson.dumps({"labels": output["labels"], "confidence": output["confidence"]})

    def decode(self, data: bytes) -> dict[str, list[Any]]:
        return orjson.loads(data)

    def agree(self, a: dict[str, list[Any]], b: dict[str, list[Any]]) -> bool:
        return a["labels"] == b["labels"] and bool(
            np.allclose(a["confidence"], b["confidence"], atol=10**-CONFIDENCE_DECIMALS * 5)
        )

    def reduce(self, outputs: Sequence[TaskOutput], dataset: Dataset, params: BaseModel, out: Path) -> dict[str, Any]:
        ids = dataset.item_ids()
        cols: dict[str, list[Any]] = {"item_id": [], "label": [], "confidence": [], "task_index": [], "worker": []}
        for o in outputs:
            cols["item_id"] += ids[o.first_item : o.first_item + o.n_items]
            cols["label"] += o.output["labels"]
            cols["confidence"] += o.output["confidence"]
            cols["task_index"] += [o.task_index] * o.n_items
            cols["worker"] += [o.worker] * o.n_items
        table = pa.table(
            {
                "item_id": pa.array(cols["item_id"], pa.string()),
                "label": pa.array(cols["label"], pa.int64()),
                "confidence": pa.array(cols["confidence"], pa.float64()),
                "task_index": pa.array(cols["task_index"], pa.int32()),
                "worker": pa.array(cols["worker"], pa.string()),
            }
        )
        pq.write_table(table, out)
        figures: dict[str, Any] = {}
        if dataset.y is not None and outputs:
            truth = np.concatenate([dataset.y[o.first_item : o.first_item + o.n_items] for o in outputs])
            figures["accuracy"] = round(float((np.asarray(cols["label"]) == truth).mean()), 6)
            figures["labelled_items"] = int(len(truth))
        return figures
