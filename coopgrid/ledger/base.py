"""The Ledger interface: what coopgrid asks of the chain, and nothing more.

:class:`Ledger` is the narrow interface the coordinator, the sealer and the CLI
use. Two backends implement it, both through web3.py and the same contract
(``contracts/ledger.vy``), so :class:`Web3Ledger` holds everything they share:

* :class:`coopgrid.ledger.embedded.EmbeddedLedger` - a py-evm chain inside the
  process, persisted in SQLite;
* :class:`coopgrid.ledger.rpc.RpcLedger` - any Ethereum JSON-RPC endpoint.

Conventions
-----------
* Hashes (tx hashes, roots, leaves, model hashes) are accepted as 32 bytes or
  0x-hex, and returned as ``0x``-prefixed lowercase hex strings.
* Addresses are accepted in any case and returned checksummed.
* Amounts are integers in the token's smallest unit (18 decimals).
* Sending is split so that a caller can persist a transaction before it can
  possibly be mined: :meth:`Ledger.prepare_commit_epoch` signs and returns
  the hash and raw bytes, :meth:`Ledger.broadcast` sends them (idempotently:
  a tx the node already has is not an error), :meth:`Ledger.wait_receipt`
  waits. ``send_*`` = prepare + broadcast; the plain verbs (``commit_epoch``,
  ``claim``, ``publish_model``) = send + wait.
* Errors are from :mod:`coopgrid.errors`: ``ChainUnavailable`` (after retries),
  ``WrongChain``, ``ContractMissing``, ``TransactionReverted`` (with
  ``tx_hash`` - ``None`` when the revert was caught before sending - and the
  contract's ``reason``), ``TransactionRejected`` (the node refused it),
  ``TransactionPending`` (no receipt within the timeout); anything else from
  web3 is wrapped in ``LedgerError``. The original error is ``__cause__``.
"""

from __future__ import annotations

import logging
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from coopgrid.ledger.money import Money, Web3Money, spends_words
from coopgrid.errors import (
    ChainUnavailable,
    ContractMissing,
    InvalidInput,
    LedgerError,
    TransactionPending,
    TransactionRejected,
    TransactionReverted,
)

log = logging.getLogger(__name__)

T = TypeVar("T")

HexLike = bytes | str
#: A signer: a LocalAccount (eth_account), a private key (32 bytes or hex), or None
#: for the ledger's own key.
Signer = Any


# --------------------------------------------------------------------------- values


@dataclass(frozen=True)
class SignedTx:
    """A signed transaction not necessarily sent yet: persist ``tx_hash``/``raw`` first."""

    tx_hash: str
    raw: bytes
    nonce: int
    sender: str


@dataclass(frozen=True)
class Receipt:
    """A mined transaction (``status`` is always True: reverts raise)."""

    tx_hash: str
    block_number: int
    gas_used: int
    status: bool


@dataclass(frozen=True)
class EpochRoots:
    """An epoch's roots as stored by the contract."""

    epoch: int
    results_root: str
    rewards_root: str


@dataclass(frozen=True)
class EpochCommit:
    """Where and how an epoch was committed (from its ``EpochCommitted`` event)."""

    epoch: int
    results_root: str
    rewards_root: str
    result_count: int
    tx_hash: str
    block_number: int


@dataclass(frozen=True)
class ModelRecord:
    """A published model: its hash, the block timestamp and the block number."""

    model_hash: str
    published_at: int
    block_number: int


# --------------------------------------------------------------------------- the interface


#: Spends of one commit: (escrow key from money.job_key, cumulative spend) per touched job.
Spends = Sequence[tuple[int, int]]

#: Deployment defaults: how long an unstake waits, and the shortest refund deadline of a job.
DEFAULT_UNSTAKE_DELAY = 7 * 24 * 3600
DEFAULT_MIN_REFUND_DELAY = 3600


