"""How a discovered operation ended: ``completed``, ``failed`` or ``stopped``, and why.

The dashboard did not start these processes, so it cannot wait for them. When
one ends, the outcome comes from the best source available, in this order:

1. ``kernel``: the exact wait status from the proc connector (``proc_events``),
   with OOM kills told apart by the ``oom_kill`` counter of the process's memory
   cgroup (v2 ``memory.events``, v1 ``memory.oom_control``) or a
   ``Killed process <pid>`` line in the kernel log (``/dev/kmsg``) when readable.
2. ``log``: the last lines of its output, read through the process while it
   lived (``output``): a Python traceback, ``CUDA out of memory``, ``Killed``,
   ``Segmentation fault``, ``core dumped``, NCCL errors. An inference.
3. ``progress``: its progress reached the total (epoch N/N, 100 %). An inference.
4. ``unknown``: it ended; how is not known (shown as ``stopped``).
"""

from __future__ import annotations

import collections
import dataclasses
import errno
import logging
import os
import re
import signal
import threading
import time
from collections.abc import Iterable, Sequence
from typing import Any

from dgx_spark.collector.model import Operation
from dgx_spark.collector.output import OutputHandles
from dgx_spark.collector.proc_events import ExitListener, describe_status, signal_name
from dgx_spark.collector.sampler import SampleContext

logger = logging.getLogger(__name__)

TAIL_LINES = 40
"""Last lines of output kept on an ended operation (events, history) and searched for failures."""
FAILURE_WINDOW = 15
"""A failure line counts only among this many last lines (an old, handled error is not the end)."""
EXIT_WAIT_SECONDS = 0.3
"""How long an ending waits for its exit event (the listener thread may be a moment behind)."""
MAX_REASON = 300
_STOP_SIGNALS = frozenset({signal.SIGINT, signal.SIGTERM, signal.SIGHUP})

_TRACEBACK = "Traceback (most recent call last):"
_EXCEPTION_LINE = re.compile(
    r"^[A-Za-z_][\w.]*(?:Error|Exception|Interrupt|Exit|Warning|Failure|Fault)?(?::.*)?$"
)
_CHAINING = ("During handling of the above exception", "The above exception was the direct cause")
# Single lines that say a program failed, most specific first.
_FAILURE_LINES: tuple[re.Pattern[str], ...] = (
    re.compile(r"CUDA out of memory|CUDA error: out of memory|OutOfMemoryError", re.IGNORECASE),
    re.compile(
        r"NCCL error|nccl(?:Internal|System|UnhandledCuda|Remote|InvalidUsage)Error|NCCL communicator was aborted"
    ),
    re.compile(r"Segmentation fault|core dumped|Fatal Python error|Bus error|^Aborted\b"),
    re.compile(r"^(?:\S+: line \d+: +\d+ )?Killed\b"),
    re.compile(r"CUDA error:|cudaError|illegal memory access"),
)


# ----------------------------------------------------------------------------- reading the signs
def failure_in(lines: Sequence[str]) -> tuple[str, str] | None:
    """The outcome and reason the end of some output shows, or None when it shows no failure.

    Returns:
        (``failed`` or ``stopped``, reason); a Python traceback gives ``Traceback: <exception line>``
        (``stopped`` for ``KeyboardInterrupt``), another failure line gives the line itself.
    """
    window = [line.strip() for line in lines if line.strip()][-FAILURE_WINDOW:]
    for index in range(len(window) - 1, -1, -1):
        if window[index].startswith(_TRACEBACK):
            exception = _exception_after(window, index)
            if exception is not None:
                outcome = "stopped" if exception.startswith("KeyboardInterrupt") else "failed"
                return outcome, _cut(f"Traceback: {exception}")
            break
    for pattern in _FAILURE_LINES:
        for line in reversed(window):
            if pattern.search(line):
                return "failed", _cut(line)
    return None


def _exception_after(window: list[str], start: int) -> str | None:
    """The exception line that ends a traceback starting at ``window[start]``."""
    found = None
    for line in window[start + 1 :]:
        if line.startswith(_CHAINING) or line.startswith(_TRACEBACK):
            found = None
            continue
        if line.startswith(("File ", "^", "~")):
            continue
        if _EXCEPTION_LINE.match(line) and not line.startswith("raise "):
            found = line
    return found


