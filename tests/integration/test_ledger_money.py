"""The contract's money rules, run against both backends (embedded py-evm, anvil):
escrow (fund, spend in commits, refunds), claims out of escrow, stakes and slashing.

Every test runs once per backend through the parametrized ``chain`` fixture. The
reward token is the coopgrid token the deploying key (the coordinator) mints.
"""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from coopgrid.errors import InvalidInput, TransactionReverted
from coopgrid.ledger import merkle
from coopgrid.ledger.base import DEFAULT_MIN_REFUND_DELAY, DEFAULT_UNSTAKE_DELAY
from coopgrid.ledger.money import job_key

try:  # the tests tree as packages (python -m pytest from the repo root)
    from tests.integration.conftest_ledger import anvil, chain, coordinator, funded, ledger, new_key  # noqa: F401
except ImportError:  # pragma: no cover - rootdir-relative imports (prepend mode)
    from conftest_ledger import anvil, chain, coordinator, funded, ledger, new_key  # type: ignore[no-redef]  # noqa: F401

DAY = 24 * 3600


def _now(ledger) -> int:
    return int(ledger.w3.eth.get_block("latest")["timestamp"])


def _root() -> bytes:
    return os.urandom(32)


def _account(ledger, funded, tokens: int = 0):
    acct = funded()
    if tokens:
        ledger.mint(acct.address, tokens)
    return acct


def _fund(ledger, submitter, budget: int, deadline_in: int = 30 * DAY, job_id: bytes | None = None) -> bytes:
    job_id = job_id or os.urandom(32)
    ledger.with_signer(submitter.key).fund(job_id, budget, _now(ledger) + deadline_in)
    return job_id


def _refused(reason: str, fn, *args) -> None:
    with pytest.raises(TransactionReverted) as err:
        fn(*args)
    assert reason in (err.value.reason or ""), err.value


# --------------------------------------------------------------------------- escrow


def test_funding_moves_the_submitters_tokens_into_escrow(ledger, funded):
    submitter = _account(ledger, funded, 1_000)
    job = _fund(ledger, submitter, 600)
    escrow = ledger.job_escrow(job, submitter.address)
    assert (escrow.budget, escrow.spent, escrow.closed, escrow.funded) == (600, 0, False, True)
    assert escrow.deadline > _now(ledger)
    assert ledger.token_balance(submitter.address) == 400
    assert ledger.token_balance(ledger.address) == 600
    ledger.with_signer(submitter.key).fund(job, 100, 0)  # a top-up keeps the deadline
    assert ledger.job_escrow(job, submitter.address).budget == 700
    assert ledger.job_escrow(job, submitter.address).deadline == escrow.deadline
    # the same job id funded by someone else is another escrow: a job is bound to its funder
    other = _account(ledger, funded, 50)
    _fund(ledger, other, 50, job_id=job)
    assert ledger.job_escrow(job, other.address).budget == 50
    assert ledger.job_escrow(job, submitter.address).budget == 700
    _refused("refund deadline too soon", _fund, ledger, _account(ledger, funded, 10), 10, DEFAULT_MIN_REFUND_DELAY - 60)
    with pytest.raises(InvalidInput):
        ledger.with_signer(submitter.key).fund(job, 0, 0)


def test_a_spend_above_the_budget_or_going_down_is_refused(ledger, funded):
    submitter = _account(ledger, funded, 1_000)
    a, b = _fund(ledger, submitter, 100), _fund(ledger, submitter, 200)
    ka, kb = job_key(a, submitter.address), job_key(b, submitter.address)
    rewards = merkle.reward_tree({new_key().address: 1}).root
    _refused("exceeds its budget", ledger.commit_epoch, 1, _root(), rewards, 1, [(ka, 101)])
    # one job over its budget refuses the whole commit, the other job's spend included
    _refused("exceeds its budget", ledger.commit_epoch, 1, _root(), rewards, 1, [(ka, 50), (kb, 201)])
    assert ledger.last_epoch() == 0 and ledger.job_escrow(a, submitter.address).spent == 0
    ledger.commit_epoch(1, _root(), rewards, 1, [(ka, 60), (kb, 200)])
    assert ledger.job_escrow(a, submitter.address).spent == 60 and ledger.totals() == (260, 0)
    _refused("went down", ledger.commit_epoch, 2, _root(), rewards, 1, [(ka, 59)])
    never_funded = job_key(os.urandom(32), submitter.address)
    _refused("exceeds its budget", ledger.commit_epoch, 2, _root(), rewards, 1, [(never_funded, 1)])
    ledger.commit_epoch(2, _root(), rewards, 1, [(ka, 60)])  # the same cumulative spend again is fine
    assert ledger.totals() == (260, 0)


