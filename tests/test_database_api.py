"""The real backend with a busy or read-only database: 503 envelopes, no invented failure, no lost stop.

Faults are real: another process's connection holds ``BEGIN EXCLUSIVE`` on the
dashboard's SQLite file, or the file is made immutable with ``chattr +i`` (root
cannot write it either) across a restart of the dashboard.
"""

from __future__ import annotations

import contextlib
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.dashboard import UNTHROTTLED, Dashboard, reap_launched, wait_until

BACKEND_ENV = {**UNTHROTTLED, "DGX_SPARK_STOP_GRACE_SECONDS": "3"}
SLEEPER = [sys.executable, "-c", "import time\nwhile True: time.sleep(0.2)"]


def db_file(dash: Dashboard) -> Path:
    return dash.data_dir / "dgx_spark.db"


@contextlib.contextmanager
def exclusive_lock(db: Path) -> Iterator[None]:
    """Another connection holds the write lock until the block ends."""
    holder = sqlite3.connect(db, isolation_level=None, timeout=30)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        yield
    finally:
        holder.execute("ROLLBACK")
        holder.close()


def component(dash: Dashboard, name: str) -> dict[str, Any]:
    return dash.get_json("/api/health")["data"]["components"][name]


def find(dash: Dashboard, op_id: str) -> dict[str, Any] | None:
    return next((op for op in dash.operations() if op["id"] == op_id), None)


def events_of(dash: Dashboard, op_id: str) -> list[str]:
    status, body = dash.request("GET", "/api/dgx/events?limit=1000")
    assert status == 200, body
    return [e["kind"] for e in body["data"] if e["operation_id"] == op_id]


def launch_sleeper(dash: Dashboard, name: str) -> str:
    status, body = dash.authed("POST", "/api/dgx/operations",
                               {"template": "custom", "name": name, "type": "job", "command": SLEEPER})
    assert status == 201, body
    op_id = body["data"]["id"]
    wait_until(lambda: (op := find(dash, op_id)) is not None and op["status"] == "active", 60)
    return op_id


def test_launch_while_locked_is_a_clear_503_and_nothing_appears(backend: Dashboard) -> None:
    with exclusive_lock(db_file(backend)):
        status, body = backend.authed("POST", "/api/dgx/operations",
                                      {"template": "custom", "name": "locked-out", "type": "job", "command": SLEEPER})
        assert status == 503, body
        assert body["success"] is False and body["error"]["code"] == "database_unavailable"
        assert "nothing was done" in body["error"]["message"]
        health = backend.get_json("/api/health")["data"]
        database = health["components"]["database"]
        assert database["status"] == "degraded" and "locked" in database["last_error"] and database["since"]
        assert "database" in health["degraded"] and health["status"] == "degraded"
        assert any(e["probe"] == "database" for e in health["errors"])
        # The sampler keeps going while the database is locked.
        before = health["sequence"]
        wait_until(lambda: backend.get_json("/api/health")["data"]["sequence"] > before + 1, 30)
    # Never shown, never a failed "lost" operation, no event.
    assert not [op for op in backend.operations() if op["name"] == "locked-out"]
    status, body = backend.request("GET", "/api/dgx/events?limit=1000")
    assert status == 200 and not [e for e in body["data"] if e["name"] == "locked-out"]
    # Its one trace, the audit row of the refused launch, waited for the database and is there.
    wait_until(lambda: any(
        e["status"] == 503 and "database" in (e["detail"] or "")
        for e in backend.authed("GET", "/api/dgx/audit?action=launch&outcome=failed&limit=50")[1]["data"]), 60,
        message="the refused launch's audit row was dropped")
    # Recovery: the next launch works and the database is healthy again.
    op_id = launch_sleeper(backend, "after-lock")
    wait_until(lambda: component(backend, "database")["status"] == "ok", 30)
    status, _ = backend.authed("POST", f"/api/dgx/operations/{op_id}/stop", {"force": True})
    assert status == 200


