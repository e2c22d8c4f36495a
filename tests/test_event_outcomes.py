"""How each run ended, in its terminal event, its history row and the webhook.

Real SQLite stores and migrations (PostgreSQL too where it can be started), and
real processes through the real backend: a launched program that exits 3 and a
discovered script that exits 3 after a traceback.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlmodel import SQLModel

from dgx_spark.collector.model import Operation
from dgx_spark.database import make_engine, migrate
from dgx_spark.events.churn import churn_note
from dgx_spark.events.detector import Transition
from dgx_spark.events.recorder import EventRecorder
from dgx_spark.events.store import TABLES, EventStore
from dgx_spark.events.webhook import webhook_body
from dgx_spark.state.history import history_view
from tests.support import workloads
from tests.support.dashboard import Dashboard, wait_until
from tests.support.webhook_receiver import WebhookReceiver
from tests.test_postgres import postgres_url  # noqa: F401 - a fixture: a throwaway PostgreSQL server

SEEN = 60.0  # generous: the machine is shared and noisy
ENDING_KEYS = ("outcome", "exit_code", "exit_reason", "outcome_source")

# Set by the module's webhook receiver before the backend starts (conftest reads it).
BACKEND_ENV: dict[str, str] = {}


@pytest.fixture
def store(tmp_path: Path) -> EventStore:
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'events.db'}")
    SQLModel.metadata.create_all(engine, tables=TABLES)
    return EventStore(engine)


def ending(row: dict[str, Any]) -> tuple[Any, ...]:
    """A row's outcome fields, in ``ENDING_KEYS`` order."""
    return tuple(row[key] for key in ENDING_KEYS)


# ----------------------------------------------------------------------------- store, recorder, views
def test_terminal_events_and_history_rows_keep_how_the_run_ended(store: EventStore) -> None:
    recorder = EventRecorder(store, retention_seconds=86400)
    oom = Operation(id="op-7-1", type="job", name="train.py", status="failed", source="discovered",
                    started_at_ts=1000.0, ended_at_ts=1100.0, outcome="failed",
                    exit_reason="CUDA out of memory. Tried to allocate 2.00 GiB", outcome_source="log")
    event = recorder.record(Transition("failed", 1100.0, oom, "likely failed: CUDA out of memory"))
    assert event is not None
    assert ending(event) == ("failed", None, "CUDA out of memory. Tried to allocate 2.00 GiB", "log")
    [row] = store.history()
    assert ending(row) == ending(event)
    # Gone without any outcome (it just disappeared): stopped, from nowhere in particular.
    gone = Operation(id="op-8-1", type="program", name="x", status="stopped", started_at_ts=900.0,
                     ended_at_ts=1200.0)
    event = recorder.record(Transition("stopped", 1200.0, gone, "disappeared"))
    assert event is not None and ending(event) == ("stopped", None, None, "unknown")
    # An exit code without a reason still says what it was.
    coded = Operation(id="launch-x", type="job", name="y", status="failed", source="launched", exit_code=-9,
                      started_at_ts=900.0, ended_at_ts=1300.0, outcome_source="runner")
    event = recorder.record(Transition("failed", 1300.0, coded, "failed"))
    assert event is not None and ending(event) == ("failed", -9, "killed by signal 9", "runner")
    # Non-terminal events carry none of it.
    started = recorder.record(Transition("started", 1400.0, coded.replace(id="launch-y", status="running", exit_code=None), "s"))
    assert started is not None and ending(started) == (None, None, None, None)
    # The webhook posts the event as it is stored.
    assert ending(webhook_body(event)["event"]) == ("failed", -9, "killed by signal 9", "runner")


