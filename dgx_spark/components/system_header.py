"""The system header above the tab: CPU, RAM and each GPU, with sparklines.

Shows GPU name, utilisation, memory used/total ("unified memory" on GB10-like
devices that share the system pool), temperature and power; or "No NVIDIA GPU
detected" where NVML is missing. Below it, the memory-pressure banners.
It joins the browser tab's live loop on mount and again after every reconnect
(``SystemState.start_live``, through ``while_connected``).

Under the tiles, the resources strip (``components/resources_strip.py``).

Stable hooks for tests: ``id="system-header"``; tiles ``data-field`` ``cpu``,
``ram``, ``gpu-none``, ``gpu`` (``data-index``); values ``data-value``.
"""

from __future__ import annotations

from typing import Any

import reflex as rx

from dgx_spark import styles
from dgx_spark.components.resources import memory_pressure_banner
from dgx_spark.components.resources_strip import resources_strip
from dgx_spark.components.status import while_connected
from dgx_spark.state.system import SPARK_HEIGHT, SPARK_WIDTH, GpuView, SystemState

_row: dict[str, Any] = {
    "display": "grid",
    "grid_template_columns": "repeat(auto-fit, minmax(200px, 1fr))",
    "gap": "8px",
    "margin_bottom": "12px",
    "width": "100%",
}
_tile = styles.header_tile
_label = styles.header_label
_value = styles.header_value
_sub = styles.header_sub


def spark(points: rx.Var[str], color: str, label: str) -> rx.Component:
    """A small sparkline of the last few minutes (nothing until two points exist)."""
    return rx.cond(
        points != "",
        rx.el.svg(
            rx.el.svg.polyline(
                points=points,
                fill="none",
                stroke=f"var(--{color}-9)",
                stroke_width="1.5",
                vector_effect="non-scaling-stroke",
            ),
            view_box=f"0 0 {SPARK_WIDTH} {SPARK_HEIGHT}",
            preserve_aspect_ratio="none",
            width="100%",
            height="24px",
            role="img",
            aria_label=label,
            custom_attrs={"data-field": "sparkline"},
        ),
        rx.box(height="24px"),
    )


def tile(*children: rx.Component, field: str, **props: Any) -> rx.Component:
    """One figure of the header."""
    return rx.vstack(*children, style=_tile, data_field=field, **props)


def cpu_tile() -> rx.Component:
    """CPU use of the whole machine (100 % = all cores)."""
    return tile(
        rx.text("CPU", style=_label),
        rx.text(rx.cond(SystemState.cpu_text != "", SystemState.cpu_text, "—"), style=_value, data_value="cpu"),
        spark(SystemState.cpu_points, "blue", "CPU use, last minutes"),
        field="cpu",
    )


def ram_tile() -> rx.Component:
    """RAM used (total minus available) of the total."""
    return tile(
        rx.hstack(
            rx.text("RAM", style=_label),
            rx.text(SystemState.ram_percent_text, style=_label),
            justify="between",
            width="100%",
        ),
        rx.text(rx.cond(SystemState.ram_text != "", SystemState.ram_text, "—"), style=_value, data_value="ram"),
        spark(SystemState.ram_points, "violet", "RAM used, last minutes"),
        field="ram",
    )


def gpu_tile(gpu: rx.Var[GpuView]) -> rx.Component:
    """One GPU: name, utilisation, memory (labelled unified when shared), temperature, power."""
    return tile(
        rx.hstack(
            rx.text("GPU ", gpu.index.to_string(), style=_label),
            rx.cond(
                gpu.unified_memory,
                rx.badge("unified memory", color_scheme="green", variant="soft", size="1", data_field="unified"),
            ),
            rx.cond(
                SystemState.gpu_stale,
                rx.tooltip(
                    rx.badge("stale", color_scheme="amber", variant="soft", size="1", data_field="gpu-stale"),
                    content="NVML did not answer in time: showing its last reading",
                ),
            ),
            justify="between",
            width="100%",
        ),
        rx.text(gpu.name, style=_sub, title=gpu.name, data_value="gpu-name"),
        rx.hstack(
            rx.text(rx.cond(gpu.utilization_text != "", gpu.utilization_text, "—"), style=_value, data_value="gpu-utilization"),
            rx.cond(
                gpu.temperature_text != "",
                rx.text(
                    gpu.temperature_text,
                    style=_sub,
                    color=rx.match(
                        gpu.temperature_level, ("critical", "var(--red-11)"), ("warning", "var(--amber-11)"), styles.MUTED
                    ),
                    data_value="gpu-temperature",
                    custom_attrs={"data-level": gpu.temperature_level},
                ),
            ),
            rx.cond(gpu.power_text != "", rx.text(gpu.power_text, style=_sub, data_value="gpu-power")),
            spacing="2",
            align="baseline",
        ),
        rx.cond(
            gpu.memory_text != "",
            rx.text(gpu.memory_label, " ", gpu.memory_text, style=_sub, data_value="gpu-memory"),
        ),
        spark(gpu.utilization_points, "green", "GPU utilisation, last minutes"),
        field="gpu",
        custom_attrs={"data-index": gpu.index.to_string()},
    )


def no_gpu_tile() -> rx.Component:
    """Shown where NVML is missing (no driver, no GPU)."""
    return tile(
        rx.text("GPU", style=_label),
        rx.hstack(
            rx.icon("circle_off", size=styles.ICON_SM, color=styles.FAINT),
            rx.text(SystemState.gpu_message, style=_sub, data_value="gpu-none"),
            align="center",
            spacing="2",
        ),
        field="gpu-none",
    )


def system_header() -> rx.Component:
    """The header above the tab, and the memory-pressure banners under it."""
    return rx.box(
        while_connected(SystemState.start_live, "system-live-starter"),
        rx.box(
            cpu_tile(),
            ram_tile(),
            rx.cond(
                SystemState.gpu_available,
                rx.foreach(SystemState.gpus, gpu_tile),
                rx.cond(SystemState.loaded, no_gpu_tile()),
            ),
            style=_row,
        ),
        resources_strip(),
        rx.cond(
            SystemState.containers_text != "",
            rx.hstack(
                rx.icon("container", size=styles.ICON_SM, color=styles.FAINT),
                rx.text(SystemState.containers_text, style=_sub, data_value="containers"),
                align="center",
                spacing="2",
                data_field="containers",
            ),
        ),
        memory_pressure_banner(),
        id="system-header",
        width="100%",
        on_unmount=SystemState.stop_live,
        custom_attrs={"data-loaded": rx.cond(SystemState.loaded, "true", "false")},
    )
