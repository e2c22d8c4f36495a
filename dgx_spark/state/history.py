"""The History view's state: ended runs from the database, filtered like the live view.

Each run of an operation ("Start again" keeps the id) is a row of its own.
"""

from __future__ import annotations

import asyncio
from typing import Any

import reflex as rx

from dgx_spark import format as fmt
from dgx_spark.events.query import apply_query
from dgx_spark.events.service import get_events
from dgx_spark.state.events import short_lived_note
from dgx_spark.state.filters import FilterMixin

HISTORY_LIMIT = 1000


def history_view(row: dict[str, Any]) -> dict[str, str]:
    """What a History row shows (strings for the browser)."""
    code = row.get("exit_code")
    if row.get("status") == "failed":
        outcome = "failed"
    elif code == 0 and not str(row.get("description") or "").startswith("stopped by the user"):
        outcome = "completed"  # a user stop that exited 0 stays "stopped"
    else:
        outcome = "stopped"
    peak = row.get("peak_memory_bytes")
    return {
        "id": str(row.get("id") or ""),
        "run": str(row.get("run") or 1),
        "name": str(row.get("name") or ""),
        "type": str(row.get("type") or ""),
        "status": str(row.get("status") or ""),
        "outcome": outcome,
        "command": str(row.get("command") or ""),
        "started_at": str(row.get("started_at") or ""),
        "ended_at": str(row.get("ended_at") or ""),
        "duration": fmt.format_uptime(row.get("duration_seconds")),
        "exit_code": "—" if code is None else str(code),
        "peak_memory": fmt.format_bytes(peak) if peak is not None else "—",
        "log_tail": "\n".join(row.get("log_tail") or []),
    }


class HistoryState(FilterMixin, rx.State):
    """Ended operations (newest first) and the History view's filters."""

    rows: list[dict[str, Any]] = []  # noqa: RUF012 - Reflex state var
    loaded: bool = False
    error: str = ""
    short_lived: str = ""

    @rx.var
    def visible(self) -> list[dict[str, str]]:
        """The rows that pass the search and filters, sorted, ready to show."""
        return [history_view(r) for r in apply_query(self.rows, self._query())]

    @rx.var
    def no_matches(self) -> bool:
        """Filters are on, there is history, and nothing passes."""
        return self.filtering and bool(self.rows) and not self.visible

    @rx.event
    async def load_history(self) -> None:
        """Read the filters from the URL and the history from the database."""
        self._load_filters_from_url()
        try:
            rows = await asyncio.to_thread(get_events().store.history, HISTORY_LIMIT)
        except Exception as exc:  # noqa: BLE001 - shown to the user, not raised
            self.error = f"Could not read the history: {type(exc).__name__}"
            return
        self.rows = rows
        self.error = ""
        self.loaded = True
        self.short_lived = short_lived_note()
