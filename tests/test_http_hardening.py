"""HTTP hardening against the real backend: headers, HEAD, 405, 404/413/422 envelopes, caps, audit flood."""

from __future__ import annotations

import contextlib
import http.client
import json
import sys
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from tests.support.dashboard import TEST_TOKEN, UNTHROTTLED, Dashboard, wait_until

# Small stream caps so that the test reaches them with a handful of connections.
BACKEND_ENV = {
    **UNTHROTTLED,
    "DGX_SPARK_LOG_STREAMS_PER_CLIENT": "2",
    "DGX_SPARK_LOG_STREAMS_TOTAL": "3",
}
AUTH = {"Authorization": f"Bearer {TEST_TOKEN}"}
SLEEPER = [sys.executable, "-c", "import time; time.sleep(600)"]


def raw_request(
    dash: Dashboard, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    """A request with the path and body sent exactly as given: (status, headers, body)."""
    conn = http.client.HTTPConnection("127.0.0.1", dash.port, timeout=30)
    try:
        sent = {"Host": f"127.0.0.1:{dash.port}", **(headers or {})}
        if body is not None:
            sent.setdefault("Content-Type", "application/json")
        conn.request(method, path, body=body, headers=sent)
        reply = conn.getresponse()
        return reply.status, {k.lower(): v for k, v in reply.getheaders()}, reply.read()
    finally:
        conn.close()


def envelope(raw: bytes) -> dict[str, Any]:
    """The JSON error envelope of a reply (asserts its shape)."""
    body = json.loads(raw)
    assert body["success"] is False and isinstance(body["error"]["code"], str), body
    return body


def launch_sleeper(dash: Dashboard, name: str) -> str:
    """Launch a sleeping program; its id once it runs."""
    status, reply = dash.authed(
        "POST", "/api/dgx/operations", {"template": "custom", "name": name, "type": "program", "command": SLEEPER}
    )
    assert status == 201, reply
    op_id = reply["data"]["id"]
    wait_until(lambda: dash.get_json(f"/api/dgx/operations/{op_id}").get("data", {}).get("status")
               in ("running", "active"), timeout=60, message=f"{name} never ran")
    return op_id


@pytest.fixture(scope="module")
def sleeper(backend: Dashboard) -> Iterator[str]:
    """One running launched operation for the module."""
    op_id = launch_sleeper(backend, f"hardening-{uuid.uuid4().hex[:6]}")
    yield op_id
    backend.authed("POST", f"/api/dgx/operations/{op_id}/stop", {"force": True})


# ----------------------------------------------------------------------------- headers


@pytest.mark.parametrize(
    ("method", "path", "headers"),
    [
        ("GET", "/api/health", {}),
        ("GET", "/api/dgx/operations", {}),
        ("GET", "/api/dgx/nothing-here", {}),
        ("POST", "/api/dgx/operations", {}),  # 401 from the security layer
        ("GET", "/api/docs", {}),
        ("GET", "/login", {}),
    ],
)
def test_every_answer_carries_the_security_headers(
    backend: Dashboard, method: str, path: str, headers: dict[str, str]
) -> None:
    _, got, _ = raw_request(backend, method, path, b"{}" if method == "POST" else None, headers)
    assert got["x-frame-options"] == "DENY"
    assert "frame-ancestors 'none'" in got["content-security-policy"]
    assert got["x-content-type-options"] == "nosniff"
    # The login page too (its form is let in by the browser's Sec-Fetch-Site: same-origin).
    assert got["referrer-policy"] == "no-referrer"


def test_a_refused_host_carries_them_too(backend: Dashboard) -> None:
    status, got, _ = raw_request(backend, "GET", "/api/health", headers={"Host": "evil.example"})
    assert status == 400
    assert got["x-frame-options"] == "DENY"


def test_pages_carry_the_security_headers(full_dashboard: Dashboard) -> None:
    """The built UI's pages are never framed (a redirect to /history/ neither); they still render."""
    for path in ("/", "/history", "/history/"):
        status, got, body = raw_request(full_dashboard, "GET", path)
        assert status in (200, 307), path
        assert got["x-frame-options"] == "DENY", path
        assert "frame-ancestors 'none'" in got["content-security-policy"], path
        assert got["x-content-type-options"] == "nosniff", path
        assert got["referrer-policy"] == "no-referrer", path
        assert status == 307 or b"<html" in body.lower(), path


# ----------------------------------------------------------------------------- docs


def test_swagger_ui_is_served_by_the_app(backend: Dashboard) -> None:
    status, _, page = raw_request(backend, "GET", "/api/docs")
    assert status == 200
    text = page.decode()
    assert "cdn" not in text.lower() and "https://" not in text
    assert "/api/docs/assets/swagger-ui-bundle.js" in text
    status, got, script = raw_request(backend, "GET", "/api/docs/assets/swagger-ui-bundle.js")
    assert status == 200 and len(script) > 100_000
    assert "javascript" in got["content-type"]


# ----------------------------------------------------------------------------- methods


def test_head_works_wherever_get_does(backend: Dashboard, sleeper: str) -> None:
    for path in ("/api/health", "/api/dgx/operations", f"/api/dgx/operations/{sleeper}",
                 "/api/dgx/system", "/api/dgx/history", f"/api/dgx/operations/{sleeper}/logs"):
        status, got, body = raw_request(backend, "HEAD", path)
        assert (status, body) == (200, b""), path
        assert got["content-type"].startswith("application/json"), path


def test_head_answers_like_get_on_every_get_route(backend: Dashboard, sleeper: str) -> None:
    """Every GET route of the OpenAPI (and /metrics): HEAD gets GET's status and content type, no body."""
    _, spec = backend.request("GET", "/api/openapi.json")
    paths = [path for path, item in spec["paths"].items() if "get" in item]
    assert "/metrics" in paths and len(paths) >= 15, paths
    statuses = set()
    for template in paths:
        path = template.replace("{op_id}", sleeper).replace("{node}", "local")
        status, got, body = raw_request(backend, "HEAD", path, headers=AUTH)
        assert body == b"", path
        if path.endswith("/stream"):
            with open_stream(backend, path, AUTH) as (get_status, _):
                pass
            get_type = got["content-type"] if status == 200 else "application/json"
        else:
            get_status, get_headers, _ = raw_request(backend, "GET", path, headers=AUTH)
            get_type = get_headers["content-type"]
        assert status == get_status, f"HEAD {path}: {status}, GET: {get_status}"
        assert got["content-type"] == get_type, path
        statuses.add(status)
    assert 200 in statuses


def test_head_on_a_log_stream_ends_at_once(backend: Dashboard, sleeper: str) -> None:
    status, got, body = raw_request(backend, "HEAD", f"/api/dgx/operations/{sleeper}/logs/stream")
    assert (status, body) == (200, b"")
    assert got["content-type"].startswith("text/event-stream")


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("PUT", "/api/dgx/operations", "GET, HEAD, POST"),
        ("PATCH", "/api/dgx/operations/op-1-2/stop", "POST"),
        ("OPTIONS", "/api/dgx/operations/op-1-2/stop", "POST"),
        ("GET", "/api/dgx/operations/op-1-2/stop", "POST"),
        ("DELETE", "/api/health", "GET, HEAD"),
        ("POST", "/api/dgx/system", "GET, HEAD"),
        ("PUT", "/metrics", "GET, HEAD"),
    ],
)
def test_other_methods_get_a_json_405_with_allow(backend: Dashboard, method: str, path: str, allow: str) -> None:
    status, got, body = raw_request(backend, method, path, headers=AUTH)
    assert status == 405
    assert got["allow"] == allow
    assert envelope(body)["error"]["code"] == "method_not_allowed"


