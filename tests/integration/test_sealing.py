"""Epoch sealing against the real embedded chain (a SQLite file), crashes included.

A "crash" is simulated by making one ledger call raise BaseException at the
chosen point, then throwing the app away and building a new one on the same
data dir: what survives is only what the store and the chain file hold.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from coopgrid.app import App, build
from coopgrid.config import Settings
from coopgrid.coordinator.scheduler import JobSpec
from coopgrid.datasets import sequence
from coopgrid.errors import Conflict
from coopgrid.ledger import merkle
from coopgrid.protocol import sha256_hex
from coopgrid.store.base import IncomingResult


class Crash(BaseException):
    """Stands for the process being killed at this point."""


def open_app(data_dir: Path) -> App:
    return build(Settings(data_dir=data_dir, seal_every_results=10**9, seal_every_seconds=10**9))


def run_job(app: App, n_tasks: int, reward: int, workers: int = 2) -> str:
    """An echo job whose every task is computed and accepted (through the store, as the API would)."""
    token, _ = app.auth.issue("t", "operator")
    dataset = app.blobs.put(sequence(n_tasks).to_npz())
    job = app.scheduler.submit(
        JobSpec(task_type="echo", dataset=dataset, task_size=1, reward_per_task=reward), token
    )
    ws = [app.store.register_worker(f"0x{i:040x}", f"w{i}", f"o{i}", time.time()) for i in range(1, workers + 1)]
    done = 0
    while done < n_tasks:
        for w in ws:
            lease = app.store.lease(w.id, 2, [], 60, time.time())
            if lease is None:
                continue
            items = [
                IncomingResult(r.replica_id, sha256_hex(r.input_data or b""), r.input_data, None)
                for r in lease.replicas
            ]
            app.store.record_results(lease.id, w.id, "0x" + "00" * 65, items, [], time.time())
            done += len(items)
    return job.id


def test_sealing_commits_every_accepted_result_and_pays_by_proof(tmp_path):
    app = open_app(tmp_path)
    try:
        job_id = run_job(app, 9, reward=5)
        (epoch,) = app.sealer.step(force=True)
        assert (epoch.number, epoch.state, epoch.result_count) == (1, "committed", 9)
        assert app.ledger.last_epoch() == 1 and app.ledger.epoch_roots(1).results_root == epoch.results_root
        for task in range(9):
            p = app.sealer.result_proof(job_id, task)
            assert app.ledger.verify_result(1, p["leaf_hash"], p["proof"])
            assert merkle.verify_leaf(p["results_root"], p["leaf_hash"], p["proof"])
        assert not app.ledger.verify_result(1, "0x" + "ab" * 32, p["proof"])  # a forged leaf

        total = 0
        for worker in ("0x" + f"{1:040x}", "0x" + f"{2:040x}"):
            address = app.store.get_worker(worker).address
            status = app.sealer.reward_status(address)
            assert int(status["claimable"]) == int(status["cumulative"]) > 0 and status["pending"] == "0"
            claimed = app.sealer.claim(address)
            assert claimed["balance"] == status["cumulative"] and claimed["claimable"] == "0"
            total += int(claimed["balance"])
            with pytest.raises(Conflict, match="nothing to claim"):
                app.sealer.claim(address)
        assert total == 9 * 5  # every accepted task paid once, to the worker that computed it
        assert app.sealer.step(force=True) == []  # nothing new: no empty epoch
    finally:
        app.close()


@pytest.mark.parametrize("crash_in", ["broadcast", "wait_receipt"])
def test_a_crash_around_sending_an_epoch_commits_it_exactly_once(tmp_path, crash_in, monkeypatch):
    app = open_app(tmp_path)
    run_job(app, 4, reward=1)
    real = getattr(app.ledger, crash_in)

    def crash(*args, **kwargs):
        if crash_in == "wait_receipt":
            real(*args, **kwargs)  # the receipt exists; the process dies before it records it
        raise Crash()

    monkeypatch.setattr(app.ledger, crash_in, crash)
    with pytest.raises(Crash):
        app.sealer.step(force=True)
    stored = app.store.get_epoch(1)
    assert stored.state == "sent" and stored.tx_hash  # signed and stored before it was sent
    app.close()

    app = open_app(tmp_path)  # the restart
    try:
        (epoch,) = app.sealer.reconcile()
        assert epoch.state == "committed"
        assert app.ledger.last_epoch() == 1
        commit = app.ledger.epoch_commit(1)
        assert commit.results_root == epoch.results_root and commit.result_count == 4
        # the next epoch still goes through: no nonce or sequence left behind
        run_job(app, 3, reward=1)
        (second,) = app.sealer.step(force=True)
        assert second.number == 2 and app.ledger.last_epoch() == 2
    finally:
        app.close()


def test_rewards_and_epochs_survive_a_restart_of_the_embedded_chain(tmp_path):
    app = open_app(tmp_path)
    run_job(app, 6, reward=7, workers=1)
    app.sealer.step(force=True)
    address = app.store.get_worker("0x" + f"{1:040x}").address
    app.sealer.claim(address)
    contract = app.ledger.address
    app.close()

    app = open_app(tmp_path)
    try:
        assert app.ledger.address == contract
        assert app.ledger.last_epoch() == 1
        assert app.ledger.balance_of(address) == 42
        assert app.sealer.reward_status(address)["claimable"] == "0"
    finally:
        app.close()
