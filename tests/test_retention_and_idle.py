"""Old audit rows are pruned (by the running app too), and a log stream with nothing to say ends by itself."""

from __future__ import annotations

import http.client
import sqlite3
import time
from pathlib import Path

import sqlalchemy as sa
from sqlmodel import Session, SQLModel, select

from dgx_spark.security.audit import AuditEntry, prune_audit
from tests.support.dashboard import TEST_TOKEN, Dashboard, wait_until

BACKEND_ENV = {"DGX_SPARK_LOG_STREAM_IDLE_SECONDS": "2"}


def test_audit_rows_older_than_the_retention_are_pruned(tmp_path: Path) -> None:
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'audit.db'}")
    SQLModel.metadata.create_all(engine, tables=[AuditEntry.__table__])  # type: ignore[list-item]
    now = time.time()
    with Session(engine) as session:
        for i in range(2500):  # more than one delete batch
            session.add(AuditEntry(at=now - 30 * 86400 - i, action="stop", outcome="refused"))
        session.add(AuditEntry(at=now - 60, action="launch", target="launch-keep", outcome="allowed"))
        session.commit()
    assert prune_audit(now - 7 * 86400, engine=engine) == 2500
    with Session(engine) as session:
        assert [e.target for e in session.exec(select(AuditEntry)).all()] == ["launch-keep"]


def test_the_running_app_prunes_audit_rows_older_than_the_history_days(tmp_path: Path) -> None:
    """The app's audit writer, not only the function: old rows go once it writes, recent ones stay."""
    data = tmp_path / "data"
    env = {"DGX_SPARK_HISTORY_DAYS": "1"}
    Dashboard(data, env=env, log_path=tmp_path / "first.log").start().stop()  # makes the database
    now = time.time()
    with sqlite3.connect(data / "dgx_spark.db") as db:
        db.executemany(
            "INSERT INTO audit_log (at, action, target, outcome, via) VALUES (?, ?, ?, ?, 'api')",
            [(now - 2 * 86400 - i, "stop", f"old-{i}", "refused") for i in range(30)]
            + [(now - 3600, "launch", "recent-kept", "allowed")],
        )
    db.close()
    dashboard = Dashboard(data, env=env, log_path=tmp_path / "second.log").start()
    try:
        status, _ = dashboard.request("POST", "/api/dgx/operations/op-1-2/stop", {})
        assert status == 401  # refused, so audited: the writer's first entry prunes

        def targets() -> list[str]:
            status, body = dashboard.authed("GET", "/api/dgx/audit?limit=1000")
            assert status == 200, body
            return [row["target"] for row in body["data"]]

        left = wait_until(lambda: (t := targets()) and "op-1-2" in t and not any(x.startswith("old-") for x in t)
                          and t, timeout=60, message=f"old audit rows were not pruned: {targets()}")
        assert "recent-kept" in left
    finally:
        dashboard.stop()


def test_an_idle_log_stream_ends_by_itself(backend: Dashboard) -> None:
    status, body = backend.authed("POST", "/api/dgx/operations",
                                  {"template": "custom", "name": "quiet", "type": "program", "command": ["sleep", "600"]})
    assert status == 201, body
    op_id = body["data"]["id"]
    try:
        wait_until(lambda: (backend.get_json(f"/api/dgx/operations/{op_id}").get("data") or {}).get("status")
                   in ("running", "active"), timeout=60)
        conn = http.client.HTTPConnection("127.0.0.1", backend.port, timeout=60)
        conn.request("GET", f"/api/dgx/operations/{op_id}/logs/stream",
                     headers={"Host": f"127.0.0.1:{backend.port}", "Authorization": f"Bearer {TEST_TOKEN}"})
        resp = conn.getresponse()
        assert resp.status == 200
        # The server closes the stream (read() returns at its end) instead of holding it for good.
        text = resp.read().decode()
        assert text.startswith(": following")
        conn.close()
    finally:
        backend.authed("POST", f"/api/dgx/operations/{op_id}/stop", {"signal": "kill"})
