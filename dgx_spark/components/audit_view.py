"""The audit log view: a button that opens a dialog listing recent control actions.

``audit_view()`` renders the trigger button and its dialog; place it in the page
header. Only a logged-in browser (session cookie) sees the entries.
"""

from __future__ import annotations

import reflex as rx

from dgx_spark.components.tips import tip
from dgx_spark.state.audit import AuditState

OUTCOME_COLORS: dict[str, str] = {"allowed": "green", "failed": "amber", "refused": "red"}


def _row(entry: rx.Var[dict[str, str]]) -> rx.Component:
    return rx.table.row(
        rx.table.cell(rx.moment(entry["at"], format="YYYY-MM-DD HH:mm:ss", size="1"), white_space="nowrap"),
        rx.table.cell(rx.code(entry["action"], size="1")),
        rx.table.cell(
            rx.text(entry["target_name"], size="1", title=entry["target"], class_name="audit-target",
                    custom_attrs={"data-target": entry["target"]}),
            max_width="14rem",
            overflow="hidden",
        ),
        rx.table.cell(
            rx.badge(
                entry["outcome"],
                color_scheme=rx.match(entry["outcome"], *OUTCOME_COLORS.items(), "gray"),
                variant="soft",
                size="1",
            )
        ),
        rx.table.cell(rx.text(entry["status"], size="1")),
        rx.table.cell(rx.text(entry["client"], " · ", entry["via"], size="1"), white_space="nowrap"),
        rx.table.cell(rx.text(entry["detail"], size="1", color_scheme="gray")),
        class_name="audit-row",
    )


def audit_view() -> rx.Component:
    """The "Audit log" button and its dialog (newest first)."""
    return rx.dialog.root(
        tip(
            rx.dialog.trigger(
                rx.button(
                    rx.icon("shield_check", size=14, aria_hidden="true"),
                    # Icon only on a phone (below 30em), so the top bar fits; the name stays for screen readers.
                    rx.el.span("Audit log", display=["none", "inline"]),
                    variant="soft", size="1", id="audit-open", aria_label="Audit log", flex_shrink="0",
                ),
            ),
            "Audit log: every control action, allowed or refused",
        ),
        rx.dialog.content(
            rx.hstack(
                rx.dialog.title("Audit log", margin="0"),
                rx.spacer(),
                rx.icon_button(rx.icon("refresh_cw", size=14), on_click=AuditState.load_audit, variant="ghost",
                               size="1", title="Reload", id="audit-reload"),
                rx.dialog.close(rx.icon_button(rx.icon("x", size=14), variant="ghost", size="1", title="Close")),
                align="center",
                width="100%",
            ),
            rx.dialog.description("Every control action, allowed or refused: when, what, on what, who asked.",
                                  size="2", margin_bottom="0.75rem"),
            rx.cond(
                AuditState.audit_error != "",
                rx.callout(AuditState.audit_error, icon="lock", color_scheme="amber", id="audit-error"),
                rx.cond(
                    AuditState.audit_rows.length() > 0,  # type: ignore[attr-defined]
                    rx.scroll_area(
                        rx.table.root(
                            rx.table.header(
                                rx.table.row(
                                    *[rx.table.column_header_cell(name) for name in
                                      ("Time", "Action", "Target", "Outcome", "Status", "Client", "Detail")]
                                )
                            ),
                            rx.table.body(rx.foreach(AuditState.audit_rows, _row)),
                            size="1",
                            variant="surface",
                        ),
                        max_height="60vh",
                        type="auto",
                    ),
                    rx.text("No control actions yet.", size="2", color_scheme="gray", id="audit-empty"),
                ),
            ),
            max_width="min(64rem, 95vw)",
            id="audit-dialog",
        ),
        open=AuditState.audit_open,
        on_open_change=AuditState.audit_open_change,
    )
