"""Nodes: add, list and remove other DGX machines; their operation routes, forwarded.

``GET/POST /api/dgx/nodes``, ``GET/DELETE /api/dgx/nodes/{node}``; and every
``/api/dgx/operations…`` route as ``/api/dgx/nodes/{node}/operations…``: the
request is sent on to that node with its token (never the caller's credentials)
and answered with the node's status code and body; 502 ``node_unreachable`` when
the node does not answer, 502 ``node_incompatible`` when what answers is not the
API. ``local`` is this machine (forwarded to itself, so it behaves the same).
"""

from __future__ import annotations

import time
import urllib.parse
from collections.abc import AsyncIterator
from typing import Annotated, Any

import httpx
from fastapi import APIRouter, Body, Depends, Path, Request
from fastapi.responses import Response, StreamingResponse

from dgx_spark.api.actor import Control, ControlRoute, require_token
from dgx_spark.api.errors import ApiError
from dgx_spark.api.streams import EVENT_STREAM_DOC, PLAIN_TEXT_DOC, capped_stream
from dgx_spark.control.service import Actor, ControlService
from dgx_spark.nodes.hub import node_payload, nodes_payload, remote_items, tagged
from dgx_spark.nodes.poller import USER_AGENT
from dgx_spark.nodes.protocol import ALL_NODES, LOCAL_NODE, NODE_ID_PATTERN
from dgx_spark.services import get_hub, get_sampler, get_services
from dgx_spark.settings import settings

router = APIRouter()

# A forwarded control action may take a while on the node (a stop waits for its signal to be sent).
FORWARD_TIMEOUT_SECONDS = 30.0
CONNECT_TIMEOUT_SECONDS = 5.0
NODE_PREFIX = "/api/dgx/nodes/{node}/operations"
# Headers of the node's answer that are passed on (the rest belongs to that hop).
_PASSED_HEADERS = ("content-type", "content-disposition", "cache-control", "retry-after", "allow",
                   "x-accel-buffering")
_FORWARDED_TYPES = ("application/json", "text/event-stream", "text/plain")
BAD_GATEWAY: dict[int | str, dict[str, Any]] = {
    502: {"description": "The node is unreachable, or what answers is not the API (error.node names it)"},
}

NodeId = Path(..., pattern=NODE_ID_PATTERN, max_length=32, description="local, or a node's id")


# ----------------------------------------------------------------------------- the nodes


@router.get("/api/dgx/nodes", summary="Nodes and their health")
def list_nodes() -> dict[str, Any]:
    """This machine (``local``) and each remote node: status, latency, version, last seen, error."""
    return {"success": True, "data": nodes_payload(get_hub(), get_sampler(), time.time())}


@router.post("/api/dgx/nodes", summary="Add a node", status_code=201)
def add_node(
    actor: Annotated[Actor, Depends(ControlRoute("node_add"))], control: Control,
    body: Any = Body(...),  # noqa: B008 - FastAPI's idiom
) -> dict[str, Any]:
    """Add a node: ``{"name", "url", "token"}`` (its API token, kept 0600 here, never shown).

    Answers once the node's first poll is done (or timed out), with what it found.
    """
    if not isinstance(body, dict):
        raise ApiError(422, "body: must be a JSON object", field="body")
    unknown = [key for key in body if key not in ("name", "url", "token")]
    if unknown:
        raise ApiError(422, f"{str(unknown[0])[:40]}: unknown field", field=str(unknown[0])[:40])
    node, state = control.add_node(actor, body.get("name"), body.get("url"), body.get("token"))
    return {"success": True, "data": node_payload(node, state, time.time(), get_hub().interval)}


@router.get("/api/dgx/nodes/{node}", summary="One node and its health")
def get_node(node: str = NodeId) -> dict[str, Any]:
    """One node (``local`` included); 404 when there is none with this id."""
    for item in nodes_payload(get_hub(), get_sampler(), time.time()):
        if item["id"] == node:
            return {"success": True, "data": item}
    raise ApiError(404, f"no node with id {node!r}", field="node")


@router.delete("/api/dgx/nodes/{node}", summary="Remove a node")
def remove_node(
    actor: Annotated[Actor, Depends(ControlRoute("node_remove"))], control: Control, node: str = NodeId,
) -> dict[str, Any]:
    """Forget a node and its token; its poller stops."""
    removed = control.remove_node(actor, node)
    return {"success": True, "data": {"id": removed.id, "removed": True}}


# ----------------------------------------------------------------------------- ?node= on the list