def test_claims_never_exceed_the_spent_escrow(ledger, funded):
    submitter, worker = _account(ledger, funded, 1_000), new_key()
    job = _fund(ledger, submitter, 1_000)
    key = job_key(job, submitter.address)
    # a rewards tree granting more than was spent (a lying or buggy coordinator)
    greedy = merkle.reward_tree({worker.address: 500, new_key().address: 1})
    ledger.commit_epoch(1, _root(), greedy.root, 1, [(key, 400)])
    _refused("exceed the spent escrow", ledger.claim, None, worker.address, 500, greedy.get_proof([worker.address, 500]))
    assert ledger.token_balance(worker.address) == 0
    ledger.commit_epoch(2, _root(), greedy.root, 1, [(key, 501)])
    ledger.claim(None, worker.address, 500, greedy.get_proof([worker.address, 500]))
    assert ledger.token_balance(worker.address) == 500 and ledger.totals() == (501, 500)


def test_refund_before_and_after_the_deadline(chain, ledger, funded):
    submitter = _account(ledger, funded, 100)
    job = _fund(ledger, submitter, 100, deadline_in=2 * DAY)
    key = job_key(job, submitter.address)
    ledger.commit_epoch(1, _root(), merkle.reward_tree({new_key().address: 30}).root, 1, [(key, 30)])
    _refused("open until its refund deadline", ledger.refund, job, submitter.address)
    chain.advance(ledger, 2 * DAY + 10)
    ledger.with_signer(funded().key).refund(job, submitter.address)  # anyone may send it: the funder is paid
    assert ledger.token_balance(submitter.address) == 70
    escrow = ledger.job_escrow(job, submitter.address)
    assert (escrow.budget, escrow.spent, escrow.remaining) == (30, 30, 0)
    # nothing more can be spent from a refunded job, nor refunded twice
    _refused("exceeds its budget", ledger.commit_epoch, 2, _root(), _root(), 1, [(key, 31)])
    _refused("nothing to refund", ledger.refund, job, submitter.address)
    _refused("no such job", ledger.refund, os.urandom(32), submitter.address)


def test_a_closed_job_is_refunded_at_once(ledger, funded):
    submitter = _account(ledger, funded, 100)
    job = _fund(ledger, submitter, 100)
    key = job_key(job, submitter.address)
    ledger.commit_epoch(1, _root(), _root(), 1, [(key, 45)])
    _refused("caller is not the owner", ledger.with_signer(submitter.key).close_job, job, submitter.address)
    ledger.close_job(job, submitter.address)
    assert ledger.job_escrow(job, submitter.address).closed
    ledger.with_signer(submitter.key).refund(job, submitter.address)
    assert ledger.token_balance(submitter.address) == 55
    ledger.mint(submitter.address, 10)
    _refused("the job is closed", ledger.with_signer(submitter.key).fund, job, 10, 0)


# --------------------------------------------------------------------------- stakes


def test_unstaking_waits_the_delay(chain, ledger, funded):
    worker = _account(ledger, funded, 100)
    me = ledger.with_signer(worker.key)
    assert ledger.unstake_delay() == DEFAULT_UNSTAKE_DELAY
    me.stake(100)
    assert ledger.stake_of(worker.address).active == 100 and ledger.token_balance(worker.address) == 0
    _refused("more than the active stake", me.unstake, 101)
    me.unstake(30)
    stake = ledger.stake_of(worker.address)
    assert (stake.active, stake.unstaking) == (70, 30) and stake.unlock_at >= _now(ledger) + DEFAULT_UNSTAKE_DELAY - 5
    _refused("has not passed", me.withdraw)
    chain.advance(ledger, DEFAULT_UNSTAKE_DELAY - 3600)
    _refused("has not passed", me.withdraw)
    chain.advance(ledger, 3700)
    me.withdraw()
    assert ledger.token_balance(worker.address) == 30 and ledger.stake_of(worker.address).unstaking == 0
    _refused("nothing unstaking", me.withdraw)


