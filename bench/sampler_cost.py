"""Measurement 1: CPU time per refresh of our sampler, of Glances, and of the /proc floor.

All three run on the same machine with the same N extra idle processes (and, in
the extra rows, the same operations or the same process churn), in interleaved
rounds (floor, ours, Glances, then the next round) so that noise from a shared
machine hits them alike. CPU time is user + system time (``time.process_time``)
of the process doing the work: our sampler in this process, Glances in a driver
process running in Glances' own virtualenv. Ours also counts the kernel-events
listener's thread over the whole interval between refreshes (it works between
them), not only during ``sample_once``.

The idle processes are left to age past discovery's young window before
measuring: a process started seconds ago is re-checked every refresh (it may
``exec``); the steady state of an idle machine is what the rows are about. The
cost of processes starting is the churn row's.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bench.churn import churn
from bench.idle import idle_processes, process_count

ROOT = Path(__file__).resolve().parents[1]
GLANCES_VERSION = "4.5.8"
GLANCES_VENV = ROOT / "bench" / ".glances-venv"
GLANCES_DRIVER = ROOT / "bench" / "glances_driver.py"


def ensure_glances(venv: Path = GLANCES_VENV, version: str = GLANCES_VERSION, extras: str = "") -> Path:
    """Glances ``version`` from PyPI (with ``extras``, e.g. ``web``) in its own virtualenv; return that venv's python."""
    python = venv / "bin" / "python"
    requirement = f"glances[{extras}]=={version}" if extras else f"glances=={version}"
    marker = venv / (f".glances-{extras}-{version}" if extras else f".glances-{version}")
    if marker.exists() and python.exists():
        return python
    if not python.exists():
        base = getattr(sys, "_base_executable", None) or sys.executable
        subprocess.run([base, "-m", "venv", str(venv)], check=True)
    pip = subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", requirement],
        capture_output=True,
        text=True,
        check=False,
    )
    if pip.returncode != 0:
        raise RuntimeError(f"could not install {requirement} into {venv}:\n{pip.stderr[-2000:]}")
    marker.touch()
    return python


def read_proc_stat_once() -> int:
    """The floor: list /proc and read every ``/proc/<pid>/stat`` once. Returns how many were read."""
    read = 0
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            fd = os.open(f"/proc/{name}/stat", os.O_RDONLY)
        except OSError:
            continue
        try:
            os.read(fd, 4096)
            read += 1
        except OSError:
            pass
        finally:
            os.close(fd)
    return read


@contextlib.contextmanager
def app_sampler() -> Iterator[Any]:
    """The app's own sampler, set up by the app's lifespan (schema, supervisor, default probes).

    Its background thread is stopped at once: the benchmark calls ``sample_once``
    itself, so each refresh can be timed on its own.
    """
    from dgx_spark import services

    loop = asyncio.new_event_loop()
    lifespan = services.lifespan()
    loop.run_until_complete(lifespan.__aenter__())
    sampler = services.get_sampler()
    sampler.stop()
    try:
        yield sampler
    finally:
        loop.run_until_complete(lifespan.__aexit__(None, None, None))
        loop.close()


class GlancesDriver:
    """Glances' process list, refreshed on request inside Glances' own virtualenv."""

    def __init__(self, python: Path) -> None:
        """Start the driver and wait until Glances is imported."""
        self.process = subprocess.Popen(
            [str(python), str(GLANCES_DRIVER)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            cwd=tempfile.gettempdir(),
        )
        hello = self._answer()
        self.version = str(hello.get("glances"))

    def _answer(self) -> dict[str, Any]:
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError("the Glances driver exited")
        return json.loads(line)

    def refresh(self) -> float:
        """One Glances process-list refresh; its CPU time in ms."""
        assert self.process.stdin is not None
        self.process.stdin.write("update\n")
        self.process.stdin.flush()
        return float(self._answer()["cpu_ms"])

    def close(self) -> None:
        """Stop the driver."""
        try:
            if self.process.stdin is not None:
                self.process.stdin.close()
            self.process.wait(10)
        except (OSError, subprocess.TimeoutExpired):
            self.process.kill()
            self.process.wait(10)


def _cpu_ms(fn: Any) -> tuple[float, float, Any]:
    """Run ``fn``; return (CPU ms of this process, wall ms, result)."""
    cpu0, wall0 = time.process_time(), time.perf_counter()
    result = fn()
    return (time.process_time() - cpu0) * 1000.0, (time.perf_counter() - wall0) * 1000.0, result


_OP_SCRIPT = """#!/bin/bash
while true; do
    sleep 100000
done
"""


@contextlib.contextmanager
def operations(count: int) -> Iterator[list[int]]:
    """``count`` operations that stay idle: ``bash bench_op_NN.sh`` scripts, each with a ``sleep`` child."""
    if count <= 0:
        yield []
        return
    folder = Path(tempfile.mkdtemp(prefix="dgx-bench-ops-"))
    processes: list[subprocess.Popen[bytes]] = []
    try:
        for index in range(count):
            script = folder / f"bench_op_{index:02d}.sh"
            script.write_text(_OP_SCRIPT)
            processes.append(
                subprocess.Popen(
                    ["bash", str(script)],
                    cwd=folder,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                    start_new_session=True,
                )
            )
        yield [process.pid for process in processes]
    finally:
        for process in processes:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, 9)
        for process in processes:
            process.wait()
        for path in folder.iterdir():
            path.unlink()
        folder.rmdir()


def _ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or b <= 0:
        return None
    return round(a / b, 3)


