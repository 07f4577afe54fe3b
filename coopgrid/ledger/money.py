"""The money side of the ledger: the reward token, job escrow and worker stakes.

:class:`Money` is the interface (a base of :class:`coopgrid.ledger.base.Ledger`),
:class:`Web3Money` its implementation for both backends, over the same
``Web3Ledger`` plumbing (signing, gas, receipts, reverts as
``TransactionReverted`` with the contract's reason).

The rules live in the contract (``contracts/ledger.vy``):

* a job's escrow is keyed by (job id, funder): :func:`job_key`. The funder
  funds it before any work (approve + ``fund``), the coordinator's commits
  carry its cumulative spend (never above the budget, never down), claims are
  paid out of the spent escrow only, and the unspent rest goes back to the
  funder once the coordinator closes the job or the refund deadline passes;
* a worker's stake counts for new work while active; ``unstake`` makes it
  withdrawable after ``UNSTAKE_DELAY`` and it stays slashable until then; a
  slash (owner only, at most the stake, with an evidence hash) credits the
  escrow of the job the worker harmed.

Every method that sends waits for the receipt and returns the tx hash.
Amounts are integers in the token's base unit.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from coopgrid.errors import InvalidInput

#: Contract field widths (see ledger.vy): amounts per job or stake, and times.
AMOUNT_LIMIT = 2**104
KEY_BITS = 128


@dataclass(frozen=True)
class JobEscrow:
    """A job's escrow as the contract holds it."""

    job_id: str  # 0x + 64 hex
    funder: str
    budget: int  # funded (and slashed in), minus what was refunded
    spent: int  # cumulative spend committed by the coordinator
    deadline: int  # unix seconds after which the funder can take the rest back
    closed: bool  # the coordinator declared the job finished

    @property
    def funded(self) -> bool:
        return self.deadline != 0

    @property
    def remaining(self) -> int:
        """What can still be spent (or refunded)."""
        return self.budget - self.spent


@dataclass(frozen=True)
class Stake:
    """A worker's stake."""

    active: int  # counts for new work; slashable
    unstaking: int  # leaving; still slashable until withdrawn
    unlock_at: int  # when the unstaking part can be withdrawn (unix seconds)


def job_key(job_id: Any, funder: str) -> int:
    """The 128-bit escrow key of (job id, funder): the first 16 bytes of keccak256(abi.encode(jobId, funder))."""
    from eth_abi import encode

    from coopgrid.ledger.base import checksum
    from coopgrid.ledger.merkle import keccak256, to_bytes32

    digest = keccak256(encode(["bytes32", "address"], [to_bytes32(job_id), checksum(funder)]))
    return int.from_bytes(digest, "big") >> (256 - KEY_BITS)


def spend_entry(key: int, cumulative: int) -> int:
    """One word of commitEpoch's ``spends``: (key << 128) | cumulative spend."""
    if not 0 <= key < 2**KEY_BITS or not 0 <= cumulative < AMOUNT_LIMIT:
        raise InvalidInput(f"a job spend must be below 2**104 and its key 128 bits (got {key}, {cumulative})")
    return (key << KEY_BITS) | cumulative


class Money(ABC):
    """What coopgrid asks of the chain about money. Senders sign with the ledger's key
    (``with_signer`` gives a view signing with a submitter's or a worker's key)."""

    # ---- the token

    @property
    @abstractmethod
    def token_address(self) -> str:
        """The reward token (an ERC-20 named at deployment)."""

    @abstractmethod
    def token_balance(self, account: str) -> int:
        """``account``'s balance of the reward token."""

    @abstractmethod
    def mint(self, to: str, amount: int) -> str:
        """Mint coopgrid tokens to ``to`` (the token's owner only: embedded and test deployments)."""

    @abstractmethod
    def send_gas(self, to: str, wei: int) -> str:
        """Send ether to ``to`` so that it can pay for its own transactions."""

    # ---- escrow

    @abstractmethod
    def fund(self, job_id: Any, amount: int, deadline: int) -> str:
        """Approve then fund ``job_id`` with ``amount`` from the signer; ``deadline`` (unix s) on first funding."""

    @abstractmethod
    def job_escrow(self, job_id: Any, funder: str) -> JobEscrow:
        """The escrow of (job, funder); all zero if never funded."""

    @abstractmethod
    def close_job(self, job_id: Any, funder: str) -> str:
        """Declare a job finished (owner): its funder may be refunded at once."""

    @abstractmethod
    def refund(self, job_id: Any, funder: str) -> str:
        """Pay the funder the unspent budget of a closed job or one past its deadline (anyone may send)."""

    @abstractmethod
    def totals(self) -> tuple[int, int]:
        """(every spend committed, every claim paid)."""

    # ---- stakes

    @abstractmethod
    def stake(self, amount: int) -> str:
        """Approve then stake ``amount`` of the signer's tokens."""

    @abstractmethod
    def unstake(self, amount: int) -> str:
        """Start taking ``amount`` of the signer's stake out (withdrawable after the unstake delay)."""

    @abstractmethod
    def withdraw(self) -> str:
        """Take out what the signer unstaked, once the delay has passed."""

    @abstractmethod
    def stake_of(self, worker: str) -> Stake:
        """``worker``'s stake."""

    @abstractmethod
    def unstake_delay(self) -> int:
        """Seconds between unstake and withdraw."""

    @abstractmethod
    def slash(self, worker: str, amount: int, job_id: Any, funder: str, evidence: Any) -> str:
        """Move ``amount`` of ``worker``'s stake into the escrow of (job, funder) (owner only)."""

    # ---- transactions signed by others

    @abstractmethod
    def account_state(self, address: str) -> tuple[int, int, dict[str, int]]:
        """(pending nonce, ether balance in wei, current EIP-1559 fees) of ``address``: what it needs to sign."""

    @abstractmethod
    def relay(self, raw: Sequence[str]) -> list[dict[str, Any]]:
        """Send transactions that submitters and workers signed themselves (see :mod:`wallet`), in
        order, waiting for each receipt: ``[{"tx_hash", "call", "sender", "block", "gas_used"}]``.

        ``InvalidInput`` for anything but a relayable call to this contract or its token;
        ``Conflict`` if the node refuses one (nonce, ether for gas); ``TransactionReverted``
        (with the contract's reason) stops at the first reverted one."""

    # ---- history

    @abstractmethod
    def money_events(self, from_block: int = 0) -> list[dict[str, Any]]:
        """Funded / JobClosed / Refunded / Staked / UnstakeRequested / Withdrawn / Slashed / Claimed
        events, oldest first, each a dict with ``event``, ``block``, ``tx`` and its arguments."""


