"""Models and inputs on the worker side, fetched by hash and checked.

Model bytes are cached on disk by their sha256 and re-checked when read; a
loaded model (e.g. an ONNX Runtime session) is kept in memory. Bytes that do
not hash to the hash they were fetched by are refused with IntegrityError.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from coopgrid import tasks
from coopgrid.errors import IntegrityError
from coopgrid.protocol import sha256_hex
from coopgrid.worker.client import WorkerClient

log = logging.getLogger(__name__)


def check(data: bytes, expected: str, what: str) -> bytes:
    actual = sha256_hex(data)
    if actual != expected:
        raise IntegrityError(
            f"refused {what}: its bytes hash to {actual}, not {expected}", expected=expected, actual=actual
        )
    return data


class Runtime:
    def __init__(self, client: WorkerClient, cache_dir: Path) -> None:
        self.client = client
        self.cache_dir = cache_dir
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        self._loaded: dict[tuple[str, str], Any] = {}

    def model(self, task_type: str, model_hash: str | None) -> Any:
        if model_hash is None:
            return None
        key = (task_type, model_hash)
        if key not in self._loaded:
            manifest = self.client.get_json(f"/v1/worker/models/{model_hash}")
            data = self._model_bytes(model_hash)
            self._loaded[key] = tasks.get(task_type).load_model(data, manifest)
        return self._loaded[key]

    def _model_bytes(self, model_hash: str) -> bytes:
        path = self.cache_dir / f"{model_hash}.model"
        if path.exists():
            data = path.read_bytes()
            if sha256_hex(data) == model_hash:
                return data
            log.warning("cached model %s is corrupt; fetching it again", model_hash)
        data = check(self.client.request("GET", f"/v1/blobs/{model_hash}").content, model_hash, f"model {model_hash}")
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_bytes(data)
        tmp.replace(path)
        return data

    def task_input(self, input_hash: str, inline: bytes | None) -> bytes:
        if inline is not None:
            return check(inline, input_hash, f"input {input_hash}")
        return check(self.client.request("GET", f"/v1/blobs/{input_hash}").content, input_hash, f"input {input_hash}")
