"""A typed client of the operator REST API (what ``otaguard fleet`` calls).

Every answer other than success raises :class:`FleetRefused` (401, 403, 422: the
server refused on security or policy grounds, exit 1) or :class:`FleetError`
(anything else: usage, connection, I/O, exit 2). The token is sent as a bearer
token and never logged.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx

from otaguard.errors import RejectedError, UsageError

REFUSED = (401, 403, 422)
CHUNK = 1 << 20
TIMEOUT = httpx.Timeout(60.0, connect=10.0)


class FleetRefused(RejectedError):
    """The server refused the request (authentication, role, or a refused upload)."""

    check = "refused"

    def __init__(self, status: int, error: str, detail: str) -> None:
        super().__init__(f"the server refused ({status} {error}): {detail}")
        self.status = status
        self.check = error


class FleetError(UsageError):
    """The request could not be made or the server failed it (not a refusal)."""


def _segment(value: str) -> str:
    """One path segment, whatever the caller passed (``../tokens`` must not climb)."""
    return quote(value, safe="")


def _file_chunks(path: Path) -> Iterator[bytes]:
    with open(path, "rb") as handle:
        while chunk := handle.read(CHUNK):
            yield chunk


class FleetClient:
    def __init__(self, base_url: str, token: str, *, transport: httpx.BaseTransport | None = None):
        if not base_url.startswith(("http://", "https://")):
            raise UsageError(f"--server {base_url[:80]!r}: give an http:// or https:// URL")
        self._http = httpx.Client(
            base_url=base_url.rstrip("/"),
            headers={"Authorization": f"Bearer {token}"},
            timeout=TIMEOUT,
            transport=transport,
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> FleetClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def _call(self, method: str, path: str, **kw: Any) -> httpx.Response:
        try:
            answer = self._http.request(method, path, **kw)
        except httpx.HTTPError as exc:
            raise FleetError(f"cannot reach the server: {exc}") from exc
        if answer.status_code < 400:
            return answer
        try:
            body = answer.json()
            error, detail = str(body.get("error", "error")), str(body.get("detail", ""))
        except (ValueError, AttributeError):
            error, detail = "error", answer.text[:200]
        if answer.status_code in REFUSED:
            raise FleetRefused(answer.status_code, error, detail)
        raise FleetError(f"the server answered {answer.status_code} {error}: {detail}")

    def _json(self, method: str, path: str, **kw: Any) -> Any:
        return self._call(method, path, **kw).json()

    # -- tokens, groups ------------------------------------------------------------------

    def create_token(self, role: str, name: str) -> dict[str, Any]:
        return dict(self._json("POST", "/api/v1/tokens", json={"role": role, "name": name}))

    def create_group(
        self, *, name: str, ca_pem: str, hardware_id: str, region: str, tags: Mapping[str, str]
    ) -> dict[str, Any]:
        body = {
            "name": name,
            "ca_pem": ca_pem,
            "hardware_id": hardware_id,
            "region": region,
            "tags": dict(tags),
        }
        return dict(self._json("POST", "/api/v1/enrollment-groups", json=body))

    # -- releases --------------------------------------------------------------------------

    def has_artifact(self, sha256: str) -> int | None:
        try:
            answer = self._http.get(f"/api/v1/artifacts/sha256/{sha256}")
        except httpx.HTTPError as exc:
            raise FleetError(f"cannot reach the server: {exc}") from exc
        if answer.status_code == 404:
            return None
        if answer.status_code >= 400:
            self._call("GET", f"/api/v1/artifacts/sha256/{sha256}")  # raises the right error
        return int(answer.json()["length"])

    def upload_artifact(self, sha256: str, path: Path) -> dict[str, Any]:
        return dict(
            self._json(
                "PUT",
                f"/api/v1/artifacts/sha256/{sha256}",
                content=_file_chunks(path),
                headers={
                    "Content-Type": "application/octet-stream",
                    "Content-Length": str(path.stat().st_size),
                },
            )
        )

    def upload_release(self, roots: Sequence[bytes], roles: Mapping[str, bytes]) -> dict[str, Any]:
        body = {
            "roots": [base64.b64encode(r).decode() for r in roots],
            "roles": {name: base64.b64encode(data).decode() for name, data in roles.items()},
        }
        return dict(self._json("POST", "/api/v1/releases", json=body))

    def releases(self) -> list[dict[str, Any]]:
        return list(self._json("GET", "/api/v1/releases"))

    def repo_file(self, path: str) -> bytes:
        return self._call("GET", f"/repo/metadata/{path}").content

    # -- deployments, devices -------------------------------------------------------------

    def deploy(
        self, target: str, *, devices: Sequence[str] = (), group: str | None = None
    ) -> dict[str, Any]:
        body: dict[str, Any] = {"target": target}
        if group is not None:
            body["group"] = group
        else:
            body["devices"] = list(devices)
        return dict(self._json("POST", "/api/v1/deployments", json=body))

    def devices(self, *, page: int = 1000) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        after: str | None = None
        while True:
            params: dict[str, Any] = {"limit": page}
            if after is not None:
                params["after"] = after
            batch = list(self._json("GET", "/api/v1/devices", params=params))
            out += batch
            if len(batch) < page:
                return out
            after = batch[-1]["id"]

    def device(self, device_id: str) -> dict[str, Any]:
        return dict(self._json("GET", f"/api/v1/devices/{device_id}"))

    def revoke_device(self, device_id: str) -> dict[str, Any]:
        return dict(self._json("POST", f"/api/v1/devices/{device_id}/revoke"))

    # -- campaigns -------------------------------------------------------------------------

    def create_campaign(
        self,
        *,
        name: str,
        targets: Sequence[str],
        selector: Mapping[str, Any],
        compatible: Mapping[str, Sequence[str]],
        policy: str | None = None,
    ) -> dict[str, Any]:
        body = {
            "name": name,
            "targets": list(targets),
            "selector": dict(selector),
            "compatible": {k: list(v) for k, v in compatible.items()},
            "policy": policy,
        }
        return dict(self._json("POST", "/api/v1/campaigns", json=body))

    def campaigns(self) -> list[dict[str, Any]]:
        return list(self._json("GET", "/api/v1/campaigns"))

    def campaign(self, campaign_id: str) -> dict[str, Any]:
        return dict(self._json("GET", f"/api/v1/campaigns/{_segment(campaign_id)}"))

    def campaign_action(
        self, campaign_id: str, action: str, *, reason: str | None = None
    ) -> dict[str, Any]:
        """approve, start, pause, resume, halt (the kill switch; ``reason``) or cancel."""
        body = {"reason": reason} if reason else None
        path = f"/api/v1/campaigns/{_segment(campaign_id)}/{_segment(action)}"
        return dict(self._json("POST", path, json=body))
