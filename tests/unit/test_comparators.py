"""Each task type's comparator (``agree``) at its edges, and the EIP-712 type strings.

Validation trusts ``agree`` to tell two workers' results apart: every field a
result carries must be compared, and every tolerance must be exactly the one
documented. Written to kill the mutants ``make mutate`` found surviving; each
case flips one thing between two otherwise equal outputs.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest

from coopgrid import datasets, tasks
from coopgrid.protocol import _BATCH_TYPEHASH, _RESULT_TYPEHASH, _type_hash, keccak
from coopgrid.task_demos import write_csv_shards
from coopgrid.tasks.base import run_local

# -- classify: labels, errors and top-k exact; confidences within 5e-4 (4 decimals, half a unit) --

CLASSIFY = {"labels": ["red", "blue"], "confidence": [0.5, 0.25], "errors": [[2, "cannot decode image"]]}


def test_classify_confidences_agree_within_half_a_unit_of_the_fourth_decimal() -> None:
    t = tasks.get("classify")
    near = {**CLASSIFY, "confidence": [0.5004, 0.25]}
    far = {**CLASSIFY, "confidence": [0.50055, 0.25]}
    assert t.agree(CLASSIFY, near) and t.agree(near, CLASSIFY)
    assert not t.agree(CLASSIFY, far) and not t.agree(far, CLASSIFY)


def test_classify_errors_must_match() -> None:
    t = tasks.get("classify")
    assert t.agree(CLASSIFY, copy.deepcopy(CLASSIFY))  # the same errors: agree
    assert not t.agree(CLASSIFY, {**CLASSIFY, "errors": []})
    assert not t.agree(CLASSIFY, {**CLASSIFY, "errors": [[1, "cannot decode image"]]})
    assert not t.agree(CLASSIFY, {**CLASSIFY, "top_k": [None, None]})  # one has top-k, the other not


TOP_K = {
    "labels": ["red", "blue"],
    "confidence": [0.5, None],  # no confidence for an item that could not be read
    "top_k": [[["red", "blue", "green"], [0.5, 0.3, 0.2]], None],
    "errors": [[1, "cannot decode image"]],
}


def with_top(first: list | None) -> dict:
    out = copy.deepcopy(TOP_K)
    out["top_k"][0] = first
    return out


@pytest.mark.parametrize(
    ("first", "same"),
    [
        ([["red", "blue", "green"], [0.5, 0.3, 0.2]], True),
        ([["red", "green", "blue"], [0.5, 0.3, 0.2]], True),  # lower ranks may swap on near-ties
        ([["red", "blue", "green"], [0.5, 0.3004, 0.2]], True),  # within the tolerance
        ([["blue", "red", "green"], [0.5, 0.3, 0.2]], False),  # the best label must match
        ([["red", "blue", "green"], [0.5, 0.31, 0.2]], False),
        (None, False),  # read by one worker, not by the other
    ],
)
def test_classify_top_k_agrees_on_the_best_label_and_close_confidences(first: list | None, same: bool) -> None:
    t = tasks.get("classify")
    other = with_top(first)
    assert t.agree(TOP_K, other) is same and t.agree(other, TOP_K) is same


# -- embed: cosine >= 0.999 per row, error rows named alike and then ignored ----------------------


def embed(rows: list[list[float]], errors: list[list] | None = None) -> dict:
    return {"emb": np.array(rows, dtype=np.float32), "errors": errors or []}


@pytest.mark.parametrize(
    ("a", "b", "same"),
    [
        ([[1, 2]], [[2, 4]], True),  # same direction, other length
        ([[2, 4]], [[1, 2]], True),
        ([[1, 0]], [[1, 1]], False),  # 45 degrees apart
        ([[0.1, 0]], [[0.1, 0]], True),  # short vectors are compared by direction too
        ([[1e-3, 0]], [[1e-3, 1e-5]], True),  # cosine 0.99995
        ([[1, 0]], [[0, 1]], False),
    ],
)
def test_embed_compares_each_row_by_cosine(a: list, b: list, same: bool) -> None:
    assert tasks.get("embed").agree(embed(a), embed(b)) is same


def test_embed_error_rows_must_be_the_same_and_are_not_compared() -> None:
    t = tasks.get("embed")
    a = embed([[1, 0], [0, 0]], [[1, "not UTF-8 text"]])
    b = embed([[1, 0], [5, 7]], [[1, "not UTF-8 text"]])  # whatever sits in an error row
    assert t.agree(a, b)
    assert t.agree(embed([[0, 0]], [[0, "x"]]), embed([[3, 4]], [[0, "y"]]))  # every row an error
    assert not t.agree(a, embed([[1, 0], [0, 0]], [[0, "not UTF-8 text"]]))
    assert not t.agree(a, embed([[0, 1], [0, 0]], [[1, "not UTF-8 text"]]))  # the other rows still count


# -- ocr: texts within an edit distance of 5% of the longer one; errors and gaps alike ------------


def test_ocr_texts_agree_up_to_five_percent_edit_distance_inclusive() -> None:
    t = tasks.get("ocr")
    text = "abcdefghijklmnopqrst"  # 20 characters: one edit is exactly 5%
    a = {"items": [{"text": text}], "errors": []}
    assert t.agree(a, {"items": [{"text": "X" + text[1:]}], "errors": []})
    assert not t.agree(a, {"items": [{"text": "XY" + text[2:]}], "errors": []})


def test_ocr_a_result_with_an_error_or_a_gap_never_agrees_with_one_without() -> None:
    t = tasks.get("ocr")
    a = {"items": [{"text": "same"}], "errors": []}
    assert not t.agree(a, {"items": [{"text": "same"}], "errors": [[0, "cannot decode image"]]})
    assert not t.agree(a, {"items": [None], "errors": []})
    assert not t.agree({"items": [None], "errors": []}, a)


# -- stats: counts exact, float sums within 1e-12 relative --------------------------------------


@pytest.fixture(scope="module")
def stats_output(tmp_path_factory: pytest.TempPathFactory) -> dict:
    path = tmp_path_factory.mktemp("stats") / "s"
    write_csv_shards(path, 200, shards=1, bad_rows=1)
    t = tasks.get("stats")
    _, outputs = run_local(t, datasets.load_items(path), 300, {})
    return outputs[0].output


@pytest.mark.parametrize(
    "change",
    [
        lambda o: o.__setitem__("errors", o["errors"] + [[999, "another bad row"]]),
        lambda o: o.__setitem__("k", o["k"] + 1),
        lambda o: o["columns"].pop(next(iter(o["columns"]))),
        lambda o: o.__setitem__("rows", o["rows"] + 1),
        lambda o: next(iter(o["columns"].values())).__setitem__("sum", None),
        lambda o: next(iter(o["columns"].values())).__setitem__("m2", next(iter(o["columns"].values()))["m2"] + 0.5),
    ],
    ids=["errors", "k", "columns", "rows", "sum-missing", "m2"],
)
def test_stats_results_differing_in_one_field_disagree(stats_output: dict, change) -> None:
    t = tasks.get("stats")
    other = copy.deepcopy(stats_output)
    change(other)
    assert t.agree(stats_output, copy.deepcopy(stats_output))
    assert not t.agree(stats_output, other) and not t.agree(other, stats_output)


def test_stats_float_tolerance_is_relative_1e_12_with_zero_near_zero(stats_output: dict) -> None:
    t = tasks.get("stats")
    a, b = copy.deepcopy(stats_output), copy.deepcopy(stats_output)
    col_a, col_b = next(iter(a["columns"].values())), next(iter(b["columns"].values()))
    col_a["sum"], col_b["sum"] = 1.0, 1.0 + 5e-13
    assert t.agree(a, b)
    col_b["sum"] = 1.0 + 5e-12
    assert not t.agree(a, b)
    col_a["sum"], col_b["sum"] = 0.0, 1e-310  # both zero to within rounding
    assert t.agree(a, b)
    col_b["sum"] = 0.5
    assert not t.agree(a, b)


# -- the EIP-712 type strings every wallet hashes ---------------------------------------------


def test_the_eip712_type_hashes_are_those_of_the_documented_type_strings() -> None:
    result = "Result(bytes32 jobId,uint64 taskIndex,bytes32 inputHash,bytes32 modelHash,bytes32 outputHash)"
    batch = "ResultBatch(address worker,uint64 lease,Result[] results)"
    assert _type_hash("Result") == _RESULT_TYPEHASH == keccak(result.encode())
    assert _type_hash("ResultBatch") == _BATCH_TYPEHASH == keccak((batch + result).encode())
