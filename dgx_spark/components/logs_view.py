"""The logs view: the last 1000 lines (ANSI stripped), live follow with pause, download of the whole log."""

from __future__ import annotations

import reflex as rx

from dgx_spark.state.control import ControlState


def logs_dialog() -> rx.Component:
    """A dialog showing ``ControlState.log_lines`` of the chosen operation."""
    return rx.dialog.root(
        rx.dialog.content(
            rx.hstack(
                rx.dialog.title("Logs: " + ControlState.logs_name, margin="0"),
                rx.spacer(),
                rx.button(
                    rx.cond(ControlState.following, rx.icon("pause", size=14), rx.icon("play", size=14)),
                    rx.cond(ControlState.following, "Pause", "Follow"),
                    on_click=ControlState.toggle_follow,
                    variant="soft",
                    size="1",
                    id="logs-follow",
                ),
                rx.link(
                    rx.button(rx.icon("download", size=14), "Download", variant="soft", size="1"),
                    href="/api/dgx/operations/" + ControlState.logs_id + "/logs/download",
                    is_external=True,
                    id="logs-download",
                ),
                rx.dialog.close(rx.button(rx.icon("x", size=14), variant="ghost", size="1", aria_label="Close")),
                align="center",
                width="100%",
            ),
            rx.cond(
                ControlState.logs_available,
                rx.fragment(
                    rx.cond(ControlState.logs_truncated,
                            rx.text("Showing the last 1000 lines; download for the whole log.", size="1",
                                    color="var(--gray-10)")),
                    rx.scroll_area(
                        rx.el.pre(
                            rx.foreach(ControlState.log_lines, lambda line: rx.el.div(line)),
                            style={"font_family": "var(--code-font-family, monospace)", "font_size": "12px",
                                   "white_space": "pre-wrap", "word_break": "break-all", "margin": "0"},
                        ),
                        type="auto",
                        scrollbars="vertical",
                        style={"height": "60vh", "background": "var(--gray-2)", "padding": "8px",
                               "border_radius": "6px"},
                        id="logs-lines",
                    ),
                ),
                rx.text("No log is available: this process does not write its output to a file.",
                        id="logs-unavailable", color="var(--gray-11)"),
            ),
            max_width="min(1100px, 95vw)",
            id="logs-dialog",
        ),
        open=ControlState.logs_open,
        on_open_change=ControlState.close_logs,
    )
