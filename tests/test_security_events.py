"""Privileged Reflex event handlers, called over the raw websocket as any client could.

Bad argument types are rejected with a message naming the field and no signal
reaches the (real, spawned) target; without the login cookie nothing is done;
with it, the same channel does stop the target (so the refusals are real).
"""

from __future__ import annotations

import http.client
import json
from collections.abc import Iterator
from typing import Any

import psutil
import pytest

from tests.support.dashboard import TEST_TOKEN, Dashboard, wait_until
from tests.support.reflex_socket import ReflexSocket

control = pytest.importorskip("dgx_spark.state.control", reason="the control event handlers are not there yet")
ControlState = control.ControlState


def handler(name: str) -> str:
    """The full event name of a ControlState handler."""
    return f"{ControlState.get_full_name()}.{name}"


def login_cookie(dashboard: Dashboard) -> str:
    conn = http.client.HTTPConnection("127.0.0.1", dashboard.port, timeout=30)
    try:
        conn.request(
            "POST",
            "/login",
            body=f"token={TEST_TOKEN}",
            headers={"Host": f"127.0.0.1:{dashboard.port}", "Content-Type": "application/x-www-form-urlencoded"},
        )
        resp = conn.getresponse()
        resp.read()
        assert resp.status == 303
        return resp.headers["set-cookie"].split(";", 1)[0]
    finally:
        conn.close()


def expect_message(sock: ReflexSocket, event: str, payload: dict[str, Any], needle: str) -> str:
    """Send an event and wait for an update whose text holds ``needle`` (a toast, say)."""
    sock.emit(handler(event), payload)
    found = wait_until(
        lambda: next((t for t in [json.dumps(sock.next_update(60))] if needle in t), None),
        timeout=90,
        interval=0,
        message=f"{event}({payload!r}) never answered with {needle!r}",
    )
    return found


@pytest.fixture
def target(backend: Dashboard) -> Iterator[tuple[str, psutil.Process]]:
    """A real launched operation (``sleep``) and its process."""
    status, reply = backend.authed(
        "POST",
        "/api/dgx/operations",
        {"template": "custom", "name": "event-target", "type": "program", "command": ["sleep", "600"]},
    )
    assert status == 201, reply
    op_id = reply["data"]["id"]

    def running_pid() -> int | None:
        _, body = backend.request("GET", f"/api/dgx/operations/{op_id}")
        data = body.get("data") or {}
        return data.get("pid") if data.get("status") in ("running", "active") else None

    pid = wait_until(running_pid, timeout=60, message="the target never ran")
    process = psutil.Process(pid)
    yield op_id, process
    backend.authed("POST", f"/api/dgx/operations/{op_id}/stop", {"force": True})


def alive(process: psutil.Process) -> bool:
    return process.is_running() and process.status() != psutil.STATUS_ZOMBIE


BAD_CALLS: list[tuple[str, dict[str, Any], str]] = [
    ("start_again", {"op_id": ["OPID"]}, "operation_id:"),
    ("start_again", {"op_id": 12345}, "operation_id:"),
    ("start_again", {"op_id": {"id": "OPID"}}, "operation_id:"),
    ("start_again", {"op_id": "OPID\nrm"}, "operation_id:"),
    ("remove_operation", {"op_id": None}, "operation_id:"),
    ("remove_operation", {"op_id": True}, "operation_id:"),
    ("remove_operation", {"op_id": "../../etc/passwd"}, "operation_id:"),
    ("ask_stop", {"op_id": ["OPID"], "name": "x", "source": "launched"}, "operation_id:"),
    ("ask_stop", {"op_id": 1, "name": "x", "source": "launched"}, "operation_id:"),
    ("confirm_stop", {"force": "yes"}, "operation_id:"),  # nothing confirmed: nothing to stop
    # A remote node's action names a node: a bad or unknown one is refused, nothing is sent anywhere.
    ("start_again", {"op_id": "OPID", "node": "../x"}, "node:"),
    ("remove_operation", {"op_id": "OPID", "node": ["local"]}, "node:"),
    ("ask_stop", {"op_id": "OPID", "name": "x", "source": "launched", "node": "no-such-node"}, "node:"),
    ("open_logs", {"op_id": "OPID", "name": "x", "node": "http://evil"}, "node:"),
]


