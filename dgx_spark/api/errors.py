"""API errors in the one envelope (``security/envelope.py``): exceptions, handlers, OpenAPI models."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from pydantic import BaseModel, ConfigDict
from sqlalchemy import exc as sa_exc
from starlette.exceptions import HTTPException as StarletteHTTPException

from dgx_spark.control.service import STATUS_OF_KIND
from dgx_spark.security.envelope import error_body, error_code
from dgx_spark.supervisor.supervisor import ControlError

logger = logging.getLogger(__name__)

class ErrorDetail(BaseModel):
    """What went wrong: a stable ``code``, a message for people, and details such as ``field``."""

    model_config = ConfigDict(extra="allow")
    code: str
    message: str


class ErrorEnvelope(BaseModel):
    """Every error answer under /api: ``{"success": false, "error": {...}}``."""

    success: bool
    error: ErrorDetail


# Declared on every route in the OpenAPI: what an error answer looks like.
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorEnvelope, "description": description}
    for status, description in (
        (400, "Bad request (e.g. a body that is not JSON)"),
        (401, "A valid token is required"),
        (403, "Refused (e.g. a request from another origin)"),
        (404, "No such operation or route"),
        (405, "Method not allowed (the Allow header lists the allowed ones)"),
        (409, "Another action on this operation is in progress"),
        (413, "Request body too large"),
        (422, "Invalid input; error.field names it"),
        (429, "Too many requests or streams"),
        (500, "Internal error"),
        (503, "A component (e.g. the database) is unavailable"),
    )
}


class ApiError(Exception):
    """An error the API reports to its client."""

    def __init__(self, status: int, message: str, code: str | None = None, **details: Any) -> None:
        """Create an error with an HTTP status, a message and optional details."""
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = error_code(status, code)
        self.details = details


def error_response(status: int, message: str, code: str | None = None, **details: Any) -> JSONResponse:
    """An error response in the envelope."""
    return JSONResponse(error_body(status, message, code, **details), status_code=status)


def control_error_response(exc: ControlError) -> JSONResponse:
    """A control action's refusal or failure as the API answers it: its kind's status, in the envelope."""
    status = STATUS_OF_KIND[exc.kind]
    details: dict[str, Any] = {"field": exc.field} if exc.field else {}
    response = error_response(status, exc.message, exc.code, **details)
    if status == 401:
        response.headers["WWW-Authenticate"] = 'Bearer realm="dgx-spark"'
    return response


def _field(loc: Any) -> str:
    parts = [str(p) for p in loc if p not in ("body", "query", "path")]
    return ".".join(parts) or "body"


def install_error_handlers(api: FastAPI) -> None:
    """Make every error, validation errors included, use the envelope."""

    @api.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError) -> JSONResponse:
        return error_response(exc.status, exc.message, exc.code, **exc.details)

    @api.exception_handler(ControlError)
    async def _control_error(_: Request, exc: ControlError) -> JSONResponse:
        return control_error_response(exc)

    @api.exception_handler(Exception)
    async def _server_error(request: Request, exc: Exception) -> Response:
        # Starlette logs the traceback itself; the client gets the envelope, never a traceback.
        if request.url.path.startswith("/api/"):
            return error_response(500, f"internal error ({type(exc).__name__}); see the dashboard's log")
        return PlainTextResponse("Internal Server Error", status_code=500)

    async def _database_unavailable(_: Request, exc: Exception) -> JSONResponse:
        # A busy, read-only or stopped database is a 503 the client may retry, not a bug (no traceback).
        from dgx_spark.database import describe_error, is_unavailable_error
        from dgx_spark.health import health

        if not is_unavailable_error(exc):
            logger.error("internal error", exc_info=exc)
            return error_response(500, f"internal error ({type(exc).__name__}); see the dashboard's log")
        message = getattr(exc, "message", None) or describe_error(exc)
        health.report_error("database", message)
        response = error_response(
            503, f"the database is unavailable ({message}); try again in a moment", "database_unavailable"
        )
        response.headers["Retry-After"] = "5"
        return response

    from dgx_spark.database import DatabaseUnavailable

    for db_error in (DatabaseUnavailable, sa_exc.OperationalError, sa_exc.InterfaceError, sa_exc.DisconnectionError,
                     sa_exc.TimeoutError):
        api.add_exception_handler(db_error, _database_unavailable)

    @api.exception_handler(StarletteHTTPException)
    async def _http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        response = error_response(exc.status_code, str(exc.detail))
        response.headers.update(exc.headers or {})
        return response

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
