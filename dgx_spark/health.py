"""Which parts of this backend are degraded right now, since when, and why.

Plain Python, thread-safe, no I/O: the database write path, the webhook sender
and the sampler's probes report here; ``/api/health`` and the page read it.
A component is ``ok`` until it reports an error, and ``ok`` again after its
next success.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Protocol

from dgx_spark.format import iso_utc

# The components /api/health always lists (others may be reported too).
COMPONENTS = ("database", "nvml", "sampler", "webhook")

# Keys whose failure was logged already (each once; forgotten all at once past the cap).
_logged: set[str] = set()
_logged_lock = threading.Lock()
MAX_LOGGED_KEYS = 10_000


def log_once(log: logging.Logger, key: str, message: str, *args: object) -> None:
    """Log a warning on ``log`` the first time ``key`` fails; later failures of it stay quiet.

    Keys are shared by the whole process: prefix them with their area (``"host:net"``).
    """
    with _logged_lock:
        if key in _logged:
            return
        if len(_logged) >= MAX_LOGGED_KEYS:
            _logged.clear()
        _logged.add(key)
    log.warning(message, *args)


@dataclass
class ComponentState:
    """The health of one component."""

    name: str
    degraded: bool = False
    last_error: str | None = None
    since: float | None = None  # when it became degraded (POSIX seconds)
    last_error_at: float | None = None
    last_ok_at: float | None = None
    details: dict[str, Any] = field(default_factory=dict)

    def to_api(self) -> dict[str, Any]:
        """The JSON shape used by ``/api/health``."""
        return {
            "status": "degraded" if self.degraded else "ok",
            "last_error": self.last_error,
            "since": _iso(self.since),
            "last_error_at": _iso(self.last_error_at),
            "last_ok_at": _iso(self.last_ok_at),
            **self.details,
        }


def _iso(ts: float | None) -> str | None:
    return iso_utc(ts, milliseconds=True)


class HealthRegistry:
    """The process-wide table of component states."""

    def __init__(self) -> None:
        """An empty registry: every component ``ok``."""
        self._lock = threading.Lock()
        self._states: dict[str, ComponentState] = {}

    def _get(self, name: str) -> ComponentState:
        state = self._states.get(name)
        if state is None:
            state = self._states[name] = ComponentState(name)
        return state

    def report_error(self, name: str, message: str, **details: Any) -> None:
        """Mark ``name`` degraded with ``message`` (``since`` stays at the first error)."""
        now = time.time()
        with self._lock:
            state = self._get(name)
            if not state.degraded:
                state.degraded, state.since = True, now
            state.last_error, state.last_error_at = message[:500], now
            state.details.update(details)

    def report_ok(self, name: str, **details: Any) -> None:
        """Mark ``name`` healthy again (its last error stays for reference)."""
        with self._lock:
            state = self._get(name)
            state.degraded, state.since, state.last_ok_at = False, None, time.time()
            state.details.update(details)

    def set_details(self, name: str, **details: Any) -> None:
        """Attach extra facts (e.g. ``pending_writes``) without changing the status."""
        with self._lock:
            self._get(name).details.update(details)

    def is_degraded(self, name: str) -> bool:
        """Whether ``name`` is degraded now."""
        with self._lock:
            state = self._states.get(name)
            return bool(state and state.degraded)

    def state(self, name: str) -> ComponentState:
        """A copy of one component's state."""
        with self._lock:
            state = self._get(name)
            return ComponentState(
                state.name, state.degraded, state.last_error, state.since, state.last_error_at,
                state.last_ok_at, dict(state.details),
            )

    def snapshot(self) -> dict[str, ComponentState]:
        """Copies of every known component's state (the standard ones always included)."""
        with self._lock:
            names = list(dict.fromkeys([*COMPONENTS, *self._states]))
        return {name: self.state(name) for name in names}


health = HealthRegistry()


