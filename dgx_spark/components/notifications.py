"""Notifications: the bell (unread count, grouped recent events), the log dialog, settings.

``notifications()`` renders the bell with its popover and the "View logs" dialog
and starts the events loop when mounted; toasts come from ``EventsState.watch``.
The bell lists the kinds that notify, similar entries grouped ("sh stopped ×12"),
with "Mark all read" and "Clear"; its settings choose which kinds notify.
"""

from __future__ import annotations

import reflex as rx

from dgx_spark import styles
from dgx_spark.components.operation_actions import login_gate
from dgx_spark.components.tips import tip
from dgx_spark.events.config import NOTIFY_CHOICES
from dgx_spark.state.events import EventsState
from dgx_spark.state.login import LoginState

KIND_COLORS: dict[str, str] = {
    "failed": "red",
    "completed": "green",
    "stopped": "gray",
    "stalled": "amber",
    "idle_gpu": "amber",
    "started": "blue",
    "ready": "green",
}
KIND_ICONS: dict[str, str] = {
    "failed": "circle_x",
    "completed": "circle_check",
    "stopped": "circle_stop",
    "stalled": "triangle_alert",
    "idle_gpu": "moon",
    "started": "play",
    "ready": "circle_play",
}


def _kind_badge(kind: rx.Var[str]) -> rx.Component:
    return rx.badge(
        kind.replace("_", " "),  # type: ignore[attr-defined]
        color_scheme=rx.match(kind, *KIND_COLORS.items(), "gray"),
        variant="soft",
        size="1",
    )


def event_row(event: rx.Var[dict[str, str]]) -> rx.Component:
    """One group of similar events in the bell's list (its newest event speaks for it)."""
    return rx.hstack(
        rx.vstack(
            rx.hstack(
                _kind_badge(event["kind"]),
                rx.text(event["name"], weight="medium", size="2", trim="both", title=event["operation_id"],
                        style={"overflow": "hidden", "text_overflow": "ellipsis", "white_space": "nowrap"}),
                rx.cond(
                    event["count"] != "1",
                    rx.badge("×", event["count"], variant="surface", color_scheme="gray", size="1",
                             class_name="dgx-event-count", title="similar events, newest shown"),
                ),
                rx.cond(
                    event["unread"] != "0",
                    rx.box(class_name="dgx-event-unread", title="unread", aria_label="unread",
                           width="8px", height="8px", border_radius="50%", background="var(--accent-9)",
                           flex_shrink="0"),
                ),
                spacing="2",
                align="center",
            ),
            rx.text(event["detail"], size="1", color=styles.MUTED),
            rx.moment(event["at"], from_now=True, size="1", color=styles.FAINT, title=event["at"]),
            spacing="1",
            min_width="0",
            flex="1",
        ),
        rx.icon_button(
            rx.icon("scroll_text", size=styles.ICON_SM),
            variant="ghost",
            size="1",
            title="View logs",
            aria_label="View logs",
            on_click=EventsState.show_logs(event["id"].to(int)),
        ),
        class_name="dgx-event-row",
        custom_attrs={"data-kind": event["kind"], "data-operation-id": event["operation_id"],
                      "data-count": event["count"], "data-unread": event["unread"]},
        width="100%",
        align="start",
        padding_y="6px",
        border_bottom=styles.BORDER,
    )


def login_note(key: str, action: str) -> rx.Component:
    """For a browser that is not logged in: "Log in to <action>" as a link to /login (with a tooltip)."""
    hint = f"Log in to {action}"
    return rx.cond(
        ~LoginState.logged_in,
        rx.tooltip(
            rx.el.a(
                rx.icon("lock", size=12, aria_hidden="true"),
                hint,
                href="/login",
                id=f"login-note-{key}",
                style=styles.login_note,
                custom_attrs={"data-login-gate": key},
            ),
            content=hint,
        ),
    )


def _kind_choice(kind: str) -> rx.Component:
    return rx.el.label(
        rx.checkbox(
            checked=EventsState.notify_kinds.contains(kind),
            on_change=lambda on: EventsState.set_notify_kind(kind, on),
            id=f"notify-kind-{kind}",
            size="1",
            disabled=~LoginState.logged_in,
        ),
        rx.text(kind.replace("_", " "), size="1"),
        style={"display": "inline-flex", "align_items": "center", "gap": "4px", "cursor": "pointer"},
    )


def notify_kind_settings() -> rx.Component:
    """Which kinds of events raise a toast and a bell entry (a dashboard setting: needs a login to change)."""
    return rx.vstack(
        rx.text("Notify about", weight="medium", size="2"),
        login_note("notify-kinds", "choose what notifies"),
        rx.flex(*[_kind_choice(kind) for kind in NOTIFY_CHOICES], wrap="wrap", spacing="3",
                id="notify-kinds", role="group", aria_label="Event kinds that notify"),
        rx.cond(
            EventsState.notify_error != "",
            rx.text(EventsState.notify_error, size="1", color="var(--red-11)", id="notify-kinds-error"),
        ),
        rx.cond(
            EventsState.notify_message != "",
            rx.text(EventsState.notify_message, size="1", color="var(--green-11)", id="notify-kinds-message"),
        ),
        spacing="1",
        width="100%",
    )


