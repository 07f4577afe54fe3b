"""Dispatch benchmark: coopgrid end to end on this machine, next to its peers, from one run.

    .venv/bin/python bench/dispatch.py            # everything, about 1.5-2 minutes
    .venv/bin/python bench/dispatch.py --help     # flags

What it measures (see bench/README.md for the details):

1. ``echo``: N trivial tasks (dataset ``sequence:N``, task_size 1) through a real
   coordinator (SQLite store in a temp dir, signatures checked) and two real
   worker processes, started through the CLI by :class:`coopgrid.local.LocalGrid`,
   registered and warm before the job is submitted. Tasks/s from the start of
   submission (upload + POST /v1/jobs) to the job's state being ``done``; once
   per coordinator ``--ledger`` mode given (default: the coordinator's default,
   which seals epochs on an embedded chain, and ``none``).
2. ``classify``: ``digits:N`` images, the model trained by ``train_digits`` and
   published to the coordinator; images/s from submission to the finished
   output, next to a plain single-process ONNX Runtime loop over the same
   images with the same model bytes and batch size.
3. Peers: Celery with Redis (broker and result backend) running the same
   number of trivial tasks with two prefork worker processes, measured in the
   same run when ``celery`` is importable; and the issue's reference figures,
   labelled as measured elsewhere.

4. The default trust policy (replicas 2, quorum 2, gold, adaptive) against quorum 1 on
   one coordinator with four warm workers, ten default jobs in a row, on SQLite and
   PostgreSQL, with the coordinator's statements and rows written per task
   (``--policy-only`` runs just this part).

Every process the bench starts is stopped on the way out, also on error or
Ctrl-C (SIGINT) and SIGTERM.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import getpass
import importlib.util
import itertools
import json
import os
import platform
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from rich.console import Console
from rich.table import Table

import coopgrid
from coopgrid import datasets
from coopgrid.client import ApiClient
from coopgrid.errors import CoopgridError
from coopgrid.local import LocalGrid
from coopgrid.protocol import sha256_hex

HERE = Path(__file__).resolve().parent
PEERS = HERE / "peers"
CLK_TCK = os.sysconf("SC_CLK_TCK")

ECHO_TARGET = 3_000  # tasks/s, issue 2
CLASSIFY_TARGET = 20_000  # images/s, issue 2
ELSEWHERE = [  # issue 2's reference figures for trivial tasks on this kind of 2-core machine
    ("Ray", "~650", "trivial tasks, 2-core machine"),
    ("Celery + Redis", "170–480", "trivial tasks, 2-core machine"),
    ("Dask", "300–400", "trivial tasks, 2-core machine"),
    ("BOINC server", "~100", "published server figure"),
]

console = Console(width=None if sys.stdout.isatty() else 130)


# -- small helpers --------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of one process so far (0 if it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def fmt_rate(x: float | None) -> str:
    return "—" if x is None else f"{x:,.0f}"


def rng(run: GridRun) -> str:
    """'this run', with the range of the repeats when there were several."""
    if len(run.rates) > 1:
        return f"this run (median of {len(run.rates)}: {min(run.rates):,.0f}–{max(run.rates):,.0f})"
    return "this run"


def ledger_text(mode: str) -> str:
    return "default ledger" if mode == "default" else f"--ledger {mode}"


def fmt_s(x: float | None) -> str:
    return "—" if x is None else f"{x:.2f}"


def stop_group(proc: subprocess.Popen[bytes], timeout: float = 15.0) -> None:
    """SIGTERM a process we started in its own session (and its children), SIGKILL if it lingers."""
    if proc.poll() is not None:  # gone; make sure no child of it outlives it
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def stop_procs(procs: list[subprocess.Popen[bytes]], timeout: float = 20.0) -> None:
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    for p in procs:
        try:
            p.wait(timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


# The dispatch figures measure the grid itself: one replica per task, accepted at
# once (as the peers run each task once). Replication multiplies work by design;
# bench/trust.py measures that overhead.
NO_REPLICATION = {"replicas": 1, "quorum": 1, "adaptive": False, "gold_rate": 0}

class Profiler:
    """py-spy record on the coordinator during one measured job (``--profile DIR``)."""

    def __init__(self, directory: Path | None) -> None:
        self.directory = directory
        self.exe = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
        if directory is not None and not Path(self.exe).exists():
            console.print("[yellow]--profile: py-spy is not installed (pip install py-spy); not profiling")
            self.directory = None

    @contextlib.contextmanager
    def record(self, pid: int, name: str) -> Iterator[None]:
        if self.directory is None:
            yield
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        out = self.directory / f"{name}.txt"
        procs = [
            subprocess.Popen(
                [self.exe, "record", "--pid", str(pid), "--rate", "250", "--nonblocking", "--format", "raw",
                 "--output", str(out)],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
            )
        ]
        time.sleep(0.5)  # let py-spy attach
        try:
            yield
        finally:
            for p in procs:
                if p.poll() is None:
                    p.send_signal(signal.SIGINT)  # py-spy writes its output on SIGINT
            for p in procs:
                try:
                    p.wait(20)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
            console.print(f"    py-spy: {out} (collapsed stacks)", highlight=False)


# -- the grid --------------------------------------------------------------------------


@dataclass
class GridRun:
    """One measured job through the grid."""

    label: str
    ledger: str
    items: int
    tasks: int
    upload_s: float
    post_s: float
    first_result_s: float | None  # after POST returned (polled)
    all_tasks_s: float | None  # after POST returned (polled)
    done_s: float  # after the start of submission, from the job's finished_at
    coordinator_cpu: float  # CPU seconds during the job
    worker_cpu: float
    summary: dict[str, Any] = field(default_factory=dict)
    rates: list[float] = field(default_factory=list)  # every repeat's rate (--repeat)

    @property
    def submit_s(self) -> float:
        return self.upload_s + self.post_s

    @property
    def rate(self) -> float:
        return self.items / self.done_s

    @property
    def rate_after_submit(self) -> float:
        return self.items / max(self.done_s - self.submit_s, 1e-9)


class Bench:
    def __init__(self, args: argparse.Namespace, stack: contextlib.ExitStack) -> None:
        self.args = args
        self.stack = stack
        self.grid: LocalGrid | None = None
        self.client: ApiClient | None = None
        self.profiler = Profiler(args.profile)
        self.ledger = "default"

    # processes ------------------------------------------------------------------------

    def start_grid(
        self, data_dir: Path, ledger: str, extra: list[str] | None = None, env: dict[str, str] | None = None
    ) -> None:
        """A coordinator in its own data dir; ``ledger`` is its --ledger, or 'default' for none given
        (``extra``, when given, are its options instead)."""
        self.stop_grid()
        self.ledger = ledger
        self.grid = LocalGrid(data_dir)
        self.stack.callback(self.stop_grid)
        if extra is None:
            extra = [] if ledger == "default" else ["--ledger", ledger]
        self.grid.start_coordinator(*extra, env=env)
        self.client = ApiClient(self.grid.url, self.grid.token, timeout=300)

    def stop_grid(self) -> None:
        """Stop the coordinator and every worker (idempotent)."""
        if self.client is not None:
            self.client.close()
            self.client = None
        if self.grid is None:
            return
        grid, self.grid = self.grid, None
        codes = grid.stop()
        bad = {k: v for k, v in codes.items() if v not in (0, None)}
        if bad:
            console.print(f"[yellow]grid processes exited with {bad}; logs in {grid.log_dir}", highlight=False)

    def start_workers(self, n: int, *extra: str) -> list[subprocess.Popen[bytes]]:
        """Start n workers and wait until each has registered (after now)."""
        assert self.grid and self.client
        since = time.time() - 1  # last_seen has the coordinator's clock, same host
        procs = []
        for i in range(n):  # the same keystores every phase: one identity per worker slot
            procs.append(self.grid.start_worker(i, *extra))
        deadline = time.monotonic() + 60
        while True:
            fresh = [w for w in self.client.workers() if w["last_seen"] >= since and w["name"].startswith("local-")]
            if len(fresh) >= n:
                return procs
            if any(p.poll() is not None for p in procs):
                raise RuntimeError(f"a worker exited while starting; see {self.grid.log_dir}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"workers did not register in 60s; see {self.grid.log_dir}")
            time.sleep(0.1)

    # jobs -----------------------------------------------------------------------------

    def run_job(
        self,
        label: str,
        spec: dict[str, Any],
        npz: bytes,
        items: int,
        workers: list[subprocess.Popen[bytes]],
        profile_as: str | None = None,
    ) -> GridRun:
        assert self.grid and self.grid.coordinator and self.client
        client, coord = self.client, self.grid.coordinator
        ctx = self.profiler.record(coord.pid, profile_as) if profile_as else contextlib.nullcontext()
        with ctx:
            cpu0 = cpu_seconds(coord.pid), sum(cpu_seconds(p.pid) for p in workers)
            wall0 = time.time()
            t0 = time.perf_counter()
            digest = client.put_blob(npz)
            t1 = time.perf_counter()
            job = client.submit({**spec, "dataset": digest})
            t2 = time.perf_counter()
            first = all_tasks = None
            deadline = t2 + self.args.timeout
            while True:
                job = client.job(job["id"])
                now = time.perf_counter()
                if first is None and job["tasks_done"] > 0:
                    first = now - t2
                if all_tasks is None and job["tasks_done"] + job["tasks_failed"] >= job["tasks"]:
                    all_tasks = now - t2
                if job["state"] != "running" and (job["state"] != "done" or job["output"]):
                    break
                if now > deadline:
                    raise RuntimeError(f"{label}: job not done after {self.args.timeout:.0f}s: {job}")
                if coord.poll() is not None:
                    raise RuntimeError(f"the coordinator exited with {coord.returncode}; see {self.grid.log_dir}")
                if all(p.poll() is not None for p in workers):
                    raise RuntimeError(f"every worker exited; see {self.grid.log_dir}")
                time.sleep(self.args.poll)
            cpu1 = cpu_seconds(coord.pid), sum(cpu_seconds(p.pid) for p in workers)
        if job["state"] != "done" or job["tasks_failed"]:
            raise RuntimeError(f"{label}: job ended {job['state']} with {job['tasks_failed']} failed tasks")
        return GridRun(
            label=label,
            ledger=self.ledger,
            items=items,
            tasks=job["tasks"],
            upload_s=t1 - t0,
            post_s=t2 - t1,
            first_result_s=first,
            all_tasks_s=all_tasks,
            done_s=job["finished_at"] - wall0,
            coordinator_cpu=cpu1[0] - cpu0[0],
            worker_cpu=cpu1[1] - cpu0[1],
            summary=job.get("summary") or {},
        )

    def measure(self, label: str, spec: dict[str, Any], npz: bytes, items: int,
                workers: list[subprocess.Popen[bytes]], profile_as: str) -> GridRun:
        """``--repeat`` measured jobs, the workers idle for ``--settle`` s before each; the median one."""
        runs = []
        for i in range(self.args.repeat):
            if i:
                time.sleep(self.args.settle)
            suffix = f"-{i + 1}" if self.args.repeat > 1 else ""
            runs.append(self.run_job(label, spec, npz, items, workers, profile_as=profile_as + suffix))
        runs.sort(key=lambda r: r.rate)
        median = runs[len(runs) // 2]
        median.rates = [r.rate for r in runs]
        return median

    def warm_up(self, spec: dict[str, Any], npz: bytes, items: int, workers: list[subprocess.Popen[bytes]]) -> None:
        """Small jobs until every worker has done some work (imports, connections, model loaded)."""
        for _ in range(4):
            run = self.run_job("warm-up", spec, npz, items, workers)
            if len(run.summary.get("tasks_per_worker", {})) >= len(workers):
                break
        else:
            console.print("[yellow]    warm-up: not every worker got work; measuring anyway")
        time.sleep(self.args.settle)  # idle, as a grid waiting for work is

    # phases ---------------------------------------------------------------------------

    def echo(self, n: int, batches: list[int]) -> list[tuple[int, GridRun]]:
        ds = datasets.load(f"sequence:{n}")
        npz = ds.to_npz()
        warm_n = max(3 * self.args.workers * max(batches), 200)
        warm = datasets.load(f"sequence:{warm_n}").to_npz()
        spec = {"name": "bench echo", "task_type": "echo", "task_size": 1, "trust": NO_REPLICATION}
        runs = []
        for batch in batches:
            with console.status(f"echo: starting {self.args.workers} workers (--batch {batch})…"):
                workers = self.start_workers(self.args.workers, "--batch", str(batch), "--task-type", "echo")
            try:
                with console.status("echo: warming up…"):
                    self.warm_up(spec, warm, warm_n, workers)
                with console.status(f"echo: {n:,} tasks, ledger {self.ledger}, batch {batch}…"):
                    run = self.measure(
                        f"echo batch {batch}", spec, npz, n, workers, f"coordinator-echo-{self.ledger}-b{batch}"
                    )
            finally:
                stop_procs(workers)
            mismatches = run.summary.get("echo_mismatches")
            console.print(
                f"  echo, ledger {self.ledger}, batch {batch}: {run.rate:,.0f} tasks/s end to end ({run.done_s:.2f}s, submission "
                f"{run.submit_s:.2f}s), {mismatches} mismatched outputs"
            )
            if mismatches:
                raise RuntimeError(f"echo returned {mismatches} wrong outputs")
            runs.append((batch, run))
        return runs

    def classify(self, onnx: bytes, spec_model: dict[str, Any], x_npz: bytes, n: int) -> GridRun:
        assert self.client
        published = self.client.publish_model(onnx, spec_model)
        spec = {
            "name": "bench classify", "task_type": "classify", "model": published["hash"],
            "task_size": self.args.task_size, "trust": NO_REPLICATION,
        }
        with console.status(f"classify: starting {self.args.workers} workers (--batch {self.args.classify_batch})…"):
            workers = self.start_workers(
                self.args.workers, "--batch", str(self.args.classify_batch), "--task-type", "classify"
            )
        try:
            warm_n = max(4 * self.args.workers * self.args.classify_batch, 8) * 250
            warm_spec = {**spec, "task_size": 250}
            with console.status("classify: warming up (model fetched and loaded by each worker)…"):
                self.warm_up(warm_spec, datasets.digits(warm_n).to_npz(), warm_n, workers)
            with console.status(f"classify: {n:,} images, task size {self.args.task_size:,}…"):
                run = self.measure("classify", spec, x_npz, n, workers, f"coordinator-classify-{self.ledger}")
        finally:
            stop_procs(workers)
        console.print(
            f"  classify: {run.rate:,.0f} images/s end to end ({run.done_s:.2f}s, submission {run.submit_s:.2f}s), "
            f"accuracy {run.summary.get('accuracy')}"
        )
        return run


# -- peers -----------------------------------------------------------------------------


@dataclass
class OrtRun:
    label: str
    seconds: float
    items: int

    @property
    def rate(self) -> float:
        return self.items / self.seconds


def ort_loop(onnx: bytes, x: np.ndarray, batch: int, repeats: int = 3) -> list[OrtRun]:
    """A plain single-process ONNX Runtime loop over the images: best of ``repeats`` passes."""
    import onnxruntime as ort

    runs = []
    for label, threads in (("default session options", None), ("single-thread session", 1)):
        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = threads
            opts.inter_op_num_threads = threads
        sess = ort.InferenceSession(onnx, sess_options=opts, providers=["CPUExecutionProvider"])
        name = sess.get_inputs()[0].name
        sess.run(None, {name: x[:batch]})
        best = float("inf")
        for _ in range(repeats):
            t0 = time.perf_counter()
            for start in range(0, len(x), batch):
                sess.run(None, {name: x[start : start + batch]})
            best = min(best, time.perf_counter() - t0)
        runs.append(OrtRun(label, best, len(x)))
    return runs


@dataclass
class CeleryRun:
    version: str
    n: int
    send_s: float
    total_s: float

    @property
    def rate(self) -> float:
        return self.n / self.total_s


def celery_peer(n: int, log_dir: Path, stack: contextlib.ExitStack, redis_url: str) -> CeleryRun | str:
    """Celery 5 + Redis, prefork with concurrency 2: n trivial tasks, first send to all results in."""
    if importlib.util.find_spec("celery") is None or importlib.util.find_spec("redis") is None:
        return "skipped: celery/redis not importable (pip install celery redis)"
    import redis

    try:
        redis.Redis.from_url(redis_url, socket_connect_timeout=2).ping()
    except redis.RedisError as exc:
        return f"skipped: no Redis at {redis_url} ({type(exc).__name__})"
    os.environ["BENCH_CELERY_REDIS"] = redis_url
    sys.path.insert(0, str(PEERS))
    import celery
    import celery_echo
    from celery.result import ResultSet

    log = open(log_dir / "celery-worker.log", "wb")  # noqa: SIM115 (closed by the stack)
    stack.callback(log.close)
    proc = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "celery_echo", "worker", "--concurrency", "2", "--pool", "prefork",
         "-Q", celery_echo.QUEUE, "--without-gossip", "--without-mingle", "--without-heartbeat",
         "--loglevel", "WARNING", "-n", f"coopgrid-bench-{os.getpid()}@%h"],
        cwd=PEERS, stdout=log, stderr=log, stdin=subprocess.DEVNULL, start_new_session=True,
        env={**os.environ, "PYTHONPATH": str(PEERS)},
    )
    stack.callback(stop_group, proc)
    results: list[Any] = []
    try:
        celery_echo.app.control.purge()  # our own queue only: leftovers of an interrupted run
        celery_echo.echo.delay(0).get(timeout=60)  # the worker is up
        ResultSet([celery_echo.echo.delay(i) for i in range(500)]).join_native(timeout=60)
        t0 = time.perf_counter()
        results = [celery_echo.echo.delay(i) for i in range(n)]
        t1 = time.perf_counter()
        values = ResultSet(results).join_native(timeout=600)
        t2 = time.perf_counter()
    finally:
        # drop the AsyncResults while Redis can still be reached: their __del__ unsubscribes
        results.clear()
        gc.collect()
        stop_group(proc)
    if sum(values) != n * (n - 1) // 2:
        raise RuntimeError("celery returned wrong results")
    return CeleryRun(celery.__version__, n, t1 - t0, t2 - t0)


# -- the default trust policy against quorum 1 (issue 13) ------------------------------

POLICY_RATIO_TARGET = 0.9  # default policy ≥ 0.9× quorum 1, warm workers, same run
POLICY_KEEP_TARGET = 0.95  # the 10th job in a row ≥ 0.95× the 2nd


@dataclass
class PolicyJob:
    """One echo job of the policy rows, with the coordinator's database work during it."""

    policy: str  # "quorum 1" or "default"
    rate: float
    coordinator_cpu: float
    statements: int
    rows_written: int
    tasks: int
    replicas: int

    @property
    def statements_per_task(self) -> float:
        return self.statements / self.tasks

    @property
    def rows_per_task(self) -> float:
        return self.rows_written / self.tasks


