"""The system header's state: CPU, RAM, GPUs, warnings and the resources strip of the latest snapshot.

The browser tab's one live loop (``operations.run_tab_loop``, the ``"system"``
feed) copies ``get_sampler().latest`` (never rescanning anything) into this
state, and only when what the header shows changed. ``system_view`` is plain Python: the snapshot's typed system facts (what
``GET /api/dgx/system`` shows) turned into ready-to-show text and sparkline points.

The header's view is computed once per snapshot for every tab (``shared_system_view``);
a tab whose header already shows it is not touched. CPU / RAM numbers change
every tick, so each tick sends just the changed texts (and the per-core
percentages, whole numbers); the sparklines (the bulk of the bytes) are redrawn
every ``SPARK_EVERY_TICKS`` snapshots only.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import reflex as rx

from dgx_spark import format as fmt
from dgx_spark.collector.containers import header_line as containers_header_line
from dgx_spark.collector.facts import (
    CpuFacts,
    Filesystem,
    GpuFacts,
    HistoryFacts,
    MemoryFacts,
    ModelCache,
    NetworkFacts,
    SystemFacts,
    TemperatureReading,
)
from dgx_spark.collector.gpu import NO_GPU_MESSAGE, GpuDevice
from dgx_spark.collector.host import gpu_temperature_level
from dgx_spark.collector.model import Snapshot
from dgx_spark.services import get_sampler
from dgx_spark.state import loops
from dgx_spark.state.operations import register_feed, run_tab_loop

logger = logging.getLogger(__name__)

# Sparkline viewBox: points are scaled into 0..SPARK_WIDTH x 0..SPARK_HEIGHT.
SPARK_WIDTH = 100
SPARK_HEIGHT = 24
# The sparklines are redrawn every this many snapshots (the numbers every snapshot).
SPARK_EVERY_TICKS = 5


def sparkline(values: Sequence[float | int | None], top: float | None = None) -> str:
    """The header's sparkline points (``format.sparkline_points`` in its viewBox, 0 at the bottom)."""
    return fmt.sparkline_points(values, SPARK_WIDTH, SPARK_HEIGHT, top=top)


def _text(value: str) -> str:
    return "" if value == fmt.PLACEHOLDER else value


def used_of_total(used: int | None, total: int | None) -> str:
    """``12.4 GiB / 128.0 GiB``, or ``""`` when unknown."""
    if used is None or total is None:
        return ""
    return f"{fmt.format_bytes(used)} / {fmt.format_bytes(total)}"


@dataclasses.dataclass(frozen=True)
class GpuView:
    """One GPU as the header shows it ("" = unknown, hidden)."""

    index: int
    name: str
    utilization_text: str = ""
    memory_text: str = ""
    memory_label: str = "memory"
    unified_memory: bool = False
    temperature_text: str = ""
    temperature_level: str = "ok"
    power_text: str = ""
    utilization_points: str = ""


@dataclasses.dataclass(frozen=True)
class DiskView:
    """One filesystem of the resources strip."""

    mount: str
    labels_text: str
    free_text: str
    percent: int
    percent_text: str
    warning: bool
    title: str


@dataclasses.dataclass(frozen=True)
class CacheView:
    """One model cache: its size and biggest models (sized in the background)."""

    key: str
    label: str
    size_text: str
    models_text: str
    title: str


@dataclasses.dataclass(frozen=True)
class TempView:
    """The hottest reading of one temperature sensor."""

    label: str
    value_text: str
    level: str
    title: str


@dataclasses.dataclass(frozen=True)
class WarningView:
    """One warning banner (``level``: ``warning`` amber, ``critical`` red)."""

    kind: str
    message: str
    level: str = "critical"


@dataclasses.dataclass(frozen=True)
class SystemView:
    """Everything the header shows."""

    cpu_text: str = ""
    cpu_points: str = ""
    ram_text: str = ""
    ram_percent_text: str = ""
    ram_points: str = ""
    gpu_available: bool = False
    gpu_message: str = NO_GPU_MESSAGE
    gpu_stale: bool = False
    gpus: tuple[GpuView, ...] = ()
    warnings: tuple[WarningView, ...] = ()
    # The resources strip.
    core_percents: tuple[int, ...] = ()
    net_rx_text: str = ""
    net_tx_text: str = ""
    net_points: tuple[str, str] = ("", "")
    disks: tuple[DiskView, ...] = ()
    caches: tuple[CacheView, ...] = ()
    temps: tuple[TempView, ...] = ()
    temp_points: str = ""
    # "containers: not visible (no access to /var/run/docker.sock)"; "" when visible.
    containers_text: str = ""


