"""The "All nodes" row: 8 remote nodes × 100 operations each, seen through one dashboard.

The nodes are tiny HTTP servers (``FakeNode``) answering the node API's list
(``GET /api/dgx/operations`` with the ``X-DGX-Spark-Node-Api`` header) with 100 operations
each, so the row measures the dashboard's side only: its pollers, the merged All-nodes view
and the page. One full dashboard (UI built) runs with the product's refresh period and lists
none of this machine's processes (the isolating rules file of ``bench/app_bench.py``).

Measured, each over ``window`` seconds: the backend's CPU per refresh with no node, with the
8 nodes polled and no tab, and with one tab showing All nodes (800 cards); the requests each
node got per refresh; then ``changes`` times: one remote operation renamed on its node →
the card shows the new name in the browser (this includes waiting for the node's next poll,
up to one refresh).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import http.server
import json
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from bench.api_latency import percentile
from bench.app_bench import _write_isolating_rules, sampler_state, tree_cpu_seconds
from dgx_spark.nodes.protocol import NODE_API, NODE_API_HEADER, VERSION_HEADER, app_version
from tests.support.browser import CHROMIUM_FLAGS, chromium_path
from tests.support.dashboard import Dashboard, wait_until

Log = Callable[[str], None]
NODES = 8
OPERATIONS_PER_NODE = 100
# True once the card of an operation shows a name (polled by Playwright on each animation frame).
_CARD_SHOWS_JS = """([id, name]) => {
  const card = document.querySelector(`[data-testid="operation-card"][data-id="${id}"] [data-field="name"]`);
  return !!card && card.textContent === name;
}"""


def fake_operation(node: int, index: int, started: str) -> dict[str, Any]:
    """One running program, shaped like the node API's list item."""
    return {
        "id": f"op-{900 + node}-{index}",
        "type": "program",
        "name": f"bench-node{node}-op{index:03d}",
        "status": "running",
        "description": "a remote benchmark operation",
        "command": f"python worker_{index}.py",
        "pid": 10_000 + index,
        "process_count": 1,
        "started_at": started,
        "source": "discovered",
        "cpu_percent": 1.5,
        "memory_bytes": 50_000_000,
        "gpu_memory_bytes": None,
        "user": "bench",
    }


