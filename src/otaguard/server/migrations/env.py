"""Alembic's entry point: always given a live connection by ``otaguard.server.migrate``."""

from __future__ import annotations

from alembic import context

from otaguard.server.models import Base

connection = context.config.attributes.get("connection")
if connection is None:  # pragma: no cover - only migrate.py runs migrations
    raise RuntimeError("run migrations through otaguard.server.migrate, not the alembic command")
context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    render_as_batch=connection.dialect.name == "sqlite",
)
with context.begin_transaction():
    context.run_migrations()
