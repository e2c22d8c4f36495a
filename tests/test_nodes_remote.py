"""Remote control from this backend against a real node B: the service's node actions, the node client
(a log's end and its stream), and how an embedding app's ``connection_id`` names a node.

B is a real copy of the app (backend only, ``DGX_SPARK_AUTH=required``, its own token). The hub
and the control service run in the test process, as they do in A's backend; the audit writer is a
list (the audit database is tested in ``tests/test_control_service.py``).
"""

from __future__ import annotations

import itertools
import json
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dgx_spark.control.service import Actor, ControlService, RemoteDone
from dgx_spark.nodes import client as node_client
from dgx_spark.nodes.hub import NodeHub
from dgx_spark.nodes.store import NodeStore
from dgx_spark.security.throttle import InFlight, RateLimiter
from dgx_spark.state.node_view import connection_node
from dgx_spark.supervisor.supervisor import ControlError
from tests.support.aio import run_coroutine
from tests.support.dashboard import UNTHROTTLED, Dashboard, free_port, reap_launched, wait_until
from tests.support.reflex_socket import ReflexSocket

B_TOKEN = "remote-node-b-token-0123456789abcdef0123"
COUNTER = "import time\ni = 0\nwhile True:\n    print(f'tick {i}', flush=True)\n    i += 1\n    time.sleep(0.3)\n"
ME = Actor(client="127.0.0.1 (test)", via="ui", authorized=True)


class _StrictDashboard(Dashboard):
    """B: every request needs its token, its readiness probe too."""

    def get_json(self, path: str) -> Any:
        return self.request("GET", path, headers={"Authorization": f"Bearer {B_TOKEN}"})[1]


@pytest.fixture(scope="module")
def node_b(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dashboard]:
    data = tmp_path_factory.mktemp("remote-b") / "data"
    dashboard = _StrictDashboard(data, env={**UNTHROTTLED, "DGX_SPARK_TOKEN": B_TOKEN, "DGX_SPARK_AUTH": "required"})
    try:
        yield dashboard.start()
    finally:
        dashboard.stop()
        reap_launched(data)


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory, node_b: Dashboard) -> Iterator[NodeHub]:
    hub = NodeHub(NodeStore(tmp_path_factory.mktemp("remote-a")), interval=1.0, backoff_limit=2.0)
    hub.start()
    node, state = hub.add("Spark B", node_b.url, B_TOKEN)
    assert node.id == "spark-b" and state.status == "online", state
    try:
        yield hub
    finally:
        hub.stop()


class Audit(list[dict[str, Any]]):
    """The audit rows the service wrote."""

    def __call__(self, action: str, outcome: str, **fields: Any) -> None:
        self.append({"action": action, "outcome": outcome, **fields})


def service(hub: NodeHub, audit: Audit) -> ControlService:
    def no_supervisor() -> Any:
        raise AssertionError("a remote action must not touch this machine's supervisor")

    return ControlService(no_supervisor, lambda: hub, rate=RateLimiter(1000, 1000), in_flight=InFlight(),
                          audit=audit)


def on_b(node_b: Dashboard, op_id: str) -> dict[str, Any] | None:
    status, body = node_b.request("GET", f"/api/dgx/operations/{op_id}",
                                  headers={"Authorization": f"Bearer {B_TOKEN}"})
    return body["data"] if status == 200 else None