class GpuStatus(Protocol):
    """What ``components_payload`` reads of the GPUs (``collector.facts.GpuFacts`` is one)."""

    @property
    def available(self) -> bool:
        """Whether NVML answered with GPUs."""

    @property
    def message(self) -> str | None:
        """Why there are none."""

    @property
    def stale(self) -> bool:
        """Whether NVML missed its deadline."""

    @property
    def stale_seconds(self) -> float | None:
        """For how long."""


def components_payload(
    *,
    sampler_running: bool,
    taken_at: float | None,
    interval: float,
    errors: list[tuple[str, str, float]],
    gpu: GpuStatus | None,
    no_gpu_message: str,
    now: float | None = None,
) -> dict[str, dict[str, Any]]:
    """``/api/health``'s ``components``: database, nvml, sampler and webhook, each with its status.

    Args:
        sampler_running: Whether the sampler thread runs.
        taken_at: When the latest snapshot was taken (None: none yet).
        interval: The refresh interval in seconds.
        errors: The latest snapshot's failing probes as (probe, message, since).
        gpu: The snapshot's GPU facts (``snapshot.system.gpu``; None: not read yet).
        no_gpu_message: The message that means "this machine has no NVIDIA GPU" (not a fault).
        now: The current time (tests).

    Returns:
        Per component: ``status`` (``ok``, ``degraded``, or ``absent`` for a machine without GPU),
        ``last_error``, ``since`` and what else is known.
    """
    now = time.time() if now is None else now
    out = {name: state.to_api() for name, state in health.snapshot().items()}

    # The sampler: running, fresh, and every probe working.
    problems = [(p, m, s) for p, m, s in errors if p != "system"]
    age = None if not taken_at else now - taken_at
    sampler: dict[str, Any] = {"status": "ok", "last_error": None, "since": None, "age_seconds": age}
    if not sampler_running and taken_at:
        sampler.update(status="degraded", last_error="the sampler is not running", since=_iso(taken_at))
    elif age is not None and age > 3 * interval + 5:
        sampler.update(status="degraded", last_error=f"the latest snapshot is {age:.0f}s old", since=_iso(taken_at))
    elif problems:
        first = min(problems, key=lambda e: e[2])
        sampler.update(status="degraded", last_error=f"{first[0]}: {first[1]}", since=_iso(first[2]))
    out["sampler"] = sampler

    # NVML: a hung or failing NVML is degraded; a machine without NVIDIA GPU is "absent".
    nvml: dict[str, Any] = {"status": "ok", "last_error": None, "since": None}
    system_errors = [(p, m, s) for p, m, s in errors if p == "system"]
    if gpu is not None and gpu.stale:
        stale = gpu.stale_seconds or 0.0
        nvml.update(status="degraded", last_error=f"NVML has not answered for {stale:.0f}s", since=_iso(now - stale))
    elif system_errors:
        nvml.update(status="degraded", last_error=system_errors[0][1], since=_iso(system_errors[0][2]))
    elif gpu is not None and not gpu.available:
        message = gpu.message or no_gpu_message
        nvml.update(status="absent" if message == no_gpu_message else "degraded", last_error=message)
    out["nvml"] = nvml
    return out


def database_banner(now: float | None = None) -> str:
    """The page's line under "The database is unavailable" ("" when it is fine).

    Says what failed, since when, and what that means for the user's actions.
    """
    state = health.state("database")
    if not state.degraded:
        return ""
    since = time.strftime("%H:%M:%S", time.localtime(state.since or (time.time() if now is None else now)))
    waiting = int(state.details.get("pending_writes") or 0)
    kept = f" {waiting} change(s) are kept on disk until it is back." if waiting else ""
    # No ticking duration: the text changes only when the facts do (no push every refresh).
    return (
        f"Since {since} ({state.last_error}). New launches are refused; "
        f"stops still work and are saved once it is back.{kept}"
    )
