"""Trust benchmark: dishonest workers against the real coordinator code, from one run.

    .venv/bin/python bench/trust.py                  # 100,000 tasks per scenario
    .venv/bin/python bench/trust.py --tasks 10000    # a quicker run
    .venv/bin/python bench/trust.py --help

A simulation *through the real coordinator*: each scenario builds its own
coordinator with :func:`coopgrid.app.build` (SQLite file in a temp dir, no
ledger), submits one ``echo`` job of N one-item tasks through
``Scheduler.submit``, registers many in-process workers (each a real
:class:`coopgrid.identity.Identity` with its own declared owner) and drives them:
every worker holds at most one lease; in each round the workers go in a random
order, submit the lease they hold and take a new one of 10-50 replicas
(``Scheduler.lease``), so all workers hold work at the same time, as on a real
grid. Outputs are computed as ``coopgrid worker`` computes them (the echo task's
``run``, passed through the worker's :mod:`coopgrid.worker.dishonest`
behaviour), signed with ``Identity.sign_batch`` exactly like
``coopgrid.worker.loop`` and submitted with ``Scheduler.submit_results``, which
checks the EIP-712 signature and runs validation (quorum, adaptive acceptance,
gold, audits, reputation, quarantine, finality). A worker that is refused
(quarantined) stops. When a job completes it is reduced, as the API does.

In every "our policy" scenario, ``--trusted`` (default 2) of the honest workers are
the operator's own: registered with ``trusted`` by the same store call that
``POST /v1/workers`` makes once it has checked the operator token (what
``coopgrid worker --trusted`` does), the deployment the README recommends.
``fixed-q2`` and the ``-q2`` variants (BOINC's plain replication) have none.

Scenarios (one run, each on its own coordinator):

* ``adaptive``: the default TrustPolicy, 20% dishonest workers spread evenly
  over random, constant, lazy, cheat:0.1 and cheat:0.3;
* ``fixed-q2``: plain fixed replication, TrustPolicy(replicas=2, quorum=2,
  adaptive=False, gold_rate=0) (BOINC's default), the same workers;
* ``collude-10``, ``collude-30``: one colluding group (``collude:team``) of 10%
  and 30% of the workers under the default policy. The colluders declare
  distinct owners (they lie), which is the case placement cannot stop.

* ``sybil-10``: 10% of the workers as Sybil pairs: two keys of one attacker that
  agree on the same wrong answers (``collude:pairN``), declaring distinct owners.
* ``sybil``: one attacker with many fresh keys (``--sybil-many`` of the workers,
  default 40%), each declaring a different owner, all answering the same wrong value.
* ``collude-45``: a colluding group of 45%: reported (wrong results final, and how
  many tasks its members did before they were caught), not a target.

Targets (printed beside each figure, and under ``targets`` in --json): 0 wrong
results final in ``adaptive``, ``collude-10``, ``collude-30`` and ``sybil``; 0
honest workers quarantined in ``adaptive``, ``collude-10`` and ``collude-30``;
``adaptive`` overhead <= 1.2x and every cheater (>= 10%) quarantined within 200
tasks. The share of tasks still provisional at the end is reported.

* ``mixed-hardware`` (bench/trust_hardware.py): honest workers on five platform classes
  whose outputs of real classify and embed models differ as bench/platform_variation.py
  measured; 0 honest workers quarantined. In --json under ``mixed-hardware``.

The attacker's cost: every job is paid (its escrow is taken as funded), and
after the run each quarantined worker is checked for a lie the coordinator can
prove to anyone (``Slasher.bundle``: its signed result outvoted by a quorum of
signed results, no tie, provably different); each such worker loses
``slash_fraction`` of its stake (the default stake: ``default_min_stake``).
The figure is the stake attackers lose per wrong result that became final,
in stakes; honest workers slashed (outvoted by colluders) are counted too.

Every figure is read afterwards with SQL straight from the scenario's SQLite
file (tasks, results, replicas, workers, reputation). The honest output of an
echo task is its input, so a result is wrong when ``results.output !=
tasks.input_data``. Scenarios run in parallel processes (``--parallel``,
default 2 on this 2-core machine).
"""

from __future__ import annotations

import argparse
import json
import logging
import multiprocessing
import os
import random
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
import traceback
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
from rich.console import Console
from rich.table import Table

from coopgrid import tasks
from coopgrid.app import build
from coopgrid.config import Settings
from coopgrid.coordinator.scheduler import JobSpec
from coopgrid.coordinator.slashing import Slasher
from coopgrid.coordinator.trust import TrustPolicy
from coopgrid.datasets import Dataset
from coopgrid.errors import CoopgridError, Forbidden, LeaseError
from coopgrid.identity import Identity
from coopgrid.protocol import (
    ZERO_HASH,
    LeaseRequest,
    ResultBatch,
    ResultRef,
    b64decode,
    b64encode,
    sha256_hex,
)
from coopgrid.worker.dishonest import Behaviour, parse

import trust_hardware  # bench/trust_hardware.py: the mixed-hardware scenario (this script's directory)