def notification_settings() -> rx.Component:
    """Which kinds notify, browser notifications opt-in and the webhook URL."""
    return rx.vstack(
        notify_kind_settings(),
        rx.text("Browser notifications", weight="medium", size="2", margin_top="8px"),
        rx.cond(
            EventsState.notify == "on",
            rx.hstack(
                rx.text("On while this tab is hidden.", size="1", color=styles.MUTED),
                rx.button("Turn off", size="1", variant="soft", on_click=EventsState.disable_notifications),
                align="center",
            ),
            rx.button(
                rx.icon("bell_ring", size=styles.ICON_SM),
                "Notify me when this tab is hidden",
                size="1",
                variant="soft",
                id="enable-browser-notifications",
                on_click=EventsState.enable_notifications,
            ),
        ),
        rx.text("Webhook", weight="medium", size="2", margin_top="8px"),
        login_note("webhook", "set the webhook"),
        rx.text(
            "Each event is POSTed as JSON ({\"text\", \"content\", \"event\"}): Slack, Mattermost, Discord.",
            size="1",
            color=styles.MUTED,
        ),
        rx.hstack(
            rx.input(
                value=EventsState.webhook_url,
                on_change=EventsState.edit_webhook,
                placeholder="https://hooks.example.com/...",
                size="1",
                width="100%",
                id="webhook-url",
                aria_label="Webhook URL",
                max_length=2000,
                disabled=~LoginState.logged_in,
            ),
            rx.cond(
                LoginState.logged_in,
                rx.button("Save", size="1", on_click=EventsState.save_webhook, id="webhook-save"),
                login_gate("webhook-save", "set the webhook", "Save", None, "solid", button_id="webhook-save"),
            ),
            width="100%",
        ),
        rx.cond(
            EventsState.webhook_error != "",
            rx.text(EventsState.webhook_error, size="1", color="var(--red-11)", id="webhook-error"),
        ),
        rx.cond(
            EventsState.webhook_message != "",
            rx.text(EventsState.webhook_message, size="1", color="var(--green-11)", id="webhook-message"),
        ),
        spacing="1",
        width="100%",
    )


def bell() -> rx.Component:
    """The bell with its unread count; opening it lists recent events."""
    return rx.popover.root(
        # The trigger is the button itself: a trigger on the wrapping box put aria-expanded on a div.
        rx.box(
            tip(
                rx.popover.trigger(
                    rx.icon_button(
                        rx.icon("bell", size=styles.ICON_MD, aria_hidden="true"),
                        variant="ghost",
                        size="2",
                        aria_label="Notifications",
                        id="notifications-bell",
                    ),
                ),
                "Notifications: recent failures, completions and stalls; settings",
            ),
            rx.cond(
                EventsState.unread_count > 0,
                rx.badge(
                    EventsState.unread_label,
                    color_scheme="red",
                    variant="solid",
                    radius="full",
                    size="1",
                    id="unread-count",
                    style={"position": "absolute", "top": "-6px", "right": "-8px", "pointer_events": "none"},
                ),
            ),
            position="relative",
            display="inline-flex",
        ),
        rx.popover.content(
            rx.vstack(
                rx.hstack(
                    rx.text("Recent events", weight="bold", size="3"),
                    rx.spacer(),
                    rx.button("Mark all read", size="1", variant="ghost", id="mark-all-read",
                              on_click=EventsState.mark_read, disabled=EventsState.unread_count == 0),
                    rx.button("Clear", size="1", variant="ghost", color_scheme="gray", id="clear-bell",
                              on_click=EventsState.clear_bell, disabled=EventsState.groups.length() == 0),
                    rx.link("History", href="/history", size="1"),
                    width="100%",
                    align="center",
                    spacing="3",
                ),
                rx.cond(
                    EventsState.groups.length() > 0,
                    rx.box(
                        rx.foreach(EventsState.groups, event_row),
                        id="recent-events",
                        width="100%",
                        max_height="320px",
                        overflow_y="auto",
                    ),
                    rx.text("Nothing new. Failures, completions and stalls of operations appear here "
                            "(choose which below).", size="2", color=styles.MUTED, id="recent-events-empty"),
                ),
                rx.cond(
                    EventsState.short_lived != "",
                    rx.text(EventsState.short_lived, size="1", color=styles.FAINT, id="bell-short-lived"),
                ),
                notification_settings(),
                spacing="3",
                width="100%",
            ),
            width="380px",
            max_width="95vw",
            on_open_auto_focus=EventsState.load_webhook,
        ),
        on_open_change=EventsState.bell_open_change,
    )


def logs_dialog() -> rx.Component:
    """The "View logs" dialog: the last lines captured with the event."""
    return rx.dialog.root(
        rx.dialog.content(
            rx.dialog.title(EventsState.logs_title),
            rx.dialog.description("The last lines of the operation's log when the event happened.",
                                  size="1", color=styles.MUTED),
            rx.el.pre(
                EventsState.logs_text,
                id="event-logs",
                style={"max_height": "50vh", "overflow": "auto", "font_size": "12px", "white_space": "pre-wrap",
                       "background": styles.SURFACE, "border": styles.BORDER, "padding": "8px",
                       "border_radius": styles.RADIUS},
            ),
            rx.hstack(
                rx.dialog.close(rx.button("Close", variant="soft", on_click=EventsState.close_logs)),
                justify="end",
                width="100%",
            ),
            max_width="760px",
        ),
        open=EventsState.logs_open,
        on_open_change=EventsState.logs_open_change,
    )


def notifications() -> rx.Component:
    """The bell and the log dialog; mounting it starts the events loop."""
    return rx.box(
        bell(),
        logs_dialog(),
        id="notifications",
        display="inline-flex",
        on_mount=[EventsState.bell_closed, EventsState.watch],
        on_unmount=EventsState.stop_watch,
    )