def test_history_view_says_likely_when_inferred_and_derives_old_rows() -> None:
    inferred = history_view({"id": "a", "status": "failed", "exit_code": None, "outcome": "failed",
                             "exit_reason": "Traceback: RuntimeError: boom", "outcome_source": "log"})
    assert (inferred["outcome"], inferred["outcome_label"]) == ("failed", "likely failed")
    assert inferred["outcome_text"] == "Likely failed: Traceback: RuntimeError: boom"
    assert "output" in inferred["outcome_title"]
    exact = history_view({"id": "b", "status": "failed", "exit_code": 3, "outcome": "failed",
                          "exit_reason": "exit code 3", "outcome_source": "runner"})
    assert (exact["outcome_label"], exact["outcome_text"], exact["exit_code"]) == ("failed", "Failed: exit code 3", "3")
    stopped = history_view({"id": "c", "status": "stopped", "exit_code": -15, "outcome": "stopped",
                            "exit_reason": "stopped by the user (SIGTERM)", "outcome_source": "runner"})
    assert stopped["outcome_text"] == "Stopped by the user (SIGTERM)"
    # Rows without an outcome (none stored): status and exit code decide, no line.
    old = history_view({"id": "d", "status": "stopped", "exit_code": 0})
    assert (old["outcome"], old["outcome_label"], old["outcome_text"], old["outcome_source"]) == (
        "completed", "completed", "", "")


def test_churn_note() -> None:
    assert churn_note(0, 600) == ""
    assert churn_note(1, 600) == "1 short-lived command ended in the last 10 min (not listed)"
    assert churn_note(12, 90) == "12 short-lived commands ended in the last 2 min (not listed)"


# ----------------------------------------------------------------------------- migration
def check_events_outcome_migration(engine: sa.engine.Engine) -> None:
    """Migrate to the schema before outcomes, add rows, migrate to head: old rows get their outcome."""
    from alembic.config import Config
    from alembic.runtime.environment import EnvironmentContext
    from alembic.script import ScriptDirectory

    from dgx_spark.database import ALEMBIC_DIR, ALEMBIC_INI

    config = Config(str(ALEMBIC_INI))
    config.set_main_option("script_location", str(ALEMBIC_DIR))
    script = ScriptDirectory.from_config(config)
    with engine.connect() as connection:  # the schema as it was before outcomes were stored
        with EnvironmentContext(config, script, fn=lambda rev, _: script._upgrade_revs("7d1e5b2c9a40", rev)) as env:
            env.configure(connection=connection, render_as_batch=True)
            with env.begin_transaction():
                env.run_migrations()
        connection.commit()
    with engine.begin() as conn:
        conn.exec_driver_sql(
            "INSERT INTO dgx_event (operation_id, run, name, op_type, kind, at, exit_code) VALUES "
            "('old-a', 1, 'n', 'job', 'started', 4, NULL), ('old-a', 1, 'n', 'job', 'failed', 5, 3)"
        )
        conn.exec_driver_sql(
            "INSERT INTO dgx_history (operation_id, run, name, op_type, status, source, ended_at, exit_code) VALUES "
            "('old-a', 1, 'n', 'job', 'failed', 'launched', 5, 3), ('old-b', 1, 'n', 'job', 'stopped', 'launched', 6, 0), "
            "('old-c', 1, 'n', 'job', 'stopped', 'discovered', 7, NULL)"
        )
    migrate(engine)
    store = EventStore(engine)
    assert [(e["kind"], e["outcome"], e["outcome_source"]) for e in store.events(since_ts=0)] == [
        ("started", None, None), ("failed", "failed", None)]
    assert [(r["id"], r["outcome"], r["exit_code"], r["outcome_source"]) for r in store.history()] == [
        ("old-c", "stopped", None, None), ("old-b", "completed", 0, None), ("old-a", "failed", 3, None)]
    # New rows keep every field, a long reason included (the columns' length on PostgreSQL).
    recorder = EventRecorder(store, retention_seconds=86400 * 3650)
    reason = "Traceback: RuntimeError: " + "x" * 600
    crash = Operation(id="new", type="job", name="n", status="failed", started_at_ts=8.0, ended_at_ts=9.0,
                      exit_code=3, outcome="failed", exit_reason=reason, outcome_source="kernel")
    event = recorder.record(Transition("failed", 9.0, crash, "failed"))
    assert event is not None and event["exit_reason"] == reason[:500]
    assert ending(store.history(limit=1)[0]) == ("failed", 3, reason[:500], "kernel")


def test_outcome_migration_on_sqlite(tmp_path: Path) -> None:
    check_events_outcome_migration(make_engine(f"sqlite:///{tmp_path / 'old.db'}"))


def test_outcome_migration_on_postgres(postgres_url: str) -> None:  # noqa: F811
    engine = make_engine(postgres_url)  # a fresh server for this module: an empty database
    try:
        check_events_outcome_migration(engine)
    finally:
        engine.dispose()


