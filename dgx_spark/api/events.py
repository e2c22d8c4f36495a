"""Events and history routes: ``GET /api/dgx/events`` and ``GET /api/dgx/history``."""

from __future__ import annotations

import datetime as dt
from typing import Any

from fastapi import APIRouter, Query

from dgx_spark.api.errors import ApiError
from dgx_spark.api.params import STATUSES_PATTERN, TYPES_PATTERN, Order, SortKey, csv_pattern
from dgx_spark.collector.query import QueryError, apply_query, parse_query
from dgx_spark.events.store import EVENT_KINDS
from dgx_spark.services import ServicesDep

router = APIRouter()


def _since(raw: str | None) -> tuple[int | None, float | None]:
    """``since``: an event id (events after it) or an ISO-8601 time (events at or after it)."""
    if raw is None or not raw.strip():
        return None, None
    text = raw.strip()
    if text.isdigit() and len(text) <= 15:
        return int(text), None
    try:
        moment = dt.datetime.fromisoformat(text)
    except ValueError as exc:
        raise ApiError(
            422, "since: expected an event id or an ISO-8601 time", field="since"
        ) from exc
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return None, moment.timestamp()


@router.get("/api/dgx/events", summary="Status transitions of operations")
def list_events(
    services: ServicesDep,
    since: str | None = Query(
        default=None,
        max_length=64,
        description="An event id (only newer events) or an ISO-8601 time. Empty: the newest events.",
    ),
    kind: str | None = Query(
        default=None, max_length=200, pattern=csv_pattern(EVENT_KINDS),
        description=f"Comma-separated kinds to keep: {', '.join(EVENT_KINDS)}.",
    ),
    operation_id: str | None = Query(default=None, max_length=200),
    limit: int = Query(default=100, ge=1, le=1000),
) -> dict[str, Any]:
    """Events oldest first: ``{"id", "operation_id", "run", "name", "kind", "at", "exit_code", ...}``.

    Terminal events (``completed``, ``failed``, ``stopped``) also say how the run ended:
    ``outcome``, ``exit_reason``, ``outcome_source`` (``null`` on other events).
    """
    after_id, since_ts = _since(since)
    kinds = [k.strip() for k in (kind or "").split(",") if k.strip()]
    for value in kinds:
        if value not in EVENT_KINDS:
            raise ApiError(
                422,
                f"kind: unknown value {value!r}; expected one of {', '.join(EVENT_KINDS)}",
                field="kind",
            )
    data = services.events.store.events(
        after_id=after_id, since_ts=since_ts, kinds=kinds, operation_id=operation_id, limit=limit
    )
    return {"success": True, "data": data}


@router.get("/api/dgx/history", summary="Ended operations")
def list_history(
    services: ServicesDep,
    q: str | None = Query(default=None, max_length=200, description="Search words."),
    type: str | None = Query(default=None, max_length=100, pattern=TYPES_PATTERN, description="server,job,program"),
    status: str | None = Query(default=None, max_length=200, pattern=STATUSES_PATTERN, description="stopped,failed"),
    sort: SortKey | None = Query(default=None, description="Sort key."),  # noqa: B008
    order: Order | None = Query(default=None, description="asc (default) or desc."),  # noqa: B008
    limit: int = Query(default=500, ge=1, le=5000),
) -> dict[str, Any]:
    """Ended runs kept for the retention period, most recently ended first.

    Each has ``outcome``, ``exit_code``, ``exit_reason`` and ``outcome_source`` (how it ended).
    """
    try:
        query = parse_query(q, type, status, sort, order)
    except QueryError as err:
        raise ApiError(422, str(err), field=err.field) from err
    rows = apply_query(services.events.store.history(limit=5000), query)
    return {"success": True, "data": rows[:limit]}
