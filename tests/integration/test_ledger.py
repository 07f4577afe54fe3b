"""The ledger contract suite, run against both backends (embedded py-evm, anvil).

Every test in the first part runs once per backend through the parametrized
``chain`` fixture; the tests at the end are about one backend's own faults
(the embedded chain's file, an RPC endpoint that is down).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from coopgrid.errors import (
    ChainUnavailable,
    ContractMissing,
    InvalidInput,
    TransactionReverted,
    WrongChain,
)
from coopgrid.ledger import merkle
from coopgrid.ledger.money import job_key

try:  # the tests tree as packages (python -m pytest from the repo root)
    from tests.integration.conftest_ledger import (  # noqa: F401 - fixtures
        REPO,
        EmbeddedChain,
        anvil,
        chain,
        coordinator,
        funded,
        ledger,
        new_key,
    )
except ImportError:  # pragma: no cover - rootdir-relative imports (prepend mode)
    from conftest_ledger import (  # type: ignore[no-redef]  # noqa: F401
        REPO,
        EmbeddedChain,
        anvil,
        chain,
        coordinator,
        funded,
        ledger,
        new_key,
    )

ZERO = "0x" + "00" * 32


def _results(n: int, seed: int = 0) -> merkle.StandardMerkleTree:
    rnd = __import__("random").Random(seed)
    rows = [
        (rnd.randbytes(32), i, rnd.randbytes(32), rnd.randbytes(32), rnd.randbytes(32))
        for i in range(n)
    ]
    return merkle.result_tree(rows)


def _rewards(balances: dict[str, int]) -> merkle.StandardMerkleTree:
    return merkle.reward_tree(balances)


def _proof_for(tree: merkle.StandardMerkleTree, account: str, amount: int) -> list[str]:
    return tree.get_proof([account, amount])


DAY = 24 * 3600


def _now(ledger) -> int:
    return int(ledger.w3.eth.get_block("latest")["timestamp"])


def _funded_job(ledger, make_account, budget: int, deadline_in: int = 30 * DAY):
    """A submitter (ether for gas, coopgrid tokens minted) funds a new job: (job id, submitter, escrow key)."""
    submitter = make_account()
    ledger.mint(submitter.address, budget)
    job_id = os.urandom(32)
    ledger.with_signer(submitter.key).fund(job_id, budget, _now(ledger) + deadline_in)
    return job_id, submitter, job_key(job_id, submitter.address)


# --------------------------------------------------------------------------- deployment


def test_deploy_binds_an_owned_contract(ledger, coordinator):
    assert ledger.address is not None
    assert ledger.owner() == coordinator.address
    assert ledger.account == coordinator.address
    assert ledger.last_epoch() == 0
    assert ledger.rewards_root() == ZERO
    assert ledger.epoch_roots(1) is None
    assert ledger.epoch_commit(1) is None


# --------------------------------------------------------------------------- epochs


def test_epochs_are_strictly_sequential(ledger):
    r1, r2 = _results(5, 1), _results(7, 2)
    w = _rewards({new_key().address: 10})

    with pytest.raises(TransactionReverted) as err:
        ledger.commit_epoch(2, r1.root, w.root, 5)
    assert "epoch out of sequence" in err.value.reason
    assert err.value.tx_hash is None  # caught before sending

    tx1 = ledger.commit_epoch(1, r1.root, w.root, 5)
    for bad in (1, 3):
        with pytest.raises(TransactionReverted) as err:
            ledger.commit_epoch(bad, r2.root, w.root, 7)
        assert "epoch out of sequence" in err.value.reason
    with pytest.raises(InvalidInput):
        ledger.commit_epoch(0, r2.root, w.root, 7)
    tx2 = ledger.commit_epoch(2, r2.root, w.root, 7)
    assert ledger.last_epoch() == 2

    roots1, roots2 = ledger.epoch_roots(1), ledger.epoch_roots(2)
    assert (roots1.results_root, roots1.rewards_root) == (r1.root, w.root)
    assert (roots2.results_root, roots2.rewards_root) == (r2.root, w.root)
    commit = ledger.epoch_commit(2)
    assert commit.result_count == 7 and commit.tx_hash == tx2
    assert commit.block_number == ledger.tx_block(tx2)
    assert ledger.tx_block(tx1) < ledger.tx_block(tx2)


def test_commit_by_non_owner_reverts(ledger, funded):
    intruder = ledger.with_signer(funded().key)
    r, w = _results(3), _rewards({new_key().address: 1})
    with pytest.raises(TransactionReverted) as err:
        intruder.commit_epoch(1, r.root, w.root, 3)
    assert "caller is not the owner" in err.value.reason
    assert ledger.last_epoch() == 0


def test_prepared_commit_can_be_persisted_then_broadcast_twice(ledger):
    r, w = _results(4), _rewards({new_key().address: 5})
    signed = ledger.prepare_commit_epoch(1, r.root, w.root, 4)
    assert ledger.receipt(signed.tx_hash) is None  # not sent yet
    assert ledger.broadcast(signed) == signed.tx_hash
    receipt = ledger.wait_receipt(signed.tx_hash)
    assert ledger.broadcast(signed) == signed.tx_hash  # re-sending is a no-op
    assert receipt.status and receipt.block_number == ledger.tx_block(signed.tx_hash)
    assert ledger.last_epoch() == 1


def test_a_mined_revert_carries_its_tx_hash_and_reason(ledger):
    """A tx that passes the pre-check but reverts when mined (here: a stale epoch)."""
    r, w = _results(2), _rewards({new_key().address: 5})
    first = ledger.prepare_commit_epoch(1, r.root, w.root, 2)
    ledger.wait_receipt(ledger.broadcast(first))
    # the same call, signed by hand with a fixed gas limit: no pre-check
    contract = ledger.w3.eth.contract(address=ledger.address, abi=ledger._load_artifact().abi)
    data = contract.encode_abi(
        "commitEpoch", args=[1, bytes.fromhex(r.root[2:]), bytes.fromhex(w.root[2:]), 2, []]
    )
    block = ledger.w3.eth.get_block("latest")
    tx = {
        "to": ledger.address,
        "data": data,
        "gas": 200_000,
        "maxFeePerGas": 2 * block["baseFeePerGas"] + 10**9,
        "maxPriorityFeePerGas": 10**9,
        "nonce": ledger.w3.eth.get_transaction_count(ledger.account, "pending"),
        "chainId": ledger.chain_id,
    }
    raw = ledger._signer.sign_transaction(tx)
    tx_hash = "0x" + bytes(ledger.w3.eth.send_raw_transaction(raw.raw_transaction)).hex()
    with pytest.raises(TransactionReverted) as err:
        ledger.wait_receipt(tx_hash)
    assert err.value.tx_hash == tx_hash
    assert "epoch out of sequence" in (err.value.reason or "")
    assert ledger.receipt(tx_hash).status is False


# --------------------------------------------------------------------------- rewards


def test_claim_pays_the_difference_once_out_of_escrow(ledger, funded):
    worker, other = funded(), new_key()
    job, submitter, key = _funded_job(ledger, funded, 1_000)
    w1 = _rewards({worker.address: 100, other.address: 50})
    ledger.commit_epoch(1, _results(2).root, w1.root, 2, [(key, 150)])

    # the worker claims with its own key and pays its own gas
    as_worker = ledger.with_signer(worker.key)
    as_worker.claim(worker.key, worker.address, 100, _proof_for(w1, worker.address, 100))
    assert ledger.balance_of(worker.address) == 100
    assert ledger.claimed(worker.address) == 100

    with pytest.raises(TransactionReverted) as err:
        ledger.claim(None, worker.address, 100, _proof_for(w1, worker.address, 100))
    assert "nothing to claim" in err.value.reason
    assert ledger.balance_of(worker.address) == 100

    # epoch 2: cumulative totals grow; only the difference is paid
    w2 = _rewards({worker.address: 250, other.address: 50})
    ledger.commit_epoch(2, _results(3, 9).root, w2.root, 3, [(key, 300)])
    with pytest.raises(TransactionReverted) as err:  # the old tree is no longer the latest
        ledger.claim(None, worker.address, 100, _proof_for(w1, worker.address, 100))
    assert "invalid proof" in err.value.reason
    ledger.claim(None, worker.address, 250, _proof_for(w2, worker.address, 250))  # on its behalf
    assert ledger.balance_of(worker.address) == 250
    assert ledger.claimed(worker.address) == 250

    ledger.claim(None, other.address, 50, _proof_for(w2, other.address, 50))
    assert ledger.balance_of(other.address) == 50
    assert ledger.total_supply() == 1_000  # nothing minted by claims: paid out of the escrow
    assert ledger.totals() == (300, 300)
    assert ledger.token_balance(ledger.address) == 700
    escrow = ledger.job_escrow(job, submitter.address)
    assert (escrow.budget, escrow.spent, escrow.remaining) == (1_000, 300, 700)


def test_claim_for_more_than_granted_reverts_with_reason(ledger, funded):
    worker = new_key()
    _, _, key = _funded_job(ledger, funded, 500)
    w = _rewards({worker.address: 100, new_key().address: 7})
    ledger.commit_epoch(1, _results(2).root, w.root, 2, [(key, 107)])
    proof = _proof_for(w, worker.address, 100)
    with pytest.raises(TransactionReverted) as err:
        ledger.claim(None, worker.address, 101, proof)
    assert err.value.reason == "ledger: invalid proof for this account and amount"
    assert "invalid proof" in str(err.value)
    assert ledger.balance_of(worker.address) == 0


def test_claim_before_any_epoch_reverts(ledger):
    with pytest.raises(TransactionReverted) as err:
        ledger.claim(None, new_key().address, 1, [])
    assert "no rewards committed" in err.value.reason


# --------------------------------------------------------------------------- results


def test_verify_result(ledger):
    tree = _results(33, 5)
    ledger.commit_epoch(1, tree.root, _rewards({new_key().address: 1}).root, 33)
    for i in (0, 7, 32):
        leaf, proof = tree.leaf_hash_at(i), tree.get_proof(i)
        assert ledger.verify_result(1, leaf, proof) is True
        assert merkle.verify_leaf(tree.root, leaf, proof)
    leaf, proof = tree.leaf_hash_at(3), tree.get_proof(3)
    assert ledger.verify_result(1, leaf, tree.get_proof(4)) is False  # another leaf's proof
    assert ledger.verify_result(1, tree.leaf_hash_at(4), proof) is False  # another leaf
    tampered = list(proof)
    tampered[0] = "0x" + ("ff" if tampered[0][2:4] != "ff" else "00") + tampered[0][4:]
    assert ledger.verify_result(1, leaf, tampered) is False
    assert ledger.verify_result(1, leaf, proof[:-1]) is False
    assert ledger.verify_result(2, leaf, proof) is False  # not committed
    assert ledger.verify_result(1, "0x1234", proof) is False  # malformed
    assert ledger.verify_result(1, leaf, ["0x" + "11" * 32] * 40) is False  # too deep


# --------------------------------------------------------------------------- models


def test_model_publication(ledger, funded):
    model = os.urandom(32)
    assert ledger.model_published(model) is None
    tx = ledger.publish_model(model)
    record = ledger.model_published(model)
    assert record is not None
    assert record.model_hash == "0x" + model.hex()
    assert record.block_number == ledger.tx_block(tx)
    assert record.published_at > 0
    with pytest.raises(TransactionReverted) as err:
        ledger.publish_model(model)
    assert "already published" in err.value.reason
    with pytest.raises(TransactionReverted) as err:
        ledger.with_signer(funded().key).publish_model(os.urandom(32))
    assert "caller is not the owner" in err.value.reason


# --------------------------------------------------------------------------- refusals


def test_wrong_chain_id_is_refused(chain, ledger, coordinator):
    address = ledger.address
    with pytest.raises(WrongChain) as err:
        chain.open(coordinator.key, address, chain_id=chain.chain_id + 1)
    assert err.value.expected == chain.chain_id + 1
    assert err.value.actual == chain.chain_id
    assert str(chain.chain_id) in str(err.value) and str(chain.chain_id + 1) in str(err.value)


def test_missing_contract_is_refused(chain, ledger, coordinator):
    nowhere = new_key().address
    with pytest.raises(ContractMissing) as err:
        chain.open(coordinator.key, nowhere)
    assert err.value.address == nowhere
    assert nowhere in str(err.value)
    unbound = chain.open(coordinator.key)
    with pytest.raises(ContractMissing):
        unbound.last_epoch()


# --------------------------------------------------------------------------- embedded chain only


def _gas_account(chain, ledger):
    acct = new_key()
    chain.fund(ledger, acct.address)
    return acct


@pytest.fixture
def embedded(tmp_path):
    """The embedded chain alone, with a deployed contract: (chain, ledger, coordinator)."""
    c = EmbeddedChain(tmp_path)
    key = new_key()
    led = c.open(key.key)
    led.deploy()
    try:
        yield c, led, key
    finally:
        c.close()


def test_embedded_chain_reopens_with_the_same_state(embedded):
    chain, ledger, coordinator = embedded
    worker = new_key()
    w = _rewards({worker.address: 42, new_key().address: 1})
    r = _results(10)
    _, _, key = _funded_job(ledger, lambda: _gas_account(chain, ledger), 43)
    ledger.commit_epoch(1, r.root, w.root, 10, [(key, 43)])
    claim_tx = ledger.claim(None, worker.address, 42, _proof_for(w, worker.address, 42))
    model = os.urandom(32)
    ledger.publish_model(model)
    address, block = ledger.address, ledger.block_number()
    ledger.close()

    again = chain.open(coordinator.key, address)  # a fresh Ledger on the same file
    assert again.block_number() == block
    assert again.last_epoch() == 1
    assert again.epoch_roots(1).results_root == r.root
    assert again.balance_of(worker.address) == 42
    assert again.claimed(worker.address) == 42
    assert again.model_published(model) is not None
    assert again.tx_block(claim_tx) is not None
    assert again.verify_result(1, r.leaf_hash_at(3), r.get_proof(3))
    again.commit_epoch(2, _results(3, 3).root, w.root, 3)  # the nonce carries on
    assert again.last_epoch() == 2


def test_embedded_chain_has_one_owner(embedded):
    chain, ledger, coordinator = embedded
    from coopgrid.ledger.embedded import EmbeddedLedger

    with pytest.raises(ChainUnavailable, match="in use"):
        EmbeddedLedger(chain.path, coordinator.key)


_KILL_SCRIPT = r"""
import sys, os
sys.path.insert(0, sys.argv[3])
from coopgrid.ledger.embedded import EmbeddedLedger
led = EmbeddedLedger(sys.argv[1], bytes.fromhex(sys.argv[2]))
address = led.deploy()
print("deployed", address, flush=True)
epoch = 0
while True:
    epoch += 1
    led.commit_epoch(epoch, os.urandom(32), os.urandom(32), epoch)
    print("committed", epoch, flush=True)
