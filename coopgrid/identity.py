"""Keys and signatures: who a worker is, and proof of what it said.

A worker is an Ethereum account (secp256k1) kept in an encrypted keystore
file (eth-account's standard JSON keystore). It signs

* each result batch with EIP-712 typed data (:mod:`coopgrid.protocol`), and
* each request it makes (lease, heartbeat, registration) with an EIP-191
  message over the method, path, time and body hash, so the coordinator
  knows the request comes from the key without issuing worker tokens.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path

from eth_account import Account
from eth_account.messages import encode_defunct
from eth_keys import keys

from coopgrid.errors import AuthError, ConfigError
from coopgrid.protocol import ResultRef, batch_digest

PASSWORD_ENV = "COOPGRID_KEY_PASSWORD"
HEADER_ADDRESS = "x-coopgrid-worker"
HEADER_TIME = "x-coopgrid-time"
HEADER_SIGNATURE = "x-coopgrid-signature"


class Identity:
    """A private key and its address."""

    def __init__(self, private_key: bytes) -> None:
        self._account = Account.from_key(private_key)
        self._key = keys.PrivateKey(private_key)

    @property
    def address(self) -> str:
        return self._account.address

    @property
    def private_key(self) -> bytes:
        return self._key.to_bytes()

    @classmethod
    def generate(cls) -> Identity:
        return cls(os.urandom(32))

    @classmethod
    def load_or_create(cls, path: Path, password: str | None) -> Identity:
        """Load the keystore at ``path``, or create one there if it does not exist."""
        if password is None:
            raise ConfigError(f"set {PASSWORD_ENV} to the password of the worker keystore {path}")
        if path.exists():
            try:
                key = Account.decrypt(json.loads(path.read_text()), password)
            except ValueError as exc:
                raise ConfigError(f"cannot open keystore {path}: wrong {PASSWORD_ENV}?") from exc
            return cls(bytes(key))
        identity = cls.generate()
        path.parent.mkdir(parents=True, exist_ok=True)
        encrypted = Account.encrypt(identity.private_key, password)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(encrypted))
        tmp.chmod(0o600)
        tmp.replace(path)
        return identity

    # -- results ------------------------------------------------------------

    def sign_batch(self, chain_id: int, lease_id: int, results: list[ResultRef]) -> str:
        digest = batch_digest(chain_id, self.address, lease_id, results)
        return "0x" + self._key.sign_msg_hash(digest).to_bytes().hex()

    # -- requests -----------------------------------------------------------

    def request_headers(self, method: str, path: str, body: bytes, now: float | None = None) -> dict[str, str]:
        stamp = str(int(now if now is not None else time.time()))
        message = encode_defunct(text=_request_text(method, path, stamp, body))
        signature = Account.sign_message(message, self.private_key).signature.hex()
        return {
            HEADER_ADDRESS: self.address,
            HEADER_TIME: stamp,
            HEADER_SIGNATURE: signature if signature.startswith("0x") else "0x" + signature,
        }


def _request_text(method: str, path: str, stamp: str, body: bytes) -> str:
    return f"coopgrid-request\n{method.upper()} {path}\n{stamp}\n{hashlib.sha256(body).hexdigest()}"


def recover_batch_signer(chain_id: int, worker: str, lease_id: int, results: list[ResultRef], signature: str) -> str:
    """The address that signed this batch (checksummed); AuthError if unreadable."""
    digest = batch_digest(chain_id, worker, lease_id, results)
    try:
        sig = keys.Signature(bytes.fromhex(signature[2:]))
        return sig.recover_public_key_from_msg_hash(digest).to_checksum_address()
    except Exception as exc:  # eth_keys raises several types for a malformed signature
        raise AuthError("the result batch signature is malformed") from exc


def verify_request(
    method: str, path: str, body: bytes, headers: dict[str, str], max_skew: float, now: float | None = None
) -> str:
    """Check a worker's signed request; returns its checksummed address."""
    try:
        address, stamp, signature = (headers[HEADER_ADDRESS], headers[HEADER_TIME], headers[HEADER_SIGNATURE])
    except KeyError as exc:
        raise AuthError(f"worker requests must be signed: header {exc.args[0]} is missing") from None
    try:
        age = abs((now if now is not None else time.time()) - int(stamp))
    except ValueError:
        raise AuthError(f"{HEADER_TIME} must be a unix time in seconds") from None
    if age > max_skew:
        raise AuthError(f"the request's signed time is {age:.0f}s off the coordinator's clock; check the worker's clock")
    try:
        message = encode_defunct(text=_request_text(method, path, stamp, body))
        signer = Account.recover_message(message, signature=signature)
    except Exception as exc:
        raise AuthError("the request signature is malformed") from exc
    if signer.lower() != address.lower():
        raise AuthError("the request signature does not match the worker address")
    return signer
