"""``/repo/metadata/...`` and ``/repo/targets/...``: the published repository, served as files.

No authentication and no trust: the agent verifies every byte (TUF, director,
image signatures), so these routes are what any static mirror or CDN could
serve instead (same layout as ``otaguard repo``). HTTP Range (resumed
downloads), ETag / If-None-Match (304), and Cache-Control: consistent-snapshot
files never change (``immutable``), ``timestamp.json`` only for a few seconds,
and root files are re-read by clients at every update.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path as FsPath
from typing import Annotated

from fastapi import APIRouter, Header, Path
from fastapi.responses import FileResponse, Response

from otaguard.server.errors import ApiError, responses
from otaguard.server.routers.common import Server

router = APIRouter(prefix="/repo", tags=["repository files"])

IMMUTABLE = "public, max-age=31536000, immutable"
TIMESTAMP = "public, max-age=5"
ROOT = "public, max-age=60"
FILE_RESPONSES = responses(
    404,
    extra={
        200: {"description": "the file", "content": {"application/octet-stream": {}}},
        206: {"description": "the requested range of the file"},
        304: {"description": "not modified since the ETag given"},
        400: {"description": "malformed Range header"},
        416: {"description": "range not satisfiable"},
    },
)


def _resolve(base: FsPath, relative: str) -> FsPath:
    """``relative`` inside ``base``: plain segments only (no dot files, no ``..``)."""
    parts = relative.split("/")
    if not relative or len(relative) > 1024 or any(not p or p.startswith(".") for p in parts):
        raise ApiError(404, "not-found", "no such file")
    path = base.joinpath(*parts)
    try:
        real = path.resolve(strict=True)
    except (OSError, RuntimeError):
        raise ApiError(404, "not-found", "no such file") from None
    if not real.is_file() or not real.is_relative_to(base.resolve()):
        raise ApiError(404, "not-found", "no such file")
    return real


def _etag(path: FsPath) -> str:
    st = os.stat(path)
    text = f"{st.st_ino}-{st.st_size}-{st.st_mtime_ns}"
    return '"' + hashlib.sha256(text.encode()).hexdigest()[:32] + '"'


def _serve(path: FsPath, cache: str, if_none_match: str | None, media: str) -> Response:
    tag = _etag(path)
    if if_none_match and tag in [t.strip().removeprefix("W/") for t in if_none_match.split(",")]:
        return Response(status_code=304, headers={"ETag": tag, "Cache-Control": cache})
    return FileResponse(path, media_type=media, headers={"ETag": tag, "Cache-Control": cache})


@router.get("/metadata/{name}", responses=FILE_RESPONSES, response_class=Response)
def metadata_file(
    name: Annotated[str, Path(max_length=255)],
    srv: Server,
    if_none_match: Annotated[str | None, Header(max_length=1024)] = None,
) -> Response:
    if not name.endswith(".json"):
        raise ApiError(404, "not-found", "no such file")
    path = _resolve(srv.config.repo_dir / "metadata", name)
    if name == "timestamp.json":
        cache = TIMESTAMP
    elif name.endswith(".root.json"):
        cache = ROOT
    else:
        cache = IMMUTABLE
    return _serve(path, cache, if_none_match, "application/json")


@router.get("/targets/{name:path}", responses=FILE_RESPONSES, response_class=Response)
def target_file(
    name: Annotated[str, Path(max_length=1024)],
    srv: Server,
    if_none_match: Annotated[str | None, Header(max_length=1024)] = None,
) -> Response:
    path = _resolve(srv.config.repo_dir / "targets", name)
    return _serve(path, IMMUTABLE, if_none_match, "application/octet-stream")
