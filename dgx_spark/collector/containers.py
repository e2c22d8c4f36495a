"""Containers: which container a process belongs to, and what its engine says about it.

Attribution is table-driven: a process's ``/proc/<pid>/cgroup`` paths name its
container (``docker-<id>.scope``, ``/docker/<id>``, ``libpod-<id>``,
``cri-containerd-<id>.scope``, ``crio-<id>.scope``, ``/kubepods/.../<id>``).

Names, images, labels and published ports come from the engine's API on its
local unix socket (the Docker Engine API subset below; Podman's
Docker-compatible socket answers the same): ``GET /version``,
``GET /containers/json``, ``GET /containers/{id}/json``,
``POST /containers/{id}/stop?t=``, ``POST /containers/{id}/start``,
``GET /containers/{id}/logs``. ``DGX_SPARK_DOCKER_HOST`` (``unix:///path`` or
a path) overrides the socket; by default the first of ``/var/run/docker.sock``,
``/run/podman/podman.sock`` and the user's rootless ``/run/user/<uid>/podman/podman.sock``
that exists is used.

The engine is never asked on the sampler's path: a daemon thread
(``ContainerWatcher``) lists the containers every few seconds, or at once when
the sampler meets a container it does not know, and the sampler reads its
cache. Each kind of failure is logged once.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import http.client
import logging
import os
import re
import socket
import stat
import threading
import time
import urllib.parse
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from dgx_spark import format as fmt
from dgx_spark.collector.facts import ContainersFacts
from dgx_spark.collector.model import Container, Operation

logger = logging.getLogger(__name__)

DOCKER_HOST_ENV = "DGX_SPARK_DOCKER_HOST"
DEFAULT_SOCKETS: tuple[tuple[str, str], ...] = (
    ("/var/run/docker.sock", "docker"),
    ("/run/podman/podman.sock", "podman"),
)
"""Where engines put their socket (root-owned), in the order they are tried."""
ROOTLESS_PODMAN_SOCKET = "/run/user/{uid}/podman/podman.sock"
"""A user's own (rootless) Podman socket, tried after the root-owned ones."""


def default_sockets(uid: int | None = None) -> tuple[tuple[str, str], ...]:
    """The sockets tried when ``DGX_SPARK_DOCKER_HOST`` is unset: root's, then ``uid``'s rootless Podman.

    Args:
        uid: Whose rootless Podman (None: the dashboard's own user).
    """
    owner = os.geteuid() if uid is None else uid
    return (*DEFAULT_SOCKETS, (ROOTLESS_PODMAN_SOCKET.format(uid=owner), "podman"))

REFRESH_SECONDS = 5.0
"""How often the watcher lists the containers."""
POKE_MIN_SECONDS = 1.0
"""The least time between two listings asked for by an unknown container."""
REQUEST_TIMEOUT = 2.0
"""Seconds one engine request may take (connect, send, every read)."""
MAX_RESPONSE_BYTES = 8 * 1024 * 1024
MAX_LOG_LINES = 10000
MAX_LABELS = 64
"""Labels kept per container (the engine's answer is untrusted: count and lengths are capped)."""

_HEX_ID = re.compile(r"^[0-9a-f]{12,64}$")

# (runtime, pattern): the first pattern that matches a cgroup path names the container.
# Conmon's own scope (``libpod-conmon-<id>``, ``crio-conmon-<id>``) is the monitor, not the container.
CGROUP_PATTERNS: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("podman", re.compile(r"(?:^|/)libpod-(?!conmon-)([0-9a-f]{64})(?:\.scope)?(?:/|$)")),
    ("docker", re.compile(r"(?:^|/)docker-([0-9a-f]{64})\.scope(?:/|$)")),
    ("docker", re.compile(r"(?:^|/)docker/([0-9a-f]{64})(?:/|$)")),
    ("containerd", re.compile(r"(?:^|/)cri-containerd-([0-9a-f]{64})\.scope(?:/|$)")),
    ("containerd", re.compile(r"(?:^|/)nerdctl-([0-9a-f]{64})\.scope(?:/|$)")),
    ("cri-o", re.compile(r"(?:^|/)crio-(?!conmon-)([0-9a-f]{64})\.scope(?:/|$)")),
    ("kubernetes", re.compile(r"(?:^|/)kubepods[^/]*/(?:[^/]+/)*?pod[0-9a-f_-]+(?:\.slice)?/([0-9a-f]{64})(?:/|$)")),
)