def listed_items(node: str, local: list[dict[str, Any]], now: float) -> list[dict[str, Any]]:
    """The operations ``GET /api/dgx/operations?node=…`` lists, each with ``node`` and ``stale``.

    Raises:
        ApiError: 404 when ``node`` names no node.
    """
    hub = get_hub()
    if node == LOCAL_NODE:
        return tagged(local, LOCAL_NODE, False)
    if node == ALL_NODES:
        return tagged(local, LOCAL_NODE, False) + (remote_items(hub, None, now) or [])
    items = remote_items(hub, node, now)
    if items is None:
        raise ApiError(404, f"no node with id {node[:40]!r}", field="node")
    return items


# ----------------------------------------------------------------------------- forwarding


def _target(node: str) -> tuple[str, str]:
    """(base URL, token) of a node.

    Raises:
        ApiError: 404 when there is no such node; 502 when its last poll found it incompatible.
    """
    if node == LOCAL_NODE:
        return settings.base_url, get_services().credentials.token
    hub = get_hub()
    found = hub.node(node)
    if found is None:
        raise ApiError(404, f"no node with id {node[:40]!r}", field="node")
    poller = hub.poller(node)
    if poller is not None and poller.state.status == "incompatible":
        # Its answers cannot be taken for the API's: nothing is sent to it.
        raise ApiError(502, f"node {node} ({found.url}) is not a compatible DGX Spark node: {poller.state.error}",
                       "node_incompatible", node=node)
    return found.url, found.token


def _unreachable(node: str, url: str, exc: Exception) -> ApiError:
    if isinstance(exc, httpx.TimeoutException):
        why = f"no answer within {FORWARD_TIMEOUT_SECONDS:g} s"
    else:
        why = f"{type(exc).__name__}: {str(exc)[:200]}"
    return ApiError(502, f"node {node} ({url}) is unreachable: {why}", "node_unreachable", node=node)


async def forward(request: Request, node: str, rest: str = "", *, stream: bool = False) -> Response:
    """Send this request on to ``node``'s ``/api/dgx/operations{rest}`` and answer with its answer.

    Raises:
        ApiError: 404 unknown node; 502 unreachable or not the API.
    """
    base, token = _target(node)
    url = base + "/api/dgx/operations" + rest
    if request.url.query:
        url += "?" + request.url.query
    headers = {"Authorization": f"Bearer {token}", "User-Agent": USER_AGENT,
               "Accept": "text/event-stream" if stream else "application/json"}
    content_type = request.headers.get("content-type")
    if content_type:
        headers["Content-Type"] = content_type[:200]
    body = await request.body() if request.method in ("POST", "DELETE") else None
    timeout = httpx.Timeout(FORWARD_TIMEOUT_SECONDS, connect=CONNECT_TIMEOUT_SECONDS)
    client = httpx.AsyncClient(timeout=timeout, follow_redirects=False)
    try:
        upstream = await client.send(
            client.build_request(request.method, url, headers=headers, content=body), stream=True
        )
    except httpx.HTTPError as exc:
        await client.aclose()
        raise _unreachable(node, base, exc) from exc
    passed = {k: v for k, v in upstream.headers.items() if k.lower() in _PASSED_HEADERS}
    kind = upstream.headers.get("content-type", "").split(";")[0].strip().lower()

    async def close() -> None:
        await upstream.aclose()
        await client.aclose()

    if kind not in _FORWARDED_TYPES:
        await close()
        raise ApiError(502, f"node {node} answered HTTP {upstream.status_code} with "
                            f"{kind[:60] or 'no content type'}, not the DGX Spark API",
                       "node_incompatible", node=node)
    if request.method != "GET" and upstream.status_code < 400:
        get_hub().wake(node)  # its list changes now: poll it at once
    if kind == "application/json" or upstream.status_code >= 400:
        try:
            content = await upstream.aread()
        except httpx.HTTPError as exc:
            raise _unreachable(node, base, exc) from exc
        finally:
            await close()
        return Response(content=content, status_code=upstream.status_code, headers=passed)

    async def relay() -> AsyncIterator[bytes]:
        try:
            async for chunk in upstream.aiter_raw():
                yield chunk
        except httpx.HTTPError:
            return  # the node went away mid-stream: the stream ends (an EventSource reconnects)
        finally:
            await close()

    passed.pop("content-type", None)
    if kind == "text/event-stream":
        try:
            return capped_stream(request, relay(), media_type="text/event-stream", headers=passed)
        except ApiError:
            await close()
            raise
    return StreamingResponse(relay(), status_code=upstream.status_code, media_type=kind, headers=passed)


def _op_path(op_id: str, tail: str = "") -> str:
    return "/" + urllib.parse.quote(op_id, safe="") + tail


_FORWARDED = "Forwarded to the node with its token; the node's status code and body (502 when unreachable)."


