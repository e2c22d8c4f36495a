"""The Nodes dialog's and the node switcher's state: each node's health, add, remove, remote stop.

The rows come from the backend's ``NodeHub`` (its pollers), refreshed by the tab's
one live loop (the ``"nodes"`` feed) only when a node's status or list changed.
A node's token goes from the dialog's form to the backend once and is never put
in a state var, so it is never sent back to a browser.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
import urllib.parse
from typing import Any

import httpx
import reflex as rx

from dgx_spark.nodes.poller import USER_AGENT
from dgx_spark.nodes.protocol import LOCAL_NODE
from dgx_spark.nodes.store import NodeError
from dgx_spark.security.audit import record_audit_soon
from dgx_spark.security.auth import authorize_event, event_client
from dgx_spark.services import get_hub
from dgx_spark.state import loops
from dgx_spark.state.operations import OperationsState, register_feed, run_tab_loop

FEED = "nodes"
STOP_TIMEOUT_SECONDS = 30.0


@dataclasses.dataclass(frozen=True)
class NodeRow:
    """One node as the dialog and the switcher show it (never its token)."""

    id: str
    name: str
    url: str
    local: bool
    status: str
    stale: bool
    latency_text: str = ""
    version: str = ""
    seen_text: str = ""
    error: str = ""
    operation_count: int = 0


def _ago(seconds: float | None) -> str:
    if seconds is None:
        return "never"
    if seconds < 5:
        return "just now"
    if seconds < 120:
        return f"{int(seconds // 5) * 5} s ago"
    if seconds < 7200:
        return f"{int(seconds // 60)} min ago"
    return f"{int(seconds // 3600)} h ago"


def node_rows(now: float) -> tuple[NodeRow, ...]:
    """Every node's row (``local`` first)."""
    from dgx_spark.api.nodes import nodes_payload

    rows = []
    for item in nodes_payload(now):
        latency = item.get("latency_ms")
        rows.append(NodeRow(
            id=item["id"],
            name=item["name"],
            url=item["url"],
            local=bool(item["local"]),
            status=item["status"],
            stale=bool(item["stale"]),
            latency_text="" if latency is None or item["local"] else f"{latency:.0f} ms",
            version=item.get("version") or "",
            seen_text="" if item["local"] else _ago(item.get("age_seconds")),
            error=item.get("error") or "",
            operation_count=int(item.get("operation_count") or 0),
        ))
    return tuple(rows)