console = Console(width=None if sys.stdout.isatty() else 200)

INDEPENDENT = ("random", "constant", "lazy", "cheat:0.1", "cheat:0.3")
FIXED_Q2 = {"replicas": 2, "quorum": 2, "adaptive": False, "gold_rate": 0}
QUARANTINE_WITHIN = 200  # tasks: the issue's target for workers cheating on >= 10% of their tasks
OVERHEAD_TARGET = 1.2
BENCH_FUNDER = "0x" + "f0" * 20


# -- scenarios ----------------------------------------------------------------------------


@dataclass
class Scenario:
    name: str
    label: str
    policy: dict[str, Any]
    dishonest: list[str]  # one behaviour spec per dishonest worker
    jobs: int = 1  # the tasks split into this many jobs, submitted one after another
    trusted: int = 0  # honest workers the operator vouches for (registered as `coopgrid worker --trusted` is)


def scenarios(args: argparse.Namespace) -> list[Scenario]:
    n = args.workers
    k = round(n * args.dishonest)
    independent = [INDEPENDENT[i % len(INDEPENDENT)] for i in range(k)]
    ours = dict(args.policy)  # our policy: the defaults, with --policy overrides
    tag = "(defaults)" if not ours else "(" + ", ".join(f"{key}={v}" for key, v in ours.items()) + ")"
    out = [
        Scenario(
            "adaptive",
            f"our policy {tag}, {k / n:.0%} independent cheaters",
            ours,
            independent,
        ),
        Scenario(
            "fixed-q2",
            f"fixed replication q=2, {k / n:.0%} independent cheaters",
            FIXED_Q2,
            independent,
        ),
    ]
    if args.streamed > 1:
        out.append(
            Scenario(
                f"adaptive-{args.streamed}jobs",
                f"our policy {tag}, {k / n:.0%} independent cheaters, tasks as {args.streamed} jobs in sequence",
                ours,
                independent,
                jobs=args.streamed,
            )
        )
    if args.sybil:
        pairs = round(n * args.sybil / 2)
        out.append(
            Scenario(
                f"sybil-{round(args.sybil * 100)}",
                f"our policy {tag}, {2 * pairs / n:.0%} as Sybil pairs (two agreeing keys each)",
                ours,
                [f"collude:pair{i // 2}" for i in range(2 * pairs)],
            )
        )
    if args.sybil_many:
        k = round(n * args.sybil_many)
        out.append(
            Scenario(
                "sybil",
                f"our policy {tag}, {k / n:.0%} fresh Sybil keys of one attacker (distinct owners, one wrong value)",
                ours,
                ["collude:sybil"] * k,
            )
        )
    for share in args.collude:
        c = round(n * share)
        out.append(
            Scenario(
                f"collude-{round(share * 100)}",
                f"our policy {tag}, colluding group of {c / n:.0%}",
                ours,
                [args.collude_spec] * c,
            )
        )
        if args.collude_fixed:
            out.append(
                Scenario(
                    f"collude-{round(share * 100)}-q2",
                    f"fixed q=2, colluding group of {c / n:.0%}",
                    FIXED_Q2,
                    [args.collude_spec] * c,
                )
            )
    for sc in out:
        # the deployment the README recommends: the operator runs a few workers of its own; plain
        # fixed replication (BOINC's default) has no such notion and is left as it is
        if sc.policy is ours and args.trusted:
            sc.trusted = args.trusted
            sc.label += f", {args.trusted} of the honest workers the operator's own (--trusted)"
    wanted = set(args.only.split(",")) if args.only else None
    return [s for s in out if wanted is None or s.name in wanted]


# -- the simulated workers -----------------------------------------------------------------


@dataclass
class SimWorker:
    identity: Identity
    kind: str  # "honest" or the dishonest spec
    behaviour: Behaviour
    record: Any = None  # WorkerRecord
    trusted: bool = False
    held: dict[str, Any] | None = None  # the lease in hand
    stopped: str | None = None
    submitted: int = 0
    refused_batches: int = 0


_params_cache: dict[str, Any] = {}


def compute_batch(w: SimWorker, lease: dict[str, Any]) -> ResultBatch:
    """Run the leased replicas and sign them, as coopgrid.worker.loop.Worker._run_lease does."""
    items, refs = [], []
    jobs = lease["jobs"]
    for replica in lease["replicas"]:
        job = jobs[replica["job"]]
        task_type = tasks.get(job["task_type"])
        params = _params_cache.get(replica["job"])
        if params is None:
            params = _params_cache[replica["job"]] = task_type.validate_params(job["params"])
        data = b64decode(replica["input"])
        result = w.behaviour.output(
            replica["input_hash"],
            lambda t=task_type, d=data, p=params: t.run(d, None, p),
        )
        output = task_type.canonical(result)
        output_hash = sha256_hex(output)
        items.append(
            {
                "replica_id": replica["id"],
                "output_hash": output_hash,
                "output": b64encode(output),
            }
        )
        refs.append(
            ResultRef(
                replica["job"],
                replica["task_index"],
                replica["input_hash"],
                job["model_hash"] or ZERO_HASH,
                output_hash,
            )
        )
    signature = w.identity.sign_batch(lease["chain_id"], lease["lease_id"], refs)
    return ResultBatch.model_validate({"signature": signature, "results": items})