class FakeNode:
    """A tiny HTTP server answering a node's operation list (any token), and counting its requests."""

    def __init__(self, index: int, count: int) -> None:
        """``count`` operations; ``start`` serves them."""
        started = (dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)).isoformat()
        self.index = index
        self.operations = [fake_operation(index, i, started) for i in range(count)]
        self.requests = 0
        self._lock = threading.Lock()
        self._body = self._encode()
        self._server: http.server.ThreadingHTTPServer | None = None

    def _encode(self) -> bytes:
        return json.dumps({"success": True, "data": self.operations}).encode()

    def rename(self, position: int, name: str) -> str:
        """Rename one operation (the next list answered carries it); its id."""
        with self._lock:
            self.operations[position] = {**self.operations[position], "name": name}
            self._body = self._encode()
            return str(self.operations[position]["id"])

    def answer(self) -> bytes:
        """The list as it is now (counts the request)."""
        with self._lock:
            self.requests += 1
            return self._body

    @property
    def url(self) -> str:
        """Where it listens."""
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> FakeNode:
        """Serve in a daemon thread."""
        node = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path.split("?")[0] != "/api/dgx/operations":
                    self.send_error(404)
                    return
                body = node.answer()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.send_header(NODE_API_HEADER, NODE_API)
                self.send_header(VERSION_HEADER, app_version())
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        """Stop serving."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


@contextlib.contextmanager
def fake_nodes(nodes: int = NODES, operations: int = OPERATIONS_PER_NODE) -> Iterator[list[FakeNode]]:
    """``nodes`` fake nodes with ``operations`` each, serving for the block."""
    started = [FakeNode(i, operations).start() for i in range(nodes)]
    try:
        yield started
    finally:
        for node in started:
            node.stop()


class NodesBench:
    """One dashboard, 8 fake nodes: backend CPU per refresh and node change → page updated."""

    def __init__(self, *, refresh_seconds: float = 2.0, window_seconds: float = 30.0, changes: int = 20,
                 nodes: int = NODES, operations: int = OPERATIONS_PER_NODE, log: Log = print) -> None:
        """Describe the run; ``run`` performs it."""
        self.refresh = refresh_seconds
        self.window = window_seconds
        self.changes = changes
        self.nodes = nodes
        self.operations = operations
        self.log = log
        self.results: dict[str, Any] = {}

    def run(self, dashboard: Dashboard | None = None, page: Any = None) -> dict[str, Any]:
        """Start everything, measure, stop everything; the results (also in ``self.results``).

        Args:
            dashboard: A full dashboard already running (a test's), used as it is and left
                running, its nodes removed again; by default one of its own (the app's
                frontend build is one per checkout: two full dashboards cannot run at once).
            page: A Playwright page to use (a test's) instead of a Chromium of its own.
        """
        workdir = Path(tempfile.mkdtemp(prefix="dgx-bench-nodes-"))
        env = {"DGX_SPARK_REFRESH_SECONDS": str(self.refresh),
               "DGX_SPARK_RULES_FILE": str(_write_isolating_rules(workdir / "rules.toml"))}
        own = dashboard is None
        dashboard = dashboard or Dashboard(workdir / "data", full=True, env=env)
        added: list[str] = []
        result: dict[str, Any] = {"nodes": self.nodes, "operations_per_node": self.operations,
                                  "refresh_seconds": self.refresh}
        self.results["nodes"] = result
        try:
            with fake_nodes(self.nodes, self.operations) as fakes:
                if own:
                    self.log("nodes: starting the dashboard (full UI) ...")
                    dashboard.start()
                self.log(f"nodes: backend CPU per refresh, no node, {self.window:.0f}s ...")
                result["no_nodes"] = self._cpu_window(dashboard, None)
                for fake in fakes:
                    status, body = dashboard.authed("POST", "/api/dgx/nodes", {
                        "name": f"bench-node-{fake.index}", "url": fake.url, "token": "bench-token-0123456789abcdef"})
                    if status != 201 or body["data"]["status"] != "online":
                        raise RuntimeError(f"adding fake node {fake.index} failed: {status} {body}")
                    added.append(body["data"]["id"])
                time.sleep(2 * self.refresh)
                self.log(f"nodes: {self.nodes} nodes polled, no tab, {self.window:.0f}s ...")
                before = sum(fake.requests for fake in fakes)
                result["polled"] = self._cpu_window(dashboard, None)
                polls = sum(fake.requests for fake in fakes) - before
                result["requests_per_node_per_refresh"] = round(
                    polls / self.nodes / max(1, result["polled"]["refreshes"]), 2)
                self._browser(dashboard, fakes, result, page)
        except BaseException:
            self.log(f"nodes: the dashboard's log is kept in {dashboard.log_path}")
            raise
        finally:
            if own:
                dashboard.stop()
            else:
                for node_id in added:
                    dashboard.authed("DELETE", f"/api/dgx/nodes/{node_id}")
        shutil.rmtree(workdir, ignore_errors=True)
        return self.results

    def _cpu_window(self, dashboard: Dashboard, page: Any) -> dict[str, Any]:
        pid = dashboard.process.pid if dashboard.process else 0
        load = os.getloadavg()
        (seq0, _), cpu0 = sampler_state(dashboard), tree_cpu_seconds(pid)
        if page is not None:
            page.wait_for_timeout(self.window * 1000)
        else:
            time.sleep(self.window)
        (seq1, _), cpu1 = sampler_state(dashboard), tree_cpu_seconds(pid)
        refreshes = max(1, seq1 - seq0)
        return {
            "loadavg_before": [round(value, 2) for value in load],
            "seconds": self.window,
            "refreshes": seq1 - seq0,
            "cpu_ms_per_refresh": round((cpu1 - cpu0) * 1000.0 / refreshes, 2),
        }

    def _browser(self, dashboard: Dashboard, fakes: list[FakeNode], result: dict[str, Any], page: Any) -> None:
        if page is not None:
            self._all_nodes_tab(dashboard, fakes, result, page)
            return
        from playwright.sync_api import sync_playwright

        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_FLAGS, headless=True)
            try:
                page = browser.new_context(viewport={"width": 1400, "height": 1000}).new_page()
                self._all_nodes_tab(dashboard, fakes, result, page)
            finally:
                browser.close()

    def _all_nodes_tab(self, dashboard: Dashboard, fakes: list[FakeNode], result: dict[str, Any], page: Any) -> None:
        self.log("nodes: one tab on All nodes ...")
        page.goto(f"{dashboard.url}/?node=all", wait_until="load", timeout=120_000)
        wanted = self.nodes * self.operations
        cards = page.locator('[data-testid="operation-card"][data-id^="op-9"]')
        with contextlib.suppress(AssertionError):
            wait_until(lambda: cards.count() >= wanted, timeout=120, interval=1.0)
        result["cards_shown"] = cards.count()
        page.wait_for_timeout(3 * self.refresh * 1000)
        self.log(f"nodes: backend CPU per refresh, one All-nodes tab, {self.window:.0f}s ...")
        result["all_nodes_tab"] = self._cpu_window(dashboard, page)
        self._changes(dashboard, fakes, page, result)

    def _changes(self, dashboard: Dashboard, fakes: list[FakeNode], page: Any, result: dict[str, Any]) -> None:
        self.log(f"nodes: {self.changes} remote changes, change → card updated ...")
        samples: list[float] = []
        polled: list[float] = []
        misses = 0
        for k in range(self.changes):
            fake = fakes[k % len(fakes)]
            name = f"bench-node-change-{k}"
            started = time.perf_counter()
            op_id = fake.rename(k % self.operations, name)
            # When this backend had it: its All-nodes list (the pollers' lists) names it.
            with contextlib.suppress(AssertionError):
                wait_until(lambda wanted=name: any(op["name"] == wanted for op in dashboard.operations(node="all")),
                           timeout=30, interval=0.05)
                polled.append((time.perf_counter() - started) * 1000.0)
            try:
                page.wait_for_function(_CARD_SHOWS_JS, arg=[op_id, name], polling="raf", timeout=30_000)
            except Exception:  # noqa: BLE001 - a miss is counted, not fatal
                misses += 1
                continue
            samples.append((time.perf_counter() - started) * 1000.0)
            # Changes land at different points of the refresh, like real ones.
            page.wait_for_timeout(self.refresh * 1000 * (0.37 + 0.29 * (k % 3)))
        result["changes"] = self.changes
        result["misses"] = misses
        if polled:
            result["backend_p50_ms"] = round(percentile(polled, 50), 1)
        if samples:
            result.update(p50_ms=round(percentile(samples, 50), 1), p95_ms=round(percentile(samples, 95), 1),
                          max_ms=round(max(samples), 1))


def table_row(nodes: dict[str, Any]) -> list[str]:
    """The row of ``make bench``'s table (no target: for information)."""
    label = f"All nodes with {nodes['nodes']} nodes × {nodes['operations_per_node']} operations"
    tab = nodes.get("all_nodes_tab", {}).get("cpu_ms_per_refresh")
    polled = nodes.get("polled", {}).get("cpu_ms_per_refresh")
    alone = nodes.get("no_nodes", {}).get("cpu_ms_per_refresh")
    ours = (f"backend {tab:.1f} ms CPU / refresh; " if tab is not None else "backend n/a; ") + (
        f"page updated p50 {nodes['p50_ms']:.0f} ms, p95 {nodes['p95_ms']:.0f} ms" if "p50_ms" in nodes
        else "page update n/a")
    reference = (
        f"no node {alone if alone is not None else 'n/a'} ms, polled without a tab {polled if polled is not None else 'n/a'}"
        f" ms; {nodes.get('requests_per_node_per_refresh', 'n/a')} requests / node / refresh; "
        f"change in this backend's list p50 {nodes.get('backend_p50_ms', 'n/a')} ms; "
        f"{nodes.get('cards_shown', 'n/a')} cards; {nodes.get('misses', 'n/a')} misses; the update waits for the "
        f"next poll (refresh {nodes['refresh_seconds']:g} s)"
    )
    return [label, ours, reference, "(info)", "—"]
