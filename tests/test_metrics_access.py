"""Who may read ``GET /metrics``: the security layer in this process, with clients on and off loopback.

The layer wraps a stand-in app that answers 200 (the metrics themselves are read from
running copies of the app in ``tests/test_nodes_api.py``). ``DGX_SPARK_AUTH=local``: a scrape
from this machine needs nothing; from another machine it needs the bearer token, and a
login cookie is not enough. ``DGX_SPARK_AUTH=required``: the bearer token from anywhere.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from dgx_spark.security import sessions
from dgx_spark.security.middleware import security_layer
from dgx_spark.settings import settings
from tests.support.aio import run_coroutine

TOKEN = "metrics-access-token-0123456789abcdef"


async def _inner(scope: dict[str, Any], receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": b"dgx_spark_sampler_running 1.0\n"})


def scrape(layer: Any, client: str, headers: dict[str, str] | None = None, path: str = "/metrics") -> int:
    """The status the layer answers a GET of ``path`` from ``client``."""
    raw = [(b"host", b"127.0.0.1:3000")] + [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    scope = {"type": "http", "method": "GET", "path": path, "raw_path": path.encode(), "query_string": b"",
             "client": (client, 40000), "headers": raw, "scheme": "http", "http_version": "1.1"}
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    run_coroutine(layer(scope, receive, send))
    return int(sent[0]["status"])


def test_metrics_are_free_on_loopback_and_need_the_bearer_token_elsewhere(tmp_path: Path,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    credentials = sessions.Credentials(tmp_path, TOKEN)
    layer = security_layer(_inner, audit=lambda **_: None, credentials=credentials)
    cookie, _ = credentials.sessions.create()
    logged_in = {"Cookie": f"{sessions.SESSION_COOKIE}={cookie}"}
    bearer = {"Authorization": f"Bearer {TOKEN}"}
    assert not settings.auth_required  # the tests' default: DGX_SPARK_AUTH=local
    assert scrape(layer, "127.0.0.1") == 200
    assert scrape(layer, "::1") == 200
    assert scrape(layer, "10.0.0.5") == 401
    assert scrape(layer, "10.0.0.5", logged_in) == 401  # a login cookie is not a scrape's credential
    assert scrape(layer, "10.0.0.5", {"Authorization": "Bearer not-the-token-0123456789"}) == 401
    assert scrape(layer, "10.0.0.5", bearer) == 200
    assert scrape(layer, "10.0.0.5", logged_in, path="/api/dgx/operations") == 200  # the cookie opens the API
    monkeypatch.setattr(type(settings), "auth_required", property(lambda self: True))
    assert scrape(layer, "127.0.0.1") == 401
    assert scrape(layer, "127.0.0.1", bearer) == 200
