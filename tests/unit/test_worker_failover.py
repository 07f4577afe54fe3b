"""A worker given several coordinators of one grid (``--coordinator URL1,URL2``) fails over between them.

The coordinators are stood in for by an httpx mock transport (a unit test: no process, no network)."""

from __future__ import annotations

import threading

import httpx
import pytest

from coopgrid import errors
from coopgrid.identity import Identity
from coopgrid.worker.client import WorkerClient

INFO = {"grid_id": "ab" * 16}


def client_for(down: set[str], calls: list[str], give_up_after: float | None = None) -> WorkerClient:
    client = WorkerClient("http://one:8750, http://two:8750/", Identity.generate(), threading.Event(),
                          give_up_after=give_up_after)

    def answer(request: httpx.Request) -> httpx.Response:
        calls.append(request.url.host)
        if request.url.host in down:
            raise httpx.ConnectError("connection refused", request=request)
        return httpx.Response(200, json=INFO if request.url.path == "/v1/info" else {"host": request.url.host})

    client.http = httpx.Client(transport=httpx.MockTransport(answer))
    return client


def test_a_request_the_first_coordinator_cannot_answer_goes_to_the_next_at_once() -> None:
    calls: list[str] = []
    client = client_for({"one"}, calls)
    assert client.urls == ["http://one:8750", "http://two:8750"]
    assert client.get_json("/v1/jobs") == {"host": "two"}
    assert calls == ["one", "two", "two"]  # info from two, then the request itself from two
    calls.clear()
    assert client.get_json("/v1/jobs") == {"host": "two"}  # it stays with the one that answers
    assert calls == ["two"]


def test_with_every_coordinator_down_it_backs_off_and_goes_round_again() -> None:
    calls: list[str] = []
    client = client_for({"one", "two"}, calls, give_up_after=0.3)
    with pytest.raises(errors.CoordinatorUnavailable, match="has not answered"):
        client.request("GET", "/v1/info", signed=False)
    assert calls[:2] == ["one", "two"] and set(calls) == {"one", "two"} and len(calls) > 2


def test_a_refusal_is_not_a_reason_to_fail_over() -> None:
    calls: list[str] = []
    client = client_for(set(), calls)

    def refuse(request: httpx.Request) -> httpx.Response:
        calls.append(request.url.host)
        return httpx.Response(403, json={"error": "Forbidden", "detail": "quarantined"})

    client.http = httpx.Client(transport=httpx.MockTransport(refuse))
    with pytest.raises(errors.Forbidden):
        client.request("GET", "/v1/info", signed=False)
    assert calls == ["one"]
