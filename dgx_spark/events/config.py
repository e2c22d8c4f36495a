"""Settings of the events package, read from the environment.

- ``DGX_SPARK_HISTORY_DAYS``: how long events and ended operations are kept (default 7).
- ``DGX_SPARK_WEBHOOK_URL``: where each event is POSTed (http or https; empty: off).
"""

from __future__ import annotations

import dataclasses
import os
from urllib.parse import urlsplit

MAX_URL_LENGTH = 2000


class InvalidWebhookUrl(ValueError):
    """A webhook URL that is not an absolute http(s) URL."""


def validate_webhook_url(raw: str) -> str | None:
    """Check a webhook URL.

    Args:
        raw: The URL as typed; surrounding whitespace is ignored.

    Returns:
        The cleaned URL, or None for an empty value (webhook off).

    Raises:
        InvalidWebhookUrl: When the URL is not an absolute http(s) URL.
    """
    url = (raw or "").strip()
    if not url:
        return None
    if len(url) > MAX_URL_LENGTH:
        raise InvalidWebhookUrl(f"the URL is longer than {MAX_URL_LENGTH} characters")
    if any(ch.isspace() or ord(ch) < 32 or ord(ch) == 127 for ch in url):
        raise InvalidWebhookUrl("the URL must not contain spaces or control characters")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError as exc:
        raise InvalidWebhookUrl(f"the URL is malformed: {exc}") from exc
    if parts.scheme not in ("http", "https"):
        raise InvalidWebhookUrl("only http:// and https:// URLs are allowed")
    if not parts.hostname:
        raise InvalidWebhookUrl("the URL has no host")
    return url


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
    return bool(value) and (value == "***" or value.endswith("/…/***"))


@dataclasses.dataclass(frozen=True)
class EventsConfig:
    """Runtime settings of events, history and the webhook."""

    history_days: float = 7.0
    webhook_url: str | None = None
    log_tail_lines: int = 20

    @property
    def retention_seconds(self) -> float:
        """How long rows are kept, in seconds."""
        return self.history_days * 86400.0


def load_events_config() -> EventsConfig:
    """Read the events settings from the environment.

    Raises:
        ValueError: When a variable holds a bad value (the message names it).
    """
    raw_days = os.environ.get("DGX_SPARK_HISTORY_DAYS", "").strip()
    days = 7.0
    if raw_days:
        try:
            days = float(raw_days)
        except ValueError as exc:
            raise ValueError(f"DGX_SPARK_HISTORY_DAYS must be a number, got {raw_days!r}") from exc
        if not 0.0 < days <= 3650.0:
            raise ValueError(f"DGX_SPARK_HISTORY_DAYS must be between 0 and 3650, got {days}")
    try:
        url = validate_webhook_url(os.environ.get("DGX_SPARK_WEBHOOK_URL", ""))
    except InvalidWebhookUrl as exc:
        raise ValueError(f"DGX_SPARK_WEBHOOK_URL: {exc}") from exc
    return EventsConfig(history_days=days, webhook_url=url)
