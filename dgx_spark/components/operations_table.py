"""The table view of the Operations tab: one dense row per operation, sortable columns.

It renders the same per-section lists as the cards (``OperationsState.servers`` /
``jobs`` / ``programs`` and their ended lists: references resolved with
``card_of``), so it adds no work per tab: the
layout toggle (``layout_toggle``, state in ``state/layout.py``) only swaps which
component draws them. Columns: type, name (with the outcome of an ended one),
status, port / progress / PID, CPU, RAM, GPU memory, uptime, and the same action
buttons as a card. Headers sort with the filter bar's sort keys (the URL's
``sort`` / ``order``).

Keyboard: each row is focusable (Tab); Arrow Up / Down, Home and End move between
rows, Enter opens the row's logs (``components/keyboard.py``).

Stable hooks for tests: the row is ``id="row-<operation id>"`` with ``data-id``,
``data-type``, ``data-status``, ``data-op-row``; cells have ``data-field`` names
(``name``, ``status``, ``detail``, ``cpu``, ``memory``, ``gpu-memory``, ``uptime``,
``actions``); a sortable header has a button ``data-sort="<key>"`` and ``aria-sort``
on its cell; the toggle is ``#layout-toggle`` with ``#layout-cards`` / ``#layout-table``.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import reflex as rx

from dgx_spark import styles
from dgx_spark.components.keyboard import install_keyboard
from dgx_spark.components.operation_actions import operation_actions
from dgx_spark.components.operation_card import TICK_MS, card_badges
from dgx_spark.components.status import status_indicator
from dgx_spark.state.layout import LayoutState
from dgx_spark.state.operations import OperationsState, card_of, keyed
from dgx_spark.state.view import OperationView


@dataclasses.dataclass(frozen=True)
class Column:
    """One column: its header, the sort key its header uses (None: not sortable), and width."""

    key: str
    label: str
    sort: str | None = None
    width: str = "auto"
    numeric: bool = False
    # The uptime column sorts by start time: oldest start = longest uptime.
    inverted: bool = False
    # Shown to screen readers only (the header of the type icons).
    hidden_label: bool = False


COLUMNS: tuple[Column, ...] = (
    Column("type", "Type", width="34px", hidden_label=True),
    Column("name", "Name", sort="name"),
    Column("status", "Status", sort="status", width="112px"),
    Column("detail", "Port · progress · PID", width="190px"),
    Column("cpu", "CPU", sort="cpu", width="70px", numeric=True),
    Column("memory", "RAM", sort="memory", width="86px", numeric=True),
    Column("gpu-memory", "GPU mem", sort="gpu_memory", width="92px", numeric=True),
    Column("uptime", "Uptime", sort="started_at", width="100px", numeric=True, inverted=True),
    Column("actions", "Actions", width="262px"),
)


def _aria_sort(column: Column) -> rx.Var[str] | str:
    """``ascending`` / ``descending`` on the column that sorts now, ``none`` elsewhere."""
    if column.sort is None:
        return "none"
    ascending = OperationsState.order == "asc"
    shown_ascending = ~ascending if column.inverted else ascending
    return rx.cond(
        OperationsState.sort == column.sort,
        rx.cond(shown_ascending, "ascending", "descending"),
        "none",
    )


def header_cell(column: Column) -> rx.Component:
    """A column header; a sortable one is a button that sorts by it (again: reverses)."""
    style = styles.table_th_numeric if column.numeric else styles.table_th
    if column.hidden_label:
        return rx.el.th(rx.el.span(column.label, style=styles.visually_hidden), scope="col", style=style)
    if column.sort is None:
        return rx.el.th(column.label, scope="col", style=style)
    aria_sort = _aria_sort(column)
    icon = rx.match(
        aria_sort,
        ("ascending", rx.icon("chevron_up", size=12, aria_hidden="true")),
        ("descending", rx.icon("chevron_down", size=12, aria_hidden="true")),
        rx.icon("chevrons_up_down", size=12, aria_hidden="true", style=styles.table_sort_idle),
    )
    return rx.el.th(
        rx.el.button(
            column.label,
            icon,
            type="button",
            on_click=OperationsState.sort_column(column.sort),
            style=styles.table_sort_button,
            title=f"Sort by {column.label}",
            custom_attrs={"data-sort": column.sort},
        ),
        scope="col",
        style=style,
        custom_attrs={"aria-sort": aria_sort},
    )


def _type_cell(op: rx.Var[OperationView]) -> rx.Component:
    """The type's icon in a small tinted square; the type's name for screen readers."""
    icon = rx.match(
        op.type,
        *[
            (kind, rx.box(rx.icon(name, size=styles.ICON_SM), style=styles.table_type_icon(styles.TYPE_COLORS[kind])))
            for kind, name in styles.TYPE_ICONS.items()
        ],
        rx.box(rx.icon("activity", size=styles.ICON_SM), style=styles.table_type_icon("gray")),
    )
    return rx.el.td(icon, rx.el.span(op.type, style=styles.visually_hidden), title=op.type, style=styles.table_td)


def _name_cell(op: rx.Var[OperationView]) -> rx.Component:
    """Name, then the outcome of an ended one or the description, on one line (full text on hover)."""
    description = rx.cond(op.description != "", op.description, op.command)
    return rx.el.td(
        rx.hstack(
            rx.text(op.name, as_="span", style=styles.table_name, data_field="name"),
            rx.cond(
                op.outcome_text != "",
                rx.text(
                    op.outcome_text,
                    as_="span",
                    title=op.outcome_title,
                    style=styles.table_sub,
                    color=rx.match(op.outcome, ("failed", "var(--red-11)"), ("completed", "var(--green-11)"),
                                   styles.MUTED),
                    data_field="outcome",
                    custom_attrs={"data-outcome": op.outcome},
                ),
                rx.text(description, as_="span", style=styles.table_sub),
            ),
            card_badges(op),
            style=styles.table_name_line,
        ),
        title=op.name + rx.cond(description != "", " — " + description, ""),
        style=styles.table_td,
    )


def _job_progress(op: rx.Var[OperationView]) -> rx.Component:
    """A job's progress: a thin bar, the percent and the epoch; its PID until progress is known."""
    percent = op.progress_percent
    return rx.cond(
        percent.is_not_none(),
        rx.hstack(
            rx.progress(
                value=percent.to(int),
                max=100,
                size="1",
                color_scheme=rx.cond(op.stalled, "amber", "green"),
                width="56px",
                aria_label="progress of " + op.name,
                data_field="progress-bar",
                custom_attrs={"data-value": percent.to(str)},
            ),
            rx.text(percent.to(str) + " %", as_="span"),
            rx.cond(op.epoch_text != "", rx.text(op.epoch_text, as_="span", color=styles.MUTED)),
            style=styles.table_inline,
        ),
        _pid(op),
    )


