"""``/api/v1/deployments``: assign a published target to devices or an enrolment group."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from otaguard.server.auth import Operator, allow
from otaguard.server.errors import responses
from otaguard.server.routers.common import Server
from otaguard.server.services import deployments

Deployer = Annotated[Operator, allow("deploy")]
router = APIRouter(
    prefix="/api/v1/deployments", tags=["deployments"], responses=responses(401, 403)
)

DEVICE_ID = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$"
NAME = r"^[A-Za-z0-9][A-Za-z0-9._:+-]{0,63}$"


class DeploymentRequest(BaseModel):
    target: str = Field(min_length=1, max_length=255)
    devices: list[Annotated[str, Field(pattern=DEVICE_ID)]] = Field(
        default_factory=list, max_length=10_000
    )
    group: str | None = Field(default=None, pattern=NAME)


class AssignmentOut(BaseModel):
    device_id: str
    ecu: str
    target: str


class DeploymentOut(BaseModel):
    id: int
    target: str
    group: str | None
    assignments: list[AssignmentOut]
    skipped: list[str] = Field(description="devices without a live ECU of a matching hardware id")


@router.post("", status_code=201, responses=responses(404, 413, 422))
async def create_deployment(body: DeploymentRequest, srv: Server, who: Deployer) -> DeploymentOut:
    srv.repo.forget()  # a release another process published a moment ago counts
    made = await run_in_threadpool(
        lambda: deployments.deploy(
            srv.db,
            srv.repo.index(),
            target=body.target,
            devices=body.devices,
            group=body.group,
            by=who,
            now=srv.now(),
        )
    )
    return DeploymentOut(
        id=made.id,
        target=made.target,
        group=made.group,
        assignments=[AssignmentOut(**vars(a)) for a in made.assignments],
        skipped=made.skipped,
    )
