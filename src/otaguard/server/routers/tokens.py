"""``/api/v1/tokens``: operator tokens (admin only)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path
from pydantic import BaseModel, ConfigDict, Field

from otaguard.server.auth import Operator, Role, allow
from otaguard.server.errors import responses
from otaguard.server.routers.common import Server

Admin = Annotated[Operator, allow("tokens:manage")]

router = APIRouter(
    prefix="/api/v1/tokens",
    tags=["tokens"],
    dependencies=[allow("tokens:manage")],
    responses=responses(401, 403),
)

NAME = r"^[A-Za-z0-9][A-Za-z0-9._@ -]{0,63}$"


class TokenRequest(BaseModel):
    role: Role
    name: str = Field(pattern=NAME, max_length=64)


class TokenOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    name: str
    role: Role
    created_at: int
    revoked_at: int | None = None


class NewToken(TokenOut):
    token: str = Field(description="the bearer token: shown this once, never stored")


@router.post("", status_code=201, responses=responses(422))
def create_token(body: TokenRequest, srv: Server, who: Admin) -> NewToken:
    info, secret = srv.tokens.create(body.role, body.name, now=srv.now(), by=who)
    return NewToken(**TokenOut.model_validate(info).model_dump(), token=secret)


@router.get("")
def list_tokens(srv: Server) -> list[TokenOut]:
    return [TokenOut.model_validate(info) for info in srv.tokens.list()]


@router.delete("/{token_id}", responses=responses(404, 422))
def revoke_token(
    token_id: Annotated[int, Path(ge=1, le=2**31 - 1)], srv: Server, who: Admin
) -> TokenOut:
    return TokenOut.model_validate(srv.tokens.revoke(token_id, now=srv.now(), by=who))
