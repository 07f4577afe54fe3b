"""Tools to attack a coordinator process and to check it after every hostile request.

:class:`Target` is a coordinator started through the CLI (:func:`coordinator`), with a
client that opens a fresh connection per request; :meth:`Target.check` is the check made
after every hostile request: the process is alive, ``/healthz`` answers, and its resident
memory has grown by at most :data:`RSS_BOUND`. The rest speaks HTTP/1.1 over raw sockets,
for what httpx will not send: half a request, a body that stops, a body too large to send
whole before the answer.
"""

from __future__ import annotations

import contextlib
import os
import select
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from coopgrid import datasets
from coopgrid.identity import Identity
from coopgrid.local import LocalGrid

MiB = 1 << 20
#: How much a coordinator's resident memory may grow over a whole test. The attacks send
#: bodies of 48 MiB: holding any one of them whole, even once, shows as more than twice this
#: bound. What a warm coordinator may still allocate legitimately stays below it: one JSON
#: body of at most max_json_bytes (1 MiB) at a time, SQLite's page cache (2 MiB by default),
#: the malloc arenas of the few threads a test's requests wake up, and the first quarantine's
#: work (unwinding its decisions, re-examining its partners: about 18 MiB the first time).
RSS_BOUND = 20 * MiB
ATTACK_BODY = 48 * MiB
#: generous waits for what should take milliseconds (a loaded CI machine may be slow)
PATIENCE = 30.0
#: max_upload_bytes of the coordinators here, so that uploads past it are quick to send
UPLOAD_LIMIT = 4 * MiB


@dataclass
class Response:
    """An HTTP response read off a raw socket."""

    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> object:
        return orjson.loads(self.body)


@dataclass
class Target:
    """A coordinator process under attack, and the checks made after every hostile request."""

    grid: LocalGrid
    http: httpx.Client = field(init=False)
    baseline: int = 0
    submitter: dict[str, str] = field(default_factory=dict)  # a submitter's credentials, made by warm_up

    def __post_init__(self) -> None:
        # a new connection for every request: a kept-alive one may be closed by the coordinator's header
        # timeout (2 s in one test) just as it is reused
        self.http = httpx.Client(
            base_url=self.grid.url, timeout=PATIENCE, limits=httpx.Limits(max_keepalive_connections=0)
        )
        host, port = self.grid.url.removeprefix("http://").rsplit(":", 1)
        self.address = (host, int(port))
        self.grid_id = self.expect(self.http.get("/v1/info"), 200)["grid_id"]

    @property
    def pid(self) -> int:
        assert self.grid.coordinator is not None
        return self.grid.coordinator.pid

    @property
    def auth(self) -> dict[str, str]:
        """The operator's credentials."""
        return {"authorization": f"Bearer {self.grid.token}"}

    def rss(self) -> int:
        status = Path(f"/proc/{self.pid}/status").read_text()
        return int(status.split("VmRSS:", 1)[1].split()[0]) * 1024

    def warm_up(self) -> None:
        """Make the legitimate requests whose first use allocates (imports, threads, caches); then measure."""
        token = self.http.post("/v1/tokens", json={"name": "mallory", "role": "submitter"}, headers=self.auth)
        self.submitter = {"authorization": f"Bearer {self.expect(token, 201)['token']}"}
        ok = Identity.generate()
        self.register(ok, owner="warm-up")
        job = self.submit_echo(items=4)
        assert self.http.post(f"/v1/jobs/{job}/cancel", headers=self.auth).status_code == 200
        for _ in range(3):
            assert self.http.get("/healthz").status_code == 200
            assert self.http.get("/v1/jobs", headers=self.auth).status_code == 200
            assert self.http.post("/v1/jobs", json={"task_type": "echo"}, headers=self.auth).status_code == 422
            assert self.http.put("/v1/blobs", content=os.urandom(256 * 1024), headers=self.auth).status_code == 201
            assert self.signed_post(ok, "/v1/leases", b'{"max_replicas": 1}').status_code in (201, 204, 429)
            assert self.http.post("/v1/ledger/verify", content=b"[]").status_code in (409, 422)
        self.baseline = self.rss()

    def expect(self, r: httpx.Response, status: int) -> Any:
        """The JSON of a response that must have ``status`` (or what went wrong, with the coordinator's log)."""
        if r.status_code != status:
            pytest.fail(f"{r.request.method} {r.request.url.path} answered {r.status_code}, not {status}: "
                        f"{r.text[:500]!r}\n{self.grid.log('coordinator')[-3000:]}")
        return r.json()

    def send(self, what: str, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """A hostile request; if the connection breaks, :meth:`check` says whether the coordinator died of it."""
        try:
            return self.http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            self.check(f"{what} (the connection broke: {exc!r})")
            raise

    def check(self, what: str) -> None:
        """After a hostile request: the coordinator is alive, answers, and has not grown."""
        proc = self.grid.coordinator
        assert proc is not None
        try:
            health = self.http.get("/healthz")
        except httpx.TransportError as exc:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(PATIENCE)  # a process that is dying takes a moment
            state = "does not answer" if proc.returncode is None else f"died (exit {proc.returncode})"
            pytest.fail(f"the coordinator {state} after {what}: {exc!r}\n{self.grid.log('coordinator')[-3000:]}")
        assert health.status_code == 200, f"/healthz answered {health.status_code} after {what}"
        grown = self.rss() - self.baseline
        assert grown <= RSS_BOUND, f"the coordinator grew by {grown / MiB:.1f} MiB after {what}"

    # -- talking to it -----------------------------------------------------------

    def connect(self) -> socket.socket:
        return socket.create_connection(self.address, timeout=PATIENCE)

    def signed_headers(
        self, who: Identity, method: str, path: str, body: bytes, grid: str | None = None
    ) -> dict[str, str]:
        return who.request_headers(method, path, body, grid or self.grid_id)

    def signed_post(self, who: Identity, path: str, body: bytes) -> httpx.Response:
        headers = self.signed_headers(who, "POST", path, body) | {"content-type": "application/json"}
        return self.http.post(path, content=body, headers=headers)

    def register(self, who: Identity, owner: str, name: str = "") -> httpx.Response:
        body = orjson.dumps({"name": name or f"{owner}-{who.address[2:8]}", "owner": owner})
        r = self.signed_post(who, "/v1/workers", body)
        assert r.status_code in (201, 429), r.text
        return r

    def submit_echo(self, items: int, task_size: int = 1, **trust: object) -> str:
        """An echo job (no model: its output is its input) of ``items`` items; returns its id."""
        spec = {"task_type": "echo", "dataset": self.upload(datasets.sequence(items).to_npz()), "task_size": task_size,
                "trust": {"replicas": 1, "quorum": 1, "adaptive": False, "gold_rate": 0} | trust}
        return self.expect(self.http.post("/v1/jobs", json=spec, headers=self.auth), 201)["id"]

    @contextlib.contextmanager
    def echo_job(self, items: int, **trust: object) -> Iterator[str]:
        """An echo job, cancelled afterwards so that no later lease of another test can take its replicas."""
        job = self.submit_echo(items, **trust)
        try:
            yield job
        finally:
            self.http.post(f"/v1/jobs/{job}/cancel", headers=self.auth)

    def upload(self, data: bytes) -> str:
        return self.expect(self.http.put("/v1/blobs", content=data, headers=self.auth), 201)["sha256"]


@contextlib.contextmanager
def coordinator(tmp_path: Path, *args: str, **env: str) -> Iterator[Target]:
    """A warm coordinator started through the CLI (``args``, default ``--ledger none``) with
    COOPGRID_<NAME>=value for each ``name=value``; stopped afterwards, and it must stop cleanly."""
    grid = LocalGrid(tmp_path / "grid")
    target = None
    try:
        with pytest.MonkeyPatch.context() as mp:  # the coordinator's environment; the tests' stays as it was
            for name, value in env.items():
                mp.setenv(f"COOPGRID_{name.upper()}", value)
            grid.start_coordinator(*(args or ("--ledger", "none")))
        target = Target(grid)
        target.warm_up()
        yield target
    finally:
        if target is not None:
            target.http.close()
        codes = grid.stop(timeout=15)
    assert codes.get("coordinator") == 0, f"the coordinator did not stop cleanly: {codes}"


def read_response(sock: socket.socket, timeout: float = PATIENCE) -> Response:
    """The next HTTP response on ``sock`` (AssertionError if the connection closes first)."""
    sock.settimeout(timeout)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"the coordinator closed the connection without answering (got {data[:200]!r})"
        data += chunk
    head, body = data.split(b"\r\n\r\n", 1)
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.strip().lower(): v.strip() for k, v in (line.split(":", 1) for line in lines[1:])}
    length = int(headers.get("content-length", "0"))
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return Response(status, headers, body[:length])


