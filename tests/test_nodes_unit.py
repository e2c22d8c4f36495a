"""The nodes store (a real 0600 file), the list checks of the poller, and remote cards."""

from __future__ import annotations

import json
import os
import socket
import stat
from pathlib import Path

import httpx
import pytest

from dgx_spark.nodes.poller import (
    IncompatibleAnswer,
    NodePoller,
    NodeState,
    classify,
    parse_list,
    poll_timeout,
)
from dgx_spark.nodes.protocol import NODE_API, NODE_API_HEADER
from dgx_spark.nodes.store import Node, NodeError, NodeStore, clean_url
from dgx_spark.state.node_view import operation_from_api
from dgx_spark.state.view import operation_view

TOKEN = "a-token-of-node-b-0123456789"


def test_store_keeps_tokens_0600_and_ids_unique(tmp_path: Path) -> None:
    store = NodeStore(tmp_path)
    first = store.add("Spark B", "http://spark-b:3000/", TOKEN)
    second = store.add("spark b!", "http://10.0.0.2:3000", TOKEN)
    local = store.add("local", "http://10.0.0.3:3000", TOKEN)
    assert (first.id, second.id, local.id) == ("spark-b", "spark-b-2", "local-2")
    assert first.url == "http://spark-b:3000"
    assert "token" not in first.public() and TOKEN not in repr(first)
    path = tmp_path / "nodes.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [n.id for n in NodeStore(tmp_path).load()] == ["spark-b", "spark-b-2", "local-2"]
    with pytest.raises(NodeError) as dup:
        store.add("other", "http://spark-b:3000", TOKEN)
    assert dup.value.status == 409 and dup.value.field == "url"
    assert store.remove("spark-b") is not None and store.remove("spark-b") is None
    assert [n.id for n in NodeStore(tmp_path).load()] == ["spark-b-2", "local-2"]


def test_store_tightens_a_loose_file_and_sets_a_broken_one_aside(tmp_path: Path) -> None:
    store = NodeStore(tmp_path)
    store.add("b", "http://b:3000", TOKEN)
    path = tmp_path / "nodes.json"
    os.chmod(path, 0o644)
    assert [n.id for n in NodeStore(tmp_path).load()] == ["b"]
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    path.write_text("{not json")
    assert NodeStore(tmp_path).load() == []
    assert not path.exists() and list(tmp_path.glob("nodes.json.broken-*"))


@pytest.mark.parametrize("url", ["ftp://x", "http://", "http://u:p@h:1", "http://h:1/?q=1", "http://h:99999",
                                 "http://h h", "javascript:alert(1)", "http://h#x"])
def test_bad_urls(url: str) -> None:
    with pytest.raises(NodeError) as err:
        clean_url(url)
    assert err.value.field == "url"


def test_parse_list_accepts_ours_and_refuses_others() -> None:
    body = json.dumps({"success": True, "data": [
        {"id": "op-1-1", "type": "job", "name": "train", "status": "running", "cpu_percent": "lots",
         "memory_bytes": 10, "secret_extra": "x", "progress": 0.5},
    ]}).encode()
    (item,) = parse_list(body)
    assert item["cpu_percent"] is None and item["memory_bytes"] == 10 and "secret_extra" not in item
    for bad in (b"<html>", b'{"items": []}', b'{"success": true, "data": [{"id": "x"}]}',
                b'{"success": true, "data": [{"id": "x", "type": "daemon", "name": "n", "status": "running"}]}'):
        with pytest.raises(IncompatibleAnswer):
            parse_list(bad)


def test_parse_list_replaces_text_that_is_not_utf8() -> None:
    """A node's lone surrogates (JSON escapes such as \\ud800) never reach the list: one odd item cannot break it."""
    body = json.dumps({"success": True, "data": [
        {"id": "op-1-1", "type": "job", "name": "tr\ud800ain", "status": "running", "command": "run \udfff",
         "metrics": {"lo\udbffss": 1.0}},
        {"id": "op-2-2", "type": "server", "name": "web", "status": "running"},
    ]}).encode()
    first, second = parse_list(body)
    assert first["name"] == "tr\ufffdain" and first["command"] == "run \ufffd"
    assert first["metrics"] == {"lo\ufffdss": 1.0} and second["name"] == "web"
    json.dumps([first, second], ensure_ascii=False).encode("utf-8")  # the list encodes


