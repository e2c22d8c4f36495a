"""Progress reports: ``POST /api/dgx/operations/{id}/progress`` and ``POST /api/dgx/progress`` (by pid).

A training job (or the ``report()`` helper inside it) tells the dashboard how far
it is. Reports are the most trusted source of progress; they are checked field by
field (4xx naming the field, nothing stored) and merged by the progress tracker
into the next snapshot, which is asked for at once.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request

from dgx_spark.api.actor import Control, ControlRoute
from dgx_spark.api.errors import ApiError
from dgx_spark.collector.model import Operation
from dgx_spark.control.service import Actor
from dgx_spark.progress.parsers import ProgressUpdate
from dgx_spark.progress.payload import (
    MAX_BODY_BYTES,
    PayloadError,
    load_body,
    parse_report,
)
from dgx_spark.services import get_sampler, get_tracker

router = APIRouter()

_NUMBER = {"type": "number"}
_REPORT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "progress": {"type": "number", "minimum": 0, "maximum": 1},
        "epoch": {"type": "number", "minimum": 0},
        "total_epochs": {"type": "integer", "minimum": 1},
        "step": {"type": "integer", "minimum": 0},
        "total_steps": {"type": "integer", "minimum": 1},
        "throughput": {"type": "number", "minimum": 0, "description": "iterations per second"},
        "metrics": {"type": "object", "additionalProperties": _NUMBER, "maxProperties": 32},
        "source": {"type": "string", "enum": ["api", "helper"], "default": "api"},
    },
    "example": {
        "progress": 0.45,
        "epoch": 25,
        "total_epochs": 100,
        "step": 450,
        "total_steps": 1000,
        "metrics": {"train_loss": 0.342},
    },
}
_BY_PID_SCHEMA: dict[str, Any] = {
    **_REPORT_SCHEMA,
    "properties": {**_REPORT_SCHEMA["properties"], "pid": {"type": "integer", "minimum": 1}},
    "required": ["pid"],
    "example": {"pid": 12345, "progress": 0.45, "metrics": {"train_loss": 0.342}},
}


def _body_doc(schema: dict[str, Any]) -> dict[str, Any]:
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}


async def _read_body(request: Request) -> Any:
    """The decoded body, refusing anything over ``MAX_BODY_BYTES`` before reading it all."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise ApiError(413, f"body: larger than {MAX_BODY_BYTES} bytes", field="body")
    raw = bytearray()
    async for chunk in request.stream():
        raw += chunk
        if len(raw) > MAX_BODY_BYTES:
            raise ApiError(413, f"body: larger than {MAX_BODY_BYTES} bytes", field="body")
    try:
        return load_body(bytes(raw))
    except PayloadError as exc:
        raise ApiError(exc.status, str(exc), field=exc.field) from None


def _check(data: Any, extra: frozenset[str] = frozenset()) -> tuple[ProgressUpdate, str]:
    try:
        return parse_report(data, extra_fields=extra)
    except PayloadError as exc:
        raise ApiError(exc.status, str(exc), field=exc.field) from None


def _store(op: Operation, update: ProgressUpdate, source: str) -> dict[str, Any]:
    """Hand the report to the tracker and ask for a snapshot that shows it."""
    get_tracker().update(op.id, source, update)
    get_sampler().request_sample()
    accepted: dict[str, Any] = {
        key: getattr(update, key)
        for key in ("progress", "epoch", "total_epochs", "step", "total_steps", "throughput")
        if getattr(update, key) is not None
    }
    if update.metrics:
        accepted["metrics"] = dict(update.metrics)
    return {"success": True, "data": {"id": op.id, "pid": op.pid, "source": source, "accepted": accepted}}


def _find_by_pid(pid: int) -> Operation | None:
    """The live operation whose main process, or one of whose processes, is ``pid``."""
    operations = [op for op in get_sampler().latest.operations if op.is_live]
    for op in operations:
        if op.pid == pid:
            return op
    for op in operations:
        if pid in op.pids:
            return op
    return None


@router.post(
    "/api/dgx/operations/{op_id}/progress",
    summary="Report a job's progress",
    openapi_extra=_body_doc(_REPORT_SCHEMA),
)
async def report_progress(
    op_id: str, request: Request, actor: Annotated[Actor, Depends(ControlRoute("progress"))], control: Control,
) -> dict[str, Any]:
    """Store a progress report for one operation (token required).

    Every field is optional; ``progress`` is 0..1, epochs and steps are counts,
    ``metrics`` maps names to finite numbers (``train_loss``...).
    """
    data = await _read_body(request)

    def store() -> dict[str, Any]:
        update, source = _check(data)
        op = get_sampler().latest.find(op_id)
        if op is None:
            raise ApiError(404, f"no operation with id {op_id[:80]!r}", field="id")
        return _store(op, update, source)

    return control.report_progress(actor, op_id, store)


@router.post(
    "/api/dgx/progress",
    summary="Report progress by process id",
    openapi_extra=_body_doc(_BY_PID_SCHEMA),
)
async def report_progress_by_pid(
    request: Request, actor: Annotated[Actor, Depends(ControlRoute("progress"))], control: Control,
) -> dict[str, Any]:
    """Like the per-operation route, for a process that knows only its pid (token required)."""
    data = await _read_body(request)

    def store() -> dict[str, Any]:
        if not isinstance(data, dict):
            raise ApiError(422, "body: must be a JSON object", field="body")
        pid = data.get("pid")
        if isinstance(pid, bool) or not isinstance(pid, int) or pid < 1:
            raise ApiError(422, "pid: must be a positive whole number", field="pid")
        update, source = _check({k: v for k, v in data.items() if k != "pid"})
        op = _find_by_pid(pid)
        if op is None:
            raise ApiError(404, f"no live operation holds pid {pid}", field="pid")
        return _store(op, update, source)

    return control.report_progress(actor, None, store)
