"""What coordinator and worker say to each other: wire schemas and the EIP-712
types a worker signs its results with.

A worker imports this module, never coordinator code. Hashes travel as 64
lowercase hex characters (sha256 of the bytes; the same 32 bytes are the
``bytes32`` values of the signed struct and of the ledger's result leaves).

Signed data (EIP-712, domain ``{name: "coopgrid", version: "1", chainId}``)::

    ResultBatch(address worker, uint64 lease, Result[] results)
    Result(bytes32 jobId, uint64 taskIndex, bytes32 inputHash, bytes32 modelHash, bytes32 outputHash)

One signature covers a whole batch, so any wallet or library can check a
worker's claim "I computed outputHash from inputHash with modelHash".
"""

from __future__ import annotations

import base64
import hashlib
import re
from typing import Annotated, Any, NamedTuple

try:  # safe-pysha3's C keccak: ~8x faster per call than eth_hash's default backend
    from sha3 import keccak_256

    def keccak(data: bytes) -> bytes:
        return keccak_256(data).digest()

except ImportError:  # pragma: no cover - a worker without the ledger extra
    from eth_hash.auto import keccak
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from coopgrid.platforms import Platform

#: ids are 64-bit signed integers in the database: anything larger is refused at the edge, not by the driver
MAX_ID = 2**63 - 1

DOMAIN_NAME = "coopgrid"
DOMAIN_VERSION = "1"
ZERO_HASH = "0" * 64

EIP712_TYPES: dict[str, list[dict[str, str]]] = {
    "ResultBatch": [
        {"name": "worker", "type": "address"},
        {"name": "lease", "type": "uint64"},
        {"name": "results", "type": "Result[]"},
    ],
    "Result": [
        {"name": "jobId", "type": "bytes32"},
        {"name": "taskIndex", "type": "uint64"},
        {"name": "inputHash", "type": "bytes32"},
        {"name": "modelHash", "type": "bytes32"},
        {"name": "outputHash", "type": "bytes32"},
    ],
}

_HEX64 = re.compile(r"^[0-9a-f]{64}$")


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def is_hash(value: str) -> bool:
    return bool(_HEX64.match(value))


class ResultRef(NamedTuple):
    """The values one signed ``Result`` struct holds (hex hashes, no 0x)."""

    job_id: str
    task_index: int
    input_hash: str
    model_hash: str
    output_hash: str


def eip712_domain(chain_id: int) -> dict[str, Any]:
    return {"name": DOMAIN_NAME, "version": DOMAIN_VERSION, "chainId": chain_id}


def eip712_message(worker: str, lease_id: int, results: list[ResultRef]) -> dict[str, Any]:
    """The batch as the dict eth-account's ``encode_typed_data`` takes (slow, for checking)."""
    return {
        "worker": worker,
        "lease": lease_id,
        "results": [
            {
                "jobId": bytes.fromhex(r.job_id),
                "taskIndex": r.task_index,
                "inputHash": bytes.fromhex(r.input_hash),
                "modelHash": bytes.fromhex(r.model_hash),
                "outputHash": bytes.fromhex(r.output_hash),
            }
            for r in results
        ],
    }


def _type_hash(primary: str) -> bytes:
    def sig(name: str) -> str:
        return name + "(" + ",".join(f"{f['type']} {f['name']}" for f in EIP712_TYPES[name]) + ")"

    return keccak((sig(primary) + (sig("Result") if primary == "ResultBatch" else "")).encode())


_DOMAIN_TYPEHASH = keccak(b"EIP712Domain(string name,string version,uint256 chainId)")
_BATCH_TYPEHASH = _type_hash("ResultBatch")
_RESULT_TYPEHASH = _type_hash("Result")


def _domain_separator(chain_id: int) -> bytes:
    return keccak(
        _DOMAIN_TYPEHASH
        + keccak(DOMAIN_NAME.encode())
        + keccak(DOMAIN_VERSION.encode())
        + chain_id.to_bytes(32, "big")
    )


