"""What the routers share: the process context and the clock, as dependencies."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from otaguard.server.context import ServerContext


async def server(request: Request) -> ServerContext:
    # async: FastAPI runs a plain function on a worker thread, a hand-off per request
    ctx: ServerContext = request.app.state.server
    return ctx


Server = Annotated[ServerContext, Depends(server)]
