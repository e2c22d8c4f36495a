"""Events per run, churn and the notification kinds: real SQLite stores, real threads, real processes."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlmodel import SQLModel

from dgx_spark.collector.discovery import Discovery
from dgx_spark.collector.model import Operation
from dgx_spark.collector.sampler import SampleContext, Sampler
from dgx_spark.database import make_engine, migrate
from dgx_spark.events.churn import ChurnCounter, hide_quiet_churn, is_quiet_churn
from dgx_spark.events.config import (
    DEFAULT_NOTIFY_KINDS,
    EventsConfig,
    InvalidNotifyKinds,
    decode_notify_kinds,
)
from dgx_spark.events.detector import EventDetector, Transition
from dgx_spark.events.recorder import EventRecorder
from dgx_spark.events.service import EventsService
from dgx_spark.events.store import TABLES, EventRow, EventStore, HistoryRow
from tests.support.dashboard import wait_until
from tests.test_postgres import postgres_url  # noqa: F401 - a fixture: a throwaway PostgreSQL server


class Clock:
    """A settable clock for the recorder's 30 s hold (no sleeping in tests)."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def store(tmp_path: Path) -> EventStore:
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'events.db'}")
    SQLModel.metadata.create_all(engine, tables=TABLES)
    return EventStore(engine)


def op(op_id: str, status: str = "running", **kw: Any) -> Operation:
    defaults: dict[str, Any] = {"type": "job", "name": "train", "started_at_ts": 1000.0}
    defaults.update(kw)
    return Operation(id=op_id, status=status, **defaults)


def failed_run(run: int, start: float) -> Operation:
    return op("launch-abc", "failed", source="launched", run=run, exit_code=3,
              started_at_ts=start, ended_at_ts=start + 1)


def test_each_failing_run_gets_its_own_event_and_history_row(store: EventStore) -> None:
    recorder = EventRecorder(store, retention_seconds=86400)
    first = recorder.record(Transition("failed", 1001.0, failed_run(1, 1000.0), "failed with exit code 3"))
    second = recorder.record(Transition("failed", 2001.0, failed_run(2, 2000.0), "failed with exit code 3"))
    assert first is not None and second is not None
    assert (first["run"], second["run"]) == (1, 2)
    assert first["operation_id"] == second["operation_id"] == "launch-abc"
    # The same end of run 2 seen again (e.g. after a dashboard restart) is stored once.
    assert recorder.record(Transition("failed", 2001.0, failed_run(2, 2000.0), "again")) is None
    assert [(e["kind"], e["run"]) for e in store.events(since_ts=0)] == [("failed", 1), ("failed", 2)]
    rows = store.history()
    assert [(r["id"], r["run"]) for r in rows] == [("launch-abc", 2), ("launch-abc", 1)]
    assert all(r["exit_code"] == 3 and r["status"] == "failed" for r in rows)


def test_detector_sees_a_run_that_started_and_failed_between_two_samples() -> None:
    seen: list[Transition] = []
    detector = EventDetector(seen.append)
    for now, operation in ((1.0, failed_run(1, 0.0)), (2.0, failed_run(1, 0.0)), (3.0, failed_run(2, 2.5))):
        detector.sample(SampleContext(now=now, operations=[operation]))
    assert [(t.kind, t.operation.run) for t in seen] == [("failed", 1), ("started", 2), ("failed", 2)]


def test_migration_keeps_rows_as_run_1_and_allows_more_runs(tmp_path: Path) -> None:
    check_events_run_migration(make_engine(f"sqlite:///{tmp_path / 'old.db'}"))


def test_events_run_migration_and_store_on_postgres(postgres_url: str) -> None:  # noqa: F811
    engine = make_engine(postgres_url)
    try:
        check_events_run_migration(engine)
    finally:
        engine.dispose()


