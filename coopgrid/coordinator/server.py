"""Run a coordinator: build the app, make sure an operator token exists, serve."""

from __future__ import annotations

import errno
import ipaddress
import json
import logging
import os
import signal
import socket
from collections.abc import Callable
from pathlib import Path

import orjson
import uvicorn
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from coopgrid.app import build
from coopgrid.config import Settings
from coopgrid.errors import ConfigError
from coopgrid.coordinator.api import create_api

log = logging.getLogger(__name__)


class TimedHttpProtocol(HttpToolsProtocol):
    """uvicorn's HTTP/1.1 protocol with a deadline and a size for each request's headers.

    uvicorn times idle keep-alive connections only after a first response: a
    client that connects and sends half a request line, or drips headers a
    byte at a time, would hold its connection for ever. Here every request
    must complete its headers within ``header_timeout`` seconds of the
    connection opening or of the previous response; the body is timed by the
    edge middleware (:mod:`coopgrid.coordinator.edge`).

    Nor does uvicorn bound the headers' size with this parser: a request line
    or header of any length, and header fields by the million (each a tuple
    some twenty times the size of a 5-byte ``a:b\\r\\n`` line), would be kept.
    Here a request line and its headers take at most ``max_header_bytes``
    and ``max_headers`` fields; more is answered 431 and the connection closed.

    Every connection counts against uvicorn's ``limit_concurrency`` (beyond it,
    everyone is answered 503), and a body only has to keep trickling: one
    client dripping bodies on a thousand connections would shut everyone else
    out. So one client address (an IPv6 /64) may hold at most
    ``max_connections_per_client`` connections; more are answered 429 and closed."""

    header_timeout = 10.0
    max_header_bytes = 64 * 1024
    max_headers = 100
    max_connections_per_client = 0  # 0: no limit
    #: open connections by client address; :func:`protocol_for` gives each server its own
    connections_by_client: dict[str, int] = {}

    def connection_made(self, transport):  # type: ignore[no-untyped-def]
        self._start_head()
        self._refusal: tuple[int, str] | None = None
        self._client_key: str | None = None
        super().connection_made(transport)
        self._arm_header_deadline()
        if self.max_connections_per_client:
            key = client_key(self.client[0] if self.client else "")
            self._client_key = key
            held = self.connections_by_client[key] = self.connections_by_client.get(key, 0) + 1
            if held > self.max_connections_per_client:
                self._refuse(
                    429, f"this address holds {held - 1} connections, the most one client may; close some",
                    error="RateLimited", extra=b"retry-after: 10\r\n",
                )

    def data_received(self, data: bytes) -> None:
        # headers are fed only as far as the limit allows; once they are complete the rest goes in whole
        while data:
            if not self._in_head:
                super().data_received(data)
                return
            room = self.max_header_bytes - self._head_bytes
            if room <= 0:
                self._refuse(431, f"the request line and headers are over {self.max_header_bytes} bytes; send less")
                return
            piece, data = data[:room], data[room:]
            self._head_bytes += len(piece)
            super().data_received(piece)
            if self.transport.is_closing() or self.transport.get_protocol() is not self:
                return  # answered (a malformed request), or upgraded to another protocol

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._header_count = 0

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_count += 1
        if self._header_count > self.max_headers:
            self._refusal = (431, f"the request has more than {self.max_headers} header fields; send fewer")
            raise ValueError(self._refusal[1])  # the parser stops; uvicorn answers through send_400_response
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._disarm_header_deadline()
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._start_head()  # what comes next is the next request's line and headers

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            self._arm_header_deadline()

    def connection_lost(self, exc):  # type: ignore[no-untyped-def]
        self._disarm_header_deadline()
        if self._client_key is not None:
            left = self.connections_by_client[self._client_key] - 1
            if left:
                self.connections_by_client[self._client_key] = left
            else:
                del self.connections_by_client[self._client_key]
            self._client_key = None
        super().connection_lost(exc)

    def send_400_response(self, msg: str) -> None:
        if self._refusal is not None:
            self._refuse(*self._refusal)
        else:
            super().send_400_response(msg)

    def _start_head(self) -> None:
        self._in_head = True
        self._head_bytes = 0
        self._header_count = 0

    def _refuse(self, status: int, detail: str, error: str = "TooLarge", extra: bytes = b"") -> None:
        body = orjson.dumps({"error": error, "detail": detail})
        self.transport.write(
            STATUS_LINE[status]
            + b"content-type: application/json\r\nconnection: close\r\n" + extra
            + b"content-length: " + str(len(body)).encode() + b"\r\n\r\n" + body
        )
        self.transport.close()

    def _arm_header_deadline(self) -> None:
        self._disarm_header_deadline()
        self._header_deadline = self.loop.call_later(self.header_timeout, self._headers_too_slow)

    def _disarm_header_deadline(self) -> None:
        handle = getattr(self, "_header_deadline", None)
        if handle is not None:
            handle.cancel()
            self._header_deadline = None

    def _headers_too_slow(self) -> None:
        self._header_deadline = None
        if not self.transport.is_closing():
            self.transport.close()