def test_slash_only_by_the_owner_up_to_the_stake_into_the_harmed_job(ledger, funded):
    submitter, worker = _account(ledger, funded, 100), _account(ledger, funded, 100)
    job = _fund(ledger, submitter, 100)
    me = ledger.with_signer(worker.key)
    me.stake(80)
    me.unstake(30)  # leaving, still slashable
    evidence = os.urandom(32)
    _refused("caller is not the owner", me.slash, worker.address, 10, job, submitter.address, evidence)
    _refused("slash exceeds the stake", ledger.slash, worker.address, 81, job, submitter.address, evidence)
    _refused("needs its evidence", ledger.slash, worker.address, 10, job, submitter.address, b"\0" * 32)
    _refused("no such job", ledger.slash, worker.address, 10, os.urandom(32), submitter.address, evidence)
    ledger.slash(worker.address, 60, job, submitter.address, evidence)  # 50 active, then 10 unstaking
    stake = ledger.stake_of(worker.address)
    assert (stake.active, stake.unstaking) == (0, 20)
    assert ledger.job_escrow(job, submitter.address).budget == 160  # the slashed tokens went to the job
    (event,) = [e for e in ledger.money_events() if e["event"] == "Slashed"]
    assert event["evidence"] == "0x" + evidence.hex() and event["amount"] == 60 and event["worker"] == worker.address
    ledger.close_job(job, submitter.address)
    ledger.refund(job, submitter.address)
    assert ledger.token_balance(submitter.address) == 160  # the harmed submitter gets them back


# --------------------------------------------------------------------------- conservation

OPS = st.lists(
    st.tuples(
        st.sampled_from(["fund", "spend", "claim", "close", "refund", "stake", "unstake", "withdraw", "slash", "time"]),
        st.integers(0, 1),  # which account / job
        st.integers(1, 400),  # an amount
    ),
    min_size=4,
    max_size=14,
)


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=OPS)
def test_every_token_is_accounted_for_across_random_operations(chain, ledger, funded, ops):
    """After any sequence of operations (valid or refused), the contract holds exactly the
    escrowed budgets left, less what was claimed, plus the stakes; claims never exceed spends,
    and every minted token is somewhere."""
    ledger.deploy()  # a fresh contract (and token) for each example
    people = [_account(ledger, funded, 1_000) for _ in range(2)]
    workers = [_account(ledger, funded, 1_000) for _ in range(2)]
    jobs = [_fund(ledger, people[i], 300, deadline_in=DAY + 60) for i in range(2)]
    keys = [job_key(jobs[i], people[i].address) for i in range(2)]
    earned = {w.address: 0 for w in workers}
    epoch = 0
    for op, i, amount in ops:
        try:
            if op == "fund":
                ledger.with_signer(people[i].key).fund(jobs[i], amount, 0)
            elif op == "spend":  # pay `amount` of job i to worker i
                escrow = ledger.job_escrow(jobs[i], people[i].address)
                pay = min(amount, escrow.remaining)
                earned[workers[i].address] += pay
                tree = merkle.reward_tree({**earned, new_key().address: 1})
                epoch += 1
                ledger.commit_epoch(epoch, _root(), tree.root, 1, [(keys[i], escrow.spent + pay)])
                trees = tree
            elif op == "claim" and epoch:
                who = workers[i].address
                ledger.claim(None, who, earned[who], trees.get_proof([who, earned[who]]))
            elif op == "close":
                ledger.close_job(jobs[i], people[i].address)
            elif op == "refund":
                ledger.refund(jobs[i], people[i].address)
            elif op == "stake":
                ledger.with_signer(workers[i].key).stake(amount)
            elif op == "unstake":
                ledger.with_signer(workers[i].key).unstake(amount)
            elif op == "withdraw":
                ledger.with_signer(workers[i].key).withdraw()
            elif op == "slash":
                ledger.slash(workers[i].address, amount, jobs[1 - i], people[1 - i].address, os.urandom(32))
            elif op == "time":
                chain.advance(ledger, amount * 3600)
        except TransactionReverted:
            pass  # a refused operation moves nothing: the checks below still hold
        budgets = sum(ledger.job_escrow(jobs[j], people[j].address).budget for j in range(2))
        stakes = sum(s.active + s.unstaking for s in (ledger.stake_of(w.address) for w in workers))
        spent, claimed = ledger.totals()
        assert claimed <= spent
        assert ledger.token_balance(ledger.address) == budgets - claimed + stakes
        for j in range(2):
            escrow = ledger.job_escrow(jobs[j], people[j].address)
            assert 0 <= escrow.spent <= escrow.budget
        holders = [p.address for p in people + workers] + [ledger.address]
        assert sum(ledger.token_balance(a) for a in holders) == ledger.total_supply() == 4_000