@dataclasses.dataclass(frozen=True, slots=True)
class CgroupContainer:
    """A container named by a process's cgroup: its id and the runtime the path belongs to."""

    id: str
    runtime: str
    """``docker``, ``podman``, ``containerd``, ``cri-o`` or ``kubernetes`` (from the path's shape)."""


def container_from_cgroup(text: str) -> CgroupContainer | None:
    """The container a ``/proc/<pid>/cgroup`` text names, or None for a process outside containers.

    Every line (cgroup v1 ``N:controllers:/path`` and v2 ``0::/path``) is tried;
    a path under ``kubepods`` is reported as ``kubernetes`` whatever runs it.
    """
    for line in text.splitlines():
        path = line.split(":", 2)[-1].strip()
        if not path or path == "/":
            continue
        for runtime, pattern in CGROUP_PATTERNS:
            match = pattern.search(path)
            if match is not None:
                return CgroupContainer(match.group(1), "kubernetes" if "kubepods" in path else runtime)
    return None


def read_container(pid: int | str, proc: str = "/proc") -> CgroupContainer | None:
    """The container of a live process, from its cgroup file (None if none or unreadable)."""
    try:
        with open(f"{proc}/{pid}/cgroup", encoding="utf-8", errors="replace") as handle:
            return container_from_cgroup(handle.read(16384))
    except OSError:
        return None


# ------------------------------------------------------------------------------ the engine client
class EngineError(Exception):
    """The engine refused or could not be reached; ``status`` is its HTTP status (0: no answer)."""

    def __init__(self, status: int, message: str) -> None:
        """Create the error."""
        super().__init__(message)
        self.status = status
        self.message = message


class _UnixConnection(http.client.HTTPConnection):
    """HTTP/1.1 over a unix socket."""

    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self._path)
        except OSError:
            sock.close()
            raise
        self.sock = sock


@dataclasses.dataclass(frozen=True, slots=True)
class LogLine:
    """One line of a container's log: when (ns since the epoch; 0 unknown), which stream, the text."""

    at_ns: int
    stream: str
    text: str


def _check_ref(ref: str) -> str:
    """A container id as we send it in a path (hex ids only: never a name from outside)."""
    if not _HEX_ID.match(ref):
        raise EngineError(400, f"not a container id: {ref[:80]!r}")
    return ref