def test_launch_restart_stop_start_remove_on_b(hub: NodeHub, node_b: Dashboard) -> None:
    audit = Audit()
    control = service(hub, audit)
    body = {"template": "custom", "name": "remote-counter", "command": [sys.executable, "-u", "-c", COUNTER]}
    done = control.launch_remote(ME, "spark-b", body)
    assert isinstance(done, RemoteDone) and done.node == "spark-b" and done.node_name == "Spark B"
    assert done.name == "remote-counter" and done.id
    op_id = done.id
    assert audit[-1]["action"] == "launch" and audit[-1]["outcome"] == "allowed"
    assert audit[-1]["target"] == f"spark-b/{op_id}" and audit[-1]["target_name"] == "remote-counter"
    wait_until(lambda: (on_b(node_b, op_id) or {}).get("status") == "running", timeout=30,
               message="the launch never ran on B")
    # The poller lists it soon (a control action wakes it), so the name is known for the next actions.
    wait_until(lambda: any(item["id"] == op_id for _, s in hub.states() for item in s.operations), timeout=15)

    restarted = control.act_remote(ME, "restart", "spark-b", op_id, signal_name="term")
    assert restarted.name == "remote-counter"
    assert audit[-1]["action"] == "restart" and audit[-1]["target"] == f"spark-b/{op_id}"
    wait_until(lambda: (on_b(node_b, op_id) or {}).get("runs", 1) >= 2, timeout=30,
               message="the restart never made a second run on B")

    control.act_remote(ME, "stop", "spark-b", op_id, signal_name="int")
    wait_until(lambda: (on_b(node_b, op_id) or {}).get("status") in ("stopped", "failed"), timeout=30,
               message="the stop never ended it on B")
    control.act_remote(ME, "start", "spark-b", op_id)
    wait_until(lambda: (on_b(node_b, op_id) or {}).get("status") == "running", timeout=30,
               message="Start again never ran it on B")
    control.stop_remote(ME, "spark-b", op_id, signal_name="kill")
    wait_until(lambda: (on_b(node_b, op_id) or {}).get("status") in ("stopped", "failed"), timeout=30)
    removed = control.act_remote(ME, "remove", "spark-b", op_id)
    assert removed.name == "remote-counter"  # named from the node's last list: B has forgotten it
    wait_until(lambda: on_b(node_b, op_id) is None, timeout=15, message="B still lists it after Remove")
    assert [row["action"] for row in audit] == ["launch", "restart", "stop", "start", "stop", "remove"]
    assert all(row["outcome"] == "allowed" and row["via"] == "ui" for row in audit)
    assert B_TOKEN not in repr(audit)


def test_refusals_name_what_went_wrong(hub: NodeHub, node_b: Dashboard) -> None:
    audit = Audit()
    control = service(hub, audit)
    # Not logged in: refused here, before anything is sent.
    with pytest.raises(ControlError) as err:
        control.act_remote(Actor("127.0.0.1", "ui", False), "stop", "spark-b", "op-1-2")
    assert err.value.kind == "unauthorized" and audit[-1]["outcome"] == "refused"
    # No such node; no such operation on B (B's 404); B's check of a launch names the field.
    with pytest.raises(ControlError) as err:
        control.act_remote(ME, "stop", "nope", "op-1-2")
    assert err.value.kind == "not_found" and err.value.field == "node"
    with pytest.raises(ControlError) as err:
        control.act_remote(ME, "start", "spark-b", "op-1-2")
    assert err.value.kind == "not_found"
    with pytest.raises(ControlError) as err:
        control.launch_remote(ME, "spark-b", {"template": "custom", "command": []})
    assert err.value.kind == "invalid" and err.value.field == "command", err.value
    assert audit[-1]["action"] == "launch" and audit[-1]["outcome"] == "failed" and audit[-1]["status"] == 422
    with pytest.raises(ControlError) as err:
        control.launch_remote(ME, "spark-b", {"template": "custom", "shell": "rm -rf /"})
    assert err.value.field == "shell"
    with pytest.raises(ControlError) as err:
        control.act_remote(ME, "kill-all", "spark-b", "op-1-2")  # type: ignore[arg-type]
    assert err.value.kind == "invalid"


def test_a_wrong_token_and_a_dead_node(hub: NodeHub, node_b: Dashboard) -> None:
    control = service(hub, Audit())
    port = node_b.url.rsplit(":", 1)[1]
    wrong, _ = hub.add("B wrong token", f"http://localhost:{port}", "not-the-token-of-b-0123456789")
    dead, _ = hub.add("Gone", f"http://127.0.0.1:{free_port()}", B_TOKEN)
    try:
        with pytest.raises(ControlError) as err:
            control.act_remote(ME, "stop", wrong.id, "op-1-2")
        assert err.value.code == "node_unauthorized" and err.value.kind == "upstream"
        with pytest.raises(ControlError) as err:
            control.act_remote(ME, "stop", dead.id, "op-1-2")
        assert err.value.code == "node_unreachable" and "Gone" in err.value.message
    finally:
        hub.remove(wrong.id)
        hub.remove(dead.id)


