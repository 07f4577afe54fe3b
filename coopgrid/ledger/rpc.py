"""The JSON-RPC ledger: any Ethereum endpoint (anvil, a testnet, mainnet, an L2).

web3.py's ``HTTPProvider`` with a local signing key (transactions are signed
here and sent raw; the node never holds a key). On opening it refuses a chain
whose id is not the expected one (``WrongChain``, naming both ids) and a
contract address without code (``ContractMissing``, naming the address).
Connection errors are retried with exponential backoff, then raise
``ChainUnavailable``.

    ledger = RpcLedger("http://127.0.0.1:8545", key, contract_address, chain_id=31337)
"""

from __future__ import annotations

from typing import Any

from coopgrid.errors import ConfigError, WrongChain
from coopgrid.ledger.base import RetryPolicy, Signer, Web3Ledger


class RpcLedger(Web3Ledger):
    """:class:`~coopgrid.ledger.base.Ledger` over a JSON-RPC endpoint.

    ``chain_id``: the chain the ledger must be on; None accepts whatever the
    endpoint reports (use only for tools; production configs pin it).
    ``timeout``: per-request HTTP timeout in seconds. ``retry``: how connection
    errors are retried before ``ChainUnavailable``.
    """

    def __init__(
        self,
        url: str,
        key: Signer,
        contract_address: str | None = None,
        *,
        chain_id: int | None = None,
        timeout: float = 10.0,
        retry: RetryPolicy | None = None,
        receipt_timeout: float = 120.0,
        poll_interval: float = 0.25,
        artifact: Any = None,
    ) -> None:
        from web3 import HTTPProvider, Web3

        if not url or not url.startswith(("http://", "https://")):
            raise ConfigError(f"--rpc-url must be an http(s) URL, got {url!r}")
        self.url = url
        provider = HTTPProvider(
            url, request_kwargs={"timeout": timeout}, exception_retry_configuration=None
        )
        w3 = Web3(provider)
        # bind nothing until the chain is checked
        super().__init__(
            w3,
            key,
            None,
            retry=retry,
            receipt_timeout=receipt_timeout,
            poll_interval=poll_interval,
            artifact=artifact,
        )
        actual = self.chain_id  # raises ChainUnavailable after the retries
        if chain_id is not None and int(chain_id) != actual:
            raise WrongChain(expected=int(chain_id), actual=actual)
        if contract_address:
            from coopgrid.ledger.base import checksum

            self._bind(checksum(contract_address))

    def _describe_endpoint(self) -> str:
        return self.url

    def _priority_fee(self) -> int:
        try:
            return int(self._rpc(lambda: self._w3.eth.max_priority_fee))
        except Exception:  # noqa: BLE001 - nodes without eth_maxPriorityFeePerGas
            return 10**9
