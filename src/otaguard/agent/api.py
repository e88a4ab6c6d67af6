"""The device API client (docs/server.md, "Device API"): signed requests, capped answers.

Every request is signed with the device's identity key
(:func:`otaguard.protocol.signing.sign_request`) over the exact method, raw
path, raw query and body sent. Answers carry no trust: the director's metadata
inside a check-in answer is verified by ``repo.uptane`` (signature, freshness,
this device, this request's nonce), and the repository URLs only say where to
fetch what TUF then verifies. So this module only checks shapes and sizes, and
sorts failures into classes (:mod:`otaguard.agent.failures`):

* 5xx, 429, timeouts, resets -- transient (``server`` / ``network``);
* 401 -- transient: a clock off by more than the server's window, or a server
  that forgot the device (the agent enrols again);
* 403, 409 on enrolment -- :class:`ServerRefusedError` (revoked, no enrolment
  group for this CA, the id taken by another key): nothing to retry soon;
* anything else unexpected (a broken body, an undocumented status) -- a
  ``bad-response``, retried a few times.
"""

from __future__ import annotations

import base64
import binascii
import json
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib import parse

import httpx

from otaguard.agent.config import AgentConfig, Failure
from otaguard.agent.failures import ServerRefusedError, TransientError, classify, describe
from otaguard.agent.store import Identity
from otaguard.protocol.signing import sign_request
from otaguard.protocol.state import canonical_json
from otaguard.repo.uptane import MAX_DIRECTOR_BYTES

API = "/api/v1/device"


def entity_tag(etag: str) -> str:
    """``etag`` as an HTTP entity tag: as given when already quoted (``"x"``, ``W/"x"``)."""
    return etag if etag.startswith(('"', 'W/"')) else f'"{etag}"'


@dataclass(frozen=True)
class Enrolment:
    device_id: str
    group: str | None
    poll_interval: int | None
    created: bool


@dataclass(frozen=True)
class UpdateAnswer:
    """A 200 to ``GET /update``: unverified, except for its shape."""

    etag: str
    director: bytes
    metadata_url: str
    targets_url: str
    poll_interval: int | None
    nonce: str  # the nonce this request was signed with: the director must echo it


class NotAuthenticated(TransientError):
    """401: a clock off the server's window, or a server that no longer knows the device."""

    def __init__(self, message: str) -> None:
        super().__init__(Failure.SERVER, message)


class StateUnknown(Exception):
    """409 ``state-unknown``: the server has not (or no longer) the state we named."""


