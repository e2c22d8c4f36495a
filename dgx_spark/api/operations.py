"""Read-only operation routes: list, one, health. They read the sampler's snapshot."""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import gzip
import json
import logging
import math
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Generic, TypeVar

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response
from starlette.types import Scope, Send

from dgx_spark.api.errors import ApiError
from dgx_spark.api.params import STATUSES_PATTERN, TYPES_PATTERN, Order, SortKey
from dgx_spark.collector.model import OPERATION_STATUSES, Operation, Snapshot
from dgx_spark.collector.query import OperationQuery, QueryError, apply_query, parse_query
from dgx_spark.health import components_payload, log_once
from dgx_spark.health import health as app_health
from dgx_spark.nodes.protocol import NODE_ID_PATTERN, node_headers
from dgx_spark.security.validation import has_surrogate
from dgx_spark.services import get_hub, get_sampler, short_lived_ended
from dgx_spark.state import loops as ui_loops

logger = logging.getLogger(__name__)
router = APIRouter()
Body = TypeVar("Body")


class _ListCache(Generic[Body]):
    """Encoded list bodies of the latest snapshot, one per query.

    Every request between two samples gets the same bytes, so they are encoded once
    per (snapshot, query) rather than once per request. When a new snapshot arrives,
    the first request for a query starts one build and waits for it; requests for
    the same query that arrive while it runs get the previous snapshot's body at
    once (a list is then one refresh behind for the milliseconds of the build),
    instead of every client waiting for it.
    """

    MAX_QUERIES = 64

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._sequence = -1
        self._bodies: dict[tuple[str | None, ...], Body] = {}
        self._previous: dict[tuple[str | None, ...], Body] = {}  # the snapshot before's bodies
        self._building: dict[tuple[str | None, ...], concurrent.futures.Future[Body]] = {}

    def _at(self, sequence: int) -> None:
        """Move on to ``sequence``'s bodies (call with the lock held)."""
        if sequence != self._sequence:
            self._previous = self._bodies if sequence == self._sequence + 1 else {}
            self._sequence, self._bodies, self._building = sequence, {}, {}

    def get(self, key: tuple[str | None, ...], sequence: int) -> Body | None:
        """The body for ``key`` at ``sequence``, if it was built already."""
        with self._lock:
            self._at(sequence)
            return self._bodies.get(key)

    def put(self, key: tuple[str | None, ...], sequence: int, body: Body) -> None:
        """Keep a body built for ``key`` at ``sequence`` (unless a newer snapshot exists)."""
        with self._lock:
            if sequence == self._sequence and len(self._bodies) < self.MAX_QUERIES:
                self._bodies[key] = body

    async def body(self, key: tuple[str | None, ...], sequence: int, build: Callable[[], Body]) -> Body:
        """The body for ``key`` at ``sequence``: built once, off the event loop, however many ask.

        While another request's build for it runs, the previous snapshot's body when there is one.
        """
        with self._lock:
            self._at(sequence)
            body = self._bodies.get(key)
            if body is not None:
                return body
            pending = self._building.get(key)
            first = pending is None
            if pending is None:
                pending = self._building[key] = concurrent.futures.Future()
            elif key in self._previous:
                return self._previous[key]
        if first:
            asyncio.get_running_loop().run_in_executor(None, self._build, key, sequence, build, pending)
        # Shielded: a request that goes away must not cancel the build the others wait for.
        return await asyncio.shield(asyncio.wrap_future(pending))

    def _build(
        self,
        key: tuple[str | None, ...],
        sequence: int,
        build: Callable[[], Body],
        pending: concurrent.futures.Future[Body],
    ) -> None:
        try:
            body = build()
        except BaseException as exc:  # noqa: BLE001 - handed to every waiting request
            pending.set_exception(exc)
        else:
            self.put(key, sequence, body)
            pending.set_result(body)
        finally:
            with self._lock:
                if self._building.get(key) is pending:
                    del self._building[key]


@dataclasses.dataclass(frozen=True)
class ListBody:
    """One list answer, plain and (when long enough to be worth it) gzip-compressed."""

    plain: bytes
    gzipped: bytes | None


_list_cache: _ListCache[ListBody] = _ListCache()


# Bodies at least this long are sent gzip-compressed to clients that accept it (built once per body).
GZIP_MIN_BYTES = 1024


def accepts_gzip(header: str | None) -> bool:
    """Whether an ``Accept-Encoding`` header accepts gzip (``gzip``, ``*``; not with ``q=0``)."""
    for part in (header or "").lower().split(","):
        coding, _, params = part.partition(";")
        if coding.strip() in ("gzip", "*"):
            weight = params.replace(" ", "").removeprefix("q=")
            try:
                return float(weight) > 0 if weight else True
            except ValueError:
                return False
    return False


