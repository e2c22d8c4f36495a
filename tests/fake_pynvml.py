"""A fake ``pynvml`` module: the ONE test double allowed, at the NVML boundary.

No GPU exists on the CI machine, so tests describe a GPU as a *scenario* (a
dict, or a JSON file) and get a fresh module that behaves like ``pynvml`` for
it. Nothing global is patched: pass the module to ``NvmlSession(nvml=...)``
(or a ``loader``), or, for the real app in a subprocess, start it with
``DGX_SPARK_FAKE_NVML=<scenario.json>``: ``tests/nvml_shim/sitecustomize.py`` then
makes ``import pynvml`` give this fake there (see ``tests/support/fake_gpu.py``).

Scenario keys (all optional)::

    init_error: "DRIVER_NOT_LOADED"      # nvmlInit raises this NVML error
    driver_version: "580.95.05"
    missing: ["nvmlDeviceGetComputeRunningProcesses_v3"]  # absent from the module
    function_not_found: ["..._v2"]       # present, but the driver lacks the symbol
    hang: ["nvmlDeviceGetUtilizationRates"]  # block until release(), un-listed, or hang_seconds
    hang_seconds: 60
    devices:
      - name: "NVIDIA GB10"
        uuid: "GPU-..."
        memory: null | {"total": int, "used": int, "free": int}   # null: NotSupported
        utilization: 37 | null          # null: NotSupported (so is any other null)
        temperature: 45
        power_mw: 31000
        power_limit_mw: 140000
        compute: [{"pid": 123, "used_memory": 1073741824 | null}]
        graphics: [...]
        samples: null | [{"pid": 123, "sm": 50, "ts": 1000}]  # no "ts": a new sample each call

A file scenario is re-read when the file changes, so a test can change the GPU
under a running app.
"""

from __future__ import annotations

import copy
import json
import string
import threading
import time
import types
from pathlib import Path
from typing import Any

NVML_SUCCESS = 0
NVML_ERROR_UNINITIALIZED = 1
NVML_ERROR_INVALID_ARGUMENT = 2
NVML_ERROR_NOT_SUPPORTED = 3
NVML_ERROR_NO_PERMISSION = 4
NVML_ERROR_NOT_FOUND = 6
NVML_ERROR_INSUFFICIENT_SIZE = 7
NVML_ERROR_DRIVER_NOT_LOADED = 9
NVML_ERROR_TIMEOUT = 10
NVML_ERROR_LIBRARY_NOT_FOUND = 12
NVML_ERROR_FUNCTION_NOT_FOUND = 13
NVML_ERROR_GPU_IS_LOST = 15
NVML_ERROR_UNKNOWN = 999
NVML_TEMPERATURE_GPU = 0

ERROR_CODES: dict[str, int] = {
    name.removeprefix("NVML_ERROR_"): value
    for name, value in dict(globals()).items()
    if name.startswith("NVML_ERROR_")
}

FUNCTIONS: tuple[str, ...] = (
    "nvmlInit",
    "nvmlShutdown",
    "nvmlSystemGetDriverVersion",
    "nvmlDeviceGetCount",
    "nvmlDeviceGetHandleByIndex",
    "nvmlDeviceGetName",
    "nvmlDeviceGetUUID",
    "nvmlDeviceGetMemoryInfo",
    "nvmlDeviceGetUtilizationRates",
    "nvmlDeviceGetTemperature",
    "nvmlDeviceGetPowerUsage",
    "nvmlDeviceGetEnforcedPowerLimit",
    "nvmlDeviceGetComputeRunningProcesses_v3",
    "nvmlDeviceGetComputeRunningProcesses_v2",
    "nvmlDeviceGetComputeRunningProcesses",
    "nvmlDeviceGetGraphicsRunningProcesses_v3",
    "nvmlDeviceGetGraphicsRunningProcesses_v2",
    "nvmlDeviceGetGraphicsRunningProcesses",
    "nvmlDeviceGetProcessUtilization",
)


class NVMLError(Exception):
    """Like pynvml's: ``NVMLError(code)`` carries ``.value``; subclasses per code."""

    def __init__(self, value: int) -> None:
        super().__init__(value)
        self.value = value

    def __str__(self) -> str:
        names = {code: name for name, code in ERROR_CODES.items()}
        return f"NVML error {names.get(self.value, self.value)}"


def _error_class_name(name: str) -> str:
    return "NVMLError_" + string.capwords(name, "_").replace("_", "")


