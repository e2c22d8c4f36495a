"""The API guard answers a GET of a ``plain`` path without a query itself; every other request is routed."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

from dgx_spark.api.guard import ApiGuard
from tests.support.aio import run_coroutine

PATH = "/api/dgx/operations"


def _guard() -> tuple[ApiGuard, list[str]]:
    """A guard over a real FastAPI app with the route; ``calls`` says who answered each request."""
    calls: list[str] = []
    api = FastAPI()

    @api.get(PATH)
    def routed() -> dict[str, Any]:
        calls.append("route")
        return {"success": True, "data": []}

    async def plain(scope: Any, send: Any) -> None:
        calls.append("plain")
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
        await send({"type": "http.response.body", "body": b"{}"})

    return ApiGuard(api, routes=api.router.routes, plain={PATH: plain}), calls


def _ask(guard: ApiGuard, method: str, path: str, query: bytes = b"") -> int:
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "method": method, "path": path, "raw_path": path.encode(), "query_string": query,
             "headers": [], "root_path": "", "scheme": "http", "server": ("127.0.0.1", 80),
             "client": ("127.0.0.1", 1234), "http_version": "1.1", "asgi": {"version": "3.0"}}
    run_coroutine(guard(scope, receive, send))
    return int(next(m["status"] for m in sent if m["type"] == "http.response.start"))


def test_only_a_get_without_a_query_is_answered_before_routing() -> None:
    guard, calls = _guard()
    assert _ask(guard, "GET", PATH) == 200
    assert calls == ["plain"]
    calls.clear()
    assert _ask(guard, "GET", PATH, b"order=asc") == 200
    assert _ask(guard, "HEAD", PATH) == 200
    assert calls == ["route", "route"]
    calls.clear()
    assert _ask(guard, "POST", PATH) == 405  # the guard's own checks still apply to the path
    assert _ask(guard, "GET", PATH + "/") == 404
    assert calls == []