def check_events_run_migration(engine: sa.engine.Engine) -> None:
    """Migrate to the schema before runs, add rows, migrate to head: old rows are run 1."""
    from alembic.config import Config
    from alembic.runtime.environment import EnvironmentContext
    from alembic.script import ScriptDirectory

    from dgx_spark.database import ALEMBIC_DIR, ALEMBIC_INI

    config = Config(str(ALEMBIC_INI))
    config.set_main_option("script_location", str(ALEMBIC_DIR))
    script = ScriptDirectory.from_config(config)
    with engine.connect() as connection:  # the schema as it was before runs existed
        with EnvironmentContext(config, script, fn=lambda rev, _: script._upgrade_revs("c988c310762e", rev)) as env:
            env.configure(connection=connection, render_as_batch=True)
            with env.begin_transaction():
                env.run_migrations()
        connection.commit()
    with engine.begin() as conn:
        conn.exec_driver_sql(
            "INSERT INTO dgx_event (operation_id, name, op_type, kind, at) VALUES ('old-op', 'n', 'job', 'failed', 5)"
        )
        conn.exec_driver_sql(
            "INSERT INTO dgx_history (operation_id, name, op_type, status, source, ended_at, exit_code) "
            "VALUES ('old-op', 'n', 'job', 'failed', 'launched', 5, 3)"
        )
    migrate(engine)
    store = EventStore(engine)
    [event] = store.events(since_ts=0)
    assert event["run"] == 1 and event["operation_id"] == "old-op"
    assert [(r["id"], r["run"], r["exit_code"]) for r in store.history()] == [("old-op", 1, 3)]
    assert store.has_terminal_event("old-op", 1) and not store.has_terminal_event("old-op", 2)
    store.upsert_history(HistoryRow(operation_id="old-op", run=2, name="n", op_type="job", status="failed",
                                    ended_at=6.0))
    assert [(r["id"], r["run"]) for r in store.history()] == [("old-op", 2), ("old-op", 1)]
    # Retention and the row caps delete by (id, run).
    assert store.trim_batch(max_events=10, max_history=1) == 1
    assert [(r["id"], r["run"]) for r in store.history()] == [("old-op", 2)]
    assert store.purge_batch(cutoff=100.0) == 2  # the old event and the last row
    assert store.counts() == (0, 0)


def test_short_lived_discovered_commands_are_neither_stored_nor_announced(store: EventStore) -> None:
    clock = Clock(5000.0)
    got: list[dict[str, Any]] = []
    recorder = EventRecorder(store, retention_seconds=86400, on_event=got.append, clock=clock)
    quick = op("quick", started_at_ts=4999.0, type="program", name="sh")
    assert recorder.record(Transition("started", 5000.0, quick, "started")) is None  # held back
    assert recorder.held_count() == 1
    ended = quick.replace(status="stopped", ended_at_ts=5003.0)
    assert recorder.record(Transition("stopped", 5003.0, ended, "disappeared")) is None
    assert recorder.held_count() == 0 and recorder.churn_skipped == 1
    # A short-lived command that exits 0 (completed) is churn too.
    fine = op("fine", started_at_ts=5000.0, status="stopped", exit_code=0, ended_at_ts=5002.0)
    assert recorder.record(Transition("started", 5002.0, fine, "started")) is None
    assert recorder.record(Transition("completed", 5002.0, fine, "completed")) is None
    # A short-lived command that failed is news: its failure is stored (without the start).
    crash = op("crash", started_at_ts=5000.0)
    recorder.record(Transition("started", 5000.5, crash, "started"))
    crashed = recorder.record(Transition("failed", 5004.0, crash.replace(status="failed", exit_code=3,
                                                                            ended_at_ts=5004.0), "failed"))
    assert crashed is not None and crashed["kind"] == "failed"
    # One that lives past 30 s: its start is stored (with its real time), then its end.
    slow = op("slow", started_at_ts=5001.0)
    assert recorder.record(Transition("started", 5001.0, slow, "started")) is None
    clock.now = 5020.0
    assert recorder.flush_held(clock.now) == []
    clock.now = 5031.5
    [started] = recorder.flush_held(clock.now)
    assert started["operation_id"] == "slow" and started["at_ts"] == 5001.0
    assert recorder.record(Transition("stopped", 5040.0, slow.replace(status="stopped", ended_at_ts=5040.0),
                                      "disappeared")) is not None
    # Launched operations are never held or skipped, however short.
    launched = op("launch-1", source="launched", started_at_ts=5039.0)
    assert recorder.record(Transition("started", 5040.0, launched, "started")) is not None
    kinds = [(e["operation_id"], e["kind"]) for e in store.events(since_ts=0)]
    assert kinds == [("crash", "failed"), ("slow", "started"), ("slow", "stopped"), ("launch-1", "started")]
    assert [(r["id"], r["status"]) for r in store.history()] == [("slow", "stopped"), ("crash", "failed")]
    assert [e["operation_id"] for e in got] == ["crash", "slow", "slow", "launch-1"]


