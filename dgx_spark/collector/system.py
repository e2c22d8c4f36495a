"""The system probe: CPU, RAM, GPUs, network, disks and temperatures; GPU use per operation; warnings.

Plain Python. Each tick it sets ``ctx.system`` to a typed ``facts.SystemFacts`` (the
header and ``GET /api/dgx/system``; numbers, never text for people) and sets ``gpu_memory_bytes``, ``gpu_utilization``,
``gpu_indices`` and ``idle_gpu`` on every live operation, summed over the
operation's folded process tree (``op.pids``). Per-operation ``cpu_percent`` and
``memory_bytes`` come from discovery; this probe only reads them (for the
memory-pressure warning). Its warnings (memory pressure, idle GPU holders, nearly
full disks, temperatures near their limits) are worked out here, once per snapshot;
their sentences are worded by ``facts`` when shown.

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
from collections.abc import Callable, Iterable
from typing import Any

import psutil

from dgx_spark.collector.facts import (
    HISTORY_SECONDS,
    CpuFacts,
    DiskWarning,
    Filesystem,
    GpuFacts,
    HistoryFacts,
    Holder,
    HotSensor,
    IdleGpuWarning,
    MemoryFacts,
    ModelCache,
    NetworkFacts,
    PressureWarning,
    SystemFacts,
    TemperatureReading,
    TemperatureWarning,
    Warning,
)
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
from dgx_spark.settings import ResourceSettings

# Below this GPU utilisation (percent) a GPU holder counts as idle.
IDLE_UTILIZATION_PERCENT = 1.0
# How many operations a memory-pressure warning names.
TOP_HOLDERS = 3
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
    """Sets ``ctx.system`` and the GPU fields of operations; see the module docstring."""

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
        # The disk watcher's last lists and their typed copies (converted once per new reading).
        self._typed_disks: tuple[Any, tuple[Filesystem, ...] | None, Any, tuple[ModelCache, ...] | None] = (
            None, None, None, None
        )

    def _cpu(self) -> float | None:
        try:
            value = self._cpu_percent()
        except Exception:  # noqa: BLE001 - unreadable is None
            return None
        return None if value is None else float(value)

    def _memory(self) -> MemoryFacts:
        try:
            pool = self._virtual_memory()
        except Exception:  # noqa: BLE001 - unreadable is None
            return MemoryFacts()
        used = int(pool.total - pool.available)
        return MemoryFacts(
            total_bytes=int(pool.total),
            used_bytes=used,
            available_bytes=int(pool.available),
            percent=round(100.0 * used / pool.total, 1) if pool.total else None,
        )

    def _host(
        self, now: float
    ) -> tuple[tuple[float | None, ...] | None, NetworkFacts, tuple[TemperatureReading, ...] | None]:
        """Per-core CPU, network throughput, temperatures (each None/empty when unreadable)."""
        try:
            per_core = self._per_core()
        except Exception:  # noqa: BLE001 - unreadable is None
            per_core = None
        network = NetworkFacts.from_host(self._network(now))
        try:
            temperatures = self._temperatures()
        except Exception:  # noqa: BLE001
            temperatures = None
        return (
            None if per_core is None else tuple(per_core),
            network,
            None if temperatures is None else tuple(TemperatureReading.from_host(t) for t in temperatures),
        )

    def sample(self, ctx: SampleContext) -> None:
        """Read CPU, RAM and GPUs; mark operations; record history and warnings."""
        now = ctx.now
        cpu = self._cpu()
        memory = self._memory()
        per_core, network, temperatures = self._host(now)
        self.disks.start()  # its own thread: free space and cache sizes never slow this tick
        reading = self.reader.read(now)
        self._mark_operations(ctx, reading)
        point = HistoryPoint(
            at=now,
            cpu_percent=cpu,
            memory_used_bytes=memory.used_bytes,
            gpu_utilization=tuple(d.utilization for d in reading.devices),
            gpu_memory_used_bytes=tuple(d.memory_used_bytes for d in reading.devices),
            network_rx_bytes_per_second=network.rx_bytes_per_second,
            network_tx_bytes_per_second=network.tx_bytes_per_second,
            temperature_max_c=max((t.current_c for t in temperatures), default=None) if temperatures else None,
        )
        with self._lock:
            self._history.append(point)
            while self._history and now - self._history[0].at > HISTORY_SECONDS:
                self._history.popleft()
            history = list(self._history)
        disks, caches, caches_read_at = self._disks()
        ctx.system = SystemFacts(
            cpu=CpuFacts(percent=cpu, count=psutil.cpu_count(logical=True), per_core_percent=per_core),
            memory=memory,
            gpu=gpu_summary(reading, now, self.reader.hung_since),
            network=network,
            temperatures=temperatures,
            disks=disks,
            model_caches=caches,
            model_caches_read_at=caches_read_at,
            warnings=(
                *self._warnings(ctx.operations, memory, reading),
                *disk_warnings(disks),
                *temperature_warnings(temperatures, reading),
            ),
            history=history_summary(history, len(reading.devices)),
        )

    def _mark_operations(self, ctx: SampleContext, reading: GpuReading) -> None:
        """Set the GPU fields of every operation from this reading (an ended one holds no GPU)."""
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
                idle_gpu=self._idle.update(op.id, gpu, now=ctx.now, limit=self.settings.idle_gpu_seconds),
            )
        self._idle.forget_except(live_ids)

    def _disks(self) -> tuple[tuple[Filesystem, ...] | None, tuple[ModelCache, ...] | None, float | None]:
        """The disk watcher's latest free space and cache sizes, typed once per new reading."""
        latest = self.disks.latest()
        raw_disks, raw_caches = latest["filesystems"], latest["model_caches"]
        seen_disks, disks, seen_caches, caches = self._typed_disks
        # The watcher hands the same lists until it reads again: convert only new ones.
        if raw_disks is not seen_disks:
            disks = None if raw_disks is None else tuple(Filesystem.from_host(disk) for disk in raw_disks)
        if raw_caches is not seen_caches:
            caches = None if raw_caches is None else tuple(ModelCache.from_host(cache) for cache in raw_caches)
        self._typed_disks = (raw_disks, disks, raw_caches, caches)
        return disks, caches, latest["model_caches_read_at"]

    def _warnings(self, operations: list[Operation], memory: MemoryFacts, reading: GpuReading) -> list[Warning]:
        warnings: list[Warning] = []
        unified = reading.available and reading.unified_memory
        total, available = memory.total_bytes, memory.available_bytes
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
            warnings.append(IdleGpuWarning(operations=tuple(_holder(op) for op in idle), named=TOP_HOLDERS))
        return warnings


