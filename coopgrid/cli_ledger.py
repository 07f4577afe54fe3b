"""``coopgrid ledger …``, ``coopgrid verify`` and ``coopgrid models verify``: the chain side of the CLI.

Most commands ask the coordinator (which owns the embedded chain). Those
given ``--rpc-url`` and ``--contract`` talk to the chain alone, trusting and
needing no coordinator.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from coopgrid.cli import DEFAULT_URL, Coordinator, TokenOpt, _client, app, console, fail, models_app

ledger_app = typer.Typer(no_args_is_help=True, rich_markup_mode=None, help="The Ethereum ledger: epochs, rewards, the contract.")
app.add_typer(ledger_app, name="ledger")

RpcUrl = Annotated[str | None, typer.Option(envvar="COOPGRID_RPC_URL", help="JSON-RPC endpoint: talk to the chain directly.")]
Contract = Annotated[str | None, typer.Option(envvar="COOPGRID_CONTRACT", help="Ledger contract address (with --rpc-url).")]
KeyFile = Annotated[
    Path, typer.Option(envvar="COOPGRID_KEY_FILE", help="Keystore (password: COOPGRID_KEY_PASSWORD).")
]


def _rpc_ledger(rpc_url: str, contract: str | None, key: bytes | None = None) -> Any:
    from coopgrid.identity import Identity
    from coopgrid.ledger.rpc import RpcLedger

    # views need no funds: a throwaway key signs nothing
    return RpcLedger(rpc_url, key or Identity.generate().private_key, contract)


def _identity(key_file: Path) -> Any:
    from coopgrid.identity import PASSWORD_ENV, Identity

    if not key_file.exists():
        fail(f"no keystore at {key_file}; pass --key-file (the worker's key.json)")
    return Identity.load_or_create(key_file, os.environ.get(PASSWORD_ENV))


def _anonymous(url: str) -> Any:
    from coopgrid.client import ApiClient

    return ApiClient(url, None)


@ledger_app.command("status")
def status(coordinator: Coordinator = DEFAULT_URL) -> None:
    """The contract, and every epoch with its state, root and transaction."""
    with _anonymous(coordinator) as client:
        info = client.ledger()
    console.print(f"{info['kind']} chain {info['chain_id']}, contract {info['contract']}, owner {info['coordinator']}")
    console.print(f"token {info['token']}; spent from escrows {info['spent']}, claimed by workers {info['claimed']}",
                  highlight=False)
    table = Table(title=f"epochs ({info['unsealed_results']:,} accepted results waiting)")
    for col in ("epoch", "state", "results", "results root", "block", "transaction"):
        table.add_column(col)
    for e in info["epochs"]:
        table.add_row(
            str(e["number"]), e["state"], f"{e['results']:,}", (e["results_root"] or "")[:18] + "…",
            str(e["block_number"] or ""), e["tx_hash"] or "",
        )
    console.print(table)
    with _anonymous(coordinator) as client:
        slashes = client.json("GET", "/v1/ledger/slashes")
    for sl in slashes:
        console.print(f"slashed {sl['amount']} of {sl['worker']} into job {sl['job_id'][:16]}…'s escrow: tx "
                      f"{sl['tx_hash'] or '(sending)'}, evidence {sl['evidence']} (`coopgrid verify --slash TX`)",
                      highlight=False, soft_wrap=True)
    for held in info.get("held_jobs", []):
        console.print(f"[red]job {held['job']} ({held['name']}) is held out of sealing:[/] {held['reason']}", soft_wrap=True)


@ledger_app.command("seal")
def seal(coordinator: Coordinator = DEFAULT_URL, token: TokenOpt = None) -> None:
    """Seal every accepted result not yet in an epoch now, and commit it (operator)."""
    with _client(coordinator, token) as client:
        done = client.seal()["committed"]
    if not done:
        console.print("nothing to seal: no accepted results wait for an epoch")
    for e in done:
        console.print(f"epoch {e['number']}: {e['results']:,} results committed in block {e['block_number']} ({e['tx_hash']})")


@ledger_app.command("epoch")
def epoch(
    number: int,
    as_json: Annotated[bool, typer.Option("--json", help="The results tree in StandardMerkleTree dump format.")] = False,
    coordinator: Coordinator = DEFAULT_URL,
) -> None:
    """One epoch's results tree."""
    with _anonymous(coordinator) as client:
        dump = client.epoch_tree(number)
    if as_json:
        typer.echo(json.dumps(dump, indent=2))
        return
    console.print(f"epoch {number}: {len(dump['values']):,} results, root {dump['tree'][0]} ({dump['format']})")


