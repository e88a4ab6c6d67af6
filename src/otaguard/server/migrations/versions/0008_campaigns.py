"""campaigns: the campaign, per-wave stage counters, health sums, per-device progress

Revision ID: 0008
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

_STAGES = (
    "offered",
    "downloading",
    "installed",
    "confirmed",
    "silent",
    "abandoned",
    "reverted",
    "failed_network",
    "failed_power",
    "failed_verification",
    "failed_incompatible",
    "failed_install",
    "failed_boot",
    "retries",
)


def upgrade() -> None:
    op.create_table(
        "campaigns",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("targets", sa.JSON, nullable=False),
        sa.Column("hardware_ids", sa.JSON, nullable=False),
        sa.Column("selector", sa.JSON, nullable=False),
        sa.Column("compatible", sa.JSON, nullable=False),
        sa.Column("policy", sa.JSON, nullable=False),
        sa.Column("state", sa.JSON, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("wave", sa.Integer, nullable=False),
        sa.Column("cohort_key", sa.String(64), nullable=False),
        sa.Column("population", sa.Integer, nullable=False),
        sa.Column("incompatible", sa.Integer, nullable=False),
        sa.Column("deployment_id", sa.Integer, sa.ForeignKey("deployments.id"), nullable=False),
        sa.Column("created_by", sa.String(64), nullable=False),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.Column("updated_at", sa.BigInteger, nullable=False),
    )
    op.create_index("ix_campaigns_status", "campaigns", ["status"])
    op.create_table(
        "campaign_waves",
        sa.Column("campaign_id", sa.String(64), sa.ForeignKey("campaigns.id"), primary_key=True),
        sa.Column("wave", sa.Integer, primary_key=True, autoincrement=False),
        *(sa.Column(name, sa.Integer, nullable=False) for name in _STAGES),
    )
    op.create_table(
        "campaign_health",
        sa.Column("campaign_id", sa.String(64), sa.ForeignKey("campaigns.id"), primary_key=True),
        sa.Column("wave", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("kind", sa.String(8), primary_key=True),
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("n", sa.BigInteger, nullable=False),
        sa.Column("m", sa.BigInteger, nullable=False),
        sa.Column("total", sa.Float, nullable=False),
        sa.Column("squares", sa.Float, nullable=False),
    )
    op.create_table(
        "campaign_devices",
        sa.Column("campaign_id", sa.String(64), sa.ForeignKey("campaigns.id"), primary_key=True),
        sa.Column("device_id", sa.String(64), sa.ForeignKey("devices.id"), primary_key=True),
        sa.Column("wave", sa.Integer, nullable=False),
        sa.Column("stage", sa.String(16), nullable=False),
        sa.Column("failure", sa.String(16), nullable=True),
        sa.Column("offered_at", sa.BigInteger, nullable=True),
        sa.Column("updated_at", sa.BigInteger, nullable=False),
        sa.Column("previous", sa.JSON, nullable=True),
        sa.Column("told_revert", sa.Boolean, nullable=False),
        sa.Column("control_reported", sa.Boolean, nullable=False),
        sa.Column("wave_reported", sa.Boolean, nullable=False),
    )
    op.create_index(
        "ix_campaign_devices_stage", "campaign_devices", ["campaign_id", "stage", "offered_at"]
    )
    op.create_index("ix_campaign_devices_device", "campaign_devices", ["device_id"])
    with op.batch_alter_table("device_events") as batch:
        batch.add_column(sa.Column("campaign", sa.String(64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("device_events") as batch:
        batch.drop_column("campaign")
    op.drop_index("ix_campaign_devices_device", "campaign_devices")
    op.drop_index("ix_campaign_devices_stage", "campaign_devices")
    op.drop_table("campaign_devices")
    op.drop_table("campaign_health")
    op.drop_table("campaign_waves")
    op.drop_index("ix_campaigns_status", "campaigns")
    op.drop_table("campaigns")
