"""Collusion and Sybils through the real store and validator (issue 10), on both backends.

The same harness as test_validation.py (``Grid``: workers leasing, answering and validating
against one store). Each test is one rule: fresh keys cannot make an answer final between them,
gold quarantines only when its answer has a root of trust, a quarantined worker's decisions are
decided again without it (or reported as disputed once sealed), and the records of its partners
are re-examined.
"""

from __future__ import annotations

from pathlib import Path
from random import Random

from sqlalchemy import select

from coopgrid.protocol import LeaseRequest, b64decode, sha256_hex
from coopgrid.store import schema as s
from coopgrid.store.base import IncomingResult, WorkerRecord
from tests.integration.test_validation import (  # noqa: F401 (grid: fixture)
    LEASE,
    READY,
    Grid,
    grid,
    honest,
    scheduler,
    wrong,
)

#: the default policy (newcomers' quorums provisional) without random gold or adaptive acceptance
DEFAULT = {"gold_rate": 0, "adaptive": False, "replicas": 2}
QUORUM_ONE = {"replicas": 1, "quorum": 1, "adaptive": False, "gold_rate": 0}


def lie(r) -> bytes:  # noqa: ANN001 - colluders agree on the same wrong answer
    return b"the colluders' answer to " + (r.input_data or b"")


def test_two_fresh_keys_declaring_different_owners_cannot_make_a_wrong_answer_final(grid: Grid) -> None:
    job = grid.job(1, DEFAULT)
    s1, s2 = grid.worker("sybil-1", "alice"), grid.worker("sybil-2", "bob")
    grid.work(s1, answer=lie)
    grid.work(s2, answer=lie)
    assert grid.task(job, 0)[0] == "provisional"
    assert grid.results(job, 0) == {"sybil-1": ("accepted", False), "sybil-2": ("valid", False)}
    assert grid.kinds(job, 0, READY) == ["audit"]  # a third opinion is asked for
    assert grid.store.unsealed()[0] == 0  # nothing to seal, nothing to pay


def test_a_newcomers_quorum_is_final_once_an_established_worker_agrees(grid: Grid) -> None:
    job = grid.job(1, DEFAULT)
    ann, bob, vet = grid.worker("ann"), grid.worker("bob"), grid.worker("vet")
    grid.set_run(vet, 50)
    grid.work(ann)
    grid.work(bob)
    assert grid.task(job, 0)[0] == "provisional"
    grid.work(vet)  # the audit
    assert grid.task(job, 0)[0] == "done"
    assert grid.results(job, 0) == {"ann": ("accepted", True), "bob": ("valid", True), "vet": ("valid", True)}
    assert grid.store.unsealed()[0] == 3  # all who agreed with the final answer are paid


def test_another_newcomer_agreeing_leaves_a_newcomers_quorum_provisional(grid: Grid) -> None:
    job = grid.job(1, DEFAULT)
    ann, bob, cal = grid.worker("ann"), grid.worker("bob"), grid.worker("cal")
    grid.work(ann)
    grid.work(bob)
    grid.work(cal)  # the audit, by a third fresh key
    assert grid.task(job, 0)[0] == "provisional"
    assert grid.results(job, 0) == {"ann": ("accepted", False), "bob": ("valid", False), "cal": ("valid", False)}
    assert grid.kinds(job, 0, READY) == []  # no endless audits fed to newcomers: later checks decide
    assert all(r.run == 0 for wr, r in grid.store.reputations() if wr.id == cal.id)  # and earned no record


def test_an_established_dissent_reopens_a_sybil_decision_and_more_replicas_settle_it(grid: Grid) -> None:
    job = grid.job(1, DEFAULT)
    s1, s2 = grid.worker("sybil-1"), grid.worker("sybil-2")
    vets = [grid.worker(f"vet-{i}") for i in range(3)]
    for v in vets:
        grid.set_run(v, 50)
    grid.work(s1, answer=lie)
    grid.work(s2, answer=lie)
    grid.work(vets[0])  # the audit disagrees: decided again, with one more replica
    assert grid.task(job, 0)[0] == "open"
    grid.work(vets[1])  # two against two: a tie decides nothing
    assert grid.task(job, 0)[0] == "open"
    grid.work(vets[2])
    assert grid.task(job, 0)[0] == "done"
    got = grid.results(job, 0)
    assert got["sybil-1"] == got["sybil-2"] == ("invalid", False)
    assert sorted(got[v.name][1] for v in vets) == [True, True, True]
    assert grid.rep(s1).invalid == 1 and grid.rep(vets[0]).invalid == 0


