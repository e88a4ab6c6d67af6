"""``/api/v1/device/...``: what devices call, every request signed (``device_auth.py``)."""

from __future__ import annotations

import datetime as dt
import json
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Header, Query, Request, Response
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from otaguard.crypto.keys import load_public_key
from otaguard.protocol.state import state_hash
from otaguard.server.device_auth import (
    EnrolmentHeaders,
    SignedDevice,
    enrolment_request,
    verify_with,
)
from otaguard.server.errors import ApiError, responses
from otaguard.server.routers.common import Server
from otaguard.server.services import checkin, devices, enrollment

router = APIRouter(prefix="/api/v1/device", tags=["device"])

NAME = r"^[A-Za-z0-9][A-Za-z0-9._:+-]{0,63}$"
HEX64 = r"^[0-9a-f]{64}$"


class EcuId(BaseModel):
    serial: str = Field(pattern=NAME)
    hardware_id: str = Field(pattern=NAME)


class EnrollRequest(BaseModel):
    chain_pem: str = Field(max_length=48 * 1024, description="leaf first, then intermediates")
    ecus: list[EcuId] = Field(min_length=1, max_length=64)


class Enrolled(BaseModel):
    device_id: str
    group: str
    hardware_id: str
    region: str
    tags: dict[str, str]
    poll_interval_s: int


@router.post(
    "/enroll",
    status_code=201,
    responses=responses(
        401, 403, 409, 413, 422, extra={200: {"model": Enrolled, "description": "already enrolled"}}
    ),
)
async def enroll(
    body: EnrollRequest,
    request: Request,
    response: Response,
    signed: Annotated[EnrolmentHeaders, Depends(enrolment_request)],
    srv: Server,
) -> Enrolled:
    serials = [e.serial for e in body.ecus]
    if len(set(serials)) != len(serials):
        raise ApiError(422, "invalid-request", "ECU serials must be distinct")
    chain = enrollment.parse_certs(body.chain_pem, "chain_pem")
    if not chain:
        raise ApiError(422, "invalid-request", "chain_pem holds no certificate")
    key = load_public_key(enrollment.leaf_key_der(chain[0]))
    await verify_with(request, key, srv.now())
    result = await run_in_threadpool(
        lambda: enrollment.enroll(
            srv.db,
            device_id=signed.device_id,
            chain=chain,
            ecus=[(e.serial, e.hardware_id) for e in body.ecus],
            nonce=signed.nonce,
            signed_at=signed.time,
            now=dt.datetime.fromtimestamp(srv.now(), dt.UTC),
            refusals=srv.enrol_refusals,
        )
    )
    if not result.created:
        response.status_code = 200
    group = result.group
    return Enrolled(
        device_id=result.device_id,
        group=group.name,
        hardware_id=group.hardware_id,
        region=group.region,
        tags=group.tags,
        poll_interval_s=srv.config.timing.poll_interval,
    )


class EcuReport(BaseModel):
    serial: str = Field(pattern=NAME)
    hardware_id: str = Field(pattern=NAME)
    target: str | None = Field(default=None, max_length=255)
    version: str | None = Field(default=None, max_length=64)
    security_counter: int = Field(default=0, ge=0, le=2**63 - 1)
    sha256: str | None = Field(default=None, pattern=HEX64)
    slot: Literal["a", "b"] | None = None
    boot: Literal["confirmed", "trial", "none"] = "none"


class StateReport(BaseModel):
    ecus: list[EcuReport] = Field(min_length=1, max_length=64)


class StateStored(BaseModel):
    state: str = Field(description="SHA-256 of the canonical JSON of the body")


