"""Transactions that submitters and workers sign with their own keys, relayed by the coordinator.

A client cannot reach the embedded chain (one process, the coordinator, owns
it), and on any chain the coordinator is what names the contract. So money
moves this way, the same on every backend:

1. the client asks ``GET /v1/ledger/accounts/{address}`` for its nonce, the
   chain id, the fees and the contract and token addresses;
2. it builds each call itself from the function signatures in :data:`CALLS`
   and signs it with its keystore (:func:`sign_calls`);
3. it posts the raw signed transactions to ``POST /v1/ledger/transactions``,
   which relays them in order and waits for their receipts.

The coordinator cannot alter what was signed, and :func:`check_relayed` makes
it relay nothing but these calls to the ledger contract and its token, with
no ether attached and bounded gas: it is not an open door to the chain. A
signed transaction posted twice is sent once (its hash is its identity), so a
client may retry freely.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from coopgrid.errors import InvalidInput

#: what a client may ask the coordinator to relay: name -> (which contract, signature, gas limit).
#: Gas limits are generous (unused gas is not charged); measured costs are in bench/gas.py.
CALLS: dict[str, tuple[str, str, int]] = {
    "approve": ("token", "approve(address,uint256)", 100_000),
    "fund": ("ledger", "fund(bytes32,uint256,uint256)", 200_000),
    "refund": ("ledger", "refund(bytes32,address)", 150_000),
    "stake": ("ledger", "stake(uint256)", 200_000),
    "unstake": ("ledger", "unstake(uint256)", 100_000),
    "withdraw": ("ledger", "withdraw()", 150_000),
}
MAX_GAS = 300_000
MAX_RAW_BYTES = 1_024
MAX_BATCH = 4


def _types(signature: str) -> list[str]:
    inner = signature[signature.index("(") + 1 : -1]
    return inner.split(",") if inner else []


def selector(signature: str) -> bytes:
    from eth_utils import keccak

    return keccak(text=signature)[:4]


_BY_SELECTOR = {selector(sig): (name, target) for name, (target, sig, _) in CALLS.items()}


def calldata(name: str, *args: Any) -> bytes:
    """The call data of ``name(args)`` (a name of :data:`CALLS`)."""
    from eth_abi import encode

    _, signature, _ = CALLS[name]
    return selector(signature) + encode(_types(signature), list(args))


@dataclass(frozen=True)
class Account:
    """What the coordinator says of an account and its chain (``GET /v1/ledger/accounts/{address}``)."""

    address: str
    chain_id: int
    contract: str
    token: str
    nonce: int
    max_fee_per_gas: int
    max_priority_fee_per_gas: int

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Account:
        return cls(
            data["address"], int(data["chain_id"]), data["contract"], data["token"], int(data["nonce"]),
            int(data["fees"]["maxFeePerGas"]), int(data["fees"]["maxPriorityFeePerGas"]),
        )


def sign_calls(identity: Any, account: Account, calls: Sequence[tuple[str, Sequence[Any]]]) -> list[str]:
    """Sign ``calls`` ((name, args), in order, with consecutive nonces) with ``identity``'s key."""
    from eth_account import Account as EthAccount

    if identity.address.lower() != account.address.lower():
        raise InvalidInput(f"the account read is {account.address}, the key signing is {identity.address}")
    out = []
    for i, (name, args) in enumerate(calls):
        target, _, gas = CALLS[name]
        tx = {
            "to": account.token if target == "token" else account.contract,
            "data": calldata(name, *args),
            "value": 0,
            "nonce": account.nonce + i,
            "gas": gas,
            "maxFeePerGas": account.max_fee_per_gas,
            "maxPriorityFeePerGas": account.max_priority_fee_per_gas,
            "chainId": account.chain_id,
            "type": 2,
        }
        signed = EthAccount.sign_transaction(tx, identity.private_key)
        out.append("0x" + bytes(signed.raw_transaction).hex())
    return out


@dataclass(frozen=True)
class Relayed:
    """A signed transaction that passed :func:`check_relayed`."""

    raw: bytes
    tx_hash: str
    sender: str
    nonce: int
    call: str


def check_relayed(raw_hex: str, chain_id: int, contract: str, token: str) -> Relayed:
    """Decode a raw signed transaction and refuse anything but a :data:`CALLS` call on this chain."""
    from eth_account import Account as EthAccount
    from eth_account.typed_transactions import TypedTransaction
    from eth_utils import keccak
    from hexbytes import HexBytes

    try:
        raw = bytes.fromhex(raw_hex.removeprefix("0x"))
    except ValueError:
        raise InvalidInput("a raw transaction is hex (0x...)") from None
    if not 0 < len(raw) <= MAX_RAW_BYTES:
        raise InvalidInput(f"a raw transaction is 1 to {MAX_RAW_BYTES} bytes")
    if raw[0] != 2:
        raise InvalidInput("only EIP-1559 (type 2) transactions are relayed")
    try:
        tx = TypedTransaction.from_bytes(HexBytes(raw)).as_dict()
        sender = EthAccount.recover_transaction(raw)
    except Exception as exc:  # noqa: BLE001 - any decoding failure is the caller's malformed input
        raise InvalidInput(f"not a signed transaction: {type(exc).__name__}") from None
    if int(tx["chainId"]) != chain_id:
        raise InvalidInput(f"the transaction is signed for chain {tx['chainId']}; this coordinator's is {chain_id}")
    to = "0x" + bytes(tx.get("to") or b"").hex()
    data = bytes(tx.get("data") or b"")
    name, target = _BY_SELECTOR.get(data[:4], (None, None))
    expected = {"ledger": contract, "token": token}.get(target or "", "")
    if name is None or to.lower() != expected.lower():
        raise InvalidInput(
            f"only {', '.join(sorted(CALLS))} calls to the ledger contract {contract} (approve: to its token "
            f"{token}) are relayed"
        )
    if int(tx["value"]) or int(tx["gas"]) > MAX_GAS or tx.get("accessList"):
        raise InvalidInput(f"a relayed transaction sends no ether, has no access list and at most {MAX_GAS} gas")
    return Relayed(raw, "0x" + keccak(raw).hex(), sender, int(tx["nonce"]), name)
