"""Shared fixtures. Every test gets its own data dir (and its own bucket on the one S3 server process)."""

import os

import pytest

from coopgrid.registry.train import TrainedModel, train_digits
from tests.s3_server import s3_server  # noqa: F401  (fixture: a moto S3 server process on loopback)


@pytest.fixture(scope="session")
def digits_onnx() -> TrainedModel:
    """The digits model, trained once per test session (training is the slow part)."""
    return train_digits()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked ``serial`` restart a server the others share (PostgreSQL): among parallel test
    processes they would cut the others' connections, so there they are skipped, saying where they run."""
    if os.environ.get("PYTEST_XDIST_WORKER") is None:
        return
    skip = pytest.mark.skip(reason="restarts the PostgreSQL server the other tests share: runs alone after them "
                                   "(make test does; or pytest -n 0 -m serial)")
    for item in items:
        if "serial" in item.keywords:
            item.add_marker(skip)
