"""Throttle control actions: a few per second per client, one in flight per operation.

Plain Python, thread-safe: the control service (``dgx_spark/control/service.py``) applies
them to every control action, from the REST API and the Reflex handlers alike. The process's
one set of limits is a :class:`Limits` built by ``dgx_spark.services.Services``.
"""

from __future__ import annotations

import contextlib
import contextvars
import threading
import time
from collections.abc import Iterator

from dgx_spark.settings import LimitSettings

DEFAULT_RATE = 5.0  # control actions per second per client, sustained
DEFAULT_BURST = 10  # control actions a client may make at once

# Operation ids the current request or task already holds: a handler's own hold() re-enters.
held_operations: contextvars.ContextVar[frozenset[str]] = contextvars.ContextVar(
    "dgx_spark_held_operations", default=frozenset()
)


class Busy(RuntimeError):
    """Another control action on the same operation is still in flight."""

    def __init__(self, key: str) -> None:
        """Create the error for the operation ``key``."""
        super().__init__(f"another action on {key} is still in progress")
        self.key = key


class RateLimiter:
    """A token bucket per client: ``burst`` actions at once, ``rate`` per second after that."""

    def __init__(self, rate: float = DEFAULT_RATE, burst: int = DEFAULT_BURST, max_clients: int = 10_000) -> None:
        """Create a limiter."""
        self.rate = rate
        self.burst = float(burst)
        self.max_clients = max_clients
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def allow(self, client: str, now: float | None = None) -> bool:
        """Take one action from ``client``'s bucket; False when it is empty."""
        now = time.monotonic() if now is None else now
        with self._lock:
            tokens, last = self._buckets.get(client, (self.burst, now))
            tokens = min(self.burst, tokens + (now - last) * self.rate)
            if len(self._buckets) >= self.max_clients and client not in self._buckets:
                self._buckets.clear()  # a flood of addresses: start over rather than grow
            if tokens < 1.0:
                self._buckets[client] = (tokens, now)
                return False
            self._buckets[client] = (tokens - 1.0, now)
            return True

    def peek(self, client: str, now: float | None = None) -> bool:
        """Whether ``client`` has an action left, taking nothing (e.g. to count only failures)."""
        now = time.monotonic() if now is None else now
        with self._lock:
            tokens, last = self._buckets.get(client, (self.burst, now))
            return min(self.burst, tokens + (now - last) * self.rate) >= 1.0

    def reset(self) -> None:
        """Forget every client."""
        with self._lock:
            self._buckets.clear()


class InFlight:
    """The set of operations with a control action in progress."""

    def __init__(self) -> None:
        """Create an empty registry."""
        self._keys: set[str] = set()
        self._lock = threading.Lock()

    def try_acquire(self, key: str) -> bool:
        """Mark ``key`` busy; False if it already is."""
        with self._lock:
            if key in self._keys:
                return False
            self._keys.add(key)
            return True

    def release(self, key: str) -> None:
        """Mark ``key`` free again."""
        with self._lock:
            self._keys.discard(key)

    def busy(self, key: str) -> bool:
        """Whether an action on ``key`` is in progress."""
        with self._lock:
            return key in self._keys

    @contextlib.contextmanager
    def hold(self, key: str) -> Iterator[None]:
        """Hold ``key`` for the block (re-entering when this context already holds it).

        Raises:
            Busy: Another action on ``key`` is in progress.
        """
        held = held_operations.get()
        if key in held:
            yield
            return
        if not self.try_acquire(key):
            raise Busy(key)
        reset = held_operations.set(held | {key})
        try:
            yield
        finally:
            held_operations.reset(reset)
            self.release(key)


class StreamSlots:
    """Caps on concurrent long-lived responses (log streams): per client and in all."""

    def __init__(self, per_client: int, total: int) -> None:
        """Create the caps."""
        self.per_client = per_client
        self.total = total
        self._open: dict[str, int] = {}
        self._lock = threading.Lock()

    def acquire(self, client: str) -> str | None:
        """Take a slot for ``client``: None when it got one, else the cap that is full (``client``/``total``)."""
        with self._lock:
            if sum(self._open.values()) >= self.total:
                return "total"
            if self._open.get(client, 0) >= self.per_client:
                return "client"
            self._open[client] = self._open.get(client, 0) + 1
            return None

    def release(self, client: str) -> None:
        """Give back one of ``client``'s slots."""
        with self._lock:
            left = self._open.get(client, 0) - 1
            if left > 0:
                self._open[client] = left
            else:
                self._open.pop(client, None)

    def count(self) -> int:
        """How many slots are taken."""
        with self._lock:
            return sum(self._open.values())


class Limits:
    """The limits of one process, shared by the REST layer and the event handlers."""

    def __init__(self, limits: LimitSettings) -> None:
        """Build them from the settings (``DGX_SPARK_CONTROL_RATE``, ``DGX_SPARK_LOG_STREAMS_*``...)."""
        # Control actions: a few per second per client.
        self.control_rate = RateLimiter(rate=limits.control_rate, burst=limits.control_burst)
        # The operations (and nodes) with a control action under way.
        self.in_flight = InFlight()
        # Log streams (``/logs/stream``): 8 per client, 64 in all by default.
        self.log_streams = StreamSlots(per_client=limits.log_streams_per_client, total=limits.log_streams_total)
