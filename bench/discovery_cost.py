"""Discovery's CPU cost per tick against the floor of reading every /proc/<pid>/stat once.

Spawns N idle ``sleep`` processes, warms discovery up (the first tick learns every
process once), then prints the median CPU milliseconds per tick of ours and of
the floor over several rounds.

    .venv/bin/python bench/discovery_cost.py --processes 1000 --rounds 15
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import contextlib

from dgx_spark.collector.discovery import Discovery
from dgx_spark.collector.proc_events import ExitListener
from dgx_spark.collector.rules import build_table


def floor_once() -> None:
    """Read every /proc/<pid>/stat once: the least any process scan can cost."""
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            fd = os.open(f"/proc/{name}/stat", os.O_RDONLY)
        except OSError:
            continue
        try:
            os.read(fd, 1024)
        except OSError:
            pass
        finally:
            os.close(fd)


def cpu_ms(action: object) -> float:
    """CPU milliseconds (user + system, this thread) one call takes."""
    started = time.thread_time()
    action()  # type: ignore[operator]
    return (time.thread_time() - started) * 1000.0


def spawn_idle(count: int, orphan: bool) -> tuple[subprocess.Popen[bytes], list[int]]:
    """``count`` idle sleeps in one process group (children of one shell, or orphans); their pids."""
    script = f'for i in $(seq {count}); do sleep 100000 & echo $!; done; {"exit 0" if orphan else "wait"}'
    shell = subprocess.Popen(["bash", "-c", script], start_new_session=True, stdout=subprocess.PIPE)
    assert shell.stdout is not None
    pids = [int(shell.stdout.readline()) for _ in range(count)]
    return shell, pids


def kill_all(shell: subprocess.Popen[bytes], pids: list[int]) -> None:
    """Kill the sleeps we started, by pid, and the shell's group."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(shell.pid, signal.SIGKILL)
    shell.wait()


def main() -> None:
    """Run the measurement and print a table (and JSON with --json)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--processes", type=int, nargs="*", default=[100, 1000])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--interval", type=float, default=0.2, help="seconds between ticks")
    parser.add_argument("--orphan", action="store_true", help="sleeps reparented to init instead of one folded tree")
    parser.add_argument("--scan", action="store_true", help="scan /proc even where kernel process events work")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    results = {}
    listener = None if args.scan else ExitListener()
    if listener is not None:
        listener.start()
    for count in args.processes:
        shell, pids = spawn_idle(count, args.orphan)
        try:
            time.sleep(1.5 + count / 1000)
            # young_seconds=0: the sleeps just started would be re-checked every refresh for 10 s;
            # this measures the steady state (make bench lets them age instead).
            discovery = Discovery(build_table(), exclude_self=True, events=listener, young_seconds=0.0)
            for _ in range(3):  # warm-up: learn every process once
                discovery(time.time())
                time.sleep(args.interval)
            ours, floor = [], []
            for _ in range(args.rounds):
                ours.append(cpu_ms(lambda d=discovery: d(time.time())))
                floor.append(cpu_ms(floor_once))
                time.sleep(args.interval)
            procs = sum(1 for name in os.listdir("/proc") if name.isdigit())
            row = {
                "processes": procs,
                "mode": discovery.mode,
                "ours_ms": round(statistics.median(ours), 2),
                "floor_ms": round(statistics.median(floor), 2),
            }
            row["ratio_vs_floor"] = round(row["ours_ms"] / row["floor_ms"], 2) if row["floor_ms"] else None
            results[str(count)] = row
        finally:
            kill_all(shell, pids)
    print(f"{'extra':>6} {'procs':>6} {'mode':>6} {'ours ms':>8} {'floor ms':>9} {'ratio':>6}")
    for count, row in results.items():
        print(
            f"{count:>6} {row['processes']:>6} {row['mode']:>6} {row['ours_ms']:>8} {row['floor_ms']:>9}"
            f" {row['ratio_vs_floor']:>6}"
        )
    if args.json:
        print(json.dumps(results))


if __name__ == "__main__":
    main()
