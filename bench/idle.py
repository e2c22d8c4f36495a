"""N extra idle processes for the sampler benchmark, spawned cheaply and always cleaned up.

N ``sleep`` processes, children of one plain ``bash`` that reads its commands
from a pipe. A shell running nothing and a ``sleep`` without a terminal are
not operations, so the monitor under test must look at every one of them
each refresh and list none: the shape of the daemons and helpers that make up
most of a real process table. The shell reaps its children when told to stop,
so nothing is left behind even where PID 1 does not reap orphans.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Iterator

# Fed to the shell on stdin: start the children, say so, wait; on TERM kill and reap them all.
_SCRIPT = """trap 'kill -9 $(jobs -p) 2>/dev/null; wait; exit 0' TERM
for ((i = 0; i < {count}; i++)); do sleep 100000 & done
echo ready
wait
"""


def process_count() -> int:
    """How many processes the machine has right now."""
    return sum(1 for name in os.listdir("/proc") if name.isdigit())


@contextlib.contextmanager
def idle_processes(count: int, timeout: float = 120.0) -> Iterator[list[int]]:
    """Run ``count`` idle ``sleep`` processes for the duration of the block; yield their pids."""
    if count <= 0:
        yield []
        return
    shell = subprocess.Popen(
        ["bash"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        text=True,
    )
    try:
        assert shell.stdin is not None and shell.stdout is not None
        shell.stdin.write(_SCRIPT.format(count=int(count)))
        shell.stdin.flush()
        line = shell.stdout.readline().strip()
        if line != "ready":
            raise RuntimeError(f"could not start {count} idle processes: {line or 'no answer'}")
        yield _children(shell.pid)
    finally:
        _stop(shell, timeout)


def _children(ppid: int) -> list[int]:
    """Pids whose parent is ``ppid`` (read from /proc/<ppid>/task/*/children)."""
    pids: list[int] = []
    with contextlib.suppress(OSError):
        for task in os.listdir(f"/proc/{ppid}/task"):
            with open(f"/proc/{ppid}/task/{task}/children") as fh:
                pids.extend(int(p) for p in fh.read().split())
    return pids


def _stop(shell: subprocess.Popen[str], timeout: float) -> None:
    """Ask the shell to kill and reap its children; force the whole group if it must."""
    with contextlib.suppress(ProcessLookupError):
        shell.send_signal(signal.SIGTERM)
    try:
        shell.wait(timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(shell.pid, signal.SIGKILL)
        shell.wait(10)
    # Anything still in the group (the shell died early) goes too.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(shell.pid, signal.SIGKILL)
    for stream in (shell.stdin, shell.stdout):
        with contextlib.suppress(OSError, ValueError):
            if stream is not None:
                stream.close()
    time.sleep(0.05)
