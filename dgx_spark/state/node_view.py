"""What the Operations tab shows for a node selection: this machine, one node, or All nodes.

Plain Python (no Reflex). ``tab_view_for(snapshot, host, query, node)`` is
``state.tab_view.tab_view`` for ``local``; for another node or ``all`` it merges
the pollers' last lists (``NodeHub``) with this machine's cards. Like
``tab_view``, a result is computed once per (local snapshot, nodes' version) and
(host, filters, node), whatever the number of tabs, and keeps its ``version``
while its content stays the same, so a quiet tick costs a tab nothing.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import itertools
import json
import socket
import threading
import time
import urllib.parse
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

from dgx_spark.collector.model import Operation, Snapshot
from dgx_spark.collector.query import OperationQuery, apply_query
from dgx_spark.format import iso_utc
from dgx_spark.nodes.hub import NodeHub
from dgx_spark.nodes.protocol import ALL_NODES, LOCAL_NODE
from dgx_spark.services import get_hub
from dgx_spark.state.tab_view import TabView, base_view, tab_view
from dgx_spark.state.view import (
    SECTION_OF_TYPE,
    SECTIONS,
    OperationView,
    display_order,
    operation_view,
    query_row,
)

MAX_VIEWS = 128
_versions = itertools.count(10**9)  # apart from tab_view's versions
_lock = threading.Lock()
# node id -> (list body, stale, url) and its cards and query rows.
_remote: dict[str, tuple[tuple[bytes, bool, str], tuple[tuple[OperationView, dict[str, Any]], ...]]] = {}
# (host, query, node) -> (local sequence, hub version, result)
_results: OrderedDict[tuple[str, OperationQuery, str], tuple[int, int, TabView]] = OrderedDict()


def _timestamp(value: Any) -> float | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        return dt.datetime.fromisoformat(value).timestamp()
    except ValueError:
        return None


def _ints(value: Any) -> tuple[int, ...]:
    if not isinstance(value, list):
        return ()
    return tuple(v for v in value if isinstance(v, int) and not isinstance(v, bool))


def operation_from_api(item: Mapping[str, Any]) -> Operation:
    """An ``Operation`` from another node's API dict (checked by the poller), for the cards."""
    count = item.get("process_count")
    pid = item.get("pid")
    history = item.get("loss_history")
    metrics = item.get("metrics")
    return Operation(
        id=str(item["id"]),
        type=item["type"],
        name=str(item["name"]),
        status=item["status"],
        description=item.get("description"),
        started_at_ts=_timestamp(item.get("started_at")),
        ended_at_ts=_timestamp(item.get("ended_at")),
        port=item.get("port") if isinstance(item.get("port"), int) else None,
        ports=_ints(item.get("ports")),
        pid=pid if isinstance(pid, int) else None,
        # Only the count of a remote operation's processes is known: it is what the card shows.
        pids=(pid if isinstance(pid, int) else 0,) * (count if isinstance(count, int) and 0 <= count <= 100_000 else 0),
        command=item.get("command"),
        user=item.get("user"),
        source="launched" if item.get("source") == "launched" else "discovered",
        exit_code=item.get("exit_code"),
        progress=item.get("progress"),
        metrics=metrics if isinstance(metrics, dict) else None,
        total_epochs=item.get("total_epochs"),
        eta_seconds=item.get("eta_seconds"),
        throughput=item.get("throughput"),
        stalled=item.get("stalled") if isinstance(item.get("stalled"), bool) else None,
        progress_source=item.get("progress_source"),
        loss_history=tuple(v for v in history if isinstance(v, int | float)) if isinstance(history, list) else None,
        cpu_percent=item.get("cpu_percent"),
        memory_bytes=item.get("memory_bytes"),
        gpu_memory_bytes=item.get("gpu_memory_bytes"),
        gpu_utilization=item.get("gpu_utilization"),
        idle_gpu=item.get("idle_gpu") if isinstance(item.get("idle_gpu"), bool) else None,
        run=_whole(item.get("run"), 1),
        runs=_whole(item.get("runs"), 1),
        restarts=_whole(item.get("restarts"), 0),
        outcome=item.get("outcome"),
        exit_reason=item.get("exit_reason"),
        outcome_source=item.get("outcome_source"),
    )


def _whole(value: Any, default: int) -> int:
    """An integer from a remote node's JSON, else ``default`` (a bool is not a count)."""
    return value if isinstance(value, int) and not isinstance(value, bool) else default

def _remote_cards(hub: NodeHub, node_id: str | None, now: float) -> list[tuple[OperationView, dict[str, Any]]]:
    """(card, query row) of the remote nodes' operations (one node, or all when ``node_id`` is None)."""
    out: list[tuple[OperationView, dict[str, Any]]] = []
    for node, state in hub.states():
        if node_id is not None and node.id != node_id:
            continue
        stale = state.stale(now, hub.interval)
        key = (state.body, stale, node.url)
        with _lock:
            cached = _remote.get(node.id)
        if cached is None or cached[0] != key:
            # "Open" links of a remote server point at that machine, not at this one.
            host = urllib.parse.urlsplit(node.url).hostname or "127.0.0.1"
            seen = state.last_seen or now
            cards = []
            for item in state.operations:
                try:
                    op = operation_from_api(item)
                    view = dataclasses.replace(operation_view(op, seen, host), node=node.id, node_name=node.name,
                                               remote=True, node_stale=stale)
                except (KeyError, TypeError, ValueError):
                    continue  # one odd item never hides the node's others
                cards.append((view, query_row(op, view)))
            cached = (key, tuple(cards))
            with _lock:
                _remote[node.id] = cached
        out.extend(cached[1])
    return out