class NodesState(rx.State):
    """Each node's health, and the Nodes dialog."""

    nodes: list[NodeRow] = []  # noqa: RUF012 - a Reflex state var
    dialog_open: bool = False
    form_error: str = ""
    adding: bool = False

    @rx.var
    def remote_nodes(self) -> list[NodeRow]:
        """The remote nodes (not this machine)."""
        return [row for row in self.nodes if not row.local]

    @rx.var
    def stale_nodes(self) -> list[NodeRow]:
        """Remote nodes whose cards show an old list (they did not answer lately)."""
        return [row for row in self.nodes if row.stale and not row.local]

    def _refresh(self, now: float) -> None:
        rows = list(node_rows(now))
        if rows != self.nodes:
            self.nodes = rows
        loops.mark_shown(self._token(), FEED, _fingerprint_of(now))

    def _token(self) -> str:
        try:
            return self.router.session.client_token or ""
        except Exception:  # noqa: BLE001 - no router outside an event
            return ""

    @rx.event
    def set_dialog_open(self, open_: bool) -> None:
        """Open or close the Nodes dialog."""
        self.dialog_open = bool(open_)
        self.form_error = ""
        if self.dialog_open:
            self._refresh(time.time())

    @rx.event(background=True)
    async def add_node(self, form: dict[str, Any]) -> Any:
        """Add a node from the dialog's form (``name``, ``url``, ``token``); login needed."""
        async with self:
            refused = authorize_event(self, "node_add", None)
            if refused:
                self.form_error = refused
                return None
            self.adding = True
            self.form_error = ""
            client = event_client(self)
        data = form if isinstance(form, dict) else {}
        try:
            node, state = await asyncio.to_thread(
                get_hub().add, data.get("name"), data.get("url"), data.get("token")
            )
        except (NodeError, OSError) as exc:
            message = exc.message if isinstance(exc, NodeError) else f"the nodes file cannot be written ({exc})"
            record_audit_soon("node_add", "failed", target=None, client=client, status=getattr(exc, "status", 503),
                              via="ui", detail=message)
            async with self:
                self.adding = False
                self.form_error = message
            return None
        record_audit_soon("node_add", "allowed", target=f"node:{node.id}", client=client, status=201, via="ui")
        async with self:
            self.adding = False
            self._refresh(time.time())
        return rx.toast.success(f"Added node {node.name}: {state.status}")

    @rx.event
    async def remove_node(self, node_id: str) -> Any:
        """Forget a node (login needed); a tab showing it goes back to this machine."""
        target = f"node:{str(node_id)[:40]}"
        refused = authorize_event(self, "node_remove", target)
        if refused:
            return rx.toast.error(refused)
        try:
            node = get_hub().remove(str(node_id))
        except (NodeError, OSError) as exc:
            message = exc.message if isinstance(exc, NodeError) else str(exc)
            record_audit_soon("node_remove", "failed", target=target, client=event_client(self), via="ui",
                              detail=message)
            return rx.toast.error(f"Cannot remove: {message}")
        record_audit_soon("node_remove", "allowed", target=target, client=event_client(self), via="ui")
        self._refresh(time.time())
        done = rx.toast.success(f"Removed node {node.name}")
        operations = await self.get_state(OperationsState)
        return [done, OperationsState.choose_node(LOCAL_NODE)] if operations.node == node.id else done

    @rx.event(background=True)
    async def stop_remote(self, node_id: str, op_id: str) -> Any:
        """Stop an operation on a remote node (SIGTERM, the node's grace period), forwarded with its token."""
        target = f"{str(node_id)[:40]}/{str(op_id)[:64]}"
        async with self:
            refused = authorize_event(self, "stop", target)
            client = event_client(self)
        if refused:
            return rx.toast.error(refused)
        hub = get_hub()
        node = hub.node(str(node_id)) if isinstance(node_id, str) else None
        if node is None or not isinstance(op_id, str) or not op_id or len(op_id) > 64:
            return rx.toast.error("No such node or operation")
        url = f"{node.url}/api/dgx/operations/{urllib.parse.quote(op_id, safe='')}/stop"

        def call() -> tuple[int, str]:
            with httpx.Client(timeout=STOP_TIMEOUT_SECONDS, headers={"User-Agent": USER_AGENT}) as http:
                response = http.post(url, json={"signal": "term"}, headers={"Authorization": f"Bearer {node.token}"})
            try:
                message = response.json().get("error", {}).get("message", "")
            except ValueError:
                message = ""
            return response.status_code, str(message)[:300]

        try:
            status, message = await asyncio.to_thread(call)
        except httpx.HTTPError as exc:
            record_audit_soon("stop", "failed", target=target, client=client, status=502, via="ui",
                              detail=f"node unreachable: {type(exc).__name__}")
            return rx.toast.error(f"Node {node.name} is unreachable; nothing was stopped")
        record_audit_soon("stop", "allowed" if status < 400 else "failed", target=target, client=client,
                          status=status, via="ui", detail=message or None)
        hub.wake(node.id)
        if status >= 400:
            return rx.toast.error(f"Stop on {node.name} failed: {message or f'HTTP {status}'}")
        return rx.toast.success(f"Stopping on {node.name}")

    @rx.event
    def stop_live(self) -> None:
        """The switcher unmounted."""
        loops.leave(self.router.session.client_token, FEED)

    @rx.event(background=True)
    async def start_live(self) -> None:
        """Keep the nodes' health current in this tab (rides on the tab's one live loop)."""
        token = self.router.session.client_token
        if not token:
            return
        async with self:
            self._refresh(time.time())
        await run_tab_loop(self, token, FEED)


def _fingerprint_of(now: float) -> tuple[Any, ...]:
    """What the rows show, coarsely: statuses and (for nodes that dropped out) their age in 5 s steps."""
    hub = get_hub()
    return (hub.version,) + tuple(
        (node.id, state.status, state.stale(now, hub.interval), int((state.age(now) or 0) // 5))
        for node, state in hub.states()
    )


async def _apply_nodes(state: Any, snapshot: Any, now: float) -> None:
    nodes = await state.get_state(NodesState)
    nodes._refresh(now)


def _nodes_fingerprint(token: str, snapshot: Any, now: float) -> Any:
    del token, snapshot
    return _fingerprint_of(now)


register_feed(FEED, _apply_nodes, _nodes_fingerprint)
