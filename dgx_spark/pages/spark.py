"""The DGX Spark page: a top bar and a tab bar; "Running Operations" is the first tab.

To add a tab: append a ``SparkTab`` to ``TABS`` (value, label, lucide icon, render).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import reflex as rx

from dgx_spark import styles
from dgx_spark.components.audit_view import audit_view
from dgx_spark.components.login_status import login_status
from dgx_spark.components.nodes import nodes_controls
from dgx_spark.components.notifications import notifications
from dgx_spark.components.operations_tab import operations_tab
from dgx_spark.components.status import connection_lost
from dgx_spark.components.system_header import system_header
from dgx_spark.components.theme_menu import theme_menu
from dgx_spark.components.tips import tip
from dgx_spark.state.operations import OperationsState
from dgx_spark.state.page import SparkPageState

# Connected while the sampler runs (and before the first snapshot says otherwise).
IS_CONNECTED = OperationsState.loading | OperationsState.sampler_running


@dataclasses.dataclass(frozen=True)
class SparkTab:
    """One tab of the page."""

    value: str
    label: str
    icon: str
    render: Callable[[], rx.Component]


TABS: list[SparkTab] = [
    SparkTab(
        "operations",
        "Running Operations",
        "activity",
        lambda: operations_tab(is_connected=IS_CONNECTED, connection_id=SparkPageState.connection_id),
    ),
]


def connection_chip() -> rx.Component:
    """Which machine the page shows, and whether it is reachable.

    On a phone "connected" is read out but not shown (the chip's colour, its tooltip and, once the
    connection drops, the banner say it), so the top bar keeps room for the "Log in" label.
    """
    ok = IS_CONNECTED & ~connection_lost
    return tip(
        rx.badge(
            rx.icon("monitor_cog", size=12, aria_hidden="true"),
            SparkPageState.connection_id,
            rx.text(rx.cond(ok, " connected", " disconnected"), as_="span", color=styles.MUTED,
                    class_name="dgx-phone-sr-only"),
            color_scheme=rx.cond(ok, "green", "red"),
            variant="surface",
            size="2",
            id="connection-status",
            custom_attrs={"data-connected": rx.cond(ok, "true", "false")},
        ),
        rx.cond(ok, "Connected to this dashboard's machine: live data",
                "Disconnected: showing the last data, reconnecting"),
    )


def top_bar() -> rx.Component:
    """Brand; history, notifications, audit log, theme, login and connection."""
    return rx.flex(
        rx.hstack(
            rx.box(rx.icon("cpu", size=styles.ICON_LG), style=styles.brand_mark),
            rx.vstack(
                rx.heading("DGX Spark", size="4", weight="bold", id="title"),
                rx.text("Operations dashboard", size="1", color=styles.MUTED, class_name="dgx-brand-sub"),
                spacing="0",
            ),
            align="center",
            spacing="3",
        ),
        rx.hstack(
            tip(
                rx.link(rx.icon("history", size=styles.ICON_MD, aria_hidden="true"),
                        # A short label where there is room; icon only on a phone (the name stays for screen readers).
                        rx.el.span("History", display=["none", "inline"], class_name="dgx-topbar-label"),
                        href="/history", aria_label="History", id="history-link", color=styles.MUTED,
                        display="inline-flex", align_items="center", gap="4px", size="2"),
                "History of ended operations",
            ),
            notifications(),
            audit_view(),
            theme_menu(),
            login_status(),
            nodes_controls(),
            connection_chip(),
            align="center",
            spacing="3",
            # On a phone the chips wrap to a second line instead of running off the screen.
            wrap="wrap",
            id="top-bar-actions",
        ),
        style=styles.topbar,
    )


def system_section() -> rx.Component:
    """The system header; on a phone folded behind a "System" button (styles.PHONE_COMPACT_CSS)."""
    return rx.box(
        rx.el.style(styles.PHONE_COMPACT_CSS),
        rx.button(
            rx.icon("gauge", size=styles.ICON_SM),
            rx.cond(SparkPageState.system_open, "Hide system (GPU, CPU, memory)", "System: GPU, CPU, memory"),
            rx.icon(rx.cond(SparkPageState.system_open, "chevron_up", "chevron_down"), size=styles.ICON_SM),
            on_click=SparkPageState.toggle_system,
            variant="soft",
            color_scheme="gray",
            size="1",
            id="system-toggle",
            custom_attrs={"aria-expanded": rx.cond(SparkPageState.system_open, "true", "false"),
                          "aria-controls": "system-body"},
        ),
        rx.box(system_header(), id="system-body"),
        id="system-wrap",
        custom_attrs={"data-open": rx.cond(SparkPageState.system_open, "true", "false")},
    )


def index() -> rx.Component:
    """The DGX Spark page."""
    return rx.box(
        rx.box(
            top_bar(),
            system_section(),
            rx.tabs.root(
                rx.tabs.list(
                    *[
                        rx.tabs.trigger(
                            rx.hstack(rx.icon(tab.icon, size=styles.ICON_MD), tab.label, style=styles.tab_trigger),
                            value=tab.value,
                            id=f"tab-{tab.value}",
                        )
                        for tab in TABS
                    ],
                    size="2",
                ),
                *[rx.tabs.content(tab.render(), value=tab.value) for tab in TABS],
                default_value=TABS[0].value,
                width="100%",
            ),
            style=styles.page_inner,
        ),
        style=styles.page,
    )
