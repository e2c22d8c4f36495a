"""One poller per remote node: its operation list, once per refresh, in the backend.

Each poller is a daemon thread with its own HTTP connection. Every tick it asks the
node for ``GET /api/dgx/operations`` with the node's token, with a timeout shorter
than the refresh, and keeps what it learnt in an immutable ``NodeState``:

- ``online``: the node answered its list (the list, latency and version are kept);
- ``offline``: no answer (refused, timed out, a 5xx); the poller backs off
  (refresh x 2, x 4 ... up to ``DGX_SPARK_NODE_BACKOFF_MAX_SECONDS``);
- ``unauthorized``: the node refused the token (401/403);
- ``incompatible``: something answered, but not a DGX Spark node of this protocol.

The last list is kept when the node drops out: it is shown *stale*, with its age.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

import httpx

from dgx_spark import format as fmt
from dgx_spark.collector.model import API_FIELDS, OPERATION_STATUSES, OPERATION_TYPES
from dgx_spark.nodes.protocol import NODE_API, NODE_API_HEADER, VERSION_HEADER, app_version
from dgx_spark.nodes.store import Node

logger = logging.getLogger(__name__)

STATUSES: tuple[str, ...] = ("connecting", "online", "offline", "unauthorized", "incompatible")
LIST_PATH = "/api/dgx/operations"
MAX_BODY_BYTES = 32 * 1024 * 1024
USER_AGENT = f"dgx-spark-node-poller/{app_version()}"
# Fields whose values must be numbers (else they become null) and text (else null).
_NUMBERS = frozenset({"port", "progress", "pid", "uptime", "process_count", "exit_code", "cpu_percent",
                      "memory_bytes", "gpu_memory_bytes", "gpu_utilization", "total_epochs", "eta_seconds",
                      "throughput", "run", "runs", "restarts"})
_TEXTS = frozenset({"description", "started_at", "ended_at", "command", "user", "source", "progress_source",
                    "outcome", "exit_reason", "outcome_source"})
_KNOWN = frozenset(API_FIELDS)


def poll_timeout(refresh: float) -> float:
    """How long one poll may wait: shorter than the refresh (and at most 10 s)."""
    return round(min(10.0, max(0.15, 0.75 * refresh)), 3)


# The longest wait between polls of a node that is down (``Settings.nodes.backoff_max_seconds``).
DEFAULT_BACKOFF_MAX_SECONDS = 30.0


@dataclasses.dataclass(frozen=True)
class NodeState:
    """What the poller knows of a node now. Immutable; replaced on every poll."""

    status: str = "connecting"
    error: str | None = None
    latency_ms: float | None = None
    version: str | None = None
    # When the node last answered its list (None: never), and when that list was read.
    last_seen: float | None = None
    operations: tuple[Mapping[str, Any], ...] = ()
    # The raw list body of the last answer, to tell "nothing changed" cheaply.
    body: bytes = b""
    checked_at: float | None = None
    failures: int = 0

    def age(self, now: float) -> float | None:
        """Seconds since the node last answered its list (None: never)."""
        return None if self.last_seen is None else max(0.0, now - self.last_seen)

    def stale(self, now: float, interval: float) -> bool:
        """Whether the list shown is not the node's current one (it did not answer lately)."""
        if self.last_seen is None:
            return self.status != "connecting"
        return self.status != "online" or now - self.last_seen > max(3 * interval, 5.0)


class IncompatibleAnswer(ValueError):
    """An answer that is not a DGX Spark node's operation list."""


def _clean_item(item: Any, index: int) -> dict[str, Any]:
    """One remote operation, checked: the core fields must be right; others of a wrong kind become null."""
    if not isinstance(item, dict):
        raise IncompatibleAnswer(f"item {index} is not an object")
    for key in ("id", "type", "name", "status"):
        if not isinstance(item.get(key), str) or not item[key] or len(item[key]) > 4096:
            raise IncompatibleAnswer(f"item {index} has no valid {key!r}")
    if item["type"] not in OPERATION_TYPES or item["status"] not in OPERATION_STATUSES:
        raise IncompatibleAnswer(f"item {index} has an unknown type or status")
    clean: dict[str, Any] = {}
    for key, value in item.items():
        if key not in _KNOWN:
            continue  # a newer node's extra fields are not passed on
        bad_number = key in _NUMBERS and value is not None and (
            isinstance(value, bool) or not isinstance(value, int | float)
            or (isinstance(value, float) and not math.isfinite(value))
        )
        bad_text = key in _TEXTS and value is not None and not isinstance(value, str)
        clean[key] = None if bad_number or bad_text else value
    return clean


def parse_list(body: bytes) -> tuple[dict[str, Any], ...]:
    """The operations of a list answer (text that is not valid UTF-8 replaced: one odd item cannot break the list).

    Raises:
        IncompatibleAnswer: When the body is not ``{"success": true, "data": [operations]}``.
    """
    try:
        payload = fmt.loads_valid_json(body)  # lone surrogates ("\\ud800") become U+FFFD
    except (ValueError, RecursionError):
        raise IncompatibleAnswer("the answer is not JSON") from None
    if not isinstance(payload, dict) or payload.get("success") is not True or not isinstance(payload.get("data"), list):
        raise IncompatibleAnswer('the answer is not {"success": true, "data": [...]}')
    return tuple(_clean_item(item, i) for i, item in enumerate(payload["data"]))


