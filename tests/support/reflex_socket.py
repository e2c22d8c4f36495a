"""A tiny Reflex client: the websocket at /_event, spoken raw (Engine.IO 4 / Socket.IO 5).

It sends events exactly as any client could, arguments of any JSON type included,
so tests can call event handlers by name the way an attacker would.
"""

from __future__ import annotations

import contextlib
import json
import socket
import time
import uuid
from typing import Any

from wsproto import ConnectionType, WSConnection
from wsproto.events import (
    AcceptConnection,
    CloseConnection,
    Message,
    Ping,
    RejectConnection,
    Request,
    TextMessage,
)

NAMESPACE = "/_event"


class ReflexSocket:
    """One websocket session with the Reflex backend."""

    def __init__(self, port: int, *, origin: str | None = None, cookie: str | None = None) -> None:
        """Open the websocket and join the event namespace."""
        self.port = port
        self.token = str(uuid.uuid4())
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        self.ws = WSConnection(ConnectionType.CLIENT)
        headers = [(b"origin", (origin or f"http://127.0.0.1:{port}").encode())]
        if cookie:
            headers.append((b"cookie", cookie.encode()))
        target = f"{NAMESPACE}/?EIO=4&transport=websocket&token={self.token}"
        self.sock.sendall(
            self.ws.send(Request(host=f"127.0.0.1:{port}", target=target, extra_headers=headers))
        )
        self.updates: list[Any] = []
        self._pending: list[str] = []
        self._partial = ""
        self._queue: list[Any] = []
        self._await(lambda e: isinstance(e, AcceptConnection), "handshake")
        self._read_text(lambda t: t.startswith("0"))  # Engine.IO open
        self._send_text(f"40{NAMESPACE},")
        self._read_text(lambda t: t.startswith(f"40{NAMESPACE}"))

    def _send_text(self, text: str) -> None:
        self.sock.sendall(self.ws.send(Message(data=text)))

    def _events(self, timeout: float) -> list[Any]:
        if self._queue:
            queued, self._queue = self._queue, []
            return queued
        self.sock.settimeout(timeout)
        try:
            data = self.sock.recv(65536)
        except TimeoutError:
            return []
        if not data:
            raise ConnectionError("the server closed the websocket")
        self.ws.receive_data(data)
        return list(self.ws.events())

    def _await(self, predicate: Any, what: str, timeout: float = 30.0) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            events = self._events(1.0)
            for i, event in enumerate(events):
                if isinstance(event, RejectConnection):
                    raise ConnectionRefusedError(f"websocket refused with status {event.status_code}")
                if predicate(event):
                    self._queue = events[i + 1 :] + self._queue
                    return event
        raise TimeoutError(f"no {what} within {timeout}s")

    def _read_text(self, predicate: Any, timeout: float = 30.0) -> str:
        buffered = [t for t in self._pending if predicate(t)]
        if buffered:
            self._pending.remove(buffered[0])
            return buffered[0]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            events = self._events(1.0)
            for i, event in enumerate(events):
                if isinstance(event, Ping):
                    self.sock.sendall(self.ws.send(event.response()))
                elif isinstance(event, CloseConnection):
                    raise ConnectionError(f"websocket closed: {event.code} {event.reason}")
                elif isinstance(event, TextMessage):
                    # wsproto hands over a long message in pieces.
                    self._partial += event.data
                    if not event.message_finished:
                        continue
                    text, self._partial = self._partial, ""
                    if text == "2":  # Engine.IO ping
                        self._send_text("3")
                        continue
                    if predicate(text):
                        self._queue = events[i + 1 :] + self._queue
                        return text
                    self._pending.append(text)
        raise TimeoutError(f"no matching message within {timeout}s")

    def emit(self, name: str, payload: dict[str, Any], path: str = "/") -> None:
        """Send one event (a handler's full name and its arguments by name)."""
        event = {"name": name, "payload": payload, "router_data": {"pathname": path, "query": {}}}
        self._send_text(f"42{NAMESPACE}," + json.dumps(["event", event]))

    def next_update(self, timeout: float = 30.0) -> dict[str, Any]:
        """The next state update the server pushes (``{"delta": ..., "events": ..., "final": ...}``)."""
        text = self._read_text(lambda t: t.startswith(f"42{NAMESPACE},"), timeout)
        _, body = text.split(",", 1)
        message = json.loads(body)
        return message[1] if isinstance(message, list) and len(message) > 1 else message

    def call(self, name: str, payload: dict[str, Any], timeout: float = 30.0) -> list[dict[str, Any]]:
        """Send an event and collect the updates until the server says it is done."""
        self.emit(name, payload)
        updates: list[dict[str, Any]] = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            update = self.next_update(max(0.1, deadline - time.monotonic()))
            updates.append(update)
            if isinstance(update, dict) and update.get("final"):
                return updates
        return updates

    def close(self) -> None:
        """Close the websocket."""
        with contextlib.suppress(Exception):
            self.sock.sendall(self.ws.send(CloseConnection(code=1000)))
        self.sock.close()

    def __enter__(self) -> ReflexSocket:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
