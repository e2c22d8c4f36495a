"""The notifications' state: recent events, unread count, toasts, webhook setting.

One background loop per browser tab reads the events recorder's in-memory ring
(no database query per tick) and turns new failed/completed/stalled events into
toasts and, when the tab is hidden and the user opted in, browser notifications.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import threading
from typing import Any

import reflex as rx
from reflex_components_sonner.toast import ToastAction

from dgx_spark.events.config import (
    InvalidWebhookUrl,
    is_masked_webhook_url,
    mask_webhook_url,
)
from dgx_spark.events.service import get_events
from dgx_spark.security.audit import record_audit_soon
from dgx_spark.security.auth import authorize_event, event_client, event_is_authorized
from dgx_spark.state.operations import client_connected

logger = logging.getLogger(__name__)

TOAST_KINDS = frozenset({"failed", "completed", "stalled"})
POLL_SECONDS = 1.0
RECENT_LIMIT = 30
DISCONNECT_GRACE_SECONDS = 3.0

_lock = threading.Lock()
_generations = itertools.count(1)
_current: dict[str, int] = {}


def _claim(token: str) -> int:
    with _lock:
        generation = next(_generations)
        _current[token] = generation
        return generation


def _is_current(token: str, generation: int) -> bool:
    with _lock:
        return _current.get(token) == generation


def _release(token: str, generation: int) -> None:
    with _lock:
        if _current.get(token) == generation:
            del _current[token]


def event_view(event: dict[str, Any]) -> dict[str, str]:
    """What the bell's list shows of an event (all strings/ints for the browser)."""
    return {
        "id": str(int(event.get("id") or 0)),
        "operation_id": str(event.get("operation_id") or ""),
        "name": str(event.get("name") or ""),
        "kind": str(event.get("kind") or ""),
        "type": str(event.get("type") or ""),
        "at": str(event.get("at") or ""),
        "detail": str(event.get("detail") or ""),
        "exit_code": "" if event.get("exit_code") is None else str(event.get("exit_code")),
        "log_tail": "\n".join(event.get("log_tail") or []),
    }


def _notify_script(title: str, body: str) -> str:
    """JS that shows a system notification when the tab is hidden and allowed."""
    return (
        "(() => { try { if (document.hidden && window.Notification && "
        "Notification.permission === 'granted' && "
        "localStorage.getItem('dgx_spark_notify') === 'on') "
        f"{{ new Notification({json.dumps(title)}, {{body: {json.dumps(body)}, tag: 'dgx-spark'}}); }} "
        "} catch (e) {} })()"
    )


ENABLE_NOTIFICATIONS_JS = (
    "(async () => { if (!window.Notification) return 'unsupported'; "
    "const p = await Notification.requestPermission(); "
    "localStorage.setItem('dgx_spark_notify', p === 'granted' ? 'on' : 'off'); return p; })()"
)


