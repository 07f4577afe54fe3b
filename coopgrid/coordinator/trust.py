"""The trust policy, and the pure decisions it implies.

Nothing here touches the store: :func:`decide` takes a task's results and
returns what to do (accept which result, mark which ones valid or invalid,
issue how many more replicas, give up as inconclusive), so it is unit-tested
on its own. :mod:`coopgrid.coordinator.validation` applies the decisions.

The checks follow BOINC and the spot-checking literature:

* **Quorum.** A task is accepted when ``quorum`` results from different
  workers (and owners) agree by the task type's ``agree``; otherwise more
  replicas are issued up to ``max_replicas``, then the task is inconclusive.
* **Adaptive replication.** A worker with a run of at least ``trust_run``
  validated results gets its result accepted without replication with
  probability 1 - 1/run (BOINC). Such a result is *provisional*: it is final
  (sealed, rewarded) only once the worker has passed ``finality_checks``
  later checks, or the result itself was audited.
* **Audits.** A provisional result is re-checked by one more replica with
  probability :func:`audit_probability`, which is high while a worker's run is
  short and falls as 1/sqrt(run): a worker that cheats on a fraction s of its
  tasks meets many checks in its first few hundred tasks, and an honest
  veteran costs almost nothing.
* **Gold.** Replicas of tasks whose answer is already known are mixed into a
  worker's leases at ``gold_rate`` (more while it is new); they look exactly
  like ordinary replicas. Only a *rooted* answer (one a worker the operator
  vouches for helped accept) is known well enough to quarantine on: failing a
  gold task decided by ordinary workers is a dispute, and the task is decided
  again with more replicas (colluders may have decided it).
* **Newcomers cannot grant each other finality.** A quorum in which no worker
  is *established* (trusted, or with a run of ``trust_run`` validated results)
  is accepted provisionally and audited; it becomes final only when an
  established worker agrees or its worker passes later checks.
* **No tie wins.** Two groups of equal size that both reach the quorum decide
  nothing: more replicas break the tie (a colluding pair cannot outvote an
  honest pair by answering first).
* **Suspicion.** :func:`suspicion` turns collusion signals (quarantined
  partners, a quarantined lineage, a registration cohort, shared networks,
  agreement far above the rest) into a score the listings show and that
  slows down how fast a worker is trusted alone.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator


class TrustPolicy(BaseModel):
    """How much a job trusts its workers. The defaults are safe for anonymous volunteers."""

    model_config = ConfigDict(extra="forbid")

    replicas: int = Field(2, ge=1, le=20, description="Replicas of each task issued at first (without adaptive).")
    quorum: int = Field(2, ge=1, le=20, description="Agreeing results from different workers needed.")
    max_replicas: int = Field(5, ge=1, le=50, description="Give up (inconclusive) after this many results.")
    deadline: float | None = Field(None, gt=0, description="Seconds a worker has for a replica (default: the lease).")
    gold_rate: float = Field(0.03, ge=0, le=1, description="Share of replicas that test a worker with a known answer.")
    adaptive: bool = Field(True, description="Accept trusted workers' results without replication (BOINC).")
    trust_run: int = Field(10, ge=1, description="Run of validated results before a worker is trusted alone.")
    audit_scale: float = Field(1.0, ge=0, description="Audit probability is audit_scale / sqrt(run).")
    finality_checks: int = Field(
        40, ge=0, description="Checks a worker must pass after a provisional result before it is final."
    )
    max_invalid: int = Field(3, ge=1, description="Times a worker may be outvoted before it is quarantined.")
    record_run: int | None = Field(
        None, ge=0,
        description="Run of validated results that gives a worker a record: a quorum of workers without one "
        "is provisional until one with a record agrees (default: trust_run; 0: every worker has one).",
    )

    @model_validator(mode="after")
    def _consistent(self) -> TrustPolicy:
        if not self.quorum <= self.max_replicas:
            raise ValueError(f"quorum ({self.quorum}) must be at most max_replicas ({self.max_replicas})")
        if not self.replicas <= self.max_replicas:
            raise ValueError(f"replicas ({self.replicas}) must be at most max_replicas ({self.max_replicas})")
        if self.replicas < self.quorum and not self.adaptive:
            raise ValueError(f"replicas ({self.replicas}) must be at least quorum ({self.quorum}) unless adaptive")
        return self

    @property
    def initial_replicas(self) -> int:
        """Replicas made when the job is created; adaptive jobs start with one and add on demand."""
        return 1 if self.adaptive and self.quorum > 1 else self.replicas


def audit_probability(policy: TrustPolicy, run: int) -> float:
    """Chance that a result accepted without replication is audited."""
    if run <= 0:
        return 1.0
    return min(1.0, policy.audit_scale / math.sqrt(run))


def gold_probability(policy: TrustPolicy, validated: int) -> float:
    """Chance that one replica of a lease is gold: higher for workers with little history."""
    if policy.gold_rate == 0:
        return 0.0
    return max(policy.gold_rate, 0.25) if validated < policy.trust_run else policy.gold_rate


@dataclass(frozen=True)
class Candidate:
    """One result of a task, as validation sees it."""

    result_id: int
    worker_id: int
    owner: str
    status: str  # ResultStatus value
    output: Any  # decoded output
    run: int  # the worker's run when deciding (for adaptive acceptance)
    kind: str = "normal"
    trusted: bool = False  # vouched for by an operator


def record_threshold(policy: TrustPolicy) -> int:
    """The run that gives a worker a record under this policy."""
    return policy.trust_run if policy.record_run is None else policy.record_run


def established(policy: TrustPolicy, c: Candidate) -> bool:
    """A worker with a record: vouched for, or a run long enough to be trusted alone."""
    return c.trusted or c.run >= record_threshold(policy)


def confirmation(policy: TrustPolicy, canonical: Candidate, auditor: Candidate) -> tuple[bool, bool]:
    """An audit that agrees with a provisional result: (the result is final, the auditor passed a check).

    Final when the auditor has a record (another newcomer's agreement proves nothing more). The
    auditor passed a check when the answer it agreed with is an established worker's: it would have
    disputed the answer had it lied, exactly as a gold test would have caught it; checks are what
    make a worker's own provisional results final (``finality_checks``)."""
    final = established(policy, auditor)
    return final, final and established(policy, canonical)


def may_audit(threshold: int, trusted: bool, run: int) -> bool:
    """Whether a worker may take audit replicas: only one whose agreement can make a result final.

    A newcomer's audit that agrees settles nothing (another newcomer's opinion), so it would only
    cost a replica and leave the task provisional for good; an audit waits for a worker with a
    record instead. ``threshold``: :func:`record_threshold` of the running jobs (their lowest);
    ``run``: the worker's run as validation counts it (slowed by quarantined partners and lineage)."""
    return trusted or run >= threshold


@dataclass
class Decision:
    accept: int | None = None  # result id that becomes the canonical one
    provisional: bool = False  # accepted without replication
    audit: bool = False  # issue one audit replica for the provisional result
    valid: list[int] = field(default_factory=list)  # agreed with the accepted result
    invalid: list[int] = field(default_factory=list)  # disagreed with it
    more: int = 0  # further normal replicas to issue
    inconclusive: bool = False
    rooted: bool = False  # a trusted worker took part in accepting it: fit for gold that quarantines
    blame: bool = True  # the invalid results count against their workers (not when outvoted by newcomers)
    # newcomers' results in a disagreement (decided or not): a newcomer with more of them than
    # agreements in a round starts its run again, since a colluder disagrees with the honest
    # majority far more often than it agrees, and an honest worker the other way round
    contested: list[int] = field(default_factory=list)


def clusters(cands: Sequence[Candidate], agree: Callable[[Any, Any], bool]) -> list[list[Candidate]]:
    """Group results that agree with each group's first member; largest group first, ties by earliest."""
    groups: list[list[Candidate]] = []
    for c in cands:
        for g in groups:
            if agree(g[0].output, c.output):
                g.append(c)
                break
        else:
            groups.append([c])
    return sorted(groups, key=lambda g: (-len(g), g[0].result_id))


def decide(
    policy: TrustPolicy,
    cands: Sequence[Candidate],
    issued: int,
    agree: Callable[[Any, Any], bool],
    rng: random.Random,
    outstanding: int | None = None,
) -> Decision:
    """Decide an open task from its results (errors excluded), given ``issued`` normal replicas so far.

    Replicas issued but not answered yet count toward the quorum before more are issued,
    and a task is never given up while some are still out."""
    d = Decision()
    if not cands:
        return d
    groups = clusters(cands, agree)
    best = groups[0]
    if len(groups) > 1:
        d.contested = [c.result_id for c in cands if not established(policy, c)]
    owners = {c.owner or f"#{c.worker_id}" for c in best}
    tied = len(groups) > 1 and len(groups[1]) == len(best)
    if len(best) >= policy.quorum and len(owners) >= policy.quorum and not tied:
        d.accept = best[0].result_id
        d.valid = [c.result_id for c in best[1:]]
        d.invalid = [c.result_id for g in groups[1:] for c in g]
        d.rooted = any(c.trusted for c in best)
        if policy.quorum > 1 and not any(established(policy, c) for c in best):
            # newcomers agreeing with each other is what a Sybil attack looks like: one more opinion,
            # and being outvoted by them is no evidence against anyone
            d.provisional = True
            d.audit = True
            d.blame = False
        return d
    # replicas issued whose results have not come back yet may still complete the quorum
    # (the store counts them; without it, assume every issued replica not answered is out)
    if outstanding is None:
        outstanding = max(issued - len(cands), 0)
    if len(cands) == 1 and outstanding == 0:
        lone = alone(policy, cands[0].run, cands[0].trusted, rng)
        if lone is not None:
            lone.accept = cands[0].result_id
            return lone
    need = max(policy.quorum - len(best), 1)
    if need <= outstanding:
        return d  # wait for the replicas still out
    if issued >= policy.max_replicas:
        d.inconclusive = outstanding == 0
        return d
    d.more = min(need - outstanding, policy.max_replicas - issued)
    return d


def alone(policy: TrustPolicy, run: int, trusted: bool, rng: random.Random) -> Decision | None:
    """Adaptive replication: a task's only result, with no other replica out, accepted without a
    second opinion (its ``accept`` left for the caller to fill), or None: more replicas are needed.

    :func:`decide` applies it, and so does the store as it records a result batch (through
    ``Validator.lone``), so that a grid of proven workers needs no validation round."""
    if not policy.adaptive:
        return None
    if trusted:  # the operator vouches for it: a root of trust, final alone
        return Decision(rooted=True)
    if run >= policy.trust_run and rng.random() < 1 - 1 / run:
        return Decision(provisional=True, audit=rng.random() < audit_probability(policy, run))
    return None


def suspicion(
    partner_quarantines: int = 0,
    prior_quarantines: int = 0,
    cohort: int = 1,
    network_quarantined: int = 0,
    agreement_excess: float = 0.0,
    stake_ratio: float | None = None,
) -> float:
    """A 0-1 score of how likely a worker is part of a colluding group (for listings and placement).

    ``partner_quarantines``: quarantined workers whose accepted decisions it shared;
    ``prior_quarantines``: quarantined workers of its owner or network when it registered;
    ``cohort``: workers registered from its network within the same minute (itself included);
    ``network_quarantined``: quarantined workers on its network now;
    ``agreement_excess``: how much more often it agrees with its most frequent partner than
    with the rest (0: no more; 1: always with that one, never with the others);
    ``stake_ratio``: its stake over the minimum asked (None where there is no stake)."""
    evidence = (
        1.0 * partner_quarantines
        + 0.7 * prior_quarantines
        + 0.3 * network_quarantined
        + 0.2 * max(cohort - 1, 0)
        + 2.0 * max(agreement_excess, 0.0)
    )
    if stake_ratio is not None:
        # a worker with more at stake than asked has more to lose by lying
        evidence /= 1.0 + max(stake_ratio - 1.0, 0.0)
    return round(1.0 - math.exp(-evidence / 2.0), 3)


#: the chance that an honest worker is taken for a quarantined worker's partner, per quarantine
PARTNER_FALSE_ALARM = 0.001


def close_partners(shared: dict[int, int], workers: int) -> set[int]:
    """The workers a quarantined worker shared a real part of its decisions with: those re-examined.

    ``shared``: per other worker, its result batches holding decisions (normal replicas agreeing on
    an accepted answer) it shared with the quarantined one (batches, since one lease can pair two
    workers on a run of tasks by chance); ``workers``: the others, not quarantined. By chance, those
    batches spread evenly over the others, so how many one worker has is about Poisson with
    mean ``sum(shared) / workers``; a partner shares at least 3 and more than chance explains
    (tail below :data:`PARTNER_FALSE_ALARM`, over all the workers tested). A colluder in a group of
    g shares about 1/g of them and stands out; an honest worker that met an occasional cheater a
    few times does not (3 shared decisions flagged a quarter of the honest workers of a grid with
    20% independent cheaters: their runs reset, their trust slowed for good)."""
    if not shared:
        return set()
    mean = sum(shared.values()) / max(workers, 1)
    alarm = PARTNER_FALSE_ALARM / len(shared)
    return {w for w, n in shared.items() if n >= 3 and _poisson_tail(mean, n) < alarm}


def _poisson_tail(mean: float, n: int) -> float:
    """P(X >= n) for X ~ Poisson(mean)."""
    term = math.exp(-mean)
    below = 0.0
    for k in range(n):
        below += term
        term *= mean / (k + 1)
    return max(0.0, 1.0 - below)


def check(agree: Callable[[Any, Any], bool], canonical: Any, candidate: Any) -> bool:
    """A gold or audit result against the known answer."""
    return bool(agree(canonical, candidate))


#: workers registering from one network within this many seconds form a cohort
COHORT_SECONDS = 60.0


def suspicion_scores(workers: Sequence[Any]) -> dict[int, float]:
    """:func:`suspicion` of each worker record (id, network, registered_at, quarantined_at,
    prior_quarantines, partner_quarantines, trusted), from the listing alone: no history scan."""
    by_network: dict[str, list[Any]] = {}
    for w in workers:
        if w.network:
            by_network.setdefault(w.network, []).append(w)
    out: dict[int, float] = {}
    for w in workers:
        peers = by_network.get(w.network, []) if w.network else []
        cohort = sum(abs(p.registered_at - w.registered_at) <= COHORT_SECONDS for p in peers) or 1
        quarantined = sum(p.quarantined_at is not None and p.id != w.id for p in peers)
        out[w.id] = 0.0 if w.trusted else suspicion(
            partner_quarantines=w.partner_quarantines,
            prior_quarantines=w.prior_quarantines,
            cohort=cohort,
            network_quarantined=quarantined,
        )
    return out
