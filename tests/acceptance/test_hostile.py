"""A real coordinator attacked as a hostile outsider, submitter and worker would (issue 8).

Coordinators are started through the CLI, exactly as a user would, with the settings a test
needs as COOPGRID_* variables (tests that need none share one), and attacked over raw
sockets and httpx (:mod:`tests.acceptance.hostile`). After every hostile request
``Target.check`` asks three things: is the process alive, does ``/healthz`` answer, and has
its resident memory grown by at most ``RSS_BOUND`` since the test began (and the
coordinator was warm)?

(Blob readers, decompression bombs and reward bounds, findings 4 to 6, are tested with
their fixes.)
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import select
import socket
import stat
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
import pytest

from coopgrid.errors import ConfigError
from coopgrid.identity import Identity
from coopgrid.protocol import ZERO_HASH, ResultRef, b64decode, b64encode, sha256_hex
from tests.acceptance.hostile import (
    ATTACK_BODY,
    MiB,
    PATIENCE,
    UPLOAD_LIMIT,
    Target,
    answered,
    coordinator,
    head,
    read_response,
    send_big_body,
    wait_until,
)
from tests.integration.conftest import pg_database  # noqa: F401  (fixture)

pytestmark = pytest.mark.acceptance


# -- the coordinators attacked by more than one test -----------------------------------


@pytest.fixture(scope="module")
def ledgered(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    """A coordinator with the embedded chain: the ledger's imports are what raised the recursion limit."""
    with coordinator(tmp_path_factory.mktemp("ledgered"), "--ledger", "embedded") as target:
        yield target


@pytest.fixture(scope="module")
def shared_coordinator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    """A coordinator with the default settings (but a 4 MiB upload limit), attacked by several tests in turn."""
    with coordinator(tmp_path_factory.mktemp("shared"), max_upload_bytes=str(UPLOAD_LIMIT)) as target:
        yield target


@pytest.fixture
def shared(shared_coordinator: Target) -> Target:
    """The shared coordinator, its memory measured afresh: growth left by an earlier test is that test's failure."""
    shared_coordinator.baseline = shared_coordinator.rss()
    return shared_coordinator


# -- finding 1: deep JSON ---------------------------------------------------------------


def test_deeply_nested_json_is_refused_and_never_crashes_the_coordinator(ledgered: Target) -> None:
    t = ledgered
    deep = b"[" * 100_000
    json_type = {"content-type": "application/json"}
    for path in ("/v1/jobs", "/v1/ledger/verify"):
        what = f"100,000 nested [ posted to {path} without credentials"
        r = t.send(what, "POST", path, content=deep, headers=json_type)
        assert 400 <= r.status_code < 500, (path, r.status_code, r.text)
        t.check(what)
    what = "100,000 nested [ posted to /v1/jobs with a submitter's token"
    r = t.send(what, "POST", "/v1/jobs", content=deep, headers=json_type | t.submitter)
    assert r.status_code in (413, 422), r.text  # too many values, or too deep
    t.check(what)
    # within every other limit, the depth itself is what is refused
    for body in (b"[" * 60_000, b'{"a":' * 12_000, b"[" * 1025 + b"]" * 1025):
        for path, headers in (("/v1/ledger/verify", {}), ("/v1/jobs", t.submitter)):
            what = f"{len(body)} bytes of nested JSON posted to {path}"
            r = t.send(what, "POST", path, content=body, headers=json_type | headers)
            assert r.status_code == 422 and "depth limit exceeded" in r.json()["detail"], r.text
            t.check(what)
        r = t.signed_post(Identity.generate(), "/v1/workers", body)
        assert r.status_code == 422 and "depth limit exceeded" in r.json()["detail"], r.text
        t.check(f"{len(body)} bytes of nested JSON in a signed registration")


# -- finding 2: bodies read before authentication, uploads held in memory -------------


def uploads_in_progress(t: Target) -> list[str]:
    return [p.name for p in (t.grid.data_dir / "blobs").glob(".upload-*")]


