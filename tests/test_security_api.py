"""The security layer against the real backend: token, Host, Origin, websocket, login, audit, throttle."""

from __future__ import annotations

import base64
import http.client
import json
import os
import re
import socket
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.dashboard import TEST_TOKEN, Dashboard, wait_until

# Every mutating route (and one that does not exist: the layer refuses before routing).
MUTATIONS: list[tuple[str, str, Any]] = [
    ("POST", "/api/dgx/operations", {"template": "custom", "name": "x", "type": "program", "command": ["sleep", "60"]}),
    ("POST", "/api/dgx/operations/op-4242-1/stop", {"force": True}),
    ("POST", "/api/dgx/operations/op-4242-1/start", None),
    ("DELETE", "/api/dgx/operations/op-4242-1", None),
    ("POST", "/api/dgx/operations/op-4242-1/progress", {"progress": 0.5}),
    ("POST", "/api/dgx/progress", {"pid": 4242, "progress": 0.5}),
    ("PUT", "/api/dgx/no-such-route", {}),
    ("PATCH", "/api/dgx/operations/op-4242-1", {}),
]
MUTATION_IDS = [f"{m} {p}" for m, p, _ in MUTATIONS]


def raw(
    dashboard: Dashboard, method: str, path: str, headers: dict[str, str] | None = None, body: bytes | None = None
) -> tuple[int, http.client.HTTPMessage, bytes]:
    """One HTTP request without following redirects: (status, headers, body)."""
    conn = http.client.HTTPConnection("127.0.0.1", dashboard.port, timeout=30)
    try:
        all_headers = {"Host": f"127.0.0.1:{dashboard.port}", **(headers or {})}
        conn.request(method, path, body=body, headers=all_headers)
        resp = conn.getresponse()
        return resp.status, resp.headers, resp.read()
    finally:
        conn.close()


def ws_handshake(port: int, origin: str | None, cookie: str | None = None, host: str | None = None) -> int:
    """A raw websocket upgrade to /_event; the HTTP status of the answer (101 = accepted)."""
    key = base64.b64encode(os.urandom(16)).decode()
    lines = [
        "GET /_event/?EIO=4&transport=websocket HTTP/1.1",
        f"Host: {host or f'127.0.0.1:{port}'}",
        "Upgrade: websocket",
        "Connection: Upgrade",
        f"Sec-WebSocket-Key: {key}",
        "Sec-WebSocket-Version: 13",
    ]
    if origin:
        lines.append(f"Origin: {origin}")
    if cookie:
        lines.append(f"Cookie: {cookie}")
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        data = b""
        while b"\r\n" not in data:
            chunk = sock.recv(4096)
            if not chunk:
                break
            data += chunk
    return int(data.split(b" ", 2)[1])


def session_cookie(headers: http.client.HTTPMessage) -> str:
    """The ``name=value`` of the session cookie set by a response."""
    for value in headers.get_all("set-cookie") or []:
        if value.startswith("dgx_spark_session="):
            return value.split(";", 1)[0]
    raise AssertionError(f"no session cookie in {headers.items()}")


def login_code(dashboard: Dashboard) -> str:
    """The one-time code of the login URL the dashboard printed at start."""
    found = wait_until(
        lambda: re.findall(rf"http://127\.0\.0\.1:{dashboard.port}/login\?token=(\S+)", dashboard.log_tail(200_000)),
        timeout=30,
        message="no login URL printed",
    )
    return found[-1]


def assert_envelope(body: Any, code: str) -> None:
    assert isinstance(body, dict), body
    assert body["success"] is False
    assert body["error"]["code"] == code, body
    assert body["error"]["message"]


# ----------------------------------------------------------------------------- tokens on mutations


@pytest.mark.parametrize(("method", "path", "body"), MUTATIONS, ids=MUTATION_IDS)
def test_mutation_without_token_is_401(backend: Dashboard, method: str, path: str, body: Any) -> None:
    status, reply = backend.request(method, path, body)
    assert status == 401, reply
    assert_envelope(reply, "unauthorized")