class EngineClient:
    """The Docker Engine API subset the dashboard uses, over a unix socket."""

    def __init__(self, socket_path: str, timeout: float = REQUEST_TIMEOUT) -> None:
        """Create a client for the socket at ``socket_path``."""
        self.socket_path = socket_path
        self.timeout = timeout

    def request(
        self, method: str, path: str, *, timeout: float | None = None, limit: int = MAX_RESPONSE_BYTES,
    ) -> tuple[int, bytes]:
        """Send one request; the status and the body (at most ``limit`` bytes).

        Raises:
            EngineError: status 0 when the socket cannot be reached or the answer is cut.
        """
        conn = _UnixConnection(self.socket_path, timeout or self.timeout)
        try:
            conn.request(method, path, headers={"Host": "localhost", "Accept": "application/json"})
            response = conn.getresponse()
            body = response.read(limit + 1)
            if len(body) > limit:
                body = body[:limit]
            return response.status, body
        except (OSError, http.client.HTTPException) as exc:
            raise EngineError(0, f"{self.socket_path}: {type(exc).__name__}: {exc}") from exc
        finally:
            conn.close()

    def _json(self, path: str) -> Any:
        status, body = self.request("GET", path)
        if status != 200:
            raise EngineError(status, _engine_message(status, body))
        try:
            return fmt.loads_valid_json(body)  # names and labels are shown and stored: valid UTF-8 only
        except ValueError as exc:
            raise EngineError(502, f"{path}: the engine's answer is not JSON") from exc

    def version(self) -> Mapping[str, Any]:
        """``GET /version``."""
        data = self._json("/version")
        if not isinstance(data, dict):
            raise EngineError(502, "/version: not a JSON object")
        return data

    def containers(self) -> list[Mapping[str, Any]]:
        """``GET /containers/json``: the running containers."""
        data = self._json("/containers/json")
        if not isinstance(data, list):
            raise EngineError(502, "/containers/json: not a JSON list")
        return [item for item in data if isinstance(item, dict)]

    def inspect(self, ref: str) -> Mapping[str, Any]:
        """``GET /containers/{id}/json``."""
        data = self._json(f"/containers/{_check_ref(ref)}/json")
        if not isinstance(data, dict):
            raise EngineError(502, "inspect: not a JSON object")
        return data

    def stop(self, ref: str, grace: int, signal_name: str | None = None) -> bool:
        """``POST /containers/{id}/stop?t=``: the stop signal, then SIGKILL after ``grace`` seconds.

        Returns:
            True when it was stopped now, False when it was not running (304).
        """
        query = {"t": str(max(0, int(grace)))}
        if signal_name:
            query["signal"] = signal_name
        status, body = self.request(
            "POST", f"/containers/{_check_ref(ref)}/stop?{urllib.parse.urlencode(query)}",
            timeout=max(self.timeout, grace + self.timeout + 5.0),
        )
        if status in (200, 204):
            return True
        if status == 304:
            return False
        raise EngineError(status, _engine_message(status, body))

    def start(self, ref: str) -> bool:
        """``POST /containers/{id}/start``; False when it was already running (304)."""
        status, body = self.request("POST", f"/containers/{_check_ref(ref)}/start", timeout=max(self.timeout, 30.0))
        if status in (200, 204):
            return True
        if status == 304:
            return False
        raise EngineError(status, _engine_message(status, body))

    def logs(self, ref: str, *, tail: int | None = None, since_ns: int | None = None) -> list[LogLine]:
        """``GET /containers/{id}/logs``: stdout and stderr lines with their timestamps.

        Args:
            ref: The container id.
            tail: Only the last lines (None: all, capped at ``MAX_LOG_LINES``).
            since_ns: Only lines after this time (ns since the epoch), for following.
        """
        query = {"stdout": "1", "stderr": "1", "timestamps": "1", "tail": str(tail if tail is not None else MAX_LOG_LINES)}
        if since_ns:
            query["since"] = f"{since_ns // 1_000_000_000}.{since_ns % 1_000_000_000:09d}"
        status, body = self.request("GET", f"/containers/{_check_ref(ref)}/logs?{urllib.parse.urlencode(query)}")
        if status != 200:
            raise EngineError(status, _engine_message(status, body))
        lines = parse_log_stream(body)
        if since_ns:
            lines = [line for line in lines if line.at_ns > since_ns]
        return lines[-MAX_LOG_LINES:]


def _engine_message(status: int, body: bytes) -> str:
    """The engine's error text (``{"message": ...}``), else the status."""
    with contextlib.suppress(ValueError, AttributeError):
        message = fmt.loads_valid_json(body).get("message")
        if isinstance(message, str) and message:
            return message[:300]
    return f"the engine answered HTTP {status}"


