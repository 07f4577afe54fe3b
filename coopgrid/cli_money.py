"""Money through the CLI: fund a job, refund it, mint test tokens, stake, unstake, withdraw.

Every transaction is signed here with the user's own keystore and relayed by
the coordinator (see :mod:`coopgrid.ledger.wallet`): a submitter funds with
its own tokens, a worker stakes its own, and neither hands its key to anyone.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any

import typer

from coopgrid.cli import DEFAULT_URL, Coordinator, TokenOpt, _client, app, console, fail
from coopgrid.cli_ledger import KeyFile, _anonymous, _identity, ledger_app
from coopgrid.errors import AuthError, CoopgridError

RefundAfter = Annotated[
    float, typer.Option(min=0.05, help="Days after which you can take the unspent budget back if the job is never closed.")
]


def account(coordinator: str, address: str) -> dict[str, Any]:
    with _anonymous(coordinator) as client:
        return client.json("GET", f"/v1/ledger/accounts/{address}")


def send_calls(
    me: Any, calls: Sequence[tuple[str, Sequence[Any]]], coordinator: str, token: str | None = None
) -> list[dict[str, Any]]:
    """Sign ``calls`` with ``me``'s key and have the coordinator relay them (with ``token``, or signed as a worker)."""
    from coopgrid.ledger import wallet

    info = account(coordinator, me.address)
    acct = wallet.Account.from_json(info)
    pinned = os.environ.get("COOPGRID_CONTRACT")
    if pinned and pinned.lower() != acct.contract.lower():  # the coordinator names the contract you approve
        fail(f"the coordinator names the ledger contract {acct.contract}, not COOPGRID_CONTRACT={pinned}: "
             "nothing was signed")
    gas = sum(wallet.CALLS[name][2] for name, _ in calls) * acct.max_fee_per_gas
    if int(info["ether"]) < gas:
        fail(f"{me.address} holds {int(info['ether'])} wei of ether; its transactions may cost up to {gas} in gas. "
             "Send it some ether (on the embedded chain `coopgrid ledger mint` sends some along)")
    if token:
        with _client(coordinator, token) as client:
            return client.send_calls(me, calls)
    raw = wallet.sign_calls(me, acct, calls)
    from coopgrid.worker.client import WorkerClient

    client = WorkerClient(coordinator, me)
    try:
        try:
            return client.post_json("/v1/ledger/transactions", {"raw": raw}).json()["transactions"]
        except AuthError as exc:
            if "not registered" not in exc.message:
                raise
            client.post_json("/v1/workers", {"name": "", "owner": ""})  # a worker signs only once registered
            return client.post_json("/v1/ledger/transactions", {"raw": raw}).json()["transactions"]
    finally:
        client.close()


def fund_job(
    client: Any, coordinator: str, token: str | None, job: dict[str, Any], funder: Any, refund_after_days: float = 30.0
) -> dict[str, Any]:
    """Approve and fund a paid job's escrow (R x tasks) from ``funder``'s tokens, then have its tasks leased."""
    need = int(job["reward_per_task"]) * int(job["tasks"])
    have = int(account(coordinator, funder.address)["tokens"])
    if have < need:
        fail(f"{funder.address} holds {have} tokens; job {job['id']} needs {need} ({job['tasks']} tasks x "
             f"{job['reward_per_task']}). Get tokens (on the embedded chain the operator mints them: "
             f"`coopgrid ledger mint {funder.address} {need}`), then `coopgrid fund {job['id']} --key-file KEYSTORE`")
    deadline = int(time.time() + refund_after_days * 86400)
    contract = account(coordinator, funder.address)["contract"]
    calls = [("approve", [contract, need]), ("fund", [bytes.fromhex(job["id"]), need, deadline])]
    sent = send_calls(funder, calls, coordinator, token)
    console.print(f"funded job {job['id'][:16]}… with {need} from {funder.address} (tx {sent[-1]['tx_hash']}); "
                  f"refundable after {refund_after_days:g} days if never closed", highlight=False)
    return client.json("POST", f"/v1/jobs/{job['id']}/funded")