class DeviceApi:
    """One device's requests to one server."""

    def __init__(
        self,
        server_url: str,
        identity: Identity,
        client: httpx.Client,
        config: AgentConfig,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._base = server_url.rstrip("/")
        self._identity = identity
        self._client = client
        self._config = config
        self._clock = clock

    @property
    def server_url(self) -> str:
        return self._base

    def _send(
        self,
        method: str,
        endpoint: str,
        *,
        query: Mapping[str, str] | None = None,
        body: bytes = b"",
        headers: Mapping[str, str] | None = None,
        nonce: str | None = None,
    ) -> tuple[httpx.Response, bytes]:
        url = httpx.URL(self._base + API + endpoint)
        if query:
            url = url.copy_with(query=parse.urlencode(query).encode())
        signed = sign_request(
            self._identity.signer,
            device_id=self._identity.device_id,
            method=method,
            path=url.raw_path.split(b"?", 1)[0].decode("ascii"),
            query=url.query.decode("ascii"),
            body=body,
            time=int(self._clock()),
            nonce=nonce or secrets.token_hex(16),
        )
        all_headers = {**signed, **(headers or {})}
        if body:
            all_headers["Content-Type"] = "application/json"
        try:
            with self._client.stream(method, url, content=body, headers=all_headers) as response:
                data = self._read(response)
        except httpx.HTTPError as exc:
            raise TransientError(classify(exc) or Failure.NETWORK, describe(exc)) from exc
        return response, data

    def _read(self, response: httpx.Response) -> bytes:
        cap = self._config.max_api_response
        parts: list[bytes] = []
        size = 0
        for piece in response.iter_raw():
            size += len(piece)
            if size > cap:
                raise TransientError(Failure.BAD_RESPONSE, f"answer longer than {cap} bytes")
            parts.append(piece)
        return b"".join(parts)

    @staticmethod
    def _fail(response: httpx.Response, data: bytes, what: str) -> Exception:
        status = response.status_code
        detail = _error_detail(data)
        if status >= 500 or status == 429:
            return TransientError(Failure.SERVER, f"{what}: HTTP {status} {detail}")
        if status == 401:
            return NotAuthenticated(f"{what}: not authenticated (401) {detail}")
        return TransientError(Failure.BAD_RESPONSE, f"{what}: unexpected HTTP {status} {detail}")

    # -- the four calls ---------------------------------------------------------------------

    def enroll(self, ecus: list[dict[str, str]]) -> Enrolment:
        body = canonical_json({"chain_pem": self._identity.chain_pem, "ecus": ecus})
        response, data = self._send("POST", "/enroll", body=body)
        if response.status_code in (403, 409):
            raise ServerRefusedError(
                f"the server refuses to enrol {self._identity.device_id} "
                f"({response.status_code}): {_error_detail(data)}"
            )
        if response.status_code not in (200, 201):
            raise self._fail(response, data, "enrolment")
        answer = _json_object(data, "enrolment")
        group = answer.get("group")
        return Enrolment(
            device_id=str(answer.get("device_id", self._identity.device_id)),
            group=group if isinstance(group, str) else None,
            poll_interval=_interval(answer.get("poll_interval_s")),
            created=response.status_code == 201,
        )

    def report_state(self, body: bytes) -> str:
        response, data = self._send("POST", "/state", body=body)
        if response.status_code != 200:
            raise self._fail(response, data, "state report")
        answer = _json_object(data, "state report")
        state = answer.get("state")
        if not isinstance(state, str) or not 0 < len(state) <= 256:
            raise TransientError(Failure.BAD_RESPONSE, "state report: no state hash in the answer")
        return state

    def check_in(self, state: str, etag: str | None) -> UpdateAnswer | None:
        """The check-in: None when nothing changed (304), raises :class:`StateUnknown` on 409."""
        nonce = secrets.token_hex(16)
        headers = {"If-None-Match": entity_tag(etag)} if etag else None
        response, data = self._send(
            "GET", "/update", query={"state": state}, headers=headers, nonce=nonce
        )
        if response.status_code == 304:
            return None
        if response.status_code == 409 and b"state-unknown" in data[:1024]:
            raise StateUnknown()
        if response.status_code != 200:
            raise self._fail(response, data, "check-in")
        return _update_answer(_json_object(data, "check-in"), response, nonce, self._base)

    def send_events(self, events: list[dict[str, Any]]) -> int:
        body = canonical_json({"events": events})
        response, data = self._send("POST", "/events", body=body)
        if response.status_code != 200:
            raise self._fail(response, data, "events")
        accepted = _json_object(data, "events").get("accepted")
        return accepted if isinstance(accepted, int) else 0


def _error_detail(data: bytes) -> str:
    try:
        value = json.loads(data[:4096])
    except ValueError:
        return ""
    if isinstance(value, dict):
        return " ".join(str(value.get(k, "")) for k in ("error", "detail") if k in value)[:200]
    return ""


def _json_object(data: bytes, what: str) -> dict[str, Any]:
    try:
        value = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        raise TransientError(Failure.BAD_RESPONSE, f"{what}: the answer is not JSON") from None
    if not isinstance(value, dict):
        raise TransientError(Failure.BAD_RESPONSE, f"{what}: the answer is not a JSON object")
    return value


def _interval(value: object) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= 86400 * 30:
        return value
    return None


def _url(value: object, base: str, what: str) -> str:
    """An http(s) URL, relative ones resolved against the server (they carry no trust)."""
    if not isinstance(value, str) or not 0 < len(value) <= 2048:
        raise TransientError(Failure.BAD_RESPONSE, f"check-in: no {what}")
    url = parse.urljoin(base + "/", value)
    if parse.urlsplit(url).scheme not in ("http", "https"):
        raise TransientError(Failure.BAD_RESPONSE, f"check-in: {what} is not an http(s) URL")
    return url if url.endswith("/") else url + "/"


def _update_answer(
    answer: dict[str, Any], response: httpx.Response, nonce: str, base: str
) -> UpdateAnswer:
    etag = answer.get("etag") or response.headers.get("ETag", "")
    if not isinstance(etag, str) or not 0 < len(etag) <= 256:
        raise TransientError(Failure.BAD_RESPONSE, "check-in: no etag")
    encoded = answer.get("director")
    if not isinstance(encoded, str) or len(encoded) > MAX_DIRECTOR_BYTES * 4 // 3 + 4:
        raise TransientError(Failure.BAD_RESPONSE, "check-in: no director metadata")
    try:
        director = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        raise TransientError(Failure.BAD_RESPONSE, "check-in: director is not base64") from None
    repository = answer.get("repository")
    if not isinstance(repository, dict):
        raise TransientError(Failure.BAD_RESPONSE, "check-in: no repository URLs")
    return UpdateAnswer(
        etag=etag,
        director=director,
        metadata_url=_url(repository.get("metadata_url"), base, "metadata_url"),
        targets_url=_url(repository.get("targets_url"), base, "targets_url"),
        poll_interval=_interval(answer.get("poll_interval_s")),
        nonce=nonce,
    )