@pytest.mark.parametrize(("method", "path", "body"), MUTATIONS, ids=MUTATION_IDS)
def test_mutation_with_wrong_token_is_401(backend: Dashboard, method: str, path: str, body: Any) -> None:
    for value in (f"Bearer {TEST_TOKEN}x", f"Bearer {TEST_TOKEN[:-1]}", "Bearer ", f"Basic {TEST_TOKEN}", TEST_TOKEN):
        status, reply = backend.request(method, path, body, headers={"Authorization": value})
        assert status == 401, (value, reply)
        assert_envelope(reply, "unauthorized")


@pytest.mark.parametrize(("method", "path", "body"), MUTATIONS, ids=MUTATION_IDS)
def test_token_in_query_string_is_not_accepted(backend: Dashboard, method: str, path: str, body: Any) -> None:
    sep = "&" if "?" in path else "?"
    for query in (f"token={TEST_TOKEN}", f"access_token={TEST_TOKEN}", f"api_key={TEST_TOKEN}"):
        status, reply = backend.request(method, f"{path}{sep}{query}", body)
        assert status == 401, (query, reply)
        assert_envelope(reply, "unauthorized")


def test_bearer_token_reaches_the_route(backend: Dashboard) -> None:
    status, reply = backend.authed("POST", "/api/dgx/operations/op-4242-1/stop", {"force": False})
    assert status not in (400, 401, 403, 429), reply
    assert reply["success"] is False  # no such operation: the route itself answered
    assert reply["error"]["code"] != "unauthorized"


# ----------------------------------------------------------------------------- Host and Origin


def test_wrong_host_is_400(backend: Dashboard) -> None:
    for host in ("evil.example", "evil.example:80", f"attacker.test:{backend.port}", "127.0.0.1.nip.io"):
        status, reply = backend.request("GET", "/api/dgx/operations", headers={"Host": host})
        assert status == 400, host
        assert_envelope(reply, "bad_host")
        status, reply = backend.authed("POST", "/api/dgx/operations/op-4242-1/stop", {}, headers={"Host": host})
        assert status == 400, host


def test_cross_origin_post_is_403(backend: Dashboard) -> None:
    foreign = [
        {"Origin": "http://evil.example"},
        {"Origin": "null"},
        {"Origin": f"http://127.0.0.1:{backend.port + 1}"},
        {"Sec-Fetch-Site": "cross-site"},
        {"Sec-Fetch-Site": "same-site", "Origin": f"http://localhost:{backend.port + 7}"},
    ]
    for headers in foreign:
        for method, path, body in MUTATIONS[:4]:
            status, reply = backend.request(method, path, body, headers=headers)
            assert status == 403, (headers, path, reply)
            assert_envelope(reply, "forbidden_origin")


def test_cross_origin_with_bearer_token_is_allowed(backend: Dashboard) -> None:
    status, reply = backend.authed("POST", "/api/dgx/operations/op-4242-1/stop", {}, headers={"Origin": "http://evil.example"})
    assert status not in (401, 403), reply


def test_cors_does_not_allow_foreign_origins(backend: Dashboard) -> None:
    _, headers, _ = raw(
        backend,
        "OPTIONS",
        "/api/dgx/operations",
        headers={"Origin": "http://evil.example", "Access-Control-Request-Method": "POST"},
    )
    assert headers.get("access-control-allow-origin") not in ("*", "http://evil.example")
    own = f"http://127.0.0.1:{backend.port}"
    _, headers, _ = raw(backend, "GET", "/api/dgx/operations", headers={"Origin": own})
    assert headers.get("access-control-allow-origin") == own