# ----------------------------------------------------------------------------- envelopes


@pytest.mark.parametrize(
    "path",
    [
        "/api/dgx/operations/../../etc/passwd",
        "/api/dgx/operations/..%2F..%2Fetc%2Fpasswd",
        "/api/dgx/operations/op-%0a/logs",
        "/api/dgx/operations/op-%0a",
        "/api/dgx/operations/%ff%fe/logs/stream",
        "/api/nothing",
        "/api/",
    ],
)
def test_odd_ids_and_paths_get_a_json_404(backend: Dashboard, path: str) -> None:
    status, got, body = raw_request(backend, "GET", path, headers=AUTH)
    assert status == 404, body[:200]
    assert got["content-type"].startswith("application/json")
    assert envelope(body)["error"]["code"] == "not_found"


def test_integer_overflow_is_422(backend: Dashboard) -> None:
    status, _, body = raw_request(backend, "GET", "/api/dgx/audit?before_id=9223372036854775808", headers=AUTH)
    assert status == 422
    assert envelope(body)["error"]["field"] == "before_id"
    status, _, body = raw_request(backend, "GET", "/api/dgx/audit?before_id=9223372036854775807", headers=AUTH)
    assert status == 200, body[:200]


@pytest.mark.parametrize(
    ("path", "size"),
    [
        ("/api/dgx/operations", 70 * 1024),
        ("/api/dgx/operations/op-1-2/progress", 70 * 1024),
        ("/api/dgx/progress", 20 * 1024),
    ],
)
def test_large_bodies_get_413(backend: Dashboard, path: str, size: int) -> None:
    start = newest_audit_id(backend)
    body = json.dumps({"template": "custom", "name": "x" * size}).encode()
    status, _, reply = raw_request(backend, "POST", path, body, AUTH)
    assert status == 413
    assert envelope(reply)["error"]["code"] == "payload_too_large"
    if path == "/api/dgx/operations":
        audited_after(backend, start, action="launch", outcome="failed", status=413)


