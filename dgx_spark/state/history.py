"""The History view's state: ended runs from the database, filtered like the live view.

Each run of an operation ("Start again" keeps the id) is a row of its own.
"""

from __future__ import annotations

import asyncio
from typing import Any

import reflex as rx

from dgx_spark import format as fmt
from dgx_spark.collector.model import INFERRED_SOURCES, OUTCOMES
from dgx_spark.collector.query import apply_query
from dgx_spark.services import get_events, get_services
from dgx_spark.state.events import short_lived_note
from dgx_spark.state.filters import FilterMixin
from dgx_spark.state.view import OUTCOME_SOURCE_TITLES, outcome_line

HISTORY_LIMIT = 1000


def _outcome(row: dict[str, Any]) -> str:
    """The row's outcome; rows stored without one get it from their status and exit code."""
    stored = row.get("outcome")
    if stored in OUTCOMES:
        return str(stored)
    if row.get("status") == "failed":
        return "failed"
    if row.get("exit_code") == 0 and not str(row.get("description") or "").startswith("stopped by the user"):
        return "completed"  # a user stop that exited 0 stays "stopped"
    return "stopped"


def history_view(row: dict[str, Any]) -> dict[str, str]:
    """What a History row shows (strings for the browser)."""
    code = row.get("exit_code")
    outcome = _outcome(row)
    reason = str(row.get("exit_reason") or "")
    source = str(row.get("outcome_source") or "")
    peak = row.get("peak_memory_bytes")
    return {
        "id": str(row.get("id") or ""),
        "run": str(row.get("run") or 1),
        "name": str(row.get("name") or ""),
        "type": str(row.get("type") or ""),
        "status": str(row.get("status") or ""),
        "outcome": outcome,
        # The badge: "likely failed" when inferred; the line below it says why.
        "outcome_label": f"likely {outcome}" if source in INFERRED_SOURCES else outcome,
        "exit_reason": reason,
        "outcome_text": outcome_line(outcome, reason, source) if reason else "",
        "outcome_source": source,
        "outcome_title": OUTCOME_SOURCE_TITLES.get(source, ""),
        "command": str(row.get("command") or ""),
        "started_at": str(row.get("started_at") or ""),
        "ended_at": str(row.get("ended_at") or ""),
        "duration": fmt.format_uptime(row.get("duration_seconds")),
        "exit_code": "—" if code is None else str(code),
        "peak_memory": fmt.format_bytes(peak) if peak is not None else "—",
        "log_tail": "\n".join(row.get("log_tail") or []),
    }


def kept_for(days: float) -> str:
    """How long the history keeps ended operations, for people: ``7 days``, ``1 day``, ``12 hours``."""
    if days >= 1:
        whole = f"{days:g}"
        return f"{whole} day" if whole == "1" else f"{whole} days"
    return f"{days * 24:.3g} hours"  # the setting is above 0

class HistoryState(FilterMixin, rx.State):
    """Ended operations (newest first) and the History view's filters."""

    rows: list[dict[str, Any]] = []  # noqa: RUF012 - Reflex state var
    loaded: bool = False
    error: str = ""
    short_lived: str = ""
    # How long ended operations are kept ("7 days"), from DGX_SPARK_HISTORY_DAYS.
    kept_for: str = ""

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
        self.kept_for = kept_for(get_services().settings.events.history_days)