def test_the_client_reads_a_log_and_follows_its_stream(hub: NodeHub, node_b: Dashboard) -> None:
    node = hub.node("spark-b")
    assert node is not None
    body = {"template": "custom", "name": "remote-log", "command": [sys.executable, "-u", "-c", COUNTER]}
    answer = node_client.call(node, "POST", node_client.OPERATIONS_PATH, body)
    assert answer.status == 201, answer
    op_id = answer.data["id"]
    try:
        def tail() -> node_client.NodeAnswer | None:
            found = node_client.call(node, "GET", node_client.operation_path(op_id, "/logs"), params={"tail": 50})
            assert found.ok, found
            # Lines the program wrote (the runner's first line names the command, "tick" included).
            return found if any(line.startswith("tick") for line in found.data["lines"]) else None

        first = wait_until(tail, timeout=20, message="B's log never had a line")
        offset = first.data["offset"]
        last = max(int(line.split()[-1]) for line in first.data["lines"] if line.startswith("tick"))

        async def follow() -> list[str]:
            seen: list[str] = []
            async for item in node_client.follow_log(node, op_id, offset):
                assert not isinstance(item, node_client.NodeAnswer), item
                seen += item[0]
                if any(line.startswith("tick") and int(line.split()[-1]) > last + 2 for line in seen):
                    return seen
            return seen

        lines = run_coroutine(follow())
        numbers = [int(line.split()[-1]) for line in lines if line.startswith("tick")]
        # New lines only, in order, from right after the tail.
        assert numbers and numbers[0] == last + 1 and numbers == sorted(numbers), lines

        async def refused() -> Any:
            async for item in node_client.follow_log(node, "op-1-2", 0):
                return item
            return None

        answer = run_coroutine(refused())
        assert isinstance(answer, node_client.NodeAnswer) and answer.status == 404
    finally:
        node_client.call(node, "POST", node_client.operation_path(op_id, "/stop"), {"signal": "kill"})


def test_sse_batches_keep_what_is_not_complete() -> None:
    text = ': following\n\ndata: {"lines": ["a", "b"], "offset": 4}\n\ndata: {"lines": ["c"]'
    batches, rest = node_client.sse_batches(text)
    assert batches == [(["a", "b"], 4)] and rest == 'data: {"lines": ["c"]'
    batches, rest = node_client.sse_batches(rest + ', "offset": 6}\r\n\r\ndata: nonsense\n\ndata: [1]\n\n')
    assert batches == [(["c"], 6)] and rest == ""


def test_connection_id_names_a_node(tmp_path: Path) -> None:
    hub = NodeHub(NodeStore(tmp_path), interval=1.0, backoff_limit=2.0)
    hub.store.add("Spark B", f"http://127.0.0.1:{free_port()}", B_TOKEN)
    hub.start()
    try:
        for connection in ("", "local", " local ", socket.gethostname(), socket.gethostname().upper()):
            assert connection_node(connection, hub) == "local", connection
        assert connection_node("all", hub) == "all"
        assert connection_node("spark-b", hub) == "spark-b"
        assert connection_node("Spark B", hub) == "spark-b"
        assert connection_node("SPARK b", hub) == "spark-b"
        for unknown in ("spark-01", "spark-c", "../etc", None, 3, ["spark-b"]):
            assert connection_node(unknown, hub) is None, unknown
    finally:
        hub.stop()


def test_the_bench_fake_node_is_a_node_the_poller_reads(tmp_path: Path) -> None:
    """``make bench``'s All-nodes row: its fake nodes answer the list as this app does."""
    from bench.nodes_bench import fake_nodes, table_row

    hub = NodeHub(NodeStore(tmp_path), interval=1.0, backoff_limit=2.0)
    hub.start()
    try:
        with fake_nodes(2, 100) as fakes:
            node, state = hub.add("Fake 0", fakes[0].url, B_TOKEN)
            assert state.status == "online" and len(state.operations) == 100, state
            op_id = fakes[0].rename(5, "renamed")
            hub.wake(node.id)
            wait_until(lambda: any(item["id"] == op_id and item["name"] == "renamed"
                                   for _, s in hub.states() for item in s.operations), timeout=10)
            assert fakes[0].requests >= 2 and fakes[1].requests == 0
    finally:
        hub.stop()
    row = table_row({"nodes": 8, "operations_per_node": 100, "refresh_seconds": 2.0,
                     "all_nodes_tab": {"cpu_ms_per_refresh": 12.5}, "p50_ms": 900.0, "p95_ms": 1900.0})
    assert row[0] == "All nodes with 8 nodes × 100 operations" and "12.5 ms" in row[1] and "p95 1900 ms" in row[1]


