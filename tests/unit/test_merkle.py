"""coopgrid.ledger.merkle against OpenZeppelin's StandardMerkleTree.

Fixed vectors come from the @openzeppelin/merkle-tree repository (its test
dumps, its render() expectations and its AVA snapshot of a seeded tree), so
compatibility is checked against their roots, not against ourselves. Property
tests (hypothesis) check every proof verifies and any change to a leaf or a
proof does not.
"""

from __future__ import annotations

import json

import pytest
from eth_abi import encode as abi_encode
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from coopgrid.errors import InvalidInput
from coopgrid.ledger import merkle
from coopgrid.ledger.merkle import (
    RESULT_LEAF,
    REWARD_LEAF,
    StandardMerkleTree,
    encode_leaf,
    keccak256,
    process_proof,
    verify,
    verify_leaf,
)

# ---------------------------------------------------------------------------
# OpenZeppelin fixtures
#
# test/dumps/standard-v1.sorted.1_0_6.json and standard-v1.unsorted.1_0_6.json
# (values "a".."f", leafEncoding ["string"]; written by v1.0.6 of the library).

OZ_DUMP_SORTED = {
    "format": "standard-v1",
    "leafEncoding": ["string"],
    "tree": [
        "0x6deb52b5da8fd108f79fab00341f38d2587896634c646ee52e49f845680a70c8",
        "0x52426e0f1f65ff7e209a13b8c29cffe82e3acaf3dad0a9b9088f3b9a61a929c3",
        "0xfd3cf45654e88d1cc5d663578c82c76f4b5e3826bacaa1216441443504538f51",
        "0x8076923e76cf01a7c048400a2304c9a9c23bbbdac3a98ea3946340fdafbba34f",
        "0x965b92c6cf08303cc4feb7f3e0819c436c2cec17c6f0688a6af139c9a368707c",
        "0xeba909cf4bb90c6922771d7f126ad0fd11dfde93f3937a196274e1ac20fd2f5b",
        "0xc62a8cfa41edc0ef6f6ae27a2985b7d39c7fea770787d7e104696c6e81f64848",
        "0x9cf5a63718145ba968a01c1d557020181c5b252f665cf7386d370eddb176517b",
        "0x9c15a6a0eaeed500fd9eed4cbeab71f797cefcc67bfd46683e4d2e6ff7f06d1c",
        "0x9a4f64e953595df82d1b4f570d34c4f4f0cfaf729a61e9d60e83e579e1aa283e",
        "0x19ba6c6333e0e9a15bf67523e0676e2f23eb8e574092552d5e888c64a4bb3681",
    ],
    "values": [
        {"value": ["a"], "treeIndex": 8},
        {"value": ["b"], "treeIndex": 10},
        {"value": ["c"], "treeIndex": 7},
        {"value": ["d"], "treeIndex": 5},
        {"value": ["e"], "treeIndex": 9},
        {"value": ["f"], "treeIndex": 6},
    ],
}

OZ_DUMP_UNSORTED = {
    "format": "standard-v1",
    "leafEncoding": ["string"],
    "tree": [
        "0x23be0977360f08bb0bd7f709a7d543d2cd779c79c66d74e0441919871647de2b",
        "0x8f7234e8cfe39c08ca84a3a3e3274f574af26fd15165fe29e09cbab742daccd9",
        "0x7b0c6cd04b82bfc0e250030a5d2690c52585e0cc6a4f3bc7909d7723b0236ece",
        "0x03707d7802a71ca56a8ad8028da98c4f1dbec55b31b4a25d536b5309cc20eda9",
        "0xfa914d99a18dc32d9725b3ef1c50426deb40ec8d0885dac8edcc5bfd6d030016",
        "0xc62a8cfa41edc0ef6f6ae27a2985b7d39c7fea770787d7e104696c6e81f64848",
        "0x9a4f64e953595df82d1b4f570d34c4f4f0cfaf729a61e9d60e83e579e1aa283e",
        "0xeba909cf4bb90c6922771d7f126ad0fd11dfde93f3937a196274e1ac20fd2f5b",
        "0x9cf5a63718145ba968a01c1d557020181c5b252f665cf7386d370eddb176517b",
        "0x19ba6c6333e0e9a15bf67523e0676e2f23eb8e574092552d5e888c64a4bb3681",
        "0x9c15a6a0eaeed500fd9eed4cbeab71f797cefcc67bfd46683e4d2e6ff7f06d1c",
    ],
    "values": [
        {"value": ["a"], "treeIndex": 10},
        {"value": ["b"], "treeIndex": 9},
        {"value": ["c"], "treeIndex": 8},
        {"value": ["d"], "treeIndex": 7},
        {"value": ["e"], "treeIndex": 6},
        {"value": ["f"], "treeIndex": 5},
    ],
}