def test_outvoted_by_newcomers_alone_is_no_evidence_against_an_honest_worker(grid: Grid) -> None:
    job = grid.job(1, DEFAULT)
    vet, s1, s2 = grid.worker("vet"), grid.worker("sybil-1"), grid.worker("sybil-2")
    grid.set_run(vet, 50)
    grid.work(vet)
    grid.work(s1, answer=lie)
    grid.work(s2, answer=lie)  # two newcomers against one established worker
    assert grid.task(job, 0)[0] == "provisional"
    assert grid.results(job, 0)["vet"] == ("invalid", False)
    assert grid.rep(vet).invalid == 0  # not counted toward its quarantine
    assert grid.quarantined(vet) is None


def test_gold_from_ordinary_workers_is_a_dispute_not_a_quarantine(grid: Grid) -> None:
    known = grid.job(1, QUORUM_ONE)
    grid.work(grid.worker("anyone"), answer=lie)  # decided by one ordinary worker (wrongly)
    grid.job(1, DEFAULT)
    honest_worker = grid.worker("honest")
    grid.work(honest_worker, 1, gold=1)  # the gold task's answer is wrong: the honest worker "fails" it
    assert grid.quarantined(honest_worker) is None
    assert grid.rep(honest_worker).gold_failed == 0
    assert grid.task(known, 0)[0] == "open"  # decided again, its result among the candidates
    assert grid.kinds(known, 0, READY) == ["normal"]


def test_gold_from_a_trusted_worker_quarantines_a_liar(grid: Grid) -> None:
    grid.job(1, QUORUM_ONE)
    grid.work(grid.worker("operator's own", trusted=True))
    grid.job(1, DEFAULT)
    liar = grid.worker("liar")
    grid.work(liar, 1, answer=lie, gold=1)
    assert grid.quarantined(liar) == "failed a gold task (echo)"


def test_a_quarantined_workers_decisions_are_decided_again_and_sealed_ones_reported(grid: Grid) -> None:
    rooted = grid.job(1, QUORUM_ONE)
    grid.work(grid.worker("operator's own", trusted=True))
    job = grid.job(3, DEFAULT | {"max_invalid": 5})
    c1, c2 = grid.worker("colluder-1"), grid.worker("colluder-2")
    for i in range(20):  # the rest of the grid: three shared decisions are more than chance gives among 22
        grid.worker(f"bystander-{i}")
    grid.set_run(c1, 50)  # a long honest record first, then the pair lies together
    grid.set_run(c2, 50)
    grid.work(c1, 1, answer=lie)
    grid.work(c2, 1, answer=lie)
    first = [i for i in (0, 1, 2) if grid.task(job, i)[0] == "done"]
    assert len(first) == 1  # final: both had a record
    sealed_idx = first[0]
    epoch = grid.store.open_epoch(grid.tick())  # on its way to the chain
    assert epoch is not None
    for _ in range(2):  # two more decisions together (partners share a real part of their decisions)
        grid.work(c1, 1, answer=lie)
        grid.work(c2, 1, answer=lie)
    unsealed = [i for i in (0, 1, 2) if i != sealed_idx]
    for i in unsealed:
        assert grid.results(job, i) == {"colluder-1": ("accepted", True), "colluder-2": ("valid", True)}
    other = unsealed[0]

    grid.job(1, DEFAULT)  # filler work to carry the gold test
    grid.work(c1, 1, answer=lie, gold=1)  # fails a rooted gold task: quarantined
    assert grid.quarantined(c1) == "failed a gold task (echo)"
    # the unsealed decisions are decided again without it; its partner's results wait for others
    for i in unsealed:
        assert grid.task(job, i)[0] == "open"
        assert grid.results(job, i) == {"colluder-1": ("rejected", False), "colluder-2": ("pending", False)}
    assert grid.store.get_job(job.id).tasks_done == 1
    # the partner is re-examined: its run starts again and it counts a quarantined partner
    partner = grid.store.get_worker(c2.address)
    assert partner is not None and partner.partner_quarantines == 1 and grid.rep(c2).run == 0
    # the sealed one cannot be undone: it is reported, with its epoch
    (d,) = grid.store.disputes(job.id)
    assert (d["epoch"], d["task_index"], d["worker"]) == (epoch, sealed_idx, c1.address)
    assert "gold" in d["reason"]
    assert rooted.id not in {x["task_index"] for x in grid.store.disputes(rooted.id)}

    ann, bob = grid.worker("ann"), grid.worker("bob")
    grid.set_run(ann, 50)
    grid.work(ann)  # disagrees with the partner
    grid.work(bob)  # and a second honest opinion outvotes it
    assert grid.task(job, other)[0] == "done"
    assert grid.results(job, other)["colluder-2"] == ("invalid", False)
    with grid.store.engine.connect() as conn:
        canonical = conn.execute(
            select(s.results.c.output).join(s.tasks, s.tasks.c.id == s.results.c.task_id).where(
                s.tasks.c.job_id == job.id, s.tasks.c.idx == other, s.results.c.status == "accepted"
            )
        ).scalar_one()
    assert canonical == f"{job.id[:8]}/input/{other}".encode()


