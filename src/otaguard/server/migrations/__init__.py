"""Alembic migrations of the server's schema (run by ``otaguard.server.migrate``)."""
