"""Scale benchmark: a million one-item echo tasks through one coordinator, from one run.

    .venv/bin/python bench/scale.py                   # 1,000,000 tasks: about 5-6 minutes on 2 cores
    .venv/bin/python bench/scale.py --tasks 100000    # a quick run
    .venv/bin/python bench/scale.py --help

One coordinator with its defaults (SQLite store, embedded chain sealing epochs) but
``--retention-seconds 0``, and two worker processes, all started through the CLI by
:class:`coopgrid.local.LocalGrid`. After a warm-up it runs, in the same run and grid:

1. the baseline: ``--baseline-tasks`` (20,000) echo tasks, end-to-end tasks/s (from the start
   of the upload to the job's ``finished_at``, its output written); the median of
   ``--baseline-runs`` (3) such jobs in a row, each printed;
2. the big job: ``--tasks`` (1,000,000) echo tasks, the same figure, and submission time;
3. the coordinator's peak resident memory (VmHWM of its process) over the measured jobs,
   sealing and retention (reset after the warm-up, and between phases to print each phase's
   peak; its peak while starting is printed beside);
4. the database's bytes per task once the big job is sealed and retention has archived and
   purged its rows: the SQLite pages in use (page_count - freelist_count; freed pages are
   reused, the file does not shrink without VACUUM) divided by every task the grid ran; the
   file size is printed beside it.

Each figure is printed beside its target (issue 11). The other scale figures of issue 11
come from their own scripts (bench/scale_coordinators.py, bench/scale_latency.py); with
``--with-peers`` those present in this tree are run after this one and their output shown.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from coopgrid import datasets
from coopgrid.client import ApiClient
from coopgrid.local import LocalGrid

HERE = Path(__file__).resolve().parent
RATE_TARGET = 0.9  # the big job's rate over the 20k baseline's
RSS_TARGET = 400 * 2**20
DB_BYTES_TARGET = 300
NO_REPLICATION = {"replicas": 1, "quorum": 1, "adaptive": False, "gold_rate": 0}
PEERS = ("scale_coordinators.py", "scale_latency.py")

console = Console(width=None if sys.stdout.isatty() else 130)


def status_bytes(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    return 0


def reset_peak(pid: int) -> bool:
    """Reset a process's VmHWM to its current RSS (Linux 4.0+), so the peak of what follows is read."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def db_bytes(path: Path) -> tuple[int, int]:
    """(bytes in pages in use, bytes on disk with the WAL) of a SQLite database, read-only."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        size, count, free = (conn.execute(f"PRAGMA {p}").fetchone()[0] for p in ("page_size", "page_count", "freelist_count"))
    finally:
        conn.close()
    wal = path.with_name(path.name + "-wal")
    return (count - free) * size, path.stat().st_size + (wal.stat().st_size if wal.exists() else 0)


def pg_bytes(url: str) -> tuple[int, int]:
    """(bytes of the database after VACUUM FULL, before it) of a PostgreSQL database: PostgreSQL keeps the
    pages of purged rows until a vacuum gives them back, which an operator's autovacuum would do."""
    import psycopg

    conninfo = url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(conninfo, autocommit=True) as conn:
        before = conn.execute("SELECT pg_database_size(current_database())").fetchone()[0]
        conn.execute("VACUUM FULL")
        after = conn.execute("SELECT pg_database_size(current_database())").fetchone()[0]
    return after, before


