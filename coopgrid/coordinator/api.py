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
from fastapi import Depends, FastAPI, Header, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from coopgrid import __version__
from coopgrid.app import App
from coopgrid.errors import Conflict, CoopgridError, Forbidden, InvalidInput, NotFound, TooLarge
from coopgrid.protocol import LeaseRequest, ResultBatch, WorkerRegistration
from coopgrid.registry.models import ModelSpec
from coopgrid.store.base import JobRecord, ModelRecord, Token
from coopgrid.coordinator.scheduler import JobSpec

log = logging.getLogger(__name__)


class TokenRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=100)
    role: str = Field("submitter", pattern="^(operator|submitter)$")


def _json(data: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(data), status_code=status, media_type="application/json")


def _error(exc: CoopgridError) -> JSONResponse:
    extra = {k: v for k, v in exc.data.items() if isinstance(v, (str, int, float, bool, list)) and k != "error"}
    return JSONResponse({"error": type(exc).__name__, "detail": exc.message, **extra}, status_code=exc.status_code)


def job_view(app: App, job: JobRecord, counts: bool = True) -> dict[str, Any]:
    view: dict[str, Any] = {
        "id": job.id,
        "name": job.name,
        "state": job.state,
        "task_type": job.task_type,
        "model": job.model_hash,
        "dataset": job.dataset_hash,
        "items": job.n_items,
        "tasks": job.n_tasks,
        "task_size": job.task_size,
        "tasks_done": job.tasks_done,
        "tasks_failed": job.tasks_failed,
        "tasks_inconclusive": job.tasks_inconclusive,
        "trust": job.policy,
        "reward_per_task": str(job.reward_per_task),
        "params": job.params,
        "created_at": job.created_at,
        "finished_at": job.finished_at,
        "summary": job.summary,
        "output": job.output_hash,
        "seal_error": job.seal_error,
    }
    if counts:
        view["replicas"] = app.store.replica_counts(job.id)
    return view


def model_view(m: ModelRecord) -> dict[str, Any]:
    return {"hash": m.hash, "name": m.name, "version": m.version, "task_type": m.task_type, **m.manifest}


