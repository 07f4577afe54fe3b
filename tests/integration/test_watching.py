"""What people watch the grid with, driven in process: /metrics, the dashboard's JSON, the page, the docs, logs.

The coordinators and workers are those of ``test_api`` (a real app on a
SQLite file, workers that sign every request and result batch).
"""

from __future__ import annotations

import io
import logging
import re
from collections.abc import Callable

import orjson
from prometheus_client.parser import text_string_to_metric_families
from test_api import NO_REPLICATION, Grid, Worker, error_of, grid, make_grid  # noqa: F401  (fixtures)

from coopgrid.logs import JsonFormatter
from coopgrid.protocol import ZERO_HASH, ResultRef


def scrape(grid: Grid, **headers: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    r = grid.client.get("/metrics", headers=headers or grid.headers())
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain")
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(r.text)
        for s in family.samples
    }


def test_metrics_need_an_operator_token(grid: Grid) -> None:
    assert error_of(grid.client.get("/metrics"))["error"] == "AuthError"
    r = grid.client.get("/metrics", headers=grid.headers(grid.new_token("alice")))
    assert r.status_code == 403 and error_of(r)["error"] == "Forbidden"
    assert scrape(grid)[("coopgrid_leases_open", ())] == 0


def test_metrics_public_serves_them_without_a_token(make_grid: Callable[..., Grid]) -> None:
    grid = make_grid(metrics_public=True)
    assert scrape(grid, accept="text/plain")[("coopgrid_leases_open", ())] == 0


def test_metrics_follow_results_validation_quarantine_and_queues(grid: Grid) -> None:
    job = grid.submit_echo(2, 2, trust={"max_invalid": 1, "gold_rate": 0, "record_run": 0})  # one task, quorum of two
    honest, cheat, tiebreak = (Worker(grid, owner=o).register() for o in ("ann", "carl", "bob"))
    for w, lies in ((honest, False), (cheat, True), (tiebreak, False)):
        lease = w.lease()
        assert w.submit(lease["lease_id"], w.batch(lease, cheat=lies)).status_code == 200
    grid.wait_until_done(job["id"])
    waiting = grid.submit_echo(6, 2, trust=NO_REPLICATION)  # three tasks nobody has taken

    m = scrape(grid)
    assert m[("coopgrid_results_total", (("status", "pending"),))] == 3
    assert m[("coopgrid_validation_outcomes_total", (("outcome", "accepted"),))] == 1
    assert m[("coopgrid_validation_outcomes_total", (("outcome", "valid"),))] == 1
    assert m[("coopgrid_validation_outcomes_total", (("outcome", "invalid"),))] == 1
    # a second replica after the first result, and a tie-breaker after the disagreement
    assert m[("coopgrid_validation_outcomes_total", (("outcome", "more_replicas"),))] == 2
    assert m[("coopgrid_quarantines_total", ())] == 1
    assert m[("coopgrid_leases_total", ())] == 3 and m[("coopgrid_leased_replicas_total", ())] == 3
    assert m[("coopgrid_workers", (("state", "quarantined"),))] == 1
    assert m[("coopgrid_workers", (("state", "active"),))] == 2
    assert m[("coopgrid_queue_depth", (("job", waiting["id"]),))] == 3
    assert ("coopgrid_queue_depth", (("job", job["id"]),)) not in m  # finished: no longer a series
    assert m[("coopgrid_replicas", (("kind", "normal"), ("state", "ready")))] == 3
    assert m[("coopgrid_jobs", (("state", "done"),))] == 1 and m[("coopgrid_jobs", (("state", "running"),))] == 1
    route = (("method", "POST"), ("route", "/v1/leases/{lease_id}/results"), ("status", "200"))
    assert m[("coopgrid_http_request_duration_seconds_count", route)] == 3
    # paths are never labels: an unknown one is counted as unmatched
    grid.client.get("/no/such/path/12345")
    assert m != scrape(grid) and not any("12345" in str(k) for k in scrape(grid))
    # no ledger: no sealing figures
    assert not any(name.startswith("coopgrid_unsealed") for name, _ in m)


