"""One ``Services`` object per backend process, built from the settings and handed down."""

from __future__ import annotations

import re
from pathlib import Path

from dgx_spark import services as services_module
from dgx_spark.database import make_engine
from dgx_spark.settings import load_settings

ROOT = Path(__file__).resolve().parent.parent


def test_the_services_are_built_once_from_the_settings(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("DGX_SPARK_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("DGX_SPARK_STALL_SECONDS", "42")
    monkeypatch.setenv("DGX_SPARK_SERVICE_PROBE_SECONDS", "0")
    monkeypatch.setenv("DGX_SPARK_NODE_BACKOFF_MAX_SECONDS", "7")
    monkeypatch.setenv("DGX_SPARK_STOP_GRACE_SECONDS", "3")
    monkeypatch.setenv("DGX_SPARK_LOG_STREAMS_PER_CLIENT", "5")
    monkeypatch.setenv("DGX_SPARK_CONTROL_BURST", "4")
    loaded = load_settings()
    built = services_module.Services(loaded, make_engine(loaded.db_url))
    assert built.settings is loaded
    assert built.tracker.stall_seconds == 42.0
    assert built.service_watcher is None  # 0 turns service probes off
    assert built.hub.backoff_limit == 7.0 and built.hub.store.path.parent == tmp_path.resolve()
    assert built.supervisor.config.stop_grace == 3.0
    names = [probe.name for probe in built.sampler._probes]
    assert names[-1] == "events" and names.index("supervisor") < names.index("system") < names.index("progress")
    progress = next(p for p in built.sampler._probes if p.name == "progress")
    assert progress.tracker is built.tracker  # the API and the probe share one tracker
    assert built.limits.log_streams.per_client == 5 and built.limits.control_rate.burst == 4.0
    assert built.control._rate is built.limits.control_rate and built.control._in_flight is built.limits.in_flight
    assert built.audit.engine is built.engine
    # One of each part the probes share: held outputs, the exit listener, the container watcher.
    outcome = next(p for p in built.sampler._probes if p.name == "outcome")
    containers = next(p for p in built.sampler._probes if p.name == "containers")
    assert progress.handles is built.handles and outcome.handles is built.handles
    assert outcome.exits is built.exits and built.sampler.discovery.events is built.exits
    assert containers.watcher is built.containers and built.supervisor._containers is built.containers
    assert built.events_started() is None and built.short_lived_ended() is None  # nothing built by asking
    built.stop()


def test_one_accessor_returns_the_same_object() -> None:
    assert services_module.get_services() is services_module.get_services()
    assert services_module.get_sampler() is services_module.get_services().sampler
    assert services_module.get_supervisor() is services_module.get_services().supervisor


def test_no_other_module_keeps_a_process_wide_service() -> None:
    """The events service, progress tracker, node hub and service watcher are the services' only."""
    pattern = re.compile(r"^def (get_events|get_tracker|get_hub|short_lived_ended|stop_events|stop_watcher)\(", re.M)
    found = [
        f"{path.relative_to(ROOT)}: {match.group(1)}"
        for path in sorted((ROOT / "dgx_spark").rglob("*.py"))
        if path.name != "services.py"
        for match in pattern.finditer(path.read_text(encoding="utf-8"))
    ]
    assert not found, found
