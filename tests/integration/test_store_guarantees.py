"""README promises about the store, checked by behaviour on both backends.

"The database itself refuses a second accepted result for a task": not that an
index exists, but that an INSERT of a second accepted row, made with plain SQL
behind the store's back, is refused by SQLite and by PostgreSQL.

"After three errors the task is marked failed and reported": errors are
driven one at a time, and the task must still be reissued after each of the
first two and failed at the third, whatever the code's constant says.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import sqlalchemy.exc
from sqlalchemy import insert, select

from coopgrid.store import SqlStore
from coopgrid.store import schema as s
from tests.integration.test_store import LEASE, T0, err, make_job, make_worker, ok, results_by_status, sig

README = Path(__file__).resolve().parents[2] / "README.md"
NUMBERS = {"one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8, "nine": 9, "ten": 10}


def promised_max_errors() -> int:
    """The number of errors after which the README promises a task is failed."""
    text = " ".join(README.read_text().split())
    found = re.search(r"after (\w+) errors the task is marked failed", text)
    assert found, "README.md no longer says after how many errors a task is failed"
    word = found.group(1)
    return int(word) if word.isdigit() else NUMBERS[word]


def accepted_row(store: SqlStore, task_index: int, job_id: str) -> dict:
    with store.engine.connect() as conn:
        row = conn.execute(
            select(s.results)
            .join(s.tasks, s.tasks.c.id == s.results.c.task_id)
            .where(s.results.c.job_id == job_id, s.tasks.c.idx == task_index, s.results.c.status == "accepted")
        ).mappings().one()
    return dict(row)


def test_the_database_refuses_a_second_accepted_result_for_a_task(store: SqlStore) -> None:
    job = make_job(store, 2)
    w = make_worker(store)
    lease = store.lease(w.id, 10, [], LEASE, T0)
    assert lease is not None
    out = store.record_results(lease.id, w.id, sig(), [ok(r.replica_id, w) for r in lease.replicas], [], T0 + 1)
    assert set(out.statuses.values()) == {"accepted"}
    first = accepted_row(store, 0, job.id)
    second = {k: v for k, v in first.items() if k not in ("id", "status")} | {"output_hash": "ab" * 32, "output": b"another answer"}

    # the same row under any other status is fine: the refusal is about "accepted" alone
    with store.engine.begin() as conn:
        conn.execute(insert(s.results).values(**second, status="duplicate"))

    # a second accepted result, written with plain SQL (no store code runs): the database says no
    with pytest.raises(sqlalchemy.exc.IntegrityError) as refused:
        with store.engine.begin() as conn:
            conn.execute(insert(s.results).values(**second, status="accepted"))
    assert "uq_results_accepted_task" in str(refused.value) or "UNIQUE constraint failed" in str(refused.value)

    # ... and not even by turning another of the task's rows into an accepted one
    with pytest.raises(sqlalchemy.exc.IntegrityError):
        with store.engine.begin() as conn:
            conn.execute(
                s.results.update()
                .where(s.results.c.task_id == first["task_id"], s.results.c.status == "duplicate")
                .values(status="accepted")
            )
    assert results_by_status(store, job.id) == {"accepted": 2, "duplicate": 1}  # one per task, still
    assert accepted_row(store, 0, job.id)["id"] == first["id"]


def test_a_task_is_reissued_after_each_error_and_failed_at_the_promised_count(store: SqlStore) -> None:
    limit = promised_max_errors()
    job = make_job(store, 2)
    w = make_worker(store)
    now = T0
    for error in range(1, limit + 1):
        lease = store.lease(w.id, 10, [], LEASE, now)
        assert lease is not None, f"task 0 was not reissued after {error - 1} error(s); the README promises {limit}"
        mine = {r.task_index: r.replica_id for r in lease.replicas}
        results = [err(mine[0])] + ([ok(mine[1], w)] if 1 in mine else [])
        out = store.record_results(lease.id, w.id, sig(), results, [], now + 1)
        assert out.statuses[mine[0]] == "error"
        got = store.get_job(job.id)
        if error < limit:
            assert got.tasks_failed == 0, f"task 0 failed after {error} error(s); the README promises {limit}"
            assert store.replica_counts(job.id).get("ready") == 1, f"task 0 not put back after error {error}"
            assert out.completed_jobs == []
        else:
            assert got.tasks_failed == 1, f"task 0 not failed after {limit} errors"
            assert (got.tasks_done, got.complete) == (1, True)  # reported: the job completes with it failed
            assert out.completed_jobs == [job.id]
        now += 2
    assert store.lease(w.id, 10, [], LEASE, now) is None  # never silently reissued again
    assert results_by_status(store, job.id) == {"accepted": 1, "error": limit}