class Ledger(Money, ABC):
    """What coopgrid needs from the chain. One instance per chain + contract + key.

    An instance is bound to: a chain (checked by id), a signing key (the
    coordinator's, owner of the contract it deploys) and, once known, the
    contract address. Methods that read or write the contract raise
    ``ContractMissing`` while no address is set or no code is at it.
    Instances are safe to share between threads.
    """

    # ---- identity

    @property
    @abstractmethod
    def chain_id(self) -> int:
        """The chain id of the chain this ledger talks to."""

    @property
    @abstractmethod
    def account(self) -> str:
        """The checksummed address of the ledger's signing key (the coordinator)."""

    @property
    @abstractmethod
    def address(self) -> str | None:
        """The contract address (checksummed), or None before :meth:`deploy`."""

    # ---- deployment

    @abstractmethod
    def deploy(
        self,
        token: str | None = None,
        unstake_delay: int = DEFAULT_UNSTAKE_DELAY,
        min_refund_delay: int = DEFAULT_MIN_REFUND_DELAY,
    ) -> str:
        """Deploy a new ledger contract owned by :attr:`account`; wait for it; bind to it.

        ``token`` is the reward token (any ERC-20); None deploys a coopgrid token
        owned (and minted) by :attr:`account`. ``unstake_delay`` must be longer than
        the coordinator's finality window. Returns the contract address. The
        contracts are compiled (or taken from the artifact cache) in-process.
        """

    # ---- epochs

    @abstractmethod
    def prepare_commit_epoch(
        self, epoch: int, results_root: HexLike, rewards_root: HexLike, result_count: int, spends: Spends = ()
    ) -> SignedTx:
        """Sign ``commitEpoch(epoch, results_root, rewards_root, result_count, spends)``; do not send it.

        ``spends``: the cumulative spend of every job the epoch touches, as
        (escrow key, amount). Checks it against the chain first (estimate): a
        commit that would revert (wrong epoch number, not the owner, a spend
        above a budget or going down) raises ``TransactionReverted`` with
        ``tx_hash=None`` and the contract's reason. The caller persists the
        returned hash (and raw bytes, to re-broadcast the very same tx) before
        calling :meth:`broadcast`.
        """

    @abstractmethod
    def broadcast(self, signed: SignedTx) -> str:
        """Send a signed transaction; returns its hash.

        Idempotent: a transaction the node already has, or has already mined, is
        not an error. ``TransactionRejected`` if the node refuses it (e.g. its
        nonce was used by another transaction: prepare a new one).
        """

    def send_commit_epoch(
        self, epoch: int, results_root: HexLike, rewards_root: HexLike, result_count: int, spends: Spends = ()
    ) -> str:
        """:meth:`prepare_commit_epoch` then :meth:`broadcast`; returns the tx hash."""
        return self.broadcast(
            self.prepare_commit_epoch(epoch, results_root, rewards_root, result_count, spends)
        )

    def commit_epoch(
        self, epoch: int, results_root: HexLike, rewards_root: HexLike, result_count: int, spends: Spends = ()
    ) -> str:
        """Commit an epoch and wait until it is mined; returns the tx hash.

        Only the contract owner may commit, and only epoch ``last_epoch() + 1``.
        """
        tx_hash = self.send_commit_epoch(epoch, results_root, rewards_root, result_count, spends)
        self.wait_receipt(tx_hash)
        return tx_hash

    @abstractmethod
    def last_epoch(self) -> int:
        """The last committed epoch number; 0 before the first commit."""

    @abstractmethod
    def epoch_roots(self, epoch: int) -> EpochRoots | None:
        """The roots committed for ``epoch``, or None if it is not committed.

        The results root is in the contract's storage; a past epoch's rewards
        root is read from its ``EpochCommitted`` event.
        """

    @abstractmethod
    def epoch_commit(self, epoch: int) -> EpochCommit | None:
        """The epoch's commit event (result count, tx hash, block), or None if not committed."""

    # ---- transactions

    @abstractmethod
    def wait_receipt(self, tx_hash: HexLike, timeout: float | None = None) -> Receipt:
        """Wait for ``tx_hash`` to be mined and return its receipt.

        ``TransactionReverted`` (with the reason, replayed from the chain) if it
        was mined but reverted; ``TransactionPending`` if no receipt came within
        ``timeout`` seconds (default: the ledger's receipt timeout).
        """

    @abstractmethod
    def receipt(self, tx_hash: HexLike) -> Receipt | None:
        """The receipt of a mined transaction, or None if unknown or still pending.

        Does not raise for a reverted transaction: check ``status``.
        """

    def tx_block(self, tx_hash: HexLike) -> int | None:
        """The block number ``tx_hash`` was mined in, or None if it is not mined."""
        r = self.receipt(tx_hash)
        return None if r is None else r.block_number

    # ---- rewards

    @abstractmethod
    def send_claim(
        self, signer: Signer, account: str, cumulative_amount: int, proof: Sequence[HexLike]
    ) -> str:
        """Send ``claim(account, cumulative_amount, proof)``, signed and paid by ``signer``.

        ``signer`` may be anyone (None: the ledger's own key); the tokens go to
        ``account``, out of the spent escrow. Checked first: an invalid proof or
        an amount the latest rewards tree does not grant, nothing left to claim,
        or claims beyond every spend committed, raises
        ``TransactionReverted`` (``tx_hash=None``) with the contract's reason.
        """

    def claim(
        self, signer: Signer, account: str, cumulative_amount: int, proof: Sequence[HexLike]
    ) -> str:
        """:meth:`send_claim` and wait for it; returns the tx hash."""
        tx_hash = self.send_claim(signer, account, cumulative_amount, proof)
        self.wait_receipt(tx_hash)
        return tx_hash

    @abstractmethod
    def claimed(self, account: str) -> int:
        """The cumulative amount already claimed by (paid to) ``account``."""

    def balance_of(self, account: str) -> int:
        """``account``'s reward-token balance."""
        return self.token_balance(account)

    @abstractmethod
    def rewards_root(self) -> str:
        """The rewards root claims are checked against (the latest epoch's); zero before any."""

    # ---- results

    @abstractmethod
    def verify_result(self, epoch: int, leaf_hash: HexLike, proof: Sequence[HexLike]) -> bool:
        """Ask the contract whether ``leaf_hash`` is in epoch ``epoch``'s results tree.

        False (never an error) for an invalid proof, a malformed one, or an
        epoch that is not committed.
        """

    # ---- models

    @abstractmethod
    def send_publish_model(self, model_hash: HexLike) -> str:
        """Send ``publishModel(model_hash)`` (owner only); returns the tx hash.

        ``TransactionReverted`` if the model is already published.
        """

    def publish_model(self, model_hash: HexLike) -> str:
        """:meth:`send_publish_model` and wait for it; returns the tx hash."""
        tx_hash = self.send_publish_model(model_hash)
        self.wait_receipt(tx_hash)
        return tx_hash

    @abstractmethod
    def model_published(self, model_hash: HexLike) -> ModelRecord | None:
        """When the model was published on chain, or None if it was not."""

    # ---- lifetime

    def close(self) -> None:
        """Release what the ledger holds (files, connections). Idempotent."""

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# --------------------------------------------------------------------------- helpers


