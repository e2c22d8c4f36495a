"""One operation's card, built from small parts.

Extension slots (each a small function; fill it with a small edit):
- ``card_actions(op)``: the footer row of action buttons (Stop, Start again, Logs...).
- ``resource_chips(op)``: the row of CPU / RAM / GPU chips.
- ``job_progress(op)``: the progress block of training jobs (bar, epoch, loss, ETA...).
- ``card_badges(op)``: small badges next to the status (stalled, idle GPU...).
``op`` is a Var of ``dgx_spark.state.view.OperationView``: add a field there to read it here.

Stable hooks for tests: the card is ``id="op-<operation id>"`` with ``data-id``,
``data-type``, ``data-status``, ``data-pid`` and ``data-port``; parts have
``data-field`` names (``port``, ``pid``, ``open``, ``started``, ``uptime``, ``outcome``...).
"""

from __future__ import annotations

import reflex as rx

from dgx_spark import styles
from dgx_spark.components.job_progress import job_progress_block
from dgx_spark.components.nodes import node_chip
from dgx_spark.components.operation_actions import ended_actions, operation_actions
from dgx_spark.components.resources import idle_gpu_badge, resource_chips
from dgx_spark.components.status import status_indicator
from dgx_spark.state.view import OperationView

# Uptime ticks in the browser (react-moment), once a second, with no server traffic;
# its format comes with the view (seconds while under a day).
TICK_MS = 1000
# Start time in the browser's zone: the time today, the day and time before.
STARTED_CALENDAR = {
    "sameDay": "HH:mm",
    "lastDay": "[yesterday] HH:mm",
    "lastWeek": "ddd HH:mm",
    "sameElse": "MMM D, HH:mm",
    "nextDay": "MMM D, HH:mm",
    "nextWeek": "MMM D, HH:mm",
}


def type_icon(op: rx.Var[OperationView]) -> rx.Component:
    """The lucide icon of the operation's type in a tinted square."""
    return rx.match(
        op.type,
        *[
            (kind, rx.box(rx.icon(icon, size=styles.ICON_LG), style=styles.type_icon_box(styles.TYPE_COLORS[kind])))
            for kind, icon in styles.TYPE_ICONS.items()
        ],
        rx.box(rx.icon("activity", size=styles.ICON_LG), style=styles.type_icon_box("gray")),
    )


def card_badges(op: rx.Var[OperationView]) -> rx.Component:
    """Small badges beside the status (extension slot: stalled, idle GPU...)."""
    return rx.fragment(
        rx.cond(
            op.stalled,
            rx.badge("stalled", color_scheme="amber", variant="soft", size="1", data_field="stalled"),
        ),
        idle_gpu_badge(op),
        node_chip(op),
    )


def card_header(op: rx.Var[OperationView]) -> rx.Component:
    """Type icon, name, one-line description (full text on hover) and status."""
    description = rx.cond(op.description != "", op.description, op.command)
    return rx.hstack(
        type_icon(op),
        rx.vstack(
            rx.text(op.name, title=op.name, style=styles.card_name, data_field="name"),
            rx.cond(
                description != "",
                rx.text(description, title=description, style=styles.ellipsis, data_field="description"),
                rx.text(op.type, style=styles.ellipsis),
            ),
            style=styles.card_titles,
        ),
        rx.vstack(
            status_indicator(op.status, op.live),
            rx.hstack(card_badges(op), spacing="1"),
            align="end",
            spacing="1",
        ),
        style=styles.card_head,
    )


def detail(label: str, value: rx.Component | rx.Var | str, field: str) -> rx.Component:
    """One labelled value in the card's details grid."""
    return rx.vstack(
        rx.text(label, style=styles.detail_label),
        rx.box(value, style=styles.detail_value),
        spacing="0",
        min_width="0",
        align="stretch",
        data_field=field,
    )


def server_details(op: rx.Var[OperationView]) -> rx.Component:
    """A server's port and an "Open" link to it (new tab)."""
    return rx.cond(
        op.port,
        detail(
            "Port",
            rx.hstack(
                rx.text(op.port, as_="span", data_value="port"),
                rx.cond(
                    op.live,
                    rx.link(
                        "Open",
                        rx.icon("external_link", size=12),
                        href=op.url,
                        is_external=True,
                        rel="noopener noreferrer",
                        style=styles.open_link,
                        data_field="open",
                        aria_label="Open " + op.name + " in a new tab",
                    ),
                ),
                spacing="2",
                align="center",
            ),
            "port",
        ),
        detail("Port", rx.text("not listening yet", color=styles.FAINT), "port"),
    )


