"""Prometheus metrics of a coordinator (served at /metrics).

Two kinds. Counters this process keeps as things happen (results received,
validation outcomes, leases, quarantines, requests and their latency): cheap
increments on the hot path, reset when the process restarts, as Prometheus
expects of counters. Gauges read from the store when scraped (leases open,
replicas of running jobs by kind and state, queue depth per job, workers by
state, epoch lag): every coordinator process sharing a database reports the
same grid, so a dashboard sums counters but takes any one process's gauges.

Each :class:`Metrics` has its own registry, never prometheus_client's global
one: tests build many coordinators in one process.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Histogram, disable_created_metrics
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from coopgrid.coordinator.edge import ASGIApp, Message, Receive, Scope, Send

if TYPE_CHECKING:
    from coopgrid.app import App

#: request latency buckets (seconds): most requests take a few milliseconds; uploads and seals longer
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class Metrics:
    """The counters of one coordinator process and the registry /metrics serves."""

    def __init__(self) -> None:
        # a *_created series beside every counter doubles the output and says only when the process started
        disable_created_metrics()
        self.registry = CollectorRegistry(auto_describe=False)
        r = self.registry
        self.leases = Counter("coopgrid_leases", "Leases granted to workers.", registry=r)
        self.leased_replicas = Counter("coopgrid_leased_replicas", "Replicas handed out in leases.", registry=r)
        self.results = Counter(
            "coopgrid_results", "Results received from workers, by the status they were recorded with.",
            ["status"], registry=r,
        )
        self.validations = Counter(
            "coopgrid_validation_outcomes",
            "Validation decisions: results accepted, provisional, valid, invalid, rejected or duplicate; "
            "tasks inconclusive or given more replicas; gold tasks passed or failed.",
            ["outcome"], registry=r,
        )
        self.quarantines = Counter("coopgrid_quarantines", "Workers quarantined.", registry=r)
        self.blob_urls = Counter(
            "coopgrid_blob_urls", "Presigned blob URLs handed to workers (task inputs in leases, models), which fetch "
            "those blobs from the blob store instead of through the coordinator.",
            registry=r,
        )
        # one histogram, status included: its _count is the request counter, one observation per request
        self.latency = Histogram(
            "coopgrid_http_request_duration_seconds",
            "Time from a request's arrival to the end of its answer, by route template and status.",
            ["method", "route", "status"], buckets=LATENCY_BUCKETS, registry=r,
        )

    def count_results(self, statuses: dict[int, str]) -> None:
        counts: dict[str, int] = {}
        for status in statuses.values():
            counts[status] = counts.get(status, 0) + 1
        for status, n in counts.items():
            self.results.labels(status).inc(n)

    def count_validations(self, outcomes: dict[str, int]) -> None:
        for outcome, n in outcomes.items():
            if n:
                self.validations.labels(outcome).inc(n)

    def watch(self, app: App) -> None:
        """Serve the gauges read from ``app``'s store (and its sealer) at every scrape."""
        self.registry.register(_GridCollector(app))



class RequestTiming:
    """A pure ASGI middleware: each request's latency and status, by route template.

    The route template (``/v1/jobs/{job_id}``), not the path, so the number
    of series stays bounded whatever clients send; paths no route matches
    share one label. Label children are cached: one dict look-up and one
    observation per request (about 6 µs on the 2-core test machine)."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics
        self._children: dict[tuple[str, str, int], Callable[[float], None]] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 0

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            key = (scope["method"], template, status or 500)
            observe = self._children.get(key)
            if observe is None:
                if len(self._children) > 10_000:  # methods are free text: never let them grow without bound
                    self._children.clear()
                method = key[0] if key[0] in _METHODS else "other"
                observe = self.metrics.latency.labels(method, template, str(key[2])).observe
                self._children[key] = observe
            observe(time.perf_counter() - start)


_METHODS = {"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"}


class _GridCollector(Collector):
    """Gauges computed from the store when scraped."""

    def __init__(self, app: App) -> None:
        self.app = app

    def collect(self) -> Iterator[Metric]:
        app = self.app
        now = time.time()
        f = app.store.grid_figures(now - app.settings.lease_seconds)
        yield _gauge("coopgrid_leases_open", "Leases held by workers now.", f.open_leases)
        replicas = GaugeMetricFamily(
            "coopgrid_replicas", "Replicas of running jobs, by kind (normal, gold, audit) and state.",
            labels=["kind", "state"],
        )
        for (kind, state), n in sorted(f.replicas.items()):
            replicas.add_metric([kind, state], n)
        yield replicas
        depth = GaugeMetricFamily("coopgrid_queue_depth", "Replicas waiting for a worker, per running job.", labels=["job"])
        for job, n in sorted(f.queue_depth.items()):
            depth.add_metric([job], n)
        yield depth
        yield _labelled("coopgrid_workers", "Workers by state (active: seen within a lease period).", "state", f.workers)
        yield _labelled("coopgrid_jobs", "Jobs by state.", "state", f.jobs)
        yield _labelled("coopgrid_epochs", "Epochs by state.", "state", f.epochs)
        sealer = app.sealer
        if sealer is None:
            return
        waiting, oldest = app.store.unsealed()
        yield _gauge("coopgrid_unsealed_results", "Accepted results waiting to be sealed in an epoch.", waiting)
        yield _gauge(
            "coopgrid_unsealed_oldest_age_seconds", "Age of the oldest result waiting to be sealed (0: none).",
            now - oldest if oldest is not None else 0.0,
        )
        if f.last_commit is not None:
            yield _gauge("coopgrid_last_commit_age_seconds", "Seconds since an epoch was last committed on chain.",
                         now - f.last_commit)
        errors = CounterMetricFamily(
            "coopgrid_chain_errors", "Sealing rounds that failed, by cause (unavailable: the chain did not "
            "answer; ledger: it refused or failed; other).", labels=["cause"],
        )
        for cause, n in sorted(sealer.failures.items()):
            errors.add_metric([cause], n)
        yield errors


def _gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, value=value)


def _labelled(name: str, doc: str, label: str, values: dict[str, Any]) -> GaugeMetricFamily:
    g = GaugeMetricFamily(name, doc, labels=[label])
    for key, n in sorted(values.items()):
        g.add_metric([key], n)
    return g