# src/standard.test.ts: tree.render() of the same trees.
OZ_RENDER_SORTED = "\n".join(
    [
        "0) 0x6deb52b5da8fd108f79fab00341f38d2587896634c646ee52e49f845680a70c8",
        "├─ 1) 0x52426e0f1f65ff7e209a13b8c29cffe82e3acaf3dad0a9b9088f3b9a61a929c3",
        "│  ├─ 3) 0x8076923e76cf01a7c048400a2304c9a9c23bbbdac3a98ea3946340fdafbba34f",
        "│  │  ├─ 7) 0x9cf5a63718145ba968a01c1d557020181c5b252f665cf7386d370eddb176517b",
        "│  │  └─ 8) 0x9c15a6a0eaeed500fd9eed4cbeab71f797cefcc67bfd46683e4d2e6ff7f06d1c",
        "│  └─ 4) 0x965b92c6cf08303cc4feb7f3e0819c436c2cec17c6f0688a6af139c9a368707c",
        "│     ├─ 9) 0x9a4f64e953595df82d1b4f570d34c4f4f0cfaf729a61e9d60e83e579e1aa283e",
        "│     └─ 10) 0x19ba6c6333e0e9a15bf67523e0676e2f23eb8e574092552d5e888c64a4bb3681",
        "└─ 2) 0xfd3cf45654e88d1cc5d663578c82c76f4b5e3826bacaa1216441443504538f51",
        "   ├─ 5) 0xeba909cf4bb90c6922771d7f126ad0fd11dfde93f3937a196274e1ac20fd2f5b",
        "   └─ 6) 0xc62a8cfa41edc0ef6f6ae27a2985b7d39c7fea770787d7e104696c6e81f64848",
    ]
)
OZ_RENDER_UNSORTED = "\n".join(
    [
        "0) 0x23be0977360f08bb0bd7f709a7d543d2cd779c79c66d74e0441919871647de2b",
        "├─ 1) 0x8f7234e8cfe39c08ca84a3a3e3274f574af26fd15165fe29e09cbab742daccd9",
        "│  ├─ 3) 0x03707d7802a71ca56a8ad8028da98c4f1dbec55b31b4a25d536b5309cc20eda9",
        "│  │  ├─ 7) 0xeba909cf4bb90c6922771d7f126ad0fd11dfde93f3937a196274e1ac20fd2f5b",
        "│  │  └─ 8) 0x9cf5a63718145ba968a01c1d557020181c5b252f665cf7386d370eddb176517b",
        "│  └─ 4) 0xfa914d99a18dc32d9725b3ef1c50426deb40ec8d0885dac8edcc5bfd6d030016",
        "│     ├─ 9) 0x19ba6c6333e0e9a15bf67523e0676e2f23eb8e574092552d5e888c64a4bb3681",
        "│     └─ 10) 0x9c15a6a0eaeed500fd9eed4cbeab71f797cefcc67bfd46683e4d2e6ff7f06d1c",
        "└─ 2) 0x7b0c6cd04b82bfc0e250030a5d2690c52585e0cc6a4f3bc7909d7723b0236ece",
        "   ├─ 5) 0xc62a8cfa41edc0ef6f6ae27a2985b7d39c7fea770787d7e104696c6e81f64848",
        "   └─ 6) 0x9a4f64e953595df82d1b4f570d34c4f4f0cfaf729a61e9d60e83e579e1aa283e",
    ]
)