# -- one scenario ----------------------------------------------------------------------------


def run_scenario(sc: Scenario, args: argparse.Namespace, root: str) -> dict[str, Any]:
    logging.disable(logging.WARNING)  # the coordinator logs each quarantine; the figures say it all
    rng = random.Random(f"{args.seed}:{sc.name}")
    data_dir = Path(root) / sc.name
    settings = Settings(data_dir=data_dir, ledger="none", lease_seconds=args.lease_seconds)
    app = build(settings)
    # seeded decisions (adaptive acceptance, audits, gold draws), reproducible runs
    app.scheduler.rng = random.Random(f"{args.seed}:{sc.name}:scheduler")
    app.scheduler.validator.rng = random.Random(f"{args.seed}:{sc.name}:validator")
    t0 = time.perf_counter()
    cpu0 = time.process_time()
    try:
        token, _ = app.auth.issue("bench", "submitter")
        policy = TrustPolicy.model_validate(sc.policy)
        # the tasks as sc.jobs jobs (items numbered across jobs, so every task's input is distinct);
        # the next job is submitted once less than one round of leases is waiting
        bounds = [round(args.tasks * i / sc.jobs) for i in range(sc.jobs + 1)]
        pending = [(bounds[i], bounds[i + 1]) for i in range(sc.jobs) if bounds[i + 1] > bounds[i]]
        job_ids: list[str] = []
        t_submit = 0.0

        def submit_next() -> None:
            nonlocal t_submit
            a = time.perf_counter()
            lo, hi = pending.pop(0)
            data = Dataset(np.arange(lo, hi, dtype=np.int64).reshape(-1, 1)).to_npz()
            # a paid job (no chain here: its escrow is taken as funded) so that lies in it are slashable
            dataset = app.blobs.put(data)
            app.store.grant_blob(dataset, token.id)  # as the upload route does: the uploader may read it
            spec = JobSpec(task_type="echo", dataset=dataset, task_size=1, trust=policy,
                           reward_per_task=1, funder=BENCH_FUNDER, min_stake=0)
            job_ids.append(app.scheduler.submit(spec, token).id)
            app.store.activate_job(job_ids[-1], time.time())
            t_submit += time.perf_counter() - a

        submit_next()
        workers: list[SimWorker] = []
        kinds = ["honest"] * (args.workers - len(sc.dishonest)) + list(sc.dishonest)
        rng.shuffle(kinds)
        # the first sc.trusted honest workers are the operator's own
        vouched = set([i for i, k in enumerate(kinds) if k == "honest"][: sc.trusted])
        for i, kind in enumerate(kinds):
            ident = Identity(rng.randbytes(32))
            behaviour = Behaviour() if kind == "honest" else parse(kind, seed=rng.randrange(2**32))
            w = SimWorker(ident, kind, behaviour, trusted=i in vouched)
            # every worker declares its own owner; colluders lie about being unrelated. A vouched-for
            # worker is registered by the call POST /v1/workers makes once it has checked the operator
            # token (`coopgrid worker --trusted`)
            w.record = app.store.register_worker(ident.address, f"sim-{i}", f"owner-{i}", time.time(),
                                                 trusted=w.trusted)
            workers.append(w)

        t_sim = time.perf_counter()
        t_lease = t_compute = t_submit_results = 0.0
        rounds = leases = 0
        completed: set[str] = set()
        reduce_errors: list[str] = []
        cut = ""
        last_report = time.perf_counter()
        while True:
            rounds += 1
            progressed = False
            if pending and app.store.queue_depth(0)[0] < args.workers * args.lease_max:
                submit_next()
                progressed = True
            order = [w for w in workers if w.stopped is None]
            rng.shuffle(order)
            for w in order:
                if w.held is not None:
                    lease, w.held = w.held, None
                    a = time.perf_counter()
                    batch = compute_batch(w, lease)
                    b = time.perf_counter()
                    try:
                        outcome = app.scheduler.submit_results(w.record, lease["lease_id"], batch)
                        completed.update(outcome.completed_jobs)
                        w.submitted += len(batch.results)
                    except LeaseError:
                        # quarantined meanwhile: the coordinator took its replicas back
                        w.refused_batches += 1
                    c = time.perf_counter()
                    t_compute += b - a
                    t_submit_results += c - b
                    progressed = True
                a = time.perf_counter()
                try:
                    lease = app.scheduler.lease(
                        w.record,
                        LeaseRequest(max_replicas=rng.randint(args.lease_min, args.lease_max)),
                    )
                except Forbidden as exc:
                    w.stopped = exc.message
                    lease = None
                t_lease += time.perf_counter() - a
                if lease is not None:
                    w.held = lease
                    leases += 1
                    progressed = True
            for job_id in sorted(completed):  # as the API does when a batch completes a job
                reduce_errors += finalize(app, job_id)
            completed.clear()
            if time.perf_counter() - last_report > 30:
                last_report = time.perf_counter()
                done = sum(j.tasks_done for j in app.store.list_jobs())
                print(
                    f"  [{sc.name}] {time.perf_counter() - t0:5.0f}s  round {rounds}  "
                    f"tasks accepted {done:,}/{args.tasks:,}",
                    file=sys.stderr,
                    flush=True,
                )
            if not progressed:
                break
            if args.time_limit and time.perf_counter() - t0 > args.time_limit:
                cut = f"stopped after {rounds} rounds ({time.perf_counter() - t0:.0f}s, --time-limit)"
                break
        t_sim = time.perf_counter() - t_sim
        for job_id in job_ids:
            reduce_errors += finalize(app, job_id)
        wall = time.perf_counter() - t0
        cpu = time.process_time() - cpu0
        figures = measure(settings.sqlite_path, workers)
        slasher = Slasher(settings, app.store, app.blobs, None)  # bundle() reads the store only
        provable = {w.record.id for w in workers if slasher.bundle(w.record.id) is not None}
        for w in figures["workers"]:
            w["slashed"] = w["quarantined"] and w["id"] in provable
        figures["slash_fraction"] = settings.slash_fraction
        jobs = [app.store.get_job(j) for j in job_ids]
        figures.update(
            name=sc.name,
            label=sc.label,
            trusted=sc.trusted,
            policy=policy.model_dump(),
            jobs=len(job_ids),
            wall=wall,
            cpu=cpu,
            t_submit=t_submit,
            t_sim=t_sim,
            t_lease=t_lease,
            t_compute=t_compute,
            t_submit_results=t_submit_results,
            rounds=rounds,
            leases=leases,
            cut=cut,
            jobs_done=sum(j.state == "done" for j in jobs),
            reduce_errors=reduce_errors,
            echo_mismatches=sum((j.summary or {}).get("echo_mismatches", 0) for j in jobs),
        )
        return figures
    finally:
        app.close()


