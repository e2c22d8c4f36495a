"""Control routes: launch, stop, start again, restart, remove, templates and logs (tail, follow, download).

Every mutating route depends on ``require_token``. Operations are named by id
only; log files are found from the id, never from a path the client sends.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any, Literal

from fastapi import APIRouter, Body, Depends, Query, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, StrictBool

from dgx_spark.api.errors import ApiError
from dgx_spark.api.streams import EVENT_STREAM_DOC, PLAIN_TEXT_DOC, capped_stream
from dgx_spark.collector import output
from dgx_spark.collector.containers import ContainerOutput
from dgx_spark.collector.output import LogSource, ProcessOutput
from dgx_spark.security.auth import request_is_authorized, require_token
from dgx_spark.security.throttle import LOG_STREAM_IDLE_SECONDS, note_audit_target
from dgx_spark.services import get_supervisor
from dgx_spark.supervisor import logs as oplogs
from dgx_spark.supervisor import templates as tpl
from dgx_spark.supervisor.supervisor import ControlError

router = APIRouter()

MAX_BODY_KEYS = 16
MAX_ID = 64
FOLLOW_POLL_SECONDS = 0.5
FOLLOW_IDLE_LIMIT = LOG_STREAM_IDLE_SECONDS  # DGX_SPARK_LOG_STREAM_IDLE_SECONDS


class StopRequest(BaseModel):
    """Body of a stop request: ``signal`` int (SIGINT), term (SIGTERM, default) or kill; ``force`` is kill."""

    model_config = ConfigDict(extra="forbid")
    force: StrictBool = False
    signal: Literal["int", "term", "kill"] = "term"


class RestartRequest(BaseModel):
    """Body of a restart request: the signal that stops the current run (default term)."""

    model_config = ConfigDict(extra="forbid")
    signal: Literal["int", "term", "kill"] = "term"


def _api_error(exc: ControlError) -> ApiError:
    details: dict[str, Any] = {"field": exc.field} if exc.field else {}
    return ApiError(exc.status, exc.message, code=exc.code, **details)


def _check_id(op_id: str) -> str:
    if len(op_id) > MAX_ID or not op_id.isascii() or not op_id.replace("-", "").isalnum():
        raise ApiError(404, f"no operation with id {op_id[:MAX_ID]!r}", field="id")
    return op_id


def _data(op: Any) -> dict[str, Any]:
    return op.to_api(time.time())


@router.get("/api/dgx/templates", summary="Launch templates")
def list_templates() -> dict[str, Any]:
    """The launch templates (built-in and from the user's templates.toml) and the env allow-list."""
    supervisor = get_supervisor()
    items = [t.to_api() for t in supervisor.templates().values()] + [tpl.custom_template_api()]
    return {
        "success": True,
        "data": items,
        "env_allow_list": list(tpl.env_allow_list()),
        "problems": supervisor.template_problems,
    }


@router.post(
    "/api/dgx/operations",
    summary="Launch an operation",
    status_code=201,
    dependencies=[Depends(require_token)],
)
def launch(body: Any = Body(...)) -> dict[str, Any]:  # noqa: B008 - FastAPI's idiom
    """Launch from a template (``template``, ``name``, ``params``) or a custom argv (``command``...)."""
    if not isinstance(body, dict):
        raise ApiError(422, "body: must be a JSON object", field="body")
    allowed = {"template", "name", "params", "type", "command", "cwd", "env", "port", "gpus", "restart"}
    unknown = [k for k in body if k not in allowed]
    if unknown:
        raise ApiError(422, f"{str(unknown[0])[:40]}: unknown field", field=str(unknown[0])[:40])
    try:
        op = get_supervisor().launch(body)
    except ControlError as exc:
        raise _api_error(exc) from exc
    note_audit_target(op.id)
    return {"success": True, "data": _data(op)}


@router.post(
    "/api/dgx/operations/{op_id}/stop",
    summary="Stop an operation",
    dependencies=[Depends(require_token)],
)
def stop(op_id: str, body: StopRequest | None = None) -> dict[str, Any]:
    """Signal the operation's process group (``signal``: int, term or kill); SIGKILL after the grace period.

    Stopping an ended launched operation whose restart policy scheduled a next run cancels that run.
    """
    _check_id(op_id)
    body = body or StopRequest()
    try:
        op = get_supervisor().stop(op_id, force=body.force, signal_name=body.signal)
    except ControlError as exc:
        raise _api_error(exc) from exc
    return {"success": True, "data": _data(op)}


@router.post(
    "/api/dgx/operations/{op_id}/restart",
    summary="Restart a running launched operation",
    dependencies=[Depends(require_token)],
)
def restart(op_id: str, body: RestartRequest | None = None) -> dict[str, Any]:
    """Stop the current run (``signal``, default term; SIGKILL after the grace period), then start a new run."""
    _check_id(op_id)
    body = body or RestartRequest()
    try:
        op = get_supervisor().restart(op_id, signal_name=body.signal)
    except ControlError as exc:
        raise _api_error(exc) from exc
    return {"success": True, "data": _data(op)}


@router.post(
    "/api/dgx/operations/{op_id}/start",
    summary="Start an ended launched operation again",
    dependencies=[Depends(require_token)],
)
def start_again(op_id: str) -> dict[str, Any]:
    """Start an ended launched operation again with its saved spec (same id)."""
    _check_id(op_id)
    try:
        op = get_supervisor().start_again(op_id)
    except ControlError as exc:
        raise _api_error(exc) from exc
    return {"success": True, "data": _data(op)}


@router.delete(
    "/api/dgx/operations/{op_id}",
    summary="Remove an ended launched operation",
    dependencies=[Depends(require_token)],
)
def forget(op_id: str) -> dict[str, Any]:
    """Forget an ended launched operation (its record, run files and logs)."""
    _check_id(op_id)
    try:
        get_supervisor().forget(op_id)
    except ControlError as exc:
        raise _api_error(exc) from exc
    return {"success": True, "data": {"id": op_id, "removed": True}}


def _log_file(op_id: str, request: Request) -> LogSource | None:
    """The log to read; another user's process shows its output only to a token holder."""
    _check_id(op_id)
    try:
        source = get_supervisor().find_log(op_id)
    except ControlError as exc:
        raise _api_error(exc) from exc
    if output.needs_token(source) and not request_is_authorized(request):
        raise ApiError(
            401,
            f"operation {op_id} runs as another user: its output is shown only with the token "
            "(send Authorization: Bearer <token>)",
            code="unauthorized",
        )
    return source


@router.get("/api/dgx/operations/{op_id}/logs", summary="The end of an operation's log")
def get_logs(
    request: Request,
    op_id: str,
    tail: int = Query(default=1000, ge=0, le=10000, description="How many lines from the end."),
    offset: int | None = Query(default=None, ge=0, le=2**62, description="Lines after this offset."),
) -> dict[str, Any]:
    """The last ``tail`` lines (ANSI codes stripped, secrets hidden), or the lines after ``offset``."""
    path = _log_file(op_id, request)
    read = output.read_tail(path, tail) if path is not None and offset is None else None
    if path is None or (offset is None and read is None):
        return {"success": True, "data": {"lines": [], "offset": 0, "truncated": False, "available": False}}
    if offset is not None:
        lines, new_offset = output.read_from(path, offset)
        return {"success": True, "data": {"lines": lines[-10000:], "offset": new_offset,
                                          "truncated": len(lines) > 10000, "available": True}}
    assert read is not None
    lines, size, truncated = read
    return {"success": True, "data": {"lines": lines, "offset": size, "truncated": truncated, "available": True}}


@router.get(
    "/api/dgx/operations/{op_id}/logs/stream",
    summary="Follow an operation's log (SSE)",
    response_class=StreamingResponse,
    responses=EVENT_STREAM_DOC,
)
async def stream_logs(
    request: Request,
    op_id: str,
    offset: int | None = Query(default=None, ge=0, le=2**62, description="Start after this offset."),
) -> StreamingResponse:
    """Server-sent events: ``data: {"lines": [...], "offset": N}`` whenever lines are appended."""
    path = _log_file(op_id, request)

    async def events() -> AsyncIterator[bytes]:
        position = offset
        if position is None:
            position = output.size_of(path) if path is not None else 0
        idle_since = last_sent = time.monotonic()
        yield b": following\n\n"
        # No request.is_disconnected() polling: under granian it cuts the stream's last chunk.
        # A client that went away is noticed by the response itself (its receive or the next send).
        while True:
            if path is not None:
                lines, position = await asyncio.to_thread(output.read_from, path, position)
                if lines:
                    idle_since = time.monotonic()
                    payload = json.dumps({"lines": lines, "offset": position})
                    yield f"data: {payload}\n\n".encode()
                    last_sent = time.monotonic()
            if time.monotonic() - idle_since > FOLLOW_IDLE_LIMIT:
                return
            if time.monotonic() - last_sent > 15:
                yield b": keep-alive\n\n"
                last_sent = time.monotonic()
            await asyncio.sleep(FOLLOW_POLL_SECONDS)

    return capped_stream(
        request, events(), media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )


@router.get(
    "/api/dgx/operations/{op_id}/logs/download",
    summary="Download the whole log",
    dependencies=[Depends(require_token)],
    response_class=StreamingResponse,
    responses=PLAIN_TEXT_DOC,
)
def download_logs(request: Request, op_id: str) -> StreamingResponse:
    """The whole log (rotated parts first), raw (secrets not hidden), as an attachment (token required)."""
    path = _log_file(op_id, request)
    if isinstance(path, ContainerOutput):
        found = path.tail(10000)
        if found is None:
            raise ApiError(404, f"operation {op_id}: its container engine cannot be asked for the log now", field="id")
        text = "".join(line + "\n" for line in found[0]).encode()
        return StreamingResponse(
            iter([text]),
            media_type="text/plain; charset=utf-8",
            headers={"Content-Disposition": f'attachment; filename="{op_id}.log"'},
        )
    if isinstance(path, ProcessOutput):
        opened = path.open()
        if opened is None:
            raise ApiError(404, f"operation {op_id} has no readable output now", field="id")
        opened.close()
        return StreamingResponse(
            output.iter_whole(path),
            media_type="text/plain; charset=utf-8",
            headers={"Content-Disposition": f'attachment; filename="{op_id}.log"'},
        )
    if path is None or not path.exists():
        raise ApiError(404, f"operation {op_id} has no log file", field="id")
    backups = get_supervisor().config.log_backups if get_supervisor().is_launched(op_id) else 0
    return StreamingResponse(
        oplogs.iter_whole(path, backups),
        media_type="text/plain; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{op_id}.log"'},
    )