@ledger_app.command("claim")
def claim(
    key_file: KeyFile = Path("coopgrid-worker/key.json"),
    coordinator: Coordinator = DEFAULT_URL,
    rpc_url: RpcUrl = None,
    contract: Contract = None,
) -> None:
    """Claim a worker's rewards (its keystore). With --rpc-url the worker sends (and pays for) the claim itself."""
    from coopgrid.worker.client import WorkerClient

    me = _identity(key_file)
    if rpc_url:
        if not contract:
            fail("--rpc-url needs --contract (the ledger contract's address)")
        with _anonymous(coordinator) as client:
            status = client.rewards(me.address)
        if not status["proof"] or int(status["claimable"]) == 0:
            fail(f"nothing to claim for {me.address}: {status['claimed']} of {status['cumulative']} already claimed")
        ledger = _rpc_ledger(rpc_url, contract, me.private_key)
        tx = ledger.claim(None, me.address, int(status["cumulative"]), status["proof"])
        console.print(f"claimed {status['claimable']} for {me.address} (tx {tx}); balance {ledger.balance_of(me.address)}")
        return
    client = WorkerClient(coordinator, me)
    try:
        result = client.post_json(f"/v1/rewards/{me.address}/claim").json()
    finally:
        client.close()
    console.print(
        f"claimed {result['claimed_now']} for {me.address} (tx {result['tx_hash']}); balance {result['balance']}"
    )


@ledger_app.command("balance")
def balance(
    address: str,
    coordinator: Coordinator = DEFAULT_URL,
    rpc_url: RpcUrl = None,
    contract: Contract = None,
) -> None:
    """Claimed, claimable and pending rewards of an address."""
    if rpc_url:
        if not contract:
            fail("--rpc-url needs --contract")
        ledger = _rpc_ledger(rpc_url, contract)
        console.print(f"{address}: balance {ledger.balance_of(address)}, claimed {ledger.claimed(address)}")
        return
    with _anonymous(coordinator) as client:
        s = client.rewards(address)
        stake = client.json("GET", f"/v1/ledger/accounts/{address}")["stake"]
    console.print(
        f"{s['address']}: balance {s['balance']}, claimed {s['claimed']}, claimable {s['claimable']} "
        f"(committed in epoch {s['epoch']}), pending {s['pending']}; earned {int(s['cumulative']) + int(s['pending'])} "
        f"= claimed + claimable + pending; stake {stake['active']} active, {stake['unstaking']} unstaking",
        highlight=False,
    )


@ledger_app.command("deploy")
def deploy(
    rpc_url: RpcUrl = None,
    key_file: Annotated[Path | None, typer.Option(help="Keystore of the deploying (owner) account, for --rpc-url.")] = None,
    data_dir: Annotated[Path | None, typer.Option(help="Deploy on this data dir's embedded chain.")] = None,
    chain_id: Annotated[int | None, typer.Option(help="Refuse any other chain.")] = None,
) -> None:
    """Deploy the ledger contract: on a JSON-RPC chain, or on a data dir's embedded chain."""
    from coopgrid.app import coordinator_identity, open_coordinator_ledger
    from coopgrid.config import Settings

    if rpc_url:
        if key_file is None:
            fail("--rpc-url needs --key-file: the account that deploys owns the contract (the coordinator's)")
        from coopgrid.ledger.rpc import RpcLedger

        with RpcLedger(rpc_url, _identity(key_file).private_key, chain_id=chain_id) as ledger:
            address = ledger.deploy()
            console.print(f"ledger contract deployed at {address} on chain {ledger.chain_id}")
        return
    if data_dir is None:
        fail("give --rpc-url (with --key-file) or --data-dir (embedded chain; stop its coordinator first)")
    settings = Settings(data_dir=data_dir, **({"chain_id": chain_id} if chain_id else {}))
    with open_coordinator_ledger(settings, coordinator_identity(settings)) as ledger:
        console.print(f"ledger contract at {ledger.address} on the embedded chain {ledger.chain_id} in {data_dir}")


