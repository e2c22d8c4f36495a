"""The one error envelope: ``{"success": false, "error": {"code": ..., "message": ..., ...}}``.

Every error answer uses it: the API's (``api/errors.py``) and the security layer's
refusals, which answer before any route runs. Plain Python.
"""

from __future__ import annotations

from typing import Any

# The error code of each HTTP status, when the error names none more precisely.
ERROR_CODES: dict[int, str] = {
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
    500: "internal_error",
    502: "bad_gateway",
    503: "unavailable",
}


def error_code(status: int, code: str | None = None) -> str:
    """``code`` when given, else the status's own code (``error`` for one not listed)."""
    return code or ERROR_CODES.get(status, "error")


def error_body(status: int, message: str, code: str | None = None, **details: Any) -> dict[str, Any]:
    """The JSON body of an error answer; ``details`` (such as ``field``) join ``code`` and ``message``."""
    error: dict[str, Any] = {"code": error_code(status, code), "message": message}
    error.update(details)
    return {"success": False, "error": error}
