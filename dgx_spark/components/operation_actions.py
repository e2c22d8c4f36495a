"""Per-card actions (Stop and Restart with confirmation, Start again, Logs, Remove) and the confirmation."""

from __future__ import annotations

import reflex as rx

from dgx_spark import styles
from dgx_spark.state.control import ControlState
from dgx_spark.state.login import LoginState
from dgx_spark.state.view import OperationView


def login_gate(
    key: str,
    action: str,
    label: str,
    icon: str | None,
    variant: str = "soft",
    *,
    size: str = "1",
    button_id: str | None = None,
) -> rx.Component:
    """A control this browser may not use yet: shown disabled, "Log in to <action>" on hover, a link to /login.

    ``key`` is the button's ``data-action`` (and the link's ``data-login-gate``); ``button_id`` gives the disabled
    button the id the live one has. The disabled button lets pointer events through to the link, so a click (or
    Enter on the focused link) opens the login page; the action is never half-done.
    """
    hint = f"Log in to {action}"
    icon_size = 14 if size == "1" else styles.ICON_MD
    extra = {"id": button_id} if button_id else {}
    return rx.tooltip(
        rx.el.a(
            rx.button(*([rx.icon(icon, size=icon_size)] if icon else []), label, size=size, variant=variant,
                      color_scheme="gray", disabled=True, style=styles.gated_button, data_action=key,
                      custom_attrs={"tabindex": "-1", "aria-hidden": "true"}, **extra),
            href="/login",
            aria_label=hint,
            title=hint,
            style=styles.gated_link,
            custom_attrs={"data-login-gate": key},
        ),
        content=hint,
    )


def _allowed(
    button: rx.Component, key: str, action: str, label: str, icon: str, variant: str = "soft"
) -> rx.Component:
    """``button`` for a logged-in browser; the disabled "Log in to ..." version for the others."""
    return rx.cond(LoginState.logged_in, button, login_gate(key, action, label, icon, variant))


def engine_gate(op: rx.Var[OperationView], key: str, label: str, icon: str) -> rx.Component:
    """A container control its engine cannot carry out here: disabled, the reason on hover."""
    return rx.tooltip(
        rx.button(rx.icon(icon, size=14), label, size="1", variant="soft", color_scheme="gray", disabled=True,
                  data_action=key, custom_attrs={"data-reason": op.container_control}),
        content=op.container_control,
    )


def _busy(op: rx.Var[OperationView]) -> tuple[rx.Var[bool], rx.Var[bool]]:
    """(an action on it is in flight, its controls are off: that, or its remote node stopped answering)."""
    key = rx.cond(op.remote, op.node + "/" + op.id, op.id)
    acting = ControlState.busy_ids.contains(key)
    return acting, acting | op.node_stale


def logs_button(op: rx.Var[OperationView]) -> rx.Component:
    """Logs: this machine's read here; a remote node's read by this backend from that node."""
    return rx.button(rx.icon("scroll_text", size=14), "Logs", size="1", variant="soft", color_scheme="gray",
                     on_click=ControlState.open_logs(op.id, op.name, op.node), data_action="logs")


def operation_actions(op: rx.Var[OperationView]) -> list[rx.Component]:
    """The buttons that fit the operation's state; disabled while an action on it is in flight.

    Controls that need a login are shown disabled, with "Log in to stop" and a link, to a
    browser that is not logged in. A remote node's card (``op.remote``) gets the same buttons:
    each handler is given ``op.node`` and the backend sends the action on to that node.
    """
    acting, busy = _busy(op)
    launched = op.source == "launched"
    return [
        logs_button(op),
        rx.cond(
            op.live,
            rx.cond(
                op.container_control != "",
                engine_gate(op, "stop", "Stop", "square"),
                _allowed(
                    # High contrast: soft red text is 4.4:1 in the light theme (WCAG AA needs 4.5).
                    rx.button(rx.icon("square", size=14), "Stop", size="1", variant="soft", color_scheme="red",
                              high_contrast=True, disabled=busy, loading=acting,
                              on_click=ControlState.ask_stop(op.id, op.name, op.source, op.node),
                              data_action="stop"),
                    "stop", "stop", "Stop", "square",
                ),
            ),
        ),
        rx.cond(
            op.live & launched,
            _allowed(
                rx.button(rx.icon("refresh_cw", size=14), "Restart", size="1", variant="soft", color_scheme="gray",
                          disabled=busy, on_click=ControlState.ask_restart(op.id, op.name, op.node),
                          data_action="restart"),
                "restart", "restart", "Restart", "refresh_cw",
            ),
        ),
        *ended_actions(op, logs=False),
    ]


