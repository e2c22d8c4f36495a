"""Resource figures of one operation (chips, the idle-GPU badge) and the header's warning banners.

``op`` is a Var of ``dgx_spark.state.view.OperationView``; its ``*_text`` fields
are formatted for people (``12.4 GiB``, ``87 %``) and ``""`` while unknown, and
a chip with an unknown value is not rendered at all.

Stable hooks for tests: chips have ``data-field`` ``cpu``, ``memory``,
``gpu-memory``, ``gpu-utilization``; the badge ``idle-gpu``; banners
``data-testid="memory-pressure"`` (low memory) or ``"system-warning"`` (``disk_full``,
``temperature``) with ``data-kind`` and ``data-level``.
"""

from __future__ import annotations

import reflex as rx

from dgx_spark import styles
from dgx_spark.state.system import SystemState, WarningView
from dgx_spark.state.view import OperationView


def chip(icon: str, label: str, value: rx.Var[str], field: str, hint: str) -> rx.Component:
    """One compact resource figure, hidden while unknown."""
    return rx.cond(
        value != "",
        rx.tooltip(
            rx.badge(
                rx.icon(icon, size=12),
                label,
                rx.text(value, as_="span", weight="medium", data_value=field),
                variant="surface",
                color_scheme="gray",
                size="1",
                data_field=field,
            ),
            content=hint,
        ),
    )


def has_resources(op: rx.Var[OperationView]) -> rx.Var[bool]:
    """Whether any resource figure of ``op`` is known."""
    return (
        (op.cpu_text != "")
        | (op.memory_text != "")
        | (op.gpu_memory_text != "")
        | (op.gpu_utilization_text != "")
    )


def resource_chips(op: rx.Var[OperationView]) -> rx.Component:
    """CPU, RAM, GPU memory and GPU utilisation of an operation (its whole process tree)."""
    return rx.cond(
        has_resources(op),
        rx.hstack(
            chip("cpu", "CPU", op.cpu_text, "cpu", "CPU use of the whole process tree (100 % = one core)"),
            chip("memory_stick", "RAM", op.memory_text, "memory", "Resident memory of the whole process tree"),
            chip(
                "microchip",
                "GPU mem",
                op.gpu_memory_text,
                "gpu-memory",
                "GPU memory held (NVML process lists)",
            ),
            chip(
                "gauge",
                "GPU",
                op.gpu_utilization_text,
                "gpu-utilization",
                "GPU utilisation (per-process samples; 100 % = one whole GPU)",
            ),
            style=styles.chips,
            data_field="resources",
        ),
    )


def idle_gpu_badge(op: rx.Var[OperationView]) -> rx.Component:
    """"idle GPU": the operation holds GPU memory at ~0 % utilisation for a while."""
    return rx.cond(
        op.idle_gpu,
        rx.tooltip(
            rx.badge(
                rx.icon("snowflake", size=12),
                "idle GPU",
                color_scheme="orange",
                variant="soft",
                size="1",
                data_field="idle-gpu",
            ),
            content="Holds GPU memory but has not used the GPU for a while",
        ),
    )


def _banner(warning: rx.Var[WarningView]) -> rx.Component:
    memory = (warning.kind != "disk_full") & (warning.kind != "temperature")
    return rx.callout.root(
        rx.callout.icon(
            rx.match(
                warning.kind,
                ("disk_full", rx.icon("hard_drive", size=styles.ICON_MD)),
                ("temperature", rx.icon("thermometer", size=styles.ICON_MD)),
                rx.icon("triangle_alert", size=styles.ICON_MD),
            )
        ),
        rx.callout.text(warning.message),
        color_scheme=rx.cond(warning.level == "warning", "amber", "red"),
        variant="surface",
        size="1",
        style=styles.banner,
        custom_attrs={
            "data-testid": rx.cond(memory, "memory-pressure", "system-warning"),
            "data-kind": warning.kind,
            "data-level": warning.level,
            "role": "alert",
        },
    )


def memory_pressure_banner() -> rx.Component:
    """The header's warning banners: low memory (what is left, the biggest holders), nearly full disks, heat."""
    return rx.foreach(SystemState.warnings, _banner)
