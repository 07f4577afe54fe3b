"""Read-only figures about the whole grid, for /metrics and the dashboard (a mixin of :class:`SqlStore`).

Asked at every scrape and every few seconds by an open dashboard, so every
query here is bounded by something small (open leases, the replicas of
running jobs, the workers) or served by an index; none scans all results.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, literal_column, select

from coopgrid.store import schema as s
from coopgrid.store.base import GridFigures
from coopgrid.store.schema import EpochState, JobState, ReplicaState, ResultStatus


class MetricsQueries:
    """Mixed into SqlStore, which provides ``_read``."""

    _read: Any

    def grid_figures(self, seen_since: float, replicas: bool = True) -> GridFigures:
        running = select(s.jobs.c.id).where(s.jobs.c.state == JobState.RUNNING.value)
        by_kind: dict[tuple[str, str], int] = {}
        ready: dict[str, int] = {}
        with self._read() as conn:
            open_leases = conn.execute(
                select(func.count()).select_from(s.leases).where(s.leases.c.state == "open")
            ).scalar_one()
            if replicas:
                # the replicas of running jobs only: finished jobs' replicas never change again. O(replicas
                # of running jobs): about 0.1 s for 50,000 on SQLite, fine for a scrape every 15 s or more
                rows = conn.execute(
                    select(s.replicas.c.job_id, s.replicas.c.kind, s.replicas.c.state, func.count())
                    .where(s.replicas.c.job_id.in_(running))
                    .group_by(s.replicas.c.job_id, s.replicas.c.kind, s.replicas.c.state)
                )
                for job_id, kind, state, n in rows:
                    name = ReplicaState(state).name.lower()
                    by_kind[(kind, name)] = by_kind.get((kind, name), 0) + n
                    if state == ReplicaState.READY:
                        ready[job_id] = ready.get(job_id, 0) + n
                for (job_id,) in conn.execute(running):
                    ready.setdefault(job_id, 0)
                queued = sum(ready.values())
            else:  # the total alone, from the partial index of ready replicas
                queued = conn.execute(
                    select(func.count()).select_from(s.replicas).where(s.replicas.c.state == int(ReplicaState.READY))
                ).scalar_one()
            workers = {"active": 0, "idle": 0, "quarantined": 0}
            # grouped by the output columns' names: PostgreSQL sees two separately bound
            # "last_seen >= $n" as different expressions and refuses the query
            for quarantined, active, n in conn.execute(
                select(
                    s.workers.c.quarantined_at.is_not(None).label("quarantined"),
                    (s.workers.c.last_seen >= seen_since).label("active"),
                    func.count(),
                ).group_by(literal_column("quarantined"), literal_column("active"))
            ):
                workers["quarantined" if quarantined else "active" if active else "idle"] += n
            jobs = dict(conn.execute(select(s.jobs.c.state, func.count()).group_by(s.jobs.c.state)).all())
            last_commit = conn.execute(
                select(func.max(s.epochs.c.committed_at)).where(s.epochs.c.state == EpochState.COMMITTED.value)
            ).scalar()
            epochs = dict(conn.execute(select(s.epochs.c.state, func.count()).group_by(s.epochs.c.state)).all())
        return GridFigures(
            open_leases=open_leases, replicas=by_kind, queue_depth=ready, queued=queued, workers=workers,
            jobs=jobs, epochs=epochs, last_commit=last_commit,
        )

    def failure_reasons(self, job_id: str, limit: int = 20) -> list[tuple[str, int]]:
        """The errors workers reported for a job's replicas, most frequent first."""
        q = (
            select(s.results.c.error, func.count().label("n"))
            .where(s.results.c.job_id == job_id, s.results.c.status == ResultStatus.ERROR.value)
            .group_by(s.results.c.error)
            .order_by(func.count().desc())
            .limit(limit)
        )
        with self._read() as conn:
            return [(error or "(no reason given)", n) for error, n in conn.execute(q)]
