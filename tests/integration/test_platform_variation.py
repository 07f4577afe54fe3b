"""Each float task type's comparator against real variation of this repo's models.

The digits classifier and the tiny encoder run over the same task inputs under every
ONNX Runtime graph optimisation level at 1, 2 and 4 threads, with prepacking off, with
numpy's AVX-512 kernels disabled (a child process), and, where ``qemu-x86_64`` is
installed, on an emulated CPU without AVX or FMA (Nehalem), whose float kernels really
do give other bits. Every pair of these honest
outputs must agree; every wrong answer must be rejected, against every one of them.
"""

from __future__ import annotations

import itertools
import shutil

import pytest

from coopgrid import tasks
from coopgrid.variation import (
    TASK_TYPES, differences, isa_variants, outputs, run_in_child, runtime_configs, workload, wrong_answers,
)

ITEMS, TASK_SIZE = 300, 50


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict]:
    w = workload(ITEMS, TASK_SIZE)
    found = {rc.name: outputs(w, rc) for rc in runtime_configs()}
    tmp = tmp_path_factory.mktemp("variation")
    # Nehalem only: Haswell's AVX2+FMA kernels give the very bits of AVX-512 here (bench/platform_variation.py)
    for label, prefix, env in isa_variants(qemu_cpus=("Nehalem",)):
        found.update(run_in_child(label, prefix, env, w, tmp))
    return found


@pytest.mark.parametrize("task_type", TASK_TYPES)
def test_every_pair_of_honest_outputs_agrees(runs: dict[str, dict], task_type: str) -> None:
    t = tasks.get(task_type)
    decoded = {name: [t.decode(c) for c in o[task_type]["canonical"]] for name, o in runs.items()}
    rejected = [
        (a, b, i)
        for a, b in itertools.combinations(decoded, 2)
        for i, (x, y) in enumerate(zip(decoded[a], decoded[b]))
        if not t.agree(x, y)
    ]
    assert rejected == []
    assert len(decoded) >= len(runtime_configs()) + 2  # the in-process settings and the numpy child at least


@pytest.mark.parametrize("task_type", TASK_TYPES)
def test_a_wrong_answer_is_rejected_against_every_honest_output(runs: dict[str, dict], task_type: str) -> None:
    t = tasks.get(task_type)
    lies = wrong_answers(task_type, runs["all/t1"][task_type]["canonical"])
    accepted = [
        (name, i)
        for name, o in runs.items()
        for i, (honest, lie) in enumerate(zip(o[task_type]["canonical"], lies))
        if t.agree(t.decode(honest), lie) or t.agree(lie, t.decode(honest))
    ]
    assert accepted == []


@pytest.mark.skipif(shutil.which("qemu-x86_64") is None, reason="qemu-x86_64 (Debian: qemu-user) runs the emulated CPUs")
def test_the_cpu_without_fma_gives_other_bits_that_the_comparators_still_accept(runs: dict[str, dict]) -> None:
    # the measurement measures something: without FMA the float kernels round differently
    for task_type in TASK_TYPES:
        d = differences(task_type, runs["all/t1"][task_type], runs["qemu-nehalem:all/t1"][task_type])
        assert d["floats_differing"] > 0 and d["tasks_bytes_differing"] > 0, task_type
        assert d["tasks_disagreeing"] == 0, task_type