def parse_log_stream(body: bytes) -> list[LogLine]:
    """Lines of a logs answer: multiplexed frames (8-byte headers) or a raw TTY stream."""
    chunks: list[tuple[str, bytes]] = []
    if len(body) >= 8 and body[0] in (0, 1, 2) and body[1:4] == b"\0\0\0":
        offset = 0
        while offset + 8 <= len(body):
            kind = body[offset]
            size = int.from_bytes(body[offset + 4 : offset + 8], "big")
            chunks.append(("stderr" if kind == 2 else "stdout", body[offset + 8 : offset + 8 + size]))
            offset += 8 + size
    else:
        chunks.append(("stdout", body))
    lines: list[LogLine] = []
    for stream, data in chunks:
        for raw in data.decode("utf-8", "replace").splitlines():
            at_ns, text = _split_timestamp(raw)
            lines.append(LogLine(at_ns, stream, text))
    lines.sort(key=lambda line: line.at_ns)  # stable: frames of one instant keep their order
    return lines


_TIMESTAMP = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d{1,9}))?(Z|[+-]\d\d:\d\d) ")


def _split_timestamp(line: str) -> tuple[int, str]:
    """(ns since the epoch, text) of a ``timestamps=1`` log line; 0 when it carries none."""
    match = _TIMESTAMP.match(line)
    if match is None:
        return 0, line
    whole, fraction, zone = match.groups()
    try:
        moment = dt.datetime.fromisoformat(whole + ("+00:00" if zone == "Z" else zone))
    except ValueError:
        return 0, line
    return int(moment.timestamp()) * 1_000_000_000 + int((fraction or "0").ljust(9, "0")), line[match.end() :]


# ----------------------------------------------------------------------------- what the engine says
@dataclasses.dataclass(frozen=True, slots=True)
class PublishedPort:
    """A container port published on the host."""

    container: int
    host: int
    host_ip: str | None
    protocol: str


@dataclasses.dataclass(frozen=True, slots=True)
class ContainerInfo:
    """One running container as the engine lists it."""

    id: str
    name: str
    image: str
    engine: str
    labels: Mapping[str, str]
    ports: tuple[PublishedPort, ...]

    def host_port(self, container_port: int) -> int | None:
        """The host port a TCP container port is published on (loopback or any address first)."""
        found = [p for p in self.ports if p.container == container_port and p.protocol == "tcp"]
        found.sort(key=lambda p: p.host_ip not in (None, "", "0.0.0.0", "::", "127.0.0.1", "::1"))
        return found[0].host if found else None


def info_from_list_item(item: Mapping[str, Any], engine: str) -> ContainerInfo | None:
    """A ``GET /containers/json`` entry as ``ContainerInfo`` (None when it has no usable id)."""
    cid = item.get("Id")
    if not isinstance(cid, str) or not _HEX_ID.match(cid):
        return None
    names = item.get("Names")
    name = names[0] if isinstance(names, list) and names and isinstance(names[0], str) else cid[:12]
    image = item.get("Image") if isinstance(item.get("Image"), str) else ""
    raw_labels = item.get("Labels")
    labels = (
        {str(k)[:128]: str(v)[:512] for k, v in sorted(raw_labels.items(), key=lambda kv: str(kv[0]))[:MAX_LABELS]}
        if isinstance(raw_labels, dict) else {}
    )
    ports: list[PublishedPort] = []
    for port in item.get("Ports") or ():
        if not isinstance(port, dict):
            continue
        private, public = port.get("PrivatePort"), port.get("PublicPort")
        if isinstance(private, int) and isinstance(public, int) and 0 < public < 65536:
            ip = port.get("IP")
            ports.append(PublishedPort(private, public, ip if isinstance(ip, str) else None, str(port.get("Type") or "tcp")))
    return ContainerInfo(cid, name.lstrip("/")[:128], str(image)[:256], engine, labels, tuple(ports))


def engine_of(version: Mapping[str, Any], socket_path: str) -> str:
    """``podman`` or ``docker``, from ``GET /version`` (Podman names a "Podman Engine" component)."""
    names = [str(c.get("Name", "")) for c in version.get("Components") or () if isinstance(c, dict)]
    platform = version.get("Platform")
    if isinstance(platform, dict):
        names.append(str(platform.get("Name", "")))
    if any("podman" in name.lower() for name in names) or "podman" in socket_path:
        return "podman"
    return "docker"


