"""The one place that sends signals to processes, so every kill is easy to audit.

Every signal goes through :func:`send_signal`, which re-checks the target's
identity (pid + create time) immediately before signalling and refuses PID 1,
this dashboard process and its ancestors.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
import signal

import psutil

from dgx_spark.collector.ancestry import ancestor_pids

logger = logging.getLogger(__name__)

CREATE_TIME_TOLERANCE = 0.02


class SignalRefused(Exception):
    """The target may not be signalled (protected process or identity mismatch)."""


class SignalDenied(Exception):
    """The OS refused the signal (permission denied)."""


@dataclasses.dataclass(frozen=True, slots=True)
class ProcessIdentity:
    """A process as pid + create time: a reused pid is a different process."""

    pid: int
    create_time: float


def identity_of(pid: int) -> ProcessIdentity | None:
    """The identity of a live process, or None when it is gone."""
    try:
        return ProcessIdentity(pid, psutil.Process(pid).create_time())
    except (psutil.NoSuchProcess, psutil.ZombieProcess, ValueError):
        return None
    except psutil.AccessDenied:
        return None


def is_alive(identity: ProcessIdentity) -> bool:
    """Whether the process still exists, is the same one, and is not a zombie."""
    try:
        proc = psutil.Process(identity.pid)
        if abs(proc.create_time() - identity.create_time) > CREATE_TIME_TOLERANCE:
            return False
        return proc.status() != psutil.STATUS_ZOMBIE
    except (psutil.NoSuchProcess, psutil.ZombieProcess, psutil.AccessDenied, ValueError):
        return False


@functools.cache
def protected_pids() -> frozenset[int]:
    """PID 1, this process and all its ancestors: never signalled."""
    return frozenset({0, 1, *ancestor_pids()})


def send_signal(target: ProcessIdentity, sig: int, *, group: bool = False) -> bool:
    """Send ``sig`` to a process (or its whole process group) after re-checking its identity.

    Args:
        target: The process, as pid + create time.
        sig: The signal number.
        group: Signal the process group led by ``target`` (it must lead one).

    Returns:
        True when sent; False when the process is already gone.

    Raises:
        SignalRefused: Protected target, a reused pid or not a group leader.
        SignalDenied: The OS refused (EPERM).
    """
    if not isinstance(target.pid, int) or isinstance(target.pid, bool) or target.pid <= 1:
        raise SignalRefused(f"pid {target.pid!r} may not be signalled")
    if target.pid in protected_pids():
        raise SignalRefused(f"pid {target.pid} is the dashboard or one of its ancestors")
    try:
        proc = psutil.Process(target.pid)
        if abs(proc.create_time() - target.create_time) > CREATE_TIME_TOLERANCE:
            raise SignalRefused(f"pid {target.pid} now belongs to another process")
        if proc.status() == psutil.STATUS_ZOMBIE:
            return False
        pgid = os.getpgid(target.pid) if group else None
    except (psutil.NoSuchProcess, ProcessLookupError):
        return False
    except psutil.AccessDenied as exc:
        raise SignalDenied(f"permission denied for pid {target.pid}") from exc
    try:
        if group:
            if pgid != target.pid:
                raise SignalRefused(f"pid {target.pid} does not lead its process group")
            if pgid == os.getpgrp():
                raise SignalRefused("refusing to signal the dashboard's own process group")
            logger.info("signal %s -> process group %d", signal.Signals(sig).name, pgid)
            os.killpg(pgid, sig)
        else:
            logger.info("signal %s -> pid %d", signal.Signals(sig).name, target.pid)
            os.kill(target.pid, sig)
    except ProcessLookupError:
        return False
    except PermissionError as exc:
        raise SignalDenied(f"permission denied to signal pid {target.pid}") from exc
    return True