def _split(visible: list[OperationView], *, live: bool, newest_first: bool) -> tuple[tuple[OperationView, ...], ...]:
    parts = [[v for v in visible if v.live is live and SECTION_OF_TYPE.get(v.type) == s] for s in SECTIONS]
    if newest_first:
        for part in parts:
            part.sort(key=lambda view: view.ended_at, reverse=True)
    return tuple(tuple(part) for part in parts)


def _merged(snapshot: Snapshot, host: str, query: OperationQuery, node: str, now: float) -> TabView:
    hub = get_hub()
    pairs: list[tuple[OperationView, dict[str, Any]]] = []
    if node == ALL_NODES:
        base = base_view(snapshot, host)
        name = socket.gethostname()
        pairs += [(dataclasses.replace(view, node=LOCAL_NODE, node_name=name), row)
                  for view, row in zip(base.views, base.rows, strict=True)]
    pairs += _remote_cards(hub, None if node == ALL_NODES else node, now)
    pairs.sort(key=lambda pair: (display_order(pair[0]), pair[0].node))
    views = [view for view, _ in pairs]
    if query.is_filtering or query.sort:
        visible = [view for view, _ in apply_query(pairs, query, record=lambda pair: pair[1])]
    else:
        visible = views
    counts = [0, 0, 0]
    for view in views:
        section = SECTION_OF_TYPE.get(view.type)
        if section is not None and view.live:
            counts[SECTIONS.index(section)] += 1
    return TabView(
        sequence=snapshot.sequence,
        version=0,
        base_version=0,
        sections=tuple(tuple(v for v in visible if SECTION_OF_TYPE.get(v.type) == s) for s in SECTIONS),
        live=_split(visible, live=True, newest_first=False),
        ended=_split(visible, live=False, newest_first=not query.sort),
        counts=(counts[0], counts[1], counts[2]),
        ended_count=sum(1 for view in views if not view.live),
        running_count=sum(1 for view in views if view.live),
        total=len(views),
        visible_count=len(visible),
        changed_at=iso_utc(now) or "",
    )


def _same(a: TabView, b: TabView) -> bool:
    return (a.sections, a.counts, a.ended_count, a.running_count, a.total) == (
        b.sections, b.counts, b.ended_count, b.running_count, b.total)


def tab_view_for(snapshot: Snapshot, host: str, query: OperationQuery, node: str = LOCAL_NODE) -> TabView:
    """What a tab shows for ``node`` (``local``, a node's id, or ``all``); see the module docstring."""
    if node == LOCAL_NODE or not node:
        return tab_view(snapshot, host, query)
    hub = get_hub()
    if node != ALL_NODES and hub.node(node) is None:
        return tab_view(snapshot, host, query)  # a node removed meanwhile: this machine
    key = (host, query, node)
    version = hub.version
    with _lock:
        known = _results.get(key)
    if known is not None and known[0] == snapshot.sequence and known[1] == version:
        return known[2]
    result = _merged(snapshot, host, query, node, time.time())
    previous = known[2] if known is not None else None
    if previous is not None and _same(previous, result):
        result = dataclasses.replace(previous, sequence=snapshot.sequence)
    else:
        result = dataclasses.replace(result, version=next(_versions))
    with _lock:
        _results[key] = (snapshot.sequence, version, result)
        _results.move_to_end(key)
        while len(_results) > MAX_VIEWS:
            _results.popitem(last=False)
    return result


def node_choice(value: Any) -> str:
    """A valid node selection (``local``, ``all`` or a known node's id); ``local`` for anything else."""
    if value == ALL_NODES or (isinstance(value, str) and value != LOCAL_NODE and get_hub().node(value) is not None):
        return value
    return LOCAL_NODE


def node_url_script(node: str) -> str:
    """JS that keeps the node selection in the page URL (``?node=``; none for this machine)."""
    return (
        "(() => { const u = new URL(window.location.href); "
        f"const n = {json.dumps(node)}; "
        f"if (n === {json.dumps(LOCAL_NODE)}) u.searchParams.delete('node'); else u.searchParams.set('node', n); "
        "if (u.href !== window.location.href) window.history.replaceState(window.history.state, '', u.href); })()"
    )


def connection_node(connection_id: Any, hub: NodeHub | None = None) -> str | None:
    """The node an embedding app's connection (``operations_tab``'s ``connection_id``) names.

    - ``""``, ``local``, or this machine's host name: ``local`` (this machine);
    - ``all``: ``all`` (every node);
    - a remote node's id, or its name (letter case aside): that node's id;
    - anything else: None (no such node: the tab says "not connected").

    ``hub``: the node hub to look in (the backend's by default).
    """
    if not isinstance(connection_id, str):
        return None
    wanted = connection_id.strip()
    if wanted in ("", LOCAL_NODE) or wanted.casefold() == socket.gethostname().casefold():
        return LOCAL_NODE
    if wanted == ALL_NODES:
        return ALL_NODES
    hub = hub or get_hub()
    if hub.node(wanted) is not None:
        return wanted
    for node, _ in hub.states():
        if node.name.casefold() == wanted.casefold():
            return node.id
    return None
