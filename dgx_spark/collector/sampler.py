"""The sampler: one per backend process, a snapshot every refresh period.

Discovery and the probes run in a daemon thread, off any event loop. Readers
(browser sessions, the REST API) only ever read ``Sampler.latest``.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Protocol

from dgx_spark.collector.facts import ContainersFacts, SystemFacts
from dgx_spark.collector.model import EMPTY_SNAPSHOT, Operation, ProbeError, Snapshot

logger = logging.getLogger(__name__)


@dataclasses.dataclass
class SampleContext:
    """What a probe sees and may change during one sample."""

    now: float
    operations: list[Operation]
    # Set by the system probe; the containers probe sets ``containers`` (the sampler joins them).
    system: SystemFacts | None = None
    containers: ContainersFacts | None = None


class Probe(Protocol):
    """One isolated step of a sample: enrich, add or mark operations."""

    name: str

    def sample(self, ctx: SampleContext) -> None:
        """Update ``ctx`` in place. Raising is allowed: the sampler contains it."""


Discover = Callable[[float], list[Operation]]


class Sampler:
    """Takes snapshots every ``interval`` seconds in a background thread."""

    def __init__(
        self,
        discover: Discover,
        probes: Sequence[Probe] = (),
        *,
        interval: float = 2.0,
        ended_ttl: float = 600.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """Create a sampler; call ``start`` to begin sampling."""
        self._discover = discover
        self._probes = list(probes)
        self.interval = interval
        self.ended_ttl = ended_ttl
        self._clock = clock
        self._latest: Snapshot = EMPTY_SNAPSHOT
        self._ended: dict[str, Operation] = {}
        self._failing: dict[str, ProbeError] = {}
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._changed = threading.Condition()
        self._cpu_seconds = 0.0

    @property
    def latest(self) -> Snapshot:
        """The most recent snapshot (``sequence`` 0 before the first sample)."""
        return self._latest

    @property
    def cpu_seconds(self) -> float:
        """CPU time all samples so far have used (the sampling thread's own)."""
        return self._cpu_seconds

    @property
    def discovery(self) -> Discover:
        """What turns the process table into operations (a ``Discovery`` in the app)."""
        return self._discover

    @property
    def discovery_mode(self) -> str | None:
        """How discovery follows processes: ``events`` (kernel process events) or ``scan``; None: unknown."""
        return getattr(self._discover, "mode", None)

    @property
    def discovery_mode_reason(self) -> str | None:
        """Why discovery runs in that mode, in words (None when the discovery does not say)."""
        return getattr(self._discover, "mode_reason", None)

    @property
    def running(self) -> bool:
        """Whether the background thread is alive."""
        return self._thread is not None and self._thread.is_alive()

    def add_probe(self, probe: Probe) -> None:
        """Append a probe; it runs from the next sample on."""
        with self._lock:
            self._probes.append(probe)

    def start(self) -> None:
        """Start the background thread (idempotent)."""
        if self.running:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="dgx-spark-sampler", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the background thread."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
        self._thread = None

    def request_sample(self) -> None:
        """Ask for a sample now instead of at the next tick."""
        self._wake.set()

    def wait_for(self, sequence: int, timeout: float) -> Snapshot:
        """Block until a snapshot newer than ``sequence`` exists, or time out."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while self._latest.sequence <= sequence:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._changed.wait(left)
        return self._latest

    def _run(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                self.sample_once()
            except Exception:
                logger.exception("sampler: sample failed")
            elapsed = time.monotonic() - started
            self._wake.wait(max(0.05, self.interval - elapsed))
            self._wake.clear()

    def sample_once(self) -> Snapshot:
        """Take one snapshot now and publish it."""
        started = time.perf_counter()
        cpu_started = time.thread_time()
        now = self._clock()
        errors: list[ProbeError] = []
        try:
            operations = list(self._discover(now))
        except Exception as exc:  # noqa: BLE001
            operations = [op for op in self._latest.operations if op.source == "discovered"]
            errors.append(self._record_failure("discovery", exc, now))
        else:
            self._recover("discovery")
        operations = self._carry_ended(operations, now)
        ctx = SampleContext(now=now, operations=operations)
        with self._lock:
            probes = list(self._probes)
        for probe in probes:
            try:
                probe.sample(ctx)
            except Exception as exc:  # noqa: BLE001
                errors.append(self._record_failure(probe.name, exc, now))
            else:
                self._recover(probe.name)
        self._forget_unlisted(ctx.operations)
        snapshot = Snapshot(
            sequence=self._latest.sequence + 1,
            taken_at=now,
            operations=tuple(ctx.operations),
            errors=tuple(errors),
            system=_joined(ctx.system, ctx.containers),
            duration_ms=(time.perf_counter() - started) * 1000.0,
            cpu_ms=(time.thread_time() - cpu_started) * 1000.0,
        )
        self._cpu_seconds += (snapshot.cpu_ms or 0.0) / 1000.0
        with self._changed:
            self._latest = snapshot
            self._changed.notify_all()
        return snapshot

    def _carry_ended(self, operations: list[Operation], now: float) -> list[Operation]:
        """Keep discovered operations that vanished as ``stopped`` for ``ended_ttl``."""
        present = {op.id for op in operations}
        for previous in self._latest.operations:
            if (
                previous.source == "discovered"
                and previous.is_live
                and previous.id not in present
            ):
                self._ended[previous.id] = previous.replace(
                    status="stopped",
                    ended_at_ts=now,
                    cpu_percent=None,
                    memory_bytes=None,
                    gpu_utilization=None,
                    pids=(),
                )
        for op_id, ended in list(self._ended.items()):
            if op_id in present or now - (ended.ended_at_ts or now) > self.ended_ttl:
                del self._ended[op_id]
        return operations + list(self._ended.values())

    def _forget_unlisted(self, listed: list[Operation]) -> None:
        """Forget ended operations a probe took off the list (e.g. short-lived commands, counted instead)."""
        ids = {op.id for op in listed}
        for op_id in [op_id for op_id in self._ended if op_id not in ids]:
            del self._ended[op_id]

    def _record_failure(self, probe: str, exc: BaseException, now: float) -> ProbeError:
        known = self._failing.get(probe)
        message = f"{type(exc).__name__}: {exc}"
        if known is None or known.message != message:
            logger.warning("probe %s failed: %s", probe, message, exc_info=known is None)
            known = ProbeError(probe=probe, message=message, since=now)
            self._failing[probe] = known
        return known

    def _recover(self, probe: str) -> None:
        if self._failing.pop(probe, None) is not None:
            logger.info("probe %s recovered", probe)


def _joined(system: SystemFacts | None, containers: ContainersFacts | None) -> SystemFacts | None:
    """The snapshot's system facts: the system probe's, with the containers probe's part."""
    if containers is None:
        return system
    return dataclasses.replace(system or SystemFacts(), containers=containers)