def ended_actions(op: rx.Var[OperationView], logs: bool = True) -> list[rx.Component]:
    """An ended operation's buttons: Logs, and Start again (launched ones and containers) and Remove (launched)."""
    acting, busy = _busy(op)
    launched = op.source == "launched"
    startable = launched | ((op.container_text != "") & (op.container_control == ""))
    buttons = [
        rx.cond(
            ~op.live & startable,
            _allowed(
                rx.button(rx.icon("rotate_ccw", size=14), "Start again", size="1", variant="soft",
                          disabled=busy, loading=acting, on_click=ControlState.start_again(op.id, op.node),
                          data_action="start"),
                "start", "start it again", "Start again", "rotate_ccw",
            ),
        ),
        rx.cond(
            ~op.live & launched,
            _allowed(
                rx.button(rx.icon("trash_2", size=14), "Remove", size="1", variant="ghost", color_scheme="gray",
                          disabled=busy, on_click=ControlState.remove_operation(op.id, op.node),
                          data_action="remove"),
                "remove", "remove", "Remove", "trash_2", "ghost",
            ),
        ),
    ]
    if logs:
        buttons.insert(0, logs_button(op))
    return buttons


def _signal_choice() -> rx.Component:
    """Interrupt (SIGINT: a training script can checkpoint) or terminate (SIGTERM, the default)."""
    return rx.radio_group.root(
        rx.vstack(
            rx.text(rx.radio_group.item(value="term"), " Terminate (SIGTERM)", as_="label", size="2"),
            rx.text(rx.radio_group.item(value="int"),
                    " Interrupt (SIGINT): lets a training script save a checkpoint", as_="label", size="2"),
            spacing="1",
        ),
        value=ControlState.stop_signal,
        on_change=ControlState.choose_stop_signal,
        id="stop-signal",
        margin_top="8px",
    )


def stop_confirm_dialog() -> rx.Component:
    """"Stop <name>?" (or "Restart <name>?") with a signal choice, the action, and Kill now."""
    restarting = ControlState.confirm_action == "restart"
    return rx.alert_dialog.root(
        rx.alert_dialog.content(
            rx.alert_dialog.title(rx.cond(restarting, "Restart ", "Stop ") + ControlState.confirm_name + "?"),
            rx.alert_dialog.description(
                rx.cond(
                    restarting,
                    "Its process group gets the signal below, then SIGKILL if it is still running after the grace "
                    "period; then it starts again as a new run.",
                    rx.cond(
                        ControlState.confirm_source == "launched",
                        "Its process group gets the signal below, then SIGKILL if it is still running after the grace"
                        " period.",
                        "This process was not started here. It gets the signal below, then SIGKILL after the grace "
                        "period.",
                    ),
                ),
                size="2",
            ),
            rx.cond(
                ControlState.confirm_node != "",
                rx.text("It runs on node ", rx.text(ControlState.confirm_node_name, as_="span", weight="bold"),
                        ": this backend sends the request on to it, with that node's token.", size="2",
                        margin_top="8px", id="stop-node"),
            ),
            _signal_choice(),
            rx.hstack(
                rx.alert_dialog.cancel(rx.button("Cancel", variant="soft", color_scheme="gray")),
                rx.alert_dialog.action(
                    rx.button("Kill now", color_scheme="red", variant="soft",
                              on_click=ControlState.confirm_stop(True), id="stop-kill")
                ),
                rx.alert_dialog.action(
                    rx.button(rx.cond(restarting, "Restart", "Stop"), color_scheme="red",
                              on_click=ControlState.confirm_stop(False), id="stop-confirm")
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
