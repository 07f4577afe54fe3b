"""The coordinator's HTTP API (FastAPI; OpenAPI docs at /docs).

People authenticate with ``Authorization: Bearer <token>``; workers sign
every request (see :mod:`coopgrid.identity`). Errors are JSON
``{"error": <class>, "detail": <what to do>, ...data}`` with the status of
the :mod:`coopgrid.errors` class.
"""


import asyncio
import contextlib
import dataclasses
import ipaddress
import logging
import re
import threading
import time
from collections.abc import AsyncIterator
from typing import Annotated, Any

import orjson
from fastapi import FastAPI, Path, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, StreamingResponse
from starlette.background import BackgroundTask
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from sqlalchemy.exc import OperationalError

from coopgrid import __version__
from coopgrid.app import App
from coopgrid.blobs.base import CHUNK, checked_name
from coopgrid.coordinator.dashboard import install as install_dashboard
from coopgrid.coordinator.dataset_urls import MAX_URL_LENGTH, dataset_blob, shown
from coopgrid.coordinator.duties import REAPER, SEALER
from coopgrid.coordinator.deps import MAX_ID, Id, Index, TokenDep, signed_address
from coopgrid.coordinator.edge import STATE_TOKEN, Edge, error_body, error_headers
from coopgrid.coordinator.openapi import document
from coopgrid.coordinator.ratelimit import TokenBuckets
from coopgrid.coordinator.retention import purge_sealed_jobs
from coopgrid.coordinator.wakeup import RECHECK
from coopgrid.errors import (
    BlobNotFound, ChainUnavailable, Conflict, CoopgridError, DatabaseUnavailable, Forbidden, InvalidInput, NotFound,
    RateLimited,
)
from coopgrid.limits import DatasetLimits
from coopgrid.platforms import platform_class
from coopgrid.protocol import LeaseRequest, ResultBatch, WorkerRegistration
from coopgrid.registry.models import ModelSpec
from coopgrid.store.base import JobRecord, ModelRecord
from coopgrid.store.schema import JobState
from coopgrid.coordinator.access import can_read, unreadable
from coopgrid.coordinator.scheduler import JobSpec
from coopgrid.coordinator.trust import suspicion_scores

log = logging.getLogger(__name__)


class TokenRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=100)
    role: str = Field("submitter", pattern="^(operator|submitter)$")


class DatasetUrl(BaseModel):
    """POST /v1/datasets: a dataset the coordinator reads from a URL its operator allows."""

    model_config = ConfigDict(extra="forbid")
    url: str = Field(min_length=1, max_length=MAX_URL_LENGTH, description="http(s):// or file:/// URL of one file.")


#: jobs in a page of GET /v1/jobs: by default, and at most
JOBS_PAGE = 100
MAX_JOBS_PAGE = 1000

#: dataset URLs one coordinator process reads at once; more are told to come back (each holds a thread
#: and up to max_upload_bytes of disk for as long as the far server takes)
MAX_FETCHES = 2


def _json(data: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(data), status_code=status, media_type="application/json")


#: validation problems listed in one answer (a batch of 10,000 bad results would list each)
MAX_PROBLEMS = 20


def _error(exc: CoopgridError) -> JSONResponse:
    return JSONResponse(error_body(exc), status_code=exc.status_code, headers=error_headers(exc))


def job_view(app: App, job: JobRecord, counts: bool = True) -> dict[str, Any]:
    view: dict[str, Any] = {
        "id": job.id,
        "name": job.name,
        "state": job.state,
        "task_type": job.task_type,
        "model": job.model_hash,
        "dataset": job.dataset_hash,
        "dataset_shards": list(job.shards),  # a dataset above one upload: its further shards, in order
        "items": job.n_items,
        "tasks": job.n_tasks,
        "task_size": job.task_size,
        "tasks_done": job.tasks_done,
        "tasks_failed": job.tasks_failed,
        "tasks_inconclusive": job.tasks_inconclusive,
        "trust": job.policy,
        "reward_per_task": str(job.reward_per_task),
        "funder": job.funder,
        "min_stake": str(job.min_stake),
        "params": job.params,
        "created_at": job.created_at,
        "finished_at": job.finished_at,
        "summary": job.summary,
        "output": job.output_hash,
        "seal_error": job.seal_error,
        # retention: its task, replica and result rows were archived here and purged
        "archive": job.archive_hash,
        "archived_at": job.archived_at,
    }
    if counts:
        view["replicas"] = app.store.replica_counts(job.id)
        # sealed outputs a since-quarantined worker helped decide: on chain, so reported rather than redone
        view["disputed"] = app.store.disputes(job.id)
    return view


