"""A test double of a container engine: the Docker Engine API subset the dashboard uses, on a unix socket.

Answers in the documented shapes (Docker Engine API v1.41+, which Podman's
compatible socket also speaks): ``GET /version``, ``GET /containers/json``,
``GET /containers/{id}/json``, ``POST /containers/{id}/stop?t=``,
``POST /containers/{id}/start``, ``GET /containers/{id}/logs`` (multiplexed
frames with an 8-byte header, or a raw stream for a TTY container).
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import http.server
import json
import os
import socketserver
import threading
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any


@dataclasses.dataclass
class FakeContainer:
    """One container the fake engine knows."""

    id: str
    name: str
    image: str = "localhost/test:1"
    ports: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    running: bool = True
    tty: bool = False
    logs: list[tuple[int, str, str]] = dataclasses.field(default_factory=list)
    """(ns since the epoch, "stdout" | "stderr", text)."""

    def list_item(self) -> dict[str, Any]:
        """This container as ``GET /containers/json`` lists it."""
        return {
            "Id": self.id, "Names": [f"/{self.name}"], "Image": self.image, "ImageID": "sha256:" + "0" * 64,
            "Command": "/bin/server", "Created": 1_700_000_000, "Ports": self.ports, "Labels": {"app": "test"},
            "State": "running" if self.running else "exited", "Status": "Up 5 seconds" if self.running else "Exited (0)",
        }


@dataclasses.dataclass
class FakeEngine:
    """The engine's state and what it was asked."""

    flavor: str = "docker"
    containers: dict[str, FakeContainer] = dataclasses.field(default_factory=dict)
    requests: list[tuple[str, str]] = dataclasses.field(default_factory=list)
    delay: float = 0.0
    """Seconds every answer waits (a slow engine)."""
    gate: threading.Event | None = None
    """When set to an event, every answer waits until the test sets it (an engine busy with a request)."""
    broken: bool = False
    """Answer every request with non-JSON garbage."""
    socket_path: str = ""

    def add(self, container: FakeContainer) -> FakeContainer:
        """Add a container."""
        self.containers[container.id] = container
        return container


def _rfc3339(ns: int) -> str:
    moment = dt.datetime.fromtimestamp(ns // 1_000_000_000, tz=dt.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S") + f".{ns % 1_000_000_000:09d}Z"


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    engine: FakeEngine

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet."""

    def _send(self, status: int, body: bytes = b"", content_type: str = "application/json") -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if body:
            self.wfile.write(body)

    def _json(self, status: int, data: Any) -> None:
        self._send(status, json.dumps(data).encode())

    def _route(self, method: str) -> None:
        engine = self.engine
        url = urllib.parse.urlsplit(self.path)
        query = dict(urllib.parse.parse_qsl(url.query))
        engine.requests.append((method, self.path))
        if engine.delay:
            time.sleep(engine.delay)
        if engine.gate is not None:
            engine.gate.wait(120)
        if engine.broken:
            self._send(200, b"<html>not an engine</html>", "text/html")
            return
        parts = [p for p in url.path.split("/") if p]
        if parts and parts[0].startswith("v1."):
            parts = parts[1:]
        if method == "GET" and parts == ["version"]:
            if engine.flavor == "podman":
                self._json(200, {"Platform": {"Name": "linux/amd64/debian-12"},
                                 "Components": [{"Name": "Podman Engine", "Version": "4.3.1"}], "Version": "4.3.1"})
            else:
                self._json(200, {"Platform": {"Name": "Docker Engine - Community"},
                                 "Components": [{"Name": "Engine", "Version": "28.2.2"}], "Version": "28.2.2",
                                 "ApiVersion": "1.50"})
            return
        if method == "GET" and parts == ["containers", "json"]:
            self._json(200, [c.list_item() for c in engine.containers.values() if c.running])
            return
        if len(parts) >= 3 and parts[0] == "containers":
            container = engine.containers.get(parts[1])
            if container is None:
                self._json(404, {"message": f"No such container: {parts[1]}"})
                return
            action = parts[2]
            if method == "GET" and action == "json":
                self._json(200, {"Id": container.id, "Name": f"/{container.name}",
                                 "State": {"Running": container.running, "Status": "running" if container.running else "exited"},
                                 "Config": {"Image": container.image, "Tty": container.tty}})
                return
            if method == "POST" and action in ("stop", "start"):
                wanted = action == "start"
                if container.running == wanted:
                    self._send(304)
                    return
                container.running = wanted
                self._send(204)
                return
            if method == "GET" and action == "logs":
                self._send(200, self._logs(container, query), "application/vnd.docker.multiplexed-stream")
                return
        self._json(404, {"message": f"page not found: {url.path}"})

    def _logs(self, container: FakeContainer, query: dict[str, str]) -> bytes:
        lines = list(container.logs)
        if query.get("since"):
            seconds, _, fraction = query["since"].partition(".")
            since = int(seconds) * 1_000_000_000 + int((fraction or "0").ljust(9, "0")[:9])
            lines = [line for line in lines if line[0] >= since]
        tail = query.get("tail", "all")
        if tail != "all" and tail.isdigit():
            lines = lines[-int(tail):] if int(tail) else []
        out = b""
        for at_ns, stream, text in lines:
            payload = ((_rfc3339(at_ns) + " ") if query.get("timestamps") in ("1", "true") else "") + text + "\n"
            data = payload.encode()
            if container.tty:
                out += data
            else:
                out += bytes([2 if stream == "stderr" else 1, 0, 0, 0]) + len(data).to_bytes(4, "big") + data
        return out

    def do_GET(self) -> None:
        """Answer a GET."""
        self._route("GET")

    def do_POST(self) -> None:
        """Answer a POST."""
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        self._route("POST")


class _Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True


@contextlib.contextmanager
def running_engine(folder: Path, flavor: str = "docker", name: str = "engine.sock") -> Iterator[FakeEngine]:
    """A fake engine listening on ``folder/name`` until the block ends."""
    engine = FakeEngine(flavor=flavor)
    path = folder / name
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    handler = type("Handler", (_Handler,), {"engine": engine})
    server = _Server(str(path), handler)
    os.chmod(path, 0o660)
    engine.socket_path = str(path)
    thread = threading.Thread(target=server.serve_forever, name="fake-engine", daemon=True)
    thread.start()
    try:
        yield engine
    finally:
        server.shutdown()
        server.server_close()
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
