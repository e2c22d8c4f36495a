"""Nodes through real copies of the app: A polls and controls B, each with its own port, data and token.

B runs with ``DGX_SPARK_AUTH=required`` (as a machine serving its network would), so
everything A asks of it carries B's token. Doubles: only a tiny HTTP server that
answers something else than this app (the "incompatible" node).
"""

from __future__ import annotations

import contextlib
import http.server
import json
import re
import stat
import sys
import threading
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support.dashboard import (
    ROOT,
    TEST_TOKEN,
    UNTHROTTLED,
    Dashboard,
    free_port,
    reap_launched,
    wait_until,
)

B_TOKEN = "node-b-token-fedcba9876543210fedcba9876543210"
ECHO = "import time\nprint('hello from node B', flush=True)\nwhile True:\n    time.sleep(0.5)\n"


def b_headers() -> dict[str, str]:
    return {"Authorization": f"Bearer {B_TOKEN}"}


class _StrictDashboard(Dashboard):
    """B: its readiness probe sends B's token (every request needs it)."""

    def get_json(self, path: str) -> Any:
        return self.request("GET", path, headers=b_headers())[1]


@pytest.fixture(scope="module")
def node_b(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dashboard]:
    data = tmp_path_factory.mktemp("node-b") / "data"
    dashboard = _StrictDashboard(
        data, env={**UNTHROTTLED, "DGX_SPARK_TOKEN": B_TOKEN, "DGX_SPARK_AUTH": "required"}
    )
    try:
        yield dashboard.start()
    finally:
        dashboard.stop()
        reap_launched(data)


@pytest.fixture(scope="module")
def node_a(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dashboard]:
    data = tmp_path_factory.mktemp("node-a") / "data"
    dashboard = Dashboard(data, env={**UNTHROTTLED, "DGX_SPARK_NODE_BACKOFF_MAX_SECONDS": "2"})
    try:
        yield dashboard.start()
    finally:
        dashboard.stop()
        reap_launched(data)


def nodes(a: Dashboard) -> dict[str, dict[str, Any]]:
    status, body = a.request("GET", "/api/dgx/nodes")
    assert status == 200, body
    return {item["id"]: item for item in body["data"]}


def add_node(a: Dashboard, name: str, url: str, token: str) -> dict[str, Any]:
    status, body = a.authed("POST", "/api/dgx/nodes", {"name": name, "url": url, "token": token})
    assert status == 201, body
    assert body["success"] is True
    return body["data"]


class _Other(http.server.BaseHTTPRequestHandler):
    """Something that answers HTTP, but is not this app (an old or foreign service)."""

    def do_GET(self) -> None:
        body = json.dumps({"items": [], "version": "0.0.1"}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@contextlib.contextmanager
def other_server() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Other)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_adding_a_node_needs_the_token_and_checks_input(node_a: Dashboard, node_b: Dashboard) -> None:
    body = {"name": "spark-b", "url": node_b.url, "token": B_TOKEN}
    status, answer = node_a.request("POST", "/api/dgx/nodes", body)
    assert status == 401 and answer["success"] is False
    for bad, field in (
        ({**body, "url": "ftp://x"}, "url"),
        ({**body, "url": "http://user:pw@host:1"}, "url"),
        ({**body, "token": "short"}, "token"),
        ({**body, "name": ""}, "name"),
        ({**body, "extra": 1}, "extra"),
    ):
        status, answer = node_a.authed("POST", "/api/dgx/nodes", bad)
        assert status == 422, answer
        assert answer["error"]["field"] == field
        assert B_TOKEN not in json.dumps(answer)
    status, answer = node_a.authed("POST", "/api/dgx/nodes", ["x"])
    assert status == 422
    assert "spark-b" not in nodes(node_a)


