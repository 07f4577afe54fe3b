"""Labelled items a submitter supplies: ``coopgrid submit --gold FILE``.

The file is JSON Lines, one labelled item per line::

    {"input": [3], "output": [3]}
    {"input": "some text", "output": "positive"}

``input`` is one item of the job's dataset in JSON (a row of numbers for an array dataset; a
string of text, or ``{"base64": "..."}`` for any bytes, for a dataset of files); ``output`` is
the answer the submitter knows, in the task type's form (``TaskType.gold_output``: echo, the item
itself; classify, the label). Blank lines are skipped. The coordinator makes each item a gold
task: failing one quarantines a worker, as failing gold from a trusted worker does; none of them
is among the job's tasks or in its output.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from coopgrid.errors import InvalidInput

#: most labelled items one job may carry (gold tests are a sample: a few hundred are plenty)
MAX_GOLD = 10_000
EXAMPLE = '{"input": ONE_ITEM, "output": ITS_ANSWER}'


class GoldFileError(InvalidInput):
    """The gold file cannot be used."""


def read_gold(path: Path, limit: int = MAX_GOLD) -> list[dict[str, Any]]:
    """The file's labelled items, each with its line number; GoldFileError naming the line and the fix."""
    try:
        handle = path.open("rb")
    except OSError as exc:
        raise GoldFileError(f"cannot read the gold file {path}: {exc.strerror or exc}") from None
    items: list[dict[str, Any]] = []
    with handle:
        for n, raw in enumerate(handle, 1):
            line = raw.strip()
            if not line:
                continue
            where = f"{path}, line {n}"
            try:
                obj = json.loads(line)
            except UnicodeDecodeError:
                raise GoldFileError(f"{where}: not UTF-8 text; write each labelled item as {EXAMPLE}") from None
            except json.JSONDecodeError as exc:
                raise GoldFileError(
                    f"{where}: not JSON ({exc.msg}, column {exc.colno}); each line is one object: {EXAMPLE}"
                ) from None
            if not isinstance(obj, dict):
                raise GoldFileError(f"{where}: a JSON {type(obj).__name__}, not an object; write {EXAMPLE}")
            missing = [k for k in ("input", "output") if k not in obj]
            if missing:
                raise GoldFileError(f"{where}: no {' and no '.join(repr(k) for k in missing)}; write {EXAMPLE}")
            extra = sorted(set(obj) - {"input", "output"})
            if extra:
                raise GoldFileError(f"{where}: unknown key(s) {', '.join(map(repr, extra))}; only {EXAMPLE}")
            if len(items) == limit:
                raise GoldFileError(
                    f"{where}: more than {limit:,} labelled items; gold tests are a sample, a few hundred are plenty"
                )
            items.append({"input": obj["input"], "output": obj["output"], "line": n})
    if not items:
        raise GoldFileError(f"{path} holds no labelled items; write one per line: {EXAMPLE}")
    return items
