"""The composition root: ``build(settings)`` wires every part of a coordinator.

Nothing is created at import time; tests build as many independent apps as
they like, each on its own data dir or database.
"""

from __future__ import annotations

from dataclasses import dataclass

from coopgrid.blobs import BlobStore
from coopgrid.config import Settings
from coopgrid.coordinator.auth import Auth
from coopgrid.coordinator.scheduler import Scheduler
from coopgrid.coordinator.summary import Summarizer
from coopgrid.registry import ModelRegistry
from coopgrid.store import SqlStore, Store


@dataclass
class App:
    settings: Settings
    store: Store
    blobs: BlobStore
    registry: ModelRegistry
    auth: Auth
    scheduler: Scheduler
    summarizer: Summarizer

    def close(self) -> None:
        self.store.close()


def build(settings: Settings) -> App:
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    store = SqlStore.open(settings.resolved_database_url())
    blobs = BlobStore(settings.blob_dir)
    registry = ModelRegistry(store, blobs)
    summarizer = Summarizer(store, blobs)
    return App(
        settings=settings,
        store=store,
        blobs=blobs,
        registry=registry,
        auth=Auth(store, settings),
        scheduler=Scheduler(settings, store, blobs, registry, summarizer),
        summarizer=summarizer,
    )
