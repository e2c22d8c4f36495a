"""What a known server serves, read from its own loopback port, off the refresh path.

Servers we know (Ollama, vLLM, SGLang, TGI, llama.cpp server, ComfyUI, Jupyter,
TensorBoard) are asked what they serve: loaded models and their memory, the
served model, requests running and waiting, tokens per second, a queue, kernels.
The answer is written on the operation as ``service`` (a JSON-ready mapping with
``kind`` and a one-line ``summary``), ``service_source`` (where it was read) and
``service_checked_at_ts`` (when).

Safety rules, all enforced here:

* Only the operation's own ports, and only at a loopback address: a port is asked
  at 127.0.0.1 (or ::1) only when ``/proc/net/tcp{,6}`` shows a socket the
  operation holds listening on it at a loopback or wildcard address (so a server
  bound to a LAN address, or in another network namespace, is never mistaken for
  another process's loopback socket on the same port). A container is asked on
  the host ports its engine published, nothing else. Nothing is ever sent to a
  non-loopback address, and redirects are not followed.
* No credentials: a Jupyter server that wants its token says "kernels: needs token";
  a token seen on its command line is not used.
* Off the refresh path: a :class:`ServiceWatcher` thread asks on its own cadence
  (``DGX_SPARK_SERVICE_PROBE_SECONDS``, 5 s; 0 turns probes off) through a small
  pool of workers, each request with a short timeout, a deadline for the whole
  answer and a size limit. The sampler's :class:`ServiceProbe` only reads the
  latest results, so a slow, broken or hostile server cannot stall a refresh or
  the other probes. A failure is logged once per operation (and its recovery).
* Answers are untrusted: only the expected fields are kept, text is cut short and
  stripped of control characters, numbers must be finite and in range.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import datetime as dt
import ipaddress
import logging
import math
import re
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from dgx_spark import format as fmt
from dgx_spark.collector.model import Operation
from dgx_spark.collector.rules import ProcessFacts, command_args, shape_of
from dgx_spark.collector.sampler import SampleContext
from dgx_spark.collector.sockets import listen_rows, socket_inodes

logger = logging.getLogger(__name__)

DEFAULT_INTERVAL = 5.0
"""Seconds between two probes of one server (``DGX_SPARK_SERVICE_PROBE_SECONDS``)."""
REQUEST_TIMEOUT = 2.0
"""Seconds one request may take, connect to last byte."""
TARGET_DEADLINE = 4.0
"""Seconds all requests to one server may take together in one probe."""
MAX_BODY_BYTES = 2 * 1024 * 1024
"""Largest answer read (a vLLM ``/metrics`` with many histograms is a few hundred KiB)."""
MAX_WORKERS = 4
MAX_TEXT = 120
MAX_MODELS = 16
MAX_PORTS = 3
"""At most this many of an operation's ports are tried, its main port first."""
KINDS: tuple[str, ...] = ("ollama", "vllm", "sglang", "tgi", "llamacpp", "comfyui", "jupyter", "tensorboard")
OPENAI_KINDS: frozenset[str] = frozenset({"vllm", "sglang", "tgi", "llamacpp"})

# Prometheus names per kind: requests running, requests waiting, generated tokens (a counter).
# From each project's metrics documentation; the first name present wins.
PROMETHEUS_NAMES: Mapping[str, tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]] = {
    "vllm": (("vllm:num_requests_running",), ("vllm:num_requests_waiting",), ("vllm:generation_tokens_total",)),
    "sglang": (("sglang:num_running_reqs",), ("sglang:num_queue_reqs",), ("sglang:generation_tokens_total",)),
    "tgi": (("tgi_batch_current_size",), ("tgi_queue_size",), ("tgi_request_generated_tokens_sum",)),
    "llamacpp": (
        ("llamacpp:requests_processing",),
        ("llamacpp:requests_deferred",),
        ("llamacpp:tokens_predicted_total",),
    ),
}
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\u200b-\u200f\u202a-\u202e\u2066-\u2069]")
_TENSORBOARD_FLAGS = ("--logdir", "--logdir_spec", "--logdir-spec")
# Names the rule table gives known servers (``collector/rules.py``), lower-cased.
_RULE_NAMES: tuple[tuple[str, str | None], ...] = (
    ("ollama runner", None),
    ("ollama", "ollama"),
    ("vllm", "vllm"),
    ("sglang", "sglang"),
    ("tgi", "tgi"),
    ("text generation inference", "tgi"),
    ("llama.cpp", "llamacpp"),
    ("llama.cpp server", "llamacpp"),
    ("comfyui", "comfyui"),
    ("jupyter lab", "jupyter"),
    ("jupyter notebook", "jupyter"),
    ("jupyter server", "jupyter"),
)
# Parts of container image names (``ollama/ollama``, ``vllm/vllm-openai``...).
_IMAGE_KINDS: tuple[tuple[str, str], ...] = (
    ("ollama", "ollama"),
    ("vllm", "vllm"),
    ("sglang", "sglang"),
    ("text-generation-inference", "tgi"),
    ("llama.cpp", "llamacpp"),
    ("comfyui", "comfyui"),
    ("jupyter", "jupyter"),
    ("tensorboard", "tensorboard"),
)


