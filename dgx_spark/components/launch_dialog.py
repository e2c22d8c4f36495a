"""The "New Operation" dialog: template, typed fields with inline errors, the final argv, Launch."""

from __future__ import annotations

import reflex as rx

from dgx_spark.components.operation_actions import login_gate
from dgx_spark.nodes.protocol import LOCAL_NODE
from dgx_spark.state.control import ControlState
from dgx_spark.state.login import LoginState

REMOTE = ControlState.launch_node != LOCAL_NODE


def _field(param: rx.Var[dict[str, str]]) -> rx.Component:
    name = param["name"]
    error = ControlState.errors[name]
    return rx.vstack(
        rx.text(param["label"], size="2", weight="medium"),
        rx.input(
            value=ControlState.values[name],
            on_change=lambda value: ControlState.edit_param(name, value),
            placeholder=param["help"],
            width="100%",
            id="launch-field-" + name.to(str),
            custom_attrs={"data-param": name},
            color_scheme=rx.cond(error, "red", "gray"),
        ),
        rx.cond(error, rx.text(error, color="var(--red-11)", size="1", data_field="error", id="launch-error-" + name.to(str))),
        spacing="1",
        width="100%",
        align="stretch",
    )


def _restart_fields() -> rx.Component:
    """Restart policy: no / on-failure / always, max restarts in a row, first backoff (doubles each time)."""
    fields = ControlState.restart_fields
    on = fields["policy"] != "no"
    return rx.vstack(
        rx.text("Restart policy", size="2", weight="medium"),
        rx.hstack(
            rx.select.root(
                rx.select.trigger(id="launch-restart-policy", width="150px", aria_label="Restart policy"),
                rx.select.content(
                    rx.select.item("Never", value="no"),
                    rx.select.item("On failure", value="on-failure"),
                    rx.select.item("Always", value="always"),
                ),
                value=fields["policy"],
                on_change=lambda value: ControlState.edit_restart("policy", value),
            ),
            rx.cond(
                on,
                rx.hstack(
                    rx.input(value=fields["max_restarts"], id="launch-restart-max", width="70px",
                             on_change=lambda value: ControlState.edit_restart("max_restarts", value)),
                    rx.text("restarts in a row, first after", size="1", color="var(--gray-11)"),
                    rx.input(value=fields["backoff_seconds"], id="launch-restart-backoff", width="70px",
                             on_change=lambda value: ControlState.edit_restart("backoff_seconds", value)),
                    rx.text("s (doubling)", size="1", color="var(--gray-11)"),
                    align="center",
                    spacing="2",
                ),
            ),
            align="center",
            spacing="2",
            wrap="wrap",
        ),
        rx.cond(ControlState.errors["restart"],
                rx.text(ControlState.errors["restart"], color="var(--red-11)", size="1", id="launch-error-restart")),
        spacing="1",
        width="100%",
        align="stretch",
    )


def _node_choice() -> rx.Component:
    """Where to launch, once there are remote nodes: this machine or one of them."""
    return rx.cond(
        ControlState.launch_nodes.length() > 0,
        rx.vstack(
            rx.text("Run on", size="2", weight="medium"),
            rx.select.root(
                rx.select.trigger(width="100%", id="launch-node", aria_label="Run on"),
                rx.select.content(
                    rx.select.item("This machine", value=LOCAL_NODE, id="launch-node-local"),
                    rx.foreach(
                        ControlState.launch_nodes,
                        lambda row: rx.select.item(row["name"] + " (" + row["status"] + ")", value=row["id"],
                                                   id="launch-node-" + row["id"].to(str)),
                    ),
                ),
                value=ControlState.launch_node,
                on_change=ControlState.choose_launch_node,
            ),
            rx.cond(
                REMOTE,
                rx.text("This backend sends the launch to that node with its token; the node checks the fields "
                        "against its own files, ports and templates.", size="1", color="var(--gray-11)"),
            ),
            spacing="1",
            width="100%",
            align="stretch",
        ),
    )


def launch_dialog() -> rx.Component:
    """The dialog itself (controlled by ``ControlState.dialog_open``)."""
    return rx.dialog.root(
        rx.dialog.content(
            rx.dialog.title("New Operation"),
            rx.dialog.description("Start a server, job or program from a template. No shell is involved.",
                                  size="2", margin_bottom="8px"),
            rx.vstack(
                _node_choice(),
                rx.text("Template", size="2", weight="medium"),
                rx.select.root(
                    rx.select.trigger(width="100%", id="launch-template", aria_label="Template"),
                    rx.select.content(
                        rx.foreach(
                            ControlState.templates,
                            lambda t: rx.select.item(t["title"] + " (" + t["type"] + ")", value=t["name"]),
                        )
                    ),
                    value=ControlState.template,
                    on_change=ControlState.choose_template,
                ),
                rx.text("Name", size="2", weight="medium"),
                rx.input(value=ControlState.op_name, on_change=ControlState.edit_name,
                         placeholder="optional display name", id="launch-name", width="100%"),
                rx.cond(ControlState.errors["name"], rx.text(ControlState.errors["name"], color="var(--red-11)", size="1")),
                rx.foreach(ControlState.params, _field),
                _restart_fields(),
                rx.cond(ControlState.errors["_form"], rx.text(ControlState.errors["_form"], color="var(--red-11)", size="1")),
                rx.cond(ControlState.errors["template"],
                        rx.text(ControlState.errors["template"], color="var(--red-11)", size="1", id="launch-error-template")),
                rx.text("Command that will run", size="2", weight="medium"),
                rx.code_block(rx.cond(ControlState.preview != "", ControlState.preview,
                                      rx.cond(REMOTE, "(built by the node when you launch)", "(fix the fields above)")),
                              language="bash", wrap_long_lines=True, width="100%", id="launch-preview",
                              # Long paths break anywhere; focusable, so the keyboard can scroll it when it overflows.
                              code_tag_props={"style": {"whiteSpace": "pre-wrap", "wordBreak": "break-all"}},
                              custom_attrs={"tabIndex": "0", "aria-label": "Command that will run"}),
                spacing="2",
                align="stretch",
                max_height="60vh",
                overflow_y="auto",
                padding_right="4px",
            ),
            rx.hstack(
                rx.dialog.close(rx.button("Cancel", variant="soft", color_scheme="gray")),
                # Not logged in (e.g. the session ended while the dialog was open): say so before Launch.
                rx.cond(
                    LoginState.logged_in,
                    rx.button(
                        rx.cond(ControlState.launching, rx.spinner(size="1"), rx.icon("rocket", size=14)),
                        "Launch",
                        on_click=ControlState.launch_operation,
                        disabled=ControlState.launching | ((ControlState.preview == "") & ~REMOTE),
                        id="launch-submit",
                    ),
                    login_gate("launch-submit", "launch", "Launch", "rocket", "solid", size="2",
                               button_id="launch-submit"),
                ),
                justify="end",
                spacing="3",
                margin_top="12px",
            ),
            max_width="640px",
            id="launch-dialog",
        ),
        open=ControlState.dialog_open,
        on_open_change=ControlState.close_launch_dialog,
    )