def _power(device: GpuDevice) -> str:
    if device.power_watts is None:
        return ""
    limit = device.power_limit_watts
    return f"{device.power_watts:.0f} W" + (f" / {limit:.0f} W" if limit else "")


# The warnings shown as banners under the header (idle GPU holders show on their cards instead).
BANNER_KINDS = ("memory_pressure", "gpu_memory_pressure", "disk_full", "temperature")


def _rate(value: float | None) -> str:
    return "" if value is None else f"{fmt.format_bytes(value)}/s"


def _disk_view(disk: Filesystem) -> DiskView:
    percent = disk.percent
    free, total = disk.free_bytes, disk.total_bytes
    return DiskView(
        mount=disk.mount,
        labels_text=" · ".join(disk.labels),
        free_text=f"{fmt.format_bytes(free)} free of {fmt.format_bytes(total)}" if free is not None else "",
        percent=round(percent) if percent is not None else 0,
        percent_text=_text(fmt.format_percent(percent)) + (" used" if percent is not None else ""),
        warning=disk.warning,
        title=f"{disk.mount}: " + ", ".join(disk.paths),
    )


def _cache_view(cache: ModelCache) -> CacheView:
    size = cache.size_bytes
    if not cache.exists:
        size_text = "not present"
    elif size is None:
        size_text = "unreadable"
    else:
        size_text = fmt.format_bytes(size) + (" or more" if cache.partial else "")
    models = " · ".join(f"{model.name} {fmt.format_bytes(model.size_bytes)}" for model in cache.largest[:3])
    return CacheView(
        key=cache.key,
        label=cache.label,
        size_text=size_text,
        models_text=models,
        title=cache.path + (f" ({cache.error})" if cache.error else ""),
    )


def _temp_view(reading: TemperatureReading) -> TempView:
    limits = [
        f"{name} {value:.0f} °C" for name, value in (("high", reading.high_c), ("critical", reading.critical_c)) if value
    ]
    return TempView(
        label=reading.label or reading.sensor,
        value_text=f"{reading.current_c:.0f} °C",
        level=reading.level,
        title=f"{reading.sensor}: {reading.label}" + (f" ({', '.join(limits)})" if limits else ""),
    )


def _gpu_views(gpu: GpuFacts, history: HistoryFacts) -> tuple[GpuView, ...]:
    series = history.gpu_utilization
    return tuple(
        GpuView(
            index=device.index,
            name=device.name or f"GPU {position}",
            utilization_text=_text(fmt.format_percent(device.utilization)),
            memory_text=used_of_total(device.memory_used_bytes, device.memory_total_bytes),
            memory_label="unified memory" if device.unified_memory else "memory",
            unified_memory=device.unified_memory,
            temperature_text=f"{device.temperature_c:.0f} °C" if device.temperature_c is not None else "",
            temperature_level=gpu_temperature_level(device.temperature_c),
            power_text=_power(device),
            utilization_points=sparkline(series[position] if position < len(series) else [], 100.0),
        )
        for position, device in enumerate(gpu.devices)
    )


