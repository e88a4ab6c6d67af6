"""``/api/v1/devices``: the fleet as operators see it; revocation."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query
from pydantic import BaseModel, ConfigDict

from otaguard.server.auth import Operator, allow
from otaguard.server.errors import responses
from otaguard.server.routers.common import Server
from otaguard.server.services import devices

router = APIRouter(prefix="/api/v1/devices", tags=["devices"], responses=responses(401, 403))

DEVICE_ID = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$"
HISTORY = 100


class DeviceOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    group: str
    region: str
    enrolled_at: int
    last_seen: int | None
    revoked_at: int | None
    generation: int


class DeviceDetailOut(DeviceOut):
    hardware_id: str
    tags: dict[str, str]
    cert_serial: str
    state_at: int | None
    ecus: list[devices.EcuView]
    history: list[devices.EventView]


@router.get("", dependencies=[allow("devices:read")], responses=responses(422))
def list_devices(
    srv: Server,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    after: Annotated[str | None, Query(pattern=DEVICE_ID)] = None,
) -> list[DeviceOut]:
    found = devices.list_devices(srv.db, after=after, limit=limit, pending=srv.last_seen.pending())
    return [DeviceOut.model_validate(d) for d in found]


@router.get("/{device_id}", dependencies=[allow("devices:read")], responses=responses(404, 422))
def show_device(device_id: Annotated[str, Path(pattern=DEVICE_ID)], srv: Server) -> DeviceDetailOut:
    detail = devices.show_device(
        srv.db, device_id, history=HISTORY, pending=srv.last_seen.pending()
    )
    return DeviceDetailOut(
        **DeviceOut.model_validate(detail.summary).model_dump(),
        hardware_id=detail.hardware_id,
        tags=detail.tags,
        cert_serial=detail.cert_serial,
        state_at=detail.state_at,
        ecus=detail.ecus,
        history=detail.history,
    )


@router.post("/{device_id}/revoke", responses=responses(404, 422))
def revoke_device(
    device_id: Annotated[str, Path(pattern=DEVICE_ID)],
    srv: Server,
    who: Annotated[Operator, allow("devices:revoke")],
) -> DeviceOut:
    return DeviceOut.model_validate(devices.revoke(srv.db, device_id, now=srv.now(), by=who))
