"""The filter bar: search box, type and status chips, sort select and order.

``filter_bar(State)`` works with any state built on ``FilterMixin`` (the
Operations tab's ``OperationsState``, the History view's ``HistoryState``); every
change is written to the URL query by the state.
"""

from __future__ import annotations

import reflex as rx

from dgx_spark import styles

TYPE_CHIPS: list[tuple[str, str]] = [("server", "Servers"), ("job", "Jobs"), ("program", "Programs")]
STATUS_CHIPS: list[tuple[str, str]] = [(s, styles.STATUS_LABELS[s]) for s in styles.STATUS_LABELS]
SORT_OPTIONS: list[tuple[str, str]] = [
    ("none", "Default order"),
    ("status", "Status"),
    ("started_at", "Start time"),
    ("name", "Name"),
    ("cpu", "CPU"),
    ("memory", "Memory"),
    ("gpu_memory", "GPU memory"),
]


def _chip(state: type[rx.State], group: str, value: str, label: str) -> rx.Component:
    selected = getattr(state, f"selected_{group}").contains(value)
    toggle = getattr(state, "toggle_type" if group == "types" else "toggle_status")
    return rx.button(
        label,
        size="1",
        radius="full",
        variant=rx.cond(selected, "solid", "outline"),
        color_scheme=rx.cond(selected, "green", "gray"),
        on_click=toggle(value),
        aria_pressed=rx.cond(selected, "true", "false"),
        id=f"filter-{group}-{value}",
        class_name="dgx-filter-chip",
    )


def filter_bar(
    state: type[rx.State],
    statuses: list[str] | None = None,
    sorts: list[tuple[str, str]] | None = None,
) -> rx.Component:
    """Search, chips and sort for ``state`` (a ``FilterMixin`` state).

    Args:
        state: The state class holding the filters.
        statuses: The status chips to offer (default: every status).
        sorts: The sort options (value, label); default ``SORT_OPTIONS``.

    Returns:
        The bar.
    """
    status_chips = [(v, lbl) for v, lbl in STATUS_CHIPS if statuses is None or v in statuses]
    return rx.flex(
        rx.input(
            rx.input.slot(rx.icon("search", size=styles.ICON_SM)),
            value=state.q,
            on_change=state.set_search.debounce(300),
            placeholder="Search name, command, port or PID",
            aria_label="Search operations",
            id="filter-search",
            size="2",
            max_length=200,
            min_width="220px",
            flex="1",
        ),
        rx.hstack(
            *[_chip(state, "types", v, lbl) for v, lbl in TYPE_CHIPS],
            spacing="1",
            wrap="wrap",
            role="group",
            aria_label="Filter by type",
        ),
        rx.hstack(
            *[_chip(state, "statuses", v, lbl) for v, lbl in status_chips],
            spacing="1",
            wrap="wrap",
            role="group",
            aria_label="Filter by status",
        ),
        rx.hstack(
            rx.select.root(
                rx.select.trigger(placeholder="Sort", aria_label="Sort by", id="filter-sort"),
                rx.select.content(*[rx.select.item(lbl, value=v) for v, lbl in (sorts or SORT_OPTIONS)]),
                value=rx.cond(state.sort == "", "none", state.sort),
                on_change=state.choose_sort,
                size="2",
            ),
            rx.tooltip(
                rx.icon_button(
                    rx.cond(state.order == "asc", rx.icon("arrow_up_narrow_wide", size=styles.ICON_MD),
                            rx.icon("arrow_down_wide_narrow", size=styles.ICON_MD)),
                    on_click=state.flip_order,
                    variant="soft",
                    color_scheme="gray",
                    size="2",
                    id="filter-order",
                    aria_label=rx.cond(state.order == "asc", "Ascending", "Descending"),
                    custom_attrs={"data-order": state.order},
                ),
                content=rx.cond(state.order == "asc", "Ascending", "Descending"),
            ),
            spacing="1",
        ),
        gap="8px",
        wrap="wrap",
        align="center",
        width="100%",
        id="filter-bar",
        padding_y="8px",
    )


def no_matches(state: type[rx.State], what: str = "operations") -> rx.Component:
    """The empty state when filters hide everything, with a way out."""
    return rx.callout.root(
        rx.callout.icon(rx.icon("search_x")),
        rx.callout.text(
            rx.hstack(
                rx.text(f"No {what} match the search and filters."),
                rx.button("Clear filters", size="1", variant="soft", on_click=state.clear_filters,
                          id="clear-filters"),
                align="center",
                wrap="wrap",
            )
        ),
        color_scheme="gray",
        id="no-matches",
        width="100%",
        margin_y="8px",
    )