def model_view(m: ModelRecord) -> dict[str, Any]:
    return {"hash": m.hash, "name": m.name, "version": m.version, "task_type": m.task_type, **m.manifest}


def create_api(app: App) -> FastAPI:
    settings = app.settings

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        if await run_in_threadpool(app.duties.lead, REAPER):
            await run_in_threadpool(_catch_up)  # results recorded but not validated when the last process stopped
        app.scheduler.wakeup.start(asyncio.get_running_loop())
        reaper = asyncio.create_task(_reap_forever())
        stop_sealing = threading.Event()
        sealer_thread = None
        if app.sealer is not None:
            sealing = await run_in_threadpool(app.duties.lead, SEALER)
            if sealing:
                try:
                    await run_in_threadpool(app.sealer.reconcile)
                except CoopgridError as exc:  # the sealing loop retries; serving must not wait for the chain
                    log.warning("could not reconcile with the chain yet: %s", exc.message)
            sealer_thread = threading.Thread(
                target=app.sealer.run, args=(stop_sealing,),
                kwargs={"lead": lambda: app.duties.lead(SEALER), "leading": sealing}, name="sealer", daemon=True,
            )
            sealer_thread.start()
        try:
            yield
        finally:
            app.scheduler.wakeup.close()
            reaper.cancel()
            stop_sealing.set()
            if sealer_thread is not None:
                await run_in_threadpool(sealer_thread.join, 10)
            await run_in_threadpool(app.duties.release)

    def _finalize(job_id: str) -> None:
        """Reduce a complete job; a reducer that fails is logged, and never stops the coordinator."""
        try:
            # the rounds deferred before it completed run first: one may quarantine a worker whose
            # results it counted and reopen their tasks (then it is not complete after all), and its
            # owner must not see it done with that still to come
            for other in app.scheduler.validator.settle():
                if other != job_id:
                    app.summarizer.finalize(other)
            app.summarizer.finalize(job_id)
        except Exception:
            log.exception("reducing job %s failed; its results stay in the store", job_id)

    def _catch_up() -> None:
        """Validate every task with pending results and reduce every complete job still running: what a
        process that stopped (or was killed) between recording and validating, or completing and reducing, left."""
        app.scheduler.validator.validate()
        for job_id in app.store.complete_unfinished_jobs():
            _finalize(job_id)
        if app.store.shared:
            app.store.purge_nonces(time.time())

    def _retain() -> None:
        """The retention duty: archive and purge the rows of jobs sealed longer ago than retention_seconds."""
        try:
            purge_sealed_jobs(app.store, app.blobs, settings.retention_seconds, sealed=app.sealer is not None)
        except Exception:  # the next round retries; serving goes on
            log.exception("archiving finished jobs failed")

    async def _reap_forever() -> None:
        rounds = 0
        while True:
            await asyncio.sleep(settings.reap_interval)
            rounds += 1
            try:
                if not await run_in_threadpool(app.duties.lead, REAPER):
                    continue  # another process of the grid reaps
                n = await run_in_threadpool(app.scheduler.reap)
                if n:
                    log.info("reissued %d replicas from expired leases", n)
                if rounds % 30 == 0:
                    # a safety net: validate every task with pending results, so none can wait forever
                    await run_in_threadpool(_catch_up)
                if rounds % 30 == 15:
                    await run_in_threadpool(_retain)
            except (DatabaseUnavailable, OperationalError) as exc:  # restarting, failing over: the next round
                log.warning("reaping expired leases failed: the database is unavailable (%s)",
                            getattr(exc, "orig", None) or exc)
            except Exception:  # keep reaping; the next round may succeed
                log.exception("reaping expired leases failed")

    api = FastAPI(
        title="coopgrid coordinator",
        version=__version__,
        description="Work units for untrusted grid workers; results signed with EIP-712.",
        lifespan=lifespan,
        docs_url=None,  # served offline by the dashboard module
        redoc_url=None,
    )

    api.add_middleware(Edge, auth=app.auth, settings=settings)
    registrations_by_network = TokenBuckets(
        "worker registrations from this network", settings.register_per_network_per_hour / 3600,
        max(1.0, settings.register_per_network_per_hour),
    )
    registrations_by_owner = TokenBuckets(
        "worker registrations for this owner", settings.register_per_owner_per_hour / 3600,
        max(1.0, settings.register_per_owner_per_hour),
    )
    # bursts of twice the rate, and of at least one request: a rate below 0.5/s must still let one through
    leases_by_worker = TokenBuckets(
        "lease requests from this worker", settings.worker_requests_per_second,
        max(1.0, 2 * settings.worker_requests_per_second),
    )
    leases_by_owner = TokenBuckets(
        "lease requests from this owner's workers", settings.owner_requests_per_second,
        max(1.0, 2 * settings.owner_requests_per_second),
    )
    leases_by_network = TokenBuckets(
        "lease requests from this network", settings.network_requests_per_second,
        max(1.0, 2 * settings.network_requests_per_second),
    )

    @api.exception_handler(CoopgridError)
    async def _coopgrid_error(_: Request, exc: CoopgridError) -> JSONResponse:
        return _error(exc)

    @api.exception_handler(OperationalError)
    async def _database_down(_: Request, exc: OperationalError) -> JSONResponse:
        # the database restarting, or failing over: a 503 that workers and clients retry, not a bare 500
        log.warning("the database failed mid-request: %s", exc.orig)
        return _error(DatabaseUnavailable())

    def _problems(errors: Any) -> JSONResponse:
        # never echo the input back: it may be bytes, huge (a whole list too long), or not text at all
        problems = [
            {"loc": [p if isinstance(p, int) else str(p) for p in e.get("loc", ())], "msg": str(e.get("msg", "")),
             "type": str(e.get("type", ""))}
            for e in errors[:MAX_PROBLEMS]
        ]
        return JSONResponse({"error": "InvalidInput", "detail": problems}, status_code=422)

    @api.exception_handler(ValidationError)
    async def _validation_error(_: Request, exc: ValidationError) -> JSONResponse:
        return _problems(exc.errors(include_url=False, include_input=False, include_context=False))

    @api.exception_handler(RequestValidationError)
    async def _request_validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        return _problems(exc.errors())

    async def worker_of(request: Request) -> Any:
        return await run_in_threadpool(app.auth.worker, signed_address(request))

    # -- info -----------------------------------------------------------------------

    @api.get("/healthz", tags=["info"])
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @api.get("/v1/info", tags=["info"])
    def info() -> dict[str, Any]:
        return {
            "version": __version__,
            "chain_id": settings.chain_id,
            "lease_seconds": settings.lease_seconds,
            "max_lease_batch": settings.max_lease_batch,
            "grid_id": app.auth.grid,
            "max_upload_bytes": settings.max_upload_bytes,
            "max_json_bytes": settings.max_json_bytes,
            "max_results_bytes": settings.max_results_bytes,
            "long_poll_seconds": settings.long_poll_seconds,
        }

    # -- tokens -----------------------------------------------------------------

    @api.post("/v1/tokens", status_code=201, tags=["tokens"])
    def create_token(req: TokenRequest, tok: TokenDep) -> dict[str, Any]:
        app.auth.require_operator(tok)
        new, secret = app.auth.issue(req.name, req.role, unique=True)
        return {"id": new.id, "name": new.name, "role": new.role, "token": secret}

    @api.get("/v1/tokens", tags=["tokens"])
    def list_tokens(tok: TokenDep) -> list[dict[str, Any]]:
        """Every token's id, name, role and state (never a secret: only their hashes are stored)."""
        app.auth.require_operator(tok)
        return [dataclasses.asdict(t) for t in app.store.list_tokens()]

    @api.post("/v1/tokens/{ref}/revoke", tags=["tokens"])
    def revoke_token(ref: Annotated[str, Path(min_length=1, max_length=100)], tok: TokenDep) -> dict[str, Any]:
        """Revoke a token by name or id: its secret stops working at once; its jobs stay."""
        app.auth.require_operator(tok)
        gone = app.auth.revoke(ref, tok)
        log.info("token %s (%s) revoked by %s", gone.name, gone.role, tok.name,
                 extra={"event": "token_revoked", "token": gone.name})
        return {**dataclasses.asdict(gone), "revoked": True}

    # -- blobs --------------------------------------------------------------------

    @api.put("/v1/blobs", status_code=201, tags=["blobs"])
    async def put_blob(request: Request, tok: TokenDep) -> dict[str, Any]:
        # the edge has checked the token and cuts the stream off at max_upload_bytes
        with app.blobs.writer() as blob:
            async for chunk in request.stream():
                blob.write(chunk)
            if not blob.size:
                raise InvalidInput("the upload is empty")
            digest = await run_in_threadpool(blob.commit)
        await run_in_threadpool(app.store.grant_blob, digest, tok.id)  # whoever has the bytes may read them
        return {"sha256": digest, "size": blob.size}

    fetching: set[int] = set()  # tokens with a fetch under way: one each, MAX_FETCHES in all
    fetching_lock = threading.Lock()

    @api.post("/v1/datasets", status_code=201, tags=["blobs"])
    def fetch_dataset(body: DatasetUrl, tok: TokenDep) -> dict[str, Any]:
        """Read a dataset from a URL under a prefix the operator allowed; stored and answered like an upload
        (its sha256 goes in a job's ``dataset`` or ``shards``)."""
        app.dataset_urls.check(body.url)  # refused before a slot is taken or anything is read
        with fetching_lock:
            if tok.id in fetching:  # one token cannot hold every slot
                raise RateLimited("this token is already having a dataset URL read; one at a time", retry_after=5)
            if len(fetching) >= MAX_FETCHES:
                raise RateLimited(f"this coordinator is already reading {MAX_FETCHES} dataset URLs; try again "
                                  "shortly", retry_after=5)
            fetching.add(tok.id)
        try:
            limits = DatasetLimits(app.settings.max_dataset_bytes, app.settings.max_dataset_items)
            view = dataset_blob(app.dataset_urls, body.url, app.blobs, limits, app.settings.data_dir)
        finally:
            with fetching_lock:
                fetching.discard(tok.id)
        app.store.grant_blob(view["sha256"], tok.id)  # as for an upload: whoever brought the bytes may read them
        url = shown(body.url)
        view["url"] = url
        log.info("dataset %s read from %s for %s (%d bytes)", view["sha256"][:12], url, tok.name, view["size"],
                 extra={"event": "dataset_fetched", "url": url, "sha256": view["sha256"], "size": view["size"]})
        return view

    @api.get("/v1/blobs/{digest}", tags=["blobs"])
    async def get_blob(digest: str, request: Request) -> Any:
        """A blob's bytes, for a caller that may read them (see coopgrid/coordinator/access.py).

        A blob the caller may not read is answered exactly like a missing one (404)."""
        who = request.scope.get("state", {}).get(STATE_TOKEN)
        if who is None:
            who = await worker_of(request)
        checked_name(digest)  # a malformed hash is 422 before anything is looked up
        if not await run_in_threadpool(can_read, app.store, who, digest, time.time()):
            raise unreadable(digest)
        return await blob_response(digest, "application/octet-stream")

    async def blob_response(digest: str, media_type: str) -> Response:
        """A blob's bytes sent from its file or streamed from an object store, never held whole
        (a million-item job's output is hundreds of MB); its sha256 in a header, for the reader to check."""
        headers = {"x-coopgrid-sha256": digest}
        path = app.blobs.local_path(digest)
        if path is not None:
            if not path.exists():
                raise unreadable(digest)
            return FileResponse(path, media_type=media_type, headers=headers)
        try:
            body = await run_in_threadpool(app.blobs.open, digest)
        except BlobNotFound:
            raise unreadable(digest) from None
        return StreamingResponse(_chunks(body), media_type=media_type, headers=headers)

    # -- models -------------------------------------------------------------------

    @api.post("/v1/models", status_code=201, tags=["models"])
    def publish_model(spec: ModelSpec, tok: TokenDep) -> dict[str, Any]:
        app.auth.require_operator(tok)
        return model_view(app.registry.publish(spec))

    @api.get("/v1/models", tags=["models"])
    def list_models(tok: TokenDep) -> list[dict[str, Any]]:
        return [model_view(m) for m in app.store.list_models()]

    @api.get("/v1/models/{ref}", tags=["models"])
    def get_model(ref: str, tok: TokenDep) -> dict[str, Any]:
        return model_view(app.registry.resolve(ref))

    @api.get("/v1/worker/models/{ref}", tags=["workers"], include_in_schema=True)
    async def worker_get_model(ref: str, request: Request) -> dict[str, Any]:
        await worker_of(request)
        model = await run_in_threadpool(app.registry.resolve, ref)
        # a published model is public (access.py): any worker may have a URL of the store's copy
        url = await run_in_threadpool(app.scheduler.blob_url, model.hash)
        return {**model_view(model), **({"url": url} if url else {})}

    # -- jobs -------------------------------------------------------------------

    @api.post("/v1/jobs", status_code=201, tags=["jobs"])
    def submit_job(spec: JobSpec, tok: TokenDep) -> dict[str, Any]:
        return job_view(app, app.scheduler.submit(spec, tok))

    @api.get("/v1/jobs", tags=["jobs"])
    def list_jobs(
        tok: TokenDep,
        response: Response,
        limit: Annotated[int, Query(ge=1, le=MAX_JOBS_PAGE, description="Jobs in this page.")] = JOBS_PAGE,
        before: Annotated[
            str | None,
            Query(pattern=r"^[0-9a-f]{64}$", description="The next page: jobs older than this one (the last of the "
                                                          "previous page, also in its x-coopgrid-next header)."),
        ] = None,
        state: Annotated[JobState | None, Query(description="Only jobs in this state.")] = None,
        prefix: Annotated[
            str | None, Query(pattern=r"^[0-9a-f]{1,64}$", description="Only jobs whose id starts with this.")
        ] = None,
    ) -> list[dict[str, Any]]:
        """Your jobs (an operator's: every job), newest first, a page at a time."""
        owner = None if tok.role == "operator" else tok.id
        after = app.scheduler.job_for(before, tok) if before else None  # someone else's job: 404, as anywhere
        jobs = app.store.list_jobs(owner, [state.value] if state else None, limit=limit, before=after, prefix=prefix)
        if len(jobs) == limit:
            response.headers["x-coopgrid-next"] = jobs[-1].id
        return [job_view(app, j, counts=False) for j in jobs]

    @api.get("/v1/jobs/{job_id}", tags=["jobs"])
    def get_job(job_id: str, tok: TokenDep) -> dict[str, Any]:
        return job_view(app, app.scheduler.job_for(job_id, tok))

    @api.post("/v1/jobs/{job_id}/cancel", tags=["jobs"])
    def cancel_job(job_id: str, tok: TokenDep) -> dict[str, Any]:
        app.scheduler.job_for(job_id, tok)
        job = app.store.cancel_job(job_id, time.time())
        log.info("job %s cancelled by %s: %d/%d tasks done", job.id, tok.name, job.tasks_done, job.n_tasks,
                 extra={"event": "job_finished", "job": job.id, "state": job.state, "tasks": job.n_tasks,
                        "tasks_done": job.tasks_done})
        try:  # what was accepted stays downloadable (`coopgrid output`)
            job = app.summarizer.finalize_cancelled(job.id) or job
        except Exception:
            log.exception("reducing cancelled job %s failed; its results stay in the store", job.id)
        return job_view(app, job)

    @api.get("/v1/jobs/{job_id}/output", tags=["jobs"])
    async def job_output(job_id: str, tok: TokenDep) -> Response:
        job = await run_in_threadpool(app.scheduler.job_for, job_id, tok)
        if job.output_hash is None:
            raise Conflict(
                f"job {job_id} is {job.state} with {job.tasks_done}/{job.n_tasks} tasks done; it has no output yet",
                job_id=job_id,
            )
        return await blob_response(job.output_hash, "application/vnd.apache.parquet")

    # -- workers ----------------------------------------------------------------

    @api.post("/v1/workers", status_code=201, tags=["workers"])
    async def register_worker(request: Request) -> dict[str, Any]:
        address = signed_address(request)
        reg = WorkerRegistration.model_validate_json(await request.body() or b"{}")
        if reg.trusted:
            vouching = request.scope.get("state", {}).get(STATE_TOKEN)
            if vouching is None or vouching.role != "operator":
                raise Forbidden(
                    "only an operator may vouch for a worker: register with --trusted and the operator's token "
                    "(--token or COOPGRID_TOKEN), or without --trusted",
                    role=getattr(vouching, "role", None),
                )
        network = network_of(request.client.host) if request.client else None
        new = await run_in_threadpool(app.store.get_worker, address) is None
        if new:
            # new keys are what costs an attacker nothing: they are what is limited
            registrations_by_network.take(network or "unknown")
            registrations_by_owner.take(reg.owner)
        platform = reg.platform.model_dump() if reg.platform is not None else None
        record = await run_in_threadpool(
            app.store.register_worker, address, reg.name, reg.owner, time.time(), network, platform,
            platform_class(reg.platform) if reg.platform is not None else None, trusted=reg.trusted,
        )
        app.auth.forget_worker(address)
        log.info("worker %s (%s, owner %s) %s", address, reg.name or "unnamed", reg.owner or "-",
                 "registered" if new else "registered again",
                 extra={"event": "worker_registered", "worker": address, "worker_name": reg.name, "owner": reg.owner,
                        "new": new})
        return {"id": record.id, "address": record.address, "name": record.name, "owner": record.owner,
                "platform_class": record.platform_class, "trusted": record.trusted}

    @api.get("/v1/workers", tags=["workers"])
    def list_workers(tok: TokenDep) -> list[dict[str, Any]]:
        reputation: dict[int, list[dict[str, Any]]] = {}
        for w, r in app.store.reputations():
            reputation.setdefault(w.id, []).append(dataclasses.asdict(r))
        listed = app.store.list_workers()
        scores = suspicion_scores([w for w, _ in listed])
        return [
            {
                "id": w.id,
                "address": w.address,
                "name": w.name,
                "owner": w.owner,
                "last_seen": w.last_seen,
                "accepted": accepted,
                "quarantined": w.quarantined_at is not None,
                "quarantine_reason": w.quarantine_reason,
                "prior_quarantines": w.prior_quarantines,
                "trusted": w.trusted,
                "partner_quarantines": w.partner_quarantines,
                "suspicion": scores[w.id],
                "platform": w.platform,
                "platform_class": w.platform_class,
                "reputation": reputation.get(w.id, []),
            }
            for w, accepted in listed
        ]

    @api.post("/v1/leases", status_code=201, tags=["workers"], responses={204: {"description": "no work right now"}})
    async def lease(request: Request) -> Response:
        worker = await worker_of(request)
        leases_by_worker.take(worker.address)
        leases_by_owner.take(worker.owner)
        leases_by_network.take(worker.network or "")
        req = LeaseRequest.model_validate_json(await request.body() or b"{}")
        wakeup = app.scheduler.wakeup
        mark = wakeup.generation
        granted = await run_in_threadpool(app.scheduler.lease, worker, req)
        wait = min(req.wait, settings.long_poll_seconds)
        # held requests hold connections: past half of them, idle workers fall back to polling
        if granted is None and wait > 0 and wakeup.waiting < settings.max_connections // 2:
            granted = await _long_poll(request, worker, req, mark, wait)
        if granted is None:
            return Response(status_code=204)
        return _json(granted, 201)

    async def _long_poll(request: Request, worker: Any, req: LeaseRequest, mark: int, wait: float) -> Any:
        """Hold an idle worker's lease request until work may be there, then lease; None when the wait ends."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        wakeup = app.scheduler.wakeup
        # the body is read: what comes next from the client can only be its disconnect
        gone = asyncio.ensure_future(request.receive())
        try:
            while not wakeup.closed and not gone.done():
                left = deadline - loop.time()
                if left <= 0:
                    return None
                await wakeup.wait(mark, min(left, RECHECK), gone)
                if gone.done():
                    break  # a worker that left (stopped, cut off) must not be leased work it will never run
                mark = wakeup.generation
                granted = await run_in_threadpool(app.scheduler.lease, worker, req)
                if granted is not None:
                    return granted
            return None
        finally:
            gone.cancel()

    @api.post("/v1/leases/{lease_id}/heartbeat", tags=["workers"])
    async def heartbeat(lease_id: Id, request: Request) -> Response:
        worker = await worker_of(request)
        expires = await run_in_threadpool(app.scheduler.heartbeat, worker, lease_id)
        return _json({"lease_id": lease_id, "expires_at": expires})

    @api.post("/v1/leases/{lease_id}/results", tags=["workers"])
    async def results(lease_id: Id, request: Request) -> Response:
        worker = await worker_of(request)
        batch = ResultBatch.model_validate_json(await request.body())
        # the round over tasks with several opinions, gold and audits runs after the answer: the
        # worker leases its next batch meanwhile instead of waiting behind other batches' writes
        outcome = await run_in_threadpool(app.scheduler.submit_results, worker, lease_id, batch, True)
        for job_id in outcome.completed_jobs:
            asyncio.get_running_loop().run_in_executor(None, _finalize, job_id)
        counts: dict[str, int] = {}
        for status in outcome.statuses.values():
            counts[status] = counts.get(status, 0) + 1
        response = _json({"lease_id": lease_id, "results": counts})
        if outcome.tasks:
            response.background = BackgroundTask(_validate_deferred)
        return response

    def _validate_deferred() -> None:
        """The rounds deferred by result uploads; one that fails leaves its results pending for the
        periodic catch-up round, and never fails the upload that was answered already."""
        try:
            completed = app.scheduler.validate_deferred()
        except Exception:
            log.exception("a deferred validation round failed; the catch-up round validates its tasks")
            return
        for job_id in completed:
            _finalize(job_id)

    # -- ledger -------------------------------------------------------------------

    def sealer() -> Any:
        if app.sealer is None:
            raise Conflict("this coordinator runs without a ledger (--ledger none)")
        return app.sealer

    @api.get("/v1/ledger", tags=["ledger"])
    def ledger_info() -> dict[str, Any]:
        seal = sealer()
        epochs = app.store.list_epochs()
        try:  # the store's view answers while the chain is down; the chain's figures then read null
            totals: tuple[Any, Any] = tuple(str(t) for t in seal.ledger.totals())  # type: ignore[assignment]
        except ChainUnavailable:
            totals = (None, None)
        return {
            "kind": settings.ledger,
            "chain_id": seal.ledger.chain_id,
            "contract": seal.ledger.address,
            "token": seal.ledger.token_address,
            "coordinator": seal.ledger.account,
            # every spend the coordinator committed from escrows, and every claim paid out of them
            "spent": totals[0],
            "claimed": totals[1],
            "epochs": [
                {"number": e.number, "state": e.state, "results": e.result_count, "tx_hash": e.tx_hash,
                 "block_number": e.block_number, "results_root": e.results_root, "rewards_root": e.rewards_root}
                for e in epochs
            ],
            "unsealed_results": app.store.unsealed()[0],
            # jobs whose results cannot be sealed (see epochs.py): reported, never retried forever
            "held_jobs": [{"job": j.id, "name": j.name, "reason": j.seal_error} for j in app.store.held_jobs()],
        }

    @api.post("/v1/ledger/seal", tags=["ledger"])
    def seal_now(tok: TokenDep) -> dict[str, Any]:
        """Seal every accepted result not in an epoch yet, now, and wait for the chain."""
        app.auth.require_operator(tok)
        seal = sealer()
        if not app.duties.lead(SEALER):
            holder = app.store.duty_holders(time.time()).get(SEALER, "another process")
            raise Conflict(
                f"another process of this grid seals epochs ({holder}); ask it (or `coopgrid sealer`'s "
                f"host), or wait: it seals every {settings.seal_every_seconds:g}s", holder=holder,
            )
        done = seal.step(force=True)
        return {"committed": [{"number": e.number, "state": e.state, "results": e.result_count,
                               "tx_hash": e.tx_hash, "block_number": e.block_number} for e in done]}

    @api.get("/v1/ledger/epochs/{number}/results-tree", tags=["ledger"])
    def epoch_tree(number: Id) -> Response:
        e = app.store.get_epoch(number)
        if e is None or not e.results_dump:
            raise NotFound(f"no sealed epoch {number}; `coopgrid ledger status` lists them", epoch=number)
        return Response(app.blobs.get(e.results_dump), media_type="application/json")

    @api.get("/v1/jobs/{job_id}/tasks/{task_index}/proof", tags=["ledger"])
    def task_proof(job_id: str, task_index: Index, tok: TokenDep) -> dict[str, Any]:
        job = app.scheduler.job_for(job_id, tok)
        if task_index >= job.n_tasks:
            raise NotFound(f"no task {task_index} in job {job.id}: its tasks are 0 to {job.n_tasks - 1}", job_id=job.id)
        proof = sealer().result_proof(job.id, task_index)
        if proof is None:
            raise Conflict(
                f"task {task_index} of job {job_id} has no result committed on chain yet "
                "(not accepted, or its epoch is not sealed: `coopgrid ledger seal`)",
                job_id=job_id,
            )
        return proof

    class VerifyRequest(BaseModel):
        model_config = ConfigDict(extra="forbid")
        epoch: int = Field(ge=1, le=MAX_ID)
        leaf_hash: str = Field(pattern=r"^0x[0-9a-fA-F]{64}$")
        proof: list[Annotated[str, Field(pattern=r"^0x[0-9a-fA-F]{64}$")]] = Field(max_length=256)

    @api.post("/v1/ledger/verify", tags=["ledger"])
    def verify(req: VerifyRequest) -> dict[str, Any]:
        """Ask the contract's verifyResult (a view): anyone may."""
        valid = sealer().ledger.verify_result(req.epoch, req.leaf_hash, req.proof)
        return {"valid": bool(valid), "contract": sealer().ledger.address}

    @api.get("/v1/rewards/{address}", tags=["ledger"])
    def rewards(address: str) -> dict[str, Any]:
        return sealer().reward_status(_address(address))

    @api.post("/v1/rewards/{address}/claim", tags=["ledger"])
    async def claim(address: str, request: Request) -> dict[str, Any]:
        """The coordinator sends the claim (and pays its gas); tokens go to ``address`` only.

        Asked by the worker itself (signed request) or by an operator."""
        tok = request.scope.get("state", {}).get(STATE_TOKEN)
        if tok is not None:
            app.auth.require_operator(tok)
        else:
            worker = await worker_of(request)
            if worker.address.lower() != address.lower():
                raise Forbidden("a worker may only claim its own rewards")
        return await run_in_threadpool(sealer().claim, _address(address))

    @api.get("/v1/ledger/models/{model_hash}", tags=["ledger"])
    def model_on_chain(model_hash: str) -> dict[str, Any]:
        if not re.fullmatch(r"(0x)?[0-9a-fA-F]{64}", model_hash):
            raise InvalidInput("a model hash is 64 hex characters")
        h = model_hash.removeprefix("0x").lower()
        record = sealer().ledger.model_published("0x" + h)
        return {
            "hash": h,
            "published": record is not None,
            "block_number": record.block_number if record else None,
            "published_at": record.published_at if record else None,
            "contract": sealer().ledger.address,
        }

    install_dashboard(api, app)

    from coopgrid.coordinator.api_money import add_money_routes  # it uses job_view and _address

    add_money_routes(api, app)
    api.openapi = lambda: document(api)  # type: ignore[method-assign]
    return api


def network_of(host: str) -> str | None:
    """The /24 (IPv4) or /48 (IPv6) network a worker connects from, for placement by network."""
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return None
    return str(ipaddress.ip_network(f"{ip}/{24 if ip.version == 4 else 48}", strict=False))


def _address(text: str) -> str:
    from eth_utils import is_address, to_checksum_address

    if not is_address(text):
        raise InvalidInput(f"{text!r} is not an Ethereum address (0x and 40 hex characters)")
    return to_checksum_address(text)


def _chunks(body: Any) -> Any:
    """A blob's stream in chunks (starlette runs a plain iterator in its thread pool), closed at the end."""
    with body:
        yield from iter(lambda: body.read(CHUNK), b"")
