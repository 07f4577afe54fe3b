"""``coopgrid demo``: the whole grid on this machine, one command.

Trains the digits model centrally, starts a coordinator (embedded SQLite
store) and worker processes on loopback in a fresh data dir, publishes the
model, submits a labeling job over N digit images, follows it, prints the
summary, seals the results on the embedded chain, has every worker claim its
reward, verifies a random result on chain, and stops every process it started.

Money is real on the embedded chain: the operator mints coopgrid's token to the
submitter and to each worker; every worker stakes its own, the submitter funds
the job's escrow with its own key (R per task) before any task is leased, and
what the job did not spend goes back to it. The last table shows that every
token minted is somewhere: in an account, or held by the contract (stakes,
unspent escrow, rewards not claimed yet).
"""

from __future__ import annotations

import random
import tempfile
from pathlib import Path

from rich.console import Console
from rich.table import Table

from coopgrid import datasets
from coopgrid.client import ApiClient
from coopgrid.errors import CoopgridError
from coopgrid.identity import Identity
from coopgrid.local import KEY_PASSWORD, LocalGrid
from coopgrid.protocol import sha256_hex
from coopgrid.registry.train import train_digits
from coopgrid.views import summary_table, watch, workers_table
from coopgrid.worker.client import WorkerClient

REWARD = 100  # token units per accepted task
STAKE = 1_000  # each worker's stake, and the job's min_stake


def run_demo(
    console: Console, items: int, n_workers: int, task_size: int, data_dir: Path | None, dishonest: str | None = "random"
) -> dict:
    if data_dir is None:
        data_dir = Path(tempfile.mkdtemp(prefix="coopgrid-demo-"))
    data_dir.mkdir(parents=True, exist_ok=True)
    console.rule("[bold]coopgrid demo")
    console.print(f"data dir: {data_dir}")

    with console.status("1/7 training the digits classifier centrally…"):
        model = train_digits()
    console.print(
        f"1/7 trained an MLP on scikit-learn's digits: held-out accuracy {model.metrics['test_accuracy']:.2%}, "
        f"exported to ONNX ({len(model.onnx):,} bytes)"
    )

    grid = LocalGrid(data_dir)
    try:
        with console.status("2/7 starting the coordinator…"):
            # a short slash delay: a demo's colluders (none here) would be caught within seconds
            url = grid.start_coordinator(env={"COOPGRID_SLASH_DELAY_SECONDS": "3"})
        console.print(f"2/7 coordinator on {url} (SQLite store in {data_dir}); API docs at {url}/docs")
        with ApiClient(url, grid.token) as client:
            published = client.publish_model(model.onnx, model.spec(sha256_hex(model.onnx)))
            console.print(f"    published model {published['name']}:{published['version']} sha256 {published['hash'][:16]}…")

            # worker 0 is the operator's own node, vouched for with the operator token (--trusted): the
            # root of trust that lets the others earn a record and makes failed gold evidence of a lie
            grid.start_worker(0, "--trusted", env={"COOPGRID_TOKEN": grid.token})
            for i in range(1, n_workers):
                grid.start_worker(i)
            cheat = None
            if dishonest:
                cheat = grid.start_worker(n_workers, "--dishonest", dishonest)
            total = n_workers + (1 if dishonest else 0)
            grid.wait_for_workers(client, total)
            console.print(
                f"3/7 started {n_workers} honest worker processes (one of them the operator's own, --trusted)"
                + (f" and 1 dishonest one ([red]{dishonest}[/], a test facility)" if dishonest else "")
                + "; each makes its own Ethereum key"
            )

            stakes = stake_workers(console, client, grid, total)
            submitter = Identity.load_or_create(data_dir / "submitter" / "key.json", KEY_PASSWORD)
            data = datasets.digits(items)
            digest = client.put_blob(data.to_npz())
            job = client.submit(
                {
                    "name": f"label {items:,} digits",
                    "task_type": "classify",
                    "model": published["hash"],
                    "dataset": digest,
                    "task_size": task_size,
                    "reward_per_task": REWARD,
                    "funder": submitter.address,
                    "min_stake": STAKE,
                    # quorum of 2 agreeing workers and gold tasks. No adaptive replication here: a result
                    # accepted alone stays provisional until its worker's later audits, which a job this
                    # short never gives it, and the escrow closes (refund) only once every result is final
                    "trust": {"replicas": 2, "quorum": 2, "gold_rate": 0.05, "adaptive": False},
                }
            )
            console.print(f"4/7 submitted job {job['id'][:16]}…: {job['items']:,} images in {job['tasks']} tasks, "
                          f"{REWARD} token units per accepted task")
            minted = stakes + fund_job(console, client, submitter, job)
            job = watch(client, job["id"], console, check=grid.check_workers)
            console.print(
                "5/7 done; every result was signed by its worker (EIP-712), checked against a quorum of "
                "other workers or a known answer"
            )
            console.print(summary_table(job))
            console.print(workers_table(client.workers()))
            if cheat is not None:
                caught = [w for w in client.workers() if w["name"] == f"local-{n_workers}" and w["quarantined"]]
                console.print(
                    f"    the dishonest worker was {'[green]caught and quarantined[/]' if caught else '[red]not caught[/]'}"
                    f"{': ' + caught[0]['quarantine_reason'] if caught else ''}"
                )
            out = data_dir / "output.parquet"
            client.output(job["id"], out)
            console.print(f"labels written to {out}")
            ledger_part(console, client, grid, job, published["hash"])
            if cheat is not None:
                slash_part(console, client)
            refund_part(console, client, submitter, job)
            console.print(balances_table(client, grid, submitter, minted))
            return job
    finally:
        codes = grid.stop()
        console.print(f"stopped every process (exit codes {codes})")


