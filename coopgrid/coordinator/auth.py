"""Who is asking: API tokens for people, signatures for workers.

Tokens are random secrets shown once; only their sha256 is stored. Workers
carry no token: every request they make is signed with their key
(:func:`coopgrid.identity.verify_request`).
"""

from __future__ import annotations

import hashlib
import secrets
import time

from coopgrid.config import Settings
from coopgrid.errors import AuthError, Forbidden, InvalidInput
from coopgrid.identity import verify_request
from coopgrid.store.base import Store, Token, WorkerRecord

ROLES = ("operator", "submitter")
TOKEN_PREFIX = "cgt_"


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


class Auth:
    def __init__(self, store: Store, settings: Settings) -> None:
        self.store = store
        self.settings = settings
        self._workers: dict[str, WorkerRecord] = {}

    def issue(self, name: str, role: str) -> tuple[Token, str]:
        """A new token and its secret (the only time the secret exists in clear)."""
        if role not in ROLES:
            raise InvalidInput(f"role must be one of {', '.join(ROLES)}, not {role!r}")
        secret = TOKEN_PREFIX + secrets.token_urlsafe(32)
        token = self.store.add_token(name, role, hash_secret(secret), time.time())
        return token, secret

    def ensure_operator(self) -> str | None:
        """Create the first operator token if there is none; returns its secret then."""
        if self.store.count_tokens("operator"):
            return None
        return self.issue("operator", "operator")[1]

    def token(self, authorization: str | None) -> Token:
        if not authorization or not authorization.lower().startswith("bearer "):
            raise AuthError()
        token = self.store.token_by_hash(hash_secret(authorization[7:].strip()))
        if token is None:
            raise AuthError("the API token is not valid")
        return token

    @staticmethod
    def require_operator(token: Token) -> None:
        if token.role != "operator":
            raise Forbidden("only an operator token may do this", role=token.role)

    def worker_address(self, method: str, path: str, body: bytes, headers: dict[str, str]) -> str:
        return verify_request(method, path, body, headers, self.settings.auth_skew_seconds)

    def worker(self, method: str, path: str, body: bytes, headers: dict[str, str]) -> WorkerRecord:
        address = self.worker_address(method, path, body, headers)
        record = self._workers.get(address)
        if record is None:
            record = self.store.get_worker(address)
            if record is None:
                raise AuthError(f"worker {address} is not registered: POST /v1/workers first", address=address)
            self._workers[address] = record
        return record

    def forget_worker(self, address: str) -> None:
        self._workers.pop(address, None)
