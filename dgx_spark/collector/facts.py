"""What the system probe read in one tick, typed: ``SystemFacts`` and its ``Warning``s.

Plain, immutable data (frozen dataclasses): numbers, names and flags, never text for
people. ``to_api()`` gives ``GET /api/dgx/system``'s JSON (a contract: its keys stay);
the few keys that hold a sentence there (a warning's ``message``, a hot sensor's
``text``) are built by ``to_api()`` from the facts, with ``dgx_spark.format``.
The header (``state/system.py``) reads the attributes and words them itself.

Unknown is None, never 0: a figure that could not be read is None (a whole part,
such as ``cpu`` before the first tick, may be None too).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from typing import Any

import psutil

from dgx_spark.collector.gpu import NO_GPU_MESSAGE, GpuDevice
from dgx_spark.format import format_bytes, format_percent

# Sparkline length: the last few minutes.
HISTORY_SECONDS = 300.0


def _float(value: Any) -> float | None:
    return None if value is None else float(value)


def _int(value: Any) -> int | None:
    return None if value is None else int(value)


# --------------------------------------------------------------------------- machine parts
@dataclasses.dataclass(frozen=True, slots=True)
class CpuFacts:
    """Whole-machine CPU use (percent, 0-100) and per core."""

    percent: float | None
    count: int | None
    per_core_percent: tuple[float | None, ...] | None

    def to_api(self) -> dict[str, Any]:
        """``cpu`` of the API."""
        per_core = None if self.per_core_percent is None else list(self.per_core_percent)
        return {"percent": self.percent, "count": self.count, "per_core_percent": per_core}


@dataclasses.dataclass(frozen=True, slots=True)
class MemoryFacts:
    """The RAM pool (on unified memory, the GPU's too)."""

    total_bytes: int | None = None
    used_bytes: int | None = None
    available_bytes: int | None = None
    percent: float | None = None

    def to_api(self) -> dict[str, Any]:
        """``memory`` of the API."""
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True, slots=True)
class NetworkFacts:
    """Throughput of the physical interfaces (None on the first tick or after a counter reset)."""

    rx_bytes_per_second: float | None = None
    tx_bytes_per_second: float | None = None
    rx_bytes: int | None = None
    tx_bytes: int | None = None
    interfaces: tuple[str, ...] = ()

    @classmethod
    def from_host(cls, reading: Mapping[str, Any]) -> NetworkFacts:
        """From ``host.NetworkMeter``'s reading."""
        return cls(
            rx_bytes_per_second=_float(reading.get("rx_bytes_per_second")),
            tx_bytes_per_second=_float(reading.get("tx_bytes_per_second")),
            rx_bytes=_int(reading.get("rx_bytes")),
            tx_bytes=_int(reading.get("tx_bytes")),
            interfaces=tuple(str(name) for name in reading.get("interfaces") or ()),
        )

    def to_api(self) -> dict[str, Any]:
        """``network`` of the API."""
        return {
            "rx_bytes_per_second": self.rx_bytes_per_second,
            "tx_bytes_per_second": self.tx_bytes_per_second,
            "rx_bytes": self.rx_bytes,
            "tx_bytes": self.tx_bytes,
            "interfaces": list(self.interfaces),
        }


@dataclasses.dataclass(frozen=True, slots=True)
class TemperatureReading:
    """The hottest reading of one sensor; ``level`` is ``ok``, ``warning`` or ``critical``."""

    sensor: str
    label: str
    current_c: float
    high_c: float | None = None
    critical_c: float | None = None
    level: str = "ok"

    @classmethod
    def from_host(cls, reading: Mapping[str, Any]) -> TemperatureReading:
        """From one ``host.read_temperatures`` entry."""
        return cls(
            sensor=str(reading.get("sensor") or ""),
            label=str(reading.get("label") or ""),
            current_c=float(reading.get("current_c") or 0.0),
            high_c=_float(reading.get("high_c")),
            critical_c=_float(reading.get("critical_c")),
            level=str(reading.get("level") or "ok"),
        )

    def to_api(self) -> dict[str, Any]:
        """One entry of ``temperatures``."""
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True, slots=True)
class Filesystem:
    """Free space of one filesystem the data folder, home or a model cache is on."""

    mount: str
    labels: tuple[str, ...] = ()
    paths: tuple[str, ...] = ()
    total_bytes: int | None = None
    used_bytes: int | None = None
    free_bytes: int | None = None
    percent: float | None = None
    warning: bool = False  # nearly full

    @classmethod
    def from_host(cls, disk: Mapping[str, Any]) -> Filesystem:
        """From one ``host.read_filesystems`` entry."""
        return cls(
            mount=str(disk.get("mount") or ""),
            labels=tuple(str(label) for label in disk.get("labels") or ()),
            paths=tuple(str(path) for path in disk.get("paths") or ()),
            total_bytes=_int(disk.get("total_bytes")),
            used_bytes=_int(disk.get("used_bytes")),
            free_bytes=_int(disk.get("free_bytes")),
            percent=_float(disk.get("percent")),
            warning=bool(disk.get("warning")),
        )

    def to_api(self) -> dict[str, Any]:
        """One entry of ``disks``."""
        return {
            "mount": self.mount,
            "labels": list(self.labels),
            "paths": list(self.paths),
            "total_bytes": self.total_bytes,
            "used_bytes": self.used_bytes,
            "free_bytes": self.free_bytes,
            "percent": self.percent,
            "warning": self.warning,
        }