def socket_setting(raw: str | None) -> str | None:
    """The socket path ``DGX_SPARK_DOCKER_HOST`` names (``unix:///path`` or ``/path``).

    Raises:
        ValueError: For anything but a unix socket path.
    """
    if raw is None or not raw.strip():
        return None
    value = raw.strip()
    value = value.removeprefix("unix://")
    if not value.startswith("/"):
        raise ValueError(f"{DOCKER_HOST_ENV} must be unix:///path/to/socket or an absolute path, got {raw!r}")
    return value


def check_socket(path: str) -> str | None:
    """Why the dashboard may not use this socket, or None when it may.

    It must be a socket owned by root or by the dashboard's own user (another
    local user's socket could answer anything), and writable by us.
    """
    try:
        info = os.stat(path)
    except FileNotFoundError:
        return f"no engine socket at {path}"
    except OSError as exc:
        return f"no access to {path} ({exc.strerror})"
    if not stat.S_ISSOCK(info.st_mode):
        return f"{path} is not a socket"
    if info.st_uid not in (0, os.geteuid()):
        return f"{path} belongs to another user (uid {info.st_uid}); not used"
    if not os.access(path, os.R_OK | os.W_OK):
        return f"no access to {path}"
    return None


# ------------------------------------------------------------------------------ the watcher
class ContainerWatcher:
    """Lists the engine's containers in a daemon thread; the sampler reads the cache."""

    def __init__(
        self,
        host: str | None = None,
        *,
        refresh: float = REFRESH_SECONDS,
        timeout: float = REQUEST_TIMEOUT,
        candidates: Sequence[tuple[str, str]] | None = None,
    ) -> None:
        """Create a watcher (not started; the first ``lookup`` or ``status`` starts it).

        Args:
            host: The socket (``DGX_SPARK_DOCKER_HOST`` form); None: the first of ``candidates``.
            refresh: Seconds between listings.
            timeout: Seconds one engine request may take.
            candidates: (socket path, engine) pairs tried in order when no host is set
                (None: ``default_sockets()``).
        """
        self._problem: str | None = None
        try:
            self._host = socket_setting(host)
        except ValueError as exc:
            self._host, self._problem = None, str(exc)
        self._candidates = tuple(candidates) if candidates is not None else default_sockets()
        self.refresh_seconds = refresh
        self.timeout = timeout
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._by_id: dict[str, ContainerInfo] = {}
        self._engines: dict[str, str] = {}
        self._status: dict[str, Any] = {"visible": False, "engine": None, "reason": "not checked yet",
                                        "socket": self._host, "checked_at": None}
        self._socket: str | None = None
        self._last_refresh = 0.0
        self._logged: set[str] = set()
        self.listings = 0
        """How many times the engine was asked for its containers (for tests)."""

    # ---- the thread
    def start(self) -> None:
        """Start the background thread (idempotent)."""
        with self._lock:
            if self._thread is not None and self._thread.is_alive():
                return
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="dgx-spark-containers", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the background thread."""
        self._stop.set()
        self._wake.set()
        thread = self._thread
        if thread is not None:
            thread.join(timeout)
        self._thread = None

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.refresh()
            except Exception:
                logger.exception("containers: listing failed")
            self._wake.wait(self.refresh_seconds)
            self._wake.clear()

    def poke(self) -> None:
        """Ask for a listing soon (at most one per ``POKE_MIN_SECONDS``)."""
        self.start()
        if time.monotonic() - self._last_refresh >= POKE_MIN_SECONDS:
            self._wake.set()

    # ---- reading the cache (never blocks on the engine)
    def lookup(self, container_id: str) -> ContainerInfo | None:
        """What the engine last said about this container; an unknown id asks for a listing."""
        self.start()
        info = self._by_id.get(container_id)
        if info is None and self._status.get("visible"):
            self.poke()
        return info

    def status(self) -> dict[str, Any]:
        """``{"visible", "engine", "reason", "socket", "checked_at"}`` as of the last listing."""
        self.start()
        return dict(self._status)

    # ---- control: the engine, when the dashboard may use it
    def client(self) -> EngineClient:
        """A client for the engine's socket.

        Raises:
            EngineError: 503 with the reason when the engine cannot be used.
        """
        path, reason, _engine = self._resolve()
        if path is None:
            raise EngineError(503, f"containers: not visible ({reason})")
        return EngineClient(path, self.timeout)

    def controllable(self) -> tuple[bool, str | None]:
        """Whether containers can be controlled now, and why not (from the last listing)."""
        status = self._status
        if status.get("visible"):
            return True, None
        return False, f"containers: not visible ({status.get('reason')})"

    # ---- one listing
    def _resolve(self) -> tuple[str | None, str, str | None]:
        """(usable socket path or None, reason when None, engine guessed from the path)."""
        if self._problem is not None:
            return None, self._problem, None
        if self._host is not None:
            reason = check_socket(self._host)
            return (None, reason, None) if reason else (self._host, "", None)
        reasons: list[str] = []
        for path, engine in self._candidates:
            reason = check_socket(path)
            if reason is None:
                return path, "", engine
            reasons.append(reason)
        if all(r.startswith("no engine socket") for r in reasons):
            return None, "no engine socket at " + " or ".join(p for p, _e in self._candidates), None
        return None, next(r for r in reasons if not r.startswith("no engine socket")), None

    def refresh(self) -> None:
        """List the containers now (called by the thread; tests may call it directly)."""
        self._last_refresh = time.monotonic()
        path, reason, guessed = self._resolve()
        if path is None:
            self._set_status(False, None, reason)
            return
        client = EngineClient(path, self.timeout)
        try:
            engine = self._engines.get(path)
            if engine is None:
                engine = engine_of(client.version(), path) if guessed is None else guessed
                self._engines[path] = engine
            items = client.containers()
        except EngineError as exc:
            self._set_status(False, self._engines.get(path), f"the engine at {path} did not answer ({exc.message})")
            return
        self.listings += 1
        found = {info.id: info for item in items if (info := info_from_list_item(item, engine)) is not None}
        self._by_id = found
        self._socket = path
        self._set_status(True, engine, None, path)

    def _set_status(self, visible: bool, engine: str | None, reason: str | None, path: str | None = None) -> None:
        if not visible:
            self._by_id = {}
            if reason and reason not in self._logged:
                self._logged.add(reason)
                logger.info("containers: not visible (%s)", reason)
        elif "visible" not in self._logged:
            self._logged = {"visible"}
            logger.info("containers: %s engine at %s", engine, path)
        self._status = {"visible": visible, "engine": engine, "reason": reason,
                        "socket": path or self._host, "checked_at": time.time()}


def header_line(status: Mapping[str, Any] | None) -> str | None:
    """The system header's line when containers are not visible (None when they are, or unknown)."""
    if not status or status.get("visible") or status.get("reason") in (None, "not checked yet"):
        return None
    return f"containers: not visible ({status.get('reason')})"