# ----------------------------------------------------------------------------- text that is not UTF-8


def _launch_body(name: str, **extra: Any) -> dict[str, Any]:
    return {"template": "custom", "name": name, "type": "program", "command": SLEEPER, **extra}


SURROGATE_BODIES = [
    ("name", lambda tag: {**_launch_body(tag), "name": tag + "\ud800"}),
    ("command[1]", lambda tag: {**_launch_body(tag), "command": [SLEEPER[0], "\udc00"]}),
    ("env.HF_HOME", lambda tag: _launch_body(tag, env={"HF_HOME": "\ud800"})),
    ("\\ud800", lambda tag: {**_launch_body(tag), "\ud800": 1}),
    ("params.script", lambda tag: {"template": "training", "name": tag, "params": {"script": "\ud800.py"}}),
]


def newest_audit_id(dash: Dashboard) -> int:
    """The id of the newest audit row (0: none yet)."""
    _, body = dash.authed("GET", "/api/dgx/audit?limit=1")
    return int(body["data"][0]["id"]) if body["data"] else 0


def audited_after(dash: Dashboard, start: int, **match: Any) -> dict[str, Any]:
    """Wait for the audit row newer than ``start`` whose fields have the values in ``match``."""

    def found() -> dict[str, Any] | None:
        _, body = dash.authed("GET", "/api/dgx/audit?limit=200")
        return next((e for e in body["data"] if e["id"] > start and all(e[k] == v for k, v in match.items())), None)

    return wait_until(found, timeout=30, message=f"no audit row {match}")


@pytest.mark.parametrize(("field", "make"), SURROGATE_BODIES, ids=[f for f, _ in SURROGATE_BODIES])
def test_a_lone_surrogate_is_422_and_nothing_is_kept(backend: Dashboard, field: str, make: Any) -> None:
    tag = f"surrogate-{uuid.uuid4().hex[:8]}"
    start = newest_audit_id(backend)
    # json.dumps writes a lone surrogate as the escape "\ud800", as a hostile client would.
    status, _, reply = raw_request(backend, "POST", "/api/dgx/operations", json.dumps(make(tag)).encode(), AUTH)
    assert status == 422, reply[:300]
    assert envelope(reply)["error"]["field"] == field
    # The list still works for everyone, and holds nothing of the refused launch.
    for _ in range(2):
        status, body = backend.request("GET", "/api/dgx/operations")
        assert status == 200, body
        assert not [op for op in body["data"] if tag in str(op.get("name"))]
    status, history = backend.request("GET", "/api/dgx/history")
    assert status == 200 and not [row for row in history["data"] if tag in str(row.get("name"))]
    # The one trace it leaves: the refused launch's audit row, saying why.
    row = audited_after(backend, start, action="launch", outcome="failed", status=422)
    assert row["detail"].startswith(f"{field}: must be valid UTF-8"), row


def test_invalid_utf8_bytes_are_422(backend: Dashboard) -> None:
    body = b'{"template": "custom", "name": "bad-\xff-bytes", "command": ["true"]}'
    status, _, reply = raw_request(backend, "POST", "/api/dgx/operations", body, AUTH)
    assert status == 422
    assert envelope(reply)["error"]["field"] == "body"


