"""The nodes of this backend: the store, one poller per remote node, and what they know.

One ``NodeHub`` per backend process (``dgx_spark.services``), started and stopped with the
sampler in the lifespan. Every browser tab and API request reads the pollers'
latest states from here: a remote node costs one request per refresh, however
many tabs are open. ``version`` grows whenever any node's list or status changes,
so merged views are rebuilt once per change, not once per tab or request.
"""

from __future__ import annotations

import itertools
import logging
import socket
import threading
from collections.abc import Mapping, Sequence
from typing import Any

from dgx_spark.collector.sampler import Sampler
from dgx_spark.nodes.poller import NodePoller, NodeState, poll_timeout
from dgx_spark.nodes.protocol import LOCAL_NODE, app_version
from dgx_spark.nodes.store import Node, NodeError, NodeStore
from dgx_spark.settings import settings

logger = logging.getLogger(__name__)


class NodeHub:
    """Remote nodes and their pollers (thread-safe)."""

    def __init__(self, store: NodeStore, interval: float, *, backoff_limit: float | None = None) -> None:
        """Use ``store``; pollers poll every ``interval`` seconds once started.

        ``backoff_limit`` is the longest wait between polls of a node that is down
        (``Settings.nodes.backoff_max_seconds``; default: the poller's).
        """
        self.store = store
        self.interval = interval
        self.backoff_limit = backoff_limit
        self._lock = threading.Lock()
        self._pollers: dict[str, NodePoller] = {}
        self._versions = itertools.count(1)
        self.version = 0
        self.started = False

    def _changed(self) -> None:
        self.version = next(self._versions)

    def _poller(self, node: Node) -> NodePoller:
        return NodePoller(node, interval=self.interval, on_change=self._changed, backoff_limit=self.backoff_limit)

    def start(self) -> None:
        """Load the stored nodes and start their pollers."""
        with self._lock:
            self.started = True
            for node in self.store.load():
                if node.id not in self._pollers:
                    poller = self._poller(node)
                    self._pollers[node.id] = poller
                    poller.start()
            count = len(self._pollers)
        if count:
            logger.info("nodes: polling %d remote node(s) every %.1fs", count, self.interval)
        self._changed()

    def stop(self) -> None:
        """Stop every poller."""
        with self._lock:
            pollers = list(self._pollers.values())
            self._pollers.clear()
            self.started = False
        for poller in pollers:
            poller.stop()

    def add(self, name: Any, url: Any, token: Any) -> tuple[Node, NodeState]:
        """Store a node, start its poller and wait (shortly) for its first answer.

        Raises:
            NodeError: Bad input or a duplicate (see ``NodeStore.add``).
        """
        node = self.store.add(name, url, token)
        poller = self._poller(node)
        with self._lock:
            self._pollers[node.id] = poller
        poller.start()
        self._changed()
        state = poller.wait_first(poller.timeout + 1.0)
        return node, state

    def remove(self, node_id: str) -> Node:
        """Forget a node and stop its poller.

        Raises:
            NodeError: 404 when there is no such node, 422 for ``local``.
        """
        if node_id == LOCAL_NODE:
            raise NodeError("id", "local is this machine; it cannot be removed", 422)
        node = self.store.remove(node_id)
        if node is None:
            raise NodeError("id", f"no node with id {node_id[:40]!r}", 404, "not_found")
        with self._lock:
            poller = self._pollers.pop(node_id, None)
        if poller is not None:
            poller.stop(wait=0.0)
        self._changed()
        return node

    def node(self, node_id: str) -> Node | None:
        """The remote node with this id (token included: backend use only)."""
        return self.store.get(node_id)

    def poller(self, node_id: str) -> NodePoller | None:
        """The poller of a remote node."""
        with self._lock:
            return self._pollers.get(node_id)

    def states(self) -> list[tuple[Node, NodeState]]:
        """Every remote node with its latest state, in the order they were added."""
        with self._lock:
            pollers = list(self._pollers.values())
        return [(poller.node, poller.state) for poller in pollers]

    def wake(self, node_id: str) -> None:
        """Have a node's poller poll now (after a control action forwarded to it)."""
        poller = self.poller(node_id)
        if poller is not None:
            poller.wake()

    def ids(self) -> list[str]:
        """``local`` and every remote node's id."""
        return [LOCAL_NODE] + [node.id for node, _ in self.states()]


def node_payload(node: Node, state: NodeState, now: float, interval: float) -> dict[str, Any]:
    """A remote node as the API shows it (never its token)."""
    age = state.age(now)
    return {
        **node.public(),
        "local": False,
        "status": state.status,
        "stale": state.stale(now, interval),
        "latency_ms": state.latency_ms,
        "version": state.version,
        "last_seen": state.last_seen,
        "age_seconds": None if age is None else round(age, 1),
        "checked_at": state.checked_at,
        "error": state.error,
        "operation_count": len(state.operations),
        "poll_timeout_seconds": poll_timeout(interval),
    }


def local_payload(snapshot: Any, sampler_running: bool, now: float) -> dict[str, Any]:
    """This machine as a node (``local``)."""
    taken = snapshot.taken_at if snapshot.sequence else None
    return {
        "id": LOCAL_NODE,
        "name": socket.gethostname(),
        "url": settings.base_url,
        "added_at": None,
        "local": True,
        "status": "online" if sampler_running else "offline",
        "stale": False,
        "latency_ms": 0.0,
        "version": app_version(),
        "last_seen": taken,
        "age_seconds": None if taken is None else round(max(0.0, now - taken), 1),
        "checked_at": taken,
        "error": None if sampler_running else "the sampler is not running",
        "operation_count": len(snapshot.operations),
        "poll_timeout_seconds": None,
    }


def nodes_payload(hub: NodeHub, sampler: Sampler, now: float) -> list[dict[str, Any]]:
    """``local`` first, then every remote node with its health (``GET /api/dgx/nodes`` and the Nodes dialog)."""
    return [local_payload(sampler.latest, sampler.running, now)] + [
        node_payload(node, state, now, hub.interval) for node, state in hub.states()
    ]


def tagged(items: Sequence[Mapping[str, Any]], node_id: str, stale: bool) -> list[dict[str, Any]]:
    """Operation dicts with their ``node`` and ``stale`` fields."""
    return [{**item, "node": node_id, "stale": stale} for item in items]


def remote_items(hub: NodeHub, node_id: str | None, now: float) -> list[dict[str, Any]] | None:
    """The last known operations of one remote node (or all of them when ``node_id`` is None), tagged.

    Returns:
        None when ``node_id`` names no remote node.
    """
    out: list[dict[str, Any]] = []
    found = node_id is None
    for node, state in hub.states():
        if node_id is not None and node.id != node_id:
            continue
        found = True
        out.extend(tagged(list(state.operations), node.id, state.stale(now, hub.interval)))
    return out if found else None

