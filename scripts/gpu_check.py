"""Print what NVML sees, for checking the GPU layer by hand on a real GPU machine.

    make gpu-check            # or: .venv/bin/python scripts/gpu_check.py [--json]

Part 1 calls NVML directly, one field at a time, and prints each raw answer or
the NVML error it raised (NotSupported is normal for device memory on GB10 /
DGX Spark). Part 2 prints what the dashboard makes of it (``NvmlSession``):
devices, unified memory, processes with their memory and utilisation, and
which host processes those pids are. Exit status: 0 with a GPU, 1 without.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import psutil

from dgx_spark.collector.gpu import (
    COMPUTE_CALLS,
    GRAPHICS_CALLS,
    GpuReader,
    NvmlSession,
    import_pynvml,
)
from dgx_spark.format import format_bytes


def call(nvml: Any, name: str, *args: Any) -> str:
    """One NVML call: its answer, or the error it raised, with the time it took."""
    function = getattr(nvml, name, None)
    if function is None:
        return "absent from this pynvml"
    started = time.perf_counter()
    try:
        value = function(*args)
    except Exception as exc:  # noqa: BLE001 - we print every failure
        result = f"ERROR {type(exc).__name__}: {exc}"
    else:
        if isinstance(value, list):
            result = f"{len(value)} item(s): " + "; ".join(_describe(v) for v in value[:8])
        else:
            result = _describe(value)
    return f"{result}  [{(time.perf_counter() - started) * 1000:.1f} ms]"


def _describe(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    fields = getattr(value, "_fields_", None)
    if fields:
        return "{" + ", ".join(f"{name}={getattr(value, name)!r}" for name, *_ in fields) + "}"
    if hasattr(value, "__dict__") and not isinstance(value, (int, float, str)):
        return "{" + ", ".join(f"{k}={v!r}" for k, v in vars(value).items()) + "}"
    return repr(value)


def raw(nvml: Any) -> None:
    """Part 1: direct NVML calls."""
    print("== NVML, field by field ==")
    print("nvmlInit:", call(nvml, "nvmlInit"))
    print("driver:", call(nvml, "nvmlSystemGetDriverVersion"))
    print("NVML version:", call(nvml, "nvmlSystemGetNVMLVersion"))
    try:
        count = int(nvml.nvmlDeviceGetCount())
    except Exception as exc:  # noqa: BLE001
        print("nvmlDeviceGetCount: ERROR", exc)
        return
    print("devices:", count)
    for index in range(count):
        handle = nvml.nvmlDeviceGetHandleByIndex(index)
        print(f"-- device {index}")
        for name, args in (
            ("nvmlDeviceGetName", ()),
            ("nvmlDeviceGetUUID", ()),
            ("nvmlDeviceGetMemoryInfo", ()),
            ("nvmlDeviceGetUtilizationRates", ()),
            ("nvmlDeviceGetTemperature", (getattr(nvml, "NVML_TEMPERATURE_GPU", 0),)),
            ("nvmlDeviceGetPowerUsage", ()),
            ("nvmlDeviceGetEnforcedPowerLimit", ()),
            *((name, ()) for name in COMPUTE_CALLS + GRAPHICS_CALLS),
            ("nvmlDeviceGetProcessUtilization", (0,)),
        ):
            print(f"   {name}: {call(nvml, name, handle, *args)}")


def interpreted(as_json: bool) -> bool:
    """Part 2: what the dashboard reads. True when a GPU was found."""
    reader = GpuReader(NvmlSession(), timeout=10.0)
    reader.read()
    time.sleep(1.0)  # a second tick, so utilisation samples cover an interval
    reading = reader.read()
    if as_json:
        print(json.dumps(dataclasses.asdict(reading), indent=2, default=str))
        return reading.available
    print("== What the dashboard reads ==")
    if not reading.available:
        print(reading.message)
        return False
    print(f"driver {reading.driver_version}; stale={reading.stale}")
    for device in reading.devices:
        label = "unified memory (system pool)" if device.unified_memory else "device memory"
        print(
            f"GPU {device.index}: {device.name}  util {device.utilization} %  "
            f"{label} {format_bytes(device.memory_used_bytes)} / {format_bytes(device.memory_total_bytes)}  "
            f"{device.temperature_c} °C  {device.power_watts} W (limit {device.power_limit_watts} W)"
        )
    print(f"{len(reading.processes)} GPU process(es):")
    for process in reading.processes:
        try:
            host = psutil.Process(process.pid)
            who = f"{host.name()} (user {host.username()})"
        except (psutil.Error, OSError):
            who = "not visible on this host (another container or namespace?)"
        print(
            f"  pid {process.pid} on GPU {process.device_index} [{process.kind}]: "
            f"memory {format_bytes(process.used_memory_bytes)}, util {process.utilization} %  - {who}"
        )
    return True


def main() -> int:
    """Run both parts."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="only part 2, as JSON")
    args = parser.parse_args()
    nvml = import_pynvml()
    if not args.json:
        if nvml is None:
            print("pynvml is not importable")
        else:
            raw(nvml)
            print()
    return 0 if interpreted(args.json) else 1


if __name__ == "__main__":
    sys.exit(main())
