"""The trust policy's pure decisions: quorum, placement of blame, adaptive acceptance, audits, gold.

:func:`coopgrid.coordinator.trust.decide` takes a task's results and says what to
do; nothing here touches a store. Random draws come from seeded generators, and
rates are checked with margins of many standard deviations.
"""

from __future__ import annotations

import itertools
import math
import random
from typing import Any

import pytest
from pydantic import ValidationError

from coopgrid.coordinator.trust import (
    Candidate,
    Decision,
    TrustPolicy,
    audit_probability,
    check,
    clusters,
    decide,
    gold_probability,
)


def exact(a: Any, b: Any) -> bool:
    return a == b


def close(a: float, b: float) -> bool:
    """Numbers from different hardware: equal within a tolerance."""
    return abs(a - b) <= 1e-6


def cand(result_id: int, output: Any, worker: int | None = None, owner: str | None = None, run: int = 0) -> Candidate:
    worker = result_id if worker is None else worker
    return Candidate(result_id, worker, f"owner-{worker}" if owner is None else owner, "pending", output, run)


def policy(**fields: Any) -> TrustPolicy:
    return TrustPolicy(**({"gold_rate": 0} | fields))


class Fixed(random.Random):
    def __init__(self, value: float) -> None:
        super().__init__(0)
        self.value = value

    def random(self) -> float:
        return self.value


FIXED = policy(adaptive=False)  # plain replication: quorum 2 of up to 5
RNG = random.Random(7)


def run_decide(p: TrustPolicy, cands: list[Candidate], issued: int | None = None, agree=exact, rng=None) -> Decision:
    return decide(p, cands, len(cands) if issued is None else issued, agree, rng or random.Random(0))


# -- the policy ---------------------------------------------------------------------------


def test_the_defaults_are_safe_for_anonymous_workers() -> None:
    p = TrustPolicy()
    assert (p.replicas, p.quorum, p.adaptive, p.trust_run) == (2, 2, True, 10)
    assert p.max_replicas >= p.quorum and p.gold_rate > 0 and p.max_invalid >= 1
    assert p.initial_replicas == 1  # adaptive: one replica per task at first, more on demand
    assert TrustPolicy.model_validate({}) == p
    assert TrustPolicy.model_validate(p.model_dump()) == p  # stored as a dict with the job, read back


@pytest.mark.parametrize(
    ("fields", "initial"),
    [
        ({"replicas": 3, "quorum": 2, "adaptive": False}, 3),
        ({"replicas": 1, "quorum": 1, "adaptive": False}, 1),
        ({"replicas": 2, "quorum": 1, "adaptive": True}, 2),  # quorum 1: nothing to add on demand
        ({"replicas": 3, "quorum": 3, "adaptive": True}, 1),
    ],
)
def test_initial_replicas(fields: dict[str, Any], initial: int) -> None:
    assert TrustPolicy(**fields).initial_replicas == initial


@pytest.mark.parametrize(
    ("fields", "problem"),
    [
        ({"quorum": 6, "max_replicas": 5}, "quorum (6) must be at most max_replicas (5)"),
        ({"replicas": 4, "quorum": 2, "max_replicas": 3}, "replicas (4) must be at most max_replicas (3)"),
        ({"replicas": 1, "quorum": 2, "adaptive": False}, "must be at least quorum"),
        ({"replicas": 0}, "greater than or equal to 1"),
        ({"quorum": 0}, "greater than or equal to 1"),
        ({"gold_rate": 1.5}, "less than or equal to 1"),
        ({"gold_rate": -0.1}, "greater than or equal to 0"),
        ({"deadline": 0}, "greater than 0"),
        ({"max_invalid": 0}, "greater than or equal to 1"),
        ({"quorom": 2}, "Extra inputs are not permitted"),  # a typo is an error, not a silent default
    ],
)
def test_inconsistent_policies_are_refused(fields: dict[str, Any], problem: str) -> None:
    with pytest.raises(ValidationError, match=problem.replace("(", r"\(").replace(")", r"\)")):
        TrustPolicy(**fields)


