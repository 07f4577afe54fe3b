"""`coopgrid submit --gold FILE`: reading the labelled items, and making tasks of them."""

from __future__ import annotations

import base64
from pathlib import Path

import numpy as np
import orjson
import pytest

from coopgrid import tasks
from coopgrid.datasets import Dataset, sequence
from coopgrid.gold import GoldFileError, read_gold
from coopgrid.tasks.base import gold_input
from coopgrid.tasks.echo import npy_bytes


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "gold.jsonl"
    path.write_text(text)
    return path


def test_each_line_is_an_item_and_its_answer_with_its_line_number(tmp_path: Path) -> None:
    path = write(tmp_path, '{"input": [3], "output": [3]}\n\n  {"output": "cat", "input": "a photo"}  \n')
    assert read_gold(path) == [
        {"input": [3], "output": [3], "line": 1},
        {"input": "a photo", "output": "cat", "line": 3},
    ]


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ('{"input": [1], "output": [1]}\n{"input": [2], "output": [2]\n', ["line 2", "not JSON", '"input"']),
        ('[1, 2]\n', ["line 1", "a JSON list, not an object"]),
        ('{"input": [1]}\n', ["line 1", "no 'output'"]),
        ('{"output": 1}\n', ["line 1", "no 'input'"]),
        ('{"input": 1, "output": 1, "label": 2}\n', ["line 1", "unknown key(s) 'label'"]),
        ("\n\n", ["holds no labelled items"]),
    ],
)
def test_a_file_that_cannot_be_used_is_refused_naming_the_line_and_the_fix(
    tmp_path: Path, text: str, says: list[str]
) -> None:
    with pytest.raises(GoldFileError) as exc:
        read_gold(write(tmp_path, text))
    for part in says:
        assert part in exc.value.message


def test_a_file_that_is_not_text_or_not_there_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "gold.jsonl"
    path.write_bytes(b'{"input": "\xff\xfe", "output": 1}\n')
    with pytest.raises(GoldFileError, match="line 1: not UTF-8"):
        read_gold(path)
    with pytest.raises(GoldFileError, match="cannot read the gold file"):
        read_gold(tmp_path / "missing.jsonl")


def test_more_items_than_the_limit_are_refused(tmp_path: Path) -> None:
    path = write(tmp_path, '{"input": [1], "output": [1]}\n' * 4)
    assert len(read_gold(path, limit=4)) == 4
    with pytest.raises(GoldFileError, match="line 4: more than 3 labelled items"):
        read_gold(path, limit=3)


# -- items made tasks ---------------------------------------------------------------------


def test_an_echo_item_becomes_the_one_item_task_an_honest_worker_answers_with_it() -> None:
    echo = tasks.get("echo")
    like = sequence(10)
    data, n, known = echo.gold_task([42], [42], like, echo.validate_params({}))
    assert n == 1
    assert data == npy_bytes(np.array([[42]], dtype=np.int64))
    assert known == echo.canonical(echo.run(data, None, echo.validate_params({})))


@pytest.mark.parametrize(
    ("item", "output", "says"),
    [
        ([1, 2], [1, 2], "input has shape [2]; the dataset's items have shape [1]"),
        ([1.5], [1.5], "would be rounded"),
        (["x"], ["x"], "input must be numbers"),
        ([1], [2, 3], "output of echo is the item itself"),
    ],
)
def test_an_echo_item_that_does_not_fit_the_dataset_says_why(item: object, output: object, says: str) -> None:
    echo = tasks.get("echo")
    with pytest.raises(ValueError, match=says.replace("[", r"\[").replace("]", r"\]")):
        echo.gold_task(item, output, sequence(10), echo.validate_params({}))


def test_a_classify_item_needs_only_its_label() -> None:
    classify = tasks.get("classify")
    assert orjson.loads(classify.gold_output(3, sequence(1))) == {"labels": [3]}
    assert orjson.loads(classify.gold_output({"labels": ["cat"]}, sequence(1))) == {"labels": ["cat"]}
    # judged on the label alone, whichever way the submitter wrote the class
    known = classify.decode(classify.gold_output(3, sequence(1)))
    assert not classify.fails_gold(known, {"labels": [3], "confidence": [0.91]})
    assert not classify.fails_gold(classify.decode(classify.gold_output("3", sequence(1))), {"labels": [3]})
    assert classify.fails_gold(known, {"labels": [4], "confidence": [0.99]})
    assert classify.fails_gold(known, {"confidence": [0.99]})
    # an item the worker says it cannot decode (a broken image in the file) proves nothing
    assert not classify.fails_gold(known, {"labels": [None], "confidence": [None], "errors": [[0, "bad image"]]})
    for bad in (3.5, True, {"labels": [1, 2]}, {"label": 1}, None):
        with pytest.raises(ValueError, match="output of classify is the label"):
            classify.gold_output(bad, sequence(1))


def test_an_item_of_a_dataset_of_files_is_text_or_base64() -> None:
    ocr = tasks.get("ocr")  # a type of files (images of text)
    files = Dataset.from_items([b"alpha", b"beta"], "image")
    params = ocr.validate_params({})
    text_task = gold_input(ocr, "gamma", files, params)
    raw_task = gold_input(ocr, {"base64": base64.b64encode(b"gamma").decode()}, files, params)
    assert text_task == raw_task and text_task[1] == 1
    assert text_task[0] == next(iter(ocr.split(Dataset.from_items([b"gamma"], "image"), 1, params)))[0]
    with pytest.raises(ValueError, match="a string"):
        gold_input(ocr, 7, files, params)
    with pytest.raises(ValueError, match="does not decode"):
        gold_input(ocr, {"base64": "not base64!"}, files, params)
