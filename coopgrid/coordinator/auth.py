"""Who is asking: API tokens for people, signatures for workers.

Tokens are random secrets shown once; only their sha256 is stored. Workers
carry no token: every request they make is signed with their key over
headers alone (:func:`coopgrid.identity.verify_request_headers`), so both kinds
of caller are known before a byte of the body is read. A signed request's
nonce is remembered for the clock window: the same request sent twice is
refused the second time.
"""

from __future__ import annotations

import hashlib
import secrets
import threading
import time
from collections import OrderedDict

from coopgrid.config import Settings
from coopgrid.errors import AuthError, Conflict, Forbidden, InvalidInput, NotFound, RateLimited
from coopgrid.identity import SignedRequest, verify_request_headers
from coopgrid.store.base import Store, Token, TokenInfo, WorkerRecord

ROLES = ("operator", "submitter")
REGISTRATION = ("POST", "/v1/workers")
TOKEN_PREFIX = "cgt_"


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


class NonceCache:
    """The nonces of signed requests seen within the clock window, per worker.

    Kept in the process, for a store only this process uses (SQLite); on a
    shared database they live in it (:class:`SharedNonces`). The number a key may hold is bounded, so a key cannot grow it without limit;
    the per-key request rate limits keep honest workers far below it."""

    def __init__(self, window: float, per_key: int = 20_000) -> None:
        self.window = window
        self.per_key = per_key
        self._seen: OrderedDict[tuple[str, str], float] = OrderedDict()  # in order of expiry
        self._per_address: dict[str, int] = {}
        self._lock = threading.Lock()

    def remember(self, address: str, nonce: str, now: float | None = None) -> None:
        """Record (address, nonce); AuthError if it was seen within the window."""
        now = time.time() if now is None else now
        key = (address, nonce)
        with self._lock:
            self._expire(now)
            if key in self._seen:
                raise AuthError("this signed request was already used (a replay?); sign every request afresh")
            if self._per_address.get(address, 0) >= self.per_key:
                raise RateLimited(f"worker {address} sent too many requests in {self.window:.0f}s", retry_after=10)
            # a request signed at t is accepted until t + window; remembering it for 2 windows covers both skews
            self._seen[key] = now + 2 * self.window
            self._per_address[address] = self._per_address.get(address, 0) + 1

    def _expire(self, now: float) -> None:
        while self._seen:
            key, expires = next(iter(self._seen.items()))
            if expires > now:
                break
            del self._seen[key]
            left = self._per_address[key[0]] - 1
            if left:
                self._per_address[key[0]] = left
            else:
                del self._per_address[key[0]]


class SharedNonces:
    """The nonces of signed requests in the database, for a grid of several coordinator processes:
    a request replayed to another process of the grid is refused as it would be by this one.
    Expired ones are purged by the process leading the periodic duties (:mod:`coopgrid.coordinator.duties`)."""

    def __init__(self, store: Store, window: float) -> None:
        self.store = store
        self.window = window

    def remember(self, address: str, nonce: str, now: float | None = None) -> None:
        """Record (address, nonce); AuthError if any process of the grid saw it within the window."""
        now = time.time() if now is None else now
        if not self.store.remember_nonce(address, nonce, now + 2 * self.window):
            raise AuthError("this signed request was already used (a replay?); sign every request afresh")


class Auth:
    def __init__(self, store: Store, settings: Settings) -> None:
        self.store = store
        self.settings = settings
        self.nonces: NonceCache | SharedNonces = (
            SharedNonces(store, settings.auth_skew_seconds) if store.shared else NonceCache(settings.auth_skew_seconds)
        )
        self._workers: dict[str, WorkerRecord] = {}

    @property
    def grid(self) -> str:
        return self.store.grid_id()

    def issue(self, name: str, role: str, unique: bool = False) -> tuple[Token, str]:
        """A new token and its secret (the only time the secret exists in clear).

        ``unique``: refuse a name a live token has (what people get: two "alice" tokens could not
        be told apart in `coopgrid tokens list`, nor one revoked by name)."""
        if role not in ROLES:
            raise InvalidInput(f"role must be one of {', '.join(ROLES)}, not {role!r}")
        if unique and any(t.name == name and not t.revoked for t in self.store.list_tokens()):
            raise Conflict(
                f"a token named {name!r} exists already; pick another name, or revoke it first "
                "(`coopgrid tokens list`, `coopgrid tokens revoke`)", name=name,
            )
        secret = TOKEN_PREFIX + secrets.token_urlsafe(32)
        token = self.store.add_token(name, role, hash_secret(secret), time.time())
        return token, secret

    def revoke(self, ref: str, caller: Token | None = None) -> TokenInfo:
        """Revoke the live token with this name or id; never the last operator token (nobody could recover
        but on the coordinator's machine)."""
        live = [t for t in self.store.list_tokens() if not t.revoked]
        found = [t for t in live if t.name == ref or str(t.id) == ref]
        if not found:
            raise NotFound(f"no live token named {ref!r}; `coopgrid tokens list` shows them", token=ref)
        target = found[0]
        if target.role == "operator" and sum(t.role == "operator" for t in live) == 1:
            raise Conflict(
                "refusing to revoke the last operator token: create another operator token first "
                "(`coopgrid tokens create NAME --role operator`)", token=ref,
            )
        self.store.revoke_token(target.id)
        return target

    def ensure_operator(self) -> str | None:
        """Create the first operator token if there is none; returns its secret then."""
        if self.store.count_tokens("operator"):
            return None
        if self.store.shared:
            # coordinators of one grid starting at once: the one that claims this makes the token, once
            # (the claim lapses after a minute, should that process die before making it)
            if not self.store.hold_duty("first-operator-token", secrets.token_hex(8), 60, time.time()):
                return None
            if self.store.count_tokens("operator"):
                return None
        return self.issue("operator", "operator")[1]

    def token(self, authorization: str | None) -> Token:
        if not authorization or not authorization.lower().startswith("bearer "):
            raise AuthError()
        secret = authorization[7:].strip()
        if not secret or len(secret) > 200:
            raise AuthError("the API token is not valid")
        token = self.store.token_by_hash(hash_secret(secret))
        if token is None:
            raise AuthError("the API token is not valid")
        return token

    @staticmethod
    def require_operator(token: Token) -> None:
        if token.role != "operator":
            raise Forbidden("only an operator token may do this", role=token.role)

    def signed(self, method: str, path: str, headers: dict[str, str], registered: bool = True) -> SignedRequest:
        """A worker request authenticated from its headers; its nonce is used up here.

        ``registered``: the key must be a registered worker's (AuthError otherwise), checked
        before the nonce is remembered, so that keys made up by the thousand cost no memory."""
        signed = verify_request_headers(self.grid, method, path, headers, self.settings.auth_skew_seconds)
        if registered:
            self.worker(signed.address)
        self.nonces.remember(signed.address, signed.nonce)
        return signed

    def worker(self, address: str) -> WorkerRecord:
        """The registered worker with this (checksummed) address."""
        record = self._workers.get(address)
        if record is None:
            record = self.store.get_worker(address)
            if record is None:
                raise AuthError(f"worker {address} is not registered: POST /v1/workers first", address=address)
            self._workers[address] = record
        return record

    def forget_worker(self, address: str) -> None:
        self._workers.pop(address, None)
