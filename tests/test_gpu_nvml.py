"""The NVML layer and the system probe, against a fake NVML at the pynvml boundary.

No GPU exists here, so the GPU is described by scenarios (tests/fake_pynvml.py);
everything else is real: psutil, the sampler, processes spawned by the test.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from dgx_spark.collector.gpu import NO_GPU_MESSAGE, GpuReader, NvmlSession
from dgx_spark.collector.model import Operation
from dgx_spark.collector.sampler import SampleContext, Sampler
from dgx_spark.collector.system import ResourceSettings, SystemProbe, gpu_by_operation
from tests import fake_pynvml
from tests.support.dashboard import wait_until

GIB = 1 << 30


def gb10(**device: Any) -> dict[str, Any]:
    """A DGX Spark-like device: unified memory (device memory NotSupported)."""
    base: dict[str, Any] = {
        "name": "NVIDIA GB10",
        "uuid": "GPU-5f1c0000-0000-0000-0000-000000000010",
        "memory": None,
        "utilization": 37,
        "temperature": 48,
        "power_mw": 31_500,
        "power_limit_mw": None,
        "compute": [],
        "graphics": [],
        "samples": [],
    }
    base.update(device)
    return base


def discrete(**device: Any) -> dict[str, Any]:
    """A discrete GPU with its own memory."""
    base = gb10(name="NVIDIA H100 80GB HBM3", uuid="GPU-h100", power_limit_mw=700_000)
    base["memory"] = {"total": 80 * GIB, "used": 20 * GIB, "free": 60 * GIB}
    base.update(device)
    return base


def session(scenario: dict[str, Any]) -> tuple[NvmlSession, Any]:
    """An NVML session over a fresh fake module, and the fake behind it."""
    module = fake_pynvml.build(scenario)
    return NvmlSession(module), module.fake


def op(op_id: str, *pids: int, **fields: Any) -> Operation:
    """A live operation holding ``pids`` (its folded process tree)."""
    return Operation(id=op_id, type="program", name=op_id, status="running", pid=pids[0], pids=pids, **fields)


@pytest.fixture
def child() -> Iterator[subprocess.Popen[bytes]]:
    """A real process on the host, standing in for a GPU program."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    yield proc
    proc.kill()
    proc.wait(10)


def api_warnings(ctx: SampleContext) -> list[dict[str, Any]]:
    """The tick's warnings as ``GET /api/dgx/system`` shows them."""
    assert ctx.system is not None
    return [warning.to_api() for warning in ctx.system.warnings]


def probe_for(scenario: dict[str, Any], **settings: Any) -> tuple[SystemProbe, Any]:
    """A system probe reading a fake NVML, with real CPU/RAM."""
    module = fake_pynvml.build(scenario)
    reader = GpuReader(NvmlSession(module), timeout=settings.pop("timeout", 10.0))
    return SystemProbe(reader, settings=ResourceSettings(**settings)), module.fake


# -- NVML missing -----------------------------------------------------------------


def test_library_missing_means_no_gpu_and_nothing_else_changes() -> None:
    reading = NvmlSession(loader=lambda: None).read()
    assert not reading.available
    assert reading.message == NO_GPU_MESSAGE
    assert reading.devices == () and reading.processes == ()

    probe = SystemProbe(GpuReader(NvmlSession(loader=lambda: None)), settings=ResourceSettings())
    operations = [op("a", 1, cpu_percent=12.5, memory_bytes=3 * GIB)]

    def tick() -> SampleContext | None:
        ctx = SampleContext(now=1.0, operations=list(operations))
        probe.sample(ctx)
        return ctx if ctx.system.cpu.percent is not None else None

    ctx = wait_until(tick, timeout=30)  # CPU % needs two readings some time apart
    assert ctx.operations == operations  # untouched: GPU fields stay None
    assert ctx.operations[0].gpu_memory_bytes is None and ctx.operations[0].gpu_indices is None
    assert ctx.system.gpu.available is False
    assert ctx.system.gpu.message == NO_GPU_MESSAGE
    assert ctx.system.cpu.percent is not None
    assert ctx.system.memory.total_bytes == psutil.virtual_memory().total


