"""How far apart honest outputs land: this repo's models under other runtime settings and instruction sets.

    .venv/bin/python bench/platform_variation.py                # 2,000 items per task type
    .venv/bin/python bench/platform_variation.py --items 20000 --json variation.json

Runs the digits classifier (``classify``) and the tiny encoder (``embed``; the
MiniLM export needs PyTorch, which this machine does not have) over the same
task inputs (:mod:`coopgrid.variation`):

* in this process: ONNX Runtime's four graph optimisation levels at 1, 2 and 4
  intra-op threads, and session prepacking off;
* in child processes, at ``all``/1 thread (what workers run) and ``disable_all``:
  numpy without its AVX-512 kernels (``NPY_DISABLE_CPU_FEATURES``), and, when
  ``qemu-x86_64`` is installed (Debian: ``qemu-user``), the whole process on an
  emulated CPU: ``-cpu Haswell`` (AVX2 + FMA, no AVX-512) and ``-cpu Nehalem``
  (SSE4.2: no AVX, no FMA). ONNX Runtime 1.32 honours no environment variable or
  session config entry that narrows its float kernels (its binary names only
  ``ORT_QMOE_CPU_DISABLE_AVX512``, for quantised mixture-of-experts, and
  ``mlas.qnbit.force_fp32``, for 4-bit matmuls); emulation is how to measure it.

For each configuration against the reference (this CPU, ``all``, 1 thread): the
largest absolute and relative difference of the raw floats (class probabilities,
embeddings), tasks whose output bytes differ, labels that differ, and tasks the
comparator (``agree``) rejects; then every pair of configurations through the
comparator, and each one against wrong answers (a changed label, a swapped
embedding row), which must all be rejected. For ``classify`` it also counts
near ties: items whose two best classes are closer than twice the largest
probability difference measured, where an argmax can honestly flip.
"""

from __future__ import annotations

import argparse
import itertools
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
from rich.console import Console
from rich.table import Table

from coopgrid import tasks
from coopgrid.variation import (
    TASK_TYPES, differences, isa_variants, outputs, run_in_child, runtime_configs, workload, wrong_answers,
)

def near_ties(raw: np.ndarray, gap: float) -> int:
    top2 = np.sort(raw, axis=1)[:, -2:]
    return int(((top2[:, 1] - top2[:, 0]) <= gap).sum())


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--items", type=int, default=2000, help="items per task type")
    p.add_argument("--task-size", type=int, default=50, help="items per task")
    p.add_argument("--json", type=Path, help="also write every figure here")
    p.add_argument("--no-children", action="store_true", help="this process's configurations only")
    args = p.parse_args()
    console = Console(width=None if sys.stdout.isatty() else 200)
    t0 = time.perf_counter()
    w = workload(args.items, args.task_size)
    runs: dict[str, dict[str, Any]] = {rc.name: outputs(w, rc) for rc in runtime_configs()}
    skipped = []
    if not args.no_children:
        with tempfile.TemporaryDirectory() as tmp:
            for label, prefix, env in isa_variants():
                runs.update(run_in_child(label, prefix, env, w, tmp))
        if not shutil.which("qemu-x86_64"):
            skipped.append("qemu-x86_64 not installed: no emulated Haswell/Nehalem runs (apt-get install qemu-user)")
    ref = runs["all/t1"]
    report: dict[str, Any] = {"items": args.items, "task_size": args.task_size, "configs": list(runs),
                              "skipped": skipped, "task_types": {}}
    for tt in TASK_TYPES:
        t = tasks.get(tt)
        rows = {name: differences(tt, ref[tt], o[tt]) for name, o in runs.items() if name != "all/t1"}
        decoded = {name: [t.decode(c) for c in o[tt]["canonical"]] for name, o in runs.items()}
        pairs_rejected = sum(
            not t.agree(x, y)
            for a, b in itertools.combinations(decoded, 2)
            for x, y in zip(decoded[a], decoded[b])
        )
        lies = wrong_answers(tt, ref[tt]["canonical"])
        lies_accepted = sum(t.agree(x, lie) for name in decoded for x, lie in zip(decoded[name], lies))
        worst = max((r["max_abs"] for r in rows.values()), default=0.0)
        entry = {
            "configs": rows,
            "max_abs": worst,
            "max_rel": max((r["max_rel"] for r in rows.values()), default=0.0),
            "pairs": len(list(itertools.combinations(decoded, 2))) * len(lies),
            "pairs_rejected": pairs_rejected,
            "wrong_answers": len(lies) * len(decoded),
            "wrong_answers_accepted": lies_accepted,
            "homogeneous": bool(getattr(t, "homogeneous", False)),
        }
        if tt == "classify":
            entry["near_ties"] = near_ties(ref[tt]["raw"], 2 * worst)
            entry["items"] = int(len(ref[tt]["raw"]))
            entry["min_top2_gap"] = float(np.diff(np.sort(ref[tt]["raw"], axis=1)[:, -2:], axis=1).min())
        report["task_types"][tt] = entry
    report["seconds"] = round(time.perf_counter() - t0, 1)
    print_report(console, report)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    bad = sum(e["pairs_rejected"] + e["wrong_answers_accepted"] for e in report["task_types"].values())
    return 1 if bad else 0


def print_report(console: Console, r: dict[str, Any]) -> None:
    for tt, e in r["task_types"].items():
        table = Table(title=f"{tt}: {r['items']:,} items in tasks of {r['task_size']}, against this CPU at all/1 thread")
        for col in ("configuration", "max abs", "max rel", "floats differing", "tasks: bytes differ",
                    "labels differ" if tt == "classify" else "min cosine", "tasks rejected by agree"):
            table.add_column(col, justify="left" if col == "configuration" else "right")
        for name, f in e["configs"].items():
            extra = str(f["labels_differing"]) if tt == "classify" else f"{f['min_cosine']:.12f}"
            table.add_row(name, f"{f['max_abs']:.3g}", f"{f['max_rel']:.3g}", f"{f['floats_differing']:,}/{f['floats']:,}",
                          f"{f['tasks_bytes_differing']}/{f['tasks']}", extra, str(f["tasks_disagreeing"]))
        console.print(table)
        ok = e["pairs_rejected"] == 0 and e["wrong_answers_accepted"] == 0
        console.print(
            f"  every pair of honest outputs agrees: {e['pairs'] - e['pairs_rejected']:,}/{e['pairs']:,} (target: all)   "
            f"wrong answers rejected: {e['wrong_answers'] - e['wrong_answers_accepted']:,}/{e['wrong_answers']:,} "
            f"(target: all)   {'[green]OK[/]' if ok else '[red]MISSED[/]'}"
        )
        if tt == "classify":
            console.print(
                f"  near ties (top-2 gap <= 2 x {e['max_abs']:.3g}): {e['near_ties']} of {e['items']:,} items; "
                f"smallest top-2 gap {e['min_top2_gap']:.3g}; homogeneous redundancy: {e['homogeneous']}"
            )
        else:
            console.print(f"  homogeneous redundancy: {e['homogeneous']}")
    for s in r["skipped"]:
        console.print(f"[yellow]skipped[/]: {s}")
    console.print(f"{r['seconds']}s")


if __name__ == "__main__":
    sys.exit(main())