def run_job(client: ApiClient, n: int, timeout: float, coordinator: Any) -> dict[str, Any]:
    npz = datasets.load(f"sequence:{n}").to_npz()
    wall0 = time.time()
    t0 = time.perf_counter()
    job = client.submit({"name": f"scale {n}", "task_type": "echo", "task_size": 1, "trust": NO_REPLICATION,
                         "dataset": client.put_blob(npz)})
    submit_s = time.perf_counter() - t0
    deadline = time.monotonic() + timeout
    while job["state"] == "running" or (job["state"] == "done" and not job["output"]):
        if time.monotonic() > deadline:
            raise RuntimeError(f"job of {n} tasks not done after {timeout:.0f}s: {job['tasks_done']} done")
        if coordinator.poll() is not None:
            raise RuntimeError(f"the coordinator exited with {coordinator.returncode}")
        time.sleep(0.5 if n > 50_000 else 0.1)
        # the job list, not GET /v1/jobs/{id}: that one counts the job's replicas by state, a
        # scan of a million rows each poll, which would load the coordinator this measures
        job = next(j for j in client.jobs() if j["id"] == job["id"])
    if job["state"] != "done" or job["tasks_done"] != n or job["summary"].get("echo_mismatches"):
        raise RuntimeError(f"job of {n} tasks ended {job['state']}: {job['tasks_done']} done, {job['summary']}")
    job["_submit_s"] = submit_s
    job["_done_s"] = job["finished_at"] - wall0
    return job


