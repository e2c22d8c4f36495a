"""How the Operations tab lays out its operations: cards (default) or a dense table.

The choice is kept in the page's URL (``?view=table``, bookmarkable) and in the
browser's localStorage (``dgx_spark_layout``), like the filters. The URL wins when
it names a layout; otherwise the stored choice is used and written into the URL.
Nothing here reads the snapshot: the table renders the same per-section lists as
the cards (``OperationsState.servers`` / ``jobs`` / ``programs``).
"""

from __future__ import annotations

import json
from typing import Any

import reflex as rx
from reflex.event import EventSpec

LAYOUTS: tuple[str, ...] = ("cards", "table")
DEFAULT_LAYOUT = "cards"
# The URL query key (a contract: bookmarks use it).
URL_KEY = "view"


def layout_url_script(layout: str) -> str:
    """JS that writes ``view=<layout>`` into the URL (cards: the key is removed), other keys untouched."""
    value = "" if layout == DEFAULT_LAYOUT else layout
    return (
        "(() => { const u = new URL(window.location.href); "
        f"const v = {json.dumps(value)}; "
        f"if (v) u.searchParams.set({json.dumps(URL_KEY)}, v); else u.searchParams.delete({json.dumps(URL_KEY)}); "
        "if (u.href !== window.location.href) window.history.replaceState(window.history.state, '', u.href); })()"
    )


def parse_layout(value: Any) -> str | None:
    """A known layout name, or None for anything else."""
    return value if isinstance(value, str) and value in LAYOUTS else None


class LayoutState(rx.State):
    """The tab's layout choice, in localStorage and the URL."""

    # Not synced across tabs: each tab's layout matches its own URL.
    layout: str = rx.LocalStorage(DEFAULT_LAYOUT, name="dgx_spark_layout")

    @rx.var
    def table_view(self) -> bool:
        """Whether the operations show as a table."""
        return self.layout == "table"

    @rx.event
    def load_layout(self) -> EventSpec:
        """Take the layout from the URL, else from localStorage; then keep the URL in step."""
        params = dict(self.router.url.query_parameters)
        chosen = parse_layout(params.get(URL_KEY)) or parse_layout(self.layout) or DEFAULT_LAYOUT
        if self.layout != chosen:
            self.layout = chosen
        return rx.call_script(layout_url_script(chosen))

    @rx.event
    def set_layout(self, value: Any) -> EventSpec | None:
        """Switch to ``value`` ("cards" or "table"); anything else is ignored."""
        chosen = parse_layout(value)
        if chosen is None:
            return None
        self.layout = chosen
        return rx.call_script(layout_url_script(chosen))