class ProbeFailed(Exception):
    """A server did not answer as expected (the message says how, for the log)."""


# ----------------------------------------------------------------------------- what a server is
def service_kind(op: Operation) -> str | None:
    """Which known server a live server operation is (a key of ``KINDS``), or None."""
    if op.type != "server" or not op.is_live:
        return None
    args = command_args(op.command)
    if args:
        shape = shape_of(ProcessFacts(pid=op.pid or 0, argv=tuple(args), cwd=op.cwd))
        names = {name.lower() for name in shape.names}
        module = (shape.module or "").lower()
        sub = (shape.subcommand or "").lower()
        path = (shape.script_path or "").lower()
        if "ollama" in names and sub == "serve":
            return "ollama"
        if ("vllm" in names and sub == "serve") or module.startswith("vllm.entrypoints"):
            return "vllm"
        if module.startswith("sglang.launch_server") or ("sglang" in names and sub == "serve"):
            return "sglang"
        if names & {"text-generation-launcher", "text-generation-server", "text-generation-router"}:
            return "tgi"
        if "llama-server" in names:
            return "llamacpp"
        if shape.script == "main.py" and "comfyui" in path:
            return "comfyui"
        if (
            names & {"jupyter-lab", "jupyter-notebook", "jupyter-server"}
            or ("jupyter" in names and sub in ("lab", "notebook", "server"))
            or module.split(".")[0] in ("jupyterlab", "notebook", "jupyter_server")
        ):
            return "jupyter"
        if "tensorboard" in names or module.split(".")[0] == "tensorboard":
            return "tensorboard"
    # The name the rule table gave a wrapped command (``bash -c "vllm serve ..."``).
    name = op.name.lower()
    for label, kind in _RULE_NAMES:
        if name == label or name.startswith(label + " · "):
            return kind
    # A container: the image it runs.
    container = getattr(op, "container", None)
    image = str(getattr(container, "image", None) or "").lower().split("@")[0].rsplit(":", 1)[0]
    if image:
        return next((kind for part, kind in _IMAGE_KINDS if part in image), None)
    return None


def tensorboard_logdir(command: str | None) -> str | None:
    """The ``--logdir`` of a TensorBoard command line."""
    args = command_args(command)
    for index, arg in enumerate(args):
        flag, eq, value = arg.partition("=")
        if flag in _TENSORBOARD_FLAGS:
            if not eq:
                value = args[index + 1] if index + 1 < len(args) else ""
            return clean_text(value) or None
    return None


# ---------------------------------------------------------------------------- loopback only
@dataclasses.dataclass(frozen=True, slots=True)
class Listener:
    """One listening TCP socket of this network namespace."""

    address: ipaddress.IPv4Address | ipaddress.IPv6Address
    port: int
    inode: int


def _address(hex_text: bytes) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """An address as ``/proc/net/tcp{,6}`` spells it (32-bit words in host byte order)."""
    try:
        raw = bytes.fromhex(hex_text.decode())
    except ValueError:
        return None
    if len(raw) not in (4, 16):
        return None
    words = [raw[i : i + 4] for i in range(0, len(raw), 4)]
    if sys.byteorder == "little":
        words = [word[::-1] for word in words]
    packed = b"".join(words)
    return ipaddress.IPv4Address(packed) if len(packed) == 4 else ipaddress.IPv6Address(packed)


def listeners(port: int, proc: str = "/proc") -> list[Listener]:
    """The sockets listening on TCP ``port`` in this namespace (LISTEN rows of ``/proc/net/tcp{,6}``)."""
    found: list[Listener] = []
    for local, row_port, inode in listen_rows(proc):
        address = _address(local) if row_port == port else None
        if address is not None:
            found.append(Listener(address, port, inode))
    return found


