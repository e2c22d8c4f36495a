"""The system probe: CPU, RAM, GPUs, network, disks and temperatures; GPU use per operation; warnings.

Plain Python. Each tick it fills ``ctx.system`` (the header and
``GET /api/dgx/system``) and sets ``gpu_memory_bytes``, ``gpu_utilization``,
``gpu_indices`` and ``idle_gpu`` on every live operation, summed over the
operation's folded process tree (``op.pids``). Per-operation ``cpu_percent`` and
``memory_bytes`` come from discovery; this probe only reads them (for the
memory-pressure warning). Its warnings (memory pressure, idle GPU holders, nearly
full disks, temperatures near their limits) are worked out here, once per snapshot.

It also reads per-core CPU, network throughput and temperatures each tick, and
copies the latest free space and model-cache sizes that ``host.DiskWatcher``
reads in its own thread (never on the refresh path).

Conventions: unknown is None, never 0. An operation with no process on any GPU
gets ``gpu_indices=()`` (known: none) and None for GPU memory and utilisation.
A GPU pid that matches no operation (another container's, a process we cannot
see) is counted in the device totals but attributed to nobody.
"""

from __future__ import annotations

import collections
import dataclasses
import threading
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import psutil

from dgx_spark.collector.gpu import NO_GPU_MESSAGE, GpuReader, GpuReading
from dgx_spark.collector.host import (
    DiskWatcher,
    NetworkMeter,
    PerCoreMeter,
    default_places,
    gpu_temperature_level,
    read_temperatures,
)
from dgx_spark.collector.model import Operation
from dgx_spark.collector.sampler import SampleContext
from dgx_spark.format import format_bytes, format_percent
from dgx_spark.settings import ResourceSettings

# Below this GPU utilisation (percent) a GPU holder counts as idle.
IDLE_UTILIZATION_PERCENT = 1.0
# How many operations a memory-pressure warning names.
TOP_HOLDERS = 3
# Sparkline length: the last few minutes.
HISTORY_SECONDS = 300.0
HISTORY_MAX_POINTS = 300


class CpuMeter:
    """Whole-machine CPU use between two calls (0-100), from its own ``cpu_times`` deltas.

    Unlike ``psutil.cpu_percent(interval=None)`` it shares no state with other
    callers in the process. The first call has no interval: None.
    """

    def __init__(self) -> None:
        """Start with no previous reading."""
        self._last: Any = None

    def __call__(self) -> float | None:
        """Percent busy since the previous call."""
        times = psutil.cpu_times()
        last, self._last = self._last, times
        if last is None:
            return None
        total = sum(times) - sum(last)
        idle = (times.idle + getattr(times, "iowait", 0.0)) - (last.idle + getattr(last, "iowait", 0.0))
        if total <= 0:
            return None
        return round(max(0.0, min(100.0, 100.0 * float(total - idle) / float(total))), 1)


@dataclasses.dataclass(frozen=True, slots=True)
class OperationGpu:
    """GPU use of one operation, summed over its processes."""

    memory_bytes: int | None
    utilization: float | None
    indices: tuple[int, ...]


def gpu_by_operation(
    operations: Iterable[Operation], reading: GpuReading
) -> dict[str, OperationGpu]:
    """GPU use per operation id, for operations with at least one process on a GPU.

    Memory sums the known per-process values (None when none is known);
    utilisation sums per-process samples (100 = one whole GPU; None when a
    device gives no per-process samples for one of the operation's processes).
    """
    by_pid: dict[int, list[Any]] = collections.defaultdict(list)
    for process in reading.processes:
        by_pid[process.pid].append(process)
    result: dict[str, OperationGpu] = {}
    for op in operations:
        if not op.is_live:
            continue
        found = [process for pid in set(op.pids) for process in by_pid.get(pid, ())]
        if not found:
            continue
        memories = [p.used_memory_bytes for p in found if p.used_memory_bytes is not None]
        utilizations = [p.utilization for p in found]
        result[op.id] = OperationGpu(
            memory_bytes=sum(memories) if memories else None,
            utilization=None if any(u is None for u in utilizations) else float(sum(utilizations)),
            indices=tuple(sorted({p.device_index for p in found})),
        )
    return result


