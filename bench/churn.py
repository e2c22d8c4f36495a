"""Process churn for the sampler benchmark: N short-lived processes started (and ended) per second.

Run as a script, it is the driver: it starts ``/bin/sleep <life>`` ``--rate`` times a
second with ``posix_spawn``, reaps them, and on SIGTERM kills what is left and prints
one JSON line: how many it started and over how many seconds (the rate it reached,
which a loaded machine may keep below the one asked for). ``churn()`` runs the
driver for the duration of a ``with`` block.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

SLEEP = "/bin/sleep"


def drive(rate: float, life: float) -> dict[str, Any]:
    """Start ``rate`` processes a second, each living ``life`` seconds, until SIGTERM."""
    stop = False

    def on_term(_sig: int, _frame: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_term)
    children: set[int] = set()
    started = 0
    began = time.monotonic()
    period = 1.0 / rate
    next_at = began
    argv = [SLEEP, f"{life:g}"]
    print(json.dumps({"ready": True}), flush=True)
    while not stop:
        now = time.monotonic()
        while next_at <= now and not stop:
            children.add(os.posix_spawn(SLEEP, argv, os.environ))
            started += 1
            next_at += period
        while children:
            try:
                pid, _status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break
            children.discard(pid)
        time.sleep(max(0.0, min(period, next_at - time.monotonic())))
    seconds = time.monotonic() - began
    for pid in children:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    for pid in children:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, 0)
    return {"started": started, "seconds": round(seconds, 3), "rate": round(started / seconds, 1) if seconds else None}


@contextlib.contextmanager
def churn(rate: float, life: float = 0.5) -> Iterator[dict[str, Any]]:
    """Run the driver for the block; the dict it yields gets ``started``, ``seconds``, ``rate`` at the end."""
    result: dict[str, Any] = {"asked_rate": rate, "life_s": life}
    if rate <= 0:
        yield result
        return
    driver = subprocess.Popen(
        [sys.executable, __file__, "--rate", str(rate), "--life", str(life)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    assert driver.stdout is not None
    try:
        if not driver.stdout.readline():
            raise RuntimeError("the churn driver did not start")
        yield result
    finally:
        driver.send_signal(signal.SIGTERM)
        try:
            out, _ = driver.communicate(timeout=30)
            lines = [line for line in out.splitlines() if line.startswith("{")]
            if lines:
                result.update(json.loads(lines[-1]))
        except subprocess.TimeoutExpired:
            pass
        with contextlib.suppress(ProcessLookupError):
            os.killpg(driver.pid, signal.SIGKILL)
        driver.wait()


def main() -> None:
    """The driver (see the module's docstring)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=200.0)
    parser.add_argument("--life", type=float, default=0.5)
    args = parser.parse_args()
    print(json.dumps(drive(args.rate, args.life)), flush=True)


if __name__ == "__main__":
    main()
