"""What a user feels: our backend with one tab open vs ``glances -w`` with one tab open (part ``user_level``).

Same machine, same run, same N extra idle processes (``bench/idle.py``): our
full dashboard (``reflex run --env prod --single-port``, ``tests/support/dashboard.py``)
and Glances' own web server and web UI (``glances -w``, refresh 2 s, bound to
127.0.0.1 on a free port) run side by side. Windows take turns, round after
round: one headless Chromium tab on our page, one tab on Glances' page, no tab
at all. In every window both backends' whole process trees are measured: user +
system CPU from ``/proc/<pid>/stat`` (reaped children's time included), as a
percentage of one core. The browser is not in either tree: its CPU is not counted.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.sampler_cost import GLANCES_VENV, GLANCES_VERSION, ensure_glances  # noqa: E402 - after the path fix

RATIO_MAX = 1 / 20  # target: ours ≤ 1/20 of Glances' web server, one tab open on each
IDLE_RATIO_MAX = 1.0  # target: no tab open, ours ≤ 1× Glances' web server
CLK_TCK = os.sysconf("SC_CLK_TCK")
Log = Callable[[str], None]
ProcTable = Mapping[int, tuple[int, int]]
"""``{pid: (ppid, CPU ticks)}``: one reading of /proc."""


# ---------------------------------------------------------------- pure helpers (tested)


def parse_stat(text: str) -> tuple[int, int, int] | None:
    """``(pid, ppid, ticks)`` from a ``/proc/<pid>/stat`` line; None if it is not one.

    ``ticks`` is utime + stime + cutime + cstime: the process's own CPU and that
    of the children it has reaped (a tree's helpers that ended still count).
    The command name may hold spaces and parentheses, so fields are counted
    from the last ``)``.
    """
    head, sep, rest = text.rpartition(")")
    if not sep:
        return None
    fields = rest.split()
    try:
        pid = int(head.split("(", 1)[0])
        ppid = int(fields[1])
        ticks = sum(int(fields[i]) for i in (11, 12, 13, 14))
    except (ValueError, IndexError):
        return None
    return pid, ppid, ticks


def tree_ticks(table: ProcTable, root: int) -> int:
    """CPU ticks of ``root`` and all its descendants in ``table`` (0 if ``root`` is gone)."""
    if root not in table:
        return 0
    children: dict[int, list[int]] = {}
    for pid, (ppid, _ticks) in table.items():
        children.setdefault(ppid, []).append(pid)
    total, todo, seen = 0, [root], set()
    while todo:
        pid = todo.pop()
        if pid in seen:
            continue
        seen.add(pid)
        total += table[pid][1]
        todo.extend(children.get(pid, ()))
    return total


def cpu_percent(ticks: int, seconds: float, clk_tck: int = CLK_TCK) -> float | None:
    """CPU ticks used over ``seconds`` of wall time as % of one core (None without time)."""
    if seconds <= 0 or clk_tck <= 0:
        return None
    return round(ticks / clk_tck / seconds * 100.0, 3)


def parse_cpu_line(text: str) -> tuple[int, int] | None:
    """``(busy, total)`` jiffies from ``/proc/stat``'s first ``cpu`` line (idle and iowait are not busy)."""
    for line in text.splitlines():
        parts = line.split()
        if parts and parts[0] == "cpu":
            try:
                values = [int(v) for v in parts[1:]]
            except ValueError:
                return None
            # guest time is already inside user/nice: leave it out of the total
            total = sum(values[:8])
            idle = sum(values[3:5])
            return total - idle, total
    return None


def ratio(value: float | None, base: float | None) -> float | None:
    """``value / base`` to 3 places (None without both)."""
    if value is None or not base:
        return None
    return round(value / base, 3)


# ---------------------------------------------------------------- /proc readings


def read_table(proc: Path = Path("/proc")) -> dict[int, tuple[int, int]]:
    """``{pid: (ppid, ticks)}`` for every process readable now."""
    table: dict[int, tuple[int, int]] = {}
    for name in os.listdir(proc):
        if not name.isdigit():
            continue
        try:
            parsed = parse_stat((proc / name / "stat").read_text())
        except OSError:
            continue
        if parsed is not None:
            table[parsed[0]] = (parsed[1], parsed[2])
    return table


def machine_busy() -> tuple[int, int]:
    """``(busy, total)`` jiffies of the whole machine so far."""
    with contextlib.suppress(OSError):
        parsed = parse_cpu_line(Path("/proc/stat").read_text())
        if parsed is not None:
            return parsed
    return 0, 0


# ---------------------------------------------------------------- Glances' web server