def finalize(app: Any, job_id: str) -> list[str]:
    """Reduce a completed job as the API does (there, in an executor whose errors only reach the log)."""
    try:
        app.summarizer.finalize(job_id)
        return []
    except Exception as exc:  # noqa: BLE001 - a reduce that raises is a figure here
        return [f"{type(exc).__name__}: {exc}"]


# -- figures, from the SQLite file -------------------------------------------------------


def measure(db: Path, workers: list[SimWorker]) -> dict[str, Any]:
    """Every figure of a scenario, from its own SQLite file (it holds that scenario's jobs only)."""
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    one = lambda q, *p: con.execute(q, p).fetchone()[0]
    f: dict[str, Any] = {}
    f["tasks"] = one("SELECT count(*) FROM tasks")
    states = dict(con.execute("SELECT state, count(*) FROM tasks GROUP BY state"))
    f["states"] = states
    f["accepted_tasks"] = states.get("done", 0) + states.get("provisional", 0)
    # still provisional: accepted, and not made final since (by an audit or its worker's checks); a
    # provisional task keeps its state once final, the result says which
    f["provisional"] = one("SELECT count(*) FROM results WHERE status = 'accepted' AND NOT final")
    f["inconclusive"] = states.get("inconclusive", 0)
    f["open"] = states.get("open", 0)
    f["failed"] = states.get("failed", 0)

    wrong = "r.output IS NOT t.input_data"
    base = "FROM results r JOIN tasks t ON t.id = r.task_id WHERE r.error IS NULL"
    # the canonical result of each task, at the end
    f["wrong_accepted"] = one(f"SELECT count(*) {base} AND r.status = 'accepted' AND {wrong}")
    # what the chain records: accepted and final
    f["wrong_final"] = one(f"SELECT count(*) {base} AND r.status = 'accepted' AND r.final AND {wrong}")
    f["wrong_provisional"] = one(f"SELECT count(*) {base} AND r.status = 'accepted' AND NOT r.final AND {wrong}")
    # results that agreed with a (wrong) accepted result: marked valid
    f["wrong_valid"] = one(f"SELECT count(*) {base} AND r.status = 'valid' AND {wrong}")
    # what would be rewarded: accepted or valid, and final
    f["wrong_paid"] = one(f"SELECT count(*) {base} AND r.status IN ('accepted', 'valid') AND r.final AND {wrong}")
    # accepted at some point without replication (checks_at is set only then), later revoked or disputed
    f["wrong_prov_revoked"] = one(
        f"SELECT count(*) {base} AND r.checks_at IS NOT NULL AND r.status != 'accepted' AND {wrong}"
    )
    f["prov_ever"] = one(f"SELECT count(*) {base} AND r.checks_at IS NOT NULL")
    f["wrong_submitted"] = one(f"SELECT count(*) {base} AND {wrong}")
    # honest results the system threw out (marked invalid, or failed a gold test)
    f["right_invalid"] = one(f"SELECT count(*) {base} AND r.status = 'invalid' AND NOT ({wrong})")
    # gold tests whose "known" answer (a task accepted earlier) is wrong, and honest results failed on them
    f["gold_poisoned"] = one(
        "SELECT count(*) FROM replicas p JOIN tasks t ON t.id = p.task_id "
        "JOIN results a ON a.task_id = t.id AND a.status = 'accepted' "
        "WHERE p.kind = 'gold' AND a.output IS NOT t.input_data"
    )
    f["gold_poisoned_failed"] = one(
        "SELECT count(*) FROM results r JOIN replicas p ON p.id = r.replica_id JOIN tasks t ON t.id = r.task_id "
        "WHERE p.kind = 'gold' AND r.status = 'invalid' AND r.output IS t.input_data"
    )

    # compute overhead: every replica executed (a result came back) per accepted task
    kinds = dict(
        con.execute(
            "SELECT p.kind, count(*) FROM results r JOIN replicas p ON p.id = r.replica_id "
            "WHERE r.error IS NULL GROUP BY p.kind"
        )
    )
    f["executed"] = sum(kinds.values())
    f["executed_by_kind"] = kinds
    f["overhead"] = f["executed"] / f["accepted_tasks"] if f["accepted_tasks"] else float("nan")
    f["results_by_status"] = dict(con.execute("SELECT status, count(*) FROM results GROUP BY status"))
    f["ready_left"] = one("SELECT count(*) FROM replicas WHERE state = 0")

    # per worker: tasks done before quarantine
    kind_of = {w.record.id: w.kind for w in workers}
    trusted = {w.record.id for w in workers if w.trusted}
    rows = con.execute(
        "SELECT w.id, w.quarantined_at, w.quarantine_reason, "
        " (SELECT count(*) FROM results r WHERE r.worker_id = w.id AND r.error IS NULL"
        "   AND r.received_at <= coalesce(w.quarantined_at, 1e300)), "
        " (SELECT count(*) FROM results r JOIN tasks t ON t.id = r.task_id WHERE r.worker_id = w.id "
        "   AND r.error IS NULL AND r.output IS NOT t.input_data), "
        " (SELECT count(*) FROM results r WHERE r.worker_id = w.id AND r.error IS NULL), "
        " (SELECT count(*) FROM results r JOIN tasks t ON t.id = r.task_id WHERE r.worker_id = w.id "
        "   AND r.status = 'accepted' AND r.final AND r.output IS NOT t.input_data), "
        " coalesce(p.run, 0), coalesce(p.gold_passed, 0), coalesce(p.gold_failed, 0), coalesce(p.invalid, 0) "
        "FROM workers w LEFT JOIN reputation p ON p.worker_id = w.id AND p.task_type = 'echo'"
    ).fetchall()
    per = []
    for (
        wid,
        q_at,
        reason,
        before,
        wrong_n,
        total,
        wrong_final,
        run,
        gp,
        gf,
        inv,
    ) in rows:
        per.append(
            {
                "id": wid,
                "kind": kind_of.get(wid, "?"),
                "trusted": wid in trusted,
                "quarantined": q_at is not None,
                "reason": reason,
                "before": before,
                "wrong": wrong_n,
                "total": total,
                "wrong_final": wrong_final,
                "run": run,
                "gold_passed": gp,
                "gold_failed": gf,
                "invalid": inv,
            }
        )
    f["workers"] = per
    con.close()
    return f


