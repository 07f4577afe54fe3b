"""Honest variation: this repo's models run under different runtime settings, and how far apart they land.

Floating-point results of one model on one input may differ with the CPU's vector
instructions (MLAS and numpy pick kernels by CPUID), ONNX Runtime's graph
optimisation level (fused operators sum in another order) and thread count.
A comparator (``TaskType.agree``) must accept every such pair of honest outputs
and still reject a wrong answer; where it cannot, the task type declares
``homogeneous = True`` and its replicas go to workers of one platform class
(:mod:`coopgrid.platforms`).

:func:`outputs` runs one :class:`RuntimeConfig` over the models and inputs of
:func:`workload`; ``bench/platform_variation.py`` runs it here and in child
processes with fewer vector instructions (numpy's ``NPY_DISABLE_CPU_FEATURES``;
``qemu-x86_64 -cpu Haswell`` / ``Nehalem`` when installed, as ONNX Runtime
honours no knob that narrows its own kernels) and prints the differences;
tests/integration/test_platform_variation.py asserts the comparators hold.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from functools import cache
from typing import Any

import numpy as np

from coopgrid.tasks.common import OPTIMIZATION_LEVELS

#: task types whose outputs are floats from an ONNX model, measured here
TASK_TYPES = ("classify", "embed")


@dataclass(frozen=True)
class RuntimeConfig:
    """One way an honest worker may run a model."""

    name: str
    threads: int = 1
    optimization: str = "all"
    config: dict[str, str] = field(default_factory=dict)


def runtime_configs() -> list[RuntimeConfig]:
    """Every graph optimisation level at 1, 2 and 4 intra-op threads, and prepacking off (workers: all, 1 thread)."""
    out = [
        RuntimeConfig(f"{level}/t{threads}", threads, level)
        for level, threads in itertools.product(OPTIMIZATION_LEVELS, (1, 2, 4))
    ]
    out.append(RuntimeConfig("all/t1/no-prepack", 1, "all", {"session.disable_prepacking": "1"}))
    return out


@dataclass
class Workload:
    """Models (bytes + manifest) and task inputs, identical in every process that measures."""

    models: dict[str, tuple[bytes, dict[str, Any]]]
    inputs: dict[str, list[bytes]]  # task type -> task inputs, as the coordinator splits them

    def save(self, path: Any) -> None:
        import pickle

        with open(path, "wb") as f:
            pickle.dump((self.models, self.inputs), f)

    @classmethod
    def load(cls, path: Any) -> Workload:
        import pickle

        with open(path, "rb") as f:
            return cls(*pickle.load(f))


@cache
def workload(items: int = 2000, task_size: int = 50) -> Workload:
    """The digits classifier on ``digits:items`` and the tiny encoder on ``items`` sentences, split into tasks."""
    from coopgrid import tasks
    from coopgrid.datasets import Dataset, digits
    from coopgrid.protocol import sha256_hex
    from coopgrid.registry.embed import tiny_encoder
    from coopgrid.registry.train import train_digits
    from coopgrid.task_demos import sentences

    digit_model = train_digits()
    texts = sentences(items)
    encoder = tiny_encoder(sentences(500))
    models = {
        "classify": (digit_model.onnx, digit_model.spec(sha256_hex(digit_model.onnx))),
        "embed": (encoder.onnx, encoder.spec(sha256_hex(encoder.onnx))),
    }
    datasets = {
        "classify": digits(items),
        "embed": Dataset.from_items([s.encode() for s in texts], "text", [f"s-{i}" for i in range(items)]),
    }
    inputs = {}
    for name, dataset in datasets.items():
        t = tasks.get(name)
        inputs[name] = [data for data, _ in t.split(dataset, task_size, t.validate_params({}))]
    return Workload(models, inputs)


def load(task_type: str, model_bytes: bytes, manifest: dict[str, Any], rc: RuntimeConfig) -> Any:
    """The task type's model object, with its session built as ``rc`` says."""
    from coopgrid.tasks.classify import Classifier
    from coopgrid.tasks.common import onnx_session
    from coopgrid.tasks.embed import load_encoder

    if task_type == "classify":
        return Classifier(onnx_session(model_bytes, rc.threads, rc.optimization, rc.config), manifest)
    return load_encoder(model_bytes, manifest, rc.threads, rc.optimization, rc.config)


