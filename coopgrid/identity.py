"""Keys and signatures: who a worker is, and proof of what it said.

A worker is an Ethereum account (secp256k1) kept in an encrypted keystore
file (eth-account's standard JSON keystore). It signs

* each result batch with EIP-712 typed data (:mod:`coopgrid.protocol`), and
* each request it makes (lease, heartbeat, registration) with an EIP-191
  message over the grid it is meant for, the method, path, time, a fresh
  nonce and the body's sha256, so the coordinator knows the request comes
  from the key without issuing worker tokens, and a captured request can be
  replayed neither here (the nonce is remembered for the clock window) nor
  at another coordinator (the grid id differs).

Everything the signature covers travels in headers, so the coordinator
authenticates a request before it reads the body, then checks that the body
it reads hashes to the signed value.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import time
from pathlib import Path
from typing import NamedTuple

from eth_account import Account
from eth_account.messages import encode_defunct
from eth_keys import keys

from coopgrid.errors import AuthError, ConfigError
from coopgrid.protocol import ResultRef, batch_digest

PASSWORD_ENV = "COOPGRID_KEY_PASSWORD"
HEADER_ADDRESS = "x-coopgrid-worker"
HEADER_TIME = "x-coopgrid-time"
HEADER_SIGNATURE = "x-coopgrid-signature"
HEADER_NONCE = "x-coopgrid-nonce"
HEADER_BODY = "x-coopgrid-body-sha256"
REQUEST_HEADERS = (HEADER_ADDRESS, HEADER_TIME, HEADER_NONCE, HEADER_BODY, HEADER_SIGNATURE)

_NONCE = re.compile(r"^[0-9a-f]{16,64}$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_ADDRESS = re.compile(r"^0x[0-9a-fA-F]{40}$")


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
        identity.save(path, password)
        return identity

    def save(self, path: Path, password: str) -> None:
        """Write this key to ``path`` as a keystore encrypted with ``password`` (mode 0600)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        encrypted = Account.encrypt(self.private_key, password)
        tmp = path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(json.dumps(encrypted))
        tmp.replace(path)

    # -- results ------------------------------------------------------------

    def sign_batch(self, chain_id: int, lease_id: int, results: list[ResultRef]) -> str:
        digest = batch_digest(chain_id, self.address, lease_id, results)
        return "0x" + self._key.sign_msg_hash(digest).to_bytes().hex()

    # -- requests -----------------------------------------------------------

    def request_headers(
        self, method: str, path: str, body: bytes, grid: str, now: float | None = None, nonce: str | None = None
    ) -> dict[str, str]:
        """Headers that sign one request for the grid ``grid`` (its id from ``GET /v1/info``)."""
        stamp = str(int(now if now is not None else time.time()))
        nonce = nonce or secrets.token_hex(16)
        body_hash = hashlib.sha256(body).hexdigest()
        message = encode_defunct(text=request_text(grid, method, path, stamp, nonce, body_hash))
        signature = Account.sign_message(message, self.private_key).signature.hex()
        return {
            HEADER_ADDRESS: self.address,
            HEADER_TIME: stamp,
            HEADER_NONCE: nonce,
            HEADER_BODY: body_hash,
            HEADER_SIGNATURE: signature if signature.startswith("0x") else "0x" + signature,
        }


def request_text(grid: str, method: str, path: str, stamp: str, nonce: str, body_hash: str) -> str:
    """The EIP-191 message a worker signs for one request (version 2 of the scheme)."""
    return f"coopgrid-request/2\n{grid}\n{method.upper()} {path}\n{stamp}\n{nonce}\n{body_hash}"


def recover_batch_signer(chain_id: int, worker: str, lease_id: int, results: list[ResultRef], signature: str) -> str:
    """The address that signed this batch (checksummed); AuthError if unreadable."""
    digest = batch_digest(chain_id, worker, lease_id, results)
    try:
        sig = keys.Signature(bytes.fromhex(signature[2:]))
        return sig.recover_public_key_from_msg_hash(digest).to_checksum_address()
    except Exception as exc:  # eth_keys raises several types for a malformed signature
        raise AuthError("the result batch signature is malformed") from exc


class SignedRequest(NamedTuple):
    """A worker request whose signature checked out over its headers."""

    address: str  # checksummed
    nonce: str
    stamp: int
    body_hash: str  # the body must hash to this; the caller checks it while reading


def verify_request_headers(
    grid: str, method: str, path: str, headers: dict[str, str], max_skew: float, now: float | None = None
) -> SignedRequest:
    """Check a worker's signed request from its headers alone (lower-case names).

    The body is not needed: its sha256 is a signed header, which the caller
    compares with the body as it reads it. Replays within the clock window
    are the caller's to refuse (it remembers ``nonce``)."""
    values = {}
    for name in REQUEST_HEADERS:
        value = headers.get(name)
        if value is None:
            raise AuthError(f"worker requests must be signed: header {name} is missing (a coopgrid worker older "
                            "than this coordinator? upgrade it)")
        values[name] = value.strip()
    address, stamp, nonce, body_hash, signature = (values[n] for n in REQUEST_HEADERS)
    if not _ADDRESS.match(address):
        raise AuthError(f"{HEADER_ADDRESS} must be an Ethereum address (0x and 40 hex characters)")
    if not stamp.isdigit() or len(stamp) > 12:
        raise AuthError(f"{HEADER_TIME} must be a unix time in seconds")
    if not _NONCE.match(nonce):
        raise AuthError(f"{HEADER_NONCE} must be 16 to 64 lowercase hex characters, fresh for every request")
    if not _SHA256.match(body_hash):
        raise AuthError(f"{HEADER_BODY} must be the body's sha256 in 64 lowercase hex characters")
    age = abs((now if now is not None else time.time()) - int(stamp))
    if age > max_skew:
        raise AuthError(f"the request's signed time is {age:.0f}s off the coordinator's clock; check the worker's clock")
    try:
        message = encode_defunct(text=request_text(grid, method, path, stamp, nonce, body_hash))
        signer = Account.recover_message(message, signature=signature)
    except Exception as exc:  # eth-account raises several types for a malformed signature
        raise AuthError("the request signature is malformed") from exc
    if signer.lower() != address.lower():
        raise AuthError(
            "the request signature does not match the worker address (signed for another grid, method, path "
            "or body?)"
        )
    return SignedRequest(signer, nonce, int(stamp), body_hash)


def verify_request(
    grid: str, method: str, path: str, body: bytes, headers: dict[str, str], max_skew: float, now: float | None = None
) -> str:
    """Check a whole signed request, body included; returns the worker's checksummed address."""
    signed = verify_request_headers(grid, method, path, headers, max_skew, now)
    if hashlib.sha256(body).hexdigest() != signed.body_hash:
        raise AuthError("the request body does not hash to the signed value")
    return signed.address