def _cut(text: str) -> str:
    return text if len(text) <= MAX_REASON else text[: MAX_REASON - 1] + "…"


def progress_done(op: Operation) -> str | None:
    """Why the operation's progress says it finished (epoch N/N, 100 %), or None."""
    metrics = dict(op.metrics or {})
    epoch, total = metrics.get("epoch"), op.total_epochs
    if isinstance(epoch, int | float) and total and epoch >= total:
        shown = int(epoch) if float(epoch).is_integer() else epoch
        return f"reached epoch {shown}/{total}"
    if op.progress is not None and op.progress >= 0.999:
        return "progress reached 100 %"
    return None


def decide(
    *,
    status: int | None,
    stop_requested: bool = False,
    oom: bool = False,
    oom_named: bool = False,
    log: tuple[str, str] | None = None,
    progress: str | None = None,
) -> dict[str, Any]:
    """The outcome fields of an ended discovered operation from what is known.

    Args:
        status: The root process's exact wait status (proc connector), or None.
        stop_requested: A user stopped it from the dashboard (whatever its exit status then).
        oom: The OOM killer ended a process in its memory cgroup meanwhile (counter rose).
        oom_named: The kernel log named one of its processes as killed by the OOM killer.
        log: What its output's end shows (``failure_in``).
        progress: Why its progress says it finished (``progress_done``).

    Returns:
        ``status``, ``exit_code``, ``outcome``, ``exit_reason``, ``outcome_source``.
    """
    if status is not None:
        code, sig, core = describe_status(status)
        if stop_requested and not (sig == signal.SIGKILL and (oom or oom_named)):
            how = signal_name(sig) if sig is not None else f"exit code {code}"
            return _fields(
                "stopped", code if code is not None else -(sig or 0), f"stopped by the user ({how})", "kernel"
            )
        if code is not None:
            if code == 0:
                return _fields("completed", 0, "exit code 0", "kernel")
            reason = f"exit code {code}"
            if log is not None and log[0] == "failed":
                reason = f"{log[1]} ({reason})"
            if oom or oom_named:
                reason += "; the OOM killer ended one of its processes"
            return _fields("failed", code, reason, "kernel")
        assert sig is not None
        if sig == signal.SIGKILL and (oom or oom_named):
            return _fields("failed", -sig, "killed by the OOM killer", "kernel")
        if sig in _STOP_SIGNALS:
            return _fields("stopped", -sig, f"stopped by {signal_name(sig)}", "kernel")
        reason = f"killed by {signal_name(sig)}" + (" (core dumped)" if core else "")
        return _fields("failed", -sig, reason, "kernel")
    if stop_requested:
        return _fields("stopped", None, "stopped by the user (exit status unknown)", "unknown")
    if oom_named:
        return _fields("failed", None, "killed by the OOM killer", "kernel")
    if oom:
        return _fields(
            "failed", None, "likely killed by the OOM killer (its cgroup's oom_kill count rose)", "kernel"
        )
    if log is not None:
        return _fields(log[0], None, log[1], "log")
    if progress is not None:
        return _fields("completed", None, progress, "progress")
    return _fields("stopped", None, "ended; exit status unknown", "unknown")


def _fields(outcome: str, code: int | None, reason: str, source: str) -> dict[str, Any]:
    return {
        "status": "failed" if outcome == "failed" else "stopped",
        "exit_code": code,
        "outcome": outcome,
        "exit_reason": reason,
        "outcome_source": source,
    }


# ----------------------------------------------------------------------------- user stops
_stop_requests: dict[str, float] = {}
_stop_lock = threading.Lock()


def record_stop_request(op_id: str) -> None:
    """Note that a user stopped a discovered operation from the dashboard (its end is then ``stopped``)."""
    with _stop_lock:
        _stop_requests[op_id] = time.time()
        for old in [i for i, at in _stop_requests.items() if time.time() - at > 86400]:
            del _stop_requests[old]


def _stop_requested(op_id: str) -> bool:
    with _stop_lock:
        return _stop_requests.pop(op_id, None) is not None


