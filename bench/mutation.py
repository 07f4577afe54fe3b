"""Kill rate of the last ``make mutate`` run, per module, with the surviving mutants named.

    .venv/bin/python bench/mutation.py          # after `make mutate` (reads mutants/*.meta)

Only the mutants of the pure core are counted (the selection ``make mutate``
runs, see MUTANTS below): the trust decisions, the Merkle tree, the EIP-712
digest and each task type's comparator. A mutant that timed out or crashed
the test process counts as killed, as mutmut counts it.
"""

from __future__ import annotations

import fnmatch
import json
import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

#: the mutant name patterns `make mutate` runs (kept in step with the Makefile)
MUTANTS = [
    "coopgrid.coordinator.trust.*",
    "coopgrid.ledger.merkle.*",
    "coopgrid.protocol.x_batch_digest*",
    "coopgrid.protocol.x__domain_separator*",
    "coopgrid.protocol.x__type_hash*",
    "coopgrid.protocol.x_eip712*",
    "coopgrid.tasks.*agree*",
]


def main() -> int:
    metas = sorted((ROOT / "mutants").glob("coopgrid/**/*.meta"))
    if not metas:
        print("no mutants/ here: run `make mutate` first", file=sys.stderr)
        return 1
    total: Counter[str] = Counter()
    survivors: list[str] = []
    print(f"{'module':<34} {'mutants':>8} {'killed':>8} {'survived':>9} {'not run':>8} {'kill rate':>10}")
    for meta in metas:
        codes = json.loads(meta.read_text())["exit_code_by_key"]
        chosen = {k: v for k, v in codes.items() if any(fnmatch.fnmatch(k, p) for p in MUTANTS)}
        if not chosen:
            continue
        c = Counter("not run" if v is None else "survived" if v == 0 else "killed" for v in chosen.values())
        total.update(c)
        survivors += sorted(k for k, v in chosen.items() if v == 0)
        ran = c["killed"] + c["survived"]
        module = str(meta.relative_to(ROOT / "mutants")).removesuffix(".meta")
        rate = f"{100 * c['killed'] / ran:.1f}%" if ran else "-"
        print(f"{module:<34} {len(chosen):>8} {c['killed']:>8} {c['survived']:>9} {c['not run']:>8} {rate:>10}")
    ran = total["killed"] + total["survived"]
    print(f"{'all':<34} {sum(total.values()):>8} {total['killed']:>8} {total['survived']:>9} {total['not run']:>8} "
          f"{100 * total['killed'] / max(ran, 1):>9.1f}%")
    print("\nsurvivors (see each with `mutmut show NAME`):")
    for name in survivors:
        print(" ", name)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