class IdleTracker:
    """Remembers since when each operation holds GPU memory while idle."""

    def __init__(self) -> None:
        """Start with nothing idle."""
        self._since: dict[str, float] = {}

    def update(self, op_id: str, gpu: OperationGpu | None, now: float, limit: float) -> bool | None:
        """Whether ``op_id`` has held a GPU at ~0 % for longer than ``limit`` seconds.

        None when utilisation is unknown; False when it holds no GPU.
        """
        if gpu is None:
            self._since.pop(op_id, None)
            return False
        if gpu.utilization is None:
            self._since.pop(op_id, None)
            return None
        if gpu.utilization >= IDLE_UTILIZATION_PERCENT or gpu.memory_bytes == 0:
            self._since.pop(op_id, None)
            return False
        since = self._since.setdefault(op_id, now)
        return now - since >= limit

    def forget_except(self, op_ids: set[str]) -> None:
        """Drop operations that are gone."""
        for op_id in list(self._since):
            if op_id not in op_ids:
                del self._since[op_id]


@dataclasses.dataclass(frozen=True, slots=True)
class HistoryPoint:
    """One tick of the sparklines."""

    at: float
    cpu_percent: float | None
    memory_used_bytes: int | None
    gpu_utilization: tuple[float | None, ...]
    gpu_memory_used_bytes: tuple[int | None, ...]
    network_rx_bytes_per_second: float | None = None
    network_tx_bytes_per_second: float | None = None
    temperature_max_c: float | None = None