def create_api(app: App) -> FastAPI:
    settings = app.settings

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        # results recorded but not validated when the last process stopped
        await run_in_threadpool(app.scheduler.validator.validate)
        for job_id in await run_in_threadpool(app.store.complete_unfinished_jobs):
            await run_in_threadpool(_finalize, job_id)
        reaper = asyncio.create_task(_reap_forever())
        stop_sealing = threading.Event()
        sealer_thread = None
        if app.sealer is not None:
            try:
                await run_in_threadpool(app.sealer.reconcile)
            except CoopgridError as exc:  # the sealing loop retries; serving must not wait for the chain
                log.warning("could not reconcile with the chain yet: %s", exc.message)
            sealer_thread = threading.Thread(
                target=app.sealer.run, args=(stop_sealing,), name="sealer", daemon=True
            )
            sealer_thread.start()
        try:
            yield
        finally:
            reaper.cancel()
            stop_sealing.set()
            if sealer_thread is not None:
                await run_in_threadpool(sealer_thread.join, 10)

    def _finalize(job_id: str) -> None:
        """Reduce a complete job; a reducer that fails is logged, and never stops the coordinator."""
        try:
            app.summarizer.finalize(job_id)
        except Exception:
            log.exception("reducing job %s failed; its results stay in the store", job_id)

    async def _reap_forever() -> None:
        rounds = 0
        while True:
            await asyncio.sleep(settings.reap_interval)
            rounds += 1
            try:
                n = await run_in_threadpool(app.scheduler.reap)
                if n:
                    log.info("reissued %d replicas from expired leases", n)
                if rounds % 30 == 0:
                    # a safety net: validate every task with pending results, so none can wait forever
                    for job_id in await run_in_threadpool(app.scheduler.validator.validate):
                        await run_in_threadpool(_finalize, job_id)
            except Exception:  # keep reaping; the next round may succeed
                log.exception("reaping expired leases failed")

    api = FastAPI(
        title="coopgrid coordinator",
        version=__version__,
        description="Work units for untrusted grid workers; results signed with EIP-712.",
        lifespan=lifespan,
    )

    @api.exception_handler(CoopgridError)
    async def _coopgrid_error(_: Request, exc: CoopgridError) -> JSONResponse:
        return _error(exc)

    @api.exception_handler(ValidationError)
    async def _validation_error(_: Request, exc: ValidationError) -> JSONResponse:
        return JSONResponse(
            {"error": "InvalidInput", "detail": orjson.loads(exc.json(include_url=False))}, status_code=422
        )

    @api.exception_handler(RequestValidationError)
    async def _request_validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        problems = [{"loc": list(e["loc"]), "msg": e["msg"], "type": e["type"]} for e in exc.errors()]
        return JSONResponse({"error": "InvalidInput", "detail": problems}, status_code=422)

    def token(authorization: Annotated[str | None, Header()] = None) -> Token:
        return app.auth.token(authorization)

    TokenDep = Annotated[Token, Depends(token)]

    async def worker_of(request: Request, body: bytes) -> Any:
        headers = {k.lower(): v for k, v in request.headers.items()}
        return await run_in_threadpool(app.auth.worker, request.method, request.url.path, body, headers)

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
            "max_upload_bytes": settings.max_upload_bytes,
        }

    # -- tokens -----------------------------------------------------------------

    @api.post("/v1/tokens", status_code=201, tags=["tokens"])
    def create_token(req: TokenRequest, tok: TokenDep) -> dict[str, Any]:
        app.auth.require_operator(tok)
        new, secret = app.auth.issue(req.name, req.role)
        return {"id": new.id, "name": new.name, "role": new.role, "token": secret}

    # -- blobs --------------------------------------------------------------------

    @api.put("/v1/blobs", status_code=201, tags=["blobs"])
    async def put_blob(request: Request, tok: TokenDep) -> dict[str, Any]:
        limit = settings.max_upload_bytes
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > limit:
            raise TooLarge(f"the upload is {int(declared)} bytes; this coordinator accepts at most {limit}", limit=limit)
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise TooLarge(f"the upload is over {limit} bytes, the most this coordinator accepts", limit=limit)
            chunks.append(chunk)
        if not size:
            raise InvalidInput("the upload is empty")
        digest = await run_in_threadpool(app.blobs.put, b"".join(chunks))
        return {"sha256": digest, "size": size}

    @api.get("/v1/blobs/{digest}", tags=["blobs"])
    async def get_blob(digest: str, request: Request, authorization: Annotated[str | None, Header()] = None) -> Any:
        if authorization:
            await run_in_threadpool(app.auth.token, authorization)
        else:
            await worker_of(request, b"")
        path = app.blobs.path(digest)
        if not path.exists():
            app.blobs.get(digest)  # raises BlobNotFound with the usual message
        return FileResponse(path, media_type="application/octet-stream")

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
        await worker_of(request, b"")
        return model_view(await run_in_threadpool(app.registry.resolve, ref))

    # -- jobs -------------------------------------------------------------------

    @api.post("/v1/jobs", status_code=201, tags=["jobs"])
    def submit_job(spec: JobSpec, tok: TokenDep) -> dict[str, Any]:
        return job_view(app, app.scheduler.submit(spec, tok))

    @api.get("/v1/jobs", tags=["jobs"])
    def list_jobs(tok: TokenDep) -> list[dict[str, Any]]:
        owner = None if tok.role == "operator" else tok.id
        return [job_view(app, j, counts=False) for j in app.store.list_jobs(owner)]

    @api.get("/v1/jobs/{job_id}", tags=["jobs"])
    def get_job(job_id: str, tok: TokenDep) -> dict[str, Any]:
        return job_view(app, app.scheduler.job_for(job_id, tok))

    @api.post("/v1/jobs/{job_id}/cancel", tags=["jobs"])
    def cancel_job(job_id: str, tok: TokenDep) -> dict[str, Any]:
        app.scheduler.job_for(job_id, tok)
        return job_view(app, app.store.cancel_job(job_id, time.time()))

    @api.get("/v1/jobs/{job_id}/output", tags=["jobs"])
    def job_output(job_id: str, tok: TokenDep) -> Response:
        job = app.scheduler.job_for(job_id, tok)
        if job.output_hash is None:
            raise Conflict(
                f"job {job_id} is {job.state} with {job.tasks_done}/{job.n_tasks} tasks done; it has no output yet",
                job_id=job_id,
            )
        return Response(
            app.blobs.get(job.output_hash),
            media_type="application/vnd.apache.parquet",
            headers={"x-coopgrid-sha256": job.output_hash},
        )

    # -- workers ----------------------------------------------------------------

    @api.post("/v1/workers", status_code=201, tags=["workers"])
    async def register_worker(request: Request) -> dict[str, Any]:
        body = await request.body()
        headers = {k.lower(): v for k, v in request.headers.items()}
        address = await run_in_threadpool(
            app.auth.worker_address, request.method, request.url.path, body, headers
        )
        reg = WorkerRegistration.model_validate_json(body or b"{}")
        network = network_of(request.client.host) if request.client else None
        record = await run_in_threadpool(
            app.store.register_worker, address, reg.name, reg.owner, time.time(), network
        )
        app.auth.forget_worker(address)
        return {"id": record.id, "address": record.address, "name": record.name, "owner": record.owner}

    @api.get("/v1/workers", tags=["workers"])
    def list_workers(tok: TokenDep) -> list[dict[str, Any]]:
        reputation: dict[int, list[dict[str, Any]]] = {}
        for w, r in app.store.reputations():
            reputation.setdefault(w.id, []).append(dataclasses.asdict(r))
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
                "reputation": reputation.get(w.id, []),
            }
            for w, accepted in app.store.list_workers()
        ]

    @api.post("/v1/leases", tags=["workers"], responses={204: {"description": "no work right now"}})
    async def lease(request: Request) -> Response:
        body = await request.body()
        worker = await worker_of(request, body)
        req = LeaseRequest.model_validate_json(body or b"{}")
        granted = await run_in_threadpool(app.scheduler.lease, worker, req)
        if granted is None:
            return Response(status_code=204)
        return _json(granted, 201)

    @api.post("/v1/leases/{lease_id}/heartbeat", tags=["workers"])
    async def heartbeat(lease_id: int, request: Request) -> Response:
        worker = await worker_of(request, await request.body())
        expires = await run_in_threadpool(app.scheduler.heartbeat, worker, lease_id)
        return _json({"lease_id": lease_id, "expires_at": expires})

    @api.post("/v1/leases/{lease_id}/results", tags=["workers"])
    async def results(lease_id: int, request: Request) -> Response:
        body = await request.body()
        worker = await worker_of(request, body)
        batch = ResultBatch.model_validate_json(body)
        outcome = await run_in_threadpool(app.scheduler.submit_results, worker, lease_id, batch)
        for job_id in outcome.completed_jobs:
            asyncio.get_running_loop().run_in_executor(None, _finalize, job_id)
        counts: dict[str, int] = {}
        for status in outcome.statuses.values():
            counts[status] = counts.get(status, 0) + 1
        return _json({"lease_id": lease_id, "results": counts})

    # -- ledger -------------------------------------------------------------------

    def sealer() -> Any:
        if app.sealer is None:
            raise Conflict("this coordinator runs without a ledger (--ledger none)")
        return app.sealer

    @api.get("/v1/ledger", tags=["ledger"])
    def ledger_info() -> dict[str, Any]:
        seal = sealer()
        epochs = app.store.list_epochs()
        return {
            "kind": settings.ledger,
            "chain_id": seal.ledger.chain_id,
            "contract": seal.ledger.address,
            "token": seal.ledger.token_address,
            "coordinator": seal.ledger.account,
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
        done = sealer().step(force=True)
        return {"committed": [{"number": e.number, "state": e.state, "results": e.result_count,
                               "tx_hash": e.tx_hash, "block_number": e.block_number} for e in done]}

    @api.get("/v1/ledger/epochs/{number}/results-tree", tags=["ledger"])
    def epoch_tree(number: int) -> Response:
        e = app.store.get_epoch(number)
        if e is None or not e.results_dump:
            raise NotFound(f"no sealed epoch {number}; `coopgrid ledger status` lists them", epoch=number)
        return Response(app.blobs.get(e.results_dump), media_type="application/json")

    @api.get("/v1/jobs/{job_id}/tasks/{task_index}/proof", tags=["ledger"])
    def task_proof(job_id: str, task_index: int, tok: TokenDep) -> dict[str, Any]:
        job = app.scheduler.job_for(job_id, tok)
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
        epoch: int = Field(ge=1)
        leaf_hash: str = Field(pattern=r"^0x[0-9a-fA-F]{64}$")
        proof: list[str] = Field(max_length=256)

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
        body = await request.body()
        if request.headers.get("authorization"):
            app.auth.require_operator(await run_in_threadpool(app.auth.token, request.headers["authorization"]))
        else:
            worker = await worker_of(request, body)
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

    add_escrow_routes(api, app)
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


# -- escrow (issue 9): routes added as functions of their own --------------------------------------

#: JSON-RPC methods the coordinator relays to its chain: reads, and transactions already signed by
#: their sender (who pays its own gas). Lets clients use the embedded chain, which one process owns.
RELAYED = frozenset({
    "eth_chainId", "net_version", "eth_blockNumber", "eth_getBlockByNumber", "eth_getTransactionCount",
    "eth_estimateGas", "eth_call", "eth_sendRawTransaction", "eth_getTransactionReceipt", "eth_getCode",
    "eth_getTransactionByHash", "eth_getLogs", "eth_maxPriorityFeePerGas", "eth_gasPrice", "eth_getBalance",
    "eth_feeHistory",
})


class RelayRequest(BaseModel):
    model_config = ConfigDict(extra="allow")
    jsonrpc: str = Field("2.0", max_length=10)
    id: int | str | None = None
    method: str = Field(max_length=64)
    params: list[Any] = Field(default_factory=list, max_length=8)


def _quantities(value: Any) -> Any:
    """Python ints as JSON-RPC hex quantities, everywhere in a result."""
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int):
        return hex(value)
    if isinstance(value, list):
        return [_quantities(v) for v in value]
    if isinstance(value, dict):
        return {k: _quantities(v) for k, v in value.items()}
    return value


