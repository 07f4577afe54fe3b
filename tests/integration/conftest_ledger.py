"""Shared fixtures for the ledger contract suite (imported by test_ledger.py).

``chain`` is parametrized over the two backends: the embedded py-evm chain
(a SQLite file in a tmp dir) and anvil on 127.0.0.1 (started once per session
on a free port, stopped at the end). Each test gets a fresh coordinator key
and a freshly deployed contract.

anvil comes from the npm package @foundry-rs/anvil-linux-amd64:

    npm install --no-save --prefix <repo> @foundry-rs/anvil-linux-amd64

It is looked up at $COOPGRID_ANVIL, then under <repo>/node_modules, then on
PATH. Without it the anvil tests are skipped, except under CI (CI=true), where
a missing anvil is a failure.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
ANVIL_NPM = "@foundry-rs/anvil-linux-amd64"
ANVIL_CHAIN_ID = 31337
FUNDS = 10**24  # wei given to each test account


def find_anvil() -> str | None:
    """The anvil binary: $COOPGRID_ANVIL, <repo>/node_modules/..., or PATH."""
    env = os.environ.get("COOPGRID_ANVIL")
    if env:
        return env if os.access(env, os.X_OK) else None
    candidate = REPO / "node_modules" / ANVIL_NPM / "bin" / "anvil"
    if os.access(candidate, os.X_OK):
        return str(candidate)
    return shutil.which("anvil")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rpc(url: str, method: str, params: list[Any]) -> Any:
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": params}).encode()
    req = urllib.request.Request(url, body, {"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=5) as resp:  # noqa: S310 - loopback only
        out = json.loads(resp.read())
    if "error" in out:
        raise RuntimeError(out["error"])
    return out["result"]


class Anvil:
    """An anvil process on 127.0.0.1:<port>, owned by the fixture."""

    def __init__(self, binary: str, port: int | None = None, extra: tuple[str, ...] = ()) -> None:
        """``port``: a given one (to start a node again where clients expect it); ``extra``: more flags."""
        self.port = port or _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen(
            [
                binary,
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--chain-id",
                str(ANVIL_CHAIN_ID),
                "--silent",
                *extra,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + 20
        while True:
            try:
                _rpc(self.url, "eth_chainId", [])
                return
            except Exception:  # noqa: BLE001 - not up yet
                if self.proc.poll() is not None:
                    err = self.proc.stderr.read().decode() if self.proc.stderr else ""
                    raise RuntimeError(f"anvil exited: {err}") from None
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError("anvil did not start within 20 s") from None
                time.sleep(0.05)

    def fund(self, address: str, wei: int = FUNDS) -> None:
        _rpc(self.url, "anvil_setBalance", [address, hex(wei)])

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        if self.proc.stderr:
            self.proc.stderr.close()


@pytest.fixture(scope="session")
def anvil() -> Iterator[Anvil]:
    binary = find_anvil()
    if binary is None:
        message = (
            f"anvil not found: run `npm install --no-save --prefix {REPO} {ANVIL_NPM}` "
            "or set COOPGRID_ANVIL"
        )
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    node = Anvil(binary)
    try:
        yield node
    finally:
        node.stop()


def new_key() -> Any:
    """A fresh account (never a well-known test key)."""
    from eth_account import Account

    return Account.create()


class Chain:
    """One backend under test: opens ledgers on it and funds accounts."""

    kind: str
    chain_id: int

    def open(self, key: Any, contract_address: str | None = None, **kwargs: Any) -> Any:
        raise NotImplementedError

    def fund(self, ledger: Any, address: str) -> None:
        raise NotImplementedError

    def advance(self, ledger: Any, seconds: int) -> None:
        """Move the chain's clock ``seconds`` forward (a new block carries the time)."""
        raise NotImplementedError

    def close(self) -> None:
        for ledger in getattr(self, "_opened", []):
            ledger.close()


class EmbeddedChain(Chain):
    kind = "embedded"

    def __init__(self, tmp: Path) -> None:
        from coopgrid.ledger.embedded import EMBEDDED_CHAIN_ID

        self.path = tmp / "chain.sqlite"
        self.chain_id = EMBEDDED_CHAIN_ID
        self._opened: list[Any] = []

    def open(self, key: Any, contract_address: str | None = None, **kwargs: Any) -> Any:
        from coopgrid.ledger.embedded import EmbeddedLedger

        # one process, one owner of the file: a new handle replaces the others
        for ledger in self._opened:
            ledger.close()
        self._opened = []
        ledger = EmbeddedLedger(self.path, key, contract_address, **kwargs)
        self._opened.append(ledger)
        return ledger

    def fund(self, ledger: Any, address: str) -> None:
        """Send ether from the coordinator (the account funded at genesis)."""
        w3 = ledger.w3
        signer = ledger._signer
        tx = {
            "to": address,
            "value": FUNDS // 10,
            "gas": 21_000,
            "maxFeePerGas": 10**10,
            "maxPriorityFeePerGas": 10**9,
            "nonce": w3.eth.get_transaction_count(signer.address, "pending"),
            "chainId": ledger.chain_id,
        }
        signed = signer.sign_transaction(tx)
        w3.eth.wait_for_transaction_receipt(w3.eth.send_raw_transaction(signed.raw_transaction))

    def advance(self, ledger: Any, seconds: int) -> None:
        now = ledger.w3.eth.get_block("latest")["timestamp"]
        ledger._tester.time_travel(now + seconds)


class AnvilChain(Chain):
    kind = "rpc"

    def __init__(self, node: Anvil) -> None:
        self.node = node
        self.url = node.url
        self.chain_id = ANVIL_CHAIN_ID
        self._opened: list[Any] = []

    def open(self, key: Any, contract_address: str | None = None, **kwargs: Any) -> Any:
        from coopgrid.ledger.base import RetryPolicy
        from coopgrid.ledger.rpc import RpcLedger

        kwargs.setdefault("chain_id", ANVIL_CHAIN_ID)
        kwargs.setdefault("retry", RetryPolicy(attempts=2, initial_delay=0.05))
        kwargs.setdefault("poll_interval", 0.02)
        ledger = RpcLedger(self.url, key, contract_address, **kwargs)
        self._opened.append(ledger)
        return ledger

    def fund(self, ledger: Any, address: str) -> None:
        self.node.fund(address)

    def advance(self, ledger: Any, seconds: int) -> None:
        _rpc(self.url, "evm_increaseTime", [seconds])
        _rpc(self.url, "evm_mine", [])


@pytest.fixture(params=["embedded", "rpc"])
def chain(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Chain]:
    """Each backend in turn."""
    if request.param == "embedded":
        c: Chain = EmbeddedChain(tmp_path)
    else:
        c = AnvilChain(request.getfixturevalue("anvil"))
    try:
        yield c
    finally:
        c.close()


@pytest.fixture
def coordinator(chain: Chain) -> Any:
    """The coordinator's account (funded on the chain under test)."""
    key = new_key()
    if isinstance(chain, AnvilChain):
        chain.node.fund(key.address)
    return key


@pytest.fixture
def ledger(chain: Chain, coordinator: Any) -> Any:
    """A ledger with a freshly deployed contract, owned by ``coordinator``."""
    led = chain.open(coordinator.key)
    led.deploy()
    return led


@pytest.fixture
def funded(chain: Chain, ledger: Any):
    """A function making a new account with ether for gas on the chain under test."""

    def make() -> Any:
        acct = new_key()
        chain.fund(ledger, acct.address)
        return acct

    return make