def test_init_failure_means_no_gpu_and_is_not_retried() -> None:
    nvml, fake = session({"init_error": "DRIVER_NOT_LOADED", "devices": [gb10()]})
    assert not nvml.read().available
    assert nvml.read().message == NO_GPU_MESSAGE
    assert fake.calls.count("nvmlInit") == 1


@pytest.mark.skipif(Path("/dev/nvidiactl").exists(), reason="a real NVIDIA driver is present")
def test_real_pynvml_without_a_driver_reports_no_gpu() -> None:
    reading = GpuReader(NvmlSession(), timeout=30).read()
    assert not reading.available and reading.message == NO_GPU_MESSAGE


def test_a_loader_injects_a_scenario_file(tmp_path: Path) -> None:
    scenario = tmp_path / "gpu.json"
    scenario.write_text(json.dumps({"devices": [gb10(name="Hooked GPU")]}))
    reading = NvmlSession(loader=lambda: fake_pynvml.from_file(scenario)).read()
    assert reading.available and reading.devices[0].name == "Hooked GPU"


# -- unified memory (GB10) ------------------------------------------------------------


def test_gb10_unified_memory_uses_system_pool_and_process_list(child: subprocess.Popen[bytes]) -> None:
    nvml, _ = session(
        {
            "driver_version": "580.95.05",
            "devices": [
                gb10(compute=[{"pid": child.pid, "used_memory": 6 * GIB}, {"pid": 77, "used_memory": None}])
            ],
        }
    )
    reading = nvml.read()
    (device,) = reading.devices
    assert device.unified_memory is True
    assert device.memory_total_bytes == psutil.virtual_memory().total
    assert 0 < device.memory_used_bytes <= device.memory_total_bytes
    assert device.name == "NVIDIA GB10" and device.utilization == 37.0
    assert device.temperature_c == 48.0 and device.power_watts == 31.5
    assert device.power_limit_watts is None  # NotSupported: that field alone is None
    assert reading.driver_version == "580.95.05"
    memory = {p.pid: p.used_memory_bytes for p in reading.processes}
    assert memory == {child.pid: 6 * GIB, 77: None}  # NVML_VALUE_NOT_AVAILABLE -> None, not 0

    per_op = gpu_by_operation([op("train", child.pid)], reading)
    assert per_op["train"].memory_bytes == 6 * GIB
    assert per_op["train"].indices == (0,)


def test_each_field_is_read_separately() -> None:
    nvml, _ = session({"devices": [discrete(name=None, temperature=None, utilization=None, power_mw=None)]})
    (device,) = nvml.read().devices
    assert device.name is None and device.temperature_c is None
    assert device.utilization is None and device.power_watts is None
    assert device.memory_total_bytes == 80 * GIB and device.memory_used_bytes == 20 * GIB
    assert device.unified_memory is False and device.uuid == "GPU-h100"


# -- process lists: v3 / v2 / v1 fallback, compute and graphics -----------------------------


def test_v3_missing_falls_back_to_v2_then_v1() -> None:
    proc = [{"pid": 4242, "used_memory": GIB}]
    nvml, fake = session(
        {
            "missing": ["nvmlDeviceGetComputeRunningProcesses_v3", "nvmlDeviceGetGraphicsRunningProcesses_v3"],
            "devices": [discrete(compute=proc, graphics=[{"pid": 4343, "used_memory": 2 * GIB}])],
        }
    )
    reading = nvml.read()
    assert {(p.pid, p.kind, p.used_memory_bytes) for p in reading.processes} == {
        (4242, "compute", GIB),
        (4343, "graphics", 2 * GIB),
    }
    assert "nvmlDeviceGetComputeRunningProcesses_v2" in fake.calls

    # An old binding: only the v1 call exists.
    nvml, fake = session(
        {
            "missing": ["nvmlDeviceGetComputeRunningProcesses_v3", "nvmlDeviceGetComputeRunningProcesses_v2"],
            "devices": [discrete(compute=proc)],
        }
    )
    assert [p.pid for p in nvml.read().processes] == [4242]
    assert "nvmlDeviceGetComputeRunningProcesses" in fake.calls


