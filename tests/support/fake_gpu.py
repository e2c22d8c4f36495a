"""The fake NVML under a running app: scenario files and the session that follows them.

A test starts the dashboard with ``DGX_SPARK_FAKE_NVML=<scenario.json>``;
``tests/support/dashboard.py`` then puts ``tests/nvml_shim`` first on ``PYTHONPATH``,
whose ``sitecustomize`` gives the app the fake ``pynvml`` and makes its default NVML
session a :class:`FakeScenarioSession`, so a test can give a running dashboard a GPU and
take it away again. All of it is test code; the app knows nothing of it.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from dgx_spark.collector.gpu import GpuReading, NvmlSession

logger = logging.getLogger(__name__)

GIB = 1 << 30

# What this CI machine has: pynvml installed, no driver (nvmlInit fails).
NO_GPU: dict[str, Any] = {"init_error": "LIBRARY_NOT_FOUND"}
# The test hook's variable: the scenario file of a dashboard a test starts.
FAKE_NVML_ENV = "DGX_SPARK_FAKE_NVML"
# The folder whose sitecustomize puts the fake into such a dashboard.
SHIM_DIR = Path(__file__).resolve().parents[1] / "nvml_shim"


class FakeScenarioSession(NvmlSession):
    """An NVML session that starts over when the fake's scenario file changes.

    A real driver does not come and go, so :class:`NvmlSession` initialises once
    and keeps a failure for good. Under the fake a test rewrites the scenario
    file (e.g. "no GPU" -> a GB10 -> "no GPU"); this session then shuts the old
    fake down and initialises again, as a fresh app would.
    """

    def __init__(self, scenario: Path, **kwargs: Any) -> None:
        """Follow the scenario file at ``scenario``; ``kwargs`` go to ``NvmlSession``."""
        super().__init__(**kwargs)
        self._kwargs = kwargs
        self._scenario_path = scenario
        self._stamp = self._scenario_stamp()

    def _scenario_stamp(self) -> bytes | None:
        """The scenario file's content (a few hundred bytes; None while it is missing)."""
        try:
            return self._scenario_path.read_bytes()
        except OSError:
            return None

    @property
    def failure(self) -> str | None:
        """As ``NvmlSession.failure``, but None once the scenario changed (the next read retries)."""
        if self._scenario_stamp() != self._stamp:
            return None
        return super().failure

    def read(self, now: float | None = None) -> GpuReading:
        """Start over if the scenario file changed, then read as ``NvmlSession`` does."""
        stamp = self._scenario_stamp()
        if stamp != self._stamp:
            self.shutdown()
            # Every cached field (handles, failure, sample times) back to a fresh session's.
            NvmlSession.__init__(self, **self._kwargs)
            self._stamp = stamp
            logger.info("fake NVML scenario changed: NVML starts over")
        return super().read(now)


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
