"""Gas of the coopgrid ledger, side by side with recording results one by one.

Not a test: run it and read the table.

    .venv/bin/python bench/gas.py

Everything runs on a fresh embedded chain (py-evm, Prague rules) in a temp
dir, with the contract compiled by coopgrid.ledger.compile:

* commitEpoch gas (first commit, and a later one), and what it comes to per
  accepted result at 1,000 / 10,000 / 100,000 results per epoch;
* commitEpoch carrying the cumulative spend of 1 / 10 / 100 touched jobs;
* fund (approve + fund: a new job, a top-up), stake, unstake, slash, refund;
* claim gas with a rewards tree of 1,000 and 100,000 workers (a worker's
  first claim, paid out of escrow by a token transfer; average and max);
* verifyResult gas (as a transaction, 100,000-result epoch);
* the baseline: bench/contracts/naive.vy, one storage write + one event per
  result, and what that costs per epoch;
* the time to build and seal an epoch of 100,000 results.

Targets are printed next to the figures: commitEpoch <= 85,000 gas whatever
the epoch's size (<= 10 gas per result at 10,000 results); a claim <= 95,000
gas at 100,000 leaves (Uniswap's MerkleDistributor: 78,600 on average, 95,300
for a single claim, at 100,000 leaves); an Ethereum Attestation Service
attestation costs about 230,000 gas per result. Escrow: commitEpoch <= 85,000
+ 5,000 per touched job; fund, stake, slash and refund <= 80,000 each.
"""

from __future__ import annotations

import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from eth_account import Account  # noqa: E402

from coopgrid.ledger import merkle  # noqa: E402
from coopgrid.ledger.compile import compile_contract  # noqa: E402
from coopgrid.ledger.embedded import EmbeddedLedger  # noqa: E402
from coopgrid.ledger.money import job_key  # noqa: E402

TARGET_COMMIT = 85_000
TARGET_PER_RESULT_10K = 10
TARGET_CLAIM = 95_000
TARGET_COMMIT_PER_JOB = 5_000
TARGET_MONEY = 80_000
DAY = 24 * 3600
UNISWAP_AVG, UNISWAP_SINGLE = 78_600, 95_300
EAS_PER_RESULT = 230_000
CLAIMS_MEASURED = 20

rnd = random.Random(2024)


def results(n: int) -> list[tuple]:
    job = rnd.randbytes(32)
    model = rnd.randbytes(32)
    return [(job, i, model, rnd.randbytes(32), rnd.randbytes(32)) for i in range(n)]


def addresses(n: int) -> list[str]:
    return ["0x" + rnd.randbytes(20).hex() for _ in range(n)]


def gas_of(ledger: EmbeddedLedger, tx_hash: str) -> int:
    return ledger.receipt(tx_hash).gas_used


def send_raw(ledger: EmbeddedLedger, key, tx: dict) -> str:
    w3 = ledger.w3
    tx = {
        "chainId": ledger.chain_id,
        "nonce": w3.eth.get_transaction_count(key.address, "pending"),
        "maxFeePerGas": 2 * w3.eth.get_block("latest")["baseFeePerGas"] + 10**9,
        "maxPriorityFeePerGas": 10**9,
        **tx,
    }
    if "gas" not in tx:
        tx["gas"] = int(w3.eth.estimate_gas({**tx, "from": key.address}) * 1.2) + 5_000
    signed = key.sign_transaction(tx)
    h = "0x" + bytes(w3.eth.send_raw_transaction(signed.raw_transaction)).hex()
    ledger.wait_receipt(h)
    return h


def row(label: str, value: str, target: str = "") -> None:
    print(f"  {label:<52} {value:>14}   {target}")


