"""Search, filters and sort of a view, kept in the page's URL query.

``FilterMixin`` holds ``q``, ``types``, ``statuses``, ``sort`` and ``order``; it
reads them from the URL when the view mounts (``load_filters``) and writes them
back with ``history.replaceState`` on every change, so a view is bookmarkable and
survives the refresh loop and a reload. The matching is ``dgx_spark.collector.query``,
the same functions the REST API uses.

- ``OperationsState`` (``state/operations.py``) filters the Operations tab's cards:
  it assigns each section's visible cards when a filter changes (``_filters_changed``) or the snapshot does.
- ``HistoryState`` (in ``state/history.py``) filters the ended operations.
"""

from __future__ import annotations

import json
from typing import Any

import reflex as rx
from reflex.event import EventSpec

from dgx_spark.collector.model import OPERATION_STATUSES, OPERATION_TYPES
from dgx_spark.collector.query import (
    MAX_QUERY_LENGTH,
    ORDERS,
    SORT_KEYS,
    OperationQuery,
    query_from_params,
)

URL_KEYS = ("q", "type", "status", "sort", "order")
# Sort keys a table header sorts biggest first on its first click.
DESCENDING_FIRST = frozenset({"cpu", "memory", "gpu_memory"})


def url_script(params: dict[str, str]) -> str:
    """JS that rewrites the filter keys of the URL's query, leaving the others alone."""
    return (
        "(() => { const u = new URL(window.location.href); "
        f"const keys = {json.dumps(list(URL_KEYS))}; const next = {json.dumps(params)}; "
        "for (const k of keys) { if (k in next) u.searchParams.set(k, next[k]); else u.searchParams.delete(k); } "
        "if (u.href !== window.location.href) window.history.replaceState(window.history.state, '', u.href); })()"
    )


def _csv(values: Any, allowed: tuple[str, ...]) -> str:
    return ",".join(v for v in allowed if v in set(str(values).split(",")))


class FilterMixin(rx.State, mixin=True):
    """The search, filter and sort fields of a view, and their URL round trip."""

    q: str = ""
    types: str = ""  # comma-separated, canonical order
    statuses: str = ""
    sort: str = ""
    order: str = "asc"

    def _query(self) -> OperationQuery:
        return query_from_params(
            {"q": self.q, "type": self.types, "status": self.statuses, "sort": self.sort, "order": self.order},
            lenient=True,
        )

    def _filters_changed(self) -> None:
        """Called after the filters changed (a view that filters on the backend refilters here)."""

    def _sync_url(self) -> EventSpec:
        self._filters_changed()
        return rx.call_script(url_script(self._query().to_params()))

    @rx.var
    def filtering(self) -> bool:
        """Whether the search or a filter hides anything."""
        return bool(self.q.strip() or self.types or self.statuses)

    @rx.var
    def selected_types(self) -> list[str]:
        """The type chips that are on."""
        return [t for t in self.types.split(",") if t]

    @rx.var
    def selected_statuses(self) -> list[str]:
        """The status chips that are on."""
        return [s for s in self.statuses.split(",") if s]

    @rx.event
    def load_filters(self) -> None:
        """Take the filters from the URL (bad values are dropped)."""
        self._load_filters_from_url()
        self._filters_changed()

    def _load_filters_from_url(self) -> None:
        params = dict(self.router.url.query_parameters)
        query = query_from_params({k: params.get(k, "") for k in URL_KEYS}, lenient=True)
        self.q = query.q
        self.types = ",".join(query.types)
        self.statuses = ",".join(query.statuses)
        self.sort = query.sort or ""
        self.order = query.order

    @rx.event
    def set_search(self, value: Any) -> EventSpec:
        """The search box changed."""
        text = value if isinstance(value, str) else ""
        # No control characters, and no lone surrogates (not valid UTF-8: the tab could not be sent its state).
        self.q = "".join(ch for ch in text if ord(ch) >= 32 and not 0xD800 <= ord(ch) <= 0xDFFF)[:MAX_QUERY_LENGTH]
        return self._sync_url()

    @rx.event
    def toggle_type(self, value: Any) -> EventSpec | None:
        """Turn one type chip on or off."""
        if value not in OPERATION_TYPES:
            return None
        chosen = set(self.selected_types) ^ {value}
        self.types = _csv(",".join(chosen), OPERATION_TYPES)
        return self._sync_url()

    @rx.event
    def toggle_status(self, value: Any) -> EventSpec | None:
        """Turn one status chip on or off."""
        if value not in OPERATION_STATUSES:
            return None
        chosen = set(self.selected_statuses) ^ {value}
        self.statuses = _csv(",".join(chosen), OPERATION_STATUSES)
        return self._sync_url()

    @rx.event
    def choose_sort(self, value: Any) -> EventSpec | None:
        """Pick the sort key ("none": the view's own order)."""
        if value == "none":
            self.sort = ""
        elif value in SORT_KEYS:
            self.sort = value
        else:
            return None
        return self._sync_url()

    @rx.event
    def choose_order(self, value: Any) -> EventSpec | None:
        """Pick ascending or descending."""
        if value not in ORDERS:
            return None
        self.order = value
        return self._sync_url()

    @rx.event
    def sort_column(self, value: Any) -> EventSpec | None:
        """A table header was clicked: sort by it, or flip the order when it already sorts.

        Figures (CPU, memory, GPU memory) start biggest first; the others ascending.
        """
        if value not in SORT_KEYS:
            return None
        if self.sort == value:
            self.order = "desc" if self.order == "asc" else "asc"
        else:
            self.sort = value
            self.order = "desc" if value in DESCENDING_FIRST else "asc"
        return self._sync_url()

    @rx.event
    def flip_order(self) -> EventSpec:
        """Swap ascending and descending."""
        self.order = "desc" if self.order == "asc" else "asc"
        return self._sync_url()

    @rx.event
    def clear_filters(self) -> EventSpec:
        """Show everything again (the sort is kept)."""
        self.q = ""
        self.types = ""
        self.statuses = ""
        return self._sync_url()
