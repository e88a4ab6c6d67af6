"""``/api/v1/campaigns``: staged rollouts -- create, approve, start, pause, resume, halt, cancel.

Roles (``auth.PERMISSIONS``): admin and release-manager create; admin and operator approve
and run (start, pause, resume, halt, cancel); every role reads. The two-person rule: the
creator (by token name) cannot approve (403 ``two-person-rule``). An event the campaign's
state does not allow is a 409 ``campaign-state``. Every action is audited in its own
transaction (``services.campaigns``); the push hook is called after the commit.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from otaguard.server.auth import Operator, allow
from otaguard.server.errors import responses
from otaguard.server.routers.common import Server
from otaguard.server.services import campaigns
from otaguard.server.services.campaign_select import TAG, Selector

Creator = Annotated[Operator, allow("campaigns:create")]
Approver = Annotated[Operator, allow("campaigns:approve")]
Runner = Annotated[Operator, allow("campaigns:run")]
Reader = Annotated[Operator, allow("campaigns:read")]
router = APIRouter(prefix="/api/v1/campaigns", tags=["campaigns"], responses=responses(401, 403))

NAME = r"^[A-Za-z0-9][A-Za-z0-9._:+-]{0,63}$"
DEVICE_ID = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$"
VERSION = r"^[A-Za-z0-9][A-Za-z0-9._:+~-]{0,63}$"
CampaignId = Annotated[str, Path(pattern=r"^c-[0-9a-f]{12}$")]


class SelectorIn(BaseModel):
    hardware_id: str | None = Field(default=None, pattern=NAME)
    region: str | None = Field(default=None, pattern=NAME)
    tags: dict[Annotated[str, Field(pattern=TAG.pattern)], Annotated[str, Field(max_length=64)]] = (
        Field(default_factory=dict, max_length=32)
    )
    devices: list[Annotated[str, Field(pattern=DEVICE_ID)]] = Field(
        default_factory=list, max_length=10_000
    )


class CampaignIn(BaseModel):
    name: str = Field(pattern=NAME)
    targets: list[Annotated[str, Field(min_length=1, max_length=255)]] = Field(
        min_length=1, max_length=campaigns.MAX_TARGETS
    )
    selector: SelectorIn
    compatible: dict[
        Annotated[str, Field(pattern=NAME)],
        list[Annotated[str, Field(pattern=VERSION)]],
    ] = Field(
        default_factory=dict,
        max_length=campaigns.MAX_COMPATIBLE,
        description="ECU hardware id or serial -> versions; the release's own declaration "
        "(its targets' compatible_with) applies without it, and may only be narrowed",
    )
    policy: str | None = Field(
        default=None,
        max_length=64 * 1024,
        description="rollout policy TOML; the default policy if absent",
    )


class StampOut(BaseModel):
    by: str
    at: float


class WaveOut(BaseModel):
    wave: int
    offered: int = Field(description="offered, nothing reported since")
    downloading: int
    installed: int = Field(description="in trial boot")
    confirmed: int
    silent: int = Field(description="no outcome before the deadline: a failure")
    abandoned: int
    reverted: int
    failed_network: int
    failed_power: int
    failed_verification: int
    failed_incompatible: int
    failed_install: int
    failed_boot: int
    retries: int = Field(description="transient failures retried (not failures)")
    failures: int
    total: int = Field(description="every device ever offered in this wave")
    health_devices: int


class CampaignOut(BaseModel):
    id: str
    name: str
    targets: list[str]
    selector: dict[str, Any]
    compatible: dict[str, list[str]]
    status: str = Field(
        description="draft, approved, running, paused, halted, cancelled, completed"
    )
    wave: int
    offering: int | None = Field(description="waves 0..offering are offered now; null: none")
    end_reason: str | None
    population: int = Field(description="devices the selector matched at creation")
    plan: list[int] = Field(description="cumulative devices planned after each wave")
    created: StampOut
    approved: StampOut | None
    started: StampOut | None
    paused: StampOut | None
    resumed: StampOut | None
    ended: StampOut | None
    waves: list[WaveOut]
    control_health_devices: int
    incompatible: int
    incompatible_devices: list[str] = Field(description="the first 100")
    policy: str = Field(description="the rollout policy, TOML")
    warnings: list[str] = Field(
        description="why the campaign could never leave its first wave, even if every "
        "device in it confirmed (too few devices for the halt bounds to be shown met)"
    )


class CampaignSummary(BaseModel):
    id: str
    name: str
    targets: list[str]
    status: str
    wave: int
    population: int
    created_by: str
    created_at: int


class HaltIn(BaseModel):
    reason: str = Field(default="manual halt", min_length=1, max_length=200)


@router.post("", status_code=201, responses=responses(413, 422))
async def create_campaign(body: CampaignIn, srv: Server, who: Creator) -> CampaignOut:
    srv.repo.forget()  # a release another process published a moment ago counts
    selector = Selector(
        body.selector.hardware_id,
        body.selector.region,
        dict(body.selector.tags),
        tuple(dict.fromkeys(body.selector.devices)),
    )
    spec = campaigns.CampaignInput(body.name, body.targets, selector, body.compatible, body.policy)
    made = await run_in_threadpool(
        lambda: campaigns.create_campaign(srv.db, srv.repo.index(), spec, by=who, now=srv.now())
    )
    return CampaignOut(**made)


@router.get("")
async def list_campaigns(srv: Server, _who: Reader) -> list[CampaignSummary]:
    found = await run_in_threadpool(lambda: campaigns.list_campaigns(srv.db))
    return [CampaignSummary(**c) for c in found]


@router.get("/{campaign_id}", responses=responses(404))
async def show_campaign(campaign_id: CampaignId, srv: Server, _who: Reader) -> CampaignOut:
    return CampaignOut(**await run_in_threadpool(lambda: campaigns.show(srv.db, campaign_id)))


async def _act(
    srv: Server, campaign_id: str, action: str, who: Operator, reason: str | None = None
) -> CampaignOut:
    result, notice = await run_in_threadpool(
        lambda: campaigns.act(srv.db, campaign_id, action, by=who, now=srv.now(), reason=reason)
    )
    srv.campaigns.forget()  # this process's check-ins see the change at once
    if notice is not None:
        srv.notify_all([notice])
    return CampaignOut(**result)


_ACTION_ERRORS = responses(404, 409)


@router.post("/{campaign_id}/approve", responses=_ACTION_ERRORS)
async def approve(campaign_id: CampaignId, srv: Server, who: Approver) -> CampaignOut:
    return await _act(srv, campaign_id, "approve", who)


@router.post("/{campaign_id}/start", responses=_ACTION_ERRORS)
async def start(campaign_id: CampaignId, srv: Server, who: Runner) -> CampaignOut:
    return await _act(srv, campaign_id, "start", who)


@router.post("/{campaign_id}/pause", responses=_ACTION_ERRORS)
async def pause(campaign_id: CampaignId, srv: Server, who: Runner) -> CampaignOut:
    return await _act(srv, campaign_id, "pause", who)


@router.post("/{campaign_id}/resume", responses=_ACTION_ERRORS)
async def resume(campaign_id: CampaignId, srv: Server, who: Runner) -> CampaignOut:
    return await _act(srv, campaign_id, "resume", who)


@router.post("/{campaign_id}/halt", responses=_ACTION_ERRORS)
async def halt(
    campaign_id: CampaignId, srv: Server, who: Runner, body: HaltIn | None = None
) -> CampaignOut:
    """The manual kill switch: no new offers from now on; devices in flight are told to
    abandon (downloading) or revert (in trial boot, with ``halt.revert_on_halt``)."""
    return await _act(srv, campaign_id, "halt", who, (body or HaltIn()).reason)


@router.post("/{campaign_id}/cancel", responses=_ACTION_ERRORS)
async def cancel(campaign_id: CampaignId, srv: Server, who: Runner) -> CampaignOut:
    return await _act(srv, campaign_id, "cancel", who)
