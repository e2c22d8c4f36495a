"""Discovery: find operations among the machine's processes (placeholder)."""

from __future__ import annotations

from dgx_spark.collector.model import Operation


class Discovery:
    """Turns the process table into operations."""

    def __call__(self, now: float) -> list[Operation]:
        """Scan the process table once."""
        return []