def system_view(facts: SystemFacts | None) -> SystemView:
    """The header's view of a snapshot's system facts (None: none read yet)."""
    facts = facts or SystemFacts()
    cpu = facts.cpu or CpuFacts(None, None, None)
    memory = facts.memory or MemoryFacts()
    gpu = facts.gpu or GpuFacts()
    history = facts.history or HistoryFacts()
    network = facts.network or NetworkFacts()
    warnings = tuple(
        WarningView(kind=w.kind, message=w.message, level=w.level or "critical")
        for w in facts.warnings
        if w.kind in BANNER_KINDS
    )
    temperatures = facts.temperatures or ()
    temperature_tops = [t.critical_c or 0 for t in temperatures]
    return SystemView(
        core_percents=tuple(round(p or 0) for p in cpu.per_core_percent or ()),
        net_rx_text=_rate(network.rx_bytes_per_second),
        net_tx_text=_rate(network.tx_bytes_per_second),
        net_points=(sparkline(history.network_rx_bytes_per_second), sparkline(history.network_tx_bytes_per_second)),
        disks=tuple(_disk_view(disk) for disk in facts.disks or ()),
        caches=tuple(_cache_view(cache) for cache in facts.model_caches or ()),
        temps=tuple(_temp_view(reading) for reading in temperatures),
        temp_points=sparkline(history.temperature_max_c, max([100.0, *temperature_tops])),
        cpu_text=_text(fmt.format_percent(cpu.percent)),
        cpu_points=sparkline(history.cpu_percent, 100.0),
        ram_text=used_of_total(memory.used_bytes, memory.total_bytes),
        ram_percent_text=_text(fmt.format_percent(memory.percent)),
        ram_points=sparkline(history.memory_used_bytes, memory.total_bytes),
        gpu_available=gpu.available,
        gpu_message=gpu.message or ("" if gpu.available else NO_GPU_MESSAGE),
        gpu_stale=gpu.stale,
        gpus=_gpu_views(gpu, history),
        warnings=warnings,
        containers_text=containers_header_line(facts.containers.to_api() if facts.containers else None) or "",
    )


class SystemState(rx.State):
    """The system header: CPU, RAM, GPUs, sparklines and memory warnings."""

    cpu_text: str = ""
    cpu_points: str = ""
    ram_text: str = ""
    ram_percent_text: str = ""
    ram_points: str = ""
    gpu_available: bool = False
    gpu_message: str = ""
    gpu_stale: bool = False
    gpus: list[GpuView] = []  # noqa: RUF012 - a Reflex state var
    warnings: list[WarningView] = []  # noqa: RUF012 - a Reflex state var
    core_percents: list[int] = []  # noqa: RUF012 - a Reflex state var
    net_rx_text: str = ""
    net_tx_text: str = ""
    net_points: list[str] = ["", ""]  # noqa: RUF012 - a Reflex state var
    disks: list[DiskView] = []  # noqa: RUF012 - a Reflex state var
    caches: list[CacheView] = []  # noqa: RUF012 - a Reflex state var
    temps: list[TempView] = []  # noqa: RUF012 - a Reflex state var
    temp_points: str = ""
    containers_text: str = ""
    loaded: bool = False

    # The number of the shared view the tab shows (``_number_of``; 0: none), and its snapshot.
    _shown_number: int = 0
    _shown_sequence: int = -1

    def _apply(self, view: SystemView) -> None:
        """Assign only the fields that changed, so an idle tick sends nothing.

        The changed fields come from comparing the shown view with ``view``: plain
        Python, worked out once for every tab taking the same step (``_changes``),
        not by reading each state var back through Reflex's proxies.
        """
        number = _number_of(view)
        if number and number == self._shown_number:
            return
        changes = _changes(self._shown_number, number, view)
        if changes is None:  # the shown view is no longer known: compare with the state
            for field in dataclasses.fields(SystemView):
                value = getattr(view, field.name)
                value = list(value) if isinstance(value, tuple) else value
                if getattr(self, field.name) != value:
                    setattr(self, field.name, value)
        else:
            for name, value in changes:
                setattr(self, name, list(value) if isinstance(value, tuple) else value)
        if not self.loaded:
            self.loaded = True
        self._shown_number = number

    @rx.event
    def stop_live(self) -> None:
        """This tab no longer shows the header (it unmounted)."""
        loops.leave(self.router.session.client_token, FEED)

    @rx.event(background=True)
    async def start_live(self) -> None:
        """Show the sampler's system view in this tab until it goes away (the tab's shared loop)."""
        token = self.router.session.client_token
        if not token:
            return
        async with self:
            await _apply_system(self, get_sampler().latest, time.time())
        await run_tab_loop(self, token, FEED)


_cache_lock = threading.Lock()
# The latest shared views, numbered (a tab keeps the number of the one it shows), newest last.
_views: OrderedDict[int, SystemView] = OrderedDict()
_numbers = itertools.count(1)
MAX_VIEWS = 8
# The latest ``_changes`` results: (shown number, new number, changed fields).
_steps: list[tuple[int, int, tuple[tuple[str, Any], ...]]] = []


