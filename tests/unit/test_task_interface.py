import pytest

from coopgrid import datasets, tasks
from coopgrid.errors import InvalidInput
from coopgrid.tasks.base import ItemParams, TaskType


def test_every_built_in_registers_through_the_entry_point_group():
    from importlib.metadata import entry_points

    names = {ep.name: ep.value for ep in entry_points(group="coopgrid.tasks")}
    assert {"echo", "classify", "ocr", "embed", "preprocess", "stats"} <= set(names)
    assert names["ocr"] == "coopgrid.tasks.ocr:OcrTask"
    for name in ("ocr", "embed", "preprocess", "stats"):
        t = tasks.get(name)
        assert isinstance(t, TaskType) and t.name == name
        assert issubclass(t.Params, ItemParams)  # every built-in can split by bytes


@pytest.mark.parametrize("name", ["ocr", "embed", "preprocess", "stats", "classify"])
def test_unknown_params_are_refused_by_name(name):
    with pytest.raises(Exception, match="bogus"):
        tasks.get(name).validate_params({"bogus": 1})


@pytest.mark.parametrize(
    "name, dataset, message",
    [
        ("ocr", datasets.sequence(3), "ocr needs image items"),
        ("embed", datasets.sequence(3), "embed needs text"),
        ("preprocess", datasets.sequence(3), "preprocess mode=text needs text"),
        ("classify", datasets.Dataset.from_items([b"a"], "text"), "classify needs images"),
    ],
)
def test_a_dataset_of_the_wrong_kind_is_refused_at_split_with_a_clear_message(name, dataset, message):
    t = tasks.get(name)
    with pytest.raises(InvalidInput, match=message):
        list(t.split(dataset, 2, t.validate_params({})))