def ensure_glances_web(venv: Path = GLANCES_VENV, version: str = GLANCES_VERSION) -> Path:
    """``glances[web]`` (its web server's packages too) in the bench's Glances virtualenv; return ``glances``."""
    return ensure_glances(venv, version, extras="web").parent / "glances"


class GlancesWeb:
    """``glances -w`` (web server and web UI) on 127.0.0.1 and a free port, in its own session."""

    def __init__(self, glances: Path, port: int, refresh: float, log_path: Path) -> None:
        """Describe the server; ``start`` runs it."""
        self.args = [
            str(glances), "-w", "-B", "127.0.0.1", "-p", str(port), "-t", f"{refresh:g}",
            "--disable-check-update",  # no look-up on the network at start
        ]
        self.url = f"http://127.0.0.1:{port}/"
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 90.0) -> None:
        """Start it and wait until its API answers."""
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                self.args, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True, cwd=tempfile.gettempdir(),
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"glances -w exited: {self.log_path.read_text(errors='replace')[-2000:]}")
            with (
                contextlib.suppress(OSError, urllib.error.URLError),
                urllib.request.urlopen(self.url + "api/4/status", timeout=5) as resp,
            ):
                if resp.status == 200:
                    return
            time.sleep(0.3)
        raise TimeoutError(f"glances -w did not answer in {timeout:.0f}s")

    def stop(self) -> None:
        """Stop its whole process group."""
        proc = self.process
        if proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
        self.process = None


# ---------------------------------------------------------------- the run


def measure_window(
    roots: Mapping[str, int], seconds: float, step: float, pump: Callable[[float], None]
) -> dict[str, Any]:
    """Both trees' CPU over ``seconds`` (raw samples every ``step`` s), with the machine's load."""
    load_before = [round(v, 2) for v in os.getloadavg()]
    busy0 = machine_busy()
    t0 = time.monotonic()
    first = read_table()
    start = {name: tree_ticks(first, pid) for name, pid in roots.items()}
    last, last_t = dict(start), t0
    samples: dict[str, list[float | None]] = {name: [] for name in roots}
    while (elapsed := time.monotonic() - t0) < seconds:
        pump(min(step, seconds - elapsed))
        table, now = read_table(), time.monotonic()
        for name, pid in roots.items():
            ticks = tree_ticks(table, pid)
            samples[name].append(cpu_percent(ticks - last[name], now - last_t))
            last[name] = ticks
        last_t = now
    wall = last_t - t0
    busy1 = machine_busy()
    busy, total = busy1[0] - busy0[0], busy1[1] - busy0[1]
    return {
        "seconds": round(wall, 2),
        "loadavg_before": load_before,
        "loadavg_after": [round(v, 2) for v in os.getloadavg()],
        # the whole machine's busy share over the window, % of all its cores
        "machine_busy_percent": round(busy * 100.0 / total, 1) if total > 0 else None,
        "cpu_percent": {name: cpu_percent(last[name] - start[name], wall) for name in roots},
        "samples_percent": samples,
    }


