"""Per-operation progress: what each source says, merged, plus ETA, throughput and stalls.

Sources, most trusted first (``SOURCES``): a report through the API, the Python
helper (which also reports through the API), the job's parsed output, and
Hugging Face's ``trainer_state.json``. Fields are merged one by one: each comes
from the most trusted source that knows it. Thread-safe: the API writes from
request threads while the sampler thread reads.
"""

from __future__ import annotations

import collections
import dataclasses
import threading
from collections.abc import Iterable
from typing import Any

from dgx_spark.progress.parsers import ProgressUpdate

SOURCES: tuple[str, ...] = ("api", "helper", "log", "trainer_state", "command")
# Sources that may be named as ``progress_source`` (``command`` only hints the epoch count).
REPORTED_SOURCES: frozenset[str] = frozenset({"api", "helper"})
LOSS_HISTORY_LEN = 60
# Progress samples kept for the rate behind the ETA, and how far back they may reach.
RATE_SAMPLES = 40
RATE_WINDOW_SECONDS = 900.0
DEFAULT_STALL_SECONDS = 600.0


def reads_like_training(update: ProgressUpdate) -> bool:
    """Whether parsed output reads like a training run, not just any progress bar.

    Epochs (``Epoch 3/200``, or a 0-based Lightning ``Epoch 3`` with a loss), or
    steps or progress with a loss. A bare bar with a rate (``50/50 [00:01, 30it/s]``)
    is not enough: data processing prints those too.
    """
    has_loss = any("loss" in name for name in update.metrics)
    if update.epoch is not None and (update.total_epochs or has_loss):
        return True
    return has_loss and (update.progress is not None or update.step is not None)


@dataclasses.dataclass(frozen=True)
class ProgressView:
    """The merged, derived progress of one operation at one moment."""

    progress: float | None
    epoch: float | None
    total_epochs: int | None
    step: int | None
    total_steps: int | None
    throughput: float | None
    eta_seconds: float | None
    stalled: bool | None
    source: str | None
    metrics: dict[str, float]
    loss_history: tuple[float, ...]

    def operation_fields(self, existing_metrics: Any = None) -> dict[str, Any]:
        """The ``Operation`` fields this view sets (``op.replace(**fields)``)."""
        metrics: dict[str, Any] = dict(existing_metrics or {})
        metrics.update(self.metrics)
        for key, value in (("epoch", self.epoch), ("step", self.step), ("total_steps", self.total_steps)):
            if value is not None:
                metrics[key] = int(value) if float(value).is_integer() else value
        return {
            "progress": None if self.progress is None else round(self.progress, 4),
            "metrics": metrics or None,
            "total_epochs": self.total_epochs,
            "eta_seconds": None if self.eta_seconds is None else round(self.eta_seconds),
            "throughput": None if self.throughput is None else round(self.throughput, 3),
            "stalled": self.stalled,
            "progress_source": self.source,
            "loss_history": self.loss_history or None,
        }


@dataclasses.dataclass
class _Entry:
    """Everything known about one operation's progress."""

    updates: dict[str, ProgressUpdate] = dataclasses.field(default_factory=dict)
    # Per source: the counter value of its latest update that brought a train loss.
    loss_sequence: dict[str, int] = dataclasses.field(default_factory=dict)
    samples: collections.deque[tuple[float, float]] = dataclasses.field(
        default_factory=lambda: collections.deque(maxlen=RATE_SAMPLES)
    )
    steps: collections.deque[tuple[float, int]] = dataclasses.field(
        default_factory=lambda: collections.deque(maxlen=RATE_SAMPLES)
    )
    losses: collections.deque[float] = dataclasses.field(
        default_factory=lambda: collections.deque(maxlen=LOSS_HISTORY_LEN)
    )
    loss_seen: tuple[str, int] | None = None
    position: tuple[Any, ...] | None = None
    moved_at: float | None = None


def _first(updates: list[tuple[str, ProgressUpdate]], field: str) -> tuple[Any, str | None]:
    for source, update in updates:
        value = getattr(update, field)
        if value is not None:
            return value, source
    return None, None