@dataclasses.dataclass(frozen=True, slots=True)
class CachedModel:
    """One model in a model cache."""

    name: str
    size_bytes: int | None


@dataclasses.dataclass(frozen=True, slots=True)
class ModelCache:
    """One model cache's size and biggest models; ``size_bytes`` is None when missing or unreadable."""

    key: str
    label: str
    path: str
    exists: bool = False
    size_bytes: int | None = None
    largest: tuple[CachedModel, ...] = ()
    partial: bool = False  # the walk stopped early: the size is a lower bound
    error: str | None = None
    scanned_at: float | None = None

    @classmethod
    def from_host(cls, cache: Mapping[str, Any]) -> ModelCache:
        """From one ``host.size_cache`` result."""
        return cls(
            key=str(cache.get("key") or ""),
            label=str(cache.get("label") or ""),
            path=str(cache.get("path") or ""),
            exists=bool(cache.get("exists")),
            size_bytes=_int(cache.get("size_bytes")),
            largest=tuple(
                CachedModel(name=str(model.get("name") or ""), size_bytes=_int(model.get("size_bytes")))
                for model in cache.get("largest") or ()
            ),
            partial=bool(cache.get("partial")),
            error=None if cache.get("error") is None else str(cache.get("error")),
            scanned_at=_float(cache.get("scanned_at")),
        )

    def to_api(self) -> dict[str, Any]:
        """One entry of ``model_caches``."""
        return dataclasses.asdict(self) | {"largest": [dataclasses.asdict(model) for model in self.largest]}


@dataclasses.dataclass(frozen=True, slots=True)
class GpuFacts:
    """The GPUs as NVML last reported them; ``message`` says why there are none."""

    available: bool = False
    message: str | None = NO_GPU_MESSAGE
    stale: bool = False  # NVML missed its deadline: the last good reading, kept
    stale_seconds: float | None = None
    read_at: float | None = None
    driver_version: str | None = None
    unified_memory: bool = False
    devices: tuple[GpuDevice, ...] = ()
    process_count: int = 0

    def to_api(self) -> dict[str, Any]:
        """``gpu`` of the API."""
        return {
            "available": self.available,
            "message": self.message,
            "stale": self.stale,
            "stale_seconds": self.stale_seconds,
            "read_at": self.read_at,
            "driver_version": self.driver_version,
            "unified_memory": self.unified_memory,
            "devices": [device.to_api() for device in self.devices],
            "process_count": self.process_count,
        }


@dataclasses.dataclass(frozen=True, slots=True)
class HistoryFacts:
    """Sparkline series, oldest first; the GPU series are one per device."""

    seconds: float = HISTORY_SECONDS
    at: tuple[float, ...] = ()
    cpu_percent: tuple[float | None, ...] = ()
    memory_used_bytes: tuple[int | None, ...] = ()
    gpu_utilization: tuple[tuple[float | None, ...], ...] = ()
    gpu_memory_used_bytes: tuple[tuple[int | None, ...], ...] = ()
    network_rx_bytes_per_second: tuple[float | None, ...] = ()
    network_tx_bytes_per_second: tuple[float | None, ...] = ()
    temperature_max_c: tuple[float | None, ...] = ()

    def to_api(self) -> dict[str, Any]:
        """``history`` of the API."""
        return {
            "seconds": self.seconds,
            "at": list(self.at),
            "cpu_percent": list(self.cpu_percent),
            "memory_used_bytes": list(self.memory_used_bytes),
            "gpu_utilization": [list(series) for series in self.gpu_utilization],
            "gpu_memory_used_bytes": [list(series) for series in self.gpu_memory_used_bytes],
            "network_rx_bytes_per_second": list(self.network_rx_bytes_per_second),
            "network_tx_bytes_per_second": list(self.network_tx_bytes_per_second),
            "temperature_max_c": list(self.temperature_max_c),
        }


