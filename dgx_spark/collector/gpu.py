"""The NVML layer: what the NVIDIA driver says about GPUs and the processes on them.

Plain Python, optional at every step: without ``pynvml`` or without a driver
the reading says "not available" and everything else carries on. Every field
is read on its own, so one ``NotSupported`` never spoils the rest.

Unified memory (GB10 / DGX Spark and similar): the GPU has no memory of its
own, ``nvmlDeviceGetMemoryInfo`` raises NotSupported, and the device's memory
is the system pool. We then report the pool (from psutil) and mark the device
``unified_memory``; per-process GPU memory still comes from the process lists.

All NVML calls of a tick run in one worker thread under a deadline
(:class:`GpuReader`), so a hung driver never stalls the sampler.

The NVML module is a constructor argument of :class:`NvmlSession` (``nvml=`` or a
``loader``); without one it is ``import pynvml``. NVML is initialised once and a
failed start is final: a driver does not come and go while the app runs.
"""

from __future__ import annotations

import dataclasses
import importlib
import logging
import threading
import time
from collections.abc import Callable, Iterable
from types import ModuleType
from typing import Any

import psutil

logger = logging.getLogger(__name__)

NO_GPU_MESSAGE = "No NVIDIA GPU detected"

# NVML return codes (stable across NVML versions).
_SUCCESS = 0
_NOT_SUPPORTED = 3
_NOT_FOUND = 6
_FUNCTION_NOT_FOUND = 13
# usedGpuMemory sentinel when NVML cannot tell (unsigned long long -1).
_VALUE_NOT_AVAILABLE = (1 << 64) - 1

# Process-list calls, newest first: a missing function (old pynvml) or a missing
# symbol (old driver) falls back to the next.
COMPUTE_CALLS: tuple[str, ...] = (
    "nvmlDeviceGetComputeRunningProcesses_v3",
    "nvmlDeviceGetComputeRunningProcesses_v2",
    "nvmlDeviceGetComputeRunningProcesses",
)
GRAPHICS_CALLS: tuple[str, ...] = (
    "nvmlDeviceGetGraphicsRunningProcesses_v3",
    "nvmlDeviceGetGraphicsRunningProcesses_v2",
    "nvmlDeviceGetGraphicsRunningProcesses",
)


@dataclasses.dataclass(frozen=True, slots=True)
class GpuDevice:
    """One GPU as NVML reports it; unreadable fields are None."""

    index: int
    name: str | None = None
    uuid: str | None = None
    utilization: float | None = None
    memory_used_bytes: int | None = None
    memory_total_bytes: int | None = None
    unified_memory: bool = False
    temperature_c: float | None = None
    power_watts: float | None = None
    power_limit_watts: float | None = None

    def to_api(self) -> dict[str, Any]:
        """JSON shape for the API and the UI."""
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True, slots=True)
class GpuProcess:
    """One process on one GPU.

    ``used_memory_bytes`` is None when NVML cannot tell; ``utilization`` is the
    SM utilisation over the samples since the last tick, None when the device
    gives no per-process samples.
    """

    pid: int
    device_index: int
    kind: str  # "compute" or "graphics"
    used_memory_bytes: int | None = None
    utilization: float | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class GpuReading:
    """What NVML said in one tick."""

    available: bool
    taken_at: float
    devices: tuple[GpuDevice, ...] = ()
    processes: tuple[GpuProcess, ...] = ()
    driver_version: str | None = None
    message: str | None = None
    stale: bool = False

    @property
    def unified_memory(self) -> bool:
        """Whether any device shares the system memory pool."""
        return any(device.unified_memory for device in self.devices)


def unavailable(message: str = NO_GPU_MESSAGE, now: float | None = None) -> GpuReading:
    """A reading for a machine where NVML cannot be used."""
    return GpuReading(available=False, taken_at=time.time() if now is None else now, message=message)


