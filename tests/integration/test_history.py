"""A grid that runs for a year does not grind down: no statement of a job's path (submission,
leases, results, validation rounds, the reaper, the catch-up round, the reduction) scans a table
that grows with the grid's history (every job, task, replica, result, lease and worker it ever
had). Each one reads through an index, or walks a partial index of live work only (ready
replicas, open leases, pending results), whatever came before.

Checked on SQLite's plans (EXPLAIN QUERY PLAN of every statement the coordinator ran, with its
own parameters): PostgreSQL chooses its plans from table statistics, and on a test's small tables
it rightly scans them; its hot queries are measured in bench/dispatch.py instead."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import event

from coopgrid.store import schema as s
from tests.integration.test_api import Grid, Worker, lease_all, make_grid  # noqa: F401 (make_grid is a fixture)

@pytest.fixture
def store_url(tmp_path) -> str:  # noqa: ANN001 (SQLite only: see above)
    return f"sqlite:///{tmp_path / 'grid.db'}"


#: tables with a row per job, task, replica, result, batch, lease or worker the grid ever had
GROWING = {"jobs", "tasks", "replicas", "results", "result_batches", "leases", "workers", "reputation", "disputes"}


def partial_indexes() -> set[str]:
    """Indexes of live work only (a WHERE clause: ready replicas, open leases, pending results...)."""
    return {
        index.name
        for table in s.metadata.tables.values()
        for index in table.indexes
        if index.dialect_options["sqlite"].get("where") is not None
    }


#: the default policy, with runs short enough for a few small jobs to reach every trust step: lone
#: results judged as recorded, audits, gold from final answers, finality by a worker's checks
QUICK_TRUST = {"trust_run": 2, "finality_checks": 2, "gold_rate": 0.5}


def run_job(grid: Grid, workers: list[Worker], n: int) -> dict[str, Any]:
    """An echo job under (nearly) the default trust policy, worked to its output."""
    job = grid.submit_echo(n, 1, trust=QUICK_TRUST)
    for _ in range(10):
        leases = lease_all(workers)
        if not leases:
            break
        for w, lease in leases:
            assert w.submit(lease["lease_id"], w.batch(lease)).status_code == 200
    return grid.wait_until_done(job["id"])


def scans_of_history(conn: Any, statement: str, parameters: Any) -> list[str]:
    """The lines of the statement's plan that read a growing table whole (or a whole index of it)."""
    live = partial_indexes()
    bad = []
    for row in conn.exec_driver_sql("EXPLAIN QUERY PLAN " + statement, parameters):
        line = row[-1]
        m = re.match(r"SCAN (\w+)(?: AS \w+)?(?: USING (?:COVERING )?INDEX (\w+))?", line)
        if m is None:
            continue
        table, index = m.group(1), m.group(2)
        aliased = re.search(r"FROM (\w+) (?:AS )?" + re.escape(table) + r"\b", statement)
        table = aliased.group(1) if aliased and table not in GROWING else table
        if table in GROWING and index not in live:
            bad.append(line)
    return bad


def test_no_statement_of_a_jobs_path_scans_what_the_grid_ran_before(make_grid: Callable[..., Grid]) -> None:
    grid = make_grid(audit_wait_seconds=0.001)  # audits wait (that path's statements), but not for long
    workers = [Worker(grid, owner=o).register() for o in ("ann", "bob", "carl")]
    seen: dict[str, Any] = {}

    def capture(conn, cursor, statement, parameters, context, executemany):  # noqa: ANN001
        if statement.lstrip()[:6].upper() in ("SELECT", "UPDATE", "DELETE", "INSERT", "WITH"):
            seen.setdefault(statement, parameters[0] if executemany else parameters)

    engine = grid.app.store.engine
    event.listen(engine, "before_cursor_execute", capture)
    try:
        # jobs in a row: the later ones run on a history (jobs, tasks, replicas, results, leases and
        # batches of the past; SQLite's plans do not depend on table sizes, so every statement is
        # checked against it), and the workers' runs grow into every trust step
        for _ in range(4):
            job = run_job(grid, workers, 30)
            assert job["tasks_done"] == 30
        grid.app.store.reap_expired(0.0)  # the periodic duties too
        grid.app.scheduler.validator.validate()
        grid.app.store.complete_unfinished_jobs()
    finally:
        event.remove(engine, "before_cursor_execute", capture)

    # the job's whole path was seen: leases, gold from final answers, lone results judged as
    # recorded, audits, validation rounds, finality by checks, the reduction
    path = " ".join(seen)
    for step in ("UPDATE replicas SET state", "AND t.rooted", "AND t.final", "issued = 1", "checks_at <=", "LIMIT"):
        assert step in path, step
    with engine.connect() as conn:
        kinds = {k for (k,) in conn.exec_driver_sql("SELECT DISTINCT kind FROM replicas")}
    assert "audit" in kinds, kinds  # (gold was looked for: rooted and final answers, above)
    with engine.connect() as conn:
        found = {stmt: bad for stmt, params in seen.items() if (bad := scans_of_history(conn, stmt, params))}
    assert not found, "\n\n".join(f"{' '.join(stmt.split())[:400]}\n  -> {bad}" for stmt, bad in found.items())