# -- audits where they settle something; checks; partners ---------------------------------------


def scheduled_work(grid: Grid, tmp_path: Path, w: WorkerRecord) -> list[int]:
    """Lease through the real scheduler (its placement rules), answer honestly and validate: task ids."""
    record = grid.store.get_worker(w.address)
    lease = scheduler(grid.store, tmp_path).lease(record, LeaseRequest(max_replicas=10))
    if lease is None:
        return []
    items = [IncomingResult(r["id"], sha256_hex(b64decode(r["input"])), b64decode(r["input"]), None)
             for r in lease["replicas"]]
    outcome = grid.store.record_results(lease["lease_id"], w.id, "0x" + "00" * 65, items, [], grid.tick())
    grid.validator.validate(outcome.tasks)
    return outcome.tasks


def test_a_newcomers_quorum_waits_for_an_auditor_with_a_record_and_is_then_final(grid: Grid, tmp_path: Path) -> None:
    job = grid.job(1, DEFAULT)
    ann, bob, cal, vet = grid.worker("ann"), grid.worker("bob"), grid.worker("cal"), grid.worker("vet")
    grid.set_run(vet, 50)
    scheduled_work(grid, tmp_path, ann)
    scheduled_work(grid, tmp_path, bob)
    assert grid.task(job, 0)[0] == "provisional"
    assert grid.kinds(job, 0, READY) == ["audit"]
    # a third fresh key's agreement would settle nothing: the audit is not leased to it
    assert scheduled_work(grid, tmp_path, cal) == []
    assert grid.kinds(job, 0, READY) == ["audit"]
    assert scheduled_work(grid, tmp_path, vet) == [grid.task_id(job, 0)]
    assert grid.task(job, 0)[0] == "done"
    assert grid.results(job, 0) == {"ann": ("accepted", True), "bob": ("valid", True), "vet": ("valid", True)}


def test_an_auditor_that_confirms_an_established_workers_result_passes_a_check(grid: Grid) -> None:
    job = grid.job(1, {"gold_rate": 0, "audit_scale": 10})  # every lone acceptance audited
    own, vet = grid.worker("owner"), grid.worker("vet")
    grid.set_run(own, 50)
    grid.set_run(vet, 50)
    grid.work(own)  # accepted alone: provisional, audited
    assert grid.task(job, 0)[0] == "provisional" and grid.kinds(job, 0, READY) == ["audit"]
    grid.work(vet)
    assert grid.task(job, 0)[0] == "done"
    assert grid.rep(own).checks_passed == 1  # its result was checked
    assert grid.rep(vet).checks_passed == 1  # and so was the auditor, by agreeing with a record


def test_a_recent_audit_goes_out_alone_only_once_due_and_rides_with_other_work_before(grid: Grid) -> None:
    # a job's last audits would otherwise each cost a lease, a batch and a validation round of their own
    policy = {"gold_rate": 0, "audit_scale": 10}  # every lone acceptance audited
    own, vet = grid.worker("owner"), grid.worker("vet")
    grid.set_run(own, 50)
    grid.set_run(vet, 50)

    def audited(job) -> float:  # noqa: ANN001
        grid.work(own)  # task 0 accepted alone: provisional, audited
        assert grid.kinds(job, 0, READY) == ["audit"]
        with grid.store.engine.connect() as conn:
            return conn.execute(select(s.replicas.c.created_at).where(
                s.replicas.c.task_id == grid.task_id(job, 0), s.replicas.c.kind == "audit")).scalar_one()

    def lease(due: float):  # noqa: ANN202
        return grid.store.lease(vet.id, 10, [], LEASE, grid.tick(), rng=Random(1), audits_due=due)

    job = grid.job(2, policy)
    issued = audited(job)
    assert grid.lease(own) is not None  # task 1 held elsewhere: the audit is all there is
    assert lease(due=issued - 1) is None  # not due: it waits for other work
    assert grid.store.queue_depth(0, audits_due=issued - 1)[0] == 0  # so idle workers are not sent for it
    assert grid.store.queue_depth(0, audits_due=issued)[0] == 1
    alone = lease(due=issued)
    assert alone is not None and [grid.kind(r.replica_id) for r in alone.replicas] == ["audit"]

    job = grid.job(2, policy)
    issued = audited(job)
    both = lease(due=issued - 1)  # not due, but the lease has room beside task 1's first replica
    assert both is not None
    assert sorted((r.task_index, grid.kind(r.replica_id)) for r in both.replicas) == [(0, "audit"), (1, "normal")]