class SystemProbe:
    """Fills ``ctx.system`` and the GPU fields of operations; see the module docstring."""

    name = "system"

    def __init__(
        self,
        reader: GpuReader | None = None,
        *,
        settings: ResourceSettings | None = None,
        cpu_percent: Callable[[], float | None] | None = None,
        virtual_memory: Callable[[], Any] = psutil.virtual_memory,
        disks: DiskWatcher | None = None,
        temperatures: Callable[[], list[dict[str, Any]] | None] = read_temperatures,
    ) -> None:
        """Create the probe; by default it reads the real NVML under the configured deadline.

        ``disks`` reads free space and model-cache sizes in its own thread, started
        on the first sample (default: the data folder, home and the model caches).
        """
        if settings is None:
            from dgx_spark.settings import settings as app_settings

            settings = app_settings.resources
        self.settings = settings
        self.reader = reader or GpuReader(timeout=self.settings.nvml_timeout_seconds)
        self._cpu_percent = cpu_percent or CpuMeter()
        self._virtual_memory = virtual_memory
        self._per_core = PerCoreMeter()
        self._network = NetworkMeter()
        self._temperatures = temperatures
        if disks is None:
            from dgx_spark.settings import settings as app_settings

            disks = DiskWatcher(*default_places(app_settings.data_dir))
        self.disks = disks
        self._idle = IdleTracker()
        self._history: collections.deque[HistoryPoint] = collections.deque(maxlen=HISTORY_MAX_POINTS)
        self._lock = threading.Lock()

    def _cpu(self) -> float | None:
        try:
            value = self._cpu_percent()
        except Exception:  # noqa: BLE001 - unreadable is None
            return None
        return None if value is None else float(value)

    def _memory(self) -> dict[str, Any]:
        try:
            pool = self._virtual_memory()
        except Exception:  # noqa: BLE001
            return {"total_bytes": None, "used_bytes": None, "available_bytes": None, "percent": None}
        used = int(pool.total - pool.available)
        return {
            "total_bytes": int(pool.total),
            "used_bytes": used,
            "available_bytes": int(pool.available),
            "percent": round(100.0 * used / pool.total, 1) if pool.total else None,
        }

    def _host(self, now: float) -> tuple[list[float | None] | None, dict[str, Any], list[dict[str, Any]] | None]:
        """Per-core CPU, network throughput, temperatures (each None/empty when unreadable)."""
        try:
            per_core = self._per_core()
        except Exception:  # noqa: BLE001 - unreadable is None
            per_core = None
        network = self._network(now)
        try:
            temperatures = self._temperatures()
        except Exception:  # noqa: BLE001
            temperatures = None
        return per_core, network, temperatures

    def sample(self, ctx: SampleContext) -> None:
        """Read CPU, RAM and GPUs; mark operations; record history and warnings."""
        now = ctx.now
        cpu = self._cpu()
        memory = self._memory()
        per_core, network, temperatures = self._host(now)
        self.disks.start()  # its own thread: free space and cache sizes never slow this tick
        reading = self.reader.read(now)
        per_op = gpu_by_operation(ctx.operations, reading) if reading.available else {}
        live_ids: set[str] = set()
        for i, op in enumerate(ctx.operations):
            if not op.is_live:
                if op.gpu_memory_bytes is not None or op.idle_gpu:
                    # An ended operation holds no GPU any more (the sampler carries its last values).
                    ctx.operations[i] = op.replace(gpu_memory_bytes=None, gpu_utilization=None, idle_gpu=None)
                continue
            live_ids.add(op.id)
            if not reading.available:
                continue  # no NVML: GPU fields stay None
            gpu = per_op.get(op.id)
            ctx.operations[i] = op.replace(
                gpu_memory_bytes=gpu.memory_bytes if gpu else None,
                gpu_utilization=gpu.utilization if gpu else None,
                gpu_indices=gpu.indices if gpu else (),
                idle_gpu=self._idle.update(op.id, gpu, now, self.settings.idle_gpu_seconds),
            )
        self._idle.forget_except(live_ids)
        point = HistoryPoint(
            at=now,
            cpu_percent=cpu,
            memory_used_bytes=memory["used_bytes"],
            gpu_utilization=tuple(d.utilization for d in reading.devices),
            gpu_memory_used_bytes=tuple(d.memory_used_bytes for d in reading.devices),
            network_rx_bytes_per_second=network["rx_bytes_per_second"],
            network_tx_bytes_per_second=network["tx_bytes_per_second"],
            temperature_max_c=max((t["current_c"] for t in temperatures), default=None) if temperatures else None,
        )
        with self._lock:
            self._history.append(point)
            while self._history and now - self._history[0].at > HISTORY_SECONDS:
                self._history.popleft()
            history = list(self._history)
        ctx.system["cpu"] = {"percent": cpu, "count": psutil.cpu_count(logical=True), "per_core_percent": per_core}
        ctx.system["memory"] = memory
        ctx.system["network"] = network
        ctx.system["temperatures"] = temperatures
        disks = self.disks.latest()
        ctx.system["disks"] = disks["filesystems"]
        ctx.system["model_caches"] = disks["model_caches"]
        ctx.system["model_caches_read_at"] = disks["model_caches_read_at"]
        ctx.system["gpu"] = gpu_summary(reading, now, self.reader.hung_since)
        ctx.system["history"] = history_summary(history, len(reading.devices))
        ctx.system["warnings"] = [
            *self._warnings(ctx.operations, memory, reading),
            *disk_warnings(disks["filesystems"]),
            *temperature_warnings(temperatures, reading),
        ]

    def _warnings(
        self, operations: list[Operation], memory: Mapping[str, Any], reading: GpuReading
    ) -> list[dict[str, Any]]:
        warnings: list[dict[str, Any]] = []
        unified = reading.available and reading.unified_memory
        total, available = memory.get("total_bytes"), memory.get("available_bytes")
        if total and available is not None:
            threshold = self.settings.pressure_threshold(total)
            if available < threshold:
                warnings.append(
                    pressure_warning(
                        "memory_pressure",
                        "unified memory" if unified else "RAM",
                        available,
                        total,
                        threshold,
                        top_holders(operations, unified=unified),
                    )
                )
        if reading.available:
            for device in reading.devices:
                if device.unified_memory or not device.memory_total_bytes or device.memory_used_bytes is None:
                    continue  # unified memory is covered by the RAM check above
                left = device.memory_total_bytes - device.memory_used_bytes
                threshold = self.settings.pressure_threshold(device.memory_total_bytes)
                if left < threshold:
                    warnings.append(
                        pressure_warning(
                            "gpu_memory_pressure",
                            f"GPU {device.index} memory",
                            left,
                            device.memory_total_bytes,
                            threshold,
                            top_holders(operations, gpu_index=device.index),
                        )
                    )
        idle = [op for op in operations if op.is_live and op.idle_gpu]
        if idle:
            names = ", ".join(op.name for op in idle[:TOP_HOLDERS])
            warnings.append(
                {
                    "kind": "idle_gpu",
                    "message": f"Holding GPU memory while idle: {names}",
                    "operations": [_holder(op) for op in idle],
                }
            )
        return warnings


