"""Shared fixtures. Every test gets its own data dir; nothing is shared between tests."""

import pytest

from coopgrid.registry.train import TrainedModel, train_digits


@pytest.fixture(scope="session")
def digits_onnx() -> TrainedModel:
    """The digits model, trained once per test session (training is the slow part)."""
    return train_digits()
