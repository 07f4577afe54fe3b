"""coopgrid's one exception tree.

Every error coopgrid raises on purpose derives from :class:`CoopgridError`. Each
class's docstring is its default message; errors carry the data a caller needs
(``job_id``, ``lease_id``, ``tx_hash``...) as attributes, and say what to do.
Driver and RPC errors are wrapped at the edge and kept as ``__cause__``.

    CoopgridError
     ├── ConfigError              bad settings or a data dir we cannot use
     │    └── DatabaseUnavailable the database is down or restarting: retry (HTTP 503)
     ├── NotFound                 unknown job / model / blob / worker
     │    ├── JobNotFound
     │    ├── ModelNotFound
     │    └── BlobNotFound
     ├── InvalidInput             a request or file the caller must fix
     │    ├── DatasetError
     │    ├── TooLarge
     │    └── RequestTimeout      a body that did not arrive in time
     ├── AuthError                missing/invalid token or signature
     ├── Forbidden                authenticated, but not allowed
     ├── RateLimited              too many requests: wait (retry_after seconds)
     ├── Conflict                 the request no longer fits the state
     │    └── LeaseError          unknown, expired or foreign lease
     ├── IntegrityError           bytes that do not hash to what they claim
     ├── CoordinatorUnavailable   the worker/CLI cannot reach the coordinator
     ├── BlobStoreError           the blob store (e.g. an object store) failed or cannot be reached
     ├── SealingError             an epoch's content cannot be sealed (its jobs are held)
     └── LedgerError              (ledger section below)
"""

from __future__ import annotations

from typing import Any


class CoopgridError(Exception):
    """coopgrid failed."""

    #: HTTP status the API answers with for this error.
    status_code = 500

    def __init__(self, message: str | None = None, **data: Any) -> None:
        self.message = message or (self.__doc__ or "").strip().splitlines()[0]
        self.data = data
        for key, value in data.items():
            setattr(self, key, value)
        super().__init__(self.message)


class ConfigError(CoopgridError):
    """The configuration is not usable."""


class NotFound(CoopgridError):
    """Not found."""

    status_code = 404


class JobNotFound(NotFound):
    """No such job (or it belongs to another submitter)."""


class ModelNotFound(NotFound):
    """No such model; `coopgrid models list` shows the published ones."""


class BlobNotFound(NotFound):
    """No blob with that hash."""


class InvalidInput(CoopgridError):
    """The input is not valid."""

    status_code = 422


class DatasetError(InvalidInput):
    """The dataset cannot be read."""


class TooLarge(InvalidInput):
    """The upload is larger than the coordinator accepts."""

    status_code = 413


class AuthError(CoopgridError):
    """Not authenticated: pass an API token (--token or COOPGRID_TOKEN)."""

    status_code = 401


class Forbidden(CoopgridError):
    """This token may not do that."""

    status_code = 403


class RateLimited(CoopgridError):
    """Too many requests; wait and try again (the Retry-After header says how long)."""

    status_code = 429


class RequestTimeout(InvalidInput):
    """The request's body did not arrive in time."""

    status_code = 408


class Conflict(CoopgridError):
    """The request conflicts with the current state."""

    status_code = 409


class LeaseError(Conflict):
    """The lease is unknown or expired."""


class IntegrityError(CoopgridError):
    """Bytes do not hash to the hash they were fetched by."""

    status_code = 422


class CoordinatorUnavailable(CoopgridError):
    """The coordinator cannot be reached; is `coopgrid coordinator` running?"""

    status_code = 503


class DatabaseUnavailable(ConfigError):
    """The database cannot be reached or failed mid-request; retry shortly (a restart or failover is brief)."""

    status_code = 503


class BlobStoreError(CoopgridError):
    """The blob store failed or cannot be reached; try again, and check the store (--blob-store)."""

    status_code = 503


class SealingError(CoopgridError):
    """An epoch cannot be built or committed because of what it holds; the jobs at fault are held out of sealing."""

    status_code = 409


# --- ledger -----------------------------------------------------------------


class LedgerError(CoopgridError):
    """The ledger (chain) failed."""

    status_code = 502


class ChainUnavailable(LedgerError):
    """The chain cannot be reached; check --rpc-url (or the embedded chain's file) and retry."""

    status_code = 503


class WrongChain(LedgerError):
    """The chain is not the one configured (chain id mismatch); refusing to use it."""

    def __init__(self, message: str | None = None, *, expected: int, actual: int, **data) -> None:
        super().__init__(
            message or f"wrong chain: expected chain id {expected}, the endpoint has chain id {actual}",
            expected=expected,
            actual=actual,
            **data,
        )


class ContractMissing(LedgerError):
    """No ledger contract at the configured address; run `coopgrid ledger deploy`."""

    def __init__(self, message: str | None = None, *, address: str | None, **data) -> None:
        super().__init__(
            message
            or (
                f"no ledger contract at {address} on this chain; check --contract or run `coopgrid ledger deploy`"
                if address
                else "no ledger contract address configured; run `coopgrid ledger deploy`"
            ),
            address=address,
            **data,
        )


class TransactionReverted(LedgerError):
    """The transaction was reverted by the contract."""

    status_code = 409

    def __init__(
        self, message: str | None = None, *, tx_hash: str | None, reason: str | None, **data
    ) -> None:
        super().__init__(
            message or f"transaction reverted: {reason or 'no reason given'}",
            tx_hash=tx_hash,
            reason=reason,
            **data,
        )


class TransactionRejected(LedgerError):
    """The node refused the transaction (bad nonce, no funds for gas, ...)."""

    def __init__(self, message: str | None = None, *, tx_hash: str | None, **data) -> None:
        super().__init__(message, tx_hash=tx_hash, **data)


class TransactionPending(LedgerError):
    """The transaction has no receipt yet; it may still be mined (check again later)."""

    status_code = 504