def test_driver_without_v3_symbol_falls_back_once() -> None:
    nvml, fake = session(
        {
            "function_not_found": ["nvmlDeviceGetComputeRunningProcesses_v3"],
            "devices": [gb10(compute=[{"pid": 4242, "used_memory": GIB}])],
        }
    )
    for _ in range(3):
        assert [p.pid for p in nvml.read().processes] == [4242]
    assert fake.calls.count("nvmlDeviceGetComputeRunningProcesses_v3") == 1  # remembered as missing
    assert fake.calls.count("nvmlDeviceGetComputeRunningProcesses_v2") == 3


def test_process_both_compute_and_graphics_counts_once() -> None:
    nvml, _ = session(
        {"devices": [discrete(compute=[{"pid": 5, "used_memory": GIB}], graphics=[{"pid": 5, "used_memory": GIB}])]}
    )
    per_op = gpu_by_operation([op("x", 5)], nvml.read())
    assert per_op["x"].memory_bytes == GIB


# -- per-process utilisation samples ------------------------------------------------------


def test_utilisation_samples_since_last_tick() -> None:
    nvml, fake = session(
        {
            "devices": [
                discrete(
                    compute=[{"pid": 10, "used_memory": GIB}, {"pid": 11, "used_memory": GIB}],
                    samples=[{"pid": 10, "sm": 40, "ts": 1000}, {"pid": 10, "sm": 60, "ts": 2000}],
                )
            ]
        }
    )
    first = {p.pid: p.utilization for p in nvml.read().processes}
    assert first == {10: 50.0, 11: 0.0}  # mean of 10's samples; 11 ran nothing: 0 %, known
    # Nothing newer than ts 2000: NVML says NOT_FOUND, which is 0 %, not unknown.
    second = {p.pid: p.utilization for p in nvml.read().processes}
    assert second == {10: 0.0, 11: 0.0}
    fake.update(devices=[discrete(compute=[{"pid": 10, "used_memory": GIB}], samples=[{"pid": 10, "sm": 90, "ts": 3000}])])
    assert [p.utilization for p in nvml.read().processes] == [90.0]


def test_no_utilisation_samples_means_unknown_not_zero() -> None:
    nvml, _ = session({"devices": [gb10(compute=[{"pid": 10, "used_memory": GIB}], samples=None)]})
    reading = nvml.read()
    assert reading.processes[0].utilization is None
    assert gpu_by_operation([op("x", 10)], reading)["x"].utilization is None


# -- the probe: per operation, idle holders, pressure ----------------------------------------


def test_probe_sums_folded_tree_and_ignores_pids_not_on_host(child: subprocess.Popen[bytes]) -> None:
    not_on_host = 2**22 + 4321  # above any pid_max: another namespace's pid
    assert not psutil.pid_exists(not_on_host)
    helper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        scenario = {
            "devices": [
                gb10(
                    compute=[{"pid": child.pid, "used_memory": 2 * GIB}, {"pid": not_on_host, "used_memory": 9 * GIB}],
                    samples=[{"pid": child.pid, "sm": 30}],
                ),
                discrete(compute=[{"pid": helper.pid, "used_memory": 3 * GIB}], samples=[{"pid": helper.pid, "sm": 20}]),
            ]
        }
        probe, _ = probe_for(scenario)
        ops = [op("tree", child.pid, helper.pid), op("cpu-only", 1)]
        ctx = SampleContext(now=100.0, operations=list(ops))
        probe.sample(ctx)
    finally:
        helper.kill()
        helper.wait(10)
    tree, cpu_only = ctx.operations
    assert tree.gpu_memory_bytes == 5 * GIB
    assert tree.gpu_indices == (0, 1)
    assert tree.gpu_utilization == 50.0
    assert tree.idle_gpu is False
    # Known to use no GPU: no indices; memory and utilisation unknown-ish, never a fake 0.
    assert cpu_only.gpu_indices == () and cpu_only.gpu_memory_bytes is None and cpu_only.gpu_utilization is None
    gpu_part = ctx.system.gpu
    assert gpu_part.available and len(gpu_part.devices) == 2
    assert gpu_part.process_count == 3  # the foreign pid is seen, attributed to nobody