def _loopback_target(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str | None:
    """The loopback address to connect to for a socket bound to ``address``, or None."""
    if isinstance(address, ipaddress.IPv6Address):
        mapped = address.ipv4_mapped
        if mapped is not None:
            return _loopback_target(mapped)
        if address.is_unspecified or address.is_loopback:
            return "::1"
        return None
    if address.is_unspecified:
        return "127.0.0.1"
    if address.is_loopback:
        return str(address)
    return None


def own_socket_inodes(pids: Sequence[int], proc: str = "/proc") -> set[int] | None:
    """Inodes of the sockets the operation's processes hold; None when none could be read."""
    inodes: set[int] = set()
    readable = False
    for pid in pids[:64]:
        found = socket_inodes(str(pid).encode(), proc)
        if found is not None:
            readable = True
            inodes |= found
    return inodes if readable else None


def loopback_address(port: int, own: set[int] | None, proc: str = "/proc", *, published: bool = False) -> str | None:
    """Where to ask for ``port``: a loopback address the operation's own socket answers on, or None.

    Only the operation's sockets count: one bound to a LAN address only is not
    asked at all (127.0.0.1 on that port could be someone else's socket), nor is a
    port none of its sockets in this namespace listens on, nor one of a process
    whose sockets cannot be read. A container's ``published`` host port is the
    engine's word: whoever listens on it here (the engine's proxy) is asked.
    """
    found = listeners(port, proc)
    if not published:
        if own is None:
            return None
        found = [listener for listener in found if listener.inode in own]
    for listener in found:
        target = _loopback_target(listener.address)
        if target is not None:
            return target
    return None


# ------------------------------------------------------------------------------------- HTTP
@dataclasses.dataclass(frozen=True, slots=True)
class Answer:
    """One HTTP answer: status, lower-cased headers and the (de-chunked) body."""

    status: int
    headers: Mapping[str, str]
    body: bytes

    def json(self) -> Any:
        """The body as JSON; raises ProbeFailed when it is not."""
        try:
            return fmt.loads_valid_json(self.body, parse_constant=lambda _: None)
        except (ValueError, RecursionError) as exc:
            kind = self.headers.get("content-type", "?").split(";")[0]
            raise ProbeFailed(f"answer is not JSON ({kind})") from exc


def _dechunk(body: bytes) -> bytes:
    out = bytearray()
    position = 0
    while True:
        end = body.find(b"\r\n", position)
        if end < 0:
            raise ProbeFailed("broken chunked answer")
        try:
            size = int(body[position:end].split(b";")[0], 16)
        except ValueError as exc:
            raise ProbeFailed("broken chunked answer") from exc
        if size == 0:
            return bytes(out)
        start = end + 2
        if start + size > len(body):
            raise ProbeFailed("cut chunked answer")
        out += body[start : start + size]
        position = start + size + 2


def http_get(address: str, port: int, path: str, deadline: float, max_bytes: int = MAX_BODY_BYTES) -> Answer:
    """``GET path`` from a loopback ``address``; the whole answer must arrive before ``deadline`` (monotonic).

    Raises:
        ProbeFailed: On a non-loopback address, a timeout, a refused or reset
            connection, a malformed or oversized answer.
    """
    if not ipaddress.ip_address(address).is_loopback:
        raise ProbeFailed(f"refusing to probe non-loopback address {address}")
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    host = f"[{address}]" if ":" in address else address
    request = (
        f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nAccept: application/json, text/plain\r\n"
        "User-Agent: dgx-spark-dashboard\r\nConnection: close\r\n\r\n"
    ).encode()
    data = bytearray()
    head_end = -1
    length: int | None = None
    try:
        with socket.socket(family, socket.SOCK_STREAM) as sock:
            sock.settimeout(max(0.01, deadline - time.monotonic()))
            sock.connect((address, port))
            sock.sendall(request)
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise ProbeFailed("timed out")
                sock.settimeout(left)
                block = sock.recv(65536)
                if not block:
                    break
                data += block
                if len(data) > max_bytes + 65536:
                    raise ProbeFailed("answer too large")
                if head_end < 0:
                    head_end = data.find(b"\r\n\r\n")
                    if head_end >= 0:
                        length = _content_length(bytes(data[:head_end]))
                if head_end >= 0 and length is not None and len(data) - head_end - 4 >= length:
                    break
    except TimeoutError as exc:
        raise ProbeFailed("timed out") from exc
    except OSError as exc:
        raise ProbeFailed(f"{type(exc).__name__}: {exc.strerror or exc}") from exc
    return _parse_answer(bytes(data), max_bytes)


def _content_length(head: bytes) -> int | None:
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            try:
                return max(0, int(value.strip()))
            except ValueError:
                return None
    return None


def _parse_answer(data: bytes, max_bytes: int) -> Answer:
    head, sep, body = data.partition(b"\r\n\r\n")
    if not sep:
        raise ProbeFailed("no HTTP answer" if not data else "cut HTTP answer")
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit():
        raise ProbeFailed("not an HTTP answer")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    if "chunked" in headers.get("transfer-encoding", "").lower():
        body = _dechunk(body)
    elif "content-length" in headers:
        length = _content_length(head)
        if length is not None:
            if len(body) < length:
                raise ProbeFailed("cut answer")
            body = body[:length]
    if len(body) > max_bytes:
        raise ProbeFailed("answer too large")
    return Answer(int(parts[1]), headers, body)


# ------------------------------------------------------------------------ reading the answers
def clean_text(value: Any, limit: int = MAX_TEXT) -> str:
    """A short, printable string from an untrusted value ("" when it is not a string)."""
    if not isinstance(value, str):
        return ""
    text = _CONTROL.sub("", value).strip()
    return text[: limit - 1] + "…" if len(text) > limit else text


def _count(value: Any, limit: float = 1e15) -> int | None:
    """A non-negative whole number from an untrusted value, or None."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if not math.isfinite(value) or not 0 <= value <= limit:
        return None
    return int(value)


def parse_time(value: Any) -> float | None:
    """A POSIX timestamp from an ISO-8601 text (Go's nanoseconds allowed), or None."""
    text = clean_text(value, 64)
    if not text:
        return None
    text = re.sub(r"(\.\d{6})\d+", r"\1", text.replace("Z", "+00:00"))
    try:
        moment = dt.datetime.fromisoformat(text)
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    if moment.year < 1971:
        return None
    try:
        return moment.timestamp()
    except (OverflowError, OSError, ValueError):
        return None


def model_label(name: str) -> str:
    """A model as the card shows it: a local path by its last part."""
    if name.startswith(("/", "./", "~")):
        return name.rstrip("/").rsplit("/", 1)[-1] or name
    return name


def in_words(seconds: float) -> str:
    """``45s``, ``4m``, ``2h 5m``, ``3d`` (for "unloads in ...")."""
    seconds = max(0, int(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m"
    if seconds < 86400:
        hours, rest = divmod(seconds, 3600)
        return f"{hours}h {rest // 60}m" if rest >= 60 else f"{hours}h"
    return f"{seconds // 86400}d"


def read_ollama(data: Any, now: float) -> dict[str, Any]:
    """``GET /api/ps``: the loaded models, their size, VRAM and when they unload."""
    if not isinstance(data, dict) or not isinstance(data.get("models"), list):
        raise ProbeFailed("/api/ps has no model list")
    models: list[dict[str, Any]] = []
    for entry in data["models"][:MAX_MODELS]:
        if not isinstance(entry, dict):
            continue
        name = clean_text(entry.get("name")) or clean_text(entry.get("model"))
        if not name:
            continue
        expires = parse_time(entry.get("expires_at"))
        models.append(
            {
                "name": name,
                "size_bytes": _count(entry.get("size")),
                "vram_bytes": _count(entry.get("size_vram")),
                "expires_at": fmt.iso_utc(expires),
                "context_length": _count(entry.get("context_length"), 1e9),
            }
        )
    parts: list[str] = []
    if not models:
        parts.append("no model loaded")
    else:
        first = models[0]
        parts.append(first["name"] + (f" +{len(models) - 1} more" if len(models) > 1 else ""))
        total = sum(m["size_bytes"] or 0 for m in models)
        vram = sum(m["vram_bytes"] or 0 for m in models)
        if total:
            size = fmt.format_bytes(total, precision=0 if total >= 10 * 1024**3 else 1)
            if vram < total:
                size += f" ({round(100 * vram / total)}% GPU)"
            parts.append(size)
        expires = parse_time(first["expires_at"])
        if expires is not None and expires - now < 30 * 86400:
            parts.append(f"unloads in {in_words(expires - now)}")
    return {"kind": "ollama", "summary": " · ".join(parts), "models": models}


def read_openai_models(data: Any) -> list[str]:
    """``GET /v1/models``: the served model ids."""
    if not isinstance(data, dict) or not isinstance(data.get("data"), list):
        raise ProbeFailed("/v1/models has no model list")
    names = [clean_text(entry.get("id")) for entry in data["data"][:MAX_MODELS] if isinstance(entry, dict)]
    return [name for name in names if name]


def read_prometheus(text: str, wanted: Iterable[str]) -> dict[str, float]:
    """Sums of the samples of the ``wanted`` metrics in a Prometheus text exposition (labels summed over)."""
    names = set(wanted)
    found: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line[0] == "#":
            continue
        brace = line.find("{")
        space = line.find(" ")
        if brace != -1 and (space == -1 or brace < space):
            name = line[:brace]
            rest = line[line.rfind("}") + 1 :]
        else:
            name, _, rest = line.partition(" ")
        if name not in names:
            continue
        fields = rest.split()
        if not fields:
            continue
        try:
            value = float(fields[0])
        except ValueError:
            continue
        if math.isfinite(value):
            found[name] = found.get(name, 0.0) + value
    return found


def read_comfyui(data: Any) -> dict[str, Any]:
    """``GET /queue``: how many prompts run and wait."""
    if not isinstance(data, dict):
        raise ProbeFailed("/queue is not an object")
    running, pending = data.get("queue_running"), data.get("queue_pending")
    if not isinstance(running, list) or not isinstance(pending, list):
        raise ProbeFailed("/queue has no queue_running / queue_pending lists")
    if running or pending:
        summary = f"queue {len(running)} running · {len(pending)} pending"
    else:
        summary = "queue empty"
    return {"kind": "comfyui", "summary": summary, "queue_running": len(running), "queue_pending": len(pending)}


def read_comfyui_prompt(data: Any) -> dict[str, Any]:
    """``GET /prompt``: how many prompts remain (running and pending together; it does not split them)."""
    info = data.get("exec_info") if isinstance(data, dict) else None
    remaining = _count(info.get("queue_remaining")) if isinstance(info, dict) else None
    if remaining is None:
        raise ProbeFailed("/prompt has no exec_info.queue_remaining count")
    summary = f"queue {remaining} remaining" if remaining else "queue empty"
    return {"kind": "comfyui", "summary": summary, "queue_running": None, "queue_pending": None,
            "queue_remaining": remaining}


def read_jupyter(answer: Answer) -> dict[str, Any]:
    """``GET /api/kernels`` without a token: how many kernels and how many busy, or that it needs the token."""
    if answer.status in (401, 403) or (300 <= answer.status < 400 and "login" in answer.headers.get("location", "")):
        return {"kind": "jupyter", "summary": "kernels: needs token", "needs_token": True}
    if answer.status != 200:
        raise ProbeFailed(f"/api/kernels answered HTTP {answer.status}")
    data = answer.json()
    if not isinstance(data, list):
        raise ProbeFailed("/api/kernels is not a list")
    kernels = [entry for entry in data if isinstance(entry, dict)]
    busy = sum(1 for entry in kernels if entry.get("execution_state") == "busy")
    if not kernels:
        summary = "no kernels"
    else:
        summary = f"{len(kernels)} kernel{'s' if len(kernels) != 1 else ''} · {busy} busy"
    return {"kind": "jupyter", "summary": summary, "kernels": len(kernels), "kernels_busy": busy, "needs_token": False}


def format_rate(tokens_per_second: float) -> str:
    """``31 tok/s``, ``4.2 tok/s``."""
    if tokens_per_second >= 10:
        return f"{tokens_per_second:.0f} tok/s"
    return f"{tokens_per_second:.1f} tok/s"


# --------------------------------------------------------------------------------- probing
@dataclasses.dataclass(frozen=True, slots=True)
class Target:
    """One server to ask: which operation, what it is, its ports and processes."""

    op_id: str
    kind: str
    ports: tuple[int, ...]
    pids: tuple[int, ...]
    command: str | None = None
    published: bool = False
    """``ports`` are a container's host ports, published by its engine."""


@dataclasses.dataclass(frozen=True, slots=True)
class Reading:
    """What a server said, where, and when."""

    service: Mapping[str, Any]
    source: str
    checked_at: float


def target_of(op: Operation, kind: str | bool | None = False) -> Target | None:
    """The probe target of a live known server, or None (``kind``: already worked out, if not False)."""
    if kind is False:
        kind = service_kind(op)
    if not isinstance(kind, str) or op.type != "server" or not op.is_live:
        return None
    candidates: list[Any] = [op.port, *op.ports]
    published = getattr(op, "container", None) is not None
    if published:
        # Only the host ports the engine published (a port inside the container is not ours to ask here).
        hosts = [host for host, _inner in getattr(op, "port_map", None) or ()]
        candidates = [port for port in candidates if port in hosts] + hosts
    ports: list[int] = []
    for port in candidates:
        if isinstance(port, int) and not isinstance(port, bool) and 0 < port < 65536 and port not in ports:
            ports.append(port)
    if not ports and kind != "tensorboard":
        return None
    pids = tuple(op.pids or ((op.pid,) if op.pid else ()))
    return Target(op.id, kind, tuple(ports[:MAX_PORTS]), pids, op.command, published)


class _Counter:
    """The last value of a token counter, for a rate between two probes."""

    def __init__(self) -> None:
        self.value: float | None = None
        self.at = 0.0

    def rate(self, value: float, at: float) -> float | None:
        previous, previous_at = self.value, self.at
        self.value, self.at = value, at
        if previous is None or at <= previous_at or value < previous:
            return None  # first reading, or the counter restarted
        return (value - previous) / (at - previous_at)


class Prober:
    """Asks one kind of server; keeps what a rate needs between probes (one per target)."""

    def __init__(
        self,
        target: Target,
        proc: str = "/proc",
        clock: Callable[[], float] = time.time,
        *,
        request_timeout: float = REQUEST_TIMEOUT,
        deadline: float = TARGET_DEADLINE,
    ) -> None:
        """Probe ``target``: each request within ``request_timeout``, all of them within ``deadline`` seconds."""
        self.target = target
        self.request_timeout = request_timeout
        self.deadline = deadline
        self.proc = proc
        self.clock = clock
        self.tokens = _Counter()
        self.port: int | None = None

    def probe(self) -> Reading:
        """Ask the server now; raises ProbeFailed."""
        target = self.target
        now = self.clock()
        if target.kind == "tensorboard":
            logdir = tensorboard_logdir(target.command)
            if logdir is None:
                raise ProbeFailed("no --logdir on its command line")
            return Reading({"kind": "tensorboard", "summary": f"logdir {logdir}", "logdir": logdir}, "command line", now)
        deadline = time.monotonic() + self.deadline
        own = own_socket_inodes(target.pids, self.proc)
        ports = sorted(target.ports, key=lambda port: port != self.port)  # the one that answered first
        failure: ProbeFailed | None = None
        for port in ports:
            address = loopback_address(port, own, self.proc, published=target.published)
            if address is None:
                failure = ProbeFailed(f"port {port} does not listen on a loopback address")
                continue
            try:
                service, paths = self._ask(address, port, deadline)
            except ProbeFailed as exc:
                failure = exc if failure is None or "loopback" in str(failure) else failure
                continue
            self.port = port
            host = f"[{address}]" if ":" in address else address
            return Reading(service, f"http://{host}:{port}" + ", ".join(paths), self.clock())
        raise failure or ProbeFailed("no port to ask")

    def _ask(self, address: str, port: int, deadline: float) -> tuple[dict[str, Any], list[str]]:
        kind = self.target.kind

        def get(path: str) -> Answer:
            return http_get(address, port, path, min(deadline, time.monotonic() + self.request_timeout))

        if kind == "ollama":
            answer = get("/api/ps")
            _expect_ok(answer, "/api/ps")
            return read_ollama(answer.json(), self.clock()), ["/api/ps"]
        if kind == "comfyui":
            return self._comfyui(get)
        if kind == "jupyter":
            return read_jupyter(get("/api/kernels")), ["/api/kernels"]
        return self._openai(get, kind)

    def _comfyui(self, get: Callable[[str], Answer]) -> tuple[dict[str, Any], list[str]]:
        """ComfyUI: ``/queue`` (running and pending); when it does not answer so, ``/prompt`` (how many remain)."""
        try:
            answer = get("/queue")
            _expect_ok(answer, "/queue")
            queue = answer.json()
            if isinstance(queue, dict) and isinstance(queue.get("queue_running"), list):
                return read_comfyui(queue), ["/queue"]
            failure = ProbeFailed("/queue has no queue_running / queue_pending lists")
        except ProbeFailed as exc:
            if "timed out" in str(exc):  # a slow server is not asked twice in one probe
                raise
            failure = exc
        try:
            answer = get("/prompt")
            _expect_ok(answer, "/prompt")
            return read_comfyui_prompt(answer.json()), ["/prompt"]
        except ProbeFailed:
            raise failure from None

    def _openai(self, get: Callable[[str], Answer], kind: str) -> tuple[dict[str, Any], list[str]]:
        """vLLM, SGLang, TGI, llama.cpp: ``/v1/models`` (TGI: ``/info``) and Prometheus ``/metrics``."""
        models: list[str] = []
        paths: list[str] = []
        failure: ProbeFailed | None = None
        try:
            if kind == "tgi":
                answer = get("/info")
                _expect_ok(answer, "/info")
                data = answer.json()
                model = clean_text(data.get("model_id")) if isinstance(data, dict) else ""
                models = [model] if model else []
                paths.append("/info")
            else:
                answer = get("/v1/models")
                _expect_ok(answer, "/v1/models")
                models = read_openai_models(answer.json())
                paths.append("/v1/models")
        except ProbeFailed as exc:
            failure = exc
            if "timed out" in str(exc):
                raise  # a slow server: do not wait for a second request
        running = waiting = rate = None
        try:
            answer = get("/metrics")
            _expect_ok(answer, "/metrics")
            names = PROMETHEUS_NAMES[kind]
            values = read_prometheus(answer.body.decode("utf-8", errors="replace"), [n for group in names for n in group])
            running = _first_count(values, names[0])
            waiting = _first_count(values, names[1])
            tokens = next((values[n] for n in names[2] if n in values), None)
            if tokens is not None:
                rate = self.tokens.rate(tokens, time.monotonic())
            if running is not None or waiting is not None or tokens is not None:
                paths.append("/metrics")
        except ProbeFailed as exc:
            failure = failure or exc
        if not paths:
            raise failure or ProbeFailed("nothing answered")
        parts = [model_label(models[0]) + (f" +{len(models) - 1} more" if len(models) > 1 else "")] if models else []
        if running is not None:
            parts.append(f"{running} running")
        if waiting is not None:
            parts.append(f"{waiting} waiting")
        if rate is not None:
            parts.append(format_rate(rate))
        service = {
            "kind": kind,
            "summary": " · ".join(parts) or "serving",
            "models": models,
            "requests_running": running,
            "requests_waiting": waiting,
            "tokens_per_second": None if rate is None else round(rate, 2),
        }
        return service, paths


def _expect_ok(answer: Answer, path: str) -> None:
    if answer.status != 200:
        raise ProbeFailed(f"{path} answered HTTP {answer.status}")


def _first_count(values: Mapping[str, float], names: Sequence[str]) -> int | None:
    for name in names:
        if name in values:
            return _count(round(values[name]))
    return None


# ---------------------------------------------------------------------------------- the thread
class ServiceWatcher:
    """Probes the known servers in the background; the sampler reads :meth:`reading`.

    Each target is probed at most once per ``interval`` and never twice at once, by
    a pool of ``workers`` threads; the scheduling thread itself never waits on a
    server. A reading is kept while newer probes fail, for ``keep`` seconds.
    """

    def __init__(
        self,
        interval: float = DEFAULT_INTERVAL,
        *,
        workers: int = MAX_WORKERS,
        keep: float | None = None,
        proc: str = "/proc",
        clock: Callable[[], float] = time.time,
        request_timeout: float = REQUEST_TIMEOUT,
        deadline: float = TARGET_DEADLINE,
    ) -> None:
        """Create a watcher (its thread starts with the first targets)."""
        self.interval = interval
        self.request_timeout = request_timeout
        self.deadline = deadline
        self.keep = keep if keep is not None else max(15.0, 3 * interval)
        self.proc = proc
        self.clock = clock
        self._workers = workers
        self._lock = threading.Lock()
        self._targets: dict[str, Target] = {}
        self._probers: dict[str, Prober] = {}
        self._readings: dict[str, Reading] = {}
        self._failing: dict[str, str] = {}
        self._in_flight: set[str] = set()
        self._due: dict[str, float] = {}
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None
        self.probes_done = 0
        # Names of the threads that have asked servers (never the sampler's).
        self.probe_threads: set[str] = set()

    def update(self, targets: Iterable[Target]) -> None:
        """The servers to watch now (cheap: called from the sampler on every refresh)."""
        fresh = False
        with self._lock:
            wanted = {target.op_id: target for target in targets}
            for op_id in [i for i in self._targets if i not in wanted]:
                self._forget(op_id)
            for op_id, target in wanted.items():
                prober = self._probers.get(op_id)
                if prober is None or (prober.target.kind, prober.target.ports) != (target.kind, target.ports):
                    fresh = True
                    self._probers[op_id] = Prober(
                        target, self.proc, self.clock, request_timeout=self.request_timeout, deadline=self.deadline
                    )
                    self._due[op_id] = 0.0
                else:
                    prober.target = target  # its processes may change; its rate state stays
                self._targets[op_id] = target
        if wanted and (self._thread is None or not self._thread.is_alive()):
            self.start()
        if fresh:
            self._wake.set()

    def _forget(self, op_id: str) -> None:
        for table in (self._targets, self._probers, self._readings, self._failing, self._due):
            table.pop(op_id, None)

    def reading(self, op_id: str) -> Reading | None:
        """The latest reading of an operation, unless it is older than ``keep``."""
        with self._lock:
            reading = self._readings.get(op_id)
        if reading is None or self.clock() - reading.checked_at > self.keep:
            return None
        return reading

    def start(self) -> None:
        """Start the scheduling thread (idempotent)."""
        with self._lock:
            if self._thread is not None and self._thread.is_alive():
                return
            self._stop.clear()
            self._pool = concurrent.futures.ThreadPoolExecutor(self._workers, thread_name_prefix="dgx-spark-service")
            self._thread = threading.Thread(target=self._run, name="dgx-spark-service-watch", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the thread; probes in flight end by their own deadline."""
        self._stop.set()
        self._wake.set()
        thread, pool = self._thread, self._pool
        if thread is not None:
            thread.join(timeout)
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)
        self._thread = self._pool = None

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._schedule()
            except Exception:  # the thread must live on
                logger.exception("service probes: scheduling failed")
            self._wake.wait(min(1.0, self.interval))
            self._wake.clear()

    def _schedule(self) -> None:
        now = time.monotonic()
        with self._lock:
            due = [
                self._probers[op_id]
                for op_id, when in self._due.items()
                if when <= now and op_id not in self._in_flight and op_id in self._probers
            ]
            for prober in due:
                self._in_flight.add(prober.target.op_id)
                self._due[prober.target.op_id] = now + self.interval
        pool = self._pool
        for prober in due:
            if pool is None:
                return
            try:
                pool.submit(self._probe, prober)
            except RuntimeError:  # shut down meanwhile
                return

    def _probe(self, prober: Prober) -> None:
        op_id = prober.target.op_id
        with self._lock:
            self.probe_threads.add(threading.current_thread().name)
        try:
            reading: Reading | None = prober.probe()
            problem = None
        except ProbeFailed as exc:
            reading, problem = None, str(exc)
        except Exception as exc:  # a bug in one prober must not stop the others
            reading, problem = None, f"{type(exc).__name__}: {exc}"
            logger.debug("service probe of %s crashed", op_id, exc_info=True)
        with self._lock:
            self._in_flight.discard(op_id)
            self.probes_done += 1
            if self._probers.get(op_id) is not prober or self._stop.is_set():
                return  # forgotten or replaced meanwhile, or stopped
            if reading is not None:
                self._readings[op_id] = reading
                if self._failing.pop(op_id, None) is not None:
                    logger.info("service probe of %s (%s) answers again", op_id, prober.target.kind)
            elif op_id not in self._failing:
                self._failing[op_id] = problem or "failed"
                logger.warning(
                    "service probe of %s (%s, ports %s): %s; not shown until it answers",
                    op_id, prober.target.kind, ",".join(map(str, prober.target.ports)) or "-", problem,
                )


class ServiceProbe:
    """Sampler probe: writes the latest service readings onto known servers; never waits on one."""

    name = "service"

    def __init__(self, watcher: ServiceWatcher | None) -> None:
        """Use ``watcher`` (the services' one, ``make_watcher``; None while probes are off)."""
        self.watcher = watcher
        # What each server is, by operation id, name and command (worked out once).
        self._kinds: dict[tuple[str, str, str | None], str | None] = {}

    def sample(self, ctx: SampleContext) -> None:
        """Hand the known servers to the watcher and copy its latest readings onto them."""
        watcher = self.watcher
        if watcher is None:
            return
        targets: list[Target] = []
        kinds: dict[tuple[str, str, str | None], str | None] = {}
        for index, op in enumerate(ctx.operations):
            if op.type != "server" or not op.is_live:
                continue
            key = (op.id, op.name, op.command)
            kind = kinds[key] = self._kinds[key] if key in self._kinds else service_kind(op)
            target = target_of(op, kind)
            if target is None:
                continue
            targets.append(target)
            reading = watcher.reading(op.id)
            if reading is not None:
                ctx.operations[index] = op.replace(
                    service=reading.service, service_source=reading.source, service_checked_at_ts=reading.checked_at
                )
        self._kinds = kinds
        watcher.update(targets)

def make_watcher(interval: float) -> ServiceWatcher | None:
    """A watcher probing every ``interval`` seconds (at least 0.5), or None: 0 turns probes off.

    ``interval`` is ``Settings.sampler.service_probe_seconds`` (``DGX_SPARK_SERVICE_PROBE_SECONDS``).
    """
    return ServiceWatcher(max(0.5, interval)) if interval > 0 else None
