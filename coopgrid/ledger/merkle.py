"""Merkle trees compatible with OpenZeppelin's ``StandardMerkleTree``.

Pure: no I/O. For the same typed values this module builds the same tree (same
root, same node array, same proofs) and reads and writes the same JSON dump
("standard-v1") as ``@openzeppelin/merkle-tree``, so a proof exported here
verifies with OpenZeppelin's ``MerkleProof``, snekmate's
``merkle_proof_verification`` and the JavaScript library alike:

* leaf = keccak256(keccak256(abi.encode(types, values)));
* internal node = keccak256(sorted(a, b)) (sorted-pair hashing);
* the tree is an array of ``2n - 1`` nodes, root at 0, children of ``i`` at
  ``2i + 1`` and ``2i + 2``, the leaves (sorted by hash, by default) stored
  from the end of the array backwards.

Two leaf kinds are used by coopgrid:

* :data:`RESULT_LEAF` ``(bytes32 jobId, uint64 taskIndex, bytes32 modelHash,
  bytes32 inputHash, bytes32 outputHash)``;
* :data:`REWARD_LEAF` ``(address account, uint256 cumulativeAmount)``.

Leaves made only of one-word static types (``bytesN``, ``uintN``, ``intN``,
``address``, ``bool``) are encoded without calling ``eth_abi`` (their ABI
encoding is just 32-byte words); anything else goes through
``eth_abi.encode``. Hashing uses a native keccak (safe-pysha3, else
pycryptodome).

Hashes in the public API are ``0x``-prefixed lowercase hex strings, as in the
JavaScript library; values are normalised Python values (``bytes`` for
``bytesN``/``bytes``, ``int`` for integers, lowercase 0x-hex ``str`` for
addresses) and appear in dumps as JSON-safe values (hex strings, decimal
strings for integers).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

from coopgrid.errors import InvalidInput

__all__ = [
    "RESULT_LEAF",
    "REWARD_LEAF",
    "StandardMerkleTree",
    "keccak256",
    "hash_pair",
    "encode_leaf",
    "leaf_hash",
    "process_proof",
    "verify",
    "verify_leaf",
    "result_leaf",
    "reward_leaf",
    "result_tree",
    "reward_tree",
    "to_bytes32",
]

RESULT_LEAF: tuple[str, ...] = ("bytes32", "uint64", "bytes32", "bytes32", "bytes32")
REWARD_LEAF: tuple[str, ...] = ("address", "uint256")

FORMAT = "standard-v1"

# --------------------------------------------------------------------------- keccak

try:  # safe-pysha3: a C extension, ~5x faster per call than pycryptodome's ctypes
    from sha3 import keccak_256 as _K  # type: ignore[import-not-found]
except ImportError:  # pragma: no cover - exercised only without safe-pysha3
    from Crypto.Hash import keccak as _cryptodome_keccak

    def _K(data: bytes) -> Any:  # noqa: N802 - same shape as sha3.keccak_256
        return _cryptodome_keccak.new(data=data, digest_bits=256)


def keccak256(data: bytes) -> bytes:
    """keccak256 of ``data`` (32 bytes)."""
    return _K(data).digest()


def hash_pair(a: bytes, b: bytes) -> bytes:
    """keccak256 of the two 32-byte nodes, smaller first (sorted-pair hashing)."""
    return keccak256(a + b if a < b else b + a)


# --------------------------------------------------------------------------- hex helpers


def _hex(b: bytes) -> str:
    return "0x" + b.hex()


def _node(x: bytes | str) -> bytes:
    """A 32-byte node from bytes or a hex string."""
    if isinstance(x, str):
        try:
            b = bytes.fromhex(x[2:] if x[:2] in ("0x", "0X") else x)
        except ValueError as exc:
            raise InvalidInput(f"not a hex node: {x!r}") from exc
    elif isinstance(x, (bytes, bytearray, memoryview)):
        b = bytes(x)
    else:
        raise InvalidInput(f"not a 32-byte node: {x!r}")
    if len(b) != 32:
        raise InvalidInput("Merkle tree nodes must be 32 bytes long")
    return b


def _nodes(xs: Iterable[Any]) -> list[bytes]:
    """Many hex nodes at once (fast path for well-formed 0x-hex)."""
    xs = list(xs)
    try:
        out = [bytes.fromhex(x[2:]) for x in xs if x[:2] == "0x"]
        if len(out) == len(xs) and all(len(b) == 32 for b in out):  # type: ignore[arg-type]
            return out
    except (ValueError, TypeError):
        pass
    return [_node(x) for x in xs]


def to_bytes32(x: bytes | str) -> bytes:
    """``x`` (32 bytes or 64 hex digits, with or without 0x) as 32 bytes."""
    return _node(x)


# --------------------------------------------------------------------------- values

_ABI_TYPES_CACHE: dict[str, Any] = {}


def _parse(t: str) -> Any:
    node = _ABI_TYPES_CACHE.get(t)
    if node is None:
        from eth_abi.grammar import parse

        try:
            node = parse(t)
        except Exception as exc:
            raise InvalidInput(f"not an ABI type: {t!r}") from exc
        node.validate()
        _ABI_TYPES_CACHE[t] = node
    return node


def _to_int(x: Any, t: str) -> int:
    if isinstance(x, bool):
        raise InvalidInput(f"{t} value must be an integer, not {x!r}")
    if isinstance(x, int):
        return x
    if isinstance(x, str):
        s = x.strip()
        try:
            return int(s, 16) if s[:2] in ("0x", "0X") or s[:3] in ("-0x", "-0X") else int(s, 10)
        except ValueError as exc:
            raise InvalidInput(f"{t} value is not an integer: {x!r}") from exc
    raise InvalidInput(f"{t} value must be an integer, not {type(x).__name__}")


def _to_bytes(x: Any, t: str) -> bytes:
    if isinstance(x, str):
        s = x[2:] if x[:2] in ("0x", "0X") else x
        try:
            return bytes.fromhex(s)
        except ValueError as exc:
            raise InvalidInput(f"{t} value is not hex: {x!r}") from exc
    if isinstance(x, (bytes, bytearray, memoryview)):
        return bytes(x)
    raise InvalidInput(f"{t} value must be bytes or hex, not {type(x).__name__}")


def _to_address(x: Any) -> str:
    """An address as lowercase 0x-hex (any case accepted: the encoding ignores case)."""
    if isinstance(x, (bytes, bytearray)) and len(x) == 20:
        return "0x" + bytes(x).hex()
    if isinstance(x, str) and len(x) == 42 and x[:2] in ("0x", "0X"):
        s = x[2:].lower()
        try:
            bytes.fromhex(s)
        except ValueError:
            pass
        else:
            return "0x" + s
    raise InvalidInput(f"not an address: {x!r}")


def _normalize(node: Any, value: Any) -> Any:
    """``value`` as the canonical Python value of ABI type ``node``."""
    from eth_abi.grammar import TupleType

    if node.arrlist:
        if not isinstance(value, (list, tuple)):
            raise InvalidInput(f"{node.to_type_str()} value must be a list")
        dims = node.arrlist[-1]
        if dims and len(value) != dims[0]:
            raise InvalidInput(f"{node.to_type_str()} value must have {dims[0]} items")
        item = node.item_type
        return tuple(_normalize(item, v) for v in value)
    if isinstance(node, TupleType):
        if not isinstance(value, (list, tuple)) or len(value) != len(node.components):
            raise InvalidInput(f"{node.to_type_str()} value must have {len(node.components)} items")
        return tuple(_normalize(c, v) for c, v in zip(node.components, value))
    base, sub = node.base, node.sub
    t = node.to_type_str()
    if base == "uint":
        n = _to_int(value, t)
        if not 0 <= n < 1 << sub:
            raise InvalidInput(f"{t} value out of range: {n}")
        return n
    if base == "int":
        n = _to_int(value, t)
        if not -(1 << (sub - 1)) <= n < 1 << (sub - 1):
            raise InvalidInput(f"{t} value out of range: {n}")
        return n
    if base == "address":
        return _to_address(value)
    if base == "bool":
        if not isinstance(value, bool):
            raise InvalidInput(f"bool value must be true or false, not {value!r}")
        return value
    if base == "bytes":
        b = _to_bytes(value, t)
        if sub is not None and len(b) != sub:
            raise InvalidInput(f"{t} value must be {sub} bytes, got {len(b)}")
        return b
    if base == "string":
        if not isinstance(value, str):
            raise InvalidInput(f"string value must be a str, not {type(value).__name__}")
        return value
    if base in ("fixed", "ufixed"):
        raise InvalidInput(f"{t} leaves are not supported")
    raise InvalidInput(f"unsupported ABI type {t!r}")


def _jsonable(node: Any, value: Any) -> Any:
    """A normalised value as it appears in a dump (JSON-safe, like the JS library's)."""
    from eth_abi.grammar import TupleType

    if node.arrlist:
        return [_jsonable(node.item_type, v) for v in value]
    if isinstance(node, TupleType):
        return [_jsonable(c, v) for c, v in zip(node.components, value)]
    if node.base in ("uint", "int"):
        return str(value)
    if node.base == "bytes":
        return _hex(value)
    return value  # address (lowercase 0x-hex str), bool, string


def _generic_normalizer(types: tuple[str, ...]):
    nodes = [_parse(t) for t in types]

    def norm(value: Sequence[Any]) -> tuple[Any, ...]:
        if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
            raise InvalidInput("a leaf value is a list with one item per type")
        if len(value) != len(nodes):
            raise InvalidInput(f"leaf has {len(value)} values for {len(nodes)} types")
        return tuple(_normalize(n, v) for n, v in zip(nodes, value))

    return norm


def _b32(x: Any) -> bytes:
    if type(x) is bytes and len(x) == 32:
        return x
    b = _to_bytes(x, "bytes32")
    if len(b) != 32:
        raise InvalidInput(f"bytes32 value must be 32 bytes, got {len(b)}")
    return b


def _uint(x: Any, bits: int) -> int:
    if type(x) is not int:
        x = _to_int(x, f"uint{bits}")
    if not 0 <= x < 1 << bits:
        raise InvalidInput(f"uint{bits} value out of range: {x}")
    return x


def _norm_result(v: Sequence[Any]) -> tuple[Any, ...]:
    if isinstance(v, (str, bytes)) or len(v) != 5:
        raise InvalidInput("a result leaf is (jobId, taskIndex, modelHash, inputHash, outputHash)")
    return (_b32(v[0]), _uint(v[1], 64), _b32(v[2]), _b32(v[3]), _b32(v[4]))


def _norm_reward(v: Sequence[Any]) -> tuple[Any, ...]:
    if isinstance(v, (str, bytes)) or len(v) != 2:
        raise InvalidInput("a reward leaf is (account, cumulativeAmount)")
    return (_to_address(v[0]), _uint(v[1], 256))


_NORMALIZERS: dict[tuple[str, ...], Any] = {RESULT_LEAF: _norm_result, REWARD_LEAF: _norm_reward}


def _normalizer(types: tuple[str, ...]):
    norm = _NORMALIZERS.get(types)
    if norm is None:
        norm = _NORMALIZERS[types] = _generic_normalizer(types)
    return norm


def _jsonable_result(v: tuple) -> list[Any]:
    return ["0x" + v[0].hex(), str(v[1]), "0x" + v[2].hex(), "0x" + v[3].hex(), "0x" + v[4].hex()]


def _jsonable_reward(v: tuple) -> list[Any]:
    return [v[0], str(v[1])]


_JSONABLES: dict[tuple[str, ...], Any] = {
    RESULT_LEAF: _jsonable_result,
    REWARD_LEAF: _jsonable_reward,
}


def _jsonable_fn(types: tuple[str, ...]):
    fn = _JSONABLES.get(types)
    if fn is None:
        nodes = [_parse(t) for t in types]

        def fn(v: tuple) -> list[Any]:
            return [_jsonable(n, x) for n, x in zip(nodes, v)]

        _JSONABLES[types] = fn
    return fn


def normalize_value(types: Sequence[str], value: Sequence[Any]) -> tuple[Any, ...]:
    """``value`` checked against ``types`` and converted to canonical Python values."""
    return _normalizer(tuple(types))(value)


# --------------------------------------------------------------------------- encoding


def _word_encoder(t: str):
    """A fast encoder of one normalised value of static one-word type ``t``, or None."""
    node = _parse(t)
    if node.arrlist or getattr(node, "components", None) is not None:
        return None
    base, sub = node.base, node.sub
    if base == "uint":
        return lambda v: v.to_bytes(32, "big")
    if base == "int":
        return lambda v: v.to_bytes(32, "big", signed=True)
    if base == "address":
        return lambda v: b"\0" * 12 + bytes.fromhex(v[2:])
    if base == "bool":
        return lambda v: (b"\0" * 31) + (b"\1" if v else b"\0")
    if base == "bytes" and sub is not None:
        if sub == 32:
            return lambda v: v
        return lambda v: v + b"\0" * (32 - sub)
    return None


_ENCODERS: dict[tuple[str, ...], Any] = {}


def _encoder(types: tuple[str, ...]):
    """A function encoding a normalised value of ``types`` (fast path when all static words)."""
    enc = _ENCODERS.get(types)
    if enc is None:
        words = [_word_encoder(t) for t in types]
        if all(w is not None for w in words):
            if len(words) == 2:
                w0, w1 = words

                def enc(v, w0=w0, w1=w1):
                    return w0(v[0]) + w1(v[1])

            else:

                def enc(v, words=tuple(words)):
                    return b"".join(w(x) for w, x in zip(words, v))

        else:
            from eth_abi import encode as abi_encode

            type_list = list(types)

            def enc(v):
                return abi_encode(type_list, list(v))

        _ENCODERS[types] = enc
    return enc


def encode_leaf(types: Sequence[str], value: Sequence[Any]) -> bytes:
    """``abi.encode(types, value)`` (the fast path gives byte-identical output)."""
    types = tuple(types)
    return _encoder(types)(normalize_value(types, value))


def leaf_hash(types: Sequence[str], value: Sequence[Any]) -> str:
    """The standard leaf hash keccak256(keccak256(abi.encode(value))) as hex."""
    return _hex(keccak256(keccak256(encode_leaf(types, value))))


def _encode_result(v: tuple) -> bytes:
    return v[0] + v[1].to_bytes(32, "big") + v[2] + v[3] + v[4]


def _encode_reward(v: tuple) -> bytes:
    return b"\0" * 12 + bytes.fromhex(v[0][2:]) + v[1].to_bytes(32, "big")


# The two coopgrid leaf kinds get hand-written encoders (checked against eth_abi in tests).
_ENCODERS[RESULT_LEAF] = _encode_result
_ENCODERS[REWARD_LEAF] = _encode_reward


# --------------------------------------------------------------------------- proofs


def process_proof(leaf: bytes | str, proof: Iterable[bytes | str]) -> bytes:
    """The root obtained by hashing ``leaf`` up with the ``proof`` nodes."""
    h = _node(leaf)
    for p in proof:
        h = hash_pair(h, _node(p))
    return h


def verify_leaf(root: bytes | str, leaf: bytes | str, proof: Iterable[bytes | str]) -> bool:
    """True when ``leaf`` (a leaf hash) and ``proof`` lead to ``root``.

    Malformed input (a node that is not 32 bytes) is simply not a proof: False.
    """
    try:
        return process_proof(leaf, proof) == _node(root)
    except InvalidInput:
        return False


def verify(
    root: bytes | str, types: Sequence[str], value: Sequence[Any], proof: Iterable[bytes | str]
) -> bool:
    """True when ``value`` of ``types`` is in the tree of ``root`` (OZ ``StandardMerkleTree.verify``)."""
    try:
        leaf = keccak256(keccak256(encode_leaf(types, value)))
    except InvalidInput:
        return False
    return verify_leaf(root, leaf, proof)


# --------------------------------------------------------------------------- the tree


def _make_tree(leaves: list[bytes]) -> list[bytes]:
    n = len(leaves)
    if n == 0:
        raise InvalidInput("Expected non-zero number of leaves")
    size = 2 * n - 1
    tree: list[bytes] = [b""] * (size - n) + leaves[::-1]
    k = _K
    for i in range(size - n - 1, -1, -1):
        a = tree[2 * i + 1]
        b = tree[2 * i + 2]
        tree[i] = k(a + b if a < b else b + a).digest()
    return tree


class StandardMerkleTree:
    """An OpenZeppelin ``StandardMerkleTree``: build with :meth:`of`, read with :meth:`load`.

    ``tree[i]`` are the nodes (bytes), ``values[k]`` the normalised values in the
    order they were given, ``tree_index[k]`` where value ``k``'s leaf sits.
    """

    __slots__ = ("_tree", "_values", "_tree_index", "leaf_encoding", "_lookup")

    def __init__(
        self,
        tree: list[bytes],
        values: list[tuple[Any, ...]],
        tree_index: list[int],
        leaf_encoding: Sequence[str],
    ) -> None:
        self._tree = tree
        self._values = values
        self._tree_index = tree_index
        self.leaf_encoding: tuple[str, ...] = tuple(leaf_encoding)
        self._lookup: dict[bytes, int] | None = None

    # ---- construction

    @classmethod
    def of(
        cls,
        values: Iterable[Sequence[Any]],
        leaf_encoding: Sequence[str],
        *,
        sort_leaves: bool = True,
    ) -> StandardMerkleTree:
        """The tree of ``values`` (each a list with one item per type of ``leaf_encoding``).

        Like ``StandardMerkleTree.of(values, leafEncoding, {sortLeaves})``.
        """
        types = tuple(leaf_encoding)
        for t in types:
            _parse(t)
        normalizer = _normalizer(types)
        norm = [normalizer(v) for v in values]
        if not norm:
            raise InvalidInput("Expected non-zero number of leaves")
        enc = _encoder(types)
        k = _K
        hashes = [k(k(enc(v)).digest()).digest() for v in norm]
        n = len(hashes)
        order = sorted(range(n), key=hashes.__getitem__) if sort_leaves else list(range(n))
        tree = _make_tree([hashes[i] for i in order])
        size = len(tree)
        tree_index = [0] * n
        for leaf_pos, value_index in enumerate(order):
            tree_index[value_index] = size - 1 - leaf_pos
        t = cls(tree, norm, tree_index, types)
        t._lookup = {h: i for i, h in enumerate(hashes)}
        return t

    @classmethod
    def load(cls, data: Mapping[str, Any]) -> StandardMerkleTree:
        """A tree from a "standard-v1" dump (as produced by :meth:`dump` or the JS library).

        Like the JS library, nothing is re-hashed here: :meth:`get_proof` checks each
        value against its leaf, and :meth:`validate` checks the whole tree.
        """
        if not isinstance(data, Mapping):
            raise InvalidInput("a tree dump is a JSON object")
        if data.get("format") != FORMAT:
            raise InvalidInput(f"Unknown format '{data.get('format')}'")
        try:
            types = tuple(data["leafEncoding"])
            tree = _nodes(data["tree"])
            normalizer = _normalizer(types)
            values = [normalizer(v["value"]) for v in data["values"]]
            tree_index = [int(v["treeIndex"]) for v in data["values"]]
        except (KeyError, TypeError) as exc:
            raise InvalidInput(f"malformed tree dump: {exc}") from exc
        return cls(tree, values, tree_index, types)

    def dump(self) -> dict[str, Any]:
        """The "standard-v1" dump: ``{format, tree, values: [{value, treeIndex}], leafEncoding}``."""
        jsonable = _jsonable_fn(self.leaf_encoding)
        return {
            "format": FORMAT,
            "tree": ["0x" + n.hex() for n in self._tree],
            "values": [
                {"value": jsonable(v), "treeIndex": ti}
                for v, ti in zip(self._values, self._tree_index)
            ],
            "leafEncoding": list(self.leaf_encoding),
        }

    # ---- reading

    @property
    def root(self) -> str:
        """The root as 0x-hex."""
        return _hex(self._tree[0])

    @property
    def root_bytes(self) -> bytes:
        return self._tree[0]

    @property
    def tree(self) -> list[str]:
        """All nodes as 0x-hex, in array order (root first)."""
        return [_hex(n) for n in self._tree]

    @property
    def values(self) -> list[tuple[Any, ...]]:
        return list(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, StandardMerkleTree):
            return NotImplemented
        return (
            self._tree == other._tree
            and self._values == other._values
            and self._tree_index == other._tree_index
            and self.leaf_encoding == other.leaf_encoding
        )

    def __repr__(self) -> str:
        return f"StandardMerkleTree({len(self)} leaves, root={self.root})"

    def entries(self) -> Iterator[tuple[int, tuple[Any, ...]]]:
        """(value index, value) for every value, in the order given to :meth:`of`."""
        return iter(enumerate(self._values))

    def tree_index(self, index: int) -> int:
        """Position in the node array of value ``index``'s leaf."""
        self._check_index(index)
        return self._tree_index[index]

    def leaf_hash(self, value: Sequence[Any]) -> str:
        """The leaf hash of ``value`` under this tree's encoding, as hex."""
        return leaf_hash(self.leaf_encoding, value)

    def leaf_hash_at(self, index: int) -> str:
        """The leaf hash of value ``index`` (checked against the tree)."""
        return _hex(self._validate_value(index))

    def leaf_lookup(self, value: Sequence[Any]) -> int:
        """The index of ``value``; InvalidInput('Leaf is not in tree') if absent."""
        if self._lookup is None:
            enc = _encoder(self.leaf_encoding)
            k = _K
            self._lookup = {k(k(enc(v)).digest()).digest(): i for i, v in enumerate(self._values)}
        h = keccak256(keccak256(encode_leaf(self.leaf_encoding, value)))
        try:
            return self._lookup[h]
        except KeyError:
            raise InvalidInput("Leaf is not in tree") from None

    def get_proof(self, leaf: int | Sequence[Any]) -> list[str]:
        """The proof (sibling hashes, leaf to root, 0x-hex) of a value or value index."""
        index = leaf if isinstance(leaf, int) else self.leaf_lookup(leaf)
        leaf_node = self._validate_value(index)
        i = self._tree_index[index]
        tree = self._tree
        if not (0 <= i < len(tree)) or 2 * i + 1 < len(tree):
            raise InvalidInput("Index is not a leaf")
        proof = []
        while i > 0:
            sibling = i - 1 if i % 2 == 0 else i + 1
            proof.append(tree[sibling])
            i = (i - 1) // 2
        if process_proof(leaf_node, proof) != tree[0]:
            raise InvalidInput("Unable to prove value")
        return [_hex(p) for p in proof]

    def verify(self, leaf: int | Sequence[Any], proof: Iterable[bytes | str]) -> bool:
        """True when the value (or value index) and ``proof`` lead to this tree's root."""
        if isinstance(leaf, int):
            node = self._validate_value(leaf)
        else:
            try:
                node = keccak256(keccak256(encode_leaf(self.leaf_encoding, leaf)))
            except InvalidInput:
                return False
        return verify_leaf(self._tree[0], node, proof)

    def validate(self) -> None:
        """Check every value against its leaf and every internal node; InvalidInput if not."""
        for i in range(len(self._values)):
            self._validate_value(i)
        tree = self._tree
        n = len(tree)
        if n == 0:
            raise InvalidInput("Merkle tree is invalid")
        for i in range(n):
            left, right = 2 * i + 1, 2 * i + 2
            if right >= n:
                if left < n:
                    raise InvalidInput("Merkle tree is invalid")
            elif tree[i] != hash_pair(tree[left], tree[right]):
                raise InvalidInput("Merkle tree is invalid")

    def render(self) -> str:
        """The text drawing of the JS library's ``render()``."""
        tree = self._tree
        lines = []
        stack: list[tuple[int, list[int]]] = [(0, [])]
        while stack:
            i, path = stack.pop()
            prefix = "".join(["   ", "│  "][p] for p in path[:-1])
            prefix += "".join(["└─ ", "├─ "][p] for p in path[-1:])
            lines.append(f"{prefix}{i}) {_hex(tree[i])}")
            if 2 * i + 2 < len(tree):
                stack.append((2 * i + 2, path + [0]))
                stack.append((2 * i + 1, path + [1]))
        return "\n".join(lines)

    # ---- internals

    def _check_index(self, index: int) -> None:
        if not isinstance(index, int) or not 0 <= index < len(self._values):
            raise InvalidInput("Index out of bounds")

    def _validate_value(self, index: int) -> bytes:
        self._check_index(index)
        ti = self._tree_index[index]
        if not 0 <= ti < len(self._tree):
            raise InvalidInput("Index out of bounds")
        h = keccak256(keccak256(_encoder(self.leaf_encoding)(self._values[index])))
        if h != self._tree[ti]:
            raise InvalidInput("Merkle tree does not contain the expected value")
        return h


# --------------------------------------------------------------------------- coopgrid leaves


def result_leaf(
    job_id: bytes | str,
    task_index: int,
    model_hash: bytes | str,
    input_hash: bytes | str,
    output_hash: bytes | str,
) -> tuple[bytes, int, bytes, bytes, bytes]:
    """A normalised :data:`RESULT_LEAF` value (hashes as 32 bytes or 64 hex digits)."""
    return normalize_value(RESULT_LEAF, (job_id, task_index, model_hash, input_hash, output_hash))  # type: ignore[return-value]


def reward_leaf(account: str | bytes, cumulative_amount: int) -> tuple[str, int]:
    """A normalised :data:`REWARD_LEAF` value."""
    return normalize_value(REWARD_LEAF, (account, cumulative_amount))  # type: ignore[return-value]


def result_tree(results: Iterable[Sequence[Any]]) -> StandardMerkleTree:
    """The results tree of an epoch: one :data:`RESULT_LEAF` value per accepted result."""
    return StandardMerkleTree.of(results, RESULT_LEAF)


def reward_tree(cumulative: Mapping[str, int] | Iterable[Sequence[Any]]) -> StandardMerkleTree:
    """The rewards tree: every worker's cumulative total, from a mapping or (account, amount) pairs."""
    items = cumulative.items() if isinstance(cumulative, Mapping) else cumulative
    return StandardMerkleTree.of(items, REWARD_LEAF)