def test_websocket_from_foreign_origin_is_refused(backend: Dashboard) -> None:
    port = backend.port
    assert ws_handshake(port, "http://evil.example") == 403
    assert ws_handshake(port, f"http://127.0.0.1:{port + 1}") == 403
    assert ws_handshake(port, "null") == 403
    assert ws_handshake(port, f"http://127.0.0.1:{port}", host="evil.example") == 403
    # The app's own origins are accepted (so the refusals above are not an accident).
    assert ws_handshake(port, f"http://127.0.0.1:{port}") == 101
    assert ws_handshake(port, f"http://localhost:{port}") == 101


# ----------------------------------------------------------------------------- login


def test_login_url_sets_httponly_strict_cookie_once(backend: Dashboard) -> None:
    code = login_code(backend)
    status, headers, page = raw(backend, "GET", f"/login?token={code}")
    # A page of our own moves on to "/" (a redirect from another site's link would drop the Strict cookie).
    assert status == 200
    assert b'http-equiv="refresh" content="0;url=/"' in page
    set_cookie = next(v for v in headers.get_all("set-cookie") or [] if v.startswith("dgx_spark_session="))
    flags = {part.strip().lower() for part in set_cookie.split(";")[1:]}
    assert "httponly" in flags and "samesite=strict" in flags and "path=/" in flags
    assert TEST_TOKEN not in set_cookie  # the cookie is not the token itself
    cookie = session_cookie(headers)

    # The link works once.
    status, headers, page = raw(backend, "GET", f"/login?token={code}")
    assert status == 401
    assert "set-cookie" not in headers
    assert b"already used" in page

    # The cookie is a login: the audit log (token required even to read) opens, and
    # a same-origin mutation goes through; from another origin it does not.
    status, _, body = raw(backend, "GET", "/api/dgx/audit", headers={"Cookie": cookie})
    assert status == 200, body
    own = {"Cookie": cookie, "Origin": f"http://127.0.0.1:{backend.port}", "Content-Type": "application/json"}
    status, _, body = raw(backend, "POST", "/api/dgx/operations/op-4242-1/stop", headers=own, body=b"{}")
    assert status not in (401, 403), body
    foreign = {**own, "Origin": "http://evil.example"}
    status, _, body = raw(backend, "POST", "/api/dgx/operations/op-4242-1/stop", headers=foreign, body=b"{}")
    assert status == 403, body
    # A forged cookie is nothing.
    status, _, _ = raw(backend, "GET", "/api/dgx/audit", headers={"Cookie": "dgx_spark_session=" + "0" * 64})
    assert status == 401


def test_login_page_accepts_the_token(backend: Dashboard) -> None:
    status, headers, page = raw(backend, "GET", "/login")
    assert status == 200
    assert headers["content-type"].startswith("text/html")
    assert b'name="token"' in page and b'type="password"' in page
    form = {"Content-Type": "application/x-www-form-urlencoded", "Origin": f"http://127.0.0.1:{backend.port}"}
    status, headers, _ = raw(backend, "POST", "/login", headers=form, body=f"token={TEST_TOKEN}&next=/x".encode())
    assert status == 303 and headers["location"] == "/x"
    assert "HttpOnly" in (headers["set-cookie"] or "")
    # Wrong token: refused, no cookie.
    status, headers, page = raw(backend, "POST", "/login", headers=form, body=b"token=wrong-token-0000000000")
    assert status == 401 and "set-cookie" not in headers
    # Never redirect to another site after login.
    status, headers, _ = raw(backend, "POST", "/login", headers=form,
                             body=f"token={TEST_TOKEN}&next=//evil.example/".encode())
    assert status == 303 and headers["location"] == "/"
    # A login form posted from another origin is refused.
    status, _, _ = raw(backend, "POST", "/login", headers={**form, "Origin": "http://evil.example"},
                       body=f"token={TEST_TOKEN}".encode())
    assert status == 403


# ----------------------------------------------------------------------------- audit