def test_timeout_is_shorter_than_the_refresh_and_stale_rules() -> None:
    for refresh in (0.2, 1.0, 2.0, 60.0):
        assert poll_timeout(refresh) < refresh
    assert NodeState(status="online", last_seen=100.0).stale(101.0, 1.0) is False
    assert NodeState(status="offline", last_seen=100.0).stale(101.0, 1.0) is True
    assert NodeState(status="online", last_seen=100.0).stale(200.0, 1.0) is True
    assert NodeState().stale(0.0, 1.0) is False  # connecting: nothing shown yet


def test_remote_item_becomes_a_card() -> None:
    item = {"id": "op-9-9", "type": "server", "name": "vllm", "status": "running", "port": 8000,
            "ports": [8000], "pid": 9, "process_count": 3, "started_at": "2024-01-01T00:00:00Z",
            "cpu_percent": 12.5, "memory_bytes": 1024, "source": "launched", "metrics": {"epoch": 1}}
    op = operation_from_api(item)
    assert op.process_count == 3 and op.started_at_ts == 1704067200.0
    view = operation_view(op, 1704067260.0, "spark-b")
    assert view.url == "http://spark-b:8000" and view.cpu_text and view.source == "launched"


def test_a_node_that_does_not_answer_is_polled_ever_less_often_and_keeps_its_list() -> None:
    """A real refused connection: offline, the last list kept (stale, with its age), 2×, 4×… the refresh."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound, never listening: every connect is refused
        poller = NodePoller(Node("b", "B", f"http://127.0.0.1:{port}", TOKEN), interval=1.0, backoff_limit=5.0)
        listed = ({"id": "op-1-1", "type": "job", "name": "train", "status": "running"},)
        poller.state = NodeState(status="online", last_seen=100.0, operations=listed, body=b"x")
        assert poller.next_delay(poller.state, 0.25) == 0.75  # online: the rest of the refresh
        delays = []
        for failures in (1, 2, 3, 4):
            state = poller.poll_once()
            assert state.status == "offline" and state.failures == failures and "unreachable" in (state.error or "")
            assert state.operations == listed and state.last_seen == 100.0
            delays.append(poller.next_delay(state, 0.0))
        assert delays == [2.0, 4.0, 5.0, 5.0]  # backs off, up to the limit
        assert state.stale(state.checked_at or 0.0, 1.0) is True and (state.age(160.0) or 0.0) == 60.0


def test_a_node_that_hangs_is_offline_within_the_poll_timeout() -> None:
    """A real socket that takes the connection and never answers: the poll gives up at its timeout."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)  # the kernel completes the connection; nobody ever reads or answers
        poller = NodePoller(Node("b", "B", f"http://127.0.0.1:{sock.getsockname()[1]}", TOKEN), interval=0.4)
        assert poller.timeout == 0.3
        state = poller.poll_once()
    assert state.status == "offline" and state.error == "no answer within 0.3 s", state


def _answer(status: int, headers: dict[str, str], body: bytes) -> tuple[str, str | None, tuple[dict, ...]]:
    return classify(httpx.Response(status, headers=headers, content=body), body)


def test_answers_are_told_apart_online_unauthorized_offline_incompatible() -> None:
    ours = {NODE_API_HEADER: NODE_API, "content-type": "application/json"}
    listed = json.dumps({"success": True, "data": [{"id": "op-1-1", "type": "job", "name": "t",
                                                     "status": "running"}]}).encode()
    assert _answer(200, ours, listed)[0] == "online" and len(_answer(200, ours, listed)[2]) == 1
    for code in (401, 403):
        assert _answer(code, ours, b'{"success": false}')[0] == "unauthorized"
    for code in (500, 502, 503, 429):
        assert _answer(code, ours, b"")[0] == "offline"
    old = {**ours, NODE_API_HEADER: "0"}  # an older protocol
    status, error, _ = _answer(200, old, listed)
    assert status == "incompatible" and "'0'" in (error or "")
    assert _answer(200, {"content-type": "application/json"}, listed)[0] == "incompatible"  # no header: not ours
    assert _answer(404, ours, b"{}")[0] == "incompatible"
    assert _answer(200, ours, b'{"items": []}')[0] == "incompatible"


