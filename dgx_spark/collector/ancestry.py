"""The dashboard's own process chain: a process and its ancestors, read from ``/proc``.

One walk for everyone who must leave the dashboard alone: discovery (which hides
the dashboard's own processes) and the supervisor's signal guard (which never
signals the dashboard or a process it runs under). Plain Python, no psutil.
"""

from __future__ import annotations

import os

# A chain longer than this is a loop or a lie (ppids are re-read while processes come and go).
MAX_DEPTH = 64


def parent_pid(pid: int, proc: str = "/proc") -> int | None:
    """The parent of ``pid`` from ``/proc/<pid>/stat``, or None when it cannot be read."""
    try:
        with open(f"{proc}/{pid}/stat", "rb") as handle:
            data = handle.read()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: the fields after it start after the last ")".
    fields = data[data.rfind(b")") + 2 :].split(None, 2)
    try:
        return int(fields[1])
    except (IndexError, ValueError):
        return None


def ancestor_pids(pid: int | None = None, proc: str = "/proc") -> list[int]:
    """``pid`` (default: this process) and its ancestors, nearest first, without init (1) and 0."""
    chain: list[int] = []
    current: int | None = os.getpid() if pid is None else pid
    while current is not None and current > 1 and current not in chain and len(chain) < MAX_DEPTH:
        chain.append(current)
        current = parent_pid(current, proc)
    return chain
