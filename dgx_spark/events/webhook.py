"""The webhook sender: a thread with a bounded queue, retries and backoff.

Each event becomes one JSON POST with ``text`` (Slack, Mattermost, Rocket.Chat,
Google Chat), ``content`` (Discord) and the whole ``event`` (a terminal one with
``outcome``, ``exit_code``, ``exit_reason`` and ``outcome_source``). Nothing here runs
on the sampler's thread; when the queue is full the oldest event is dropped.

Names, details and log lines come from other people's processes, so they are
data: exact in ``event`` (JSON fields), and defused in the chat text — inline
code around the name, no mention (``<!channel>``, ``@everyone``, ``<@U1>``),
no link (``http://x`` -> ``http[:]//x``), Slack's ``& < >`` escaped, and
``allowed_mentions`` / ``link_names`` / unfurling turned off.
"""

from __future__ import annotations

import contextlib
import json
import logging
import queue
import re
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

from dgx_spark.health import health

logger = logging.getLogger(__name__)

EMOJI = {
    "failed": "❌",
    "completed": "✅",
    "stopped": "⏹",
    "stalled": "⚠️",
    "idle_gpu": "💤",
    "started": "▶️",
    "ready": "🟢",
}


# Chat dialects: Slack-like ``text`` (``<...>`` is markup, ``& < >`` escaped) and Discord ``content``.
SLACK = "slack"
DISCORD = "discord"
_ZWSP = "\u200b"  # zero-width space: breaks a mention or a link without changing what one reads
_MAX_NAME = 200
# scheme:// (or the scheme:__ a process name uses for "/") starts a link.
_SCHEME = re.compile(r"\b([A-Za-z][A-Za-z0-9+.-]{0,30}):(?=//|__|\\)")
_MENTION = re.compile(r"@(?=[\w!&#])")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f\u2028\u2029]")


def neutralise(text: str, dialect: str = SLACK, *, one_line: bool = True) -> str:
    """Make untrusted text safe to show in a chat message: no mention, no link, no markup escape.

    Args:
        text: A name, detail or log line from a process.
        dialect: ``SLACK`` (escape ``& < >``) or ``DISCORD`` (break ``<`` sequences).
        one_line: Turn line breaks into spaces (a name); keep them for a log excerpt.

    Returns:
        The text as it reads, with backticks, mentions and links defused.
    """
    text = _CONTROL.sub(" ", text)
    if one_line:
        text = text.replace("\n", " ").replace("\r", " ")
    text = text.replace("`", "\u02cb")  # cannot close our code span or block
    text = _SCHEME.sub(r"\1[:]", text)
    text = _MENTION.sub("@" + _ZWSP, text)
    if dialect == SLACK:
        return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    # Discord: <@id>, <@&role>, <#channel>, <t:...>, <http...> are markup; [x](url) needs a scheme.
    return text.replace("<", "<" + _ZWSP).replace("](", "]" + _ZWSP + "(")


def webhook_text(event: dict[str, Any], dialect: str = SLACK) -> str:
    """A one-line human message for an event, safe for the chat ``dialect``."""
    mark = EMOJI.get(str(event.get("kind")), "•")
    kind = neutralise(str(event.get("type") or "operation"), dialect)
    name = neutralise(str(event.get("name"))[:_MAX_NAME], dialect) or "?"
    detail = neutralise(str(event.get("detail") or event.get("kind")), dialect)
    text = f"{mark} {kind} `{name}`: {detail}"
    tail = event.get("log_tail") or []
    if event.get("kind") in ("failed", "stalled") and tail:
        lines = "\n".join(str(line) for line in tail[-5:])[:1500]
        text += "\n```\n" + neutralise(lines, dialect, one_line=False) + "\n```"
    return text


