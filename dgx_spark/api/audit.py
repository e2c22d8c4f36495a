"""API route: the audit log of control actions (token required, even to read)."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Depends, Query

from dgx_spark.api.actor import require_token
from dgx_spark.api.errors import ApiError
from dgx_spark.api.params import MAX_INT64
from dgx_spark.database import is_unavailable_error
from dgx_spark.services import ServicesDep

router = APIRouter()


@router.get("/api/dgx/audit", summary="Audit log", dependencies=[Depends(require_token)])
def get_audit(
    services: ServicesDep,
    limit: int = Query(default=100, ge=1, le=1000, description="How many entries, newest first."),
    before_id: int | None = Query(default=None, ge=1, le=MAX_INT64, description="Only entries older than this id."),
    action: str | None = Query(default=None, max_length=32, pattern=r"^[a-z_]+$", description="Only this action."),
    outcome: Literal["allowed", "failed", "refused"] | None = Query(default=None, description="Only this outcome."),
    target: str | None = Query(default=None, max_length=200, description="Only entries about this target."),
) -> dict[str, Any]:
    """Control actions, allowed and refused, newest first: time, action, target, outcome, client."""
    try:
        entries = services.audit.entries(limit=limit, before_id=before_id, action=action, outcome=outcome, target=target)
    except Exception as exc:
        if is_unavailable_error(exc):
            raise  # busy, read-only or stopped: the API's 503 database_unavailable, like every other route
        # Something else (the table may not be migrated yet): say so instead of a 500.
        raise ApiError(503, f"the audit log cannot be read: {type(exc).__name__}", code="audit_unavailable") from exc
    return {"success": True, "data": [entry.to_api() for entry in entries]}
