"""Operator authentication: bearer tokens with roles, checked by router dependencies.

A token is 32 random bytes (URL-safe base64), shown once when created; the
database keeps its SHA-256, so a copy of the database does not hold usable
tokens. Which role may do what is the table :data:`PERMISSIONS` (docs/server.md);
a route declares the permission it needs with ``Depends(allow("..."))`` and never
checks a role by hand.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from enum import StrEnum
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from otaguard.server.errors import ApiError


class Role(StrEnum):
    ADMIN = "admin"
    RELEASE_MANAGER = "release-manager"
    OPERATOR = "operator"
    AUDITOR = "auditor"


_ALL = frozenset(Role)
#: permission -> roles that hold it (docs/server.md, "Operator API").
PERMISSIONS: dict[str, frozenset[Role]] = {
    "tokens:manage": frozenset({Role.ADMIN}),
    "groups:write": frozenset({Role.ADMIN, Role.OPERATOR}),
    "groups:read": frozenset({Role.ADMIN, Role.OPERATOR, Role.AUDITOR}),
    "releases:write": frozenset({Role.ADMIN, Role.RELEASE_MANAGER}),
    "releases:read": frozenset({Role.ADMIN, Role.RELEASE_MANAGER, Role.AUDITOR}),
    "deploy": frozenset({Role.ADMIN, Role.OPERATOR}),
    "devices:read": _ALL,
    "devices:revoke": frozenset({Role.ADMIN, Role.OPERATOR}),
    "audit:read": frozenset({Role.ADMIN, Role.AUDITOR}),
    "audit:submit": frozenset({Role.ADMIN, Role.RELEASE_MANAGER}),
    # campaigns: a release manager proposes, an operator (another person) approves and runs
    "campaigns:create": frozenset({Role.ADMIN, Role.RELEASE_MANAGER}),
    "campaigns:approve": frozenset({Role.ADMIN, Role.OPERATOR}),
    "campaigns:run": frozenset({Role.ADMIN, Role.OPERATOR}),
    "campaigns:read": _ALL,
}
TOKEN_BYTES = 32
MAX_TOKEN_CHARS = 128


def new_token() -> str:
    return secrets.token_urlsafe(TOKEN_BYTES)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class Operator:
    """Who made an operator request."""

    token_id: int
    name: str
    role: Role


_bearer = HTTPBearer(
    auto_error=False, description="an operator token (otaguard fleet token create)"
)


def _unauthenticated(detail: str) -> ApiError:
    return ApiError(401, "unauthenticated", detail, {"WWW-Authenticate": "Bearer"})


def operator(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Operator:
    """The operator a bearer token names (401 without a valid, unrevoked token)."""
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise _unauthenticated("an operator token is required (Authorization: Bearer ...)")
    token = credentials.credentials
    if not token or len(token) > MAX_TOKEN_CHARS:
        raise _unauthenticated("unknown or revoked token")
    found: Operator | None = request.app.state.server.tokens.lookup(token_hash(token))
    if found is None:
        raise _unauthenticated("unknown or revoked token")
    return found


def allow(permission: str) -> Any:
    """A dependency that admits only the roles holding ``permission`` (else 403)."""
    roles = PERMISSIONS[permission]

    def check(who: Annotated[Operator, Depends(operator)]) -> Operator:
        if who.role not in roles:
            raise ApiError(403, "forbidden", f"role {who.role} may not do {permission}")
        return who

    return Depends(check)
