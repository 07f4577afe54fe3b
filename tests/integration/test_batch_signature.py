"""The result batch's EIP-712 signature, from every angle a forger could try.

The coordinator checks the signature against the values *it* leased: the job,
the task index, the input and model hashes, the output hash sent, this
grid's chain id, the lease the batch is posted to, the order of the results.
A batch signed over anything else recovers to another address and is 401,
and nothing of it is recorded; the honest batch is accepted afterwards.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from coopgrid.protocol import ResultRef
from tests.integration.test_api import Grid, Worker, error_of, make_grid  # noqa: F401  (fixture)


@pytest.fixture
def grid(make_grid: Callable[..., Grid]) -> Grid:  # noqa: F811
    return make_grid()


def flip(hex_hash: str) -> str:
    """Another hash: the first byte changed."""
    return f"{(int(hex_hash[:2], 16) ^ 0xFF):02x}" + hex_hash[2:]


#: ways to sign values other than those leased and sent, one field of the first result at a time
OTHER_VALUES: dict[str, Callable[[ResultRef], ResultRef]] = {
    "job_id": lambda r: r._replace(job_id=flip(r.job_id)),
    "task_index": lambda r: r._replace(task_index=r.task_index + 1),
    "input_hash": lambda r: r._replace(input_hash=flip(r.input_hash)),
    "model_hash": lambda r: r._replace(model_hash=flip(r.model_hash)),
    "output_hash": lambda r: r._replace(output_hash=flip(r.output_hash)),
}


def refused(grid: Grid, w: Worker, lease: dict[str, Any], body: dict[str, Any], job_id: str) -> None:
    """``body`` is refused with 401 naming the worker, and nothing of the job is counted."""
    r = w.submit(lease["lease_id"], body)
    assert r.status_code == 401, r.text
    assert error_of(r)["error"] == "AuthError"
    assert w.address in error_of(r)["detail"]
    job = grid.job(job_id)
    assert job["tasks_done"] == 0 and job["replicas"].get("done", 0) == 0, job


def honest_batch_goes_through(grid: Grid, w: Worker, lease: dict[str, Any], job_id: str) -> None:
    n = len(lease["replicas"])
    r = w.submit(lease["lease_id"], w.batch(lease))
    assert r.status_code == 200, r.text
    assert r.json()["results"] == {"accepted": n}
    assert grid.job(job_id)["tasks_done"] >= n


@pytest.mark.parametrize("field", sorted(OTHER_VALUES))
def test_a_batch_signed_over_other_values_is_401(grid: Grid, field: str) -> None:
    job = grid.submit_echo(6, 2)
    w = Worker(grid).register()
    lease = w.lease()
    items, refs = w.compute(lease)
    signed = [OTHER_VALUES[field](refs[0]), *refs[1:]]
    signature = w.identity.sign_batch(lease["chain_id"], lease["lease_id"], signed)
    refused(grid, w, lease, {"signature": signature, "results": items}, job["id"])
    honest_batch_goes_through(grid, w, lease, job["id"])


def test_a_batch_signed_for_another_chain_id_is_401(grid: Grid) -> None:
    job = grid.submit_echo(6, 2)
    w = Worker(grid).register()
    lease = w.lease()
    assert lease["chain_id"] == grid.app.settings.chain_id
    items, refs = w.compute(lease)
    for other in (lease["chain_id"] + 1, 1):  # a neighbour, and mainnet's
        signature = w.identity.sign_batch(other, lease["lease_id"], refs)
        refused(grid, w, lease, {"signature": signature, "results": items}, job["id"])
    honest_batch_goes_through(grid, w, lease, job["id"])


def test_a_batch_signed_for_another_lease_is_401(grid: Grid) -> None:
    job = grid.submit_echo(8, 2)
    w = Worker(grid).register()
    first, second = w.lease(2), w.lease(2)
    assert first["lease_id"] != second["lease_id"]
    items, refs = w.compute(second)
    # the second lease's results, signed as if they belonged to the first lease
    signature = w.identity.sign_batch(second["chain_id"], first["lease_id"], refs)
    refused(grid, w, second, {"signature": signature, "results": items}, job["id"])
    # nor does the first lease take a batch signed for it that holds the second lease's replicas
    r = w.submit(first["lease_id"], {"signature": signature, "results": items})
    assert r.status_code in (401, 409), r.text
    assert grid.job(job["id"])["tasks_done"] == 0
    honest_batch_goes_through(grid, w, second, job["id"])
    honest_batch_goes_through(grid, w, first, job["id"])


def test_a_batch_signed_in_another_order_is_401(grid: Grid) -> None:
    job = grid.submit_echo(6, 2)
    w = Worker(grid).register()
    lease = w.lease()
    items, refs = w.compute(lease)
    assert len(refs) == 3
    signature = w.identity.sign_batch(lease["chain_id"], lease["lease_id"], refs[::-1])
    refused(grid, w, lease, {"signature": signature, "results": items}, job["id"])
    honest_batch_goes_through(grid, w, lease, job["id"])


def test_a_batch_signed_by_another_key_over_the_right_values_is_401(grid: Grid) -> None:
    job = grid.submit_echo(4, 2)
    w, other = Worker(grid).register(), Worker(grid, owner="others").register()
    lease = w.lease()
    # another registered worker signs exactly what w was leased: still not w's signature
    refused(grid, w, lease, w.batch(lease, signer=other.identity), job["id"])
    honest_batch_goes_through(grid, w, lease, job["id"])