def test_confirming_a_newcomers_quorum_is_no_check_of_the_auditor(grid: Grid) -> None:
    job = grid.job(1, DEFAULT)
    ann, bob, vet = grid.worker("ann"), grid.worker("bob"), grid.worker("vet")
    grid.set_run(vet, 50)
    grid.work(ann)
    grid.work(bob)
    grid.work(vet)  # the audit
    assert grid.task(job, 0)[0] == "done"
    assert grid.rep(vet).checks_passed == 0


def test_an_honest_worker_that_took_one_batch_of_a_cheaters_second_opinions_is_no_partner(grid: Grid) -> None:
    grid.job(1, QUORUM_ONE)
    grid.work(grid.worker("operator's own", trusted=True))  # a rooted answer, for the gold test below
    for i in range(20):
        grid.worker(f"bystander-{i}")
    job = grid.job(5, DEFAULT | {"max_invalid": 5})
    cheater, ann = grid.worker("cheater"), grid.worker("ann")
    grid.work(cheater, 5)  # right this time
    grid.work(ann, 5)  # the second opinions of the same five tasks, in one lease: five shared decisions
    assert [grid.task(job, i)[0] for i in range(5)] == ["provisional"] * 5
    grid.job(1, DEFAULT)  # filler work to carry the gold test
    grid.work(cheater, 1, answer=lie, gold=1)
    assert grid.quarantined(cheater) == "failed a gold task (echo)"
    assert [grid.task(job, i)[0] for i in range(5)] == ["open"] * 5  # decided again without it
    partner = grid.store.get_worker(ann.address)
    assert partner is not None and partner.partner_quarantines == 0  # one batch together is chance


def test_a_result_made_final_by_its_workers_checks_pays_its_partner_serves_as_gold_and_needs_no_audit(
    grid: Grid, tmp_path: Path
) -> None:
    job = grid.job(1, DEFAULT | {"finality_checks": 1})
    ann, bob, gus, vet = grid.worker("ann"), grid.worker("bob"), grid.worker("gus"), grid.worker("vet")
    grid.set_run(vet, 50)
    scheduled_work(grid, tmp_path, ann)
    scheduled_work(grid, tmp_path, bob)  # two newcomers agree: provisional, waiting for an audit
    assert grid.task(job, 0)[0] == "provisional" and grid.kinds(job, 0, READY) == ["audit"]
    assert grid.results(job, 0) == {"ann": ("accepted", False), "bob": ("valid", False)}
    audit = grid.lease(vet)  # the auditor takes it, and lets it expire
    assert audit is not None and [r.job_id for r in audit.replicas] == [job.id]

    grid.job(2, QUORUM_ONE)  # known answers, computed by gus...
    grid.work(gus, 2)
    filler = grid.job(1, QUORUM_ONE)  # ...tested on ann in a lease of other work: her check
    grid.work(ann, 1, gold=1)
    grid.store.finish_job(filler.id, {}, "00" * 32, grid.tick())  # (gold comes from running jobs only)
    assert grid.rep(ann).checks_passed == 1
    # final in the results alone: the partner is paid with it; the task keeps the state it was
    # accepted with, and the job's summary no longer counts it as provisional
    assert grid.results(job, 0) == {"ann": ("accepted", True), "bob": ("valid", True)}
    assert grid.task(job, 0)[0] == "provisional"
    assert grid.store.trust_counts(job.id)["tasks_provisional"] == 0

    grid.store.reap_expired(grid.tick() + LEASE)  # the audit expired: nothing is left to settle
    assert grid.kinds(job, 0, READY) == []

    grid.job(1, QUORUM_ONE)  # gus is not tested on its own answers: this task is the only known one left
    grid.work(gus, 1, gold=1)
    assert grid.kinds(job, 0)[-1] == "gold"
    assert grid.results(job, 0)["gus"] == ("valid", True)