@dataclass
class PolicySeries:
    database: str  # "SQLite" or "PostgreSQL"
    quorum_one: list[PolicyJob]
    default: list[PolicyJob]

    @property
    def quorum_one_rate(self) -> float:
        return float(np.median([j.rate for j in self.quorum_one]))

    @property
    def default_rate(self) -> float:
        """Warm: every default job but the first (whose workers were still earning trust)."""
        return float(np.median([j.rate for j in self.default[1:] or self.default]))


def db_totals(path: Path) -> tuple[int, int]:
    """(statements, rows written) the coordinator has counted so far (COOPGRID_DB_STATS)."""
    if not path.exists():
        return 0, 0
    entries = json.loads(path.read_text())
    return sum(e["count"] for e in entries), sum(e["rows"] for e in entries)


@contextlib.contextmanager
def fresh_postgres(url: str | None) -> Iterator[str]:
    """``url`` itself, or a fresh database on 127.0.0.1:5432 created for this run and dropped after it."""
    if url:
        yield url
        return
    import psycopg

    name = f"coopgrid_bench_{os.getpid()}_{int(time.time())}"
    user = os.environ.get("PGUSER") or getpass.getuser()
    admin = {"host": "127.0.0.1", "port": 5432, "user": user, "dbname": "postgres", "autocommit": True}
    with psycopg.connect(**admin) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql+psycopg://{user}@127.0.0.1:5432/{name}"
    finally:
        with psycopg.connect(**admin) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def policy_series(bench: Bench, data_dir: Path, database: str, url: str | None) -> PolicySeries:
    """Quorum-1 and default-policy echo jobs on one coordinator, warm workers, as the issue ran them.

    Quorum-1 jobs come before and after the ten default jobs, so both policies see the same
    machine load and the same grid history on average."""
    args = bench.args
    stats = data_dir / "dbstats.json"
    extra = ([] if args.policy_ledger == "default" else ["--ledger", args.policy_ledger])
    extra += ["--database-url", url] if url else []
    bench.start_grid(data_dir, "policy", extra=extra, env={"COOPGRID_DB_STATS": str(stats)})
    n, batch = args.policy_tasks, args.echo_batches[-1]
    npz = datasets.load(f"sequence:{n}").to_npz()
    warm_n = max(3 * args.policy_workers * batch, 200)
    warm = datasets.load(f"sequence:{warm_n}").to_npz()
    quorum_one = {"name": "bench policy q1", "task_type": "echo", "task_size": 1, "trust": NO_REPLICATION}
    default = {"name": "bench policy default", "task_type": "echo", "task_size": 1}  # the coordinator's defaults
    series = PolicySeries(database, [], [])
    order = itertools.count(1)  # jobs in the order they ran (--policy-stats)

    def job(policy: str, spec: dict[str, Any]) -> PolicyJob:
        time.sleep(args.settle)  # idle between jobs; also lets the stats file catch up (written once a second)
        s0 = db_totals(stats)
        run = bench.run_job(f"policy {policy}", spec, npz, n, workers,
                            profile_as=f"policy-{database}-{policy.replace(' ', '').replace('#', '')}")
        time.sleep(1.2)
        s1 = db_totals(stats)
        if args.policy_stats is not None:  # the statements' totals so far, to compare jobs statement by statement
            args.policy_stats.mkdir(parents=True, exist_ok=True)
            shutil.copy(stats, args.policy_stats / f"{database}-{next(order):02d}-"
                        f"{policy.replace(' ', '').replace('#', '')}.json")
        if run.summary.get("echo_mismatches"):
            raise RuntimeError(f"echo returned {run.summary['echo_mismatches']} wrong outputs ({policy})")
        pj = PolicyJob(policy, run.rate, run.coordinator_cpu, s1[0] - s0[0], s1[1] - s0[1], run.tasks,
                       int(run.summary.get("replicas_executed") or run.tasks))
        console.print(
            f"  {database}, {policy}: {pj.rate:,.0f} tasks/s, coordinator CPU {pj.coordinator_cpu:.2f}s, "
            f"{pj.statements_per_task:.3f} statements and {pj.rows_per_task:.2f} rows written per task",
            highlight=False,
        )
        return pj

    with console.status(f"policy rows ({database}): starting {args.policy_workers} workers (--batch {batch})…"):
        workers = bench.start_workers(args.policy_workers, "--batch", str(batch), "--task-type", "echo")
    try:
        with console.status(f"policy rows ({database}): warming up…"):
            bench.warm_up(quorum_one, warm, warm_n, workers)
        with console.status(f"policy rows ({database}): {n:,}-task echo jobs…"):
            series.quorum_one += [job("quorum 1", quorum_one) for _ in range(2)]
            series.default += [job(f"default #{i + 1}", default) for i in range(args.policy_jobs)]
            series.quorum_one.append(job("quorum 1", quorum_one))
    finally:
        stop_procs(workers)
        bench.stop_grid()
    return series


