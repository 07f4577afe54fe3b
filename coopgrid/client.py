"""The client people use (CLI, demo, tests): token-authenticated calls to the API."""

from __future__ import annotations

import hashlib
import os
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx

from coopgrid.blobs.base import CHUNK
from coopgrid.errors import CoordinatorUnavailable, IntegrityError, InvalidInput, JobNotFound, ModelNotFound
from coopgrid.worker.client import error_from_response


HEX = frozenset("0123456789abcdef")
#: a job id is 64 hex characters; shorter hex is a prefix to resolve (as git resolves commits)
JOB_ID_LENGTH = 64
MIN_PREFIX = 4


def check_url(base_url: str) -> str:
    """The coordinator URL, or an error saying what a URL looks like (httpx says "UnsupportedProtocol")."""
    url = base_url.strip().rstrip("/")
    if not url.lower().startswith(("http://", "https://")):
        raise InvalidInput(
            f"the coordinator URL {base_url!r} has no scheme: write http://{url or 'HOST:8750'} "
            "(or https:// behind a TLS proxy)"
        )
    return url


def unique_prefix(prefix: str, ids: list[str], what: str) -> str | None:
    """The one id starting with ``prefix``; None if none does; an error naming the candidates if several do."""
    found = sorted({i for i in ids if i.startswith(prefix)})
    if len(found) > 1:
        shown = ", ".join(found[:5]) + (", …" if len(found) > 5 else "")
        raise InvalidInput(f"{what} prefix {prefix!r} is ambiguous: it starts {len(found)} ids ({shown}); give more characters")
    return found[0] if found else None


class ApiClient:
    def __init__(self, base_url: str, token: str | None, timeout: float = 120.0) -> None:
        headers = {"authorization": f"Bearer {token}"} if token else {}
        self.base_url = check_url(base_url)
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

    def fetch_dataset(self, url: str) -> dict[str, Any]:
        """Have the coordinator read a dataset from ``url`` (under a prefix its operator allows): its blob."""
        # the coordinator answers once the whole file is read and packed, which a big file takes a while for
        return self.json("POST", "/v1/datasets", json={"url": url}, timeout=max(self.http.timeout.read or 0, 900.0))

    def publish_model(self, onnx: bytes, spec: dict[str, Any]) -> dict[str, Any]:
        digest = self.put_blob(onnx)
        return self.json("POST", "/v1/models", json={**spec, "sha256": digest})

    def models(self) -> list[dict[str, Any]]:
        return self.json("GET", "/v1/models")

    def model(self, ref: str) -> dict[str, Any]:
        """A model by hash, unique hash prefix, name or name:version."""
        try:
            return self.json("GET", f"/v1/models/{ref}")
        except ModelNotFound:
            ref_l = ref.lower()
            if len(ref_l) < MIN_PREFIX or not set(ref_l) <= HEX:
                raise
            full = unique_prefix(ref_l, [m["hash"] for m in self.models()], "model hash")
            if full is None:
                raise
            return self.json("GET", f"/v1/models/{full}")

    def resolve_job(self, ref: str) -> str:
        """The full id of the job ``ref`` names: a full id, or a unique prefix of one of the caller's jobs."""
        ref_l = ref.strip().lower()
        if len(ref_l) == JOB_ID_LENGTH or not ref_l or not set(ref_l) <= HEX:
            return ref
        if len(ref_l) < MIN_PREFIX:
            raise InvalidInput(f"job id prefix {ref!r} is too short: give at least {MIN_PREFIX} characters")
        full = unique_prefix(ref_l, [j["id"] for j in self.jobs(prefix=ref_l, limit=6)], "job id")
        if full is None:
            raise JobNotFound(f"no job starts with {ref!r}; `coopgrid status` lists yours", job_id=ref)
        return full

    def submit(self, spec: dict[str, Any]) -> dict[str, Any]:
        return self.json("POST", "/v1/jobs", json=spec)

    def job(self, job_id: str) -> dict[str, Any]:
        return self.json("GET", f"/v1/jobs/{job_id}")

    def jobs(self, limit: int | None = None, state: str | None = None, prefix: str | None = None,
             before: str | None = None) -> list[dict[str, Any]]:
        """Your jobs, newest first: one page (the coordinator's default size unless ``limit``)."""
        params = {k: v for k, v in {"limit": limit, "state": state, "prefix": prefix, "before": before}.items()
                  if v is not None}
        return self.json("GET", "/v1/jobs", params=params)

    def cancel(self, job_id: str) -> dict[str, Any]:
        return self.json("POST", f"/v1/jobs/{job_id}/cancel")

    def output(self, job_id: str, path: Path) -> Path:
        return self.download(f"/v1/jobs/{job_id}/output", path)

    def download(self, url: str, path: Path, expected: str | None = None) -> Path:
        """Stream ``url``'s bytes to ``path`` (never held whole), checked against their sha256:
        ``expected``, else the one the coordinator names (x-coopgrid-sha256, which must be there).
        ``path`` is replaced only by bytes that match, so a cut or corrupt transfer leaves no file."""
        fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
        tmp = Path(name)
        try:
            with self.http.stream("GET", url) as response:
                if response.status_code != 200:
                    response.read()
                    raise error_from_response(response) if response.status_code >= 400 else CoordinatorUnavailable(
                        f"{self.base_url}{url} answered HTTP {response.status_code}, not the file: is the "
                        "coordinator URL right (not a proxy's redirect)?"
                    )
                named = response.headers.get("x-coopgrid-sha256")
                expected = expected or named
                if expected is None:
                    raise IntegrityError(f"{url} came without the sha256 it must be checked against "
                                         "(x-coopgrid-sha256); is this a coopgrid coordinator, or an old one?")
                digest = hashlib.sha256()
                with os.fdopen(fd, "wb") as fh:
                    fd = -1
                    for chunk in response.iter_bytes(CHUNK):
                        digest.update(chunk)
                        fh.write(chunk)
            if digest.hexdigest() != expected:
                raise IntegrityError(
                    f"the download of {url} hashes to {digest.hexdigest()}, not {expected}: it was corrupted on the way; "
                    "download it again", expected=expected, actual=digest.hexdigest(),
                )
            tmp.chmod(0o644)  # as a file written plainly would be (mkstemp's are the owner's alone)
            tmp.replace(path)
        except httpx.TransportError as exc:
            raise CoordinatorUnavailable(
                f"the download from the coordinator at {self.base_url} broke off ({type(exc).__name__}); "
                "nothing was written: try again"
            ) from exc
        finally:
            if fd != -1:
                os.close(fd)
            tmp.unlink(missing_ok=True)
        return path

    def workers(self) -> list[dict[str, Any]]:
        return self.json("GET", "/v1/workers")

    def failures(self, job_id: str) -> dict[str, Any]:
        return self.json("GET", f"/v1/jobs/{job_id}/failures")

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
