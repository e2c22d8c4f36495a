"""The recorder thread: stores transitions, keeps the history, prunes old rows.

The detector (sampler thread) only puts transitions on a queue; this thread
reads log tails, writes the database, keeps a small ring of recent events for
the UI and hands each stored event to the webhook sender.

Events and history rows belong to one run of an operation: a terminal event is
stored once per (operation id, run). A discovered operation's ``started`` is
held for ``SHORT_LIVED_SECONDS``: if it ends quietly before then (churn), neither
its start nor its end is stored. Rows are bounded by retention and by row caps.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import queue
import re
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from dgx_spark.database import describe_error, is_unavailable_error
from dgx_spark.events.churn import SHORT_LIVED_SECONDS, is_quiet_churn
from dgx_spark.events.detector import Transition
from dgx_spark.events.store import (
    TERMINAL_KINDS,
    EventRow,
    EventStore,
    HistoryRow,
    log_tail_text,
)
from dgx_spark.health import health
from dgx_spark.redaction import redact_lines

logger = logging.getLogger(__name__)

ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b\][^\x07]*\x07|\x1b[@-Z\\-_]")
TAIL_BYTES = 16 * 1024
MAX_LINE = 500
MAX_HELD = 10_000
# The thread's waits on its queue (seconds): while starts are held (they are stored once they have
# lived long enough), with nothing to do (until the next retention purge at most), when stopping.
HELD_POLL_SECONDS = 0.5
IDLE_WAIT_SECONDS = 10.0
STOP_POLL_SECONDS = 0.05


def read_log_tail(path: str | None, lines: int) -> list[str]:
    """The last ``lines`` lines of a log file, ANSI codes stripped ([] if unreadable)."""
    if not path:
        return []
    try:
        with Path(path).open("rb") as handle:
            handle.seek(0, 2)
            size = handle.tell()
            handle.seek(max(0, size - TAIL_BYTES))
            raw = handle.read(TAIL_BYTES)
    except OSError:
        return []
    text = ANSI.sub("", raw.decode("utf-8", errors="replace"))
    # Carriage-return redraws (progress bars): keep what the terminal would show.
    # Secrets hidden: these lines go to the database, the UI and the webhook.
    result = [line[:MAX_LINE] for line in redact_lines(line.rsplit("\r", 1)[-1] for line in text.split("\n"))]
    result = [line for line in result if line.strip()]
    if size > TAIL_BYTES and result:
        result = result[1:]  # the first line is probably cut
    return result[-lines:]


class EventRecorder:
    """Consumes transitions on its own thread; publishes stored events."""

    def __init__(
        self,
        store: EventStore,
        *,
        retention_seconds: float,
        log_tail_lines: int = 20,
        on_event: Callable[[dict[str, Any]], None] | None = None,
        purge_every: float = 60.0,
        purge_batch: int = 500,
        max_queue: int = 10_000,
        recent_size: int = 200,
        max_events: int = 50_000,
        max_history: int = 10_000,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """Create a recorder over ``store``; ``on_event`` gets each stored event."""
        self.store = store
        self.retention_seconds = retention_seconds
        self.max_events = max_events
        self.max_history = max_history
        self._clock = clock
        self._log_tail_lines = log_tail_lines
        self._on_event = on_event
        self._purge_every = purge_every
        self._purge_batch = purge_batch
        # None wakes the thread to stop; it blocks on the queue, briefly only while starts are held.
        self._queue: queue.Queue[Transition | None] = queue.Queue(maxsize=max_queue)
        self._recent: collections.deque[dict[str, Any]] = collections.deque(maxlen=recent_size)
        self._recent_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._next_purge = 0.0
        self._purging = False
        # Discovered operations' starts, held until they prove not to be churn: (id, run) -> start.
        self._held: dict[tuple[str, int], Transition] = {}
        self.dropped = 0
        self.churn_skipped = 0

    # -- producer side (sampler thread) ---------------------------------------------

    def submit(self, transition: Transition) -> None:
        """Queue a transition; never blocks."""
        try:
            self._queue.put_nowait(transition)
        except queue.Full:
            self.dropped += 1
            logger.warning("events: queue full, dropped a %s event", transition.kind)

    # -- readers (UI, API) ------------------------------------------------------------

    def recent(
        self, after_id: int = 0, limit: int = 50, kinds: frozenset[str] | None = None
    ) -> list[dict[str, Any]]:
        """Recent stored events with an id above ``after_id`` (of ``kinds`` when given), oldest first."""
        with self._recent_lock:
            events = [
                e for e in self._recent
                if (e["id"] or 0) > after_id and (kinds is None or e["kind"] in kinds)
            ]
        return events[-limit:]

    def latest_id(self) -> int:
        """The id of the newest event this process knows (0 when none)."""
        with self._recent_lock:
            return self._recent[-1]["id"] if self._recent else 0

    # -- thread -------------------------------------------------------------------------

    def start(self) -> None:
        """Start the recorder thread (idempotent)."""
        if self._thread is not None and self._thread.is_alive():
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="dgx-spark-events", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Store what is queued, then stop the thread."""
        self._stop.set()
        with contextlib.suppress(queue.Full):  # full: the thread is busy and sees the flag soon
            self._queue.put_nowait(None)
        if self._thread is not None:
            self._thread.join(timeout)
        self._thread = None

    def _run(self) -> None:
        self._load_recent()
        retry: Transition | None = None
        while True:
            try:
                transition = retry if retry is not None else self._queue.get(timeout=self._wait_seconds())
                retry = None
                if transition is None:
                    continue
            except queue.Empty:
                if self._stop.is_set():
                    self._flush_held_safely(None)  # they are real starts: keep them
                    return
                self._flush_held_safely(self._clock())
                self._maybe_purge()
                continue
            try:
                self.record(transition)
            except Exception as exc:
                if is_unavailable_error(exc):
                    if self._stop.is_set():  # shutting down with the database away: say what is lost
                        logger.warning("events: the database is unavailable; the %s event of %s is lost: %s",
                                       transition.kind, transition.operation.id, describe_error(exc))
                        continue
                    # The database is busy or away: keep this event (and those queued behind it) for later,
                    # and say so in /api/health (the supervisor's probe clears it once the database is back).
                    health.report_error("database", f"events not recorded: {describe_error(exc)}")
                    logger.warning("events: the database is unavailable; will record the %s event later: %s",
                                   transition.kind, describe_error(exc))
                    retry = transition
                    self._stop.wait(1.0)
                    continue
                logger.exception("events: could not record a %s event", transition.kind)
            self._flush_held_safely(self._clock())
            self._maybe_purge()

    def _wait_seconds(self) -> float:
        """How long the idle thread blocks: briefly while starts are held, a purge goes on or it stops."""
        if self._stop.is_set():
            return STOP_POLL_SECONDS
        if self._held or self._purging:
            return HELD_POLL_SECONDS
        return min(IDLE_WAIT_SECONDS, max(HELD_POLL_SECONDS, self._next_purge - time.monotonic()))

    def _load_recent(self) -> None:
        """Fill the ring with the newest stored events, so a restart keeps them."""
        try:
            events = self.store.events(limit=self._recent.maxlen or 200)
        except Exception:
            logger.warning("events: could not read stored events", exc_info=True)
            return
        with self._recent_lock:
            self._recent.extend(events)

    def held_count(self) -> int:
        """How many discovered starts are held back (not yet known not to be churn)."""
        return len(self._held)

    def flush_held(self, now: float | None = None) -> list[dict[str, Any]]:
        """Store the held starts older than ``SHORT_LIVED_SECONDS`` at ``now`` (None: all of them).

        Returns:
            The stored events.
        """
        stored: list[dict[str, Any]] = []
        for key, transition in list(self._held.items()):
            if now is None or now - _start_of(transition) >= SHORT_LIVED_SECONDS:
                del self._held[key]
                event = self._store(transition)
                if event is not None:
                    stored.append(event)
        return stored

    def _flush_held_safely(self, now: float | None) -> None:
        try:
            self.flush_held(now)
        except Exception:
            logger.exception("events: could not record a held start")

    def record(self, transition: Transition) -> dict[str, Any] | None:
        """Store one transition (and the history row when it ends a run).

        Returns:
            The stored event, or None when it was a duplicate, churn, or a start held back.
        """
        op = transition.operation
        key = (op.id, op.run)
        terminal = transition.kind in TERMINAL_KINDS
        young = self._clock() - _start_of(transition) < SHORT_LIVED_SECONDS
        if transition.kind == "started" and op.source == "discovered" and young:
            self._held[key] = transition  # stored once it has lived SHORT_LIVED_SECONDS
            if len(self._held) > MAX_HELD:
                oldest = next(iter(self._held))
                self._store(self._held.pop(oldest))
            return None
        held = self._held.pop(key, None)
        if terminal and transition.kind != "failed" and is_quiet_churn(op, transition.at):
            self.churn_skipped += 1  # short-lived and did not fail: neither start nor end is kept
            return None
        if held is not None and transition.kind != "failed":
            self._store(held)  # a failed short-lived command: the failure alone is the news
        return self._store(transition)

    def _store(self, transition: Transition) -> dict[str, Any] | None:
        """Write one event (and the run's history row when it is terminal) and publish it."""
        op = transition.operation
        terminal = transition.kind in TERMINAL_KINDS
        if terminal and self.store.has_terminal_event(op.id, op.run):
            return None  # already recorded, e.g. before a dashboard restart
        tail: list[str] = []
        if terminal or transition.kind == "stalled":
            # Discovered operations: what the sampler read through the process (and may keep).
            tail = (
                list(transition.log_tail[-self._log_tail_lines :])
                if transition.log_tail is not None
                else read_log_tail(op.log_path, self._log_tail_lines)
            )
        outcome, reason, source = _ending(transition) if terminal else (None, None, None)
        event = self.store.add_event(
            EventRow(
                operation_id=op.id,
                run=op.run,
                name=op.name[:500],
                op_type=op.type,
                kind=transition.kind,
                at=transition.at,
                exit_code=op.exit_code,
                outcome=outcome,
                exit_reason=reason,
                outcome_source=source,
                detail=transition.detail[:2000],
                log_tail=log_tail_text(tail),
            )
        )
        if terminal:
            self.store.upsert_history(
                HistoryRow(
                    operation_id=op.id,
                    run=op.run,
                    name=op.name[:500],
                    op_type=op.type,
                    status=op.status,
                    source=op.source,
                    description=op.description,
                    command=op.command,
                    pid=op.pid,
                    port=op.port,
                    started_at=op.started_at_ts,
                    ended_at=op.ended_at_ts or transition.at,
                    exit_code=op.exit_code,
                    outcome=outcome,
                    exit_reason=reason,
                    outcome_source=source,
                    peak_memory_bytes=transition.peak_memory_bytes,
                    log_tail=log_tail_text(tail),
                )
            )
        with self._recent_lock:
            self._recent.append(event)
        if self._on_event is not None:
            try:
                self._on_event(event)
            except Exception:
                logger.warning("events: listener failed", exc_info=True)
        return event

    def _maybe_purge(self) -> None:
        """Delete one small batch of expired (or over-cap) rows when due; the next batch next time."""
        now = time.monotonic()
        if not self._purging and now < self._next_purge:
            return
        try:
            deleted = self.store.purge_batch(time.time() - self.retention_seconds, self._purge_batch)
            deleted += self.store.trim_batch(self.max_events, self.max_history, self._purge_batch)
        except Exception:
            logger.warning("events: retention failed", exc_info=True)
            deleted = 0
        self._purging = deleted > 0  # more may be left: continue on the next tick
        if not self._purging:
            self._next_purge = now + self._purge_every
        elif deleted:
            logger.info("events: removed %d expired rows", deleted)


def _ending(transition: Transition) -> tuple[str, str | None, str]:
    """How a terminal transition's run ended: its outcome, exit reason and outcome source.

    The outcome is the event's kind (what the detector decided from the operation's own
    outcome, or from its status and exit code when it has none). The source is the
    operation's; ``unknown`` when it names none (e.g. a process that just disappeared).
    """
    op = transition.operation
    reason = op.exit_reason
    if not reason and op.exit_code is not None:
        reason = f"exit code {op.exit_code}" if op.exit_code >= 0 else f"killed by signal {-op.exit_code}"
    return transition.kind, (reason[:500] if reason else None), (op.outcome_source or "unknown")


def _start_of(transition: Transition) -> float:
    """When the operation of a transition started (the transition's time when unknown)."""
    started = transition.operation.started_at_ts
    return transition.at if started is None else started