def policy_report(args: argparse.Namespace, all_series: list[PolicySeries]) -> None:
    t = Table(
        title=f"Default trust policy vs quorum 1: {args.policy_tasks:,}-task echo jobs, {args.policy_workers} warm "
        f"workers (--batch {args.echo_batches[-1]}), --ledger {args.policy_ledger}",
        title_justify="left",
    )
    for col in ("database", "figure", "measured", "target", "verdict", "source"):
        t.add_column(col, justify="right" if col in ("measured", "target") else "left")
    for sr in all_series:
        ratio = sr.default_rate / sr.quorum_one_rate
        t.add_row(
            sr.database, "quorum 1 (replicas 1, no adaptive, no gold)", f"{sr.quorum_one_rate:,.0f} tasks/s", "", "",
            f"this run, median of {len(sr.quorum_one)}: " + ", ".join(f"{j.rate:,.0f}" for j in sr.quorum_one),
        )
        t.add_row(
            sr.database, "default policy, warm (jobs 2..)", f"{sr.default_rate:,.0f} tasks/s", "", "",
            f"this run, median of {max(len(sr.default) - 1, 1)}",
        )
        t.add_row(
            sr.database, "[bold]default / quorum 1", f"[bold]{ratio:.2f}×", f"≥{POLICY_RATIO_TARGET}×",
            "[green]met" if ratio >= POLICY_RATIO_TARGET else "[red]missed", "same run",
        )
        if len(sr.default) >= 2:
            last, second = sr.default[-1], sr.default[1]
            keep = last.rate / second.rate
            t.add_row(
                sr.database, f"[bold]job {len(sr.default)} / job 2 in a row", f"[bold]{keep:.2f}×",
                f"≥{POLICY_KEEP_TARGET}×", "[green]met" if keep >= POLICY_KEEP_TARGET else "[red]missed",
                "default jobs: " + ", ".join(f"{j.rate:,.0f}" for j in sr.default),
            )
    console.print(t)

    t = Table(title="Per-task database work of the coordinator (issue 11): per accepted task, "
              "counted by SQLAlchemy cursor events (COOPGRID_DB_STATS)", title_justify="left")
    for col in ("database", "policy", "statements", "rows written", "replicas", "coordinator CPU ms", "jobs"):
        t.add_column(col, justify="left" if col in ("database", "policy") else "right")
    for sr in all_series:
        for label, jobs in (("quorum 1", sr.quorum_one), ("default, warm", sr.default[1:] or sr.default)):
            tasks = sum(j.tasks for j in jobs)
            t.add_row(
                sr.database, label, f"{sum(j.statements for j in jobs) / tasks:.3f}",
                f"{sum(j.rows_written for j in jobs) / tasks:.2f}", f"{sum(j.replicas for j in jobs) / tasks:.3f}",
                f"{1000 * sum(j.coordinator_cpu for j in jobs) / tasks:.3f}", str(len(jobs)),
            )
    console.print(t)
    console.print(
        "[dim]statements: every statement the coordinator ran during the jobs (reads included; executemany counts "
        "once); rows written: INSERT/UPDATE/DELETE row counts; both divided by the jobs' tasks.",
        highlight=False,
    )


