"""A paid job's escrow, as the coordinator follows it: funded before any lease, closed once paid.

* A job with a reward is created *unfunded*, with no replica: nothing of it can
  be leased. :meth:`Escrow.activate` reads its escrow on chain (keyed by job
  id and funder) and makes its first replicas once the budget covers
  R x tasks and the refund deadline is at least ``min_funding_seconds`` away;
  the submitter asks for it after funding (``POST /v1/jobs/{id}/funded``) and
  the sealer's loop checks unfunded jobs too, so a crash between funding and
  the first lease loses nothing.
* Once a finished (or cancelled) job's every paid result is in a committed
  epoch, :meth:`Escrow.close_paid` closes it on chain: its funder can take the
  unspent budget back at once (``coopgrid ledger refund JOB``).
"""

from __future__ import annotations

import logging
import time
from typing import Any

from coopgrid.config import Settings
from coopgrid.errors import ChainUnavailable, Conflict, LedgerError
from coopgrid.ledger import Ledger
from coopgrid.store.base import JobRecord, Store
from coopgrid.store.schema import EpochState, JobState

log = logging.getLogger(__name__)


class Escrow:
    def __init__(self, settings: Settings, store: Store, ledger: Ledger) -> None:
        self.settings = settings
        self.store = store
        self.ledger = ledger

    def summary(self, job: JobRecord) -> dict[str, Any]:
        """Budget, spent, refundable of a job's escrow, and what each worker earned from it (strings:
        amounts are uint256). ``paid`` is in committed epochs (the sum is ``spent``, claimable by
        its workers), ``pending`` waits for an epoch's commit; budget = spent + unspent, and
        unspent = pending + what is free (refunded once the job is closed)."""
        workers = self.earnings(job.id)
        pending = sum(w["pending"] for w in workers.values())
        view = {
            "workers": [{"address": a, "paid": str(w["paid"]), "pending": str(w["pending"])}
                        for a, w in sorted(workers.items())],
            "pending": str(pending),
            "needed": str(job.reward_per_task * job.n_tasks),
        }
        if not job.funder:
            return {"funder": None, "budget": "0", "spent": "0", "unspent": "0", "refundable": "0", "deadline": None,
                    "closed": False, **view}
        e = self.ledger.job_escrow("0x" + job.id, job.funder)
        now = time.time()
        return {
            "funder": job.funder, "budget": str(e.budget), "spent": str(e.spent),
            "refundable": str(e.remaining if e.closed or (e.deadline and now >= e.deadline) else 0),
            "unspent": str(e.remaining), "deadline": e.deadline or None, "closed": e.closed, **view,
        }

    def earnings(self, job_id: str) -> dict[str, dict[str, int]]:
        """Per worker address: {"paid": in committed epochs, "pending": not yet} from one job, under SHARE_RULE."""
        from coopgrid.coordinator.rewards import epoch_rewards

        committed = {e.number for e in self.store.list_epochs([EpochState.COMMITTED])}
        rows = self.store.share_rows(job_id)
        paid, _ = epoch_rewards(r for epoch, r in rows if epoch in committed)
        pending, _ = epoch_rewards(r for epoch, r in rows if epoch not in committed)
        return {a: {"paid": paid.get(a, 0), "pending": pending.get(a, 0)} for a in sorted(set(paid) | set(pending))}

    def activate(self, job: JobRecord) -> JobRecord:
        """Lease a paid job's tasks once its escrow is funded; Conflict saying how to fund it otherwise."""
        if job.state != JobState.UNFUNDED.value:
            return job
        assert job.funder
        need = job.reward_per_task * job.n_tasks
        e = self.ledger.job_escrow("0x" + job.id, job.funder)
        short = e.remaining < need
        late = e.funded and e.deadline < time.time() + self.settings.min_funding_seconds
        if short or late or e.closed:
            why = (
                f"its escrow holds {e.remaining} of the {need} it needs ({job.n_tasks} tasks x {job.reward_per_task})"
                if short else "its refund deadline is too near" if late else "its escrow is closed"
            )
            raise Conflict(
                f"job {job.id} is not funded: {why}. Fund it from {job.funder}: "
                f"`coopgrid fund {job.id} --key-file KEYSTORE` (approve + fund on contract {self.ledger.address})",
                job_id=job.id, needed=str(need), funder=job.funder,
            )
        if self.store.activate_job(job.id, time.time()):
            log.info("job %s funded with %s by %s: leasing its tasks", job.id, e.budget, job.funder)
        updated = self.store.get_job(job.id)
        assert updated is not None
        return updated

    def activate_funded(self) -> None:
        """Activate every unfunded job whose escrow is now funded (the sealer's loop)."""
        for job in self.store.list_jobs(states=[JobState.UNFUNDED.value]):
            try:
                self.activate(job)
            except Conflict:
                pass

    def close_paid(self) -> list[str]:
        """Close on chain the finished jobs whose every paid result is committed; returns their ids."""
        closed = []
        finished = [j for j in self.store.open_escrows() if j.state in (JobState.DONE.value, JobState.CANCELLED.value)]
        if not finished:
            return closed
        committed = {e.number for e in self.store.list_epochs([EpochState.COMMITTED])}
        for job in finished:
            assert job.funder is not None
            if self.store.trust_counts(job.id)["tasks_provisional"] or self.store.job_unsealed(job.id, committed):
                continue
            try:
                escrow = self.ledger.job_escrow("0x" + job.id, job.funder)
                # a job cancelled before it was ever funded has no escrow on chain to close
                if escrow.funded and not escrow.closed:
                    self.ledger.close_job("0x" + job.id, job.funder)
                    log.info("job %s closed on chain: its funder %s can take the rest back", job.id, job.funder)
                    closed.append(job.id)
            except ChainUnavailable:
                raise  # every other job would wait on the same chain: the sealer's next round tries again
            except LedgerError as exc:  # one job's escrow must not hold up every later one's
                log.warning("closing job %s's escrow failed (%s); trying again on the next round", job.id, exc)
                continue
            self.store.mark_escrow_closed(job.id)  # on chain first: a crash in between only looks again
        return closed
