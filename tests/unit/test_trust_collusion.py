"""The trust layer's rules against collusion and Sybils (issue 10), each on its own."""

from __future__ import annotations

import random
from types import SimpleNamespace
from typing import Any

from coopgrid.coordinator.trust import (
    Candidate,
    TrustPolicy,
    close_partners,
    confirmation,
    decide,
    established,
    may_audit,
    record_threshold,
    suspicion,
    suspicion_scores,
)

FIXED = TrustPolicy(adaptive=False, gold_rate=0)
ADAPTIVE = TrustPolicy(gold_rate=0)


def cand(result_id: int, output: Any, run: int = 0, trusted: bool = False) -> Candidate:
    return Candidate(result_id, result_id, f"owner-{result_id}", "pending", output, run, "normal", trusted)


def exact(a: Any, b: Any) -> bool:
    return a == b


def run(policy: TrustPolicy, cands: list[Candidate], issued: int | None = None) -> Any:
    return decide(policy, cands, len(cands) if issued is None else issued, exact, random.Random(0), outstanding=0)


# -- who has a record -------------------------------------------------------------------------


def test_a_worker_is_established_by_its_run_or_by_the_operators_word() -> None:
    assert not established(FIXED, cand(1, "x", run=FIXED.trust_run - 1))
    assert established(FIXED, cand(1, "x", run=FIXED.trust_run))
    assert established(FIXED, cand(1, "x", run=0, trusted=True))


# -- newcomers cannot grant each other finality -------------------------------------------------


def test_a_quorum_of_newcomers_is_only_provisional_and_audited() -> None:
    d = run(FIXED, [cand(1, "x"), cand(2, "x")])
    assert (d.accept, d.valid, d.provisional, d.audit) == (1, [2], True, True)


def test_being_outvoted_by_newcomers_alone_is_no_evidence() -> None:
    d = run(FIXED, [cand(1, "bad"), cand(2, "good", run=50), cand(3, "bad")])
    assert (d.accept, d.invalid, d.provisional, d.blame) == (1, [2], True, False)
    d = run(FIXED, [cand(1, "bad", run=50), cand(2, "good", run=50), cand(3, "bad")])
    assert (d.accept, d.invalid, d.provisional, d.blame) == (1, [2], False, True)


def test_a_disagreement_marks_the_newcomers_in_it_not_the_established() -> None:
    d = run(FIXED, [cand(1, "bad"), cand(2, "good", run=50)])
    assert d.accept is None and d.contested == [1]
    d = run(FIXED, [cand(1, "x"), cand(2, "x")])
    assert d.contested == []


def test_a_quorum_with_one_established_worker_is_final() -> None:
    d = run(FIXED, [cand(1, "x"), cand(2, "x", run=FIXED.trust_run)])
    assert (d.accept, d.provisional, d.audit) == (1, False, False)


def test_a_quorum_with_a_trusted_worker_is_final_and_rooted() -> None:
    d = run(FIXED, [cand(1, "x"), cand(2, "x", trusted=True)])
    assert (d.accept, d.provisional, d.rooted) == (1, False, True)


def test_a_quorum_of_ordinary_workers_is_not_rooted() -> None:
    d = run(FIXED, [cand(1, "x", run=50), cand(2, "x", run=50)])
    assert d.accept == 1 and not d.rooted


def test_a_newcomer_quorum_is_final_when_the_policy_asks_for_no_later_checks() -> None:
    # finality_checks=0 is a private grid's choice: the decision still says it was newcomers only
    d = run(TrustPolicy(adaptive=False, gold_rate=0, finality_checks=0), [cand(1, "x"), cand(2, "x")])
    assert d.provisional  # the validator makes it final at once for this policy


def test_a_trusted_worker_alone_is_accepted_final_under_adaptive_replication() -> None:
    d = run(ADAPTIVE, [cand(1, "x", trusted=True)], issued=1)
    assert (d.accept, d.provisional, d.rooted) == (1, False, True)


def test_an_untrusted_newcomer_alone_is_not_accepted() -> None:
    d = run(ADAPTIVE, [cand(1, "x")], issued=1)
    assert d.accept is None and d.more == 1


# -- ties ---------------------------------------------------------------------------------------


def test_two_groups_of_equal_size_decide_nothing_and_ask_for_more() -> None:
    # a colluding pair answering first must not outvote an honest pair
    d = run(FIXED, [cand(1, "bad", run=50), cand(2, "bad", run=50), cand(3, "good", run=50),
                    cand(4, "good", run=50)])
    assert d.accept is None and d.more == 1


def test_a_tie_is_broken_by_one_more_agreeing_result() -> None:
    d = run(FIXED, [cand(1, "bad", run=50), cand(2, "bad", run=50), cand(3, "good", run=50),
                    cand(4, "good", run=50), cand(5, "good", run=50)])
    assert d.accept == 3 and sorted(d.invalid) == [1, 2]