class EventsState(rx.State):
    """Recent events for the bell, and the webhook setting."""

    recent: list[dict[str, str]] = []  # noqa: RUF012 - Reflex state vars
    # The newest event id this browser has seen in the bell (kept across reloads).
    last_read_id: str = rx.LocalStorage("0", name="dgx_spark_last_read_event", sync=True)
    notify: str = rx.LocalStorage("off", name="dgx_spark_notify", sync=True)
    logs_open: bool = False
    logs_title: str = ""
    logs_text: str = ""
    logs_operation_id: str = ""
    webhook_url: str = ""
    webhook_source: str = ""
    webhook_message: str = ""
    webhook_error: str = ""
    _last_id: int = -1

    @rx.var
    def unread_count(self) -> int:
        """Events newer than the last one the user saw in the bell."""
        try:
            read = int(self.last_read_id or 0)
        except ValueError:
            read = 0
        return sum(1 for e in self.recent if int(e["id"]) > read)

    @rx.var
    def unread_label(self) -> str:
        """The badge text ("9+" above nine)."""
        count = self.unread_count
        return "9+" if count > 9 else str(count)

    @rx.event
    def mark_read(self) -> None:
        """The bell was opened: everything listed is read."""
        self._mark_read()

    def _mark_read(self) -> None:
        if self.recent:
            self.last_read_id = str(max(int(e["id"]) for e in self.recent))

    @rx.event
    def bell_open_change(self, value: bool) -> None:
        """Opening the bell marks its events read."""
        if value is True:
            self._mark_read()

    @rx.event
    def show_logs(self, event_id: int) -> None:
        """Open the log dialog for one event (from a toast or the list)."""
        if not isinstance(event_id, int | str):
            return
        try:
            wanted = int(event_id)
        except ValueError:
            return
        for event in self.recent:
            if int(event["id"]) == wanted:
                self.logs_title = f"{event['name']} — {event['kind']}"
                self.logs_text = event["log_tail"] or "(no log lines were captured for this operation)"
                self.logs_operation_id = event["operation_id"]
                self.logs_open = True
                return

    @rx.event
    def close_logs(self) -> None:
        """Close the log dialog."""
        self.logs_open = False

    @rx.event
    def logs_open_change(self, value: bool) -> None:
        """The dialog asked to open/close (Escape, outside click)."""
        self.logs_open = bool(value) and self.logs_open

    @rx.event
    def enable_notifications(self) -> rx.event.EventSpec:
        """Ask the browser for permission to show notifications (opt-in)."""
        return rx.call_script(ENABLE_NOTIFICATIONS_JS, callback=EventsState.notifications_answer)

    @rx.event
    def notifications_answer(self, permission: Any) -> rx.event.EventSpec | None:
        """The browser's answer to the permission request."""
        granted = permission == "granted"
        self.notify = "on" if granted else "off"
        if not granted:
            return rx.toast.warning("Browser notifications are not allowed in this browser.")
        return rx.toast.success("Browser notifications on: you will be told while this tab is hidden.")

    @rx.event
    def disable_notifications(self) -> None:
        """Turn browser notifications off again."""
        self.notify = "off"

    @rx.event
    def load_webhook(self) -> None:
        """Show the webhook URL in effect (masked unless this browser logged in: it holds a secret)."""
        service = get_events()
        url = service.webhook_url() or ""
        self.webhook_url = url if event_is_authorized(self) else mask_webhook_url(url)
        self.webhook_source = service.webhook_source
        self.webhook_message = ""
        self.webhook_error = ""

    @rx.event
    def edit_webhook(self, value: Any) -> None:
        """The URL field changed (not saved yet)."""
        self.webhook_url = str(value)[:2100] if isinstance(value, str) else ""
        self.webhook_error = ""
        self.webhook_message = ""

    @rx.event
    async def save_webhook(self) -> None:
        """Validate and store the webhook URL; an empty value turns it off."""
        refused = authorize_event(self, "webhook")  # a change: the login cookie is required
        if refused:
            self.webhook_error, self.webhook_message = refused, ""
            return
        if is_masked_webhook_url(self.webhook_url):  # shown before logging in: never save the mask
            self.webhook_error, self.webhook_message = "Not saved: type the whole URL (reopen to see it).", ""
            return
        try:
            url = await asyncio.to_thread(get_events().set_webhook_url, self.webhook_url)
        except InvalidWebhookUrl as err:
            self.webhook_error = f"Not saved: {err}."
            self.webhook_message = ""
            return
        self.webhook_url = url or ""
        self.webhook_source = "ui"
        self.webhook_error = ""
        self.webhook_message = "Saved: events are POSTed there." if url else "Saved: webhook off."
        record_audit_soon("webhook", "allowed", target="webhook", client=event_client(self), via="ui",
                     detail="set" if url else "turned off")

    @rx.event
    def stop_watch(self) -> None:
        """End this tab's events loop."""
        with _lock:
            _current.pop(self.router.session.client_token, None)

    @rx.event(background=True)
    async def watch(self) -> Any:
        """Follow new events until the tab goes away; toast the important ones."""
        token = self.router.session.client_token
        if not token:
            return
        generation = _claim(token)
        recorder = get_events().recorder
        missing_since: float | None = None
        loop = asyncio.get_running_loop()
        try:
            while _is_current(token, generation):
                if client_connected(token):
                    missing_since = None
                elif missing_since is None:
                    missing_since = loop.time()
                elif loop.time() - missing_since > DISCONNECT_GRACE_SECONDS:
                    break
                first = self._last_id < 0
                fresh = recorder.recent(after_id=max(self._last_id, 0), limit=RECENT_LIMIT)
                if fresh or first:
                    views = [event_view(e) for e in fresh]
                    async with self:
                        if not _is_current(token, generation):
                            break
                        self.recent = (list(reversed(views)) + self.recent)[:RECENT_LIMIT]
                        self._last_id = max([self._last_id, 0, *(int(v["id"]) for v in views)])
                    if not first:  # events from before the tab opened are listed, not toasted
                        for view in views:
                            if view["kind"] in TOAST_KINDS:
                                yield _toast(view)
                                yield rx.call_script(_notify_script(_title(view), view["detail"]))
                await asyncio.sleep(POLL_SECONDS)
        finally:
            _release(token, generation)


def _title(view: dict[str, str]) -> str:
    return f"{view['name']} {view['kind'].replace('_', ' ')}"


def _toast(view: dict[str, str]) -> rx.event.EventSpec:
    """The toast for an event, with a "View logs" action."""
    level = {"failed": "error", "completed": "success", "stalled": "warning"}.get(view["kind"], "info")
    action = ToastAction(label="View logs", on_click=EventsState.show_logs(int(view["id"])))
    send = getattr(rx.toast, level)
    return send(
        _title(view),
        description=view["detail"],
        action=action,
        duration=10000,
        id=f"dgx-event-{view['id']}",
        class_name=f"dgx-event-toast dgx-event-{view['kind']}",
    )
