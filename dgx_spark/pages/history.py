"""The History page (``/history``): ended operations with the same search and filters.

Its search, filters and sort live in the URL query like the live view's.
"""

from __future__ import annotations

import reflex as rx

from dgx_spark import styles
from dgx_spark.components.filters import SORT_OPTIONS, filter_bar, no_matches
from dgx_spark.components.notifications import KIND_COLORS, notifications
from dgx_spark.components.theme_menu import theme_menu
from dgx_spark.state.history import HistoryState

HISTORY_SORTS = [("none", "Ended (newest first)"), ("ended_at", "End time"), *SORT_OPTIONS[1:]]


def history_row(row: rx.Var[dict[str, str]]) -> rx.Component:
    """One ended operation."""
    return rx.table.row(
        rx.table.cell(
            rx.vstack(
                rx.hstack(
                    rx.text(row["name"], weight="medium", title=row["id"]),
                    rx.cond(row["run"] != "1", rx.badge("run ", row["run"], variant="surface", size="1",
                                                        class_name="dgx-history-run")),
                    spacing="2",
                    align="center",
                ),
                rx.text(row["command"], size="1", color=styles.MUTED, title=row["command"],
                        style={"max_width": "360px", "overflow": "hidden", "text_overflow": "ellipsis",
                               "white_space": "nowrap"}),
                spacing="0",
            ),
            custom_attrs={"data-label": "Operation"},
        ),
        rx.table.cell(rx.badge(row["type"], variant="surface", color_scheme="gray"),
                      custom_attrs={"data-label": "Type"}),
        rx.table.cell(
            rx.vstack(
                rx.badge(row["outcome_label"], color_scheme=rx.match(row["outcome"], *KIND_COLORS.items(), "gray"),
                         variant="soft", title=row["outcome_title"], class_name="dgx-history-outcome"),
                # Why it ended ("Likely failed: CUDA out of memory" when inferred); the badge's hover says
                # where that came from, the line's the whole line.
                rx.cond(
                    row["outcome_text"] != "",
                    rx.text(row["outcome_text"], size="1", color=styles.MUTED, class_name="dgx-history-reason",
                            title=row["outcome_text"],
                            style={"max_width": "280px", "overflow": "hidden", "text_overflow": "ellipsis",
                                   "white_space": "nowrap"}),
                ),
                spacing="1",
            ),
            custom_attrs={"data-label": "Outcome"},
        ),
        rx.table.cell(rx.moment(row["started_at"], format="YYYY-MM-DD HH:mm:ss", local=True),
                      custom_attrs={"data-label": "Started"}),
        rx.table.cell(rx.moment(row["ended_at"], format="YYYY-MM-DD HH:mm:ss", local=True),
                      custom_attrs={"data-label": "Ended"}),
        rx.table.cell(row["duration"], custom_attrs={"data-label": "Duration"}),
        rx.table.cell(row["exit_code"], custom_attrs={"data-label": "Exit"}),
        rx.table.cell(row["peak_memory"], custom_attrs={"data-label": "Peak memory"}),
        rx.table.cell(
            rx.popover.root(
                rx.popover.trigger(rx.button("Last lines", size="1", variant="ghost")),
                rx.popover.content(
                    rx.el.pre(rx.cond(row["log_tail"] != "", row["log_tail"], "(no log lines captured)"),
                              style={"max_height": "40vh", "overflow": "auto", "font_size": "12px",
                                     "white_space": "pre-wrap", "margin": "0"}),
                    max_width="640px",
                ),
            ),
            custom_attrs={"data-label": "Log"},
        ),
        class_name="dgx-history-row",
        custom_attrs={"data-operation-id": row["id"], "data-run": row["run"], "data-outcome": row["outcome"],
                      "data-outcome-source": row["outcome_source"]},
    )


def history_table() -> rx.Component:
    """The table, or an empty state."""
    return rx.cond(
        HistoryState.no_matches,
        no_matches(HistoryState, "ended operations"),
        rx.cond(
            HistoryState.visible.length() > 0,
            rx.table.root(
                rx.table.header(
                    rx.table.row(
                        *[rx.table.column_header_cell(h) for h in
                          ("Operation", "Type", "Outcome", "Started", "Ended", "Duration", "Exit", "Peak memory", "Log")]
                    )
                ),
                rx.table.body(rx.foreach(HistoryState.visible, history_row)),
                variant="surface",
                size="1",
                width="100%",
                id="history-table",
            ),
            rx.text(
                rx.cond(HistoryState.loaded,
                        "No ended operations yet. Operations that stop, complete or fail are kept here for "
                        + HistoryState.kept_for + " (DGX_SPARK_HISTORY_DAYS).", "Loading…"),
                color=styles.MUTED,
                id="history-empty",
            ),
        ),
    )


def history_page() -> rx.Component:
    """The History page."""
    return rx.box(
        # On a phone each row is a stacked card, every value under its column's name.
        rx.el.style(styles.HISTORY_PHONE_CSS + styles.THEME_CSS),
        rx.box(
            rx.flex(
                rx.hstack(
                    rx.link(rx.icon("arrow_left", size=styles.ICON_MD), href="/", aria_label="Back"),
                    rx.heading("History", size="5", weight="bold"),
                    rx.text("ended operations", color=styles.MUTED, size="2"),
                    align="center",
                ),
                rx.hstack(
                    rx.icon_button(rx.icon("refresh_cw", size=styles.ICON_MD), on_click=HistoryState.load_history,
                                   variant="soft", color_scheme="gray", aria_label="Reload history",
                                   id="history-refresh"),
                    theme_menu(),
                    notifications(),
                    align="center",
                ),
                justify="between",
                align="center",
                width="100%",
            ),
            filter_bar(HistoryState, statuses=["stopped", "failed"], sorts=HISTORY_SORTS),
            rx.cond(HistoryState.error != "", rx.callout(HistoryState.error, color_scheme="red", icon="triangle_alert")),
            rx.cond(HistoryState.short_lived != "",
                    rx.text(HistoryState.short_lived, size="1", color=styles.MUTED, id="history-short-lived")),
            history_table(),
            style=styles.page_inner,
        ),
        style=styles.page,
        on_mount=HistoryState.load_history,
        id="history-page",
    )
