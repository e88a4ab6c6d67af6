"""Operator authentication: no token or a bad one is 401; each role's forbidden calls are 403."""

from __future__ import annotations

import pytest

from server.helpers_server import LiveServer

#: (method, path, body) of one call per permission of docs/server.md's table.
ZERO = "0" * 64
CALLS: dict[str, tuple[str, str, object]] = {
    "tokens:create": ("POST", "/api/v1/tokens", {"role": "auditor", "name": "x"}),
    "tokens:list": ("GET", "/api/v1/tokens", None),
    "tokens:revoke": ("DELETE", "/api/v1/tokens/999", None),
    "groups:create": ("POST", "/api/v1/enrollment-groups", {"name": "g"}),
    "groups:list": ("GET", "/api/v1/enrollment-groups", None),
    "groups:crl": ("PUT", "/api/v1/enrollment-groups/g/crl", {"crl_pem": "x"}),
    "artifacts:upload": ("PUT", f"/api/v1/artifacts/sha256/{ZERO}", None),
    "artifacts:show": ("GET", f"/api/v1/artifacts/sha256/{ZERO}", None),
    "releases:upload": ("POST", "/api/v1/releases", {"roots": [], "roles": {}}),
    "releases:list": ("GET", "/api/v1/releases", None),
    "deploy": ("POST", "/api/v1/deployments", {"target": "x", "devices": ["d"]}),
    "devices:list": ("GET", "/api/v1/devices", None),
    "devices:show": ("GET", "/api/v1/devices/VIN1", None),
    "devices:revoke": ("POST", "/api/v1/devices/VIN1/revoke", None),
    "audit:checkpoint": ("GET", "/api/v1/audit/checkpoint", None),
    "audit:sign": ("POST", "/api/v1/audit/checkpoint", None),
    "audit:tile": ("GET", "/api/v1/audit/tile/0/000.p/1", None),
    "audit:entries": ("GET", "/api/v1/audit/entries?start=0&end=1", None),
    "audit:search": ("GET", "/api/v1/audit/search?subject=x", None),
    "audit:inclusion": ("GET", "/api/v1/audit/proof/inclusion?index=0", None),
    "audit:consistency": ("GET", "/api/v1/audit/proof/consistency?old_size=0", None),
    "audit:submit": (
        "POST",
        "/api/v1/audit/submissions",
        {"checkpoint": "", "key": "", "entries": []},
    ),
}
ALL = {"admin", "release-manager", "operator", "auditor"}
#: which roles may make each call (docs/server.md's table)
ALLOWED = {
    "tokens:create": {"admin"},
    "tokens:list": {"admin"},
    "tokens:revoke": {"admin"},
    "groups:create": {"admin", "operator"},
    "groups:list": {"admin", "operator", "auditor"},
    "groups:crl": {"admin", "operator"},
    "artifacts:upload": {"admin", "release-manager"},
    "artifacts:show": {"admin", "release-manager", "auditor"},
    "releases:upload": {"admin", "release-manager"},
    "releases:list": {"admin", "release-manager", "auditor"},
    "deploy": {"admin", "operator"},
    "devices:list": ALL,
    "devices:show": ALL,
    "devices:revoke": {"admin", "operator"},
    "audit:checkpoint": {"admin", "auditor"},
    "audit:sign": {"admin", "auditor"},
    "audit:tile": {"admin", "auditor"},
    "audit:entries": {"admin", "auditor"},
    "audit:search": {"admin", "auditor"},
    "audit:inclusion": {"admin", "auditor"},
    "audit:consistency": {"admin", "auditor"},
    "audit:submit": {"admin", "release-manager"},
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
            if role in ALLOWED[call]:  # allowed: past the role check (the call itself may fail)
                assert answer.status_code not in (401, 403), (call, role, answer.text)
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