def test_a_short_job_that_completed_its_progress_is_news(store: EventStore) -> None:
    """A discovered training run that reached its total within 30 s is listed, stored and announced."""
    clock = Clock(6000.0)
    got: list[dict[str, Any]] = []
    recorder = EventRecorder(store, retention_seconds=86400, on_event=got.append, clock=clock)
    job = op("short-train", started_at_ts=5990.0, progress=0.4, total_epochs=3)
    assert recorder.record(Transition("started", 5990.5, job, "started")) is None  # held, as any young start
    done = job.replace(status="stopped", ended_at_ts=6005.0, progress=1.0, exit_code=0, outcome="completed",
                       exit_reason="exit code 0", outcome_source="kernel")
    stored = recorder.record(Transition("completed", 6005.0, done, "completed with exit code 0"))
    assert stored is not None and stored["kind"] == "completed" and recorder.churn_skipped == 0
    assert [e["kind"] for e in got] == ["started", "completed"]
    assert [(r["id"], r["status"]) for r in store.history()] == [("short-train", "stopped")]
    # A command without progress that exits 0 as quickly stays churn; both stay listed or counted accordingly.
    quick = op("grep", type="program", started_at_ts=5999.0).replace(
        status="stopped", ended_at_ts=6004.0, exit_code=0, outcome="completed", outcome_source="kernel")
    assert is_quiet_churn(quick) and not is_quiet_churn(done)
    counter = ChurnCounter(window_seconds=600, clock=clock)
    assert [o.id for o in hide_quiet_churn([done, quick], counter, 6006.0)] == ["short-train"]
    assert counter.count() == 1


def test_a_held_start_is_stored_when_the_operation_does_more(store: EventStore) -> None:
    recorder = EventRecorder(store, retention_seconds=86400, clock=Clock(100.0))
    server = op("srv", status="starting", type="server", started_at_ts=99.0)
    recorder.record(Transition("started", 100.0, server, "started"))
    recorder.record(Transition("ready", 101.0, server.replace(status="running"), "ready"))
    assert [e["kind"] for e in store.events(since_ts=0)] == ["started", "ready"]


def test_row_caps_bound_events_and_history(store: EventStore) -> None:
    with store.engine.begin() as conn:
        conn.execute(sa.insert(EventRow.__table__), [
            {"operation_id": f"o{i}", "run": 1, "name": "n", "op_type": "job", "kind": "failed", "at": float(i)}
            for i in range(120)
        ])
        conn.execute(sa.insert(HistoryRow.__table__), [
            {"operation_id": f"o{i}", "run": 1 + i % 2, "name": "n", "op_type": "job", "status": "failed",
             "source": "discovered", "ended_at": float(i)} for i in range(90)
        ])
    while store.trim_batch(max_events=50, max_history=40, batch=25):
        pass
    assert store.counts() == (50, 40)
    assert [e["operation_id"] for e in store.events(limit=1)] == ["o119"]  # the newest are kept
    assert store.history(limit=1)[0]["id"] == "o89"
    assert min(e["at_ts"] for e in store.events(since_ts=0, limit=1000)) == 70.0


def test_churn_counter_and_list_filter() -> None:
    clock = Clock(1000.0)
    counter = ChurnCounter(window_seconds=600, clock=clock)
    quiet = op("q", status="stopped", source="discovered", started_at_ts=990.0, ended_at_ts=995.0)
    crash = quiet.replace(id="c", status="failed", exit_code=1)
    long_run = quiet.replace(id="l", started_at_ts=900.0)
    launched = quiet.replace(id="x", source="launched")
    live = op("live", started_at_ts=999.0)
    assert is_quiet_churn(quiet) and not is_quiet_churn(crash) and not is_quiet_churn(long_run)
    kept = hide_quiet_churn([quiet, crash, long_run, launched, live], counter, 1000.0)
    assert [o.id for o in kept] == ["c", "l", "x", "live"]
    hide_quiet_churn([quiet], counter, 1002.0)  # carried again next snapshot: counted once
    assert counter.count() == 1
    clock.now = 995.0 + 601
    assert counter.count() == 0


