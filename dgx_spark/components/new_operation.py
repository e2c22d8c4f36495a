"""The "New Operation" button (extension slot for the launch dialog).

It opens the launch dialog (``components/launch_dialog.py``); the control
dialogs (launch, logs, stop confirmation) are rendered next to it, once.
"""

from __future__ import annotations

import reflex as rx

from dgx_spark import styles
from dgx_spark.components.operation_actions import control_dialogs
from dgx_spark.state.control import ControlState


def new_operation_button() -> rx.Component:
    """The header button that opens the launch dialog (the control dialogs render with it, once)."""
    return rx.fragment(
        rx.button(
            rx.icon("plus", size=styles.ICON_MD),
            "New Operation",
            size="2",
            id="new-operation",
            style=styles.accent_button,
            on_click=ControlState.open_launch_dialog,
        ),
        control_dialogs(),
    )