def _encode(payload: Any) -> bytes:
    return json.dumps(payload, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode()


def _log_once(op_id: str, exc: Exception) -> None:
    log_once(logger, f"api:{op_id}", "operation %r cannot be encoded as JSON (%s: %s); it is listed with an "
             "error marker", _clean(op_id), type(exc).__name__, _clean(str(exc))[:200])


def _clean(value: Any) -> Any:
    """``value`` with text that is not valid UTF-8 replaced (U+FFFD) and non-finite numbers as null."""
    if isinstance(value, str):
        return "".join("\ufffd" if 0xD800 <= ord(c) <= 0xDFFF else c for c in value) if has_surrogate(value) else value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(_clean(k)): _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    return value


def error_marked(data: Mapping[str, Any], exc: Exception) -> dict[str, Any]:
    """An operation that could not be encoded: its cleaned fields plus ``encoding_error``."""
    marked = _clean(dict(data))
    marked["encoding_error"] = f"some fields could not be encoded ({type(exc).__name__}); shown cleaned"
    return marked


def operation_dict(op: Operation, now: float) -> dict[str, Any]:
    """One operation's API dict; a failure gives a minimal record with ``encoding_error``."""
    try:
        return op.to_api(now)
    except Exception as exc:  # noqa: BLE001 - one broken record must not break the list
        _log_once(str(op.id), exc)
        return {"id": _clean(str(op.id)), "type": _clean(str(op.type)), "name": _clean(str(op.name)),
                "status": _clean(str(op.status)),
                "encoding_error": f"this operation could not be read ({type(exc).__name__})"}


def encode_operation(data: Mapping[str, Any]) -> bytes:
    """One operation as JSON bytes, isolated: a failure is logged once and gives a marked, cleaned record."""
    try:
        return _encode(data)
    except (ValueError, TypeError, RecursionError) as exc:
        _log_once(str(data.get("id")), exc)
        try:
            return _encode(error_marked(data, exc))
        except (ValueError, TypeError, RecursionError):
            return _encode({"id": _clean(str(data.get("id"))), "encoding_error": type(exc).__name__})


def encode_list(items: Sequence[Mapping[str, Any]]) -> bytes:
    """``{"success": true, "data": [...]}`` with each operation encoded on its own."""
    return b'{"success":true,"data":[' + b",".join(encode_operation(item) for item in items) + b"]}"


@router.get("/api/dgx/operations", summary="List operations", response_class=Response)
async def list_operations(
    request: Request,
    type: str | None = Query(
        default=None, max_length=100, pattern=TYPES_PATTERN,
        description="Only these types (comma-separated): server, job, program.",
    ),
    q: str | None = Query(default=None, max_length=200, description="Search name, command, port, PID."),
    status: str | None = Query(
        default=None, max_length=200, pattern=STATUSES_PATTERN,
        description=f"Only these statuses (comma-separated): {', '.join(OPERATION_STATUSES)}.",
    ),
    sort: SortKey | None = Query(default=None, description="Sort key."),  # noqa: B008
    order: Order | None = Query(default=None, description="asc (default) or desc."),  # noqa: B008
    node: str | None = Query(
        default=None, max_length=32, pattern=NODE_ID_PATTERN,
        description="all: every node's operations; local or a node's id: that node's. Each item then "
                    "has node (its node's id) and stale (the node did not answer lately). "
                    "Without it: this machine's, as ever.",
    ),
) -> Response:
    """Every operation of the latest snapshot, in the API's shape; searched, filtered, sorted.

    Returns ``{"success": true, "data": [...]}``. With ``node``, remote nodes' last lists
    (kept by their pollers) are merged in, each item tagged with ``node`` and ``stale``.
    """
    try:
        query = parse_query(q, type, status, sort, order)
    except QueryError as err:
        raise ApiError(422, str(err), field=err.field) from err
    snapshot = get_sampler().latest
    hub = get_hub()
    if node is not None and node not in hub.ids() and node != "all":
        raise ApiError(404, f"no node with id {node!r}", field="node")
    # The nodes' version: a remote list that changed makes a new body.
    key = (q, type, status, sort, order, node, str(hub.version) if node is not None else None)
    built = await _list_cache.body(key, snapshot.sequence, lambda: _build_list(snapshot, query, node))
    body, headers = _list_answer(built, request.headers.get("accept-encoding"))
    return Response(content=body, media_type="application/json", headers=headers)


# The cache key of the list without a query (``list_operations``' parameters, all unset).
_PLAIN_LIST_KEY: tuple[str | None, ...] = (None,) * 7


def _build_list(snapshot: Snapshot, query: OperationQuery, node: str | None) -> ListBody:
    """The list body of ``snapshot`` for ``query`` (and ``node``), plain and gzip-compressed."""
    from dgx_spark.api.nodes import listed_items

    now = snapshot.taken_at
    items = [operation_dict(op, now) for op in snapshot.operations]
    if node is not None:
        items = listed_items(node, items, time.time())
    plain = encode_list(apply_query(items, query))
    return ListBody(plain, gzip.compress(plain, 1, mtime=0) if len(plain) >= GZIP_MIN_BYTES else None)


def _list_answer(built: ListBody, accept_encoding: str | None) -> tuple[bytes, dict[str, str]]:
    """The body and headers (besides the content type) a list answer is sent with."""
    # The node headers tell another copy of this app that a compatible node answers.
    headers = {**node_headers(), "Vary": "Accept-Encoding"}
    if built.gzipped is not None and accepts_gzip(accept_encoding):
        headers["Content-Encoding"] = "gzip"
        return built.gzipped, headers
    return built.plain, headers


async def send_plain_list(scope: Scope, send: Send) -> None:
    """Answer ``GET /api/dgx/operations`` without a query string, as ``list_operations`` does.

    The API's most asked-for answer, sent from the cache without FastAPI's routing and
    parameter parsing (see ``guard.ApiGuard``): same bytes, same headers.
    """
    snapshot = get_sampler().latest
    built = await _list_cache.body(_PLAIN_LIST_KEY, snapshot.sequence,
                                   lambda: _build_list(snapshot, parse_query(), None))
    accept = next((v.decode("latin-1") for k, v in scope.get("headers", ()) if k == b"accept-encoding"), None)
    body, headers = _list_answer(built, accept)
    raw = [(b"content-length", str(len(body)).encode()), (b"content-type", b"application/json")]
    raw += [(name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in headers.items()]
    await send({"type": "http.response.start", "status": 200, "headers": raw})
    await send({"type": "http.response.body", "body": body})


@router.get("/api/dgx/operations/{op_id}", summary="One operation", response_class=Response)
def get_operation(op_id: str) -> Response:
    """One operation by id; 404 when the latest snapshot does not hold it."""
    snapshot = get_sampler().latest
    operation = snapshot.find(op_id)
    if operation is None:
        raise ApiError(404, f"no operation with id {op_id[:80]!r}", field="id")
    data = encode_operation(operation_dict(operation, snapshot.taken_at))
    return Response(content=b'{"success":true,"data":' + data + b"}", media_type="application/json")


@router.get("/api/health", summary="Sampler health")
def health() -> dict[str, Any]:
    """How old the latest snapshot is and which probes are failing."""
    sampler = get_sampler()
    snapshot = sampler.latest
    age = None if snapshot.sequence == 0 else round(time.time() - snapshot.taken_at, 3)
    churn = short_lived_ended()
    components = _components(sampler, snapshot)
    return {
        "success": True,
        "data": {
            "status": "degraded" if any(c["status"] == "degraded" for c in components.values()) else "ok",
            "components": components,
            "degraded": [name for name, c in components.items() if c["status"] == "degraded"],
            "sampler_running": sampler.running,
            "sequence": snapshot.sequence,
            "taken_at": snapshot.taken_at or None,
            "age_seconds": age,
            "interval_seconds": sampler.interval,
            "duration_ms": snapshot.duration_ms,
            "cpu_ms": snapshot.cpu_ms,
            "sampler_cpu_seconds": round(sampler.cpu_seconds, 6),
            # "events": new, exec'd and ended processes come from the kernel; "scan": /proc is listed.
            "discovery_mode": sampler.discovery_mode,
            "discovery_mode_reason": sampler.discovery_mode_reason,
            "operation_count": len(snapshot.operations),
            "ui_loops": ui_loops.count(),
            # Quiet short-lived discovered commands: counted here, not listed (see events/churn.py).
            "short_lived_ended": churn[0] if churn else 0,
            "short_lived_window_seconds": churn[1] if churn else None,
            "errors": [
                {"probe": e.probe, "message": e.message, "since": e.since} for e in snapshot.errors
            ] + [
                # The database and the webhook are not probes, but a monitor reading errors must see them.
                {"probe": name, "message": components[name]["last_error"], "since": app_health.state(name).since}
                for name in ("database", "webhook") if components[name]["status"] == "degraded"
            ],
        },
    }


def _components(sampler: Any, snapshot: Any) -> dict[str, dict[str, Any]]:
    """Degraded components (database, nvml, sampler, webhook) with their last error and since when."""
    from dgx_spark.collector.gpu import NO_GPU_MESSAGE

    return components_payload(
        sampler_running=sampler.running,
        taken_at=snapshot.taken_at if snapshot.sequence else None,
        interval=sampler.interval,
        errors=[(e.probe, e.message, e.since) for e in snapshot.errors],
        gpu=snapshot.system.gpu if snapshot.system else None,
        no_gpu_message=NO_GPU_MESSAGE,
    )
