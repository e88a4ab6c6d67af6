"""The server's tables, as typed SQLAlchemy 2 models.

Times the server records are Unix seconds (integers): the same on SQLite and
PostgreSQL, no time-zone conversion. The schema is made and upgraded only by the
Alembic migrations in ``migrations/versions`` (``migrate.py``); tests check the two
agree (``test_migrations.py``), and nothing outside the tests calls ``create_all``.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Float,
    ForeignKey,
    ForeignKeyConstraint,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

ID = 64  # device ids, names, serials, hardware ids
HEX = 64  # SHA-256 in hex
TARGET = 255  # TUF target paths (repo.layout.MAX_TARGET_PATH)


class Base(DeclarativeBase):
    pass


class ApiToken(Base):
    """An operator's bearer token: only its SHA-256 is kept (the token is shown once)."""

    __tablename__ = "api_tokens"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(ID))
    role: Mapped[str] = mapped_column(String(32))
    token_sha256: Mapped[str] = mapped_column(String(HEX), unique=True)
    created_at: Mapped[int] = mapped_column(BigInteger)
    revoked_at: Mapped[int | None] = mapped_column(BigInteger, default=None)


class EnrollmentGroup(Base):
    """Devices whose identity certificate chains to ``ca_pem`` are enrolled into this group."""

    __tablename__ = "enrollment_groups"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(ID), unique=True)
    ca_pem: Mapped[str] = mapped_column(Text)
    ca_sha256: Mapped[str] = mapped_column(String(HEX))
    hardware_id: Mapped[str] = mapped_column(String(ID))
    region: Mapped[str] = mapped_column(String(ID))
    tags: Mapped[dict[str, Any]] = mapped_column(JSON)
    crl_pem: Mapped[str | None] = mapped_column(Text, default=None)
    created_at: Mapped[int] = mapped_column(BigInteger)


class Device(Base):
    """An enrolled device: its identity key, state, assignment generation and last check-in."""

    __tablename__ = "devices"
    id: Mapped[str] = mapped_column(String(ID), primary_key=True)
    group_id: Mapped[int] = mapped_column(ForeignKey("enrollment_groups.id"), index=True)
    chain_pem: Mapped[str] = mapped_column(Text)
    public_key_der: Mapped[bytes] = mapped_column(LargeBinary)
    cert_sha256: Mapped[str] = mapped_column(String(HEX))
    cert_serial: Mapped[str] = mapped_column(String(48))
    enrolled_at: Mapped[int] = mapped_column(BigInteger)
    revoked_at: Mapped[int | None] = mapped_column(BigInteger, default=None)
    #: the director metadata's version: bumped by every assignment, never decreases
    generation: Mapped[int] = mapped_column(Integer, default=1)
    state_hash: Mapped[str | None] = mapped_column(String(HEX), default=None)
    state_at: Mapped[int | None] = mapped_column(BigInteger, default=None)
    last_seen: Mapped[int | None] = mapped_column(BigInteger, default=None)


class Ecu(Base):
    """One ECU of a device and the software it last reported."""

    __tablename__ = "ecus"
    device_id: Mapped[str] = mapped_column(ForeignKey("devices.id"), primary_key=True)
    serial: Mapped[str] = mapped_column(String(ID), primary_key=True)
    hardware_id: Mapped[str] = mapped_column(String(ID))
    target: Mapped[str | None] = mapped_column(String(TARGET), default=None)
    version: Mapped[str | None] = mapped_column(String(ID), default=None)
    security_counter: Mapped[int] = mapped_column(BigInteger, default=0)
    sha256: Mapped[str | None] = mapped_column(String(HEX), default=None)
    slot: Mapped[str | None] = mapped_column(String(1), default=None)
    boot: Mapped[str] = mapped_column(String(16), default="none")


