"""GET /api/dgx/system through the real backend, with and without a (fake) GPU.

The first test uses the machine as it is (no NVIDIA driver in CI). The others run
their own backend with ``DGX_SPARK_FAKE_NVML`` (the test hook for the one allowed
double, a fake pynvml) and real workloads for the GPU processes.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support import workloads
from tests.support.dashboard import Dashboard, wait_until

GIB = 1 << 30


def system(dashboard: Dashboard) -> dict[str, Any]:
    """The data of GET /api/dgx/system (asserting the envelope)."""
    status, body = dashboard.request("GET", "/api/dgx/system")
    assert status == 200, body
    assert body["success"] is True
    return body["data"]


@pytest.mark.skipif(Path("/dev/nvidiactl").exists(), reason="a real NVIDIA driver is present")
def test_system_without_gpu_has_cpu_and_ram(backend: Dashboard) -> None:
    data = wait_until(
        lambda: (d := system(backend))["cpu"]["percent"] is not None and d,
        timeout=60,
        message="CPU percent never appeared",
    )
    gpu = data["gpu"]
    assert gpu["available"] is False
    assert gpu["message"] == "No NVIDIA GPU detected"
    assert gpu["devices"] == [] and gpu["stale"] is False
    memory = data["memory"]
    assert memory["total_bytes"] == psutil.virtual_memory().total
    assert 0 < memory["used_bytes"] <= memory["total_bytes"]
    assert 0 <= data["cpu"]["percent"] <= 100
    assert data["cpu"]["count"] == psutil.cpu_count()
    assert len(data["history"]["cpu_percent"]) >= 1
    assert data["history"]["gpu_utilization"] == []
    assert isinstance(data["warnings"], list)
    # No NVML: every operation's GPU fields are unknown (null), never 0.
    for operation in backend.operations():
        assert operation["gpu_memory_bytes"] is None
        assert operation["gpu_utilization"] is None
        assert operation["gpu_indices"] is None
        assert operation["idle_gpu"] is None


def write_scenario(path: Path, scenario: dict[str, Any]) -> None:
    """Replace the fake GPU's scenario atomically (the running app re-reads it)."""
    temp = path.with_suffix(".tmp")
    temp.write_text(json.dumps(scenario))
    temp.replace(path)


def gb10_scenario(pids: list[int], **extra: Any) -> dict[str, Any]:
    """One DGX Spark-like GPU: unified memory, the given pids holding 3 GiB each, all idle."""
    device = {
        "name": "NVIDIA GB10",
        "uuid": "GPU-fake-gb10",
        "memory": None,  # NotSupported: unified memory
        "utilization": 0,
        "temperature": 41,
        "power_mw": 11_000,
        "compute": [{"pid": pid, "used_memory": 3 * GIB} for pid in pids]
        + [{"pid": 2**22 + 77, "used_memory": GIB}],  # a pid not on this host
        "samples": [],
    }
    return {"driver_version": "580.95.05", "devices": [device], **extra}


@pytest.fixture(scope="module")
def gpu_setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Dashboard, Path, Any]]:
    """A backend with a fake GB10, an HTTP server holding GPU memory, and pressure always on."""
    folder = tmp_path_factory.mktemp("gpu-backend")
    scenario = folder / "gpu.json"
    with workloads.http_server(folder) as server:
        write_scenario(scenario, gb10_scenario([server.pid]))
        dashboard = Dashboard(
            folder / "data",
            env={
                "DGX_SPARK_FAKE_NVML": str(scenario),
                "DGX_SPARK_IDLE_GPU_SECONDS": "0",
                "DGX_SPARK_MEMORY_PRESSURE_PERCENT": "100",
                "DGX_SPARK_NVML_TIMEOUT_SECONDS": "0.5",
            },
        )
        dashboard.start()
        try:
            yield dashboard, scenario, server
        finally:
            dashboard.stop()
    text = dashboard.log_tail(200_000)
    assert "Traceback (most recent call last)" not in text, text[-6000:]


def test_fake_gb10_is_unified_memory_with_pressure_warning(gpu_setup: tuple[Dashboard, Path, Any]) -> None:
    dashboard, _, _ = gpu_setup
    data = wait_until(lambda: (d := system(dashboard))["gpu"]["available"] and d, timeout=60)
    gpu = data["gpu"]
    (device,) = gpu["devices"]
    assert device["name"] == "NVIDIA GB10"
    assert device["unified_memory"] is True and gpu["unified_memory"] is True
    assert device["memory_total_bytes"] == psutil.virtual_memory().total
    assert device["temperature_c"] == 41.0 and device["power_watts"] == 11.0
    assert gpu["driver_version"] == "580.95.05"
    assert gpu["process_count"] == 2  # the foreign pid is seen but attributed to nobody
    pressure = [w for w in data["warnings"] if w["kind"] == "memory_pressure"]
    assert pressure and pressure[0]["pool"] == "unified memory"
    assert "left of" in pressure[0]["message"]


