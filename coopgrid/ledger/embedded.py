"""The embedded chain: a py-evm chain inside the process, persisted in SQLite.

web3.py talks to it through eth-tester's ``EthereumTesterProvider``; the
chain's key-value store is :class:`SQLiteAtomicDB`, py-evm's ``BaseAtomicDB``
over one SQLite table, so that every block's writes land in one SQLite
transaction (WAL, ``synchronous=FULL``): a SIGKILL at any point leaves the
file at the last fully written block. On restart the chain is rebuilt around
the existing head instead of a fresh genesis.

Only the coordinator's key, passed in, is funded (in the genesis allocation)
and signs; eth-tester's well-known test keys are never created. One process
owns the file at a time (an exclusive ``flock`` on ``<file>.lock``).

    ledger = EmbeddedLedger(data_dir / "chain.sqlite", key=coordinator_key)
    address = ledger.deploy()            # once; keep the address in the settings
    ...
    ledger.close()
"""

from __future__ import annotations

import contextlib
import fcntl
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from coopgrid.errors import ChainUnavailable, ConfigError, WrongChain
from coopgrid.ledger.base import RetryPolicy, Signer, Web3Ledger

#: Chain id of embedded chains unless another is asked for ("coop" in ASCII).
EMBEDDED_CHAIN_ID = 0x636F6F70
#: What the coordinator's account holds at genesis (it pays every transaction).
GENESIS_BALANCE = 10**9 * 10**18
GAS_LIMIT = 30_000_000

