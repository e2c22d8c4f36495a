"""The Nodes dialog's and the node switcher's state: each node's health, add, remove.

The rows come from the backend's ``NodeHub`` (its pollers), refreshed by the tab's
one live loop (the ``"nodes"`` feed) only when a node's status or list changed.
A node's token goes from the dialog's form to the backend once and is never put
in a state var, so it is never sent back to a browser.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from typing import Any

import reflex as rx

from dgx_spark.nodes.hub import nodes_payload
from dgx_spark.nodes.protocol import LOCAL_NODE
from dgx_spark.services import get_control, get_hub, get_services
from dgx_spark.state import loops
from dgx_spark.state.actor import REFUSAL_TEXT, ui_actor
from dgx_spark.state.node_view import connection_node
from dgx_spark.state.operations import OperationsState, register_feed, run_tab_loop
from dgx_spark.supervisor.supervisor import ControlError

FEED = "nodes"


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
    services = get_services()
    rows = []
    for item in nodes_payload(services.hub, services.sampler, now):
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
    # The embedding app's connection that names no node ("" while it names one, or none is given).
    connection_missing: str = ""
    _connection: str = ""
    _pinned: str = ""  # the node the connection last chose (not this machine)

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
        """Add a node from the dialog's form (``name``, ``url``, ``token``), through the control service."""
        async with self:
            if self.adding:
                return None
            self.adding = True
            self.form_error = ""
            actor = ui_actor(self)
        data = form if isinstance(form, dict) else {}
        try:
            node, state = await asyncio.to_thread(
                get_control().add_node, actor, data.get("name"), data.get("url"), data.get("token")
            )
        except ControlError as exc:
            async with self:
                self.adding = False
                self.form_error = REFUSAL_TEXT.get(exc.kind, exc.message)
            return None
        async with self:
            self.adding = False
            self._refresh(time.time())
        return rx.toast.success(f"Added node {node.name}: {state.status}")

    @rx.event
    async def remove_node(self, node_id: str) -> Any:
        """Forget a node (through the control service); a tab showing it goes back to this machine."""
        try:
            node = await asyncio.to_thread(get_control().remove_node, ui_actor(self), str(node_id))
        except ControlError as exc:
            return rx.toast.error(REFUSAL_TEXT.get(exc.kind) or f"Cannot remove: {exc.message}")
        self._refresh(time.time())
        done = rx.toast.success(f"Removed node {node.name}")
        operations = await self.get_state(OperationsState)
        # Reflex: a handler called on its class gives the EventSpec (mypy sees rx.event's namespace).
        back = OperationsState.choose_node(LOCAL_NODE)  # type: ignore[operator]
        return [done, back] if operations.node == node.id else done

    async def _apply_connection(self) -> bool:
        """Show the node the embedding app's connection names; whether it pins one (not this machine).

        A connection naming this machine leaves the choice to the URL (``?node=``) and the switcher.
        """
        node = connection_node(self._connection)
        missing = "" if node is not None else self._connection
        if missing != self.connection_missing:
            self.connection_missing = missing
        if node is None or (node == LOCAL_NODE and not self._pinned):
            return node is None
        operations = await self.get_state(OperationsState)
        if operations.node != node and (node != LOCAL_NODE or operations.node == self._pinned):
            operations.node = node
            operations._filters_changed()
        self._pinned = "" if node == LOCAL_NODE else node
        return node != LOCAL_NODE

    @rx.event(background=True)
    async def connect(self, connection_id: str) -> None:
        """``operations_tab``'s ``connection_id`` picks the node the tab shows (see ``connection_node``).

        One that names another node (or none yet) keeps being checked as nodes come and go, on the
        tab's live loop.
        """
        token = self._token()
        async with self:
            self._connection = connection_id.strip()[:200] if isinstance(connection_id, str) else ""
            pinned = await self._apply_connection()
        if pinned and token:
            await run_tab_loop(self, token, FEED)

    @rx.event
    def disconnect(self) -> None:
        """The tab (or its connection) went away."""
        if connection_node(self._connection) != LOCAL_NODE:
            loops.leave(self._token(), FEED)
        self._connection = ""

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
    return (
        hub.version,
        *((node.id, state.status, state.stale(now, hub.interval), int((state.age(now) or 0) // 5))
          for node, state in hub.states()),
    )


async def _apply_nodes(state: Any, snapshot: Any, now: float) -> None:
    nodes = await state.get_state(NodesState)
    nodes._refresh(now)
    if nodes._connection:
        await nodes._apply_connection()


def _nodes_fingerprint(token: str, snapshot: Any, now: float) -> Any:
    del token, snapshot
    return _fingerprint_of(now)


register_feed(FEED, _apply_nodes, _nodes_fingerprint)