def outputs(w: Workload, rc: RuntimeConfig) -> dict[str, dict[str, Any]]:
    """Per task type: the canonical bytes of every task's output and the raw floats behind them."""
    from coopgrid import tasks

    out: dict[str, dict[str, Any]] = {}
    for name in TASK_TYPES:
        t = tasks.get(name)
        model = load(name, *w.models[name], rc)
        params = t.validate_params({})
        canon = [t.canonical(t.run(data, model, params)) for data in w.inputs[name]]
        out[name] = {"canonical": canon, "raw": raw_floats(name, model, w.inputs[name])}
    return out


def raw_floats(task_type: str, model: Any, inputs: list[bytes]) -> np.ndarray:
    """The floats a task's output is made from, before any rounding: class probabilities, embeddings."""
    from coopgrid.tasks.common import input_texts
    from coopgrid.tasks.echo import npy_load

    rows = []
    for data in inputs:
        if task_type == "classify":
            x = npy_load(data).astype(np.float32)
            rows.append(model.scores(x.reshape(len(x), -1))[1])
        else:
            rows.append(model.encode([str(t) for t in input_texts(data)], 32).astype(np.float64))
    return np.concatenate(rows)


def differences(task_type: str, a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """How two runs of one workload differ: raw floats, output bytes, and whether the comparator agrees."""
    from coopgrid import tasks

    t = tasks.get(task_type)
    ra, rb = a["raw"], b["raw"]
    diff = np.abs(ra - rb)
    rel = diff / np.maximum(np.maximum(np.abs(ra), np.abs(rb)), 1e-30)
    decoded = [(t.decode(x), t.decode(y)) for x, y in zip(a["canonical"], b["canonical"])]
    figures: dict[str, Any] = {
        "max_abs": float(diff.max()),
        "max_rel": float(rel[diff > 0].max()) if (diff > 0).any() else 0.0,
        "floats_differing": int((diff > 0).sum()),
        "floats": int(diff.size),
        "tasks_bytes_differing": sum(x != y for x, y in zip(a["canonical"], b["canonical"])),
        "tasks": len(decoded),
        "tasks_disagreeing": sum(not t.agree(x, y) for x, y in decoded),
    }
    if task_type == "classify":
        figures["labels_differing"] = sum(
            p != q for x, y in decoded for p, q in zip(x["labels"], y["labels"])
        )
        figures["max_confidence_diff"] = max(
            (abs(p - q) for x, y in decoded for p, q in zip(x["confidence"], y["confidence"])), default=0.0
        )
    else:
        ea, eb = ra, rb
        cos = (ea * eb).sum(axis=1) / np.maximum(np.linalg.norm(ea, axis=1) * np.linalg.norm(eb, axis=1), 1e-30)
        figures["min_cosine"] = float(cos.min())
    return figures


#: the largest differences bench/platform_variation.py measured (20,000 items per type; an SSE-only CPU,
#: emulated, against AVX-512; every other setting gave identical bits): class probabilities and
#: embedding components, and the share of tasks whose rounded classify confidences moved a step
MEASURED = {"classify_abs": 5.96e-07, "classify_tasks_moved": 15 / 400, "embed_abs": 1.19e-07}


def as_on(platform_class: str, task_type: str, output: Any, key: str, label_flips: float = 0.0) -> Any:
    """TEST FACILITY: an honest output as a CPU of ``platform_class`` gives it (benchmarks, tests).

    ``output`` is this machine's decoded output of the task ``key`` (its input hash). Workers of
    one class get identical bits (the draw is seeded by class and task), as measured; other
    classes differ as measured: classify confidences a rounding step (1e-4) apart on
    :data:`MEASURED` ``classify_tasks_moved`` of the tasks, embedding components by up to
    ``embed_abs``. ``label_flips``: the share of tasks with one item's argmax flipped, as a near tie
    would flip it (none in 20,000 digits here; a stress for homogeneous redundancy).
    """
    import hashlib

    if platform_class == "reference":
        return output
    rng = np.random.default_rng(int.from_bytes(hashlib.sha256(f"{platform_class}/{key}".encode()).digest()[:8], "big"))
    if task_type == "classify":
        out = {**output, "labels": list(output["labels"]), "confidence": list(output["confidence"])}
        if rng.random() < MEASURED["classify_tasks_moved"]:
            i = int(rng.integers(len(out["confidence"])))
            if out["confidence"][i] is not None:
                out["confidence"][i] = round(min(1.0, out["confidence"][i] + float(rng.choice([-1e-4, 1e-4]))), 4)
        if label_flips and rng.random() < label_flips:
            i = int(rng.integers(len(out["labels"])))
            if isinstance(out["labels"][i], int):
                out["labels"][i] = (out["labels"][i] + 1) % 10
        return out
    if task_type == "embed":
        emb = np.asarray(output["emb"], np.float32)
        noise = rng.uniform(-MEASURED["embed_abs"], MEASURED["embed_abs"], emb.shape).astype(np.float32)
        return {**output, "emb": emb + noise}
    return output


#: the configurations a child process runs: what workers run, and no graph optimisation at all
CHILD_CONFIGS = ("all/t1", "disable_all/t1")
#: numpy without its AVX-512 kernels (its names; numpy cannot drop its X86_V2 baseline)
NUMPY_NO_AVX512 = {"NPY_DISABLE_CPU_FEATURES": "X86_V4 AVX512_ICL AVX512_SPR"}


def isa_variants(qemu_cpus: tuple[str, ...] = ("Haswell", "Nehalem")) -> list[tuple[str, list[str], dict[str, str]]]:
    """Ways to run a child process with fewer vector instructions: (label, command prefix, environment).

    ONNX Runtime 1.32 honours no environment variable or session config entry that narrows its
    float kernels, so its side is measured on an emulated CPU (``qemu-x86_64 -cpu``, Debian's
    ``qemu-user``) when installed: Haswell has AVX2 and FMA but no AVX-512, Nehalem only SSE4.2.
    """
    import shutil
    import sys

    out = [("numpy-no-avx512", [sys.executable], NUMPY_NO_AVX512)]
    qemu = shutil.which("qemu-x86_64")
    if qemu and _host_arch() == "x86_64":
        out += [(f"qemu-{cpu.lower()}", [qemu, "-cpu", cpu, sys.executable], {}) for cpu in qemu_cpus]
    return out


def _host_arch() -> str:
    import platform

    return platform.machine().lower()


def run_in_child(label: str, prefix: list[str], env: dict[str, str], w: Workload, tmp: Any) -> dict[str, Any]:
    """:data:`CHILD_CONFIGS` of ``w`` in a child process (``prefix`` + this module); keys ``label:config``."""
    import os
    import pickle
    import subprocess
    from pathlib import Path

    tmp = Path(tmp)
    wpath, out = tmp / f"{label}.workload", tmp / f"{label}.outputs"
    w.save(wpath)
    root = str(Path(__file__).resolve().parents[1])
    r = subprocess.run(
        [*prefix, "-m", "coopgrid.variation", str(wpath), str(out)],
        env={**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")])), **env},
        capture_output=True, text=True, timeout=3600,
    )
    if r.returncode:
        raise RuntimeError(f"the {label} run failed: {r.stderr[-2000:]}")
    with open(out, "rb") as f:
        return {f"{label}:{name}": o for name, o in pickle.load(f).items()}


def wrong_answers(task_type: str, canonical: list[bytes]) -> list[Any]:
    """Plausible lies about each task's output (a label changed, an embedding row swapped)."""
    from coopgrid import tasks

    t = tasks.get(task_type)
    lies = []
    for data in canonical:
        out = t.decode(data)
        if task_type == "classify":
            labels = list(out["labels"])
            labels[0] = (labels[0] + 1) % 10 if isinstance(labels[0], int) else f"{labels[0]}x"
            lies.append({**out, "labels": labels})
        else:
            emb = np.array(out["emb"], copy=True)
            emb[0] = emb[-1] if len(emb) > 1 and not np.allclose(emb[0], emb[-1]) else -emb[0]
            lies.append({**out, "emb": emb})
    return lies


if __name__ == "__main__":  # a child of run_in_child: python -m coopgrid.variation WORKLOAD OUT
    import pickle
    import sys

    _w = Workload.load(sys.argv[1])
    _res = {rc.name: outputs(_w, rc) for rc in runtime_configs() if rc.name in CHILD_CONFIGS}
    with open(sys.argv[2], "wb") as _f:
        pickle.dump(_res, _f)