class Web3Money(Money):
    """:class:`Money` for ``Web3Ledger`` (mixed in: uses its ``_transact``, ``_view``, ``_call``...)."""

    _MONEY_EVENTS = (
        "Funded", "JobClosed", "Refunded", "Staked", "UnstakeRequested", "Withdrawn", "Slashed", "Claimed",
    )

    # plumbing provided by Web3Ledger
    _w3: Any
    _signer: Any

    def _send(self, contract: Any, fn_name: str, *args: Any) -> str:
        with self._send_lock:  # type: ignore[attr-defined]
            data = contract.encode_abi(fn_name, args=list(args))
            signed = self._sign(self._signer, {"to": contract.address, "data": data})  # type: ignore[attr-defined]
            tx = self.broadcast(signed)  # type: ignore[attr-defined]
        self.wait_receipt(tx)  # type: ignore[attr-defined]
        return tx

    def _token(self) -> Any:
        token = getattr(self, "_token_contract", None)
        if token is None:
            from coopgrid.ledger.compile import TOKEN_SOURCE, load_artifact

            address = self._view("TOKEN")  # type: ignore[attr-defined]
            token = self._w3.eth.contract(address=address, abi=load_artifact(TOKEN_SOURCE).abi)
            self._token_contract = token
        return token

    def _token_view(self, fn_name: str, *args: Any) -> Any:
        token = self._token()
        return self._call(  # type: ignore[attr-defined]
            fn_name, lambda: getattr(token.functions, fn_name)(*args).call({"from": self._signer.address})
        )

    @staticmethod
    def _amount(amount: int, what: str = "amount") -> int:
        if not isinstance(amount, int) or not 0 < amount < AMOUNT_LIMIT:
            raise InvalidInput(f"{what} must be a whole number of token base units, 1 to 2**104 - 1 (got {amount!r})")
        return amount

    def _ensure_allowance(self, amount: int) -> None:
        from coopgrid.ledger.base import checksum

        me = self._signer.address
        spender = checksum(self.address)  # type: ignore[attr-defined]
        if int(self._token_view("allowance", me, spender)) < amount:
            self._send(self._token(), "approve", spender, amount)

    # ---- the token

    @property
    def token_address(self) -> str:
        return self._token().address

    def token_balance(self, account: str) -> int:
        from coopgrid.ledger.base import checksum

        return int(self._token_view("balanceOf", checksum(account)))

    def mint(self, to: str, amount: int) -> str:
        from coopgrid.ledger.base import checksum

        return self._send(self._token(), "mint", checksum(to), self._amount(amount))

    def send_gas(self, to: str, wei: int) -> str:
        from coopgrid.ledger.base import checksum

        with self._send_lock:  # type: ignore[attr-defined]
            signed = self._sign(self._signer, {"to": checksum(to), "value": int(wei)})  # type: ignore[attr-defined]
            tx = self.broadcast(signed)  # type: ignore[attr-defined]
        self.wait_receipt(tx)  # type: ignore[attr-defined]
        return tx

    # ---- escrow

    def fund(self, job_id: Any, amount: int, deadline: int) -> str:
        from coopgrid.ledger.merkle import to_bytes32

        self._amount(amount)
        self._ensure_allowance(amount)
        return self._send(self._c(), "fund", to_bytes32(job_id), amount, int(deadline))  # type: ignore[attr-defined]

    def job_escrow(self, job_id: Any, funder: str) -> JobEscrow:
        from coopgrid.ledger.base import checksum
        from coopgrid.ledger.merkle import to_bytes32

        jid = to_bytes32(job_id)
        budget, spent, deadline, closed = self._view("job", jid, checksum(funder))  # type: ignore[attr-defined]
        return JobEscrow("0x" + jid.hex(), checksum(funder), int(budget), int(spent), int(deadline), bool(closed))

    def close_job(self, job_id: Any, funder: str) -> str:
        from coopgrid.ledger.base import checksum
        from coopgrid.ledger.merkle import to_bytes32

        return self._send(self._c(), "closeJob", to_bytes32(job_id), checksum(funder))  # type: ignore[attr-defined]

    def refund(self, job_id: Any, funder: str) -> str:
        from coopgrid.ledger.base import checksum
        from coopgrid.ledger.merkle import to_bytes32

        return self._send(self._c(), "refund", to_bytes32(job_id), checksum(funder))  # type: ignore[attr-defined]

    def totals(self) -> tuple[int, int]:
        spent, claimed = self._view("totals")  # type: ignore[attr-defined]
        return int(spent), int(claimed)

    # ---- stakes

    def stake(self, amount: int) -> str:
        self._amount(amount)
        self._ensure_allowance(amount)
        return self._send(self._c(), "stake", amount)  # type: ignore[attr-defined]

    def unstake(self, amount: int) -> str:
        return self._send(self._c(), "unstake", self._amount(amount))  # type: ignore[attr-defined]

    def withdraw(self) -> str:
        return self._send(self._c(), "withdraw")  # type: ignore[attr-defined]

    def stake_of(self, worker: str) -> Stake:
        from coopgrid.ledger.base import checksum

        active, unstaking, unlock = self._view("stakeOf", checksum(worker))  # type: ignore[attr-defined]
        return Stake(int(active), int(unstaking), int(unlock))

    def unstake_delay(self) -> int:
        return int(self._view("UNSTAKE_DELAY"))  # type: ignore[attr-defined]

    def slash(self, worker: str, amount: int, job_id: Any, funder: str, evidence: Any) -> str:
        from coopgrid.ledger.base import checksum
        from coopgrid.ledger.merkle import to_bytes32

        return self._send(
            self._c(), "slash", checksum(worker), self._amount(amount), to_bytes32(job_id), checksum(funder),  # type: ignore[attr-defined]
            to_bytes32(evidence),
        )

    # ---- transactions signed by others

    def account_state(self, address: str) -> tuple[int, int, dict[str, int]]:
        from coopgrid.ledger.base import checksum

        address = checksum(address)
        eth = self._w3.eth
        nonce = self._call("eth_getTransactionCount", eth.get_transaction_count, address, "pending")  # type: ignore[attr-defined]
        balance = self._call("eth_getBalance", eth.get_balance, address)  # type: ignore[attr-defined]
        return int(nonce), int(balance), self._fees()  # type: ignore[attr-defined]

    def relay(self, raw: Sequence[str]) -> list[dict[str, Any]]:
        from coopgrid.errors import Conflict, TransactionRejected
        from coopgrid.ledger.base import SignedTx
        from coopgrid.ledger.wallet import MAX_BATCH, check_relayed

        if not 0 < len(raw) <= MAX_BATCH:
            raise InvalidInput(f"send 1 to {MAX_BATCH} signed transactions at a time")
        chain_id, contract, token = self.chain_id, self.address, self.token_address  # type: ignore[attr-defined]
        checked = [check_relayed(r, chain_id, contract, token) for r in raw]
        out = []
        for t in checked:
            try:
                tx = self.broadcast(SignedTx(t.tx_hash, t.raw, t.nonce, t.sender))  # type: ignore[attr-defined]
            except TransactionRejected as exc:
                raise Conflict(
                    f"the chain refused {t.call} from {t.sender} ({exc.message}); check its nonce and that it "
                    "holds ether for gas, then sign again",
                    tx_hash=t.tx_hash,
                ) from exc
            receipt = self.wait_receipt(tx)  # type: ignore[attr-defined]
            out.append({"tx_hash": tx, "call": t.call, "sender": t.sender, "block": receipt.block_number,
                        "gas_used": receipt.gas_used})
        return out

    # ---- history

    def money_events(self, from_block: int = 0) -> list[dict[str, Any]]:
        contract = self._c()  # type: ignore[attr-defined]
        out: list[dict[str, Any]] = []
        for name in self._MONEY_EVENTS:
            event = getattr(contract.events, name)
            for ev in self._call("eth_getLogs", lambda e=event: e.get_logs(from_block=from_block)):  # type: ignore[attr-defined]
                args = {k: ("0x" + bytes(v).hex() if isinstance(v, (bytes, bytearray)) else v) for k, v in ev["args"].items()}
                out.append({"event": name, "block": int(ev["blockNumber"]), "log_index": int(ev["logIndex"]),
                            "tx": "0x" + bytes(ev["transactionHash"]).hex(), **args})
        return sorted(out, key=lambda e: (e["block"], e["log_index"]))


def spends_words(spends: Sequence[tuple[int, int]]) -> list[int]:
    """commitEpoch's ``spends`` argument from (key, cumulative spend) pairs, in key order."""
    return [spend_entry(k, c) for k, c in sorted(spends)]
