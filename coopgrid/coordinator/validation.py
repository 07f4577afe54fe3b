"""Validation: turn pending results into accepted, valid, invalid or more replicas.

After each result batch is recorded, the tasks it touched are validated:
:func:`coopgrid.coordinator.trust.decide` for open tasks (quorum, adaptive
acceptance), and a comparison with the known answer for gold and audit
replicas of decided tasks. The whole round is written by one store call.

A worker need not wait for that round: the coordinator defers it (:meth:`Validator.defer`)
and runs it after answering the upload (:meth:`Validator.drain`), as BOINC's validator runs
apart from its upload handler. Rounds deferred meanwhile are merged into one.
"""

from __future__ import annotations

import json
import logging
import random
import threading
import time
from typing import Any

from sqlalchemy.exc import OperationalError

from coopgrid import tasks
from coopgrid.coordinator.metrics import Metrics
from coopgrid.errors import DatabaseUnavailable
from coopgrid.coordinator.trust import Candidate, TrustPolicy, alone, confirmation, decide
from coopgrid.store.base import RULES_CACHED, Accept, CandidateRow, Lone, Store, TaskCheck, ValidationWrite
from coopgrid.store.schema import ReplicaKind, ResultStatus, TaskState

log = logging.getLogger(__name__)

_UNDECODABLE = object()  # an output the task type cannot read agrees with nothing
#: most tasks in one drained round (a round reads and locks all of its tasks at once)
DRAIN_ROUND = 2000


