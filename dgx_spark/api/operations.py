"""Read-only operation routes: list, one, health. They read the sampler's snapshot."""

from __future__ import annotations

import time
from typing import Any, Literal

from fastapi import APIRouter, Query

from dgx_spark.api.errors import ApiError
from dgx_spark.services import get_sampler

router = APIRouter()


@router.get("/api/dgx/operations", summary="List operations")
def list_operations(
    type: Literal["server", "job", "program"] | None = Query(  # noqa: A002 - the seed's name
        default=None, description="Only operations of this type."
    ),
) -> dict[str, Any]:
    """Every operation of the latest snapshot, in the seed document's shape."""
    data = get_sampler().latest.to_api()
    if type is not None:
        data = [op for op in data if op["type"] == type]
    return {"success": True, "data": data}


@router.get("/api/dgx/operations/{op_id}", summary="One operation")
def get_operation(op_id: str) -> dict[str, Any]:
    """One operation by id; 404 when the latest snapshot does not hold it."""
    snapshot = get_sampler().latest
    operation = snapshot.find(op_id)
    if operation is None:
        raise ApiError(404, f"no operation with id {op_id!r}", field="id")
    return {"success": True, "data": operation.to_api(snapshot.taken_at)}


@router.get("/api/health", summary="Sampler health")
def health() -> dict[str, Any]:
    """How old the latest snapshot is and which probes are failing."""
    sampler = get_sampler()
    snapshot = sampler.latest
    age = None if snapshot.sequence == 0 else round(time.time() - snapshot.taken_at, 3)
    return {
        "success": True,
        "data": {
            "sampler_running": sampler.running,
            "sequence": snapshot.sequence,
            "taken_at": snapshot.taken_at or None,
            "age_seconds": age,
            "interval_seconds": sampler.interval,
            "duration_ms": snapshot.duration_ms,
            "operation_count": len(snapshot.operations),
            "errors": [
                {"probe": e.probe, "message": e.message, "since": e.since} for e in snapshot.errors
            ],
        },
    }