def _listener_ms(sampler: Any) -> Any:
    """A function giving the kernel-events listener's CPU ms so far (0 without one)."""
    listener = getattr(sampler.discovery, "events", None)
    if listener is None:
        from dgx_spark.services import get_services

        listener = get_services().exits  # the outcome probe's, the same thread
    return lambda: listener.cpu_seconds * 1000.0


def measure_size(
    extra: int,
    sampler: Any,
    *,
    refreshes: int = 12,
    warmup: int = 2,
    interval: float = 1.0,
    glances_python: Path | None = None,
    settle: float = 0.0,
    operation_count: int = 0,
    churn_rate: float = 0.0,
) -> dict[str, Any]:
    """Measure ours, Glances and the floor with ``extra`` idle processes running.

    ``settle``: seconds to let the idle processes age before the warm-up refreshes;
    ``operation_count`` idle operations and ``churn_rate`` process starts per second
    run alongside for the extra rows.
    """
    load_before = os.getloadavg()
    listener_ms = _listener_ms(sampler)
    with idle_processes(extra), operations(operation_count), churn(churn_rate) as churned:
        time.sleep(settle)
        glances = GlancesDriver(glances_python) if glances_python else None
        ours: list[float] = []
        ours_wall: list[float] = []
        events: list[float] = []
        reads: list[int] = []
        floor: list[float] = []
        theirs: list[float] = []
        listed = 0
        try:
            previous = listener_ms()
            for round_no in range(warmup + refreshes):
                floor_ms, _, _ = _cpu_ms(read_proc_stat_once)
                during = listener_ms()
                ours_ms, wall_ms, snapshot = _cpu_ms(sampler.sample_once)
                after = listener_ms()
                # The listener's CPU over the whole interval, instead of only its share during the sample.
                events_ms = after - previous
                ours_ms += events_ms - (after - during)
                previous = after
                glances_ms = glances.refresh() if glances else None
                if round_no >= warmup:
                    floor.append(floor_ms)
                    ours.append(ours_ms)
                    ours_wall.append(wall_ms)
                    events.append(events_ms)
                    reads.append(getattr(sampler.discovery, "reads", 0))
                    if glances_ms is not None:
                        theirs.append(glances_ms)
                listed = len(snapshot.operations)
                time.sleep(interval)
            total = process_count()
        finally:
            if glances:
                glances.close()
    ours_ms = statistics.median(ours)
    floor_ms = statistics.median(floor)
    glances_ms = statistics.median(theirs) if theirs else None
    return {
        "extra_processes": extra,
        "processes_total": total,
        "operations": listed,
        "bench_operations": operation_count,
        "churn": churned if churn_rate > 0 else None,
        "discovery_mode": getattr(sampler.discovery, "mode", None),
        "refreshes": refreshes,
        "settle_s": settle,
        "ours_ms": round(ours_ms, 3),
        "ours_wall_ms": round(statistics.median(ours_wall), 3),
        "events_listener_ms": round(statistics.median(events), 3),
        "stat_reads_per_refresh": statistics.median(reads) if reads else None,
        "glances_ms": None if glances_ms is None else round(glances_ms, 3),
        "floor_ms": round(floor_ms, 3),
        "ratio_vs_glances": _ratio(ours_ms, glances_ms),
        "ratio_vs_floor": _ratio(ours_ms, floor_ms),
        "loadavg_before": [round(v, 2) for v in load_before],
        "loadavg_after": [round(v, 2) for v in os.getloadavg()],
        "samples_ms": {
            "ours": [round(v, 3) for v in ours],
            "events_listener": [round(v, 3) for v in events],
            "glances": [round(v, 3) for v in theirs],
            "floor": [round(v, 3) for v in floor],
        },
    }


def row_key(extra: int, operation_count: int = 0, churn_rate: float = 0.0) -> str:
    """The JSON key of a row: ``"5000"``, ``"5000+50ops"``, ``"1000+churn200"``."""
    key = str(extra)
    if operation_count:
        key += f"+{operation_count}ops"
    if churn_rate:
        key += f"+churn{churn_rate:g}"
    return key


def measure_sampler(
    sizes: list[int],
    *,
    refreshes: int = 12,
    warmup: int = 2,
    interval: float = 1.0,
    with_glances: bool = True,
    settle: float | None = None,
    extra_rows: list[tuple[int, int, float]] = (),  # type: ignore[assignment]
    discovery: str = "auto",
    log: Any = print,
) -> dict[str, Any]:
    """Measurement 1 for every size and extra row: ``{"<key>": {...}}`` (see ``row_key``).

    ``extra_rows``: (idle processes, operations, process starts per second) each.
    ``discovery``: ``auto`` (kernel events where they work, as the app does) or ``scan``.
    """
    from dgx_spark.collector.discovery import YOUNG_SECONDS

    glances_python = ensure_glances() if with_glances else None
    settle = YOUNG_SECONDS + 1.0 if settle is None else settle
    results: dict[str, Any] = {}
    with app_sampler() as sampler:
        if discovery == "scan":
            sampler.discovery.events = None
        rows = [(extra, 0, 0.0) for extra in sizes] + list(extra_rows)
        for extra, operation_count, churn_rate in rows:
            key = row_key(extra, operation_count, churn_rate)
            log(f"sampler: {key} ({extra} idle processes, {operation_count} operations, {churn_rate:g} starts/s) ...")
            results[key] = measure_size(
                extra,
                sampler,
                refreshes=refreshes,
                warmup=warmup,
                interval=interval,
                glances_python=glances_python,
                settle=settle,
                operation_count=operation_count,
                churn_rate=churn_rate,
            )
    return results
