"""The list of remote nodes, kept in ``$DGX_SPARK_DATA_DIR/nodes.json`` (mode 0600).

Each node is ``{"id", "name", "url", "token", "added_at"}``. The token is the
remote node's API token: it stays in this file (readable by this user only,
like the app's own token file) and in the backend's memory; it is never returned
by the API nor sent to a browser (``Node.public`` leaves it out).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import re
import stat
import tempfile
import threading
import time
import urllib.parse
from pathlib import Path
from typing import Any

from dgx_spark.nodes.protocol import ALL_NODES, LOCAL_NODE

logger = logging.getLogger(__name__)

NODES_FILE = "nodes.json"
MAX_NODES = 64
MAX_NAME = 64
MAX_URL = 300
MIN_TOKEN = 16
MAX_TOKEN = 1024
_RESERVED = frozenset({LOCAL_NODE, ALL_NODES})


class NodeError(ValueError):
    """A node that cannot be added: ``field`` names the bad input, ``status`` the HTTP answer."""

    def __init__(self, field: str, message: str, status: int = 422, code: str | None = None) -> None:
        """Name the field and say what is wrong."""
        super().__init__(f"{field}: {message}" if field else message)
        self.field = field
        self.message = message
        self.status = status
        self.code = code


@dataclasses.dataclass(frozen=True)
class Node:
    """One remote node. ``token`` never leaves the backend."""

    id: str
    name: str
    url: str
    token: str = dataclasses.field(repr=False)
    added_at: float = 0.0

    def public(self) -> dict[str, Any]:
        """What the API may show: everything but the token."""
        return {"id": self.id, "name": self.name, "url": self.url, "added_at": self.added_at}


def clean_name(value: Any) -> str:
    """A node's display name: 1-64 printable characters.

    Raises:
        NodeError: For anything else.
    """
    if not isinstance(value, str) or not value.strip():
        raise NodeError("name", "must be a non-empty string")
    name = value.strip()
    if len(name) > MAX_NAME:
        raise NodeError("name", f"must be at most {MAX_NAME} characters")
    if not name.isprintable():
        raise NodeError("name", "must not contain control characters")
    return name


def clean_url(value: Any) -> str:
    """The node's base URL, ``http(s)://host[:port][/prefix]``, without a trailing slash.

    Raises:
        NodeError: For anything else (user info, query, fragment, spaces, other schemes).
    """
    if not isinstance(value, str) or not value.strip():
        raise NodeError("url", "must be a non-empty string such as http://spark-b:3000")
    raw = value.strip()
    if len(raw) > MAX_URL or not raw.isascii() or any(c.isspace() or not c.isprintable() for c in raw):
        raise NodeError("url", f"must be an ASCII URL of at most {MAX_URL} characters without spaces")
    try:
        parts = urllib.parse.urlsplit(raw)
        port = parts.port
    except ValueError as exc:
        raise NodeError("url", f"is not a valid URL ({exc})") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise NodeError("url", "must start with http:// or https:// and name a host")
    if parts.username is not None or parts.password is not None or "@" in parts.netloc:
        raise NodeError("url", "must not hold a user name or password (the token goes in the token field)")
    if parts.query or parts.fragment or raw.endswith(("?", "#")):
        raise NodeError("url", "must not have a query or a fragment")
    host = parts.hostname
    shown_host = f"[{host}]" if ":" in host else host
    netloc = f"{shown_host}:{port}" if port is not None else shown_host
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path.rstrip("/"), "", ""))


def clean_token(value: Any) -> str:
    """The remote node's API token: 16-1024 printable characters, no spaces.

    Raises:
        NodeError: For anything else (the message never repeats the value).
    """
    if not isinstance(value, str) or not value.strip():
        raise NodeError("token", "must be the node's API token (its DGX_SPARK_DATA_DIR/token)")
    token = value.strip()
    if not MIN_TOKEN <= len(token) <= MAX_TOKEN:
        raise NodeError("token", f"must be {MIN_TOKEN} to {MAX_TOKEN} characters")
    if not token.isprintable() or any(c.isspace() for c in token):
        raise NodeError("token", "must not contain spaces or control characters")
    return token


def slug(name: str) -> str:
    """An id made of a name: lower-case letters, digits and dashes (``node`` when none is left)."""
    text = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")[:24].strip("-")
    return text or "node"


class NodeStore:
    """The nodes file: read once, written atomically (0600) on every change; thread-safe."""

    def __init__(self, data_dir: Path) -> None:
        """Use ``data_dir/nodes.json`` (nothing is read until ``load``)."""
        self.path = Path(data_dir) / NODES_FILE
        self._lock = threading.Lock()
        self._nodes: dict[str, Node] = {}

    def load(self) -> list[Node]:
        """Read the file (a missing file is no nodes; a broken one is logged and kept aside)."""
        with self._lock:
            self._nodes = {node.id: node for node in self._read()}
            return list(self._nodes.values())

    def _read(self) -> list[Node]:
        try:
            info = self.path.lstat()
        except FileNotFoundError:
            return []
        except OSError as exc:
            logger.error("nodes: cannot read %s (%s); no remote nodes", self.path, exc)
            return []
        if not stat.S_ISREG(info.st_mode):
            logger.error("nodes: %s is not a regular file; no remote nodes", self.path)
            return []
        if stat.S_IMODE(info.st_mode) & 0o077:
            # Someone loosened it: tighten it again rather than keep tokens readable.
            with contextlib.suppress(OSError):
                os.chmod(self.path, 0o600)
            logger.warning("nodes: %s had mode %o; set to 600", self.path, stat.S_IMODE(info.st_mode))
        try:
            raw = json.loads(self.path.read_text(encoding="utf-8"))
            items = raw["nodes"]
            nodes = [
                Node(
                    id=str(item["id"]),
                    name=clean_name(item["name"]),
                    url=clean_url(item["url"]),
                    token=clean_token(item["token"]),
                    added_at=float(item.get("added_at") or 0.0),
                )
                for item in items
            ]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            aside = self.path.with_name(f"{NODES_FILE}.broken-{int(time.time())}")
            with contextlib.suppress(OSError):
                os.replace(self.path, aside)
            # The message names the problem, never the file's content (it holds tokens).
            logger.error("nodes: %s could not be read (%s); moved to %s, no remote nodes",
                         self.path, type(exc).__name__, aside.name)
            return []
        return nodes[:MAX_NODES]

    def _write(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        payload = {"nodes": [{**node.public(), "token": node.token} for node in self._nodes.values()]}
        fd, temp = tempfile.mkstemp(dir=self.path.parent, prefix=".nodes-", suffix=".tmp")
        try:
            os.fchmod(fd, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                json.dump(payload, handle, indent=1)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temp, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temp)
            raise

    def all(self) -> list[Node]:
        """Every node, in the order they were added."""
        with self._lock:
            return list(self._nodes.values())

    def get(self, node_id: str) -> Node | None:
        """The node with this id, if any."""
        with self._lock:
            return self._nodes.get(node_id)

    def add(self, name: Any, url: Any, token: Any) -> Node:
        """Check and store a new node.

        Raises:
            NodeError: Bad input (422), the same URL or name twice (409), too many nodes (409).
        """
        name, url, token = clean_name(name), clean_url(url), clean_token(token)
        with self._lock:
            if len(self._nodes) >= MAX_NODES:
                raise NodeError("", f"at most {MAX_NODES} nodes; remove one first", 409, "too_many_nodes")
            for node in self._nodes.values():
                if node.url == url:
                    raise NodeError("url", f"node {node.id} already has this URL", 409, "conflict")
                if node.name.lower() == name.lower():
                    raise NodeError("name", f"node {node.id} already has this name", 409, "conflict")
            base = slug(name)
            node_id, n = base, 2
            while node_id in self._nodes or node_id in _RESERVED:
                node_id, n = f"{base}-{n}", n + 1
            node = Node(id=node_id, name=name, url=url, token=token, added_at=round(time.time(), 3))
            self._nodes[node_id] = node
            try:
                self._write()
            except OSError:
                del self._nodes[node_id]
                raise
            return node

    def remove(self, node_id: str) -> Node | None:
        """Forget a node; None when there is none with this id."""
        with self._lock:
            node = self._nodes.pop(node_id, None)
            if node is not None:
                try:
                    self._write()
                except OSError:
                    self._nodes[node_id] = node
                    raise
            return node