def classify(response: httpx.Response, body: bytes) -> tuple[str, str | None, tuple[dict[str, Any], ...]]:
    """(status, error, operations) for a node's answer to its list."""
    code = response.status_code
    if code in (401, 403):
        return "unauthorized", f"the node refused the token (HTTP {code}); check the token of this node", ()
    if code >= 500 or code == 429:
        return "offline", f"the node answered HTTP {code}", ()
    api = response.headers.get(NODE_API_HEADER)
    if code != 200 or api is None:
        return ("incompatible",
                f"the URL answers (HTTP {code}), but not as a DGX Spark Operations node of node API {NODE_API}", ())
    if api.strip() != NODE_API:
        return "incompatible", f"the node speaks node API {api[:20]!r}; this app speaks {NODE_API}", ()
    try:
        return "online", None, parse_list(body)
    except IncompatibleAnswer as exc:
        return "incompatible", f"the node's list cannot be read: {exc}", ()


class NodePoller:
    """Polls one node in its own thread; ``state`` is the latest ``NodeState``."""

    def __init__(
        self,
        node: Node,
        *,
        interval: float,
        on_change: Callable[[], None] | None = None,
        backoff_limit: float | None = None,
    ) -> None:
        """Describe the poller (``start`` runs it)."""
        self.node = node
        self.interval = interval
        self.timeout = poll_timeout(interval)
        self.backoff_limit = backoff_limit if backoff_limit is not None else DEFAULT_BACKOFF_MAX_SECONDS
        self.on_change = on_change
        self.state = NodeState()
        self.polls = 0
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._first = threading.Event()
        self._thread: threading.Thread | None = None
        self._client: httpx.Client | None = None

    def start(self) -> None:
        """Start polling (once)."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name=f"node-poller-{self.node.id}", daemon=True)
            self._thread.start()

    def stop(self, wait: float = 2.0) -> None:
        """Stop polling and close the connection."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(wait)

    def wake(self) -> None:
        """Poll now (e.g. after a control action on the node)."""
        self._wake.set()

    def wait_first(self, timeout: float) -> NodeState:
        """The state after the first poll (or the current one after ``timeout`` seconds)."""
        self._first.wait(timeout)
        return self.state

    def next_delay(self, state: NodeState, elapsed: float) -> float:
        """Seconds until the next poll: the refresh when online, a growing backoff otherwise."""
        if state.status == "online":
            return max(0.05, self.interval - elapsed)
        return min(self.backoff_limit, self.interval * 2 ** min(state.failures, 16))

    def poll_once(self) -> NodeState:
        """Ask the node for its list once; update and return the state."""
        previous = self.state
        now = time.time()
        start = time.monotonic()
        status: str
        error: str | None
        operations: tuple[Mapping[str, Any], ...] = previous.operations
        body = previous.body
        version = previous.version
        latency: float | None = None
        try:
            client = self._client or httpx.Client(
                timeout=self.timeout, follow_redirects=False, headers={"User-Agent": USER_AGENT}
            )
            self._client = client
            with client.stream(
                "GET", self.node.url + LIST_PATH,
                headers={"Authorization": f"Bearer {self.node.token}", "Accept": "application/json"},
            ) as response:
                chunks: list[bytes] = []
                size = 0
                for chunk in response.iter_bytes():
                    size += len(chunk)
                    if size > MAX_BODY_BYTES:
                        raise IncompatibleAnswer(f"the answer is larger than {MAX_BODY_BYTES} bytes")
                    chunks.append(chunk)
                raw = b"".join(chunks)
            latency = round((time.monotonic() - start) * 1000.0, 1)
            status, error, parsed = classify(response, raw)
            if status == "online":
                version = response.headers.get(VERSION_HEADER, "")[:40] or None
                if raw != previous.body:
                    operations, body = parsed, raw
        except httpx.TimeoutException:
            status, error = "offline", f"no answer within {self.timeout:g} s"
        except httpx.HTTPError as exc:
            status, error = "offline", f"unreachable: {type(exc).__name__}: {str(exc)[:200]}"
        except IncompatibleAnswer as exc:
            status, error = "incompatible", str(exc)
        state = NodeState(
            status=status,
            error=error,
            latency_ms=latency,
            version=version,
            last_seen=now if status == "online" else previous.last_seen,
            operations=operations,
            body=body,
            checked_at=now,
            failures=0 if status == "online" else previous.failures + 1,
        )
        changed = (state.status, state.body, state.error) != (previous.status, previous.body, previous.error)
        self.state = state
        self.polls += 1
        if status != previous.status:
            logger.info("node %s (%s): %s%s", self.node.id, self.node.url, status, f" ({error})" if error else "")
        if changed and self.on_change is not None:
            self.on_change()
        return state

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                start = time.monotonic()
                try:
                    state = self.poll_once()
                except Exception:  # a poller never dies of one bad answer
                    logger.exception("node %s: poll failed", self.node.id)
                    state = self.state
                self._first.set()
                self._wake.wait(self.next_delay(state, time.monotonic() - start))
                self._wake.clear()
        finally:
            self._first.set()
            if self._client is not None:
                self._client.close()