class ProgressTracker:
    """Progress state of every operation, keyed by operation id."""

    def __init__(self, stall_seconds: float = DEFAULT_STALL_SECONDS) -> None:
        """Create an empty tracker."""
        self.stall_seconds = stall_seconds
        self._entries: dict[str, _Entry] = {}
        self._lock = threading.Lock()
        self._counter = 0

    def update(self, op_id: str, source: str, update: ProgressUpdate) -> None:
        """Record what ``source`` says now about ``op_id`` (replaces its previous word)."""
        if source not in SOURCES:
            raise ValueError(f"unknown progress source {source!r}")
        update = update.copy()
        if update.progress is None and update.step is not None and update.total_steps:
            update.progress = min(1.0, update.step / update.total_steps)
        with self._lock:
            entry = self._entries.setdefault(op_id, _Entry())
            previous = entry.updates.get(source)
            loss = update.metrics.get("train_loss")
            if source in REPORTED_SOURCES:
                brings_loss = loss is not None
            else:
                # Parsed sources repeat their whole state: a loss is new when its value is.
                brings_loss = loss is not None and (previous is None or previous.metrics.get("train_loss") != loss)
            if source in REPORTED_SOURCES and previous is not None:
                # A report may send only what changed: keep the rest of the last one.
                update = _overlay(previous, update)
            self._counter += 1
            entry.updates[source] = update
            if brings_loss:
                entry.loss_sequence[source] = self._counter

    def has(self, op_id: str) -> bool:
        """Whether anything is known about ``op_id``."""
        with self._lock:
            return op_id in self._entries

    def record(self, op_id: str, now: float) -> None:
        """Note where the merged progress of ``op_id`` stands at ``now``.

        Feeds the samples behind ETA, throughput and stalls, and the loss
        history. The progress probe calls it once per tick, before ``view``.
        """
        with self._lock:
            entry = self._entries.get(op_id)
            merged = _merge(entry.updates) if entry is not None else None
            if entry is None or merged is None:
                return
            self._track_loss(entry, merged.loss_source, merged.metrics.get("train_loss"))
            _track_position(entry, merged, now)

    def view(self, op_id: str, now: float, alive: bool) -> ProgressView | None:
        """Merge the sources of ``op_id`` and derive ETA, throughput and stalled; None if unknown.

        Changes nothing: what moved and when is noted by ``record``.
        """
        with self._lock:
            entry = self._entries.get(op_id)
            merged = _merge(entry.updates) if entry is not None else None
            if entry is None or merged is None:
                return None
            throughput = merged.throughput if merged.throughput is not None else _rate(entry.steps, now)
            eta, stalled = self._eta_and_stalled(entry, merged.progress, now, alive)
            return ProgressView(
                progress=merged.progress,
                epoch=merged.epoch,
                total_epochs=merged.total_epochs,
                step=merged.step,
                total_steps=merged.total_steps,
                throughput=throughput,
                eta_seconds=eta,
                stalled=stalled,
                source=merged.source,
                metrics=dict(merged.metrics),
                loss_history=tuple(entry.losses),
            )

    def _eta_and_stalled(
        self, entry: _Entry, progress: float | None, now: float, alive: bool
    ) -> tuple[float | None, bool | None]:
        """Seconds left and whether progress stopped moving (an ended job is never stalled)."""
        if not alive:
            return (0.0 if progress is not None and progress >= 1.0 else None), False
        if progress is not None and progress >= 1.0:
            return _eta(entry.samples, progress, now), False
        stalled = entry.moved_at is not None and now - entry.moved_at >= self.stall_seconds
        # A stalled job has no rate to speak of.
        return (None if stalled else _eta(entry.samples, progress, now)), stalled

    def forget(self, keep: Iterable[str]) -> None:
        """Drop every operation not in ``keep``."""
        keep_ids = set(keep)
        with self._lock:
            for op_id in [i for i in self._entries if i not in keep_ids]:
                del self._entries[op_id]

    @staticmethod
    def _track_loss(entry: _Entry, source: str | None, loss: float | None) -> None:
        """Append the train loss to the history once per new update that carries it."""
        if source is None or loss is None:
            return
        seen = (source, entry.loss_sequence.get(source, 0))
        if seen != entry.loss_seen:
            entry.loss_seen = seen
            entry.losses.append(float(loss))