def pid_detail(op: rx.Var[OperationView]) -> rx.Component:
    """The main process id, and how many processes the operation holds."""
    return detail(
        "PID",
        rx.hstack(
            rx.text(rx.cond(op.pid, op.pid, "—"), as_="span", data_value="pid"),
            rx.cond(
                op.process_count > 1,
                rx.text("· " + op.process_count.to_string() + " processes", as_="span", color=styles.FAINT,
                        data_field="process-count"),
            ),
            spacing="2",
        ),
        "pid",
    )


def started_detail(op: rx.Var[OperationView]) -> rx.Component:
    """Start time in the browser's zone (full timestamp on hover) and how long ago."""
    return detail(
        "Started",
        rx.cond(
            op.started_at != "",
            rx.vstack(
                rx.moment(
                    op.started_at,
                    calendar=STARTED_CALENDAR,
                    local=True,
                    with_title=True,
                    title_format="YYYY-MM-DD HH:mm:ss Z",
                ),
                rx.moment(op.started_at, from_now=True, interval=TICK_MS, style=styles.detail_sub),
                spacing="0",
            ),
            "—",
        ),
        "started",
    )


def uptime_detail(op: rx.Var[OperationView]) -> rx.Component:
    """Uptime, ticking in the browser while live; the final run time once ended."""
    return detail(
        rx.cond(op.live, "Uptime", "Ran for"),
        rx.cond(
            op.live & (op.started_at != ""),
            rx.moment(
                op.started_at,
                duration_from_now=True,
                format=op.uptime_format,
                trim=True,
                interval=TICK_MS,
            ),
            rx.text(rx.cond(op.uptime_text != "", op.uptime_text, "—"), as_="span"),
        ),
        "uptime",
    )


def exit_detail(op: rx.Var[OperationView]) -> rx.Component:
    """The exit code of an ended operation, when known."""
    return rx.cond(
        ~op.live & op.exit_code.is_not_none(),
        detail("Exit code", rx.text(op.exit_code, as_="span"), "exit-code"),
    )


def runs_detail(op: rx.Var[OperationView]) -> rx.Component:
    """Which run this is and the restart policy's restarts, once it has run more than once."""
    return rx.cond(op.runs_text != "", detail("Runs", rx.text(op.runs_text, as_="span"), "runs"))


OUTCOME_COLORS = {"failed": "var(--red-11)", "completed": "var(--green-11)", "stopped": styles.MUTED}


def outcome_line(op: rx.Var[OperationView]) -> rx.Component:
    """How an ended operation ended, and why ("Likely ..." when inferred; the source on hover)."""
    return rx.cond(
        op.outcome_text != "",
        rx.text(
            op.outcome_text,
            title=op.outcome_title,
            style=styles.ellipsis,
            color=rx.match(op.outcome, *OUTCOME_COLORS.items(), styles.MUTED),
            font_size="var(--font-size-1)",
            data_field="outcome",
            custom_attrs={"data-outcome": op.outcome, "data-outcome-source": op.outcome_source},
        ),
    )


def service_line(op: rx.Var[OperationView]) -> rx.Component:
    """What a known server serves, in one line (where and when it was read on hover)."""
    return rx.cond(
        op.service_text != "",
        rx.hstack(
            rx.icon("info", size=12, color=styles.MUTED, flex_shrink="0"),
            rx.text(op.service_text, style=styles.ellipsis, data_value="service"),
            spacing="1",
            align="center",
            min_width="0",
            title=op.service_title,
            font_size="var(--font-size-1)",
            color=styles.MUTED,
            data_field="service",
        ),
    )


def type_details(op: rx.Var[OperationView]) -> rx.Component:
    """The details that depend on the type: port for servers, PID for the others."""
    return rx.match(
        op.type,
        ("server", rx.fragment(server_details(op), pid_detail(op))),
        pid_detail(op),
    )


def container_detail(op: rx.Var[OperationView]) -> rx.Component:
    """The container it runs in; why the engine cannot control it, when it cannot."""
    return rx.cond(
        op.container_text != "",
        detail(
            "Container",
            rx.text(
                op.container_text,
                rx.cond(op.container_control != "", " · no control", ""),
                as_="span",
                title=rx.cond(op.container_control != "", op.container_control, op.container_text),
                style=styles.ellipsis,
                data_value="container",
            ),
            "container",
        ),
    )