# src/standard.test.ts.md: the AVA snapshot "dump (with seed=0)", leafEncoding
# ["uint256", "string[]"], values in the order given to StandardMerkleTree.of.
OZ_SEEDED_ENCODING = ["uint256", "string[]"]
OZ_SEEDED_VALUES = [
    [
        66287721640598561135213480820701815755554778029154065470876227036122175634549,
        ["yuwNJcxE", "Jo "],
    ],
    [
        8020480628005766167208460837369934190794242810260282612290465172763096588057,
        ["2,'V8", "O]Z", "m>", "", "d?^EL&", '">S| Y*+{l', "?"],
    ],
    [
        112879794757531459800339918113696494556225854331871489687900035348027579020272,
        ["%k[", "N!%'jX", "m+;qetk=1", "w&<ss", "U&MS", '"v`', "TF-~j 86*", "%`_"],
    ],
    [
        33864524538174213180864155446773490862606903779325919174280360794793758686295,
        ["Y]=o", "&zf|-$//", "N5:\\AeJMQS", "gs", "#zoWcV?"],
    ],
    [
        107050912497579409892259520427413406998189233630829093007942789472118334076630,
        ["", "D{^9}a'b", "J?", "d]hwCj`.0`", "}$8lJ6", "8D?2NFj", "|"],
    ],
    [
        54271045445295662359842113547789337750728303669052826789247544201502186884440,
        ["", "$5<'C 7\\1", "\\1^"],
    ],
    [
        111226150757742148204378581053541667604574235726642963873222725227309699221207,
        [":u>t", "<K@3}}>!qy", "7n9|dcX_"],
    ],
    [
        96858402044473560457792214960792831024578767550709334863707734917529211967478,
        [".\\;fsj", "Xm(#", "", ":Dy.`"],
    ],
    [
        13592740185343819183668649861246094997575903674719095797724991205103120326931,
        ["FDP:", "vzEG`nVv{", "]p", "G", "4'b4<Z", "cX:NZsGKl", "v2[! @7H7", "PwL\\", "eV}G>"],
    ],
    [
        5509260375875029578873473733289375469252728349290951718470281734669489179648,
        ["\"$5k'?C!", "d`)G7&{('w", "HcT7M", "P?sG", "lt\\{", "}7P<8S+O", "%5(", ""],
    ],
    [28058159076087978205069147618309547967726169776540400708466739311867552389147, []],
    [
        28066774421270881318134657595141877811725911146641727151957461238803360834378,
        ["fVnd&dJd", "<)Q", 'f"F?VG\\a', "u$&", "saIit+", ")"],
    ],
]
OZ_SEEDED_SORTED_TREE = [
    "0x157e9c38a2614a4493a0e4c38e84a1b43a932665e4d42fa2bf345824b9f101b7",
    "0xcd255af645cd649e62c7e56d324bc8b525a39bd311e05a1a5de00d73ff1fe253",
    "0xcdf36ec033d7950f6d6e01f9a66a67c3940ea15650a1300a5015d068c4543cf3",
    "0x276d63ffce14279caf791d010be5c715c64ec407dba2857628a9741fcd18bcd4",
    "0xf1e0e7f88a5f498d37d5a40af968ad629eabc52b908b9575f3a9735b3cf3a28b",
    "0xcd9fc8f6b33a02d7a601b0c77e7d36f230bc7871623435fe9aecb52887efefc1",
    "0x70ce5864fbf25654a2d3319cab6df02731e260754370f6444c03678b7e5b616a",
    "0xc9487ccb1a15e20f708fd5d6a93b049034d1ec516624b927b5f88ab37f20d06d",
    "0xada38b6fdf007666bf5b19773191f484c99c249e44e1b07d5218f9eefb5ff9b3",
    "0x0b592340f8a37b1fd772c131d85d1fe11f5b5a14ff1575163be1f48cdb569b60",
    "0x18c5e1f567b176b912f504943387285ba231aba9fab91569f5d90e3d72e881ba",
    "0xfff0acc0b7c7dd4dca88db8b9ea4cb251797946d4bf09314f9487d079cbc8168",
    "0xf37f0986a1809cffdf18075f7ff12bdfbc6b46ac4966cbc1dbecf50e59b8146f",
    "0xc141a2c1fa419824b43dbded51a5087ffe99d20964d995f96fb619781a6662d2",
    "0xb2ec04776c599a72b9b1d2dfdee91560dc9f479643e201020ded568f68c06a80",
    "0xa596ffee17c3519d0311edb25ac6d28e08407856a2c6fd1db81a9260295f2851",
    "0x8cf4ffe7174807707948cd21858ba8360b8f37a69e12696a722c9a500970b7dd",
    "0x6de05019198fcc90ba19896fca48ba0c8f9dd00b7264c7a22284351f3652ea5c",
    "0x67c6abdc93cb48b54a8f8e02762d6582ba99455b1112824fa2913e51c14610a3",
    "0x53e63148bd7b5c974996c9469d0fcc9e764d34ddafec28eabb4a93399eb8b882",
    "0x53722a4093d3d803b22250c797e0d4fdda3aebfd9c151c8c775ffa8b440f4629",
    "0x4bda3fa8b7e83fdab2048e0faa3fc2edc803df4f2df2996309c71d9d560ea667",
    "0x02ad059b3cbe14ca74695645b9287bab95865054a44f35870ccb3224d57ae497",
]
OZ_SEEDED_SORTED_INDEX = [17, 21, 19, 15, 20, 18, 12, 11, 13, 16, 22, 14]
OZ_SEEDED_UNSORTED_ROOT = "0x416755c86dca7ee612ac8e7d57ad633c921a7ae38db89a5f323e48d229e84ffe"

