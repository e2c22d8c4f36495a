"""Search, filter and sort over operations: one ``OperationQuery`` for the API and the UI.

The predicate reads an operation's record: the JSON dict of ``Operation.to_api``,
a history row, or a card's ``query_row``. ``apply_query`` filters and sorts any
items through their records and returns the items themselves, so the REST API,
the live view and the History view filter the same way.

- ``q``: whitespace-separated words; every word must match. A word matches when it
  is a case-insensitive substring of the name, description or command, or equals
  the port (any of ``ports``) or the PID. ``:8080`` and ``pid:123`` are accepted too.
- ``type`` / ``status``: comma-separated values, any of them matches.
- ``sort``: one of ``SORT_KEYS``; ``order``: ``asc`` or ``desc``. Missing values sort last.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, TypeVar

from dgx_spark.collector.model import OPERATION_STATUSES, OPERATION_TYPES

T = TypeVar("T")

SORT_KEYS: tuple[str, ...] = (
    "status",
    "started_at",
    "ended_at",
    "name",
    "cpu",
    "memory",
    "gpu_memory",
)
ORDERS: tuple[str, ...] = ("asc", "desc")
MAX_QUERY_LENGTH = 200
# Live first, then what needs attention, then what ended quietly.
STATUS_RANK: dict[str, int] = {
    "running": 0,
    "active": 1,
    "starting": 2,
    "pending": 3,
    "failed": 4,
    "stopped": 5,
}


class QueryError(ValueError):
    """A search/filter/sort parameter with a bad value."""

    def __init__(self, field: str, message: str) -> None:
        """Name the bad field and say what is wrong."""
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


@dataclasses.dataclass(frozen=True)
class OperationQuery:
    """A parsed search, filter and sort."""

    q: str = ""
    types: tuple[str, ...] = ()
    statuses: tuple[str, ...] = ()
    sort: str | None = None
    order: str = "asc"

    def matches(self, record: Mapping[str, Any]) -> bool:
        """Whether the operation passes the search and the filters."""
        if self.types and record.get("type") not in self.types:
            return False
        if self.statuses and record.get("status") not in self.statuses:
            return False
        return matches_search(record, self.q)

    @property
    def is_filtering(self) -> bool:
        """Whether anything would be hidden."""
        return bool(self.q.strip() or self.types or self.statuses)

    def to_params(self) -> dict[str, str]:
        """The URL query parameters of this query (empty values left out)."""
        params: dict[str, str] = {}
        if self.q.strip():
            params["q"] = self.q.strip()
        if self.types:
            params["type"] = ",".join(self.types)
        if self.statuses:
            params["status"] = ",".join(self.statuses)
        if self.sort:
            params["sort"] = self.sort
            params["order"] = self.order
        return params


def _split(field: str, raw: str | Sequence[str] | None, allowed: Sequence[str]) -> tuple[str, ...]:
    if raw is None:
        return ()
    parts: list[str] = []
    for item in [raw] if isinstance(raw, str) else list(raw):
        parts += [p.strip().lower() for p in str(item).split(",") if p.strip()]
    unknown = [p for p in parts if p not in allowed]
    if unknown:
        raise QueryError(field, f"unknown value {unknown[0]!r}; expected one of {', '.join(allowed)}")
    # Keep the canonical order, without duplicates, so equal filters give equal URLs.
    return tuple(value for value in allowed if value in parts)


def parse_query(
    q: str | None = None,
    type: str | Sequence[str] | None = None,
    status: str | Sequence[str] | None = None,
    sort: str | None = None,
    order: str | None = None,
    *,
    sort_keys: Sequence[str] = SORT_KEYS,
) -> OperationQuery:
    """Validate raw parameters (from a URL or a form).

    Raises:
        QueryError: Naming the first bad field.
    """
    text = (q or "").strip()
    if len(text) > MAX_QUERY_LENGTH:
        raise QueryError("q", f"longer than {MAX_QUERY_LENGTH} characters")
    if any(ord(ch) < 32 for ch in text):
        raise QueryError("q", "contains control characters")
    sort_value = (sort or "").strip().lower() or None
    if sort_value is not None and sort_value not in sort_keys:
        raise QueryError("sort", f"unknown value {sort_value!r}; expected one of {', '.join(sort_keys)}")
    order_value = (order or "").strip().lower() or "asc"
    if order_value not in ORDERS:
        raise QueryError("order", f"unknown value {order_value!r}; expected asc or desc")
    return OperationQuery(
        q=text,
        types=_split("type", type, OPERATION_TYPES),
        statuses=_split("status", status, OPERATION_STATUSES),
        sort=sort_value,
        order=order_value,
    )


def query_from_params(params: Mapping[str, str], *, lenient: bool = False) -> OperationQuery:
    """Parse URL query parameters; ``lenient`` drops bad values instead of raising."""
    keys = ("q", "type", "status", "sort", "order")
    values: dict[str, str | None] = {k: params.get(k) for k in keys}
    while True:
        try:
            return parse_query(*(values[k] for k in keys))
        except QueryError as err:
            if not lenient:
                raise
            values[err.field] = None


def _words(q: str) -> list[str]:
    return [w.lower() for w in q.split() if w]


def _number_word(word: str) -> int | None:
    for prefix in ("pid:", "port:", ":"):
        if word.startswith(prefix):
            word = word[len(prefix) :]
            break
    return int(word) if word.isdigit() and len(word) <= 10 else None


def matches_search(op: Mapping[str, Any], q: str) -> bool:
    """Whether every word of ``q`` matches the operation."""
    words = _words(q)
    if not words:
        return True
    text = " ".join(
        str(op.get(k) or "") for k in ("name", "description", "command")
    ).lower()
    # A container's ports are {"host": 8188, "container": 8188} objects: either number matches.
    ports = [n for p in op.get("ports") or [] for n in ((p.get("host"), p.get("container")) if isinstance(p, dict) else (p,))]
    numbers = {n for n in [op.get("pid"), op.get("port"), *ports] if n is not None}
    for word in words:
        number = _number_word(word)
        if number is not None and number in numbers:
            continue
        if word in text:
            continue
        return False
    return True


def _memory(op: Mapping[str, Any]) -> Any:
    value = op.get("memory_bytes")
    return op.get("peak_memory_bytes") if value is None else value


SORT_VALUE: dict[str, Callable[[Mapping[str, Any]], Any]] = {
    "status": lambda op: STATUS_RANK.get(str(op.get("status")), len(STATUS_RANK)),
    "started_at": lambda op: op.get("started_at"),  # ISO-8601 UTC sorts as text
    "ended_at": lambda op: op.get("ended_at"),
    "name": lambda op: (str(op.get("name") or "")).lower() or None,
    "cpu": lambda op: op.get("cpu_percent"),
    "memory": _memory,
    "gpu_memory": lambda op: op.get("gpu_memory_bytes"),
}


def sort_operations(
    items: Iterable[T], sort: str, order: str = "asc", record: Callable[[T], Mapping[str, Any]] | None = None
) -> list[T]:
    """Sort by ``sort``; ties by name then id; missing values last in both orders."""
    of = record or _itself
    value_of = SORT_VALUE[sort]
    keyed = [(of(item), item) for item in items]
    # Stable sorts, least significant key first.
    keyed.sort(key=lambda pair: str(pair[0].get("id") or ""))
    keyed.sort(key=lambda pair: str(pair[0].get("name") or "").lower())
    present = [pair for pair in keyed if value_of(pair[0]) is not None]
    missing = [pair for pair in keyed if value_of(pair[0]) is None]
    present.sort(key=lambda pair: value_of(pair[0]), reverse=order == "desc")
    return [item for _, item in present + missing]


def apply_query(
    items: Iterable[T], query: OperationQuery, record: Callable[[T], Mapping[str, Any]] | None = None
) -> list[T]:
    """The items whose record passes ``query``, sorted by it (no sort: the input order is kept).

    Args:
        items: Operations as records (dicts), or anything ``record`` reads a record from.
        query: The search, filters and sort.
        record: An item's record; the item itself when None.
    """
    of = record or _itself
    kept = [item for item in items if query.matches(of(item))]
    if query.sort:
        kept = sort_operations(kept, query.sort, query.order, of)
    return kept


def _itself(item: Any) -> Mapping[str, Any]:
    return item  # type: ignore[no-any-return]