def iter_published(info: ContainerInfo) -> Iterator[tuple[int, int]]:
    """(host, container) of each published TCP port."""
    for port in info.ports:
        if port.protocol == "tcp":
            yield port.host, port.container


# ------------------------------------------------------------------------------ the probe
class ContainersProbe:
    """Names container operations after their container and maps their ports to published host ports.

    Runs first among the probes (before the supervisor), reading only the
    watcher's cache; sets ``ctx.containers`` (``containers`` of ``GET /api/dgx/system``).
    """

    name = "containers"

    def __init__(self, watcher: ContainerWatcher) -> None:
        """Create the probe reading ``watcher`` (the services' one, on ``DGX_SPARK_DOCKER_HOST``)."""
        self.watcher = watcher

    def sample(self, ctx: Any) -> None:
        """Enrich every live discovered container operation of ``ctx``."""
        status = self.watcher.status()
        ctx.containers = ContainersFacts(visible=bool(status.get("visible")), engine=status.get("engine"),
                                         reason=status.get("reason"))
        _ok, why = self.watcher.controllable()
        for index, op in enumerate(ctx.operations):
            if op.container is None or op.source != "discovered" or not op.is_live:
                continue
            ctx.operations[index] = enrich(op, self.watcher.lookup(op.container.id), why)


