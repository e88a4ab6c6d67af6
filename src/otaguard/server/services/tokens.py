"""Operator tokens: create (shown once), list, revoke, look up by hash.

Creating and revoking a token are audited (``token.create``, ``token.revoke``) in
the transaction that does it; the entry names the token, never its secret.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select

from otaguard.server.auth import Operator, Role, new_token, token_hash
from otaguard.server.db import Database
from otaguard.server.errors import ApiError
from otaguard.server.models import ApiToken
from otaguard.server.services import audit


@dataclass(frozen=True)
class TokenInfo:
    id: int
    name: str
    role: str
    created_at: int
    revoked_at: int | None


def _info(row: ApiToken) -> TokenInfo:
    return TokenInfo(row.id, row.name, row.role, row.created_at, row.revoked_at)


class Tokens:
    def __init__(self, db: Database) -> None:
        self.db = db

    def lookup(self, digest: str) -> Operator | None:
        with self.db.reading() as session:
            row = session.scalars(
                select(ApiToken).where(ApiToken.token_sha256 == digest)
            ).one_or_none()
            if row is None or row.revoked_at is not None:
                return None
            return Operator(row.id, row.name, Role(row.role))

    def create(
        self, role: Role, name: str, *, now: int, by: Operator | None, token: str | None = None
    ) -> tuple[TokenInfo, str]:
        """A new token and its secret (the only time the secret exists outside its owner)."""
        token = token or new_token()
        with self.db.writing() as session:
            row = ApiToken(
                name=name, role=role.value, token_sha256=token_hash(token), created_at=now
            )
            session.add(row)
            session.flush()
            actor, details = audit.actor_and_details(by, {"token_id": row.id, "role": role.value})
            audit.record(
                session, actor=actor, action="token.create", subject=name, details=details, now=now
            )
            return _info(row), token

    def list(self) -> list[TokenInfo]:
        with self.db.reading() as session:
            return [_info(r) for r in session.scalars(select(ApiToken).order_by(ApiToken.id))]

    def revoke(self, token_id: int, *, now: int, by: Operator) -> TokenInfo:
        with self.db.writing() as session:
            row = session.get(ApiToken, token_id)
            if row is None:
                raise ApiError(404, "not-found", f"no token {token_id}")
            if row.revoked_at is None:
                row.revoked_at = now
                details = audit.by_operator(by, {"token_id": row.id, "role": row.role})
                audit.record(
                    session,
                    actor=audit.operator(by),
                    action="token.revoke",
                    subject=row.name,
                    details=details,
                    now=now,
                )
            return _info(row)

    def has_admin(self) -> bool:
        with self.db.reading() as session:
            found = session.scalars(
                select(ApiToken.id).where(ApiToken.role == Role.ADMIN.value).limit(1)
            ).first()
            return found is not None