def _update_with(sock: ReflexSocket, needle: str) -> str:
    """Wait for a state update whose JSON holds ``needle``."""
    return wait_until(lambda: next((t for t in [json.dumps(sock.next_update(60))] if needle in t), None),
                      timeout=90, interval=0, message=f"no update with {needle!r}")


def test_an_embedding_apps_connection_id_picks_its_node(tmp_path: Path, node_b: Dashboard) -> None:
    """``operations_tab(connection_id=...)`` over a real websocket: unknown, then added, then back to local.

    The same socket (not logged in) cannot read that node's logs.
    """
    from dgx_spark.state.control import ControlState
    from dgx_spark.state.nodes import NodesState

    connect = f"{NodesState.get_full_name()}.connect"
    with Dashboard(tmp_path / "a-data", env=UNTHROTTLED) as a, ReflexSocket(a.port) as sock:
        sock.emit(connect, {"connection_id": "Spark C"})
        _update_with(sock, '"connection_missing_rx_state_": "Spark C"')  # "Not connected": no such node yet
        status, added = a.authed("POST", "/api/dgx/nodes", {"name": "Spark C", "url": node_b.url, "token": B_TOKEN})
        assert status == 201, added
        # Checked again as nodes come and go (the tab's live loop): now it shows that node.
        _update_with(sock, '"node_rx_state_": "spark-c"')
        # A remote log is read with the node's token: not without the login here.
        sock.emit(f"{ControlState.get_full_name()}.open_logs", {"op_id": "op-1-2", "name": "x", "node": "spark-c"})
        _update_with(sock, "Log in to see the logs of another node")
        sock.emit(connect, {"connection_id": "local"})
        _update_with(sock, '"node_rx_state_": "local"')


def test_tabs_on_all_nodes_add_no_request_to_the_node(tmp_path: Path) -> None:
    """A node is asked by this backend's one poller, once per refresh, however many tabs show All nodes.

    Three tabs (websockets) show All nodes with the node's cards; the node records when it is asked.
    Tabs asking it too would put requests between the polls: every gap stays at least half the
    refresh (a slow machine only makes the gaps longer).
    """
    from bench.nodes_bench import FakeNode
    from dgx_spark.state.operations import OperationsState

    class TimedNode(FakeNode):
        """The fake node, noting when each request came."""

        def __init__(self) -> None:
            super().__init__(0, 5)
            self.times: list[float] = []

        def answer(self) -> bytes:
            self.times.append(time.monotonic())
            return super().answer()

    fake = TimedNode().start()
    operations = OperationsState.get_full_name()
    try:
        with Dashboard(tmp_path / "a-data", env={**UNTHROTTLED, "DGX_SPARK_REFRESH_SECONDS": "1"}) as a:
            status, added = a.authed("POST", "/api/dgx/nodes", {"name": "Fake", "url": fake.url, "token": B_TOKEN})
            assert status == 201 and added["data"]["status"] == "online", added
            with ReflexSocket(a.port) as one, ReflexSocket(a.port) as two, ReflexSocket(a.port) as three:
                for sock in (one, two, three):
                    sock.emit(f"{operations}.choose_node", {"value": "all"})
                    sock.emit(f"{operations}.start_live", {})
                for sock in (one, two, three):
                    _update_with(sock, "bench-node0-op004")  # this tab shows the node's cards
                first = len(fake.times)
                wait_until(lambda: len(fake.times) >= first + 6, timeout=60, message="the node is not polled")
                times = fake.times[first - 1:]
    finally:
        fake.stop()
    gaps = [round(later - earlier, 3) for earlier, later in itertools.pairwise(times)]
    assert len(gaps) >= 6 and min(gaps) >= 0.5, gaps