def _pid(op: rx.Var[OperationView]) -> rx.Component:
    """PID and the size of the process tree."""
    return rx.hstack(
        rx.text("PID ", rx.cond(op.pid, op.pid, "—"), as_="span", data_value="pid"),
        rx.cond(op.process_count > 1, rx.text("· " + op.process_count.to_string() + " processes", as_="span",
                                                 color=styles.MUTED, data_field="process-count")),
        style=styles.table_inline,
    )


def _server_port(op: rx.Var[OperationView]) -> rx.Component:
    """A server's port and its Open link."""
    return rx.cond(
        op.port,
        rx.hstack(
            rx.text(":", op.port, as_="span", data_value="port"),
            rx.cond(
                op.live,
                rx.link(
                    "Open",
                    href=op.url,
                    is_external=True,
                    rel="noopener noreferrer",
                    style=styles.open_link,
                    data_field="open",
                    aria_label="Open " + op.name + " in a new tab",
                ),
            ),
            style=styles.table_inline,
        ),
        rx.text("not listening yet", as_="span", color=styles.MUTED),
    )


def _detail_cell(op: rx.Var[OperationView]) -> rx.Component:
    """Port (servers), progress (jobs) or PID (programs)."""
    return rx.el.td(
        rx.match(op.type, ("server", _server_port(op)), ("job", _job_progress(op)), _pid(op)),
        style=styles.table_td,
        data_field="detail",
    )


def _figure_cell(value: rx.Var[str], field: str) -> rx.Component:
    """A right-aligned figure; a faint dash while unknown."""
    return rx.el.td(
        rx.cond(value != "", value, rx.text("—", as_="span", color=styles.MUTED, aria_label="unknown")),
        style=styles.table_td_numeric,
        data_field=field,
    )