def test_failure_reasons_are_those_the_workers_reported_and_only_the_owner_reads_them(grid: Grid) -> None:
    alice = grid.new_token("alice")
    job = grid.submit_echo(4, 2, alice)
    worker = Worker(grid).register()
    lease = worker.lease()
    items, refs = [], []
    for replica in lease["replicas"]:
        items.append({"replica_id": replica["id"], "output_hash": ZERO_HASH,
                      "error": "TesseractError: no traineddata for 'kor'"})
        refs.append(ResultRef(replica["job"], replica["task_index"], replica["input_hash"], ZERO_HASH,
                              ZERO_HASH))
    batch = {"signature": worker.identity.sign_batch(lease["chain_id"], lease["lease_id"], refs), "results": items}
    assert worker.submit(lease["lease_id"], batch).status_code == 200, "error results are accepted as reports"

    r = grid.client.get(f"/v1/jobs/{job['id']}/failures", headers=grid.headers(alice))
    assert r.status_code == 200, r.text
    assert r.json()["reasons"] == [{"reason": "TesseractError: no traineddata for 'kor'", "replicas": 2}]
    bob = grid.new_token("bob")
    assert grid.client.get(f"/v1/jobs/{job['id']}/failures", headers=grid.headers(bob)).status_code == 404
    assert grid.client.get(f"/v1/jobs/{job['id']}/failures").status_code == 401


def test_the_grid_overview_says_who_is_asking_and_shows_others_jobs_to_operators_only(grid: Grid) -> None:
    grid.submit_echo(4, 2)
    Worker(grid).register()
    alice = grid.client.get("/v1/grid", headers=grid.headers(grid.new_token("alice"))).json()
    assert alice["you"] == {"name": "alice", "role": "submitter"} and alice["jobs"] is None
    op = grid.client.get("/v1/grid", headers=grid.headers()).json()
    assert op["you"]["role"] == "operator" and op["jobs"] == {"running": 1}
    assert op["queued_replicas"] == 2 and op["workers"] == {"active": 1, "idle": 0, "quarantined": 0}
    assert "unsealed_results" not in op  # no ledger
    assert grid.client.get("/v1/grid").status_code == 401
    assert grid.client.get("/v1/grid/rewards", headers=grid.headers()).json() == []
    r = grid.client.get("/v1/ledger/epochs/1")
    assert r.status_code == 409 and "without a ledger" in error_of(r)["detail"]


EXTERNAL = re.compile(r"""(?:src|href)\s*=\s*["']?(?:https?:)?//""", re.I)


def test_the_page_and_the_api_docs_load_nothing_from_elsewhere(grid: Grid) -> None:
    page = grid.client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "default-src 'self'" in page.headers["content-security-policy"]  # the browser enforces it too
    assert grid.client.get("/dashboard").text == page.text
    for path in ("/", "/docs", "/redoc", "/static/app.js", "/static/style.css"):
        r = grid.client.get(path)
        assert r.status_code == 200, path
        assert not EXTERNAL.search(r.text), f"{path} refers to another site"
        for asset in re.findall(r"""(?:src|href)=["'](/[^"']+)["']""", r.text):
            assert grid.client.get(asset).status_code == 200, f"{path} needs {asset}, which is not served"
    assert "fetch(" in grid.client.get("/static/app.js").text


def test_json_log_lines_carry_the_event_and_its_fields() -> None:
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(JsonFormatter())
    log = logging.getLogger("coopgrid.test_json_logs")
    log.addHandler(handler)
    log.propagate = False
    try:
        log.warning("worker %s quarantined: %s", "0xabc", "outvoted", extra={"event": "worker_quarantined",
                                                                            "worker": "0xabc"})
        try:
            raise ValueError("boom")
        except ValueError:
            log.exception("reducing failed")
    finally:
        log.removeHandler(handler)
    first, second = (orjson.loads(line) for line in out.getvalue().splitlines())
    assert first["message"] == "worker 0xabc quarantined: outvoted" and first["level"] == "warning"
    assert first["event"] == "worker_quarantined" and first["worker"] == "0xabc"
    assert first["logger"] == "coopgrid.test_json_logs" and first["time"].endswith("+00:00")
    assert second["level"] == "error" and "ValueError: boom" in second["exception"]
