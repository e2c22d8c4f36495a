"""Per-card actions (Stop with confirmation, Start again, Logs, Remove) and the stop confirmation."""

from __future__ import annotations

import reflex as rx

from dgx_spark.state.control import ControlState
from dgx_spark.state.view import OperationView


def operation_actions(op: rx.Var[OperationView]) -> list[rx.Component]:
    """The buttons that fit the operation's state; disabled while an action on it is in flight."""
    busy = ControlState.busy_ids.contains(op.id)
    launched = op.source == "launched"
    return [
        rx.button(rx.icon("scroll_text", size=14), "Logs", size="1", variant="soft", color_scheme="gray",
                  on_click=ControlState.open_logs(op.id, op.name), data_action="logs"),
        rx.cond(
            op.live,
            rx.button(rx.icon("square", size=14), "Stop", size="1", variant="soft", color_scheme="red",
                      disabled=busy, loading=busy,
                      on_click=ControlState.ask_stop(op.id, op.name, op.source), data_action="stop"),
        ),
        rx.cond(
            ~op.live & launched,
            rx.button(rx.icon("rotate_ccw", size=14), "Start again", size="1", variant="soft",
                      disabled=busy, loading=busy, on_click=ControlState.start_again(op.id), data_action="start"),
        ),
        rx.cond(
            ~op.live & launched,
            rx.button(rx.icon("trash_2", size=14), "Remove", size="1", variant="ghost", color_scheme="gray",
                      disabled=busy, on_click=ControlState.remove_operation(op.id), data_action="remove"),
        ),
    ]


def stop_confirm_dialog() -> rx.Component:
    """"Stop <name>?" with Stop (SIGTERM, then SIGKILL after the grace period) and Kill now."""
    return rx.alert_dialog.root(
        rx.alert_dialog.content(
            rx.alert_dialog.title("Stop " + ControlState.confirm_name + "?"),
            rx.alert_dialog.description(
                rx.cond(
                    ControlState.confirm_source == "launched",
                    "Its process group gets SIGTERM, then SIGKILL if it is still running after the grace period.",
                    "This process was not started here. It gets SIGTERM, then SIGKILL after the grace period.",
                ),
                size="2",
            ),
            rx.hstack(
                rx.alert_dialog.cancel(rx.button("Cancel", variant="soft", color_scheme="gray")),
                rx.alert_dialog.action(
                    rx.button("Kill now", color_scheme="red", variant="soft",
                              on_click=ControlState.confirm_stop(True), id="stop-kill")
                ),
                rx.alert_dialog.action(
                    rx.button("Stop", color_scheme="red", on_click=ControlState.confirm_stop(False), id="stop-confirm")
                ),
                spacing="3",
                justify="end",
                margin_top="12px",
            ),
            id="stop-dialog",
        ),
        open=ControlState.confirm_open,
        on_open_change=ControlState.cancel_stop,
    )


def control_dialogs() -> rx.Component:
    """Every control dialog, rendered once on the page."""
    from dgx_spark.components.launch_dialog import launch_dialog
    from dgx_spark.components.logs_view import logs_dialog

    return rx.fragment(launch_dialog(), logs_dialog(), stop_confirm_dialog())