def cheat_rate(kind: str) -> float:
    if kind == "honest":
        return 0.0
    mode, _, rest = kind.partition(":")
    if mode == "cheat":
        return float(rest or 0.5)
    if mode == "collude":
        parts = rest.split(":")
        return float(parts[1]) if len(parts) > 1 else 1.0
    return 1.0  # random, constant, lazy: (nearly) every result wrong


#: scenario -> figure -> target (the issue's); other scenarios' figures are reported only
TARGETS: dict[str, dict[str, Any]] = {
    "adaptive": {"wrong_final": 0, "honest_quarantined": 0, "overhead_max": OVERHEAD_TARGET,
                 "quarantined_within": QUARANTINE_WITHIN},
    "collude-10": {"wrong_final": 0, "honest_quarantined": 0},
    "collude-30": {"wrong_final": 0, "honest_quarantined": 0},
    "sybil": {"wrong_final": 0},
}


def target_check(r: dict[str, Any]) -> dict[str, Any]:
    """Each target of the scenario beside its figure, and whether it is met."""
    want = TARGETS.get(r["name"], {})
    c = cheater_figures(r)
    got = {
        "wrong_final": r["wrong_final"],
        "honest_quarantined": len(c["honest_quarantined"]),
        "overhead_max": round(r["overhead"], 3),
        "quarantined_within": c["max"],
    }
    out = {}
    for k, v in want.items():
        ok = got[k] <= v if k in ("overhead_max",) else (c["all_ok"] is not False) if k == "quarantined_within" \
            else got[k] == v
        out[k] = {"target": v, "figure": got[k], "met": bool(ok)}
    return out


