"""the audit log: entries, upper hash tiles, the head, checkpoints, submitted local logs

Revision ID: 0007
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "audit_entries",
        sa.Column("idx", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("data", sa.LargeBinary, nullable=False),
        sa.Column("leaf", sa.LargeBinary, nullable=False),
        sa.Column("action", sa.String(64), nullable=False),
        sa.Column("subject_sha256", sa.String(64), nullable=False),
        sa.Column("target", sa.String(255), nullable=True),
        sa.Column("time", sa.BigInteger, nullable=False),
    )
    op.create_index("ix_audit_entries_subject", "audit_entries", ["subject_sha256", "idx"])
    op.create_index("ix_audit_entries_target", "audit_entries", ["target", "idx"])
    op.create_index("ix_audit_entries_action", "audit_entries", ["action", "idx"])
    op.create_table(
        "audit_nodes",
        sa.Column("level", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("idx", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("hash", sa.LargeBinary, nullable=False),
    )
    head = op.create_table(
        "audit_head",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("size", sa.BigInteger, nullable=False),
        sa.Column("edge", sa.LargeBinary, nullable=False),
        sa.Column("origin", sa.String(255), nullable=True),
        sa.Column("verifier_key", sa.Text, nullable=True),
    )
    # The one head row exists from the start: appenders lock it, never race to create it.
    op.bulk_insert(head, [{"id": 1, "size": 0, "edge": b"", "origin": None, "verifier_key": None}])
    op.create_table(
        "audit_checkpoints",
        sa.Column("size", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("root", sa.LargeBinary, nullable=False),
        sa.Column("note", sa.LargeBinary, nullable=False),
        sa.Column("created_at", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "audit_sources",
        sa.Column("origin", sa.String(255), primary_key=True),
        sa.Column("verifier_key", sa.Text, nullable=False),
        sa.Column("size", sa.BigInteger, nullable=False),
        sa.Column("root", sa.LargeBinary, nullable=False),
        sa.Column("updated_at", sa.BigInteger, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("audit_sources")
    op.drop_table("audit_checkpoints")
    op.drop_table("audit_head")
    op.drop_table("audit_nodes")
    op.drop_index("ix_audit_entries_action", "audit_entries")
    op.drop_index("ix_audit_entries_target", "audit_entries")
    op.drop_index("ix_audit_entries_subject", "audit_entries")
    op.drop_table("audit_entries")
