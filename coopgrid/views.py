"""How jobs, models and workers look in a terminal (Rich)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from coopgrid.client import ApiClient


def watch(
    client: ApiClient,
    job_id: str,
    console: Console,
    poll: float = 0.25,
    check: Callable[[], None] | None = None,
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
        bar = progress.add_task(job["name"], total=job["tasks"], items="0")
        start, start_done = time.monotonic(), job["tasks_done"]
        while True:
            resolved = job["tasks_done"] + job["tasks_failed"]
            rate = (job["tasks_done"] - start_done) * job["task_size"] / max(time.monotonic() - start, 1e-6)
            progress.update(bar, completed=resolved, items=f"{rate:,.0f}")
            if job["state"] != "running":
                break
            if check:
                check()
            time.sleep(poll)
            job = client.job(job_id)
    return job


def summary_table(job: dict[str, Any]) -> Table:
    s = job.get("summary") or {}
    table = Table(title=f"job {job['id'][:12]}… {job['state']}", show_header=False)
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
            ("replicas per task", f"{s.get('replicas_per_task') or 0:.2f} (compute overhead; by kind {s.get('replicas_by_kind', {})})"),
            (
                "results",
                ", ".join(f"{n:,} {status}" for status, n in sorted(results.items())) or "-",
            ),
            ("workers", str(s["workers"])),
            ("elapsed", f"{s['elapsed_seconds']:.2f} s"),
            ("throughput", f"{s['items_per_second']:,.0f} items/s"),
        ]
        if "accuracy" in s:
            rows.append(("accuracy", f"{s['accuracy']:.2%} of {s['labelled_items']:,} labelled items"))
        for worker, n in sorted(s.get("tasks_per_worker", {}).items()):
            rows.append((f"  credited to {worker[:10]}…", f"{n:,} results"))
    if job.get("output"):
        rows.append(("output", f"sha256 {job['output']} (coopgrid output {job['id'][:12]}…)"))
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
    for col in ("id", "name", "type", "state", "tasks", "items"):
        table.add_column(col)
    for j in jobs:
        table.add_row(
            j["id"][:16], j["name"], j["task_type"], j["state"],
            f"{j['tasks_done']}/{j['tasks']}", f"{j['items']:,}",
        )
    return table


def models_table(models: list[dict[str, Any]]) -> Table:
    table = Table(title="models")
    for col in ("name", "version", "task type", "sha256", "size", "metrics"):
        table.add_column(col)
    for m in models:
        metrics = ", ".join(f"{k}={v:g}" for k, v in (m.get("metrics") or {}).items())
        table.add_row(m["name"], str(m["version"]), m["task_type"], m["hash"][:16] + "…", f"{m['size']:,}", metrics)
    return table


def workers_table(workers: list[dict[str, Any]]) -> Table:
    table = Table(title="workers (reputation per task type)")
    for col in ("worker", "credited", "run", "valid", "invalid", "gold ok/failed", "errors/timeouts", "state"):
        table.add_column(col)
    for w in workers:
        label = f"{w['name'] or '-'} {w['address'][:8]}…" + (f" ({w['owner']})" if w["owner"] else "")
        state = f"[red]quarantined: {w['quarantine_reason']}[/]" if w.get("quarantined") else "[green]ok[/]"
        for r in w.get("reputation") or [None]:
            if r is None:
                table.add_row(label, f"{w['accepted']:,}", "", "", "", "", "", state)
                continue
            table.add_row(
                f"{label} {r['task_type']}", f"{w['accepted']:,}", str(r["run"]), str(r["valid"]), str(r["invalid"]),
                f"{r['gold_passed']}/{r['gold_failed']}", f"{r['errors']}/{r['timeouts']}", state,
            )
    return table
