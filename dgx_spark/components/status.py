"""Status dot, connection/staleness banners and the not-connected state."""

from __future__ import annotations

import reflex as rx
from reflex_components_core.core.banner import has_connection_errors

from dgx_spark import styles
from dgx_spark.state.operations import OperationsState


def status_color(status: rx.Var[str]) -> rx.Var[str]:
    """The Radix colour scale for a status (green / amber / red / gray)."""
    return rx.match(status, *styles.STATUS_COLORS.items(), "gray")


def status_label(status: rx.Var[str]) -> rx.Var[str]:
    """The status word shown next to the dot."""
    return rx.match(status, *styles.STATUS_LABELS.items(), status)


def status_indicator(status: rx.Var[str], live: rx.Var[bool]) -> rx.Component:
    """A colour-coded dot (pulsing while live) and the status word, readable by screen readers."""
    color = status_color(status)
    return rx.hstack(
        rx.box(class_name="dgx-status-dot", style=styles.status_dot(color, live), aria_hidden="true"),
        rx.text(status_label(status), as_="span", style={"color": f"var(--{color}-11)"}),
        style=styles.status_pill,
        # The word is plain text (the dot is hidden from screen readers), not a live
        # region: a page of cards announcing every tick would drown the reader.
        custom_attrs={"data-field": "status", "data-status": status},
    )


# The websocket to the backend dropped: what is shown is the last data received.
connection_lost = has_connection_errors


def while_connected(on_start: rx.EventHandler | rx.event.EventSpec, id: str) -> rx.Component:
    """An invisible element that fires ``on_start`` on mount and after every reconnect.

    It is unmounted while the websocket is down, so a reconnect (or a restarted
    backend) remounts it: use it to (re)start a per-tab background loop, which
    should supersede an older loop of the same tab (see ``dgx_spark.state.loops``).
    """
    return rx.cond(~connection_lost, rx.box(on_mount=on_start, display="none", id=id))


def stale_banner() -> rx.Component:
    """Banners for a dropped connection, a stopped sampler, a degraded database and failing probes."""
    return rx.fragment(
        rx.cond(
            connection_lost,
            rx.callout.root(
                rx.callout.icon(rx.icon("wifi_off", size=styles.ICON_MD)),
                rx.callout.text(
                    "Connection to the dashboard lost. Showing the last data received "
                    "(marked stale); reconnecting…"
                ),
                color_scheme="red",
                variant="surface",
                size="1",
                id="banner-disconnected",
                style=styles.banner,
            ),
        ),
        rx.cond(
            OperationsState.stale & ~connection_lost,
            rx.callout.root(
                rx.callout.icon(rx.icon("clock_alert", size=styles.ICON_MD)),
                rx.callout.text(
                    "Data is stale: the sampler has not reported a fresh snapshot. "
                    "The last known state is shown."
                ),
                color_scheme="amber",
                variant="surface",
                size="1",
                id="banner-stale",
                style=styles.banner,
            ),
        ),
        rx.cond(
            OperationsState.database_error != "",
            rx.callout.root(
                rx.callout.icon(rx.icon("database", size=styles.ICON_MD)),
                rx.callout.text(rx.text.strong("The database is unavailable. "), OperationsState.database_error),
                color_scheme="red",
                variant="surface",
                size="1",
                id="banner-database",
                role="alert",
                style=styles.banner,
            ),
        ),
        rx.cond(
            OperationsState.error != "",
            rx.callout.root(
                rx.callout.icon(rx.icon("triangle_alert", size=styles.ICON_MD)),
                rx.callout.text(
                    rx.text.strong("Some readings failed. "),
                    "Other data keeps updating. ",
                    rx.code(OperationsState.error, variant="ghost", size="1"),
                ),
                color_scheme="amber",
                variant="surface",
                size="1",
                id="banner-error",
                style=styles.banner,
            ),
        ),
    )


def not_connected(connection_id: rx.Var[str] | str) -> rx.Component:
    """What the tab shows instead of cards when the DGX is not connected."""
    return rx.vstack(
        rx.box(rx.icon("unplug", size=22), style=styles.empty_icon),
        rx.heading("Not connected", size="4"),
        rx.text(
            "The dashboard is not receiving data from ",
            rx.cond(connection_id, rx.code(connection_id), "this machine"),
            ". Operations appear here as soon as the connection is back.",
            size="2",
            color=styles.MUTED,
            max_width="460px",
        ),
        id="operations-not-connected",
        style=styles.not_connected,
    )
