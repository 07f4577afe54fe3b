"""The coordinator's edge: what every HTTP request passes before a route sees it.

A request from the open internet must never reach a parser unbounded. In order:

1. **Credentials from headers, before the body.** A bearer token is looked up,
   or a worker's signed headers are verified (and their nonce used up); a
   request that carries neither may only read (GET) or post to the few public
   endpoints, with a small body. Anything else is refused with 401 before a
   byte of its body is read. A key is no credential by itself (anyone can make
   one): a key that is not a registered worker's may only register, with a
   small body.
2. **A body limit for each endpoint, enforced while streaming**: 413 as soon
   as the declared length or the bytes received pass it, with the connection
   closed. JSON endpoints get a small limit; result batches and uploads larger
   ones, and only from authenticated callers. Bodies held in memory at once
   are bounded too (``max_buffered_body_bytes``, past each body's first
   ``max_public_body_bytes``): one worker posting large result batches on many
   connections is answered 429 instead of making the coordinator hold them all.
3. **Timeouts**: a body that pauses longer than ``body_timeout`` is answered 408.
   (Headers are timed by the HTTP protocol itself, see :mod:`server`.)
4. **A signed body must be the signed body**: its sha256 is compared with the
   signed header as it is read.
5. **JSON bounded in depth, values and valid UTF-8** (orjson refuses nesting
   deeper than 1,024 and invalid UTF-8) before any other parser sees it: some
   dependencies raise Python's recursion limit so far that the standard
   library's C parser could overflow the C stack on deep input. The number of
   values is bounded first, by counting the characters that can start one: a
   3-byte ``[],`` becomes a 64-byte Python list, so a body within its byte
   limit could otherwise make each parser build twenty times its size.
6. **No NUL characters** in the path or in JSON strings: PostgreSQL cannot
   store them, and its driver would fail the request with a server error.

Uploads (``PUT /v1/blobs``) are not buffered here: the route streams them to
disk while this layer counts, times and cuts them off.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import orjson
from fastapi.concurrency import run_in_threadpool

from coopgrid.config import Settings
from coopgrid.coordinator.auth import Auth
from coopgrid.errors import AuthError, CoopgridError, InvalidInput, RateLimited, RequestTimeout, TooLarge

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

#: endpoints that take a body from anyone, credentials or not
PUBLIC_BODIES = {("POST", "/v1/ledger/verify")}
#: the one request a key that is not (yet) a registered worker's may make
REGISTRATION = ("POST", "/v1/workers")
#: endpoints whose body the route streams (to disk) instead of this layer buffering it
STREAMED = {("PUT", "/v1/blobs")}
_RESULTS = re.compile(r"^/v1/leases/[^/]+/results$")

STATE_TOKEN = "coopgrid_token"
STATE_SIGNED = "coopgrid_signed"


def error_body(exc: CoopgridError) -> dict[str, Any]:
    """The JSON every error is answered with: ``{"error", "detail", ...data}``."""
    extra = {
        k: v for k, v in exc.data.items() if isinstance(v, (str, int, float, bool, list)) and k not in ("error", "detail")
    }
    return {"error": type(exc).__name__, "detail": exc.message, **extra}


def error_headers(exc: CoopgridError) -> dict[str, str]:
    headers = {}
    if isinstance(exc, RateLimited):
        headers["retry-after"] = str(exc.data.get("retry_after", 1))
    return headers


class Edge:
    """ASGI middleware: authentication from headers, body limits, timeouts, JSON sanity."""

    def __init__(self, app: ASGIApp, auth: Auth, settings: Settings) -> None:
        self.app = app
        self.auth = auth
        self.settings = settings
        # bytes of bodies read and not yet done with (the event loop is the only writer: no lock)
        self.buffered = 0
        self.max_buffered = max(settings.max_buffered_body_bytes, settings.max_results_bytes, settings.max_json_bytes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        method, path = scope["method"], scope["path"]
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        held = 0  # what the body counts against max_buffered (once read)
        try:
            if "\x00" in path or b"%00" in scope.get("query_string", b""):
                raise InvalidInput("the request's path or query holds a NUL character (%00); remove it")
            limit, expected_hash = await self._admit(scope, method, path, headers)
            declared = headers.get("content-length")
            if declared is not None:
                if not declared.isdigit():
                    raise InvalidInput("Content-Length must be a number of bytes")
                if int(declared) > limit:
                    raise self._too_large(int(declared), limit)
            if (method, path) in STREAMED:
                await self._streamed(scope, receive, send, limit, expected_hash)
                return
            body, held = await self._read(receive, limit, expected_hash)
            if body:
                _check_json(body, self.settings.max_json_values)
        except CoopgridError as exc:
            self.buffered -= held
            await _answer(send, exc, close=True)
            return
        except BaseException:
            self.buffered -= held
            raise
        try:
            await self.app(scope, _replay(body, receive), send)
        finally:
            self.buffered -= held

    async def _admit(self, scope: Scope, method: str, path: str, headers: dict[str, str]) -> tuple[int, str | None]:
        """Authenticate from headers; the body limit that applies and the body hash that was signed."""
        state = scope.setdefault("state", {})
        s = self.settings
        if "authorization" in headers:
            state[STATE_TOKEN] = await run_in_threadpool(self.auth.token, headers["authorization"])
            # a worker registering as trusted signs as a worker *and* shows the operator's token
            if (method, path) != REGISTRATION or "x-coopgrid-worker" not in headers:
                return (s.max_upload_bytes if (method, path) in STREAMED else s.max_json_bytes), None
        if "x-coopgrid-worker" in headers:
            registering = (method, path) == REGISTRATION
            signed = await run_in_threadpool(self.auth.signed, method, path, headers, not registering)
            state[STATE_SIGNED] = signed
            if registering:
                return s.max_public_body_bytes, signed.body_hash
            return (s.max_results_bytes if _RESULTS.match(path) else s.max_json_bytes), signed.body_hash
        if method in ("GET", "HEAD", "OPTIONS") or (method, path) in PUBLIC_BODIES:
            return s.max_public_body_bytes, None
        raise AuthError(
            f"{method} {path} needs credentials: an API token (Authorization: Bearer ...) for people, "
            "or a worker's signed headers"
        )

    def _too_large(self, size: int | None, limit: int) -> TooLarge:
        what = f"{size} bytes" if size is not None else f"over {limit} bytes"
        return TooLarge(
            f"the request body is {what}; this endpoint accepts at most {limit} bytes (the coordinator's "
            "limits are settings: see `coopgrid coordinator --help`)",
            limit=limit,
        )

    async def _chunk(self, receive: Receive) -> Message:
        try:
            return await asyncio.wait_for(receive(), self.settings.body_timeout)
        except TimeoutError:
            raise RequestTimeout(
                f"the request body paused for more than {self.settings.body_timeout:g}s; send it without pauses"
            ) from None

    async def _read(self, receive: Receive, limit: int, expected_hash: str | None) -> tuple[bytes, int]:
        """The body, and what it counts against ``max_buffered`` (the caller gives that back when done)."""
        chunks: list[bytes] = []
        size = held = 0
        free = self.settings.max_public_body_bytes  # small bodies are bounded by the connections already
        try:
            while True:
                message = await self._chunk(receive)
                if message["type"] == "http.disconnect":
                    raise InvalidInput("the client went away before sending the whole body")
                chunk = message.get("body", b"")
                size += len(chunk)
                if size > limit:
                    raise self._too_large(None, limit)
                more = max(0, size - free) - held
                if more:
                    if self.buffered + more > self.max_buffered:
                        raise RateLimited(
                            f"the coordinator holds {self.max_buffered} bytes of request bodies, its limit "
                            "(max_buffered_body_bytes); send this again in a moment",
                            retry_after=1,
                        )
                    self.buffered += more
                    held += more
                chunks.append(chunk)
                if not message.get("more_body", False):
                    break
            body = b"".join(chunks)
            if expected_hash is not None and hashlib.sha256(body).hexdigest() != expected_hash:
                raise AuthError("the request body does not hash to the signed value")
        except BaseException:
            self.buffered -= held
            raise
        return body, held

    async def _streamed(self, scope: Scope, receive: Receive, send: Send, limit: int, expected_hash: str | None) -> None:
        """Pass the body through to the route chunk by chunk, counting, timing and hashing it."""
        answered = False
        size = 0
        hasher = hashlib.sha256() if expected_hash is not None else None

        async def guarded_receive() -> Message:
            nonlocal answered, size
            if answered:
                return {"type": "http.disconnect"}
            try:
                message = await self._chunk(receive)
                if message["type"] == "http.request":
                    chunk = message.get("body", b"")
                    size += len(chunk)
                    if size > limit:
                        raise self._too_large(None, limit)
                    if hasher is not None:
                        hasher.update(chunk)
                        if not message.get("more_body", False) and hasher.hexdigest() != expected_hash:
                            raise AuthError("the request body does not hash to the signed value")
                return message
            except CoopgridError as exc:
                answered = True
                await _answer(send, exc, close=True)
                return {"type": "http.disconnect"}

        async def guarded_send(message: Message) -> None:
            if not answered:
                await send(message)

        try:
            await self.app(scope, guarded_receive, guarded_send)
        except Exception:
            if not answered:
                raise
            # the route saw the disconnect this layer made up after answering; nothing is lost


#: a \u0000 escape that is not itself escaped (an even run of backslashes before it)
_NUL_ESCAPE = re.compile(rb"(?<!\\)(?:\\\\)*\\u0000")


def _check_json(body: bytes, max_values: int) -> None:
    # every value or key but the first follows one of these (strings may hold some too: an upper bound)
    values = body.count(b",") + body.count(b":") + body.count(b"[") + body.count(b"{")
    if values > max_values:
        raise TooLarge(
            f"the request body holds up to {values} JSON values; at most {max_values} are accepted "
            "(the coordinator's max_json_values setting)",
            limit=max_values,
        )
    try:
        orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidInput(
            f"the request body is not valid JSON ({exc.msg}); send UTF-8 JSON nested at most 1,024 levels deep"
        ) from None
    if b"\\u0000" in body and _NUL_ESCAPE.search(body):
        raise InvalidInput("a string in the request body holds a NUL character (\\u0000); remove it")


def _replay(body: bytes, receive: Receive) -> Receive:
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()  # after the body: wait for the disconnect, as the server would say it

    return replay


async def _answer(send: Send, exc: CoopgridError, close: bool = False) -> None:
    body = orjson.dumps(error_body(exc))
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    headers += [(k.encode(), v.encode()) for k, v in error_headers(exc).items()]
    if close:  # the rest of the body (if any) is never read: the connection cannot be reused
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": exc.status_code, "headers": headers})
    await send({"type": "http.response.body", "body": body})
