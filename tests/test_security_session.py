"""Login sessions: random, stored hashed, expiring, revoked by Log out and by a new token.

Also: only failed logins are throttled, ``next`` after login stays on this site,
the session cookie never reaches Reflex's state or the log, and a token file that
cannot be used stops start-up with one line.
"""

from __future__ import annotations

import hashlib
import hmac
import http.client
import json
import os
import stat
import subprocess
from pathlib import Path
from typing import Any

import pytest

from dgx_spark.security import sessions
from dgx_spark.security import token as tokens
from dgx_spark.security.middleware import (
    Guards,
    _handle_login,
    _safe_next,
    event_scope,
    private_reflex_states,
)
from dgx_spark.security.throttle import RateLimiter
from tests.support.aio import run_coroutine
from tests.support.dashboard import BIN, ROOT, TEST_TOKEN, Dashboard, wait_until
from tests.support.reflex_socket import ReflexSocket

OTHER_TOKEN = "another-token-9876543210fedcba9876543210"

# ----------------------------------------------------------------------------- the store


def test_session_is_random_and_stored_only_hashed(tmp_path: Path) -> None:
    store = sessions.SessionStore(tmp_path, token=TEST_TOKEN)
    value, session = store.create()
    other, _ = store.create()
    assert value != other and len(value) >= 43  # 32 random bytes
    # Not derived from the token (the old cookie was an HMAC of it).
    assert value != hmac.new(TEST_TOKEN.encode(), b"dgx-spark-session-v1", hashlib.sha256).hexdigest()
    assert store.lookup(value) == session
    path = tmp_path / "sessions.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    text = path.read_text()
    assert value not in text and other not in text and TEST_TOKEN not in text
    assert session.digest in text
    # Another store (another process, a restart) sees it too.
    assert sessions.SessionStore(tmp_path, token=TEST_TOKEN).lookup(value) == session
    assert store.by_id(session.id) == session


def test_unknown_and_odd_values_open_nothing(tmp_path: Path) -> None:
    store = sessions.SessionStore(tmp_path, token=TEST_TOKEN)
    value, session = store.create()
    for bad in (None, "", "0" * 64, value[:-1], value + "x", "x" * 10_000, ["list"], session.digest, session.id):
        assert store.lookup(bad) is None  # type: ignore[arg-type]
    for bad in (None, "", value, session.digest, "x" * 10_000):
        assert store.by_id(bad) is None


def test_logout_revokes(tmp_path: Path) -> None:
    store = sessions.SessionStore(tmp_path, token=TEST_TOKEN)
    value, session = store.create()
    kept, _ = store.create()
    assert store.revoke(value)
    assert store.lookup(value) is None and store.by_id(session.id) is None
    assert not store.revoke(value)
    assert store.lookup(kept) is not None
    assert store.revoke_all() == 1
    assert store.lookup(kept) is None


def test_sessions_expire_after_30_days(tmp_path: Path) -> None:
    store = sessions.SessionStore(tmp_path, token=TEST_TOKEN)
    value, session = store.create(now=1000.0)
    assert session.expires - session.created == 30 * 86400 == sessions.SESSION_MAX_AGE
    assert store.lookup(value, now=1000.0 + 30 * 86400 - 1) is not None
    assert store.lookup(value, now=1000.0 + 30 * 86400) is None
    assert store.prune(now=1000.0 + 30 * 86400) == 1
    assert json.loads((tmp_path / "sessions.json").read_text())["sessions"] == []


def test_a_new_token_ends_every_session(tmp_path: Path) -> None:
    value, _ = sessions.SessionStore(tmp_path, token=TEST_TOKEN).create()
    rotated = sessions.SessionStore(tmp_path, token=OTHER_TOKEN)
    assert rotated.lookup(value) is None
    assert rotated.prune() == 1
    # Going back to the old token does not bring it back: it was dropped.
    assert sessions.SessionStore(tmp_path, token=TEST_TOKEN).lookup(value) is None


def test_corrupt_sessions_file_means_logged_out(tmp_path: Path) -> None:
    store = sessions.SessionStore(tmp_path, token=TEST_TOKEN)
    value, _ = store.create()
    for garbage in (b"\xff\xfe\x00", b"", b"[]", b'{"sessions": [{"id": 1}]}', b'{"sessions": 5}'):
        (tmp_path / "sessions.json").write_bytes(garbage)
        assert store.lookup(value) is None
    fresh, _ = store.create()
    assert store.lookup(fresh) is not None


