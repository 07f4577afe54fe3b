"""The composition root: ``build(settings)`` wires every part of a coordinator.

Nothing is created at import time; tests build as many independent apps as
they like, each on its own data dir or database.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
from dataclasses import dataclass

from coopgrid.blobs import BlobStore, open_blob_store
from coopgrid.config import Settings
from coopgrid.coordinator.auth import Auth
from coopgrid.coordinator.dataset_urls import DatasetUrls, parse_prefixes
from coopgrid.coordinator.duties import Duties
from coopgrid.coordinator.epochs import Sealer
from coopgrid.coordinator.metrics import Metrics
from coopgrid.coordinator.scheduler import Scheduler
from coopgrid.coordinator.summary import Summarizer
from coopgrid.coordinator.validation import Validator
from coopgrid.coordinator.wakeup import Wakeup
from coopgrid.errors import ConfigError
from coopgrid.identity import Identity
from coopgrid.ledger import Ledger, open_ledger
from coopgrid.registry import ModelRegistry
from coopgrid.store import SqlStore, Store

log = logging.getLogger(__name__)


@dataclass
class App:
    settings: Settings
    store: Store
    blobs: BlobStore
    registry: ModelRegistry
    auth: Auth
    scheduler: Scheduler
    summarizer: Summarizer
    ledger: Ledger | None
    sealer: Sealer | None
    metrics: Metrics
    duties: Duties
    dataset_urls: DatasetUrls

    def close(self) -> None:
        if self.ledger is not None:
            self.ledger.close()
        self.store.close()


def coordinator_identity(settings: Settings) -> Identity:
    """The coordinator's own key (owner of the ledger contract), kept encrypted in the data dir.

    Its password is COOPGRID_COORDINATOR_KEY_PASSWORD or, when that is not set,
    a random one made on first use and kept beside it (mode 0600): the key file
    alone, copied off a backup, then opens nothing. A key that older versions
    kept under an empty password is encrypted afresh under that password."""
    password = settings.coordinator_key_password or _key_password(settings)
    key_file = settings.key_file
    if key_file.exists() and not settings.coordinator_key_password:
        try:
            legacy = Identity.load_or_create(key_file, "")
        except ConfigError:
            legacy = None  # not the empty password: the usual path below opens it, or says why not
        if legacy is not None:
            log.warning("encrypting the coordinator key %s, kept under an empty password until now", key_file)
            key_file.unlink()
            Identity.save(legacy, key_file, password)
    return Identity.load_or_create(key_file, password)


def _key_password(settings: Settings) -> str:
    path = settings.key_password_file
    if path.exists():
        return path.read_text().strip()
    secret = secrets.token_urlsafe(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(secret + "\n")
    return secret


def _private(settings: Settings) -> None:
    """The data dir and the SQLite files readable by their owner only."""
    settings.data_dir.chmod(0o700)
    for path in settings.data_dir.glob("*.sqlite*"):  # the store's and the embedded chain's, with WAL files
        path.chmod(0o600)


def open_coordinator_ledger(settings: Settings, identity: Identity, deploy: bool = True) -> Ledger:
    """The ledger the settings name, bound to its contract; the embedded chain deploys one on first use."""
    saved = json.loads(settings.ledger_file.read_text()) if settings.ledger_file.exists() else {}
    if saved and saved.get("kind") != settings.ledger:
        saved = {}
    ledger = open_ledger(
        settings.ledger,
        key=identity.private_key,
        contract_address=settings.contract or saved.get("contract"),
        data_dir=settings.data_dir,
        rpc_url=settings.rpc_url,
        chain_id=settings.chain_id,
    )
    if ledger.address is None:
        if settings.ledger != "embedded" and not deploy:
            ledger.close()
            raise ConfigError(
                "no ledger contract: deploy one with `coopgrid ledger deploy --rpc-url URL` "
                "and pass its address with --contract"
            )
        address = ledger.deploy()
        settings.ledger_file.write_text(
            json.dumps({"kind": settings.ledger, "contract": address, "chain_id": ledger.chain_id})
        )
        log.info("deployed the ledger contract at %s on chain %s", address, ledger.chain_id)
    return ledger


def _cached_stakes(ledger: Ledger, ttl: float = 10.0):
    """A worker's active stake from the chain, read at most every ``ttl`` seconds per worker;
    0 while the chain cannot be read (paid work waits rather than go to an unstaked worker)."""
    import time

    cache: dict[str, tuple[int, float]] = {}

    def stake_of(address: str) -> int:
        hit = cache.get(address)
        now = time.monotonic()
        if hit is None or now - hit[1] > ttl:
            try:
                hit = (ledger.stake_of(address).active, now)
            except Exception:  # noqa: BLE001 - a chain error must not fail leasing of free work
                log.warning("cannot read the stake of %s from the chain", address)
                return 0
            cache[address] = hit
        return hit[0]

    return stake_of


def build(settings: Settings) -> App:
    settings.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    store = SqlStore.open(settings.resolved_database_url())
    blobs = open_blob_store(settings.blob_store, settings.data_dir, settings.s3_endpoint_url)
    registry = ModelRegistry(store, blobs)
    summarizer = Summarizer(store, blobs)
    ledger = sealer = None
    if settings.ledger != "none":
        ledger = open_coordinator_ledger(settings, coordinator_identity(settings), deploy=False)
        sealer = Sealer(settings, store, blobs, ledger)
    _private(settings)
    metrics = Metrics()
    scheduler = Scheduler(
        settings, store, blobs, registry, summarizer, Validator(store, metrics=metrics), metrics=metrics
    )
    if ledger is not None:
        scheduler.stake_of = _cached_stakes(ledger)
    scheduler.wakeup = Wakeup(store.engine)  # on PostgreSQL, LISTEN/NOTIFY across coordinator processes
    app = App(
        settings=settings,
        store=store,
        blobs=blobs,
        registry=registry,
        auth=Auth(store, settings),
        scheduler=scheduler,
        summarizer=summarizer,
        ledger=ledger,
        sealer=sealer,
        metrics=metrics,
        duties=Duties(store, settings.duty_ttl),
        dataset_urls=DatasetUrls(parse_prefixes(settings.dataset_urls), settings.max_upload_bytes),
    )
    metrics.watch(app)
    return app
