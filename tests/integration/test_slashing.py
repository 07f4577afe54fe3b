"""Slashing with public evidence, on a real coordinator and its embedded chain: a worker outvoted by a
quorum of signed results loses part of its stake into the harmed job's escrow, and the bundle proves it."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import pytest

from coopgrid import tasks
from coopgrid.errors import InvalidInput
from coopgrid.identity import Identity
from coopgrid.ledger import evidence
from tests.integration.test_api import Grid, Worker, make_grid  # noqa: F401 (fixture)
from tests.integration.test_api_money import chain_grid, mint, relay, signed  # noqa: F401 (fixture)
from coopgrid.datasets import sequence


def paid_quorum_job(grid: Grid, token: str, funder: Identity, tasks_n: int, reward: int) -> dict[str, Any]:
    dataset = grid.upload(sequence(4 * tasks_n).to_npz(), token)
    job = grid.client.post(
        "/v1/jobs",
        json={"task_type": "echo", "dataset": dataset, "task_size": 4, "reward_per_task": reward,
              "funder": funder.address, "min_stake": 0,
              "trust": {"replicas": 3, "quorum": 2, "adaptive": False, "gold_rate": 0, "max_invalid": 1,
                        "record_run": 0}},  # every worker has a record (newcomers: test_collusion.py)
        headers=grid.headers(token),
    ).json()
    need = reward * tasks_n
    mint(grid, funder.address, need)
    contract = grid.client.get(f"/v1/ledger/accounts/{funder.address}").json()["contract"]
    calls = [("approve", [contract, need]), ("fund", [bytes.fromhex(job["id"]), need, int(time.time()) + 86400])]
    assert relay(grid, signed(grid, funder, calls), token).status_code == 200
    assert grid.client.post(f"/v1/jobs/{job['id']}/funded", headers=grid.headers(token)).status_code == 200
    return job


def staked(grid: Grid, worker: Worker, amount: int) -> Worker:
    mint(grid, worker.address, amount)
    contract = grid.client.get(f"/v1/ledger/accounts/{worker.address}").json()["contract"]
    r = worker.post("/v1/ledger/transactions",
                    {"raw": signed(grid, worker.identity, [("approve", [contract, amount]), ("stake", [amount])])})
    assert r.status_code == 200, r.text
    return worker


def run(grid: Grid, honest: list[Worker], cheats: list[Worker]) -> None:
    for w in [*honest, *cheats]:
        r = w.post("/v1/leases", {"max_replicas": 100})
        if r.status_code == 201:
            assert w.submit(r.json()["lease_id"], w.batch(r.json(), cheat=w in cheats)).status_code == 200


def test_a_worker_outvoted_by_a_quorum_is_slashed_and_the_bundle_proves_it(chain_grid: Grid) -> None:  # noqa: F811
    grid = chain_grid
    alice = grid.new_token("alice")
    funder = Identity.generate()
    job = paid_quorum_job(grid, alice, funder, tasks_n=1, reward=10)
    ann, bob = Worker(grid, owner="ann").register(), Worker(grid, owner="bob").register()
    cat = staked(grid, Worker(grid, owner="cat").register(), 100)
    run(grid, [ann, bob], [cat])
    grid.wait_until_done(job["id"], alice)
    assert grid.app.store.get_worker(cat.address).quarantined_at is not None

    grid.client.post("/v1/ledger/seal", headers=grid.headers())
    (slash,) = grid.client.get("/v1/ledger/slashes").json()
    assert (slash["worker"], slash["job_id"], slash["amount"]) == (cat.address, job["id"], "50")  # half its stake
    stake = grid.client.get(f"/v1/ledger/accounts/{cat.address}").json()["stake"]
    assert stake["active"] == "50"

    # the escrow got the slashed tokens: after the job closes, its funder gets them back
    escrow = grid.client.get(f"/v1/jobs/{job['id']}/escrow", headers=grid.headers(alice)).json()
    assert (escrow["budget"], escrow["spent"], escrow["refundable"]) == ("60", "10", "50")

    # anyone can check the bundle against the chain's event, with signatures alone
    data = grid.client.get(f"/v1/ledger/evidence/{slash['evidence']}").content
    (event,) = [e for e in grid.app.ledger.money_events() if e["event"] == "Slashed"]
    assert event["evidence"] == evidence.digest(data) and event["tx"] == slash["tx_hash"]
    chain_id = grid.app.ledger.chain_id
    checked = evidence.check(data, chain_id, worker=event["worker"], job_id=event["jobId"])
    assert checked["worker"] == cat.address and set(checked["agreeing"]) == {ann.address.lower(), bob.address.lower()}

    bundle = json.loads(data)
    forged = json.loads(data)
    forged["liar"]["results"][forged["liar"]["index"]][4] = bundle["agreeing"][0]["results"][0][4]
    with pytest.raises(InvalidInput, match="signed by"):  # the liar never signed the honest answer
        evidence.check(evidence.encode(forged), chain_id)
    one = json.loads(data)
    one["agreeing"] = one["agreeing"][:1]
    with pytest.raises(InvalidInput, match="quorum"):
        evidence.check(evidence.encode(one), chain_id)
    with pytest.raises(InvalidInput, match="slashed"):
        evidence.check(data, chain_id, worker=ann.address)
    with pytest.raises(InvalidInput, match="chain"):
        evidence.check(data, chain_id + 1)


def test_a_lie_in_a_free_job_never_slashes(chain_grid: Grid) -> None:  # noqa: F811
    grid = chain_grid
    alice = grid.new_token("alice")
    # a free job: nothing harmed to credit, no slash
    dataset = grid.upload(sequence(4).to_npz(), alice)
    free = grid.client.post(
        "/v1/jobs", json={"task_type": "echo", "dataset": dataset, "task_size": 4,
                          "trust": {"replicas": 3, "quorum": 2, "adaptive": False, "gold_rate": 0, "max_invalid": 1,
                        "record_run": 0}},  # every worker has a record (newcomers: test_collusion.py)
        headers=grid.headers(alice),
    ).json()
    ann, bob = Worker(grid, owner="ann").register(), Worker(grid, owner="bob").register()
    cat = staked(grid, Worker(grid, owner="cat").register(), 100)
    run(grid, [ann, bob], [cat])
    grid.wait_until_done(free["id"], alice)
    assert grid.app.store.get_worker(cat.address).quarantined_at is not None
    grid.client.post("/v1/ledger/seal", headers=grid.headers())
    grid.app.sealer.step()
    assert grid.client.get("/v1/ledger/slashes").json() == []
    assert grid.client.get(f"/v1/ledger/accounts/{cat.address}").json()["stake"]["active"] == "100"


def test_only_a_provable_difference_is_evidence() -> None:
    classify = tasks.get("classify")
    a = {"labels": [1, 2], "confidence": [0.91, 0.5]}
    assert not classify.provably_different(a, {"labels": [1, 2], "confidence": [0.99, 0.5]})  # a tolerance
    assert classify.provably_different(a, {"labels": [1, 3], "confidence": [0.91, 0.5]})
    assert not tasks.get("embed").provably_different({"x": 1}, {"x": 2})  # compared with a tolerance: never
    echo = tasks.get("echo")
    assert evidence.provably_different(echo, b"made up", b"honest") and not evidence.provably_different(
        echo, b"same", b"same")


class Colluder(Worker):
    """Signs the same wrong answer as the rest of its team, for every task."""

    def compute(self, lease: dict[str, Any], cheat: bool = False) -> tuple[list[dict[str, Any]], list[Any]]:
        from coopgrid.protocol import ZERO_HASH, ResultRef, b64encode, sha256_hex

        items, refs = [], []
        for replica in lease["replicas"]:
            output = b"the team's answer to task %d" % replica["task_index"]
            items.append({"replica_id": replica["id"], "output_hash": sha256_hex(output), "output": b64encode(output)})
            refs.append(ResultRef(replica["job"], replica["task_index"], replica["input_hash"],
                                  lease["jobs"][replica["job"]]["model_hash"] or ZERO_HASH, sha256_hex(output)))
        return items, refs


def test_an_honest_worker_outvoted_by_colluders_is_not_slashed_once_they_are_caught(
    make_grid: Callable[..., Grid],  # noqa: F811
) -> None:
    from sqlalchemy import update

    from coopgrid.store import schema

    grid = make_grid(ledger="embedded", slash_delay_seconds=3600)
    alice = grid.new_token("alice")
    job = paid_quorum_job(grid, alice, Identity.generate(), tasks_n=1, reward=10)
    ann = staked(grid, Worker(grid, owner="ann").register(), 100)
    cat, dan = Colluder(grid, owner="cat").register(), Colluder(grid, owner="dan").register()
    run(grid, [ann, cat, dan], [])
    grid.wait_until_done(job["id"], alice)
    assert grid.app.store.get_worker(ann.address).quarantined_at is not None  # outvoted by the team
    grid.client.post("/v1/ledger/seal", headers=grid.headers())
    grid.app.sealer.step()
    assert grid.client.get("/v1/ledger/slashes").json() == []  # not before the slash delay

    assert grid.app.store.provable_lie(grid.app.store.get_worker(ann.address).id) is not None
    with grid.app.store._write() as conn:  # the team is caught in its turn (a gold task, an audit...)
        conn.execute(update(schema.workers).where(schema.workers.c.address.in_([cat.address, dan.address]))
                     .values(quarantined_at=time.time(), quarantine_reason="failed a gold task (echo)"))
    assert grid.app.store.provable_lie(grid.app.store.get_worker(ann.address).id) is None
    grid.app.settings.slash_delay_seconds = 0
    grid.app.sealer.step()
    assert grid.client.get("/v1/ledger/slashes").json() == []
    assert grid.client.get(f"/v1/ledger/accounts/{ann.address}").json()["stake"]["active"] == "100"