def webhook_body(event: dict[str, Any]) -> dict[str, Any]:
    """The JSON body POSTed for an event: chat text for Slack and Discord, the event as data."""
    return {
        "text": webhook_text(event, SLACK),
        "content": webhook_text(event, DISCORD)[:2000],
        # Discord: parse no mention at all; Slack: no @name linking, no link previews.
        "allowed_mentions": {"parse": []},
        "link_names": False,
        "unfurl_links": False,
        "unfurl_media": False,
        "event": event,
    }


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


class WebhookSender:
    """Sends events to the webhook URL from its own daemon thread."""

    def __init__(
        self,
        url_provider: Callable[[], str | None],
        *,
        max_queue: int = 200,
        attempts: int = 4,
        backoff: float = 1.0,
        max_backoff: float = 30.0,
        timeout: float = 5.0,
    ) -> None:
        """Create a sender; ``url_provider`` returns the URL to use now (None: off)."""
        self._url_provider = url_provider
        # None wakes the thread to stop (it blocks on the queue: no wake-ups while there is nothing to send).
        self._queue: queue.Queue[dict[str, Any] | None] = queue.Queue(maxsize=max_queue)
        self._attempts = attempts
        self._backoff = backoff
        self._max_backoff = max_backoff
        self._timeout = timeout
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._opener = urllib.request.build_opener(_NoRedirect())
        self.sent = 0
        self.failed = 0
        self.dropped = 0
        self.last_error: str | None = None

    def start(self) -> None:
        """Start the sender thread (idempotent)."""
        if self._thread is not None and self._thread.is_alive():
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="dgx-spark-webhook", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 2.0) -> None:
        """Stop the sender thread; unsent events are dropped."""
        self._stop.set()
        with contextlib.suppress(queue.Full):
            self._queue.put_nowait(None)
        if self._thread is not None:
            self._thread.join(timeout)
        self._thread = None

    def enqueue(self, event: dict[str, Any]) -> None:
        """Queue an event for sending; never blocks (drops the oldest when full)."""
        if not self._url_provider():
            return
        while True:
            try:
                self._queue.put_nowait(event)
                return
            except queue.Full:
                try:
                    self._queue.get_nowait()
                    self.dropped += 1
                except queue.Empty:
                    pass

    def _run(self) -> None:
        while not self._stop.is_set():
            event = self._queue.get()
            if event is None:
                continue
            try:
                self._deliver(event)
            except Exception:
                logger.warning("webhook: unexpected error", exc_info=True)

    def _deliver(self, event: dict[str, Any]) -> None:
        body = json.dumps(webhook_body(event)).encode()
        delay = self._backoff
        for attempt in range(1, self._attempts + 1):
            url = self._url_provider()
            if not url:
                return
            outcome = self._post(url, body)
            if outcome is None:
                self.sent += 1
                health.report_ok("webhook")
                return
            retry, message = outcome
            self.last_error = message
            if not retry or attempt == self._attempts:
                break
            logger.info("webhook: attempt %d failed (%s); retrying in %.1fs", attempt, message, delay)
            if self._stop.wait(delay):
                return
            delay = min(self._max_backoff, delay * 2)
        self.failed += 1
        health.report_error("webhook", f"gave up on event {event.get('id')}: {self.last_error}")
        logger.warning("webhook: giving up on event %s: %s", event.get("id"), self.last_error)

    def _post(self, url: str, body: bytes) -> tuple[bool, str] | None:
        """POST once. None on success, else (worth retrying, message)."""
        request = urllib.request.Request(
            url,
            data=body,
            method="POST",
            headers={"Content-Type": "application/json", "User-Agent": "dgx-spark-operations"},
        )
        try:
            with self._opener.open(request, timeout=self._timeout) as response:
                response.read(1024)
                return None
        except urllib.error.HTTPError as err:
            status = err.code
            return status >= 500 or status == 429, f"HTTP {status}"
        except (urllib.error.URLError, OSError, ValueError) as exc:
            return True, f"{type(exc).__name__}: {exc}"


def wait_drained(sender: WebhookSender, timeout: float) -> bool:
    """Wait until the queue is empty (tests and shutdown)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if sender._queue.empty():
            return True
        time.sleep(0.05)
    return False
