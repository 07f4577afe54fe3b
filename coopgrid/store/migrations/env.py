"""Alembic environment: always given an engine by coopgrid.store.migrate."""

from alembic import context
from sqlalchemy import text

from coopgrid.store.schema import metadata

engine = context.config.attributes["engine"]
with engine.begin() as connection:
    if connection.dialect.name == "postgresql":
        # several coordinator processes starting at once on a fresh database: one migrates, the others wait
        # and then find it at head. A transaction-scoped advisory lock, since no table exists yet to lock;
        # it ends with this transaction, so no pooled session can keep it by mistake
        connection.execute(text("SELECT pg_advisory_xact_lock(hashtext('coopgrid-migrations'))"))
    context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
    context.run_migrations()
