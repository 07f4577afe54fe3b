"""How jobs, models and workers look in a terminal (Rich)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from coopgrid.client import ApiClient


def watch(
    client: ApiClient,
    job_id: str,
    console: Console,
    poll: float = 0.25,
    check: Callable[[], None] | None = None,
    idle_note_after: float = 5.0,
) -> dict[str, Any]:
    """Show a progress bar until the job is done or cancelled; returns the final job.

    ``check`` is called at every poll and may raise to stop watching (the demo
    uses it to notice that its workers died).
    """
    job = client.job(job_id)
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("tasks  {task.fields[items]} items/s"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console, transient=False) as progress:
        bar = progress.add_task(escape(job["name"] or job["id"][:12]), total=job["tasks"], items="0")
        start, start_done = time.monotonic(), job["tasks_done"]
        noted = False
        while True:
            resolved = job["tasks_done"] + job["tasks_failed"] + job.get("tasks_inconclusive", 0)
            rate = (job["tasks_done"] - start_done) * job["task_size"] / max(time.monotonic() - start, 1e-6)
            progress.update(bar, completed=resolved, items=f"{rate:,.0f}")
            if job["state"] != "running":
                break
            if not noted and time.monotonic() - start > idle_note_after and not _taken(job):
                noted = True  # once: a volunteer may connect any minute
                progress.console.print(
                    f"[yellow]no worker has taken work from this job yet[/]: is one running? Start one with "
                    f"`coopgrid worker --coordinator {escape(client.base_url)}` (it needs no token); "
                    f"`coopgrid workers` lists those registered",
                    highlight=False,
                )
            if check:
                check()
            time.sleep(poll)
            job = client.job(job_id)
    return job


def _taken(job: dict[str, Any]) -> bool:
    """Whether any replica of the job has left the queue (leased, answered, expired)."""
    replicas = job.get("replicas")
    if replicas is None:
        return True  # a view without counts: nothing to say
    return job["tasks_done"] > 0 or any(n for state, n in replicas.items() if state not in ("ready", "queued"))


def _ago(t: float | None, now: float | None = None) -> str:
    if not t:
        return "never"
    d = max((now or time.time()) - t, 0)
    return f"{d:.0f}s ago" if d < 120 else f"{d / 60:.0f} min ago" if d < 7200 else f"{d / 3600:.1f} h ago"


def _counts(d: dict[str, Any] | None) -> str:
    """``{"a": 1, "b": 2}`` as "1 a, 2 b" (never a raw Python dict in a table)."""
    return ", ".join(f"{n:,} {escape(str(k))}" for k, n in sorted((d or {}).items())) or "-"


def job_failed(job: dict[str, Any]) -> bool:
    """A finished job none of whose tasks was accepted (or some failed): its submitter must hear of it."""
    return job["state"] != "running" and (job["tasks_failed"] > 0 or job.get("tasks_inconclusive", 0) > 0)


def summary_table(job: dict[str, Any], failures: dict[str, Any] | None = None) -> Table:
    s = job.get("summary") or {}
    table = Table(title=f"job {job['id']} {job['state']}", show_header=False)
    table.add_column(style="bold")
    table.add_column()
    rows = [
        ("task type", job["task_type"]),
        ("items", f"{job['items']:,}"),
        (
            "tasks",
            f"{job['tasks_done']:,} accepted, {job.get('tasks_inconclusive', 0):,} inconclusive, "
            f"{job['tasks_failed']:,} failed of {job['tasks']:,}",
        ),
    ]
    if s:
        results = s.get("results", {})
        rows += [
            ("replicas executed", f"{s['replicas_executed']:,} ({s['replicas_expired']:,} expired and reissued)"),
            ("replicas per task", f"{s.get('replicas_per_task') or 0:.2f} (compute overhead; by kind: {_counts(s.get('replicas_by_kind'))})"),
            ("results", _counts(results)),
            ("workers", str(s["workers"])),
            ("elapsed", f"{s['elapsed_seconds']:.2f} s"),
            ("throughput", f"{s['items_per_second']:,.0f} items/s"),
        ]
        if "accuracy" in s:
            rows.append(("accuracy", f"{s['accuracy']:.2%} of {s['labelled_items']:,} labelled items"))
        for worker, n in sorted(s.get("tasks_per_worker", {}).items()):
            rows.append((f"  credited to {worker}", f"{n:,} results"))
    reasons = (failures or {}).get("reasons") or s.get("failure_reasons") or []
    for r in reasons[:5]:
        rows.append(("[red]failed because[/]", f"{escape(r['reason'])} ({r['replicas']:,} replicas)"))
    if job.get("seal_error"):
        rows.append(("[red]not sealed[/]", escape(str(job["seal_error"]))))
    disputed = job.get("disputed") or []
    if disputed:
        rows.append(("[red]disputed[/]", f"{len(disputed):,} sealed outputs a since-quarantined worker helped decide: "
                                         "distrust them (coopgrid status JOB --json lists all)"))
    for d in disputed[:10]:
        rows.append((f"  epoch {d['epoch']} task {d['task_index']}",
                     f"leaf output {d['output_hash'][:16]}... (worker {d['worker']}: {escape(d['reason'])})"))
    if job.get("output"):
        rows.append(("output", f"sha256 {job['output']} (coopgrid output {job['id']} FILE)"))
    for name, digest in sorted((s.get("blobs") or {}).items()):
        rows.append((f"artefact {escape(name)}", f"sha256 {digest} (coopgrid output {job['id']} FILE --artefact {escape(name)})"))
    for k, v in rows:
        table.add_row(k, v)
    return table


def escrow_table(escrow: dict[str, Any]) -> Table:
    """A paid job's money: budget, spent, unspent, refundable, and each worker's share paid and pending."""
    n = lambda v: f"{int(v):,}"  # noqa: E731
    table = Table(title=f"escrow (reward {n(escrow['reward_per_task'])} per accepted task; funder {escrow['funder']})")
    for col in ("", "tokens"):
        table.add_column(col)
    table.add_row("budget", n(escrow["budget"]))
    table.add_row("spent (committed on chain)", n(escrow["spent"]))
    for w in escrow["workers"]:
        table.add_row(f"  paid to {w['address'][:10]}… (pending {n(w['pending'])})", n(w["paid"]))
    table.add_row("pending (earned, waiting for an epoch's commit)", n(escrow["pending"]))
    state = "closed" if escrow["closed"] else "open"
    table.add_row(f"unspent ({state}); refundable now", f"{n(escrow['unspent'])}; {n(escrow['refundable'])}")
    table.caption = f"rule: {escrow['share_rule']}"
    return table


def jobs_table(jobs: list[dict[str, Any]]) -> Table:
    table = Table(title="jobs")
    table.add_column("id", no_wrap=True, min_width=64)  # whole: ids are pasted into other commands
    for col in ("name", "type", "state", "tasks done/failed/all", "items"):
        table.add_column(col)
    for j in jobs:
        state = f"[red]{j['state']}[/]" if job_failed(j) else j["state"]
        table.add_row(
            j["id"], escape(j["name"]), escape(j["task_type"]), state,
            f"{j['tasks_done']:,}/{j['tasks_failed'] + j.get('tasks_inconclusive', 0):,}/{j['tasks']:,}", f"{j['items']:,}",
        )
    return table


def models_table(models: list[dict[str, Any]]) -> Table:
    table = Table(title="models")
    for col in ("name", "version", "task type", "sha256", "size", "metrics"):
        table.add_column(col)
    for m in models:
        metrics = ", ".join(
            f"{k}={v:g}" if isinstance(v, int | float) else f"{k}={v}" for k, v in (m.get("metrics") or {}).items()
        )
        table.add_row(escape(m["name"]), str(m["version"]), escape(m["task_type"]), m["hash"], f"{m['size']:,}", escape(metrics))
    return table


def workers_table(workers: list[dict[str, Any]]) -> Table:
    table = Table(title="workers (reputation per task type)")
    # the address folds over lines on a narrow terminal rather than squeezing every other column to nothing
    table.add_column("worker", overflow="fold", min_width=14)
    for col in ("owner", "last seen", "task type", "credited", "run", "valid", "invalid", "gold ok/failed",
                "errors/timeouts", "suspicion", "state"):
        table.add_column(col)
    now = time.time()
    for w in workers:
        label = f"{escape(w['name'] or '-')}\n{w['address']}\n[dim]{escape(w.get('platform_class') or 'platform unreported')}[/]"
        state = f"[red]quarantined: {escape(str(w['quarantine_reason']))}[/]" if w.get("quarantined") else "[green]ok[/]"
        if w.get("trusted"):
            label += " [cyan](trusted)[/]"
        common = (escape(w["owner"] or "-"), _ago(w.get("last_seen"), now))
        score = w.get("suspicion")
        suspicion = "-" if score is None else (f"[red]{score:.2f}[/]" if score >= 0.5 else f"{score:.2f}")
        for r in w.get("reputation") or [None]:
            if r is None:
                table.add_row(label, *common, "-", f"{w['accepted']:,}", "", "", "", "", "", suspicion, state)
                continue
            table.add_row(
                label, *common, escape(r["task_type"]), f"{w['accepted']:,}", str(r["run"]), str(r["valid"]),
                str(r["invalid"]), f"{r['gold_passed']}/{r['gold_failed']}", f"{r['errors']}/{r['timeouts']}",
                suspicion, state,
            )
    return table