class Validator:
    def __init__(self, store: Store, rng: random.Random | None = None, metrics: Metrics | None = None) -> None:
        self.store = store
        self.rng = rng or random.Random()
        self.metrics = metrics or Metrics()
        # one validation round at a time per process: two rounds deciding the
        # same task would issue its replicas twice (the store's unique index
        # on accepted results still stops a double acceptance); across processes
        # sharing a database, the round's tasks are locked in it (Store.locked_tasks)
        self._lock = threading.Lock()
        # job id -> its policy and the verdicts a lone result can get, made once (see lone)
        self._lone_rules: dict[str, tuple[TrustPolicy, tuple[Lone, ...]]] = {}
        # tasks whose round was deferred (defer), and whether a thread is running their rounds (drain)
        self._deferred: set[int] = set()
        self._draining = False
        # uploads deferred so far, and how many of the first of them have had their round (settle)
        self._deferred_seq = 0
        self._settled_seq = 0
        self._deferred_lock = threading.Lock()

    def lone(self, job_id: str, policy: str, run: int, trusted: bool, n: int) -> list[Lone]:
        """What :meth:`_task` would decide for ``n`` open tasks' only results, each by this worker
        (the store's ``LoneJudge``): :func:`decide`'s rule for a lone result, drawn once per result."""
        rules = self._lone_rules.get(job_id)
        if rules is None:
            p = TrustPolicy.model_validate(json.loads(policy) if policy else {})
            only = Candidate(0, 0, "", ResultStatus.PENDING.value, None, 0, ReplicaKind.NORMAL.value, False)
            more = decide(p, [only], 1, _always, self.rng, outstanding=0).more  # no run: nothing drawn
            while len(self._lone_rules) >= RULES_CACHED:  # a long-lived grid's past jobs, oldest first
                del self._lone_rules[next(iter(self._lone_rules))]
            rules = self._lone_rules[job_id] = (p, (
                Lone(accept=False, more=more),
                Lone(accept=True, final=True, rooted=True),  # a trusted worker's
                *(Lone(accept=True, final=p.finality_checks == 0, checks=p.finality_checks, audit=a)
                  for a in (False, True)),
            ))
        p, (wait, rooted, provisional, audited) = rules
        out = []
        for _ in range(n):
            d = alone(p, run, trusted, self.rng)
            out.append(wait if d is None else rooted if d.rooted else audited if d.audit else provisional)
        return out

    def defer(self, task_ids: list[int]) -> None:
        """Validate these tasks at the next :meth:`drain` instead of now. Their results are recorded
        (pending) already, so a process that stops first leaves them to the catch-up round."""
        with self._deferred_lock:
            self._deferred.update(task_ids)
            self._deferred_seq += 1

    def drain(self) -> tuple[list[str], bool]:
        """Run the deferred rounds: (jobs completed, whether they made work a task waits for). One
        thread drains at a time; a caller that finds another draining returns at once, and that one
        takes its tasks too, so the rounds of batches that arrived together are merged (DRAIN_ROUND
        tasks at most per round)."""
        with self._deferred_lock:
            if self._draining:
                return [], False
            self._draining = True
        completed: list[str] = []
        urgent = False
        try:
            while True:
                with self._deferred_lock:
                    if not self._deferred:
                        self._draining = False
                        return completed, urgent
                    ids = sorted(self._deferred)[:DRAIN_ROUND]
                    self._deferred.difference_update(ids)
                    # every upload deferred so far is in this round, unless some of it had to wait
                    covers = self._deferred_seq if not self._deferred else None
                done, more = self._validate(ids)
                if covers is not None:
                    with self._deferred_lock:
                        self._settled_seq = max(self._settled_seq, covers)
                completed += done
                urgent = urgent or more
        except BaseException:
            # the failed round's tasks keep their pending results: the periodic catch-up round takes them
            with self._deferred_lock:
                self._draining = False
            raise

    def settle(self, timeout: float = 30.0) -> list[str]:
        """Until the rounds deferred before this call have run: runs them (or waits for the thread
        that does), not those deferred meanwhile (a busy grid always has some); returns the jobs
        completed by the rounds this call ran. Gives up after ``timeout`` (a round that failed:
        the catch-up round takes its tasks)."""
        with self._deferred_lock:
            target = self._deferred_seq
        completed: list[str] = []
        deadline = time.monotonic() + timeout
        while True:
            completed += self.drain()[0]
            with self._deferred_lock:
                if self._settled_seq >= target or (not self._draining and not self._deferred):
                    return completed
            if time.monotonic() > deadline:
                log.warning("validation rounds deferred before a job completed did not run within %.0fs", timeout)
                return completed
            time.sleep(0.005)  # another thread is draining

    def validate(self, task_ids: list[int] | None = None) -> list[str]:
        """Validate these tasks (all with pending results when None); returns jobs completed."""
        return self._validate(task_ids)[0]

    def _validate(self, task_ids: list[int] | None) -> tuple[list[str], bool]:
        for attempt in range(3):
            try:
                return self._round(task_ids)
            except (OperationalError, DatabaseUnavailable) as exc:
                # another process's transaction and this round waited on each other (rows taken in
                # different orders); the database broke the tie by rolling this one back: run it again
                if not _deadlock(exc) or attempt == 2:
                    raise
                log.info("validation round rolled back by a deadlock with another process; running it again")
        raise AssertionError("unreachable")

    def _round(self, task_ids: list[int] | None) -> tuple[list[str], bool]:
        """One round: (jobs completed, whether it made work a task waits for: a second opinion, a
        dispute's replica, or a quarantined worker's replicas back in the queue; audits are not)."""
        with self._lock, self.store.locked_tasks(task_ids):
            checks = self.store.tasks_to_validate(task_ids)
            if not checks:
                return [], False
            write = ValidationWrite()
            policies: dict[str, TrustPolicy] = {}  # parsed once per job, not per task
            for check in checks:
                if check.job_id not in policies:
                    policies[check.job_id] = TrustPolicy.model_validate(check.policy or {})
                self._task(check, policies[check.job_id], write)
            completed = self.store.apply_validation(write, time.time())
        self._report(write)
        return completed, bool(write.issued or write.reopen or write.quarantine)

    def _report(self, w: ValidationWrite) -> None:
        """Count a round's outcomes and log its quarantines (filled in by the store as it writes)."""
        outcomes: dict[str, int] = {}
        for status, _final in w.statuses.values():
            status = "disputed" if status == ResultStatus.PENDING.value else status
            outcomes[status] = outcomes.get(status, 0) + 1
        for a in w.accepts:
            kind = "accepted" if a.final else "provisional"
            outcomes[kind] = outcomes.get(kind, 0) + 1
        outcomes["inconclusive"] = sum(i for _, i in w.job_deltas.values() if i > 0)
        outcomes["more_replicas"] = sum(w.issued.values())
        outcomes["gold_passed"] = sum(d.gold_passed for d in w.reputation.values())
        outcomes["gold_failed"] = sum(d.gold_failed for d in w.reputation.values())
        self.metrics.count_validations(outcomes)
        if not w.quarantine:
            return
        self.metrics.quarantines.inc(len(w.quarantine))
        # rare: one read of the workers to name them
        named = {rec.id: rec for rec, _ in self.store.reputations()}
        for worker_id, reason in sorted(w.quarantine.items()):
            rec = named.get(worker_id)
            address, name = (rec.address, rec.name) if rec else (str(worker_id), "")
            log.warning(
                "worker %s (%s) quarantined: %s", address, name or "unnamed", reason,
                extra={"event": "worker_quarantined", "worker": address, "worker_name": name, "reason": reason},
            )

    # -- one task ----------------------------------------------------------------------

    def _task(self, c: TaskCheck, policy: TrustPolicy, w: ValidationWrite) -> None:
        task_type = tasks.get(c.task_type)

        def read(row: CandidateRow) -> Any:
            try:
                return task_type.decode(row.output)
            except Exception:  # a malformed output is simply wrong
                return _UNDECODABLE

        def agree(a: Any, b: Any) -> bool:
            if a is _UNDECODABLE or b is _UNDECODABLE:
                return False
            try:
                return bool(task_type.agree(a, b))
            except Exception:  # outputs of the wrong shape disagree
                return False

        def read_known(data: bytes) -> Any:
            try:
                return task_type.decode(data)
            except Exception:  # checked at submission; a task type changed since would land here
                return _UNDECODABLE

        def rep(worker_id: int) -> Any:
            return w.rep(worker_id, c.task_type, policy.max_invalid)

        live = []
        for p in c.pending:
            if p.quarantined:
                w.statuses[p.result_id] = (ResultStatus.REJECTED.value, False)
            else:
                live.append(p)
        if not live:
            return

        if c.state == TaskState.OPEN.value:
            cands = [
                Candidate(p.result_id, p.worker_id, p.owner, "pending", read(p), p.run, p.kind, p.trusted)
                for p in live
            ]
            d = decide(policy, cands, c.issued, agree, self.rng, outstanding=c.outstanding)
            for rid in d.contested:
                rep(_worker(live, rid)).contested += 1
            if d.accept is not None:
                accepted = next(p for p in live if p.result_id == d.accept)
                # a provisional result waits for its worker's later checks, unless none are asked for
                final = not d.provisional or policy.finality_checks == 0
                checks_at = None if final else accepted.checks_passed + policy.finality_checks
                w.accepts.append(Accept(c.task_id, accepted.result_id, final, checks_at, d.rooted))
                w.task_states[c.task_id] = (TaskState.DONE if final else TaskState.PROVISIONAL).value
                w.job(c.job_id, done=1)
                # a quorum (even of newcomers) is a validation, a lone result is not; and newcomers
                # outvoting a dissent earn no record by it (colluders would build theirs that way)
                # newcomers outvoting a dissent earn no record by it (their runs start again: contested)
                credit = (final or bool(d.valid)) and (d.blame or not d.invalid)
                group = [accepted.worker_id] + [_worker(live, rid) for rid in d.valid]
                if credit:
                    _credit(w, rep, group, accepted.worker_id)
                for rid in d.valid:
                    # paid only once the task is final (a newcomer quorum waits for an established opinion)
                    w.statuses[rid] = (ResultStatus.VALID.value, final)
                    if credit:
                        _credit(w, rep, group, _worker(live, rid))
                for rid in d.invalid:
                    w.statuses[rid] = (ResultStatus.INVALID.value, False)
                    if d.blame:
                        rep(_worker(live, rid)).invalid += 1
                if d.audit:
                    w.replicas.append((c.task_id, c.job_id, ReplicaKind.AUDIT.value))
            elif d.more:
                w.issued[c.task_id] = d.more
                w.replicas += [(c.task_id, c.job_id, ReplicaKind.NORMAL.value)] * d.more
            elif d.inconclusive:
                w.task_states[c.task_id] = TaskState.INCONCLUSIVE.value
                w.job(c.job_id, inconclusive=1)
                for p in live:  # nobody knows who was right: no reward, no blame
                    w.statuses[p.result_id] = (ResultStatus.REJECTED.value, False)
            return

        if c.state == TaskState.GOLD.value and c.known is not None:
            # a submitter's labelled item: its answer is a root of trust no worker decided
            known = read_known(c.known)
            for p in live:
                r = rep(p.worker_id)
                if fails_gold(task_type, known, read(p)):
                    w.statuses[p.result_id] = (ResultStatus.INVALID.value, False)
                    r.gold_failed += 1  # quarantined, as on failing rooted gold
                else:
                    w.statuses[p.result_id] = (ResultStatus.VALID.value, True)  # rewarded like any gold test
                    r.valid += 1
                    r.gold_passed += 1
                    r.checks += 1
            return

        if c.canonical is None or c.state not in (TaskState.DONE.value, TaskState.PROVISIONAL.value):
            for p in live:  # inconclusive or failed already
                w.statuses[p.result_id] = (ResultStatus.DUPLICATE.value, False)
            return

        canon = read(c.canonical)
        # accepted provisionally and not made final since by its worker's checks
        provisional = c.state == TaskState.PROVISIONAL.value and not c.canonical.final
        for p in live:
            ok = agree(canon, read(p))
            if p.kind == ReplicaKind.GOLD.value:
                r = rep(p.worker_id)
                if ok:
                    w.statuses[p.result_id] = (ResultStatus.VALID.value, True)  # rewarded like any task
                    r.valid += 1
                    r.gold_passed += 1
                    r.checks += 1
                elif c.rooted:  # the answer came from a root of trust: a lie, or a broken worker
                    w.statuses[p.result_id] = (ResultStatus.INVALID.value, False)
                    r.gold_failed += 1
                elif c.sealed:
                    # an answer no trusted worker confirmed, on chain already: recorded, nobody punished
                    w.statuses[p.result_id] = (ResultStatus.INVALID.value, False)
                else:
                    # ordinary workers decided it, and they may have colluded: a dispute, decided
                    # again with this result among the candidates and one more replica
                    w.reopen[c.task_id] = c.job_id
                    return
            elif provisional:
                # an audit (or any second opinion) of a result accepted provisionally
                if ok:
                    confirms, checked = confirmation(policy, _candidate(c.canonical), _candidate(p))
                    w.statuses[p.result_id] = (ResultStatus.VALID.value, confirms)
                    if confirms:  # a worker with a record agrees: final
                        auditor = rep(p.worker_id)
                        auditor.valid += 1
                        if checked:  # and it agreed with a record: a check of the auditor too
                            auditor.checks += 1
                        w.accepts.append(Accept(c.task_id, c.canonical.result_id, True, None, p.trusted))
                        w.task_states[c.task_id] = TaskState.DONE.value
                        w.finalized.append(c.task_id)
                        owner = rep(c.canonical.worker_id)
                        owner.valid += 1
                        owner.checks += 1
                    # another newcomer agreeing proves nothing more and earns no record; the task waits
                    # for its worker's later checks (asking again would only feed newcomers audits)
                else:
                    # a dispute: the provisional acceptance is withdrawn and the task decided again
                    w.reopen[c.task_id] = c.job_id
                return
            elif ok:
                w.statuses[p.result_id] = (ResultStatus.VALID.value, c.canonical.final)
                rep(p.worker_id).valid += 1
            else:
                w.statuses[p.result_id] = (ResultStatus.INVALID.value, False)
                rep(p.worker_id).invalid += 1


