"""The OpenAPI description is generated from the code, and the server keeps to it.

schemathesis generates requests for every operation of ``/openapi.json`` against
a real uvicorn: operator calls with a valid admin token, device calls unsigned
(they must be refused with the documented 401). No answer may be a 500 or a
status the description does not list, and every documented body must match its
schema.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    response_schema_conformance,
    status_code_conformance,
)

from server.conftest import _schema
from server.helpers_server import LiveServer, start_live


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def api_server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveServer]:
    tmp = tmp_path_factory.mktemp("openapi")
    if request.param == "sqlite":
        server = start_live(tmp / "srv", f"sqlite+pysqlite:///{tmp / 'server.db'}")
        yield server
        server.stop()
        return
    for url in _schema(request.getfixturevalue("pg_database")):
        server = start_live(tmp / "srv", url)
        yield server
        server.stop()


@pytest.fixture(scope="module")
def api_schema(api_server: LiveServer) -> schemathesis.BaseSchema:
    return schemathesis.openapi.from_url(f"{api_server.url}/openapi.json")


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=True,
)
def test_api_keeps_to_its_description(case: schemathesis.Case, api_server: LiveServer) -> None:  # type: ignore[type-arg]
    headers = {"Authorization": f"Bearer {api_server.admin_token}"}
    if case.path.startswith("/api/v1/tokens") and case.method == "DELETE":
        headers = {}  # revoking the admin's own token would blind the rest of the run
    case.call_and_validate(
        base_url=api_server.url,
        headers=headers,
        checks=[not_a_server_error, status_code_conformance, response_schema_conformance],
    )


def test_openapi_lists_every_route(api_server: LiveServer) -> None:
    paths = set(api_server.client().get("/openapi.json").json()["paths"])
    for path in (
        "/api/v1/device/enroll",
        "/api/v1/device/state",
        "/api/v1/device/update",
        "/api/v1/device/events",
        "/api/v1/tokens",
        "/api/v1/enrollment-groups",
        "/api/v1/artifacts/sha256/{sha256}",
        "/api/v1/releases",
        "/api/v1/deployments",
        "/api/v1/devices",
        "/api/v1/devices/{device_id}",
        "/api/v1/devices/{device_id}/revoke",
        "/repo/metadata/{name}",
        "/repo/targets/{name}",
        "/api/v1/audit/checkpoint",
        "/api/v1/audit/tile/{path}",
        "/api/v1/audit/entries",
        "/api/v1/audit/search",
        "/api/v1/audit/proof/inclusion",
        "/api/v1/audit/proof/consistency",
        "/api/v1/audit/submissions",
    ):
        assert path in paths, path
