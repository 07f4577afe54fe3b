"""Durable state: the :class:`Store` interface and its SQL implementation."""

from coopgrid.store.base import Store
from coopgrid.store.sql import SqlStore

__all__ = ["Store", "SqlStore"]
