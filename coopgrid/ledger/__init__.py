"""coopgrid's ledger layer: Merkle trees, the ledger contract and its two backends.

* :mod:`coopgrid.ledger.merkle` - OpenZeppelin-compatible Merkle trees (pure).
* :mod:`coopgrid.ledger.base` - the :class:`Ledger` interface.
* :mod:`coopgrid.ledger.embedded` - a py-evm chain in the process, in SQLite.
* :mod:`coopgrid.ledger.rpc` - any Ethereum JSON-RPC endpoint.
* :mod:`coopgrid.ledger.compile` - the contract, compiled in-process and cached.

Importing this package is cheap: web3, py-evm and vyper load only when a
backend is opened.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from coopgrid.errors import ConfigError
from coopgrid.ledger.base import (
    EpochCommit,
    EpochRoots,
    Ledger,
    ModelRecord,
    Receipt,
    RetryPolicy,
    SignedTx,
)

__all__ = [
    "Ledger",
    "EpochCommit",
    "EpochRoots",
    "ModelRecord",
    "Receipt",
    "RetryPolicy",
    "SignedTx",
    "open_ledger",
]

KINDS = ("embedded", "rpc")


def open_ledger(
    kind: str,
    *,
    key: Any,
    contract_address: str | None = None,
    path: str | Path | None = None,
    data_dir: str | Path | None = None,
    rpc_url: str | None = None,
    chain_id: int | None = None,
    **kwargs: Any,
) -> Ledger:
    """Open a ledger backend.

    ``kind="embedded"``: the chain in ``path`` (or ``<data_dir>/chain.sqlite``).
    ``kind="rpc"``: the endpoint ``rpc_url``. ``key`` signs (the coordinator's
    key); ``contract_address`` binds to a deployed contract (checked);
    ``chain_id`` is the chain the ledger must be on (``WrongChain`` otherwise).
    Other keyword arguments go to the backend's constructor.
    """
    if kind == "embedded":
        from coopgrid.ledger.embedded import EmbeddedLedger

        if path is None:
            if data_dir is None:
                raise ConfigError("the embedded ledger needs a data dir (or a chain file path)")
            path = Path(data_dir) / "chain.sqlite"
        return EmbeddedLedger(path, key, contract_address, chain_id=chain_id, **kwargs)
    if kind == "rpc":
        from coopgrid.ledger.rpc import RpcLedger

        if not rpc_url:
            raise ConfigError("the rpc ledger needs --rpc-url")
        return RpcLedger(rpc_url, key, contract_address, chain_id=chain_id, **kwargs)
    raise ConfigError(f"unknown ledger kind {kind!r}; expected one of {', '.join(KINDS)}")
