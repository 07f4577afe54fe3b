"""The client people use (CLI, demo, tests): token-authenticated calls to the API."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx

from coopgrid.errors import CoordinatorUnavailable
from coopgrid.worker.client import error_from_response


class ApiClient:
    def __init__(self, base_url: str, token: str | None, timeout: float = 120.0) -> None:
        headers = {"authorization": f"Bearer {token}"} if token else {}
        self.base_url = base_url.rstrip("/")
        self.http = httpx.Client(base_url=self.base_url, headers=headers, timeout=timeout)

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> ApiClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def call(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = self.http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise CoordinatorUnavailable(
                f"cannot reach the coordinator at {self.base_url} ({type(exc).__name__}); is it running?"
            ) from exc
        if response.status_code >= 400:
            raise error_from_response(response)
        return response

    def json(self, method: str, path: str, **kwargs: Any) -> Any:
        return self.call(method, path, **kwargs).json()

    # -- operations ---------------------------------------------------------------

    def put_blob(self, data: bytes) -> str:
        return self.json("PUT", "/v1/blobs", content=data)["sha256"]

    def publish_model(self, onnx: bytes, spec: dict[str, Any]) -> dict[str, Any]:
        digest = self.put_blob(onnx)
        return self.json("POST", "/v1/models", json={**spec, "sha256": digest})

    def models(self) -> list[dict[str, Any]]:
        return self.json("GET", "/v1/models")

    def model(self, ref: str) -> dict[str, Any]:
        return self.json("GET", f"/v1/models/{ref}")

    def submit(self, spec: dict[str, Any]) -> dict[str, Any]:
        return self.json("POST", "/v1/jobs", json=spec)

    def job(self, job_id: str) -> dict[str, Any]:
        return self.json("GET", f"/v1/jobs/{job_id}")

    def jobs(self) -> list[dict[str, Any]]:
        return self.json("GET", "/v1/jobs")

    def cancel(self, job_id: str) -> dict[str, Any]:
        return self.json("POST", f"/v1/jobs/{job_id}/cancel")

    def output(self, job_id: str, path: Path) -> Path:
        path.write_bytes(self.call("GET", f"/v1/jobs/{job_id}/output").content)
        return path

    def workers(self) -> list[dict[str, Any]]:
        return self.json("GET", "/v1/workers")

    def create_token(self, name: str, role: str) -> dict[str, Any]:
        return self.json("POST", "/v1/tokens", json={"name": name, "role": role})

    # -- ledger ---------------------------------------------------------------------

    def ledger(self) -> dict[str, Any]:
        return self.json("GET", "/v1/ledger")

    def seal(self) -> dict[str, Any]:
        return self.json("POST", "/v1/ledger/seal")

    def epoch_tree(self, number: int) -> dict[str, Any]:
        return self.json("GET", f"/v1/ledger/epochs/{number}/results-tree")

    def proof(self, job_id: str, task_index: int) -> dict[str, Any]:
        return self.json("GET", f"/v1/jobs/{job_id}/tasks/{task_index}/proof")

    def verify(self, epoch: int, leaf_hash: str, proof: list[str]) -> bool:
        return self.json("POST", "/v1/ledger/verify", json={"epoch": epoch, "leaf_hash": leaf_hash, "proof": proof})[
            "valid"
        ]

    def rewards(self, address: str) -> dict[str, Any]:
        return self.json("GET", f"/v1/rewards/{address}")

    def model_on_chain(self, model_hash: str) -> dict[str, Any]:
        return self.json("GET", f"/v1/ledger/models/{model_hash}")

    def account(self, address: str) -> dict[str, Any]:
        return self.json("GET", f"/v1/ledger/accounts/{address}")

    def send_calls(self, identity: Any, calls: Sequence[tuple[str, Sequence[Any]]]) -> list[dict[str, Any]]:
        """Sign ledger ``calls`` ((name, args) of coopgrid.ledger.wallet.CALLS) with ``identity``'s own key
        and have the coordinator relay them, in order; returns their receipts."""
        from coopgrid.ledger import wallet

        raw = wallet.sign_calls(identity, wallet.Account.from_json(self.account(identity.address)), calls)
        return self.json("POST", "/v1/ledger/transactions", json={"raw": raw})["transactions"]

    def wait_for(self, job_id: str, until: Any, timeout: float = 120.0, poll: float = 0.1) -> dict[str, Any]:
        """Poll a job until ``until(job)`` holds; TimeoutError naming the job's state otherwise."""
        deadline = time.monotonic() + timeout
        while True:
            job = self.job(job_id)
            if until(job):
                return job
            if time.monotonic() > deadline:
                raise TimeoutError(f"job {job_id} still {job['state']} after {timeout:.0f}s: {job}")
            time.sleep(poll)
