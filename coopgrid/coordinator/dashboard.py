"""What people watch the grid with: the dashboard page, /metrics, offline API docs, and the JSON they read.

The page (``/``) is public and holds no data: its script asks the JSON API
with the token the person logs in with, so a submitter sees only its own
jobs, as everywhere in the API. Everything the page and the docs load comes
from this server: the coordinator may run with no internet at all.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from fastapi import APIRouter, FastAPI, Request, Response
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from fastapi.responses import FileResponse, HTMLResponse
from fastapi.staticfiles import StaticFiles
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from coopgrid.app import App
from coopgrid.coordinator.deps import Id, TokenDep, caller
from coopgrid.coordinator.metrics import RequestTiming
from coopgrid.errors import Conflict, NotFound

STATIC = Path(__file__).parent / "static"
#: the page loads nothing from anywhere else, and no other site may frame it
PAGE_HEADERS = {
    "content-security-policy": "default-src 'self'; img-src 'self' data: blob:; frame-ancestors 'none'; "
    "base-uri 'none'; form-action 'self'",
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "cache-control": "no-cache",
}


def install(api: FastAPI, app: App) -> None:
    """Add the dashboard, /metrics and the offline docs to ``api`` (created with docs_url=None)."""
    api.include_router(router(app))
    _offline_docs(api)  # before /static: its mount is under it
    api.mount("/static", StaticFiles(directory=STATIC), name="static")
    # outermost: the latency of a request includes the edge's checks
    api.add_middleware(RequestTiming, metrics=app.metrics)


def router(app: App) -> APIRouter:
    r = APIRouter()
    settings = app.settings

    @r.get("/", include_in_schema=False)
    @r.get("/dashboard", include_in_schema=False)
    def page() -> Response:
        return FileResponse(STATIC / "index.html", media_type="text/html", headers=PAGE_HEADERS)

    @r.get("/metrics", tags=["info"], response_class=Response,
           responses={200: {"content": {CONTENT_TYPE_LATEST: {}}, "description": "Prometheus text format"}})
    def metrics(request: Request) -> Response:
        """Prometheus metrics; an operator token is needed unless the coordinator runs with metrics_public."""
        if not settings.metrics_public:
            app.auth.require_operator(caller(request))
        return Response(generate_latest(app.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @r.get("/v1/grid", tags=["info"])
    def grid(tok: TokenDep) -> dict[str, Any]:
        """The grid now: workers by state, leases, queued replicas, jobs, epochs and sealing lag."""
        now = time.time()
        f = app.store.grid_figures(now - settings.lease_seconds, replicas=False)  # asked every 1.5 s per page
        view: dict[str, Any] = {
            "now": now,
            "you": {"name": tok.name, "role": tok.role},
            "workers": f.workers,
            "open_leases": f.open_leases,
            "queued_replicas": f.queued,
            "jobs": f.jobs if tok.role == "operator" else None,
            "epochs": f.epochs,
            "ledger": settings.ledger,
            "last_commit_age": now - f.last_commit if f.last_commit is not None else None,
        }
        if app.sealer is not None:
            waiting, oldest = app.store.unsealed()
            view["unsealed_results"] = waiting
            view["unsealed_oldest_age"] = now - oldest if oldest is not None else None
        return view

    @r.get("/v1/grid/rewards", tags=["ledger"])
    def rewards(tok: TokenDep) -> list[dict[str, Any]]:
        """Every worker's rewards: sealed (in committed epochs, claimable with a proof) and pending."""
        if app.sealer is None:
            return []
        committed = app.store.list_epochs(["committed"])
        sealed = app.store.reward_totals(committed[-1].number) if committed else {}
        pending = app.store.pending_rewards()
        return [
            {"address": a, "sealed": str(sealed.get(a, 0)), "pending": str(pending.get(a, 0))}
            for a in sorted(set(sealed) | set(pending))
        ]

    @r.get("/v1/jobs/{job_id}/failures", tags=["jobs"])
    def failures(job_id: str, tok: TokenDep) -> dict[str, Any]:
        """Why a job's tasks failed: the errors its workers reported, most frequent first."""
        job = app.scheduler.job_for(job_id, tok)
        return {
            "job": job.id,
            "tasks_failed": job.tasks_failed,
            "tasks_inconclusive": job.tasks_inconclusive,
            "seal_error": job.seal_error,
            "reasons": [{"reason": reason, "replicas": n} for reason, n in app.store.failure_reasons(job.id)],
        }

    @r.get("/v1/ledger/epochs/{number}", tags=["ledger"])
    def epoch(number: Id) -> dict[str, Any]:
        """One epoch: its roots, its jobs, and its transaction as the chain has it."""
        if app.sealer is None:
            raise Conflict("this coordinator runs without a ledger (--ledger none)")
        e = app.store.get_epoch(number)
        if e is None:
            raise NotFound(f"no epoch {number}; GET /v1/ledger lists them", epoch=number)
        view: dict[str, Any] = {
            "number": e.number, "state": e.state, "results": e.result_count, "results_root": e.results_root,
            "rewards_root": e.rewards_root, "tx_hash": e.tx_hash, "block_number": e.block_number,
            "created_at": e.created_at, "committed_at": e.committed_at,
            "jobs": app.store.epoch_jobs(number), "contract": app.sealer.ledger.address,
            "chain_id": app.sealer.ledger.chain_id, "transaction": None, "on_chain": None,
        }
        if e.tx_hash:
            receipt = app.sealer.ledger.receipt(e.tx_hash)
            if receipt is not None:
                view["transaction"] = {"hash": receipt.tx_hash, "block_number": receipt.block_number,
                                       "gas_used": receipt.gas_used, "status": receipt.status}
        roots = app.sealer.ledger.epoch_roots(number) if e.state == "committed" else None
        if roots is not None:
            view["on_chain"] = {
                "results_root": roots.results_root, "rewards_root": roots.rewards_root,
                # what the contract holds is what the coordinator sealed
                "matches": roots.results_root.lower() == (e.results_root or "").lower()
                and roots.rewards_root.lower() == (e.rewards_root or "").lower(),
            }
        return view

    return r


def _offline_docs(api: FastAPI) -> None:
    """/docs and /redoc from swagger-ui and ReDoc files shipped in the fastapi-offline package."""
    import fastapi_offline

    assets = Path(fastapi_offline.__file__).parent / "static"
    api.mount("/static/docs", StaticFiles(directory=assets), name="docs-assets")
    title = api.title

    @api.get("/docs", include_in_schema=False)
    def swagger() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url="/openapi.json", title=f"{title} - API", oauth2_redirect_url="/docs/oauth2-redirect",
            swagger_js_url="/static/docs/swagger-ui-bundle.js", swagger_css_url="/static/docs/swagger-ui.css",
            swagger_favicon_url="/static/favicon.svg",
        )

    @api.get("/docs/oauth2-redirect", include_in_schema=False)
    def swagger_redirect() -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()

    @api.get("/redoc", include_in_schema=False)
    def redoc() -> HTMLResponse:
        return get_redoc_html(
            openapi_url="/openapi.json", title=f"{title} - API", redoc_js_url="/static/docs/redoc.standalone.js",
            redoc_favicon_url="/static/favicon.svg", with_google_fonts=False,
        )