def _uptime_cell(op: rx.Var[OperationView]) -> rx.Component:
    """Uptime ticking in the browser while live; the final run time once ended."""
    return rx.el.td(
        rx.cond(
            op.live & (op.started_at != ""),
            rx.moment(op.started_at, duration_from_now=True, format=op.uptime_format, trim=True, interval=TICK_MS),
            rx.text(rx.cond(op.uptime_text != "", op.uptime_text, "—"), as_="span"),
        ),
        title=rx.cond(op.started_at != "", "started " + op.started_at, ""),
        style=styles.table_td_numeric,
        data_field="uptime",
    )


def table_row(op: rx.Var[OperationView]) -> rx.Component:
    """One operation as a focusable row (Enter: its logs)."""
    return rx.el.tr(
        _type_cell(op),
        _name_cell(op),
        rx.el.td(status_indicator(op.status, op.live), style=styles.table_td),
        _detail_cell(op),
        _figure_cell(op.cpu_text, "cpu"),
        _figure_cell(op.memory_text, "memory"),
        _figure_cell(op.gpu_memory_text, "gpu-memory"),
        _uptime_cell(op),
        rx.el.td(rx.hstack(*operation_actions(op), style=styles.table_actions), style=styles.table_td,
                 data_field="actions"),
        id="row-" + op.id,
        tab_index=0,
        style=styles.table_row,
        opacity=rx.cond(op.live, "1", styles.ENDED_OPACITY),
        custom_attrs={
            "data-op-row": "true",
            "data-id": op.id,
            "data-type": op.type,
            "data-status": op.status,
            "aria-label": op.name + ", " + op.status,
        },
    )


@rx.memo
def memo_row(op: rx.Var[OperationView]) -> rx.Component:
    """A row rendered again only when its operation's data changes (its shard's object is new)."""
    return table_row(op)


def operations_table(key: str, title: str, items: rx.Var, ended: rx.Var | None = None) -> rx.Component:
    """One section's operations as a table: live rows first, then ended ones.

    Args:
        key: The section's key (``servers`` / ``jobs`` / ``programs``), for ids.
        title: The section's title (the table's accessible name).
        items: The section's list var of references to its live cards (``CardRef``).
        ended: The section's list var of references to its ended ones, if the state keeps them apart.

    Returns:
        The table, scrolling sideways on narrow screens.
    """
    bodies: list[Any] = [rx.foreach(items, lambda ref: keyed(memo_row(op=card_of(ref)), ref))]
    if ended is not None:
        bodies.append(rx.foreach(ended, lambda ref: keyed(memo_row(op=card_of(ref)), ref)))
    return rx.box(
        rx.el.table(
            rx.el.caption(
                f"{title}. Enter on a row opens its logs; arrow keys move between rows; headers sort.",
                style=styles.visually_hidden,
            ),
            rx.el.colgroup(*[rx.el.col(style={"width": column.width}) for column in COLUMNS]),
            rx.el.thead(rx.el.tr(*[header_cell(column) for column in COLUMNS]), style=styles.table_head),
            rx.el.tbody(*bodies),
            id=f"table-{key}",
            style=styles.table,
        ),
        style=styles.table_scroll,
        on_mount=install_keyboard(),
    )


def layout_toggle() -> rx.Component:
    """Cards or table (kept in the URL's ``view`` and in localStorage); loads the choice when it mounts."""
    return rx.segmented_control.root(
        rx.segmented_control.item(
            rx.hstack(rx.icon("layout_grid", size=styles.ICON_SM, aria_hidden="true"), "Cards", spacing="1",
                      align="center"),
            value="cards",
            id="layout-cards",
        ),
        rx.segmented_control.item(
            rx.hstack(rx.icon("table_2", size=styles.ICON_SM, aria_hidden="true"), "Table", spacing="1",
                      align="center"),
            value="table",
            id="layout-table",
        ),
        value=LayoutState.layout,
        on_change=LayoutState.set_layout,
        size="2",
        id="layout-toggle",
        aria_label="Layout",
        on_mount=[LayoutState.load_layout, install_keyboard()],
        custom_attrs={"data-layout": LayoutState.layout},
    )