# The README's quick-start tree ([address, uint256]); its root and tree are the
# ones quoted by OpenZeppelin-compatible ports of the library.
README_VALUES = [
    ["0x1111111111111111111111111111111111111111", "5000000000000000000"],
    ["0x2222222222222222222222222222222222222222", "2500000000000000000"],
]
README_TREE = [
    "0xd4dee0beab2d53f2cc83e567171bd2820e49898130a22622b10ead383e90bd77",
    "0xeb02c421cfa48976e66dfb29120745909ea3a0f843456c263cf8f1253483e283",
    "0xb92c48e9d7abe27fd8dfd6b5dfdbfb1c9a463f80c712b66f3a5180a090cccafc",
]

ZERO = "0x" + "00" * 32


# --------------------------------------------------------------------------- fixed vectors


@pytest.mark.parametrize(
    ("sort_leaves", "dump", "render"),
    [(True, OZ_DUMP_SORTED, OZ_RENDER_SORTED), (False, OZ_DUMP_UNSORTED, OZ_RENDER_UNSORTED)],
)
def test_matches_openzeppelin_string_trees(sort_leaves, dump, render):
    tree = StandardMerkleTree.of([[c] for c in "abcdef"], ["string"], sort_leaves=sort_leaves)
    assert tree.root == dump["tree"][0]
    assert tree.tree == dump["tree"]
    assert [v["treeIndex"] for v in tree.dump()["values"]] == [
        v["treeIndex"] for v in dump["values"]
    ]
    assert tree.render() == render
    loaded = StandardMerkleTree.load(dump)  # their dump, loaded and checked by us
    loaded.validate()
    assert loaded == tree
    for i, value in tree.entries():
        proof = tree.get_proof(i)
        assert proof == tree.get_proof(value) == loaded.get_proof(i)
        assert tree.verify(i, proof) and tree.verify(value, proof)
        assert verify(tree.root, ["string"], value, proof)


def test_rejects_proofs_from_another_tree():
    tree = StandardMerkleTree.of([[c] for c in "abcdef"], ["string"])
    other = StandardMerkleTree.of([[c] for c in "abc"], ["string"])
    invalid = other.get_proof(["a"])
    assert not tree.verify(["a"], invalid)
    assert not verify(tree.root, ["string"], ["a"], invalid)


@pytest.mark.parametrize("sort_leaves", [True, False])
def test_matches_openzeppelin_seeded_snapshot(sort_leaves):
    tree = StandardMerkleTree.of(OZ_SEEDED_VALUES, OZ_SEEDED_ENCODING, sort_leaves=sort_leaves)
    if sort_leaves:
        assert tree.tree == OZ_SEEDED_SORTED_TREE
        assert [tree.tree_index(i) for i in range(len(tree))] == OZ_SEEDED_SORTED_INDEX
    else:
        assert tree.root == OZ_SEEDED_UNSORTED_ROOT
        assert [tree.tree_index(i) for i in range(len(tree))] == list(range(22, 10, -1))
    tree.validate()
    again = StandardMerkleTree.load(json.loads(json.dumps(tree.dump())))
    assert again == tree
    assert again.get_proof(3) == tree.get_proof(3)


