"""Checks inside the handlers, behind the ASGI layer (defence in depth).

* ``request_is_authorized``: behind ``require_token`` (``dgx_spark/api/actor.py``), the FastAPI
  dependency of the routes that read what only a token holder may (the audit log, raw logs).
  Control routes instead pass the caller to the control service (``dgx_spark/control/service.py``),
  which checks ``request_is_authorized`` / ``event_is_authorized``.
* ``event_is_authorized`` / ``event_client``: who is behind a Reflex event.
  Reflex keeps the websocket handshake's headers on the state
  (``state.router_data["headers"]``). The security layer takes the session cookie
  out of them (Reflex would keep it in every tab's state and write it to the log
  when an event fails) and puts the session's public id in its place
  (``sessions.LOGIN_HEADER``), dropping any the client sent. A handler looks that id
  up, so Log out takes effect on an open tab at once. The headers come from the
  connection, not from the event payload, so a client cannot forge them per event.
"""

from __future__ import annotations

from typing import Any

from fastapi import Request

from dgx_spark.security import sessions
from dgx_spark.security.middleware import (
    bearer_token,
    is_cross_origin,
    operation_token_ok,
)


def request_is_authorized(request: Request, credentials: sessions.Credentials) -> bool:
    """Whether an HTTP request carries the bearer token, or the session cookie from our own origin.

    A token in the query string is never looked at. A launched job's operation token
    is accepted only on ``POST /api/dgx/operations/{its id}/progress``.
    """
    offered = bearer_token(request.headers.get("authorization"))
    path = request.scope.get("path", "")
    if credentials.token_matches(offered) or operation_token_ok(offered, request.method, path, credentials):
        return True
    session = credentials.sessions.from_cookie(request.headers.get("cookie"))
    return session is not None and not is_cross_origin(request.scope)


def request_client(request: Request) -> str:
    """The client's address, for the audit log."""
    return request.client.host if request.client else "unknown"


# ----------------------------------------------------------------------------- Reflex state


def _event_headers(state: Any) -> dict[str, str]:
    router_data = getattr(state, "router_data", None)
    if isinstance(router_data, dict) and isinstance(router_data.get("headers"), dict):
        return router_data["headers"]
    headers = getattr(getattr(state, "router", None), "headers", None)
    raw = getattr(headers, "raw_headers", None)
    return dict(raw) if raw else {}


def event_is_authorized(state: Any, credentials: sessions.Credentials) -> bool:
    """Whether the client behind a Reflex event logged in (a live session on its websocket)."""
    session_id = _event_headers(state).get(sessions.LOGIN_HEADER)
    return isinstance(session_id, str) and credentials.sessions.by_id(session_id) is not None


def event_client(state: Any) -> str:
    """The client behind a Reflex event: its address, for the audit log and the throttle."""
    session = getattr(getattr(state, "router", None), "session", None)
    address = getattr(session, "client_ip", "") or ""
    if not address:
        router_data = getattr(state, "router_data", None)
        if isinstance(router_data, dict):
            address = str(router_data.get("ip", "") or "")
    return address or "unknown"