def answered(sock: socket.socket, within: float) -> bool:
    """Whether the coordinator has said something (or closed) within ``within`` seconds."""
    readable, _, _ = select.select([sock], [], [], within)
    return bool(readable)


def wait_until(condition: Callable[[], bool], what: str, timeout: float = PATIENCE) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"gave up waiting {timeout:.0f}s for {what}"
        time.sleep(0.05)


@dataclass
class Attack:
    """The outcome of sending a large body: the answer, and how much body was sent before it came."""

    response: Response | None
    sent_before_answer: int


def head(method: str, path: str, headers: dict[str, str]) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: coordinator", *(f"{k}: {v}" for k, v in headers.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def send_big_body(
    target: Target, method: str, path: str, headers: dict[str, str] | None = None, *, early: bool,
    size: int = ATTACK_BODY, piece: bytes = b"0" * MiB, chunked: bool = True,
) -> Attack:
    """Send headers, then up to ``size`` bytes of body in pieces, stopping once the coordinator answers.

    ``early``: the answer should come from the headers alone, so wait for it (patiently)
    before sending any body; the body is sent only if it does not come. The client's send
    buffer is kept small, so the bytes sent before the answer are close to what the
    coordinator had taken in when it answered."""
    headers = dict(headers or {})
    if chunked:
        headers["transfer-encoding"] = "chunked"
    else:
        headers.setdefault("content-length", str(size))
    sock = target.connect()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 64 * 1024)
    sent = 0
    try:
        sock.sendall(head(method, path, headers))
        if not (early and answered(sock, PATIENCE)):
            while sent < size and not answered(sock, 0):
                n = min(len(piece), size - sent)
                frame = (f"{n:x}\r\n".encode() + piece[:n] + b"\r\n") if chunked else piece[:n]
                try:
                    sock.sendall(frame)
                except (BrokenPipeError, ConnectionResetError):
                    break  # it answered and closed the connection while this was sending
                sent += n
            if sent >= size and chunked:
                with contextlib.suppress(OSError):
                    sock.sendall(b"0\r\n\r\n")
        try:
            return Attack(read_response(sock), sent)
        except (AssertionError, ConnectionResetError):
            return Attack(None, sent)
    finally:
        sock.close()