class StoppingServer(uvicorn.Server):
    """uvicorn's server, releasing held long polls as it starts to shut down.

    uvicorn waits for requests in flight (up to timeout_graceful_shutdown) before
    the app's lifespan ends: an idle worker's lease request held for 30 s would
    make every stop wait, then be cut off. Released, it is answered 204 at once."""

    def __init__(self, config: uvicorn.Config, on_shutdown: Callable[[], None]) -> None:
        super().__init__(config)
        self._on_shutdown = on_shutdown

    async def shutdown(self, sockets=None):  # type: ignore[no-untyped-def]
        self._on_shutdown()
        await super().shutdown(sockets=sockets)


def client_key(host: str) -> str:
    """What connections are counted by: the address, or its /64 for IPv6 (one subscriber's share)."""
    if ":" not in host:
        return host
    try:
        return str(ipaddress.ip_network(f"{host}/64", strict=False))
    except ValueError:
        return host


def protocol_for(settings: Settings) -> type[TimedHttpProtocol]:
    return type("CoordinatorHttpProtocol", (TimedHttpProtocol,), {
        "header_timeout": settings.header_timeout,
        # behind a reverse proxy every connection is the proxy's: the proxy limits its clients' connections
        "max_connections_per_client": 0 if settings.forwarded_allow_ips else settings.max_connections_per_client,
        "connections_by_client": {},
    })


def bind(host: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        hint = (
            "another process listens there (another coordinator?); stop it or pick another --port (0 picks a free one)"
            if exc.errno == errno.EADDRINUSE
            else "check --host (an address of this machine, e.g. 127.0.0.1 or 0.0.0.0) and --port"
        )
        raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror or exc}; {hint}", host=host, port=port) from exc
    sock.set_inheritable(True)
    return sock


def serve(
    settings: Settings,
    operator_token_file: Path | None = None,
    announce: Callable[[str], None] = print,
) -> None:
    """Serve until SIGINT/SIGTERM. Prints the operator token the first time only."""
    from coopgrid.memory import limit_malloc_arenas, settle_collector

    limit_malloc_arenas()  # before the request threads start, each with an arena of its own
    # the database, blobs and keys are nobody else's business on a shared machine
    os.umask(0o077)
    try:
        settings.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    except OSError as exc:  # a file of that name, a file on the way, no permission
        what = "is a file, not a directory" if settings.data_dir.is_file() else f"cannot be created ({exc.strerror or exc})"
        raise ConfigError(f"--data-dir {settings.data_dir} {what}; name a directory (it is created if missing)") from exc
    # bind first: a port in use must be reported before an operator token is printed and lost
    sock = bind(settings.host, settings.port)
    try:
        app = build(settings)
    except BaseException:
        sock.close()
        raise
    settle_collector()  # everything start-up built is in memory now
    secret = app.auth.ensure_operator()
    if secret:
        if operator_token_file:
            operator_token_file.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(operator_token_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as fh:
                fh.write(secret + "\n")
            announce(f"operator token written to {operator_token_file} (it is shown only once)")
        else:
            announce(f"operator token (shown only once, keep it): {secret}")
    host, port = sock.getsockname()[:2]
    url = f"http://{host}:{port}" if ":" not in host else f"http://[{host}]:{port}"
    # a file others can read the address from, useful with --port 0; written whole or not at all, since
    # they poll for it (a reader that found it created but still empty failed with a JSON error)
    info = settings.data_dir / "coordinator.json"
    info.with_suffix(".tmp").write_text(json.dumps({"url": url, "pid": os.getpid()}))
    info.with_suffix(".tmp").replace(info)
    announce(f"coordinator listening on {url} (API docs at {url}/docs), data in {settings.data_dir}")
    if settings.blob_store:
        announce(f"blobs in the {app.blobs.description}")
    config = uvicorn.Config(
        create_api(app),
        http=protocol_for(settings),
        log_level="warning",
        log_config=None,  # uvicorn's lines go through coopgrid's handler and format (see coopgrid.logs)
        access_log=False,
        timeout_graceful_shutdown=5,
        timeout_keep_alive=settings.keep_alive_timeout,
        limit_concurrency=settings.max_connections,
        # X-Forwarded-For is believed only from the proxies the operator names
        proxy_headers=bool(settings.forwarded_allow_ips),
        forwarded_allow_ips=settings.forwarded_allow_ips or "",
        h11_max_incomplete_event_size=64 * 1024,
    )
    # uvicorn shuts down gracefully on SIGINT/SIGTERM, then re-raises the signal
    # to the handler that was there before it; make that one a no-op so a
    # requested stop exits 0.
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: None)
    try:
        StoppingServer(config, app.scheduler.wakeup.close).run(sockets=[sock])
    finally:
        app.close()


def seal_forever(settings: Settings, announce: Callable[[str], None] = print) -> None:
    """``coopgrid sealer``: seal epochs whenever this process holds the grid's sealer lease, until SIGINT/SIGTERM."""
    import threading

    from coopgrid.coordinator.duties import SEALER

    os.umask(0o077)
    app = build(settings)
    if app.sealer is None:
        app.close()
        raise ConfigError("the sealer needs a ledger: pass --ledger rpc --rpc-url URL (or embedded)")
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    announce(
        f"sealer {app.duties.holder} for grid {app.store.grid_id()}: seals on chain {app.sealer.ledger.chain_id} "
        f"(contract {app.sealer.ledger.address}) whenever it holds the sealer lease"
    )
    try:
        app.sealer.run(stop, lead=lambda: app.duties.lead(SEALER), leading=False)
    finally:
        app.duties.release()
        app.close()
