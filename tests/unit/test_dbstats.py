"""COOPGRID_DB_STATS: what the benchmarks divide by a job's tasks (statements, rows written)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from coopgrid.store.dbstats import maybe_attach


def test_counts_statements_and_rows_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "stats.json"
    monkeypatch.setenv("COOPGRID_DB_STATS", str(out))
    engine = create_engine(f"sqlite:///{tmp_path / 'db.sqlite'}")
    stats = maybe_attach(engine)
    assert stats is not None
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE t (x INTEGER)"))
        conn.execute(text("INSERT INTO t (x) VALUES (:x)"), [{"x": i} for i in range(5)])
        conn.execute(text("UPDATE t SET x = x + 1 WHERE x >= 3"))
        assert conn.execute(text("SELECT count(*) FROM t")).scalar() == 5
    engine.dispose()
    stats.dump()  # also done at exit and at most once a second while running
    by_head = {e["sql"].split()[0]: e for e in json.loads(out.read_text())}
    assert (by_head["INSERT"]["count"], by_head["INSERT"]["rows"]) == (1, 5)  # executemany: one statement
    assert (by_head["UPDATE"]["count"], by_head["UPDATE"]["rows"]) == (1, 2)
    assert (by_head["SELECT"]["count"], by_head["SELECT"]["rows"]) == (1, 0)  # reads write nothing


def test_off_unless_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("COOPGRID_DB_STATS", raising=False)
    assert maybe_attach(create_engine("sqlite://")) is None
