"""``/api/v1/artifacts/sha256/{hex}``: images uploaded before the release that names them."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Request, Response
from pydantic import BaseModel

from otaguard.server.auth import Operator, allow
from otaguard.server.errors import ApiError, responses
from otaguard.server.routers.common import Server
from otaguard.server.services import artifacts

router = APIRouter(
    prefix="/api/v1/artifacts/sha256", tags=["releases"], responses=responses(401, 403)
)

ReleaseManager = Annotated[Operator, allow("releases:write")]
SHA256 = Annotated[str, Path(pattern=r"^[0-9a-f]{64}$", description="the image's SHA-256")]


class ArtifactOut(BaseModel):
    sha256: str
    length: int


@router.put(
    "/{sha256}",
    status_code=201,
    responses=responses(
        413, 422, extra={200: {"model": ArtifactOut, "description": "already stored"}}
    ),
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}
            },
        }
    },
)
async def put_artifact(
    sha256: SHA256, request: Request, response: Response, srv: Server, who: ReleaseManager
) -> ArtifactOut:
    info = await artifacts.receive(
        srv.db,
        srv.config.artifacts_dir,
        sha256,
        request.stream(),
        limit=srv.config.limits.artifact,
        now=srv.now(),
        by=who,
    )
    if not info.created:
        response.status_code = 200
    return ArtifactOut(sha256=info.sha256, length=info.length)


@router.get("/{sha256}", dependencies=[allow("releases:read")], responses=responses(404, 422))
def get_artifact(sha256: SHA256, srv: Server) -> ArtifactOut:
    row = artifacts.lookup(srv.db, sha256)
    if row is None:
        raise ApiError(404, "not-found", f"no artifact {sha256}")
    return ArtifactOut(sha256=row.sha256, length=row.length)