class DeviceNonce(Base):
    """A nonce a device used in a state-changing request (replay refusal across processes)."""

    __tablename__ = "device_nonces"
    __table_args__ = (UniqueConstraint("device_id", "nonce", name="uq_device_nonce"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    device_id: Mapped[str] = mapped_column(ForeignKey("devices.id"))
    nonce: Mapped[str] = mapped_column(String(32))
    time: Mapped[int] = mapped_column(BigInteger, index=True)


class DeviceEvent(Base):
    """What a device reported (the start of telemetry); idempotent by (device, id)."""

    __tablename__ = "device_events"
    __table_args__ = (Index("ix_device_events_device_received", "device_id", "received_at"),)
    device_id: Mapped[str] = mapped_column(ForeignKey("devices.id"), primary_key=True)
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    time: Mapped[str] = mapped_column(String(40))
    kind: Mapped[str] = mapped_column(String(32))
    ecu: Mapped[str | None] = mapped_column(String(ID), default=None)
    target: Mapped[str | None] = mapped_column(String(TARGET), default=None)
    result: Mapped[str] = mapped_column(String(16))
    failure: Mapped[str | None] = mapped_column(String(16), default=None)
    check: Mapped[str | None] = mapped_column(String(ID), default=None)
    detail: Mapped[str | None] = mapped_column(String(1024), default=None)
    received_at: Mapped[int] = mapped_column(BigInteger)
    #: the campaign the event reports on (rollout telemetry), if any
    campaign: Mapped[str | None] = mapped_column(String(ID), default=None)


class Artifact(Base):
    """An uploaded image, stored as ``artifacts/sha256/<hex>`` in the data dir."""

    __tablename__ = "artifacts"
    sha256: Mapped[str] = mapped_column(String(HEX), primary_key=True)
    length: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[int] = mapped_column(BigInteger)


class RepositoryState(Base):
    """The published image repository's versions (one row, id 1): check-ins read it."""

    __tablename__ = "repository_state"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    root_version: Mapped[int] = mapped_column(Integer)
    snapshot_version: Mapped[int] = mapped_column(Integer)
    timestamp_version: Mapped[int] = mapped_column(Integer)
    timestamp_expires: Mapped[int] = mapped_column(BigInteger)
    updated_at: Mapped[int] = mapped_column(BigInteger)


class Deployment(Base):
    """An operator's decision to assign ``target`` (the seam campaigns will build on)."""

    __tablename__ = "deployments"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    target: Mapped[str] = mapped_column(String(TARGET))
    group_name: Mapped[str | None] = mapped_column(String(ID), default=None)
    created_by: Mapped[str] = mapped_column(String(ID))
    created_at: Mapped[int] = mapped_column(BigInteger)
    assignments: Mapped[int] = mapped_column(Integer, default=0)


class Assignment(Base):
    """What one ECU must have installed (the director's instruction)."""

    __tablename__ = "assignments"
    __table_args__ = (
        ForeignKeyConstraint(["device_id", "ecu_serial"], ["ecus.device_id", "ecus.serial"]),
    )
    device_id: Mapped[str] = mapped_column(String(ID), primary_key=True)
    ecu_serial: Mapped[str] = mapped_column(String(ID), primary_key=True)
    target: Mapped[str] = mapped_column(String(TARGET))
    deployment_id: Mapped[int] = mapped_column(ForeignKey("deployments.id"), index=True)
    assigned_at: Mapped[int] = mapped_column(BigInteger)


class Lease(Base):
    """Who runs a background job now, and until when (``lease.py``)."""

    __tablename__ = "leases"
    name: Mapped[str] = mapped_column(String(ID), primary_key=True)
    holder: Mapped[str] = mapped_column(String(128))
    expires_at: Mapped[float] = mapped_column(Float)
    taken_at: Mapped[float] = mapped_column(Float)


# -- the audit log (services/audit.py, docs/audit.md) ----------------------------------------


class AuditEntryRow(Base):
    """Entry ``idx`` of the audit log: its canonical bytes (the truth) and its leaf hash.

    ``action``, ``subject_sha256`` and ``target`` are copied out of ``data`` when the
    entry is appended, only to find entries; readers check ``data`` itself (and its proof).
    """

    __tablename__ = "audit_entries"
    __table_args__ = (
        Index("ix_audit_entries_subject", "subject_sha256", "idx"),
        Index("ix_audit_entries_target", "target", "idx"),
        Index("ix_audit_entries_action", "action", "idx"),
    )
    idx: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    data: Mapped[bytes] = mapped_column(LargeBinary)
    leaf: Mapped[bytes] = mapped_column(LargeBinary)
    action: Mapped[str] = mapped_column(String(64))
    subject_sha256: Mapped[str] = mapped_column(String(HEX))
    target: Mapped[str | None] = mapped_column(String(TARGET), default=None)
    time: Mapped[int] = mapped_column(BigInteger)


class AuditNode(Base):
    """The hash of complete subtree (``level``, ``idx``) for levels 8, 16, 24...: the
    hash tiles above level 0 (level 0 is ``audit_entries.leaf``)."""

    __tablename__ = "audit_nodes"
    level: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    idx: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    hash: Mapped[bytes] = mapped_column(LargeBinary)


class AuditHead(Base):
    """The log's head (one row, id 1): its size and right edge (``CompactRange``).

    Every append locks this row (PostgreSQL ``FOR UPDATE``; SQLite's writer lock),
    so entry indexes are handed out one transaction at a time.
    """

    __tablename__ = "audit_head"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    size: Mapped[int] = mapped_column(BigInteger)
    edge: Mapped[bytes] = mapped_column(LargeBinary)
    origin: Mapped[str | None] = mapped_column(String(255), default=None)
    #: the audit key's verifier key (signed-note), fixed with the origin at the first start
    verifier_key: Mapped[str | None] = mapped_column(Text, default=None)


class AuditCheckpoint(Base):
    """A signed checkpoint (C2SP signed note) of the tree of ``size`` entries."""

    __tablename__ = "audit_checkpoints"
    size: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    root: Mapped[bytes] = mapped_column(LargeBinary)
    note: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[int] = mapped_column(BigInteger)


class AuditSource(Base):
    """A local (ceremony) log whose entries were submitted: how far, under which key."""

    __tablename__ = "audit_sources"
    origin: Mapped[str] = mapped_column(String(255), primary_key=True)
    verifier_key: Mapped[str] = mapped_column(Text)
    size: Mapped[int] = mapped_column(BigInteger)
    root: Mapped[bytes] = mapped_column(LargeBinary)
    updated_at: Mapped[int] = mapped_column(BigInteger)


# -- campaigns (services/campaigns.py, docs/rollout.md "How the server runs it") ---------------


class Campaign(Base):
    """A staged rollout: release targets, a selector, a policy, and the evaluator's state.

    ``state`` is :func:`otaguard.rollout.persist.state_to_dict` (the truth about status,
    wave and stamps); ``status`` and ``wave`` are copied out of it to find campaigns by
    status cheaply. ``cohort_key`` keys the device hash that fixes each device's wave.
    """

    __tablename__ = "campaigns"
    __table_args__ = (Index("ix_campaigns_status", "status"),)
    id: Mapped[str] = mapped_column(String(ID), primary_key=True)
    name: Mapped[str] = mapped_column(String(ID))
    targets: Mapped[list[str]] = mapped_column(JSON)
    #: the hardware ids the targets are for (signed in the release; push topics name them)
    hardware_ids: Mapped[list[str]] = mapped_column(JSON)
    selector: Mapped[dict[str, Any]] = mapped_column(JSON)
    #: ECU hardware id or serial -> the versions the release may be installed over
    compatible: Mapped[dict[str, Any]] = mapped_column(JSON)
    policy: Mapped[dict[str, Any]] = mapped_column(JSON)
    state: Mapped[dict[str, Any]] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(16))
    wave: Mapped[int] = mapped_column(Integer, default=0)
    cohort_key: Mapped[str] = mapped_column(String(HEX))
    population: Mapped[int] = mapped_column(Integer)
    #: devices of the selector refused because their ECU versions are not declared compatible
    incompatible: Mapped[int] = mapped_column(Integer, default=0)
    deployment_id: Mapped[int] = mapped_column(ForeignKey("deployments.id"))
    created_by: Mapped[str] = mapped_column(String(ID))
    created_at: Mapped[int] = mapped_column(BigInteger)
    updated_at: Mapped[int] = mapped_column(BigInteger)


class CampaignWave(Base):
    """One wave's devices per stage, moved incrementally (``SET x = x + 1``) per report."""

    __tablename__ = "campaign_waves"
    campaign_id: Mapped[str] = mapped_column(ForeignKey("campaigns.id"), primary_key=True)
    wave: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    offered: Mapped[int] = mapped_column(Integer, default=0)
    downloading: Mapped[int] = mapped_column(Integer, default=0)
    installed: Mapped[int] = mapped_column(Integer, default=0)
    confirmed: Mapped[int] = mapped_column(Integer, default=0)
    silent: Mapped[int] = mapped_column(Integer, default=0)
    abandoned: Mapped[int] = mapped_column(Integer, default=0)
    reverted: Mapped[int] = mapped_column(Integer, default=0)
    failed_network: Mapped[int] = mapped_column(Integer, default=0)
    failed_power: Mapped[int] = mapped_column(Integer, default=0)
    failed_verification: Mapped[int] = mapped_column(Integer, default=0)
    failed_incompatible: Mapped[int] = mapped_column(Integer, default=0)
    failed_install: Mapped[int] = mapped_column(Integer, default=0)
    failed_boot: Mapped[int] = mapped_column(Integer, default=0)
    retries: Mapped[int] = mapped_column(Integer, default=0)


class CampaignHealth(Base):
    """Health sums of one wave (``wave`` = -1: the control group), one row per measure.

    ``kind``: ``total`` (n = devices, total = exposure seconds), ``count`` (n = events),
    ``flag`` (n = flagged, m = reported) or ``metric`` (n, total, squares), each added to
    incrementally, so a tick reads a few rows whatever the fleet size.
    """

    __tablename__ = "campaign_health"
    campaign_id: Mapped[str] = mapped_column(ForeignKey("campaigns.id"), primary_key=True)
    wave: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    kind: Mapped[str] = mapped_column(String(8), primary_key=True)
    name: Mapped[str] = mapped_column(String(ID), primary_key=True)
    n: Mapped[int] = mapped_column(BigInteger, default=0)
    m: Mapped[int] = mapped_column(BigInteger, default=0)
    total: Mapped[float] = mapped_column(Float, default=0.0)
    squares: Mapped[float] = mapped_column(Float, default=0.0)


class CampaignDevice(Base):
    """A device a campaign offered its release to, refused as incompatible, or heard from.

    Made only when that happens (never one row per fleet device up front). ``previous``
    maps each ECU the campaign assigned to what it was assigned before (target and
    deployment, or null), so a halt can give the device its old assignment back.
    """

    __tablename__ = "campaign_devices"
    __table_args__ = (
        Index("ix_campaign_devices_stage", "campaign_id", "stage", "offered_at"),
        Index("ix_campaign_devices_device", "device_id"),
    )
    campaign_id: Mapped[str] = mapped_column(ForeignKey("campaigns.id"), primary_key=True)
    device_id: Mapped[str] = mapped_column(ForeignKey("devices.id"), primary_key=True)
    wave: Mapped[int] = mapped_column(Integer)
    #: a rollout Stage value, "incompatible" (never offered) or "control" (health only)
    stage: Mapped[str] = mapped_column(String(16))
    failure: Mapped[str | None] = mapped_column(String(16), default=None)
    offered_at: Mapped[int | None] = mapped_column(BigInteger, default=None)
    updated_at: Mapped[int] = mapped_column(BigInteger)
    previous: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    told_revert: Mapped[bool] = mapped_column(default=False)
    control_reported: Mapped[bool] = mapped_column(default=False)
    wave_reported: Mapped[bool] = mapped_column(default=False)
