import numpy as np
import pyarrow.parquet as pq
import pytest

from coopgrid import datasets, tasks
from coopgrid.errors import InvalidInput
from coopgrid.tasks.base import TaskOutput


@pytest.fixture
def digits_model(digits_onnx):
    return digits_onnx  # trained once per session (tests/conftest.py)


def test_builtins_are_registered_through_entry_points():
    assert {"echo", "classify"} <= set(tasks.available())
    with pytest.raises(InvalidInput, match="unknown task type 'nope'"):
        tasks.get("nope")


def test_trained_model_reports_held_out_accuracy(digits_model):
    assert digits_model.metrics["test_accuracy"] > 0.9
    assert digits_model.metrics["test_items"] == 450


def test_classify_split_run_reduce_labels_every_item_once(digits_model, tmp_path):
    t = tasks.get("classify")
    params = t.validate_params({})
    data = datasets.digits(1000)
    model = t.load_model(digits_model.onnx, {})
    outputs, first = [], 0
    for i, (blob, n) in enumerate(t.split(data, 300, params)):
        out = t.run(blob, model, params)
        assert t.decode(t.canonical(out)) == out
        outputs.append(TaskOutput(i, first, n, "0xabc", out))
        first += n
    assert [o.n_items for o in outputs] == [300, 300, 300, 100]
    figures = t.reduce(outputs, data, params, tmp_path / "out.parquet")
    table = pq.read_table(tmp_path / "out.parquet").to_pydict()
    assert table["item_id"] == data.item_ids()
    assert figures["accuracy"] > 0.9
    assert figures["accuracy"] == pytest.approx(np.mean(np.array(table["label"]) == data.y))


def test_classify_output_is_byte_identical_across_runs(digits_model):
    t = tasks.get("classify")
    params = t.validate_params({})
    blob, _ = next(iter(t.split(datasets.digits(64), 64, params)))
    a = t.canonical(t.run(blob, t.load_model(digits_model.onnx, {}), params))
    b = t.canonical(t.run(blob, t.load_model(digits_model.onnx, {}), params))
    assert a == b


def test_classify_agree_tolerates_tiny_float_differences_but_not_labels():
    t = tasks.get("classify")
    a = {"labels": [1, 2], "confidence": [0.9, 0.8]}
    assert t.agree(a, {"labels": [1, 2], "confidence": [0.9001, 0.8]})
    assert not t.agree(a, {"labels": [1, 3], "confidence": [0.9, 0.8]})
    assert not t.agree(a, {"labels": [1, 2], "confidence": [0.7, 0.8]})


def test_echo_round_trips_and_reduce_checks_values(tmp_path):
    t = tasks.get("echo")
    params = t.validate_params({})
    data = datasets.sequence(10)
    outs = [TaskOutput(i, i * 4, n, "w", t.run(b, None, params)) for i, (b, n) in enumerate(t.split(data, 4, params))]
    assert t.reduce(outs, data, params, tmp_path / "o.parquet") == {"echo_mismatches": 0}
    assert pq.read_table(tmp_path / "o.parquet").num_rows == 10