def cheater_figures(f: dict[str, Any]) -> dict[str, Any]:
    cheaters = [w for w in f["workers"] if w["kind"] != "honest"]
    heavy = [w for w in cheaters if cheat_rate(w["kind"]) >= 0.1]
    caught = [w["before"] for w in cheaters if w["quarantined"]]
    ok = [w["quarantined"] and w["before"] <= QUARANTINE_WITHIN for w in heavy]
    honest_q = [w for w in f["workers"] if w["kind"] == "honest" and w["quarantined"]]
    return {
        "n": len(cheaters),
        "caught": len(caught),
        "min": min(caught) if caught else None,
        "median": statistics.median(caught) if caught else None,
        "max": max(caught) if caught else None,
        "heavy": len(heavy),
        "heavy_ok": sum(ok),
        "all_ok": all(ok) if heavy else None,
        "uncaught": [w for w in cheaters if not w["quarantined"]],
        "honest_quarantined": honest_q,
    }


# -- output -----------------------------------------------------------------------------


def fmt_int(n: Any) -> str:
    return "–" if n is None else f"{n:,}" if isinstance(n, int) else f"{n:,.1f}" if isinstance(n, float) else str(n)


def mark(ok: bool | None) -> str:
    return "" if ok is None else " [green]✓[/]" if ok else " [red]✗[/]"


def print_tables(results: list[dict[str, Any]], args: argparse.Namespace) -> None:
    t = Table(
        title=f"Trust: {args.tasks:,} echo tasks × {args.workers} simulated workers per scenario "
        f"(leases of {args.lease_min}–{args.lease_max})",
        show_lines=False,
    )
    t.add_column("figure", style="bold")
    t.add_column("target")
    for r in results:
        t.add_column(f"{r['name']}\n{r['label']}", justify="right")

    cf = [cheater_figures(r) for r in results]

    def row(name: str, target: str, cells: list[str]) -> None:
        t.add_row(name, target, *cells)

    row(
        "tasks accepted (done + provisional)",
        "",
        [fmt_int(r["accepted_tasks"]) for r in results],
    )
    row(
        "wrong results accepted (canonical, at the end)",
        "",
        [fmt_int(r["wrong_accepted"]) for r in results],
    )
    row(
        "  … of them final: recorded on chain",
        "0 (adaptive, collude-10/30, sybil)",
        [
            fmt_int(r["wrong_final"]) + (mark(r["wrong_final"] == 0) if "wrong_final" in TARGETS.get(r["name"], {})
                                         else "")
            for r in results
        ],
    )
    row(
        "  … of them still provisional",
        "",
        [fmt_int(r["wrong_provisional"]) for r in results],
    )
    row(
        "wrong results marked valid (agreed with the accepted)",
        "",
        [fmt_int(r["wrong_valid"]) for r in results],
    )
    row(
        "wrong results rewarded (accepted/valid + final)",
        "",
        [fmt_int(r["wrong_paid"]) for r in results],
    )
    row(
        "wrong provisional acceptances later revoked",
        "",
        [fmt_int(r["wrong_prov_revoked"]) for r in results],
    )
    row(
        "wrong results submitted (all)",
        "",
        [fmt_int(r["wrong_submitted"]) for r in results],
    )
    row(
        "honest results marked invalid",
        "",
        [fmt_int(r["right_invalid"]) for r in results],
    )
    row(
        "gold tests on a wrong known answer / right results failed on them",
        "",
        [f"{r['gold_poisoned']:,} / {r['gold_poisoned_failed']:,}" for r in results],
    )
    row(
        "compute overhead (replicas executed / accepted task)",
        f"≤ {OVERHEAD_TARGET}× (q2: ≥ 2.0×)",
        [
            f"{r['overhead']:.3f}×"
            + (mark(r["overhead"] <= OVERHEAD_TARGET) if r["policy"]["adaptive"] else mark(r["overhead"] >= 2.0))
            for r in results
        ],
    )
    row(
        "  replicas executed: normal / audit / gold",
        "",
        [" / ".join(fmt_int(r["executed_by_kind"].get(k, 0)) for k in ("normal", "audit", "gold")) for r in results],
    )
    row(
        "accepted without replication (provisional, ever)",
        "",
        [fmt_int(r["prov_ever"]) for r in results],
    )
    row(
        "tasks still provisional at the end (share)",
        "reported; lower where safe",
        [f"{fmt_int(r['provisional'])} ({r['provisional'] / max(r['tasks'], 1):.1%})" for r in results],
    )
    row("inconclusive tasks", "", [fmt_int(r["inconclusive"]) for r in results])
    row(
        "tasks open / ready replicas left",
        "",
        [f"{r['open']:,} / {r['ready_left']:,}" for r in results],
    )
    row("cheaters quarantined", "", [f"{c['caught']}/{c['n']}" for c in cf])
    row(
        "tasks per cheater before quarantine min/med/max",
        "",
        [f"{fmt_int(c['min'])} / {fmt_int(c['median'])} / {fmt_int(c['max'])}" for c in cf],
    )
    row(
        f"cheaters (≥10%) quarantined within {QUARANTINE_WITHIN} tasks",
        "all",
        [f"{c['heavy_ok']}/{c['heavy']}" + mark(c["all_ok"]) for c in cf],
    )
    row(
        "honest workers quarantined",
        "0 (adaptive, collude-10/30)",
        [f"{len(c['honest_quarantined'])}"
         + (mark(not c["honest_quarantined"]) if "honest_quarantined" in TARGETS.get(r["name"], {}) else "")
         for c, r in zip(cf, results)],
    )
    row(
        "jobs reduced (output written) / echo mismatches in output",
        "",
        [
            f"{r['jobs_done']}/{r['jobs']} / {r['echo_mismatches']}"
            + (f" [red]reduce raised ×{len(r['reduce_errors'])}[/]" if r["reduce_errors"] else "")
            for r in results
        ],
    )
    row(
        "wall time (s): total / simulation / CPU",
        "",
        [f"{r['wall']:.0f} / {r['t_sim']:.0f} / {r['cpu']:.0f}" for r in results],
    )
    row(
        "  lease / compute+sign / submit_results (s)",
        "",
        [f"{r['t_lease']:.0f} / {r['t_compute']:.0f} / {r['t_submit_results']:.0f}" for r in results],
    )
    row(
        "rounds / leases",
        "",
        [f"{r['rounds']:,} / {r['leases']:,}" + (" [red](cut short)[/]" if r["cut"] else "") for r in results],
    )
    console.print(t)

    # per kind of cheater
    k = Table(title="Cheaters by kind: tasks done before quarantine (count of results submitted up to it)")
    k.add_column("scenario")
    k.add_column("kind")
    k.add_column("workers", justify="right")
    k.add_column("quarantined", justify="right")
    k.add_column("tasks before quarantine (each)", justify="left")
    k.add_column("wrong results submitted", justify="right")
    k.add_column("of them accepted + final", justify="right")
    k.add_column("reasons")
    for r in results:
        by_kind: dict[str, list[dict[str, Any]]] = {}
        for w in r["workers"]:
            if w["kind"] != "honest":
                by_kind.setdefault(w["kind"], []).append(w)
        honest_q = [w for w in r["workers"] if w["kind"] == "honest" and w["quarantined"]]
        if honest_q:
            by_kind["HONEST (quarantined)"] = honest_q
        for kind, ws in sorted(by_kind.items()):
            ws.sort(key=lambda w: w["before"])
            each = ", ".join(f"{w['before']}" + ("" if w["quarantined"] else f"(free, {w['total']})") for w in ws)
            reasons = sorted({(w["reason"] or "not quarantined").split(" (")[0] for w in ws})
            k.add_row(
                r["name"],
                kind,
                str(len(ws)),
                str(sum(w["quarantined"] for w in ws)),
                each,
                fmt_int(sum(w["wrong"] for w in ws)),
                fmt_int(sum(w["wrong_final"] for w in ws)),
                "; ".join(reasons),
            )
    console.print(k)
    print_cost(results)