def test_a_surrogate_metric_key_is_422(backend: Dashboard, sleeper: str) -> None:
    start = newest_audit_id(backend)
    body = json.dumps({"progress": 0.5, "metrics": {"loss\ud800": 0.1}}).encode()
    status, _, reply = raw_request(backend, "POST", f"/api/dgx/operations/{sleeper}/progress", body, AUTH)
    assert status == 422
    assert envelope(reply)["error"]["field"].startswith("metrics.")
    audited_after(backend, start, action="progress", target=sleeper, outcome="failed", status=422)
    status, _, reply = raw_request(backend, "POST", "/api/dgx/progress", json.dumps(
        {"pid": 2, "metrics": {"\udfff": 1}}).encode(), AUTH)
    assert status == 422
    assert backend.request("GET", f"/api/dgx/operations/{sleeper}")[0] == 200


# ----------------------------------------------------------------------------- log stream caps


@contextlib.contextmanager
def open_stream(dash: Dashboard, path: str, headers: dict[str, str] | None = None) -> Iterator[tuple[int, bytes]]:
    """Open a log stream and hold it: (status, the body's first bytes, or the whole refusal)."""
    conn = http.client.HTTPConnection("127.0.0.1", dash.port, timeout=30)
    try:
        conn.request("GET", path, headers={"Host": f"127.0.0.1:{dash.port}", **(headers or {})})
        reply = conn.getresponse()
        first = reply.read1(64) if reply.status == 200 else reply.read()
        yield reply.status, first
    finally:
        conn.close()


def test_log_streams_are_capped_per_client_and_in_all(backend: Dashboard, sleeper: str) -> None:
    path = f"/api/dgx/operations/{sleeper}/logs/stream"
    with contextlib.ExitStack() as stack:
        # Two per client (address), then 429 that says which cap.
        assert stack.enter_context(open_stream(backend, path))[0] == 200
        assert stack.enter_context(open_stream(backend, path))[0] == 200
        status, refusal = stack.enter_context(open_stream(backend, path))
        assert status == 429
        error = envelope(refusal)["error"]
        assert error["code"] == "too_many_streams" and "DGX_SPARK_LOG_STREAMS_PER_CLIENT" in error["message"]
        # The token holder is a client of its own: one more fits, then the total (3) is reached.
        assert stack.enter_context(open_stream(backend, path, AUTH))[0] == 200
        status, refusal = stack.enter_context(open_stream(backend, path, AUTH))
        assert status == 429
        assert "DGX_SPARK_LOG_STREAMS_TOTAL" in envelope(refusal)["error"]["message"]
        assert backend.request("GET", "/api/health")[0] == 200

    # Closed streams give their slots back.
    def can_follow() -> bool:
        with open_stream(backend, path) as (status, _):
            return status == 200

    wait_until(can_follow, timeout=30, message="closed streams never gave their slots back")


# ----------------------------------------------------------------------------- audit flood


def test_a_flood_of_refused_requests_stays_bounded_in_the_audit_log(backend: Dashboard) -> None:
    target = f"flood-{uuid.uuid4().hex[:8]}"
    _, before = backend.authed("GET", "/api/dgx/audit?limit=1")
    start = before["data"][0]["id"] if before["data"] else 0
    flood = 150
    for _ in range(flood):
        status, _, _ = raw_request(backend, "POST", f"/api/dgx/operations/{target}/stop", b"{}")
        assert status == 401

    def rows() -> list[dict[str, Any]]:
        _, body = backend.authed("GET", "/api/dgx/audit?limit=1000")
        return [e for e in body["data"] if e["id"] > start]

    summaries = wait_until(
        lambda: [e for e in rows() if e["action"] == "refusals"], timeout=60,
        message="the refusals past the limit were never summed up",
    )
    single = [e for e in rows() if e["target"] == target]
    assert len(single) <= 35, f"{len(single)} rows for {flood} refused requests"
    # Every refusal is accounted for: one by one, or in a "N refused from X" row.
    counted = sum(int(e["detail"].split(" ", 1)[0]) for e in summaries)
    assert flood <= len(single) + counted <= flood + 10
    assert all(e["outcome"] == "refused" and "refused from 127.0.0.1" in e["detail"] for e in summaries)
