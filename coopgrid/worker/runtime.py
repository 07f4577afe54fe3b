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

import httpx

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
        self._store_http: httpx.Client | None = None
        #: inputs and models fetched from the blob store itself rather than through the coordinator
        self.blobs_from_store = 0

    def model(self, task_type: str, model_hash: str | None) -> Any:
        if model_hash is None:
            return None
        key = (task_type, model_hash)
        if key not in self._loaded:
            manifest = self.client.get_json(f"/v1/worker/models/{model_hash}")
            data = self._model_bytes(model_hash, manifest.get("url"))
            self._loaded[key] = tasks.get(task_type).load_model(data, manifest)
        return self._loaded[key]

    def _model_bytes(self, model_hash: str, url: str | None = None) -> bytes:
        path = self.cache_dir / f"{model_hash}.model"
        if path.exists():
            data = path.read_bytes()
            if sha256_hex(data) == model_hash:
                return data
            log.warning("cached model %s is corrupt; fetching it again", model_hash)
        data = self._from_store(model_hash, url, "model") if url else None
        if data is None:
            data = self.client.request("GET", f"/v1/blobs/{model_hash}").content
            data = check(data, model_hash, f"model {model_hash}")
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_bytes(data)
        tmp.replace(path)
        return data

    def task_input(self, input_hash: str, inline: bytes | None, url: str | None = None) -> bytes:
        if inline is not None:
            return check(inline, input_hash, f"input {input_hash}")
        if url is not None:
            data = self._from_store(input_hash, url, "input")
            if data is not None:
                return data
        return check(self.client.request("GET", f"/v1/blobs/{input_hash}").content, input_hash, f"input {input_hash}")

    def _from_store(self, digest: str, url: str, what: str) -> bytes | None:
        """A blob fetched straight from the blob store through a presigned URL, checked; None (the
        coordinator serves it instead) when that fails in any way."""
        if self._store_http is None:
            # no base URL and none of the coordinator client's headers: the URL carries its own signature
            self._store_http = httpx.Client(timeout=30.0, follow_redirects=False)
        try:
            response = self._store_http.get(url)
            response.raise_for_status()
            data = check(response.content, digest, f"{what} {digest} from the blob store")
        except (httpx.HTTPError, IntegrityError) as exc:
            log.warning("cannot fetch %s %s from the blob store (%s); asking the coordinator", what, digest, exc)
            return None
        self.blobs_from_store += 1
        return data
