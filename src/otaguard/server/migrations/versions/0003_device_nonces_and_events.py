"""device request nonces (replay refusal) and device events

Revision ID: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "device_nonces",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("device_id", sa.String(64), sa.ForeignKey("devices.id"), nullable=False),
        sa.Column("nonce", sa.String(32), nullable=False),
        sa.Column("time", sa.BigInteger, nullable=False),
        sa.UniqueConstraint("device_id", "nonce", name="uq_device_nonce"),
    )
    op.create_index("ix_device_nonces_time", "device_nonces", ["time"])
    op.create_table(
        "device_events",
        sa.Column("device_id", sa.String(64), sa.ForeignKey("devices.id"), primary_key=True),
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("time", sa.String(40), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("ecu", sa.String(64), nullable=True),
        sa.Column("target", sa.String(255), nullable=True),
        sa.Column("result", sa.String(16), nullable=False),
        sa.Column("failure", sa.String(16), nullable=True),
        sa.Column("check", sa.String(64), nullable=True),
        sa.Column("detail", sa.String(1024), nullable=True),
        sa.Column("received_at", sa.BigInteger, nullable=False),
    )
    op.create_index(
        "ix_device_events_device_received", "device_events", ["device_id", "received_at"]
    )


def downgrade() -> None:
    op.drop_index("ix_device_events_device_received", "device_events")
    op.drop_table("device_events")
    op.drop_index("ix_device_nonces_time", "device_nonces")
    op.drop_table("device_nonces")