def test_audit_route_needs_token_even_to_read(backend: Dashboard) -> None:
    status, reply = backend.request("GET", "/api/dgx/audit")
    assert status == 401
    assert_envelope(reply, "unauthorized")
    status, reply = backend.request("GET", f"/api/dgx/audit?token={TEST_TOKEN}")
    assert status == 401
    status, reply = backend.authed("GET", "/api/dgx/audit?limit=5")
    assert status == 200, reply
    assert reply["success"] is True and isinstance(reply["data"], list)
    status, reply = backend.authed("GET", "/api/dgx/audit?limit=0")
    assert status == 422
    assert reply["error"]["field"] == "limit"


def _audit(backend: Dashboard, **query: str) -> list[dict[str, Any]]:
    qs = "&".join(f"{k}={v}" for k, v in query.items())
    status, reply = backend.authed("GET", f"/api/dgx/audit?limit=1000&{qs}")
    assert status == 200, reply
    return reply["data"]


def test_audit_rows_for_allowed_and_refused_actions(backend: Dashboard) -> None:
    # Refused: no token, foreign origin.
    backend.request("POST", "/api/dgx/operations/op-777-1/stop", {})
    backend.request("POST", "/api/dgx/operations/op-777-1/stop", {}, headers={"Origin": "http://evil.example"})
    # Allowed: a real launch and its stop.
    status, reply = backend.authed(
        "POST",
        "/api/dgx/operations",
        {"template": "custom", "name": "audit-probe", "type": "program", "command": ["sleep", "300"]},
    )
    assert status == 201, reply
    op_id = reply["data"]["id"]
    try:
        status, reply = backend.authed("POST", f"/api/dgx/operations/{op_id}/stop", {"force": True})
        assert status == 200, reply
    finally:
        backend.authed("POST", f"/api/dgx/operations/{op_id}/stop", {"force": True})

    refused = wait_until(
        lambda: [r for r in _audit(backend, target="op-777-1") if r["outcome"] == "refused"][1:] and
        _audit(backend, target="op-777-1"),
        timeout=30,
    )
    assert {r["status"] for r in refused} >= {401, 403}
    assert all(r["action"] == "stop" and r["client"] == "127.0.0.1" and r["at"].endswith("Z") for r in refused)

    launches = wait_until(lambda: [r for r in _audit(backend, action="launch") if r["outcome"] == "allowed"], 30)
    assert launches[0]["status"] == 201
    assert op_id in [r["target"] for r in launches]  # the new operation's id, not null
    stops = wait_until(lambda: [r for r in _audit(backend, target=op_id) if r["action"] == "stop"], 30)
    assert any(r["outcome"] == "allowed" and r["status"] == 200 for r in stops)


# ----------------------------------------------------------------------------- one action in flight
# A second action on an operation while one is under way is 409 (UI: "busy"): the control service
# holds the operation for the supervisor call. tests/test_control_service.py proves it in-process,
# holding a real stop mid-way at a (fake) container engine, for the REST routes and the UI alike.


# ----------------------------------------------------------------------------- DGX_SPARK_AUTH=required


class _StrictDashboard(Dashboard):
    """A dashboard whose readiness probe sends the generated token."""

    def bearer(self) -> dict[str, str]:
        path = self.data_dir / "token"
        return {"Authorization": f"Bearer {path.read_text().strip()}"} if path.exists() else {}

    def get_json(self, path: str) -> Any:
        return self.request("GET", path, headers=self.bearer())[1]


@pytest.fixture(scope="module")
def strict(tmp_path_factory: pytest.TempPathFactory) -> Iterator[_StrictDashboard]:
    """A backend with DGX_SPARK_AUTH=required, a generated token and a tight throttle."""
    dashboard = _StrictDashboard(
        tmp_path_factory.mktemp("strict"),
        env={
            "DGX_SPARK_AUTH": "required",
            "DGX_SPARK_TOKEN": "",
            "DGX_SPARK_CONTROL_RATE": "0.001",
            "DGX_SPARK_CONTROL_BURST": "3",
        },
    )
    dashboard.start()
    yield dashboard
    dashboard.stop()