def test_notify_kinds_default_set_persist_and_reject(store: EventStore) -> None:
    service = EventsService(store, EventsConfig())
    assert service.notify_kinds() == DEFAULT_NOTIFY_KINDS == {"failed", "completed", "stalled"}
    assert service.set_notify_kinds(["failed", "started"]) == {"failed", "started"}
    with pytest.raises(InvalidNotifyKinds):
        service.set_notify_kinds(["failed", "exploded"])
    with pytest.raises(InvalidNotifyKinds):
        service.set_notify_kinds("failed")
    assert service.notify_kinds() == {"failed", "started"}
    # A restarted dashboard keeps the choice; an empty choice (nothing notifies) is a choice too.
    assert EventsService(store, EventsConfig()).notify_kinds() == {"failed", "started"}
    service.set_notify_kinds([])
    assert EventsService(store, EventsConfig()).notify_kinds() == frozenset()
    assert service.reset_notify_kinds() == DEFAULT_NOTIFY_KINDS
    assert EventsService(store, EventsConfig()).notify_kinds() == DEFAULT_NOTIFY_KINDS
    store.put_setting("notify_kinds", "{not json")
    assert EventsService(store, EventsConfig()).notify_kinds() == DEFAULT_NOTIFY_KINDS
    with pytest.raises(InvalidNotifyKinds):
        decode_notify_kinds('"failed"')


class _Probe:
    """The events service as a sampler probe (what ``EventsProbe`` does in the app)."""

    name = "events"

    def __init__(self, service: EventsService) -> None:
        self.service = service

    def sample(self, ctx: SampleContext) -> None:
        self.service.sample(ctx)


@pytest.fixture
def churn_dir(tmp_path: Path) -> Iterator[Path]:
    folder = tmp_path / "churn-h3"
    folder.mkdir()
    yield folder