"""


def test_embedded_chain_survives_sigkill(tmp_path):
    key = new_key()
    path = tmp_path / "chain.sqlite"
    proc = subprocess.Popen(
        [sys.executable, "-c", _KILL_SCRIPT, str(path), key.key.hex(), str(REPO)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        address, committed = None, 0
        deadline = time.monotonic() + 60
        while committed < 5 and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            word, value = line.split()
            if word == "deployed":
                address = value
            else:
                committed = int(value)
        assert committed >= 5, "the writer did not get going"
        proc.send_signal(signal.SIGKILL)  # mid-write, most likely
    finally:
        proc.kill()
        proc.wait()
        proc.stdout.close()

    from coopgrid.ledger.embedded import EmbeddedLedger

    with EmbeddedLedger(path, key.key, address) as led:
        last = led.last_epoch()
        assert last >= committed  # nothing confirmed was lost
        assert led.epoch_roots(last) is not None
        led.commit_epoch(last + 1, os.urandom(32), os.urandom(32), 1)  # and it goes on
        assert led.last_epoch() == last + 1


# --------------------------------------------------------------------------- rpc only


@pytest.mark.timeout(60)  # giving up on a dead endpoint must end (its time is in bench/timings.py)
def test_rpc_endpoint_down_raises_chain_unavailable():
    import socket

    from coopgrid.ledger.base import RetryPolicy
    from coopgrid.ledger.rpc import RpcLedger

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again below: nothing listens there
    with pytest.raises(ChainUnavailable) as err:
        RpcLedger(
            f"http://127.0.0.1:{port}",
            new_key().key,
            chain_id=1,
            retry=RetryPolicy(attempts=3, initial_delay=0.01),
        )
    assert f"127.0.0.1:{port}" in str(err.value)
    assert err.value.__cause__ is not None


def test_open_ledger_factory(tmp_path):
    from coopgrid.errors import ConfigError
    from coopgrid.ledger import open_ledger
    from coopgrid.ledger.embedded import EMBEDDED_CHAIN_ID

    key = new_key().key
    with open_ledger("embedded", key=key, data_dir=tmp_path) as led:
        assert Path(led.path) == Path(tmp_path) / "chain.sqlite"
        assert led.address is None
        assert led.chain_id == EMBEDDED_CHAIN_ID
    with pytest.raises(ConfigError):
        open_ledger("carrier-pigeon", key=key)
    with pytest.raises(ConfigError):
        open_ledger("rpc", key=key)


def test_compiled_artifact_is_cached_and_rebuilt_when_the_source_changes(tmp_path, monkeypatch):
    import shutil

    from coopgrid.ledger.compile import LEDGER_SOURCE, compile_contract

    src = tmp_path / "src" / "ledger.vy"
    src.parent.mkdir()
    shutil.copy(LEDGER_SOURCE, src)
    cache = tmp_path / "cache"
    first = compile_contract(src, cache_dir=cache)
    entries = sorted(cache.glob("ledger-*.json"))
    assert len(entries) == 1
    assert {"abi", "bytecode", "compiler", "key"} <= set(
        __import__("json").loads(entries[0].read_text())
    )
    assert any(item.get("name") == "commitEpoch" for item in first.abi)

    import coopgrid.ledger.compile as compile_module

    def no_compiler(*args, **kwargs):
        raise AssertionError("the compiler ran although the artifact was cached")

    with monkeypatch.context() as m:
        m.setattr(compile_module, "compile_source", no_compiler)
        again = compile_contract(src, cache_dir=cache)  # from the cache (how fast: bench/timings.py)
    assert again == first

    src.write_text(src.read_text() + "\n# an edit\n")
    rebuilt = compile_contract(src, cache_dir=cache)
    assert rebuilt.key != first.key
    assert len(list(cache.glob("ledger-*.json"))) == 2
