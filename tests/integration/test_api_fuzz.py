"""Property-based fuzzing of the HTTP API from its own OpenAPI document (schemathesis).

Every operation is called with generated parameters and bodies, valid and not,
as an operator (bearer token) and, for the worker routes, as a registered
worker that signs each generated request. The coordinator must never answer
with a server error, and must still be healthy afterwards. A real coordinator
(SQLite file in the test's tmp dir) serves the requests in process.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.core import NOT_SET

from coopgrid.app import App, build
from coopgrid.config import Settings
from coopgrid.coordinator.api import create_api
from coopgrid.coordinator.openapi import WORKERS
from coopgrid.datasets import sequence
from coopgrid.identity import Identity


class Coordinator:
    def __init__(self, data_dir: Path) -> None:
        # rate limits off: the fuzzer is one worker key sending as fast as it can; and no long polls: a
        # generated lease request with a wait would be held that long once the one job is leased out
        self.app: App = build(Settings(data_dir=data_dir, ledger="none", worker_requests_per_second=0,
                                       owner_requests_per_second=0, network_requests_per_second=0,
                                       long_poll_seconds=0))
        self.api = create_api(self.app)
        self.client = TestClient(self.api).__enter__()
        self.operator = self.app.auth.ensure_operator()
        self.worker = Identity.generate()
        body = orjson.dumps({"name": "fuzz", "owner": "fuzz"})
        r = self.client.post("/v1/workers", content=body, headers=self.signed("POST", "/v1/workers", body))
        assert r.status_code == 201, r.text
        # something to find: a job with tasks, so ids in generated paths sometimes exist
        dataset = self.client.put("/v1/blobs", content=sequence(20).to_npz(), headers=self.bearer).json()["sha256"]
        job = self.client.post("/v1/jobs", json={"task_type": "echo", "dataset": dataset, "task_size": 5},
                               headers=self.bearer)
        assert job.status_code == 201, job.text

    @property
    def bearer(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.operator}"}

    def signed(self, method: str, path: str, body: bytes) -> dict[str, str]:
        headers = self.worker.request_headers(method, path, body, self.app.auth.grid)
        return headers | {"content-type": "application/json"}

    def close(self) -> None:
        self.client.__exit__(None, None, None)
        self.app.close()


@pytest.fixture(scope="module")
def coordinator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Coordinator]:
    c = Coordinator(tmp_path_factory.mktemp("fuzz"))
    yield c
    c.close()


def test_no_generated_request_gets_a_server_error(coordinator: Coordinator) -> None:
    schema = schemathesis.openapi.from_asgi("/openapi.json", coordinator.api)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 25  # every route is in the document

    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True,
                  database=None)
        def call(case: schemathesis.Case) -> None:
            if case.operation.definition.raw.get("security") == WORKERS:
                # sign the generated request as the registered worker would, to get past the signature check
                body = b"" if case.body is NOT_SET else orjson.dumps(case.body)
                response = coordinator.client.request(
                    case.method, case.formatted_path, content=body, params=case.query or None,
                    headers=coordinator.signed(case.method, case.formatted_path, body),
                )
                assert response.status_code < 500, (case.method, case.formatted_path, body[:300], response.text)
            else:
                case.call_and_validate(headers=coordinator.bearer, checks=[not_a_server_error])

        call()
        assert coordinator.client.get("/healthz").status_code == 200, operation.label