# -- the report ------------------------------------------------------------------------


def load_line(before: tuple[float, float, float], after: tuple[float, float, float]) -> str:
    busy = before[0] > 0.5
    note = "  [yellow]the machine was busy before the bench started: figures are lower than on an idle machine" if busy else ""
    return f"load average (1 min) {before[0]:.2f} at start, {after[0]:.2f} at end{note}"


def machine_line() -> str:
    cpu = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return (
        f"{os.cpu_count()} cores ({cpu}), Python {platform.python_version()}, coopgrid {coopgrid.__version__}, "
        f"SQLite {sqlite3.sqlite_version}"
    )


def report(
    args: argparse.Namespace,
    echo_runs: list[tuple[int, GridRun]],
    celery: CeleryRun | str | None,
    classify: GridRun | None,
    ort_runs: list[OrtRun],
) -> None:
    console.rule("[bold]coopgrid dispatch benchmark")
    console.print(machine_line(), highlight=False)
    console.print(load_line(args.load_before, os.getloadavg()), highlight=False)
    if args.repeat > 1:
        console.print(f"each coopgrid figure is the median of {args.repeat} jobs (range in the source column)")

    if echo_runs:
        t = Table(title=f"Trivial tasks: {args.echo_tasks:,} echo tasks, {args.workers} worker processes", title_justify="left")
        t.add_column("system")
        t.add_column("setup")
        t.add_column("tasks/s", justify="right")
        t.add_column("wall s", justify="right")
        t.add_column("source")
        best: dict[str, GridRun] = {}
        for _, run in echo_runs:
            if run.ledger not in best or run.rate > best[run.ledger].rate:
                best[run.ledger] = run
        for batch, run in echo_runs:
            several = sum(r.ledger == run.ledger for _, r in echo_runs) > 1
            mark = " ★" if several and best[run.ledger] is run else ""
            t.add_row(
                f"[bold]coopgrid[/] submit→done{mark}",
                f"SQLite, EIP-712, {ledger_text(run.ledger)}, --batch {batch}",
                f"[bold]{fmt_rate(run.rate)}",
                fmt_s(run.done_s),
                rng(run),
            )
            t.add_row(
                "  coopgrid, after submission", "POST /v1/jobs returned → done",
                fmt_rate(run.rate_after_submit), fmt_s(run.done_s - run.submit_s), "this run",
            )
        if isinstance(celery, CeleryRun):
            t.add_row(
                f"[bold]Celery {celery.version}[/] + Redis", "prefork ×2, Redis broker + result backend",
                f"[bold]{fmt_rate(celery.rate)}", fmt_s(celery.total_s),
                f"this run ({celery.n:,} tasks, sending {celery.send_s:.1f}s)",
            )
        elif celery:
            t.add_row("Celery + Redis", "", "—", "", f"this run: {celery}")
        for name, rate, setup in ELSEWHERE:
            t.add_row(name, setup, rate, "", "[dim]published/measured elsewhere")
        verdicts = ", ".join(
            f"{'[green]met' if r.rate >= ECHO_TARGET else '[red]missed'}[/] with {ledger_text(m)}" for m, r in best.items()
        )
        t.add_row("[bold]target", "issue 2, end to end", f"≥{ECHO_TARGET:,}", "", verdicts)
        console.print(t)

    if classify or ort_runs:
        t = Table(
            title=f"Classify: digits:{args.digits:,} images, batch/task size {args.task_size:,}", title_justify="left"
        )
        t.add_column("system")
        t.add_column("setup")
        t.add_column("images/s", justify="right")
        t.add_column("wall s", justify="right")
        t.add_column("source")
        if classify:
            acc = classify.summary.get("accuracy")
            t.add_row(
                "[bold]coopgrid[/] submit→output", f"{args.workers} workers, --batch {args.classify_batch}, {ledger_text(classify.ledger)}",
                f"[bold]{fmt_rate(classify.rate)}", fmt_s(classify.done_s),
                f"{rng(classify)}; {classify.tasks} tasks, accuracy {acc}",
            )
            t.add_row(
                "  coopgrid, after submission", "POST /v1/jobs returned → output",
                fmt_rate(classify.rate_after_submit), fmt_s(classify.done_s - classify.submit_s), "this run",
            )
        for r in ort_runs:
            t.add_row(
                "ONNX Runtime loop", f"1 process, {r.label}", f"[bold]{fmt_rate(r.rate)}", fmt_s(r.seconds),
                "this run (best of 3)",
            )
        if classify:
            met = "[green]met" if classify.rate >= CLASSIFY_TARGET else "[red]missed"
            t.add_row("[bold]target", "issue 2, end to end", f"≥{CLASSIFY_TARGET:,}", "", met)
        console.print(t)

    grid_runs = [(f"echo, {r.ledger}, b{b}", r) for b, r in echo_runs]
    grid_runs += [(f"classify, {classify.ledger}", classify)] if classify else []
    if grid_runs:
        t = Table(title="Where the coopgrid time goes (seconds from the start of submission)", title_justify="left")
        for col in ("job", "upload", "POST", "1st result", "tasks done", "output", "coordinator CPU",
                    "workers CPU", "tasks per worker"):
            t.add_column(col, justify="right" if col != "job" else "left")
        for label, r in grid_runs:
            sub = r.submit_s
            t.add_row(
                label, fmt_s(r.upload_s), fmt_s(r.post_s),
                fmt_s(None if r.first_result_s is None else sub + r.first_result_s),
                fmt_s(None if r.all_tasks_s is None else sub + r.all_tasks_s),
                fmt_s(r.done_s),
                f"{r.coordinator_cpu:.2f}s ({r.coordinator_cpu / r.done_s:.0%})",
                f"{r.worker_cpu:.2f}s ({r.worker_cpu / r.done_s / args.workers:.0%} ea.)",
                " / ".join(f"{n:,}" for n in sorted(r.summary.get("tasks_per_worker", {}).values(), reverse=True)),
            )
        console.print(t)
        console.print(
            f"[dim]upload = PUT /v1/blobs of the dataset; POST = POST /v1/jobs (split + store); 1st result and "
            f"tasks done are polled every {args.poll}s; output = the job's finished_at (state done, output "
            "written). Job rows: ledger mode, worker --batch. CPU % is of one core over the job's wall time.",
            highlight=False,
        )
    if args.profile:
        console.print(f"[dim]profiled with py-spy (figures include its sampling overhead): {args.profile}")


