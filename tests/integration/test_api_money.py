"""The money routes on a real coordinator with its embedded chain: a submitter funds its paid job
with transactions it signs itself, and the coordinator relays such transactions and nothing else."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest
from eth_account import Account as EthAccount

from coopgrid.datasets import sequence
from coopgrid.identity import Identity
from coopgrid.ledger import wallet
from tests.integration.test_api import NO_REPLICATION, Grid, Worker, error_of, make_grid  # noqa: F401 (fixture)


@pytest.fixture
def chain_grid(make_grid: Callable[..., Grid]) -> Grid:  # noqa: F811
    return make_grid(ledger="embedded", slash_delay_seconds=0)


def mint(grid: Grid, address: str, amount: int) -> None:
    r = grid.client.post("/v1/ledger/mint", json={"address": address, "amount": amount}, headers=grid.headers())
    assert r.status_code == 200, r.text


def signed(grid: Grid, me: Identity, calls: list[tuple[str, list[Any]]]) -> list[str]:
    r = grid.client.get(f"/v1/ledger/accounts/{me.address}")
    assert r.status_code == 200, r.text
    return wallet.sign_calls(me, wallet.Account.from_json(r.json()), calls)


def relay(grid: Grid, raw: list[str], token: str | None = None) -> Any:
    return grid.client.post("/v1/ledger/transactions", json={"raw": raw}, headers=grid.headers(token))


def paid_job(grid: Grid, funder: str, token: str, reward: int = 5, min_stake: int = 0) -> dict[str, Any]:
    dataset = grid.upload(sequence(20).to_npz(), token)
    r = grid.client.post(
        "/v1/jobs",
        json={"task_type": "echo", "dataset": dataset, "task_size": 4, "reward_per_task": reward, "funder": funder,
              "min_stake": min_stake, "trust": NO_REPLICATION},
        headers=grid.headers(token),
    )
    assert r.status_code == 201, r.text
    return r.json()


def fund(grid: Grid, me: Identity, job: dict[str, Any], amount: int, token: str) -> dict[str, Any]:
    """The funder's approve and fund, relayed; then the job is told it is funded."""
    mint(grid, me.address, amount)
    contract = grid.client.get(f"/v1/ledger/accounts/{me.address}").json()["contract"]
    deadline = int(time.time()) + 86400
    sent = relay(grid, signed(grid, me, [("approve", [contract, amount]),
                                         ("fund", [bytes.fromhex(job["id"]), amount, deadline])]), token)
    assert sent.status_code == 200, sent.text
    funded = grid.client.post(f"/v1/jobs/{job['id']}/funded", headers=grid.headers(token))
    assert funded.status_code == 200, funded.text
    return funded.json()


def test_a_paid_job_is_leased_only_once_its_submitter_funded_it(chain_grid: Grid) -> None:
    grid = chain_grid
    alice = grid.new_token("alice")
    me = Identity.generate()
    job = paid_job(grid, me.address, alice)
    assert job["state"] == "unfunded" and job["replicas"] == {}

    refused = grid.client.post(f"/v1/jobs/{job['id']}/funded", headers=grid.headers(alice))
    assert refused.status_code == 409 and "coopgrid fund" in error_of(refused)["detail"]

    mint(grid, me.address, 25)  # with some ether for gas
    contract = grid.client.get(f"/v1/ledger/accounts/{me.address}").json()["contract"]
    deadline = int(time.time()) + 86400
    sent = relay(grid, signed(grid, me, [("approve", [contract, 25]), ("fund", [bytes.fromhex(job["id"]), 25, deadline])]),
                 alice)
    assert sent.status_code == 200, sent.text
    assert [t["call"] for t in sent.json()["transactions"]] == ["approve", "fund"]
    assert {t["sender"] for t in sent.json()["transactions"]} == {me.address}

    funded = grid.client.post(f"/v1/jobs/{job['id']}/funded", headers=grid.headers(alice))
    assert funded.status_code == 200, funded.text
    assert funded.json()["state"] == "running" and funded.json()["replicas"] == {"ready": 5}
    escrow = grid.client.get(f"/v1/jobs/{job['id']}/escrow", headers=grid.headers(alice)).json()
    assert (escrow["budget"], escrow["spent"], escrow["refundable"], escrow["closed"]) == ("25", "0", "0", False)
    assert grid.client.get(f"/v1/ledger/accounts/{me.address}").json()["tokens"] == "0"


