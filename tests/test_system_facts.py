"""``GET /api/dgx/system``'s JSON is a contract: the typed system facts give exactly today's payload.

``tests/data/system_payload.json`` was written from the payload as it was before the facts were typed
(dicts built in the probe); these tests keep it so. One real probe tick feeds it: real CPU counters,
network and a real disk folder; fixed RAM and temperature readings (shaped like psutil's); the GPU
through the fake NVML (the one allowed double). Figures that differ between machines are masked.
The other tests build facts with unreadable parts and each warning kind, and check both the API's
JSON and the header's words for them.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, NamedTuple

import pytest

from dgx_spark.collector import host
from dgx_spark.collector.facts import (
    CpuFacts,
    DiskWarning,
    Filesystem,
    GpuFacts,
    Holder,
    HotSensor,
    IdleGpuWarning,
    MemoryFacts,
    ModelCache,
    PressureWarning,
    SystemFacts,
    TemperatureWarning,
    system_payload,
)
from dgx_spark.collector.gpu import GpuDevice, GpuReader, NvmlSession
from dgx_spark.collector.host import DiskWatcher, Place
from dgx_spark.collector.model import Operation
from dgx_spark.collector.sampler import SampleContext
from dgx_spark.collector.system import SystemProbe
from dgx_spark.settings import ResourceSettings
from dgx_spark.state.system import system_view
from tests import fake_pynvml

GIB = 1 << 30
GOLDEN = Path(__file__).parent / "data" / "system_payload.json"
NOW = 1_700_000_000.0
# Machine-dependent figures (real counters, the real RAM the fake GB10 shares, times of background reads).
VOLATILE = frozenset({
    "cpu.count", "cpu.per_core_percent", "history.at", "model_caches_read_at",
    "history.network_rx_bytes_per_second", "history.network_tx_bytes_per_second", "history.gpu_memory_used_bytes",
    "gpu.devices.memory_used_bytes", "gpu.devices.memory_total_bytes",
})
# Real network counters and a real folder: only their keys and value types are fixed.
SHAPE_ONLY = frozenset({"network", "disks", "model_caches"})


class Pool(NamedTuple):  # the shape of psutil.virtual_memory()
    """RAM as psutil gives it (only the fields the probe reads)."""

    total: int
    available: int


class Sensor(NamedTuple):  # the shape of psutil.sensors_temperatures() entries
    """One sensor reading as psutil gives it."""

    label: str
    current: float
    high: float | None
    critical: float | None


def _mask(payload: Any, path: str = "") -> Any:
    """``payload`` with the figures that depend on the machine replaced by their type's name."""
    if path in VOLATILE:
        return "<machine>"
    if path.split(".")[0] in SHAPE_ONLY and not isinstance(payload, dict | list):
        return type(payload).__name__
    if isinstance(payload, dict):
        return {key: _mask(value, f"{path}.{key}" if path else key) for key, value in payload.items()}
    if isinstance(payload, list):
        return [_mask(value, path) for value in payload]
    return payload


def _op(op_id: str, *pids: int, **fields: Any) -> Operation:
    return Operation(id=op_id, type="program", name=op_id, status="running", pid=pids[0], pids=pids, **fields)


def full_tick(tmp_path: Path) -> dict[str, Any]:
    """One real probe tick with every kind of warning; the API's data for it."""
    module = fake_pynvml.build({"devices": [
        {"name": "NVIDIA GB10", "uuid": "GPU-gb10", "memory": None, "utilization": 0, "temperature": 92,
         "power_mw": 31_500, "power_limit_mw": None, "compute": [{"pid": 11, "used_memory": 8 * GIB}],
         "graphics": [], "samples": []},
        {"name": "NVIDIA H100", "uuid": "GPU-h100", "memory": {"total": 80 * GIB, "used": 79 * GIB, "free": GIB},
         "utilization": 50, "temperature": 85, "power_mw": 300_000, "power_limit_mw": 700_000,
         "compute": [{"pid": 13, "used_memory": 70 * GIB}], "graphics": [], "samples": []},
    ]})
    (tmp_path / "cache").mkdir()
    disks = DiskWatcher([Place("data", "data", tmp_path)], [Place("huggingface", "Hugging Face", tmp_path / "cache")])
    readings = {"nvme": [Sensor("Composite", 88.0, 84.0, 89.0)], "acpitz": [Sensor("acpitz", 40.0, None, None)]}
    probe = SystemProbe(
        GpuReader(NvmlSession(module), timeout=10.0),
        settings=ResourceSettings(memory_pressure_percent=50.0, idle_gpu_seconds=0.0),
        cpu_percent=lambda: 12.5,
        virtual_memory=lambda: Pool(total=128 * GIB, available=20 * GIB),
        disks=disks,
        temperatures=lambda: host.read_temperatures(lambda: readings),
    )
    ops = [_op("small", 10, memory_bytes=GIB), _op("big", 11, memory_bytes=2 * GIB), _op("llm", 13)]
    try:
        disks.scan_filesystems()
        disks.scan_caches()
        ctx = SampleContext(now=NOW, operations=ops)
        probe.sample(ctx)
        ctx = SampleContext(now=NOW + 2.0, operations=list(ctx.operations))
        probe.sample(ctx)
    finally:
        disks.stop()
    return system_payload(ctx.system, NOW + 2.0, 7)


