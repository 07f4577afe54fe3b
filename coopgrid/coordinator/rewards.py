"""How a task's reward is shared, and what each epoch spends from each job's escrow.

The rule (:data:`SHARE_RULE`, shown by ``coopgrid status``): a task's reward R
is paid once, when its accepted result is sealed, and shared equally among the
results that earned it in that decision: the accepted result and the results
that agreed with it (quorum members, the audit that made a provisional result
final). Integer division leaves less than one unit per sharer over: it goes to
the accepted result's worker. Gold tests of tasks already decided, and results
that agree after the task was sealed, are not paid: they check a worker, they
do no work the submitter asked for. So a job spends exactly R per accepted
task, at most R x tasks: the budget it was funded with.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

SHARE_RULE = (
    "each accepted task pays its reward once, shared equally by the results that earned it "
    "(the accepted one and those agreeing with it when it was decided); the remainder of the "
    "division goes to the accepted result's worker; gold tests and late agreeing results are not paid"
)


@dataclass(frozen=True)
class ShareRow:
    """A paid result of a task whose accepted result is sealed in the epoch."""

    task_id: int
    job_id: str
    reward_per_task: int
    worker: str  # address
    accepted: bool  # the task's canonical result


def epoch_rewards(rows: Iterable[ShareRow]) -> tuple[dict[str, int], dict[str, int]]:
    """(reward per worker, spend per job) of one epoch's tasks under :data:`SHARE_RULE`."""
    tasks: dict[int, list[ShareRow]] = {}
    for r in rows:
        tasks.setdefault(r.task_id, []).append(r)
    workers: dict[str, int] = {}
    jobs: dict[str, int] = {}
    for sharers in tasks.values():
        reward = sharers[0].reward_per_task
        if reward <= 0:
            continue
        share, rest = divmod(reward, len(sharers))
        for r in sharers:
            paid = share + (rest if r.accepted else 0)
            if paid:
                workers[r.worker] = workers.get(r.worker, 0) + paid
        jobs[sharers[0].job_id] = jobs.get(sharers[0].job_id, 0) + reward
    return workers, jobs


def add(total: dict[str, int], more: dict[str, int]) -> dict[str, int]:
    """Cumulative totals: ``total`` plus ``more``, key by key."""
    out = dict(total)
    for k, v in more.items():
        out[k] = out.get(k, 0) + v
    return out
