"""Alembic environment: run with a connection handed in by server.migrate (no alembic.ini)."""

from __future__ import annotations

from alembic import context

from server.models import Base

target_metadata = Base.metadata
connection = context.config.attributes.get("connection")

if connection is None:
    raise RuntimeError("run migrations through `jit-ssh db upgrade` (server.migrate.upgrade)")

context.configure(
    connection=connection,
    target_metadata=target_metadata,
    render_as_batch=connection.dialect.name == "sqlite",
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
