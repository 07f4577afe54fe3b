"""Scale-out benchmark: one echo job through 2 coordinator processes vs 1, on PostgreSQL, same run.

    .venv/bin/python bench/scale_coordinators.py                 # 100,000 tasks each way, ~2-3 minutes
    .venv/bin/python bench/scale_coordinators.py --tasks 200000  # the issue's size, if time allows

Both sides run the same job (``sequence:N``, ``task_size`` 1, one replica per task, a quorum of one) on a
fresh PostgreSQL database at 127.0.0.1:5432 (trust auth, as the tests use it) with ``--ledger none``,
through the same number of real ``coopgrid worker`` processes started through the CLI:

- baseline: 1 coordinator process, every worker on it;
- scaled: 2 coordinator processes on the same database (and the same data dir, i.e. the grid's blob
  store), half the workers on each (each worker also knows the other coordinator, to fail over).

The figure is tasks/s from the start of submission (dataset upload + ``POST /v1/jobs``) to the job's
``finished_at``; printed beside the target (scaled >= 1.5x baseline) with each side's coordinator CPU.

Beside it, where the CPU went during each job: the coordinators', the workers' and every PostgreSQL
server process's CPU seconds, and the machine's busy share (/proc/stat). Their sum per task gives this
machine's ceiling: its cores divided by the grid's CPU per task, the rate no number of coordinator
processes can pass here. Where that ceiling is below 1.5x the one-coordinator rate, the target
cannot be met on this machine whatever the coordinators do; it needs more cores (or machines).
Every process started is stopped on the way out and the databases are dropped.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path

import psycopg
from rich.console import Console
from rich.table import Table

from coopgrid.client import ApiClient
from coopgrid.datasets import sequence
from coopgrid.local import LocalGrid
from dispatch import CLK_TCK, cpu_seconds  # bench/dispatch.py (this script's directory)

TARGET = 1.5
NO_REPLICATION = {"replicas": 1, "quorum": 1, "adaptive": False, "gold_rate": 0}
console = Console(width=None if sys.stdout.isatty() else 130)



def admin() -> tuple[psycopg.Connection, str]:
    for user in ("root", "postgres"):
        try:
            return psycopg.connect(host="127.0.0.1", port=5432, user=user, dbname="postgres", autocommit=True), user
        except psycopg.OperationalError:
            continue
    sys.exit("no PostgreSQL server at 127.0.0.1:5432 lets root or postgres in (trust auth); start one")


def postgres_cpu() -> float:
    """CPU seconds so far of every PostgreSQL server process on this machine (the bench's backends among them)."""
    total = 0.0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        if text.split("(", 1)[1].split(")", 1)[0] == "postgres":
            total += cpu_seconds(int(stat.parent.name))
    return total


def machine_cpu() -> tuple[float, float]:
    """(busy, all) CPU seconds of the whole machine so far, from /proc/stat."""
    user, nice, system, idle, iowait, irq, softirq, steal = (
        int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]
    )
    busy = user + nice + system + irq + softirq + steal
    return busy / CLK_TCK, (busy + idle + iowait) / CLK_TCK


