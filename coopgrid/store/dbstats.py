"""Counting the database work of a coordinator, for benchmarks (``COOPGRID_DB_STATS=FILE``).

Every statement the engine runs is counted by its text: how often, the rows it
wrote (INSERT/UPDATE/DELETE row counts) and the seconds it took. The totals are
written as JSON to FILE at most once a second and when the process exits, so a
benchmark can read them before and after a job and divide by the job's tasks.
Off unless the variable is set: nothing is listened to then.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import threading
import time
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, event


class DbStats:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.lock = threading.Lock()
        self.by_sql: dict[str, list[float]] = {}  # sql -> [count, rows written, seconds]
        self.written_at = 0.0

    def attach(self, engine: Engine) -> None:
        event.listen(engine, "before_cursor_execute", self._before)
        event.listen(engine, "after_cursor_execute", self._after)
        atexit.register(self.dump)

    def _before(self, _conn: Any, _cursor: Any, _sql: str, _params: Any, context: Any, _many: bool) -> None:
        context._dbstats_t0 = time.perf_counter()

    def _after(self, _conn: Any, cursor: Any, sql: str, _params: Any, context: Any, _many: bool) -> None:
        took = time.perf_counter() - getattr(context, "_dbstats_t0", time.perf_counter())
        head = sql.lstrip()[:6].upper()
        rows = max(cursor.rowcount, 0) if head in ("INSERT", "UPDATE", "DELETE") else 0
        key = " ".join(sql.split())
        with self.lock:
            entry = self.by_sql.setdefault(key, [0, 0, 0.0])
            entry[0] += 1
            entry[1] += rows
            entry[2] += took
        now = time.monotonic()
        if now - self.written_at > 1.0:
            self.written_at = now
            self.dump()

    def dump(self) -> None:
        with self.lock:
            data = [{"sql": k, "count": v[0], "rows": v[1], "seconds": v[2]} for k, v in self.by_sql.items()]
        tmp = self.path.with_suffix(".tmp")
        with contextlib.suppress(OSError):  # counting must never break the coordinator
            tmp.write_text(json.dumps(data))
            os.replace(tmp, self.path)


def maybe_attach(engine: Engine) -> DbStats | None:
    """Count this engine's statements when ``COOPGRID_DB_STATS`` names a file."""
    target = os.environ.get("COOPGRID_DB_STATS")
    if not target:
        return None
    stats = DbStats(Path(target))
    stats.attach(engine)
    return stats