# -- main ------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--echo-tasks", type=int, default=20_000, help="echo tasks (dataset sequence:N, task_size 1)")
    p.add_argument("--echo-batch", default="1000",
                   help="worker --batch for echo; a comma list (e.g. 256,500,1000) runs each and stars the best")
    p.add_argument("--digits", type=int, default=100_000, help="images in the classify job (dataset digits:N)")
    p.add_argument("--task-size", type=int, default=2_000, help="classify task size, also the ORT loop's batch")
    p.add_argument("--classify-batch", type=int, default=2, help="worker --batch (tasks per lease) for classify")
    p.add_argument("--workers", type=int, default=2, help="worker processes")
    p.add_argument("--ledger", default="default,none",
                   help="coordinator --ledger per echo figure, comma-separated: 'default' (the coordinator's own "
                        "default: an embedded chain that seals epochs), embedded, rpc or none; classify uses the first")
    p.add_argument("--celery-tasks", type=int, default=20_000, help="trivial tasks for the Celery peer")
    p.add_argument("--redis", default="redis://127.0.0.1:6379/15", help="Redis for the Celery peer")
    p.add_argument("--no-echo", action="store_true", help="skip the echo figure")
    p.add_argument("--no-classify", action="store_true", help="skip the classify figure and its ORT peer")
    p.add_argument("--no-celery", action="store_true", help="skip the Celery peer")
    p.add_argument("--repeat", type=int, default=1, help="measured coopgrid jobs per figure; the median is shown")
    p.add_argument("--settle", type=float, default=1.5, help="seconds the warm workers sit idle before a job")
    p.add_argument("--poll", type=float, default=0.1, help="seconds between GET /v1/jobs/{id} polls")
    p.add_argument("--timeout", type=float, default=300, help="give up on a job after this many seconds")
    p.add_argument("--profile", type=Path, default=None, metavar="DIR",
                   help="py-spy record the coordinator during each measured job into DIR")
    p.add_argument("--keep", action="store_true", help="keep the coordinator's temp data dir (logs, SQLite)")
    p.add_argument("--policy-only", action="store_true",
                   help="run only the default-policy rows (default policy vs quorum 1, jobs in a row, database work)")
    p.add_argument("--no-policy", action="store_true", help="skip the default-policy rows")
    p.add_argument("--policy-db", default="sqlite,postgresql",
                   help="databases for the policy rows, comma-separated: sqlite, postgresql")
    p.add_argument("--database-url", default=None,
                   help="PostgreSQL for the policy rows (default: a fresh database on 127.0.0.1:5432, dropped after)")
    p.add_argument("--policy-tasks", type=int, default=20_000, help="echo tasks per policy job")
    p.add_argument("--policy-jobs", type=int, default=10, help="default-policy jobs in a row on one coordinator")
    p.add_argument("--policy-stats", type=Path, default=None, metavar="DIR",
                   help="after each policy job, copy the coordinator's per-statement totals so far (count, rows, "
                   "seconds; COOPGRID_DB_STATS) to DIR, numbered in job order")
    p.add_argument("--policy-workers", type=int, default=4, help="worker processes for the policy rows")
    p.add_argument("--policy-ledger", default="none",
                   help="coordinator --ledger for the policy rows (sealing costs both policies the same)")
    args = p.parse_args(argv)
    try:
        args.echo_batches = [int(b) for b in args.echo_batch.split(",") if b.strip()]
    except ValueError:
        p.error("--echo-batch takes numbers separated by commas")
    if not args.echo_batches or min(args.echo_batches) < 1:
        p.error("--echo-batch needs at least one positive number")
    args.ledgers = [m.strip() for m in args.ledger.split(",") if m.strip()]
    if not args.ledgers or any(m not in ("default", "embedded", "rpc", "none") for m in args.ledgers):
        p.error("--ledger takes default, embedded, rpc or none, separated by commas")
    if args.repeat < 1:
        p.error("--repeat needs at least 1")
    args.policy_dbs = [d.strip() for d in args.policy_db.split(",") if d.strip()]
    if any(d not in ("sqlite", "postgresql") for d in args.policy_dbs):
        p.error("--policy-db takes sqlite and/or postgresql, separated by commas")
    if args.policy_only and args.no_policy:
        p.error("--policy-only and --no-policy exclude each other")
    if args.policy_jobs < 2 or args.policy_tasks < 1 or args.policy_workers < 1:
        p.error("--policy-jobs needs at least 2 (the 10th/2nd figure), --policy-tasks and --policy-workers at least 1")
    if args.policy_only:
        args.no_echo = args.no_classify = args.no_celery = True
    if args.policy_ledger not in ("default", "embedded", "rpc", "none"):
        p.error("--policy-ledger takes default, embedded, rpc or none")
    return args


