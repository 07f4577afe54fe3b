"""Honest workers on different hardware, through the real coordinator code: none is punished.

A coordinator built by ``coopgrid.app.build`` (SQLite file, no ledger) runs a classify job
with the digits model and an embed job with the tiny encoder; in-process workers with
their own keys, each registered with a platform, lease, run the real model, sign and
submit as ``coopgrid worker`` does. A worker's output is this machine's, as a CPU of its
platform class gives it (:func:`coopgrid.variation.as_on`: the differences
bench/platform_variation.py measured; classify workers off the reference class also
flip an argmax on 30% of tasks, far more often than near ties would).
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from coopgrid import tasks
from coopgrid.app import build
from coopgrid.config import Settings
from coopgrid.coordinator.scheduler import JobSpec
from coopgrid.coordinator.trust import TrustPolicy
from coopgrid.datasets import Dataset, digits
from coopgrid.errors import Forbidden
from coopgrid.identity import Identity
from coopgrid.platforms import platform_class
from coopgrid.protocol import ZERO_HASH, LeaseRequest, ResultBatch, ResultRef, b64decode, b64encode, sha256_hex
from coopgrid.registry.embed import tiny_encoder
from coopgrid.registry.models import ModelSpec
from coopgrid.task_demos import sentences
from coopgrid.variation import as_on

BASE = {"arch": "x86_64", "ort_version": "1.32.0", "execution_provider": "CPUExecutionProvider", "threads": 1}
AVX512 = {**BASE, "cpu_flags": ["SSE42", "AVX", "FMA3", "AVX2", "AVX512F"]}
AVX2 = {**BASE, "cpu_flags": ["SSE42", "AVX", "FMA3", "AVX2"]}
SSE = {**BASE, "cpu_flags": ["SSE42"]}
ARM = {**BASE, "arch": "aarch64", "cpu_flags": ["NEON", "ASIMD", "SVE"]}
# record_run 0: fresh workers outvote each other as veterans would (the subject is platforms, not newcomers)
FIXED_Q2 = TrustPolicy(replicas=2, quorum=2, adaptive=False, gold_rate=0, record_run=0)


@dataclass
class SimWorker:
    identity: Identity
    platform: dict
    record: Any = None
    stopped: str | None = None


class Grid:
    def __init__(self, tmp: Path, task_type: str, items: int, policy: TrustPolicy) -> None:
        self.app = build(Settings(data_dir=tmp, ledger="none"))
        self.app.scheduler.rng = random.Random(1)
        self.app.scheduler.validator.rng = random.Random(2)
        self.task_type = tasks.get(task_type)
        token, _ = self.app.auth.issue("t", "operator")  # reads every blob: no upload bookkeeping here
        if task_type == "classify":
            from coopgrid.registry.train import train_digits

            model, data = train_digits(), digits(items).to_npz()
        else:
            texts = sentences(items)
            model = tiny_encoder(sentences(200))
            data = Dataset.from_items([t.encode() for t in texts], "text", [f"s-{i}" for i in range(items)]).to_npz()
        digest = self.app.blobs.put(model.onnx)
        self.app.registry.publish(ModelSpec(**model.spec(digest)))
        self.model = self.task_type.load_model(model.onnx, model.spec(digest))
        spec = JobSpec(task_type=task_type, model=digest, dataset=self.app.blobs.put(data), task_size=4, trust=policy)
        self.job = self.app.scheduler.submit(spec, token)
        self.workers: list[SimWorker] = []
        self.cache: dict[str, Any] = {}

    def add(self, platform: dict, n: int = 1) -> list[SimWorker]:
        added = []
        for _ in range(n):
            ident = Identity(random.Random(len(self.workers)).randbytes(32))
            w = SimWorker(ident, platform)
            w.record = self.app.store.register_worker(
                ident.address, f"w{len(self.workers)}", f"owner-{len(self.workers)}", time.time(), None,
                platform, platform_class(platform),
            )
            self.workers.append(w)
            added.append(w)
        return added

    def output(self, w: SimWorker, replica: dict) -> bytes:
        key = replica["input_hash"]
        if key not in self.cache:  # this machine's honest output, by the real model
            params = self.task_type.validate_params(self.job.params)
            self.cache[key] = self.task_type.decode(self.task_type.canonical(
                self.task_type.run(b64decode(replica["input"]) if replica["input"] else self.app.blobs.get(key), self.model, params)))
        cls = w.record.platform_class
        honest = as_on("reference" if cls == platform_class(AVX512) else cls, self.task_type.name, self.cache[key], key,
                       label_flips=0.3)
        return self.task_type.canonical(honest)

    def run(self) -> None:
        order = random.Random(3)
        for _ in range(500):
            progressed = False
            ready = [w for w in self.workers if w.stopped is None]
            order.shuffle(ready)  # workers ask in any order, as on a real grid
            for w in ready:
                try:
                    lease = self.app.scheduler.lease(w.record, LeaseRequest(max_replicas=3))
                except Forbidden as exc:
                    w.stopped = exc.message
                    continue
                if lease is None:
                    continue
                progressed = True
                items, refs = [], []
                for r in lease["replicas"]:
                    out = self.output(w, r)
                    items.append({"replica_id": r["id"], "output_hash": sha256_hex(out), "output": b64encode(out)})
                    refs.append(ResultRef(r["job"], r["task_index"], r["input_hash"], self.job.model_hash or ZERO_HASH,
                                          sha256_hex(out)))
                sig = w.identity.sign_batch(lease["chain_id"], lease["lease_id"], refs)
                self.app.scheduler.submit_results(w.record, lease["lease_id"], ResultBatch.model_validate(
                    {"signature": sig, "results": items}))
            if not progressed:
                return

    def sql(self, q: str) -> list[Any]:
        with self.app.store.engine.connect() as conn:
            return conn.execute(text(q), {"job": self.job.id}).all()

    def classes_per_task(self) -> list[int]:
        """How many platform classes did the replicas of each task go to (gold ones included)."""
        return [r[0] for r in self.sql(
            "SELECT count(DISTINCT coalesce(w.platform_class, '')) FROM replicas r JOIN workers w ON w.id = r.worker_id "
            "WHERE r.job_id = :job AND r.state = 2 GROUP BY r.task_id")]


@pytest.fixture
def grid_of(tmp_path: Path):
    made: list[Grid] = []

    def make(task_type: str, items: int = 160, policy: TrustPolicy | None = None) -> Grid:
        g = Grid(tmp_path / f"grid{len(made)}", task_type, items, policy or TrustPolicy())
        made.append(g)
        return g

    yield make
    for g in made:
        g.app.close()


def quarantined(g: Grid) -> list[str]:
    return [w.address for w, _ in g.app.store.list_workers() if w.quarantined_at is not None]


def test_classify_replicas_stay_in_one_class_and_no_honest_worker_is_quarantined(grid_of) -> None:
    g = grid_of("classify")
    g.add(AVX512, 3), g.add(SSE, 2), g.add(AVX2, 2)
    lone = g.add(ARM)[0]  # an unusual machine, alone in its class
    g.run()
    job = g.app.store.get_job(g.job.id)
    assert job.tasks_done == job.n_tasks  # every task accepted (some may stay provisional: finality checks)
    assert quarantined(g) == []
    assert g.sql("SELECT count(*) FROM results WHERE status = 'invalid'")[0][0] == 0
    assert set(g.classes_per_task()) == {1}
    served = {r[0] for r in g.sql("SELECT DISTINCT w.platform_class FROM replicas r JOIN workers w ON w.id = r.worker_id")}
    assert served == {platform_class(p) for p in (AVX512, SSE, AVX2)}  # all three took part
    assert lone.record.platform_class not in served  # nobody could second its results


def test_without_homogeneous_redundancy_the_same_workers_disagree(grid_of, monkeypatch) -> None:
    # the control: what the placement saves honest workers from
    monkeypatch.setattr(type(tasks.get("classify")), "homogeneous", False)
    g = grid_of("classify", items=80, policy=FIXED_Q2)
    g.add(AVX512, 2), g.add(SSE, 2)
    g.run()
    assert max(g.classes_per_task()) == 2
    assert g.sql("SELECT count(*) FROM results WHERE status = 'invalid'")[0][0] > 0


def test_embed_mixes_classes_and_agrees_across_them(grid_of) -> None:
    g = grid_of("embed", policy=FIXED_Q2)
    g.add(AVX512, 2), g.add(SSE, 2), g.add(ARM, 2)
    g.run()
    job = g.app.store.get_job(g.job.id)
    assert job.tasks_done == job.n_tasks  # every task accepted (some may stay provisional: finality checks)
    assert quarantined(g) == []
    assert g.sql("SELECT count(*) FROM results WHERE status = 'invalid'")[0][0] == 0
    assert max(g.classes_per_task()) == 2  # not homogeneous: its comparator takes the measured differences
