"""N extra idle processes for the sampler benchmark, spawned cheaply and always cleaned up.

One small Python parent (its own session) starts N ``sleep`` children with
``posix_spawn`` and reaps them itself when told to stop, so nothing is left
behind even where PID 1 does not reap orphans. ``sleep`` with no terminal is
not an operation, so the children cost a monitor only its per-process scan,
which is what the benchmark is about.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator

# Runs in the helper parent. argv: count. Prints "ready" once every child exists.
_PARENT = r"""
import os, signal, shutil, sys
count = int(sys.argv[1])
sleep = shutil.which("sleep") or "/bin/sleep"
children = []
def stop(*_):
    for pid in children:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    for pid in children:
        try:
            os.waitpid(pid, 0)
        except ChildProcessError:
            pass
    os._exit(0)
signal.signal(signal.SIGTERM, stop)
signal.signal(signal.SIGINT, stop)
try:
    for _ in range(count):
        children.append(os.posix_spawn(sleep, [sleep, "100000"], {}))
except OSError as exc:
    print(f"error {exc}", flush=True)
    stop()
print("ready", flush=True)
sys.stdin.read()  # until the benchmark closes our stdin (or dies)
stop()
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
    parent = subprocess.Popen(
        [sys.executable, "-c", _PARENT, str(count)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        text=True,
    )
    try:
        assert parent.stdout is not None
        line = parent.stdout.readline().strip()
        if line != "ready":
            raise RuntimeError(f"could not start {count} idle processes: {line or 'no answer'}")
        yield _children(parent.pid)
    finally:
        _stop(parent, timeout)


def _children(ppid: int) -> list[int]:
    """Pids whose parent is ``ppid`` (read from /proc/<ppid>/task/*/children)."""
    pids: list[int] = []
    with contextlib.suppress(OSError):
        for task in os.listdir(f"/proc/{ppid}/task"):
            with open(f"/proc/{ppid}/task/{task}/children") as fh:
                pids.extend(int(p) for p in fh.read().split())
    return pids


def _stop(parent: subprocess.Popen[str], timeout: float) -> None:
    """Ask the parent to kill and reap its children; force the whole group if it must."""
    with contextlib.suppress(OSError, ValueError):
        if parent.stdin is not None:
            parent.stdin.close()
    try:
        parent.wait(timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(parent.pid, signal.SIGKILL)
        parent.wait(10)
    # Anything still in the group (the parent died early) goes too.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(parent.pid, signal.SIGKILL)
    with contextlib.suppress(OSError, ValueError):
        if parent.stdout is not None:
            parent.stdout.close()
    time.sleep(0.05)
