"""Measurements 2-7 against the real app: tabs, API latency, websocket bytes, start → visible, memory,
and a page with 500 operations listed (change → card updated in the browser, API latency).

One full dashboard (UI built, one port, ``tests/support/dashboard.py``) runs with
the product's refresh period and 50 operation-like processes (bash loop scripts).
Headless Chromium opens the tabs. Every process started here is killed at the end.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import itertools
import json
import os
import shutil
import signal
import statistics
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil

from bench.api_latency import measure_api, percentile
from dgx_spark.events.churn import SHORT_LIVED_SECONDS
from tests.support.browser import CHROMIUM_FLAGS, chromium_path
from tests.support.dashboard import Dashboard, wait_until

HEARTBEATS = {"2", "3"}  # Engine.IO ping/pong: keep-alive, not a tick's data
BROWSER_PARTS = {"tabs", "ws", "visible", "rss", "big"}
FLEET_MARKER = "bench_(op|vis|big|bell)_"
"""What the names of the benchmark's operation-like scripts contain."""
Log = Callable[[str], None]


# ---------------------------------------------------------------- processes


class Fleet:
    """Operation-like processes: ``bash <name>.sh`` loop scripts, each in its own session."""

    def __init__(self, directory: Path) -> None:
        """Scripts are written into ``directory``."""
        self.directory = directory
        self.processes: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, name: str) -> subprocess.Popen[bytes]:
        """Start ``bash <name>.sh`` (an endless loop around ``sleep``)."""
        script = self.directory / f"{name}.sh"
        script.write_text("#!/bin/bash\nwhile :; do sleep 3600; done\n")
        proc = subprocess.Popen(
            ["bash", str(script)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        self.processes[name] = proc
        return proc

    def start_exec(self, name: str, gate: Path) -> subprocess.Popen[bytes]:
        """A plain ``sh`` (not listed) that waits for ``gate``, then ``exec``s into ``bash <name>.sh``: same pid."""
        script = self.directory / f"{name}.sh"
        script.write_text("#!/bin/bash\nwhile :; do sleep 3600; done\n")
        proc = subprocess.Popen(
            ["sh", "-c", 'while [ ! -e "$BENCH_GATE" ]; do sleep 0.05; done; exec bash "$BENCH_SCRIPT"'],
            env={**os.environ, "BENCH_GATE": str(gate), "BENCH_SCRIPT": str(script)},
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        self.processes[name] = proc
        return proc

    def start_on_pid(self, name: str, pid: int, attempts: int = 100) -> subprocess.Popen[bytes] | None:
        """``start(name)`` as process ``pid`` (an ended one's: pid reuse) via ``ns_last_pid``; None if not allowed."""
        for _ in range(attempts):
            try:
                with open("/proc/sys/kernel/ns_last_pid", "w") as handle:
                    handle.write(str(pid - 1))
            except OSError:
                return None
            proc = self.start(name)
            if proc.pid == pid:
                return proc
            self.kill(name)  # another process took the pid first
        return None

    def kill(self, name: str) -> None:
        """Kill one script and what it runs."""
        proc = self.processes.pop(name, None)
        if proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(10)

    def stop(self) -> None:
        """Kill every script."""
        for name in list(self.processes):
            self.kill(name)


# ---------------------------------------------------------------- backend figures


def backend_tree(pid: int) -> list[psutil.Process]:
    """The dashboard process and all its descendants."""
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.Error:
        return []


def tree_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds used so far by the backend's process tree."""
    total = 0.0
    for proc in backend_tree(pid):
        with contextlib.suppress(psutil.Error):
            t = proc.cpu_times()
            total += t.user + t.system + t.children_user + t.children_system
    return total


def tree_rss(pid: int) -> tuple[int, int]:
    """(largest single process RSS, whole tree RSS) in bytes: the first is the app's worker."""
    sizes = []
    for proc in backend_tree(pid):
        with contextlib.suppress(psutil.Error):
            sizes.append(proc.memory_info().rss)
    return (max(sizes) if sizes else 0, sum(sizes))


def sequence(dashboard: Dashboard) -> int:
    """The sampler's snapshot sequence number (one per refresh)."""
    return int(dashboard.get_json("/api/health")["data"]["sequence"])


def sampler_state(dashboard: Dashboard) -> tuple[int, float]:
    """(snapshot sequence, CPU seconds the sampler thread has used so far)."""
    data = dashboard.get_json("/api/health")["data"]
    return int(data["sequence"]), float(data["sampler_cpu_seconds"])


# ---------------------------------------------------------------- the run


class AppBench:
    """Runs the selected app measurements against one dashboard."""

    def __init__(
        self,
        parts: set[str],
        *,
        refresh_seconds: float = 2.0,
        operations: int = 50,
        tabs: int = 10,
        window_seconds: float = 30.0,
        rss_seconds: float = 90.0,
        starts: int = 20,
        api_clients: int = 50,
        api_requests: int = 40,
        more_tabs: int = 50,
        big_operations: int = 500,
        changes: int = 20,
        bell_events: int = 50,
        isolate: bool = True,
        log: Log = print,
    ) -> None:
        """Describe the run; ``run`` performs it."""
        self.parts = parts
        self.refresh = refresh_seconds
        self.operations = operations
        self.tabs = tabs
        self.window = window_seconds
        self.rss_seconds = rss_seconds
        self.starts = starts
        self.api_clients = api_clients
        self.api_requests = api_requests
        self.more_tabs = more_tabs
        self.big_operations = big_operations
        self.changes = changes
        self.bell_events = bell_events
        self.isolate = isolate
        self.log = log
        self.frames: list[tuple[float, int, str]] = []  # (wall time, bytes, payload head)
        # (time, {state.var: JSON bytes}, frame bytes, heartbeat?)
        self.frame_vars: list[tuple[float, dict[str, int], int, bool]] = []
        self.results: dict[str, Any] = {}

    def run(self) -> dict[str, Any]:
        """Start everything, measure, stop everything; return the results."""
        workdir = Path(tempfile.mkdtemp(prefix="dgx-bench-"))
        browser_needed = bool(self.parts & BROWSER_PARTS)
        fleet = Fleet(workdir)
        env = {"DGX_SPARK_REFRESH_SECONDS": str(self.refresh)}
        if self.isolate:
            env["DGX_SPARK_RULES_FILE"] = str(_write_isolating_rules(workdir / "rules.toml"))
        dashboard = Dashboard(workdir / "data", full=browser_needed, env=env)
        try:
            self.log(f"app: starting the dashboard ({'full UI' if browser_needed else 'backend only'}) ...")
            dashboard.start()
            self.results["app"] = {"refresh_seconds": self.refresh, "url": dashboard.url}
            self._start_fleet(fleet, dashboard)
            if browser_needed:
                self._browser_parts(dashboard, fleet)
            if "api" in self.parts:
                self.log(f"api: {self.api_clients} concurrent clients ...")
                self.results["api"] = measure_api(
                    dashboard.port, clients=self.api_clients, requests_per_client=self.api_requests
                )
        except BaseException:
            self.log(f"app: the dashboard's log is kept in {dashboard.log_path}")
            raise
        finally:
            fleet.stop()
            dashboard.stop()
        shutil.rmtree(workdir, ignore_errors=True)
        return self.results

    def _start_fleet(self, fleet: Fleet, dashboard: Dashboard) -> None:
        names = [f"bench_op_{i:02d}" for i in range(self.operations)]
        for name in names:
            fleet.start(name)

        def listed() -> int:
            ops = dashboard.operations()
            return sum(1 for op in ops if op.get("status") in ("running", "active") and _named(op, names))

        with contextlib.suppress(AssertionError):
            wait_until(lambda: listed() >= len(names), timeout=60, interval=0.5)
        self.results["app"]["operations_spawned"] = len(names)
        self.results["app"]["operations_listed"] = listed()
        self.results["app"]["operations_total"] = len(dashboard.operations())
        self.results["app"]["discovery_mode"] = dashboard.get_json("/api/health")["data"].get("discovery_mode")

    # ------------------------------------------------------------ browser

    def _browser_parts(self, dashboard: Dashboard, fleet: Fleet) -> None:
        from playwright.sync_api import sync_playwright

        with sync_playwright() as pw:
            browser = pw.chromium.launch(
                executable_path=chromium_path(),
                args=CHROMIUM_FLAGS,
                headless=True,
            )
            try:
                context = browser.new_context(viewport={"width": 1400, "height": 1000})
                context.add_init_script(_FRAME_CLOCK_JS)
                first = context.new_page()
                first.on("websocket", self._record_frames)
                self.log("browser: first tab ...")
                first.goto(dashboard.url, wait_until="load", timeout=120_000)
                with contextlib.suppress(Exception):
                    first.get_by_text("bench_op_00").filter(visible=True).first.wait_for(timeout=60_000)
                first.wait_for_timeout(3 * self.refresh * 1000)
                pages = [first]
                if "tabs" in self.parts:
                    self.log(f"tabs: backend CPU per refresh, 1 tab, {self.window:.0f}s ...")
                    one = self._cpu_window(dashboard, first)
                    for _ in range(self.tabs - 1):
                        page = context.new_page()
                        page.goto(dashboard.url, wait_until="load", timeout=120_000)
                        pages.append(page)
                    first.wait_for_timeout(3 * self.refresh * 1000)
                    self.log(f"tabs: backend CPU per refresh, {self.tabs} tabs, {self.window:.0f}s ...")
                    many = self._cpu_window(dashboard, first)
                    self.results["tabs"] = {"one": one, "many": many, "tabs": self.tabs}
                    if self.more_tabs > self.tabs:
                        extra = []
                        for _ in range(self.more_tabs - self.tabs):
                            page = context.new_page()
                            page.goto(dashboard.url, wait_until="load", timeout=120_000)
                            extra.append(page)
                        first.wait_for_timeout(3 * self.refresh * 1000)
                        self.log(f"tabs: backend CPU per refresh, {self.more_tabs} tabs, {self.window:.0f}s ...")
                        self.results["tabs"].update(more=self._cpu_window(dashboard, first), more_tabs=self.more_tabs)
                        for page in extra:
                            page.close()
                    # One tab again: the ratios are against both one-tab windows (interleaved, so a
                    # machine load that changed during the run moves the baseline too).
                    for page in pages[1:]:
                        page.close()
                    pages = [first]
                    first.wait_for_timeout(3 * self.refresh * 1000)
                    self.log(f"tabs: backend CPU per refresh, 1 tab again, {self.window:.0f}s ...")
                    self.results["tabs"]["one_after"] = self._cpu_window(dashboard, first)
                    self.results["tabs"].update(self._tab_ratios(self.results["tabs"]))
                if "rss" in self.parts or "ws" in self.parts:
                    while len(pages) < self.tabs and ("rss" in self.parts or "tabs" in self.parts):
                        page = context.new_page()
                        page.goto(dashboard.url, wait_until="load", timeout=120_000)
                        pages.append(page)
                    seconds = self.rss_seconds if "rss" in self.parts else self.window
                    self.log(f"rss/ws idle: {len(pages)} tabs for {seconds:.0f}s ...")
                    self._idle_window(dashboard, first, seconds, len(pages))
                for page in pages[1:]:
                    page.close()
                if "ws" in self.parts:
                    if self.bell_events:
                        self.log(f"ws: {self.bell_events} events into the bell first ...")
                        self.results.setdefault("ws", {})["bell"] = self._fill_bell(dashboard, fleet, first)
                    self.log("ws: one operation changes ...")
                    one_changed = self._one_change(dashboard, fleet, first)
                    self.results.setdefault("ws", {})["one_changed"] = one_changed
                    self.results["ws"]["one_changed_bytes"] = one_changed.get("change_bytes")
                if "visible" in self.parts:
                    self.log(f"visible: {self.starts} starts ...")
                    self.results["visible"] = self._start_to_visible(fleet, first)
                if "big" in self.parts:
                    self.results["big"] = self._big(dashboard, fleet, first)
            finally:
                browser.close()

    def _record_frames(self, ws: Any) -> None:
        if "/_event" not in ws.url and "socket" not in ws.url:
            return

        def received(payload: str | bytes) -> None:
            data = payload.encode() if isinstance(payload, str) else payload
            now = time.time()  # wall clock: lines up with the snapshots' taken_at
            self.frames.append((now, len(data), data[:16].decode(errors="replace")))
            self.frame_vars.append((now, _delta_sizes(data), len(data), data.decode(errors="replace") in HEARTBEATS))

        ws.on("framereceived", received)

    def _frames_between(self, start: float, end: float) -> list[tuple[float, int, str]]:
        return [f for f in self.frames if start <= f[0] < end and f[2] not in HEARTBEATS]

    def _bytes_by_var(self, start: float, end: float, top: int = 8) -> dict[str, int]:
        """Which state variables the frames between ``start`` and ``end`` carried, biggest first."""
        totals: dict[str, int] = {}
        for t, sizes, _size, _heartbeat in self.frame_vars:
            if start <= t < end:
                for var, size in sizes.items():
                    totals[var] = totals.get(var, 0) + size
        return dict(sorted(totals.items(), key=lambda kv: -kv[1])[:top])

    def _tab_ratios(self, tabs: dict[str, Any]) -> dict[str, Any]:
        """Many tabs' CPU per refresh over the mean of the one-tab windows before and after."""

        def mean(key: str) -> float:
            return statistics.mean(tabs[window][key] for window in ("one", "one_after"))

        one_cpu, one_sampler = mean("cpu_ms_per_refresh"), mean("sampler_cpu_ms_per_refresh")
        ratio = _ratio(tabs["many"]["cpu_ms_per_refresh"], one_cpu)
        ratios: dict[str, Any] = {
            "one_cpu_ms_per_refresh": round(one_cpu, 2),
            "one_sampler_cpu_ms_per_refresh": round(one_sampler, 2),
            "ratio": ratio,
            f"backend_ratio_{self.tabs}_vs_1": ratio,
            "sampler_ratio": _ratio(tabs["many"]["sampler_cpu_ms_per_refresh"], one_sampler),
        }
        # The backend less its sampler thread: what the tabs cost, without the machine's process churn
        # (which the sampler hears and reads, and which other work on a shared machine moves).
        rest = one_cpu - one_sampler
        ratios["rest_ratio"] = _ratio(tabs["many"]["cpu_ms_per_refresh"] - tabs["many"]["sampler_cpu_ms_per_refresh"], rest)
        if "more" in tabs:
            ratios["more_rest_ratio"] = _ratio(
                tabs["more"]["cpu_ms_per_refresh"] - tabs["more"]["sampler_cpu_ms_per_refresh"], rest
            )
            ratios["more_ratio"] = _ratio(tabs["more"]["cpu_ms_per_refresh"], one_cpu)
            ratios[f"backend_ratio_{self.more_tabs}_vs_1"] = ratios["more_ratio"]
        return ratios

    def _cpu_window(self, dashboard: Dashboard, pump: Any) -> dict[str, Any]:
        pid = dashboard.process.pid if dashboard.process else 0
        load = os.getloadavg()
        (seq0, sampler0), cpu0 = sampler_state(dashboard), tree_cpu_seconds(pid)
        pump.wait_for_timeout(self.window * 1000)
        (seq1, sampler1), cpu1 = sampler_state(dashboard), tree_cpu_seconds(pid)
        refreshes = max(1, seq1 - seq0)
        return {
            "loadavg_before": [round(value, 2) for value in load],
            "seconds": self.window,
            "refreshes": seq1 - seq0,
            "cpu_seconds": round(cpu1 - cpu0, 3),
            "cpu_ms_per_refresh": round((cpu1 - cpu0) * 1000.0 / refreshes, 2),
            "sampler_cpu_ms_per_refresh": round((sampler1 - sampler0) * 1000.0 / refreshes, 2),
        }

    def _idle_window(self, dashboard: Dashboard, pump: Any, seconds: float, tabs: int) -> None:
        """Memory every 5 s and websocket bytes per tick, telling quiet ticks from busy ones.

        A tick is quiet when the API's operation list (less ``uptime``, which moves
        every second by definition) is the same as the tick before. On a shared
        machine other people's processes change, so busy ticks are reported apart.
        """
        pid = dashboard.process.pid if dashboard.process else 0
        start, seq0 = time.time(), sequence(dashboard)
        deadline = start + seconds
        rss: list[tuple[float, int, int]] = []
        ticks: list[tuple[int, float, bool | None]] = []  # (sequence, taken_at, ops changed?)
        previous: str | None = None
        next_rss = start
        while True:
            now = time.time()
            if now >= next_rss:
                worker, total = tree_rss(pid)
                rss.append((round(now - start, 1), worker, total))
                next_rss += 5.0
            if now >= deadline:
                break
            health = dashboard.get_json("/api/health")["data"]
            if not ticks or health["sequence"] != ticks[-1][0]:
                signature = _signature(dashboard.operations())
                changed = None if previous is None else signature != previous
                ticks.append((int(health["sequence"]), float(health["taken_at"]), changed))
                previous = signature
            pump.wait_for_timeout(150)
        end, seq1 = time.time(), sequence(dashboard)
        frames = self._frames_between(start, end)
        if "ws" in self.parts:
            self.results.setdefault("ws", {})["idle"] = {
                "seconds": round(end - start, 1),
                "ticks": seq1 - seq0,
                "frames": len(frames),
                "bytes": sum(f[1] for f in frames),
                "bytes_per_tick": round(sum(f[1] for f in frames) / max(1, seq1 - seq0), 1),
                "tabs_open": tabs,
                **self._quiet_ticks(ticks),
                "bytes_by_var": self._bytes_by_var(start, end),
            }
        if "rss" in self.parts:
            mb = 1024 * 1024
            workers = [w for _, w, _ in rss]
            quarter = max(1, len(workers) // 4)
            growth = statistics.mean(workers[-quarter:]) - statistics.mean(workers[:quarter])
            self.results["rss"] = {
                "seconds": round(end - start, 1),
                "tabs_open": tabs,
                "worker_start_mb": round(workers[0] / mb, 1),
                "worker_end_mb": round(workers[-1] / mb, 1),
                "worker_max_mb": round(max(workers) / mb, 1),
                "tree_max_mb": round(max(t for _, _, t in rss) / mb, 1),
                "growth_mb": round(growth / mb, 1),
                "flat": growth <= max(10 * mb, 0.05 * workers[0]),
                "samples": [(t, round(w / mb, 1), round(tt / mb, 1)) for t, w, tt in rss],
            }

    def _quiet_ticks(self, ticks: list[tuple[int, float, bool | None]]) -> dict[str, Any]:
        """Bytes per quiet tick (operations' state vs the system header's) and how many ticks were quiet."""
        quiet: list[tuple[int, int]] = []  # (operations bytes, system bytes) per quiet tick
        busy = 0
        for (seq, taken, changed), (next_seq, next_taken, _) in itertools.pairwise(ticks):
            if changed is None or next_seq != seq + 1:
                continue
            if changed:
                busy += 1
                continue
            ops_bytes = system_bytes = 0
            for t, sizes, size, heartbeat in self.frame_vars:
                if taken <= t < next_taken and not heartbeat:
                    # A frame that only updates the system header (CPU/RAM meters) is not about operations.
                    if sizes and all(var.startswith("system") for var in sizes):
                        system_bytes += size
                    else:
                        ops_bytes += size
            quiet.append((ops_bytes, system_bytes))
        return {
            "quiet_ticks": len(quiet),
            "busy_ticks": busy,
            "quiet_operations_bytes_per_tick": round(statistics.mean(q[0] for q in quiet), 1) if quiet else None,
            "quiet_system_bytes_per_tick": round(statistics.mean(q[1] for q in quiet), 1) if quiet else None,
        }

    def _fill_bell(self, dashboard: Dashboard, fleet: Fleet, pump: Any) -> dict[str, Any]:
        """Fill the bell as on a dashboard in use: ``bell_events`` operations are started, listed, then killed.

        Each kill is an event (as the measured change is); they live past the short-lived
        threshold first, or their ends would be counted as churn, not recorded. The change
        measured next then arrives in a bell that already lists a full page of events.
        """
        names = [f"bench_bell_{i:03d}" for i in range(self.bell_events)]
        newest = max((int(e["id"]) for e in dashboard.get_json("/api/dgx/events?limit=1000")["data"]), default=0)
        started = time.time()
        for name in names:
            fleet.start(name)

        def listed() -> int:
            return sum(1 for op in dashboard.operations() if op.get("status") in ("running", "active")
                       and _named(op, names))

        with contextlib.suppress(AssertionError):
            wait_until(lambda: listed() >= len(names), timeout=60, interval=0.5)
        ids = {op["id"] for op in dashboard.operations() if _named(op, names)}
        pump.wait_for_timeout(max(0.0, started + SHORT_LIVED_SECONDS + 2 - time.time()) * 1000)
        for name in names:
            fleet.kill(name)

        def ends() -> dict[str, int]:
            kinds: dict[str, int] = {}
            for event in dashboard.get_json(f"/api/dgx/events?since={newest}&limit=1000")["data"]:
                if event.get("kind") != "started" and event.get("operation_id") in ids:
                    kinds[str(event.get("kind"))] = kinds.get(str(event.get("kind")), 0) + 1
            return kinds

        with contextlib.suppress(AssertionError):
            wait_until(lambda: sum(ends().values()) >= len(names), timeout=60, interval=0.5)
        pump.wait_for_timeout(3 * self.refresh * 1000)
        return {"operations_killed": len(names), "operations_listed": len(ids), "ends_by_kind": ends()}

    def _one_change(self, dashboard: Dashboard, fleet: Fleet, pump: Any) -> dict[str, Any]:
        victim = next((n for n in fleet.processes if n.startswith("bench_op_")), None)
        if victim is None:
            return {"error": "no operation to change"}
        pump.wait_for_timeout(2 * self.refresh * 1000)
        start, seq0 = time.time(), sequence(dashboard)
        fleet.kill(victim)

        def ended() -> bool:
            ops = [op for op in dashboard.operations() if _named(op, [victim])]
            return all(op.get("status") in ("stopped", "failed") for op in ops)

        changed = True
        try:
            wait_until(ended, timeout=30, interval=0.2)
        except AssertionError:
            changed = False
        seen = sequence(dashboard)
        while sequence(dashboard) < seen + 1:  # the tick that carries it has been sent
            pump.wait_for_timeout(200)
        pump.wait_for_timeout(500)
        end, seq1 = time.time(), sequence(dashboard)
        frames = self._frames_between(start, end)
        # The change's own bytes (operations, the bell's event) apart from the system header's
        # meters, which are sent every tick whatever happens (alone, or in the same frame).
        header = [
            size if all(var.startswith("system") for var in sizes)
            else sum(value + len(var) + 4 for var, value in sizes.items() if var.startswith("system"))
            for t, sizes, size, heartbeat in self.frame_vars
            if start <= t < end and not heartbeat and sizes
        ]
        return {
            "change": f"killed {victim} (running → stopped)",
            "seen_in_api": changed,
            "ticks": seq1 - seq0,
            "frames": len(frames),
            "bytes": sum(f[1] for f in frames),
            "change_bytes": sum(f[1] for f in frames) - sum(header),
            "header_bytes": sum(header),
            # Of the change's bytes, the values of the operations' state vars (cards, lists, counts)
            # and of the bell's (its list of recent events).
            "operations_value_bytes": sum(
                size for var, size in self._bytes_by_var(start, end, top=1000).items() if var.startswith("operations")
            ),
            "bell_value_bytes": sum(
                size for var, size in self._bytes_by_var(start, end, top=1000).items() if var.startswith("events")
            ),
            "bytes_largest_tick": max(_bin_bytes(frames, start, end, self.refresh), default=0),
            "bytes_by_var": self._bytes_by_var(start, end),
        }

    def _big(self, dashboard: Dashboard, fleet: Fleet, page: Any) -> dict[str, Any]:
        """With ``big_operations`` listed: change → card updated in the browser, and the API's latency.

        Each change kills one listed script. The browser records (MutationObserver) when
        its card shows it ended; the snapshot that first carried the change is found by
        polling ``/api/health`` and the operation itself, and the time from its publication
        (the end of its sample) to the card changing is the figure.
        """
        have = [name for name in fleet.processes if name.startswith(("bench_op_", "bench_big_"))]
        names = [f"bench_big_{i:03d}" for i in range(max(0, self.big_operations - len(have)))]
        self.log(f"big: {len(names)} more operations ({self.big_operations} listed) ...")
        for name in names:
            fleet.start(name)
        everyone = have + names

        def listed() -> list[dict[str, Any]]:
            return [op for op in dashboard.operations() if op.get("status") in ("running", "active")
                    and _named(op, everyone)]

        with contextlib.suppress(AssertionError):
            wait_until(lambda: len(listed()) >= len(everyone), timeout=120, interval=1.0)
        ops = listed()
        result: dict[str, Any] = {"operations_listed": len(ops), "operations_total": len(dashboard.operations())}
        page.wait_for_timeout(3 * self.refresh * 1000)
        by_pid = {op.get("pid"): op["id"] for op in ops}
        samples: list[float] = []
        lower: list[float] = []
        frame_delays: list[float] = []
        misses = 0
        self.log(f"big: {self.changes} changes, change → card updated ...")
        for name in names[: self.changes]:
            proc = fleet.processes.get(name)
            op_id = by_pid.get(proc.pid) if proc is not None else None
            if op_id is None:
                misses += 1
                continue
            page.evaluate(_WATCH_CARD_JS, op_id)
            page.evaluate("window.__dgxEndedFrames = []")
            fleet.kill(name)  # returns once the script has exited
            killed = time.time()
            seen = self._first_snapshot_with_end(dashboard, op_id, killed)
            deadline = time.time() + 30
            shown = None
            while shown is None and time.time() < deadline:
                shown = page.evaluate("window.__dgxBenchChanged")
                if shown is None:
                    page.wait_for_timeout(50)
            if seen is None or shown is None:
                misses += 1
                continue
            samples.append(shown / 1000.0 - seen[0])
            lower.append(shown / 1000.0 - seen[1])
            # When the websocket frame that moved the card to the ended list reached the page's
            # JavaScript (its clock, like the card's: Playwright's own frame events arrive
            # only when this script next calls into the page, so they cannot time this).
            arrivals = page.evaluate("window.__dgxEndedFrames || []")
            sent = next((t / 1000.0 for t in arrivals if t / 1000.0 >= seen[0]), None)
            if sent is not None:
                frame_delays.append(sent - seen[0])
        result.update(changes=len(samples), misses=misses)
        if samples:
            result.update(
                p50_ms=round(statistics.median(samples) * 1000, 1),
                p95_ms=round(percentile(samples, 95) * 1000, 1),
                max_ms=round(max(samples) * 1000, 1),
                samples_ms=[round(value * 1000, 1) for value in samples],
                # From the snapshot that showed it in the API (a lower bound, for reference).
                lower_bound_samples_ms=[round(value * 1000, 1) for value in lower],
                # Of which: from the snapshot to the frame reaching the page (the rest is the page's render).
                frame_samples_ms=[round(value * 1000, 1) for value in frame_delays],
            )
        self.log(f"big: API, {self.api_clients} clients with {len(ops)} listed ...")
        # Playwright's sync API keeps an event loop running in this thread: asyncio.run goes in another.
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            result["api"] = pool.submit(
                measure_api, dashboard.port, clients=self.api_clients, requests_per_client=self.api_requests
            ).result()
        return result

    def _first_snapshot_with_end(self, dashboard: Dashboard, op_id: str, after: float) -> tuple[float, float] | None:
        """When the first snapshot begun after ``after`` was published, and when the one that shows ``op_id`` ended was.

        A snapshot is published when its sample ends (``taken_at`` + ``duration_ms``).
        Polls every 50 ms; a snapshot counts only when the health's sequence is the same
        before and after reading the operation (so the status is that snapshot's).
        """
        deadline = time.time() + 30
        first_after: float | None = None
        while time.time() < deadline:
            before = dashboard.get_json("/api/health")["data"]
            began = float(before.get("taken_at") or 0.0)
            taken = began + float(before.get("duration_ms") or 0.0) / 1000.0
            if began > after and first_after is None:
                first_after = taken
            try:
                status = dashboard.get_json(f"/api/dgx/operations/{op_id}")["data"].get("status")
            except Exception:  # noqa: BLE001 - gone from the list: it ended
                status = "gone"
            again = dashboard.get_json("/api/health")["data"]
            if again["sequence"] == before["sequence"] and status not in ("running", "active", "starting"):
                return (first_after if first_after is not None else taken, taken)
            time.sleep(0.05)
        return None

    def _start_to_visible(self, fleet: Fleet, page: Any) -> dict[str, Any]:
        """Start → card visible, for three kinds of start in turn.

        ``start``: a new script. ``exec``: a plain ``sh`` (not listed) already running
        ``exec``s into the script, same pid; timed from the moment it is told to (a
        file it polls every 50 ms). ``reuse``: the script starts on the pid of the
        previous, ended one (``ns_last_pid``; root only, else a plain start).
        """
        seconds: list[float] = []
        by_kind: dict[str, list[float]] = {"start": [], "exec": [], "reuse": []}
        misses = 0
        previous_pid: int | None = None
        for i in range(self.starts):
            kind = ("start", "exec", "reuse")[i % 3]
            name = f"bench_vis_{i:02d}_{uuid.uuid4().hex[:6]}"
            if kind == "exec":
                gate = fleet.directory / f"{name}.go"
                fleet.start_exec(name, gate)
                time.sleep(2.5)  # the shell is old news to the dashboard before it execs
                started = time.monotonic()
                gate.touch()
            elif kind == "reuse" and previous_pid is not None:
                started = time.monotonic()
                if fleet.start_on_pid(name, previous_pid) is None:
                    kind = "start"
                    started = time.monotonic()
                    fleet.start(name)
            else:
                kind = "start"
                started = time.monotonic()
                fleet.start(name)
            try:
                page.get_by_text(name).filter(visible=True).first.wait_for(timeout=30_000)
                seconds.append(time.monotonic() - started)
                by_kind[kind].append(seconds[-1])
            except Exception:  # noqa: BLE001 - a miss is a result, not a crash
                misses += 1
            previous_pid = fleet.processes[name].pid if name in fleet.processes else None
            fleet.kill(name)
            if misses >= 3 and not seconds:
                break  # the UI does not show these cards at all: stop early
        result: dict[str, Any] = {"starts": self.starts, "seen": len(seconds), "misses": misses}
        if seconds:
            result.update(
                p50_s=round(statistics.median(seconds), 3),
                p95_s=round(percentile(seconds, 95), 3),
                max_s=round(max(seconds), 3),
                samples_s=[round(s, 3) for s in seconds],
                by_kind={
                    kind: {"seen": len(values), "p95_s": round(percentile(values, 95), 3), "max_s": round(max(values), 3)}
                    for kind, values in by_kind.items()
                    if values
                },
            )
        return result


# Records (window.__dgxBenchChanged, ms since the epoch) when the card of operation ``id``
# first shows it ended: the card leaves the grid for the "Recently ended" strip.
# Every page: when each websocket message naming a section's ended list reaches the page
# (a listener added before the socket's own handler, so before React renders it).
_FRAME_CLOCK_JS = """(() => {
  const Native = window.WebSocket;
  class Timed extends Native {
    constructor(...args) {
      super(...args);
      this.addEventListener('message', (event) => {
        if (typeof event.data === 'string' && event.data.includes('_ended')) {
          (window.__dgxEndedFrames = window.__dgxEndedFrames || []).push(Date.now());
        }
      });
    }
  }
  window.WebSocket = Timed;
})();"""

_WATCH_CARD_JS = """(id) => {
  window.__dgxBenchChanged = null;
  if (window.__dgxBenchObserver) window.__dgxBenchObserver.disconnect();
  const check = () => {
    const card = document.getElementById('op-' + id);
    if (card && !['running', 'active', 'starting'].includes(card.dataset.status)) {
      window.__dgxBenchChanged = Date.now();
      observer.disconnect();
    }
  };
  const observer = new MutationObserver(check);
  observer.observe(document.body, {subtree: true, childList: true, attributes: true, attributeFilter: ['data-status']});
  window.__dgxBenchObserver = observer;
}"""


def _ratio(value: float, base: float) -> float | None:
    """``value / base`` to 3 places (None without a base)."""
    return round(value / base, 3) if base else None


def _delta_sizes(data: bytes) -> dict[str, int]:
    """``{state.var: JSON bytes}`` of a Reflex delta frame (``42/_event,["event",{"delta":...}]``)."""
    start = data.find(b"[")
    if not data.startswith(b"42") or start < 0:
        return {}
    try:
        message = json.loads(data[start:])
        delta = message[1].get("delta") or {}
    except (ValueError, IndexError, AttributeError):
        return {}
    sizes: dict[str, int] = {}
    for state, fields in delta.items():
        short = state.rsplit(".", 1)[-1].replace("dgx_spark___state___", "")
        for var, value in (fields or {}).items():
            sizes[f"{short}.{var.removesuffix('_rx_state_')}"] = len(json.dumps(value, separators=(",", ":")))
    return sizes


def _write_isolating_rules(path: Path) -> Path:
    """A user rules file that ignores every process but the benchmark's own scripts.

    On a shared machine other people's processes change every tick; with this
    file the dashboard lists only what the benchmark starts, so "nothing changed"
    can really happen. (A documented user feature: DGX_SPARK_RULES_FILE.)
    """
    path.write_text(
        "# Written by bench/app_bench.py: list only the benchmark's processes.\n"
        "[[rule]]\n"
        'id = "bench-only"\n'
        'type = "ignore"\n'
        f"args = ['^(?!.*{FLEET_MARKER})']\n"
    )
    return path


def _signature(operations: list[dict[str, Any]]) -> str:
    """The operation list as the UI would show it, less ``uptime`` (it moves every second)."""
    rows = sorted(({k: v for k, v in op.items() if k != "uptime"} for op in operations), key=lambda op: op["id"])
    return json.dumps(rows, sort_keys=True, default=str)


def _named(op: dict[str, Any], names: list[str]) -> bool:
    text = " ".join(str(op.get(k) or "") for k in ("name", "description", "command"))
    return any(name in text for name in names)


def _bin_bytes(frames: list[tuple[float, int, str]], start: float, end: float, width: float) -> list[int]:
    """Bytes received per ``width``-second bin between ``start`` and ``end``."""
    count = max(1, int((end - start) // width))
    bins = [0] * count
    for t, size, _ in frames:
        bins[min(count - 1, int((t - start) // width))] += size
    return bins