_SCHEMA = """
CREATE TABLE IF NOT EXISTS kv (k BLOB PRIMARY KEY, v BLOB NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


# --------------------------------------------------------------------------- storage


def _atomic_db_base() -> type:
    from eth.db.backends.base import BaseAtomicDB

    return BaseAtomicDB


class SQLiteAtomicDB(_atomic_db_base()):  # type: ignore[misc]
    """py-evm's ``BaseAtomicDB`` over a SQLite table ``kv(k, v)``.

    A plain write is its own SQLite transaction; writes inside
    ``atomic_batch()`` are buffered and committed in one transaction when the
    block exits normally (discarded if it raises). Reads see the batch's own
    pending writes. Thread-safe (one connection, one lock).
    """

    def __init__(self, path: str | Path, *, synchronous: str = "FULL") -> None:
        self.path = Path(path)
        self._lock = threading.RLock()
        self._conn = sqlite3.connect(
            str(self.path), isolation_level=None, check_same_thread=False, timeout=30
        )
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute(f"PRAGMA synchronous={synchronous}")
        self._conn.executescript(_SCHEMA)

    # DatabaseAPI
    def __getitem__(self, key: bytes) -> bytes:
        with self._lock:
            row = self._conn.execute("SELECT v FROM kv WHERE k = ?", (bytes(key),)).fetchone()
        if row is None:
            raise KeyError(key)
        return bytes(row[0])

    def __setitem__(self, key: bytes, value: bytes) -> None:
        with self._lock:
            self._conn.execute(
                "INSERT OR REPLACE INTO kv (k, v) VALUES (?, ?)", (bytes(key), bytes(value))
            )

    def __delitem__(self, key: bytes) -> None:
        with self._lock:
            cur = self._conn.execute("DELETE FROM kv WHERE k = ?", (bytes(key),))
        if cur.rowcount == 0:
            raise KeyError(key)

    def _exists(self, key: bytes) -> bool:
        with self._lock:
            return (
                self._conn.execute("SELECT 1 FROM kv WHERE k = ?", (bytes(key),)).fetchone()
                is not None
            )

    @contextlib.contextmanager
    def atomic_batch(self) -> Iterator[Any]:
        from eth.db.atomic import AtomicDBWriteBatch

        with self._lock:
            batch = AtomicDBWriteBatch(self)
            try:
                yield batch
                diff = batch._diff()
                self._apply(diff.pending_items(), diff.deleted_keys())
            finally:
                # the batch is unusable out of its context, as in py-evm's AtomicDB
                batch._track_diff = None
                batch._write_target_db = None

    def _apply(self, items: Any, deleted: Any) -> None:
        conn = self._conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.executemany(
                "INSERT OR REPLACE INTO kv (k, v) VALUES (?, ?)",
                [(bytes(k), bytes(v)) for k, v in items],
            )
            if deleted:
                conn.executemany("DELETE FROM kv WHERE k = ?", [(bytes(k),) for k in deleted])
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    # metadata (chain id, funded account)
    def get_meta(self, name: str) -> str | None:
        with self._lock:
            row = self._conn.execute("SELECT value FROM meta WHERE name = ?", (name,)).fetchone()
        return None if row is None else row[0]

    def set_meta(self, name: str, value: str) -> None:
        with self._lock:
            self._conn.execute(
                "INSERT OR REPLACE INTO meta (name, value) VALUES (?, ?)", (name, value)
            )

    def close(self) -> None:
        with self._lock:
            self._conn.close()


# --------------------------------------------------------------------------- chain + backend


def _chain_class(chain_id: int) -> type:
    from eth.chains.base import MiningChain
    from eth.vm.forks import PragueVM

    def create_header_from_parent(self, parent_header, **header_params):
        # a constant gas limit, like eth-tester's own chain
        header_params["gas_limit"] = parent_header.gas_limit
        return MiningChain.create_header_from_parent(self, parent_header, **header_params)

    def get_transaction_builder(self):
        return self.get_vm().get_transaction_builder()

    return type(
        "CoopgridEmbeddedChain",
        (MiningChain,),
        {
            "chain_id": chain_id,
            "vm_configuration": ((0, PragueVM),),
            "create_header_from_parent": create_header_from_parent,
            "get_transaction_builder": get_transaction_builder,
        },
    )


def _has_head(db: SQLiteAtomicDB) -> bool:
    from eth.db.schema import SchemaV1

    return SchemaV1.make_canonical_head_hash_lookup_key() in db


def _backend_class() -> type:
    from eth_tester import PyEVMBackend
    from eth_tester.backends.pyevm.serializers import (
        serialize_transaction,
        serialize_transaction_receipt,
    )
    from eth_tester.exceptions import TransactionNotFound

    class SQLitePyEVMBackend(PyEVMBackend):
        """eth-tester's py-evm backend around a chain stored in a :class:`SQLiteAtomicDB`.

        ``genesis`` (the first time only): ``{"chain_id", "alloc": {address: wei}}``.
        No keys: every transaction arrives signed (``eth_sendRawTransaction``).
        """

        def __init__(self, db: SQLiteAtomicDB, chain_id: int, alloc: dict[bytes, int]) -> None:
            self._db = db
            self._chain_id = chain_id
            self._alloc = alloc
            super().__init__()

        def reset_to_genesis(self, *args: Any, **kwargs: Any) -> None:
            chain_cls = _chain_class(self._chain_id)
            self.account_keys = ()
            if _has_head(self._db):
                self.chain = chain_cls(self._db)
                return
            state = {
                address: {"balance": balance, "nonce": 0, "code": b"", "storage": {}}
                for address, balance in self._alloc.items()
            }
            params = self.generate_genesis_params(overrides={"gas_limit": GAS_LIMIT})
            self.chain = chain_cls.from_genesis(self._db, params, state)

        def _locate(self, tx_hash: bytes) -> tuple[Any, Any, int, bool]:
            chain = self.chain
            pending = chain.get_block()
            for i, tx in enumerate(pending.transactions):
                if tx.hash == tx_hash:
                    return pending, tx, i, True
            try:
                number, index = chain.chaindb.get_transaction_index(tx_hash)
            except Exception as exc:  # eth.exceptions.TransactionNotFound
                raise TransactionNotFound(f"No transaction found for {tx_hash.hex()}") from exc
            block = chain.get_canonical_block_by_number(number)
            return block, block.transactions[index], index, False

        def get_transaction_by_hash(self, transaction_hash: bytes) -> Any:
            block, tx, index, pending = self._locate(transaction_hash)
            return serialize_transaction(block, tx, index, pending)

        def get_transaction_receipt(self, transaction_hash: bytes) -> Any:
            block, tx, index, pending = self._locate(transaction_hash)
            receipts = block.get_receipts(self.chain.chaindb)
            return serialize_transaction_receipt(
                block, receipts, tx, index, pending, self.chain.get_vm()
            )

    return SQLitePyEVMBackend


def _provider(tester: Any, chain_id: int) -> Any:
    """An EthereumTesterProvider reporting ``chain_id`` and serialising requests."""
    import copy

    from web3.providers.eth_tester import EthereumTesterProvider
    from web3.providers.eth_tester.defaults import API_ENDPOINTS, static_return

    endpoints = copy.copy(API_ENDPOINTS)
    endpoints["eth"] = dict(endpoints["eth"], chainId=static_return(chain_id))
    endpoints["net"] = dict(endpoints.get("net", {}), version=static_return(str(chain_id)))

    class LockedProvider(EthereumTesterProvider):
        _lock = threading.RLock()

        def make_request(self, method: Any, params: Any) -> Any:
            with self._lock:
                return super().make_request(method, params)

    return LockedProvider(ethereum_tester=tester, api_endpoints=endpoints)


# --------------------------------------------------------------------------- the ledger


class EmbeddedLedger(Web3Ledger):
    """:class:`~coopgrid.ledger.base.Ledger` on a py-evm chain stored in ``path`` (SQLite).

    ``key`` is the coordinator's private key: the first time, the file is
    created with a genesis that funds that key's account; afterwards the
    existing chain is reopened (whatever key is given; only the funded account
    can pay for transactions). ``chain_id`` defaults to the one stored in the
    file (:data:`EMBEDDED_CHAIN_ID` for a new one); giving another raises
    ``WrongChain``. ``contract_address`` is checked to hold the contract
    (``ContractMissing`` otherwise).
    """

    def __init__(
        self,
        path: str | Path,
        key: Signer,
        contract_address: str | None = None,
        *,
        chain_id: int | None = None,
        genesis_balance: int = GENESIS_BALANCE,
        synchronous: str = "FULL",
        receipt_timeout: float = 30.0,
        artifact: Any = None,
    ) -> None:
        from eth_tester import EthereumTester
        from web3 import Web3

        self.path = Path(path)
        self._lock_fh = None
        self._db: SQLiteAtomicDB | None = None
        signer = self._as_account(key)
        if signer is None:
            raise ConfigError("the embedded chain needs the coordinator's key")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._lock_fh = open(str(self.path) + ".lock", "a+")  # noqa: SIM115
            try:
                fcntl.flock(self._lock_fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError as exc:
                raise ChainUnavailable(
                    f"the embedded chain {self.path} is in use by another process "
                    "(one coordinator owns it)"
                ) from exc
            self._db = db = SQLiteAtomicDB(self.path, synchronous=synchronous)
            stored = db.get_meta("chain_id")
            if stored is None:
                if _has_head(db):  # pragma: no cover - a file from elsewhere
                    raise ConfigError(f"{self.path} holds a chain without coopgrid metadata")
                cid = EMBEDDED_CHAIN_ID if chain_id is None else int(chain_id)
                db.set_meta("chain_id", str(cid))
                db.set_meta("funded_account", signer.address)
            else:
                cid = int(stored)
                if chain_id is not None and int(chain_id) != cid:
                    raise WrongChain(expected=int(chain_id), actual=cid)
            alloc = {bytes.fromhex(signer.address[2:]): int(genesis_balance)}
            backend = _backend_class()(db, cid, alloc)
            tester = EthereumTester(backend=backend, auto_mine_transactions=True)
            w3 = Web3(_provider(tester, cid))
            self._tester = tester
            super().__init__(
                w3,
                signer,
                contract_address,
                retry=RetryPolicy(attempts=1),
                receipt_timeout=receipt_timeout,
                poll_interval=0.01,
                artifact=artifact,
            )
            self._chain_id = cid
        except BaseException:
            self.close()
            raise

    def _describe_endpoint(self) -> str:
        return f"embedded chain {self.path}"

    def _is_revert(self, exc: BaseException) -> bool:
        from eth_tester.exceptions import TransactionFailed

        return isinstance(exc, TransactionFailed) or super()._is_revert(exc)

    @property
    def funded_account(self) -> str | None:
        """The account funded at genesis (the one that can pay for transactions)."""
        return None if self._db is None else self._db.get_meta("funded_account")

    def block_number(self) -> int:
        return int(self._w3.eth.block_number)

    def close(self) -> None:
        if self._borrowed:
            return
        if self._db is not None:
            self._db.close()
            self._db = None
        if self._lock_fh is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(self._lock_fh.fileno(), fcntl.LOCK_UN)
            self._lock_fh.close()
            self._lock_fh = None

    def __del__(self) -> None:  # pragma: no cover - best effort
        with contextlib.suppress(Exception):
            self.close()


def open_embedded(data_dir: str | Path, key: Signer, **kwargs: Any) -> EmbeddedLedger:
    """The embedded ledger of a coordinator's data dir (``<data_dir>/chain.sqlite``)."""
    return EmbeddedLedger(Path(data_dir) / "chain.sqlite", key, **kwargs)


__all__ = ["EmbeddedLedger", "SQLiteAtomicDB", "EMBEDDED_CHAIN_ID", "open_embedded"]
