"""Measurement 1: CPU time per refresh of our sampler, of Glances, and of the /proc floor.

All three run on the same machine with the same N extra idle processes, in
interleaved rounds (floor, ours, Glances, then the next round) so that noise
from a shared machine hits them alike. CPU time is user + system time
(``time.process_time``) of the process doing the work: our sampler in this
process, Glances in a driver process running in Glances' own virtualenv.
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

from bench.idle import idle_processes, process_count

ROOT = Path(__file__).resolve().parents[1]
GLANCES_VERSION = "4.5.8"
GLANCES_VENV = ROOT / "bench" / ".glances-venv"
GLANCES_DRIVER = ROOT / "bench" / "glances_driver.py"


def ensure_glances(venv: Path = GLANCES_VENV, version: str = GLANCES_VERSION) -> Path:
    """Glances ``version`` from PyPI in its own virtualenv; return that venv's python."""
    python = venv / "bin" / "python"
    marker = venv / f".glances-{version}"
    if marker.exists() and python.exists():
        return python
    if not python.exists():
        base = getattr(sys, "_base_executable", None) or sys.executable
        subprocess.run([base, "-m", "venv", str(venv)], check=True)
    pip = subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", f"glances=={version}"],
        capture_output=True,
        text=True,
        check=False,
    )
    if pip.returncode != 0:
        raise RuntimeError(f"could not install glances=={version} into {venv}:\n{pip.stderr[-2000:]}")
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


def _ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or b <= 0:
        return None
    return round(a / b, 3)


def measure_size(
    extra: int,
    sampler: Any,
    *,
    refreshes: int = 12,
    warmup: int = 2,
    interval: float = 1.0,
    glances_python: Path | None = None,
) -> dict[str, Any]:
    """Measure ours, Glances and the floor with ``extra`` idle processes running."""
    with idle_processes(extra):
        glances = GlancesDriver(glances_python) if glances_python else None
        ours: list[float] = []
        ours_wall: list[float] = []
        floor: list[float] = []
        theirs: list[float] = []
        operations = 0
        try:
            for round_no in range(warmup + refreshes):
                floor_ms, _, _ = _cpu_ms(read_proc_stat_once)
                ours_ms, wall_ms, snapshot = _cpu_ms(sampler.sample_once)
                glances_ms = glances.refresh() if glances else None
                if round_no >= warmup:
                    floor.append(floor_ms)
                    ours.append(ours_ms)
                    ours_wall.append(wall_ms)
                    if glances_ms is not None:
                        theirs.append(glances_ms)
                operations = len(snapshot.operations)
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
        "operations": operations,
        "refreshes": refreshes,
        "ours_ms": round(ours_ms, 3),
        "ours_wall_ms": round(statistics.median(ours_wall), 3),
        "glances_ms": None if glances_ms is None else round(glances_ms, 3),
        "floor_ms": round(floor_ms, 3),
        "ratio_vs_glances": _ratio(ours_ms, glances_ms),
        "ratio_vs_floor": _ratio(ours_ms, floor_ms),
        "samples_ms": {
            "ours": [round(v, 3) for v in ours],
            "glances": [round(v, 3) for v in theirs],
            "floor": [round(v, 3) for v in floor],
        },
    }


def measure_sampler(
    sizes: list[int],
    *,
    refreshes: int = 12,
    warmup: int = 2,
    interval: float = 1.0,
    with_glances: bool = True,
    log: Any = print,
) -> dict[str, Any]:
    """Measurement 1 for every size: ``{"<N>": {...}}`` plus which Glances was used."""
    glances_python = ensure_glances() if with_glances else None
    results: dict[str, Any] = {}
    with app_sampler() as sampler:
        for extra in sizes:
            log(f"sampler: {extra} extra idle processes ...")
            results[str(extra)] = measure_size(
                extra,
                sampler,
                refreshes=refreshes,
                warmup=warmup,
                interval=interval,
                glances_python=glances_python,
            )
    return results
