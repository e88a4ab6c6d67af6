"""enrolment groups, devices and their ECUs

Revision ID: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "enrollment_groups",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(64), nullable=False, unique=True),
        sa.Column("ca_pem", sa.Text, nullable=False),
        sa.Column("ca_sha256", sa.String(64), nullable=False),
        sa.Column("hardware_id", sa.String(64), nullable=False),
        sa.Column("region", sa.String(64), nullable=False),
        sa.Column("tags", sa.JSON, nullable=False),
        sa.Column("crl_pem", sa.Text, nullable=True),
        sa.Column("created_at", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "devices",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("group_id", sa.Integer, sa.ForeignKey("enrollment_groups.id"), nullable=False),
        sa.Column("chain_pem", sa.Text, nullable=False),
        sa.Column("public_key_der", sa.LargeBinary, nullable=False),
        sa.Column("cert_sha256", sa.String(64), nullable=False),
        sa.Column("cert_serial", sa.String(48), nullable=False),
        sa.Column("enrolled_at", sa.BigInteger, nullable=False),
        sa.Column("revoked_at", sa.BigInteger, nullable=True),
        sa.Column("generation", sa.Integer, nullable=False),
        sa.Column("state_hash", sa.String(64), nullable=True),
        sa.Column("state_at", sa.BigInteger, nullable=True),
        sa.Column("last_seen", sa.BigInteger, nullable=True),
    )
    op.create_index("ix_devices_group_id", "devices", ["group_id"])
    op.create_table(
        "ecus",
        sa.Column("device_id", sa.String(64), sa.ForeignKey("devices.id"), primary_key=True),
        sa.Column("serial", sa.String(64), primary_key=True),
        sa.Column("hardware_id", sa.String(64), nullable=False),
        sa.Column("target", sa.String(255), nullable=True),
        sa.Column("version", sa.String(64), nullable=True),
        sa.Column("security_counter", sa.BigInteger, nullable=False),
        sa.Column("sha256", sa.String(64), nullable=True),
        sa.Column("slot", sa.String(1), nullable=True),
        sa.Column("boot", sa.String(16), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("ecus")
    op.drop_index("ix_devices_group_id", "devices")
    op.drop_table("devices")
    op.drop_table("enrollment_groups")