@router.post("/state", responses=responses(401, 403, 413, 422))
async def post_state(
    body: StateReport, request: Request, caller: SignedDevice, srv: Server
) -> StateStored:
    raw = json.loads(await request.body())
    digest = state_hash(raw)
    items = [devices.EcuState(**e.model_dump()) for e in body.ecus]
    if len({e.serial for e in items}) != len(items):
        raise ApiError(422, "invalid-request", "ECU serials must be distinct")

    def store() -> None:
        with srv.db.writing() as session:
            devices.record_nonce(session, caller.id, caller.nonce, caller.time)
            devices.store_state(session, caller.id, items, digest, srv.now())

    await run_in_threadpool(store)
    return StateStored(state=digest)


class RepositoryUrls(BaseModel):
    metadata_url: str
    targets_url: str


class UpdateAnswer(BaseModel):
    etag: str
    director: str = Field(description="base64 of the director's targets metadata")
    repository: RepositoryUrls
    poll_interval_s: int
    actions: list[str]


@router.get(
    "/update",
    response_model=UpdateAnswer,
    responses=responses(
        401, 403, 409, 422, extra={304: {"description": "nothing changed since the ETag given"}}
    ),
)
async def check_in(
    request: Request,
    caller: SignedDevice,
    srv: Server,
    state: Annotated[str | None, Query(max_length=64)] = None,
    if_none_match: Annotated[str | None, Header(max_length=1024)] = None,
) -> Response:
    srv.last_seen.saw(caller.id, srv.now())
    device = caller.device
    if state is None or state != device.state_hash:
        raise ApiError(409, "state-unknown", "POST /api/v1/device/state first")
    fresh, versions = srv.repo.cached_versions()
    if not fresh:
        versions = await run_in_threadpool(srv.repo.versions)
    tag = checkin.etag(device, versions, srv.keys.director_keyid)
    if checkin.matches(if_none_match, tag):
        return Response(status_code=304, headers={"ETag": tag})

    def answer() -> str:
        instructions = checkin.choose(srv.repo.index(), checkin.plan(srv.db, device.id))
        return checkin.director_metadata(
            device=device,
            nonce=caller.nonce,
            instructions=instructions,
            keys=srv.keys,
            now=srv.now(),
            expiry=srv.config.timing.director_expiry,
        )

    director = await run_in_threadpool(answer)
    base = srv.config.repo_url or str(request.base_url).rstrip("/") + "/repo"
    body = UpdateAnswer(
        etag=tag,
        director=director,
        repository=RepositoryUrls(metadata_url=f"{base}/metadata/", targets_url=f"{base}/targets/"),
        poll_interval_s=srv.config.timing.poll_interval,
        actions=[],
    )
    return Response(
        body.model_dump_json(),
        media_type="application/json",
        headers={"ETag": tag, "Cache-Control": "private, no-store"},
    )


class Event(BaseModel):
    id: str = Field(pattern=r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
    time: dt.datetime
    kind: Literal[
        "download-started",
        "download-failed",
        "downloaded",
        "install-failed",
        "installed",
        "boot-trial",
        "confirmed",
        "reverted",
        "refused",
    ]
    ecu: str | None = Field(default=None, pattern=NAME)
    target: str | None = Field(default=None, max_length=255)
    result: Literal["ok", "failed"]
    failure: Literal["transient", "deterministic"] | None = None
    check: str | None = Field(default=None, max_length=64)
    detail: str | None = Field(default=None, max_length=1024)


class Events(BaseModel):
    events: list[Event] = Field(max_length=100)


class Accepted(BaseModel):
    accepted: int


@router.post("/events", responses=responses(401, 403, 413, 422))
async def post_events(body: Events, caller: SignedDevice, srv: Server) -> Accepted:
    rows = [{**e.model_dump(exclude={"time"}), "time": e.time.isoformat()} for e in body.events]

    def store() -> int:
        with srv.db.writing() as session:
            devices.record_nonce(session, caller.id, caller.nonce, caller.time)
            devices.store_events(session, caller.id, rows, srv.now())
        return len(rows)

    return Accepted(accepted=await run_in_threadpool(store))