def add_escrow_routes(api: FastAPI, app: App) -> None:
    """The money routes: relay to the chain, job funding and escrow, minting on the embedded chain."""
    from web3 import Web3

    def token(authorization: Annotated[str | None, Header()] = None) -> Token:
        return app.auth.token(authorization)

    TokenDep = Annotated[Token, Depends(token)]

    def ledger() -> Any:
        if app.sealer is None:
            raise Conflict("this coordinator runs without a ledger (--ledger none)")
        return app.sealer.ledger

    @api.post("/v1/ledger/rpc", tags=["ledger"])
    def relay(req: RelayRequest) -> dict[str, Any]:
        """A JSON-RPC relay to this coordinator's chain (reads and signed transactions only)."""
        if req.method not in RELAYED:
            return {"jsonrpc": "2.0", "id": req.id, "error": {"code": -32601, "message": f"{req.method} is not relayed"}}
        w3 = ledger().w3
        # through the provider's own formatting (the embedded chain takes Python values, not JSON hex)
        answer = w3.provider.request_func(w3, w3.middleware_onion)(req.method, req.params)
        result = {**dict(answer), "id": req.id}
        if "result" in result:
            result["result"] = _quantities(orjson.loads(Web3.to_json(result["result"])))
        return orjson.loads(Web3.to_json(result))

    @api.post("/v1/jobs/{job_id}/funded", tags=["jobs"])
    def job_funded(job_id: str, tok: TokenDep) -> dict[str, Any]:
        """Check a paid job's escrow on chain and lease its tasks once it is funded (409 says how otherwise)."""
        job = app.scheduler.job_for(job_id, tok)
        job = app.sealer.escrow.activate(job) if app.sealer else job
        return {**job_view(app, job), "escrow": app.sealer.escrow.summary(job) if app.sealer else None}

    @api.get("/v1/jobs/{job_id}/escrow", tags=["jobs"])
    def job_escrow(job_id: str, tok: TokenDep) -> dict[str, Any]:
        """A job's budget, spent and refundable amounts, and the reward sharing rule."""
        from coopgrid.coordinator.rewards import SHARE_RULE

        job = app.scheduler.job_for(job_id, tok)
        ledger()
        return {**app.sealer.escrow.summary(job), "state": job.state, "reward_per_task": str(job.reward_per_task),
                "share_rule": SHARE_RULE, "contract": app.sealer.ledger.address}

    class MintRequest(BaseModel):
        model_config = ConfigDict(extra="forbid")
        address: str = Field(pattern=r"^0x[0-9a-fA-F]{40}$")
        amount: int = Field(gt=0, lt=2**104)
        gas: int = Field(10**17, ge=0, le=10**19, description="Ether (wei) sent along, to pay for its transactions.")

    @api.post("/v1/ledger/mint", tags=["ledger"])
    def mint(req: MintRequest, tok: TokenDep) -> dict[str, Any]:
        """Mint coopgrid tokens (and some ether for gas) to an account: operator, embedded chain only."""
        app.auth.require_operator(tok)
        if app.settings.ledger != "embedded":
            raise Forbidden("tokens are minted only on the embedded chain; on a real chain, buy or transfer them")
        led = ledger()
        address = _address(req.address)
        if req.gas and led.w3.eth.get_balance(address) < req.gas:
            led.send_gas(address, req.gas)
        tx = led.mint(address, req.amount)
        return {"address": address, "minted": str(req.amount), "tx_hash": tx, "balance": str(led.token_balance(address))}