def test_connect_b_to_a_list_launch_logs_stop(node_a: Dashboard, node_b: Dashboard) -> None:
    added = add_node(node_a, "Spark B", node_b.url, B_TOKEN)
    assert (added["id"], added["name"], added["url"]) == ("spark-b", "Spark B", node_b.url)
    assert added["status"] == "online", added
    assert "token" not in added
    # The token is kept here, 0600, and never shown.
    stored = node_a.data_dir / "nodes.json"
    assert stat.S_IMODE(stored.stat().st_mode) == 0o600
    assert B_TOKEN in stored.read_text()
    status, raw = node_a.request("GET", "/api/dgx/nodes")
    assert B_TOKEN not in json.dumps(raw)
    listed = nodes(node_a)
    assert next(iter(listed)) == "local" and listed["local"]["local"] is True
    b = listed["spark-b"]
    assert b["status"] == "online" and b["stale"] is False and b["error"] is None
    assert b["version"] and b["latency_ms"] is not None and b["last_seen"]
    status, again = node_a.authed("POST", "/api/dgx/nodes", {"name": "other", "url": node_b.url, "token": B_TOKEN})
    assert status == 409, again

    # Launch on B from A.
    launch = {"template": "custom", "name": "remote-echo", "command": [sys.executable, "-u", "-c", ECHO]}
    status, answer = node_a.request("POST", "/api/dgx/nodes/spark-b/operations", launch)
    assert status == 401, answer  # a control action needs the token here, like any other
    status, answer = node_a.authed("POST", "/api/dgx/nodes/spark-b/operations", launch)
    assert status == 201, answer
    op_id = answer["data"]["id"]
    # It runs on B, not on A.
    status, on_b = node_b.request("GET", f"/api/dgx/operations/{op_id}", headers=b_headers())
    assert status == 200, on_b
    assert all(op["id"] != op_id for op in node_a.operations())

    # A lists it with its node: from the poller's last list of B.
    def remote_item() -> dict[str, Any] | None:
        items = node_a.operations(node="all")
        assert all("node" in item and "stale" in item for item in items)
        return next((item for item in items if item["id"] == op_id), None)

    item = wait_until(remote_item, timeout=20, message="B's operation never listed on A")
    assert item["node"] == "spark-b" and item["stale"] is False and item["name"] == "remote-echo"
    assert any(i["node"] == "local" for i in node_a.operations(node="all"))
    assert {i["node"] for i in node_a.operations(node="spark-b")} == {"spark-b"}
    assert all(i["node"] == "local" for i in node_a.operations(node="local"))
    assert [i["id"] for i in node_a.operations(node="spark-b", q="remote-echo")] == [op_id]
    assert "node" not in (node_a.operations() or [{}])[0]  # the plain list's contract without ?node
    status, answer = node_a.request("GET", "/api/dgx/operations?node=nope")
    assert status == 404 and answer["error"]["field"] == "node"

    # Forwarded reads: one operation, its logs (token needed here), the log stream.
    status, one = node_a.request("GET", f"/api/dgx/nodes/spark-b/operations/{op_id}")
    assert status == 200 and one["data"]["id"] == op_id
    status, missing = node_a.request("GET", "/api/dgx/nodes/spark-b/operations/op-nope-1")
    assert status == 404 and missing["success"] is False  # B's status code and envelope
    status, refused = node_a.request("GET", f"/api/dgx/nodes/spark-b/operations/{op_id}/logs")
    assert status == 401, refused

    def logs() -> list[str] | None:
        status, answer = node_a.authed("GET", f"/api/dgx/nodes/spark-b/operations/{op_id}/logs")
        assert status == 200, answer
        return answer["data"]["lines"] if "hello from node B" in " ".join(answer["data"]["lines"]) else None

    wait_until(logs, timeout=15, message="B's log never read from A")
    request = urllib.request.Request(f"{node_a.url}/api/dgx/nodes/spark-b/operations/{op_id}/logs/stream?offset=0",
                                     headers={"Authorization": f"Bearer {TEST_TOKEN}"})
    with urllib.request.urlopen(request, timeout=15) as stream:
        assert stream.headers["Content-Type"].startswith("text/event-stream")
        seen = b""
        while b"hello from node B" not in seen:
            chunk = stream.readline()
            assert chunk, seen
            seen += chunk

    # Stop it from A.
    status, stopped = node_a.authed("POST", f"/api/dgx/nodes/spark-b/operations/{op_id}/stop", {"signal": "term"})
    assert status == 200, stopped
    wait_until(lambda: (remote_item() or {}).get("status") in ("stopped", "failed"), timeout=30,
               message="the stop never showed on A")
    status, answer = node_a.authed("POST", f"/api/dgx/nodes/spark-b/operations/{op_id}/stop", {"signal": "nope"})
    assert status == 422, answer  # B's own validation, passed through


