"""Operator authentication: no token or a bad one is 401; each role's forbidden calls are 403."""

from __future__ import annotations

import pytest

from server.helpers_server import LiveServer

#: (method, path, body) of calls one permission guards: enough to hit each router's checks.
CALLS: dict[str, tuple[str, str, object]] = {
    "tokens:manage": ("POST", "/api/v1/tokens", {"role": "auditor", "name": "x"}),
    "tokens:list": ("GET", "/api/v1/tokens", None),
}
#: which roles may make each call (docs/server.md's table)
ALLOWED = {
    "tokens:manage": {"admin"},
    "tokens:list": {"admin"},
}
ROLES = ("admin", "release-manager", "operator", "auditor")


@pytest.mark.parametrize("call", sorted(CALLS))
def test_no_token_and_bad_tokens_are_401(live: LiveServer, call: str) -> None:
    method, path, body = CALLS[call]
    for headers in ({}, {"Authorization": "Bearer nope"}, {"Authorization": "Basic eDp5"}):
        answer = live.client().request(method, path, json=body, headers=headers)
        assert answer.status_code == 401, (headers, answer.text)
        assert answer.json()["error"] == "unauthenticated"


def test_each_roles_forbidden_calls_are_403(live: LiveServer) -> None:
    tokens = {role: live.token(role, role) for role in ROLES}
    for call, (method, path, body) in CALLS.items():
        for role in ROLES:
            answer = live.client(tokens[role]).request(method, path, json=body)
            if role in ALLOWED[call]:
                assert answer.status_code < 400, (call, role, answer.text)
            else:
                assert answer.status_code == 403, (call, role, answer.text)
                assert answer.json()["error"] == "forbidden"


def test_a_revoked_token_is_401(live: LiveServer) -> None:
    admin = live.admin()
    made = admin.post("/api/v1/tokens", json={"role": "operator", "name": "op"}).json()
    assert live.client(made["token"]).get("/api/v1/devices").status_code != 401
    assert admin.delete(f"/api/v1/tokens/{made['id']}").json()["revoked_at"] is not None
    assert live.client(made["token"]).get("/api/v1/devices").status_code == 401


def test_tokens_are_stored_hashed(live: LiveServer) -> None:
    made = live.admin().post("/api/v1/tokens", json={"role": "auditor", "name": "a"}).json()
    ctx = live.app_state.server
    from sqlalchemy import select

    from otaguard.server.models import ApiToken

    with ctx.db.reading() as session:
        stored = list(session.scalars(select(ApiToken.token_sha256)))
    assert made["token"] not in stored
    import hashlib

    assert hashlib.sha256(made["token"].encode()).hexdigest() in stored