def test_fewer_initial_replicas_than_the_quorum_is_fine_when_adaptive() -> None:
    p = TrustPolicy(replicas=1, quorum=2, adaptive=True)
    assert p.initial_replicas == 1


# -- clusters -------------------------------------------------------------------------------


def test_clusters_group_agreeing_results_largest_first_then_earliest() -> None:
    cs = [cand(1, "a"), cand(2, "b"), cand(3, "a"), cand(4, "c"), cand(5, "b"), cand(6, "b")]
    groups = clusters(cs, exact)
    assert [[c.result_id for c in g] for g in groups] == [[2, 5, 6], [1, 3], [4]]
    tie = clusters([cand(4, "x"), cand(1, "y"), cand(2, "x"), cand(3, "y")], exact)
    assert [[c.result_id for c in g] for g in tie] == [[1, 3], [4, 2]]  # equal size: the earliest result first
    assert clusters([], exact) == []


def test_clusters_use_the_task_types_comparator() -> None:
    groups = clusters([cand(1, 0.1 + 0.2), cand(2, 0.3), cand(3, 0.31)], close)
    assert [[c.result_id for c in g] for g in groups] == [[1, 2], [3]]


# -- quorum -----------------------------------------------------------------------------------


def test_a_quorum_of_agreeing_results_from_different_owners_accepts_the_task() -> None:
    # one of them has a record (newcomers alone are only provisional: test_trust_collusion.py)
    d = run_decide(FIXED, [cand(1, "x", run=10), cand(2, "x")])
    assert (d.accept, d.provisional, d.audit, d.valid, d.invalid, d.more, d.inconclusive) == (
        1, False, False, [2], [], 0, False
    )


def test_agreement_is_the_comparators_not_byte_equality() -> None:
    d = run_decide(FIXED, [cand(1, 0.1 + 0.2), cand(2, 0.3)], agree=close)
    assert (d.accept, d.valid) == (1, [2])
    d = run_decide(FIXED, [cand(1, 0.1 + 0.2), cand(2, 0.3)], agree=exact)
    assert d.accept is None and d.more == 1


def test_agreeing_workers_of_one_owner_are_not_a_quorum() -> None:
    same = [cand(1, "x", worker=1, owner="mallory"), cand(2, "x", worker=2, owner="mallory")]
    d = run_decide(FIXED, same)
    assert d.accept is None and not d.inconclusive
    assert d.more == 1  # a third opinion, from someone else
    # a third owner agreeing makes the quorum (two owners among three results)
    d = run_decide(FIXED, [*same, cand(3, "x", worker=3, owner="alice")])
    assert (d.accept, sorted(d.valid), d.invalid) == (1, [2, 3], [])


def test_workers_without_a_declared_owner_count_as_their_own_owner() -> None:
    d = run_decide(FIXED, [cand(1, "x", worker=1, owner=""), cand(2, "x", worker=2, owner="")])
    assert d.accept == 1
    d = run_decide(FIXED, [cand(1, "x", worker=1, owner=""), cand(2, "x", worker=1, owner="")])
    assert d.accept is None  # one worker twice is not two opinions


def test_results_outvoted_by_the_quorum_are_invalid() -> None:
    d = run_decide(FIXED, [cand(1, "wrong"), cand(2, "right"), cand(3, "right"), cand(4, "other")])
    assert (d.accept, d.valid, sorted(d.invalid)) == (2, [3], [1, 4])
    d = run_decide(policy(adaptive=False, replicas=3, quorum=3), [cand(i, "x") for i in range(1, 5)] + [cand(9, "y")])
    assert (d.accept, d.valid, d.invalid) == (1, [2, 3, 4], [9])


def test_a_quorum_of_one_accepts_a_single_result_final() -> None:
    d = run_decide(policy(replicas=1, quorum=1, adaptive=False), [cand(1, "x")])
    assert (d.accept, d.provisional, d.valid, d.invalid) == (1, False, [], [])


