"""The "New Operation" button (extension slot for the launch dialog).

It opens the launch dialog (``components/launch_dialog.py``); the control
dialogs (launch, logs, stop confirmation) are rendered next to it, once.
"""

from __future__ import annotations

import reflex as rx

from dgx_spark import styles
from dgx_spark.components.operation_actions import control_dialogs, login_gate
from dgx_spark.state.control import ControlState
from dgx_spark.state.login import LoginState


def new_operation_button() -> rx.Component:
    """The header button that opens the launch dialog (the control dialogs render with it, once).

    A browser that is not logged in sees it disabled, with "Log in to launch" and a link to /login.
    """
    return rx.fragment(
        rx.cond(
            LoginState.logged_in,
            rx.button(
                rx.icon("plus", size=styles.ICON_MD),
                "New Operation",
                size="2",
                id="new-operation",
                style=styles.accent_button,
                on_click=ControlState.open_launch_dialog,
            ),
            login_gate("launch", "launch", "New Operation", "plus", "solid", size="2", button_id="new-operation"),
        ),
        control_dialogs(),
    )