def test_a_job_asking_a_stake_is_refused_to_a_worker_without_it_from_its_very_first_lease(chain_grid: Grid) -> None:
    # the coordinator knows the running jobs' rules (stake, gold, placement) between leases: a job
    # that starts running must be known by the next lease, not a while later
    grid = chain_grid
    alice = grid.new_token("alice")
    worker = Worker(grid, owner="w").register()
    grid.submit_echo(1, 1, alice)
    assert len(worker.lease()["replicas"]) == 1  # the free job's one task: the running jobs are known
    me = Identity.generate()
    job = paid_job(grid, me.address, alice, min_stake=100)
    assert fund(grid, me, job, 25, alice)["state"] == "running"

    refused = worker.post("/v1/leases", {"max_replicas": 10})
    assert refused.status_code == 403, refused.text
    assert "needs a stake of 100" in error_of(refused)["detail"]


def test_the_relay_sends_the_ledgers_own_calls_and_nothing_else(chain_grid: Grid) -> None:
    grid = chain_grid
    me = Identity.generate()
    mint(grid, me.address, 10)
    info = grid.client.get(f"/v1/ledger/accounts/{me.address}").json()
    acct = wallet.Account.from_json(info)

    ok = signed(grid, me, [("approve", [info["contract"], 10])])
    anonymous = grid.client.post("/v1/ledger/transactions", json={"raw": ok})
    assert anonymous.status_code == 401  # no credentials: refused before the body is read

    def raw(**tx: Any) -> str:
        base = {"to": info["token"], "data": wallet.calldata("approve", info["contract"], 1), "value": 0,
                "nonce": acct.nonce, "gas": 100_000, "maxFeePerGas": acct.max_fee_per_gas,
                "maxPriorityFeePerGas": acct.max_priority_fee_per_gas, "chainId": acct.chain_id, "type": 2}
        return "0x" + bytes(EthAccount.sign_transaction({**base, **tx}, me.private_key).raw_transaction).hex()

    from eth_abi import encode

    transfer = wallet.selector("transfer(address,uint256)") + encode(["address", "uint256"], [me.address, 1])
    for bad, why in [
        (raw(data=transfer), "only"),  # the token's transfer: not a relayed call
        (raw(to="0x" + "11" * 20), "only"),  # approve, but to another contract
        (raw(to=info["contract"]), "only"),  # approve's selector sent to the ledger
        (raw(value=1), "no ether"),
        (raw(gas=wallet.MAX_GAS + 1), "no ether"),
        (raw(chainId=acct.chain_id + 1), "chain"),
        ("0x" + "02" * 40, "not a signed transaction"),
    ]:
        r = relay(grid, [bad])
        assert r.status_code == 422 and why in str(error_of(r)["detail"]), (why, r.text)
    assert relay(grid, ok * (wallet.MAX_BATCH + 1)).status_code == 422

    assert relay(grid, ok).status_code == 200
    again = relay(grid, ok)  # the same signed transaction again: already mined, sent once
    assert again.status_code == 200 and again.json()["transactions"][0]["tx_hash"] == relay(grid, ok).json()[
        "transactions"][0]["tx_hash"]


