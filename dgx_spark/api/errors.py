"""The error envelope: ``{"success": false, "error": {"code": ..., "message": ...}}``."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "validation_error",
    429: "too_many_requests",
}


class ApiError(Exception):
    """An error the API reports to its client."""

    def __init__(self, status: int, message: str, code: str | None = None, **details: Any) -> None:
        """Create an error with an HTTP status, a message and optional details."""
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code or _CODES.get(status, "error")
        self.details = details


def error_body(status: int, message: str, code: str | None = None, **details: Any) -> dict[str, Any]:
    """The JSON body of an error response."""
    error: dict[str, Any] = {"code": code or _CODES.get(status, "error"), "message": message}
    error.update(details)
    return {"success": False, "error": error}


def error_response(status: int, message: str, code: str | None = None, **details: Any) -> JSONResponse:
    """An error response in the envelope."""
    return JSONResponse(error_body(status, message, code, **details), status_code=status)


def _field(loc: Any) -> str:
    parts = [str(p) for p in loc if p not in ("body", "query", "path")]
    return ".".join(parts) or "body"


def install_error_handlers(api: FastAPI) -> None:
    """Make every error, validation errors included, use the envelope."""

    @api.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError) -> JSONResponse:
        return error_response(exc.status, exc.message, exc.code, **exc.details)

    @api.exception_handler(StarletteHTTPException)
    async def _http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        return error_response(exc.status_code, str(exc.detail))

    @api.exception_handler(RequestValidationError)
    async def _validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        problems = [
            {"field": _field(err.get("loc", ())), "message": str(err.get("msg", "invalid"))}
            for err in exc.errors()
        ]
        first = problems[0] if problems else {"field": "body", "message": "invalid request"}
        return error_response(
            422,
            f"{first['field']}: {first['message']}",
            field=first["field"],
            problems=problems,
        )
