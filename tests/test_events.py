"""Events: detection of transitions, storage, history, retention and the webhook.

Real SQLite files, real HTTP servers, real threads; operations are plain values
fed through a real Sampler.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlmodel import SQLModel

from dgx_spark.collector.model import Operation
from dgx_spark.collector.sampler import Sampler
from dgx_spark.events.config import (
    InvalidWebhookUrl,
    events_config,
    validate_webhook_url,
)
from dgx_spark.events.detector import EventDetector, Transition
from dgx_spark.events.recorder import EventRecorder, read_log_tail
from dgx_spark.events.service import EventsService
from dgx_spark.events.store import TABLES, EventRow, EventStore, HistoryRow
from dgx_spark.events.webhook import WebhookSender, webhook_body
from dgx_spark.settings import EventSettings, load_settings
from tests.support.dashboard import wait_until
from tests.support.webhook_receiver import WebhookReceiver


@pytest.fixture
def store(tmp_path: Path) -> EventStore:
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'events.db'}")
    SQLModel.metadata.create_all(engine, tables=TABLES)
    return EventStore(engine)


def op(op_id: str = "op-1-1", status: str = "running", **kw: object) -> Operation:
    defaults: dict[str, object] = {"type": "job", "name": "train", "started_at_ts": 1000.0}
    defaults.update(kw)
    return Operation(id=op_id, status=status, **defaults)  # type: ignore[arg-type]


class Feed:
    """Drives a real Sampler with the operations a test sets."""

    def __init__(self) -> None:
        self.ops: list[Operation] = []
        self.transitions: list[Transition] = []
        self.sampler = Sampler(lambda now: list(self.ops), [EventDetector(self.transitions.append)])

    def step(self, *ops: Operation) -> list[str]:
        self.ops = list(ops)
        before = len(self.transitions)
        self.sampler.sample_once()
        return [t.kind for t in self.transitions[before:]]


def test_detector_emits_each_transition_once() -> None:
    feed = Feed()
    assert feed.step(op("a")) == []  # the first snapshot is the baseline
    assert feed.step(op("a"), op("b", status="starting", type="server", port=8000)) == ["started"]
    assert feed.step(op("a"), op("b", status="running", type="server", port=8000)) == ["ready"]
    assert feed.step(op("a", stalled=True), op("b", status="running", type="server")) == ["stalled"]
    assert feed.step(op("a", stalled=True, idle_gpu=True), op("b", status="running", type="server")) == ["idle_gpu"]
    assert feed.step(op("a", stalled=True, idle_gpu=True), op("b", status="running", type="server")) == []
    ended = op("a", status="failed", exit_code=3, ended_at_ts=2000.0)
    assert feed.step(ended, op("b", status="running", type="server")) == ["failed"]
    failed = feed.transitions[-1]
    assert failed.at == 2000.0 and failed.operation.exit_code == 3
    assert feed.step(ended, op("b", status="stopped", exit_code=0, type="server")) == ["completed"]
    assert feed.step(ended, op("b", status="stopped", exit_code=0, type="server")) == []


def test_detector_fast_exit_vanish_and_peak_memory() -> None:
    feed = Feed()
    feed.step()
    # Started and ended between two samples.
    assert feed.step(op("f", status="failed", exit_code=3)) == ["started", "failed"]
    # A discovered process that vanishes: the sampler carries it as stopped.
    assert feed.step(op("d", memory_bytes=100)) == ["started"]
    assert feed.step(op("d", memory_bytes=700)) == []
    assert feed.step(op("d", memory_bytes=300)) == []
    assert feed.step() == ["stopped"]
    assert feed.transitions[-1].peak_memory_bytes == 700
    assert feed.transitions[-1].operation.exit_code is None


def test_recorder_stores_events_history_and_log_tail(store: EventStore, tmp_path: Path) -> None:
    log = tmp_path / "job.log"
    log.write_text("".join(f"line {i}\n" for i in range(50)) + "\x1b[31mboom\x1b[0m\nprogress 10%\rprogress 99%\n")
    got: list[dict[str, object]] = []
    recorder = EventRecorder(store, retention_seconds=86400, log_tail_lines=5, on_event=got.append)
    ended = op("x", status="failed", exit_code=3, ended_at_ts=1500.0, log_path=str(log), command="python t.py")
    event = recorder.record(Transition("failed", 1500.0, ended, "failed with exit code 3", 4096))
    assert event is not None
    assert event["kind"] == "failed" and event["exit_code"] == 3 and event["operation_id"] == "x"
    assert event["log_tail"] == ["line 47", "line 48", "line 49", "boom", "progress 99%"]
    assert event["at"] == "1970-01-01T00:25:00Z"
    assert got == [event]
    # The same end seen again (e.g. after a restart) is not recorded twice.
    assert recorder.record(Transition("failed", 1500.0, ended, "again")) is None
    [row] = store.history()
    assert row["id"] == "x" and row["exit_code"] == 3 and row["peak_memory_bytes"] == 4096
    assert row["duration_seconds"] == 500 and row["log_tail"][-1] == "progress 99%"
    assert row["started_at"] == "1970-01-01T00:16:40Z" and row["ended_at"] == "1970-01-01T00:25:00Z"
    assert store.events(after_id=0) == [event]
    assert store.events(after_id=event["id"]) == []  # type: ignore[arg-type]


def test_recorder_thread_and_since(store: EventStore) -> None:
    recorder = EventRecorder(store, retention_seconds=86400)
    recorder.start()
    try:
        now = time.time()
        for i in range(3):
            recorder.submit(Transition("started", now + i, op(f"o{i}"), "started"))
        wait_until(lambda: len(recorder.recent()) == 3, timeout=30)
        first = recorder.recent()[0]["id"]
        assert [e["operation_id"] for e in recorder.recent(after_id=first)] == ["o1", "o2"]
        assert [e["operation_id"] for e in store.events(since_ts=now + 1)] == ["o1", "o2"]
        assert [e["operation_id"] for e in store.events(limit=1)] == ["o2"]
    finally:
        recorder.stop()
    # A new recorder (a restarted dashboard) knows the stored events.
    again = EventRecorder(store, retention_seconds=86400)
    again.start()
    try:
        wait_until(lambda: len(again.recent()) == 3, timeout=30)
    finally:
        again.stop()


def test_retention_removes_old_rows_in_batches(store: EventStore) -> None:
    now = time.time()
    old, fresh = now - 8 * 86400, now - 3600
    with store.engine.begin() as conn:
        conn.execute(
            sa.insert(EventRow.__table__),
            [{"operation_id": f"o{i}", "name": "n", "op_type": "job", "kind": "stopped",
              "at": old if i < 25 else fresh} for i in range(30)],
        )
        conn.execute(
            sa.insert(HistoryRow.__table__),
            [{"operation_id": f"o{i}", "name": "n", "op_type": "job", "status": "stopped", "source": "discovered",
              "ended_at": old if i < 25 else fresh} for i in range(30)],
        )
    cutoff = now - 7 * 86400
    assert store.purge_batch(cutoff, batch=10) == 20  # 10 events + 10 history rows
    assert store.purge_batch(cutoff, batch=10) == 20
    assert store.purge_batch(cutoff, batch=10) == 10
    assert store.purge_batch(cutoff, batch=10) == 0
    assert len(store.events(since_ts=0, limit=1000)) == 5
    assert sorted(r["id"] for r in store.history()) == [f"o{i}" for i in range(25, 30)]


def test_recorder_enforces_retention_on_its_thread(store: EventStore) -> None:
    store.upsert_history(HistoryRow(operation_id="ancient", name="n", op_type="job", status="failed", ended_at=10.0))
    store.upsert_history(HistoryRow(operation_id="recent", name="n", op_type="job", status="failed",
                                    ended_at=time.time()))
    recorder = EventRecorder(store, retention_seconds=7 * 86400, purge_batch=1)
    recorder.start()
    try:
        wait_until(lambda: [r["id"] for r in store.history()] == ["recent"], timeout=30)
    finally:
        recorder.stop()


@pytest.mark.parametrize(
    "bad",
    ["ftp://x.example/", "file:///etc/passwd", "javascript:alert(1)", "http://", "http://a b/", "http://x:99999/",
     "http://x/\nfoo", "h" * 3000, "not a url", "http://x.example/\ud800"],
)
def test_webhook_url_validation_rejects(bad: str) -> None:
    with pytest.raises(InvalidWebhookUrl):
        validate_webhook_url(bad)


def test_webhook_url_validation_accepts_and_env(monkeypatch: pytest.MonkeyPatch) -> None:
    assert validate_webhook_url("  https://hooks.slack.com/services/T/B/X ") == "https://hooks.slack.com/services/T/B/X"
    assert validate_webhook_url("") is None
    monkeypatch.setenv("DGX_SPARK_WEBHOOK_URL", "gopher://x")
    with pytest.raises(ValueError, match="DGX_SPARK_WEBHOOK_URL"):
        load_settings()
    monkeypatch.setenv("DGX_SPARK_WEBHOOK_URL", "http://127.0.0.1:9/h")
    monkeypatch.setenv("DGX_SPARK_HISTORY_DAYS", "2.5")
    config = events_config(load_settings().events)
    assert config.webhook_url == "http://127.0.0.1:9/h" and config.retention_seconds == 2.5 * 86400
    monkeypatch.setenv("DGX_SPARK_HISTORY_DAYS", "-1")
    with pytest.raises(ValueError, match="DGX_SPARK_HISTORY_DAYS"):
        load_settings()


def test_webhook_body_is_chat_compatible() -> None:
    event = {"id": 7, "kind": "failed", "name": "train", "type": "job", "detail": "failed with exit code 3",
             "log_tail": ["Traceback", "ValueError: x"]}
    body = webhook_body(event)
    assert body["event"] == event
    assert body["text"].startswith("❌ job `train`: failed with exit code 3")
    assert "ValueError: x" in body["text"] and body["content"] == body["text"]


def test_webhook_retries_with_backoff_until_delivered() -> None:
    with WebhookReceiver(fail_first=2) as receiver:
        sender = WebhookSender(lambda: receiver.url, backoff=0.05)
        sender.start()
        try:
            sender.enqueue({"id": 1, "kind": "completed", "name": "n"})
            wait_until(lambda: receiver.bodies, timeout=30)
        finally:
            sender.stop()
    assert receiver.attempts == 3 and sender.sent == 1
    assert receiver.events() == [{"id": 1, "kind": "completed", "name": "n"}]


def test_webhook_health_says_when_it_gave_up_and_clears_on_delivery() -> None:
    """``/api/health``'s webhook component: degraded with the last error and since when, ok after a delivery."""
    from dgx_spark.health import health

    url = ["http://127.0.0.1:9/none"]  # nobody listens there
    with WebhookReceiver() as receiver:
        sender = WebhookSender(lambda: url[0], backoff=0.05, attempts=2)
        sender.start()
        try:
            sender.enqueue({"id": 1, "kind": "failed", "name": "n"})
            wait_until(lambda: health.is_degraded("webhook"), timeout=30)
            state = health.state("webhook")
            assert "gave up on event 1" in (state.last_error or "") and state.since is not None
            url[0] = receiver.url
            sender.enqueue({"id": 2, "kind": "failed", "name": "n"})
            wait_until(lambda: not health.is_degraded("webhook"), timeout=30)
        finally:
            sender.stop()
    assert receiver.events() == [{"id": 2, "kind": "failed", "name": "n"}]