@dataclasses.dataclass(frozen=True)
class _Merged:
    """The sources of one operation merged field by field, most trusted first."""

    progress: float | None
    epoch: float | None
    total_epochs: int | None
    step: int | None
    total_steps: int | None
    throughput: float | None
    metrics: dict[str, float]
    source: str
    loss_source: str | None

    @property
    def position(self) -> tuple[Any, ...]:
        """What counts as moving: progress, step or epoch; the metrics when none is known."""
        if self.progress is None and self.step is None and self.epoch is None:
            return tuple(sorted(self.metrics.items()))
        return (self.progress, self.step, self.epoch)


def _merge(updates: dict[str, ProgressUpdate]) -> _Merged | None:
    """Each field from the most trusted source that knows it; None when only hints are known."""
    ordered = [(s, updates[s]) for s in SOURCES if s in updates]
    progress, progress_source = _first(ordered, "progress")
    epoch, epoch_source = _first(ordered, "epoch")
    total_epochs, _ = _first(ordered, "total_epochs")
    metrics: dict[str, float] = {}
    loss_source = None
    for source, update in reversed(ordered):
        metrics.update(update.metrics)
        if "train_loss" in update.metrics:
            loss_source = source
    if progress is None and epoch is not None and total_epochs:
        progress = min(1.0, float(epoch) / total_epochs)
        progress_source = epoch_source
    named = progress_source or epoch_source or loss_source
    if named is None:
        named = next((s for s, u in ordered if s != "command" and not u.is_empty()), None)
    if named is None:
        return None  # only hints (an epoch count from the command line) so far
    return _Merged(
        progress=progress,
        epoch=epoch,
        total_epochs=total_epochs,
        step=_first(ordered, "step")[0],
        total_steps=_first(ordered, "total_steps")[0],
        throughput=_first(ordered, "throughput")[0],
        metrics=metrics,
        source=named,
        loss_source=loss_source,
    )


def _track_position(entry: _Entry, merged: _Merged, now: float) -> None:
    """Note when the position last moved, and the progress and step samples behind the rates."""
    position = merged.position
    if position == entry.position:
        return
    entry.position = position
    entry.moved_at = now
    if merged.progress is not None:
        if entry.samples and merged.progress < entry.samples[-1][1]:
            entry.samples.clear()  # went backwards: a new run or a new bar
        entry.samples.append((now, float(merged.progress)))
    if merged.step is not None:
        if entry.steps and merged.step < entry.steps[-1][1]:
            entry.steps.clear()
        entry.steps.append((now, int(merged.step)))


def _overlay(previous: ProgressUpdate, update: ProgressUpdate) -> ProgressUpdate:
    """``update`` with the fields it leaves out taken from ``previous``."""
    merged = previous.copy()
    for field in dataclasses.fields(ProgressUpdate):
        value = getattr(update, field.name)
        if field.name == "metrics":
            merged.metrics.update(value)
        elif value is not None:
            setattr(merged, field.name, value)
    return merged


def _rate(samples: collections.deque[tuple[float, int]], now: float) -> float | None:
    """Steps per second across the recent samples."""
    recent = [s for s in samples if now - s[0] <= RATE_WINDOW_SECONDS]
    if len(recent) < 2:
        return None
    (t0, s0), (t1, s1) = recent[0], recent[-1]
    if t1 <= t0 or s1 <= s0:
        return None
    return (s1 - s0) / (t1 - t0)


def _eta(samples: collections.deque[tuple[float, float]], progress: float | None, now: float) -> float | None:
    """Seconds left at the recent rate of progress, counted from now."""
    if progress is None:
        return None
    if progress >= 1.0:
        return 0.0
    recent = [s for s in samples if now - s[0] <= RATE_WINDOW_SECONDS]
    if len(recent) < 2:
        return None
    (t0, p0), (t1, p1) = recent[0], recent[-1]
    if t1 <= t0 or p1 <= p0:
        return None
    left = (1.0 - p1) / ((p1 - p0) / (t1 - t0)) - (now - t1)
    return max(0.0, left)
