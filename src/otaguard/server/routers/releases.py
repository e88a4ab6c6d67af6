"""``/api/v1/releases``: upload what the release managers signed offline; list what is published.

The first upload establishes the repository's root (1.root.json and any later
roots): it needs an admin or release-manager token like any upload, and the root
must name this server's online keys as its snapshot and timestamp keys.
"""

from __future__ import annotations

import base64
import binascii
from typing import Annotated, Any

from fastapi import APIRouter
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from otaguard.server.auth import Operator, allow
from otaguard.server.errors import ApiError, responses
from otaguard.server.routers.common import Server
from otaguard.server.services import releases

router = APIRouter(prefix="/api/v1/releases", tags=["releases"], responses=responses(401, 403))

B64 = r"^[A-Za-z0-9+/=\s]*$"


class ReleaseUpload(BaseModel):
    roots: list[str] = Field(
        default_factory=list, max_length=1024, description="base64 of N.root.json, any order"
    )
    roles: dict[str, str] = Field(
        default_factory=dict,
        max_length=20_000,
        description="role name (targets or a delegated role) -> base64 of its metadata",
    )


class Published(BaseModel):
    roots: list[int] = Field(description="root versions published by this upload")
    roles: dict[str, int] = Field(description="roles published by this upload, and their versions")
    targets: list[str] = Field(description="targets published by this upload")
    root_version: int
    snapshot_version: int
    timestamp_version: int


def _decode(value: str, what: str) -> bytes:
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise ApiError(422, "malformed", f"{what} is not base64") from None


ReleaseManager = Annotated[Operator, allow("releases:write")]


@router.post("", status_code=201, responses=responses(413, 422))
async def upload_release(body: ReleaseUpload, srv: Server, who: ReleaseManager) -> Published:
    roots = [_decode(r, f"roots[{i}]") for i, r in enumerate(body.roots)]
    roles = {name: _decode(data, f"roles[{name[:64]!r}]") for name, data in body.roles.items()}
    result = await run_in_threadpool(
        lambda: releases.publish_release(
            srv.db, srv.config, srv.keys, roots=roots, roles=roles, now=srv.now(), by=who
        )
    )
    srv.repo.forget()
    return Published(**vars(result))


class TargetOut(BaseModel):
    name: str
    length: int
    hashes: dict[str, str]
    custom: dict[str, Any]


@router.get("", dependencies=[allow("releases:read")])
async def list_releases(srv: Server) -> list[TargetOut]:
    found = await run_in_threadpool(releases.list_targets, srv.config.repo_dir)
    return [
        TargetOut(name=t.path, length=t.length, hashes=dict(t.hashes), custom=dict(t.custom))
        for t in found
    ]
