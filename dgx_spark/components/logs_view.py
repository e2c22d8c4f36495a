"""The logs view: the last 1000 lines (ANSI stripped), following the end, search, download.

Following the end happens in the browser: while the view is scrolled to the
bottom, new lines keep it there; scrolling up stops that (the view stays put
while lines arrive) and shows **Jump to latest**, which scrolls back down and
follows again. *Pause* stops fetching new lines altogether. The search shows
only the lines containing the text, with the matches marked, and how many.
An empty log says why: nothing written yet, or where the output goes instead.

Stable hooks for tests: ``#logs-dialog``, ``#logs-lines`` (the scrolling box;
``data-follow`` "true"/"false"), ``#logs-jump``, ``#logs-search``,
``#logs-count``, ``#logs-empty``, ``#logs-unavailable``, ``#logs-follow``,
``#logs-download``.
"""

from __future__ import annotations

import reflex as rx

from dgx_spark.state.control import ControlState
from dgx_spark.state.log_search import NOTHING_WRITTEN

# How close (px) to the bottom still counts as "at the bottom".
_BOTTOM_SLACK = 24

# Attaches the follow behaviour to the freshly mounted log box (once per element).
ATTACH_JS = f"""(() => {{
  const box = document.getElementById('logs-lines');
  if (!box || box.dataset.follow) return;
  const atBottom = () => box.scrollHeight - box.scrollTop - box.clientHeight <= {_BOTTOM_SLACK};
  const follow = (on) => {{ box.dataset.follow = on ? 'true' : 'false'; }};
  follow(true);
  box.addEventListener('scroll', () => follow(atBottom()), {{passive: true}});
  new MutationObserver(() => {{
    if (box.dataset.follow === 'true') box.scrollTop = box.scrollHeight;
  }}).observe(box, {{childList: true, subtree: true, characterData: true}});
  box.scrollTop = box.scrollHeight;
}})()"""

JUMP_JS = """(() => {
  const box = document.getElementById('logs-lines');
  if (!box) return;
  box.dataset.follow = 'true';
  box.scrollTop = box.scrollHeight;
})()"""

_lines_style = {
    "font_family": "var(--code-font-family, monospace)",
    "font_size": "12px",
    "white_space": "pre-wrap",
    "word_break": "break-all",
    "margin": "0",
}
_box_style = {
    "height": "60vh",
    "overflow_y": "auto",
    "background": "var(--gray-2)",
    "padding": "8px",
    "border_radius": "6px",
    "border": "1px solid var(--gray-a5)",
}
# The jump button floats over the box's bottom-right corner, only while not following.
_body_style = {
    "position": "relative",
    "& #logs-jump": {"display": "none"},
    '& #logs-lines[data-follow="false"] ~ #logs-jump': {"display": "inline-flex"},
}
_mark_style = {"background": "var(--amber-a6)", "color": "inherit", "border_radius": "2px"}


def _segment(segment: rx.Var[str], index: rx.Var[int]) -> rx.Component:
    """Plain text at even positions, a marked match at odd ones."""
    return rx.cond(index % 2 == 1, rx.el.mark(segment, style=_mark_style), rx.el.span(segment))


def _lines() -> rx.Component:
    """Every line, or only the matching ones (marked) while searching."""
    return rx.cond(
        ControlState.log_filter != "",
        rx.el.pre(
            rx.foreach(ControlState.log_matches, lambda parts: rx.el.div(rx.foreach(parts, _segment))),
            style=_lines_style,
        ),
        rx.el.pre(rx.foreach(ControlState.log_lines, lambda line: rx.el.div(line)), style=_lines_style),
    )


def _search() -> rx.Component:
    """The search field and the match count."""
    return rx.hstack(
        rx.input(
            rx.input.slot(rx.icon("search", size=14)),
            value=ControlState.log_filter,
            on_change=ControlState.filter_logs,
            placeholder="Search in the log",
            aria_label="Search in the log",
            size="1",
            width="min(320px, 100%)",
            id="logs-search",
        ),
        rx.cond(
            ControlState.log_filter != "",
            rx.text(
                ControlState.log_matches.length().to_string(),
                " of ",
                ControlState.log_lines.length().to_string(),
                " lines match",
                size="1",
                color="var(--gray-11)",
                id="logs-count",
                aria_live="polite",
            ),
        ),
        align="center",
        spacing="3",
        width="100%",
    )


def _log_body() -> rx.Component:
    """The search, the scrolling lines (or why there are none) and the jump button."""
    return rx.box(
        rx.cond(
            ControlState.logs_truncated,
            rx.text("Showing the last 1000 lines; download for the whole log.", size="1", color="var(--gray-10)"),
        ),
        _search(),
        rx.box(
            _lines(),
            rx.cond(
                ~ControlState.log_written,
                rx.text(
                    NOTHING_WRITTEN,
                    " The view fills as the operation writes to its output.",
                    id="logs-empty",
                    color="var(--gray-11)",
                    size="2",
                    margin_top="4px",
                ),
            ),
            style=_box_style,
            id="logs-lines",
            tab_index=0,
            role="log",
            aria_label="Log lines",
            on_mount=rx.call_script(ATTACH_JS),
        ),
        rx.button(
            rx.icon("arrow_down_to_line", size=14),
            "Jump to latest",
            on_click=rx.call_script(JUMP_JS),
            size="1",
            id="logs-jump",
            style={"position": "absolute", "right": "24px", "bottom": "16px", "box_shadow": "var(--shadow-3)"},
        ),
        style=_body_style,
        display="flex",
        flex_direction="column",
        gap="8px",
        id="logs-body",
    )


def logs_dialog() -> rx.Component:
    """A dialog showing ``ControlState.log_lines`` of the chosen operation."""
    return rx.dialog.root(
        rx.dialog.content(
            rx.hstack(
                rx.dialog.title("Logs: " + ControlState.logs_name, margin="0"),
                rx.cond(ControlState.logs_node != "",
                        rx.badge(rx.icon("server", size=11), ControlState.logs_node_name, variant="outline",
                                 color_scheme="iris", size="1", id="logs-node")),
                rx.spacer(),
                rx.button(
                    rx.cond(ControlState.following, rx.icon("pause", size=14), rx.icon("play", size=14)),
                    rx.cond(ControlState.following, "Pause", "Follow"),
                    on_click=ControlState.toggle_follow,
                    variant="soft",
                    size="1",
                    id="logs-follow",
                    title=rx.cond(ControlState.following, "Stop reading new lines", "Read new lines again"),
                ),
                rx.link(
                    rx.button(rx.icon("download", size=14), "Download", variant="soft", size="1"),
                    # A remote node's log comes through this backend's forwarding route (login needed).
                    href=rx.cond(ControlState.logs_node != "",
                                 "/api/dgx/nodes/" + ControlState.logs_node + "/operations/", "/api/dgx/operations/")
                    + ControlState.logs_id + "/logs/download",
                    is_external=True,
                    id="logs-download",
                ),
                rx.dialog.close(rx.button(rx.icon("x", size=14), variant="ghost", size="1", aria_label="Close")),
                align="center",
                width="100%",
                margin_bottom="8px",
            ),
            rx.cond(
                ControlState.logs_available,
                _log_body(),
                rx.text(ControlState.logs_reason, id="logs-unavailable", color="var(--gray-11)"),
            ),
            max_width="min(1100px, 95vw)",
            id="logs-dialog",
        ),
        open=ControlState.logs_open,
        on_open_change=ControlState.close_logs,
    )
