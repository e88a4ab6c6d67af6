"""The FastAPI application: routers, error handlers, body caps, and the process's lifespan.

:func:`create_app` takes a configuration; :func:`create_app_from_env` is the
factory uvicorn imports in each worker process (``--workers N``), configured by
the environment ``otaguard server run`` sets. The lifespan opens the database,
loads the online keys and starts the process's background threads (last-seen
flushing, jobs under a lease); on shutdown (SIGTERM, after uvicorn has drained the
requests in flight) it stops them and flushes what is buffered.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI

from otaguard import __version__
from otaguard.server import errors
from otaguard.server.config import ServerConfig
from otaguard.server.context import ServerContext
from otaguard.server.jobs import JobRunner
from otaguard.server.limits import BodyLimit
from otaguard.server.routers import (
    artifacts,
    audit,
    campaigns,
    deployments,
    device_api,
    devices,
    groups,
    releases,
    repo_files,
    tokens,
)


def create_app(config: ServerConfig, *, context: ServerContext | None = None) -> FastAPI:
    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        ctx = context or ServerContext.open(config)
        app.state.server = ctx
        ctx.start()
        runner = JobRunner(ctx)
        app.state.jobs = runner
        runner.start()
        try:
            yield
        finally:
            runner.stop()
            if context is None:
                ctx.close()

    app = FastAPI(
        title="otaguard fleet server",
        version=__version__,
        description="Schedules signed updates for device fleets; trusted for scheduling, "
        "never for content (docs/server.md).",
        lifespan=lifespan,
    )
    errors.install(app)
    app.add_middleware(BodyLimit, limits=config.limits)
    for module in (
        tokens,
        groups,
        devices,
        device_api,
        artifacts,
        releases,
        deployments,
        campaigns,
        repo_files,
        audit,
    ):
        app.include_router(module.router)
    _describe_errors_once(app)
    return app


def _describe_errors_once(app: FastAPI) -> None:
    """Every 422 is described as what the handlers send (:class:`ErrorBody`), not FastAPI's own."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = generate()
        error = {"$ref": "#/components/schemas/ErrorBody"}
        for operations in schema.get("paths", {}).values():
            for operation in operations.values():
                answers = operation.get("responses", {})
                if "422" in answers:
                    answers["422"] = {
                        "description": "invalid-request, or a refusal naming its check",
                        "content": {"application/json": {"schema": error}},
                    }
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        components["ErrorBody"] = errors.ErrorBody.model_json_schema()
        for unused in ("HTTPValidationError", "ValidationError"):
            components.pop(unused, None)
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


def create_app_from_env() -> FastAPI:
    """uvicorn's factory in worker processes (``server run --workers N``)."""
    return create_app(ServerConfig.from_env(os.environ))
