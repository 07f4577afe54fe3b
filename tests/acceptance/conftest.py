"""Fixtures for tests that run the grid as processes, as a user would."""

from dataclasses import dataclass

import pytest

from coopgrid.local import LocalGrid
from tests.integration.conftest import pg_database  # noqa: F401  (fixture)


@pytest.fixture
def grid(tmp_path):
    """A LocalGrid in its own data dir; every process it started is stopped afterwards."""
    g = LocalGrid(tmp_path / "grid")
    yield g
    g.stop(timeout=15)


@dataclass
class CoordinatorDb:
    """The store a test's coordinator runs on: its URL, and the flags that give it to ``coopgrid coordinator``."""

    url: str
    args: tuple[str, ...]


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def coordinator_db(request: pytest.FixtureRequest, tmp_path) -> CoordinatorDb:
    """Each store in turn: the SQLite file in the grid's data dir (the default), or a fresh
    PostgreSQL database (created for the test, dropped after) through ``--database-url``.

    Ask for it before ``grid``, so the grid's processes are stopped before the database is dropped."""
    if request.param == "sqlite":
        return CoordinatorDb(f"sqlite:///{tmp_path / 'grid' / 'coopgrid.sqlite'}", ())
    url = request.getfixturevalue("pg_database")()
    return CoordinatorDb(url, ("--database-url", url))
