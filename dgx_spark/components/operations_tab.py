"""The Running Operations tab: header, banners and the three sections.

Embed it in any Reflex app::

    from dgx_spark.components.operations_tab import operations_tab
    operations_tab(is_connected=True, connection_id="spark-b")

``connection_id`` names the node the tab shows (``state/node_view.py:connection_node``): "",
``local`` or this machine's host name: this machine (the URL's ``?node=`` and the switcher still
choose); a node's id or name (as added under Nodes): that node; ``all``: every node; anything
else: "Not connected", until a node of that name is added.

It starts its live loop when it mounts (and after a reconnect) and stops it
when it unmounts, and it ships its own keyframes, so the host needs no on_load and no stylesheet.
"""

from __future__ import annotations

import reflex as rx

from dgx_spark import styles
from dgx_spark.components.filters import filter_bar, no_matches
from dgx_spark.components.new_operation import new_operation_button
from dgx_spark.components.nodes import node_banners, unknown_connection
from dgx_spark.components.operations_table import layout_toggle
from dgx_spark.components.section import operation_section, sections
from dgx_spark.components.status import (
    connection_lost,
    not_connected,
    stale_banner,
    while_connected,
)
from dgx_spark.state.nodes import NodesState
from dgx_spark.state.operations import OperationsState


def _plural(count: rx.Var[int], one: str, many: str) -> rx.Component:
    """``1 server`` / ``3 servers``."""
    return rx.text(count, " ", rx.cond(count == 1, one, many), as_="span")


def section_counts() -> rx.Component:
    """``2 servers · 1 job · 4 programs running · 3 ended``: live ones, and how many ended recently."""
    dot = rx.text("·", as_="span", color=styles.FAINT)
    return rx.hstack(
        _plural(OperationsState.server_count, "server", "servers"),
        dot,
        _plural(OperationsState.job_count, "job", "jobs"),
        dot,
        _plural(OperationsState.program_count, "program", "programs"),
        rx.text("running", as_="span"),
        rx.cond(
            OperationsState.ended_count > 0,
            rx.fragment(dot, rx.text(OperationsState.ended_count, " ended", as_="span", id="operations-ended-count")),
        ),
        spacing="2",
        color=styles.MUTED,
        font_size="13px",
        id="operations-counts",
        wrap="wrap",
    )


def live_indicator() -> rx.Component:
    """"Live" with the time of the last change; "Stale" when data cannot be trusted."""
    is_stale = OperationsState.stale | connection_lost
    return rx.hstack(
        rx.box(
            class_name="dgx-status-dot",
            style=styles.status_dot(rx.cond(is_stale, "amber", "green"), ~is_stale),
        ),
        rx.text(rx.cond(is_stale, "Stale", "Live"), as_="span", weight="medium", color="var(--gray-12)"),
        rx.cond(
            OperationsState.last_updated != "",
            rx.hstack(
                rx.text("· updated", as_="span"),
                rx.moment(
                    OperationsState.last_updated,
                    format="HH:mm:ss",
                    local=True,
                    with_title=True,
                    title_format="YYYY-MM-DD HH:mm:ss Z",
                ),
                spacing="1",
                class_name="dgx-live-updated",
            ),
        ),
        style=styles.live_indicator,
        id="live-indicator",
        custom_attrs={"data-stale": rx.cond(is_stale, "true", "false")},
    )


def refresh_button() -> rx.Component:
    """Take a sample now."""
    return rx.tooltip(
        rx.icon_button(
            rx.icon("refresh_cw", size=styles.ICON_MD),
            on_click=OperationsState.refresh,
            variant="soft",
            color_scheme="gray",
            size="2",
            id="refresh",
            aria_label="Refresh now",
        ),
        content="Refresh now",
    )


def tab_header() -> rx.Component:
    """Counts (the title is the tab's), the live indicator and the actions."""
    return rx.flex(
        rx.vstack(
            # The tab already says "Running Operations": the heading is for screen readers only.
            rx.heading("Running Operations", as_="h2", style=styles.visually_hidden, id="operations-heading"),
            section_counts(),
            spacing="1",
        ),
        rx.hstack(live_indicator(), layout_toggle(), refresh_button(), new_operation_button(),
                  style=styles.header_actions),
        style=styles.tab_header,
    )


def filters_row() -> rx.Component:
    """Search, filter chips and sort (state in the URL), and the no-match empty state."""
    return rx.box(
        filter_bar(OperationsState),
        rx.cond(OperationsState.no_matches, no_matches(OperationsState)),
        on_mount=OperationsState.load_filters,
    )


def loading_skeleton() -> rx.Component:
    """Placeholders while the first snapshot is on its way."""
    return rx.box(
        *[rx.skeleton(rx.box(style=styles.skeleton_card), loading=True) for _ in range(3)],
        style=styles.grid,
        id="operations-loading",
    )


def operations_body() -> rx.Component:
    """Banners, the sections (dimmed while stale), and the count of short-lived commands not listed."""
    is_stale = OperationsState.stale | connection_lost
    return rx.box(
        stale_banner(),
        node_banners(),
        rx.cond(
            OperationsState.loading,
            loading_skeleton(),
            rx.box(
                *[operation_section(spec) for spec in sections()],
                style=rx.cond(is_stale, styles.stale_content, styles.fresh_content),
                custom_attrs={"data-stale": rx.cond(is_stale, "true", "false")},
                id="operations-sections",
            ),
        ),
        # Quiet short-lived discovered commands are counted, not listed (events/churn.py).
        rx.cond(
            OperationsState.short_lived != "",
            rx.text(OperationsState.short_lived, size="1", color=styles.MUTED, id="operations-short-lived",
                    style={"margin_top": "8px"}),
        ),
    )


def live_starter() -> rx.Component:
    """Starts the tab's live loop now and again after each reconnect."""
    return while_connected(OperationsState.start_live, "operations-live-starter")


def connection_starter(connection_id: rx.Var[str] | str) -> rx.Component:
    """Maps ``connection_id`` to a node when the tab mounts, after a reconnect, and when it changes."""
    return rx.cond(
        ~connection_lost,
        rx.box(on_mount=NodesState.connect(connection_id), on_unmount=NodesState.disconnect, key=connection_id,
               display="none", id="operations-connection"),
    )


def operations_tab(
    is_connected: rx.Var[bool] | bool = True,
    connection_id: rx.Var[str] | str = "",
) -> rx.Component:
    """The Running Operations tab.

    Args:
        is_connected: Whether the DGX is connected; when not, a clear
            "not connected" state replaces the cards.
        connection_id: Which DGX the tab shows: this machine ("", ``local`` or its host name), a
            node's id or name (as added under Nodes), or ``all``. One that names no node shows
            "not connected" (and the name).

    Returns:
        The tab's component.
    """
    return rx.box(
        rx.el.style(styles.GLOBAL_CSS),
        live_starter(),
        tab_header(),
        filters_row(),
        connection_starter(connection_id),  # after filters_row: it wins over the URL's ?node=
        rx.cond(
            is_connected,
            rx.cond(NodesState.connection_missing != "", unknown_connection(connection_id), operations_body()),
            not_connected(connection_id),
        ),
        id="operations-tab",
        style=styles.tab,
        on_unmount=OperationsState.stop_live,
        custom_attrs={"data-connection-id": connection_id},
    )
