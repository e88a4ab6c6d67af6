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
import re
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
class CampaignRef:
    """The campaign whose release an answer offers (or under which the device is in flight)."""

    id: str
    wave: int


@dataclass(frozen=True)
class Action:
    """``abandon`` or ``revert`` for a campaign: safe moves only (they never install anything)."""

    kind: str
    campaign: str


@dataclass(frozen=True)
class Push:
    """Where to listen for "check in now" (MQTT); carries no trust, polling stays correct."""

    broker: str | None
    topics: tuple[str, ...]


@dataclass(frozen=True)
class UpdateAnswer:
    """A 200 to ``GET /update``: unverified, except for its shape.

    ``campaign``, ``actions`` and ``push`` are scheduling, not content: a
    server can at worst make the device drop a download (abandon), leave a
    trial for the confirmed image it already trusts (revert), or check in more
    often -- nothing it could not do by withholding updates.
    """

    etag: str
    director: bytes
    metadata_url: str
    targets_url: str
    poll_interval: int | None
    nonce: str  # the nonce this request was signed with: the director must echo it
    campaign: CampaignRef | None = None
    actions: tuple[Action, ...] = ()
    push: Push | None = None

    def wants(self, kind: str, campaign: str | None) -> bool:
        """True when the answer carries action ``kind`` for ``campaign``."""
        return campaign is not None and any(
            a.kind == kind and a.campaign == campaign for a in self.actions
        )


CAMPAIGN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$")
TOPIC = re.compile(r"^otaguard/v1/[A-Za-z0-9._:/-]{1,200}$")
ACTION_KINDS = frozenset({"abandon", "revert"})
MAX_ACTIONS = 16
MAX_TOPICS = 8


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

    def send_health(self, report: Mapping[str, Any]) -> None:
        """``POST /health`` (the campaign contract): a window's resets, crashes, flags, metrics."""
        response, data = self._send("POST", "/health", body=canonical_json(dict(report)))
        if response.status_code != 200:
            raise self._fail(response, data, "health report")


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
        campaign=_campaign(answer.get("campaign")),
        actions=_actions(answer.get("actions")),
        push=_push(answer.get("push")),
    )


def parse_update_answer(
    answer: dict[str, Any], response: httpx.Response, nonce: str, base: str
) -> UpdateAnswer:
    """A 200 check-in body as the agent reads it (shared with ``sim.http_fleet``)."""
    return _update_answer(answer, response, nonce, base)


def _bad(what: str) -> TransientError:
    return TransientError(Failure.BAD_RESPONSE, f"check-in: {what}")


def _campaign(value: object) -> CampaignRef | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise _bad("campaign is not an object")
    ident, wave = value.get("id"), value.get("wave")
    if not isinstance(ident, str) or not CAMPAIGN_ID.match(ident):
        raise _bad("campaign id malformed")
    if isinstance(wave, bool) or not isinstance(wave, int) or not 0 <= wave <= 1_000:
        raise _bad("campaign wave malformed")
    return CampaignRef(ident, wave)


def _actions(value: object) -> tuple[Action, ...]:
    """The actions; kinds this agent does not know are left out (a newer server's)."""
    if value is None:
        return ()
    if not isinstance(value, list) or len(value) > MAX_ACTIONS:
        raise _bad(f"actions is not a list of at most {MAX_ACTIONS}")
    actions = []
    for item in value:
        if not isinstance(item, dict):
            raise _bad("an action is not an object")
        kind, campaign = item.get("kind"), item.get("campaign")
        if not isinstance(campaign, str) or not CAMPAIGN_ID.match(campaign):
            raise _bad("an action's campaign is malformed")
        if kind in ACTION_KINDS:
            actions.append(Action(str(kind), campaign))
    return tuple(actions)


def _push(value: object) -> Push | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise _bad("push is not an object")
    broker, topics = value.get("broker"), value.get("topics", [])
    if broker is not None and (
        not isinstance(broker, str)
        or len(broker) > MAX_URL_LENGTH
        or parse.urlsplit(broker).scheme not in ("mqtt", "tcp")
    ):
        raise _bad("push broker is not an mqtt:// URL")
    if not isinstance(topics, list) or len(topics) > MAX_TOPICS:
        raise _bad(f"push topics is not a list of at most {MAX_TOPICS}")
    if not all(isinstance(t, str) and TOPIC.match(t) for t in topics):
        raise _bad("a push topic is not under otaguard/v1/")
    return Push(broker, tuple(topics))


MAX_URL_LENGTH = 2048