def test_idle_gpu_holder_after_configured_time() -> None:
    scenario = {"devices": [gb10(compute=[{"pid": 10, "used_memory": 4 * GIB}], samples=[])]}
    probe, fake = probe_for(scenario, idle_gpu_seconds=600)
    holder = [op("holder", 10, memory_bytes=GIB)]

    def tick(now: float) -> Operation:
        ctx = SampleContext(now=now, operations=list(holder))
        probe.sample(ctx)
        return ctx.operations[0]

    assert tick(1000.0).idle_gpu is False  # idle, but not for long yet
    assert tick(1599.0).idle_gpu is False
    idle = tick(1601.0)
    assert idle.idle_gpu is True and idle.gpu_utilization == 0.0
    # It computes again: the badge goes, and the idle clock restarts.
    fake.update(devices=[gb10(compute=[{"pid": 10, "used_memory": 4 * GIB}], samples=[{"pid": 10, "sm": 80}])])
    assert tick(1700.0).idle_gpu is False
    fake.update(devices=[gb10(compute=[{"pid": 10, "used_memory": 4 * GIB}], samples=[])])
    assert tick(1800.0).idle_gpu is False
    assert tick(2401.0).idle_gpu is True


def test_memory_pressure_names_what_is_left_and_top_holders() -> None:
    probe, _ = probe_for(
        {"devices": [gb10(compute=[{"pid": 11, "used_memory": 8 * GIB}], samples=[])]},
        memory_pressure_percent=100.0,  # always "under pressure": the warning's content is what we test
    )
    ops = [
        op("small", 10, memory_bytes=GIB),
        op("big", 11, memory_bytes=2 * GIB),
        op("none", 12),
        op("mid", 13, memory_bytes=int(1.5 * GIB)),
        op("tiny", 14, memory_bytes=1024),
    ]
    ctx = SampleContext(now=5.0, operations=ops)
    probe.sample(ctx)
    (warning,) = [w for w in api_warnings(ctx) if w["kind"] == "memory_pressure"]
    assert warning["pool"] == "unified memory"
    assert warning["available_bytes"] == pytest.approx(psutil.virtual_memory().available, rel=0.5)
    # On unified memory, GPU memory counts too: big holds 2 GiB RAM + 8 GiB GPU.
    assert [h["name"] for h in warning["top_holders"]] == ["big", "mid", "small"]
    assert warning["top_holders"][0]["held_bytes"] == 10 * GIB
    assert "left of" in warning["message"] and "big (10.0 GiB)" in warning["message"]


def test_no_pressure_warning_below_threshold() -> None:
    probe, _ = probe_for({"devices": [discrete()]}, memory_pressure_percent=0.0)
    ctx = SampleContext(now=5.0, operations=[])
    probe.sample(ctx)
    assert [w for w in api_warnings(ctx) if "pressure" in w["kind"]] == []


