"""One ASGI layer in front of the UI, the websocket at /_event and the API.

For every HTTP request and websocket handshake, in this order:

1. **Host**: the Host header must name this dashboard (DNS-rebinding defence) -> 400.
2. **Login routes**: ``/login`` (one-time link, token form) and ``/logout`` are answered here.
3. **Websocket** (``/_event``): a foreign ``Origin`` is refused; so is a client that
   must log in (``DGX_SPARK_AUTH=required`` or not loopback) without the session cookie.
4. **Mutations** (POST, PUT, PATCH, DELETE, anywhere): need ``Authorization: Bearer
   <token>``, or the session cookie from the app's own origin. A token in the query
   string is never accepted. A launched job's operation token (``op1.`` + HMAC of
   the token and its id) is accepted for ``POST /api/dgx/operations/{its id}/progress``
   and nothing else. Without the bearer token, a request from another origin
   (``Origin`` / ``Sec-Fetch-Site``) -> 403; otherwise no credentials -> 401. These
   refusals are written to the audit log, named by the control route that would have
   served the request (the API's ``describe_control``). What a control action then
   needs (throttle, one at a time per operation, its audit row) is the control
   service's job (``dgx_spark/control/service.py``), behind the routes.
5. **Viewing** (GET, HEAD): free from loopback in the default ``local`` mode; with
   ``DGX_SPARK_AUTH=required`` or from another address it needs the cookie or the
   bearer token (API: 401; pages: redirect to /login). ``/api/dgx/audit`` and the raw
   log download (``/api/dgx/operations/{id}/logs/download``) always need it, and so
   do a remote node's logs (``/api/dgx/nodes/{node}/operations/{id}/logs…``: they are
   read with that node's token). ``/metrics`` needs the bearer token (not the cookie)
   wherever viewing needs credentials.

Handlers check again themselves (``require_token``, ``event_is_authorized``).
Every HTTP answer, refusals included, gets ``SECURITY_HEADERS`` and a CSP with
``frame-ancestors 'none'`` (``with_security_headers``).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import html
import ipaddress
import json
import logging
import os
import re
import stat
import urllib.parse
from collections.abc import Awaitable, Callable, MutableMapping
from pathlib import Path
from typing import Any

from dgx_spark.security import sessions
from dgx_spark.security import token as tokens
from dgx_spark.security.envelope import error_body
from dgx_spark.security.throttle import RateLimiter
from dgx_spark.settings import is_loopback_host, settings

logger = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
LOGIN_PATH = "/login"
LOGOUT_PATH = "/logout"
EVENT_PATH = "/_event"  # Reflex's Socket.IO endpoint (websocket, or HTTP long-polling)
# Paths that need the token even to read.
PRIVATE_PREFIXES = ("/api/dgx/audit",)
# The raw log download is not redacted: token (or login cookie) only.
PRIVATE_PATHS = re.compile(
    r"^/api/dgx/operations/[^/]+/logs/download/?$"
    # A remote node's logs are read with that node's token: here they need the token (or login) too.
    r"|^/api/dgx/nodes/[^/]+/operations/[^/]+/logs(/stream|/download)?/?$"
)
# Prometheus metrics: free from loopback in the local mode, otherwise the bearer token only.
METRICS_PATH = "/metrics"
MAX_LOGIN_BODY = 4096

# The one route an operation token (``DGX_SPARK_TOKEN`` inside a launched job) may use.
_OPERATION_PROGRESS = re.compile(r"^/api/dgx/operations/(?P<id>[^/]+)/progress/?$")
# Names a refused request by the control route that would serve it: (action, target), or None.
Describe = Callable[[Scope], "tuple[str, str | None] | None"]
# Queues one audit row (``AuditLog.record_soon`` of the process's services); never raises.
AuditSoon = Callable[..., None]

# Failed logins per client: 10 at once, then 2 a second (each layer counts its own; ``security_layer``).
LOGIN_FAILURE_RATE = 2.0
LOGIN_FAILURE_BURST = 10
# The websocket's request headers become Reflex state: these never reach it.
_PRIVATE_EVENT_HEADERS = frozenset({b"cookie", b"authorization", b"proxy-authorization",
                                    sessions.LOGIN_HEADER.encode()})


def allowed_hosts() -> frozenset[str]:
    """Host names (without port) that requests may address."""
    hosts = {"127.0.0.1", "localhost", "::1", settings.host.strip("[]").lower()}
    hosts.update(settings.server.allowed_hosts)  # DGX_SPARK_ALLOWED_HOSTS
    hosts.discard("0.0.0.0")
    hosts.discard("::")
    return frozenset(hosts)


def allowed_origins() -> frozenset[str]:
    """Origins (scheme://host:port) of the app itself, plus ``DGX_SPARK_ALLOWED_ORIGINS``."""
    origins: set[str] = set()
    for host in allowed_hosts():
        shown = f"[{host}]" if ":" in host else host
        for port in {settings.port, settings.api_port}:  # two ports in dev mode: page and backend
            origins.add(f"http://{shown}:{port}")
            origins.add(f"https://{shown}:{port}")
    origins.update(settings.server.allowed_origins)  # DGX_SPARK_ALLOWED_ORIGINS, checked at start
    return frozenset(origins)


def host_name(value: str) -> str:
    """The host part of a Host header, lower-cased, without port or brackets."""
    value = value.strip().lower()
    if value.startswith("["):
        return value[1 : value.find("]")] if "]" in value else value
    return value.rsplit(":", 1)[0] if value.count(":") == 1 else value


def header(scope: Scope, name: bytes) -> str | None:
    """The first value of a request header, or None."""
    for key, value in scope.get("headers", ()):
        if key == name:
            return value.decode("latin-1")
    return None


def cookie_header(scope: Scope) -> str:
    """Every Cookie header of the request, joined."""
    return "; ".join(v.decode("latin-1") for k, v in scope.get("headers", ()) if k == b"cookie")


def bearer_token(authorization: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header value."""
    if not authorization:
        return None
    scheme, _, value = authorization.strip().partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return None
    return value.strip()


def client_address(scope: Scope) -> str:
    """The peer's address as the server saw it."""
    client = scope.get("client")
    return str(client[0]) if client else "unknown"


@functools.lru_cache(maxsize=1024)  # a few peers ask again and again; parsing each time is not free
def is_loopback_client(address: str) -> bool:
    """Whether a peer address is on this machine (127.0.0.0/8, ::1, IPv4-mapped loopback)."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return False
    mapped = getattr(ip, "ipv4_mapped", None)
    return bool(ip.is_loopback or (mapped is not None and mapped.is_loopback))


def is_cross_origin(scope: Scope) -> bool:
    """Whether a browser says the request comes from a page of another origin."""
    origin = header(scope, b"origin")
    if origin is not None and origin.strip().rstrip("/").lower() not in allowed_origins():
        return True
    fetch_site = (header(scope, b"sec-fetch-site") or "").strip().lower()
    return fetch_site in ("cross-site", "same-site")


def operation_token_scope(method: str, path: str) -> str | None:
    """The operation id whose token may make this request, or None (nothing else takes one).

    An operation token only reports its own operation's progress:
    ``POST /api/dgx/operations/{id}/progress``.
    """
    if method.upper() != "POST" or not (match := _OPERATION_PROGRESS.match(path)):
        return None
    return urllib.parse.unquote(match.group("id"))


def operation_token_ok(offered: str | None, method: str, path: str, credentials: sessions.Credentials) -> bool:
    """Whether ``offered`` is the operation token for the operation this request reports on."""
    if not offered or not offered.startswith(tokens.OPERATION_TOKEN_PREFIX):
        return False
    return credentials.operation_token_matches(offered, operation_token_scope(method, path))


def _json_response(status: int, code: str, message: str) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    body = json.dumps(error_body(status, message, code)).encode()
    headers = [(b"content-type", b"application/json")]
    if status == 401:
        headers.append((b"www-authenticate", b'Bearer realm="dgx-spark"'))
    return status, headers, body


async def _send_response(
    send: Send, status: int, headers: list[tuple[bytes, bytes]], body: bytes = b""
) -> None:
    headers = [*headers, (b"content-length", str(len(body)).encode()), (b"cache-control", b"no-store")]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _refuse(scope: Scope, send: Send, status: int, code: str, message: str) -> None:
    if scope["type"] == "websocket":
        # Closing before accepting makes the server answer the handshake with 403.
        await send({"type": "websocket.close", "code": 1008, "reason": message[:120]})
        return
    await _send_response(send, *_json_response(status, code, message))


# Sent with every HTTP answer (pages, API, refusals): never framed, never sniffed, no referrer.
SECURITY_HEADERS: tuple[tuple[bytes, bytes], ...] = (
    (b"x-frame-options", b"DENY"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
)
# Only what cannot break the Reflex frontend (its scripts, styles and websocket are untouched).
DEFAULT_CSP = b"frame-ancestors 'none'; base-uri 'self'; object-src 'none'"
_FRAME_ANCESTORS = b"frame-ancestors 'none'"


def add_security_headers(headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """``headers`` plus the security headers it lacks; a CSP without frame-ancestors gets it."""
    names = {name.lower() for name, _ in headers}
    out = [
        (name, value + b"; " + _FRAME_ANCESTORS)
        if name.lower() == b"content-security-policy" and b"frame-ancestors" not in value
        else (name, value)
        for name, value in headers
    ]
    out += [(name, value) for name, value in SECURITY_HEADERS if name not in names]
    if b"content-security-policy" not in names:
        out.append((b"content-security-policy", DEFAULT_CSP))
    return out


def with_security_headers(send: Send) -> Send:
    """Wrap an ASGI ``send`` so that the response start carries the security headers."""

    async def send_with_headers(message: Message) -> None:
        if message["type"] == "http.response.start":
            message = {**message, "headers": add_security_headers(list(message.get("headers", ())))}
        await send(message)

    return send_with_headers


def _no_audit(**fields: Any) -> None:
    """The audit writer of an app that has none (a bare app in a test): the row is only logged."""
    logger.debug("no audit log for %s", fields.get("action"))


# ----------------------------------------------------------------------------- login page

_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Log in · DGX Spark Operations</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body{{font-family:system-ui,sans-serif;background:#111417;color:#e6e8eb;display:flex;
min-height:100vh;align-items:center;justify-content:center;margin:0}}
form{{background:#1a1e22;padding:2rem;border-radius:10px;width:min(26rem,90vw)}}
h1{{font-size:1.2rem;margin:0 0 1rem}} p{{color:#9ba1a6;font-size:.9rem}}
input{{width:100%;box-sizing:border-box;padding:.6rem;margin:.5rem 0 1rem;border-radius:6px;
border:1px solid #3a3f44;background:#0d0f11;color:inherit}}
button{{padding:.6rem 1.2rem;border:0;border-radius:6px;background:#30a46c;color:#fff;cursor:pointer}}
.error{{color:#ff6369}}
</style></head><body>
<form method="post" action="/login" id="login-form">
<h1>DGX Spark Operations</h1>
{message}
<p>Paste the access token. It is printed when the dashboard starts and stored in
<code>DGX_SPARK_DATA_DIR/token</code>.</p>
<label for="token">Access token</label>
<input id="token" name="token" type="password" autocomplete="current-password" required autofocus>
<input type="hidden" name="next" value="{next}">
<button type="submit" id="login-submit">Log in</button>
</form></body></html>"""


def _plain_path(value: str) -> bool:
    """A path of this site: starts with one "/", printable ASCII, no space, no backslash."""
    return (
        value.startswith("/")
        and not value.startswith("//")
        and all("!" <= c <= "~" and c != "\\" for c in value)
    )


def _safe_next(value: str | None) -> str:
    """A same-origin path to go to after logging in; "/" for anything else.

    Browsers drop tabs and newlines from URLs and read a backslash as a slash, so
    ``/\t/evil.example`` would leave the site: any control character, whitespace,
    backslash or non-ASCII character gives "/", in the path also once percent-decoded
    (the query may hold ``%20``).
    """
    if not isinstance(value, str) or not value or len(value) > 2000 or not _plain_path(value):
        return "/"
    parts = urllib.parse.urlsplit(value)
    if parts.scheme or parts.netloc or not _plain_path(urllib.parse.unquote(parts.path)):
        return "/"
    return value


def _login_page(status: int, next_path: str, error: str | None = None) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    message = f'<p class="error" id="login-error">{html.escape(error)}</p>' if error else ""
    body = _PAGE.format(message=message, next=html.escape(_safe_next(next_path), quote=True)).encode()
    headers = [
        (b"content-type", b"text/html; charset=utf-8"),
        (b"content-security-policy", b"default-src 'none'; style-src 'unsafe-inline'; form-action 'self'"),
        (b"x-frame-options", b"DENY"),
        # Like every answer: under it a browser posts the form with "Origin: null", and its own
        # Sec-Fetch-Site: same-origin lets it in (see _login_from_elsewhere).
        (b"referrer-policy", b"no-referrer"),
    ]
    return status, headers, body


def _login_from_elsewhere(scope: Scope) -> bool:
    """Whether a login form was posted by a page of another origin.

    A browser's own ``Sec-Fetch-Site: same-origin`` (which no page can set) is enough:
    some post a same-origin form with ``Origin: null`` (e.g. under a no-referrer policy).
    """
    if (header(scope, b"sec-fetch-site") or "").strip().lower() == "same-origin":
        return False
    return is_cross_origin(scope)


async def read_body(receive: Receive, limit: int) -> bytes | None:
    """The request body, or None when it is larger than ``limit``."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return b"".join(chunks)
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def _credential_ok(value: str | None, credentials: sessions.Credentials) -> bool:
    """A login credential: the token itself or an unused one-time code."""
    return bool(value) and (credentials.token_matches(value)
                            or tokens.consume_login_code(value, credentials.data_dir))


async def _handle_login(scope: Scope, receive: Receive, send: Send, guards: Guards) -> None:
    """The login page and form: a valid token or one-time code gets a session cookie.

    ``guards.login_failures`` counts failed logins per client: a success takes nothing from it.
    """
    audit, store = guards.audit, guards.credentials.sessions
    method = scope["method"]
    client = client_address(scope)
    query = urllib.parse.parse_qs(scope.get("query_string", b"").decode("latin-1"))
    next_path = _safe_next((query.get("next") or ["/"])[0])
    if method in ("GET", "HEAD"):
        offered = (query.get("token") or [None])[0]
        if offered is None:
            await _send_response(send, *_login_page(200, next_path))
            return
    elif method == "POST":
        if _login_from_elsewhere(scope):
            await _refuse(scope, send, 403, "forbidden_origin", "login from another origin is refused")
            return
        body = await read_body(receive, MAX_LOGIN_BODY)
        if body is None:
            await _refuse(scope, send, 413, "payload_too_large", "login form too large")
            return
        form = urllib.parse.parse_qs(body.decode("utf-8", "replace"))
        offered = (form.get("token") or [""])[0].strip()
        next_path = _safe_next((form.get("next") or [next_path])[0])
    else:
        await _refuse(scope, send, 405, "method_not_allowed", f"{method} is not allowed on /login")
        return
    # Only failures count, and they only slow down more failures: every local user is 127.0.0.1, so a
    # flood of wrong tokens from another user must never lock the owner (who has the right one) out.
    if not _credential_ok(offered, guards.credentials):
        if not guards.login_failures.allow(client):
            await _refuse(scope, send, 429, "too_many_requests", "too many failed login attempts; wait a moment")
            return
        audit(action="login", outcome="refused", client=client, status=401, via="login",
                     detail="invalid or already used token")
        error = "That token is not valid, or this one-time link was already used."
        await _send_response(send, *_login_page(401, next_path, error))
        return
    try:
        value, _ = await asyncio.to_thread(store.create)
    except OSError as exc:
        logger.error("cannot save a login session in %s: %s", store.path, exc)
        error = "Logged in, but the session could not be saved (is the data folder writable?)."
        await _send_response(send, *_login_page(503, next_path, error))
        return
    secure = scope.get("scheme") == "https"
    cookie = (b"set-cookie", sessions.session_cookie_header(value, secure=secure).encode())
    if method == "POST":
        audit(action="login", outcome="allowed", client=client, status=303, via="login")
        await _send_response(send, 303, [(b"location", next_path.encode("latin-1", "replace")), cookie,
                                         (b"referrer-policy", b"no-referrer")])
        return
    # A link may be opened from another site (a chat, a terminal): a redirect would then carry
    # no SameSite=Strict cookie to the next page. A page of our own that moves on does.
    audit(action="login", outcome="allowed", client=client, status=200, via="login")
    target = html.escape(next_path, quote=True)
    body = (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="refresh" content="0;url={target}"><title>Logged in</title></head>'
        f'<body id="login-done"><p>Logged in. <a href="{target}">Continue</a></p></body></html>'
    ).encode()
    headers = [
        (b"content-type", b"text/html; charset=utf-8"),
        cookie,
        (b"referrer-policy", b"no-referrer"),
        (b"content-security-policy", b"default-src 'none'"),
    ]
    await _send_response(send, 200, headers, body)


async def _handle_logout(scope: Scope, send: Send, guards: Guards) -> None:
    """End this browser's session on the server, then drop its cookie (only from our own pages)."""
    store = guards.credentials.sessions
    if is_cross_origin(scope):
        await _send_response(send, 303, [(b"location", b"/")])
        return
    value = tokens.parse_cookies(cookie_header(scope)).get(sessions.SESSION_COOKIE)
    if value:
        try:
            if await asyncio.to_thread(store.revoke, value):
                guards.audit(action="logout", outcome="allowed", client=client_address(scope), status=303, via="login")
        except OSError as exc:
            logger.error("cannot end a login session in %s: %s", store.path, exc)
    headers = [(b"location", LOGIN_PATH.encode()), (b"set-cookie", sessions.clear_cookie_header().encode())]
    await _send_response(send, 303, headers)


def event_scope(scope: Scope, session: sessions.Session | None) -> Scope:
    """The websocket's scope as Reflex gets it: no cookie or credentials, the session's public id.

    Reflex keeps these headers in each tab's state and logs them when an event fails,
    so nothing that authenticates may be among them. ``sessions.LOGIN_HEADER`` names the
    session (only this layer sets it; a client's own is dropped).
    """
    headers = [(k, v) for k, v in scope.get("headers", ()) if k.lower() not in _PRIVATE_EVENT_HEADERS]
    if session is not None:
        headers.append((sessions.LOGIN_HEADER.encode(), session.id.encode()))
    return {**scope, "headers": headers}


# ----------------------------------------------------------------------------- the layer


def check_bind() -> None:
    """Refuse to serve a non-loopback interface unless every request needs the token."""
    if not is_loopback_host(settings.host) and not settings.auth_required:
        raise RuntimeError(
            f"refusing to listen on {settings.host}: set DGX_SPARK_AUTH=required to serve other machines"
        )


def private_reflex_states(states_dir: Path | None = None) -> int:
    """Make Reflex's on-disk state folder 0700 and its files 0600, if there is one.

    The app keeps states in memory (``rxconfig.py``); a ``.states`` folder left by an
    older version (or by ``REFLEX_STATE_MANAGER_MODE=disk``) must not be readable by others.

    Returns:
        How many paths were tightened.
    """
    root = states_dir or Path(os.environ.get("REFLEX_STATES_WORKDIR") or ".states")
    fixed = 0
    with contextlib.suppress(OSError):
        if root.is_symlink() or not root.is_dir():
            return 0
        paths = [root, *root.rglob("*")]
        for path in paths:
            info = path.lstat()
            want = 0o700 if stat.S_ISDIR(info.st_mode) else 0o600
            if stat.S_ISLNK(info.st_mode) or info.st_uid != os.geteuid() or stat.S_IMODE(info.st_mode) == want:
                continue
            os.chmod(path, want)
            fixed += 1
    if fixed:
        logger.warning("Reflex state folder %s: made %d path(s) private to this user", root, fixed)
    return fixed


def announce_login(credentials: sessions.Credentials) -> str:
    """Make sure the token exists and print a one-time login URL (as Jupyter does)."""
    _ = credentials.token
    private_reflex_states()
    with contextlib.suppress(OSError):
        if dropped := credentials.sessions.prune():
            logger.info("dropped %d expired login sessions or sessions of an older token", dropped)
    url = tokens.login_url(settings.base_url, tokens.issue_login_code(credentials.data_dir))
    print(
        "\n  DGX Spark Operations: open this link to log in (it works once):\n"
        f"    {url}\n"
        f"  The API token (Authorization: Bearer ...) is in {tokens.token_path(credentials.data_dir)}"
        f"{' (overridden by DGX_SPARK_TOKEN)' if settings.server.token else ''}.\n",
        flush=True,
    )
    return url


def security_layer(
    app: ASGIApp,
    describe: Describe | None = None,
    audit: AuditSoon | None = None,
    credentials: sessions.Credentials | None = None,
) -> ASGIApp:
    """Wrap an ASGI app with the Host, Origin and token checks and the security headers.

    Args:
        app: The app to guard (the API app, with Reflex mounted beneath it).
        describe: Names a mutation the layer refuses (action, target) for the audit log; by
            default the API's own (``app.state.describe_control``, see ``dgx_spark/api/actor.py``).
        audit: Queues an audit row (logins, refusals); by default the API's (``app.state.audit_soon``,
            the services' audit log), else rows are only logged.
        credentials: The token and login sessions; by default the API's (``app.state.credentials``,
            which gives the services' ones).

    Raises:
        RuntimeError: No credentials given and the app has none; or a bind that needs login without it.
    """
    check_bind()
    hosts = allowed_hosts()
    origins = allowed_origins()
    app_state = getattr(app, "state", None)
    if credentials is None:
        given = getattr(app_state, "credentials", None)
        if given is None:
            raise RuntimeError("the security layer needs the credentials (the API app's state.credentials)")
        credentials = given()
    announce_login(credentials)
    describe = describe or getattr(app_state, "describe_control", None)
    guards = Guards(
        credentials=credentials,
        audit=audit or getattr(app_state, "audit_soon", None) or _no_audit,
        login_failures=RateLimiter(rate=LOGIN_FAILURE_RATE, burst=LOGIN_FAILURE_BURST),
    )

    async def guarded(scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind not in ("http", "websocket"):
            await app(scope, receive, send)
            return
        if kind == "http":
            send = with_security_headers(send)
        host = header(scope, b"host")
        if host is None or host_name(host) not in hosts:
            await _refuse(scope, send, 400, "bad_host", f"host {host!r} is not served here")
            return
        client = client_address(scope)
        call = _Call(
            scope=scope,
            receive=receive,
            send=send,
            client=client,
            session=guards.credentials.sessions.from_cookie(cookie_header(scope)),
            must_log_in=settings.auth_required or not is_loopback_client(client),
            guards=guards,
        )
        if kind == "websocket":
            await _guard_websocket(app, call, origins)
        else:
            await _guard_http(app, call, describe)

    return guarded


@dataclasses.dataclass(frozen=True)
class Guards:
    """What one security layer checks with and writes to (built with the layer)."""

    credentials: sessions.Credentials
    audit: AuditSoon
    login_failures: RateLimiter


@dataclasses.dataclass
class _Call:
    """One request or websocket as the security layer sees it."""

    scope: Scope
    receive: Receive
    send: Send
    client: str
    session: sessions.Session | None
    must_log_in: bool
    guards: Guards

    @property
    def path(self) -> str:
        """The path asked for."""
        return str(self.scope.get("path", ""))


async def _guard_websocket(app: ASGIApp, call: _Call, origins: frozenset[str]) -> None:
    """A websocket (Reflex's events): from our own origin, and logged in where login is needed."""
    origin = header(call.scope, b"origin")
    if origin is not None and origin.strip().rstrip("/").lower() not in origins:
        call.guards.audit(action="connect", outcome="refused", target=call.path, client=call.client, via="ui",
                     detail=f"websocket from foreign origin {origin[:100]}")
        await _refuse(call.scope, call.send, 403, "forbidden_origin", "origin not allowed")
        return
    if call.must_log_in and call.session is None:
        await _refuse(call.scope, call.send, 401, "unauthorized", "log in first")
        return
    await app(event_scope(call.scope, call.session), call.receive, call.send)


async def _guard_http(app: ASGIApp, call: _Call, describe: Describe | None) -> None:
    """An HTTP request: login and logout here; a valid bearer token when one is offered; then by method."""
    scope, path = call.scope, call.path
    method: str = scope.get("method", "GET").upper()
    if path == LOGIN_PATH:
        await _handle_login(scope, call.receive, call.send, call.guards)
        return
    if path == LOGOUT_PATH:
        await _handle_logout(scope, call.send, call.guards)
        return
    authorization = header(scope, b"authorization")
    offered = bearer_token(authorization)
    # An operation token counts as the bearer token for its own progress route only.
    credentials = call.guards.credentials
    bearer_ok = credentials.token_matches(offered) or operation_token_ok(offered, method, path, credentials)
    if authorization is not None and not bearer_ok:
        await _refuse(scope, call.send, 401, "unauthorized", "the bearer token is not valid")
        return
    if path.startswith(EVENT_PATH):
        call.scope = event_scope(scope, call.session)
    if method in SAFE_METHODS:
        await _guard_read(app, call, method, bearer_ok)
    else:
        await _guard_mutation(app, call, bearer_ok, describe)


async def _guard_read(app: ASGIApp, call: _Call, method: str, bearer_ok: bool) -> None:
    """A safe method: open on this machine unless private; else the token or the login cookie."""
    scope, path, cookie_ok = call.scope, call.path, call.session is not None
    if path.rstrip("/") == METRICS_PATH and (call.must_log_in and not bearer_ok):
        await _refuse(scope, call.send, 401, "unauthorized",
                      "metrics need Authorization: Bearer <token> (or a scrape from this machine "
                      "with DGX_SPARK_AUTH=local)")
        return
    private = path.startswith(PRIVATE_PREFIXES) or bool(PRIVATE_PATHS.match(path))
    if (call.must_log_in or private) and not (bearer_ok or cookie_ok):
        if path.startswith("/api/") or private or method == "OPTIONS":
            await _refuse(scope, call.send, 401, "unauthorized", "a valid token is required")
        else:
            target = LOGIN_PATH + "?" + urllib.parse.urlencode({"next": path})
            await _send_response(call.send, 303, [(b"location", target.encode())])
        return
    await app(scope, call.receive, call.send)


async def _guard_mutation(app: ASGIApp, call: _Call, bearer_ok: bool, describe: Describe | None) -> None:
    """A mutation: the bearer token, or the login cookie from our own origin.

    What the action then needs (throttle, one at a time, audit) is done by the
    control service behind the route.
    """
    scope = call.scope
    if not bearer_ok:
        if is_cross_origin(scope):
            _audit_refusal(call, describe, 403, "request from another origin")
            await _refuse(scope, call.send, 403, "forbidden_origin",
                          "state-changing requests from another origin need the bearer token")
            return
        if call.session is None:
            _audit_refusal(call, describe, 401, "no valid token")
            await _refuse(scope, call.send, 401, "unauthorized",
                          "this action needs the token: send Authorization: Bearer <token>")
            return
    await app(scope, call.receive, call.send)


def _audit_refusal(call: _Call, describe: Describe | None, status: int, detail: str) -> None:
    """Audit a mutation refused here, named by the control route that would have served it."""
    scope = call.scope
    named = None
    if describe is not None:
        try:
            named = describe(scope)
        except Exception:  # naming is for the audit row; the refusal stands
            logger.debug("cannot name a refused request", exc_info=True)
    action, target = named if named else ("mutation", str(scope.get("path", ""))[:200])
    call.guards.audit(action=action, outcome="refused", target=target, client=call.client, status=status, via="api",
               detail=detail)
