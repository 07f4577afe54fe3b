"""Shared fixtures. Every test gets its own data dir (and its own bucket on the one S3 server process)."""

import pytest

from coopgrid.registry.train import TrainedModel, train_digits
from tests.s3_server import s3_server  # noqa: F401  (fixture: a moto S3 server process on loopback)


@pytest.fixture(scope="session")
def digits_onnx() -> TrainedModel:
    """The digits model, trained once per test session (training is the slow part)."""
    return train_digits()
