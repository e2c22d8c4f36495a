"""The UI's side of the control service: who is behind a Reflex event, and what to tell them.

Plain Python (no Reflex import): a handler passes ``self``. Every handler that changes
something calls ``get_control().<action>(ui_actor(self), ...)``; the service checks the
login, throttles, holds the operation and writes the audit row. The UI turns the
service's refusals and failures (``ControlError`` kinds) into words here.
"""

from __future__ import annotations

from typing import Any

from dgx_spark.control.service import Actor
from dgx_spark.security.auth import event_client, event_is_authorized
from dgx_spark.services import get_services
from dgx_spark.supervisor.supervisor import ControlError

LOG_IN_FIRST = "Log in first: open the login link printed when the dashboard started, or go to /login."
# What the UI says for each refusal; the other kinds carry the service's own message.
REFUSAL_TEXT: dict[str, str] = {
    "unauthorized": LOG_IN_FIRST,
    "throttled": "Too many actions at once; wait a moment and try again.",
    "busy": "Another action on this operation is in progress.",
}


def logged_in(state: Any) -> bool:
    """Whether the client behind a Reflex event logged in (a live session of the services' credentials)."""
    return event_is_authorized(state, get_services().credentials)


def ui_actor(state: Any) -> Actor:
    """The client behind a Reflex event: its address, and whether its websocket carries a live login."""
    return Actor(client=event_client(state), via="ui", authorized=logged_in(state))


def is_refusal(exc: ControlError) -> bool:
    """Whether the action was refused before it was tried (login, throttle, another action under way)."""
    return exc.kind in REFUSAL_TEXT


def failure_text(exc: ControlError, what: str) -> str:
    """A toast for a refused or failed action: ``what`` says which (``Stop train-llama``)."""
    return REFUSAL_TEXT.get(exc.kind) or f"{what} failed: {exc.message}"