def ledger_part(console: Console, client: ApiClient, grid: LocalGrid, job: dict, model_hash: str) -> None:
    """Seal the job's results on chain, let every worker claim, verify a random result."""
    for e in client.seal()["committed"]:
        console.print(
            f"6/7 sealed epoch {e['number']}: {e['results']:,} results as one Merkle root, "
            f"committed in block {e['block_number']} (tx {e['tx_hash'][:18]}…)"
        )
    anchored = client.model_on_chain(model_hash)
    console.print(f"    model {model_hash[:16]}… anchored on chain in block {anchored['block_number']}")

    table = Table(title=f"rewards ({REWARD} token units per accepted task, shared by the results that earned it)")
    for col in ("worker", "claimed now", "balance", "tx"):
        table.add_column(col)
    for i in range(len(grid.workers)):
        me = Identity.load_or_create(grid.data_dir / "workers" / str(i) / "key.json", KEY_PASSWORD)
        worker_client = WorkerClient(grid.url, me)
        try:
            claimed = worker_client.post_json(f"/v1/rewards/{me.address}/claim").json()
        except CoopgridError as exc:  # a worker that got no task has nothing to claim
            table.add_row(me.address, "0", "0", exc.message[:40])
            continue
        finally:
            worker_client.close()
        table.add_row(me.address, claimed["claimed_now"], claimed["balance"], claimed["tx_hash"][:18] + "…")
    console.print(table)

    # a random task whose result is on chain (a provisional one waits for its worker's later checks)
    for task in random.sample(range(job["tasks"]), job["tasks"]):
        try:
            proof = client.proof(job["id"], task)
            break
        except CoopgridError:
            continue
    else:
        console.print("7/7 no result is final yet: every accepted result is still provisional")
        return
    ok = client.verify(proof["epoch"], proof["leaf_hash"], proof["proof"])
    forged = client.verify(proof["epoch"], "0x" + "ab" * 32, proof["proof"])
    console.print(
        f"7/7 task {task}'s result verified on chain with a {len(proof['proof'])}-node Merkle proof: {ok}; "
        f"a forged leaf with the same proof: {forged}"
    )


def _worker_keys(grid: LocalGrid, n: int) -> list[Identity]:
    return [Identity.load_or_create(grid.data_dir / "workers" / str(i) / "key.json", KEY_PASSWORD) for i in range(n)]


def stake_workers(console: Console, client: ApiClient, grid: LocalGrid, n: int) -> int:
    """Mint each worker STAKE tokens and have it stake them with its own key; returns the tokens minted."""
    for me in _worker_keys(grid, n):
        client.json("POST", "/v1/ledger/mint", json={"address": me.address, "amount": STAKE})
        contract = client.account(me.address)["contract"]
        client.send_calls(me, [("approve", [contract, STAKE]), ("stake", [STAKE])])
    console.print(f"    the operator minted {STAKE:,} tokens to each worker, and each staked them with its own key "
                  "(a paid job leases only to staked workers)")
    return STAKE * n


def fund_job(console: Console, client: ApiClient, submitter: Identity, job: dict) -> int:
    """Mint the submitter R x tasks, fund the job's escrow with its own key; returns the tokens minted."""
    import time

    need = REWARD * job["tasks"]
    client.json("POST", "/v1/ledger/mint", json={"address": submitter.address, "amount": need})
    contract = client.account(submitter.address)["contract"]
    deadline = int(time.time()) + 7 * 86400
    sent = client.send_calls(
        submitter, [("approve", [contract, need]), ("fund", [bytes.fromhex(job["id"]), need, deadline])]
    )
    funded = client.json("POST", f"/v1/jobs/{job['id']}/funded")
    console.print(f"    the submitter {submitter.address[:10]}… funded its escrow with {need:,} tokens "
                  f"(tx {sent[-1]['tx_hash'][:18]}…): the job is {funded['state']}")
    return need


