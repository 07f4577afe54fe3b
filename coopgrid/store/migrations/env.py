"""Alembic environment: always given an engine by coopgrid.store.migrate."""

from alembic import context

from coopgrid.store.schema import metadata

engine = context.config.attributes["engine"]
with engine.begin() as connection:
    context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
    context.run_migrations()
