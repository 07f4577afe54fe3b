"""Settings, read from COOPGRID_* environment variables or given explicitly.

Nothing is read at import time: callers build a :class:`Settings` and pass it
to :func:`coopgrid.app.build`.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

#: Every reward amount (per task, per job) is below this. The ledger contract keeps a job's
#: budget and spend in 104-bit fields, and any worker's cumulative reward is a sum over
#: result rows (fewer than 2**63, the ids being 64-bit), each paying at most one task's
#: reward: below 2**96 * 2**63 = 2**159, so no reward sum can overflow uint256.
REWARD_CEILING = 2**96


class Settings(BaseSettings):
    """The coordinator's settings. Every field can be set as COOPGRID_<NAME>."""

    model_config = SettingsConfigDict(env_prefix="COOPGRID_", extra="ignore")

    data_dir: Path = Field(Path("coopgrid-data"), description="Where the database, blobs and keys live.")
    database_url: str | None = Field(
        None, description="SQLAlchemy URL; default is SQLite in the data dir (postgresql+psycopg://... scales out)."
    )
    blob_store: str | None = Field(
        None,
        description="Where blobs live: default the data dir; a directory every coordinator mounts; or "
        "s3://BUCKET[/PREFIX] (endpoint and credentials as boto3 reads them: AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID...).",
    )
    s3_endpoint_url: str | None = Field(
        None, description="The S3-compatible endpoint of an s3:// blob store (default: boto3's, e.g. AWS_ENDPOINT_URL)."
    )
    blob_url_seconds: int = Field(
        300, ge=0, le=7 * 24 * 3600,
        description="Leases carry presigned URLs of their input blobs (s3:// blob stores) valid this long, at most "
        "the lease's own time; workers fetch from the store itself. 0: workers fetch every input from the coordinator.",
    )
    dataset_urls: str = Field(
        "",
        description="Comma-separated URL prefixes (https://HOST/PATH/, file:///DIR/) under which the coordinator "
        "reads datasets for submitters (coopgrid submit --dataset-url). Empty: it reads none. Each allowed "
        "prefix is a place any submitter can make the coordinator read, so allow only public data.",
    )
    host: str = Field("127.0.0.1", description="Address the HTTP API listens on.")
    port: int = Field(8750, ge=0, le=65535, description="Port the HTTP API listens on (0 picks a free one).")
    lease_seconds: float = Field(60.0, gt=0, description="How long a worker holds leased replicas without a heartbeat.")
    max_lease_batch: int = Field(1000, ge=1, description="Most replicas one lease request may take.")
    audit_wait_seconds: float = Field(
        10.0, ge=0,
        description="An audit of an accepted result waits this long to ride in a lease with other work before "
        "it goes out in a lease of its own (a job's last audits would each cost a lease, a batch and a "
        "validation round); it delays only that result's finality. 0: at once.",
    )
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
    max_json_bytes: int = Field(
        1024 * 1024, ge=1024, description="Largest JSON request body (every endpoint but uploads and result batches)."
    )
    max_results_bytes: int = Field(64 * 1024 * 1024, ge=1024, description="Largest result batch a worker may post.")
    max_buffered_body_bytes: int = Field(
        128 * 1024 * 1024, ge=1024 * 1024,
        description="Request bodies held in memory at once, beyond each one's first max_public_body_bytes "
        "(at least max_results_bytes); requests past it are answered 429.",
    )
    max_json_values: int = Field(
        100_000, ge=1000,
        description="Most JSON values in one request body (a result batch of 10,000 results holds about 70,000).",
    )
    max_public_body_bytes: int = Field(
        64 * 1024, ge=1024, description="Largest body of a request without credentials (e.g. a proof to verify)."
    )
    header_timeout: float = Field(10.0, gt=0, description="Seconds a client has to send a request's headers.")
    body_timeout: float = Field(30.0, gt=0, description="Seconds a request body may pause between two chunks.")
    keep_alive_timeout: int = Field(5, ge=1, description="Seconds an idle keep-alive connection stays open.")
    max_connections: int = Field(
        1000, ge=1, description="Connections and requests in flight at once; more are answered 503."
    )
    max_connections_per_client: int = Field(
        128, ge=0,
        description="Connections one client address (IPv6: /64) may hold at once; more are answered 429. 0 means "
        "no limit; not applied behind a reverse proxy (forwarded_allow_ips), which must limit them itself.",
    )
    forwarded_allow_ips: str | None = Field(
        None,
        description="Addresses of the reverse proxies whose X-Forwarded-For to trust (comma-separated, or *); "
        "without it the proxy's own address is every client's, and limits per network apply to it.",
    )
    register_per_network_per_hour: float = Field(
        60, ge=0, description="Worker registrations per source network (/24 or /48) per hour; 0 means no limit."
    )
    register_per_owner_per_hour: float = Field(
        30, ge=0, description="Worker registrations per declared owner per hour; 0 means no limit."
    )
    worker_requests_per_second: float = Field(
        20, ge=0, description="Lease requests one worker key may make per second (bursts of twice that)."
    )
    owner_requests_per_second: float = Field(
        200, ge=0, description="Lease requests all workers of one owner may make per second."
    )
    network_requests_per_second: float = Field(
        500, ge=0, description="Lease requests all workers of one source network may make per second."
    )
    reap_interval: float = Field(1.0, gt=0, description="Seconds between scans for expired leases.")
    long_poll_seconds: float = Field(
        30.0, ge=0, le=30,
        description="Longest an idle worker's lease request is held waiting for work (its long poll); 0 answers "
        "at once. Held requests take at most half of max_connections; past that they are answered at once.",
    )
    duty_ttl: float = Field(
        10.0, gt=0,
        description="Seconds a process leads a periodic duty (reaper, sealer) without renewing it; another process "
        "of the grid takes over that long after it dies.",
    )
    auth_skew_seconds: float = Field(300.0, gt=0, description="How old a worker's signed request may be.")
    chain_id: int = Field(31337, description="Chain id: of the EIP-712 domain workers sign, and of the ledger's chain.")
    ledger: str = Field("embedded", pattern="^(embedded|rpc|none)$", description="embedded, rpc, or none.")
    rpc_url: str | None = Field(None, description="JSON-RPC endpoint of the chain, for ledger=rpc.")
    contract: str | None = Field(None, description="Ledger contract address (default: the one deployed for this data dir).")
    coordinator_key_password: str = Field(
        "",
        description="Password of the coordinator's keystore (data dir); if empty, a random one is made and kept "
        "in the data dir (mode 0600) next to the key.",
    )
    separate_networks: bool = Field(
        False,
        description="Replicas of a task never go to two workers of one /24 (IPv4) or /48 (IPv6) network; "
        "off for loopback deployments such as the demo.",
    )
    retention_seconds: float = Field(
        7 * 86400.0, ge=0,
        description="A finished job's task, replica and result rows move to a Parquet archive (blob) and leave the "
                    "database this long after its results are sealed in committed epochs; proofs still work.",
    )
    seal_every_results: int = Field(10_000, ge=1, description="Seal an epoch once this many results wait.")
    seal_every_seconds: float = Field(60.0, gt=0, description="Seal an epoch once the oldest waiting result is this old.")
    max_reward_per_task: int = Field(
        10**24, ge=0, lt=REWARD_CEILING, description="Largest reward per task a job may offer (token base units)."
    )
    default_min_stake: int = Field(
        10**18, ge=0, lt=REWARD_CEILING,
        description="Stake a worker needs for paid jobs that name none (0 for a private grid of known workers).",
    )
    slash_fraction: float = Field(
        0.5, ge=0, le=1,
        description="Share of its stake a worker loses for a provable lie (its signed result against a quorum's).",
    )
    slash_delay_seconds: float = Field(
        60.0, ge=0,
        description="A quarantined worker is slashed this long after its quarantine, and only if the workers "
        "who outvoted it are not quarantined by then (colluders who outvote honest workers are caught in turn).",
    )
    min_funding_seconds: float = Field(
        3600.0, ge=0, description="A paid job is leased only while its refund deadline is at least this far away."
    )
    max_job_reward: int = Field(
        10**27, ge=0, lt=REWARD_CEILING, description="Largest reward x tasks a job may offer (its most possible spend)."
    )

    metrics_public: bool = Field(
        False,
        description="Serve /metrics without a token (e.g. to a Prometheus on a private network); by default "
        "it needs an operator token, as it shows the grid's activity.",
    )

    @model_validator(mode="after")
    def _reward_bounds(self) -> Settings:
        if self.max_reward_per_task > self.max_job_reward:
            raise ValueError("max_reward_per_task must be at most max_job_reward")
        return self

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
    def key_password_file(self) -> Path:
        return self.data_dir / "coordinator-key.password"

    @property
    def ledger_file(self) -> Path:
        return self.data_dir / "ledger.json"

    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{self.sqlite_path}"
