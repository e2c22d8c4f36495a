"""Events, history, webhook and search/filter/sort against the real backend with real processes."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import _fail_on_logged_errors
from tests.support.dashboard import Dashboard, wait_until
from tests.support.webhook_receiver import WebhookReceiver


@pytest.fixture(scope="module")
def receiver() -> Iterator[WebhookReceiver]:
    with WebhookReceiver() as hook:
        yield hook


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("events-backend")


@pytest.fixture(scope="module")
def dash(data_dir: Path, receiver: WebhookReceiver) -> Iterator[Dashboard]:
    dashboard = Dashboard(data_dir, env={"DGX_SPARK_WEBHOOK_URL": receiver.url})
    dashboard.start()
    yield dashboard
    dashboard.stop()
    _fail_on_logged_errors(dashboard)


def launch(dash: Dashboard, name: str, argv: list[str], op_type: str = "program") -> dict[str, Any]:
    status, body = dash.authed(
        "POST", "/api/dgx/operations", {"template": "custom", "name": name, "type": op_type, "command": argv}
    )
    assert status == 201, body
    return body["data"]


def events(dash: Dashboard, query: str = "") -> list[dict[str, Any]]:
    status, body = dash.request("GET", "/api/dgx/events" + query)
    assert status == 200, body
    return body["data"]


def event_of(dash: Dashboard, op_id: str, kind: str) -> dict[str, Any] | None:
    return next((e for e in events(dash, "?limit=1000") if e["operation_id"] == op_id and e["kind"] == kind), None)


def script(folder: Path, name: str, body: str) -> Path:
    path = folder / name
    path.write_text(body)
    return path


def test_exit_3_is_a_failed_event_with_webhook_and_log_tail(
    dash: Dashboard, receiver: WebhookReceiver, tmp_path: Path
) -> None:
    path = script(tmp_path, "crash.py", "import sys\nprint('loading data')\nprint('boom: out of cheese')\nsys.exit(3)\n")
    op = launch(dash, "crasher", [sys.executable, str(path)], "job")
    event = wait_until(lambda: event_of(dash, op["id"], "failed"), 90, message="no failed event")
    assert event["exit_code"] == 3 and event["name"] == "crasher" and event["type"] == "job"
    assert isinstance(event["id"], int) and event["at"].endswith("Z")
    assert "boom: out of cheese" in event["log_tail"]
    posted = wait_until(lambda: [e for e in receiver.events("failed") if e["operation_id"] == op["id"]], 60)
    assert posted[0]["id"] == event["id"]
    body = next(b for b in receiver.bodies if b["event"]["id"] == event["id"])
    assert "crasher" in body["text"] and body["content"] == body["text"][:2000]


def test_exit_0_is_a_completed_event_with_webhook(dash: Dashboard, receiver: WebhookReceiver, tmp_path: Path) -> None:
    path = script(tmp_path, "ok.py", "print('all done')\n")
    op = launch(dash, "finisher", [sys.executable, str(path)])
    event = wait_until(lambda: event_of(dash, op["id"], "completed"), 90, message="no completed event")
    assert event["exit_code"] == 0 and "all done" in event["log_tail"]
    assert event_of(dash, op["id"], "stopped") is None
    assert dash.get_json(f"/api/dgx/operations/{op['id']}")["data"]["stop_requested"] is False
    wait_until(lambda: [e for e in receiver.events("completed") if e["operation_id"] == op["id"]], 60)


def test_a_user_stop_that_exits_0_is_stopped_not_completed(dash: Dashboard, tmp_path: Path) -> None:
    # Exits 0 on SIGTERM, as many servers do: only the user's stop tells it from a natural end.
    path = script(
        tmp_path, "graceful.py",
        "import signal, sys, time\n"
        "signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))\n"
        "print('serving', flush=True)\n"
        "time.sleep(600)\n",
    )
    op = launch(dash, "graceful", [sys.executable, str(path)])
    wait_until(lambda: event_of(dash, op["id"], "started"), 90, message="no started event")
    wait_until(lambda: "serving" in "".join(dash.get_json(f"/api/dgx/operations/{op['id']}/logs")["data"]["lines"]),
               60, message="the script never ran")
    status, body = dash.authed("POST", f"/api/dgx/operations/{op['id']}/stop", {})
    assert status == 200, body
    event = wait_until(lambda: event_of(dash, op["id"], "stopped"), 90, message="no stopped event")
    assert event["exit_code"] == 0
    shown = dash.get_json(f"/api/dgx/operations/{op['id']}")["data"]
    assert shown["status"] == "stopped" and shown["stop_requested"] is True and shown["exit_code"] == 0
    # Give the recorder a few more snapshots: still no "completed" for it.
    seq = dash.get_json("/api/health")["data"]["sequence"]
    wait_until(lambda: dash.get_json("/api/health")["data"]["sequence"] > seq + 2, 30)
    assert event_of(dash, op["id"], "completed") is None


def test_events_since_id_and_time(dash: Dashboard) -> None:
    every = events(dash, "?limit=1000")
    assert every and [e["id"] for e in every] == sorted(e["id"] for e in every)
    first = every[0]
    assert all(e["id"] > first["id"] for e in events(dash, f"?since={first['id']}"))
    assert events(dash, f"?since={every[-1]['id']}") == []
    assert events(dash, "?since=2000-01-01T00:00:00Z&limit=1000") == every
    assert all(e["kind"] == "failed" for e in events(dash, "?kind=failed"))


@pytest.mark.parametrize(
    ("path", "field"),
    [
        ("/api/dgx/events?since=yesterday", "since"),
        ("/api/dgx/events?kind=exploded", "kind"),
        ("/api/dgx/events?limit=0", "limit"),
        ("/api/dgx/history?sort=colour", "sort"),
        ("/api/dgx/operations?status=exploded", "status"),
        ("/api/dgx/operations?sort=colour", "sort"),
        ("/api/dgx/operations?order=sideways", "order"),
        ("/api/dgx/operations?type=server,daemon", "type"),
        ("/api/dgx/operations?q=" + "x" * 300, "q"),
    ],
)
def test_bad_values_are_422_in_the_envelope(dash: Dashboard, path: str, field: str) -> None:
    status, body = dash.request("GET", path)
    assert status == 422, body
    assert body["success"] is False and body["error"]["code"] == "validation_error"
    assert body["error"]["field"] == field


def test_search_filter_sort_on_real_processes(dash: Dashboard) -> None:
    sleeper = [sys.executable, "-c", "import time; time.sleep(600)"]
    alpha = launch(dash, "alpha-sleeper", sleeper, "program")
    beta = launch(dash, "beta-trainer", sleeper, "job")
    try:
        wait_until(lambda: {o["id"] for o in dash.operations(status="running,active")} >= {alpha["id"], beta["id"]}, 60)
        assert [o["id"] for o in dash.operations(q="alpha-sleep")] == [alpha["id"]]
        assert [o["id"] for o in dash.operations(q="BETA")] == [beta["id"]]
        pid = next(o["pid"] for o in dash.operations() if o["id"] == beta["id"])
        assert [o["id"] for o in dash.operations(q=str(pid))] == [beta["id"]]
        assert alpha["id"] not in {o["id"] for o in dash.operations(type="job")}
        assert beta["id"] in {o["id"] for o in dash.operations(type="job")}
        mine = {alpha["id"], beta["id"]}
        by_name = [o["id"] for o in dash.operations(q="sleep", sort="name", order="desc") if o["id"] in mine]
        assert by_name == [beta["id"], alpha["id"]]
        by_name = [o["id"] for o in dash.operations(q="sleep", sort="name", order="asc") if o["id"] in mine]
        assert by_name == [alpha["id"], beta["id"]]
        for key in ("status", "started_at", "cpu", "memory", "gpu_memory"):
            for order in ("asc", "desc"):
                assert len(dash.operations(sort=key, order=order)) == len(dash.operations())
        assert dash.operations(q="no-such-operation-anywhere") == []
    finally:
        for op in (alpha, beta):
            dash.authed("POST", f"/api/dgx/operations/{op['id']}/stop", {"force": True})
    wait_until(lambda: event_of(dash, alpha["id"], "stopped") and event_of(dash, beta["id"], "stopped"), 90)


def test_history_survives_a_restart(dash: Dashboard, data_dir: Path, receiver: WebhookReceiver) -> None:
    def history(d: Dashboard, query: str = "") -> list[dict[str, Any]]:
        status, body = d.request("GET", "/api/dgx/history" + query)
        assert status == 200, body
        return body["data"]

    before = {h["name"]: h for h in wait_until(lambda: history(dash) if len(history(dash)) >= 2 else None, 60)}
    assert before["crasher"]["exit_code"] == 3 and before["crasher"]["status"] == "failed"
    assert before["finisher"]["exit_code"] == 0
    for row in before.values():
        assert row["id"].startswith("op-") or row["id"]
        assert row["started_at"] and row["ended_at"] and row["duration_seconds"] is not None
    failed_events = [e for e in events(dash, "?kind=failed&limit=1000")]
    dash.stop()
    again = Dashboard(data_dir, port=dash.port, env={"DGX_SPARK_WEBHOOK_URL": receiver.url})
    again.start()
    try:
        after = {h["name"]: h for h in history(again)}
        assert after["crasher"]["id"] == before["crasher"]["id"]
        assert after["finisher"]["id"] == before["finisher"]["id"]
        assert after["crasher"]["log_tail"] == before["crasher"]["log_tail"]
        assert [h["name"] for h in history(again, "?status=failed&q=crash")] == ["crasher"]
        assert [h["name"] for h in history(again, "?q=finisher")] == ["finisher"]
        # Re-adopted ended operations are not announced a second time.
        again.wait_ready(30)
        wait_until(lambda: again.get_json("/api/health")["data"]["sequence"] > 3, 60)
        # (Only this module's operations: other processes on the machine may fail meanwhile.)
        ours = {row["id"] for row in before.values()}
        assert [e for e in events(again, "?kind=failed&limit=1000") if e["operation_id"] in ours] == [
            e for e in failed_events if e["operation_id"] in ours
        ]
    finally:
        again.stop()
        _fail_on_logged_errors(again)
        dash.process = None