def test_discrete_gpu_memory_pressure() -> None:
    full = {"total": 80 * GIB, "used": 79 * GIB, "free": GIB}
    probe, _ = probe_for(
        {"devices": [discrete(memory=full, compute=[{"pid": 10, "used_memory": 70 * GIB}])]},
        memory_pressure_percent=5.0,
    )
    ctx = SampleContext(now=5.0, operations=[op("llm", 10)])
    probe.sample(ctx)
    kinds = {w["kind"]: w for w in api_warnings(ctx)}
    gpu_warning = kinds["gpu_memory_pressure"]
    assert gpu_warning["available_bytes"] == GIB
    assert gpu_warning["top_holders"][0]["name"] == "llm"


# -- the deadline --------------------------------------------------------------------------


def test_hung_nvml_call_leaves_snapshot_fresh_and_gpu_stale() -> None:
    scenario = {"hang_seconds": 120, "devices": [gb10(compute=[{"pid": 10, "used_memory": GIB}], samples=[])]}
    probe, fake = probe_for(scenario, timeout=0.5)
    sampler = Sampler(lambda now: [op("job", 10)], [probe], interval=60)
    try:
        first = sampler.sample_once()
        assert first.system.gpu.stale is False
        assert first.operations[0].gpu_memory_bytes == GIB

        fake.update(hang=["nvmlDeviceGetUtilizationRates"])
        second = sampler.sample_once()
        assert second.sequence == 2
        assert second.duration_ms < 60_000  # it did not wait for the hung call (120 s)
        gpu_part = second.system.gpu
        assert gpu_part.stale is True
        assert gpu_part.devices[0].name == "NVIDIA GB10"  # the last good data, marked stale
        assert second.system.memory.total_bytes == psutil.virtual_memory().total
        assert second.system.cpu is not None
        assert second.operations[0].gpu_memory_bytes == GIB

        third = sampler.sample_once()
        assert third.sequence == 3 and third.system.gpu.stale is True
        assert third.system.cpu.percent is not None  # measured across the deadline wait
        # No second read piles up behind the hung one.
        assert fake.calls.count("nvmlDeviceGetUtilizationRates") == 2
    finally:
        fake.update(hang=[])
        fake.release()
    fresh = wait_until(
        lambda: (snap := sampler.sample_once()).system.gpu.stale is False and snap,
        timeout=30,
    )
    assert fresh.system.gpu.devices[0].utilization == 37.0


def test_hang_before_first_reading_is_unavailable_and_stale() -> None:
    probe, fake = probe_for(
        {"hang": ["nvmlInit"], "hang_seconds": 120, "devices": [gb10()]}, timeout=0.3
    )
    try:
        ctx = SampleContext(now=1.0, operations=[op("a", 10)])
        probe.sample(ctx)
        assert ctx.system.gpu.available is False and ctx.system.gpu.stale is True
        assert ctx.operations[0].gpu_memory_bytes is None
        assert ctx.system.memory.total_bytes is not None
    finally:
        fake.release()


def test_history_is_bounded_to_the_last_minutes() -> None:
    probe, _ = probe_for({"devices": [discrete()]})
    for second in range(0, 1000, 2):
        probe.sample(SampleContext(now=float(second), operations=[]))
    ctx = SampleContext(now=1000.0, operations=[])
    probe.sample(ctx)
    history = ctx.system.to_api(ctx.now, 1)["history"]
    assert 100 <= len(history["at"]) <= 151
    assert history["at"][0] >= 1000.0 - 300.0
    assert len(history["gpu_utilization"]) == 1 and history["gpu_utilization"][0][-1] == 37.0


def test_ended_operation_holds_no_gpu() -> None:
    probe, _ = probe_for({"devices": [gb10(compute=[{"pid": 10, "used_memory": GIB}], samples=[])]})
    ended = op("done", 10, gpu_memory_bytes=GIB, gpu_indices=(0,), idle_gpu=True).replace(
        status="stopped", pids=()
    )
    ctx = SampleContext(now=5.0, operations=[ended])
    probe.sample(ctx)
    (after,) = ctx.operations
    assert after.gpu_memory_bytes is None and after.idle_gpu is None
    assert [w for w in api_warnings(ctx) if w["kind"] == "idle_gpu"] == []