# ----------------------------------------------------------------------------- OOM counters
def _cgroup_mounts(
    mountinfo: str = "/proc/self/mountinfo",
) -> tuple[tuple[str, str] | None, tuple[str, str] | None]:
    """(root, mount point) of the cgroup v2 hierarchy and of the v1 memory controller."""
    v2 = v1 = None
    try:
        with open(mountinfo, encoding="utf-8", errors="replace") as handle:
            for line in handle:
                left, _, right = line.partition(" - ")
                fields, tail = left.split(), right.split()
                if len(fields) < 5 or len(tail) < 3:
                    continue
                if tail[0] == "cgroup2" and v2 is None:
                    v2 = (fields[3], fields[4])
                elif tail[0] == "cgroup" and "memory" in tail[2].split(",") and v1 is None:
                    v1 = (fields[3], fields[4])
    except OSError:
        pass
    return v2, v1


class OomCounters:
    """Reads the OOM-kill counter of a process's memory cgroup (v1 or v2)."""

    def __init__(self, proc: str = "/proc") -> None:
        """Find the cgroup mounts once."""
        self.proc = proc
        self.v2, self.v1 = _cgroup_mounts()

    @staticmethod
    def _inside(mount: tuple[str, str], path: str) -> str | None:
        root, point = mount
        if ".." in path.split("/"):
            return None  # outside our cgroup namespace
        if root != "/":
            if not (path == root or path.startswith(root + "/")):
                return None
            path = path[len(root) :]
        return point + (path if path.startswith("/") else "/" + path)

    def counter_file(self, pid: int) -> str | None:
        """The file holding ``oom_kill`` for the process's memory cgroup, or None."""
        try:
            with open(f"{self.proc}/{pid}/cgroup", encoding="utf-8", errors="replace") as handle:
                lines = handle.read().splitlines()
        except OSError:
            return None
        for line in lines:
            hierarchy, _, rest = line.partition(":")
            controllers, _, path = rest.partition(":")
            if self.v1 is not None and "memory" in controllers.split(","):
                folder = self._inside(self.v1, path)
                if folder and os.path.exists(f"{folder}/memory.oom_control"):
                    return f"{folder}/memory.oom_control"
            if hierarchy == "0" and controllers == "" and self.v2 is not None:
                folder = self._inside(self.v2, path)
                if folder and os.path.exists(f"{folder}/memory.events"):
                    return f"{folder}/memory.events"
        return None

    @staticmethod
    def read(path: str | None) -> int | None:
        """The ``oom_kill`` count in a counter file, or None."""
        if path is None:
            return None
        try:
            with open(path, "rb") as handle:
                data = handle.read(4096)
        except OSError:
            return None
        for line in data.split(b"\n"):
            if line.startswith(b"oom_kill "):
                try:
                    return int(line.split()[1])
                except (IndexError, ValueError):
                    return None
        return None


# ----------------------------------------------------------------------------- the kernel log
_KILLED_PROCESS = re.compile(rb"Killed process (\d+) \(")


