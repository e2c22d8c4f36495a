"""``GET /api/dgx/system``'s JSON is a contract: the typed system facts give exactly today's payload.

``tests/data/system_payload.json`` was written from the payload as it was before the facts were typed
(dicts built in the probe); these tests keep it so. One real probe tick feeds it: real CPU counters,
network and a real disk folder; fixed RAM and temperature readings (shaped like psutil's); the GPU
through the fake NVML (the one allowed double). Figures that differ between machines are masked.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, NamedTuple

from dgx_spark.collector import host
from dgx_spark.collector.facts import system_payload
from dgx_spark.collector.gpu import GpuReader, NvmlSession
from dgx_spark.collector.host import DiskWatcher, Place
from dgx_spark.collector.model import Operation
from dgx_spark.collector.sampler import SampleContext
from dgx_spark.collector.system import SystemProbe
from dgx_spark.settings import ResourceSettings
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