@app.command("fund")
def fund(
    job_id: str,
    key_file: KeyFile = Path("coopgrid-submitter/key.json"),
    refund_after: RefundAfter = 30.0,
    coordinator: Coordinator = DEFAULT_URL,
    token: TokenOpt = None,
) -> None:
    """Fund a paid job's escrow from your keystore (approve + fund), then let its tasks be leased."""
    with _client(coordinator, token) as client:
        job = client.job(job_id)
        if job["state"] != "unfunded":
            console.print(f"job {job_id} is {job['state']}: nothing to fund")
            return
        fund_job(client, coordinator, token, job, _identity(key_file), refund_after)


@ledger_app.command("mint")
def mint(address: str, amount: int, coordinator: Coordinator = DEFAULT_URL, token: TokenOpt = None) -> None:
    """Mint coopgrid tokens to an account, with some ether for its gas (operator; coopgrid's own token only)."""
    with _client(coordinator, token) as client:
        out = client.json("POST", "/v1/ledger/mint", json={"address": address, "amount": amount})
    console.print(f"minted {out['minted']} to {out['address']} (tx {out['tx_hash']}); balance {out['balance']}",
                  highlight=False)


@ledger_app.command("refund")
def refund(
    job_id: str,
    key_file: KeyFile = Path("coopgrid-submitter/key.json"),
    coordinator: Coordinator = DEFAULT_URL,
    token: TokenOpt = None,
) -> None:
    """Pay a closed (or past its deadline) job's unspent budget back to its funder (your key pays the gas)."""
    me = _identity(key_file)
    with _client(coordinator, token) as client:
        escrow = client.json("GET", f"/v1/jobs/{job_id}/escrow")
        if escrow["funder"] is None:
            fail(f"job {job_id} is free: it has no escrow")
        if int(escrow["refundable"]) == 0:
            fail(f"nothing to refund for job {job_id} now: unspent {escrow['unspent']}, "
                 f"{'closed' if escrow['closed'] else 'open until the coordinator closes it or its deadline passes'}")
        sent = send_calls(me, [("refund", [bytes.fromhex(job_id.removeprefix("0x")), escrow["funder"]])],
                          coordinator, token)
        after = client.json("GET", f"/v1/jobs/{job_id}/escrow")
    balance = account(coordinator, escrow["funder"])["tokens"]
    console.print(f"refunded {int(escrow['unspent']) - int(after['unspent'])} to {escrow['funder']} "
                  f"(tx {sent[0]['tx_hash']}); its balance {balance}", highlight=False)


def _stake_line(coordinator: str, address: str) -> str:
    info = account(coordinator, address)
    s = info["stake"]
    line = f"{address}: stake {s['active']} active, {s['unstaking']} unstaking"
    if int(s["unstaking"]):
        line += f" (withdrawable from {time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime(s['unlock_at']))})"
    return line + f"; tokens {info['tokens']}"


@app.command("stake")
def stake(
    amount: Annotated[int, typer.Argument(min=1, help="Token base units to lock as stake.")],
    key_file: KeyFile = Path("coopgrid-worker/key.json"),
    coordinator: Coordinator = DEFAULT_URL,
) -> None:
    """Stake a worker's tokens, so it can take paid jobs (a proven lie is slashed from it)."""
    me = _identity(key_file)
    contract = account(coordinator, me.address)["contract"]
    send_calls(me, [("approve", [contract, amount]), ("stake", [amount])], coordinator)
    console.print(_stake_line(coordinator, me.address), highlight=False)


@app.command("unstake")
def unstake(
    amount: Annotated[int, typer.Argument(min=1, help="Token base units to take out of the active stake.")],
    key_file: KeyFile = Path("coopgrid-worker/key.json"),
    coordinator: Coordinator = DEFAULT_URL,
) -> None:
    """Start taking stake out: it stops counting for new work now, and stays slashable until the delay passes."""
    me = _identity(key_file)
    send_calls(me, [("unstake", [amount])], coordinator)
    console.print(_stake_line(coordinator, me.address), highlight=False)


@app.command("withdraw")
def withdraw(key_file: KeyFile = Path("coopgrid-worker/key.json"), coordinator: Coordinator = DEFAULT_URL) -> None:
    """Take back what was unstaked, once the unstake delay has passed."""
    me = _identity(key_file)
    try:
        send_calls(me, [("withdraw", [])], coordinator)
    except CoopgridError as exc:
        fail(exc.message)
    console.print(_stake_line(coordinator, me.address), highlight=False)
