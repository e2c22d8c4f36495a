"""Asking one remote node's API with that node's token (backend only; never a browser).

- ``call(node, method, path, body)``: one request to ``/api/dgx/operations…`` on the node
  (a control action, or its log's end), answered as a ``NodeAnswer`` (its status, the
  envelope's data or error);
- ``follow_log(node, op_id, offset)``: the node's ``/logs/stream`` (server-sent events),
  as ``(lines, offset)`` batches while the node sends them.

``NodeUnreachable`` says the node did not answer (refused, timed out, cut off).
"""

from __future__ import annotations

import dataclasses
import urllib.parse
from collections.abc import AsyncIterator
from typing import Any

import httpx

from dgx_spark import format as fmt
from dgx_spark.nodes.poller import USER_AGENT
from dgx_spark.nodes.store import Node

OPERATIONS_PATH = "/api/dgx/operations"
# A control action may take a while on the node (a stop answers once its signal is sent).
CALL_TIMEOUT_SECONDS = 30.0
CONNECT_TIMEOUT_SECONDS = 5.0
# The node's stream sends a keep-alive every 15 s: twice that without a byte means it is gone.
STREAM_READ_TIMEOUT_SECONDS = 35.0
MAX_MESSAGE = 300


class NodeUnreachable(Exception):
    """The node did not answer (refused, timed out, or the connection broke)."""


@dataclasses.dataclass(frozen=True)
class NodeAnswer:
    """A node's answer: its HTTP status, and its envelope's ``data`` or ``error``."""

    status: int
    data: Any = None
    message: str = ""
    field: str | None = None
    code: str | None = None

    @property
    def ok(self) -> bool:
        """Whether the node did it (2xx)."""
        return 200 <= self.status < 300


def operation_path(op_id: str, tail: str = "") -> str:
    """``/api/dgx/operations/<id><tail>`` with the id quoted."""
    return f"{OPERATIONS_PATH}/{urllib.parse.quote(op_id, safe='')}{tail}"


def _headers(node: Node, accept: str = "application/json") -> dict[str, str]:
    return {"Authorization": f"Bearer {node.token}", "User-Agent": USER_AGENT, "Accept": accept}


def answer_of(status: int, content: bytes) -> NodeAnswer:
    """A ``NodeAnswer`` from a status and a body (an envelope, or anything else)."""
    try:
        body = fmt.loads_valid_json(content) if content else None
    except ValueError:
        body = None
    if not isinstance(body, dict):
        return NodeAnswer(status, None, "" if status < 400 else f"HTTP {status}")
    error = body.get("error")
    if status < 400 or not isinstance(error, dict):
        return NodeAnswer(status, body.get("data"), "" if status < 400 else f"HTTP {status}")
    field = error.get("field")
    code = error.get("code")
    return NodeAnswer(
        status,
        None,
        str(error.get("message") or f"HTTP {status}")[:MAX_MESSAGE],
        field[:64] if isinstance(field, str) else None,
        code[:64] if isinstance(code, str) else None,
    )


def call(node: Node, method: str, path: str, body: Any = None, *, params: dict[str, Any] | None = None,
         timeout: float = CALL_TIMEOUT_SECONDS) -> NodeAnswer:
    """One request to the node's API with its token.

    Raises:
        NodeUnreachable: No answer (refused, timed out, cut off).
    """
    limits = httpx.Timeout(timeout, connect=min(timeout, CONNECT_TIMEOUT_SECONDS))
    try:
        with httpx.Client(timeout=limits, follow_redirects=False) as http:
            response = http.request(method, node.url + path, json=body, params=params, headers=_headers(node))
    except httpx.HTTPError as exc:
        raise NodeUnreachable(f"{type(exc).__name__}: {str(exc)[:200]}") from exc
    return answer_of(response.status_code, response.content)


def sse_batches(buffer: str) -> tuple[list[tuple[list[str], int]], str]:
    """The complete ``data:`` events in ``buffer`` as ``(lines, offset)``, and what is left of it.

    Comments (``: keep-alive``) and events that are not ``{"lines": [...], "offset": N}`` are skipped.
    """
    batches: list[tuple[list[str], int]] = []
    *events, rest = buffer.replace("\r\n", "\n").split("\n\n")
    for event in events:
        data = "\n".join(line[5:].lstrip() for line in event.split("\n") if line.startswith("data:"))
        if not data:
            continue
        try:
            item = fmt.loads_valid_json(data)
        except ValueError:
            continue
        lines, offset = (item.get("lines"), item.get("offset")) if isinstance(item, dict) else (None, None)
        if isinstance(lines, list) and isinstance(offset, int) and not isinstance(offset, bool):
            batches.append(([str(line) for line in lines], offset))
    return batches, rest


async def follow_log(node: Node, op_id: str, offset: int) -> AsyncIterator[tuple[list[str], int] | NodeAnswer]:
    """Follow an operation's log on the node from ``offset`` (its ``/logs/stream``).

    Yields ``(lines, offset)`` batches as the node sends them; a ``NodeAnswer`` (then stops) when
    the node refuses (4xx/5xx). It ends when the node ends the stream (its log was quiet a while).

    Raises:
        NodeUnreachable: The node did not answer, or the stream broke.
    """
    limits = httpx.Timeout(STREAM_READ_TIMEOUT_SECONDS, connect=CONNECT_TIMEOUT_SECONDS)
    try:
        async with httpx.AsyncClient(timeout=limits, follow_redirects=False) as http, http.stream(
            "GET", node.url + operation_path(op_id, "/logs/stream"), params={"offset": offset},
            headers=_headers(node, "text/event-stream"),
        ) as response:
            if response.status_code != 200:
                yield answer_of(response.status_code, await response.aread())
                return
            buffer = ""
            async for text in response.aiter_text():
                buffer += text
                batches, buffer = sse_batches(buffer)
                for batch in batches:
                    yield batch
                if len(buffer) > 8 * 1024 * 1024:  # one event this big is not the node's
                    return
    except httpx.HTTPError as exc:
        raise NodeUnreachable(f"{type(exc).__name__}: {str(exc)[:200]}") from exc