def test_operation_holding_idle_gpu_memory(gpu_setup: tuple[Dashboard, Path, Any]) -> None:
    dashboard, _, server = gpu_setup

    def holder() -> dict[str, Any] | None:
        for operation in dashboard.operations():
            if operation["pid"] == server.pid and operation["idle_gpu"]:
                return operation
        return None

    operation = wait_until(holder, timeout=60, message="the GPU-holding server never showed idle_gpu")
    assert operation["gpu_memory_bytes"] == 3 * GIB
    assert operation["gpu_indices"] == [0]
    assert operation["gpu_utilization"] == 0.0
    data = system(dashboard)
    idle = [w for w in data["warnings"] if w["kind"] == "idle_gpu"]
    assert idle and operation["id"] in [o["id"] for o in idle[0]["operations"]]
    pressure = next(w for w in data["warnings"] if w["kind"] == "memory_pressure")
    assert operation["id"] in [h["id"] for h in pressure["top_holders"]]


def test_metrics_show_the_gpu_and_the_operation_holding_it(gpu_setup: tuple[Dashboard, Path, Any]) -> None:
    """``GET /metrics`` (parsed with prometheus_client) has the fake GB10 and the server's own figures."""
    dashboard, _, server = gpu_setup

    def scrape() -> dict[str, Any] | None:
        status, text = dashboard.request("GET", "/metrics")
        assert status == 200 and isinstance(text, str), text
        families = {f.name: f for f in text_string_to_metric_families(text)}
        info = [s for s in families["dgx_spark_operation_info"].samples if s.labels["id"] == op_id]
        held = [s for s in families["dgx_spark_operation_gpu_memory_bytes"].samples if s.labels["id"] == op_id]
        cpu = [s for s in families["dgx_spark_operation_cpu_percent"].samples if s.labels["id"] == op_id]
        ready = info and held and cpu and families["dgx_spark_gpu_temperature_celsius"].samples
        return families if ready else None

    op_id = wait_until(lambda: next((o["id"] for o in dashboard.operations() if o["pid"] == server.pid), None),
                       timeout=60, message="the server is not listed")
    # The server's CPU % needs two sightings (an interval); the first snapshots may lack it.
    families = wait_until(scrape, timeout=60, message="the GPU or the server's figures are not in /metrics")

    def value(family: str, **labels: str) -> float:
        (sample,) = [s for s in families[family].samples if labels.items() <= s.labels.items()]
        return float(sample.value)

    gpu = {"node": "local", "gpu": "0"}
    (temperature,) = families["dgx_spark_gpu_temperature_celsius"].samples
    assert temperature.labels == {**gpu, "name": "NVIDIA GB10"} and temperature.value == 41.0
    assert value("dgx_spark_gpu_power_watts", **gpu) == 11.0
    assert value("dgx_spark_gpu_utilization_percent", **gpu) == 0.0
    assert value("dgx_spark_gpu_memory_total_bytes", **gpu) == psutil.virtual_memory().total  # unified
    assert value("dgx_spark_operation_gpu_memory_bytes", node="local", id=op_id) == 3 * GIB
    assert value("dgx_spark_operation_memory_bytes", node="local", id=op_id) > 0
    assert value("dgx_spark_operation_uptime_seconds", node="local", id=op_id) >= 0
    assert value("dgx_spark_operation_cpu_percent", node="local", id=op_id) >= 0
    (info,) = [s for s in families["dgx_spark_operation_info"].samples if s.labels["id"] == op_id]
    assert info.labels["type"] == "server" and info.labels["status"] in ("running", "active"), info.labels
    assert value("dgx_spark_memory_total_bytes", node="local") == psutil.virtual_memory().total


def test_hung_nvml_marks_gpu_stale_and_snapshots_go_on(gpu_setup: tuple[Dashboard, Path, Any]) -> None:
    dashboard, scenario, server = gpu_setup
    wait_until(lambda: system(dashboard)["gpu"]["available"], timeout=60)
    write_scenario(scenario, gb10_scenario([server.pid], hang=["nvmlDeviceGetUtilizationRates"], hang_seconds=600))
    try:
        stale = wait_until(lambda: (d := system(dashboard))["gpu"]["stale"] and d, timeout=60)
        # Snapshots keep coming while NVML hangs, with CPU/RAM and the last GPU reading.
        later = wait_until(
            lambda: (d := system(dashboard))["sequence"] > stale["sequence"] + 1 and d, timeout=60
        )
        assert later["gpu"]["stale"] is True
        assert later["gpu"]["devices"][0]["name"] == "NVIDIA GB10"
        assert later["memory"]["total_bytes"] == psutil.virtual_memory().total
        assert later["cpu"]["percent"] is not None
        health = dashboard.get_json("/api/health")["data"]
        assert health["sampler_running"] is True
    finally:
        write_scenario(scenario, gb10_scenario([server.pid]))
    wait_until(lambda: system(dashboard)["gpu"]["stale"] is False, timeout=60)
