"""``/api/v1/device/...``: what devices call, every request signed (``device_auth.py``)."""

from __future__ import annotations

import datetime as dt
import json
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Header, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from otaguard.crypto.keys import load_public_key
from otaguard.protocol.events import EventKind
from otaguard.protocol.state import state_hash
from otaguard.server.device_auth import (
    EnrolmentHeaders,
    SignedDevice,
    enrolment_request,
    verify_with,
)
from otaguard.server.errors import ApiError, responses
from otaguard.server.routers.common import Server
from otaguard.server.services import (
    campaign_offer,
    campaign_telemetry,
    checkin,
    devices,
    enrollment,
)

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


class CampaignRef(BaseModel):
    id: str
    wave: int


class CampaignAction(BaseModel):
    kind: Literal["abandon", "revert"] = Field(
        description="abandon: stop and delete the download of that campaign's release; "
        "revert: leave its trial boot for the previous slot now"
    )
    campaign: str


class Push(BaseModel):
    broker: str | None = Field(description="mqtt://host:port, or null: polling only")
    topics: list[str]


class UpdateAnswer(BaseModel):
    etag: str
    director: str = Field(description="base64 of the director's targets metadata")
    repository: RepositoryUrls
    poll_interval_s: int
    campaign: CampaignRef | None = Field(
        default=None,
        description="the campaign whose release this answer offers, or under which the "
        "device is still in flight",
    )
    actions: list[CampaignAction]
    push: Push


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
    fresh_campaigns, running, groups = srv.campaigns.cached()
    if not fresh_campaigns:
        running, groups = await run_in_threadpool(srv.campaigns.refresh)
    eligible = campaign_offer.eligible(running, groups, device.id, device.group_id)
    part = campaign_offer.etag_part(eligible)
    tag = checkin.etag(device, versions, srv.keys.director_keyid, part)
    if checkin.matches(if_none_match, tag):
        return Response(status_code=304, headers={"ETag": tag})

    def answer() -> tuple[str, str, campaign_offer.InFlight, str | None]:
        index = srv.repo.index()
        generation = device.generation
        if campaign_offer.offer(srv.db, index, eligible, device.id, now=srv.now()):
            fresh_record = srv.device_record(device.id)
            generation = fresh_record.generation if fresh_record else generation + 1
        instructions = checkin.choose(index, checkin.plan(srv.db, device.id))
        director = checkin.director_metadata(
            device=device,
            nonce=caller.nonce,
            instructions=instructions,
            keys=srv.keys,
            now=srv.now(),
            expiry=srv.config.timing.director_expiry,
            generation=generation,
        )
        new_tag = checkin.etag(device, versions, srv.keys.director_keyid, part, generation)
        flight = campaign_offer.in_flight(srv.db, device.id)
        hardware = groups.get(device.group_id)
        return director, new_tag, flight, hardware.hardware_id if hardware else None

    director, tag, flight, hardware_id = await run_in_threadpool(answer)
    if hardware_id is None:
        hardware_id = await run_in_threadpool(lambda: devices.hardware_of(srv.db, device.group_id))
    topics = [f"otaguard/v1/devices/{device.id}", f"otaguard/v1/hardware/{hardware_id}"]
    if flight.campaign is not None:
        topics.append(f"otaguard/v1/campaigns/{flight.campaign['id']}")
    base = srv.config.repo_url or str(request.base_url).rstrip("/") + "/repo"
    body = UpdateAnswer(
        etag=tag,
        director=director,
        repository=RepositoryUrls(metadata_url=f"{base}/metadata/", targets_url=f"{base}/targets/"),
        poll_interval_s=srv.config.timing.poll_interval,
        campaign=None if flight.campaign is None else CampaignRef(**flight.campaign),
        actions=[CampaignAction(**a) for a in flight.actions],  # type: ignore[arg-type]
        push=Push(broker=srv.push_broker, topics=topics),
    )
    return Response(
        body.model_dump_json(),
        media_type="application/json",
        headers={"ETag": tag, "Cache-Control": "private, no-store"},
    )


class Event(BaseModel):
    id: str = Field(pattern=r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
    time: dt.datetime
    kind: EventKind
    ecu: str | None = Field(default=None, pattern=NAME)
    target: str | None = Field(default=None, max_length=255)
    result: Literal["ok", "failed"]
    failure: Literal["transient", "deterministic"] | None = None
    check: str | None = Field(default=None, max_length=64)
    detail: str | None = Field(default=None, max_length=1024)
    campaign: str | None = Field(
        default=None, pattern=r"^c-[0-9a-f]{12}$", description="the campaign it reports on"
    )


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
            devices.store_events(
                session,
                caller.id,
                rows,
                srv.now(),
                on_new=lambda new: campaign_telemetry.apply_events(
                    session, caller.id, new, srv.now()
                ),
            )
        return len(rows)

    return Accepted(accepted=await run_in_threadpool(store))


METRIC = r"^[a-z0-9_]{1,40}$"
MAX_WINDOW_S = 7 * 86400.0


class HealthIn(BaseModel):
    #: no coercion: "yes" is not a flag, "3" not a count (the tallies add what is sent)
    model_config = ConfigDict(strict=True)

    campaign: str | None = Field(default=None, pattern=r"^c-[0-9a-f]{12}$")
    window_s: float = Field(gt=0, le=MAX_WINDOW_S, allow_inf_nan=False)
    counts: dict[Annotated[str, Field(pattern=METRIC)], Annotated[int, Field(ge=0, le=2**31)]] = (
        Field(default_factory=dict, max_length=32)
    )
    flags: dict[Annotated[str, Field(pattern=METRIC)], bool] = Field(
        default_factory=dict, max_length=32
    )
    metrics: dict[
        Annotated[str, Field(pattern=METRIC)],
        Annotated[float, Field(allow_inf_nan=False, ge=-1e12, le=1e12)],
    ] = Field(default_factory=dict, max_length=32)


@router.post("/health", responses=responses(401, 403, 413, 422))
async def post_health(body: HealthIn, caller: SignedDevice, srv: Server) -> Accepted:
    """Post-update health over a window: into the wave's tally of each campaign whose
    release the device confirmed, or the control tally while it has not installed it."""
    report = campaign_telemetry.Health(
        body.campaign, body.window_s, body.counts, body.flags, body.metrics
    )

    def store() -> None:
        with srv.db.writing() as session:
            devices.record_nonce(session, caller.id, caller.nonce, caller.time)
            campaign_telemetry.record_health(
                session, caller.id, caller.device.group_id, report, srv.now()
            )

    await run_in_threadpool(store)
    return Accepted(accepted=1)
