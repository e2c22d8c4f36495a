"""The notifications' state: the bell's grouped events, unread count, toasts, settings.

One background loop per browser tab reads the events recorder's in-memory ring
(no database query per tick) and turns new events of the kinds that notify
(failed, completed, stalled unless changed in the bell's settings) into bell
entries, toasts and, when the tab is hidden and the user opted in, browser
notifications. The bell groups similar entries; "Mark all read" and "Clear" are
per browser (kept in its local storage), events themselves stay in the history.
The list stays on the server while the bell is closed: a closed bell is sent its
unread count only, and the grouped list when it is opened (and while it is open).
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import reflex as rx
from reflex.event import EventSpec
from reflex_components_sonner.toast import ToastAction

from dgx_spark.events.churn import churn_note
from dgx_spark.events.config import (
    NOTIFY_CHOICES,
    InvalidNotifyKinds,
    InvalidWebhookUrl,
    is_masked_webhook_url,
    mask_webhook_url,
)
from dgx_spark.services import get_control, get_events, short_lived_ended
from dgx_spark.state import loops
from dgx_spark.state.actor import REFUSAL_TEXT, logged_in, ui_actor
from dgx_spark.state.operations import client_connected
from dgx_spark.supervisor.supervisor import ControlError

logger = logging.getLogger(__name__)

POLL_SECONDS = 1.0
RECENT_LIMIT = 50
DISCONNECT_GRACE_SECONDS = 3.0

# The bell's loop in the tabs' loop registry (state/loops.py), beside the tab's feed loop.
LOOP_KIND = "events"

# Run before a toast's "View logs" opens the dialog. Sonner gives focus back to the element focused
# before the toast when focus leaves the toast, and it did so while the dialog took focus: focus
# landed outside the dialog (on the bell, whose tooltip then took Escape). Blurring the toast button
# first lets sonner do that before the dialog opens; the dialog then takes focus and returns it there.
LEAVE_TOAST_JS = "document.activeElement?.closest('[data-sonner-toast]') && document.activeElement.blur()"


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


def _as_id(raw: Any) -> int:
    """A stored event id (0 when missing or not a number)."""
    try:
        return int(raw or 0)
    except (TypeError, ValueError):
        return 0


def group_events(views: list[dict[str, str]], read_id: int, cleared_id: int) -> list[dict[str, str]]:
    """Similar bell entries (same kind, type and name) as one group each, newest group first.

    Args:
        views: Event views, newest first.
        read_id: Events up to this id were read.
        cleared_id: Events up to this id were cleared from the bell.
    """
    groups: dict[tuple[str, str, str], dict[str, str]] = {}
    for view in views:
        event_id = _as_id(view["id"])
        if event_id <= cleared_id:
            continue
        key = (view["kind"], view["type"], view["name"])
        group = groups.get(key)
        if group is None:  # the newest event of the group speaks for it (its log stays on the server)
            shown = {k: v for k, v in view.items() if k != "log_tail"}
            group = groups[key] = {**shown, "count": "0", "unread": "0", "key": "|".join(key)}
        group["count"] = str(int(group["count"]) + 1)
        if event_id > read_id:
            group["unread"] = str(int(group["unread"]) + 1)
    return list(groups.values())


def short_lived_note() -> str:
    """'12 short-lived commands ended in the last 10 min' ('' when none)."""
    churn = short_lived_ended()
    return churn_note(*churn) if churn else ""


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

    # Events of the kinds that notify, newest first. A backend var: the browser gets the bell's
    # list (``groups``) only while the bell is open, so a new event costs a closed bell a few bytes.
    _recent: list[dict[str, str]] = []  # noqa: RUF012 - Reflex state vars
    # Whether this tab's bell is open (its list is sent only then).
    bell_open: bool = False
    # The newest event id this browser has read / cleared in the bell (kept across reloads).
    last_read_id: str = rx.LocalStorage("0", name="dgx_spark_last_read_event", sync=True)
    cleared_id: str = rx.LocalStorage("0", name="dgx_spark_cleared_event", sync=True)
    notify: str = rx.LocalStorage("off", name="dgx_spark_notify", sync=True)
    # Which kinds notify (a setting of the dashboard, changed in the bell's settings).
    notify_kinds: list[str] = []  # noqa: RUF012 - Reflex state var
    notify_message: str = ""
    notify_error: str = ""
    short_lived: str = ""
    logs_open: bool = False
    logs_title: str = ""
    logs_text: str = ""
    logs_operation_id: str = ""
    webhook_url: str = ""
    webhook_source: str = ""
    webhook_message: str = ""
    webhook_error: str = ""
    _last_id: int = -1
    _kinds_used: frozenset[str] | None = None

    @rx.var
    def groups(self) -> list[dict[str, str]]:
        """The bell's entries: similar events grouped, cleared ones left out (none while the bell is closed)."""
        if not self.bell_open:
            return []
        return group_events(self._recent, _as_id(self.last_read_id), _as_id(self.cleared_id))

    @rx.var
    def unread_count(self) -> int:
        """Events newer than the last one read (or cleared) in this browser."""
        seen = max(_as_id(self.last_read_id), _as_id(self.cleared_id))
        return sum(1 for e in self._recent if _as_id(e["id"]) > seen)

    @rx.var
    def unread_label(self) -> str:
        """The badge text ("9+" above nine)."""
        count = self.unread_count
        return "9+" if count > 9 else str(count)

    @rx.event
    def mark_read(self) -> None:
        """"Mark all read": everything listed so far is read."""
        if self._recent:
            newest = max(_as_id(e["id"]) for e in self._recent)
            self.last_read_id = str(max(newest, _as_id(self.last_read_id)))

    @rx.event
    def clear_bell(self) -> None:
        """"Clear": empty the bell in this browser (events stay in the history and the API)."""
        if self._recent:
            newest = max(_as_id(e["id"]) for e in self._recent)
            self.cleared_id = str(max(newest, _as_id(self.cleared_id)))
            self.last_read_id = str(max(newest, _as_id(self.last_read_id)))

    @rx.event
    def bell_open_change(self, value: bool) -> None:
        """Opening the bell lists its events and shows the current settings (reading is explicit: "Mark all read")."""
        self.bell_open = value is True
        if self.bell_open:
            self._load_notify_kinds()
            self.short_lived = short_lived_note()

    @rx.event
    def bell_closed(self) -> None:
        """A page (re)load: its bell starts closed, so no list is sent until it is opened."""
        self.bell_open = False

    def _load_notify_kinds(self) -> None:
        kinds = get_events().notify_kinds()
        self.notify_kinds = [k for k in NOTIFY_CHOICES if k in kinds]
        self.notify_message = ""
        self.notify_error = ""

    @rx.event
    async def set_notify_kind(self, kind: Any, on: Any) -> None:
        """Turn one kind's notifications on or off (a setting of the dashboard: through the control service)."""
        if not isinstance(kind, str) or kind not in NOTIFY_CHOICES or not isinstance(on, bool):
            return

        def save() -> list[str]:
            service = get_events()
            chosen = set(service.notify_kinds())
            if on:
                chosen.add(kind)
            else:
                chosen.discard(kind)
            try:
                return [k for k in NOTIFY_CHOICES if k in service.set_notify_kinds(sorted(chosen))]
            except InvalidNotifyKinds as err:
                raise ControlError("invalid", str(err)) from err
            except OSError as err:
                raise ControlError("unavailable", str(err)) from err
            except Exception as err:  # e.g. the database is busy: say so, keep the old choice
                raise ControlError("unavailable", type(err).__name__) from err

        try:
            kinds = await asyncio.to_thread(get_control().configure, ui_actor(self), "notifications", "notify_kinds",
                                            save, lambda kinds: ",".join(kinds) or "none")
        except ControlError as exc:
            self.notify_error, self.notify_message = REFUSAL_TEXT.get(exc.kind) or f"Not saved: {exc.message}.", ""
            return
        self.notify_kinds = kinds
        self.notify_error = ""
        self.notify_message = "Saved."

    @rx.event
    def show_logs(self, event_id: int) -> None:
        """Open the log dialog for one event (from a toast or the list)."""
        if not isinstance(event_id, int | str):
            return
        try:
            wanted = int(event_id)
        except ValueError:
            return
        for event in self._recent:
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
    def enable_notifications(self) -> EventSpec:
        """Ask the browser for permission to show notifications (opt-in)."""
        return rx.call_script(ENABLE_NOTIFICATIONS_JS, callback=EventsState.notifications_answer)

    @rx.event
    def notifications_answer(self, permission: Any) -> EventSpec | None:
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
        self.webhook_url = url if logged_in(self) else mask_webhook_url(url)
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
        """Validate and store the webhook URL (a change: through the control service); empty turns it off."""
        value = self.webhook_url

        def save() -> str | None:
            if is_masked_webhook_url(value):  # shown before logging in: never save the mask
                raise ControlError("invalid", "type the whole URL (reopen to see it)", "webhook")
            try:
                return get_events().set_webhook_url(value)
            except InvalidWebhookUrl as err:
                raise ControlError("invalid", str(err), "webhook") from err

        try:
            url = await asyncio.to_thread(get_control().configure, ui_actor(self), "webhook", "webhook", save,
                                          lambda url: "set" if url else "turned off")
        except ControlError as exc:
            self.webhook_error, self.webhook_message = REFUSAL_TEXT.get(exc.kind) or f"Not saved: {exc.message}.", ""
            return
        self.webhook_url = url or ""
        self.webhook_source = "ui"
        self.webhook_error = ""
        self.webhook_message = "Saved: events are POSTed there." if url else "Saved: webhook off."

    @rx.event
    def stop_watch(self) -> None:
        """End this tab's events loop."""
        loops.stop(self.router.session.client_token, LOOP_KIND)

    @rx.event(background=True)
    async def watch(self) -> Any:
        """Follow new events until the tab goes away; toast the important ones."""
        token = self.router.session.client_token
        if not token:
            return
        generation = loops.claim(token, LOOP_KIND)
        service = get_events()
        recorder = service.recorder
        missing_since: float | None = None
        loop = asyncio.get_running_loop()
        scanned_to = -1  # the newest event id when the ring was last read
        try:
            while loops.is_current(token, generation, LOOP_KIND):
                if client_connected(token):
                    missing_since = None
                elif missing_since is None:
                    missing_since = loop.time()
                elif loop.time() - missing_since > DISCONNECT_GRACE_SECONDS:
                    break
                kinds = service.notify_kinds()
                # First tick, or the kinds changed: list anew from the ring (nothing is toasted then).
                first = self._last_id < 0 or kinds != self._kinds_used
                after = 0 if first else self._last_id
                top = recorder.latest_id()  # before reading: nothing newer is skipped
                if not first and top == scanned_to:  # no event since the last read: nothing to list
                    await asyncio.sleep(POLL_SECONDS)
                    continue
                scanned_to = top
                fresh = recorder.recent(after_id=after, limit=RECENT_LIMIT, kinds=kinds)
                if fresh or first:
                    views = [event_view(e) for e in fresh]
                    async with self:
                        if not loops.is_current(token, generation, LOOP_KIND):
                            break
                        kept = [] if first else self._recent
                        self._recent = (list(reversed(views)) + kept)[:RECENT_LIMIT]
                        newest = max([after, *(int(v["id"]) for v in views)])
                        self._last_id = max(newest, top) if first else newest
                        self._kinds_used = kinds
                        chosen = [k for k in NOTIFY_CHOICES if k in kinds]
                        if chosen != self.notify_kinds:  # sent only when it changed
                            self.notify_kinds = chosen
                    if not first:  # events from before the tab opened are listed, not toasted
                        for view in views:
                            yield _toast(view)
                            yield rx.call_script(_notify_script(_title(view), view["detail"]))
                await asyncio.sleep(POLL_SECONDS)
        finally:
            loops.release(token, generation, LOOP_KIND)


def _title(view: dict[str, str]) -> str:
    return f"{view['name']} {view['kind'].replace('_', ' ')}"


def _toast(view: dict[str, str]) -> EventSpec:
    """The toast for an event, with a "View logs" action."""
    level = {"failed": "error", "completed": "success", "stalled": "warning"}.get(view["kind"], "info")
    # Reflex: a handler called on its class gives the EventSpec (mypy sees rx.event's namespace).
    show = EventsState.show_logs(int(view["id"]))  # type: ignore[operator]
    action = ToastAction(label="View logs", on_click=[rx.call_script(LEAVE_TOAST_JS), show])
    send = getattr(rx.toast, level)
    return send(
        _title(view),
        description=view["detail"],
        action=action,
        duration=10000,
        id=f"dgx-event-{view['id']}",
        class_name=f"dgx-event-toast dgx-event-{view['kind']}",
    )
