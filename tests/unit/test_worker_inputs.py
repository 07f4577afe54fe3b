"""A worker reads a task input from the blob store's presigned URL when its lease gives one, and
through the coordinator when that URL fails or serves bytes that do not hash to the input's name."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from coopgrid.errors import IntegrityError
from coopgrid.protocol import sha256_hex
from coopgrid.worker.runtime import Runtime

DATA = b"the task's input bytes"
DIGEST = sha256_hex(DATA)
URL = f"http://store.invalid/bucket/{DIGEST}?X-Amz-Signature=abc"


class Coordinator:
    """Stands in for WorkerClient: records the paths asked for and serves ``data``."""

    def __init__(self, data: bytes = DATA) -> None:
        self.data, self.asked = data, []

    def request(self, method: str, path: str, **_: Any) -> httpx.Response:
        self.asked.append(path)
        return httpx.Response(200, content=self.data)


def runtime(tmp_path: Path, coordinator: Coordinator, store: httpx.MockTransport) -> Runtime:
    rt = Runtime(coordinator, tmp_path / "cache")  # type: ignore[arg-type]
    rt._store_http = httpx.Client(transport=store)
    return rt


def store_serving(status: int, content: bytes, seen: list[httpx.Request]) -> httpx.MockTransport:
    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(status, content=content)

    return httpx.MockTransport(handle)


def test_an_input_with_a_url_is_read_from_the_store_without_the_coordinator_s_credentials(tmp_path: Path) -> None:
    coordinator, seen = Coordinator(), []
    rt = runtime(tmp_path, coordinator, store_serving(200, DATA, seen))
    assert rt.task_input(DIGEST, None, URL) == DATA
    assert coordinator.asked == [] and rt.blobs_from_store == 1
    assert str(seen[0].url) == URL and "authorization" not in seen[0].headers


@pytest.mark.parametrize("status, served", [(403, b"<Error>AccessDenied</Error>"), (200, b"tampered bytes")])
def test_a_url_that_fails_or_serves_other_bytes_falls_back_to_the_coordinator(
    tmp_path: Path, status: int, served: bytes
) -> None:
    coordinator, seen = Coordinator(), []
    rt = runtime(tmp_path, coordinator, store_serving(status, served, seen))
    assert rt.task_input(DIGEST, None, URL) == DATA
    assert len(seen) == 1 and coordinator.asked == [f"/v1/blobs/{DIGEST}"] and rt.blobs_from_store == 0


def test_bytes_from_the_coordinator_are_checked_too(tmp_path: Path) -> None:
    rt = runtime(tmp_path, Coordinator(b"tampered bytes"), store_serving(200, b"tampered bytes", []))
    with pytest.raises(IntegrityError, match="refused input"):
        rt.task_input(DIGEST, None, URL)


def test_a_model_with_a_url_is_read_from_the_store_and_cached(tmp_path: Path) -> None:
    coordinator, seen = Coordinator(), []
    rt = runtime(tmp_path, coordinator, store_serving(200, DATA, seen))
    assert rt._model_bytes(DIGEST, URL) == DATA and coordinator.asked == [] and len(seen) == 1
    assert rt._model_bytes(DIGEST, URL) == DATA and len(seen) == 1  # from the cache the second time
