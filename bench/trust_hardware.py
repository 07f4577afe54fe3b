"""bench/trust.py's ``mixed-hardware`` scenario: honest workers on several platforms, none punished.

Run by bench/trust.py (``--only mixed-hardware`` for this one alone). Like its other
scenarios it drives the real coordinator code (``coopgrid.app.build``, SQLite file, no
ledger, the default TrustPolicy) with in-process workers that sign as ``coopgrid worker``
does, but the work is real models: half the tasks a ``classify`` job (the digits model,
which needs homogeneous redundancy) and half an ``embed`` job (the tiny encoder, whose
comparator takes the measured differences), one item per task.

Every worker registers with a platform. Their honest outputs are this machine's (the real
model, run once per task input), as a CPU of their class gives them
(:func:`coopgrid.variation.as_on`): what bench/platform_variation.py measured between an
SSE-only CPU and AVX-512 (classify confidences a rounding step apart on 3.75% of tasks,
embedding components up to 1.19e-7 apart) and, as a stress beyond the measurement (0 flips
in 20,000 digits), one argmax flipped as a near tie would on ``--flips`` of classify tasks.
Classes: AVX-512 (the reference, 40%), AVX2+FMA (25%), SSE-only (20%), ARM NEON (14%) and
one worker alone on POWER. ``--hardware-cheaters`` of the workers (spread over the
classes) cheat on 10% of their tasks, so the comparators are seen to still catch lies.
"""

from __future__ import annotations

import argparse
import logging
import random
import sqlite3
import time
from pathlib import Path
from typing import Any

from coopgrid import tasks
from coopgrid.app import build
from coopgrid.config import Settings
from coopgrid.coordinator.scheduler import JobSpec
from coopgrid.coordinator.trust import TrustPolicy
from coopgrid.datasets import Dataset, digits
from coopgrid.errors import Forbidden, LeaseError
from coopgrid.identity import Identity
from coopgrid.platforms import platform_class
from coopgrid.protocol import ZERO_HASH, LeaseRequest, ResultBatch, ResultRef, b64decode, b64encode, sha256_hex
from coopgrid.variation import as_on
from coopgrid.worker.dishonest import Behaviour, parse

NAME = "mixed-hardware"
_BASE = {"ort_version": "1.32.0", "execution_provider": "CPUExecutionProvider", "threads": 1}
#: (platform, share of the workers); the last is one worker alone in its class
PLATFORMS = [
    ({**_BASE, "arch": "x86_64", "cpu_flags": ["SSE42", "AVX", "FMA3", "AVX2", "AVX512F"]}, 0.40),
    ({**_BASE, "arch": "x86_64", "cpu_flags": ["SSE42", "AVX", "FMA3", "AVX2"]}, 0.25),
    ({**_BASE, "arch": "x86_64", "cpu_flags": ["SSE42"]}, 0.20),
    ({**_BASE, "arch": "aarch64", "cpu_flags": ["NEON", "ASIMD"]}, 0.14),
    ({**_BASE, "arch": "ppc64le", "cpu_flags": ["VSX", "VSX2"]}, 0.0),
]


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--flips", type=float, default=0.001,
                   help=f"{NAME}: share of classify tasks whose argmax a non-reference class flips (a stress)")
    p.add_argument("--hardware-cheaters", type=float, default=0.1,
                   help=f"{NAME}: share of the workers cheating on 10%% of their tasks")


