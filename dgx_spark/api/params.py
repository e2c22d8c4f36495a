"""Query parameter types shared by the routes, so the OpenAPI declares their enums and patterns."""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Literal

from dgx_spark.collector.model import OPERATION_STATUSES, OPERATION_TYPES
from dgx_spark.collector.query import ORDERS, SORT_KEYS

# The largest integer the databases store (SQLite and PostgreSQL BIGINT): larger ids are 422.
MAX_INT64 = 2**63 - 1


def csv_pattern(values: Iterable[str]) -> str:
    """A regex for a comma-separated list of ``values`` (or nothing)."""
    one = "(" + "|".join(re.escape(v) for v in values) + ")"
    return f"^({one}(,{one})*)?$"


SortKey = Literal[SORT_KEYS]  # type: ignore[valid-type]
Order = Literal[ORDERS]  # type: ignore[valid-type]
TYPES_PATTERN = csv_pattern(OPERATION_TYPES)
STATUSES_PATTERN = csv_pattern(OPERATION_STATUSES)

