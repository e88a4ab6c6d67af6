"""deployments and per-ECU assignments

Revision ID: 0005
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "deployments",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("target", sa.String(255), nullable=False),
        sa.Column("group_name", sa.String(64), nullable=True),
        sa.Column("created_by", sa.String(64), nullable=False),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.Column("assignments", sa.Integer, nullable=False),
    )
    op.create_table(
        "assignments",
        sa.Column("device_id", sa.String(64), primary_key=True),
        sa.Column("ecu_serial", sa.String(64), primary_key=True),
        sa.Column("target", sa.String(255), nullable=False),
        sa.Column("deployment_id", sa.Integer, sa.ForeignKey("deployments.id"), nullable=False),
        sa.Column("assigned_at", sa.BigInteger, nullable=False),
        sa.ForeignKeyConstraint(["device_id", "ecu_serial"], ["ecus.device_id", "ecus.serial"]),
    )
    op.create_index("ix_assignments_deployment_id", "assignments", ["deployment_id"])


def downgrade() -> None:
    op.drop_index("ix_assignments_deployment_id", "assignments")
    op.drop_table("assignments")
    op.drop_table("deployments")