@router.get(NODE_PREFIX, summary="A node's operations (forwarded)", response_class=Response,
            responses=BAD_GATEWAY)
async def node_operations(request: Request, node: str = NodeId) -> Response:
    """``GET /api/dgx/operations`` on the node (same query parameters). """
    return await forward(request, node)


async def forward_control(request: Request, actor: Actor, control: ControlService, action: str, node: str,
                          op_id: str | None, rest: str = "") -> Response:
    """Forward a control request through the control service (login, throttle, one at a time, audit)."""
    return await control.forward(actor, action, node, op_id, lambda: forward(request, node, rest),
                                 answered=lambda response: response.status_code)


@router.post(NODE_PREFIX, summary="Launch on a node (forwarded)", response_class=Response,
             responses=BAD_GATEWAY, status_code=201)
async def node_launch(
    request: Request, actor: Annotated[Actor, Depends(ControlRoute("launch"))], control: Control,
    node: str = NodeId, body: Any = Body(...),  # noqa: B008
) -> Response:
    """``POST /api/dgx/operations`` on the node (same body)."""
    del body  # declared for the OpenAPI; the raw body is forwarded
    return await forward_control(request, actor, control, "launch", node, None)


@router.get(NODE_PREFIX + "/{op_id}", summary="One operation of a node (forwarded)", response_class=Response,
            responses=BAD_GATEWAY)
async def node_operation(request: Request, op_id: str, node: str = NodeId) -> Response:
    """``GET /api/dgx/operations/{op_id}`` on the node."""
    return await forward(request, node, _op_path(op_id))


@router.delete(NODE_PREFIX + "/{op_id}", summary="Remove an operation of a node (forwarded)",
               response_class=Response, responses=BAD_GATEWAY)
async def node_remove(
    request: Request, op_id: str, actor: Annotated[Actor, Depends(ControlRoute("remove"))], control: Control,
    node: str = NodeId,
) -> Response:
    """``DELETE /api/dgx/operations/{op_id}`` on the node."""
    return await forward_control(request, actor, control, "remove", node, op_id, _op_path(op_id))


def _post_route(action: str, summary: str) -> None:
    as_actor = Depends(ControlRoute(action))  # a default, not an annotation: those are read from the module

    async def handler(request: Request, op_id: str, control: Control, node: str = NodeId,
                      actor: Actor = as_actor) -> Response:
        return await forward_control(request, actor, control, action, node, op_id, _op_path(op_id, f"/{action}"))

    handler.__name__ = f"node_{action}"
    handler.__doc__ = f"``POST /api/dgx/operations/{{op_id}}/{action}`` on the node (same body). {_FORWARDED}"
    router.post(NODE_PREFIX + "/{op_id}/" + action, summary=summary, response_class=Response,
                responses=BAD_GATEWAY)(handler)


for _action, _summary in (
    ("stop", "Stop an operation of a node (forwarded)"),
    ("start", "Start an operation of a node again (forwarded)"),
    ("restart", "Restart an operation of a node (forwarded)"),
    ("progress", "Report progress to a node (forwarded)"),
):
    _post_route(_action, _summary)


@router.get(NODE_PREFIX + "/{op_id}/logs", summary="The end of a node's operation's log (forwarded)",
            response_class=Response, dependencies=[Depends(require_token)], responses=BAD_GATEWAY)
async def node_logs(request: Request, op_id: str, node: str = NodeId) -> Response:
    """``GET /api/dgx/operations/{op_id}/logs`` on the node (``tail``, ``offset``); needs the token here."""
    return await forward(request, node, _op_path(op_id, "/logs"))


@router.get(NODE_PREFIX + "/{op_id}/logs/stream", summary="Follow a node's operation's log (forwarded SSE)",
            response_class=StreamingResponse, dependencies=[Depends(require_token)],
            responses={**EVENT_STREAM_DOC, **BAD_GATEWAY})
async def node_logs_stream(request: Request, op_id: str, node: str = NodeId) -> Response:
    """``GET /api/dgx/operations/{op_id}/logs/stream`` on the node, relayed as it comes; needs the token here."""
    return await forward(request, node, _op_path(op_id, "/logs/stream"), stream=True)


@router.get(NODE_PREFIX + "/{op_id}/logs/download", summary="Download a node's operation's log (forwarded)",
            response_class=StreamingResponse, dependencies=[Depends(require_token)],
            responses={**PLAIN_TEXT_DOC, **BAD_GATEWAY})
async def node_logs_download(request: Request, op_id: str, node: str = NodeId) -> Response:
    """``GET /api/dgx/operations/{op_id}/logs/download`` on the node; needs the token here."""
    return await forward(request, node, _op_path(op_id, "/logs/download"))