def test_failing_webhook_never_blocks_the_producer() -> None:
    # A port nobody listens on: every attempt fails; enqueue must still return at once.
    sender = WebhookSender(lambda: "http://127.0.0.1:9/none", max_queue=3, backoff=0.05, attempts=2)
    sender.start()
    try:
        started = time.monotonic()
        for i in range(50):
            sender.enqueue({"id": i, "kind": "failed"})
        assert time.monotonic() - started < 5  # generous: 50 non-blocking puts
        assert sender.dropped >= 40
        wait_until(lambda: sender.failed >= 1, timeout=30)
    finally:
        sender.stop()


def test_service_webhook_setting_persists(store: EventStore) -> None:
    config = events_config(EventSettings())
    service = EventsService(store, config)
    with pytest.raises(InvalidWebhookUrl):
        service.set_webhook_url("file:///etc/passwd")
    assert service.set_webhook_url("https://example.com/hook") == "https://example.com/hook"
    again = EventsService(store, config)  # a restart reads the stored value
    assert again.webhook_url() == "https://example.com/hook" and again.webhook_source == "ui"
    assert again.set_webhook_url("") is None and EventsService(store, config).webhook_url() is None
    again.reset_webhook_url()
    assert EventsService(store, config).webhook_source in ("unset", "environment")