# NVMLError_NotSupported, NVMLError_FunctionNotFound, ... as pynvml defines them.
ERROR_CLASSES: dict[int, type[NVMLError]] = {}
for _name, _code in ERROR_CODES.items():
    _cls = type(_error_class_name(_name), (NVMLError,), {})
    ERROR_CLASSES[_code] = _cls
    globals()[_cls.__name__] = _cls


def error(code: int) -> NVMLError:
    """The NVMLError subclass instance for ``code``."""
    return ERROR_CLASSES.get(code, NVMLError)(code)


class FakeNvml:
    """The behaviour behind one fake module; see the module docstring for scenarios."""

    def __init__(self, scenario: dict[str, Any] | None = None, path: Path | None = None) -> None:
        """Serve ``scenario``, or the JSON file at ``path`` (re-read when it changes)."""
        self._scenario = copy.deepcopy(scenario or {})
        self._path = path
        self._mtime: float | None = None
        self.released = threading.Event()
        self.calls: list[str] = []
        self.initialised = False

    # -- scenario --------------------------------------------------------------------
    def scenario(self) -> dict[str, Any]:
        """The current scenario (re-read from its file when that changed)."""
        if self._path is not None:
            try:
                mtime = self._path.stat().st_mtime_ns
                if mtime != self._mtime:
                    self._scenario = json.loads(self._path.read_text())
                    self._mtime = mtime
            except (OSError, ValueError):
                pass  # keep the last good scenario while a test rewrites the file
        return self._scenario

    def update(self, **changes: Any) -> None:
        """Change top-level scenario keys (in-process tests)."""
        self._scenario.update(copy.deepcopy(changes))

    def release(self) -> None:
        """Let every hung call return."""
        self.released.set()

    def _enter(self, name: str) -> dict[str, Any]:
        self.calls.append(name)
        scenario = self.scenario()
        if name in scenario.get("function_not_found", ()):
            raise error(NVML_ERROR_FUNCTION_NOT_FOUND)
        if name in scenario.get("hang", ()):
            # Block until released, until the scenario stops hanging it, or hang_seconds.
            deadline = time.monotonic() + float(scenario.get("hang_seconds", 60))
            while time.monotonic() < deadline and not self.released.wait(0.1):
                if name not in self.scenario().get("hang", ()):
                    break
        return scenario

    def _device(self, name: str, handle: Any) -> dict[str, Any]:
        scenario = self._enter(name)
        if not self.initialised:
            raise error(NVML_ERROR_UNINITIALIZED)
        devices = scenario.get("devices", [])
        if not isinstance(handle, int) or not 0 <= handle < len(devices):
            raise error(NVML_ERROR_INVALID_ARGUMENT)
        return devices[handle]

    def _value(self, name: str, handle: Any, key: str) -> Any:
        value = self._device(name, handle).get(key)
        if value is None:
            raise error(NVML_ERROR_NOT_SUPPORTED)
        return value

    # -- the pynvml surface --------------------------------------------------------
    def nvmlInit(self) -> None:
        scenario = self._enter("nvmlInit")
        if scenario.get("init_error"):
            raise error(ERROR_CODES.get(scenario["init_error"], NVML_ERROR_UNKNOWN))
        self.initialised = True

    def nvmlShutdown(self) -> None:
        self._enter("nvmlShutdown")
        self.initialised = False

    def nvmlSystemGetDriverVersion(self) -> str:
        version = self._enter("nvmlSystemGetDriverVersion").get("driver_version")
        if version is None:
            raise error(NVML_ERROR_NOT_SUPPORTED)
        return str(version)

    def nvmlDeviceGetCount(self) -> int:
        return len(self._enter("nvmlDeviceGetCount").get("devices", []))

    def nvmlDeviceGetHandleByIndex(self, index: int) -> int:
        self._device("nvmlDeviceGetHandleByIndex", index)
        return index

    def nvmlDeviceGetName(self, handle: int) -> str:
        return str(self._value("nvmlDeviceGetName", handle, "name"))

    def nvmlDeviceGetUUID(self, handle: int) -> str:
        return str(self._value("nvmlDeviceGetUUID", handle, "uuid"))

    def nvmlDeviceGetMemoryInfo(self, handle: int, version: Any = None) -> Any:
        memory = self._value("nvmlDeviceGetMemoryInfo", handle, "memory")
        return types.SimpleNamespace(
            total=memory["total"], used=memory["used"], free=memory.get("free", memory["total"] - memory["used"])
        )

    def nvmlDeviceGetUtilizationRates(self, handle: int) -> Any:
        gpu = self._value("nvmlDeviceGetUtilizationRates", handle, "utilization")
        return types.SimpleNamespace(gpu=gpu, memory=0)

    def nvmlDeviceGetTemperature(self, handle: int, sensor: int) -> int:
        return int(self._value("nvmlDeviceGetTemperature", handle, "temperature"))

    def nvmlDeviceGetPowerUsage(self, handle: int) -> int:
        return int(self._value("nvmlDeviceGetPowerUsage", handle, "power_mw"))

    def nvmlDeviceGetEnforcedPowerLimit(self, handle: int) -> int:
        return int(self._value("nvmlDeviceGetEnforcedPowerLimit", handle, "power_limit_mw"))

    def _processes(self, name: str, handle: int, key: str) -> list[Any]:
        entries = self._device(name, handle).get(key) or []
        return [
            types.SimpleNamespace(
                pid=int(entry["pid"]),
                usedGpuMemory=entry.get("used_memory"),
                gpuInstanceId=0xFFFFFFFF,
                computeInstanceId=0xFFFFFFFF,
            )
            for entry in entries
        ]

    def nvmlDeviceGetComputeRunningProcesses_v3(self, handle: int) -> list[Any]:
        return self._processes("nvmlDeviceGetComputeRunningProcesses_v3", handle, "compute")

    def nvmlDeviceGetComputeRunningProcesses_v2(self, handle: int) -> list[Any]:
        return self._processes("nvmlDeviceGetComputeRunningProcesses_v2", handle, "compute")

    def nvmlDeviceGetComputeRunningProcesses(self, handle: int) -> list[Any]:
        return self._processes("nvmlDeviceGetComputeRunningProcesses", handle, "compute")

    def nvmlDeviceGetGraphicsRunningProcesses_v3(self, handle: int) -> list[Any]:
        return self._processes("nvmlDeviceGetGraphicsRunningProcesses_v3", handle, "graphics")

    def nvmlDeviceGetGraphicsRunningProcesses_v2(self, handle: int) -> list[Any]:
        return self._processes("nvmlDeviceGetGraphicsRunningProcesses_v2", handle, "graphics")

    def nvmlDeviceGetGraphicsRunningProcesses(self, handle: int) -> list[Any]:
        return self._processes("nvmlDeviceGetGraphicsRunningProcesses", handle, "graphics")

    def nvmlDeviceGetProcessUtilization(self, handle: int, timeStamp: int) -> list[Any]:
        samples = self._device("nvmlDeviceGetProcessUtilization", handle).get("samples")
        if samples is None:
            raise error(NVML_ERROR_NOT_SUPPORTED)
        now_us = int(time.time() * 1_000_000)
        fresh = [
            types.SimpleNamespace(
                pid=int(sample["pid"]),
                timeStamp=int(sample.get("ts", now_us)),
                smUtil=int(sample.get("sm", 0)),
                memUtil=int(sample.get("mem", 0)),
                encUtil=0,
                decUtil=0,
            )
            for sample in samples
        ]
        fresh = [sample for sample in fresh if sample.timeStamp > timeStamp]
        if not fresh:
            raise error(NVML_ERROR_NOT_FOUND)  # what NVML says when nothing ran since timeStamp
        return fresh


def build(scenario: dict[str, Any] | None = None, *, path: Path | None = None) -> types.ModuleType:
    """A fresh fake ``pynvml`` module for a scenario (dict or JSON file)."""
    fake = FakeNvml(scenario, path)
    module = types.ModuleType("pynvml")
    module.fake = fake  # type: ignore[attr-defined] - the test's handle on the fake
    module.NVMLError = NVMLError  # type: ignore[attr-defined]
    for code, cls in ERROR_CLASSES.items():
        setattr(module, cls.__name__, cls)
        name = next(n for n, c in ERROR_CODES.items() if c == code)
        setattr(module, f"NVML_ERROR_{name}", code)
    module.NVML_SUCCESS = NVML_SUCCESS  # type: ignore[attr-defined]
    module.NVML_TEMPERATURE_GPU = NVML_TEMPERATURE_GPU  # type: ignore[attr-defined]
    missing = set(fake.scenario().get("missing", ()))
    for name in FUNCTIONS:
        if name not in missing:
            setattr(module, name, getattr(fake, name))
    return module


def from_file(path: str | Path) -> types.ModuleType:
    """A fake module serving the JSON scenario at ``path`` (the shim's ``pynvml``)."""
    return build(path=Path(path))
