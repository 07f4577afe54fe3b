"""coopgrid.ledger.merkle beyond coopgrid's two leaf kinds: any ABI leaf encoding.

StandardMerkleTree takes any ``leafEncoding``, as OpenZeppelin's does. These
tests hold the generic path to eth_abi (every encoding byte-identical to
``eth_abi.encode``, the fast one-word encoders included), pin how values are
normalised and refused (each error message exactly: it is what a user reads),
and check the tree API on trees read back from dumps. They were written to
kill the mutants ``make mutate`` found surviving.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from eth_abi import encode as abi_encode
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from coopgrid.errors import InvalidInput
from coopgrid.ledger import merkle
from coopgrid.ledger.merkle import StandardMerkleTree, encode_leaf, keccak256, normalize_value

FAST = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])

BITS = (8, 16, 64, 160, 256)


def uint(bits: int) -> st.SearchStrategy[int]:
    return st.one_of(st.sampled_from([0, 1, 2**bits - 1]), st.integers(0, 2**bits - 1))


def sint(bits: int) -> st.SearchStrategy[int]:
    lo, hi = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    return st.one_of(st.sampled_from([lo, -1, 0, 1, hi]), st.integers(lo, hi))


ADDRESS = st.binary(min_size=20, max_size=20).map(lambda b: "0x" + b.hex())

#: one-word static types and their values (the fast encoders)
WORD_TYPES: dict[str, st.SearchStrategy[Any]] = {
    **{f"uint{b}": uint(b) for b in BITS},
    **{f"int{b}": sint(b) for b in BITS},
    "address": ADDRESS,
    "bool": st.booleans(),
    **{f"bytes{n}": st.binary(min_size=n, max_size=n) for n in (1, 4, 20, 31, 32)},
}
#: types eth_abi encodes (dynamic, arrays, tuples)
OTHER_TYPES: dict[str, st.SearchStrategy[Any]] = {
    "string": st.text(max_size=40),
    "bytes": st.binary(max_size=70),
    "uint8[]": st.lists(uint(8), max_size=4),
    "int16[2]": st.lists(sint(16), min_size=2, max_size=2),
    "bytes32[]": st.lists(st.binary(min_size=32, max_size=32), max_size=3),
    "(uint8,bool)": st.tuples(uint(8), st.booleans()),
    "(address,string)[]": st.lists(st.tuples(ADDRESS, st.text(max_size=8)), max_size=3),
}
ALL_TYPES = {**WORD_TYPES, **OTHER_TYPES}


@st.composite
def typed_values(draw: Any, pool: dict[str, st.SearchStrategy[Any]], max_size: int = 4) -> tuple[list[str], list[Any]]:
    types = draw(st.lists(st.sampled_from(sorted(pool)), min_size=1, max_size=max_size))
    return types, [draw(pool[t]) for t in types]


@FAST
@given(typed_values(WORD_TYPES))
def test_one_word_leaves_encode_as_eth_abi_does(tv: tuple[list[str], list[Any]]) -> None:
    types, values = tv
    assert encode_leaf(types, values) == abi_encode(types, values)
    assert merkle.leaf_hash(types, values) == "0x" + keccak256(keccak256(abi_encode(types, values))).hex()


@FAST
@given(typed_values(ALL_TYPES))
def test_any_leaf_encodes_as_eth_abi_does(tv: tuple[list[str], list[Any]]) -> None:
    types, values = tv
    assert encode_leaf(types, values) == abi_encode(types, values)


@pytest.mark.parametrize("types", [["uint8", "bool"], ["address", "int256"], ["bytes4", "bytes32"], ["string", "uint8"]])
def test_two_value_leaves_encode_as_eth_abi_does(types: list[str]) -> None:
    samples = {"uint8": 200, "bool": True, "address": "0x" + "ab" * 20, "int256": -5, "bytes4": b"\x01\x02\x03\x04",
               "bytes32": bytes(range(32)), "string": "hé"}
    values = [samples[t] for t in types]
    assert encode_leaf(types, values) == abi_encode(types, values)
    swapped = values[::-1]
    if types[0] != types[1]:
        with pytest.raises(InvalidInput):
            encode_leaf(types, swapped)


def dumped(t: str, v: Any) -> Any:
    """How a value appears in a standard-v1 dump: integers as decimal strings, bytes as 0x-hex."""
    if t.endswith("]"):
        return [dumped(t[: t.rindex("[")], x) for x in v]
    if t.startswith("("):
        return [dumped(c, x) for c, x in zip(t[1:-1].split(","), v)]
    if t.startswith(("uint", "int")):
        return str(v)
    if t.startswith("bytes"):
        return "0x" + v.hex()
    return v


@FAST
@given(st.lists(typed_values(ALL_TYPES, 3), min_size=1, max_size=6))
def test_generic_trees_dump_load_and_prove_like_openzeppelin(rows: list[tuple[list[str], list[Any]]]) -> None:
    types = rows[0][0]
    values = [v for t, v in rows if t == types]
    tree = StandardMerkleTree.of(values, types)
    dump = json.loads(json.dumps(tree.dump()))
    assert dump["leafEncoding"] == types
    assert [d["value"] for d in dump["values"]] == [[dumped(t, x) for t, x in zip(types, v)] for v in values]
    loaded = StandardMerkleTree.load(dump)
    assert loaded == tree and loaded.root == tree.root
    loaded.validate()
    for i, v in enumerate(values):
        proof = loaded.get_proof(v)  # by value: the lookup is built on first use after a load
        found = loaded.leaf_lookup(v)
        assert found in {j for j, w in enumerate(values) if w == v}  # one of its copies
        assert proof == tree.get_proof(found)
        assert merkle.verify(tree.root, types, v, proof)
        assert loaded.verify(v, proof) and loaded.verify(i, proof)


def test_a_loaded_tree_finds_values_and_says_when_one_is_absent() -> None:
    tree = StandardMerkleTree.of([[1, "a"], [2, "b"], [3, "c"]], ["uint8", "string"])
    loaded = StandardMerkleTree.load(tree.dump())
    assert [loaded.leaf_lookup([n, s]) for n, s in ((3, "c"), (1, "a"), (2, "b"))] == [2, 0, 1]
    assert loaded.leaf_lookup(["2", "b"]) == 1  # normalised first
    with pytest.raises(InvalidInput, match=r"^Leaf is not in tree$"):
        loaded.leaf_lookup([4, "d"])
    with pytest.raises(InvalidInput, match=r"^Leaf is not in tree$"):
        tree.get_proof([1, "b"])
    assert not loaded.verify([1, "b"], loaded.get_proof(0))
    assert not loaded.verify([1, 2, 3], loaded.get_proof(0))  # not even a value of this encoding


def test_trees_are_equal_only_with_the_same_nodes_values_positions_and_encoding() -> None:
    values = [[1], [2], [3]]
    tree = StandardMerkleTree.of(values, ["uint8"])
    assert tree == StandardMerkleTree.of(values, ["uint8"])
    assert tree != StandardMerkleTree.of(values, ["uint8"], sort_leaves=False) or tree.dump()["values"] == (
        StandardMerkleTree.of(values, ["uint8"], sort_leaves=False).dump()["values"]
    )
    assert tree != StandardMerkleTree.of(values, ["uint16"])  # same values, other leaves
    assert tree != StandardMerkleTree.of([[1], [2], [4]], ["uint8"])
    relabelled = StandardMerkleTree(tree._tree, tree.values, tree._tree_index, ["uint16"])
    assert tree != relabelled  # same nodes, another encoding
    moved = StandardMerkleTree(tree._tree, tree.values, tree._tree_index[::-1], ["uint8"])
    assert tree != moved
    assert tree.__eq__("a tree") is NotImplemented and tree != "a tree"


def test_validate_finds_a_changed_node_anywhere() -> None:
    tree = StandardMerkleTree.of([[i] for i in range(5)], ["uint8"])
    tree.validate()
    for i in range(len(tree.tree)):
        dump = tree.dump()
        dump["tree"][i] = "0x" + "00" * 32
        broken = StandardMerkleTree.load(dump)
        with pytest.raises(InvalidInput, match=r"^(Merkle tree is invalid|Merkle tree does not contain the expected value)$"):
            broken.validate()
    dump = tree.dump()
    dump["tree"] = dump["tree"][:-1]  # a node missing: a parent without its right child
    dump["values"] = [v for v in dump["values"] if v["treeIndex"] < len(dump["tree"])]
    with pytest.raises(InvalidInput, match=r"^Merkle tree is invalid$"):
        StandardMerkleTree.load(dump).validate()
    empty = StandardMerkleTree([], [], [], ["uint8"])
    with pytest.raises(InvalidInput, match=r"^Merkle tree is invalid$"):
        empty.validate()


def test_a_value_pointing_at_an_internal_node_has_no_proof() -> None:
    tree = StandardMerkleTree.of([[1], [2], [3]], ["uint8"])
    dump = tree.dump()
    dump["values"][0]["treeIndex"] = 0  # the root
    broken = StandardMerkleTree.load(dump)
    with pytest.raises(InvalidInput, match=r"^Merkle tree does not contain the expected value$"):
        broken.get_proof(0)
    dump["values"][0]["treeIndex"] = 99
    with pytest.raises(InvalidInput, match=r"^Index out of bounds$"):
        StandardMerkleTree.load(dump).get_proof(0)
    for bad in (-1, 3, "0"):
        with pytest.raises(InvalidInput, match=r"^Index out of bounds$"):
            tree.get_proof(bad) if bad != "0" else tree.tree_index(bad)  # type: ignore[arg-type]
    assert [tree.tree_index(i) for i in range(3)] == [v["treeIndex"] for v in tree.dump()["values"]]


def test_render_draws_the_tree_like_openzeppelin() -> None:
    tree = StandardMerkleTree.of([[1], [2], [3]], ["uint8"])
    n = tree.tree
    assert tree.render() == "\n".join([
        f"0) {n[0]}",
        f"├─ 1) {n[1]}",
        f"│  ├─ 3) {n[3]}",
        f"│  └─ 4) {n[4]}",
        f"└─ 2) {n[2]}",
    ])


def test_nodes_in_a_dump_may_use_any_hex_prefix_case() -> None:
    tree = StandardMerkleTree.of([[1], [2], [3]], ["uint8"])
    dump = tree.dump()
    dump["tree"] = ["0X" + h[2:].upper() for h in dump["tree"]]
    assert StandardMerkleTree.load(dump) == tree
    dump["tree"][1] = dump["tree"][1][2:]  # no prefix at all
    assert StandardMerkleTree.load(dump) == tree
    dump["tree"][1] = "0x" + "ab" * 31
    with pytest.raises(InvalidInput, match=r"^Merkle tree nodes must be 32 bytes long$"):
        StandardMerkleTree.load(dump)
    dump["tree"][1] = "0x" + "zz" * 32
    with pytest.raises(InvalidInput, match=r"^not a hex node: '0xzz"):
        StandardMerkleTree.load(dump)
    dump["tree"][1] = 5
    with pytest.raises(InvalidInput, match=r"^not a 32-byte node: 5$"):
        StandardMerkleTree.load(dump)


@pytest.mark.parametrize(
    ("types", "value", "normalised"),
    [
        (["uint8"], ["0x10"], (16,)),
        (["uint8"], ["0X1f"], (31,)),
        (["uint8"], [" 12 "], (12,)),
        (["int8"], ["-0x10"], (-16,)),
        (["int8"], ["-0X10"], (-16,)),
        (["int8"], ["-128"], (-128,)),
        (["uint256"], [2**256 - 1], (2**256 - 1,)),
        (["int8"], [127], (127,)),
        (["bytes2"], ["0XABCD"], (b"\xab\xcd",)),
        (["bytes2"], ["abcd"], (b"\xab\xcd",)),
        (["bytes2"], [bytearray(b"\x01\x02")], (b"\x01\x02",)),
        (["bytes"], [memoryview(b"xy")], (b"xy",)),
        (["address"], ["0X" + "AB" * 20], ("0x" + "ab" * 20,)),
        (["address"], [bytes(range(20))], ("0x" + bytes(range(20)).hex(),)),
        (["uint8[2]"], [(1, 2)], ((1, 2),)),
        (["(uint8,bool)"], [[1, False]], ((1, False),)),
        (["string"], ["é"], ("é",)),
    ],
)
def test_values_are_normalised(types: list[str], value: list[Any], normalised: tuple[Any, ...]) -> None:
    assert normalize_value(types, value) == normalised
    assert StandardMerkleTree.of([value], types).values == [normalised]


@pytest.mark.parametrize(
    ("types", "value", "message"),
    [
        (["uint8"], [256], "uint8 value out of range: 256"),
        (["uint8"], [-1], "uint8 value out of range: -1"),
        (["int8"], [128], "int8 value out of range: 128"),
        (["int8"], [-129], "int8 value out of range: -129"),
        (["uint8"], [True], "uint8 value must be an integer, not True"),
        (["uint8"], ["1.5"], "uint8 value is not an integer: '1.5'"),
        (["uint8"], ["0xzz"], "uint8 value is not an integer: '0xzz'"),
        (["uint8"], [1.5], "uint8 value must be an integer, not float"),
        (["bool"], [1], "bool value must be true or false, not 1"),
        (["bytes4"], [b"abc"], "bytes4 value must be 4 bytes, got 3"),
        (["bytes4"], ["0xzz"], "bytes4 value is not hex: '0xzz'"),
        (["bytes4"], [5], "bytes4 value must be bytes or hex, not int"),
        (["string"], [b"x"], "string value must be a str, not bytes"),
        (["address"], ["0x" + "ab" * 19], "not an address: '0x" + "ab" * 19 + "'"),
        (["address"], ["0x" + "zz" * 20], "not an address: '0x" + "zz" * 20 + "'"),
        (["address"], ["1x" + "ab" * 20], "not an address: '1x" + "ab" * 20 + "'"),
        (["address"], [bytes(19)], "not an address: " + repr(bytes(19))),
        (["uint8[]"], [5], "uint8[] value must be a list"),
        (["uint8[2]"], [[1, 2, 3]], "uint8[2] value must have 2 items"),
        (["(uint8,bool)"], [[1]], "(uint8,bool) value must have 2 items"),
        (["(uint8,bool)"], [7], "(uint8,bool) value must have 2 items"),
        (["fixed128x18"], [1], "fixed128x18 leaves are not supported"),
        (["uint8", "bool"], [1], "leaf has 1 values for 2 types"),
        (["uint8"], "1", "a leaf value is a list with one item per type"),
        (["uint8"], 1, "a leaf value is a list with one item per type"),
    ],
)
def test_bad_values_are_refused_saying_what_is_wrong(types: list[str], value: Any, message: str) -> None:
    with pytest.raises(InvalidInput) as refused:
        normalize_value(types, value)
    assert refused.value.message == message


@pytest.mark.parametrize(
    ("types", "value", "message"),
    [
        (merkle.RESULT_LEAF, [b"\0" * 32] * 4, "a result leaf is (jobId, taskIndex, modelHash, inputHash, outputHash)"),
        (merkle.RESULT_LEAF, "0" * 5, "a result leaf is (jobId, taskIndex, modelHash, inputHash, outputHash)"),
        (merkle.RESULT_LEAF, [b"\0" * 31, 1, b"\0" * 32, b"\0" * 32, b"\0" * 32], "bytes32 value must be 32 bytes, got 31"),
        (merkle.RESULT_LEAF, [b"\0" * 32, 2**64, b"\0" * 32, b"\0" * 32, b"\0" * 32], f"uint64 value out of range: {2**64}"),
        (merkle.RESULT_LEAF, [b"\0" * 32, -1, b"\0" * 32, b"\0" * 32, b"\0" * 32], "uint64 value out of range: -1"),
        (merkle.REWARD_LEAF, ["0x" + "ab" * 20], "a reward leaf is (account, cumulativeAmount)"),
        (merkle.REWARD_LEAF, b"ab", "a reward leaf is (account, cumulativeAmount)"),
        (merkle.REWARD_LEAF, ["0x" + "ab" * 20, 2**256], f"uint256 value out of range: {2**256}"),
    ],
)
def test_bad_coopgrid_leaves_are_refused_saying_what_is_wrong(types: tuple[str, ...], value: Any, message: str) -> None:
    with pytest.raises(InvalidInput) as refused:
        normalize_value(types, value)
    assert refused.value.message == message


def test_coopgrid_leaves_take_their_values_in_every_accepted_form() -> None:
    h = bytes(range(32))
    as_hex = "0x" + h.hex()
    assert normalize_value(merkle.RESULT_LEAF, [as_hex, "7", h.hex(), bytearray(h), h]) == (h, 7, h, h, h)
    assert merkle.result_leaf(h, 2**64 - 1, h, h, h)[1] == 2**64 - 1
    assert normalize_value(merkle.REWARD_LEAF, [bytes(range(20)), "0x10"]) == ("0x" + bytes(range(20)).hex(), 16)
    assert StandardMerkleTree.of([[as_hex, 1, h, h, h]], merkle.RESULT_LEAF).dump()["values"][0]["value"] == [
        as_hex, "1", as_hex, as_hex, as_hex
    ]
    rewards = merkle.reward_tree([("0x" + "AB" * 20, 5)])
    assert rewards.dump()["values"][0]["value"] == ["0x" + "ab" * 20, "5"]
    assert rewards == merkle.reward_tree({"0x" + "ab" * 20: 5})
