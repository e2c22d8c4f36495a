"""The bench table's rows for the per-tab figures, from a results dict (no timings measured)."""

from __future__ import annotations

from typing import Any

from bench.run import table_rows


def _results(ratio: float, change_bytes: int, p95_ms: float) -> dict[str, Any]:
    window = {"cpu_ms_per_refresh": 30.0, "sampler_cpu_ms_per_refresh": 5.0, "loadavg_before": [1.0, 1.0, 1.0]}
    many = {**window, "cpu_ms_per_refresh": 30.0 * ratio}
    closed = {"clients": 50, "p50_ms": 5.0, "p99_ms": 20.0, "throughput_rps": 900.0, "error_count": 0}
    return {
        "app": {"operations_listed": 50},
        "tabs": {"one": window, "many": many, "tabs": 10, "ratio": ratio, "backend_ratio_10_vs_1": ratio,
                 "sampler_ratio": 1.0, "more": many, "more_tabs": 50, "more_ratio": ratio},
        "ws": {"one_changed_bytes": change_bytes,
               "one_changed": {"bytes": change_bytes + 600, "change_bytes": change_bytes, "header_bytes": 600,
                               "frames": 4, "ticks": 2, "change": "killed x"}},
        "big": {"operations_listed": 500, "changes": 20, "misses": 0, "p50_ms": p95_ms / 2, "p95_ms": p95_ms,
                "max_ms": p95_ms, "api": {"closed": closed}},
    }


def _verdicts(results: dict[str, Any]) -> dict[str, str]:
    return {row[0]: row[4] for row in table_rows(results)}


def test_targets_are_marked_pass_or_miss() -> None:
    good = _verdicts(_results(1.2, 3000, 300.0))
    assert good["Whole backend CPU / refresh, 1 → 10 tabs"] == "PASS"
    assert good["Whole backend CPU / refresh, 1 → 50 tabs"] == "—"  # measured and shown, no target
    assert good["Websocket bytes per tab, one operation changed, 50 listed"] == "PASS"
    assert good["Change → card updated in the browser, 500 listed (20 changes)"] == "PASS"
    assert good["GET /api/dgx/operations, 50 clients back-to-back, 500 listed"] == "PASS"
    bad = _verdicts(_results(2.0, 5000, 900.0))
    assert bad["Whole backend CPU / refresh, 1 → 10 tabs"] == "MISS"
    assert bad["Websocket bytes per tab, one operation changed, 50 listed"] == "MISS"
    assert bad["Change → card updated in the browser, 500 listed (20 changes)"] == "MISS"
