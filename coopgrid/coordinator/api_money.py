"""The money routes of the coordinator's API: accounts, relayed transactions, job escrow, minting.

Submitters and workers sign their own transactions (approve, fund, refund,
stake, unstake, withdraw; see :mod:`coopgrid.ledger.wallet`); the coordinator
tells them their nonce and the fees and relays what they signed, nothing else.
Who may call each route is in :data:`coopgrid.coordinator.openapi.SECURITY`.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import FastAPI, Request, Response
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, ConfigDict, Field

from coopgrid.app import App
from coopgrid.coordinator.edge import STATE_SIGNED, STATE_TOKEN
from coopgrid.coordinator.ratelimit import TokenBuckets
from coopgrid.errors import AuthError, Conflict, Forbidden, NotFound
from coopgrid.ledger.wallet import MAX_BATCH, MAX_RAW_BYTES, check_relayed


class RelayRequest(BaseModel):
    """Raw signed transactions (hex), sent in this order."""

    model_config = ConfigDict(extra="forbid")
    raw: list[Annotated[str, Field(pattern=r"^0x[0-9a-fA-F]+$", max_length=2 + 2 * MAX_RAW_BYTES)]] = Field(
        min_length=1, max_length=MAX_BATCH
    )


class MintRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    address: str = Field(pattern=r"^0x[0-9a-fA-F]{40}$")
    amount: int = Field(gt=0, lt=2**104)
    gas: int = Field(10**17, ge=0, le=10**19, description="Ether (wei) sent along when the account has less.")


def add_money_routes(api: FastAPI, app: App) -> None:
    from coopgrid.coordinator.api import _address, job_view
    from coopgrid.coordinator.rewards import SHARE_RULE

    relays = TokenBuckets("relayed transactions from this caller", 2.0, 8.0)

    def ledger() -> Any:
        if app.sealer is None:
            raise Conflict("this coordinator runs without a ledger (--ledger none)")
        return app.sealer.ledger

    def token_of(request: Request) -> Any:
        tok = request.scope.get("state", {}).get(STATE_TOKEN)
        if tok is None:
            raise AuthError("this route needs an API token (Authorization: Bearer ...)")
        return tok

    @api.get("/v1/ledger/accounts/{address}", tags=["ledger"])
    def account(address: str) -> dict[str, Any]:
        """What an account needs to sign its own transactions (nonce, chain, fees), and what it holds."""
        led = ledger()
        address = _address(address)
        stake = led.stake_of(address)
        nonce, ether, fees = led.account_state(address)
        return {
            "address": address,
            "chain_id": led.chain_id,
            "contract": led.address,
            "token": led.token_address,
            "nonce": nonce,
            "fees": fees,
            "ether": str(ether),
            "tokens": str(led.token_balance(address)),
            "stake": {"active": str(stake.active), "unstaking": str(stake.unstaking), "unlock_at": stake.unlock_at},
            "unstake_delay": led.unstake_delay(),
        }

    @api.post("/v1/ledger/transactions", tags=["ledger"])
    async def relay(req: RelayRequest, request: Request) -> dict[str, Any]:
        """Relay transactions their senders signed (approve, fund, refund, stake, unstake, withdraw only)."""
        state = request.scope.get("state", {})
        tok, signed = state.get(STATE_TOKEN), state.get(STATE_SIGNED)
        if tok is None and signed is None:
            raise AuthError("relaying needs an API token or a worker's signed headers")
        led = ledger()
        for raw in req.raw:  # malformed ones are refused before they count against the caller's rate
            check_relayed(raw, led.chain_id, led.address, led.token_address)
        relays.take(f"token:{tok.id}" if tok is not None else f"worker:{signed.address}")
        return {"transactions": await run_in_threadpool(led.relay, req.raw)}

    @api.post("/v1/jobs/{job_id}/funded", tags=["jobs"])
    def job_funded(job_id: str, request: Request) -> dict[str, Any]:
        """Check a paid job's escrow on chain and lease its tasks once it is funded (409 says how otherwise)."""
        job = app.scheduler.job_for(job_id, token_of(request))
        if app.sealer is None:
            raise Conflict("this coordinator runs without a ledger (--ledger none): it takes no paid jobs")
        job = app.sealer.escrow.activate(job)
        return {**job_view(app, job), "escrow": app.sealer.escrow.summary(job)}

    @api.get("/v1/jobs/{job_id}/escrow", tags=["jobs"])
    def job_escrow(job_id: str, request: Request) -> dict[str, Any]:
        """A job's budget, spent and refundable amounts, and the reward sharing rule."""
        job = app.scheduler.job_for(job_id, token_of(request))
        led = ledger()
        return {**app.sealer.escrow.summary(job), "state": job.state, "reward_per_task": str(job.reward_per_task),
                "share_rule": SHARE_RULE, "contract": led.address}

    @api.get("/v1/ledger/slashes", tags=["ledger"])
    def slashes() -> list[dict[str, Any]]:
        """Every slash: worker, harmed job, amount, evidence (a bundle anyone can fetch and check) and tx."""
        ledger()
        return [{k: v for k, v in s.items() if k != "worker_id"} for s in app.store.list_slashes()]

    @api.get("/v1/ledger/evidence/{digest}", tags=["ledger"])
    def evidence_bundle(digest: str) -> Response:
        """A slash's evidence bundle (JSON; its sha256 is the slash's evidence hash on chain)."""
        digest = digest.removeprefix("0x").lower()
        if not any(s["evidence"] == digest for s in app.store.list_slashes()):
            raise NotFound(f"no slash has evidence {digest}; GET /v1/ledger/slashes lists them")
        return Response(app.blobs.get(digest), media_type="application/json")

    @api.post("/v1/ledger/mint", tags=["ledger"])
    def mint(req: MintRequest, request: Request) -> dict[str, Any]:
        """Mint coopgrid's own token (and send some ether for gas) to an account: operator only, and only
        where the coordinator owns the token (the embedded chain's default; test chains)."""
        app.auth.require_operator(token_of(request))
        led = ledger()
        address = _address(req.address)
        if req.gas and led.account_state(address)[1] < req.gas:
            led.send_gas(address, req.gas)
        try:
            tx = led.mint(address, req.amount)
        except Exception as exc:
            if "owner" in str(exc).lower():
                raise Forbidden(
                    f"this coordinator does not own the token {led.token_address}: tokens are minted only where "
                    "coopgrid deployed its own (the embedded chain); elsewhere, buy or transfer them"
                ) from exc
            raise
        return {"address": address, "minted": str(req.amount), "tx_hash": tx, "balance": str(led.token_balance(address))}