def run(args: argparse.Namespace, root: str) -> dict[str, Any]:
    logging.disable(logging.WARNING)  # the coordinator logs each quarantine; the figures say it all
    rng = random.Random(f"{args.seed}:{NAME}")
    data_dir = Path(root) / NAME
    settings = Settings(data_dir=data_dir, ledger="none", lease_seconds=args.lease_seconds)
    app = build(settings)
    app.scheduler.rng = random.Random(f"{args.seed}:{NAME}:scheduler")
    app.scheduler.validator.rng = random.Random(f"{args.seed}:{NAME}:validator")
    t0 = time.perf_counter()
    try:
        token, _ = app.auth.issue("bench", "operator")  # reads every blob: no upload bookkeeping here
        jobs, models = _submit(app, token, args.tasks)
        reference = platform_class(PLATFORMS[0][0])
        workers = []
        counts = [max(1, round(args.workers * share)) for _, share in PLATFORMS[:-1]] + [1]
        platforms = [p for (p, _), n in zip(PLATFORMS, counts) for _ in range(n)]
        cheaters = set(rng.sample(range(len(platforms) - 1), round(len(platforms) * args.hardware_cheaters)))
        for i, plat in enumerate(platforms):
            ident = Identity(rng.randbytes(32))
            record = app.store.register_worker(ident.address, f"hw-{i}", f"owner-{i}", time.time(), None, plat,
                                               platform_class(plat))
            behaviour = parse("cheat:0.1", seed=rng.randrange(2**32)) if i in cheaters else Behaviour()
            workers.append({"ident": ident, "record": record, "behaviour": behaviour, "held": None, "stopped": False})
        cache: dict[str, Any] = {}

        def compute(w: dict[str, Any], lease: dict[str, Any]) -> ResultBatch:
            items, refs = [], []
            for r in lease["replicas"]:
                job = lease["jobs"][r["job"]]
                t = tasks.get(job["task_type"])
                key = r["input_hash"]
                if key not in cache:  # this machine's output, by the real model, once per input
                    data = b64decode(r["input"]) if r["input"] else app.blobs.get(key)
                    cache[key] = t.decode(t.canonical(t.run(data, models[job["task_type"]], t.validate_params(job["params"]))))
                cls = w["record"].platform_class
                honest = lambda t=t, cls=cls, key=key: as_on(  # noqa: E731
                    "reference" if cls == reference else cls, t.name, cache[key], key, label_flips=args.flips)
                out = t.canonical(w["behaviour"].output(key, honest))
                items.append({"replica_id": r["id"], "output_hash": sha256_hex(out), "output": b64encode(out)})
                refs.append(ResultRef(r["job"], r["task_index"], key, job["model_hash"] or ZERO_HASH, sha256_hex(out)))
            sig = w["ident"].sign_batch(lease["chain_id"], lease["lease_id"], refs)
            return ResultBatch.model_validate({"signature": sig, "results": items})

        rounds = 0
        while True:
            rounds += 1
            progressed = False
            order = [w for w in workers if not w["stopped"]]
            rng.shuffle(order)
            for w in order:
                if w["held"] is not None:
                    lease, w["held"] = w["held"], None
                    try:
                        app.scheduler.submit_results(w["record"], lease["lease_id"], compute(w, lease))
                    except LeaseError:
                        pass
                    progressed = True
                try:
                    got = app.scheduler.lease(w["record"], LeaseRequest(max_replicas=rng.randint(args.lease_min, args.lease_max)))
                except Forbidden:
                    w["stopped"] = True
                    got = None
                if got is not None:
                    w["held"] = got
                    progressed = True
            if not progressed or (args.time_limit and time.perf_counter() - t0 > args.time_limit):
                break
        honest_versions = lambda tt, key: [  # noqa: E731 - what each class honestly answers
            as_on("reference" if c == reference else c, tt, cache[key], key, label_flips=args.flips)
            for c in {w["record"].platform_class for w in workers}]
        figures = _measure(settings.sqlite_path, jobs, workers, cheaters, cache, honest_versions)
        figures.update(name=NAME, wall=time.perf_counter() - t0, rounds=rounds, flips=args.flips,
                       workers=len(workers), classes={platform_class(p): n for (p, _), n in zip(PLATFORMS, counts)})
        return figures
    finally:
        app.close()


