"""A launch from the UI with text that is not valid UTF-8 starts and stores nothing, and breaks nothing.

The websocket's JSON decoder refuses a lone surrogate and closes that connection;
if one ever got through, the dialog's check refuses it like the API's guard does.
"""

from __future__ import annotations

import contextlib
import json

from tests.support.dashboard import Dashboard, wait_until
from tests.support.reflex_socket import ReflexSocket
from tests.test_security_events import handler, login_cookie


def test_a_lone_surrogate_in_the_dialog_starts_nothing_and_the_list_keeps_working(backend: Dashboard) -> None:
    before = {op["id"] for op in backend.operations()}
    cookie = login_cookie(backend)
    with contextlib.suppress(ConnectionError), ReflexSocket(backend.port, cookie=cookie) as sock:
        sock.emit(handler("open_launch_dialog"), {})
        sock.emit(handler("choose_template"), {"name": "custom"})
        sock.emit(handler("edit_param"), {"name": "command", "value": "sleep 30"})
        sock.emit(handler("edit_name"), {"value": "bad \ud800 name"})
        sock.emit(handler("launch_operation"), {})
        wait_until(
            lambda: "Fix the highlighted field" in json.dumps(sock.next_update(60)),
            timeout=90, interval=0, message="the launch with a lone surrogate was neither dropped nor refused",
        )
    after = backend.operations()  # still answers 200 with the envelope
    assert {op["id"] for op in after} - before == set()
    # The backend still serves the UI: a new session gets its answers.
    with ReflexSocket(backend.port, cookie=cookie) as sock:
        sock.emit(handler("open_launch_dialog"), {})
        wait_until(lambda: "dialog_open" in json.dumps(sock.next_update(60)), timeout=90, interval=0)
