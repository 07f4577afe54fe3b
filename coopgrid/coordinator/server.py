"""Run a coordinator: build the app, make sure an operator token exists, serve."""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
from collections.abc import Callable
from pathlib import Path

import uvicorn

from coopgrid.app import build
from coopgrid.config import Settings
from coopgrid.coordinator.api import create_api

log = logging.getLogger(__name__)


def bind(host: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.set_inheritable(True)
    return sock


def serve(
    settings: Settings,
    operator_token_file: Path | None = None,
    announce: Callable[[str], None] = print,
) -> None:
    """Serve until SIGINT/SIGTERM. Prints the operator token the first time only."""
    app = build(settings)
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
    sock = bind(settings.host, settings.port)
    host, port = sock.getsockname()[:2]
    url = f"http://{host}:{port}" if ":" not in host else f"http://[{host}]:{port}"
    # a file others can read the address from, useful with --port 0
    (settings.data_dir / "coordinator.json").write_text(json.dumps({"url": url, "pid": os.getpid()}))
    announce(f"coordinator listening on {url} (API docs at {url}/docs), data in {settings.data_dir}")
    config = uvicorn.Config(
        create_api(app),
        log_level="warning",
        access_log=False,
        timeout_graceful_shutdown=5,
    )
    # uvicorn shuts down gracefully on SIGINT/SIGTERM, then re-raises the signal
    # to the handler that was there before it; make that one a no-op so a
    # requested stop exits 0.
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: None)
    try:
        uvicorn.Server(config).run(sockets=[sock])
    finally:
        app.close()
