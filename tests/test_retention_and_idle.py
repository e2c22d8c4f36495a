"""Old audit rows are pruned, and a log stream with nothing to say ends by itself."""

from __future__ import annotations

import http.client
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