def test_number_of_sessions_is_bounded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sessions, "MAX_SESSIONS", 5)
    store = sessions.SessionStore(tmp_path, token=TEST_TOKEN)
    values = [store.create(now=1000.0 + i)[0] for i in range(8)]
    assert len(json.loads((tmp_path / "sessions.json").read_text())["sessions"]) == 5
    assert store.lookup(values[0], now=1010.0) is None and store.lookup(values[-1], now=1010.0) is not None


def test_concurrent_logins_all_kept(tmp_path: Path) -> None:
    import threading

    stores = [sessions.SessionStore(tmp_path, token=TEST_TOKEN) for _ in range(2)]  # two "processes"
    values: list[str] = []
    threads = [threading.Thread(target=lambda s=stores[i % 2]: values.append(s.create()[0])) for i in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(values) == 16
    assert all(stores[0].lookup(v) is not None for v in values)
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


# ----------------------------------------------------------------------------- policy helpers


@pytest.mark.parametrize(
    ("offered", "expected"),
    [
        ("/", "/"),
        ("/history", "/history"),
        ("/history?q=a%20b&type=job", "/history?q=a%20b&type=job"),
        ("/x#y", "/x#y"),
        (None, "/"),
        ("", "/"),
        ("history", "/"),
        ("//evil.example", "/"),
        ("///evil.example", "/"),
        ("/\\evil.example", "/"),
        ("\\\\evil.example", "/"),
        ("/\t/evil.example", "/"),
        ("/%09/evil.example", "/"),
        ("/%2F/evil.example", "/"),
        ("/%5Cevil.example", "/"),
        ("/\r\nSet-Cookie: x=1", "/"),
        ("/%0d%0aSet-Cookie:%20x=1", "/"),
        ("/ /evil.example", "/"),
        ("/\x00", "/"),
        ("/\x7f", "/"),
        ("/é", "/"),
        ("/\u2028", "/"),
        ("http://evil.example/", "/"),
        ("https:evil.example", "/"),
        ("javascript:alert(1)", "/"),
        ("/" + "a" * 3000, "/"),
    ],
)
def test_next_is_a_same_origin_path(offered: str | None, expected: str) -> None:
    assert _safe_next(offered) == expected


def test_rate_limiter_peek_takes_nothing() -> None:
    limiter = RateLimiter(rate=0.0001, burst=2)
    for _ in range(10):
        assert limiter.peek("a", now=0.0)
    assert limiter.allow("a", now=0.0) and limiter.allow("a", now=0.0)
    assert not limiter.peek("a", now=0.0) and not limiter.allow("a", now=0.0)
    assert limiter.peek("b", now=0.0)


def test_event_scope_keeps_no_credential() -> None:
    scope = {
        "type": "websocket",
        "path": "/_event/",
        "headers": [
            (b"host", b"127.0.0.1:3000"),
            (b"cookie", b"dgx_spark_session=secret-value; other=1"),
            (b"authorization", b"Bearer secret-token"),
            (b"proxy-authorization", b"Basic c2VjcmV0"),
            (b"x-dgx-spark-login", b"forged-id"),
        ],
    }
    session = sessions.Session(id="public-id", digest="d", created=0.0, expires=1.0, binding="b")
    headers = dict(event_scope(scope, session)["headers"])
    assert headers == {b"host": b"127.0.0.1:3000", b"x-dgx-spark-login": b"public-id"}
    assert dict(event_scope(scope, None)["headers"]) == {b"host": b"127.0.0.1:3000"}
    assert len(scope["headers"]) == 5  # the original scope is left alone


def test_leftover_reflex_states_are_made_private(tmp_path: Path) -> None:
    states = tmp_path / ".states"
    (states / "sub").mkdir(parents=True)
    (states / "a.pkl").write_bytes(b"x")
    (states / "sub" / "b.pkl").write_bytes(b"y")
    for path in (states, states / "sub"):
        os.chmod(path, 0o755)
    for path in (states / "a.pkl", states / "sub" / "b.pkl"):
        os.chmod(path, 0o644)
    assert private_reflex_states(states) == 4
    assert stat.S_IMODE(states.stat().st_mode) == 0o700
    assert stat.S_IMODE((states / "sub").stat().st_mode) == 0o700
    assert stat.S_IMODE((states / "a.pkl").stat().st_mode) == 0o600
    assert stat.S_IMODE((states / "sub" / "b.pkl").stat().st_mode) == 0o600
    assert private_reflex_states(states) == 0
    assert private_reflex_states(tmp_path / "missing") == 0


# ----------------------------------------------------------------------------- the token file


@pytest.mark.parametrize(
    ("content", "says"),
    [
        (b"\xff\xfe\x00\x81garbage\x00", "not text"),
        (b"", "is empty"),
        (b"  \n", "is empty"),
        (b"short\n", "shorter than 16"),
        (b"x" * 2000 + b"\n", "longer than 1024"),
        (b"has a space in the middle of it\n", "spaces or control"),
        (b"tab\tinside-0123456789abcdef\n", "spaces or control"),
    ],
)
def test_unusable_token_file_is_refused_with_what_to_do(tmp_path: Path, content: bytes, says: str) -> None:
    path = tmp_path / "token"
    path.write_bytes(content)
    os.chmod(path, 0o600)
    with pytest.raises(tokens.TokenError) as info:
        tokens.load_or_create_token(tmp_path, env={})
    message = str(info.value)
    assert says in message and str(path) in message and "delete it" in message
    with pytest.raises(tokens.TokenError):
        tokens.check_token(tmp_path, env={})
    assert path.read_bytes() == content  # left as it was for the user to look at


def test_check_token_creates_nothing(tmp_path: Path) -> None:
    tokens.check_token(tmp_path, env={})
    assert not (tmp_path / "token").exists()
    with pytest.raises(tokens.TokenError, match="DGX_SPARK_TOKEN"):
        tokens.check_token(tmp_path, env={"DGX_SPARK_TOKEN": "short"})
    tokens.check_token(tmp_path, env={"DGX_SPARK_TOKEN": TEST_TOKEN})


# ----------------------------------------------------------------------------- the real dashboard


def post_login(dashboard: Dashboard, token: str, next_path: str | None = None,
               raw_body: bytes | None = None) -> tuple[int, http.client.HTTPMessage, bytes]:
    """POST the login form; (status, headers, body), redirects not followed."""
    body = raw_body if raw_body is not None else (
        f"token={token}" + (f"&next={next_path}" if next_path is not None else "")
    ).encode()
    return raw(dashboard, "POST", "/login", body,
               {"Content-Type": "application/x-www-form-urlencoded", "Origin": dashboard.url})


def raw(dashboard: Dashboard, method: str, path: str, body: bytes | None = None,
        headers: dict[str, str] | None = None) -> tuple[int, http.client.HTTPMessage, bytes]:
    """One HTTP request without following redirects."""
    conn = http.client.HTTPConnection("127.0.0.1", dashboard.port, timeout=30)
    try:
        conn.request(method, path, body=body, headers={"Host": f"127.0.0.1:{dashboard.port}", **(headers or {})})
        resp = conn.getresponse()
        return resp.status, resp.headers, resp.read()
    finally:
        conn.close()


def log_in(dashboard: Dashboard, token: str = TEST_TOKEN) -> str:
    """Log in with the token form; the session cookie's value."""
    status, headers, body = post_login(dashboard, token)
    assert status == 303, body
    found = [v for v in headers.get_all("set-cookie") or [] if v.startswith("dgx_spark_session=")]
    assert len(found) == 1, headers.items()
    return found[0].split(";", 1)[0].split("=", 1)[1]


def cookie_opens_audit(dashboard: Dashboard, value: str) -> int:
    """The status of the token-only audit route with this session cookie."""
    return raw(dashboard, "GET", "/api/dgx/audit", headers={"Cookie": f"dgx_spark_session={value}"})[0]


def socket_logged_in(dashboard: Dashboard, value: str | None) -> bool:
    """What the page's login chip would say: LoginState.check_login over the websocket."""
    from dgx_spark.state.login import LoginState

    with ReflexSocket(dashboard.port, cookie=f"dgx_spark_session={value}" if value else None) as sock:
        sock.emit(f"{LoginState.get_full_name()}.check_login", {})
        while True:
            delta = sock.next_update(60).get("delta", {})
            for fields in delta.values():
                for key, seen in fields.items():
                    if key.startswith("logged_in"):
                        return bool(seen)


def test_login_then_logout_revokes_the_cookie(backend: Dashboard) -> None:
    value = log_in(backend)
    assert cookie_opens_audit(backend, value) == 200
    assert socket_logged_in(backend, value)
    # The store holds a hash, not the value; the file is the owner's only.
    path = backend.data_dir / "sessions.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert value not in path.read_text()
    assert hashlib.sha256(value.encode()).hexdigest() in path.read_text()

    status, headers, _ = raw(backend, "GET", "/logout", headers={"Cookie": f"dgx_spark_session={value}"})
    assert status == 303 and headers["location"] == "/login"
    assert "Max-Age=0" in (headers["set-cookie"] or "")
    # The same cookie, kept by someone, opens nothing any more.
    assert cookie_opens_audit(backend, value) == 401
    assert not socket_logged_in(backend, value)
    assert hashlib.sha256(value.encode()).hexdigest() not in path.read_text()
    control = {"Cookie": f"dgx_spark_session={value}", "Origin": backend.url, "Content-Type": "application/json"}
    status, _, _ = raw(backend, "POST", "/api/dgx/operations/op-4242-1/stop", b"{}", control)
    assert status == 401
    # Another browser's session is still good.
    other = log_in(backend)
    assert cookie_opens_audit(backend, other) == 200


def test_login_form_posted_by_a_browser_from_our_page(backend: Dashboard) -> None:
    status, headers, _ = raw(backend, "GET", "/login")
    assert status == 200 and headers["referrer-policy"] == "no-referrer"
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    body = f"token={TEST_TOKEN}".encode()
    # A browser may send "Origin: null" for its own same-origin form; Sec-Fetch-Site says where it came from.
    ours = {**form, "Origin": "null", "Sec-Fetch-Site": "same-origin"}
    assert raw(backend, "POST", "/login", body, ours)[0] == 303
    for foreign in ({"Origin": "null"}, {"Origin": "null", "Sec-Fetch-Site": "cross-site"},
                    {"Origin": "http://evil.example"}, {"Sec-Fetch-Site": "same-site"}):
        assert raw(backend, "POST", "/login", body, {**form, **foreign})[0] == 403, foreign


def test_logout_from_another_site_revokes_nothing(backend: Dashboard) -> None:
    value = log_in(backend)
    status, headers, _ = raw(backend, "GET", "/logout",
                             headers={"Cookie": f"dgx_spark_session={value}", "Sec-Fetch-Site": "same-site"})
    assert status == 303 and "set-cookie" not in headers
    assert cookie_opens_audit(backend, value) == 200


@pytest.mark.parametrize(
    ("form_next", "location"),
    [
        ("/history", "/history"),
        ("%2Fhistory%3Fq%3Da%2520b", "/history?q=a%20b"),
        ("/%09/evil.example", "/"),  # the form decodes it to "/<TAB>/evil.example"
        ("%2F%2Fevil.example", "/"),
        ("%5C%5Cevil.example", "/"),
        ("/%5Cevil.example", "/"),
        ("/x%0D%0ASet-Cookie:%20a=1", "/"),
        ("/x%0ALocation:%20http://evil.example", "/"),
        ("http://evil.example/", "/"),
        ("/%C3%A9", "/"),
        ("/%00", "/"),
        ("%ff%fe", "/"),
    ],
)
def test_next_after_login_stays_on_this_site(backend: Dashboard, form_next: str, location: str) -> None:
    status, headers, body = post_login(backend, TEST_TOKEN, form_next)
    assert status == 303, body
    assert headers["location"] == location


def test_odd_next_on_the_login_page_is_never_a_500(backend: Dashboard) -> None:
    for query in ("next=/%0d%0a", "next=%ff%fe%00", "next=/%09/evil", "next=" + "%e2%80%a8" * 50,
                  "next=/a%20b"):
        status, _, page = raw(backend, "GET", f"/login?{query}")
        assert status == 200, query
        assert b'name="next" value="/"' in page, query
    status, _, _ = post_login(backend, "", raw_body=b"token=&next=/%0d%0a")
    assert status == 401


def test_only_failed_logins_are_throttled(backend: Dashboard) -> None:
    # Successes take nothing from the budget (10 failures at once, then 2 a second).
    for _ in range(15):
        log_in(backend)
    statuses = [post_login(backend, "wrong-token-0000000000000000")[0] for _ in range(30)]
    assert set(statuses) == {401, 429} and statuses.count(401) >= 8, statuses
    body = post_login(backend, "wrong-token-0000000000000000")[2]
    assert b"too many failed login attempts" in body or b"not valid" in body
    # The owner with the right token is never locked out by the flood, not even while it lasts.
    assert post_login(backend, TEST_TOKEN)[0] == 303


def _asgi_login(body: bytes, guards: Guards) -> tuple[int, dict[bytes, bytes]]:
    """Run the login handler in this process; (status, headers)."""

    scope = {"type": "http", "method": "POST", "path": "/login", "query_string": b"", "client": ("127.0.0.1", 5),
             "headers": [(b"host", b"127.0.0.1:3000"), (b"content-type", b"application/x-www-form-urlencoded")]}
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    run_coroutine(_handle_login(scope, receive, send, guards))
    return sent[0]["status"], dict(sent[0]["headers"])


def test_login_budget_counts_failures_only(tmp_path: Path) -> None:
    budget = RateLimiter(rate=0.000001, burst=3)
    guards = Guards(sessions.Credentials(tmp_path, TEST_TOKEN), audit=lambda **_: None, login_failures=budget)
    good = f"token={TEST_TOKEN}".encode()
    assert [_asgi_login(good, guards)[0] for _ in range(20)] == [303] * 20
    assert [_asgi_login(b"token=wrong-0123456789abcdef", guards)[0] for _ in range(4)] == [401, 401, 401, 429]
    # Spent: wrong tokens get 429; the right one still logs in (every local user is 127.0.0.1).
    assert _asgi_login(good, guards)[0] == 303
    assert _asgi_login(b"token=wrong-0123456789abcdef", guards)[0] == 429


def test_sessions_survive_a_restart_and_end_with_a_new_token(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with Dashboard(data) as dashboard:
        value = log_in(dashboard)
        assert cookie_opens_audit(dashboard, value) == 200
        # A failing event makes Reflex log its request headers: the cookie is not among them.
        from dgx_spark.state.login import LoginState

        with ReflexSocket(dashboard.port, cookie=f"dgx_spark_session={value}; other=1") as sock:
            sock.emit(f"{LoginState.get_full_name()}.no_such_handler", {})
            wait_until(lambda: "no_such_handler" in dashboard.log_tail(100_000), timeout=60,
                       message="Reflex logged nothing for the failing event")
        log = dashboard.log_tail(1_000_000)
        assert "'headers': {" in log and "'origin': " in log  # the headers are in the log...
        assert value not in log and "other=1" not in log  # ...but no cookie

    with Dashboard(data) as restarted:
        assert cookie_opens_audit(restarted, value) == 200

    with Dashboard(data, env={"DGX_SPARK_TOKEN": OTHER_TOKEN}) as rotated:
        assert cookie_opens_audit(rotated, value) == 401
        assert not socket_logged_in(rotated, value)
        stored = json.loads((data / "sessions.json").read_text())["sessions"]
        assert stored == []  # dropped at start
        assert cookie_opens_audit(rotated, log_in(rotated, OTHER_TOKEN)) == 200


def _start_with_token_file(tmp_path: Path, content: bytes) -> subprocess.CompletedProcess[str]:
    data = tmp_path / "data"
    data.mkdir(mode=0o700)
    (data / "token").write_bytes(content)
    os.chmod(data / "token", 0o600)
    env = Dashboard(data).environment()
    env["DGX_SPARK_TOKEN"] = ""
    return subprocess.run(
        [str(BIN / "reflex"), "run", "--env", "prod", "--backend-only"],
        check=False, cwd=ROOT, env=env, capture_output=True, text=True, timeout=180, stdin=subprocess.DEVNULL,
    )


@pytest.mark.parametrize(
    "content",
    [b"\xff\xfe\x00\x81\x00garbage", b"", b"short\n"],
    ids=["binary", "empty", "too-short"],
)
def test_corrupt_token_file_stops_start_up_with_one_line(tmp_path: Path, content: bytes) -> None:
    result = _start_with_token_file(tmp_path, content)
    output = (result.stdout + result.stderr).strip()
    assert result.returncode != 0, output
    assert "Traceback" not in output and "App running" not in output, output
    lines = [line for line in output.splitlines() if line.strip()]
    assert len(lines) == 1, output
    assert "cannot start" in lines[0] and "token" in lines[0] and "delete it" in lines[0], output
    assert str(tmp_path / "data" / "token") in lines[0]
