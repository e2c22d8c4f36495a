"""Settings of the events package (``Settings.events``, read by dgx_spark/settings.py).

- ``DGX_SPARK_HISTORY_DAYS``: how long events and ended operations are kept (default 7).
- ``DGX_SPARK_WEBHOOK_URL``: where each event is POSTed (http or https; empty: off).

Which event kinds notify (bell and toasts) is a UI setting; ``DEFAULT_NOTIFY_KINDS``
applies until it is changed.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

# The webhook URL check lives with the settings, which check DGX_SPARK_WEBHOOK_URL at start; re-exported here.
from dgx_spark.settings import InvalidWebhookUrl as InvalidWebhookUrl
from dgx_spark.settings import validate_webhook_url as validate_webhook_url

if TYPE_CHECKING:
    from dgx_spark.settings import EventSettings

# Every kind of event, in the order the UI lists them (the store's EVENT_KINDS).
NOTIFY_CHOICES: tuple[str, ...] = ("failed", "completed", "stalled", "stopped", "started", "ready", "idle_gpu")
# What is worth a toast and a bell entry unless the user says otherwise.
DEFAULT_NOTIFY_KINDS: frozenset[str] = frozenset({"failed", "completed", "stalled"})


class InvalidNotifyKinds(ValueError):
    """A notification setting naming an unknown event kind."""


def validate_notify_kinds(kinds: Iterable[object]) -> frozenset[str]:
    """Check a set of event kinds that should notify (may be empty: nothing notifies).

    Raises:
        InvalidNotifyKinds: When an item is not a known event kind.
    """
    result: set[str] = set()
    for kind in kinds:
        if not isinstance(kind, str) or kind not in NOTIFY_CHOICES:
            raise InvalidNotifyKinds(f"unknown event kind {str(kind)[:40]!r}; expected {', '.join(NOTIFY_CHOICES)}")
        result.add(kind)
    return frozenset(result)


def encode_notify_kinds(kinds: Iterable[str]) -> str:
    """The stored form of a notify-kinds setting (a JSON list in the UI's order)."""
    chosen = set(kinds)
    return json.dumps([k for k in NOTIFY_CHOICES if k in chosen])


def decode_notify_kinds(raw: str) -> frozenset[str]:
    """Read a stored notify-kinds setting.

    Raises:
        InvalidNotifyKinds: When it is not a JSON list of known kinds.
    """
    try:
        value = json.loads(raw)
    except ValueError as exc:
        raise InvalidNotifyKinds("not a JSON list") from exc
    if not isinstance(value, list):
        raise InvalidNotifyKinds("not a JSON list")
    return validate_notify_kinds(value)


def mask_webhook_url(url: str | None) -> str:
    """The webhook URL with its secret part hidden, for a browser that has not logged in.

    Webhook URLs carry their secret in the path or query (Slack, Discord, ntfy), so only
    the scheme and host are kept: ``https://hooks.slack.com/…/***``.
    """
    if not url:
        return ""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "***"
    if not parts.scheme or not host:
        return "***"
    if ":" in host:
        host = f"[{host}]"
    return f"{parts.scheme}://{host}{port}/…/***"


def is_masked_webhook_url(value: str | None) -> bool:
    """Whether ``value`` is a masked URL as ``mask_webhook_url`` shows it (never saved back)."""
    return value is not None and (value == "***" or value.endswith("/…/***"))


@dataclasses.dataclass(frozen=True)
class EventsConfig:
    """Runtime settings of events, history and the webhook."""

    history_days: float = 7.0
    webhook_url: str | None = None
    log_tail_lines: int = 20
    # Hard caps, so churn cannot grow the tables without bound within the retention period.
    max_events: int = 50_000
    max_history: int = 10_000

    @property
    def retention_seconds(self) -> float:
        """How long rows are kept, in seconds."""
        return self.history_days * 86400.0


def events_config(section: EventSettings) -> EventsConfig:
    """The events config of the app's settings (``Settings.events``, checked when they were read)."""
    return EventsConfig(history_days=section.history_days, webhook_url=section.webhook_url)