def test_the_list_a_node_is_asked_for_is_encoded_once_per_snapshot() -> None:
    """``GET /api/dgx/operations`` serves the bytes built for this snapshot and query (a poll costs no encoding)."""
    from dgx_spark.api.operations import _ListCache

    cache = _ListCache()
    key = (None, None, None, None, None, None, None)
    assert cache.get(key, 7) is None
    body = b'{"success": true, "data": []}'
    cache.put(key, 7, body)
    assert cache.get(key, 7) is body  # the same bytes object, not built again
    assert cache.get((*key[:5], "all", "3"), 7) is None  # another query has its own body
    assert cache.get(key, 8) is None  # a new snapshot: built again
    cache.put(key, 7, body)  # a body of an older snapshot is not kept
    assert cache.get(key, 8) is None
    for n in range(_ListCache.MAX_QUERIES + 5):
        cache.put((str(n), *key[1:]), 8, body)
    assert cache.get((str(_ListCache.MAX_QUERIES + 1), *key[1:]), 8) is None  # bounded


def test_requests_that_ask_at_once_wait_for_one_build() -> None:
    """When a new snapshot arrives, 50 requests for the same list cost one encoding, not 50."""
    import asyncio
    import threading

    from dgx_spark.api.operations import _ListCache
    from tests.support.aio import run_coroutine

    cache = _ListCache()
    key = (None, None, None, None, None, None, None)
    builds: list[int] = []
    release = threading.Event()

    def build() -> bytes:
        builds.append(1)
        release.wait(5)
        return b'{"success":true,"data":[]}'

    def failing() -> bytes:
        raise ValueError("cannot encode")

    async def main() -> None:
        waiting = [asyncio.ensure_future(cache.body(key, 1, build)) for _ in range(50)]
        await asyncio.sleep(0.2)
        waiting[0].cancel()  # a client that goes away does not cancel the build for the others
        release.set()
        bodies = await asyncio.gather(*waiting[1:])
        assert {id(body) for body in bodies} == {id(bodies[0])}
        assert await cache.body(key, 1, build) is bodies[0]  # then served from memory
        with pytest.raises(ValueError):
            await cache.body(key, 2, failing)
        assert await cache.body(key, 2, build) == bodies[0]  # a failed build is tried again

    run_coroutine(main())  # its own thread: a browser test's loop may run in this one
    assert len(builds) == 2  # one per snapshot that succeeded


def test_every_operation_route_has_its_node_route() -> None:
    """Each ``/api/dgx/operations…`` route and method is served as ``/api/dgx/nodes/{node}/operations…`` too."""
    from dgx_spark.api.app import create_api

    paths = create_api().openapi()["paths"]
    ours = {(path, method) for path, item in paths.items() if path.startswith("/api/dgx/operations")
            for method in item}
    forwarded = {(path.replace("/api/dgx/nodes/{node}", "/api/dgx", 1), method) for path, item in paths.items()
                 if path.startswith("/api/dgx/nodes/{node}/operations") for method in item}
    assert len(ours) == 11 and ours == forwarded, sorted(ours ^ forwarded)


def test_while_a_new_list_is_built_the_others_get_the_previous_snapshots_at_once() -> None:
    """The first request for a new snapshot's list waits for its build; those behind it do not."""
    import asyncio
    import threading

    from dgx_spark.api.operations import _ListCache
    from tests.support.aio import run_coroutine

    cache: _ListCache[bytes] = _ListCache()
    key = (None, None, None, None, None, None, None)
    release = threading.Event()

    def build(body: bytes) -> bytes:
        release.wait(5)
        return body

    async def main() -> None:
        release.set()
        assert await cache.body(key, 1, lambda: build(b"one")) == b"one"
        release.clear()
        first = asyncio.ensure_future(cache.body(key, 2, lambda: build(b"two")))
        await asyncio.sleep(0.1)
        assert not first.done()  # the first asker waits for the new body
        # The others, meanwhile: the previous snapshot's body, without waiting.
        assert await asyncio.wait_for(cache.body(key, 2, lambda: build(b"other")), 1) == b"one"
        release.set()
        assert await first == b"two"
        assert await cache.body(key, 2, lambda: build(b"other")) == b"two"
        # Two snapshots on: nothing that old is served; everyone waits for the build.
        release.clear()
        waiting = [asyncio.ensure_future(cache.body(key, 4, lambda: build(b"four"))) for _ in range(3)]
        await asyncio.sleep(0.1)
        assert not any(task.done() for task in waiting)
        release.set()
        assert await asyncio.gather(*waiting) == [b"four"] * 3

    run_coroutine(main())