# -- more replicas, then inconclusive --------------------------------------------------------


def test_disagreement_asks_for_more_replicas_up_to_max_replicas() -> None:
    p = policy(adaptive=False, max_replicas=4)
    assert run_decide(p, [cand(1, "a"), cand(2, "b")], issued=2).more == 1
    assert run_decide(p, [cand(1, "a"), cand(2, "b"), cand(3, "c")], issued=3).more == 1
    d = run_decide(p, [cand(i, str(i)) for i in range(1, 5)], issued=4)
    assert (d.inconclusive, d.accept, d.more, d.valid, d.invalid) == (True, None, 0, [], [])


def test_more_replicas_are_what_the_quorum_still_lacks_capped_by_max_replicas() -> None:
    p = policy(adaptive=False, replicas=3, quorum=3, max_replicas=5)
    # one result in, none outstanding: two more to reach a quorum of three
    assert run_decide(p, [cand(1, "a")], issued=1).more == 2
    assert run_decide(p, [cand(1, "a"), cand(2, "b"), cand(3, "a"), cand(4, "c")], issued=4).more == 1
    capped = policy(adaptive=True, replicas=1, quorum=4, max_replicas=5)  # three lacking, one allowed
    assert run_decide(capped, [cand(1, "a"), cand(2, "b"), cand(3, "c"), cand(4, "d")], issued=4).more == 1


def test_no_results_no_decision() -> None:
    assert run_decide(TrustPolicy(), [], issued=1) == Decision()


def test_a_task_waits_for_replicas_still_out_instead_of_adding_more() -> None:
    # fixed replication 2-of-2: both replicas are issued at once. When the first result
    # comes back the second is still being computed: nothing more is needed yet.
    p = policy(adaptive=False, replicas=2, quorum=2, max_replicas=5)
    d = run_decide(p, [cand(1, "x")], issued=2)
    assert (d.accept, d.inconclusive) == (None, False)
    assert d.more == 0, "a third replica was issued while the second was still out"


def test_a_task_is_not_given_up_while_its_issued_replicas_are_still_out() -> None:
    # max_replicas == replicas: issuing more is impossible, but the second result may
    # still complete the quorum, so the task must not be called inconclusive yet
    p = policy(adaptive=False, replicas=2, quorum=2, max_replicas=2)
    d = run_decide(p, [cand(1, "x")], issued=2)
    assert not d.inconclusive, "inconclusive after one result of two issued"


def test_outstanding_replicas_counted_by_the_store_take_precedence() -> None:
    p = policy(adaptive=False, replicas=2, quorum=2, max_replicas=3)
    rng = random.Random(0)
    # two issued, one answered, and the other dropped (a quarantined worker's): nothing is out
    d = decide(p, [cand(1, "x")], 2, exact, rng, outstanding=0)
    assert (d.more, d.inconclusive) == (1, False)
    # one still out: wait for it
    assert decide(p, [cand(1, "x")], 2, exact, rng, outstanding=1) == Decision()
    # max_replicas reached with nothing out: inconclusive; with one out: wait
    three = [cand(1, "a"), cand(2, "b")]
    assert decide(p, three, 3, exact, rng, outstanding=0).inconclusive
    # (the two newcomers who disagree are marked contested: test_trust_collusion.py)
    assert decide(p, three, 3, exact, rng, outstanding=1) == Decision(contested=[1, 2])


def test_a_lone_result_is_not_trusted_alone_while_another_replica_is_out() -> None:
    d = decide(policy(), [cand(1, "x", run=10_000)], 2, exact, Fixed(0.5), outstanding=1)
    assert d == Decision()  # the second opinion is already on its way


# -- adaptive replication ------------------------------------------------------------------------


