"""A local log (an offline ceremony's evidence) submitted to the server's log.

The submission is verified whole (``audit.submission.verify_submission``: the
ceremony's checkpoint signed by the key given, every entry at its index, the
entries hashing to the signed root); the server then keeps, per ceremony origin,
the key and how far it has recorded (``audit_sources``), and records each new
entry as ``audit.submit`` (subject: the ceremony entry's subject) carrying the
ceremony's origin, index, signed checkpoint and the entry's inclusion path: each
is provably the ceremony's own, from the server's log alone.

Refused (422, naming the check): a checkpoint not signed by the key, entries that
do not make its tree, another key for an origin already submitted
(``audit-signature``), a history that does not extend what was submitted before
(``audit-consistency``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from otaguard.audit.entry import AuditEvent
from otaguard.audit.note import VerifierKey
from otaguard.audit.submission import (
    VerifiedSubmission,
    carried_details,
    check_extends,
    verify_submission,
)
from otaguard.crypto.keys import PublicKey
from otaguard.errors import AuditSignatureError
from otaguard.server.auth import Operator
from otaguard.server.db import Database
from otaguard.server.errors import ApiError
from otaguard.server.models import AuditSource
from otaguard.server.services import audit


@dataclass(frozen=True)
class Submitted:
    origin: str
    tree_size: int
    already: int
    recorded: int
    first_index: int | None


def submit(
    db: Database,
    *,
    note: bytes,
    key: VerifierKey | PublicKey,
    entries: Sequence[bytes],
    by: Operator,
    now: int,
) -> Submitted:
    checked = verify_submission(note, key, entries)
    try:
        return _record(db, checked, by, now)
    except IntegrityError:  # the same origin's first submission, concurrently
        raise ApiError(409, "conflict", "this log is being submitted concurrently") from None


def _record(db: Database, checked: VerifiedSubmission, by: Operator, now: int) -> Submitted:
    origin = checked.checkpoint.origin
    with db.writing() as session:
        row = session.scalars(
            select(AuditSource).where(AuditSource.origin == origin).with_for_update()
        ).one_or_none()
        already = 0
        if row is not None:
            if row.verifier_key != checked.key.encode():
                raise AuditSignatureError(
                    f"{origin!r} was submitted before under another key: one log, one key"
                )
            check_extends(checked, row.size, row.root)
            already = row.size
        else:
            row = AuditSource(origin=origin, verifier_key=checked.key.encode())
            session.add(row)
        row.size = checked.checkpoint.size
        row.root = checked.checkpoint.root
        row.updated_at = now
        session.flush()
        actor, time = audit.operator(by), audit.when(now)
        events = [
            AuditEvent(
                time,
                actor,
                "audit.submit",
                item.entry.event.subject,
                audit.by_operator(by, carried_details(checked, item)),
            )
            for item in checked.entries[already:]
        ]
        first = audit.record_all(session, events) if events else None
        return Submitted(origin, checked.checkpoint.size, already, len(events), first)