def _error_code(exc: BaseException) -> int | None:
    value = getattr(exc, "value", None)
    return value if isinstance(value, int) else None


def _is_nvml_error(nvml: ModuleType, exc: BaseException) -> bool:
    error_class = getattr(nvml, "NVMLError", None)
    return isinstance(error_class, type) and isinstance(exc, error_class)


def _text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    return str(value)


def import_pynvml() -> ModuleType | None:
    """The NVML binding ``pynvml``, or None when it cannot be imported."""
    try:
        return importlib.import_module("pynvml")
    except Exception as exc:  # noqa: BLE001 - any import problem means "no NVML"
        logger.info("pynvml not importable: %s", exc)
        return None


class NvmlSession:
    """NVML initialised once, device handles cached; ``read`` gives one reading.

    Not thread-safe: one caller at a time (``GpuReader`` guarantees that).
    """

    def __init__(
        self,
        nvml: ModuleType | None = None,
        *,
        loader: Callable[[], ModuleType | None] = import_pynvml,
        system_memory: Callable[[], Any] = psutil.virtual_memory,
    ) -> None:
        """Use ``nvml`` (a pynvml-like module) or, when None, whatever ``loader`` gives."""
        self._nvml = nvml
        self._loader = loader
        self._system_memory = system_memory
        self._initialised = False
        self._failure: str | None = None
        self._handles: list[tuple[int, Any]] = []
        self._driver_version: str | None = None
        # Per device: the newest per-process sample time seen (NVML's microseconds).
        self._last_sample: dict[int, int] = {}
        # Process-list calls known to be missing, per call name.
        self._missing_calls: set[str] = set()

    @property
    def failure(self) -> str | None:
        """Why NVML is unusable, once that is known."""
        return self._failure

    def _init(self) -> bool:
        if self._initialised:
            return True
        if self._failure is not None:
            return False
        nvml = self._nvml if self._nvml is not None else self._loader()
        if nvml is None:
            self._failure = NO_GPU_MESSAGE
            return False
        try:
            nvml.nvmlInit()
            count = int(nvml.nvmlDeviceGetCount())
            handles = [(index, nvml.nvmlDeviceGetHandleByIndex(index)) for index in range(count)]
        except Exception as exc:  # noqa: BLE001 - no driver, no device, broken library
            logger.info("NVML unavailable: %s: %s", type(exc).__name__, exc)
            self._failure = NO_GPU_MESSAGE
            return False
        if not handles:
            self._failure = NO_GPU_MESSAGE
            return False
        self._nvml = nvml
        self._handles = handles
        self._driver_version = _text(self._field(nvml.nvmlSystemGetDriverVersion))
        self._initialised = True
        logger.info("NVML initialised: %d device(s), driver %s", len(handles), self._driver_version)
        return True

    def _field(self, call: Callable[..., Any], *args: Any) -> Any:
        """Call one NVML function; any NVML error (NotSupported, ...) gives None."""
        try:
            return call(*args)
        except Exception as exc:  # noqa: BLE001
            if self._nvml is not None and not _is_nvml_error(self._nvml, exc):
                logger.debug("NVML %s raised %r", getattr(call, "__name__", call), exc)
            return None

    def read(self, now: float | None = None) -> GpuReading:
        """Read every device and the processes on them."""
        now = time.time() if now is None else now
        if not self._init():
            return unavailable(self._failure or NO_GPU_MESSAGE, now)
        devices: list[GpuDevice] = []
        processes: list[GpuProcess] = []
        for index, handle in self._handles:
            device = self._read_device(index, handle)
            devices.append(device)
            processes.extend(self._read_processes(index, handle))
        return GpuReading(
            available=True,
            taken_at=now,
            devices=tuple(devices),
            processes=tuple(processes),
            driver_version=self._driver_version,
        )

    def _read_device(self, index: int, handle: Any) -> GpuDevice:
        nvml = self._nvml
        assert nvml is not None
        name = _text(self._field(nvml.nvmlDeviceGetName, handle))
        uuid = _text(self._field(nvml.nvmlDeviceGetUUID, handle))
        rates = self._field(nvml.nvmlDeviceGetUtilizationRates, handle)
        utilization = float(rates.gpu) if rates is not None else None
        temperature = self._field(
            nvml.nvmlDeviceGetTemperature, handle, getattr(nvml, "NVML_TEMPERATURE_GPU", 0)
        )
        power = self._field(nvml.nvmlDeviceGetPowerUsage, handle)
        limit_call = getattr(nvml, "nvmlDeviceGetEnforcedPowerLimit", None)
        limit = self._field(limit_call, handle) if limit_call is not None else None
        used, total, unified = self._memory(handle)
        return GpuDevice(
            index=index,
            name=name,
            uuid=uuid,
            utilization=utilization,
            memory_used_bytes=used,
            memory_total_bytes=total,
            unified_memory=unified,
            temperature_c=float(temperature) if temperature is not None else None,
            power_watts=power / 1000.0 if power is not None else None,
            power_limit_watts=limit / 1000.0 if limit is not None else None,
        )

    def _memory(self, handle: Any) -> tuple[int | None, int | None, bool]:
        """(used, total, unified): device memory, or the system pool on unified memory."""
        nvml = self._nvml
        assert nvml is not None
        try:
            info = nvml.nvmlDeviceGetMemoryInfo(handle)
        except Exception as exc:  # noqa: BLE001
            if _error_code(exc) != _NOT_SUPPORTED:
                return None, None, False
            # GB10-like: one memory pool for CPU and GPU; "used" = what is not available.
            try:
                pool = self._system_memory()
                return int(pool.total - pool.available), int(pool.total), True
            except Exception:  # noqa: BLE001
                return None, None, True
        used = getattr(info, "used", None)
        total = getattr(info, "total", None)
        return (
            int(used) if used is not None else None,
            int(total) if total is not None else None,
            False,
        )

    def _process_list(self, handle: Any, calls: Iterable[str]) -> list[Any] | None:
        """The first process-list call that works; None when none does."""
        nvml = self._nvml
        assert nvml is not None
        for name in calls:
            if name in self._missing_calls:
                continue
            call = getattr(nvml, name, None)
            if call is None:
                self._missing_calls.add(name)
                continue
            try:
                return list(call(handle))
            except Exception as exc:  # noqa: BLE001
                if _error_code(exc) == _FUNCTION_NOT_FOUND:
                    self._missing_calls.add(name)  # the driver lacks this version
                    continue
                return None
        return None

    def _samples(self, index: int, handle: Any) -> dict[int, float] | None:
        """Mean SM utilisation per pid over the samples since the last tick; None if unsupported."""
        nvml = self._nvml
        assert nvml is not None
        call = getattr(nvml, "nvmlDeviceGetProcessUtilization", None)
        if call is None:
            return None
        since = self._last_sample.get(index, 0)
        try:
            samples = list(call(handle, since))
        except Exception as exc:  # noqa: BLE001
            # NOT_FOUND (or pynvml's NVMLError(SUCCESS) for an empty buffer): no process
            # used the GPU since ``since``; that is 0 %, not unknown.
            return {} if _error_code(exc) in (_NOT_FOUND, _SUCCESS) else None
        totals: dict[int, list[float]] = {}
        newest = since
        for sample in samples:
            stamp = int(getattr(sample, "timeStamp", 0) or 0)
            if stamp <= since:
                continue
            newest = max(newest, stamp)
            totals.setdefault(int(sample.pid), []).append(float(sample.smUtil))
        self._last_sample[index] = newest
        return {pid: sum(values) / len(values) for pid, values in totals.items()}

    def _read_processes(self, index: int, handle: Any) -> list[GpuProcess]:
        samples = self._samples(index, handle)
        found: dict[int, GpuProcess] = {}
        for kind, calls in (("compute", COMPUTE_CALLS), ("graphics", GRAPHICS_CALLS)):
            for info in self._process_list(handle, calls) or ():
                pid = int(getattr(info, "pid", 0) or 0)
                if pid <= 0:
                    continue
                memory = getattr(info, "usedGpuMemory", None)
                if memory is not None and (memory < 0 or memory >= _VALUE_NOT_AVAILABLE):
                    memory = None
                utilization = None if samples is None else samples.get(pid, 0.0)
                previous = found.get(pid)
                if previous is not None:
                    # A process can be both compute and graphics: count its memory once.
                    if previous.used_memory_bytes is None and memory is not None:
                        found[pid] = dataclasses.replace(previous, used_memory_bytes=int(memory))
                    continue
                found[pid] = GpuProcess(
                    pid=pid,
                    device_index=index,
                    kind=kind,
                    used_memory_bytes=int(memory) if memory is not None else None,
                    utilization=utilization,
                )
        return list(found.values())

    def shutdown(self) -> None:
        """Release NVML (best effort)."""
        if self._initialised and self._nvml is not None:
            self._field(self._nvml.nvmlShutdown)
        self._initialised = False