def test_matches_openzeppelin_readme_tree():
    tree = StandardMerkleTree.of(README_VALUES, ["address", "uint256"])
    assert tree.tree == README_TREE
    assert tree.get_proof(0) == [README_TREE[2]]
    assert verify(README_TREE[0], ["address", "uint256"], README_VALUES[0], [README_TREE[2]])
    # REWARD_LEAF is exactly this encoding
    assert merkle.reward_tree(README_VALUES).root == README_TREE[0]
    assert merkle.reward_tree({a: int(v) for a, v in README_VALUES}).root == README_TREE[0]


def test_dump_has_the_standard_v1_shape():
    tree = StandardMerkleTree.of(README_VALUES, REWARD_LEAF)
    dump = tree.dump()
    assert list(dump) == ["format", "tree", "values", "leafEncoding"]
    assert dump["format"] == "standard-v1"
    assert dump["leafEncoding"] == ["address", "uint256"]
    assert dump["values"][0] == {
        "value": ["0x1111111111111111111111111111111111111111", "5000000000000000000"],
        "treeIndex": tree.tree_index(0),
    }
    json.dumps(dump)  # JSON-safe as is


def test_load_rejects_what_openzeppelin_rejects():
    with pytest.raises(InvalidInput, match="Unknown format 'nonstandard'"):
        StandardMerkleTree.load({"format": "nonstandard"})
    t1 = StandardMerkleTree.load(
        {
            "format": "standard-v1",
            "tree": [ZERO],
            "values": [{"value": ["0"], "treeIndex": 0}],
            "leafEncoding": ["uint256"],
        }
    )
    with pytest.raises(InvalidInput, match="^Merkle tree does not contain the expected value$"):
        t1.get_proof(0)
    fake_leaf = "0x" + keccak256(keccak256(bytes(32))).hex()
    t2 = StandardMerkleTree.load(
        {
            "format": "standard-v1",
            "tree": [ZERO, ZERO, fake_leaf],
            "values": [{"value": ["0"], "treeIndex": 2}],
            "leafEncoding": ["uint256"],
        }
    )
    with pytest.raises(InvalidInput, match="^Unable to prove value$"):
        t2.get_proof(0)
    with pytest.raises(InvalidInput, match="Merkle tree is invalid"):
        t2.validate()
    tree = StandardMerkleTree.of([[c] for c in "abcdef"], ["string"])
    with pytest.raises(InvalidInput, match="^Index out of bounds$"):
        tree.get_proof(6)
    with pytest.raises(InvalidInput, match="Leaf is not in tree"):
        tree.get_proof(["z"])
    with pytest.raises(InvalidInput):
        StandardMerkleTree.of([], RESULT_LEAF)


def test_single_leaf_tree():
    tree = merkle.result_tree([(b"\1" * 32, 0, b"\2" * 32, b"\3" * 32, b"\4" * 32)])
    assert tree.get_proof(0) == []
    assert tree.root == tree.leaf_hash_at(0)
    assert verify_leaf(tree.root, tree.leaf_hash_at(0), [])


def test_bad_values_are_refused():
    h = b"\0" * 32
    with pytest.raises(InvalidInput):
        merkle.result_leaf(h, 2**64, h, h, h)  # uint64 overflow
    with pytest.raises(InvalidInput):
        merkle.result_leaf(b"\0" * 31, 1, h, h, h)
    with pytest.raises(InvalidInput):
        merkle.reward_leaf("0x1234", 1)
    with pytest.raises(InvalidInput):
        merkle.reward_leaf("0x" + "11" * 20, -1)
    assert not verify(ZERO, RESULT_LEAF, ["x"], [])  # malformed value: not a proof
    assert not verify_leaf(ZERO, "0x12", [])


def test_result_leaf_accepts_hex_and_bytes_alike():
    h = bytes(range(32))
    a = merkle.result_leaf(h, 5, h, h, h)
    b = merkle.result_leaf("0x" + h.hex(), "5", h.hex(), h, h)
    assert a == b
    assert merkle.leaf_hash(RESULT_LEAF, a) == merkle.leaf_hash(RESULT_LEAF, b)