@dataclasses.dataclass(frozen=True, slots=True)
class ContainersFacts:
    """Whether this dashboard can see the container engine, and why not."""

    visible: bool = False
    engine: str | None = None
    reason: str | None = "not checked yet"

    def to_api(self) -> dict[str, Any]:
        """``containers`` of the API."""
        return {"visible": self.visible, "engine": self.engine, "reason": self.reason}


# --------------------------------------------------------------------------- warnings
@dataclasses.dataclass(frozen=True, slots=True)
class Holder:
    """An operation named in a warning; ``held_bytes`` is what it holds of the pool (None: not counted)."""

    id: str
    name: str
    memory_bytes: int | None
    gpu_memory_bytes: int | None
    held_bytes: int | None = None

    def to_api(self) -> dict[str, Any]:
        """The operation's entry in ``top_holders`` or ``operations``."""
        out: dict[str, Any] = {
            "id": self.id,
            "name": self.name,
            "memory_bytes": self.memory_bytes,
            "gpu_memory_bytes": self.gpu_memory_bytes,
        }
        if self.held_bytes is not None:
            out["held_bytes"] = self.held_bytes
        return out


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Warning:  # the product's word (shadows the builtin, which the collector never raises)
    """A resource warning: its ``kind`` and facts; ``message`` words them for the API's ``message`` key."""

    kind: str

    @property
    def level(self) -> str | None:
        """``warning`` or ``critical``; None for the kinds the API gives no level (shown as critical)."""
        return None

    @property
    def message(self) -> str:
        """The warning in one sentence (the API's ``message``)."""
        return self.kind

    def details(self) -> dict[str, Any]:
        """The kind's own API keys, after ``kind``, ``level`` and ``message``."""
        return {}

    def to_api(self) -> dict[str, Any]:
        """One entry of ``warnings``."""
        out: dict[str, Any] = {"kind": self.kind}
        if self.level is not None:
            out["level"] = self.level
        out["message"] = self.message
        out.update(self.details())
        return out


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class PressureWarning(Warning):
    """Little memory left in a pool (``memory_pressure``: RAM/unified; ``gpu_memory_pressure``: one GPU)."""

    pool: str  # "RAM", "unified memory", "GPU 1 memory"
    available_bytes: int
    total_bytes: int
    threshold_bytes: int
    top_holders: tuple[Holder, ...] = ()

    @property
    def message(self) -> str:
        """``Low RAM: 2.0 GiB left of 128.0 GiB (2 % free). Largest: llm (70.0 GiB)``."""
        free = 100.0 * self.available_bytes / self.total_bytes if self.total_bytes else None
        text = (
            f"Low {self.pool}: {format_bytes(self.available_bytes)} left of {format_bytes(self.total_bytes)}"
            f" ({format_percent(free)} free)"
        )
        if self.top_holders:
            text += ". Largest: " + ", ".join(f"{h.name} ({format_bytes(h.held_bytes)})" for h in self.top_holders)
        return text

    def details(self) -> dict[str, Any]:
        """The pool, its figures and its largest holders."""
        return {
            "pool": self.pool,
            "available_bytes": self.available_bytes,
            "total_bytes": self.total_bytes,
            "threshold_bytes": self.threshold_bytes,
            "top_holders": [holder.to_api() for holder in self.top_holders],
        }


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class IdleGpuWarning(Warning):
    """Operations holding GPU memory while idle (``idle_gpu``); the message names the first few."""

    kind: str = "idle_gpu"
    operations: tuple[Holder, ...] = ()
    named: int = 3

    @property
    def message(self) -> str:
        """``Holding GPU memory while idle: a, b``."""
        return "Holding GPU memory while idle: " + ", ".join(op.name for op in self.operations[: self.named])

    def details(self) -> dict[str, Any]:
        """Every idle holder."""
        return {"operations": [op.to_api() for op in self.operations]}


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class DiskWarning(Warning):
    """A nearly full filesystem (``disk_full``)."""

    kind: str = "disk_full"
    filesystem: Filesystem

    @property
    def level(self) -> str | None:
        """Always ``warning``."""
        return "warning"

    @property
    def message(self) -> str:
        """``Disk nearly full: / (data, home) is 95 % used, 1.0 GiB free of 20.0 GiB``."""
        disk = self.filesystem
        where = disk.mount + (f" ({', '.join(disk.labels)})" if disk.labels else "")
        return (
            f"Disk nearly full: {where} is {format_percent(disk.percent)} used,"
            f" {format_bytes(disk.free_bytes)} free of {format_bytes(disk.total_bytes)}"
        )

    def details(self) -> dict[str, Any]:
        """The filesystem's figures."""
        disk = self.filesystem
        return {
            "mount": disk.mount,
            "labels": list(disk.labels),
            "percent": disk.percent,
            "free_bytes": disk.free_bytes,
            "total_bytes": disk.total_bytes,
        }