def test_generated_token_file_has_mode_0600(strict: _StrictDashboard) -> None:
    path = strict.data_dir / "token"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert len(path.read_text().strip()) >= 43
    assert path.read_text().strip() != TEST_TOKEN
    status, _ = strict.authed("GET", "/api/dgx/operations")  # the test token is not this one
    assert status == 401


def test_required_mode_needs_token_to_view(strict: _StrictDashboard) -> None:
    status, reply = strict.request("GET", "/api/dgx/operations")
    assert status == 401
    assert_envelope(reply, "unauthorized")
    status, reply = strict.request("GET", "/api/dgx/operations", headers=strict.bearer())
    assert status == 200 and reply["success"] is True
    status, headers, _ = raw(strict, "GET", "/")
    assert status == 303 and headers["location"].startswith("/login")
    # The websocket needs the login cookie too.
    port = strict.port
    assert ws_handshake(port, f"http://127.0.0.1:{port}") == 403
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    token = strict.bearer()["Authorization"].split(" ", 1)[1]
    status, headers, _ = raw(strict, "POST", "/login", headers=form, body=f"token={token}".encode())
    assert status == 303
    assert ws_handshake(port, f"http://127.0.0.1:{port}", cookie=session_cookie(headers)) == 101


def test_control_actions_are_throttled_429(strict: _StrictDashboard) -> None:
    statuses = [
        strict.request("POST", f"/api/dgx/operations/op-6{i}-1/stop", {}, headers=strict.bearer())
        for i in range(5)
    ]
    codes = [s for s, _ in statuses]
    assert 429 in codes, codes
    first_429 = codes.index(429)
    assert first_429 >= 1 and all(c == 429 for c in codes[first_429:]), codes
    assert_envelope(statuses[first_429][1], "too_many_requests")


# ----------------------------------------------------------------------------- bind


def test_non_loopback_bind_without_auth_is_refused_at_start(tmp_path: Path) -> None:
    dashboard = Dashboard(tmp_path, env={"DGX_SPARK_HOST": "0.0.0.0", "DGX_SPARK_AUTH": ""})
    with pytest.raises(RuntimeError, match="exited early") as info:
        dashboard.start(timeout=120)
    dashboard.stop()
    assert "DGX_SPARK_AUTH=required" in str(info.value)


def test_openapi_lists_audit_route(backend: Dashboard) -> None:
    status, body = backend.request("GET", "/api/openapi.json")
    assert status == 200
    assert "/api/dgx/audit" in body["paths"]
    json.dumps(body)


# ----------------------------------------------------------------------------- secrets of real processes


def test_secrets_in_a_real_command_line_never_reach_the_api(backend: Dashboard, tmp_path: Path) -> None:
    from tests.support.workloads import PYTHON, spawn, write_script

    secret = "sk-live-Zq8Xw2Rt6Yp4Nm1Kc9Vb3Hd5"
    env_secret = "env-only-secret-7Gf3Jk9Lq2"
    script = write_script(tmp_path, "serve_model.py", "import time\nwhile True:\n    time.sleep(1)\n")
    argv = [PYTHON, str(script), "--api-key", secret, f"--hf-token={secret}", f"OPENAI_API_KEY={secret}",
            f"https://user:{secret}@example.com/x"]
    with spawn(argv, tmp_path, env={"MY_SERVICE_TOKEN": env_secret}) as workload:

        def listed() -> dict[str, Any] | None:
            return next((op for op in backend.operations() if op["pid"] == workload.pid), None)

        op = wait_until(listed, timeout=60, message="the process was not listed")
        assert "--api-key ***" in op["command"] and "--hf-token=***" in op["command"]
        assert "OPENAI_API_KEY=***" in op["command"] and "user:***@example.com" in op["command"]
        for path in ("/api/dgx/operations", f"/api/dgx/operations/{op['id']}"):
            _, body = backend.request("GET", path)
            text = json.dumps(body)
            assert secret not in text, path
            assert env_secret not in text, path