def test_1000_short_lived_processes_leave_bounded_events_history_and_list(
    store: EventStore, churn_dir: Path
) -> None:
    script = churn_dir / "churn_job.sh"
    script.write_text("sleep 1.6\n")
    service = EventsService(store, EventsConfig())
    sampler = Sampler(Discovery(), [_Probe(service)], interval=0.4, ended_ttl=600)
    service.start()
    sampler.start()
    procs: list[subprocess.Popen[bytes]] = []
    biggest_list = 0

    def mine(snapshot_ops: tuple[Operation, ...]) -> list[Operation]:
        return [o for o in snapshot_ops if str(script) in (o.command or "")]

    try:
        # 1000 real processes, 25 every 0.5 s (about 80 alive at a time), over ~20 s.
        for _ in range(40):
            procs += [subprocess.Popen(["sh", str(script)], start_new_session=True,
                                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for _ in range(25)]
            time.sleep(0.5)
            biggest_list = max(biggest_list, len(mine(sampler.latest.operations)))
            for proc in procs:
                proc.poll()
        for proc in procs:
            proc.wait(timeout=60)
        # Every one of them has ended; the list forgets them as soon as it has seen them end.
        seq = sampler.latest.sequence
        wait_until(lambda: sampler.latest.sequence > seq + 3, 30)
        seen = service.churn.count()
        assert seen >= 500, f"discovery saw only {seen} of 1000 short-lived processes"
        assert mine(sampler.latest.operations) == []
        assert biggest_list <= 400  # only the live ones were ever listed
    finally:
        sampler.stop()
        service.stop()
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
    ours = [e for e in store.events(since_ts=0, limit=5000) if "churn_job" in e["name"]]
    assert ours == [], f"{len(ours)} churn events were stored"
    assert [r for r in store.history(limit=5000) if str(script) in (r["command"] or "")] == []
    assert service.recorder.churn_skipped >= seen


def view(event_id: int, kind: str = "failed", name: str = "train", op_id: str = "") -> dict[str, str]:
    return {"id": str(event_id), "operation_id": op_id or f"op-{event_id}", "name": name, "kind": kind,
            "type": "job", "at": "", "detail": kind, "exit_code": "", "log_tail": ""}


def test_bell_groups_similar_entries_newest_first() -> None:
    from dgx_spark.state.events import group_events

    views = [view(9, name="sh"), view(8, "completed"), view(7, name="sh"), view(6), view(5, name="sh")]
    groups = group_events(views, read_id=6, cleared_id=0)
    assert [(g["name"], g["kind"], g["count"], g["unread"], g["id"]) for g in groups] == [
        ("sh", "failed", "3", "2", "9"), ("train", "completed", "1", "1", "8"), ("train", "failed", "1", "0", "6"),
    ]
    assert [g["id"] for g in group_events(views, read_id=0, cleared_id=7)] == ["9", "8"]


def test_bell_mark_all_read_and_clear_in_a_state_tree() -> None:
    import reflex as rx

    import dgx_spark.dgx_spark  # noqa: F401 - registers every state of the app
    from dgx_spark.state.events import EventsState

    root = rx.State(_reflex_internal_init=True)
    state = root.get_substate(EventsState.get_full_name().split(".")[1:])
    state._recent = [view(12, name="a"), view(11, name="b"), view(10, name="a")]
    state.bell_open_change(True)
    assert state.unread_count == 3 and [g["count"] for g in state.groups] == ["2", "1"]
    state.mark_read()
    assert state.unread_count == 0 and state.last_read_id == "12"
    assert [g["unread"] for g in state.groups] == ["0", "0"]
    state._recent = [view(13, "stalled", name="c"), *state._recent]
    assert state.unread_count == 1
    state.clear_bell()
    assert state.groups == [] and state.unread_count == 0 and state.cleared_id == "13"
    state._recent = [view(14, name="a"), *state._recent]
    assert [(g["id"], g["count"]) for g in state.groups] == [("14", "1")] and state.unread_count == 1


def test_a_closed_bell_is_sent_its_unread_count_not_its_list() -> None:
    import reflex as rx

    import dgx_spark.dgx_spark  # noqa: F401 - registers every state of the app
    from dgx_spark.state.events import EventsState

    root = rx.State(_reflex_internal_init=True)
    state = root.get_substate(EventsState.get_full_name().split(".")[1:])
    state._recent = [view(22, name="a"), view(21, name="b")]
    root._clean()
    # A new event while the bell is closed: the delta says how many are unread, and lists nothing.
    state._recent = [view(23, name="c", op_id="op-closed-bell"), *state._recent]
    delta = json.dumps(root.get_delta())
    assert state.unread_count == 3 and state.groups == []
    assert "op-closed-bell" not in delta and "unread_count" in delta
    root._clean()
    # Opening it sends the grouped list (without the log lines, which "View logs" reads on the server).
    state.bell_open_change(True)
    delta = json.dumps(root.get_delta())
    assert "op-closed-bell" in delta and "log_tail" not in delta
    assert [g["id"] for g in state.groups] == ["23", "22", "21"]
    root._clean()
    # Closing it again: later events are counted, not listed.
    state.bell_open_change(False)
    state._recent = [view(24, name="d", op_id="op-after-close"), *state._recent]
    delta = json.dumps(root.get_delta())
    assert "op-after-close" not in delta and state.unread_count == 4


def test_two_failing_runs_of_a_launched_operation_give_two_events_and_two_rows(
    backend: Any, tmp_path: Path
) -> None:
    import sys

    crash = tmp_path / "rerun_crash.py"
    crash.write_text("import sys\nprint('boom: run ends badly')\nsys.exit(3)\n")
    status, body = backend.authed("POST", "/api/dgx/operations", {
        "template": "custom", "name": "rerun-crasher", "type": "job", "command": [sys.executable, str(crash)],
    })
    assert status == 201, body
    op_id = body["data"]["id"]

    def failed_events() -> list[dict[str, Any]]:
        every = backend.get_json(f"/api/dgx/events?operation_id={op_id}&kind=failed&limit=100")["data"]
        return every

    wait_until(lambda: len(failed_events()) == 1, 90, message="run 1 never failed")
    status, body = backend.authed("POST", f"/api/dgx/operations/{op_id}/start", {})
    assert status == 200, body
    wait_until(lambda: len(failed_events()) == 2, 90, message="the second run's failure was not recorded")
    first, second = failed_events()
    assert (first["run"], second["run"]) == (1, 2)
    assert first["exit_code"] == second["exit_code"] == 3
    assert "boom: run ends badly" in second["log_tail"]

    def rows() -> list[dict[str, Any]]:
        return [r for r in backend.get_json("/api/dgx/history?q=rerun-crasher")["data"] if r["id"] == op_id]

    wait_until(lambda: len(rows()) == 2, 60, message="not one history row per run")
    assert sorted((r["run"], r["exit_code"], r["status"]) for r in rows()) == [(1, 3, "failed"), (2, 3, "failed")]
    health = backend.get_json("/api/health")["data"]
    assert isinstance(health["short_lived_ended"], int) and health["short_lived_window_seconds"] > 0