def test_bad_arguments_are_rejected_and_no_signal_is_sent(
    backend: Dashboard, target: tuple[str, psutil.Process]
) -> None:
    op_id, process = target
    with ReflexSocket(backend.port, cookie=login_cookie(backend)) as sock:
        for event, payload, needle in BAD_CALLS:
            payload = json.loads(json.dumps(payload).replace("OPID", op_id))
            expect_message(sock, event, payload, needle)
            assert alive(process), f"{event}({payload}) reached the target"
    _, body = backend.request("GET", f"/api/dgx/operations/{op_id}")
    assert body["data"]["status"] in ("running", "active")
    assert alive(process)


def test_without_login_nothing_is_done(backend: Dashboard, target: tuple[str, psutil.Process]) -> None:
    op_id, process = target
    with ReflexSocket(backend.port) as sock:
        sock.emit(handler("ask_stop"), {"op_id": op_id, "name": "event-target", "source": "launched"})
        expect_message(sock, "confirm_stop", {"force": True}, "Log in first")
        expect_message(sock, "remove_operation", {"op_id": op_id}, "Log in first")
        expect_message(sock, "start_again", {"op_id": op_id}, "Log in first")
    assert alive(process)
    # A forged cookie is no login either.
    with ReflexSocket(backend.port, cookie="dgx_spark_session=" + "0" * 64) as sock:
        sock.emit(handler("ask_stop"), {"op_id": op_id, "name": "event-target", "source": "launched"})
        expect_message(sock, "confirm_stop", {"force": True}, "Log in first")
    assert alive(process)


def test_refusals_are_audited(backend: Dashboard, target: tuple[str, psutil.Process]) -> None:
    op_id, _ = target
    with ReflexSocket(backend.port) as sock:
        expect_message(sock, "start_again", {"op_id": op_id}, "Log in first")

    def refused_ui() -> list[dict[str, Any]]:
        _, body = backend.authed("GET", f"/api/dgx/audit?target={op_id}&outcome=refused")
        return [r for r in body["data"] if r["via"] == "ui" and r["action"] == "start"]

    rows = wait_until(refused_ui, timeout=30)
    assert rows[0]["status"] == 401


def test_logged_in_client_can_stop(backend: Dashboard, target: tuple[str, psutil.Process]) -> None:
    """The positive control: the same channel with the login cookie really stops the target."""
    op_id, process = target
    with ReflexSocket(backend.port, cookie=login_cookie(backend)) as sock:
        sock.emit(handler("ask_stop"), {"op_id": op_id, "name": "event-target", "source": "launched"})
        sock.emit(handler("confirm_stop"), {"force": True})
        wait_until(lambda: not alive(process), timeout=60, message="the logged-in stop did not stop the target")


def test_webhook_change_needs_login(backend: Dashboard) -> None:
    """Pointing the webhook elsewhere would send every event out: a change like any other."""
    events_state = pytest.importorskip("dgx_spark.state.events").EventsState
    name = events_state.get_full_name()
    with ReflexSocket(backend.port) as sock:
        sock.emit(f"{name}.edit_webhook", {"value": "http://attacker.example/hook"})
        sock.emit(f"{name}.save_webhook", {})
        wait_until(
            lambda: "Log in first" in json.dumps(sock.next_update(60)), timeout=90, interval=0,
            message="saving the webhook without login was not refused",
        )

    def refused() -> list[dict[str, Any]]:
        _, body = backend.authed("GET", "/api/dgx/audit?action=webhook&outcome=refused")
        return body["data"]

    assert wait_until(refused, timeout=30)[0]["via"] == "ui"


def test_notify_kinds_change_needs_login(backend: Dashboard) -> None:
    """The bell's "Notify about" choices are disabled for a viewer; the handler itself refuses too."""
    events_state = pytest.importorskip("dgx_spark.state.events").EventsState
    name = events_state.get_full_name()
    with ReflexSocket(backend.port) as sock:
        sock.emit(f"{name}.set_notify_kind", {"kind": "started", "on": True})
        wait_until(
            lambda: "Log in first" in json.dumps(sock.next_update(60)), timeout=90, interval=0,
            message="choosing what notifies without login was not refused",
        )

    def refused() -> list[dict[str, Any]]:
        _, body = backend.authed("GET", "/api/dgx/audit?action=notifications&outcome=refused")
        return body["data"]

    assert wait_until(refused, timeout=30)[0]["via"] == "ui"
