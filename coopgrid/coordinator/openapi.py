"""The coordinator's OpenAPI document: who may call what, and what comes back.

FastAPI derives paths and parameters from the routes; this adds what it cannot
see. Security schemes: a bearer token for people, and the five signed headers
of a worker request (all five together: one requirement). Request bodies of
the worker routes, which read and verify their bodies themselves. The error
body every 4xx/5xx answer has. Clients and fuzzers (the test suite runs
schemathesis against this document) can then build valid calls.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel, Field

from coopgrid.identity import HEADER_ADDRESS, HEADER_BODY, HEADER_NONCE, HEADER_SIGNATURE, HEADER_TIME
from coopgrid.protocol import LeaseRequest, ResultBatch, WorkerRegistration

PEOPLE = [{"bearer": []}]
WORKERS = [{"workerAddress": [], "workerTime": [], "workerNonce": [], "workerBodySha256": [], "workerSignature": []}]
EITHER = PEOPLE + WORKERS
PUBLIC: list[dict[str, list[str]]] = []

#: who may call each route (method, path template); a route not named here is an error in this table
SECURITY: dict[tuple[str, str], list[dict[str, list[str]]]] = {
    ("get", "/healthz"): PUBLIC,
    ("get", "/v1/info"): PUBLIC,
    ("post", "/v1/tokens"): PEOPLE,
    ("get", "/v1/tokens"): PEOPLE,
    ("post", "/v1/tokens/{ref}/revoke"): PEOPLE,
    ("put", "/v1/blobs"): PEOPLE,
    ("get", "/v1/blobs/{digest}"): EITHER,
    ("post", "/v1/datasets"): PEOPLE,
    ("post", "/v1/models"): PEOPLE,
    ("get", "/v1/models"): PEOPLE,
    ("get", "/v1/models/{ref}"): PEOPLE,
    ("get", "/v1/worker/models/{ref}"): WORKERS,
    ("post", "/v1/jobs"): PEOPLE,
    ("get", "/v1/jobs"): PEOPLE,
    ("get", "/v1/jobs/{job_id}"): PEOPLE,
    ("post", "/v1/jobs/{job_id}/cancel"): PEOPLE,
    ("get", "/v1/jobs/{job_id}/output"): PEOPLE,
    ("post", "/v1/workers"): WORKERS,
    ("get", "/v1/workers"): PEOPLE,
    ("post", "/v1/leases"): WORKERS,
    ("post", "/v1/leases/{lease_id}/heartbeat"): WORKERS,
    ("post", "/v1/leases/{lease_id}/results"): WORKERS,
    ("get", "/v1/ledger"): PUBLIC,
    ("post", "/v1/ledger/seal"): PEOPLE,
    ("get", "/v1/ledger/epochs/{number}/results-tree"): PUBLIC,
    ("get", "/v1/jobs/{job_id}/tasks/{task_index}/proof"): PEOPLE,
    ("post", "/v1/ledger/verify"): PUBLIC,
    ("get", "/v1/rewards/{address}"): PUBLIC,
    ("post", "/v1/rewards/{address}/claim"): EITHER,
    ("get", "/v1/ledger/models/{model_hash}"): PUBLIC,
    ("get", "/v1/ledger/accounts/{address}"): PUBLIC,
    ("post", "/v1/ledger/transactions"): EITHER,
    ("post", "/v1/jobs/{job_id}/funded"): PEOPLE,
    ("get", "/v1/jobs/{job_id}/escrow"): PEOPLE,
    ("post", "/v1/ledger/mint"): PEOPLE,
    ("get", "/v1/ledger/slashes"): PUBLIC,
    ("get", "/v1/ledger/evidence/{digest}"): PUBLIC,
    # coordinator/dashboard.py
    ("get", "/metrics"): PEOPLE,  # an operator's, unless the coordinator runs with metrics_public
    ("get", "/v1/grid"): PEOPLE,
    ("get", "/v1/grid/rewards"): PEOPLE,
    ("get", "/v1/jobs/{job_id}/failures"): PEOPLE,
    ("get", "/v1/ledger/epochs/{number}"): PUBLIC,
}

#: bodies the worker routes read themselves (after checking the signature over their hash)
BODIES: dict[tuple[str, str], type[BaseModel]] = {
    ("post", "/v1/workers"): WorkerRegistration,
    ("post", "/v1/leases"): LeaseRequest,
    ("post", "/v1/leases/{lease_id}/results"): ResultBatch,
}


class ErrorBody(BaseModel):
    """Every error: the class of :mod:`coopgrid.errors`, what to do, and the data it carries."""

    error: str = Field(description="The error's class, e.g. AuthError, TooLarge, RateLimited.")
    detail: Any = Field(description="What was wrong and what to do (validation errors: a list of problems).")


ERRORS = {
    "400": "Malformed request",
    "401": "No valid token or worker signature",
    "403": "Authenticated, but not allowed",
    "404": "No such thing (or not yours to see)",
    "408": "The body did not arrive in time",
    "409": "Conflicts with the current state",
    "413": "The body is over this endpoint's limit",
    "422": "Invalid input",
    "429": "Too many requests; see Retry-After",
    "503": "Busy or a dependency is unavailable",
}


def _signed_header(name: str, what: str) -> dict[str, str]:
    return {"type": "apiKey", "in": "header", "name": name, "description": what}


def document(api: FastAPI) -> dict[str, Any]:
    """The OpenAPI document, built once."""
    if api.openapi_schema:
        return api.openapi_schema
    schema = get_openapi(title=api.title, version=api.version, description=api.description, routes=api.routes)
    components = schema.setdefault("components", {})
    schemas = components.setdefault("schemas", {})
    components["securitySchemes"] = {
        "bearer": {"type": "http", "scheme": "bearer", "description": "An API token (`coopgrid tokens create`)."},
        "workerAddress": _signed_header(HEADER_ADDRESS, "The worker's Ethereum address."),
        "workerTime": _signed_header(HEADER_TIME, "Unix seconds when signed; within the coordinator's clock window."),
        "workerNonce": _signed_header(HEADER_NONCE, "16-64 hex characters, fresh for every request."),
        "workerBodySha256": _signed_header(HEADER_BODY, "sha256 of the body (hex); of b'' when there is none."),
        "workerSignature": _signed_header(
            HEADER_SIGNATURE, "EIP-191 signature of coopgrid.identity.request_text(grid, method, path, time, "
            "nonce, body sha256); the grid id is GET /v1/info's grid_id."
        ),
    }
    error_ref = {"$ref": "#/components/schemas/ErrorBody"}
    schemas["ErrorBody"] = ErrorBody.model_json_schema()
    for model in BODIES.values():
        model_schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
        schemas.update(model_schema.pop("$defs", {}))
        schemas[model.__name__] = model_schema
    for path, operations in schema["paths"].items():
        for method, op in operations.items():
            key = (method, path)
            if key not in SECURITY:
                raise RuntimeError(f"{method.upper()} {path} has no entry in coopgrid.coordinator.openapi.SECURITY")
            op["security"] = SECURITY[key]
            if key in BODIES:
                op["requestBody"] = {
                    "required": True,
                    "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{BODIES[key].__name__}"}}},
                }
            responses = op.setdefault("responses", {})
            for status, what in ERRORS.items():
                responses.setdefault(status, {"description": what, "content": {"application/json": {"schema": error_ref}}})
            if "422" in responses:  # FastAPI's own validation error shape is not ours
                responses["422"] = {"description": ERRORS["422"], "content": {"application/json": {"schema": error_ref}}}
    api.openapi_schema = schema
    return schema
