"""The recorder thread: stores transitions, keeps the history, prunes old rows.

The detector (sampler thread) only puts transitions on a queue; this thread
reads log tails, writes the database, keeps a small ring of recent events for
the UI and hands each stored event to the webhook sender.
"""

from __future__ import annotations

import collections
import logging
import queue
import re
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from dgx_spark.events.detector import Transition
from dgx_spark.events.store import (
    TERMINAL_KINDS,
    EventRow,
    EventStore,
    HistoryRow,
    log_tail_text,
)
from dgx_spark.security.redaction import redact_lines

logger = logging.getLogger(__name__)

ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b\][^\x07]*\x07|\x1b[@-Z\\-_]")
TAIL_BYTES = 16 * 1024
MAX_LINE = 500


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
    ) -> None:
        """Create a recorder over ``store``; ``on_event`` gets each stored event."""
        self.store = store
        self.retention_seconds = retention_seconds
        self._log_tail_lines = log_tail_lines
        self._on_event = on_event
        self._purge_every = purge_every
        self._purge_batch = purge_batch
        self._queue: queue.Queue[Transition] = queue.Queue(maxsize=max_queue)
        self._recent: collections.deque[dict[str, Any]] = collections.deque(maxlen=recent_size)
        self._recent_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._next_purge = 0.0
        self._purging = False
        self.dropped = 0

    # -- producer side (sampler thread) ---------------------------------------------

    def submit(self, transition: Transition) -> None:
        """Queue a transition; never blocks."""
        try:
            self._queue.put_nowait(transition)
        except queue.Full:
            self.dropped += 1
            logger.warning("events: queue full, dropped a %s event", transition.kind)

    # -- readers (UI, API) ------------------------------------------------------------

    def recent(self, after_id: int = 0, limit: int = 50) -> list[dict[str, Any]]:
        """Recent stored events with an id above ``after_id``, oldest first."""
        with self._recent_lock:
            events = [e for e in self._recent if (e["id"] or 0) > after_id]
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
        if self._thread is not None:
            self._thread.join(timeout)
        self._thread = None

    def _run(self) -> None:
        self._load_recent()
        while True:
            try:
                transition = self._queue.get(timeout=0.5)
            except queue.Empty:
                if self._stop.is_set():
                    return
                self._maybe_purge()
                continue
            try:
                self.record(transition)
            except Exception:
                logger.exception("events: could not record a %s event", transition.kind)
            self._maybe_purge()

    def _load_recent(self) -> None:
        """Fill the ring with the newest stored events, so a restart keeps them."""
        try:
            events = self.store.events(limit=self._recent.maxlen or 200)
        except Exception:
            logger.warning("events: could not read stored events", exc_info=True)
            return
        with self._recent_lock:
            self._recent.extend(events)

    def record(self, transition: Transition) -> dict[str, Any] | None:
        """Store one transition (and the history row when it ends an operation).

        Returns:
            The stored event, or None when it was a duplicate.
        """
        op = transition.operation
        terminal = transition.kind in TERMINAL_KINDS
        if terminal and self.store.has_terminal_event(op.id):
            return None  # already recorded, e.g. before a dashboard restart
        tail: list[str] = []
        if terminal or transition.kind == "stalled":
            tail = read_log_tail(op.log_path, self._log_tail_lines)
        event = self.store.add_event(
            EventRow(
                operation_id=op.id,
                name=op.name[:500],
                op_type=op.type,
                kind=transition.kind,
                at=transition.at,
                exit_code=op.exit_code,
                detail=transition.detail[:2000],
                log_tail=log_tail_text(tail),
            )
        )
        if terminal:
            self.store.upsert_history(
                HistoryRow(
                    operation_id=op.id,
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
        """Delete one small batch of expired rows when due; the next batch next time."""
        now = time.monotonic()
        if not self._purging and now < self._next_purge:
            return
        try:
            deleted = self.store.purge_batch(time.time() - self.retention_seconds, self._purge_batch)
        except Exception:
            logger.warning("events: retention failed", exc_info=True)
            deleted = 0
        self._purging = deleted > 0  # more may be left: continue on the next tick
        if not self._purging:
            self._next_purge = now + self._purge_every
        elif deleted:
            logger.info("events: removed %d expired rows", deleted)
