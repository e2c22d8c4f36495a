"""Other DGX machines in the UI: the node switcher, the Nodes dialog, node chips and stale banners.

- ``nodes_controls()`` (top bar): the node switcher (This machine / each node / All nodes; kept in the
  URL, ``?node=``), shown once there is another node, and the Nodes button.
- ``nodes_dialog()``: each node's health (status, latency, version, last seen, error); add and remove.
- ``node_chip(op)``: on each card when the tab shows another node or All nodes.
- ``node_banners()``: a banner per node whose cards show an old list.

A remote card's buttons are a local card's (``components/operation_actions.py``): each handler gets
the card's node, and the backend sends the action on to that node with its token.
"""

from __future__ import annotations

import reflex as rx

from dgx_spark import styles
from dgx_spark.components.operation_actions import login_gate
from dgx_spark.components.tips import tip
from dgx_spark.nodes.protocol import ALL_NODES, LOCAL_NODE
from dgx_spark.state.login import LoginState
from dgx_spark.state.nodes import NodeRow, NodesState
from dgx_spark.state.operations import OperationsState
from dgx_spark.state.view import OperationView

STATUS_COLORS = {"online": "green", "connecting": "gray", "offline": "red", "unauthorized": "amber",
                 "incompatible": "orange"}


def status_badge(status: rx.Var[str]) -> rx.Component:
    """A node's status as a coloured badge."""
    return rx.badge(status, color_scheme=rx.match(status, *STATUS_COLORS.items(), "gray"), variant="soft",
                    size="1", data_field="node-status")


def node_switcher() -> rx.Component:
    """Which machine the tab shows: this one, one node, or All nodes."""
    return rx.select.root(
        rx.select.trigger(placeholder="This machine", aria_label="Show operations of", id="node-switcher"),
        rx.select.content(
            rx.select.item("This machine", value=LOCAL_NODE, id="node-option-local"),
            rx.foreach(
                NodesState.remote_nodes,
                lambda row: rx.select.item(row.name, value=row.id, id="node-option-" + row.id),
            ),
            rx.select.item("All nodes", value=ALL_NODES, id="node-option-all"),
        ),
        value=OperationsState.node,
        on_change=OperationsState.choose_node,
        size="1",
    )


def nodes_controls() -> rx.Component:
    """The top bar's node controls: the switcher (once there is another node) and the Nodes button.

    They keep the nodes' health current in this tab (the ``"nodes"`` feed of its live loop).
    """
    return rx.hstack(
        rx.cond(NodesState.remote_nodes.length() > 0, rx.box(node_switcher(), max_width=["8rem", "none"])),
        nodes_dialog(),
        spacing="2",
        align="center",
        id="node-controls",
        on_mount=NodesState.start_live,
        on_unmount=NodesState.stop_live,
    )


def _row(row: rx.Var[NodeRow]) -> rx.Component:
    return rx.table.row(
        rx.table.cell(rx.text(row.name, weight="medium"), rx.text(row.url, size="1", color=styles.MUTED)),
        rx.table.cell(status_badge(row.status),
                      rx.cond(row.stale, rx.badge("stale", color_scheme="red", variant="outline", size="1"))),
        rx.table.cell(row.latency_text),
        rx.table.cell(row.version),
        rx.table.cell(row.seen_text),
        rx.table.cell(rx.text(row.error, size="1", color=styles.MUTED, data_field="node-error")),
        rx.table.cell(
            rx.cond(
                row.local,
                rx.text("this machine", size="1", color=styles.MUTED),
                rx.cond(
                    LoginState.logged_in,
                    rx.button(rx.icon("trash_2", size=14), "Remove", size="1", variant="soft", color_scheme="red",
                              on_click=NodesState.remove_node(row.id), data_action="remove-node"),
                    login_gate("remove-node", "remove a node", "Remove", "trash_2"),
                ),
            )
        ),
        id="node-row-" + row.id,
        custom_attrs={"data-status": row.status, "data-stale": rx.cond(row.stale, "true", "false")},
    )


