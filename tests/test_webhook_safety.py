"""Webhook payloads: names are data, chat text has no mention and no link.

A process name is chosen by whoever started the process. Posted verbatim, it could
ping a whole Slack or Discord channel and carry a clickable phishing link. These
tests send hostile names through the real sender (and the real events service) to
the real HTTP receiver and check what a chat service would get.
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlmodel import SQLModel

from dgx_spark.collector.model import Operation
from dgx_spark.collector.sampler import Sampler
from dgx_spark.events.config import events_config
from dgx_spark.events.service import EventsService
from dgx_spark.events.store import TABLES, EventStore
from dgx_spark.events.webhook import DISCORD, SLACK, WebhookSender, neutralise, webhook_body
from dgx_spark.settings import EventSettings
from tests.support.dashboard import wait_until
from tests.support.webhook_receiver import WebhookReceiver

HOSTILE = "<!channel> @everyone re-login at http:__evil.example.py"
LOG_TAIL = [
    "Traceback (most recent call last):",
    "see <https://evil.example/login|the login page> or [here](https://evil.example) @here <@U024BE7LH>",
    "``` broke out ``` <#C123> <@&987> & done",
]

# What a chat service would turn into a ping or a link.
SLACK_MARKUP = re.compile(r"<[!@#]|<https?:|<[^>]*\|")
DISCORD_MARKUP = re.compile(r"<[@#!:/at]|@(everyone|here)\b|\]\(")
LINK = re.compile(r"\b[a-z][a-z0-9+.-]*://", re.IGNORECASE)


def _assert_chat_safe(body: dict[str, Any]) -> None:
    text, content = body["text"], body["content"]
    assert not SLACK_MARKUP.search(text), text
    assert not re.search(r"@(everyone|here|channel)\b", text), text
    assert not DISCORD_MARKUP.search(content), content
    assert not LINK.search(text) and not LINK.search(content)
    assert body["allowed_mentions"] == {"parse": []}
    assert body["link_names"] is False and body["unfurl_links"] is False


def test_hostile_name_posted_to_a_real_receiver_is_data_not_chat_markup() -> None:
    event = {"id": 9, "kind": "failed", "type": "program", "name": HOSTILE, "operation_id": "pid-1-1",
             "detail": "failed with exit code 1", "log_tail": LOG_TAIL}
    with WebhookReceiver() as receiver:
        sender = WebhookSender(lambda: receiver.url, backoff=0.05)
        sender.start()
        try:
            sender.enqueue(event)
            wait_until(lambda: receiver.bodies, timeout=30)
        finally:
            sender.stop()
    body = receiver.bodies[0]
    # The name as data: exact, in a JSON field.
    assert body["event"]["name"] == HOSTILE and body["event"]["log_tail"] == LOG_TAIL
    _assert_chat_safe(body)
    # Still readable: the name (in inline code), the outcome and the log lines are there.
    assert body["text"].startswith("❌ program `&lt;!channel&gt; @\u200beveryone re-login at http[:]__evil.example.py`:")
    assert "failed with exit code 1" in body["content"] and "Traceback" in body["content"]
    # The log excerpt cannot close its code block: exactly one opening and one closing fence.
    assert body["text"].count("```") == 2 and body["content"].count("```") == 2


@pytest.mark.parametrize(
    ("raw", "slack", "discord"),
    [
        ("<!channel>", "&lt;!channel&gt;", "<\u200b!channel>"),
        ("<!here|here>", "&lt;!here|here&gt;", "<\u200b!here|here>"),
        ("<@U024BE7LH>", "&lt;@\u200bU024BE7LH&gt;", "<\u200b@\u200bU024BE7LH>"),
        ("@everyone @here", "@\u200beveryone @\u200bhere", "@\u200beveryone @\u200bhere"),
        ("<https://evil.example|click>", "&lt;https[:]//evil.example|click&gt;", "<\u200bhttps[:]//evil.example|click>"),
        ("[click](https://evil.example)", "[click](https[:]//evil.example)", "[click]\u200b(https[:]//evil.example)"),
        ("http:__evil.example.py", "http[:]__evil.example.py", "http[:]__evil.example.py"),
        ("a & b", "a &amp; b", "a & b"),
        ("`code` escape", "\u02cbcode\u02cb escape", "\u02cbcode\u02cb escape"),
        ("two\nlines\r", "two lines ", "two lines "),
    ],
)
def test_neutralise_table(raw: str, slack: str, discord: str) -> None:
    assert neutralise(raw, SLACK) == slack
    assert neutralise(raw, DISCORD) == discord


@pytest.mark.parametrize("name", ["train.py", "vllm serve Qwen/Qwen2-7B", "llama-server :8080", "torchrun ×4"])
def test_ordinary_names_read_the_same(name: str) -> None:
    body = webhook_body({"id": 1, "kind": "completed", "type": "job", "name": name, "detail": "completed"})
    assert f"`{name}`" in body["text"] and body["content"] == body["text"]


def test_events_service_end_to_end_with_a_hostile_operation_name(tmp_path: Path) -> None:
    """Sampler -> detector -> recorder -> store -> sender -> real receiver."""
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'events.db'}")
    SQLModel.metadata.create_all(engine, tables=TABLES)
    store = EventStore(engine)
    with WebhookReceiver() as receiver:
        service = EventsService(store, events_config(EventSettings()))
        service.set_webhook_url(receiver.url)
        service.start()
        try:
            ops: list[Operation] = []
            sampler = Sampler(lambda now: list(ops), [service.detector])
            sampler.sample_once()
            ops = [Operation(id="pid-7-1", status="running", type="program", name=HOSTILE, started_at_ts=1000.0)]
            sampler.sample_once()
            ops = [ops[0].replace(status="stopped", ended_at_ts=time.time(), pids=())]
            sampler.sample_once()
            wait_until(lambda: len(receiver.bodies) == 2, timeout=30)
        finally:
            service.stop()
    assert [b["event"]["name"] for b in receiver.bodies] == [HOSTILE, HOSTILE]
    for body in receiver.bodies:
        _assert_chat_safe(body)