@models_app.command("verify")
def models_verify(
    model_hash: str, coordinator: Coordinator = DEFAULT_URL, rpc_url: RpcUrl = None, contract: Contract = None
) -> None:
    """Check that a model hash was published (anchored) on chain."""
    if rpc_url:
        if not contract:
            fail("--rpc-url needs --contract")
        record = _rpc_ledger(rpc_url, contract).model_published("0x" + model_hash.removeprefix("0x"))
        published, block = record is not None, record.block_number if record else None
    else:
        with _anonymous(coordinator) as client:
            info = client.model_on_chain(model_hash)
        published, block = info["published"], info["block_number"]
    if not published:
        fail(f"model {model_hash} is not published on chain", code=1)
    console.print(f"model {model_hash} was published on chain in block {block}")


@app.command()
def verify(
    job_id: Annotated[str | None, typer.Argument(help="Job id (with TASK).")] = None,
    task: Annotated[int | None, typer.Argument(help="Task index.")] = None,
    proof_file: Annotated[Path | None, typer.Option("--proof", help="Check this exported proof on chain alone.")] = None,
    slash: Annotated[str | None, typer.Option("--slash", help="Recheck the evidence of the slash in this transaction.")] = None,
    bundle: Annotated[Path | None, typer.Option(help="The slash's evidence bundle (default: the coordinator's copy).")] = None,
    export: Annotated[Path | None, typer.Option(help="Write the proof here, for `verify --proof`.")] = None,
    coordinator: Coordinator = DEFAULT_URL,
    token: TokenOpt = None,
    rpc_url: RpcUrl = None,
    contract: Contract = None,
) -> None:
    """Check that a task's result is committed on chain: JOB TASK via the coordinator, or --proof FILE alone."""
    from coopgrid.ledger import merkle

    if slash is not None:
        verify_slash(slash, bundle, coordinator, rpc_url, contract)
        return
    if proof_file is not None:
        if bool(rpc_url) != bool(contract):
            fail("--proof with the chain alone needs both --rpc-url and --contract (or neither: ask the coordinator)")
        try:
            proof = json.loads(proof_file.read_text())
            leaf = proof["leaf"]
            value = merkle.result_leaf(leaf["jobId"], leaf["taskIndex"], leaf["modelHash"], leaf["inputHash"], leaf["outputHash"])
            epoch_n, nodes = int(proof["epoch"]), list(proof["proof"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            fail(f"{proof_file} is not a proof exported by `coopgrid verify JOB TASK --export`: {exc}")
        # the leaf hash is recomputed from the values, never taken from the file
        leaf_hash = merkle.leaf_hash(merkle.RESULT_LEAF, value)
        if rpc_url and contract:
            valid = _rpc_ledger(rpc_url, contract).verify_result(epoch_n, leaf_hash, nodes)
            _report(valid, f"epoch {epoch_n} of contract {contract}", leaf_hash)
            return
        # the embedded chain serves no JSON-RPC: the coordinator asks its contract (POST /v1/ledger/verify)
        from coopgrid.client import ApiClient

        with ApiClient(coordinator, token) as client:
            answer = client.json("POST", "/v1/ledger/verify", json={"epoch": epoch_n, "leaf_hash": leaf_hash, "proof": nodes})
        console.print(
            f"asked the coordinator's contract {answer['contract']} (this trusts the coordinator to relay the chain's "
            "answer; with a chain you can reach yourself, --rpc-url and --contract trust no one)",
            highlight=False,
        )
        _report(bool(answer["valid"]), f"epoch {epoch_n} of contract {answer['contract']}", leaf_hash)
        return
    if job_id is None or task is None:
        fail("give JOB TASK, or --proof FILE (with --rpc-url and --contract to ask the chain alone)")
    with _client(coordinator, token) as client:
        proof = client.proof(client.resolve_job(job_id), task)
        leaf = proof["leaf"]
        value = merkle.result_leaf(leaf["jobId"], leaf["taskIndex"], leaf["modelHash"], leaf["inputHash"], leaf["outputHash"])
        leaf_hash = merkle.leaf_hash(merkle.RESULT_LEAF, value)
        local = merkle.verify_leaf(proof["results_root"], leaf_hash, proof["proof"])
        on_chain = client.verify(proof["epoch"], leaf_hash, proof["proof"])
    table = Table(title=f"task {task} of job {job_id[:16]}…", show_header=False)
    for k, v in leaf.items():
        table.add_row(k, str(v))
    table.add_row("leaf hash", leaf_hash)
    table.add_row("proof", "\n".join(proof["proof"]) or "(single leaf)")
    table.add_row("epoch", f"{proof['epoch']} (root {proof['results_root']})")
    table.add_row("block / tx", f"{proof['block_number']} / {proof['tx_hash']}")
    table.add_row("contract", f"{proof['contract']} on chain {proof['chain_id']}")
    table.add_row("computed by", proof["worker"])
    console.print(table)
    if export:
        export.write_text(json.dumps(proof, indent=2))
        console.print(f"proof written to {export}")
    if local != on_chain:
        fail(f"the proof checks {'locally' if local else 'on chain'} only: the coordinator's root and the chain disagree")
    _report(on_chain, f"epoch {proof['epoch']} on chain", leaf_hash)


def _report(valid: bool, where: str, leaf_hash: str) -> None:
    if not valid:
        fail(f"NOT verified: leaf {leaf_hash} with this proof is not in {where}", code=1)
    console.print(f"[bold green]verified[/]: leaf {leaf_hash} is in {where}")


def verify_slash(tx: str, bundle: Path | None, coordinator: str, rpc_url: str | None, contract: str | None) -> None:
    """Recheck a slash: its event (from the chain with --rpc-url, else as the coordinator reports it), the
    bundle's hash against the event's evidence, and the bundle's signatures and values."""
    from coopgrid.errors import InvalidInput
    from coopgrid.ledger import evidence

    tx = tx.lower()
    if rpc_url:
        if not contract:
            fail("--rpc-url needs --contract")
        ledger = _rpc_ledger(rpc_url, contract)
        chain_id = ledger.chain_id
        found = [e for e in ledger.money_events() if e["event"] == "Slashed" and e["tx"].lower() == tx]
        event = {"worker": found[0]["worker"], "job_id": found[0]["jobId"], "amount": found[0]["amount"],
                 "evidence": found[0]["evidence"]} if found else None
    else:
        with _anonymous(coordinator) as client:
            chain_id = client.ledger()["chain_id"]
            listed = [s for s in client.json("GET", "/v1/ledger/slashes") if (s["tx_hash"] or "").lower() == tx]
        event = {**listed[0], "evidence": "0x" + listed[0]["evidence"]} if listed else None
    if event is None:
        fail(f"no slash in transaction {tx}", code=1)
    if bundle is not None:
        data = bundle.read_bytes()
    else:
        with _anonymous(coordinator) as client:
            data = client.call("GET", f"/v1/ledger/evidence/{event['evidence'].removeprefix('0x')}").content
    if evidence.digest(data) != event["evidence"].lower():
        fail(f"NOT verified: the bundle hashes to {evidence.digest(data)}, the slash names {event['evidence']}", code=1)
    try:
        checked = evidence.check(data, chain_id, worker=event["worker"], job_id=str(event["job_id"]))
    except InvalidInput as exc:
        fail(f"NOT verified: {exc.message}", code=1)
    console.print(
        f"[bold green]verified[/]: slash {tx} of {event['amount']} from {checked['worker']} is backed by its own "
        f"signed result for task {checked['task_index']} of job {checked['job_id'][:16]}… (output "
        f"{checked['liar_output'][:12]}…) against {len(checked['agreeing'])} agreeing signed results "
        f"(output {checked['agreed_output'][:12]}…)", highlight=False,
    )
