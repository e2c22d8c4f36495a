"""The page's database banner: shown while the database is degraded, gone after recovery.

The real OperationsState (its delta to the browser) and the real health registry,
fed by a real bounded write against a SQLite file held by ``BEGIN EXCLUSIVE``.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy

import dgx_spark.dgx_spark  # noqa: F401 - registers every state of the app
from dgx_spark.components.status import stale_banner
from dgx_spark.database import DatabaseUnavailable, make_engine, migrate, probe_writable
from dgx_spark.health import health
from tests.test_ui_state import NOW, SERVER, ops_delta, snap, tree  # noqa: F401 - the tree fixture


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[tuple[sqlalchemy.engine.Engine, Path]]:
    path = tmp_path / "dgx.db"
    engine = make_engine(f"sqlite:///{path}")
    migrate(engine)
    probe_writable(engine)  # healthy to begin with
    yield engine, path
    engine.dispose()


def test_banner_follows_the_database(tree: tuple[Any, Any], engine: tuple[sqlalchemy.engine.Engine, Path]) -> None:  # noqa: F811
    root, state = tree
    db, path = engine
    state._apply(snap(1, SERVER), True, 1.0, NOW + 1)
    assert ops_delta(root).get("database_error_rx_state_", "") == ""
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        with pytest.raises(DatabaseUnavailable):
            probe_writable(db, wait=0.2)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    state._apply(snap(2, SERVER), True, 1.0, NOW + 2)
    shown = ops_delta(root)["database_error_rx_state_"]
    assert shown.startswith("Since ") and "database is locked" in shown and "stops still work" in shown
    # Same facts on the next tick: nothing re-sent.
    state._apply(snap(3, SERVER), True, 1.0, NOW + 3)
    assert "database_error_rx_state_" not in ops_delta(root)
    # Recovery: the next successful write clears it.
    probe_writable(db)
    assert not health.is_degraded("database")
    state._apply(snap(4, SERVER), True, 1.0, NOW + 4)
    assert ops_delta(root)["database_error_rx_state_"] == ""


def test_banner_component_is_an_alert_with_an_id() -> None:
    rendered = str(stale_banner().render())
    assert "banner-database" in rendered and "database_error" in rendered


def test_health_components_name_what_is_degraded_and_since_when() -> None:
    from dgx_spark.collector.facts import GpuFacts
    from dgx_spark.health import components_payload

    no_gpu = "No NVIDIA GPU detected"
    calm = components_payload(sampler_running=True, taken_at=NOW, interval=2.0, errors=[],
                              gpu=GpuFacts(available=False, message=no_gpu), no_gpu_message=no_gpu, now=NOW + 1)
    assert set(calm) >= {"database", "nvml", "sampler", "webhook"}
    assert calm["nvml"]["status"] == "absent" and calm["sampler"]["status"] == "ok"
    hung = components_payload(
        sampler_running=True, taken_at=NOW, interval=2.0,
        errors=[("progress", "ValueError: x", NOW - 5)],
        gpu=GpuFacts(available=True, stale=True, stale_seconds=12.0), no_gpu_message=no_gpu, now=NOW + 1,
    )
    assert hung["nvml"]["status"] == "degraded" and "12s" in hung["nvml"]["last_error"] and hung["nvml"]["since"]
    assert hung["sampler"]["status"] == "degraded" and hung["sampler"]["last_error"] == "progress: ValueError: x"
    old = components_payload(sampler_running=True, taken_at=NOW - 60, interval=2.0, errors=[], gpu=None,
                             no_gpu_message=no_gpu, now=NOW)
    assert old["sampler"]["status"] == "degraded" and "60s old" in old["sampler"]["last_error"]
