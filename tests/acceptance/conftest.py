"""Fixtures for tests that run the grid as processes, as a user would."""

import pytest

from coopgrid.local import LocalGrid


@pytest.fixture
def grid(tmp_path):
    """A LocalGrid in its own data dir; every process it started is stopped afterwards."""
    g = LocalGrid(tmp_path / "grid")
    yield g
    g.stop(timeout=15)
