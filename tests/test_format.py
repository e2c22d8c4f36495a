"""Formatting helpers: uptime, bytes, percent, metrics, timestamps; and card views."""

from __future__ import annotations

import datetime as dt
import math

import pytest

from dgx_spark import format as fmt
from dgx_spark.collector.model import Operation, ProbeError, Snapshot
from dgx_spark.state import loops
from dgx_spark.state.view import operation_view, operation_views, snapshot_errors


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "0s"),
        (0.9, "0s"),
        (45, "45s"),
        (60, "1m 0s"),
        (725, "12m 5s"),
        (3600, "1h 0m"),
        (3 * 3600 + 12 * 60 + 59, "3h 12m"),
        (86400 + 3 * 3600 + 5, "1d 3h"),
        (-5, "0s"),
    ],
)
def test_format_uptime(seconds: float, text: str) -> None:
    assert fmt.format_uptime(seconds) == text


def test_uptime_template_drops_seconds_after_a_day() -> None:
    assert fmt.uptime_template(None) == "h[h] m[m] s[s]"
    assert fmt.uptime_template(3600) == "h[h] m[m] s[s]"
    assert fmt.uptime_template(2 * 86400) == "d[d] h[h] m[m]"


@pytest.mark.parametrize("bad", [None, math.nan, math.inf, True, "12"])
def test_unknown_values_are_a_placeholder_not_zero(bad: object) -> None:
    assert fmt.format_uptime(bad) == fmt.PLACEHOLDER  # type: ignore[arg-type]
    assert fmt.format_bytes(bad) == fmt.PLACEHOLDER  # type: ignore[arg-type]
    assert fmt.format_percent(bad) == fmt.PLACEHOLDER  # type: ignore[arg-type]
    assert fmt.format_metric(bad) == fmt.PLACEHOLDER  # type: ignore[arg-type]
    assert fmt.format_timestamp(bad) == fmt.PLACEHOLDER  # type: ignore[arg-type]
    assert fmt.format_ago(bad) == fmt.PLACEHOLDER  # type: ignore[arg-type]
    assert fmt.iso_utc(bad) is None  # type: ignore[arg-type]
    assert fmt.progress_percent(bad) is None  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("count", "text"),
    [
        (0, "0 B"),
        (512, "512 B"),
        (1023, "1023 B"),
        (1024, "1.0 KiB"),
        (1536, "1.5 KiB"),
        (int(12.4 * 1024**3), "12.4 GiB"),
        (1024**4, "1.0 TiB"),
        (1024 * 1024 - 1, "1.0 MiB"),  # 1023.999 KiB rounds up into the next unit
        (-2048, "-2.0 KiB"),
    ],
)
def test_format_bytes(count: int, text: str) -> None:
    assert fmt.format_bytes(count) == text


def test_format_percent() -> None:
    assert fmt.format_percent(87.2) == "87 %"
    assert fmt.format_percent(0.455, ratio=True, decimals=1) == "45.5 %"
    assert fmt.format_percent(250) == "250 %"  # several cores


def test_progress_percent_clamps() -> None:
    assert fmt.progress_percent(0.45) == 45
    assert fmt.progress_percent(1.7) == 100
    assert fmt.progress_percent(-0.1) == 0


def test_metrics_and_epochs() -> None:
    assert fmt.format_metric(0.342) == "0.342"
    assert fmt.format_metric(0.34215678) == "0.3422"
    assert fmt.format_metric(1.2345e-5) == "1.234e-05"
    assert fmt.format_epoch(25) == "25"
    assert fmt.format_epoch(25, 100) == "25/100"
    assert fmt.format_epoch(1.5) == "1.5"
    assert fmt.format_epoch(3.0, 0) == "3"


def test_timestamps() -> None:
    ts = dt.datetime(2025, 12, 31, 12, 0, 0, tzinfo=dt.UTC).timestamp()
    assert fmt.iso_utc(ts) == "2025-12-31T12:00:00Z"
    assert fmt.format_timestamp(ts, dt.UTC) == "2025-12-31 12:00:00 UTC"
    cet = dt.timezone(dt.timedelta(hours=1), "CET")
    assert fmt.format_timestamp(ts, cet) == "2025-12-31 13:00:00 CET"


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(2, "just now"), (42, "42 s ago"), (300, "5 min ago"), (3 * 3600 + 1, "3 h ago"), (2 * 86400, "2 d ago")],
)
def test_format_ago(seconds: float, text: str) -> None:
    assert fmt.format_ago(seconds) == text