@dataclasses.dataclass(frozen=True, slots=True)
class HotSensor:
    """A sensor or GPU at ``warning`` or ``critical`` level."""

    name: str
    current_c: float
    level: str
    high_c: float | None = None
    critical_c: float | None = None

    @property
    def text(self) -> str:
        """``nvme Composite 88 °C (high 84 °C, critical 89 °C)``."""
        limits = ", ".join(
            f"{word} {value:.0f} °C" for word, value in (("high", self.high_c), ("critical", self.critical_c)) if value
        )
        return f"{self.name} {self.current_c:.0f} °C" + (f" ({limits})" if limits else "")

    def to_api(self) -> dict[str, Any]:
        """One entry of the warning's ``sensors``."""
        return {
            "name": self.name,
            "current_c": self.current_c,
            "level": self.level,
            "high_c": self.high_c,
            "critical_c": self.critical_c,
            "text": self.text,
        }


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class TemperatureWarning(Warning):
    """Sensors and GPUs running hot (``temperature``), hottest first; its level is the worst of theirs."""

    kind: str = "temperature"
    sensors: tuple[HotSensor, ...] = ()

    @property
    def level(self) -> str | None:
        """``critical`` when any sensor is, else ``warning``."""
        return "critical" if any(sensor.level == "critical" for sensor in self.sensors) else "warning"

    @property
    def message(self) -> str:
        """``Too hot: GPU 0 92 °C; ...`` (critical) or ``Running hot: ...``."""
        lead = "Too hot: " if self.level == "critical" else "Running hot: "
        return lead + "; ".join(sensor.text for sensor in self.sensors)

    def details(self) -> dict[str, Any]:
        """Every hot sensor."""
        return {"sensors": [sensor.to_api() for sensor in self.sensors]}


# --------------------------------------------------------------------------- the whole
@dataclasses.dataclass(frozen=True, slots=True)
class SystemFacts:
    """Everything the system probe (and the containers probe) read in one tick; a part not read is None."""

    cpu: CpuFacts | None = None
    memory: MemoryFacts | None = None
    gpu: GpuFacts | None = None
    network: NetworkFacts | None = None
    temperatures: tuple[TemperatureReading, ...] | None = None  # None: unreadable; (): none exposed
    disks: tuple[Filesystem, ...] | None = None  # None: not read yet
    model_caches: tuple[ModelCache, ...] | None = None
    model_caches_read_at: float | None = None
    warnings: tuple[Warning, ...] = ()
    containers: ContainersFacts | None = None
    history: HistoryFacts | None = None

    def to_api(self, taken_at: float, sequence: int) -> dict[str, Any]:
        """``GET /api/dgx/system``'s data (the keys are a contract)."""
        return {
            "sequence": sequence,
            "taken_at": taken_at or None,
            "cpu": (self.cpu or CpuFacts(None, psutil.cpu_count(logical=True), None)).to_api(),
            "memory": (self.memory or MemoryFacts()).to_api(),
            "gpu": (self.gpu or GpuFacts()).to_api(),
            "network": (self.network or NetworkFacts()).to_api(),
            "temperatures": _listed(self.temperatures),
            "disks": _listed(self.disks),
            "model_caches": _listed(self.model_caches),
            "model_caches_read_at": self.model_caches_read_at,
            "warnings": [warning.to_api() for warning in self.warnings],
            "containers": (self.containers or ContainersFacts()).to_api(),
            "history": (self.history or HistoryFacts()).to_api(),
        }


def _listed(items: Iterable[TemperatureReading | Filesystem | ModelCache] | None) -> list[dict[str, Any]] | None:
    return None if items is None else [item.to_api() for item in items]


EMPTY_FACTS = SystemFacts()


def system_payload(system: SystemFacts | None, taken_at: float, sequence: int) -> dict[str, Any]:
    """``GET /api/dgx/system``'s data for a snapshot's ``system`` (None before the first tick)."""
    return (system or EMPTY_FACTS).to_api(taken_at, sequence)
