"""One ASGI layer in front of the UI, the websocket and the API."""

from __future__ import annotations

import json
import os
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from dgx_spark.settings import settings

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def allowed_hosts() -> frozenset[str]:
    """Host names (without port) that requests may address."""
    hosts = {"127.0.0.1", "localhost", "::1", settings.host}
    extra = os.environ.get("DGX_SPARK_ALLOWED_HOSTS", "")
    hosts.update(h.strip().lower() for h in extra.split(",") if h.strip())
    hosts.discard("0.0.0.0")
    hosts.discard("::")
    return frozenset(hosts)


def host_name(value: str) -> str:
    """The host part of a Host header, lower-cased, without port or brackets."""
    value = value.strip().lower()
    if value.startswith("["):
        return value[1 : value.find("]")] if "]" in value else value
    return value.rsplit(":", 1)[0] if value.count(":") == 1 else value


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            return value.decode("latin-1")
    return None


async def _refuse(scope: Scope, send: Send, status: int, code: str, message: str) -> None:
    body = json.dumps({"success": False, "error": {"code": code, "message": message}}).encode()
    if scope["type"] == "websocket":
        await send({"type": "websocket.close", "code": 1008, "reason": message[:120]})
        return
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})


def security_layer(app: ASGIApp) -> ASGIApp:
    """Wrap an ASGI app with the Host check (DNS-rebinding protection)."""
    hosts = allowed_hosts()

    async def guarded(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await app(scope, receive, send)
            return
        host = _header(scope, b"host")
        if host is None or host_name(host) not in hosts:
            await _refuse(scope, send, 400, "bad_host", f"host {host!r} is not served here")
            return
        await app(scope, receive, send)

    return guarded