# ----------------------------------------------------------------------------- the real backend
@pytest.fixture(scope="module", autouse=True)
def hook() -> Iterator[WebhookReceiver]:
    """A webhook receiver the module's backend posts every event to (started before the backend)."""
    with WebhookReceiver() as receiver:
        BACKEND_ENV["DGX_SPARK_WEBHOOK_URL"] = receiver.url
        yield receiver


def posted(hook: WebhookReceiver, op_id: str, kind: str) -> list[dict[str, Any]]:
    """The events of ``kind`` for ``op_id`` the webhook received."""
    return [e for e in hook.events() if e.get("operation_id") == op_id and e.get("kind") == kind]


def history_rows(backend: Dashboard, op_id: str) -> list[dict[str, Any]]:
    return [r for r in backend.get_json("/api/dgx/history?limit=5000")["data"] if r["id"] == op_id]


def test_a_launched_program_exiting_3_fails_with_its_exit_code(
    backend: Dashboard, hook: WebhookReceiver, tmp_path: Path
) -> None:
    crash = tmp_path / "exit_three.py"
    crash.write_text("import sys\nprint('about to fail')\nsys.exit(3)\n")
    status, body = backend.authed("POST", "/api/dgx/operations", {
        "template": "custom", "name": "exit-three", "type": "job", "command": [sys.executable, str(crash)],
    })
    assert status == 201, body
    op_id = body["data"]["id"]

    def failed() -> list[dict[str, Any]]:
        return backend.get_json(f"/api/dgx/events?operation_id={op_id}&kind=failed")["data"]

    [event] = wait_until(failed, SEEN, message="no failed event")
    assert ending(event) == ("failed", 3, "exit code 3", "runner")
    [row] = wait_until(lambda: history_rows(backend, op_id), SEEN, message="no history row")
    assert ending(row) == ("failed", 3, "exit code 3", "runner") and row["status"] == "failed"
    [sent] = wait_until(lambda: posted(hook, op_id, "failed"), SEEN, message="the webhook got nothing")
    assert ending(sent) == ("failed", 3, "exit code 3", "runner")


def test_a_failing_rerun_is_announced_again_with_its_run(
    backend: Dashboard, hook: WebhookReceiver, tmp_path: Path
) -> None:
    """Start again keeps the id: the second failure still gets its own event, history row and webhook post."""
    crash = tmp_path / "rerun_hook.py"
    crash.write_text("import sys\nprint('failing again')\nsys.exit(3)\n")
    status, body = backend.authed("POST", "/api/dgx/operations", {
        "template": "custom", "name": "rerun-hook", "type": "job", "command": [sys.executable, str(crash)],
    })
    assert status == 201, body
    op_id = body["data"]["id"]
    wait_until(lambda: posted(hook, op_id, "failed"), SEEN, message="run 1's failure was not posted")
    status, body = backend.authed("POST", f"/api/dgx/operations/{op_id}/start", {})
    assert status == 200, body
    sent = wait_until(lambda: len(got := posted(hook, op_id, "failed")) == 2 and got, SEEN,
                      message="run 2's failure was not posted")
    assert [(e["run"], *ending(e)) for e in sent] == [
        (1, "failed", 3, "exit code 3", "runner"), (2, "failed", 3, "exit code 3", "runner")]
    assert len({e["id"] for e in sent}) == 2  # two stored events, not one sent twice
    events = backend.get_json(f"/api/dgx/events?operation_id={op_id}&kind=failed")["data"]
    assert sorted(e["id"] for e in events) == sorted(e["id"] for e in sent)
    rows = wait_until(lambda: len(r := history_rows(backend, op_id)) == 2 and r, SEEN, message="not a row per run")
    assert sorted(r["run"] for r in rows) == [1, 2]
    assert backend.get_json(f"/api/dgx/operations/{op_id}")["data"]["runs"] == 2


CRASH = """
import os, sys, time, traceback
from pathlib import Path
print("loading data", flush=True)
Path(os.environ["WORKLOAD_READY"]).touch()
go = Path(os.environ["GO_FILE"])
while not go.exists():
    time.sleep(0.05)
try:
    raise RuntimeError("boom at step 7")
except RuntimeError:
    traceback.print_exc()
sys.stderr.flush()
sys.exit(3)
"""


