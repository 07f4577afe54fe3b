"""Sealing through faults, with real processes: the README's promises

- "After a crash the coordinator reconciles store and chain on start": a
  coordinator process is SIGKILLed between storing an epoch's transaction and
  seeing its receipt (the test hook ``COOPGRID_TEST_CRASH`` in
  coopgrid/coordinator/epochs.py kills it right before or right after the
  broadcast), then started again; the epoch ends committed exactly once, with
  the very transaction that was stored, on the embedded chain and on anvil.
- "While the chain is down, sealing backs off and retries": anvil is stopped
  (its state kept with ``--state``), a job completes meanwhile, anvil starts
  again on the same state and port, and every waiting epoch commits, each once.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from typing import Any

import pytest
from sqlalchemy import create_engine, select

from coopgrid.app import coordinator_identity
from coopgrid.client import ApiClient
from coopgrid.config import Settings
from coopgrid.coordinator.epochs import TEST_CRASH_VARIABLE
from coopgrid.datasets import sequence
from coopgrid.ledger.base import hex32
from coopgrid.local import KEY_PASSWORD
from coopgrid.store import schema as s
from tests.integration.conftest_ledger import ANVIL_CHAIN_ID, Anvil, _free_port, anvil, find_anvil  # noqa: F401

pytestmark = pytest.mark.acceptance


def cli(grid, *args: str, key_password: str = KEY_PASSWORD, check: bool = True) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COOPGRID_COORDINATOR": grid.url, "COOPGRID_TOKEN": grid.token,
           "COOPGRID_KEY_PASSWORD": key_password}
    run = subprocess.run([sys.executable, "-m", "coopgrid", *args], env=env, capture_output=True, text=True, timeout=120)
    if check:
        assert run.returncode == 0, f"{args}: {run.stdout}\n{run.stderr}"
    return run


def run_echo_job(grid, items: int, task_size: int) -> dict[str, Any]:
    """An echo job (one replica per task, free: the money path has its own tests in test_money_cli) run to done by one worker started for it."""
    if not grid.workers:
        grid.start_worker(0, "--batch", "4")
    with ApiClient(grid.url, grid.token) as client:
        data = client.put_blob(sequence(items).to_npz())
        job = client.submit({"task_type": "echo", "dataset": data, "task_size": task_size, "reward_per_task": 0,
                             "trust": {"replicas": 1, "quorum": 1, "adaptive": False, "gold_rate": 0}})
        return client.wait_for(job["id"], lambda j: j["state"] == "done", timeout=120)


def deploy_on(grid, node: Anvil) -> str:
    """The ledger contract, deployed on ``node`` with the grid's coordinator key; its address."""
    key = coordinator_identity(Settings(data_dir=grid.data_dir))
    password = (grid.data_dir / "coordinator-key.password").read_text().strip()
    node.fund(key.address)
    out = cli(grid, "ledger", "deploy", "--rpc-url", node.url, "--key-file", str(grid.data_dir / "coordinator-key.json"),
              key_password=password)
    return out.stdout.split("deployed at ", 1)[1].split()[0]


def stored_epochs(database_url: str) -> list[dict[str, Any]]:
    """The epochs table as the store holds it (read behind the coordinator's back)."""
    engine = create_engine(database_url)
    try:
        with engine.connect() as conn:
            return [dict(r) for r in conn.execute(select(s.epochs).order_by(s.epochs.c.number)).mappings()]
    finally:
        engine.dispose()


def open_chain(grid, kind: str, contract: str, rpc_url: str | None) -> Any:
    """The grid's ledger, opened from this test process (the coordinator must be stopped for embedded)."""
    from coopgrid.ledger import open_ledger

    key = coordinator_identity(Settings(data_dir=grid.data_dir))
    if kind == "embedded":
        return open_ledger("embedded", key=key.private_key, contract_address=contract, data_dir=grid.data_dir)
    return open_ledger("rpc", key=key.private_key, contract_address=contract, rpc_url=rpc_url, chain_id=ANVIL_CHAIN_ID)


def commits_on_chain(ledger: Any) -> list[tuple[int, str, str]]:
    """Every EpochCommitted event of the contract: (epoch, results root, transaction)."""
    events = ledger._c().events.EpochCommitted.get_logs(from_block=0)
    return [(int(e["args"]["epoch"]), hex32(e["args"]["resultsRoot"]), "0x" + bytes(e["transactionHash"]).hex())
            for e in events]


def wait_committed(grid, numbers: set[int], timeout: float, all_sealed: bool = False) -> list[dict[str, Any]]:
    """The coordinator's epochs once every one of ``numbers`` is committed (polls GET /v1/ledger);
    ``all_sealed``: and every epoch is committed, no accepted result left waiting."""
    deadline = time.monotonic() + timeout
    with ApiClient(grid.url, grid.token) as client:
        while True:
            info = client.ledger()
            epochs = info["epochs"]
            committed = {e["number"] for e in epochs if e["state"] == "committed"}
            if committed >= numbers and (
                not all_sealed or (len(committed) == len(epochs) and info["unsealed_results"] == 0)
            ):
                return epochs
            if time.monotonic() > deadline:
                raise AssertionError(f"epochs {sorted(numbers)} not all committed within {timeout:.0f}s: {epochs}")
            time.sleep(0.2)