def card_details(op: rx.Var[OperationView]) -> rx.Component:
    """Details grid: type-specific first, then start time and uptime for all."""
    return rx.box(
        type_details(op),
        container_detail(op),
        started_detail(op),
        uptime_detail(op),
        exit_detail(op),
        runs_detail(op),
        style=styles.details,
    )


def job_progress(op: rx.Var[OperationView]) -> rx.Component:
    """A job's progress block: bar, percent, epoch, loss sparkline, ETA, source (extension slot)."""
    return job_progress_block(op)


def card_actions(op: rx.Var[OperationView]) -> rx.Component:
    """The footer row of action buttons (extension slot: Stop, Start again, Logs, Remove).

    Return the buttons wrapped in ``card_footer(...)``; nothing renders while empty.
    """
    # A remote node's card has the same buttons: the backend sends each action on to its node.
    return card_footer(*operation_actions(op))


def card_footer(*buttons: rx.Component) -> rx.Component:
    """The footer row that holds a card's action buttons."""
    return rx.hstack(*buttons, style=styles.card_footer, data_field="actions")


def operation_card(op: rx.Var[OperationView]) -> rx.Component:
    """The card of one operation."""
    return rx.box(
        card_header(op),
        card_details(op),
        service_line(op),
        outcome_line(op),
        job_progress(op),
        resource_chips(op),
        card_actions(op),
        id="op-" + op.id,
        style=styles.card,
        opacity=rx.cond(op.live, "1", styles.ENDED_OPACITY),
        custom_attrs={
            "data-id": op.id,
            "data-type": op.type,
            "data-status": op.status,
            "data-pid": op.pid.to(str),
            "data-port": op.port.to(str),
            "data-testid": "operation-card",
        },
    )


ENDED_DOT_COLORS = {"failed": "red", "completed": "green", "stopped": "gray"}


def ended_row(op: rx.Var[OperationView]) -> rx.Component:
    """One line of a section's "Recently ended" strip: outcome dot, name, why, when, and its buttons.

    It keeps the card's hooks (``id="op-<id>"``, ``data-status``, ``data-field="outcome"``,
    ``data-action``...), so an operation is found the same way before and after it ends.
    """
    outcome = rx.cond(op.outcome != "", op.outcome, op.status)
    why = rx.cond(op.outcome_text != "", op.outcome_text, rx.match(op.status, *styles.STATUS_LABELS.items(), op.status))
    return rx.box(
        rx.box(
            class_name="dgx-status-dot",
            style=styles.status_dot(rx.match(outcome, *ENDED_DOT_COLORS.items(), "gray"), False),
            title=outcome,
            aria_hidden="true",
        ),
        rx.hstack(
            rx.text(op.name, title=op.name + " (" + op.id + ")", style=styles.ended_name, data_field="name"),
            node_chip(op),  # All nodes / another node: whose it is
            spacing="1",
            align="center",
            min_width="0",
        ),
        rx.text(
            why,
            title=rx.cond(op.outcome_title != "", op.outcome_title, why),
            style=styles.ended_reason,
            color=rx.match(op.outcome, *OUTCOME_COLORS.items(), styles.MUTED),
            data_field="outcome",
            custom_attrs={"data-outcome": op.outcome, "data-outcome-source": op.outcome_source},
        ),
        rx.text(
            rx.cond(
                op.ended_at != "",
                rx.fragment(
                    "ended ",
                    rx.moment(op.ended_at, from_now=True, interval=TICK_MS * 30, with_title=True,
                              title_format="YYYY-MM-DD HH:mm:ss Z", local=True),
                ),
                "ended",
            ),
            style=styles.ended_time,
            data_field="ended",
        ),
        # A remote node's ended operation too: its node does what these buttons ask.
        rx.hstack(*ended_actions(op), style=styles.ended_actions, data_field="actions"),
        id="op-" + op.id,
        role="listitem",
        style=styles.ended_row,
        custom_attrs={
            "data-id": op.id,
            "data-type": op.type,
            "data-status": op.status,
            "data-pid": op.pid.to(str),
            "data-port": op.port.to(str),
            "data-testid": "operation-card",
            "data-layout": "ended-row",
        },
    )
