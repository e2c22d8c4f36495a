"""The API's own ASGI layer: routing errors, HEAD, body size and text checks before any route runs.

Only requests under ``/api/`` (and ``/metrics``) are touched (the Reflex app mounted
beneath the API would answer them with an HTML page). For those:

- a path no route has -> 404 envelope; a path that exists for other methods -> 405
  envelope with the right ``Allow`` header;
- ``HEAD`` runs the ``GET`` route and sends its status and headers only;
- a request body over ``MAX_BODY_BYTES`` -> 413 envelope;
- a JSON body holding text that is not valid UTF-8 -> 422 envelope naming the field:
  invalid UTF-8 bytes, or a lone surrogate (``"\\ud800"``) in any key or value. The
  route never sees such a body, so nothing of it is stored or kept.

A state-changing request refused here (413, 422) leaves one trace: its audit row
(``failed``, with the status and why), named by the control route that would have
served it, like the control service's rows for other invalid input.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable, Collection, Mapping, MutableMapping, Sequence
from typing import Any

from starlette.routing import BaseRoute, Match, Mount

from dgx_spark.security.envelope import error_body
from dgx_spark.security.middleware import client_address, read_body, with_security_headers
from dgx_spark.security.validation import surrogate_path

logger = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
# Names a state-changing request (action, target), or None (``dgx_spark/api/actor.py``'s describe_control).
Describe = Callable[[Any], tuple[str, str | None] | None]
# Queues one audit row (``AuditLog.record_soon``); never raises.
AuditSoon = Callable[..., None]
# Sends a route's whole answer to a GET without a query string (``operations.send_plain_list``).
PlainAnswer = Callable[[Scope, Send], Awaitable[None]]

API_PREFIX = "/api/"
# The largest request body any API route takes (launch bodies included); progress reports: 16 KiB.
MAX_BODY_BYTES = 64 * 1024
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
# A body over the limit is still read (and dropped) up to this size before the 413 goes out.
DRAIN_BYTES = 8 * 1024 * 1024


async def send_error(send: Send, status: int, message: str, code: str | None = None,
                     headers: Sequence[tuple[bytes, bytes]] = (), **details: Any) -> None:
    """Send an error in the JSON envelope."""
    body = json.dumps(error_body(status, message, code, **details)).encode()
    await send({
        "type": "http.response.start",
        "status": status,
        "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                    *headers],
    })
    await send({"type": "http.response.body", "body": body})


_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")


def _best_match(routes: Sequence[BaseRoute], scope: Scope) -> Match:
    best = Match.NONE
    for route in routes:
        if isinstance(route, Mount) and route.path == "":
            continue  # the Reflex app mounted beneath: it takes every path
        match, _ = route.matches(scope)
        if match == Match.FULL:
            return match
        if match == Match.PARTIAL:
            best = match
    return best


def allowed_methods(routes: Sequence[BaseRoute], scope: Scope) -> tuple[bool, set[str]]:
    """(whether a route takes this exact request, the methods the routes with this path take)."""
    match = _best_match(routes, scope)
    if match == Match.FULL:
        return True, set()
    if match == Match.NONE:
        return False, set()
    methods = {m for m in _METHODS if _best_match(routes, {**scope, "method": m}) == Match.FULL}
    if "GET" in methods:
        methods.add("HEAD")
    return False, methods


async def _drain(receive: Receive, limit: int) -> None:
    """Read and drop the rest of a request body, at most ``limit`` bytes."""
    size = 0
    while size <= limit:
        message = await receive()
        if message["type"] != "http.request":
            return
        size += len(message.get("body", b""))
        if not message.get("more_body", False):
            return


def body_problem(body: bytes) -> tuple[str, str] | None:
    """(field, message) when a JSON body holds text that is not valid UTF-8, else None.

    A body that is not JSON at all is left to the route (it says what it expects).
    """
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        return "body", f"not valid UTF-8 (byte {exc.start})"
    try:
        data = json.loads(text)
    except (ValueError, RecursionError):
        return None
    where = surrogate_path(data)
    if where is None:
        return None
    return where, "must be valid UTF-8 text (a lone surrogate such as \\ud800 is not)"


class ApiGuard:
    """ASGI middleware for the FastAPI app: see the module docstring."""

    def __init__(
        self,
        app: ASGIApp,
        routes: Sequence[BaseRoute],
        max_body: int = MAX_BODY_BYTES,
        prefix: str = API_PREFIX,
        describe: Describe | None = None,
        audit: AuditSoon | None = None,
        paths: Collection[str] = (),
        plain: Mapping[str, PlainAnswer] | None = None,
    ) -> None:
        """Wrap ``app``; ``routes`` is the API router's (live) route list; paths under ``prefix`` are checked.

        ``paths`` are checked too (the API's routes outside the prefix, such as ``/metrics``).

        ``describe`` and ``audit`` name and record the state-changing requests refused here
        (without them nothing is audited).

        ``plain`` answers a ``GET`` of one of its paths without a query string itself,
        before routing (the routes' own answer, sent from a cache).
        """
        self.app = app
        self.routes = routes
        self.max_body = max_body
        self.prefix = prefix
        self.describe = describe
        self.audit = audit
        self.paths = frozenset(paths)
        self.plain = dict(plain or {})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Check one request, then hand it on (or answer it)."""
        path: str = scope.get("path", "")
        if scope["type"] != "http" or not (
            path.startswith(self.prefix) or path == self.prefix.rstrip("/") or path in self.paths
        ):
            await self.app(scope, receive, send)
            return
        method = str(scope.get("method", "GET")).upper()
        if method == "GET" and not scope.get("query_string") and (answer := self.plain.get(path)) is not None:
            await answer(scope, send)
            return
        found, methods = allowed_methods(self.routes, scope)
        head = False
        if not found and method == "HEAD":
            found, _ = allowed_methods(self.routes, {**scope, "method": "GET"})
            head = found
        if not found:
            if methods:
                allow = ", ".join(sorted(methods))
                await send_error(send, 405, f"{method[:16]} is not allowed here; allowed: {allow}",
                                 headers=[(b"allow", allow.encode())])
            else:
                await send_error(send, 404, "no such API route", field="path")
            return
        if head:
            await self._head(scope, receive, send)
            return
        if method in _BODY_METHODS:
            declared = next((v for k, v in scope.get("headers", ()) if k == b"content-length"), None)
            too_large = declared is not None and (not declared.isdigit() or int(declared) > self.max_body)
            body = None if too_large else await read_body(receive, self.max_body)
            if body is None:
                # Read (and drop) what the client is still sending, up to a point, so that it
                # gets the answer rather than a broken pipe.
                await _drain(receive, DRAIN_BYTES)
                message = f"body: larger than {self.max_body} bytes"
                self._audit_refusal(scope, 413, message)
                await send_error(send, 413, message, field="body", headers=[(b"connection", b"close")])
                return
            if problem := body_problem(body):
                field, reason = problem
                self._audit_refusal(scope, 422, f"{field}: {reason}")
                await send_error(send, 422, f"{field}: {reason}", field=field)
                return
            receive = _replay(body, receive)
        await self.app(scope, receive, send)

    def _audit_refusal(self, scope: Scope, status: int, detail: str) -> None:
        """The audit row of a state-changing request refused here (none for a path no control route has)."""
        if self.describe is None or self.audit is None:
            return
        try:
            named = self.describe(scope)
            if named is None:
                return
            action, target = named
            self.audit(action=action, outcome="failed", target=target, client=client_address(scope),
                       status=status, via="api", detail=detail[:300])
        except Exception:  # the audit row is a record; the refusal stands without it
            logger.warning("could not audit a refused request to %s", str(scope.get("path", ""))[:200], exc_info=True)

    async def _head(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Run the GET route and send its status and headers only (a stream is ended at once)."""
        done = asyncio.Event()

        async def head_send(message: Message) -> None:
            if done.is_set():
                return
            if message["type"] == "http.response.start":
                await send(message)
            elif message["type"] == "http.response.body":
                done.set()
                await send({"type": "http.response.body", "body": b"", "more_body": False})

        async def head_receive() -> Message:
            if done.is_set():
                return {"type": "http.disconnect"}
            return await receive()

        task = asyncio.ensure_future(self.app({**scope, "method": "GET"}, head_receive, head_send))
        waiter = asyncio.ensure_future(done.wait())
        try:
            await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            waiter.cancel()
            if not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if not task.cancelled() and task.exception() is not None and not done.is_set():
            raise task.exception()  # type: ignore[misc]


def _replay(body: bytes, receive: Receive) -> Receive:
    """A ``receive`` that gives the already-read body first, then the real channel."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


def refuse_unroutable_paths(app: ASGIApp) -> ASGIApp:
    """Answer requests whose path holds a newline (``op-%0a/logs``) with a 404 of our own.

    Reflex's top router cannot match such a path and would answer a bare plain-text
    404 before the security layer and the API see it. No route or id has a newline.
    """
    async def outer(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket") or "\n" not in scope.get("path", ""):
            await app(scope, receive, send)
            return
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008})
            return
        send = with_security_headers(send)
        if scope["path"].startswith(API_PREFIX):
            await send_error(send, 404, "no such API route or operation", field="path")
            return
        await send({"type": "http.response.start", "status": 404,
                    "headers": [(b"content-type", b"text/plain; charset=utf-8"), (b"content-length", b"9")]})
        await send({"type": "http.response.body", "body": b"Not Found"})

    return outer