def test_a_worker_stakes_its_own_tokens_through_a_signed_request(chain_grid: Grid) -> None:
    grid = chain_grid
    worker = Worker(grid).register()
    mint(grid, worker.address, 7)
    contract = grid.client.get(f"/v1/ledger/accounts/{worker.address}").json()["contract"]
    r = worker.post("/v1/ledger/transactions",
                    {"raw": signed(grid, worker.identity, [("approve", [contract, 7]), ("stake", [7])])})
    assert r.status_code == 200, r.text
    stake = grid.client.get(f"/v1/ledger/accounts/{worker.address}").json()["stake"]
    assert stake["active"] == "7"
    reverted = worker.post("/v1/ledger/transactions", {"raw": signed(grid, worker.identity, [("withdraw", [])])})
    assert reverted.status_code == 409 and "nothing unstaking" in error_of(reverted)["detail"]


def test_a_tasks_reward_is_shared_once_and_the_job_summary_adds_up(chain_grid: Grid) -> None:
    grid = chain_grid
    alice = grid.new_token("alice")
    funder = Identity.generate()
    dataset = grid.upload(sequence(8).to_npz(), alice)
    r = grid.client.post(
        "/v1/jobs",
        json={"task_type": "echo", "dataset": dataset, "task_size": 4, "reward_per_task": 7, "funder": funder.address,
              "min_stake": 0, "trust": {"replicas": 2, "quorum": 2, "adaptive": False, "gold_rate": 0, "record_run": 0}},
        headers=grid.headers(alice),
    )
    job = r.json()
    mint(grid, funder.address, 14)
    contract = grid.client.get(f"/v1/ledger/accounts/{funder.address}").json()["contract"]
    calls = [("approve", [contract, 14]), ("fund", [bytes.fromhex(job["id"]), 14, int(time.time()) + 86400])]
    assert relay(grid, signed(grid, funder, calls), alice).status_code == 200
    assert grid.client.post(f"/v1/jobs/{job['id']}/funded", headers=grid.headers(alice)).status_code == 200

    ann, bob = Worker(grid, owner="ann").register(), Worker(grid, owner="bob").register()
    for w in (ann, bob, ann, bob):
        r = w.post("/v1/leases", {"max_replicas": 100})
        if r.status_code == 201:
            assert w.submit(r.json()["lease_id"], w.batch(r.json())).status_code == 200
    grid.wait_until_done(job["id"], alice)

    def escrow() -> dict[str, Any]:
        return grid.client.get(f"/v1/jobs/{job['id']}/escrow", headers=grid.headers(alice)).json()

    before = escrow()  # 2 tasks x 7, each shared by 2 agreeing results: 7 = 3 + 3 + 1 to the accepted one
    assert before["pending"] == "14" and before["spent"] == "0"
    assert sum(int(w["pending"]) for w in before["workers"]) == 14
    assert {int(w["pending"]) for w in before["workers"]} <= {6, 7, 8}
    assert sum(int(grid.client.get(f"/v1/rewards/{w.address}").json()["pending"]) for w in (ann, bob)) == 14

    # a paid job cancelled before it was ever funded has no escrow to close, and holds up no other's
    never = paid_job(grid, Identity.generate().address, alice)
    assert grid.client.post(f"/v1/jobs/{never['id']}/cancel", headers=grid.headers(alice)).status_code == 200
    assert sorted(j.id for j in grid.app.store.open_escrows()) == sorted([job["id"], never["id"]])
    assert grid.client.post("/v1/ledger/seal", headers=grid.headers()).status_code == 200
    after = escrow()
    assert (after["budget"], after["spent"], after["pending"]) == ("14", "14", "0")
    assert sum(int(w["paid"]) for w in after["workers"]) == 14
    assert after["closed"] and after["refundable"] == "0"
    # marked in the database: no sealer, after a restart or in another process, looks at it again
    assert grid.app.store.open_escrows() == []
    for w in (ann, bob):
        status = grid.client.get(f"/v1/rewards/{w.address}").json()
        assert int(status["claimable"]) == next(int(x["paid"]) for x in after["workers"] if x["address"] == w.address)