def top_holders(
    operations: Iterable[Operation], *, unified: bool = False, gpu_index: int | None = None
) -> list[dict[str, Any]]:
    """The live operations holding the most memory, largest first.

    RAM: resident memory; unified memory: resident plus GPU memory; a discrete
    GPU (``gpu_index``): GPU memory only.
    """

    def held(op: Operation) -> int:
        if gpu_index is not None:
            return (op.gpu_memory_bytes or 0) if gpu_index in (op.gpu_indices or ()) else 0
        if unified:
            return (op.memory_bytes or 0) + (op.gpu_memory_bytes or 0)
        return op.memory_bytes or 0

    ranked = sorted((op for op in operations if op.is_live and held(op) > 0), key=held, reverse=True)
    return [{**_holder(op), "held_bytes": held(op)} for op in ranked[:TOP_HOLDERS]]


def _holder(op: Operation) -> dict[str, Any]:
    return {
        "id": op.id,
        "name": op.name,
        "memory_bytes": op.memory_bytes,
        "gpu_memory_bytes": op.gpu_memory_bytes,
    }


def pressure_warning(
    kind: str,
    pool: str,
    available: int,
    total: int,
    threshold: int,
    holders: list[dict[str, Any]],
) -> dict[str, Any]:
    """A memory-pressure warning naming what is left and the largest holders."""
    message = (
        f"Low {pool}: {format_bytes(available)} left of {format_bytes(total)}"
        f" ({format_percent(100.0 * available / total if total else None)} free)"
    )
    if holders:
        message += ". Largest: " + ", ".join(
            f"{h['name']} ({format_bytes(h['held_bytes'])})" for h in holders
        )
    return {
        "kind": kind,
        "message": message,
        "pool": pool,
        "available_bytes": available,
        "total_bytes": total,
        "threshold_bytes": threshold,
        "top_holders": holders,
    }


def disk_warnings(filesystems: Iterable[Mapping[str, Any]] | None) -> list[dict[str, Any]]:
    """A ``disk_full`` warning for each listed filesystem more than ``host.DISK_WARNING_PERCENT`` used.

    Args:
        filesystems: ``host.read_filesystems`` entries (their ``warning`` flag says "nearly full").

    Returns:
        One warning per such filesystem: ``{kind, level, message, mount, labels, percent, free_bytes,
        total_bytes}``.
    """
    warnings: list[dict[str, Any]] = []
    for disk in filesystems or ():
        if not disk.get("warning"):
            continue
        labels = ", ".join(str(label) for label in disk.get("labels") or ())
        where = f"{disk.get('mount')}" + (f" ({labels})" if labels else "")
        warnings.append(
            {
                "kind": "disk_full",
                "level": "warning",
                "message": (
                    f"Disk nearly full: {where} is {format_percent(disk.get('percent'))} used,"
                    f" {format_bytes(disk.get('free_bytes'))} free of {format_bytes(disk.get('total_bytes'))}"
                ),
                "mount": disk.get("mount"),
                "labels": list(disk.get("labels") or ()),
                "percent": disk.get("percent"),
                "free_bytes": disk.get("free_bytes"),
                "total_bytes": disk.get("total_bytes"),
            }
        )
    return warnings


def _hot_sensor(name: str, current: float, level: str, high: float | None, critical: float | None) -> dict[str, Any]:
    limits = ", ".join(f"{word} {value:.0f} °C" for word, value in (("high", high), ("critical", critical)) if value)
    return {
        "name": name,
        "current_c": current,
        "level": level,
        "high_c": high,
        "critical_c": critical,
        "text": f"{name} {current:.0f} °C" + (f" ({limits})" if limits else ""),
    }


