"""The resources strip under the system header: cores, network, disks, model caches, temperatures.

Everything comes from ``SystemState`` (the shared snapshot, copied by the tab's
one live loop); nothing here reads the machine. A tile whose figures are
unknown says so or is left out; disks over 90 % used and temperatures near
their limits take the warning colour.

Stable hooks for tests: ``id="resources-strip"``; tiles ``data-field``
``cores`` (bars ``data-field="core"`` with ``data-percent``), ``network``,
``disk`` (``data-mount``, ``data-warning``), ``caches`` (rows ``data-key``),
``temperatures`` (rows ``data-level``); values ``data-value``.
"""

from __future__ import annotations

from typing import Any

import reflex as rx

from dgx_spark import styles
from dgx_spark.state.system import SPARK_HEIGHT, SPARK_WIDTH, CacheView, DiskView, SystemState, TempView

_label = styles.header_label
_value = styles.header_value
_sub = styles.header_sub


def _tile(*children: rx.Component, field: str, **props: Any) -> rx.Component:
    return rx.vstack(*children, style={**styles.header_tile, "scroll_snap_align": "start"}, data_field=field, **props)


def _lines(*series: tuple[rx.Var[str], str], label: str) -> rx.Component:
    """One small SVG with a polyline per series (nothing drawn for an empty series)."""
    return rx.el.svg(
        *[
            rx.el.svg.polyline(
                points=points,
                fill="none",
                stroke=f"var(--{color}-9)",
                stroke_width="1.5",
                vector_effect="non-scaling-stroke",
            )
            for points, color in series
        ],
        view_box=f"0 0 {SPARK_WIDTH} {SPARK_HEIGHT}",
        preserve_aspect_ratio="none",
        width="100%",
        height="24px",
        role="img",
        aria_label=label,
        custom_attrs={"data-field": "sparkline"},
    )


def _core(percent: rx.Var[int]) -> rx.Component:
    """One core's bar: filled to its use, amber from 90 %."""
    return rx.box(
        rx.box(
            width="100%",
            height=percent.to_string() + "%",
            background=rx.cond(percent >= 90, "var(--amber-9)", "var(--blue-9)"),
        ),
        style=styles.core_track,
        title=percent.to_string() + " %",
        data_field="core",
        custom_attrs={"data-percent": percent.to_string()},
    )


def cores_tile() -> rx.Component:
    """Per-core CPU use as mini-bars (busy cores stand out even when the average is low)."""
    return _tile(
        rx.hstack(
            rx.text("CPU cores", style=_label),
            rx.text(SystemState.core_percents.length().to_string(), style=_label, data_value="core-count"),
            justify="between",
            width="100%",
        ),
        rx.box(rx.foreach(SystemState.core_percents, _core), style=styles.core_bars, aria_label="Use of each CPU core"),
        field="cores",
    )


def network_tile() -> rx.Component:
    """Receive and send throughput with their sparklines."""
    return _tile(
        rx.text("Network", style=_label),
        rx.hstack(
            rx.text("↓ ", rx.cond(SystemState.net_rx_text != "", SystemState.net_rx_text, "—"),
                    style=_value, color="var(--blue-11)", data_value="net-rx", title="received"),
            rx.text("↑ ", rx.cond(SystemState.net_tx_text != "", SystemState.net_tx_text, "—"),
                    style=_value, color="var(--orange-11)", data_value="net-tx", title="sent"),
            spacing="3",
            align="baseline",
        ),
        _lines((SystemState.net_points[0], "blue"), (SystemState.net_points[1], "orange"),
               label="Network received (blue) and sent (orange), last minutes"),
        field="network",
    )


def disk_tile(disk: rx.Var[DiskView]) -> rx.Component:
    """Free space of one filesystem, named by what lives on it (data, home, Hugging Face cache)."""
    color = rx.cond(disk.warning, "var(--red-9)", "var(--green-9)")
    return _tile(
        rx.hstack(
            rx.text("Disk ", disk.mount, style=_label, title=disk.title),
            rx.text(disk.percent_text, style=_label, color=rx.cond(disk.warning, "var(--red-11)", styles.MUTED)),
            justify="between",
            width="100%",
        ),
        rx.text(rx.cond(disk.free_text != "", disk.free_text, "—"), style=_value, data_value="disk-free",
                color=rx.cond(disk.warning, "var(--red-11)", "inherit")),
        rx.box(rx.box(width=disk.percent.to_string() + "%", height="100%", background=color), style=styles.usage_track),
        rx.text(disk.labels_text, style=_sub, title=disk.title, data_value="disk-labels"),
        field="disk",
        custom_attrs={"data-mount": disk.mount, "data-warning": rx.cond(disk.warning, "true", "false")},
    )


def _cache_row(cache: rx.Var[CacheView]) -> rx.Component:
    return rx.vstack(
        rx.hstack(
            rx.text(cache.label, size="1", weight="medium"),
            rx.text(cache.size_text, size="1", weight="bold", data_value="cache-size"),
            justify="between",
            width="100%",
        ),
        rx.cond(cache.models_text != "", rx.text(cache.models_text, style=_sub, title=cache.models_text)),
        spacing="0",
        width="100%",
        title=cache.title,
        custom_attrs={"data-key": cache.key},
    )


def caches_tile() -> rx.Component:
    """The model caches, biggest first, with their biggest models (sized in the background)."""
    return _tile(
        rx.text("Model caches", style=_label),
        rx.cond(
            SystemState.caches.length() > 0,
            rx.foreach(SystemState.caches, _cache_row),
            rx.text("sizing…", style=_sub),
        ),
        field="caches",
    )


def _temp_row(reading: rx.Var[TempView]) -> rx.Component:
    color = rx.match(reading.level, ("critical", "var(--red-11)"), ("warning", "var(--amber-11)"), "inherit")
    return rx.hstack(
        rx.text(reading.label, style=_sub, title=reading.title),
        rx.text(reading.value_text, size="1", weight="bold", color=color, data_value="temperature"),
        justify="between",
        width="100%",
        custom_attrs={"data-level": reading.level},
    )


def temperatures_tile() -> rx.Component:
    """The hottest reading of each sensor, coloured near its limits, and a sparkline of the hottest."""
    return _tile(
        rx.text("Temperatures", style=_label),
        rx.foreach(SystemState.temps, _temp_row),
        _lines((SystemState.temp_points, "red"), label="Hottest sensor, last minutes"),
        field="temperatures",
    )


def resources_strip() -> rx.Component:
    """Cores, network, each filesystem that matters, the model caches and temperatures (when exposed)."""
    return rx.cond(
        SystemState.loaded,
        rx.box(
            cores_tile(),
            network_tile(),
            rx.foreach(SystemState.disks, disk_tile),
            caches_tile(),
            rx.cond(SystemState.temps.length() > 0, temperatures_tile()),
            id="resources-strip",
            style=styles.resources_strip,
            # A phone scrolls the strip sideways: focusable, so arrow keys can scroll it too.
            role="region",
            aria_label="Machine resources",
            tab_index=0,
        ),
    )