def top_holders(
    operations: Iterable[Operation], *, unified: bool = False, gpu_index: int | None = None
) -> tuple[Holder, ...]:
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
    return tuple(_holder(op, held(op)) for op in ranked[:TOP_HOLDERS])


def _holder(op: Operation, held: int | None = None) -> Holder:
    return Holder(
        id=op.id, name=op.name, memory_bytes=op.memory_bytes, gpu_memory_bytes=op.gpu_memory_bytes, held_bytes=held
    )


def pressure_warning(
    kind: str,
    pool: str,
    available: int,
    total: int,
    threshold: int,
    holders: Iterable[Holder],
) -> PressureWarning:
    """A memory-pressure warning naming what is left and the largest holders."""
    return PressureWarning(
        kind=kind,
        pool=pool,
        available_bytes=available,
        total_bytes=total,
        threshold_bytes=threshold,
        top_holders=tuple(holders),
    )


def disk_warnings(filesystems: Iterable[Filesystem] | None) -> list[DiskWarning]:
    """A ``disk_full`` warning for each listed filesystem more than ``host.DISK_WARNING_PERCENT`` used.

    Args:
        filesystems: The filesystems read (their ``warning`` flag says "nearly full"); None: not read yet.

    Returns:
        One warning per such filesystem.
    """
    return [DiskWarning(filesystem=disk) for disk in filesystems or () if disk.warning]


def temperature_warnings(
    temperatures: Iterable[TemperatureReading] | None, reading: GpuReading | None = None
) -> list[TemperatureWarning]:
    """One ``temperature`` warning naming every sensor (and GPU) at warning or critical level, hottest first.

    Sensor levels come from the sensor's own high/critical points (``host.temperature_level``); a GPU's
    from typical slowdown temperatures (``host.gpu_temperature_level``: NVML's own point is not read).

    Returns:
        ``[]`` when nothing is hot; else one warning whose level is the worst of its sensors'.
    """
    hot: list[HotSensor] = []
    for entry in temperatures or ():
        if entry.level in ("warning", "critical"):
            name = entry.label if not entry.sensor or entry.label == entry.sensor else f"{entry.sensor} {entry.label}"
            hot.append(HotSensor(name, entry.current_c, entry.level, entry.high_c, entry.critical_c))
    if reading is not None and reading.available:
        for device in reading.devices:
            level = gpu_temperature_level(device.temperature_c)
            if level != "ok" and device.temperature_c is not None:
                hot.append(HotSensor(f"GPU {device.index}", float(device.temperature_c), level))
    if not hot:
        return []
    hot.sort(key=lambda item: -item.current_c)
    return [TemperatureWarning(sensors=tuple(hot))]


def gpu_summary(reading: GpuReading, now: float, hung_since: float | None) -> GpuFacts:
    """The GPU part of ``snapshot.system``."""
    return GpuFacts(
        available=reading.available,
        message=None if reading.available else (reading.message or NO_GPU_MESSAGE),
        stale=reading.stale,
        stale_seconds=round(now - hung_since, 1) if reading.stale and hung_since else None,
        read_at=reading.taken_at,
        driver_version=reading.driver_version,
        unified_memory=reading.unified_memory,
        devices=reading.devices,
        process_count=len(reading.processes),
    )


def history_summary(points: list[HistoryPoint], device_count: int) -> HistoryFacts:
    """Sparkline series (oldest first) for the header."""
    return HistoryFacts(
        seconds=HISTORY_SECONDS,
        at=tuple(round(p.at, 1) for p in points),
        cpu_percent=tuple(p.cpu_percent for p in points),
        memory_used_bytes=tuple(p.memory_used_bytes for p in points),
        gpu_utilization=tuple(
            tuple(p.gpu_utilization[i] if i < len(p.gpu_utilization) else None for p in points)
            for i in range(device_count)
        ),
        gpu_memory_used_bytes=tuple(
            tuple(p.gpu_memory_used_bytes[i] if i < len(p.gpu_memory_used_bytes) else None for p in points)
            for i in range(device_count)
        ),
        network_rx_bytes_per_second=tuple(p.network_rx_bytes_per_second for p in points),
        network_tx_bytes_per_second=tuple(p.network_tx_bytes_per_second for p in points),
        temperature_max_c=tuple(p.temperature_max_c for p in points),
    )