def _credit(w: ValidationWrite, rep: Any, group: list[int], worker_id: int) -> None:
    """A validated result; it lengthens the worker's run only if it agreed with a partner not yet
    counted this round (two keys leasing the same run of tasks would otherwise vouch for each
    other dozens of times at once)."""
    r = rep(worker_id)
    r.valid += 1
    fresh = [(worker_id, p) for p in group if p != worker_id and (worker_id, p) not in w.pairs]
    if group != [worker_id] and not fresh:
        r.repeated += 1
    w.pairs.update(fresh)


def _always(_a: Any, _b: Any) -> bool:
    return True


def fails_gold(task_type: Any, known: Any, got: Any) -> bool:
    """Whether a result fails a submitter's labelled item (:meth:`TaskType.fails_gold`); an output
    that cannot be read, or one of the wrong shape, fails it."""
    if known is _UNDECODABLE or got is _UNDECODABLE:
        return True
    try:
        return bool(task_type.fails_gold(known, got))
    except Exception:  # an output of the wrong shape is no answer to it
        return True


def _candidate(row: CandidateRow) -> Candidate:
    """A decided task's result as the trust rules see it (who, and with what record)."""
    return Candidate(row.result_id, row.worker_id, row.owner, "", None, row.run, row.kind, row.trusted)


def _deadlock(exc: BaseException) -> bool:
    driver = exc if isinstance(exc, OperationalError) else exc.__cause__
    return getattr(getattr(driver, "orig", None), "sqlstate", None) == "40P01"


def _worker(rows: list[CandidateRow], result_id: int) -> int:
    return next(r.worker_id for r in rows if r.result_id == result_id)