def _median(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return round(statistics.median(present), 3) if present else None


def summarise(windows: list[dict[str, Any]]) -> dict[str, Any]:
    """The figures from the windows: medians over rounds of each window kind's CPU %."""

    def figure(kind: str, backend: str) -> float | None:
        return _median([w["cpu_percent"].get(backend) for w in windows if w["kind"] == kind])

    ours, glances = figure("ours_tab", "ours"), figure("glances_tab", "glances")
    ours_idle, glances_idle = figure("no_tab", "ours"), figure("no_tab", "glances")
    return {
        "ours_cpu_percent": ours,
        "glances_web_cpu_percent": glances,
        "ratio": ratio(ours, glances),
        "ours_idle_cpu_percent": ours_idle,
        "glances_web_idle_cpu_percent": glances_idle,
        "idle_ratio": ratio(ours_idle, glances_idle),
        "target_ratio": RATIO_MAX,
        "target_idle_ratio": IDLE_RATIO_MAX,
    }


def measure_user_level(
    *,
    extra_processes: int = 1000,
    seconds: float = 60.0,
    rounds: int = 1,
    step: float = 5.0,
    refresh_seconds: float = 2.0,
    settle: float = 6.0,
    warmup: float = 30.0,
    isolate: bool = True,
    log: Log = print,
) -> dict[str, Any]:
    """Run both backends side by side and measure them in interleaved windows; the ``user_level`` results."""
    from playwright.sync_api import sync_playwright

    from bench.app_bench import _write_isolating_rules
    from bench.idle import idle_processes, process_count
    from tests.support.browser import CHROMIUM_FLAGS, chromium_path
    from tests.support.dashboard import Dashboard, free_port

    glances_bin = ensure_glances_web()
    workdir = Path(tempfile.mkdtemp(prefix="dgx-bench-user-"))
    env = {"DGX_SPARK_REFRESH_SECONDS": str(refresh_seconds)}
    if isolate:
        env["DGX_SPARK_RULES_FILE"] = str(_write_isolating_rules(workdir / "rules.toml"))
    dashboard = Dashboard(workdir / "data", full=True, env=env)
    glances = GlancesWeb(glances_bin, free_port(), refresh_seconds, workdir / "glances.log")
    windows: list[dict[str, Any]] = []
    try:
        with idle_processes(extra_processes):
            log(f"user_level: +{extra_processes} idle processes; starting glances -w and our dashboard (full UI) ...")
            glances.start()
            dashboard.start()
            assert dashboard.process is not None and glances.process is not None
            roots = {"ours": dashboard.process.pid, "glances": glances.process.pid}
            total = process_count()
            # Both past their start (first refreshes, young processes, the events store) before any window.
            log(f"user_level: both up; {warmup:.0f}s warm-up with no tab ...")
            time.sleep(warmup)
            with sync_playwright() as pw:
                browser = pw.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_FLAGS, headless=True)
                try:
                    context = browser.new_context(viewport={"width": 1400, "height": 1000})
                    for round_no in range(rounds):
                        for kind, url in (("ours_tab", dashboard.url), ("glances_tab", glances.url), ("no_tab", None)):
                            page = context.new_page() if url else None
                            if page is not None and url is not None:
                                page.goto(url, wait_until="load", timeout=120_000)
                                page.wait_for_timeout(settle * 1000)  # the page loaded and ticking

                                def pump(s: float, page: Any = page) -> None:
                                    page.wait_for_timeout(s * 1000)
                            else:
                                time.sleep(settle)  # the last tab's work ends

                                def pump(s: float, page: Any = None) -> None:
                                    time.sleep(s)
                            log(f"user_level: round {round_no + 1}/{rounds}, {kind}, {seconds:.0f}s ...")
                            window = measure_window(roots, seconds, step, pump)
                            window.update(kind=kind, round=round_no + 1)
                            windows.append(window)
                            if page is not None:
                                page.close()
                finally:
                    browser.close()
    except BaseException:
        log(f"user_level: logs kept in {dashboard.log_path} and {glances.log_path}")
        raise
    finally:
        glances.stop()
        dashboard.stop()
    shutil.rmtree(workdir, ignore_errors=True)
    return {
        **summarise(windows),
        "extra_processes": extra_processes,
        "processes_total": total,
        "seconds": seconds,
        "rounds": rounds,
        "refresh_seconds": refresh_seconds,
        "warmup_seconds": warmup,
        "glances": f"glances[web]=={GLANCES_VERSION} -w -t {refresh_seconds:g}",
        "isolating_rules": isolate,
        "browser_cpu_counted": False,
        "windows": windows,
    }


def table_rows(r: Mapping[str, Any]) -> list[list[str]]:
    """The table's rows for ``user_level``: measurement, ours, reference, target, result."""

    def pct(value: float | None) -> str:
        return "n/a" if value is None else f"{value:.2f} %"

    def verdict(value: float | None, limit: float) -> str:
        return "—" if value is None else ("PASS" if value <= limit else "MISS")

    def load(kind: str) -> str:
        shown = [
            f"load {w['loadavg_before'][0]:.1f}, machine {w.get('machine_busy_percent')} % busy"
            for w in r.get("windows", []) if w.get("kind") == kind
        ]
        return "; ".join(shown) or "load ?"

    def fmt_ratio(value: float | None) -> str:
        return "n/a" if value is None else f"{value:.3f}×"

    head = f"+{r.get('extra_processes')} idle procs, {r.get('seconds', 0):.0f} s × {r.get('rounds', 1)}"
    return [
        [
            f"Backend process-tree CPU, one tab open ({head}; browser not counted)",
            pct(r.get("ours_cpu_percent")),
            f"glances -w with one tab {pct(r.get('glances_web_cpu_percent'))} ({fmt_ratio(r.get('ratio'))}); "
            f"ours: {load('ours_tab')}; Glances: {load('glances_tab')}",
            f"≤ 1/{1 / RATIO_MAX:g} Glances",
            verdict(r.get("ratio"), RATIO_MAX),
        ],
        [
            f"Backend process-tree CPU, no tab open ({head})",
            pct(r.get("ours_idle_cpu_percent")),
            f"glances -w {pct(r.get('glances_web_idle_cpu_percent'))} ({fmt_ratio(r.get('idle_ratio'))}); "
            f"{load('no_tab')}",
            f"≤ {IDLE_RATIO_MAX:g}× Glances",
            verdict(r.get("idle_ratio"), IDLE_RATIO_MAX),
        ],
    ]