def slash_part(console: Console, client: ApiClient) -> None:
    """The dishonest worker's slash, and its evidence checked here from the signatures alone."""
    import time

    from coopgrid.ledger import evidence

    deadline = time.monotonic() + 30
    while not (slashes := [s for s in client.json("GET", "/v1/ledger/slashes") if s["tx_hash"]]):
        if time.monotonic() > deadline:
            console.print("    the dishonest worker was not slashed (no lie it signed was outvoted by a quorum)")
            return
        time.sleep(0.5)
    for s in slashes:
        data = client.call("GET", f"/v1/ledger/evidence/{s['evidence']}").content
        checked = evidence.check(data, client.ledger()["chain_id"], worker=s["worker"], job_id=s["job_id"])
        console.print(
            f"    slashed {int(s['amount']):,} of {s['worker'][:10]}…'s stake into the job's escrow "
            f"(tx {s['tx_hash'][:18]}…); evidence {s['evidence'][:12]}… verified: its own signed result for task "
            f"{checked['task_index']} against {len(checked['agreeing'])} agreeing signed results "
            f"(`coopgrid verify --slash {s['tx_hash']}`)"
        )


def refund_part(console: Console, client: ApiClient, submitter: Identity, job: dict) -> None:
    """Once the coordinator has closed the job on chain, the submitter takes its unspent budget back."""
    import time

    deadline = time.monotonic() + 30
    while True:
        escrow = client.json("GET", f"/v1/jobs/{job['id']}/escrow")
        if escrow["closed"] or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    line = f"    escrow of the job: budget {int(escrow['budget']):,}, spent {int(escrow['spent']):,}"
    if not escrow["closed"]:
        console.print(line + "; not closed yet (results still provisional): refundable after its deadline")
        return
    if int(escrow["refundable"]):
        sent = client.send_calls(submitter, [("refund", [bytes.fromhex(job["id"]), submitter.address])])
        line += f"; refunded {int(escrow['refundable']):,} to the submitter (tx {sent[0]['tx_hash'][:18]}…)"
    else:
        line += "; nothing unspent to refund"
    console.print(line)


def balances_table(client: ApiClient, grid: LocalGrid, submitter: Identity, minted: int) -> Table:
    """Every token minted, where it is now: the accounts, and the contract (stakes, escrow, unclaimed)."""
    info = client.ledger()
    table = Table(title=f"tokens on chain ({minted:,} minted)")
    for col in ("holder", "tokens", "staked"):
        table.add_column(col)
    total = 0
    holders = [("submitter " + submitter.address[:10] + "…", submitter.address)]
    holders += [(f"worker {i} {me.address[:10]}…", me.address) for i, me in enumerate(_worker_keys(grid, len(grid.workers)))]
    for label, address in holders:
        a = client.account(address)
        total += int(a["tokens"])
        staked = int(a["stake"]["active"]) + int(a["stake"]["unstaking"])
        table.add_row(label, f"{int(a['tokens']):,}", f"{staked:,}")
    held = int(client.account(info["contract"])["tokens"])
    total += held
    table.add_row(f"the contract {info['contract'][:10]}… (stakes, unspent escrow, unclaimed)", f"{held:,}", "")
    table.add_row("[bold]total[/]", f"[bold]{total:,}[/]", "[green]= minted[/]" if total == minted else "[red]!= minted[/]")
    return table


def run_other_demo(
    console: Console, task: str, n_workers: int, data_dir: Path | None, items: int | None = None
) -> dict:
    """``coopgrid demo --task ocr|embed|preprocess|stats``: the same grid, another kind of work."""
    from coopgrid.task_demos import run_task_demo

    data_dir = data_dir or Path(tempfile.mkdtemp(prefix=f"coopgrid-demo-{task}-"))
    grid = LocalGrid(data_dir)
    try:
        grid.start_coordinator()
        for i in range(max(n_workers, 2)):
            grid.start_worker(i, "--batch", "2")
        with ApiClient(grid.url, grid.token) as client:
            grid.wait_for_workers(client, max(n_workers, 2))
            return run_task_demo(console, task, client, grid, items=items, data_dir=data_dir)
    finally:
        console.print(f"stopped every process (exit codes {grid.stop()})")
