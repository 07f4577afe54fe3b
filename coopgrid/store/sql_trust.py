"""Validation state in the SQL store: reputation, decisions, quarantine, finality.

A mixin of :class:`SqlStore`. :meth:`tasks_to_validate` reads what the
validator needs; :meth:`apply_validation` writes its decisions in one
transaction, including their consequences: reputation and lease quotas,
quarantine (its provisional results revoked and redone), and finality of
provisional results once their worker has passed enough later checks.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from sqlalchemy import bindparam, func, insert, select, text, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from coopgrid.coordinator.trust import close_partners
from coopgrid.store import schema as s
from coopgrid.store.base import CandidateRow, Reputation, TaskCheck, ValidationWrite, WorkerRecord
from coopgrid.store.schema import JobState, ReplicaKind, ReplicaState, ResultStatus, TaskState

#: lease quota bounds: a failing worker drops toward MIN, valid results bring it back
QUOTA_MIN, QUOTA_MAX = 1, 10_000


class TrustQueries:
    """Mixed into SqlStore, which provides ``_read``, ``_write``, ``dialect`` and ``_completed``."""

    _read: Any
    _write: Any
    dialect: str
    _completed: Any

    # -- reputation -----------------------------------------------------------------

    def _ensure_reputation(self, conn: Any, pairs: set[tuple[int, str]]) -> None:
        if not pairs:
            return
        ins = (pg_insert if self.dialect == "postgresql" else sqlite_insert)(s.reputation)
        conn.execute(
            ins.on_conflict_do_nothing(),
            [{"worker_id": w, "task_type": t, "quota": QUOTA_MAX} for w, t in sorted(pairs)],
        )

    def _task_types(self, conn: Any, job_ids: set[str]) -> set[str]:
        if not job_ids:
            return set()
        return set(conn.execute(select(s.jobs.c.task_type).where(s.jobs.c.id.in_(sorted(job_ids)))).scalars())

    def _penalise(self, conn: Any, worker_id: int, job_ids: set[str], column: str) -> None:
        """An error or a timeout: count it, reset the run, halve the lease quota."""
        types = self._task_types(conn, job_ids)
        self._ensure_reputation(conn, {(worker_id, t) for t in types})
        for t in types:
            conn.execute(
                text(
                    f"UPDATE reputation SET {column} = {column} + 1, run = 0, "
                    "quota = CASE WHEN quota / 2 < :lo THEN :lo ELSE quota / 2 END "
                    "WHERE worker_id = :w AND task_type = :t"
                ),
                {"w": worker_id, "t": t, "lo": QUOTA_MIN},
            )

    def _credit(self, conn: Any, worker_id: int, per_job: dict[str, int]) -> None:
        """Results accepted at once (quorum of one) count as validated for the worker's record."""
        types = dict(conn.execute(select(s.jobs.c.id, s.jobs.c.task_type).where(s.jobs.c.id.in_(sorted(per_job)))).all())
        per_type: dict[str, int] = {}
        for job_id, n in per_job.items():
            per_type[types[job_id]] = per_type.get(types[job_id], 0) + n
        self._ensure_reputation(conn, {(worker_id, t) for t in per_type})
        for task_type, n in per_type.items():
            conn.execute(
                text(
                    "UPDATE reputation SET run = run + :n, valid = valid + :n, "
                    "quota = CASE WHEN quota + 2 * :n > :hi THEN :hi ELSE quota + 2 * :n END "
                    "WHERE worker_id = :w AND task_type = :t"
                ),
                {"n": n, "hi": QUOTA_MAX, "w": worker_id, "t": task_type},
            )

    def lease_quota(self, worker_id: int, task_types: Sequence[str]) -> tuple[int, int]:
        """(Most replicas the worker may lease now, its validated results so far)."""
        q = select(s.reputation.c.quota, s.reputation.c.valid).where(s.reputation.c.worker_id == worker_id)
        if task_types:
            q = q.where(s.reputation.c.task_type.in_(list(task_types)))
        with self._read() as conn:
            rows = conn.execute(q).all()
        if not rows:
            return QUOTA_MAX, 0
        return max(r.quota for r in rows), min(r.valid for r in rows)

    def record_run(self, worker_id: int, task_types: Sequence[str]) -> int:
        """The worker's run as validation counts it (slowed by quarantined partners and lineage); the
        lowest over ``task_types`` (every type it has a record of when empty), 0 without one."""
        q = (
            select(s.reputation.c.run, s.workers.c.prior_quarantines, s.workers.c.partner_quarantines)
            .join(s.workers, s.workers.c.id == s.reputation.c.worker_id)
            .where(s.reputation.c.worker_id == worker_id)
        )
        if task_types:
            q = q.where(s.reputation.c.task_type.in_(list(task_types)))
        with self._read() as conn:
            rows = conn.execute(q).all()
        return min((r.run // (1 + r.prior_quarantines + r.partner_quarantines) for r in rows), default=0)

    def reputations(self) -> list[tuple[WorkerRecord, Reputation]]:
        from coopgrid.store.sql import _worker

        q = select(s.workers, s.reputation).join(s.reputation, s.reputation.c.worker_id == s.workers.c.id)
        with self._read() as conn:
            return [(_worker(r), _reputation(r)) for r in conn.execute(q.order_by(s.workers.c.id))]

    # -- validation -----------------------------------------------------------------

    def tasks_to_validate(self, task_ids: Sequence[int] | None = None) -> list[TaskCheck]:
        """Tasks with pending results (only ``task_ids`` when given), with everything validation needs."""
        pending = s.written_out(s.results.c.status, ResultStatus.PENDING.value)  # ix_results_pending
        with self._read() as conn:
            if task_ids is None:
                ids = sorted(set(conn.execute(select(s.results.c.task_id).where(pending)).scalars()))
            else:
                ids = sorted(set(task_ids))
            if not ids:
                return []
            tasks = conn.execute(
                select(s.tasks.c.id, s.tasks.c.job_id, s.tasks.c.state, s.tasks.c.issued, s.tasks.c.rooted,
                       s.tasks.c.known, s.jobs.c.task_type, s.jobs.c.policy)
                .join(s.jobs, s.jobs.c.id == s.tasks.c.job_id)
                .where(s.tasks.c.id.in_(ids))
            ).all()
            rows = conn.execute(
                select(
                    s.results.c.id, s.results.c.task_id, s.results.c.worker_id, s.results.c.status,
                    s.results.c.output, s.results.c.final, s.replicas.c.kind, s.workers.c.owner,
                    s.workers.c.quarantined_at, s.workers.c.prior_quarantines, s.workers.c.trusted,
                    s.workers.c.partner_quarantines, s.reputation.c.run, s.reputation.c.checks_passed,
                    s.results.c.epoch,
                )
                .join(s.replicas, s.replicas.c.id == s.results.c.replica_id)
                .join(s.workers, s.workers.c.id == s.results.c.worker_id)
                .join(s.tasks, s.tasks.c.id == s.results.c.task_id)
                .join(s.jobs, s.jobs.c.id == s.tasks.c.job_id)
                .outerjoin(
                    s.reputation,
                    (s.reputation.c.worker_id == s.results.c.worker_id)
                    & (s.reputation.c.task_type == s.jobs.c.task_type),
                )
                .where(
                    s.results.c.task_id.in_(ids),
                    s.results.c.status.in_([ResultStatus.PENDING.value, ResultStatus.ACCEPTED.value]),
                )
                .order_by(s.results.c.id)
            ).all()
            out = dict(
                conn.execute(
                    select(s.replicas.c.task_id, func.count())
                    .where(
                        s.replicas.c.task_id.in_(ids),
                        s.replicas.c.state.in_([int(ReplicaState.READY), int(ReplicaState.LEASED)]),
                        s.replicas.c.kind != ReplicaKind.GOLD.value,
                    )
                    .group_by(s.replicas.c.task_id)
                ).all()
            )
        by_task: dict[int, TaskCheck] = {
            t.id: TaskCheck(
                t.id, t.job_id, t.task_type, json.loads(t.policy), t.state, t.issued, None, [], out.get(t.id, 0),
                rooted=bool(t.rooted), known=t.known,
            )
            for t in tasks
        }
        for r in rows:
            cand = CandidateRow(
                result_id=r.id, worker_id=r.worker_id, owner=r.owner, output=r.output or b"", kind=r.kind,
                # a fresh key of a quarantined worker's owner or network, or a worker whose quorum
                # partners were quarantined, earns trust (1 + p) times slower
                run=(r.run or 0) // (1 + r.prior_quarantines + r.partner_quarantines),
                checks_passed=r.checks_passed or 0,
                final=bool(r.final),
                quarantined=r.quarantined_at is not None,
                trusted=bool(r.trusted),
            )
            check = by_task[r.task_id]
            if r.status == ResultStatus.ACCEPTED.value:
                check.canonical = cand
                check.sealed = r.epoch is not None
            else:
                check.pending.append(cand)
        return [c for c in by_task.values() if c.pending]

    def apply_validation(self, w: ValidationWrite, now: float) -> list[str]:
        """Write a validation round; returns the jobs it completed."""
        with self._write() as conn:
            # executemany: one statement per kind of change, not a round trip per row
            if w.statuses:
                conn.execute(
                    update(s.results)
                    .where(s.results.c.id == bindparam("rid"))
                    .values(status=bindparam("st"), final=bindparam("fin")),
                    [{"rid": r, "st": st, "fin": fin} for r, (st, fin) in w.statuses.items()],
                )
            if w.accepts:
                conn.execute(
                    update(s.results)
                    .where(s.results.c.id == bindparam("rid"))
                    .values(status=ResultStatus.ACCEPTED.value, final=bindparam("fin"), checks_at=bindparam("ck")),
                    [{"rid": a.result_id, "fin": a.final, "ck": a.checks_at} for a in w.accepts],
                )
            if w.task_states:
                conn.execute(
                    update(s.tasks).where(s.tasks.c.id == bindparam("tid")).values(state=bindparam("st")),
                    [{"tid": t, "st": st} for t, st in w.task_states.items()],
                )
            self._finalize_partners(conn, w.finalized)
            rooted = sorted({a.task_id for a in w.accepts if a.rooted})
            if rooted:
                conn.execute(update(s.tasks).where(s.tasks.c.id.in_(rooted)).values(rooted=True))
            if w.issued:
                conn.execute(
                    update(s.tasks).where(s.tasks.c.id == bindparam("tid")).values(issued=s.tasks.c.issued + bindparam("n")),
                    [{"tid": t, "n": n} for t, n in w.issued.items()],
                )
            if w.replicas:
                conn.execute(
                    insert(s.replicas),
                    [
                        {"task_id": t, "job_id": j, "state": int(ReplicaState.READY), "created_at": now, "kind": k}
                        for t, j, k in w.replicas
                    ],
                )
            for job_id, (done, inconclusive) in w.job_deltas.items():
                conn.execute(
                    update(s.jobs)
                    .where(s.jobs.c.id == job_id)
                    .values(
                        tasks_done=s.jobs.c.tasks_done + done,
                        tasks_inconclusive=s.jobs.c.tasks_inconclusive + inconclusive,
                    )
                )
                if done < 0:
                    self._reopen(conn, job_id)
            self._ensure_reputation(conn, set(w.reputation))
            checked: set[int] = set()
            for (worker_id, task_type), d in w.reputation.items():
                conn.execute(
                    text(
                        "UPDATE reputation SET "
                        "run = CASE WHEN :bad > 0 OR :contested > :good THEN 0 ELSE run + :good - :repeated END, "
                        "valid = valid + :good, invalid = invalid + :bad, "
                        "gold_passed = gold_passed + :gp, gold_failed = gold_failed + :gf, "
                        "checks_passed = checks_passed + :checks, "
                        "quota = CASE WHEN :bad > 0 THEN :lo WHEN quota + 2 * :good > :hi THEN :hi "
                        "ELSE quota + 2 * :good END "
                        "WHERE worker_id = :w AND task_type = :t"
                    ),
                    {"w": worker_id, "t": task_type, "good": d.valid, "bad": d.invalid, "gp": d.gold_passed,
                     "gf": d.gold_failed, "checks": d.checks, "contested": d.contested, "repeated": d.repeated,
                     "lo": QUOTA_MIN, "hi": QUOTA_MAX},
                )
                if d.checks:
                    checked.add(worker_id)
                rep = conn.execute(
                    select(s.reputation.c.invalid, s.reputation.c.gold_failed).where(
                        s.reputation.c.worker_id == worker_id, s.reputation.c.task_type == task_type
                    )
                ).one()
                if rep.gold_failed > 0:
                    w.quarantine.setdefault(worker_id, f"failed a gold task ({task_type})")
                elif rep.invalid >= d.max_invalid:
                    w.quarantine.setdefault(worker_id, f"outvoted {rep.invalid} times ({task_type})")
            touched = set(w.job_deltas)
            touched |= self._reopen_tasks(conn, w.reopen, now)
            for worker_id in sorted(checked):
                self._finalize_provisional(conn, worker_id)
            for worker_id, reason in sorted(w.quarantine.items()):
                touched |= self._quarantine(conn, worker_id, reason, now)
            return self._completed(conn, touched)

    def _finalize_provisional(self, conn: Any, worker_id: int) -> None:
        """The worker passed another check: its provisional results with enough checks since become final.

        Only results are written: a provisional task stays so (its state says how it was accepted),
        and finality does not change what a job counts as done. This bookkeeping is most of what the
        default policy costs over a quorum of one, so it is kept to the rows that change."""
        if self.dialect == "sqlite":
            self._finalize_provisional_in_place(conn, worker_id)
            return
        finals = conn.execute(
            text(
                # the literal condition is ix_results_provisional's: a bound one would not select that index
                "UPDATE results SET final = :yes WHERE worker_id = :w AND status = 'accepted' AND final = false "
                "AND checks_at <= (SELECT max(checks_passed) FROM reputation WHERE worker_id = :w) "
                "RETURNING task_id"
            ),
            {"w": worker_id, "yes": True},
        ).scalars().all()
        self._finalize_partners(conn, list(finals))

    def _finalize_provisional_in_place(self, conn: Any, worker_id: int) -> None:
        """:meth:`_finalize_provisional` without the tasks' ids leaving the database: their partners
        first, then the results themselves, both found through partial indexes.

        SQLite plans these subqueries on the index every time; PostgreSQL keeps the list (its plan for
        ``IN (subquery)`` depends on statistics it may not have)."""
        due = (
            # ix_results_provisional's condition, literally (a bound one would not select that index)
            "SELECT {} FROM results WHERE worker_id = :w AND status = 'accepted' AND final = false "
            "AND checks_at <= (SELECT max(checks_passed) FROM reputation WHERE worker_id = :w)"
        ).format
        w = {"w": worker_id}
        # partners through ix_results_unpaid (the unary + keeps SQLite from looking up each due task)
        conn.execute(text(f"UPDATE results SET final = :yes WHERE status = 'valid' AND final = false "
                          f"AND +task_id IN ({due('task_id')})"), {**w, "yes": True})
        conn.execute(text(f"UPDATE results SET final = :yes WHERE id IN ({due('id')})"), {**w, "yes": True})

    def _finalize_partners(self, conn: Any, task_ids: list[int]) -> None:
        """A task just became final: the results that agreed with it while it was provisional are paid too."""
        if task_ids:
            conn.execute(
                text(
                    # ix_results_unpaid's condition, literally
                    "UPDATE results SET final = :yes WHERE status = 'valid' AND final = false AND task_id IN :ids"
                ).bindparams(bindparam("ids", expanding=True)),
                {"yes": True, "ids": sorted(task_ids)},
            )

    def _reopen_tasks(self, conn: Any, tasks: dict[int, str], now: float, culprit: int | None = None) -> set[str]:
        """Decide these decided (unsealed) tasks again: their results go back to pending, one replica more.

        The culprit's results (a quarantined worker's) are thrown out; those it outvoted get their
        invalid mark back, since the vote that outvoted them no longer counts. Returns jobs touched."""
        if not tasks:
            return set()
        ids = sorted(tasks)
        reopened = conn.execute(
            update(s.tasks)
            .where(s.tasks.c.id.in_(ids), s.tasks.c.state.in_([TaskState.DONE.value, TaskState.PROVISIONAL.value]))
            .values(state=TaskState.OPEN.value, rooted=False)
            .returning(s.tasks.c.id, s.tasks.c.job_id)
        ).all()
        if not reopened:
            return set()
        ids = [r.id for r in reopened]
        outvoted = conn.execute(
            select(s.results.c.worker_id, s.jobs.c.task_type)
            .join(s.jobs, s.jobs.c.id == s.results.c.job_id)
            .where(s.results.c.task_id.in_(ids), s.results.c.status == ResultStatus.INVALID.value,
                   s.results.c.worker_id != (culprit or 0))
        ).all()
        for o in outvoted:
            conn.execute(
                text("UPDATE reputation SET invalid = CASE WHEN invalid > 0 THEN invalid - 1 ELSE 0 END "
                     "WHERE worker_id = :w AND task_type = :t"),
                {"w": o.worker_id, "t": o.task_type},
            )
        conn.execute(
            update(s.results)
            .where(
                s.results.c.task_id.in_(ids),
                s.results.c.status.in_(
                    [ResultStatus.ACCEPTED.value, ResultStatus.VALID.value, ResultStatus.INVALID.value]
                ),
                s.results.c.worker_id != (culprit or 0),
            )
            .values(status=ResultStatus.PENDING.value, final=False, checks_at=None)
        )
        if culprit is not None:
            conn.execute(
                update(s.results)
                .where(s.results.c.task_id.in_(ids), s.results.c.worker_id == culprit)
                .values(status=ResultStatus.REJECTED.value, final=False)
            )
        # one more opinion: a replica that the next validation round waits for
        conn.execute(update(s.tasks).where(s.tasks.c.id.in_(ids)).values(issued=s.tasks.c.issued + 1))
        conn.execute(
            insert(s.replicas),
            [{"task_id": r.id, "job_id": r.job_id, "state": int(ReplicaState.READY), "created_at": now,
              "kind": ReplicaKind.NORMAL.value} for r in reopened],
        )
        per_job: dict[str, int] = {}
        for r in reopened:
            per_job[r.job_id] = per_job.get(r.job_id, 0) + 1
        for job_id, n in per_job.items():
            conn.execute(update(s.jobs).where(s.jobs.c.id == job_id).values(tasks_done=s.jobs.c.tasks_done - n))
            self._reopen(conn, job_id)
        return set(per_job)

    def _quarantine(self, conn: Any, worker_id: int, reason: str, now: float) -> set[str]:
        """No more work, nothing more earned, and its unchecked results redone by others."""
        already = conn.execute(select(s.workers.c.quarantined_at).where(s.workers.c.id == worker_id)).scalar()
        if already is not None:
            return set()
        conn.execute(
            update(s.workers).where(s.workers.c.id == worker_id).values(quarantined_at=now, quarantine_reason=reason)
        )
        # its results still waiting for validation are thrown out, and their replicas replaced
        conn.execute(
            text(
                "INSERT INTO replicas (task_id, job_id, state, created_at, kind) "
                "SELECT r.task_id, r.job_id, :ready, :now, p.kind FROM results r "
                "JOIN replicas p ON p.id = r.replica_id JOIN tasks t ON t.id = r.task_id "
                "WHERE r.worker_id = :w AND r.status = :pending AND ("
                "(p.kind = 'normal' AND t.state = :open) OR (p.kind = 'audit' AND t.state = :provisional"
                " AND NOT EXISTS (SELECT 1 FROM results a WHERE a.task_id = t.id AND a.status = 'accepted' AND a.final)))"
            ),
            {"ready": int(ReplicaState.READY), "now": now, "w": worker_id, "pending": ResultStatus.PENDING.value,
             "open": TaskState.OPEN.value, "provisional": TaskState.PROVISIONAL.value},
        )
        conn.execute(
            update(s.results)
            .where(s.results.c.worker_id == worker_id, s.results.c.status == ResultStatus.PENDING.value)
            .values(status=ResultStatus.REJECTED.value)
        )
        touched = self._unwind(conn, worker_id, reason, now)
        # what it holds goes back to the queue (gold tests are dropped)
        conn.execute(
            text(
                "UPDATE replicas SET state = :ready, worker_id = NULL, lease_id = NULL "
                "WHERE worker_id = :w AND state = :leased AND kind != 'gold'"
            ),
            {"ready": int(ReplicaState.READY), "leased": int(ReplicaState.LEASED), "w": worker_id},
        )
        return touched

    def _unwind(self, conn: Any, worker_id: int, reason: str, now: float) -> set[str]:
        """Every task the quarantined worker helped decide is decided again without it.

        Unsealed ones (provisional or final) are reopened; sealed ones are on chain already and are
        recorded as disputes (epoch and result) for their submitters. Workers that shared many of
        its decisions are re-examined: their run starts again and they count a quarantined partner."""
        decided = (
            select(s.results.c.task_id)
            .where(s.results.c.worker_id == worker_id,
                   s.results.c.status.in_([ResultStatus.ACCEPTED.value, ResultStatus.VALID.value]))
            .scalar_subquery()
        )
        accepted = conn.execute(
            select(s.results.c.id, s.results.c.task_id, s.results.c.job_id, s.results.c.epoch)
            .join(s.tasks, s.tasks.c.id == s.results.c.task_id)
            .where(s.results.c.task_id.in_(decided), s.results.c.status == ResultStatus.ACCEPTED.value,
                   s.tasks.c.state.in_([TaskState.DONE.value, TaskState.PROVISIONAL.value]))
        ).all()
        if not accepted:
            return set()
        # partners are co-deciders: its quorums' other normal replicas. A gold or audit replica of a
        # task it decided was a test of that worker against the answer, not a shared decision (counting
        # them flagged most honest workers of a grid with a few independent cheaters)
        voted = (
            select(s.results.c.task_id)
            .join(s.replicas, s.replicas.c.id == s.results.c.replica_id)
            .where(s.results.c.worker_id == worker_id, s.replicas.c.kind == ReplicaKind.NORMAL.value,
                   s.results.c.status.in_([ResultStatus.ACCEPTED.value, ResultStatus.VALID.value]))
            .scalar_subquery()
        )
        # counted in batches, not decisions: leases hand out tasks in order, so the worker that takes
        # the second replicas of a batch shares all of its decisions at once, by chance
        partners = conn.execute(
            select(s.results.c.worker_id, func.count(func.distinct(s.results.c.batch_id)))
            .join(s.replicas, s.replicas.c.id == s.results.c.replica_id)
            .where(s.results.c.task_id.in_(voted), s.results.c.worker_id != worker_id,
                   s.replicas.c.kind == ReplicaKind.NORMAL.value,
                   s.results.c.status.in_([ResultStatus.ACCEPTED.value, ResultStatus.VALID.value]))
            .group_by(s.results.c.worker_id)
        ).all()
        active = conn.execute(
            select(func.count()).select_from(s.workers).where(s.workers.c.quarantined_at.is_(None))
        ).scalar_one()
        close = sorted(close_partners(dict(partners), active))
        if close:
            conn.execute(
                update(s.workers).where(s.workers.c.id.in_(close))
                .values(partner_quarantines=s.workers.c.partner_quarantines + 1)
            )
            conn.execute(update(s.reputation).where(s.reputation.c.worker_id.in_(close)).values(run=0))
        sealed = [a for a in accepted if a.epoch is not None]
        if sealed:
            existing = set(conn.execute(
                select(s.disputes.c.result_id).where(s.disputes.c.worker_id == worker_id)
            ).scalars())
            rows = [{"task_id": a.task_id, "job_id": a.job_id, "result_id": a.id, "worker_id": worker_id,
                     "epoch": a.epoch, "reason": reason, "created_at": now} for a in sealed if a.id not in existing]
            if rows:
                conn.execute(insert(s.disputes), rows)
        return self._reopen_tasks(conn, {a.task_id: a.job_id for a in accepted if a.epoch is None}, now,
                                  culprit=worker_id)

    def disputes(self, job_id: str) -> list[dict[str, Any]]:
        """Sealed results of a job that a since-quarantined worker helped decide: outputs to distrust."""
        q = (
            select(s.disputes.c.epoch, s.tasks.c.idx, s.results.c.output_hash, s.tasks.c.input_hash,
                   s.workers.c.address, s.disputes.c.reason, s.disputes.c.created_at)
            .join(s.tasks, s.tasks.c.id == s.disputes.c.task_id)
            .join(s.results, s.results.c.id == s.disputes.c.result_id)
            .join(s.workers, s.workers.c.id == s.disputes.c.worker_id)
            .where(s.disputes.c.job_id == job_id)
            .order_by(s.disputes.c.epoch, s.tasks.c.idx)
        )
        with self._read() as conn:
            return [
                {"epoch": r.epoch, "task_index": r.idx, "output_hash": r.output_hash, "input_hash": r.input_hash,
                 "worker": r.address, "reason": r.reason, "at": r.created_at}
                for r in conn.execute(q)
            ]

    def _reopen(self, conn: Any, job_id: str) -> None:
        """A job already reduced with a result now withdrawn runs again and is reduced anew."""
        conn.execute(
            update(s.jobs)
            .where(s.jobs.c.id == job_id, s.jobs.c.state == JobState.DONE.value)
            .values(state=JobState.RUNNING.value, finished_at=None, output_hash=None, summary=None)
        )

    def trust_counts(self, job_id: str) -> dict[str, Any]:
        """Results by status and executed replicas by kind, for a job's summary."""
        with self._read() as conn:
            statuses = dict(
                conn.execute(
                    select(s.results.c.status, func.count()).where(s.results.c.job_id == job_id).group_by(
                        s.results.c.status
                    )
                ).all()
            )
            kinds = dict(
                conn.execute(
                    select(s.replicas.c.kind, func.count())
                    .where(s.replicas.c.job_id == job_id, s.replicas.c.state == int(ReplicaState.DONE))
                    .group_by(s.replicas.c.kind)
                ).all()
            )
            # tasks whose accepted result is not final yet (a provisional task's result becomes final
            # with its worker's later checks; the task's state stays what it was accepted as)
            provisional = conn.execute(
                select(func.count()).select_from(s.results).where(
                    s.results.c.job_id == job_id, s.results.c.status == ResultStatus.ACCEPTED.value,
                    s.results.c.final.is_(False),
                )
            ).scalar_one()
        return {"results": statuses, "replicas_by_kind": kinds, "tasks_provisional": provisional}


def _reputation(r: Any) -> Reputation:
    return Reputation(
        task_type=r.task_type, run=r.run, valid=r.valid, invalid=r.invalid, errors=r.errors, timeouts=r.timeouts,
        gold_passed=r.gold_passed, gold_failed=r.gold_failed, checks_passed=r.checks_passed, quota=r.quota,
    )