def _submit(app: Any, token: Any, n_tasks: int) -> tuple[dict[str, str], dict[str, Any]]:
    from coopgrid.registry.embed import tiny_encoder
    from coopgrid.registry.models import ModelSpec
    from coopgrid.registry.train import train_digits
    from coopgrid.task_demos import sentences

    half = max(1, n_tasks // 2)
    made = {"classify": (train_digits(), digits(half)),
            "embed": (tiny_encoder(sentences(500)),
                      Dataset.from_items([s.encode() for s in sentences(half, seed=1)], "text", [f"s-{i}" for i in range(half)]))}
    jobs, models = {}, {}
    for task_type, (model, dataset) in made.items():
        digest = app.blobs.put(model.onnx)
        app.registry.publish(ModelSpec(**model.spec(digest)))
        models[task_type] = tasks.get(task_type).load_model(model.onnx, model.spec(digest))
        spec = JobSpec(task_type=task_type, model=digest, dataset=app.blobs.put(dataset.to_npz()), task_size=1,
                       trust=TrustPolicy())
        jobs[task_type] = app.scheduler.submit(spec, token).id
    return jobs, models


def _measure(db: Path, jobs: dict[str, str], workers: list[dict[str, Any]], cheaters: set[int],
             cache: dict[str, Any], honest_versions: Any) -> dict[str, Any]:
    """Every figure from the SQLite file; a result is wrong when it agrees with no class's honest answer."""
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    honest_ids = {w["record"].id for i, w in enumerate(workers) if i not in cheaters}
    cheater_ids = {w["record"].id for i, w in enumerate(workers) if i in cheaters}
    quarantined = {r[0] for r in con.execute("SELECT id FROM workers WHERE quarantined_at IS NOT NULL")}
    f: dict[str, Any] = {
        "honest_quarantined": len(quarantined & honest_ids),
        "cheaters_quarantined": len(quarantined & cheater_ids),
        "cheaters": len(cheater_ids),
        "honest_invalid_results": con.execute(
            f"SELECT count(*) FROM results WHERE status = 'invalid' AND worker_id IN ({','.join(map(str, honest_ids)) or 0})"
        ).fetchone()[0],
    }
    lone = workers[-1]["record"].id
    f["lone_worker_replicas"] = {tt: con.execute(
        "SELECT count(*) FROM replicas WHERE worker_id = ? AND job_id = ?", (lone, job)).fetchone()[0]
        for tt, job in jobs.items()}
    f["lone_worker_quarantined"] = lone in quarantined
    for tt, job in jobs.items():
        t = tasks.get(tt)
        n, done = con.execute("SELECT n_tasks, tasks_done FROM jobs WHERE id = ?", (job,)).fetchone()
        spans = [r[0] for r in con.execute(
            "SELECT count(DISTINCT coalesce(w.platform_class, '')) FROM replicas r JOIN workers w ON w.id = r.worker_id"
            " WHERE r.job_id = ? AND r.state = 2 GROUP BY r.task_id", (job,))]
        wrong = 0
        for input_hash, output in con.execute(
            "SELECT t.input_hash, s.output FROM tasks t JOIN results s ON s.task_id = t.id"
            " WHERE t.job_id = ? AND s.status = 'accepted'", (job,)):
            if input_hash in cache:
                got = t.decode(output)
                wrong += not any(t.agree(h, got) for h in honest_versions(tt, input_hash))
        states = dict(con.execute("SELECT state, count(*) FROM tasks WHERE job_id = ? GROUP BY state", (job,)).fetchall())
        f[tt] = {"tasks": n, "accepted": done, "wrong_accepted": wrong, "task_states": states,
                 "tasks_across_classes": sum(s > 1 for s in spans), "homogeneous": bool(t.homogeneous)}
    con.close()
    return f


def print_figures(console: Any, f: dict[str, Any]) -> None:
    from rich.table import Table

    table = Table(title=f"{NAME}: {f['workers']} workers on {len(f['classes'])} platform classes "
                        f"({', '.join(f'{c}: {n}' for c, n in f['classes'].items())}); argmax flips on "
                        f"{f['flips']:.1%} of classify tasks off the reference class")
    for col in ("figure", "value", "target"):
        table.add_column(col, justify="left" if col == "figure" else "right")

    def row(label: str, value: Any, target: str, ok: bool | None = None) -> None:
        mark = "" if ok is None else (" [green]OK[/]" if ok else " [red]MISSED[/]")
        table.add_row(label, f"{value}", target + mark)

    row("honest workers quarantined", f["honest_quarantined"], "0", f["honest_quarantined"] == 0)
    row("the lone POWER worker quarantined", f["lone_worker_quarantined"], "False", not f["lone_worker_quarantined"])
    row("honest results marked invalid", f["honest_invalid_results"], "0", f["honest_invalid_results"] == 0)
    row("cheaters (10% of their tasks) quarantined", f"{f['cheaters_quarantined']}/{f['cheaters']}", "all",
        f["cheaters_quarantined"] == f["cheaters"])
    for tt in ("classify", "embed"):
        j = f[tt]
        row(f"{tt}: tasks accepted", f"{j['accepted']:,}/{j['tasks']:,}", "all", j["accepted"] == j["tasks"])
        row(f"{tt}: wrong results accepted", j["wrong_accepted"], "0", j["wrong_accepted"] == 0)
        row(f"{tt}: tasks whose replicas spanned classes", j["tasks_across_classes"],
            "0 (homogeneous)" if j["homogeneous"] else "any", (j["tasks_across_classes"] == 0) if j["homogeneous"] else None)
    row("lone worker's replicas (classify / embed)",
        f"{f['lone_worker_replicas']['classify']} / {f['lone_worker_replicas']['embed']}", "0 / any")
    console.print(table)
    console.print(f"  {f['wall']:.0f}s, {f['rounds']} rounds")


def passed(f: dict[str, Any]) -> bool:
    return f["honest_quarantined"] == 0 and all(f[tt]["wrong_accepted"] == 0 for tt in ("classify", "embed"))