def test_large_bodies_are_refused_before_they_are_read(shared: Target) -> None:
    t = shared
    for method, path in [("POST", "/v1/workers"), ("POST", "/v1/leases/1/results"), ("POST", "/v1/jobs"),
                         ("PUT", "/v1/blobs")]:
        attack = send_big_body(t, method, path, early=True)
        assert attack.response is not None and attack.response.status in (401, 413), (path, attack)
        assert attack.sent_before_answer == 0, f"{method} {path} was answered only after the body"
        t.check(f"a 48 MiB chunked body to {method} {path} without credentials")

    # a key anyone can make is no credential: only registration takes its body
    stranger = Identity.generate()
    for path in ("/v1/leases/1/results", "/v1/leases"):
        headers = t.signed_headers(stranger, "POST", path, b"0" * ATTACK_BODY)  # the body that will be sent
        attack = send_big_body(t, "POST", path, headers, early=True)
        assert attack.response is not None and attack.response.status == 401, (path, attack)
        assert attack.sent_before_answer == 0, f"POST {path} by an unregistered key was answered after the body"
        t.check(f"a 48 MiB body to POST {path} signed by an unregistered key")

    # a submitter's JSON is cut off at max_json_bytes (1 MiB), declared or streamed
    attack = send_big_body(t, "POST", "/v1/jobs", t.submitter, early=True, chunked=False)
    assert attack.response is not None and attack.response.status == 413 and attack.sent_before_answer == 0
    t.check("a declared 48 MiB JSON body with a submitter's token")
    attack = send_big_body(t, "POST", "/v1/jobs", t.submitter, early=False)
    assert attack.response is not None and attack.response.status == 413, attack
    # what was sent before the answer: the 1 MiB limit plus what the two kernels' socket buffers held
    assert attack.sent_before_answer < ATTACK_BODY // 2, attack.sent_before_answer
    t.check("a chunked 48 MiB JSON body with a submitter's token")

    # uploads: streamed to disk, cut off at max_upload_bytes, nothing left behind
    for chunked in (False, True):
        attack = send_big_body(t, "PUT", "/v1/blobs", t.submitter, early=not chunked, chunked=chunked)
        assert attack.response is not None and attack.response.status == 413, attack
        assert attack.sent_before_answer < ATTACK_BODY // 2, attack.sent_before_answer
        wait_until(lambda: not uploads_in_progress(t), "the cut-off upload's temporary file to be removed")
        t.check(f"a {'chunked' if chunked else 'declared'} 48 MiB upload with a limit of 4 MiB")
    data = os.urandom(UPLOAD_LIMIT)
    r = t.http.put("/v1/blobs", content=iter([data[i : i + 65536] for i in range(0, len(data), 65536)]),
                   headers=t.submitter)
    assert r.status_code == 201, r.text
    digest = hashlib.sha256(data).hexdigest()
    assert r.json() == {"sha256": digest, "size": len(data)}
    assert (t.grid.data_dir / "blobs" / digest[:2] / digest).read_bytes() == data
    assert uploads_in_progress(t) == []
    t.check("an upload of exactly max_upload_bytes")


def test_a_workers_json_cannot_make_the_coordinator_build_huge_structures(shared: Target) -> None:
    """A body within its byte limit but made of tiny values (``[],`` is 3 bytes, a Python list 64) is refused
    before any parser builds it; parsers' errors never echo the input back."""
    t = shared
    worker = Identity.generate()
    t.register(worker, owner="dense")
    dense = b'{"signature":"0x' + b"a" * 130 + b'","results":[' + b"[]," * 3_000_000 + b"[]]}"
    r = t.signed_post(worker, "/v1/leases/1/results", dense)
    assert r.status_code == 413, r.text[:300]
    t.check("9 MiB of empty lists in a registered worker's result batch")
    wide = orjson.dumps({"max_replicas": 1, "task_types": [f"type-{i}" for i in range(40_000)]})
    r = t.signed_post(worker, "/v1/leases", wide)
    assert r.status_code == 422, r.text[:300]
    t.check("a lease request naming 40,000 task types")
    for body in (orjson.dumps({"name": list(range(100_000))}), orjson.dumps({"name": "x" * 900_000})):
        r = t.signed_post(Identity.generate(), "/v1/workers", body)
        assert r.status_code in (413, 422) and len(r.content) < 4096, (r.status_code, len(r.content))
        t.check("a registration whose invalid name is large")
    r = t.http.post("/v1/jobs", content=b"[" + b"[]," * 340_000 + b"[]]", headers=t.submitter)
    assert r.status_code == 413, r.text[:300]
    t.check("1 MiB of empty lists posted by a submitter")