def temperature_warnings(
    temperatures: Iterable[Mapping[str, Any]] | None, reading: GpuReading | None = None
) -> list[dict[str, Any]]:
    """One ``temperature`` warning naming every sensor (and GPU) at warning or critical level, hottest first.

    Sensor levels come from the sensor's own high/critical points (``host.temperature_level``); a GPU's
    from typical slowdown temperatures (``host.gpu_temperature_level``: NVML's own point is not read).

    Returns:
        ``[]`` when nothing is hot; else one warning ``{kind, level, message, sensors}`` whose level is
        the worst of its sensors'.
    """
    hot: list[dict[str, Any]] = []
    for entry in temperatures or ():
        level = str(entry.get("level") or "ok")
        current = entry.get("current_c")
        if level in ("warning", "critical") and current is not None:
            label, sensor = str(entry.get("label") or ""), str(entry.get("sensor") or "")
            name = label if not sensor or label == sensor else f"{sensor} {label}"
            hot.append(_hot_sensor(name, float(current), level, entry.get("high_c"), entry.get("critical_c")))
    if reading is not None and reading.available:
        for device in reading.devices:
            level = gpu_temperature_level(device.temperature_c)
            if level != "ok" and device.temperature_c is not None:
                hot.append(_hot_sensor(f"GPU {device.index}", float(device.temperature_c), level, None, None))
    if not hot:
        return []
    hot.sort(key=lambda item: -item["current_c"])
    critical = any(item["level"] == "critical" for item in hot)
    return [
        {
            "kind": "temperature",
            "level": "critical" if critical else "warning",
            "message": ("Too hot: " if critical else "Running hot: ") + "; ".join(item["text"] for item in hot),
            "sensors": hot,
        }
    ]


def gpu_summary(reading: GpuReading, now: float, hung_since: float | None) -> dict[str, Any]:
    """The GPU part of ``snapshot.system``."""
    return {
        "available": reading.available,
        "message": None if reading.available else (reading.message or NO_GPU_MESSAGE),
        "stale": reading.stale,
        "stale_seconds": round(now - hung_since, 1) if reading.stale and hung_since else None,
        "read_at": reading.taken_at,
        "driver_version": reading.driver_version,
        "unified_memory": reading.unified_memory,
        "devices": [device.to_api() for device in reading.devices],
        "process_count": len(reading.processes),
    }


def history_summary(points: list[HistoryPoint], device_count: int) -> dict[str, Any]:
    """Sparkline series (oldest first) for the header."""
    return {
        "seconds": HISTORY_SECONDS,
        "at": [round(p.at, 1) for p in points],
        "cpu_percent": [p.cpu_percent for p in points],
        "memory_used_bytes": [p.memory_used_bytes for p in points],
        "gpu_utilization": [
            [p.gpu_utilization[i] if i < len(p.gpu_utilization) else None for p in points]
            for i in range(device_count)
        ],
        "gpu_memory_used_bytes": [
            [p.gpu_memory_used_bytes[i] if i < len(p.gpu_memory_used_bytes) else None for p in points]
            for i in range(device_count)
        ],
        "network_rx_bytes_per_second": [p.network_rx_bytes_per_second for p in points],
        "network_tx_bytes_per_second": [p.network_tx_bytes_per_second for p in points],
        "temperature_max_c": [p.temperature_max_c for p in points],
    }


def system_payload(system: Mapping[str, Any] | None, taken_at: float, sequence: int) -> dict[str, Any]:
    """``GET /api/dgx/system``'s data, from a snapshot's ``system`` mapping."""
    system = system or {}
    gpu = system.get("gpu") or {
        "available": False,
        "message": NO_GPU_MESSAGE,
        "stale": False,
        "stale_seconds": None,
        "read_at": None,
        "driver_version": None,
        "unified_memory": False,
        "devices": [],
        "process_count": 0,
    }
    return {
        "sequence": sequence,
        "taken_at": taken_at or None,
        "cpu": system.get("cpu")
        or {"percent": None, "count": psutil.cpu_count(logical=True), "per_core_percent": None},
        "memory": system.get("memory")
        or {"total_bytes": None, "used_bytes": None, "available_bytes": None, "percent": None},
        "gpu": gpu,
        "network": system.get("network")
        or {"rx_bytes_per_second": None, "tx_bytes_per_second": None, "rx_bytes": None, "tx_bytes": None,
            "interfaces": []},
        "temperatures": system.get("temperatures"),
        "disks": system.get("disks"),
        "model_caches": system.get("model_caches"),
        "model_caches_read_at": system.get("model_caches_read_at"),
        "warnings": list(system.get("warnings") or []),
        "containers": system.get("containers") or {"visible": False, "engine": None, "reason": "not checked yet"},
        "history": system.get("history")
        or {"seconds": HISTORY_SECONDS, "at": [], "cpu_percent": [], "memory_used_bytes": [],
            "gpu_utilization": [], "gpu_memory_used_bytes": [], "network_rx_bytes_per_second": [],
            "network_tx_bytes_per_second": [], "temperature_max_c": []},
    }