def test_a_large_tree_proves_every_leaf_it_holds():
    # how fast a 100k-leaf tree builds is measured in bench/timings.py, not asserted here
    import random

    rnd = random.Random(7)
    rows = [
        (rnd.randbytes(32), i, rnd.randbytes(32), rnd.randbytes(32), rnd.randbytes(32))
        for i in range(2_000)
    ]
    tree = merkle.result_tree(rows)
    assert len(tree) == 2_000
    for i in (0, 1, 999, 1_998, 1_999):
        assert tree.verify(i, tree.get_proof(i))
        assert merkle.verify_leaf(tree.root, tree.leaf_hash(tree.values[i]), tree.get_proof(i))


# --------------------------------------------------------------------------- properties

bytes32 = st.binary(min_size=32, max_size=32)
uint64 = st.integers(min_value=0, max_value=2**64 - 1)
uint256 = st.integers(min_value=0, max_value=2**256 - 1)
address = st.binary(min_size=20, max_size=20).map(lambda b: "0x" + b.hex())
result_value = st.tuples(bytes32, uint64, bytes32, bytes32, bytes32)
reward_value = st.tuples(address, uint256)

FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FAST
@given(result_value)
def test_fast_result_encoding_equals_eth_abi(value):
    assert encode_leaf(RESULT_LEAF, value) == abi_encode(list(RESULT_LEAF), list(value))


@FAST
@given(reward_value)
def test_fast_reward_encoding_equals_eth_abi(value):
    assert encode_leaf(REWARD_LEAF, value) == abi_encode(list(REWARD_LEAF), list(value))


@FAST
@given(
    st.tuples(
        st.integers(0, 255),
        st.integers(-(2**255), 2**255 - 1),
        st.booleans(),
        st.binary(min_size=4, max_size=4),
        address,
    )
)
def test_fast_static_encoding_equals_eth_abi(value):
    types = ("uint8", "int256", "bool", "bytes4", "address")
    assert encode_leaf(types, value) == abi_encode(list(types), list(value))


@FAST
@given(st.lists(result_value, min_size=1, max_size=40), st.data())
def test_every_result_proof_verifies_and_tampering_fails(values, data):
    tree = merkle.result_tree(values)
    tree.validate()
    for i, value in tree.entries():
        proof = tree.get_proof(i)
        assert tree.verify(i, proof)
        assert verify(tree.root, RESULT_LEAF, value, proof)
        assert process_proof(tree.leaf_hash_at(i), proof) == tree.root_bytes
    i = data.draw(st.integers(0, len(values) - 1), label="leaf")
    value, proof = values[i], tree.get_proof(i)
    # a changed leaf fails
    field = data.draw(st.integers(0, 4), label="field")
    changed = list(value)
    if field == 1:
        changed[1] = (value[1] + 1) % 2**64
    else:
        b = bytearray(value[field])
        b[data.draw(st.integers(0, 31), label="byte")] ^= 1 << data.draw(
            st.integers(0, 7), label="bit"
        )
        changed[field] = bytes(b)
    assert not verify(tree.root, RESULT_LEAF, changed, proof)
    # a changed proof fails
    if proof:
        k = data.draw(st.integers(0, len(proof) - 1), label="node")
        node = bytearray.fromhex(proof[k][2:])
        node[data.draw(st.integers(0, 31), label="nbyte")] ^= 0x80
        bad = list(proof)
        bad[k] = "0x" + node.hex()
        assert not verify(tree.root, RESULT_LEAF, value, bad)
        assert not verify(tree.root, RESULT_LEAF, value, proof[:-1])
    assert not verify(tree.root, RESULT_LEAF, value, [*proof, "0x" + "00" * 32])


@FAST
@given(st.dictionaries(address, uint256, min_size=1, max_size=40))
def test_every_reward_proof_verifies(balances):
    tree = merkle.reward_tree(balances)
    for account, amount in balances.items():
        proof = tree.get_proof([account, amount])
        assert verify(tree.root, REWARD_LEAF, [account, amount], proof)
        assert not verify(tree.root, REWARD_LEAF, [account, amount + 1], proof)


@FAST
@given(
    st.lists(result_value, min_size=1, max_size=30), st.lists(reward_value, min_size=1, max_size=30)
)
def test_dump_load_round_trip(results, rewards):
    for tree in (merkle.result_tree(results), merkle.reward_tree(rewards)):
        text = json.dumps(tree.dump())
        again = StandardMerkleTree.load(json.loads(text))
        assert again == tree
        assert again.root == tree.root
        again.validate()
        for i in range(len(tree)):
            assert again.get_proof(i) == tree.get_proof(i)