def test_every_operation_route_is_forwarded_with_the_nodes_answer(node_a: Dashboard, node_b: Dashboard) -> None:
    """Restart, progress, start, remove and the log download on B through A's ``/api/dgx/nodes/spark-b/…``."""
    if "spark-b" not in nodes(node_a):
        add_node(node_a, "Spark B", node_b.url, B_TOKEN)
    base = "/api/dgx/nodes/spark-b/operations"
    launch = {"template": "custom", "name": "forwarded-echo", "type": "job", "command": [sys.executable, "-u", "-c", ECHO]}
    status, answer = node_a.authed("POST", base, launch)
    assert status == 201, answer
    op_id = answer["data"]["id"]

    def on_b() -> dict[str, Any] | None:
        status, body = node_b.request("GET", f"/api/dgx/operations/{op_id}", headers=b_headers())
        return body["data"] if status == 200 else None

    def live() -> bool:
        return (on_b() or {}).get("status") in ("running", "active")

    wait_until(live, timeout=30, message="never ran on B")
    # Each control route needs the token here (A's), and is then done on B with B's token.
    for path in (f"{base}/{op_id}/restart", f"{base}/{op_id}/progress", f"{base}/{op_id}/start"):
        status, answer = node_a.request("POST", path, {})
        assert status == 401, (path, answer)
    status, answer = node_a.request("DELETE", f"{base}/{op_id}")
    assert status == 401, answer
    status, answer = node_a.request("GET", f"{base}/{op_id}/logs/download")
    assert status == 401, answer

    status, answer = node_a.authed("POST", f"{base}/{op_id}/restart", {"signal": "term"})
    assert status == 200 and answer["success"] is True, answer
    wait_until(lambda: (on_b() or {}).get("runs", 1) >= 2 and on_b(), timeout=30, message="no second run on B")
    wait_until(live, timeout=30, message="the restart never ran")
    status, answer = node_a.authed("POST", f"{base}/{op_id}/progress", {"progress": 0.25, "epoch": 1})
    assert status == 200 and answer["data"]["accepted"]["progress"] == 0.25, answer
    wait_until(lambda: (on_b() or {}).get("progress") == 0.25, timeout=30, message="B never took the report")
    status, answer = node_a.authed("POST", f"{base}/{op_id}/progress", {"progress": 7})
    assert status == 422 and answer["error"]["field"] == "progress", answer  # B's check, passed through
    # B's /metrics has the report (progress_ratio), read with B's token.
    request = urllib.request.Request(node_b.url + "/metrics", headers=b_headers())
    with urllib.request.urlopen(request, timeout=15) as resp:
        families = {f.name: f for f in text_string_to_metric_families(resp.read().decode())}
    ratio = {s.labels["id"]: s.value for s in families["dgx_spark_operation_progress_ratio"].samples}
    assert ratio.get(op_id) == 0.25, ratio

    status, answer = node_a.authed("POST", f"{base}/{op_id}/start")
    direct = node_b.request("POST", f"/api/dgx/operations/{op_id}/start", headers=b_headers())
    assert (status, answer["success"], answer["error"]["code"]) == (direct[0], False, direct[1]["error"]["code"])
    assert status == 409, answer  # running: B refuses Start again, and A answers B's refusal as it is
    status, answer = node_a.authed("POST", f"{base}/{op_id}/stop", {"signal": "kill"})
    assert status == 200, answer
    wait_until(lambda: (on_b() or {}).get("status") in ("stopped", "failed"), timeout=30, message="never stopped")
    status, text = node_a.authed("GET", f"{base}/{op_id}/logs/download")
    assert status == 200 and "hello from node B" in text, text
    status, answer = node_a.authed("POST", f"{base}/{op_id}/start")
    assert status == 200 and answer["success"] is True, answer
    wait_until(live, timeout=30, message="Start again never ran")
    node_a.authed("POST", f"{base}/{op_id}/stop", {"signal": "kill"})
    wait_until(lambda: (on_b() or {}).get("status") in ("stopped", "failed"), timeout=30, message="never stopped")
    status, answer = node_a.authed("DELETE", f"{base}/{op_id}")
    assert status == 200 and answer["success"] is True, answer
    wait_until(lambda: on_b() is None, timeout=30, message="B still has it after Remove")
    status, answer = node_a.authed("DELETE", f"{base}/{op_id}")
    assert status == 404 and answer["success"] is False, answer