@pytest.mark.parametrize("point", ["before-send", "after-send"])
@pytest.mark.parametrize("kind", ["embedded", "rpc"])
def test_a_coordinator_killed_between_sending_an_epoch_and_its_receipt_commits_it_once(
    coordinator_db, grid, kind: str, point: str, request: pytest.FixtureRequest
) -> None:
    chain_args: list[str] = []
    rpc_url = None
    if kind == "rpc":
        node = request.getfixturevalue("anvil")
        rpc_url = node.url
        chain_args = ["--ledger", "rpc", "--rpc-url", node.url, "--contract", deploy_on(grid, node)]
    args = [*coordinator_db.args, *chain_args, "--seal-every-seconds", "3600", "--seal-every-results", "1000000"]
    url = grid.start_coordinator(*args, env={TEST_CRASH_VARIABLE: point})
    job = run_echo_job(grid, items=24, task_size=3)
    assert job["tasks_done"] == 8

    sealing = cli(grid, "ledger", "seal", check=False)  # the coordinator dies under it
    assert sealing.returncode != 0
    assert grid.coordinator.wait(timeout=60) == -9, "the coordinator was not SIGKILLed by the test hook"
    assert f"{TEST_CRASH_VARIABLE}={point}: killing this process" in grid.log("coordinator")
    [epoch] = stored_epochs(coordinator_db.url)
    assert (epoch["number"], epoch["state"], epoch["result_count"]) == (1, "sent", 8)
    sent_tx = epoch["tx_hash"]
    assert sent_tx and epoch["raw_tx"]
    contract = json.loads((grid.data_dir / "ledger.json").read_text())["contract"] if kind == "embedded" else chain_args[-1]
    ledger = open_chain(grid, kind, contract, rpc_url)
    try:  # killed before the broadcast: not on chain; after it: on chain, its receipt never seen
        assert ledger.last_epoch() == (0 if point == "before-send" else 1)
    finally:
        ledger.close()

    # started again, without the hook: it reconciles on start, before serving
    grid.start_coordinator(*args, port=int(url.rsplit(":", 1)[1]))
    [committed] = wait_committed(grid, {1}, timeout=60)
    assert committed["tx_hash"] == sent_tx  # the transaction stored before the crash, not a new one
    assert committed["results_root"] == epoch["results_root"]
    with ApiClient(grid.url, grid.token) as client:
        assert client.ledger()["contract"].lower() == contract.lower()
        proof = client.proof(job["id"], 5)
        assert client.verify(proof["epoch"], proof["leaf_hash"], proof["proof"])
    codes = grid.stop()
    assert codes["coordinator"] == 0, codes

    ledger = open_chain(grid, kind, contract, rpc_url)
    try:
        assert ledger.last_epoch() == 1
        assert commits_on_chain(ledger) == [(1, epoch["results_root"], sent_tx)]  # committed once, by that tx
    finally:
        ledger.close()


def test_while_the_chain_is_down_sealing_retries_and_every_waiting_epoch_commits_once(coordinator_db, grid, tmp_path):
    binary = find_anvil()
    if binary is None:
        pytest.fail("anvil is not installed (make test installs it)") if os.environ.get("CI") else pytest.skip("no anvil")
    state = tmp_path / "anvil-state.json"
    port = _free_port()
    node = Anvil(binary, port=port, extra=("--state", str(state)))
    try:
        contract = deploy_on(grid, node)
        args = [*coordinator_db.args, "--ledger", "rpc", "--rpc-url", node.url, "--contract", contract,
                "--seal-every-results", "6"]
        grid.start_coordinator(*args)
        first = run_echo_job(grid, items=12, task_size=2)  # 6 results: one epoch, committed while the chain is up
        wait_committed(grid, {1}, timeout=60)
    finally:
        node.stop()  # SIGTERM: anvil writes its state to the --state file on the way out
    assert state.exists(), "anvil kept no state"

    second = run_echo_job(grid, items=36, task_size=3)  # the chain is down: the grid goes on
    assert second["tasks_done"] == 12 and first["tasks_done"] == 6
    deadline = time.monotonic() + 60
    while "; sealing again in" not in grid.log("coordinator"):  # the sealer's own back-off
        assert time.monotonic() < deadline, f"the sealer never noticed the chain was down:\n{grid.log('coordinator')}"
        time.sleep(0.2)
    with ApiClient(grid.url, grid.token) as client:
        waiting = [e for e in client.ledger()["epochs"] if e["state"] != "committed"]
    assert waiting, "no epoch waited for the chain"

    node = Anvil(binary, port=port, extra=("--state", str(state)))  # the same chain, back where it was
    try:
        # the sealer backs off (doubling, at most 60 s) and retries: the waiting epochs commit
        epochs = wait_committed(grid, {e["number"] for e in waiting}, timeout=150, all_sealed=True)
        numbers = [e["number"] for e in epochs]
        assert numbers == list(range(1, len(numbers) + 1)) and len(numbers) >= 2
        assert sum(e["results"] for e in epochs) == 18  # every result sealed, none twice
        codes = grid.stop()
        assert codes["coordinator"] == 0, codes
        ledger = open_chain(grid, "rpc", contract, node.url)
        try:
            assert ledger.last_epoch() == len(epochs)
            on_chain = commits_on_chain(ledger)
            assert on_chain == [(e["number"], e["results_root"], e["tx_hash"]) for e in epochs]  # each exactly once
        finally:
            ledger.close()
    finally:
        node.stop()
