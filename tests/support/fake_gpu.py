"""Scenario files for the fake NVML under a running app (test hook ``DGX_SPARK_FAKE_NVML``).

The app re-reads the file when it changes and starts NVML over (see
``dgx_spark.collector.gpu.FakeScenarioSession``), so a test can give the shared
full dashboard a GPU and take it away again.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

GIB = 1 << 30

# What this CI machine has: pynvml installed, no driver (nvmlInit fails).
NO_GPU: dict[str, Any] = {"init_error": "LIBRARY_NOT_FOUND"}


def write_scenario(path: Path, scenario: dict[str, Any]) -> None:
    """Replace the scenario file atomically (a reader never sees half a file)."""
    temp = path.with_suffix(".tmp")
    temp.write_text(json.dumps(scenario))
    temp.replace(path)


def gb10(holders: dict[int, int], *, utilization: int = 0) -> dict[str, Any]:
    """One DGX Spark-like GPU: unified memory (NotSupported), ``holders`` = pid -> bytes held, idle."""
    device = {
        "name": "NVIDIA GB10",
        "uuid": "GPU-fake-gb10",
        "memory": None,  # NotSupported: CPU and GPU share the system memory pool
        "utilization": utilization,
        "temperature": 41,
        "power_mw": 11_000,
        "compute": [{"pid": pid, "used_memory": held} for pid, held in holders.items()],
        "samples": [],  # no process used the GPU since the last tick: 0 %
    }
    return {"driver_version": "580.95.05", "devices": [device]}
