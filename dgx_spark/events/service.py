"""The events service of one backend process: store, recorder, webhook, detector.

Built once by ``dgx_spark.services`` (``Services.events``); its probe runs last in the
sampler, and the API and UI read through the same object.
The probe also takes quiet short-lived discovered commands off the operations
list (``events.churn``); ``churn.count()`` says how many ended recently.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from dgx_spark.collector.output import OutputHandles
from dgx_spark.events.churn import DEFAULT_WINDOW_SECONDS, ChurnCounter, hide_quiet_churn
from dgx_spark.events.config import (
    DEFAULT_NOTIFY_KINDS,
    EventsConfig,
    InvalidNotifyKinds,
    decode_notify_kinds,
    encode_notify_kinds,
    validate_notify_kinds,
    validate_webhook_url,
)
from dgx_spark.events.detector import EventDetector
from dgx_spark.events.recorder import EventRecorder
from dgx_spark.events.store import NOTIFY_KINDS_SETTING, WEBHOOK_SETTING, EventStore
from dgx_spark.events.webhook import WebhookSender

logger = logging.getLogger(__name__)


class EventsService:
    """Everything events need in one process, wired together."""

    def __init__(
        self,
        store: EventStore,
        config: EventsConfig,
        churn_window_seconds: float = DEFAULT_WINDOW_SECONDS,
        handles: OutputHandles | None = None,
    ) -> None:
        """Wire the store, webhook sender, recorder and detector (``handles``: the probes' open outputs)."""
        self.config = config
        self.store = store
        self._lock = threading.Lock()
        self._webhook_url: str | None = config.webhook_url
        self._webhook_source = "environment" if config.webhook_url else "unset"
        self._load_webhook_setting()
        self._notify_kinds: frozenset[str] = DEFAULT_NOTIFY_KINDS
        self._load_notify_kinds()
        self.webhook = WebhookSender(self.webhook_url)
        self.recorder = EventRecorder(
            store,
            retention_seconds=config.retention_seconds,
            log_tail_lines=config.log_tail_lines,
            on_event=self.webhook.enqueue,
            max_events=config.max_events,
            max_history=config.max_history,
        )
        self.detector = EventDetector(self.recorder.submit, handles)
        self.churn = ChurnCounter(churn_window_seconds)

    def sample(self, ctx: Any) -> None:
        """The sampler probe's work: detect transitions, then hide quiet churn from the list."""
        self.detector.sample(ctx)
        ctx.operations = hide_quiet_churn(ctx.operations, self.churn, ctx.now)

    def start(self) -> None:
        """Start the recorder and webhook threads."""
        self.webhook.start()
        self.recorder.start()

    def stop(self) -> None:
        """Stop the threads (queued events are stored first)."""
        self.recorder.stop()
        self.webhook.stop()

    def webhook_url(self) -> str | None:
        """The webhook URL in effect (UI setting first, then the environment)."""
        return self._webhook_url

    @property
    def webhook_source(self) -> str:
        """Where the URL in effect comes from: ``ui``, ``environment`` or ``unset``."""
        return self._webhook_source

    def set_webhook_url(self, raw: str) -> str | None:
        """Validate and store the webhook URL set in the UI ('' turns it off).

        Raises:
            InvalidWebhookUrl: When the URL is not an absolute http(s) URL.
        """
        url = validate_webhook_url(raw)
        self.store.put_setting(WEBHOOK_SETTING, url or "")
        with self._lock:
            self._webhook_url = url
            self._webhook_source = "ui"
        return url

    def reset_webhook_url(self) -> str | None:
        """Forget the UI setting; the environment's URL applies again."""
        self.store.delete_setting(WEBHOOK_SETTING)
        with self._lock:
            self._webhook_url = self.config.webhook_url
            self._webhook_source = "environment" if self.config.webhook_url else "unset"
        return self._webhook_url

    def notify_kinds(self) -> frozenset[str]:
        """The event kinds that raise a toast and a bell entry."""
        return self._notify_kinds

    def set_notify_kinds(self, kinds: Any) -> frozenset[str]:
        """Validate and store which kinds notify (set in the UI).

        Raises:
            InvalidNotifyKinds: When a kind is unknown.
        """
        if isinstance(kinds, str) or not hasattr(kinds, "__iter__"):
            raise InvalidNotifyKinds("expected a list of event kinds")
        chosen = validate_notify_kinds(kinds)
        self.store.put_setting(NOTIFY_KINDS_SETTING, encode_notify_kinds(chosen))
        with self._lock:
            self._notify_kinds = chosen
        return chosen

    def reset_notify_kinds(self) -> frozenset[str]:
        """Forget the UI setting: the defaults (failed, completed, stalled) apply again."""
        self.store.delete_setting(NOTIFY_KINDS_SETTING)
        with self._lock:
            self._notify_kinds = DEFAULT_NOTIFY_KINDS
        return DEFAULT_NOTIFY_KINDS

    def _load_notify_kinds(self) -> None:
        try:
            stored = self.store.get_setting(NOTIFY_KINDS_SETTING)
        except Exception:
            logger.warning("events: could not read the notification kinds", exc_info=True)
            return
        if stored is None:
            return
        try:
            self._notify_kinds = decode_notify_kinds(stored)
        except InvalidNotifyKinds:
            logger.warning("events: ignoring an invalid stored notification-kinds setting")

    def _load_webhook_setting(self) -> None:
        try:
            stored = self.store.get_setting(WEBHOOK_SETTING)
        except Exception:
            logger.warning("events: could not read the webhook setting", exc_info=True)
            return
        if stored is None:
            return
        try:
            self._webhook_url = validate_webhook_url(stored)
            self._webhook_source = "ui"
        except ValueError:
            logger.warning("events: ignoring an invalid stored webhook URL")


class EventsProbe:
    """The sampler probe: builds the service on first use, then runs its detector.

    A database that cannot be opened makes this probe fail (reported in the
    snapshot's errors) instead of stopping the sampler from being created.
    """

    name = "events"

    def __init__(self, service: Callable[[], EventsService]) -> None:
        """Use the service ``service()`` returns (built on its first call: ``Services.events``)."""
        self._service = service

    def sample(self, ctx: Any) -> None:
        """Run the detector over this snapshot, then hide quiet churn."""
        self._service().sample(ctx)
