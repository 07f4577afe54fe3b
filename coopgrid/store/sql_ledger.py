"""Epochs, rewards and model anchors in the SQL store (a mixin of :class:`SqlStore`).

Only *final* results are sealed and rewarded: quorum-accepted ones at once,
provisional ones once their worker has passed its later checks. A result
leaf is the task's canonical (accepted) result; rewards go to every worker
whose result was accepted or agreed with it (valid).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import func, insert, select, text, update

from coopgrid.store import schema as s
from coopgrid.store.base import EpochRecord, JobRecord, ModelRecord, SealedResult
from coopgrid.coordinator.rewards import ShareRow
from coopgrid.store.schema import EpochState, JobState, ReplicaKind, ReplicaState, ResultStatus


#: An epoch whose content changed goes back to open, to be built again.
_REBUILD = {
    "state": EpochState.OPEN.value, "results_root": None, "rewards_root": None, "results_dump": None,
    "rewards_dump": None, "spends_dump": None, "tx_hash": None, "raw_tx": None,
}


class LedgerQueries:
    """Mixed into SqlStore, which provides ``_read`` and ``_write``."""

    _read: Any
    _write: Any
    _ACCEPTED = s.results.c.status == ResultStatus.ACCEPTED.value
    # what is sealed: the final canonical result of each task
    _SEALABLE = (s.results.c.status == ResultStatus.ACCEPTED.value) & s.results.c.final
    # what is rewarded: every final result that was accepted or agreed with the accepted one
    _PAID = s.results.c.status.in_([ResultStatus.ACCEPTED.value, ResultStatus.VALID.value]) & s.results.c.final
    # what a new epoch takes: paid results of jobs not held out of sealing
    _NEW = _PAID & s.results.c.job_id.not_in(select(s.jobs.c.id).where(s.jobs.c.seal_error.is_not(None)))

    def unsealed(self) -> tuple[int, float | None]:
        q = select(func.count(), func.min(s.results.c.received_at)).where(self._NEW, s.results.c.epoch.is_(None))
        with self._read() as conn:
            count, oldest = conn.execute(q).one()
        return count, oldest

    def open_epoch(self, now: float) -> int | None:
        with self._write() as conn:
            number = (conn.execute(select(func.max(s.epochs.c.number))).scalar() or 0) + 1
            assigned = conn.execute(
                update(s.results).where(self._NEW, s.results.c.epoch.is_(None)).values(epoch=number)
            ).rowcount
            if not assigned:
                return None
            leaves = conn.execute(
                select(func.count()).select_from(s.results).where(self._SEALABLE, s.results.c.epoch == number)
            ).scalar_one()
            conn.execute(
                insert(s.epochs).values(
                    number=number, state=EpochState.OPEN.value, result_count=leaves, created_at=now
                )
            )
        return number

    def _sealed_query(self) -> Any:
        return (
            select(
                s.results.c.epoch,
                s.tasks.c.job_id,
                s.tasks.c.idx,
                s.jobs.c.model_hash,
                s.tasks.c.input_hash,
                s.results.c.output_hash,
                s.workers.c.address,
            )
            .join(s.tasks, s.tasks.c.id == s.results.c.task_id)
            .join(s.jobs, s.jobs.c.id == s.tasks.c.job_id)
            .join(s.workers, s.workers.c.id == s.results.c.worker_id)
            .where(self._ACCEPTED)
        )

    def epoch_results(self, number: int) -> list[SealedResult]:
        q = self._sealed_query().where(s.results.c.epoch == number, s.results.c.final).order_by(s.results.c.id)
        with self._read() as conn:
            return [SealedResult(*row) for row in conn.execute(q)]

    def sealed_result(self, job_id: str, task_index: int) -> SealedResult | None:
        q = self._sealed_query().where(s.tasks.c.job_id == job_id, s.tasks.c.idx == task_index)
        with self._read() as conn:
            row = conn.execute(q).first()
        return SealedResult(*row) if row else None

    def reward_totals(self, up_to_epoch: int | None) -> dict[str, int]:
        which = s.results.c.epoch.is_(None) if up_to_epoch is None else s.results.c.epoch <= up_to_epoch
        return self._reward_sums(self._PAID, which)

    def pending_rewards(self) -> dict[str, int]:
        from coopgrid.coordinator.rewards import epoch_rewards

        earned, _ = epoch_rewards(row for _, row in self.share_rows(uncommitted=True))
        return earned

    def share_rows(self, job_id: str | None = None, uncommitted: bool = False) -> list[tuple[int | None, ShareRow]]:
        r, a = s.results, s.results.alias("accepted")
        same_epoch = (r.c.epoch == a.c.epoch) | (r.c.epoch.is_(None) & a.c.epoch.is_(None))
        q = (
            select(a.c.epoch, r.c.task_id, r.c.job_id, s.jobs.c.reward_per_task, s.workers.c.address, r.c.status)
            .select_from(r)
            .join(a, (a.c.task_id == r.c.task_id) & (a.c.status == ResultStatus.ACCEPTED.value))
            .join(s.jobs, s.jobs.c.id == r.c.job_id)
            .join(s.workers, s.workers.c.id == r.c.worker_id)
            .join(s.replicas, s.replicas.c.id == r.c.replica_id)
            .where(
                r.c.status.in_([ResultStatus.ACCEPTED.value, ResultStatus.VALID.value]),
                s.replicas.c.kind != ReplicaKind.GOLD.value,
                # a final task: its paid results sealed with it; a provisional one: its accepted result
                # alone for now (an audit that makes it final will share it)
                (a.c.final & r.c.final & same_epoch) | (~a.c.final & (r.c.id == a.c.id)),
            )
            .order_by(r.c.id)
        )
        if job_id is not None:
            q = q.where(r.c.job_id == job_id)
        if uncommitted:
            committed = select(s.epochs.c.number).where(s.epochs.c.state == EpochState.COMMITTED.value)
            q = q.where(a.c.epoch.is_(None) | a.c.epoch.not_in(committed))
        with self._read() as conn:
            return [
                (e, ShareRow(t, j, int(reward), address, status == ResultStatus.ACCEPTED.value))
                for e, t, j, reward, address, status in conn.execute(q)
            ]

    def _reward_sums(self, *where: Any) -> dict[str, int]:
        """Reward per worker address over the results matching ``where``."""
        q = (
            select(s.workers.c.address, s.jobs.c.reward_per_task, func.count())
            .join(s.results, s.results.c.worker_id == s.workers.c.id)
            .join(s.jobs, s.jobs.c.id == s.results.c.job_id)
            .where(*where)
            .group_by(s.workers.c.address, s.jobs.c.reward_per_task)
        )
        totals: dict[str, int] = {}
        with self._read() as conn:
            for address, reward, n in conn.execute(q):
                # rewards are uint256: summed as Python ints, never as SQL numbers
                totals[address] = totals.get(address, 0) + int(reward) * n
        return {a: t for a, t in totals.items() if t > 0}

    def epoch_jobs(self, number: int) -> list[str]:
        q = select(s.results.c.job_id).where(s.results.c.epoch == number).distinct().order_by(s.results.c.job_id)
        with self._read() as conn:
            return list(conn.execute(q).scalars())

    def hold_jobs(self, reasons: dict[str, str], epoch: int) -> None:
        with self._write() as conn:
            state = conn.execute(select(s.epochs.c.state).where(s.epochs.c.number == epoch)).scalar()
            if state not in (None, EpochState.OPEN.value, EpochState.SEALED.value):
                raise ValueError(f"epoch {epoch} is {state}: a sent epoch's content can no longer change")
            for job_id, reason in sorted(reasons.items()):
                conn.execute(update(s.jobs).where(s.jobs.c.id == job_id).values(seal_error=reason[:2000]))
            conn.execute(
                update(s.results)
                .where(s.results.c.epoch == epoch, s.results.c.job_id.in_(sorted(reasons)))
                .values(epoch=None)
            )
            if state is None:
                return
            left = conn.execute(
                select(func.count()).select_from(s.results).where(s.results.c.epoch == epoch)
            ).scalar_one()
            if not left:
                # nothing of it reached the chain: its number goes to the next epoch, and any later
                # epoch (unsent too, since this one never was) moves down one to keep the sequence
                conn.execute(s.epochs.delete().where(s.epochs.c.number == epoch))
                later = conn.execute(
                    select(s.epochs.c.number, s.epochs.c.state).where(s.epochs.c.number > epoch).order_by(s.epochs.c.number)
                ).all()
                for number, later_state in later:
                    if later_state not in (EpochState.OPEN.value, EpochState.SEALED.value):
                        raise ValueError(f"epoch {number} is {later_state} after the unsent epoch {epoch}")
                    conn.execute(update(s.results).where(s.results.c.epoch == number).values(epoch=number - 1))
                    conn.execute(
                        update(s.epochs).where(s.epochs.c.number == number).values(number=number - 1, **_REBUILD)
                    )
                return
            leaves = conn.execute(
                select(func.count()).select_from(s.results).where(self._SEALABLE, s.results.c.epoch == epoch)
            ).scalar_one()
            conn.execute(update(s.epochs).where(s.epochs.c.number == epoch).values(result_count=leaves, **_REBUILD))

    def epoch_shares(self, number: int) -> list[ShareRow]:
        # plain reads matched here: the tasks accepted in the epoch, its paid results (with their replica's
        # kind), then the few jobs' rewards and workers' addresses. Any statement relating a result to its
        # task's accepted one, or joining jobs in, left PostgreSQL without statistics a plan quadratic in
        # the epoch ("task_id IN (...)" re-ran the subquery per row; a correlated EXISTS, or the jobs
        # join, became a bitmap AND over the whole epoch's results per task or per job: a
        # million-result epoch's shares were still being read 8 minutes later; now 2.4 s for 657,000)
        accepted_here = (
            select(s.results.c.task_id)
            .where(s.results.c.epoch == number, s.results.c.status == ResultStatus.ACCEPTED.value, s.results.c.final)
        )
        paid_here = (
            select(s.results.c.task_id, s.results.c.job_id, s.results.c.worker_id, s.results.c.status)
            .join(s.replicas, s.replicas.c.id == s.results.c.replica_id)
            .where(self._PAID, s.results.c.epoch == number, s.replicas.c.kind != ReplicaKind.GOLD.value)
            .order_by(s.results.c.id)
        )
        with self._read() as conn:
            # an epoch of unpaid jobs only (a private grid's, a benchmark's) has no shares: its results are
            # not read row by row, which was a third of sealing's work in a million-task job
            here = sorted(conn.execute(select(s.results.c.job_id).where(s.results.c.epoch == number).distinct())
                          .scalars())
            reward = {j: int(r) for j, r in conn.execute(select(s.jobs.c.id, s.jobs.c.reward_per_task)
                                                         .where(s.jobs.c.id.in_(here)))}
            if not any(reward.values()):
                return []
            tasks = set(conn.execute(accepted_here).scalars())
            rows = [r for r in conn.execute(paid_here) if r.task_id in tasks and reward[r.job_id]]
            address = dict(conn.execute(select(s.workers.c.id, s.workers.c.address)
                                        .where(s.workers.c.id.in_(sorted({r.worker_id for r in rows})))).all())
        # shares of unpaid tasks are left out: epoch_rewards skips a task whose reward is 0
        return [
            ShareRow(r.task_id, r.job_id, reward[r.job_id], address[r.worker_id], r.status == ResultStatus.ACCEPTED.value)
            for r in rows
        ]

    def job_unsealed(self, job_id: str, committed: set[int]) -> int:
        """Paid results of a job not in one of the ``committed`` epochs."""
        q = select(func.count()).select_from(s.results).where(
            self._PAID, s.results.c.job_id == job_id,
            s.results.c.epoch.is_(None) | s.results.c.epoch.not_in(sorted(committed) or [-1]),
        )
        with self._read() as conn:
            return conn.execute(q).scalar_one()

    def open_escrows(self) -> list[JobRecord]:
        from coopgrid.store.sql import _job

        with self._read() as conn:
            rows = conn.execute(select(s.jobs).where(text(s.ESCROW_OPEN))  # ix_jobs_escrow_open
                                .order_by(s.jobs.c.id))
            return [_job(r) for r in rows]

    def mark_escrow_closed(self, job_id: str) -> None:
        with self._write() as conn:
            conn.execute(update(s.jobs).where(s.jobs.c.id == job_id).values(escrow_closed=True))

    def activate_job(self, job_id: str, now: float) -> bool:
        with self._write() as conn:
            changed = conn.execute(
                update(s.jobs)
                .where(s.jobs.c.id == job_id, s.jobs.c.state == JobState.UNFUNDED.value)
                .values(state=JobState.RUNNING.value)
            ).rowcount
            if not changed:
                return False
            most = conn.execute(select(func.max(s.tasks.c.issued)).where(s.tasks.c.job_id == job_id)).scalar() or 0
            for k in range(most):
                conn.execute(
                    text(
                        "INSERT INTO replicas (task_id, job_id, state, created_at, kind) "
                        "SELECT id, job_id, :ready, :now, 'normal' FROM tasks WHERE job_id = :job AND issued > :k "
                        "ORDER BY idx"
                    ),
                    {"ready": int(ReplicaState.READY), "now": now, "job": job_id, "k": k},
                )
        return True

    def held_jobs(self) -> list[JobRecord]:
        from coopgrid.store.sql import _job

        q = select(s.jobs).where(s.jobs.c.seal_error.is_not(None)).order_by(s.jobs.c.created_at)
        with self._read() as conn:
            return [_job(r) for r in conn.execute(q)]

    def update_epoch(self, number: int, **fields: Any) -> None:
        with self._write() as conn:
            conn.execute(update(s.epochs).where(s.epochs.c.number == number).values(**fields))

    def get_epoch(self, number: int) -> EpochRecord | None:
        with self._read() as conn:
            row = conn.execute(select(s.epochs).where(s.epochs.c.number == number)).first()
        return EpochRecord(**row._asdict()) if row else None

    def list_epochs(self, states: Sequence[str] | None = None) -> list[EpochRecord]:
        q = select(s.epochs).order_by(s.epochs.c.number)
        if states:
            q = q.where(s.epochs.c.state.in_(list(states)))
        with self._read() as conn:
            return [EpochRecord(**row._asdict()) for row in conn.execute(q)]

    def models_to_anchor(self) -> list[ModelRecord]:
        q = select(s.models).where(s.models.c.anchor_block.is_(None)).order_by(s.models.c.created_at)
        from coopgrid.store.sql import _model

        with self._read() as conn:
            return [_model(r) for r in conn.execute(q)]

    def set_model_anchor(self, model_hash: str, tx_hash: str, block_number: int | None) -> None:
        with self._write() as conn:
            conn.execute(
                update(s.models)
                .where(s.models.c.hash == model_hash)
                .values(anchor_tx=tx_hash, anchor_block=block_number)
            )