def test_views_format_cards_for_people() -> None:
    now = 10_000.0
    server = Operation(
        id="op-1", type="server", name="ComfyUI", status="running", port=8188, ports=(8188,),
        pid=11, pids=(11,), started_at_ts=now - 3600, cpu_percent=12.0, memory_bytes=3 * 1024**3,
    )
    job = Operation(
        id="op-2", type="job", name="train.py", status="running", progress=0.45,
        metrics={"epoch": 25, "train_loss": 0.342}, total_epochs=100, started_at_ts=now - 60,
    )
    ended = Operation(
        id="op-3", type="program", name="loop.sh", status="failed", pid=12,
        started_at_ts=now - 7300, ended_at_ts=now - 100, exit_code=3,
    )
    views = operation_views([ended, job, server], now, "spark.local")
    assert [v.id for v in views] == ["op-1", "op-2", "op-3"]  # live first, oldest first
    s, j, e = views
    assert s.url == "http://spark.local:8188" and s.live and s.uptime_text == ""
    assert s.cpu_text == "12 %" and s.memory_text == "3.0 GiB" and s.gpu_memory_text == ""
    assert j.progress_percent == 45 and j.epoch_text == "25/100" and j.train_loss_text == "0.342"
    assert not e.live and e.uptime_text == "2h 0m" and e.exit_code == 3
    assert operation_view(server, now, "::1").url == "http://[::1]:8188"
    snap = Snapshot(sequence=1, taken_at=now, operations=(), errors=(ProbeError("gpu", "boom", now),))
    assert snapshot_errors(snap) == ["gpu: boom"]


def test_loop_registry_one_loop_per_tab() -> None:
    before = loops.count()
    first = loops.claim("tab-a")
    second = loops.claim("tab-a")  # a reload supersedes the first loop
    assert not loops.is_current("tab-a", first) and loops.is_current("tab-a", second)
    loops.release("tab-a", first)
    loops.stop("tab-a")
    assert not loops.is_current("tab-a", second)
    loops.release("tab-a", second)
    assert loops.count() == before


def test_one_sparkline_builder_for_header_and_loss() -> None:
    # The header: 0 at the bottom, ``top`` at the top, clamped; an unknown value leaves a gap.
    assert fmt.sparkline_points([0, None, 50, 100, 200], 100, 24, top=100.0) == "0.0,24.0 50.0,12.0 75.0,0.0 100.0,0.0"
    assert fmt.sparkline_points([None, 5], 100, 24) == ""  # fewer than two known values
    assert fmt.sparkline_points([float("nan"), 1, 2], 100, 24) == "50.0,12.0 100.0,0.0"
    # A loss curve: its own minimum..maximum, with room for the stroke.
    assert fmt.sparkline_points([1.0, 0.5, 0.0], 80, 20, fit=True, pad=1.0) == "0.0,1.0 40.0,10.0 80.0,19.0"
    assert fmt.sparkline_points([0.3, 0.3], 80, 20, fit=True, pad=1.0) == "0.0,19.0 80.0,19.0"


def test_valid_text_replaces_lone_surrogates_everywhere() -> None:
    value = {"na\ud800me": ["ok", "x\udfff", {"k": "\udbff"}], "n": 1, "fine": "é ✓"}
    assert fmt.valid_text(value) == {"na\ufffdme": ["ok", "x\ufffd", {"k": "\ufffd"}], "n": 1, "fine": "é ✓"}
    assert fmt.valid_text("plain") == "plain"
    deep: object = "\ud800"
    for _ in range(100):
        deep = [deep]
    fmt.valid_text(deep)  # bounded: no RecursionError


def test_loads_valid_json_cleans_surrogate_escapes_only() -> None:
    import json

    raw = json.dumps({"name": "web\ud800", "labels": {"\udc00": "v"}})
    assert "\\ud800" in raw  # how JSON carries one
    for text in (raw, raw.encode()):
        assert fmt.loads_valid_json(text) == {"name": "web\ufffd", "labels": {"\ufffd": "v"}}
    # A real character written as an escaped pair is valid UTF-8 and kept.
    assert fmt.loads_valid_json('{"e": "\\ud83d\\ude00"}') == {"e": "😀"}
    assert fmt.loads_valid_json(b'{"a": NaN}', parse_constant=lambda _: None) == {"a": None}
