"""The audit log in the server's database: one append, in the transaction of the action it records.

Every security-relevant action calls :func:`record` (or :func:`record_all`) with the
session of its own transaction, as the **last** statement before the commit:

* the entry commits with the action or not at all: an action is never acknowledged
  without its entry, and an entry never exists for an action that was rolled back;
* appends are serialised by the log's head row (``audit_head``, id 1): PostgreSQL
  locks it ``FOR UPDATE`` until the commit; on SQLite the writer transaction
  (``BEGIN IMMEDIATE``) already holds the database's one write lock. The index of
  an entry is its position, so two transactions must never read the same head;
* the head is locked last (after the action's own rows), so two transactions never
  wait for each other's locks in opposite orders;
* the work per append is O(log n): the head keeps the tree's right edge
  (:class:`~otaguard.audit.merkle.CompactRange`); each entry row keeps its leaf hash
  (the level-0 hash tiles) and every complete node of level 8, 16, 24... (the upper
  hash tiles) is stored as it appears.

An event the log cannot hold (an unknown action, a float, more than 64 KiB) raises
:class:`~otaguard.errors.AuditEntryError`: a bug of the caller, which rolls the
action back with it. Actions and what their details carry: docs/server.md, "Audit log".
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.orm import Session

from otaguard.audit.entry import Actor, AuditEvent, encode_entry
from otaguard.audit.merkle import HASH_SIZE, CompactRange, leaf_hash
from otaguard.audit.tiles import TILE_HEIGHT
from otaguard.server.auth import Operator
from otaguard.server.models import TARGET, AuditEntryRow, AuditHead, AuditNode

HEAD_ID = 1
#: Who acts when nobody asked: the background jobs, the first start.
SYSTEM = Actor("system", "server")


def operator(who: Operator) -> Actor:
    """An operator token: its name and role (its id is in the details)."""
    return Actor("operator", who.name, who.role.value)


def by_operator(who: Operator, details: Mapping[str, Any]) -> dict[str, Any]:
    """Details of an action made with a token: which token (``operator_token``), then what."""
    return {"operator_token": who.token_id, **details}


def actor_and_details(
    who: Operator | None, details: Mapping[str, Any]
) -> tuple[Actor, dict[str, Any]]:
    """An operator's action, or (None) the server's own."""
    if who is None:
        return SYSTEM, dict(details)
    return operator(who), by_operator(who, details)


def device(device_id: str) -> Actor:
    return Actor("device", device_id)


def when(now: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(now, dt.UTC)


def subject_key(subject: str) -> str:
    """What ``audit_entries.subject_sha256`` holds: subjects may be 1,024 characters long."""
    return hashlib.sha256(subject.encode("utf-8")).hexdigest()


def split_edge(edge: bytes) -> tuple[bytes, ...]:
    return tuple(edge[i : i + HASH_SIZE] for i in range(0, len(edge), HASH_SIZE))


def head_tree(head: AuditHead) -> CompactRange:
    return CompactRange(head.size, split_edge(head.edge))


def _target_of(details: Mapping[str, Any]) -> str | None:
    target = details.get("target")
    return target if isinstance(target, str) and 0 < len(target) <= TARGET else None


def record_all(session: Session, events: Sequence[AuditEvent]) -> int:
    """Append ``events`` in order in the caller's transaction; the index of the first.

    Call it last in the transaction (after the action's own writes): it holds the
    log's head until the commit.
    """
    if not events:
        raise ValueError("nothing to record")
    head = session.scalars(select(AuditHead).where(AuditHead.id == HEAD_ID).with_for_update()).one()
    tree = head_tree(head)
    rows = []
    leaves = []
    for offset, event in enumerate(events):
        data = encode_entry(tree.size + offset, event)
        leaf = leaf_hash(data)
        leaves.append(leaf)
        rows.append(
            {
                "idx": tree.size + offset,
                "data": data,
                "leaf": leaf,
                "action": event.action,
                "subject_sha256": subject_key(event.subject),
                "target": _target_of(event.details),
                "time": int(event.time.timestamp()),
            }
        )
    grown, nodes = tree.append(leaves)
    upper = [
        {"level": node.level, "idx": node.index, "hash": node.hash}
        for node in nodes
        if node.level and not node.level % TILE_HEIGHT
    ]
    session.execute(insert(AuditEntryRow), rows)
    if upper:
        session.execute(insert(AuditNode), upper)
    head.size = grown.size
    head.edge = b"".join(grown.hashes)
    session.flush()
    return tree.size


def record(
    session: Session,
    *,
    actor: Actor,
    action: str,
    subject: str,
    details: Mapping[str, Any] | None = None,
    now: float,
) -> int:
    """Append one event (``action`` from ``audit.entry.ACTIONS``) in the caller's
    transaction, last; its index. ``now``: Unix time of the action."""
    return record_all(session, [AuditEvent(when(now), actor, action, subject, dict(details or {}))])


def name_log(session: Session, origin: str, verifier_key: str) -> tuple[str, str]:
    """Name the log and fix its key once (the first start); the name and key it has."""
    head = session.scalars(select(AuditHead).where(AuditHead.id == HEAD_ID).with_for_update()).one()
    if head.origin is None:
        head.origin = origin
    if head.verifier_key is None:
        head.verifier_key = verifier_key
    return head.origin, head.verifier_key


def record_device(
    session: Session, device_id: str, action: str, details: Mapping[str, Any], *, now: float
) -> int:
    """What a device did (or was refused), about itself: actor and subject are its id."""
    return record(
        session, actor=device(device_id), action=action, subject=device_id, details=details, now=now
    )
