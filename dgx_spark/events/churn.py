"""Churn: short-lived discovered commands are counted, not listed, stored or announced.

A shell loop or a build starts hundreds of discovered processes a minute. Those
that end within ``SHORT_LIVED_SECONDS`` of starting, and did not fail (nor
complete a job whose progress was read), are news to nobody: the events probe
takes them off the operations list (a count is kept instead) and the recorder
stores neither their ``started`` nor their ending. A short-lived command that
*failed*, or a short job that completed with its progress read, is still listed,
stored and announced.
"""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Callable

from dgx_spark.collector.model import Operation

SHORT_LIVED_SECONDS = 30.0
# The count covers ends this recent (the time an ended discovered operation would have been listed).
DEFAULT_WINDOW_SECONDS = 600.0
MAX_TRACKED = 100_000


def is_short_lived(operation: Operation, ended_at: float | None = None) -> bool:
    """Whether a discovered operation ended within ``SHORT_LIVED_SECONDS`` of starting.

    Args:
        operation: The ended operation.
        ended_at: When it ended, if the operation does not say.

    A container is never short-lived: it is a deliberate workload, listed when it ends
    (and started again from there).
    """
    if operation.source != "discovered" or operation.started_at_ts is None or operation.container is not None:
        return False
    end = operation.ended_at_ts if operation.ended_at_ts is not None else ended_at
    return end is not None and end - operation.started_at_ts < SHORT_LIVED_SECONDS


def is_quiet_churn(operation: Operation, ended_at: float | None = None) -> bool:
    """A short-lived discovered operation that ended without news: counted, not kept.

    News is a failure, or a job whose progress was read completing (a short training run
    that reached its total): those are listed, stored and announced however short.
    """
    failed = operation.status == "failed" or getattr(operation, "outcome", None) == "failed"
    finished_work = operation.outcome == "completed" and operation.progress is not None
    return not operation.is_live and not failed and not finished_work and is_short_lived(operation, ended_at)


class ChurnCounter:
    """How many short-lived commands ended recently (distinct operation ids, thread-safe)."""

    def __init__(self, window_seconds: float = DEFAULT_WINDOW_SECONDS,
                 clock: Callable[[], float] = time.time) -> None:
        """Count ends of the last ``window_seconds``."""
        self.window_seconds = window_seconds
        self._clock = clock
        self._ended: collections.OrderedDict[str, float] = collections.OrderedDict()
        self._lock = threading.Lock()

    def add(self, op_id: str, at: float) -> None:
        """Count one ended short-lived operation (the same id counts once)."""
        with self._lock:
            if op_id in self._ended:
                return
            self._ended[op_id] = at
            while len(self._ended) > MAX_TRACKED:
                self._ended.popitem(last=False)
            self._prune(self._clock())

    def count(self) -> int:
        """Short-lived ends within the window."""
        with self._lock:
            self._prune(self._clock())
            return len(self._ended)

    def _prune(self, now: float) -> None:
        cutoff = now - self.window_seconds
        while self._ended:
            op_id, at = next(iter(self._ended.items()))
            if at >= cutoff:
                return
            del self._ended[op_id]


def churn_note(count: int, window_seconds: float) -> str:
    """'12 short-lived commands ended in the last 10 min (not listed)' ('' when none)."""
    if count <= 0:
        return ""
    minutes = max(1, round(window_seconds / 60))
    noun = "command" if count == 1 else "commands"
    return f"{count} short-lived {noun} ended in the last {minutes} min (not listed)"


def hide_quiet_churn(operations: list[Operation], counter: ChurnCounter, now: float) -> list[Operation]:
    """The operations without the quiet short-lived ended ones, which are counted instead."""
    kept: list[Operation] = []
    for operation in operations:
        if is_quiet_churn(operation, now):
            counter.add(operation.id, operation.ended_at_ts or now)
        else:
            kept.append(operation)
    return kept
