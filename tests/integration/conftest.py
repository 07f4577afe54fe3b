"""Fixtures for the store contract suite and the API tests.

``store`` is parametrized over both backends of :class:`coopgrid.store.SqlStore`:
a SQLite file in the test's tmp dir, and a fresh PostgreSQL database on
127.0.0.1:5432 (created for the test, dropped afterwards). The PostgreSQL
cases carry the ``postgres`` marker; when no server answers they are skipped,
except under CI (CI=true), where a missing server is a failure.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from coopgrid.store import SqlStore

PG_HOST = "127.0.0.1"
PG_PORT = 5432
PG_USERS = ("root", "postgres")

_pg_user: str | None = None
_pg_problem: str | None = None


def _admin_connect(user: str):
    import psycopg

    return psycopg.connect(
        host=PG_HOST, port=PG_PORT, user=user, dbname="postgres", autocommit=True, connect_timeout=5
    )


def pg_user() -> str:
    """The first of root/postgres the server lets in; skip (or fail under CI) when none does."""
    global _pg_user, _pg_problem
    if _pg_user is None and _pg_problem is None:
        problems = []
        for user in PG_USERS:
            try:
                with _admin_connect(user):
                    _pg_user = user
                    break
            except Exception as exc:  # psycopg.OperationalError, or psycopg missing
                problems.append(f"{user}: {exc}")
        else:
            _pg_problem = "; ".join(problems)
    if _pg_user is None:
        message = f"no PostgreSQL server usable at {PG_HOST}:{PG_PORT} ({_pg_problem})"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return _pg_user


@pytest.fixture
def pg_database() -> Iterator[Callable[[], str]]:
    """A factory of fresh PostgreSQL databases (SQLAlchemy URLs); every one is dropped afterwards."""
    created: list[str] = []
    user = pg_user()

    def make() -> str:
        name = f"coopgrid_test_{uuid.uuid4().hex[:12]}"
        with _admin_connect(user) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        created.append(name)
        return f"postgresql+psycopg://{user}@{PG_HOST}:{PG_PORT}/{name}"

    yield make
    with _admin_connect(user) as conn:
        for name in created:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The URL of an empty database of one backend (nothing migrated yet)."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'coopgrid.sqlite'}"
    return request.getfixturevalue("pg_database")()


@pytest.fixture
def open_store(store_url: str) -> Iterator[Callable[[], SqlStore]]:
    """Opens (and migrates) a SqlStore on ``store_url``; closes every one it opened."""
    opened: list[SqlStore] = []

    def make() -> SqlStore:
        st = SqlStore.open(store_url)
        opened.append(st)
        return st

    yield make
    for st in opened:
        st.close()


@pytest.fixture
def store(open_store: Callable[[], SqlStore]) -> SqlStore:
    return open_store()