def hex32(x: HexLike, what: str = "hash") -> str:
    """A 32-byte value as 0x-hex (InvalidInput naming ``what`` if it is not 32 bytes)."""
    return "0x" + _b32(x, what).hex()


def _b32(x: HexLike, what: str = "hash") -> bytes:
    from coopgrid.ledger.merkle import to_bytes32  # the one parser of 32-byte values

    try:
        return to_bytes32(x)  # type: ignore[arg-type]
    except InvalidInput as exc:
        raise InvalidInput(f"{what}: {exc.message}") from exc


def checksum(address: str | bytes) -> str:
    from eth_utils import is_address, to_checksum_address

    if isinstance(address, (bytes, bytearray)):
        if len(address) != 20:
            raise InvalidInput(f"not an address: {address!r}")
        return to_checksum_address(bytes(address))
    if not isinstance(address, str) or not is_address(address.lower()):
        raise InvalidInput(f"not an address: {address!r}")
    return to_checksum_address(address.lower())


def _revert_reason(exc: BaseException) -> str | None:
    """The human reason of a web3 revert error."""
    message = getattr(exc, "message", None) or (str(exc.args[0]) if exc.args else str(exc))
    data = getattr(exc, "data", None)
    if isinstance(data, str) and data.startswith("0x08c379a0"):
        try:
            from eth_abi import decode

            return decode(["string"], bytes.fromhex(data[10:]))[0]
        except Exception:  # noqa: BLE001 - fall back to the message
            pass
    if isinstance(message, str):
        for prefix in ("execution reverted: ", "execution reverted:", "execution reverted"):
            if message.startswith(prefix):
                message = message[len(prefix) :].strip()
                break
        return message or None
    return None


