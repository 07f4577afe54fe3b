"""The model registry: ONNX bytes in the blob store plus a manifest in the store.

A model's id is the sha256 of its bytes; workers refuse bytes that do not
hash to it. The manifest says what the model is for and how to feed it::

    name, version, task_type, sha256, size,
    input: {shape, dtype, image_size, value_max}, classes, metrics, framework
"""

from __future__ import annotations

import time
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from coopgrid import tasks
from coopgrid.blobs import BlobStore
from coopgrid.errors import BlobNotFound, InvalidInput, ModelNotFound
from coopgrid.store.base import ModelRecord, Store


class ModelSpec(BaseModel):
    """POST /v1/models: publish the blob ``sha256`` as a model."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    sha256: str = Field(pattern=r"^[0-9a-f]{64}$", description="Hash of the ONNX bytes, uploaded as a blob first.")
    name: str = Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_.-]+$")
    task_type: str = Field(min_length=1, max_length=50)
    input: dict[str, Any] = Field(default_factory=dict, description="shape, dtype, image_size, value_max...")
    classes: list[Any] = Field(default_factory=list)
    metrics: dict[str, float] = Field(default_factory=dict)
    framework: str = ""


class ModelRegistry:
    def __init__(self, store: Store, blobs: BlobStore) -> None:
        self.store = store
        self.blobs = blobs

    def publish(self, spec: ModelSpec) -> ModelRecord:
        tasks.get(spec.task_type)  # an unknown task type is refused here, not by a worker later
        if not self.blobs.exists(spec.sha256):
            raise BlobNotFound(
                f"upload the model bytes first (PUT /v1/blobs): no blob {spec.sha256}", digest=spec.sha256
            )
        existing = self.store.get_model(spec.sha256)
        if existing:
            return existing
        size = self.blobs.size(spec.sha256)
        version = self.store.next_model_version(spec.name)
        manifest = {**spec.model_dump(), "version": version, "size": size}
        return self.store.add_model(
            ModelRecord(
                hash=spec.sha256,
                name=spec.name,
                version=version,
                task_type=spec.task_type,
                manifest=manifest,
                size=size,
                created_at=time.time(),
            )
        )

    def resolve(self, ref: str) -> ModelRecord:
        record = self.store.get_model(ref)
        if record is None:
            raise ModelNotFound(
                f"no model {ref!r}; `coopgrid models list` shows the published ones", model=ref
            )
        return record

    def check_task_type(self, record: ModelRecord, task_type: str) -> None:
        if record.task_type != task_type:
            raise InvalidInput(
                f"model {record.name}:{record.version} is for {record.task_type!r} tasks, not {task_type!r}",
                model=record.hash,
            )