def test_a_tie_at_max_replicas_is_inconclusive_not_a_guess() -> None:
    p = TrustPolicy(adaptive=False, gold_rate=0, max_replicas=4)
    d = run(p, [cand(1, "bad"), cand(2, "bad"), cand(3, "good"), cand(4, "good")])
    assert d.accept is None and d.inconclusive


# -- suspicion ----------------------------------------------------------------------------------


def test_no_signal_no_suspicion() -> None:
    assert suspicion() == 0.0


def test_each_signal_raises_suspicion_and_more_evidence_raises_it_more() -> None:
    for signal in ("partner_quarantines", "prior_quarantines", "network_quarantined"):
        assert 0 < suspicion(**{signal: 1}) < suspicion(**{signal: 3}) < 1
    assert 0 < suspicion(cohort=3) < suspicion(cohort=10)
    assert 0 < suspicion(agreement_excess=0.3) < suspicion(agreement_excess=0.9)


def test_a_quarantined_partner_weighs_more_than_a_registration_cohort() -> None:
    assert suspicion(partner_quarantines=1) > suspicion(cohort=2)


def test_stake_above_the_minimum_lowers_suspicion_and_none_leaves_it() -> None:
    base = suspicion(partner_quarantines=2)
    assert suspicion(partner_quarantines=2, stake_ratio=1.0) == base
    assert suspicion(partner_quarantines=2, stake_ratio=4.0) < base


def _w(i: int, network: str | None, at: float, **kw: Any) -> SimpleNamespace:
    fields = dict(id=i, network=network, registered_at=at, quarantined_at=None, prior_quarantines=0,
                  partner_quarantines=0, trusted=False)
    return SimpleNamespace(**(fields | kw))


def test_scores_see_registration_cohorts_and_quarantined_neighbours() -> None:
    workers = [
        _w(1, "10.0.0.0/24", 0.0), _w(2, "10.0.0.0/24", 5.0), _w(3, "10.0.0.0/24", 9.0, quarantined_at=50.0),
        _w(4, "192.0.2.0/24", 0.0), _w(5, None, 0.0, partner_quarantines=1), _w(6, "10.0.0.0/24", 3.0, trusted=True),
    ]
    scores = suspicion_scores(workers)
    assert scores[4] == 0.0  # alone on its network, no history
    assert scores[1] > 0 and scores[2] > 0  # registered together with a worker now quarantined
    assert scores[5] > 0
    assert scores[6] == 0.0  # vouched for by the operator


# -- audits go where they can settle something ------------------------------------------------


def test_only_a_worker_with_a_record_may_take_an_audit() -> None:
    need = record_threshold(FIXED)
    assert not may_audit(need, trusted=False, run=need - 1)
    assert may_audit(need, trusted=False, run=need)
    assert may_audit(need, trusted=True, run=0)
    assert record_threshold(TrustPolicy(record_run=0)) == 0 and may_audit(0, trusted=False, run=0)


def test_an_audit_by_a_worker_with_a_record_is_final_and_a_check_of_it_when_it_confirms_a_record() -> None:
    vet, newcomer = cand(1, "x", run=50), cand(2, "x")
    assert confirmation(FIXED, canonical=cand(3, "x", run=50), auditor=vet) == (True, True)
    # a newcomer quorum's answer confirmed: final, but agreeing with newcomers tests the auditor little
    assert confirmation(FIXED, canonical=newcomer, auditor=vet) == (True, False)
    assert confirmation(FIXED, canonical=cand(3, "x", run=50), auditor=newcomer) == (False, False)
    assert confirmation(FIXED, canonical=cand(3, "x", trusted=True), auditor=cand(4, "x", trusted=True)) == (True, True)


# -- partners of a quarantined worker -----------------------------------------------------------


def test_a_partner_shares_far_more_of_its_batches_than_chance_explains() -> None:
    # 100 workers: a colluder shares 8 batches; honest workers met it once or twice, one of them 3 times
    shared = {i: 1 + (i % 2) for i in range(10, 60)} | {7: 3, 99: 8}
    assert close_partners(shared, workers=100) == {99}


def test_three_shared_batches_make_a_partner_on_a_grid_where_chance_explains_less() -> None:
    assert close_partners({2: 3}, workers=20) == {2}
    assert close_partners({2: 2}, workers=20) == set()  # never fewer than three


def test_on_a_grid_of_two_nobody_is_a_partner_by_sharing_what_chance_gives() -> None:
    assert close_partners({2: 3, 3: 2}, workers=2) == set()
    assert close_partners({}, workers=50) == set()
