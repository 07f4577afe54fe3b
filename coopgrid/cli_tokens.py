"""``coopgrid tokens list|revoke|recover``: API tokens beyond ``create``.

``recover`` is the way back in for an operator who lost every operator token:
it is run on the coordinator's machine and opens the database directly, so
being able to read the data dir (or the database) is the credential.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from coopgrid.cli import DEFAULT_URL, Coordinator, TokenOpt, _client, console, fail, tokens_app


@tokens_app.command("list")
def tokens_list(coordinator: Coordinator = DEFAULT_URL, token: TokenOpt = None) -> None:
    """Every token's id, name, role and state (needs an operator token; secrets are never stored)."""
    with _client(coordinator, token) as client:
        tokens = client.json("GET", "/v1/tokens")
    table = Table(title="API tokens")
    for col in ("id", "name", "role", "created", "state"):
        table.add_column(col)
    for t in tokens:
        created = time.strftime("%Y-%m-%d %H:%M", time.localtime(t["created_at"]))
        table.add_row(str(t["id"]), escape(t["name"]), t["role"], created, "revoked" if t["revoked"] else "live")
    console.print(table)


@tokens_app.command("revoke")
def tokens_revoke(
    ref: Annotated[str, typer.Argument(help="The token's name or id (see `coopgrid tokens list`).")],
    coordinator: Coordinator = DEFAULT_URL,
    token: TokenOpt = None,
) -> None:
    """Revoke a token: its secret stops working at once; its jobs and outputs stay."""
    with _client(coordinator, token) as client:
        gone = client.json("POST", f"/v1/tokens/{ref}/revoke")
    console.print(f"revoked {gone['role']} token {escape(gone['name'])} (id {gone['id']})", highlight=False)


@tokens_app.command("recover")
def tokens_recover(
    data_dir: Annotated[Path, typer.Option(envvar="COOPGRID_DATA_DIR", help="The coordinator's data dir.")] = Path(
        "coopgrid-data"
    ),
    database_url: Annotated[
        str | None, typer.Option(envvar="COOPGRID_DATABASE_URL", help="Default: SQLite in the data dir.")
    ] = None,
    name: Annotated[str, typer.Option(help="The new token's name.")] = "",
) -> None:
    """Lost the operator token? Run this ON THE COORDINATOR'S MACHINE: it issues a new operator token
    straight into the coordinator's database (reading that database is the credential)."""
    from coopgrid.config import Settings
    from coopgrid.coordinator.auth import Auth
    from coopgrid.store.sql import SqlStore

    settings = Settings(data_dir=data_dir, database_url=database_url, ledger="none")
    if database_url is None and not settings.sqlite_path.exists():
        fail(f"no coordinator database at {settings.sqlite_path}: run this where the coordinator runs, "
             "with its --data-dir (or --database-url)")
    store = SqlStore.open(settings.resolved_database_url())
    try:
        auth = Auth(store, settings)
        label = name or f"operator-recovered-{time.strftime('%Y%m%d-%H%M%S')}"
        _, secret = auth.issue(label, "operator", unique=True)
    finally:
        store.close()
    console.print(f"new operator token {escape(label)} (shown only once, keep it): {secret}", soft_wrap=True, highlight=False)
    console.print("`coopgrid tokens revoke NAME` with it retires a lost one.", highlight=False)