@contextlib.contextmanager
def discovered_crash(folder: Path) -> Iterator[workloads.Workload]:
    """A script the dashboard did not start: it waits for its go file, prints a traceback, exits 3."""
    script = workloads.write_script(folder, "crash_h9.py", CRASH)
    go = folder / "crash_h9.go"
    with workloads.spawn([sys.executable, str(script)], folder, script=script, ready=True,
                         env={"GO_FILE": str(go)}) as work:
        work.go = go  # type: ignore[attr-defined]
        yield work


def test_a_discovered_script_failing_after_a_traceback_says_why_and_from_where(
    backend: Dashboard, hook: WebhookReceiver, tmp_path: Path
) -> None:
    def listed(pid: int) -> dict[str, Any] | None:
        return next((op for op in backend.operations() if op["pid"] == pid), None)

    with discovered_crash(tmp_path) as work:
        wait_until(lambda: (op := listed(work.pid)) and op["status"] in ("running", "active"), SEEN,
                   message="the script was never listed running")
        work.go.touch()  # type: ignore[attr-defined]
        with contextlib.suppress(subprocess.TimeoutExpired):
            work.process.wait(30)
        op = wait_until(lambda: (o := listed(work.pid)) and o["status"] == "failed" and o, SEEN,
                        message="the script never showed failed")
    # Whatever the collector says (kernel where the proc connector works, else the log), the event says too.
    assert op["outcome_source"] in ("kernel", "log") and "RuntimeError: boom at step 7" in op["exit_reason"]
    [event] = wait_until(
        lambda: backend.get_json(f"/api/dgx/events?operation_id={op['id']}&kind=failed")["data"], SEEN,
        message="no failed event",
    )
    assert ending(event) == ("failed", op["exit_code"], op["exit_reason"], op["outcome_source"])
    if op["outcome_source"] == "kernel":
        assert op["exit_code"] == 3 and "exit code 3" in op["exit_reason"]
    else:
        assert op["exit_code"] is None and event["detail"].startswith("likely failed")
    assert any("RuntimeError: boom at step 7" in line for line in event["log_tail"])
    [row] = wait_until(lambda: history_rows(backend, op["id"]), SEEN, message="no history row")
    assert ending(row) == ending(event)
    [sent] = wait_until(lambda: posted(hook, op["id"], "failed"), SEEN, message="the webhook got nothing")
    assert ending(sent) == ending(event)


EPOCHS = """
import os, time
from pathlib import Path
for epoch in range(1, 4):
    print(f"Epoch {epoch}/3 - loss: {1.0 / epoch:.4f}", flush=True)
Path(os.environ["WORKLOAD_READY"]).touch()
go = Path(os.environ["GO_FILE"])
while not go.exists():
    time.sleep(0.05)
"""


def test_a_short_discovered_job_that_finished_its_epochs_is_announced_completed(
    backend: Dashboard, hook: WebhookReceiver, tmp_path: Path
) -> None:
    """A training run the dashboard did not start, done within 30 s: a completed event, row and post."""
    def listed(pid: int) -> dict[str, Any] | None:
        return next((op for op in backend.operations() if op["pid"] == pid), None)

    script = workloads.write_script(tmp_path, "train_short_h9.py", EPOCHS)
    go = tmp_path / "train_short_h9.go"
    with workloads.spawn([sys.executable, str(script)], tmp_path, script=script, ready=True,
                         env={"GO_FILE": str(go)}) as work:
        live = wait_until(lambda: (op := listed(work.pid)) and op["progress"] == 1.0 and op, SEEN,
                          message="its progress was never read")
        go.touch()
        with contextlib.suppress(subprocess.TimeoutExpired):
            work.process.wait(30)
    [event] = wait_until(
        lambda: backend.get_json(f"/api/dgx/events?operation_id={live['id']}&kind=completed")["data"], SEEN,
        message="no completed event (counted as a quiet short-lived command?)",
    )
    assert event["outcome"] == "completed" and event["outcome_source"] in ("kernel", "progress")
    [row] = wait_until(lambda: history_rows(backend, live["id"]), SEEN, message="no history row")
    assert ending(row) == ending(event)
    [sent] = wait_until(lambda: posted(hook, live["id"], "completed"), SEEN, message="the webhook got nothing")
    assert ending(sent) == ending(event)
