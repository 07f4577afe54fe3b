"""Settings, read from COOPGRID_* environment variables or given explicitly.

Nothing is read at import time: callers build a :class:`Settings` and pass it
to :func:`coopgrid.app.build`.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """The coordinator's settings. Every field can be set as COOPGRID_<NAME>."""

    model_config = SettingsConfigDict(env_prefix="COOPGRID_", extra="ignore")

    data_dir: Path = Field(Path("coopgrid-data"), description="Where the database, blobs and keys live.")
    database_url: str | None = Field(
        None, description="SQLAlchemy URL; default is SQLite in the data dir (postgresql+psycopg://... scales out)."
    )
    host: str = Field("127.0.0.1", description="Address the HTTP API listens on.")
    port: int = Field(8750, ge=0, le=65535, description="Port the HTTP API listens on (0 picks a free one).")
    lease_seconds: float = Field(60.0, gt=0, description="How long a worker holds leased replicas without a heartbeat.")
    max_lease_batch: int = Field(1000, ge=1, description="Most replicas one lease request may take.")
    max_upload_bytes: int = Field(256 * 1024 * 1024, ge=1, description="Largest model or dataset upload accepted.")
    max_dataset_bytes: int = Field(
        1 << 30,
        ge=1,
        description="Most bytes a job's dataset may decode to (all its arrays, or its table's columns); checked "
        "from the sizes the dataset declares, before anything is decompressed.",
    )
    max_dataset_items: int = Field(1_000_000, ge=1, description="Most items (rows) in a job's dataset.")
    inline_input_bytes: int = Field(
        16 * 1024, ge=0, description="Task inputs up to this size travel inside the lease; larger ones as blobs."
    )
    reap_interval: float = Field(1.0, gt=0, description="Seconds between scans for expired leases.")
    auth_skew_seconds: float = Field(300.0, gt=0, description="How old a worker's signed request may be.")
    chain_id: int = Field(31337, description="Chain id: of the EIP-712 domain workers sign, and of the ledger's chain.")
    ledger: str = Field("embedded", pattern="^(embedded|rpc|none)$", description="embedded, rpc, or none.")
    rpc_url: str | None = Field(None, description="JSON-RPC endpoint of the chain, for ledger=rpc.")
    contract: str | None = Field(None, description="Ledger contract address (default: the one deployed for this data dir).")
    coordinator_key_password: str = Field(
        "", description="Password of the coordinator's keystore (data dir); empty leaves the key unencrypted."
    )
    separate_networks: bool = Field(
        False,
        description="Replicas of a task never go to two workers of one /24 (IPv4) or /48 (IPv6) network; "
        "off for loopback deployments such as the demo.",
    )
    seal_every_results: int = Field(10_000, ge=1, description="Seal an epoch once this many results wait.")
    seal_every_seconds: float = Field(60.0, gt=0, description="Seal an epoch once the oldest waiting result is this old.")

    @property
    def sqlite_path(self) -> Path:
        return self.data_dir / "coopgrid.sqlite"

    @property
    def blob_dir(self) -> Path:
        return self.data_dir / "blobs"

    @property
    def key_file(self) -> Path:
        return self.data_dir / "coordinator-key.json"

    @property
    def ledger_file(self) -> Path:
        return self.data_dir / "ledger.json"

    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{self.sqlite_path}"