def golden() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(GOLDEN.read_text())
    return data


def test_a_full_tick_gives_exactly_the_recorded_payload(tmp_path: Path) -> None:
    payload = full_tick(tmp_path)
    assert _mask(payload) == golden()["full"]
    # Round-trips through JSON unchanged (what FastAPI sends).
    assert json.loads(json.dumps(payload)) == payload


def test_no_facts_yet_give_the_recorded_empty_payload() -> None:
    assert _mask(system_payload(None, 0, 0)) == golden()["empty"]


def test_parts_that_could_not_be_read_are_null_not_a_crash() -> None:
    facts = SystemFacts(
        cpu=CpuFacts(percent=None, count=None, per_core_percent=None),
        memory=MemoryFacts(),
        gpu=GpuFacts(available=False, message="NVML: driver not loaded", devices=(GpuDevice(index=0),)),
        temperatures=(),
        disks=(Filesystem(mount="/"),),
        model_caches=(ModelCache(key="ollama", label="Ollama", path="/nowhere"),),
    )
    data = facts.to_api(0.0, 1)
    assert data["taken_at"] is None and data["cpu"] == {"percent": None, "count": None, "per_core_percent": None}
    assert set(data["memory"].values()) == {None}
    assert data["gpu"]["message"] == "NVML: driver not loaded" and data["gpu"]["devices"][0]["utilization"] is None
    assert data["temperatures"] == [] and data["disks"][0]["percent"] is None
    assert data["model_caches"][0] == {"key": "ollama", "label": "Ollama", "path": "/nowhere", "exists": False,
                                       "size_bytes": None, "largest": [], "partial": False, "error": None,
                                       "scanned_at": None}
    assert json.loads(json.dumps(data)) == data
    # The header words the same facts: blanks, never "None".
    view = system_view(facts)
    assert (view.cpu_text, view.ram_text, view.ram_percent_text) == ("", "", "")
    assert view.gpus[0].name == "GPU 0" and view.gpus[0].utilization_text == ""
    assert view.gpu_message == "NVML: driver not loaded"
    assert view.disks[0].percent_text == "" and view.caches[0].size_text == "not present"
    with pytest.raises(dataclasses.FrozenInstanceError):
        facts.cpu = None  # type: ignore[misc]


def test_a_probe_whose_readers_all_fail_still_gives_facts(tmp_path: Path) -> None:
    def broken() -> Any:
        raise OSError("unreadable")

    disks = DiskWatcher([], [])
    probe = SystemProbe(GpuReader(NvmlSession(loader=lambda: None)), settings=ResourceSettings(),
                        cpu_percent=broken, virtual_memory=broken, disks=disks, temperatures=broken)
    try:
        ctx = SampleContext(now=NOW, operations=[])
        probe.sample(ctx)
    finally:
        disks.stop()
    assert ctx.system is not None
    assert ctx.system.memory == MemoryFacts() and ctx.system.temperatures is None
    data = system_payload(ctx.system, NOW, 1)
    assert data["cpu"]["percent"] is None and data["memory"]["total_bytes"] is None
    assert data["gpu"]["available"] is False and data["warnings"] == []


def test_each_warning_kind_words_its_facts_and_keeps_its_api_keys() -> None:
    holders = tuple(Holder(id=n, name=n, memory_bytes=GIB, gpu_memory_bytes=None, held_bytes=GIB) for n in "abcd")
    pressure = PressureWarning(kind="memory_pressure", pool="RAM", available_bytes=GIB, total_bytes=0,
                               threshold_bytes=2 * GIB, top_holders=holders[:1])
    assert pressure.level is None and "level" not in pressure.to_api()
    assert pressure.message == "Low RAM: 1.0 GiB left of 0 B (— free). Largest: a (1.0 GiB)"
    idle = IdleGpuWarning(operations=tuple(dataclasses.replace(h, held_bytes=None) for h in holders))
    assert idle.message == "Holding GPU memory while idle: a, b, c"  # the first few; every one in the API
    assert [set(op) for op in idle.to_api()["operations"]] == [{"id", "name", "memory_bytes", "gpu_memory_bytes"}] * 4
    disk = DiskWarning(filesystem=Filesystem(mount="/data"))
    assert disk.to_api() == {"kind": "disk_full", "level": "warning",
                             "message": "Disk nearly full: /data is — used, — free of —",
                             "mount": "/data", "labels": [], "percent": None, "free_bytes": None, "total_bytes": None}
    warm = TemperatureWarning(sensors=(HotSensor("nvme", 81.0, "warning", 84.0, None),))
    assert (warm.level, warm.message) == ("warning", "Running hot: nvme 81 °C (high 84 °C)")
    assert list(warm.to_api()) == ["kind", "level", "message", "sensors"]
    # The header shows the banner kinds (pressure unlevelled: red), idle holders on their cards.
    view = system_view(SystemFacts(warnings=(pressure, idle, disk, warm)))
    assert [(w.kind, w.level) for w in view.warnings] == [
        ("memory_pressure", "critical"), ("disk_full", "warning"), ("temperature", "warning")]
    assert view.warnings[0].message == pressure.message