def enrich(op: Operation, info: ContainerInfo | None, why_not: str | None) -> Operation:
    """``op`` named after its container, described by its image and labelled, its ports mapped to the host."""
    assert op.container is not None
    if info is None:
        reason = why_not or "the engine does not list this container"
        return op.replace(container=dataclasses.replace(op.container, control=reason))
    port_map = tuple((host if host is not None else info.host_port(inner), inner) for host, inner in op.port_map or ())
    published = [host for host, _inner in port_map if host is not None]
    port = op.port
    chosen = next((host for host, inner in port_map if inner == op.port and host is not None), None)
    if chosen is not None:
        port = chosen
    elif published:
        port = published[0]
    ports = tuple(sorted({host if host is not None else inner for host, inner in port_map}))
    container = Container(id=info.id, name=info.name, image=info.image, engine=info.engine, control=None,
                          labels=tuple(sorted(info.labels.items())))
    return op.replace(name=info.name, description=info.image or op.description, container=container,
                      port_map=port_map, ports=ports, port=port)


# ------------------------------------------------------------------------------ logs through the engine
@dataclasses.dataclass(frozen=True, slots=True)
class ContainerOutput:
    """A container operation's log, read from the engine's log endpoint (``GET /containers/{id}/logs``).

    Offsets are the time of the last line seen (ns since the epoch), so following
    asks the engine only for lines after it. Holds no connection: safe to keep in UI state.
    """

    op_id: str
    container_id: str
    # The watcher whose engine to ask (None: none, nothing is read); not part of the source's identity.
    watcher: ContainerWatcher | None = dataclasses.field(default=None, compare=False, repr=False)

    @property
    def key(self) -> str:
        """A text form (``container:<op id>:<container id>``) for :meth:`from_key`."""
        return f"container:{self.op_id}:{self.container_id}"

    @staticmethod
    def from_key(text: str, watcher: ContainerWatcher | None = None) -> ContainerOutput | None:
        """The source a :attr:`key` names (read through ``watcher``), or None when ``text`` is not one."""
        parts = text.split(":")
        if len(parts) != 3 or parts[0] != "container" or not _HEX_ID.match(parts[2]):
            return None
        return ContainerOutput(parts[1], parts[2], watcher)

    def _client(self) -> EngineClient | None:
        try:
            return self.watcher.client() if self.watcher is not None else None
        except EngineError:
            return None

    def tail(self, lines: int) -> tuple[list[str], int, bool] | None:
        """(last ``lines`` lines, offset, truncated); None when the engine cannot be asked."""
        client = self._client()
        if client is None:
            return None
        try:
            got = client.logs(self.container_id, tail=lines + 1)
        except EngineError:
            return None
        offset = got[-1].at_ns if got else 0
        return [line.text for line in got[-lines:]] if lines else [], offset, len(got) > lines

    def after(self, offset: int) -> tuple[list[str], int]:
        """Lines after ``offset`` (a time), and the new offset."""
        client = self._client()
        if client is None:
            return [], offset
        try:
            got = client.logs(self.container_id, since_ns=offset or None)
        except EngineError:
            return [], offset
        return [line.text for line in got], (got[-1].at_ns if got else offset)

    def size(self) -> int:
        """The offset now: the time of the last line (0 when none or unreadable)."""
        found = self.tail(1)
        return found[1] if found is not None else 0