def test_stop_while_locked_is_carried_out_and_never_reported_as_a_failure(backend: Dashboard) -> None:
    op_id = launch_sleeper(backend, "stop-under-lock")
    with exclusive_lock(db_file(backend)):
        status, body = backend.authed("POST", f"/api/dgx/operations/{op_id}/stop")
        assert status == 200 and body["success"] is True, body
        ended = wait_until(lambda: (op := find(backend, op_id)) is not None and op["status"] != "active" and op, 60)
        assert ended["status"] == "stopped", ended
        # Kept on disk in the data folder (0600) until the database takes it.
        outbox = backend.data_dir / "outbox.jsonl"
        wait_until(outbox.exists, 30)
        assert outbox.stat().st_mode & 0o777 == 0o600
        assert component(backend, "database")["status"] == "degraded"
    # Recovery: the outbox is saved, the events and the audit row arrive, and no failure was invented.
    wait_until(lambda: not (backend.data_dir / "outbox.jsonl").exists(), 60)
    wait_until(lambda: "stopped" in events_of(backend, op_id), 60)
    assert "failed" not in events_of(backend, op_id)
    wait_until(lambda: any(e["target"] == op_id and e["outcome"] == "allowed"
                           for e in backend.authed("GET", "/api/dgx/audit?action=stop&limit=50")[1]["data"]), 60)
    row = sqlite3.connect(db_file(backend)).execute(
        "SELECT status, stop_requested FROM launched_operation WHERE id = ?", (op_id,)
    ).fetchone()
    assert row == ("stopped", 1)


def _chattr(flag: str, path: Path) -> bool:
    return shutil.which("chattr") is not None and subprocess.run(
        ["chattr", flag, str(path)], capture_output=True, check=False
    ).returncode == 0


def test_stop_with_an_immutable_database_survives_restarts(tmp_path: Path) -> None:
    data = tmp_path / "data"
    db = data / "dgx_spark.db"
    first = Dashboard(data, env=BACKEND_ENV).start()
    try:
        op_id = launch_sleeper(first, "immutable-stop")
    finally:
        first.stop()  # launched commands outlive the dashboard by design
    if not _chattr("+i", db):
        reap_launched(data)
        pytest.skip("chattr +i is not available here (not root, or the filesystem has no such flag)")
    try:
        with Dashboard(data, env=BACKEND_ENV) as second:
            wait_until(lambda: (op := find(second, op_id)) is not None and op["status"] == "active", 60)
            status, body = second.authed("POST", f"/api/dgx/operations/{op_id}/stop")
            assert status == 200, body  # the signal was sent: a stop, whatever the database says
            wait_until(lambda: (op := find(second, op_id)) is not None and op["status"] == "stopped", 60)
            wait_until(lambda: (data / "outbox.jsonl").exists(), 30)
            status, body = second.authed("POST", "/api/dgx/operations",
                                         {"template": "custom", "name": "ro", "type": "job", "command": SLEEPER})
            assert status == 503 and body["error"]["code"] == "database_unavailable", body
            assert "readonly" in component(second, "database")["last_error"]
        # Restarted with the database still read-only: the user's stop is still a stop.
        with Dashboard(data, env=BACKEND_ENV) as third:
            op = wait_until(lambda: find(third, op_id), 30)
            assert op["status"] == "stopped" and op["stop_requested"] is True, op
            assert op["outcome"] in (None, "stopped"), op
            assert "failed" not in events_of(third, op_id)
            _chattr("-i", db)
            # Writable again: replayed while running.
            wait_until(lambda: not (data / "outbox.jsonl").exists(), 60)
            wait_until(lambda: component(third, "database")["status"] == "ok", 30)
            row = sqlite3.connect(db).execute(
                "SELECT status, stop_requested FROM launched_operation WHERE id = ?", (op_id,)
            ).fetchone()
            assert row == ("stopped", 1)
    finally:
        _chattr("-i", db)
        reap_launched(data)
    for log in data.parent.glob("*.log"):
        assert "Traceback (most recent call last)" not in log.read_text(errors="replace"), log.read_text()[-4000:]