def accept_rate(p: TrustPolicy, run: int, n: int, seed: int) -> tuple[float, float]:
    """How often a lone result of a worker with this run is accepted, and how often those are audited."""
    rng = random.Random(seed)
    accepted = audited = 0
    for _ in range(n):
        d = decide(p, [cand(1, "x", run=run)], 1, exact, rng)
        if d.accept is not None:
            assert (d.accept, d.provisional, d.valid, d.invalid, d.more) == (1, True, [], [], 0)
            accepted += 1
            audited += d.audit
        else:
            assert d.more == 1 and not d.audit  # not trusted this time: a second opinion
    return accepted / n, audited / max(accepted, 1)


@pytest.mark.parametrize("run", [10, 20, 50])
def test_a_trusted_worker_is_accepted_alone_with_probability_one_minus_one_over_run(run: int) -> None:
    n = 4000
    rate, _ = accept_rate(policy(), run, n, seed=run)
    expected = 1 - 1 / run
    sigma = math.sqrt(expected * (1 - expected) / n)
    assert abs(rate - expected) < max(5 * sigma, 0.01), (run, rate, expected)


@pytest.mark.parametrize("run", [0, 1, 5, 9])
def test_a_worker_with_a_short_run_is_never_accepted_alone(run: int) -> None:
    rate, _ = accept_rate(policy(trust_run=10), run, 500, seed=1)
    assert rate == 0


def test_trust_run_sets_where_trust_begins() -> None:
    assert accept_rate(policy(trust_run=3), 3, 300, seed=2)[0] > 0.5
    assert accept_rate(policy(trust_run=30), 29, 300, seed=2)[0] == 0


def test_no_adaptive_acceptance_when_the_policy_is_not_adaptive() -> None:
    d = run_decide(policy(adaptive=False), [cand(1, "x", run=10_000)], issued=1)
    assert d.accept is None and d.more == 1


def test_adaptive_acceptance_is_for_a_lone_result_only() -> None:
    # two results that disagree: the veteran is not believed over the other one
    d = run_decide(policy(), [cand(1, "x", run=10_000), cand(2, "y", run=10_000)], issued=2)
    assert d.accept is None and not d.provisional and d.more == 1


# -- audits and gold ---------------------------------------------------------------------------


def test_audit_probability_falls_with_the_run() -> None:
    p = policy(audit_scale=3.0)
    assert audit_probability(p, 0) == audit_probability(p, -1) == 1.0
    assert audit_probability(p, 9) == 1.0  # 3 / sqrt(9)
    probs = [audit_probability(p, run) for run in (9, 10, 25, 100, 400, 10_000)]
    assert all(a > b for a, b in itertools.pairwise(probs))
    assert probs[3] == pytest.approx(0.3) and probs[5] == pytest.approx(0.03)
    assert audit_probability(policy(audit_scale=0), 100) == 0


@pytest.mark.parametrize("run", [16, 100, 400])
def test_provisional_results_are_audited_at_the_audit_probability(run: int) -> None:
    p = policy(audit_scale=3.0)
    n = 6000
    accepted_rate, audit_rate = accept_rate(p, run, n, seed=100 + run)
    expected = audit_probability(p, run)
    sigma = math.sqrt(expected * (1 - expected) / (n * accepted_rate))
    assert abs(audit_rate - expected) < max(5 * sigma, 0.01), (run, audit_rate, expected)


def test_gold_probability_is_higher_for_new_workers() -> None:
    p = policy(gold_rate=0.03, trust_run=10)
    assert gold_probability(p, 0) == gold_probability(p, 9) == 0.25
    assert gold_probability(p, 10) == gold_probability(p, 10_000) == 0.03
    assert gold_probability(policy(gold_rate=0.5), 0) == 0.5
    assert gold_probability(policy(gold_rate=0), 0) == 0  # no gold at all when the job asks for none


def test_check_compares_with_the_known_answer_through_the_comparator() -> None:
    assert check(close, 0.3, 0.1 + 0.2)
    assert not check(close, 0.3, 0.31)
    assert not check(exact, b"a", b"b")
