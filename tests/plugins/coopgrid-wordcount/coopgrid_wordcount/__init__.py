"""``wordcount``: words per text item — a complete third-party coopgrid task type."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import BaseModel, ConfigDict, Field

from coopgrid.datasets import Dataset, pack, unpack
from coopgrid.errors import InvalidInput
from coopgrid.tasks.base import TaskOutput, TaskType


class Params(BaseModel):
    model_config = ConfigDict(extra="forbid")
    min_length: int = Field(1, ge=1, le=100, description="Only count words at least this long.")


class WordCountTask(TaskType):
    name = "wordcount"
    Params = Params

    def split(self, dataset: Dataset, task_size: int, params: BaseModel) -> Iterator[tuple[bytes, int]]:
        if dataset.kind != "bytes" or dataset.media != "text":
            raise InvalidInput("wordcount needs text items")
        for start, stop in dataset.ranges(task_size):
            yield pack(dataset.items(start, stop)), stop - start

    def run(self, task_input: bytes, model: Any, params: BaseModel) -> dict[str, Any]:
        _, items = unpack(task_input)
        counts, errors = [], []
        for i, raw in enumerate(items):
            try:
                words = raw.decode("utf-8").split()
            except UnicodeDecodeError:
                counts.append(None)
                errors.append([i, "not UTF-8 text"])
                continue
            counts.append(sum(len(w) >= params.min_length for w in words))
        return {"counts": counts, "errors": errors}

    def canonical(self, output: dict[str, Any]) -> bytes:
        return orjson.dumps(output, option=orjson.OPT_SORT_KEYS)

    def decode(self, data: bytes) -> dict[str, Any]:
        return orjson.loads(data)

    def reduce(self, outputs: Sequence[TaskOutput], dataset: Dataset, params: BaseModel, out: Path) -> dict[str, Any]:
        ids = dataset.item_ids()
        rows = {"item_id": [], "words": [], "error": [], "worker": []}
        for o in sorted(outputs, key=lambda o: o.first_item):
            reasons = dict(o.output["errors"])
            for k, count in enumerate(o.output["counts"]):
                rows["item_id"].append(ids[o.first_item + k])
                rows["words"].append(count)
                rows["error"].append(reasons.get(k))
                rows["worker"].append(o.worker)
        pq.write_table(pa.table(rows), out)
        return {"total_words": sum(c for c in rows["words"] if c is not None)}