def test_b_killed_goes_offline_and_stale_then_back(node_a: Dashboard, node_b: Dashboard) -> None:
    if "spark-b" not in nodes(node_a):
        add_node(node_a, "Spark B", node_b.url, B_TOKEN)
    wait_until(lambda: [i for i in node_a.operations(node="spark-b")], timeout=20)
    node_b.stop()
    b = wait_until(lambda: (n := nodes(node_a)["spark-b"])["status"] == "offline" and n, timeout=20)
    assert b["stale"] is True and b["error"]
    assert b["last_seen"] and b["age_seconds"] is not None and b["age_seconds"] >= 0  # its age is shown
    items = node_a.operations(node="spark-b")
    assert items and all(i["stale"] is True for i in items)  # the last list is kept, marked stale
    status, answer = node_a.request("GET", "/api/dgx/nodes/spark-b/operations")
    assert status == 502, answer
    assert answer["success"] is False and answer["error"]["code"] == "node_unreachable"
    assert answer["error"]["node"] == "spark-b"
    node_b.start()
    wait_until(lambda: nodes(node_a)["spark-b"]["status"] == "online", timeout=30,
               message="B never came back online on A")
    assert all(i["stale"] is False for i in node_a.operations(node="spark-b"))


def test_wrong_token_is_unauthorized(node_a: Dashboard, node_b: Dashboard) -> None:
    # The same node under another name and address form, with a wrong token.
    url = f"http://localhost:{node_b.port}"
    added = add_node(node_a, "wrong token", url, "not-the-token-of-b-0123456789")
    assert added["status"] == "unauthorized", added
    assert "token" in added["error"]
    status, answer = node_a.request("DELETE", f"/api/dgx/nodes/{added['id']}")
    assert status == 401, answer  # removing a node is a control action too
    status, answer = node_a.authed("DELETE", f"/api/dgx/nodes/{added['id']}")
    assert status == 200 and answer["data"]["removed"] is True
    status, answer = node_a.authed("DELETE", f"/api/dgx/nodes/{added['id']}")
    assert status == 404
    status, answer = node_a.authed("DELETE", "/api/dgx/nodes/local")
    assert status == 422


def test_incompatible_and_unreachable(node_a: Dashboard) -> None:
    with other_server() as url:
        added = add_node(node_a, "old thing", url, "whatever-token-0123456789")
        assert added["status"] == "incompatible", added
        status, answer = node_a.request("GET", f"/api/dgx/nodes/{added['id']}/operations")
        assert status == 502 and answer["error"]["code"] == "node_incompatible", answer
    node_a.authed("DELETE", f"/api/dgx/nodes/{added['id']}")
    gone = add_node(node_a, "nobody", f"http://127.0.0.1:{free_port()}", "whatever-token-0123456789")
    assert gone["status"] == "offline", gone
    status, answer = node_a.authed("POST", f"/api/dgx/nodes/{gone['id']}/operations/op-1-1/stop")
    assert status == 502 and answer["error"]["code"] == "node_unreachable", answer
    node_a.authed("DELETE", f"/api/dgx/nodes/{gone['id']}")
    status, answer = node_a.request("GET", "/api/dgx/nodes/nope/operations")
    assert status == 404