def peers(args: argparse.Namespace) -> list[tuple[str, str]]:
    out = []
    for name in PEERS:
        script = HERE / name
        if not script.exists():
            out.append((name, "not in this tree"))
        elif not args.with_peers:
            out.append((name, f"present: run it (or this with --with-peers): {sys.executable} bench/{name}"))
        else:
            run = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=3600)
            console.print(run.stdout)
            out.append((name, f"ran, exit {run.returncode} (its output above)"))
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--tasks", type=int, default=1_000_000, help="one-item echo tasks in the big job")
    p.add_argument("--baseline-tasks", type=int, default=20_000, help="tasks of the baseline job, same run")
    p.add_argument("--baseline-runs", type=int, default=3,
                   help="baseline jobs in a row, their median rate the baseline: one lasts ~3 s on 2 cores, and "
                        "whatever else the machine does in those seconds moves it by 20%% either way")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--batch", type=int, default=1000, help="worker --batch")
    p.add_argument("--ledger", default="default", help="coordinator --ledger ('default': its own default)")
    p.add_argument("--timeout", type=float, default=1800, help="give up on a job after this many seconds")
    p.add_argument("--with-peers", action="store_true", help="also run bench/scale_coordinators.py, scale_latency.py")
    p.add_argument("--keep", action="store_true", help="keep the temp data dir")
    p.add_argument("--database-url", help="the coordinator's --database-url (PostgreSQL); default its SQLite file")
    args = p.parse_args(argv)

    load0 = os.getloadavg()
    tmp = Path(tempfile.mkdtemp(prefix="coopgrid-scale-"))
    grid = LocalGrid(tmp / "grid")
    ok = False
    try:
        extra = ("--retention-seconds", "0", "--seal-every-seconds", "5")
        extra += ("--database-url", args.database_url) if args.database_url else ()
        grid.start_coordinator(*extra, *(() if args.ledger == "default" else ("--ledger", args.ledger)))
        coordinator = grid.coordinator
        assert coordinator is not None
        console.print(f"  coordinator pid {coordinator.pid}, data dir {tmp}", highlight=False)
        workers = [grid.start_worker(i, "--batch", str(args.batch), "--task-type", "echo") for i in range(args.workers)]
        with ApiClient(grid.url, grid.token, timeout=600) as client:
            with console.status("warming up…"):
                run_job(client, 3 * args.workers * args.batch, args.timeout, coordinator)
                time.sleep(1.5)
            startup_peak = status_bytes(coordinator.pid, "VmHWM")  # start, chain deployment, warm-up
            measured_from = "the measured jobs" if reset_peak(coordinator.pid) else "the whole run"
            base_rates = []
            for k in range(args.baseline_runs):
                with console.status(f"baseline {k + 1}/{args.baseline_runs}: {args.baseline_tasks:,} tasks…"):
                    base = run_job(client, args.baseline_tasks, args.timeout, coordinator)
                base_rates.append(args.baseline_tasks / base["_done_s"])
                console.print(f"  baseline {args.baseline_tasks:,}: {base_rates[-1]:,.0f} tasks/s")
                time.sleep(1.5)
            phases = {"baseline job": status_bytes(coordinator.pid, "VmHWM")}
            reset_peak(coordinator.pid)
            with console.status(f"big job: {args.tasks:,} tasks…"):
                big = run_job(client, args.tasks, args.timeout, coordinator)
            console.print(f"  big job {args.tasks:,}: {args.tasks / big['_done_s']:,.0f} tasks/s "
                          f"(submission {big['_submit_s']:.1f}s)")
            phases["big job"] = status_bytes(coordinator.pid, "VmHWM")
            reset_peak(coordinator.pid)
            with console.status("sealing, then retention…"):
                if args.ledger != "none":
                    client.seal()
                deadline = time.monotonic() + 300
                total_tasks = 0
                while True:
                    jobs = client.jobs()
                    total_tasks = sum(j["tasks"] for j in jobs)
                    if all(j["archive"] for j in jobs):
                        break
                    if time.monotonic() > deadline:
                        raise RuntimeError("retention did not archive every job within 300s")
                    time.sleep(1)
            phases["sealing and retention"] = status_bytes(coordinator.pid, "VmHWM")
            peak = max(phases.values())
            if args.database_url:
                used, on_disk = pg_bytes(args.database_url)
            else:
                used, on_disk = db_bytes(grid.data_dir / "coopgrid.sqlite")
        for w in workers:
            w.terminate()
        base_rate = statistics.median(base_rates)
        big_rate = args.tasks / big["_done_s"]
        per_task = used / max(total_tasks, 1)
        table = Table(title=f"coopgrid at scale: {args.tasks:,} one-item echo tasks, one coordinator, "
                            f"{args.workers} workers (one run)")
        for col in ("figure", "measured", "target", "met"):
            table.add_column(col)
        table.add_row(f"end to end, {args.baseline_tasks:,} tasks (baseline: the median of {len(base_rates)} jobs)",
                      f"{base_rate:,.0f} tasks/s (" + ", ".join(f"{r:,.0f}" for r in base_rates) + ")", "", "")
        table.add_row(f"end to end, {args.tasks:,} tasks", f"{big_rate:,.0f} tasks/s = {big_rate / base_rate:.2f}x baseline",
                      f">= {RATE_TARGET}x", "yes" if big_rate >= RATE_TARGET * base_rate else "NO")
        table.add_row(f"submission of {args.tasks:,} tasks (upload + POST)", f"{big['_submit_s']:.1f} s", "", "")
        table.add_row(f"coordinator peak RSS (VmHWM, {measured_from})", f"{peak / 2**20:,.0f} MB",
                      f"<= {RSS_TARGET // 2**20} MB", "yes" if peak <= RSS_TARGET else "NO")
        table.add_row("  by phase: " + ", ".join(f"{k} {v / 2**20:,.0f} MB" for k, v in phases.items()), "", "", "")
        table.add_row("  (its peak while starting and warming up)", f"{startup_peak / 2**20:,.0f} MB", "", "")
        where = (f"database {on_disk / 2**20:,.0f} MB before VACUUM FULL" if args.database_url
                 else f"file + WAL {on_disk / 2**20:,.0f} MB")
        table.add_row("database bytes per task after retention", f"{per_task:,.0f} B ({used / 2**20:,.1f} MB in use "
                      f"for {total_tasks:,} tasks; {where})", f"<= {DB_BYTES_TARGET} B",
                      "yes" if per_task <= DB_BYTES_TARGET else "NO")
        for name, what in peers(args):
            table.add_row(f"bench/{name}", what, "", "")
        console.print(table)
        load1 = os.getloadavg()
        console.print(f"load average (1 min) before {load0[0]:.2f}, after {load1[0]:.2f}; {os.cpu_count()} CPUs; "
                      f"data dir {tmp}{'' if args.keep else ' (removed)'}", highlight=False)
        ok = True
        return 0
    finally:
        with contextlib.suppress(Exception):
            grid.stop(timeout=20)
        if ok and not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
        elif not ok:
            console.print(f"[yellow]kept {tmp} (logs in {grid.log_dir})", highlight=False)


if __name__ == "__main__":
    sys.exit(main())
