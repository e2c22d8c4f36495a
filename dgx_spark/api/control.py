"""Control routes: launch, stop, start again, restart, remove, templates and logs (tail, follow, download).

Every mutating route is a control route: it declares its action (``ControlRoute``) and calls
``ControlService`` with the caller, which checks the login, throttles, holds the operation and
writes the audit row. Operations are named by id only; log files are found from the id, never
from a path the client sends.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, Depends, Query, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, StrictBool

from dgx_spark.api.actor import Control, ControlRoute, require_token, token_or_login
from dgx_spark.api.errors import ApiError
from dgx_spark.api.streams import EVENT_STREAM_DOC, PLAIN_TEXT_DOC, capped_stream
from dgx_spark.collector import logfile as oplogs
from dgx_spark.collector import output
from dgx_spark.collector.containers import ContainerOutput
from dgx_spark.collector.output import LogSource, ProcessOutput
from dgx_spark.control.service import Actor, check_operation_id
from dgx_spark.services import get_supervisor
from dgx_spark.settings import settings
from dgx_spark.supervisor import templates as tpl

router = APIRouter()

MAX_BODY_KEYS = 16
FOLLOW_POLL_SECONDS = 0.5
FOLLOW_IDLE_LIMIT = settings.limits.log_stream_idle_seconds  # DGX_SPARK_LOG_STREAM_IDLE_SECONDS


class StopRequest(BaseModel):
    """Body of a stop request: ``signal`` int (SIGINT), term (SIGTERM, default) or kill; ``force`` is kill."""

    model_config = ConfigDict(extra="forbid")
    force: StrictBool = False
    signal: Literal["int", "term", "kill"] = "term"


class RestartRequest(BaseModel):
    """Body of a restart request: the signal that stops the current run (default term)."""

    model_config = ConfigDict(extra="forbid")
    signal: Literal["int", "term", "kill"] = "term"


def _check_id(op_id: str) -> str:
    return check_operation_id(op_id)  # ControlError not_found: the API's one handler answers 404


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


# Every route below that changes something declares its action and calls the control service
# with the caller: login, throttle, one action per operation at a time and the audit are done there.


@router.post("/api/dgx/operations", summary="Launch an operation", status_code=201)
def launch(
    actor: Annotated[Actor, Depends(ControlRoute("launch"))], control: Control,
    body: Any = Body(...),  # noqa: B008 - FastAPI's idiom
) -> dict[str, Any]:
    """Launch from a template (``template``, ``name``, ``params``) or a custom argv (``command``...)."""
    op = control.launch(actor, body)
    return {"success": True, "data": _data(op)}


@router.post("/api/dgx/operations/{op_id}/stop", summary="Stop an operation")
def stop(
    op_id: str, actor: Annotated[Actor, Depends(ControlRoute("stop"))], control: Control,
    body: StopRequest | None = None,
) -> dict[str, Any]:
    """Signal the operation's process group (``signal``: int, term or kill); SIGKILL after the grace period.

    Stopping an ended launched operation whose restart policy scheduled a next run cancels that run.
    """
    body = body or StopRequest()
    op = control.stop(actor, op_id, force=body.force, signal_name=body.signal)
    return {"success": True, "data": _data(op)}


@router.post("/api/dgx/operations/{op_id}/restart", summary="Restart a running launched operation")
def restart(
    op_id: str, actor: Annotated[Actor, Depends(ControlRoute("restart"))], control: Control,
    body: RestartRequest | None = None,
) -> dict[str, Any]:
    """Stop the current run (``signal``, default term; SIGKILL after the grace period), then start a new run."""
    body = body or RestartRequest()
    op = control.restart(actor, op_id, signal_name=body.signal)
    return {"success": True, "data": _data(op)}


@router.post("/api/dgx/operations/{op_id}/start", summary="Start an ended launched operation again")
def start_again(
    op_id: str, actor: Annotated[Actor, Depends(ControlRoute("start"))], control: Control,
) -> dict[str, Any]:
    """Start an ended launched operation again with its saved spec (same id)."""
    op = control.start_again(actor, op_id)
    return {"success": True, "data": _data(op)}


@router.delete("/api/dgx/operations/{op_id}", summary="Remove an ended launched operation")
def forget(
    op_id: str, actor: Annotated[Actor, Depends(ControlRoute("remove"))], control: Control,
) -> dict[str, Any]:
    """Forget an ended launched operation (its record, run files and logs)."""
    control.remove(actor, op_id)
    return {"success": True, "data": {"id": op_id, "removed": True}}


def _log_file(op_id: str, request: Request) -> LogSource | None:
    """The log to read; another user's process shows its output only to a token holder."""
    _check_id(op_id)
    source = get_supervisor().find_log(op_id)
    if output.needs_token(source) and not token_or_login(request):
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
        position = offset if offset is not None else (output.size_of(path) if path is not None else 0)
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


