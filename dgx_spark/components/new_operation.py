"""The "New Operation" button (extension slot for the launch dialog).

Until the launch dialog exists it is visibly disabled, with a tooltip saying
why. Replace ``new_operation_button`` to open the dialog.
"""

from __future__ import annotations

import reflex as rx

from dgx_spark import styles


def new_operation_button() -> rx.Component:
    """The header button that opens the launch dialog (disabled for now)."""
    return rx.tooltip(
        # A disabled button gets no pointer events: the span carries the tooltip.
        rx.el.span(
            rx.button(
                rx.icon("plus", size=styles.ICON_MD),
                "New Operation",
                disabled=True,
                size="2",
                id="new-operation",
            ),
            tab_index=0,
            aria_label="New Operation (coming soon)",
        ),
        content="Launching operations from the dashboard is coming soon.",
    )