def _sigterm(signum: int, _frame: Any) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _sigterm)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # also when started with SIGINT ignored
    data_dir = Path(tempfile.mkdtemp(prefix="coopgrid-bench-"))
    ok = False
    echo_runs: list[tuple[int, GridRun]] = []  # (worker --batch, run) per ledger mode and batch
    classify_run: GridRun | None = None
    ort_runs: list[OrtRun] = []
    celery: CeleryRun | str | None = None
    policy: list[PolicySeries] = []
    started = time.perf_counter()
    args.load_before = os.getloadavg()
    try:
        with contextlib.ExitStack() as stack:
            console.print(f"[bold]coopgrid dispatch benchmark[/] — data dir {data_dir}", highlight=False)
            onnx = model_spec = x_npz = None
            if not args.no_classify:
                from coopgrid.registry.train import train_digits

                with console.status("training the digits model centrally (train_digits)…"):
                    model = train_digits()
                onnx, model_spec = model.onnx, model.spec(sha256_hex(model.onnx))
                ds = datasets.load(f"digits:{args.digits}")
                x_npz = ds.to_npz()
                with console.status("ONNX Runtime loop over the same images…"):
                    ort_runs = ort_loop(onnx, ds.x.astype(np.float32), args.task_size)
                for r in ort_runs:
                    console.print(f"  ONNX Runtime loop, {r.label}: {r.rate:,.0f} images/s")

            bench = Bench(args, stack)
            for i, ledger in enumerate(args.ledgers):
                if (args.no_echo and i) or (args.no_echo and args.no_classify):
                    break
                with console.status(f"starting a coordinator (ledger {ledger})…"):
                    bench.start_grid(data_dir / f"grid-{ledger}", ledger)
                assert bench.grid and bench.grid.coordinator
                console.print(
                    f"  coordinator (ledger {ledger}) pid {bench.grid.coordinator.pid} on {bench.grid.url}",
                    highlight=False,
                )
                if not args.no_echo:
                    echo_runs += bench.echo(args.echo_tasks, args.echo_batches)
                if not args.no_classify and i == 0:
                    classify_run = bench.classify(onnx, model_spec, x_npz, args.digits)
                bench.stop_grid()  # every grid process is down before the next grid or the peer runs

            if not args.no_policy:
                for db in args.policy_dbs:
                    if db == "sqlite":
                        policy.append(policy_series(bench, data_dir / "policy-sqlite", "SQLite", None))
                    else:
                        with fresh_postgres(args.database_url) as url:
                            policy.append(policy_series(bench, data_dir / "policy-postgresql", "PostgreSQL", url))

            if not args.no_celery and not args.no_echo:
                with console.status(f"Celery + Redis: {args.celery_tasks:,} tasks…"):
                    celery = celery_peer(args.celery_tasks, data_dir, stack, args.redis)
                if isinstance(celery, CeleryRun):
                    console.print(f"  Celery + Redis: {celery.rate:,.0f} tasks/s ({celery.total_s:.2f}s)")
                else:
                    console.print(f"  Celery + Redis: {celery}")
        ok = True
    except KeyboardInterrupt:
        console.print("[yellow]interrupted; every process the bench started has been stopped")
        console.print(f"logs and data kept in {data_dir}", highlight=False)
        return 130
    except (RuntimeError, httpx.HTTPError, CoopgridError) as exc:
        console.print(f"[red]benchmark failed: {exc}")
        console.print(f"logs and data kept in {data_dir}", highlight=False)
        return 1
    finally:
        if ok and not args.keep:
            shutil.rmtree(data_dir, ignore_errors=True)
    report(args, echo_runs, celery, classify_run, ort_runs)
    if policy:
        policy_report(args, policy)
    console.print(f"[dim]whole run {time.perf_counter() - started:.0f}s" + (f"; data kept in {data_dir}" if args.keep else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