def main() -> None:
    tmp = Path(tempfile.mkdtemp(prefix="coopgrid-gas-"))
    key = Account.create()
    ledger = EmbeddedLedger(tmp / "chain.sqlite", key.key)
    ledger.deploy()
    epoch = 0

    def commit(res_tree, rew_tree, n, spends=()) -> tuple[str, float]:
        nonlocal epoch
        epoch += 1
        t0 = time.perf_counter()
        h = ledger.commit_epoch(epoch, res_tree.root, rew_tree.root, n, spends)
        return h, time.perf_counter() - t0

    # ---- money: a submitter funds 101 jobs (the contract's very first token balance comes with
    # the first one); a worker stakes; the coordinator commits spends, slashes, closes; refunds
    submitter, worker = Account.create(), Account.create()
    for acct in (submitter, worker):
        ledger.send_gas(acct.address, 10**20)
        ledger.mint(acct.address, 10**27)
    as_submitter, as_worker = ledger.with_signer(submitter.key), ledger.with_signer(worker.key)
    deadline = ledger.w3.eth.get_block("latest")["timestamp"] + 30 * DAY
    approve = gas_of(ledger, send_raw(ledger, submitter, {
        "to": ledger.token_address,
        "data": ledger._token().encode_abi("approve", args=[ledger.address, 2**256 - 1]),
    }))
    jobs = [rnd.randbytes(32) for _ in range(101)]
    fund_gas = [gas_of(ledger, as_submitter.fund(j, 10**24, deadline)) for j in jobs]
    keys = [job_key(j, submitter.address) for j in jobs]
    topup_gas = gas_of(ledger, as_submitter.fund(jobs[0], 10**18, 0))
    stake_first = gas_of(ledger, as_worker.stake(10**20))
    stake_more = gas_of(ledger, as_worker.stake(10**19))
    unstake_gas = gas_of(ledger, as_worker.unstake(10**18))
    slash_gas = gas_of(ledger, ledger.slash(worker.address, 10**18, jobs[1], submitter.address, rnd.randbytes(32)))
    spend_commit: dict[int, int] = {}
    tiny = merkle.result_tree(results(10))
    small_rewards = merkle.reward_tree({a: 10**18 for a in addresses(10)})
    # the contract's first commit also writes the rewards-root slot from zero
    h, _ = commit(tiny, small_rewards, 10)
    first_commit = gas_of(ledger, h)
    spent = {k: 0 for k in keys}
    for n_jobs in (1, 10, 100):
        touched = keys[1 : n_jobs + 1]
        for k in touched:
            spent[k] += 10**18 + rnd.randrange(10**18)  # a realistic cumulative spend
        h, _ = commit(tiny, merkle.reward_tree({a: 10**18 for a in addresses(10)}), 10, [(k, spent[k]) for k in touched])
        spend_commit[n_jobs] = gas_of(ledger, h)
    ledger.close_job(jobs[2], submitter.address)
    refund_gas = gas_of(ledger, ledger.refund(jobs[2], submitter.address))

    print(f"coopgrid ledger gas benchmark (embedded py-evm chain, {tmp})")
    print()

    # ---- commits and gas per result
    commit_gas: dict[int, int] = {}
    trees: dict[int, merkle.StandardMerkleTree] = {}
    for n in (1_000, 10_000, 100_000):
        trees[n] = merkle.result_tree(results(n))
        h, _ = commit(trees[n], small_rewards, n)
        commit_gas[n] = gas_of(ledger, h)

    # ---- claims
    claim_stats: dict[int, tuple[float, int, int, int]] = {}
    first_supply_claim = None
    for workers in (1_000, 100_000):
        accounts = addresses(workers)
        amounts = {a: 10**18 + i for i, a in enumerate(accounts)}
        rewards = merkle.reward_tree(amounts)
        pay_job = keys[0]  # claims are paid out of what the epochs spent
        spent[pay_job] += sum(amounts.values())
        commit(trees[1_000], rewards, 1_000, [(pay_job, spent[pay_job])])
        if first_supply_claim is None:  # the token's very first mint also creates totalSupply
            a0 = accounts[0]
            first_supply_claim = gas_of(
                ledger, ledger.claim(None, a0, amounts[a0], rewards.get_proof(0))
            )
        gases, depths = [], []
        for i in rnd.sample(range(1, workers), CLAIMS_MEASURED):
            a = accounts[i]
            proof = rewards.get_proof(i)
            gases.append(gas_of(ledger, ledger.claim(None, a, amounts[a], proof)))
            depths.append(len(proof))
        claim_stats[workers] = (statistics.mean(gases), max(gases), min(depths), max(depths))

    # ---- verifyResult (as a transaction would pay for it) on the 100k epoch
    big = trees[100_000]
    verify_epoch = 7  # the 100,000-result epoch (after the three spend commits)
    contract = ledger.w3.eth.contract(address=ledger.address, abi=ledger._load_artifact().abi)
    verify_gas, verify_depths = [], []
    for i in rnd.sample(range(100_000), 5):
        leaf, proof = big.leaf_hash_at(i), big.get_proof(i)
        verify_depths.append(len(proof))
        assert ledger.verify_result(verify_epoch, leaf, proof)
        fn = contract.functions.verifyResult(
            verify_epoch, bytes.fromhex(leaf[2:]), [bytes.fromhex(p[2:]) for p in proof]
        )
        verify_gas.append(fn.estimate_gas({"from": ledger.account}))

    # ---- the naive baseline: one storage write + one event per result
    naive = compile_contract(ROOT / "bench" / "contracts" / "naive.vy")
    h = send_raw(ledger, key, {"data": "0x" + naive.bytecode.hex()})
    naive_address = ledger.w3.eth.get_transaction_receipt(h)["contractAddress"]
    naive_c = ledger.w3.eth.contract(address=naive_address, abi=naive.abi)
    naive_gas = []
    for value in results(30):
        data = naive_c.encode_abi("recordResult", args=list(value))
        naive_gas.append(gas_of(ledger, send_raw(ledger, key, {"to": naive_address, "data": data})))
    naive_per_result = statistics.mean(naive_gas)

    # ---- time to build and seal an epoch of 100,000 results
    rows = results(100_000)
    cumulative = {a: 10**18 * (i + 1) for i, a in enumerate(addresses(1_000))}
    t0 = time.perf_counter()
    res_tree = merkle.result_tree(rows)
    t_results = time.perf_counter() - t0
    t0 = time.perf_counter()
    rew_tree = merkle.reward_tree(cumulative)
    t_rewards = time.perf_counter() - t0
    t0 = time.perf_counter()
    dumped = json.dumps(res_tree.dump()), json.dumps(rew_tree.dump())
    t_dump = time.perf_counter() - t0
    _, t_commit = commit(res_tree, rew_tree, len(rows))
    t_total = t_results + t_rewards + t_dump + t_commit

    # ---- the table
    steady = commit_gas[10_000]
    print("commitEpoch")
    row(
        "first commit of the contract (rewardsRoot from 0)",
        f"{first_commit:,}",
        f"target <= {TARGET_COMMIT:,}",
    )
    for n in (1_000, 10_000, 100_000):
        row(
            f"commit of an epoch of {n:,} results",
            f"{commit_gas[n]:,}",
            f"target <= {TARGET_COMMIT:,}",
        )
    print()
    print("gas per accepted result (commitEpoch / results in the epoch)")
    for n in (1_000, 10_000, 100_000):
        target = f"target <= {TARGET_PER_RESULT_10K}" if n == 10_000 else ""
        row(f"{n:,} results per epoch", f"{commit_gas[n] / n:,.2f}", target)
    print()
    print("claim (a worker's first claim; the token already has a supply)")
    for workers, (avg, worst, dmin, dmax) in claim_stats.items():
        target = (
            f"target <= {TARGET_CLAIM:,} (Uniswap {UNISWAP_AVG:,} avg / {UNISWAP_SINGLE:,} single)"
            if workers == 100_000
            else ""
        )
        row(f"tree of {workers:,} workers, proof {dmin}-{dmax} nodes: avg", f"{avg:,.0f}", target)
        row(f"tree of {workers:,} workers: max", f"{worst:,}", "")
    row("the first claim (the contract's running claim total from 0)", f"{first_supply_claim:,}", "one-off")
    print()
    print("escrow and stakes (approve once: an unlimited allowance, then fund without approving again)")
    row("approve the ledger (once per submitter)", f"{approve:,}", "")
    row("fund: the contract's very first token balance", f"{fund_gas[0]:,}", "one-off")
    row("fund a new job: avg / max of 100", f"{statistics.mean(fund_gas[1:]):,.0f} / {max(fund_gas[1:]):,}",
        f"target <= {TARGET_MONEY:,}")
    row("fund: top up a job", f"{topup_gas:,}", f"target <= {TARGET_MONEY:,}")
    row("stake: first / more", f"{stake_first:,} / {stake_more:,}", f"target <= {TARGET_MONEY:,}")
    row("unstake", f"{unstake_gas:,}", "")
    row("slash (into the harmed job's escrow)", f"{slash_gas:,}", f"target <= {TARGET_MONEY:,}")
    row("refund a closed job", f"{refund_gas:,}", f"target <= {TARGET_MONEY:,}")
    for n_jobs, g in spend_commit.items():
        target = TARGET_COMMIT + TARGET_COMMIT_PER_JOB * n_jobs
        row(f"commitEpoch with {n_jobs} touched job{'s' if n_jobs > 1 else ''}' spends", f"{g:,}",
            f"target <= {target:,} ({(g - steady) / n_jobs:,.0f} per job over a plain commit)")
    print()
    print("verifyResult (view; gas if sent as a transaction, incl. 21,000 base)")
    row(
        f"epoch of 100,000 results, proof {min(verify_depths)}-{max(verify_depths)} nodes: avg",
        f"{statistics.mean(verify_gas):,.0f}",
        "free as eth_call",
    )
    print()
    print("recording results one by one (bench/contracts/naive.vy: 1 SSTORE + 1 event per result)")
    row("gas per result", f"{naive_per_result:,.0f}", f"EAS attestation ~{EAS_PER_RESULT:,}")
    print(
        f"  {'results per epoch':<26}{'coopgrid (1 commit)':>22}{'one by one':>18}{'EAS':>18}{'ratio':>10}"
    )
    for n in (1_000, 10_000, 100_000):
        ours = commit_gas[n]
        print(
            f"  {n:<26,}{ours:>22,}{naive_per_result * n:>18,.0f}{EAS_PER_RESULT * n:>18,}"
            f"{naive_per_result * n / ours:>9,.0f}x"
        )
    print()
    print("sealing an epoch of 100,000 results (1,000 workers' cumulative rewards)")
    row("build the results tree", f"{t_results:.3f} s", "")
    row("build the rewards tree", f"{t_rewards:.3f} s", "")
    row(
        "dump both trees to JSON (what the store keeps)",
        f"{t_dump:.3f} s",
        f"{sum(map(len, dumped)) / 1e6:.1f} MB",
    )
    row("commitEpoch on the embedded chain (send + receipt)", f"{t_commit:.3f} s", "")
    row("total", f"{t_total:.3f} s", "")
    print()
    ok = (
        max(commit_gas.values()) <= TARGET_COMMIT
        and first_commit <= TARGET_COMMIT
        and steady / 10_000 <= TARGET_PER_RESULT_10K
        and claim_stats[100_000][1] <= TARGET_CLAIM
        and max(fund_gas[1:] + [topup_gas, stake_first, slash_gas, refund_gas]) <= TARGET_MONEY
        and all(g <= TARGET_COMMIT + TARGET_COMMIT_PER_JOB * n for n, g in spend_commit.items())
    )
    print("targets:", "all met" if ok else "NOT all met")
    ledger.close()


if __name__ == "__main__":
    main()
