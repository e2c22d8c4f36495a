"""The events probe: compares consecutive snapshots and emits transitions.

It runs on the sampler's thread, so it only compares in-memory values and hands
each transition to a sink (the recorder's queue); it never touches the
database, the disk or the network.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Iterator

from dgx_spark.collector.model import INFERRED_SOURCES, OUTCOMES, Operation
from dgx_spark.collector.output import OutputHandles
from dgx_spark.collector.sampler import SampleContext

logger = logging.getLogger(__name__)

READY_STATUSES = frozenset({"running", "active"})
WAITING_STATUSES = frozenset({"starting", "pending"})
TERMINAL_OUTCOMES = frozenset(OUTCOMES)
TAIL_LINES = 40


@dataclasses.dataclass(frozen=True, slots=True)
class Transition:
    """One change of an operation, seen between two snapshots."""

    kind: str
    at: float
    operation: Operation
    detail: str
    peak_memory_bytes: int | None = None
    # Last output lines of a discovered operation, read through its process (None: read the
    # launched operation's log file instead).
    log_tail: tuple[str, ...] | None = None


Sink = Callable[[Transition], None]


def terminal_kind(operation: Operation) -> str:
    """How an ended operation ended: ``failed``, ``stopped`` (by the user) or ``completed`` (exit 0).

    The operation's ``outcome`` decides when it is known (launched: the runner's; discovered:
    the outcome probe's); otherwise its status and exit code.
    """
    if operation.outcome in TERMINAL_OUTCOMES:
        return operation.outcome
    if operation.status == "failed":
        return "failed"
    if operation.stop_requested:
        return "stopped"  # even when the command exited 0 on SIGTERM
    if operation.exit_code == 0:
        return "completed"
    return "stopped"


def _terminal_detail(kind: str, operation: Operation) -> str:
    reason = operation.exit_reason
    if reason:
        # An inference says so: "likely failed: CUDA out of memory".
        likely = "likely " if operation.outcome_source in INFERRED_SOURCES else ""
        if reason.startswith(kind):
            return f"{likely}{reason}"
        if reason.startswith("exit code"):
            return f"{likely}{kind} with {reason}"
        return f"{likely}{kind}: {reason}"
    code = operation.exit_code
    if kind == "failed":
        return f"failed with exit code {code}" if code is not None else "failed"
    if kind == "completed":
        return "completed (exit code 0)"
    who = " by the user" if operation.stop_requested else ""
    return f"stopped{who} (exit code {code})" if code is not None else f"stopped{who}"


class EventDetector:
    """A sampler probe that turns status changes into ``Transition`` values."""

    name = "events"

    def __init__(self, sink: Sink, handles: OutputHandles | None = None) -> None:
        """Create a detector that hands every transition to ``sink``.

        ``handles``: the outputs the probes hold open (the services' ones; by default handles of its own).
        """
        self._sink = sink
        self._handles = handles or OutputHandles()
        self._previous: dict[str, Operation] | None = None
        self._peak: dict[tuple[str, int], int] = {}  # per (operation id, run)

    def sample(self, ctx: SampleContext) -> None:
        """Compare this snapshot with the previous one and emit transitions."""
        first = self._previous is None
        previous = self._previous or {}
        current: dict[str, Operation] = {}
        for operation in ctx.operations:
            current[operation.id] = operation
            if operation.memory_bytes is not None:
                key = (operation.id, operation.run)
                peak = self._peak.get(key)
                if peak is None or operation.memory_bytes > peak:
                    self._peak[key] = operation.memory_bytes
            for kind, detail in self._changes(previous.get(operation.id), operation, first):
                self._emit(kind, ctx.now, operation, detail)
        for op_id, before in previous.items():
            if op_id not in current and before.is_live:
                # Gone without an ended entry (e.g. forgotten while alive): it stopped.
                gone = before.replace(status="stopped", ended_at_ts=ctx.now, pids=())
                self._emit("stopped", ctx.now, gone, "disappeared")
        self._previous = current
        runs = {(op.id, op.run) for op in current.values()}
        for key in [k for k in self._peak if k not in runs]:
            del self._peak[key]

    def _emit(self, kind: str, now: float, operation: Operation, detail: str) -> None:
        at = now
        terminal = kind in ("completed", "failed", "stopped")
        if terminal and operation.ended_at_ts is not None:
            at = operation.ended_at_ts
        self._sink(
            Transition(
                kind=kind,
                at=at,
                operation=operation,
                detail=detail,
                peak_memory_bytes=self._peak.get((operation.id, operation.run)),
                log_tail=self._discovered_tail(kind, operation),
            )
        )

    def _discovered_tail(self, kind: str, operation: Operation) -> tuple[str, ...] | None:
        """A discovered operation's last lines: kept at its end, or read now for a stall."""
        if operation.source != "discovered":
            return None
        if kind == "stalled":
            held = self._handles.get(operation)
            return tuple(held.tail(TAIL_LINES)) if held is not None else ()
        return operation.output_tail or ()

    @staticmethod
    def _changes(before: Operation | None, after: Operation, first: bool) -> Iterator[tuple[str, str]]:
        """The transitions from ``before`` (None: not seen yet) to ``after``."""
        if before is not None and before.run != after.run:
            before = None  # a new run (e.g. started again and ended between two samples): news of its own
        if before is None:
            if after.is_live:
                if not first:  # the first snapshot is the baseline, not news
                    yield "started", f"started ({after.status})"
                return
            # Ended before we ever saw it live: a fast exit, or an end while we were down.
            if not first:
                yield "started", "started"
            kind = terminal_kind(after)
            yield kind, _terminal_detail(kind, after)
            return
        if not before.is_live:
            if after.is_live:
                yield "started", f"started again ({after.status})"
            return
        if not after.is_live:
            kind = terminal_kind(after)
            yield kind, _terminal_detail(kind, after)
            return
        if before.status in WAITING_STATUSES and after.status in READY_STATUSES:
            where = f" on port {after.port}" if after.port is not None else ""
            yield "ready", f"ready{where}"
        if after.stalled and not before.stalled:
            yield "stalled", "progress has not moved for a while"
        if after.idle_gpu and not before.idle_gpu:
            yield "idle_gpu", "holds GPU memory but the GPU is idle"