def batch_digest(chain_id: int, worker: str, lease_id: int, results: list[ResultRef]) -> bytes:
    """The EIP-712 digest of a result batch.

    Equal to ``encode_typed_data(domain, EIP712_TYPES, message)`` hashed by
    eth-account (a unit test holds the two together), but about 25x faster:
    the generic encoder costs ~50 us per struct, which at thousands of
    results per second would be the coordinator's largest cost.
    """
    struct_hashes = b"".join(
        keccak(
            _RESULT_TYPEHASH
            + bytes.fromhex(r.job_id)
            + r.task_index.to_bytes(32, "big")
            + bytes.fromhex(r.input_hash)
            + bytes.fromhex(r.model_hash)
            + bytes.fromhex(r.output_hash)
        )
        for r in results
    )
    batch_hash = keccak(
        _BATCH_TYPEHASH
        + bytes.fromhex(worker[2:].lower()).rjust(32, b"\0")
        + lease_id.to_bytes(32, "big")
        + keccak(struct_hashes)
    )
    return keccak(b"\x19\x01" + _domain_separator(chain_id) + batch_hash)


# --- wire schemas -------------------------------------------------------------

Hash = str


def _check_hash(value: str) -> str:
    if not is_hash(value):
        raise ValueError("must be a sha256 hash: 64 lowercase hex characters")
    return value


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class WorkerRegistration(Strict):
    """POST /v1/workers. Signed like every worker request (see identity.py)."""

    name: str = Field("", max_length=100, description="Free-form label shown in listings.")
    owner: str = Field("", max_length=100, description="Who runs this worker; replicas of one task avoid one owner.")
    trusted: bool = Field(
        False, description="Vouched for by the operator: the request must also carry an operator's API token."
    )
    platform: Platform | None = Field(
        None, description="What it computes on; replicas of a task whose type needs it go to one platform class."
    )


class LeaseRequest(Strict):
    """POST /v1/leases: ask for up to ``max_replicas`` replicas."""

    max_replicas: int = Field(100, ge=1, le=10_000)
    # bounded: each name becomes a parameter of the lease query
    task_types: list[Annotated[str, Field(max_length=50)]] = Field(
        default_factory=list, max_length=64, description="Types this worker can run; empty means all."
    )
    wait: float = Field(
        0.0, ge=0, le=30,
        description="Seconds to hold the request while there is no work (a long poll; the coordinator may "
        "answer sooner, see long_poll_seconds in GET /v1/info); 0 answers at once.",
    )


class ResultItem(Strict):
    replica_id: int = Field(ge=1, le=MAX_ID)
    output_hash: Hash
    output: str | None = Field(None, description="base64 of the canonical output bytes, if inline.")
    error: str | None = Field(None, max_length=2000, description="Why the worker could not compute it.")

    _hash = field_validator("output_hash")(_check_hash)


class ResultBatch(Strict):
    """POST /v1/leases/{lease_id}/results: results for replicas of one lease.

    ``signature`` is the worker's EIP-712 signature over :func:`batch_digest`
    of the items, in the order given, with job/task/input/model values as the
    coordinator leased them.
    """

    signature: str = Field(pattern=r"^0x[0-9a-fA-F]{130}$")
    results: list[ResultItem] = Field(min_length=1, max_length=10_000)
    release: list[Annotated[int, Field(ge=1, le=MAX_ID)]] = Field(
        default_factory=list, max_length=10_000, description="Replica ids the worker gives back unfinished."
    )

    @model_validator(mode="after")
    def _each_replica_once(self) -> ResultBatch:
        seen: set[int] = set()
        for rid in [r.replica_id for r in self.results] + self.release:
            if rid in seen:
                raise ValueError(f"replica {rid} appears more than once in the batch (results and release)")
            seen.add(rid)
        return self


def b64encode(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def b64decode(text: str) -> bytes:
    return base64.b64decode(text, validate=True)
