"""The worker's HTTP client: signed requests, retries with backoff and jitter.

While the coordinator cannot be reached (connection refused, timeouts, 502,
503, 504) a call is retried with exponential backoff and full jitter until it
succeeds or the worker is told to stop. Given several coordinators of one
grid (``URL1,URL2,...``: processes sharing one database), a request that gets
no answer goes to the next one at once, and backing off starts only once
every one has failed. Other errors come back as
:mod:`coopgrid.errors` exceptions built from the coordinator's JSON.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from typing import Any

import httpx
import orjson

from coopgrid import errors
from coopgrid.identity import Identity

log = logging.getLogger(__name__)

RETRY_STATUS = {429, 502, 503, 504}
_BY_STATUS: dict[int, type[errors.CoopgridError]] = {
    401: errors.AuthError,
    403: errors.Forbidden,
    404: errors.NotFound,
    409: errors.LeaseError,
    408: errors.RequestTimeout,
    413: errors.TooLarge,
    422: errors.InvalidInput,
    429: errors.RateLimited,
}


def error_from_response(response: httpx.Response) -> errors.CoopgridError:
    try:
        body = response.json()
        detail = body.get("detail", response.text)
        name = body.get("error", "")
    except ValueError:
        detail, name = response.text, ""
    cls = getattr(errors, name, None)
    if not (isinstance(cls, type) and issubclass(cls, errors.CoopgridError)):
        cls = _BY_STATUS.get(response.status_code, errors.CoopgridError)
    message = detail if isinstance(detail, str) else _problems(detail)
    return cls(f"{message} (HTTP {response.status_code})", status=response.status_code)


def _problems(detail: Any) -> str:
    """Validation problems ``[{"loc": [...], "msg": ...}]`` as "field: message; ..." (not raw JSON)."""
    if isinstance(detail, list) and detail and all(isinstance(p, dict) and "msg" in p for p in detail):
        parts = []
        for p in detail:
            loc = [str(x) for x in p.get("loc") or () if x not in ("body", "query", "path")]
            parts.append(f"{'.'.join(loc)}: {p['msg']}" if loc else str(p["msg"]))
        return "; ".join(parts)
    return orjson.dumps(detail).decode()


def worth_another_coordinator(reason: str) -> bool:
    """Whether a failed request is worth sending to another coordinator: it did not answer (or a proxy
    said it is down), rather than asked to slow down (429 is the grid's own limit, the same everywhere)."""
    return not reason.startswith("HTTP 429")


class Stopped(Exception):
    """The worker was asked to stop while waiting for the coordinator."""


class WorkerClient:
    def __init__(
        self,
        base_url: str,
        identity: Identity,
        stop: threading.Event | None = None,
        timeout: float = 30.0,
        backoff_cap: float = 10.0,
        give_up_after: float | None = None,
        token: str | None = None,
    ) -> None:
        #: an operator's API token, sent only where asked (registering as a trusted worker)
        self.token = token
        #: the coordinators of one grid, tried in turn: a worker fails over to the next when one stops answering
        self.urls = [u.strip().rstrip("/") for u in base_url.split(",") if u.strip()]
        self._at = 0
        #: raise CoordinatorUnavailable once the coordinator has not answered for this long (None: retry for ever)
        self.give_up_after = give_up_after
        self.identity = identity
        self.stop = stop or threading.Event()
        self.backoff_cap = backoff_cap
        self.http = httpx.Client(timeout=timeout)
        self._info: dict[str, Any] | None = None

    @property
    def base_url(self) -> str:
        """The coordinator this client talks to now."""
        return self.urls[self._at]

    def _fail_over(self, reason: str) -> None:
        """Move on to the next coordinator of the list (shared by the worker's threads: all follow)."""
        at = self._at
        log.warning("coordinator %s unreachable (%s); trying %s", self.urls[at], reason,
                    self.urls[(at + 1) % len(self.urls)])
        self._at = (at + 1) % len(self.urls)

    @property
    def grid(self) -> str:
        """The id of the grid this coordinator serves (``GET /v1/info``): requests are signed for it."""
        return str(self.info["grid_id"])

    @property
    def max_results_bytes(self) -> int:
        """The largest result batch the coordinator takes (older coordinators: 16 MiB)."""
        return int(self.info.get("max_results_bytes", 16 * 1024 * 1024))

    @property
    def long_poll_seconds(self) -> float:
        """The longest the coordinator holds an idle lease request (older coordinators: 0, they never do)."""
        return float(self.info.get("long_poll_seconds", 0.0))

    @property
    def info(self) -> dict[str, Any]:
        if self._info is None:
            self._info = self.request("GET", "/v1/info", signed=False).json()
        return self._info

    def close(self) -> None:
        self.http.close()

    def request(
        self, method: str, path: str, body: Any = None, retry: bool = True, signed: bool = True,
        timeout: float | None = None, authorized: bool = False,
    ) -> httpx.Response:
        content = b"" if body is None else orjson.dumps(body)
        attempt = 0
        failing_since: float | None = None
        tried = 0  # coordinators tried since the last back-off
        while True:
            # signed afresh on every attempt: a nonce is good for one request only
            headers = self.identity.request_headers(method, path, content, self.grid) if signed else {}
            if content:
                headers["content-type"] = "application/json"
            if authorized and self.token:
                headers["authorization"] = f"Bearer {self.token}"
            try:
                response = self.http.request(
                    method, self.base_url + path, content=content, headers=headers,
                    timeout=timeout if timeout is not None else httpx.USE_CLIENT_DEFAULT,
                )
                if response.status_code not in RETRY_STATUS:
                    if response.status_code >= 400:
                        raise error_from_response(response)
                    return response
                reason = f"HTTP {response.status_code}"
                if response.status_code == 429:
                    reason += f" (too many requests: {error_from_response(response).message})"
            except httpx.TransportError as exc:
                reason = type(exc).__name__
            if len(self.urls) > 1 and worth_another_coordinator(reason):
                self._fail_over(reason)
                tried += 1
                if tried < len(self.urls):
                    continue  # one not tried yet: at once, no back-off
                tried = 0  # every one failed: back off, then go round again
            if not retry:
                raise errors.CoordinatorUnavailable(f"{self.base_url} unreachable: {reason}")
            failing_since = failing_since or time.monotonic()
            if self.give_up_after is not None and time.monotonic() - failing_since > self.give_up_after:
                raise errors.CoordinatorUnavailable(
                    f"the coordinator at {self.base_url} has not answered for {self.give_up_after:g}s ({reason})"
                )
            delay = random.uniform(0, min(self.backoff_cap, 0.2 * 2**attempt))
            if attempt == 0 or attempt % 10 == 0:
                log.warning("coordinator %s unreachable (%s); retrying", self.base_url, reason)
            attempt += 1
            if self.stop.wait(delay):
                raise Stopped()

    def get_json(self, path: str) -> Any:
        return self.request("GET", path).json()

    def post_json(self, path: str, body: Any = None, authorized: bool = False) -> httpx.Response:
        return self.request("POST", path, body if body is not None else {}, authorized=authorized)