class KernelLog:
    """Follows ``/dev/kmsg`` from now on for ``Killed process <pid>`` lines (when readable)."""

    def __init__(self, path: str = "/dev/kmsg", keep: int = 1024) -> None:
        """Open the kernel log at its end; unreadable (no root/CAP_SYSLOG) means never used."""
        self.keep = keep
        self._killed: collections.OrderedDict[int, float] = collections.OrderedDict()
        try:
            self._fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
            os.lseek(self._fd, 0, os.SEEK_END)
        except OSError as exc:
            self._fd = -1
            logger.info(
                "outcomes: the kernel log is not readable (%s); OOM kills come from cgroup counters",
                exc.strerror or exc,
            )

    @property
    def readable(self) -> bool:
        """Whether the kernel log is followed."""
        return self._fd >= 0

    def drain(self, now: float, limit: int = 20000) -> None:
        """Read the records written since the last call."""
        for _ in range(limit):
            if self._fd < 0:
                return
            try:
                record = os.read(self._fd, 8192)
            except BlockingIOError:
                return
            except OSError as exc:
                if exc.errno == errno.EPIPE:
                    continue  # records were overwritten before we read them
                logger.info("outcomes: stopped following the kernel log (%s)", exc)
                os.close(self._fd)
                self._fd = -1
                return
            if not record:
                return
            match = _KILLED_PROCESS.search(record)
            if match is not None:
                self._killed[int(match.group(1))] = now
                while len(self._killed) > self.keep:
                    self._killed.popitem(last=False)

    def named(self, pids: Iterable[int], since: float) -> tuple[int, ...]:
        """Which of ``pids`` the OOM killer named since ``since``."""
        return tuple(pid for pid in pids if self._killed.get(pid, -1.0) >= since)

    def close(self) -> None:
        """Stop following."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


# ----------------------------------------------------------------------------- the probe
@dataclasses.dataclass(slots=True)
class _Tracked:
    """What is kept about a live discovered operation, to tell how it ended."""

    pid: int
    since: float
    pids: tuple[int, ...]
    counter_file: str | None
    oom_count: int | None = None


class OutcomeProbe:
    """Sampler probe: sets the outcome of discovered operations that ended (after progress, before events)."""

    name = "outcome"

    def __init__(
        self,
        handles: OutputHandles,
        exits: ExitListener,
        kernel_log: KernelLog | None = None,
        oom: OomCounters | None = None,
        exit_wait: float = EXIT_WAIT_SECONDS,
    ) -> None:
        """Read through ``handles`` and ``exits`` (the services' output handles and exit listener)."""
        self.handles = handles
        self.exits = exits
        self.kernel_log = kernel_log if kernel_log is not None else KernelLog()
        self.oom = oom or OomCounters()
        self.exit_wait = exit_wait
        self._tracked: dict[str, _Tracked] = {}
        self._decided: dict[str, dict[str, Any]] = {}

    def sample(self, ctx: SampleContext) -> None:
        """Track live discovered operations; give the ones that ended their outcome."""
        self.kernel_log.drain(ctx.now)
        present: set[str] = set()
        counts: dict[str | None, int | None] = {}
        for index, op in enumerate(ctx.operations):
            present.add(op.id)
            if op.source != "discovered":
                continue
            if op.is_live:
                self._track(op, counts)
                continue
            fields = self._decided.get(op.id)
            if fields is None:
                fields = self._decided[op.id] = self._decide(op)
            ctx.operations[index] = op.replace(**fields)
        for table in (self._tracked, self._decided):
            for op_id in [i for i in table if i not in present]:
                del table[op_id]
        self.exits.watch({tracked.pid for tracked in self._tracked.values()})
        self.handles.retain(present)

    def _track(self, op: Operation, counts: dict[str | None, int | None]) -> None:
        tracked = self._tracked.get(op.id)
        if tracked is None:
            assert op.pid is not None
            since = (op.started_at_ts or 0.0) - 1.0  # boot time is whole seconds
            tracked = self._tracked[op.id] = _Tracked(op.pid, since, op.pids, self.oom.counter_file(op.pid))
            self.handles.get(op)  # open its output now: it cannot be opened after it ended
        tracked.pids = op.pids or (tracked.pid,)
        if tracked.counter_file not in counts:
            counts[tracked.counter_file] = self.oom.read(tracked.counter_file)
        tracked.oom_count = counts[tracked.counter_file]

    def _decide(self, op: Operation) -> dict[str, Any]:
        tracked = self._tracked.pop(op.id, None)
        status = None
        if op.pid is not None:
            since = tracked.since if tracked else (op.started_at_ts or 0.0) - 1.0
            status = self.exits.status_of(op.pid, since, wait=self.exit_wait if self.exits.ready else 0.0)
        oom = oom_named = False
        if tracked is not None:
            after = self.oom.read(tracked.counter_file)
            oom = tracked.oom_count is not None and after is not None and after > tracked.oom_count
            oom_named = bool(self.kernel_log.named(tracked.pids, tracked.since))
        held = self.handles.get(op)
        tail = held.tail(TAIL_LINES) if held is not None else []
        self.handles.release(op.id)
        stopped = _stop_requested(op.id)
        fields = decide(
            status=status,
            stop_requested=stopped,
            oom=oom,
            oom_named=oom_named,
            log=failure_in(tail),
            progress=progress_done(op),
        )
        if stopped:
            fields["stop_requested"] = True
        fields["output_tail"] = tuple(tail) if tail else None
        return fields
