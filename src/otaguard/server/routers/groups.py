"""``/api/v1/enrollment-groups``: which device CAs enrol devices, into which group."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from otaguard.server.auth import Operator, allow
from otaguard.server.errors import responses
from otaguard.server.routers.common import Server
from otaguard.server.services import enrollment

router = APIRouter(
    prefix="/api/v1/enrollment-groups", tags=["enrollment"], responses=responses(401, 403)
)

GroupWriter = Annotated[Operator, allow("groups:write")]
NAME = r"^[A-Za-z0-9][A-Za-z0-9._:+-]{0,63}$"
TAG_KEY = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"


class GroupRequest(BaseModel):
    name: str = Field(pattern=NAME)
    ca_pem: str = Field(max_length=64 * 1024, description="the device CA certificate (PEM)")
    hardware_id: str = Field(pattern=NAME)
    region: str = Field(pattern=NAME)
    tags: dict[Annotated[str, Field(pattern=TAG_KEY)], Annotated[str, Field(max_length=256)]] = (
        Field(default_factory=dict, max_length=64)
    )


class GroupOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    name: str
    hardware_id: str
    region: str
    tags: dict[str, str]
    ca_sha256: str
    ca_subject: str
    has_crl: bool
    created_at: int


@router.post("", status_code=201, responses=responses(409, 413, 422))
async def create_group(body: GroupRequest, srv: Server, who: GroupWriter) -> GroupOut:
    info = await run_in_threadpool(
        lambda: enrollment.create_group(
            srv.db,
            name=body.name,
            ca_pem=body.ca_pem,
            hardware_id=body.hardware_id,
            region=body.region,
            tags=dict(body.tags),
            now=srv.now(),
            by=who,
        )
    )
    return GroupOut.model_validate(info)


@router.get("", dependencies=[allow("groups:read")])
def list_groups(srv: Server) -> list[GroupOut]:
    return [GroupOut.model_validate(g) for g in enrollment.list_groups(srv.db)]


class CrlRequest(BaseModel):
    crl_pem: str = Field(max_length=4 * 1024 * 1024)


class CrlStored(BaseModel):
    group: GroupOut
    revoked_devices: list[str]


@router.put("/{name}/crl", responses=responses(404, 413, 422))
async def put_crl(
    name: Annotated[str, Path(pattern=NAME)], body: CrlRequest, srv: Server, who: GroupWriter
) -> CrlStored:
    info, revoked = await run_in_threadpool(
        lambda: enrollment.set_crl(srv.db, name, body.crl_pem, now=srv.now(), by=who)
    )
    return CrlStored(group=GroupOut.model_validate(info), revoked_devices=revoked)
