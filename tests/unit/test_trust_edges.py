"""Edges of the trust decisions that mutation testing (make mutate) found unguarded.

Each test pins one boundary of coopgrid.coordinator.trust exactly: the audit
probability's clamp and its first step, the strictness of the two draws (a
draw is in [0, 1), so ``random() < p`` happens with probability p exactly),
and how many more replicas a task gets while some are still out.
"""

from __future__ import annotations

import random

from coopgrid.coordinator.trust import Candidate, TrustPolicy, audit_probability, decide


class Draws(random.Random):
    """An rng whose random() returns the given values in turn."""

    def __init__(self, *values: float) -> None:
        super().__init__(0)
        self.values = list(values)

    def random(self) -> float:
        return self.values.pop(0)


def exact(a: object, b: object) -> bool:
    return a == b


def only(run: int) -> list[Candidate]:
    return [Candidate(1, 1, "owner-1", "pending", "x", run)]


ADAPTIVE = TrustPolicy(gold_rate=0, adaptive=True, replicas=1, quorum=2, trust_run=4)


def test_the_audit_probability_is_scale_over_sqrt_run_clamped_to_one() -> None:
    half = TrustPolicy(gold_rate=0, audit_scale=0.5)
    assert audit_probability(half, 1) == 0.5  # the first validated result already lowers it
    assert audit_probability(half, 0) == 1.0  # no history: always audited
    assert audit_probability(half, 4) == 0.25
    big = TrustPolicy(gold_rate=0, audit_scale=4.0)
    assert audit_probability(big, 4) == 1.0  # a probability, never above one
    assert audit_probability(big, 64) == 0.5


def test_a_trusted_result_is_accepted_alone_with_probability_one_minus_one_over_run_exactly() -> None:
    # run 4: accepted alone when the draw is below 0.75, not at 0.75
    at = decide(ADAPTIVE, only(4), 1, exact, Draws(0.75, 0.0))
    assert at.accept is None and at.more == 1
    below = decide(ADAPTIVE, only(4), 1, exact, Draws(0.7499, 0.99))
    assert below.accept == 1 and below.provisional and not below.audit


def test_a_provisional_result_is_audited_with_the_audit_probability_exactly() -> None:
    # run 4, audit_scale 1: audited when the second draw is below 1/sqrt(4) = 0.5, not at 0.5
    assert not decide(ADAPTIVE, only(4), 1, exact, Draws(0.0, 0.5)).audit
    assert decide(ADAPTIVE, only(4), 1, exact, Draws(0.0, 0.4999)).audit


def test_more_replicas_count_those_still_out() -> None:
    # a quorum of three: one result in, one replica out, so one more (not three) is issued
    p = TrustPolicy(gold_rate=0, adaptive=False, replicas=3, quorum=3, max_replicas=10)
    d = decide(p, only(0), 2, exact, random.Random(0), outstanding=1)
    assert (d.accept, d.more, d.inconclusive) == (None, 1, False)
