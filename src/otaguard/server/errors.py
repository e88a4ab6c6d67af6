"""API errors: one JSON shape, one mapping from library errors to HTTP statuses.

Every error answer is ``{"error": "<short code or check>", "detail": "<one line>"}``.
Handlers raise :class:`ApiError` (or let a library error through: a
:class:`~otaguard.errors.RejectedError` is a 422 naming its check, unless a
handler maps it otherwise); nothing the client sends may end in a 500.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

from otaguard.errors import RejectedError, UsageError


class ErrorBody(BaseModel):
    """Every error answer."""

    error: str
    detail: str


class ApiError(Exception):
    """An answer other than success, raised anywhere below a router."""

    def __init__(
        self, status: int, error: str, detail: str, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.error = error
        self.detail = detail
        self.headers = headers

    @classmethod
    def refused(cls, exc: RejectedError, status: int = 422) -> ApiError:
        return cls(status, exc.check, _line(str(exc)))


class BodyTooLarge(Exception):
    """The request body is over the cap of its route (``limits.py``)."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"request body over {limit} bytes")
        self.limit = limit


_STATUS_TEXT = {
    400: "bad-request",
    401: "unauthenticated",
    403: "forbidden",
    404: "not-found",
    405: "method-not-allowed",
    409: "conflict",
    413: "too-large",
    422: "invalid-request",
}


def _line(text: str, limit: int = 500) -> str:
    return " ".join(text.split())[:limit]


def responses(
    *codes: int, extra: dict[int | str, dict[str, Any]] | None = None
) -> dict[int | str, dict[str, Any]]:
    """The error statuses a route documents in the OpenAPI description (and ``extra``)."""
    out: dict[int | str, dict[str, Any]] = dict(extra or {})
    for code in codes:
        out[code] = {"model": ErrorBody, "description": _STATUS_TEXT[code]}
    return out


def _json(
    status: int, error: str, detail: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    return JSONResponse(
        {"error": error, "detail": _line(detail)}, status_code=status, headers=headers
    )


def install(app: FastAPI) -> None:
    """Register the handlers that give every error its JSON shape."""

    @app.exception_handler(ApiError)
    async def _api(_request: Request, exc: ApiError) -> JSONResponse:
        return _json(exc.status, exc.error, exc.detail, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()))
        return _json(422, "invalid-request", f"{where}: {first.get('msg', 'invalid')}")

    @app.exception_handler(BodyTooLarge)
    async def _large(_request: Request, exc: BodyTooLarge) -> JSONResponse:
        return _json(413, "too-large", str(exc))

    @app.exception_handler(StarletteHTTPException)
    async def _http(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 400:  # a body FastAPI cannot decode: invalid, like any other
            return _json(422, "invalid-request", str(exc.detail))
        code = _STATUS_TEXT.get(exc.status_code, "error")
        return _json(exc.status_code, code, str(exc.detail), getattr(exc, "headers", None))

    @app.exception_handler(RejectedError)
    async def _rejected(_request: Request, exc: RejectedError) -> JSONResponse:
        return _json(422, exc.check, str(exc))

    @app.exception_handler(UsageError)
    async def _usage(_request: Request, exc: UsageError) -> JSONResponse:
        return _json(422, "invalid-request", str(exc))