def test_nodes_survive_a_restart_of_a(node_a: Dashboard, node_b: Dashboard) -> None:
    if "spark-b" not in nodes(node_a):
        add_node(node_a, "Spark B", node_b.url, B_TOKEN)
    node_a.stop()
    node_a.start()
    wait_until(lambda: nodes(node_a).get("spark-b", {}).get("status") == "online", timeout=20)


def test_metrics_parse(node_a: Dashboard, node_b: Dashboard) -> None:
    if "spark-b" not in nodes(node_a):
        add_node(node_a, "Spark B", node_b.url, B_TOKEN)
    wait_until(lambda: node_a.operations(node="spark-b"), timeout=20)

    def families(dashboard: Dashboard, path: str, headers: dict[str, str] | None = None) -> dict[str, Any]:
        request = urllib.request.Request(dashboard.url + path, headers=headers or {})
        with urllib.request.urlopen(request, timeout=15) as resp:
            assert resp.headers["Content-Type"].startswith("text/plain")
            text = resp.read().decode()
        return {family.name: family for family in text_string_to_metric_families(text)}

    # This machine's CPU % needs two samples (an interval): the first scrape after A's start may lack it.
    local = wait_until(lambda: (f := families(node_a, "/metrics"))["dgx_spark_cpu_percent"].samples and f,
                       timeout=30, message="no dgx_spark_cpu_percent sample")
    for name in ("dgx_spark_operation_info", "dgx_spark_operation_cpu_percent", "dgx_spark_operation_memory_bytes",
                 "dgx_spark_operation_gpu_memory_bytes", "dgx_spark_operation_progress_ratio",
                 "dgx_spark_operation_uptime_seconds", "dgx_spark_cpu_percent", "dgx_spark_memory_used_bytes",
                 "dgx_spark_memory_total_bytes", "dgx_spark_snapshot_age_seconds", "dgx_spark_sampler_cpu_seconds",
                 "dgx_spark_node_up"):
        assert name in local, sorted(local)
    cpu = local["dgx_spark_sampler_cpu_seconds"]
    assert cpu.type == "counter" and cpu.samples[0].name == "dgx_spark_sampler_cpu_seconds_total"
    assert cpu.samples[0].value > 0
    age = local["dgx_spark_snapshot_age_seconds"].samples[0].value
    assert 0 <= age < 60
    assert local["dgx_spark_memory_total_bytes"].samples[0].value > 0
    infos = local["dgx_spark_operation_info"].samples
    assert infos and {s.labels["node"] for s in infos} == {"local"}
    assert {"node", "id", "type", "name", "status"} <= set(infos[0].labels)
    # (Per-operation values of a live process and a GPU: tests/test_system_api.py.)
    assert local["dgx_spark_cpu_percent"].samples[0].labels == {"node": "local"}
    # Every metric the README's Prometheus section names is served.
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## Prometheus and Grafana"):readme.index("## More documentation")]
    named = set(re.findall(r"\bdgx_spark_[a-z_]+", section))
    assert "dgx_spark_operation_gpu_memory_bytes" in named and "scrape_configs:" in section
    assert named <= set(local), sorted(named - set(local))
    up = {s.labels["node"]: s.value for s in local["dgx_spark_node_up"].samples}
    assert up.get("spark-b") == 1.0
    merged = families(node_a, "/metrics?node=all")
    assert "spark-b" in {s.labels["node"] for s in merged["dgx_spark_operation_info"].samples}
    # B wants the bearer token for everything (DGX_SPARK_AUTH=required).
    status, answer = node_b.request("GET", "/metrics")
    assert status == 401 and answer["success"] is False
    on_b = families(node_b, "/metrics", b_headers())
    assert "dgx_spark_operation_info" in on_b