# -- request heads: a line and headers of any size ---------------------------------


def test_oversized_request_heads_are_refused_before_they_are_kept(shared: Target) -> None:
    """uvicorn's parser keeps a request line and headers of any size and number (8 million 5-byte
    header lines grew a coordinator by 900 MiB); they are cut off at 64 KiB and 100 fields."""
    t = shared
    for what, start, filler in [
        ("a 40 MiB header", b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: ", b"a" * MiB),
        ("40 MiB of 5-byte header lines", b"GET /healthz HTTP/1.1\r\nHost: x\r\n", b"a:b\r\n" * (MiB // 5)),
        ("a 40 MiB URL", b"GET /healthz?", b"a" * MiB),
    ]:
        sock = t.connect()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 64 * 1024)
        sock.sendall(start)
        sent = 0
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            while sent < 40 * MiB and not answered(sock, 0):
                sock.sendall(filler)
                sent += len(filler)
        try:
            r = read_response(sock)
        finally:
            sock.close()
        assert r.status == 431, (what, r)
        assert sent < 20 * MiB, f"{sent / MiB:.0f} MiB of {what} were taken in before the answer"
        t.check(what)
    assert t.http.get("/healthz", headers={f"x-h{i}": "v" * 500 for i in range(90)}).status_code == 200
    r = t.http.get("/healthz", headers={f"x-h{i}": "v" for i in range(150)})
    assert r.status_code == 431 and "header fields" in r.json()["detail"], r.text
    t.check("a request with 150 header fields")


# -- finding 3: replayed, moved and altered signed requests -----------------------------


def test_signed_requests_cannot_be_replayed_moved_or_altered(shared: Target) -> None:
    t = shared
    victim = Identity.generate()
    t.register(victim, owner="victim")
    with t.echo_job(items=4) as job:
        body = b'{"max_replicas": 1}'
        headers = t.signed_headers(victim, "POST", "/v1/leases", body) | {"content-type": "application/json"}
        first = t.http.post("/v1/leases", content=body, headers=headers)
        assert first.status_code == 201, first.text
        replay = t.http.post("/v1/leases", content=body, headers=headers)
        assert replay.status_code == 401 and "already used" in replay.json()["detail"], replay.text
        t.check("a signed lease request sent a second time")
        # the replay opened nothing in the victim's name: one replica leased, three waiting
        assert t.http.get(f"/v1/jobs/{job}", headers=t.auth).json()["replicas"] == {"leased": 1, "ready": 3}

        forged = {
            "signed for another grid": t.signed_headers(victim, "POST", "/v1/leases", body, grid="0" * 32),
            "signed for another path": t.signed_headers(victim, "POST", "/v1/leases/1/heartbeat", body),
            "signed for another method": t.signed_headers(victim, "PUT", "/v1/leases", body),
            "signed for another body": t.signed_headers(victim, "POST", "/v1/leases", b'{"max_replicas": 50}'),
            "signed an hour ago": victim.request_headers("POST", "/v1/leases", body, t.grid_id, now=time.time() - 3600),
            "with the body hash changed": t.signed_headers(victim, "POST", "/v1/leases", b"{}")
            | {"x-coopgrid-body-sha256": hashlib.sha256(body).hexdigest()},
        }
        for what, headers in forged.items():
            r = t.http.post("/v1/leases", content=body, headers=headers | {"content-type": "application/json"})
            assert r.status_code == 401, (what, r.text)
            t.check(f"a lease request {what}")
        assert t.http.get(f"/v1/jobs/{job}", headers=t.auth).json()["replicas"] == {"leased": 1, "ready": 3}


# -- finding 7: numbers and text that broke the store or the error handler ----------------


def test_malformed_ids_epochs_and_text_are_refused_not_server_errors(shared: Target) -> None:
    t = shared
    worker = Identity.generate()
    t.register(worker, owner="numbers")
    batch = orjson.dumps({"signature": "0x" + "ab" * 65,
                          "results": [{"replica_id": 1, "output_hash": "0" * 64, "error": "none"}]})
    for lease in (10**25, 2**63, 0, -1, "1e3"):
        for path, body in ((f"/v1/leases/{lease}/heartbeat", b"{}"), (f"/v1/leases/{lease}/results", batch)):
            r = t.signed_post(worker, path, body)
            assert r.status_code == 422, (path, r.text)
            t.check(f"POST {path}")
    with t.echo_job(items=2) as job:
        for path, headers in ((f"/v1/ledger/epochs/{10**25}/results-tree", {}),
                              (f"/v1/jobs/{job}/tasks/{10**25}/proof", t.auth),
                              (f"/v1/jobs/{job}/tasks/-1/proof", t.auth)):
            r = t.http.get(path, headers=headers)
            assert r.status_code == 422, (path, r.text)
            t.check(f"GET {path}")
    big = t.signed_post(worker, "/v1/leases", orjson.dumps({"max_replicas": 10**18}))
    assert big.status_code == 422, big.text
    t.check("a lease request for 10**18 replicas")

    proof = {"leaf_hash": "0x" + "00" * 32, "proof": []}
    for epoch in (2**300, 2**63, 0):
        r = t.http.post("/v1/ledger/verify", content=b'{"epoch": %d, "leaf_hash": "0x%s", "proof": []}'
                        % (epoch, b"00" * 32), headers={"content-type": "application/json"})
        # refused by validation: this coordinator has no ledger (409) that it could have reached
        assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "epoch"], r.text
        t.check(f"an epoch of {epoch} to verify")
    assert t.http.post("/v1/ledger/verify", json={"epoch": 1, **proof}).status_code == 409

    not_utf8 = b'{"name": "\xff\xfe\xc3\x28"}'
    for what, send in (
        ("a job", lambda: t.http.post("/v1/jobs", content=not_utf8, headers=t.submitter)),
        ("a proof to verify", lambda: t.http.post("/v1/ledger/verify", content=not_utf8)),
        ("a registration", lambda: t.signed_post(Identity.generate(), "/v1/workers", not_utf8)),
        ("a lease request", lambda: t.signed_post(worker, "/v1/leases", not_utf8)),
    ):
        r = send()
        assert r.status_code == 422 and "UTF-8" in r.json()["detail"], (what, r.text)
        t.check(f"{what} that is not UTF-8")


@pytest.mark.postgres
def test_nul_characters_are_refused_before_postgresql_sees_them(tmp_path: Path, pg_database) -> None:
    """PostgreSQL cannot store NUL in text: its driver failed such a request with a server error."""
    with coordinator(tmp_path, "--ledger", "none", "--database-url", pg_database()) as t:
        job = t.submit_echo(items=1)
        for path in ("/v1/jobs/%00", f"/v1/jobs/{job}%00/cancel", "/v1/models/a%00b", "/v1/jobs?state=%00"):
            r = t.http.request("POST" if path.endswith("cancel") else "GET", path, headers=t.auth)
            assert r.status_code == 422 and "NUL" in r.json()["detail"], (path, r.text)
            t.check(f"NUL in {path}")
        for what, send in (
            ("a token's name", lambda: t.http.post("/v1/tokens", json={"name": "a\x00"}, headers=t.auth)),
            ("a job's name", lambda: t.http.post("/v1/jobs", json={"name": "\x00", "task_type": "echo",
                                                                   "dataset": "0" * 64}, headers=t.auth)),
            ("a worker's name", lambda: t.signed_post(Identity.generate(), "/v1/workers", b'{"name": "\\u0000"}')),
        ):
            r = send()
            assert r.status_code == 422 and "NUL" in r.json()["detail"], (what, r.text)
            t.check(f"NUL in {what}")
        # an escaped backslash before u0000 is no NUL
        r = t.signed_post(Identity.generate(), "/v1/workers", b'{"name": "\\\\u0000", "owner": "x"}')
        assert r.status_code == 201 and r.json()["name"] == "\\u0000", r.text


# -- finding 8: slow clients ----------------------------------------------------------


def closed_by_peer(sock: socket.socket) -> bool:
    try:
        return sock.recv(4096) == b""
    except ConnectionResetError:
        return True


def test_slow_clients_are_cut_off_while_others_are_served(tmp_path: Path) -> None:
    # 200 connections from this one address: more than one client may hold by default
    with coordinator(tmp_path, header_timeout="2", body_timeout="2", max_connections_per_client="300") as t:
        idle = []
        for _ in range(200):
            sock = t.connect()
            sock.sendall(b"POST /v1/jobs HTTP/1.1\r\nHost: x\r\n")
            idle.append(sock)
        dripping = t.connect()  # sends a header line every quarter second: busy, but never done
        dripping.sendall(b"GET /healthz HTTP/1.1\r\n")
        try:
            assert t.http.get("/v1/jobs", headers=t.auth).status_code == 200
            t.check("200 connections holding half-sent headers")
            waiting = [*idle, dripping]
            deadline = time.monotonic() + PATIENCE
            while waiting and time.monotonic() < deadline:
                if dripping in waiting:
                    with contextlib.suppress(OSError):
                        dripping.sendall(b"X-Drip: 1\r\n")
                readable, _, _ = select.select(waiting, [], [], 0.25)
                waiting = [s for s in waiting if s not in readable or not closed_by_peer(s)]
            assert not waiting, f"{len(waiting)} connections without complete headers still open after {PATIENCE:.0f}s"
            t.check("the slow connections were closed")
        finally:
            for sock in [*idle, dripping]:
                sock.close()

        # a body that stops coming: declared to a submitter's endpoint, chunked to the public one
        for path, headers, start in (
            ("/v1/jobs", t.submitter | {"content-length": "100"}, b'{"name": '),
            ("/v1/ledger/verify", {"transfer-encoding": "chunked"}, b'9\r\n{"epoch":\r\n'),
        ):
            sock = t.connect()
            try:
                sock.sendall(head("POST", path, headers | {"content-type": "application/json"}) + start)
                r = read_response(sock)
            finally:
                sock.close()
            assert r.status == 408, (path, r)
            t.check(f"a body to {path} that stalls")


@pytest.fixture(scope="module")
def crowded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    """A coordinator with small limits on connections and on bodies held in memory, so that reaching them
    costs the tests little."""
    limits = {"max_connections": "60", "max_connections_per_client": "20", "max_results_bytes": str(4 * MiB),
              "max_buffered_body_bytes": str(8 * MiB)}
    with coordinator(tmp_path_factory.mktemp("crowded"), **limits) as target:
        yield target


def test_one_address_cannot_take_every_connection(crowded: Target) -> None:
    """Beyond max_connections everyone is answered 503, and a body need only keep trickling to hold its
    connection: one address must not be able to hold them all."""
    t = crowded
    t.baseline = t.rss()
    held = []
    try:
        for _ in range(60):
            sock = socket.create_connection(t.address, timeout=PATIENCE, source_address=("127.0.0.3", 0))
            sock.sendall(head("POST", "/v1/ledger/verify", {"content-length": "1000"}) + b'{"epoch": ')
            held.append(sock)
        t.check("60 connections from one other address, each holding a body open")  # from 127.0.0.1
        wait_until(lambda: sum(answered(s, 0) for s in held) >= 40, "the connections past 20 to be answered")
        refusals = [read_response(s) for s in held if answered(s, 0)]
        assert [r.status for r in refusals] == [429] * 40, refusals
        assert all(int(r.headers["retry-after"]) > 0 for r in refusals)
    finally:
        for sock in held:
            sock.close()


def test_the_bodies_held_in_memory_at_once_are_bounded(crowded: Target) -> None:
    """Result batches are read whole before they are parsed: one worker posting large ones on many connections
    made the coordinator hold them all (eight batches of 60 MiB: 1.1 GB resident at the peak)."""
    t = crowded
    t.baseline = t.rss()
    worker = Identity.generate()
    t.register(worker, owner="hoarder")
    path, body = "/v1/leases/1/results", b"0" * (3 * MiB + MiB // 2)
    batches = []
    try:
        for _ in range(3):  # 3.5 MiB each, within max_results_bytes; 8 MiB may be held at once
            sock = t.connect()
            batches.append(sock)
            headers = t.signed_headers(worker, "POST", path, body) | {"transfer-encoding": "chunked"}
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # the last chunk never comes
                sock.sendall(head("POST", path, headers) + f"{len(body):x}\r\n".encode() + body + b"\r\n")
        wait_until(lambda: any(answered(s, 0) for s in batches), "the batch past 8 MiB to be refused")
        refused = [read_response(s) for s in batches if answered(s, 0)]
        assert [r.status for r in refused] == [429], refused
        assert "max_buffered_body_bytes" in refused[0].json()["detail"] and int(refused[0].headers["retry-after"]) > 0
        t.check("three result batches of 3.5 MiB held open at once")
    finally:
        for sock in batches:
            sock.close()


# -- finding 9: registration and leasing without limits, lineage -------------------------


def test_registration_and_leasing_are_rate_limited(tmp_path: Path) -> None:
    limits = {"register_per_network_per_hour": "8", "register_per_owner_per_hour": "3",
              "worker_requests_per_second": "0.05"}
    with coordinator(tmp_path, **limits) as t:  # the warm-up registered one key from this network
        mallory = [Identity.generate() for _ in range(5)]
        outcomes = [t.register(key, owner="mallory") for key in mallory]
        assert [r.status_code for r in outcomes] == [201, 201, 201, 429, 429]
        assert "for this owner" in outcomes[3].json()["detail"] and int(outcomes[3].headers["retry-after"]) > 0
        t.check("registrations beyond the owner's limit")
        # the refusals above still spent this network's budget (1 + 5 of 8): two more owners get in
        others = [t.register(Identity.generate(), owner=f"sybil-{i}") for i in range(4)]
        assert [r.status_code for r in others] == [201, 201, 429, 429]
        assert "from this network" in others[2].json()["detail"] and int(others[2].headers["retry-after"]) > 0
        t.check("registrations beyond the network's limit")

        # 0.05 lease requests a second: one now, the next in 20 s
        assert t.signed_post(mallory[0], "/v1/leases", b"{}").status_code == 204
        again = t.signed_post(mallory[0], "/v1/leases", b"{}")
        assert again.status_code == 429 and "from this worker" in again.json()["detail"], again.text
        assert int(again.headers["retry-after"]) > 0
        t.check("lease requests beyond a worker's limit")
        assert t.signed_post(mallory[1], "/v1/leases", b"{}").status_code == 204  # a limit per key


def lease_one(t: Target, who: Identity) -> dict:
    r = t.signed_post(who, "/v1/leases", b'{"max_replicas": 1}')
    assert r.status_code == 201, r.text
    return r.json()


def submit_one(t: Target, who: Identity, lease: dict, output: bytes) -> None:
    replica = lease["replicas"][0]
    digest = sha256_hex(output)
    ref = ResultRef(replica["job"], replica["task_index"], replica["input_hash"], ZERO_HASH, digest)
    body = orjson.dumps({
        "signature": who.sign_batch(lease["chain_id"], lease["lease_id"], [ref]),
        "results": [{"replica_id": replica["id"], "output_hash": digest, "output": b64encode(output)}],
    })
    r = t.signed_post(who, f"/v1/leases/{lease['lease_id']}/results", body)
    assert r.status_code == 200, r.text


def test_a_fresh_key_of_a_quarantined_workers_owner_or_network_carries_its_lineage(shared: Target) -> None:
    t = shared
    honest = [Identity.generate(), Identity.generate()]
    mallory = Identity.generate()
    for i, key in enumerate(honest):
        t.register(key, owner=f"honest-{i}")
    t.register(mallory, owner="mallory")

    def listed() -> dict[str, dict]:
        return {w["address"]: w for w in t.http.get("/v1/workers", headers=t.auth).json()}

    # record_run 0: the subject is lineage, so the two fresh keys' quorum outvotes mallory as a veteran one would
    with t.echo_job(items=1, replicas=3, quorum=2, max_replicas=3, max_invalid=1, record_run=0):
        leases = {key.address: lease_one(t, key) for key in (mallory, *honest)}
        echo = b64decode(leases[mallory.address]["replicas"][0]["input"])  # the honest output is the input
        submit_one(t, mallory, leases[mallory.address], b"a lie")
        for key in honest:
            submit_one(t, key, leases[key.address], echo)
        wait_until(lambda: listed()[mallory.address]["quarantined"], "mallory, outvoted, to be quarantined")
    assert t.signed_post(mallory, "/v1/leases", b"{}").status_code == 403
    assert all(listed()[key.address]["prior_quarantines"] == 0 for key in honest)

    # a fresh key: same owner from another network, another owner from the same network, a stranger
    def register_from(source: str, owner: str) -> Identity:
        key = Identity.generate()
        body = orjson.dumps({"name": owner, "owner": owner})
        headers = t.signed_headers(key, "POST", "/v1/workers", body)
        transport = httpx.HTTPTransport(local_address=source)
        with httpx.Client(base_url=t.grid.url, transport=transport, timeout=PATIENCE) as client:
            assert client.post("/v1/workers", content=body, headers=headers).status_code == 201
        return key

    same_owner = register_from("127.0.1.1", "mallory")
    same_network = register_from("127.0.0.1", "a-newcomer")
    stranger = register_from("127.0.2.1", "another-newcomer")
    workers = listed()
    assert workers[same_owner.address]["prior_quarantines"] >= 1
    assert workers[same_network.address]["prior_quarantines"] >= 1
    assert workers[stranger.address]["prior_quarantines"] == 0
    t.check("a quarantined worker's owner registering again")


# -- finding 10: files at rest ----------------------------------------------------------


def test_the_data_dir_database_and_coordinator_key_are_private(ledgered: Target) -> None:
    data = ledgered.grid.data_dir

    def mode(path: Path) -> int:
        return stat.S_IMODE(path.stat().st_mode)

    assert mode(data) == 0o700
    assert mode(data / "coopgrid.sqlite") == 0o600
    key, password = data / "coordinator-key.json", data / "coordinator-key.password"
    assert mode(key) == 0o600 and mode(password) == 0o600
    with pytest.raises(ConfigError):
        Identity.load_or_create(key, "")  # the key file alone, copied off a backup, opens nothing
    opened = Identity.load_or_create(key, password.read_text().strip())
    assert opened.address == ledgered.http.get("/v1/ledger").json()["coordinator"]
    # nothing the coordinator wrote is readable by others (the test harness's own logs aside)
    exposed = [
        (str(p.relative_to(data)), oct(mode(p)))
        for p in data.rglob("*")
        if "logs" not in p.relative_to(data).parts and mode(p) & 0o077
    ]
    assert exposed == []