def default_session() -> NvmlSession:
    """The app's NVML session: the real ``pynvml``."""
    return NvmlSession()


class GpuReader:
    """Runs ``NvmlSession.read`` in a worker thread with a deadline.

    When a read misses the deadline, the last good reading comes back marked
    ``stale`` and no second read starts until the hung one returns, so threads
    never pile up behind a hung driver.
    """

    def __init__(self, session: NvmlSession | None = None, *, timeout: float = 2.0) -> None:
        """Wrap ``session`` (by default :func:`default_session`: real NVML)."""
        self.session = session if session is not None else default_session()
        self.timeout = timeout
        self._last: GpuReading | None = None
        self._worker: threading.Thread | None = None
        self._result: GpuReading | BaseException | None = None
        self._done = threading.Event()
        self._lock = threading.Lock()
        self._hung_since: float | None = None
        self._started = 0.0

    @property
    def hung_since(self) -> float | None:
        """When the read still in flight started, if one missed its deadline."""
        return self._hung_since

    def _work(self, now: float) -> None:
        try:
            result: GpuReading | BaseException = self.session.read(now)
        except BaseException as exc:  # noqa: BLE001 - handed to the caller
            result = exc
        with self._lock:
            self._result = result
        self._done.set()

    def read(self, now: float | None = None) -> GpuReading:
        """A fresh reading, or the last one marked stale when NVML is too slow."""
        now = time.time() if now is None else now
        if self.session.failure is not None:
            return unavailable(self.session.failure, now)  # known absent: no thread needed
        if self._worker is None or self._done.is_set():
            self._collect()  # a read that missed its deadline may have finished since
            self._done.clear()
            self._started = now
            self._worker = threading.Thread(
                target=self._work, args=(now,), name="dgx-spark-nvml", daemon=True
            )
            self._worker.start()
        if self._done.wait(self.timeout):
            self._worker = None
            self._hung_since = None
            reading = self._collect()
            return reading if reading is not None else self._stale(now, "NVML read failed")
        if self._hung_since is None:
            self._hung_since = self._started
            logger.warning("NVML did not answer within %.1fs; GPU data is stale", self.timeout)
        return self._stale(now, "NVML is not answering")

    def _collect(self) -> GpuReading | None:
        with self._lock:
            result, self._result = self._result, None
        if isinstance(result, GpuReading):
            self._last = result
            return result
        if result is not None:
            logger.warning("NVML read failed: %s: %s", type(result).__name__, result)
        return None

    def _stale(self, now: float, message: str) -> GpuReading:
        """The last good reading marked stale, or an unavailable one if there is none."""
        if self._last is not None:
            return dataclasses.replace(self._last, stale=True)
        return GpuReading(available=False, taken_at=now, message=message, stale=True)
