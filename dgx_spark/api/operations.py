"""Read-only operation routes: list, one, health. They read the sampler's snapshot."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from typing import Any

from fastapi import APIRouter, Query
from fastapi.responses import Response

from dgx_spark.api.errors import ApiError
from dgx_spark.events.query import QueryError, apply_query, parse_query
from dgx_spark.services import get_sampler
from dgx_spark.state import loops as ui_loops

router = APIRouter()


class _ListCache:
    """Encoded list bodies of the latest snapshot, one per query.

    Every request between two samples gets the same bytes, so they are encoded once
    per (snapshot, query) rather than once per request.
    """

    MAX_QUERIES = 64

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._sequence = -1
        self._bodies: dict[tuple[str | None, ...], bytes] = {}

    def get(self, key: tuple[str | None, ...], sequence: int) -> bytes | None:
        """The body for ``key`` at ``sequence``, if it was built already."""
        with self._lock:
            if sequence != self._sequence:
                self._sequence, self._bodies = sequence, {}
            return self._bodies.get(key)

    def put(self, key: tuple[str | None, ...], sequence: int, body: bytes) -> None:
        """Keep a body built for ``key`` at ``sequence`` (unless a newer snapshot exists)."""
        with self._lock:
            if sequence == self._sequence and len(self._bodies) < self.MAX_QUERIES:
                self._bodies[key] = body


_list_cache = _ListCache()


def _encode(payload: dict[str, Any]) -> bytes:
    return json.dumps(payload, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode()


@router.get("/api/dgx/operations", summary="List operations", response_class=Response)
async def list_operations(
    type: str | None = Query(
        default=None, max_length=100, description="Only these types (comma-separated): server, job, program."
    ),
    q: str | None = Query(default=None, max_length=200, description="Search name, command, port, PID."),
    status: str | None = Query(default=None, max_length=200, description="Only these statuses (comma-separated)."),
    sort: str | None = Query(default=None, max_length=20, description="status, started_at, name, cpu, memory, gpu_memory."),
    order: str | None = Query(default=None, max_length=10, description="asc or desc."),
) -> Response:
    """Every operation of the latest snapshot, in the seed document's shape; searched, filtered, sorted.

    Returns ``{"success": true, "data": [...]}``.
    """
    try:
        query = parse_query(q, type, status, sort, order)
    except QueryError as err:
        raise ApiError(422, str(err), field=err.field) from err
    snapshot = get_sampler().latest
    key = (q, type, status, sort, order)
    body = _list_cache.get(key, snapshot.sequence)
    if body is None:
        # Built once per snapshot and query, off the event loop; then served from memory.
        body = await asyncio.to_thread(
            lambda: _encode({"success": True, "data": apply_query(snapshot.to_api(), query)})
        )
        _list_cache.put(key, snapshot.sequence, body)
    return Response(content=body, media_type="application/json")


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
            "cpu_ms": snapshot.cpu_ms,
            "sampler_cpu_seconds": round(sampler.cpu_seconds, 6),
            "operation_count": len(snapshot.operations),
            "ui_loops": ui_loops.count(),
            "errors": [
                {"probe": e.probe, "message": e.message, "since": e.since} for e in snapshot.errors
            ],
        },
    }