def _add_form() -> rx.Component:
    return rx.form(
        rx.hstack(
            rx.input(name="name", placeholder="Name (e.g. spark-b)", required=True, max_length=64, size="2",
                     id="node-add-name", disabled=~LoginState.logged_in, aria_label="Node name"),
            rx.input(name="url", placeholder="http://spark-b:3000", required=True, max_length=300, size="2",
                     id="node-add-url", disabled=~LoginState.logged_in, aria_label="Node URL"),
            rx.input(name="token", placeholder="Its API token", type="password", required=True, size="2",
                     auto_complete="off", id="node-add-token", disabled=~LoginState.logged_in, aria_label="Node API token"),
            rx.cond(
                LoginState.logged_in,
                rx.button("Add node", type="submit", loading=NodesState.adding, id="node-add-submit"),
                login_gate("add-node", "add a node", "Add node", "plus", "solid", size="2", button_id="node-add-submit"),
            ),
            spacing="2",
            wrap="wrap",
        ),
        rx.cond(NodesState.form_error != "",
                rx.text(NodesState.form_error, color="red", size="1", id="node-add-error")),
        rx.text("The token is the other machine's DGX_SPARK_DATA_DIR/token. It is kept on this machine's "
                "backend (0600) and never shown again.", size="1", color=styles.MUTED),
        on_submit=NodesState.add_node,
        reset_on_submit=True,
    )


def nodes_dialog() -> rx.Component:
    """The "Nodes" button and dialog: health of each node; add and remove."""
    return rx.dialog.root(
        tip(
            rx.dialog.trigger(
                # Icon only on a phone, so the top bar fits; the name stays for screen readers.
                rx.button(rx.icon("network", size=styles.ICON_MD, aria_hidden="true"),
                          rx.el.span("Nodes", display=["none", "inline"]),
                          size="1", variant="soft", color_scheme="gray", id="nodes-button", aria_label="Nodes"),
            ),
            "Nodes: other DGX machines in this view",
        ),
        rx.dialog.content(
            rx.dialog.title("Nodes"),
            rx.dialog.description("Other DGX machines running this dashboard, polled by this backend.",
                                  size="2", color=styles.MUTED),
            rx.table.root(
                rx.table.header(rx.table.row(*[rx.table.column_header_cell(h) for h in (
                    "Node", "Status", "Latency", "Version", "Last seen", "Error", "")])),
                rx.table.body(rx.foreach(NodesState.nodes, _row)),
                size="1",
                id="nodes-table",
            ),
            rx.box(_add_form(), style={"margin_top": "16px"}),
            rx.flex(rx.dialog.close(rx.button("Close", variant="soft", color_scheme="gray")),
                    justify="end", style={"margin_top": "12px"}),
            max_width="900px",
            id="nodes-dialog",
        ),
        open=NodesState.dialog_open,
        on_open_change=NodesState.set_dialog_open,
    )


def node_chip(op: rx.Var[OperationView]) -> rx.Component:
    """Which node a card belongs to (All nodes or another node); red while that node's list is stale."""
    return rx.cond(
        op.node != "",
        rx.badge(
            rx.icon("server", size=11),
            op.node_name,
            rx.cond(op.node_stale, " · stale", ""),
            color_scheme=rx.cond(op.node_stale, "red", rx.cond(op.remote, "iris", "gray")),
            variant="outline",
            size="1",
            data_field="node",
            custom_attrs={"data-node": op.node},
        ),
    )


def node_banners() -> rx.Component:
    """One banner per node that dropped out, shown where its cards are (that node, or All nodes)."""
    return rx.foreach(
        NodesState.stale_nodes,
        lambda row: rx.cond(
            (OperationsState.node == ALL_NODES) | (OperationsState.node == row.id),
            rx.callout.root(
                rx.callout.icon(rx.icon("clock_alert", size=styles.ICON_MD)),
                rx.callout.text(
                    "Node ", rx.text(row.name, as_="span", weight="bold"), " is ", row.status,
                    ": its cards show its last list, from ", row.seen_text, ". ", row.error,
                ),
                color_scheme="amber",
                variant="surface",
                size="1",
                id="banner-node-" + row.id,
                style=styles.banner,
            ),
        ),
    )


def unknown_connection(connection_id: rx.Var[str] | str) -> rx.Component:
    """The tab's empty state when the embedding app's ``connection_id`` names no node."""
    return rx.vstack(
        rx.box(rx.icon("unplug", size=22), style=styles.empty_icon),
        rx.heading("Not connected", size="4"),
        rx.text(
            "No node is named ", rx.code(connection_id), ". Add it under Nodes (its URL and API token), "
            "and its operations appear here; \"local\" or \"\" is this machine.",
            size="2",
            color=styles.MUTED,
            max_width="460px",
        ),
        id="operations-not-connected",
        style=styles.not_connected,
        custom_attrs={"data-reason": "unknown-connection"},
    )