def _number_view(view: SystemView) -> None:
    """Give a new shared view its number (called under ``_cache_lock``)."""
    _views[next(_numbers)] = view
    while len(_views) > MAX_VIEWS:
        _views.popitem(last=False)


def _number_of(view: SystemView) -> int:
    """The number of a shared view (0: not one of the latest shared views)."""
    with _cache_lock:
        for number in reversed(_views):
            if _views[number] is view:
                return number
    return 0


def _changes(shown: int, number: int, view: SystemView) -> tuple[tuple[str, Any], ...] | None:
    """The fields (name, new value) in which ``view`` (shared view ``number``) differs from view ``shown``.

    Worked out once per step for every tab; None when view ``shown`` is no longer kept.
    """
    with _cache_lock:
        for before, after, changes in _steps:
            if before == shown and after == number and number:
                return changes
        old = _views.get(shown) if shown else None
    if old is None:
        return None
    changes = tuple(
        (field.name, getattr(view, field.name))
        for field in dataclasses.fields(SystemView)
        if getattr(view, field.name) != getattr(old, field.name)
    )
    if number:
        with _cache_lock:
            _steps.insert(0, (shown, number, changes))
            del _steps[MAX_VIEWS:]
    return changes


@dataclasses.dataclass
class _Latest:
    """The latest shared header view (read and replaced under ``_cache_lock``)."""

    # (snapshot, view, sequence its sparklines were drawn at, sequence the view last changed at:
    # its fingerprint).
    entry: tuple[Snapshot | None, SystemView, int, int] = (None, SystemView(), -1, -1)


_cache = _Latest()


def _keep_sparklines(view: SystemView, drawn: SystemView) -> SystemView:
    """``view`` with the sparklines of ``drawn`` (the numbers stay ``view``'s)."""
    drawn_points = {gpu.index: gpu.utilization_points for gpu in drawn.gpus}
    return dataclasses.replace(
        view,
        cpu_points=drawn.cpu_points,
        ram_points=drawn.ram_points,
        net_points=drawn.net_points,
        temp_points=drawn.temp_points,
        gpus=tuple(
            dataclasses.replace(gpu, utilization_points=drawn_points.get(gpu.index, gpu.utilization_points))
            for gpu in view.gpus
        ),
    )


def shared_system_view(snapshot: Snapshot) -> tuple[SystemView, int]:
    """The header's view of ``snapshot``, computed once for every tab.

    The sparklines are redrawn every ``SPARK_EVERY_TICKS`` snapshots (or while
    one is still empty); in between the previous points are kept, so most ticks
    change only a few short texts.

    Returns:
        The view, and the sequence of the snapshot it last changed at.
    """
    with _cache_lock:
        cached, previous, drawn_at, changed_at = _cache.entry
        # The sampler hands every tab the same Snapshot object for a sequence.
        if cached is snapshot:
            return previous, changed_at
        view = system_view(snapshot.system)
        redraw = (
            drawn_at < 0
            or snapshot.sequence - drawn_at >= SPARK_EVERY_TICKS
            or snapshot.sequence < drawn_at
            or not previous.cpu_points
            or not previous.ram_points
            or len(view.gpus) != len(previous.gpus)
        )
        if not redraw:
            view = _keep_sparklines(view, previous)
        if view == previous:
            view = previous
        else:
            changed_at = snapshot.sequence
            _number_view(view)
        _cache.entry = (snapshot, view, snapshot.sequence if redraw else drawn_at, changed_at)
        return view, changed_at


async def _apply_system(state: Any, snapshot: Snapshot, now: float) -> None:
    """The system feed: copy the snapshot's system facts into ``SystemState``."""
    if snapshot.sequence <= 0:
        return
    header = await state.get_state(SystemState)
    if header._shown_sequence == snapshot.sequence:
        return
    header._apply(shared_system_view(snapshot)[0])
    header._shown_sequence = snapshot.sequence


def _system_fingerprint(token: str, snapshot: Snapshot, now: float) -> Any:
    """The header's view of ``snapshot`` (shared); equal to what the tab shows: nothing to do."""
    if snapshot.sequence <= 0:
        return ("sequence", snapshot.sequence)
    return ("changed at", shared_system_view(snapshot)[1])


FEED = "system"
register_feed(FEED, _apply_system, _system_fingerprint)