def _is_connection_error(exc: BaseException) -> bool:
    from web3.exceptions import ProviderConnectionError

    if isinstance(exc, (ProviderConnectionError, ConnectionError, TimeoutError)):
        return True
    try:
        import requests

        if isinstance(exc, (requests.ConnectionError, requests.Timeout)):
            return True
    except ImportError:  # pragma: no cover
        pass
    return False


@dataclass(frozen=True)
class RetryPolicy:
    """How connection errors are retried before ``ChainUnavailable``: attempts and backoff."""

    attempts: int = 5
    initial_delay: float = 0.25
    max_delay: float = 4.0
    factor: float = 2.0

    def delays(self):
        d = self.initial_delay
        for _ in range(self.attempts - 1):
            yield d
            d = min(d * self.factor, self.max_delay)


# --------------------------------------------------------------------------- web3 implementation


class Web3Ledger(Web3Money, Ledger):
    """:class:`Ledger` over a ``web3.Web3`` and the compiled ledger contract.

    Subclasses build the Web3 (provider) and check the chain; everything else
    is here. ``key`` is the signing key (hex, bytes or a LocalAccount).
    """

    #: The ABI bound of the contract's proof arrays.
    MAX_PROOF = 32

    def __init__(
        self,
        w3: Any,
        key: Signer,
        contract_address: str | None = None,
        *,
        retry: RetryPolicy | None = None,
        receipt_timeout: float = 120.0,
        poll_interval: float = 0.1,
        gas_margin: float = 1.2,
        artifact: Any = None,
    ) -> None:
        from eth_account import Account

        self._w3 = w3
        self._signer = self._as_account(key)
        if self._signer is None:
            raise InvalidInput("the ledger needs a signing key")
        self._retry = retry or RetryPolicy()
        self._receipt_timeout = receipt_timeout
        self._poll_interval = poll_interval
        self._gas_margin = gas_margin
        self._artifact = artifact
        self._send_lock = threading.RLock()
        self._address: str | None = None
        self._contract: Any = None
        self._chain_id: int | None = None
        self._account_cls = Account
        if contract_address:
            self._bind(checksum(contract_address))

    # ---- plumbing

    @staticmethod
    def _as_account(key: Signer) -> Any:
        from eth_account import Account
        from eth_account.signers.local import LocalAccount

        if key is None:
            return None
        if isinstance(key, LocalAccount):
            return key
        if hasattr(key, "sign_transaction") and hasattr(key, "address"):
            return key
        try:
            return Account.from_key(key)
        except Exception as exc:  # noqa: BLE001
            raise InvalidInput("not a private key or signer") from exc

    def _load_artifact(self) -> Any:
        if self._artifact is None:
            from coopgrid.ledger.compile import load_artifact

            self._artifact = load_artifact()
        return self._artifact

    def _rpc(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Call ``fn``; retry connection errors with backoff, then ChainUnavailable."""
        delays = self._retry.delays()
        while True:
            try:
                return fn(*args, **kwargs)
            except Exception as exc:  # noqa: BLE001
                if not _is_connection_error(exc):
                    raise
                delay = next(delays, None)
                if delay is None:
                    raise ChainUnavailable(
                        f"the chain cannot be reached ({self._describe_endpoint()}): {exc}"
                    ) from exc
                log.warning("chain unreachable (%s); retrying in %.2fs", exc, delay)
                time.sleep(delay)

    def _describe_endpoint(self) -> str:
        return "endpoint"

    def _is_revert(self, exc: BaseException) -> bool:
        """Whether ``exc`` is the contract reverting (backends add their own kinds)."""
        from web3.exceptions import ContractLogicError

        return isinstance(exc, ContractLogicError)

    def _wrap(self, exc: Exception, what: str) -> LedgerError:
        if isinstance(exc, LedgerError):
            return exc
        if self._is_revert(exc):
            err: LedgerError = TransactionReverted(tx_hash=None, reason=_revert_reason(exc))
        else:
            err = LedgerError(f"{what} failed: {exc}")
        err.__cause__ = exc
        return err

    def _call(self, what: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        try:
            return self._rpc(fn, *args, **kwargs)
        except ChainUnavailable:
            raise
        except InvalidInput:
            raise
        except Exception as exc:  # noqa: BLE001
            raise self._wrap(exc, what) from exc

    #: True for the views made by :meth:`with_signer` (they own nothing to close).
    _borrowed = False

    def with_signer(self, key: Signer) -> Web3Ledger:
        """The same chain and contract, signing with ``key`` (e.g. a worker's own key).

        The view shares this ledger's connection; closing it closes nothing.
        """
        import copy

        view = copy.copy(self)
        view._signer = self._as_account(key)
        view._borrowed = True
        return view

    @property
    def w3(self) -> Any:
        """The underlying ``web3.Web3`` (for tools and benchmarks)."""
        return self._w3

    @property
    def chain_id(self) -> int:
        if self._chain_id is None:
            self._chain_id = int(self._call("eth_chainId", lambda: self._w3.eth.chain_id))
        return self._chain_id

    @property
    def account(self) -> str:
        return self._signer.address

    @property
    def address(self) -> str | None:
        return self._address

    def _bind(self, address: str) -> None:
        code = self._call("eth_getCode", self._w3.eth.get_code, address)
        if not code:
            raise ContractMissing(address=address)
        self._address = address
        self._contract = self._w3.eth.contract(address=address, abi=self._load_artifact().abi)
        self._token_contract = None  # read from the contract when first needed

    def _c(self) -> Any:
        if self._contract is None:
            raise ContractMissing(address=None)
        return self._contract

    def _view(self, fn_name: str, *args: Any) -> Any:
        contract = self._c()
        return self._call(
            fn_name,
            lambda: getattr(contract.functions, fn_name)(*args).call({"from": self.account}),
        )

    # ---- sending

    def _fees(self) -> dict[str, int]:
        block = self._call("eth_getBlockByNumber", self._w3.eth.get_block, "latest")
        base = int(block.get("baseFeePerGas") or 0)
        tip = self._priority_fee()
        return {"maxFeePerGas": 2 * base + tip, "maxPriorityFeePerGas": tip}

    def _priority_fee(self) -> int:
        return 10**9

    def _sign(self, signer: Any, tx: dict[str, Any]) -> SignedTx:
        """Fill nonce, gas (estimate: a revert surfaces here) and fees; sign."""
        sender = signer.address
        tx = {"from": sender, "chainId": self.chain_id, "value": 0, **tx}
        with self._send_lock:
            est = self._call("eth_estimateGas", self._w3.eth.estimate_gas, tx)
            tx["gas"] = int(est * self._gas_margin) + 5_000
            tx.update(self._fees())
            tx["nonce"] = self._call(
                "eth_getTransactionCount", self._w3.eth.get_transaction_count, sender, "pending"
            )
            tx.pop("from")
            signed = signer.sign_transaction(tx)
        raw = bytes(signed.raw_transaction)
        return SignedTx(
            tx_hash="0x" + bytes(signed.hash).hex(), raw=raw, nonce=tx["nonce"], sender=sender
        )

    def broadcast(self, signed: SignedTx) -> str:
        from web3.exceptions import Web3RPCError

        with self._send_lock:
            try:
                sent = self._rpc(self._w3.eth.send_raw_transaction, signed.raw)
            except ChainUnavailable:
                raise
            except Exception as exc:  # noqa: BLE001
                message = str(getattr(exc, "message", None) or exc).lower()
                if "already known" in message or "already imported" in message:
                    return signed.tx_hash
                if self.receipt(signed.tx_hash) is not None:
                    return signed.tx_hash  # mined already: sending it again is a no-op
                if isinstance(exc, (Web3RPCError, ValueError)) or "nonce" in message:
                    raise TransactionRejected(
                        f"the node refused transaction {signed.tx_hash}: {exc}",
                        tx_hash=signed.tx_hash,
                    ) from exc
                raise self._wrap(exc, "eth_sendRawTransaction") from exc
        tx_hash = "0x" + bytes(sent).hex()
        if tx_hash != signed.tx_hash:  # pragma: no cover - would be a node bug
            raise LedgerError(
                f"node returned {tx_hash} for {signed.tx_hash}", tx_hash=signed.tx_hash
            )
        return tx_hash

    def _transact(self, signer: Any, fn_name: str, *args: Any) -> SignedTx:
        contract = self._c()
        data = contract.encode_abi(fn_name, args=list(args))
        return self._sign(signer, {"to": self._address, "data": data})

    # ---- deployment

    def _create(self, art: Any, *args: Any) -> str:
        """Deploy ``art`` with constructor ``args``; wait; return its address."""
        from eth_abi import encode

        ctor = next((item for item in art.abi if item.get("type") == "constructor"), None)
        data = art.bytecode
        if ctor and ctor.get("inputs"):
            data += encode([i["type"] for i in ctor["inputs"]], list(args))
        with self._send_lock:
            signed = self._sign(self._signer, {"data": "0x" + data.hex()})
            tx_hash = self.broadcast(signed)
        self.wait_receipt(tx_hash)
        raw = self._call("eth_getTransactionReceipt", self._w3.eth.get_transaction_receipt, tx_hash)
        address = raw.get("contractAddress")
        if not address:  # pragma: no cover
            raise LedgerError("deployment produced no contract", tx_hash=tx_hash)
        return checksum(address)

    def deploy(
        self,
        token: str | None = None,
        unstake_delay: int = DEFAULT_UNSTAKE_DELAY,
        min_refund_delay: int = DEFAULT_MIN_REFUND_DELAY,
    ) -> str:
        if token is None:
            from coopgrid.ledger.compile import TOKEN_SOURCE, load_artifact

            token = self._create(load_artifact(TOKEN_SOURCE))
        elif not self._call("eth_getCode", self._w3.eth.get_code, checksum(token)):
            raise ContractMissing(f"no token contract at {token}: pass an ERC-20's address", address=token)
        address = self._create(self._load_artifact(), checksum(token), int(unstake_delay), int(min_refund_delay))
        self._bind(address)
        return address

    # ---- epochs

    def prepare_commit_epoch(
        self, epoch: int, results_root: HexLike, rewards_root: HexLike, result_count: int, spends: Spends = ()
    ) -> SignedTx:
        if epoch < 1 or result_count < 0:
            raise InvalidInput("epochs start at 1 and result counts are >= 0")
        return self._transact(
            self._signer,
            "commitEpoch",
            int(epoch),
            _b32(results_root, "results root"),
            _b32(rewards_root, "rewards root"),
            int(result_count),
            spends_words(spends),
        )

    def send_commit_epoch(
        self, epoch: int, results_root: HexLike, rewards_root: HexLike, result_count: int, spends: Spends = ()
    ) -> str:
        with self._send_lock:  # no other send between this nonce and its broadcast
            return self.broadcast(
                self.prepare_commit_epoch(epoch, results_root, rewards_root, result_count, spends)
            )

    def last_epoch(self) -> int:
        return int(self._view("lastEpoch"))

    def epoch_roots(self, epoch: int) -> EpochRoots | None:
        epoch = int(epoch)
        if epoch < 1:
            return None
        results = self._view("resultsRoot", epoch)
        if not any(results):
            return None
        if epoch == self.last_epoch():
            rewards = self.rewards_root()
        else:  # past epochs' rewards roots are only in their events
            commit = self.epoch_commit(epoch)
            if commit is None:  # pragma: no cover - storage without its event
                raise LedgerError(f"epoch {epoch} is stored but its event is missing")
            rewards = commit.rewards_root
        return EpochRoots(epoch=epoch, results_root=hex32(results), rewards_root=hex32(rewards))

    def epoch_commit(self, epoch: int, from_block: int = 0) -> EpochCommit | None:
        contract = self._c()
        event = contract.events.EpochCommitted
        logs = self._call(
            "eth_getLogs",
            lambda: event.get_logs(from_block=from_block, argument_filters={"epoch": int(epoch)}),
        )
        if not logs:
            return None
        ev = logs[0]
        return EpochCommit(
            epoch=int(ev["args"]["epoch"]),
            results_root=hex32(ev["args"]["resultsRoot"]),
            rewards_root=hex32(ev["args"]["rewardsRoot"]),
            result_count=int(ev["args"]["resultCount"]),
            tx_hash="0x" + bytes(ev["transactionHash"]).hex(),
            block_number=int(ev["blockNumber"]),
        )

    # ---- transactions

    def receipt(self, tx_hash: HexLike) -> Receipt | None:
        from web3.exceptions import TransactionNotFound

        h = hex32(tx_hash, "tx hash")
        try:
            raw = self._rpc(self._w3.eth.get_transaction_receipt, h)
        except TransactionNotFound:
            return None
        except ChainUnavailable:
            raise
        except Exception as exc:  # noqa: BLE001
            raise self._wrap(exc, "eth_getTransactionReceipt") from exc
        if raw is None or raw.get("blockNumber") is None:
            return None
        return Receipt(
            tx_hash=h,
            block_number=int(raw["blockNumber"]),
            gas_used=int(raw["gasUsed"]),
            status=bool(raw["status"]),
        )

    def wait_receipt(self, tx_hash: HexLike, timeout: float | None = None) -> Receipt:
        h = hex32(tx_hash, "tx hash")
        deadline = time.monotonic() + (self._receipt_timeout if timeout is None else timeout)
        while True:
            r = self.receipt(h)
            if r is not None:
                break
            if time.monotonic() >= deadline:
                raise TransactionPending(
                    f"transaction {h} has no receipt yet; it may still be mined", tx_hash=h
                )
            time.sleep(self._poll_interval)
        if not r.status:
            raise TransactionReverted(tx_hash=h, reason=self._replay_reason(h, r.block_number))
        return r

    def _replay_reason(self, tx_hash: str, block_number: int) -> str | None:
        """Why a mined transaction reverted: replay it as a call on its parent block."""
        try:
            tx = self._rpc(self._w3.eth.get_transaction, tx_hash)
            call = {
                "from": tx["from"],
                "to": tx.get("to"),
                "data": tx.get("input"),
                "value": tx.get("value", 0),
            }
            self._rpc(self._w3.eth.call, call, max(block_number - 1, 0))
        except Exception as exc:  # noqa: BLE001 - the reason is best effort
            return _revert_reason(exc) if self._is_revert(exc) else None
        return None

    # ---- rewards

    def send_claim(
        self, signer: Signer, account: str, cumulative_amount: int, proof: Sequence[HexLike]
    ) -> str:
        who = self._signer if signer is None else self._as_account(signer)
        nodes = [_b32(p, "proof node") for p in proof]
        if len(nodes) > self.MAX_PROOF:
            raise InvalidInput(f"proof longer than {self.MAX_PROOF} nodes")
        if cumulative_amount < 0:
            raise InvalidInput("amounts are >= 0")
        with self._send_lock:
            signed = self._transact(who, "claim", checksum(account), int(cumulative_amount), nodes)
            return self.broadcast(signed)

    def claimed(self, account: str) -> int:
        return int(self._view("claimed", checksum(account)))

    def rewards_root(self) -> str:
        return hex32(self._view("rewardsRoot"))

    def total_supply(self) -> int:
        """The reward token's total supply."""
        return int(self._token_view("totalSupply"))

    def owner(self) -> str:
        return checksum(self._view("owner"))

    # ---- results

    def verify_result(self, epoch: int, leaf_hash: HexLike, proof: Sequence[HexLike]) -> bool:
        try:
            leaf = _b32(leaf_hash, "leaf hash")
            nodes = [_b32(p, "proof node") for p in proof]
        except InvalidInput:
            return False
        if len(nodes) > self.MAX_PROOF or epoch < 0:
            return False
        return bool(self._view("verifyResult", int(epoch), leaf, nodes))

    # ---- models

    def send_publish_model(self, model_hash: HexLike) -> str:
        with self._send_lock:
            signed = self._transact(self._signer, "publishModel", _b32(model_hash, "model hash"))
            return self.broadcast(signed)

    def model_published(self, model_hash: HexLike) -> ModelRecord | None:
        h = _b32(model_hash, "model hash")
        published, at, block = self._view("modelPublished", h)
        if not published:
            return None
        return ModelRecord(model_hash="0x" + h.hex(), published_at=int(at), block_number=int(block))