def run(label: str, coordinators: int, workers: int, tasks: int, root: Path) -> dict[str, float]:
    conn, user = admin()
    name = f"coopgrid_bench_{uuid.uuid4().hex[:10]}"
    conn.execute(f'CREATE DATABASE "{name}"')
    url = f"postgresql+psycopg://{user}@127.0.0.1:5432/{name}"
    data = root / label
    grids = [LocalGrid(data, log_dir=root / f"logs-{label}-{i}") for i in range(coordinators)]
    pool = LocalGrid(data, log_dir=root / f"logs-{label}-workers")
    try:
        for g in grids:
            g.start_coordinator("--database-url", url, "--ledger", "none")
        token = grids[0].token
        for i in range(workers):
            mine = grids[i % coordinators]
            pool.url = ",".join([mine.url] + [g.url for g in grids if g is not mine])
            pool.start_worker(i)
        with ApiClient(grids[0].url, token) as client:
            pool.wait_for_workers(client, workers)
            # a small warm-up job: workers registered, connections and caches warm
            warm = client.submit({"task_type": "echo", "dataset": client.put_blob(sequence(200).to_npz()),
                                  "task_size": 1, "trust": NO_REPLICATION})
            client.wait_for(warm["id"], lambda j: j["state"] == "done", timeout=120)
            blob = sequence(tasks).to_npz()
            cpu0 = [cpu_seconds(g.coordinator.pid) for g in grids]
            workers0 = sum(cpu_seconds(w.pid) for w in pool.workers)
            postgres0, machine0 = postgres_cpu(), machine_cpu()
            start = time.time()
            job = client.submit({"task_type": "echo", "dataset": client.put_blob(blob), "task_size": 1,
                                 "trust": NO_REPLICATION})
            done = client.wait_for(job["id"], lambda j: j["state"] == "done", timeout=1800, poll=0.5)
            cpu = [cpu_seconds(g.coordinator.pid) - c for g, c in zip(grids, cpu0)]
            worker_cpu = sum(cpu_seconds(w.pid) for w in pool.workers) - workers0
            pg_cpu = postgres_cpu() - postgres0
            busy, total = (b - a for a, b in zip(machine0, machine_cpu()))
        elapsed = done["finished_at"] - start
        assert done["tasks_done"] == tasks, done
        grid_cpu = sum(cpu) + worker_cpu + pg_cpu
        return {"rate": tasks / elapsed, "seconds": elapsed, "cpu": sum(cpu), "cpu_each": cpu, "workers": worker_cpu,
                "postgres": pg_cpu, "grid_cpu": grid_cpu, "busy": busy / total,
                # tasks/s if every core of this machine did nothing but this grid's work at this CPU per task
                "ceiling": tasks / grid_cpu * (os.cpu_count() or 1)}
    finally:
        pool.stop(timeout=20)
        for g in grids:
            g.stop(timeout=20)
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", type=int, default=100_000, help="tasks in the measured job (default 100,000)")
    parser.add_argument("--workers", type=int, default=4, help="worker processes on each side (default 4)")
    args = parser.parse_args()
    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="coopgrid-scale-") as tmp:
        root = Path(tmp)
        console.print(f"{args.tasks:,} echo tasks, {args.workers} workers, PostgreSQL; load average {load:.1f} "
                      f"on {os.cpu_count()} cores", highlight=False)
        one = run("one", 1, args.workers, args.tasks, root)
        console.print(f"  1 coordinator: {one['rate']:,.0f} tasks/s", highlight=False)
        two = run("two", 2, args.workers, args.tasks, root)
        console.print(f"  2 coordinators: {two['rate']:,.0f} tasks/s", highlight=False)
    table = Table(title="one grid, one PostgreSQL database: 2 coordinator processes vs 1 (same run)")
    for col in ("setup", "tasks/s", "seconds", "coordinator CPU s", "ratio", "target"):
        table.add_column(col, justify="right" if col != "setup" else "left")
    table.add_row(f"1 coordinator, {args.workers} workers", f"{one['rate']:,.0f}", f"{one['seconds']:.1f}",
                  f"{one['cpu']:.1f}", "1.00x", "baseline")
    table.add_row(f"2 coordinators, {args.workers // 2} workers each", f"{two['rate']:,.0f}", f"{two['seconds']:.1f}",
                  " + ".join(f"{c:.1f}" for c in two["cpu_each"]), f"{two['rate'] / one['rate']:.2f}x",
                  f">= {TARGET:.1f}x")
    console.print(table)
    budget = Table(title="where the CPU went (the machine's ceiling: its cores / the grid's CPU per task)")
    for col in ("setup", "coordinators s", "workers s", "PostgreSQL s", "grid CPU per task", "machine busy",
                "ceiling tasks/s", "ceiling / 1 coordinator"):
        budget.add_column(col, justify="right" if col != "setup" else "left")
    for label, r in (("1 coordinator", one), ("2 coordinators", two)):
        budget.add_row(label, f"{r['cpu']:.1f}", f"{r['workers']:.1f}", f"{r['postgres']:.1f}",
                       f"{r['grid_cpu'] / args.tasks * 1e3:.3f} ms", f"{r['busy']:.0%}", f"{r['ceiling']:,.0f}",
                       f"{r['ceiling'] / one['rate']:.2f}x")
    console.print(budget)
    console.print(
        f"No number of coordinators can run this job faster than the ceiling on {os.cpu_count()} cores: "
        f"{one['ceiling'] / one['rate']:.2f}x the one-coordinator rate at its CPU per task, "
        f"{two['ceiling'] / one['rate']:.2f}x at the two-coordinator CPU per task (target {TARGET:.1f}x).",
        highlight=False,
    )
    console.print(f"load average after: {os.getloadavg()[0]:.1f}", highlight=False)


if __name__ == "__main__":
    main()