def test_end_to_end_through_sampler_recorder_and_webhook(store: EventStore, tmp_path: Path) -> None:
    with WebhookReceiver() as receiver:
        config = events_config(EventSettings())
        service = EventsService(store, config)
        service.set_webhook_url(receiver.url)
        service.start()
        try:
            ops: list[Operation] = []
            sampler = Sampler(lambda now: list(ops), [service.detector])
            sampler.sample_once()
            ops = [op("w", status="running", memory_bytes=10)]
            sampler.sample_once()
            ops = [op("w", status="stopped", exit_code=0, ended_at_ts=time.time())]
            sampler.sample_once()
            wait_until(lambda: len(receiver.bodies) == 2, timeout=30)
        finally:
            service.stop()
    assert [e["kind"] for e in receiver.events()] == ["started", "completed"]
    assert receiver.bodies[1]["text"].startswith("✅")
    assert [r["id"] for r in store.history()] == ["w"]


def test_read_log_tail_of_missing_file_is_empty(tmp_path: Path) -> None:
    assert read_log_tail(str(tmp_path / "nope.log"), 10) == []
    assert read_log_tail(None, 10) == []


def test_event_ids_are_never_reused_after_retention(store: EventStore) -> None:
    recorder = EventRecorder(store, retention_seconds=86400)
    first = recorder.record(Transition("started", 10.0, op("old"), "started"))
    assert first is not None
    assert store.purge_batch(cutoff=time.time() - 86400) == 1
    second = recorder.record(Transition("started", time.time(), op("new"), "started"))
    assert second is not None and second["id"] > first["id"]  # a client's ?since= stays valid