def print_cost(results: list[dict[str, Any]]) -> None:
    """The attacker's cost: stake lost (provable lies slashed) per wrong result that became final."""
    c = Table(title="Attacker's cost: stake slashed per wrong final result (default stake; slash_fraction of it)")
    for col in ("scenario", "attackers", "quarantined", "slashed (provable lie)", "honest slashed",
                "wrong final results", "stake lost per wrong final result"):
        c.add_column(col, justify="right" if col != "scenario" else "left")
    for r in results:
        if "slash_fraction" not in r:
            continue
        bad = [w for w in r["workers"] if w["kind"] != "honest"]
        slashed = sum(w.get("slashed", False) for w in bad)
        honest = sum(w.get("slashed", False) for w in r["workers"] if w["kind"] == "honest")
        lost = slashed * r["slash_fraction"]
        per = "∞ (none final)" if not r["wrong_final"] else f"{lost / r['wrong_final']:.3f} stakes"
        c.add_row(r["name"], str(len(bad)), str(sum(w["quarantined"] for w in bad)), str(slashed), str(honest),
                  fmt_int(r["wrong_final"]), per)
    console.print(c)


# -- main -----------------------------------------------------------------------------------


def main() -> int:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--tasks",
        type=int,
        default=100_000,
        help="echo tasks (one item each) per scenario",
    )
    p.add_argument("--workers", type=int, default=100, help="simulated workers per scenario")
    p.add_argument(
        "--dishonest",
        type=float,
        default=0.2,
        help="share of independent cheaters in adaptive/fixed-q2",
    )
    p.add_argument(
        "--collude",
        type=lambda s: [float(x) for x in s.split(",") if x],
        default=[0.1, 0.3, 0.45],
        help="colluding group sizes (shares of the workers), comma-separated; empty for none",
    )
    p.add_argument(
        "--sybil",
        type=float,
        default=0.1,
        help="share of the workers run as Sybil pairs (0 for none)",
    )
    p.add_argument(
        "--sybil-many",
        type=float,
        default=0.4,
        help="share of the workers run as fresh keys of one attacker in the sybil scenario (0 for none)",
    )
    p.add_argument(
        "--collude-spec",
        default="collude:team",
        help="the colluders' behaviour (collude:GROUP[:S])",
    )
    p.add_argument(
        "--collude-fixed",
        action="store_true",
        help="also run each colluding group under fixed q=2",
    )
    p.add_argument(
        "--streamed",
        type=int,
        default=0,
        help="also run the adaptive scenario with the tasks split into this many jobs, each submitted "
        "once less than one round of leases waits (validation replicas then wait behind one job, "
        "not the whole queue)",
    )
    p.add_argument(
        "--policy",
        type=json.loads,
        default={},
        help='JSON overrides of the default TrustPolicy in the "our policy" scenarios, e.g. \'{"audit_scale": 1}\'',
    )
    p.add_argument(
        "--only",
        default="",
        help="comma-separated scenario names to run (default: all)",
    )
    p.add_argument(
        "--trusted",
        type=int,
        default=2,
        help="honest workers, of --workers, that the operator vouches for (`coopgrid worker --trusted`) in the "
        "our-policy scenarios (0: none, every worker a fresh key)",
    )
    p.add_argument("--lease-min", type=int, default=10)
    p.add_argument("--lease-max", type=int, default=50)
    p.add_argument(
        "--lease-seconds",
        type=float,
        default=3600.0,
        help="coordinator lease_seconds (long: this simulation models no timeouts)",
    )
    p.add_argument(
        "--parallel",
        type=int,
        default=min(2, os.cpu_count() or 1),
        help="scenarios run at once",
    )
    p.add_argument("--seed", type=int, default=1)
    p.add_argument(
        "--time-limit",
        type=float,
        default=0,
        help="stop a scenario's simulation after this many seconds (its figures are then partial, and say so)",
    )
    p.add_argument("--keep", action="store_true", help="keep the data dirs (SQLite files)")
    p.add_argument(
        "--json",
        type=Path,
        help="also write every figure (per worker too) to this JSON file",
    )
    p.add_argument("--show", type=Path, help="print the tables of an earlier run's --json file, run nothing")
    trust_hardware.add_arguments(p)
    args = p.parse_args()

    if args.show:
        saved = json.loads(args.show.read_text())
        print_tables(saved["scenarios"], argparse.Namespace(**saved["args"]))
        return 0
    todo = scenarios(args)
    hardware = not args.only or trust_hardware.NAME in args.only.split(",")
    root = tempfile.mkdtemp(prefix="coopgrid-trust-")
    console.print(
        f"[bold]bench/trust.py[/]: {len(todo)} scenarios × {args.tasks:,} tasks × {args.workers} workers, "
        f"{args.parallel} at a time; data in {root}"
    )
    t0 = time.perf_counter()
    results: dict[str, dict[str, Any]] = {}
    mixed: dict[str, Any] | None = None
    failed = False
    try:
        if args.parallel <= 1:
            for sc in todo:
                results[sc.name] = run_scenario(sc, args, root)
            mixed = trust_hardware.run(args, root) if hardware else None
        else:
            ctx = multiprocessing.get_context("spawn")
            with ProcessPoolExecutor(max_workers=args.parallel, mp_context=ctx) as pool:
                extra = pool.submit(trust_hardware.run, args, root) if hardware else None
                futures = {pool.submit(run_scenario, sc, args, root): sc for sc in todo}
                for fut in as_completed(futures):
                    sc = futures[fut]
                    try:
                        results[sc.name] = fut.result()
                        console.print(f"  {sc.name}: done in {results[sc.name]['wall']:.0f}s")
                    except Exception:  # noqa: BLE001 - report it, show the other scenarios
                        failed = True
                        console.print(f"[red]{sc.name} failed[/]\n{traceback.format_exc()}")
                if extra is not None:
                    try:
                        mixed = extra.result()
                    except Exception:  # noqa: BLE001 - report it, show the other scenarios
                        failed = True
                        console.print(f"[red]{trust_hardware.NAME} failed[/]\n{traceback.format_exc()}")
    finally:
        if args.keep or failed:
            console.print(f"data kept in {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
    ordered = [results[sc.name] for sc in todo if sc.name in results]
    for r in ordered:
        r["targets"] = target_check(r)
    if ordered:
        print_tables(ordered, args)
    if mixed is not None:
        trust_hardware.print_figures(console, mixed)
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "args": {k: v for k, v in vars(args).items() if k != "json"},
                    "scenarios": ordered,
                    **({trust_hardware.NAME: mixed} if mixed is not None else {}),
                },
                indent=1,
                default=str,
            )
        )
    console.print(
        f"total wall time {time.perf_counter() - t0:.0f}s on {os.cpu_count()} cores "
        f"({args.parallel} scenario(s) at a time)"
    )
    return 1 if failed else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except CoopgridError as exc:
        console.print(f"[red]{exc}[/]")
        sys.exit(1)
