"""What one card shows, derived from an ``Operation`` (plain Python, no Reflex).

The browser gets ready-to-show values: text is formatted here, times are sent
as ISO UTC so the browser shows them in its own zone and ticks them itself.
To show a new field on the cards: add it to ``OperationView`` and fill it in
``operation_view``; then read it in a component (``op.my_field``). Every field is
sent to every open tab whenever its section changes, so the view holds only what
the cards render; what search and sort read besides is in ``query_row``.
"""

from __future__ import annotations

import dataclasses
import logging
import operator
from collections.abc import Iterable, Mapping
from typing import Any

from dgx_spark import format as fmt
from dgx_spark.collector.model import ENDED_STATUSES, INFERRED_SOURCES, LIVE_STATUSES, Operation, Snapshot
from dgx_spark.health import log_once
from dgx_spark.progress import display as progress_display

logger = logging.getLogger(__name__)

SECTIONS: tuple[str, ...] = ("servers", "jobs", "programs")
SECTION_OF_TYPE: Mapping[str, str] = {"server": "servers", "job": "jobs", "program": "programs"}


@dataclasses.dataclass(frozen=True)
class OperationView:
    """One operation as the cards show it. Empty string / None mean unknown."""

    id: str
    type: str
    name: str
    status: str
    description: str = ""
    live: bool = False
    source: str = "discovered"
    command: str = ""
    # Times: ISO UTC for the browser; uptime is only sent for ended operations
    # (a live one ticks in the browser from ``started_at``).
    started_at: str = ""
    ended_at: str = ""  # ISO UTC; "" while live or unknown
    uptime_text: str = ""
    uptime_format: str = "h[h] m[m] s[s]"  # moment-duration-format template for the ticking uptime
    # Server.
    port: int | None = None
    url: str = ""
    # What a known server serves, in one line ("llama3.1:70b · 42 GiB · unloads in 4m"), and
    # where and when that was read (hover); "" when nothing was read.
    service_text: str = ""
    service_title: str = ""
    # Program (and any process).
    pid: int | None = None
    process_count: int = 0
    exit_code: int | None = None
    # How it ended (ended operations): ``completed`` / ``failed`` / ``stopped``, a line that
    # says why ("Likely failed: CUDA out of memory" when inferred), and where that came from.
    outcome: str = ""
    outcome_text: str = ""
    outcome_source: str = ""
    outcome_title: str = ""
    # "run 3 · 2 restarts" once an operation has run more than once ("" for a single run).
    runs_text: str = ""
    # Job progress.
    progress_percent: int | None = None
    epoch_text: str = ""
    train_loss_text: str = ""
    stalled: bool = False
    # Job progress as read on the card (dgx_spark/progress/display.py).
    eta_text: str = ""
    throughput_text: str = ""
    progress_source_text: str = ""
    loss_sparkline: str = ""  # SVG polyline points of the recent train losses
    # Resources (filled when a probe reports them).
    cpu_text: str = ""
    memory_text: str = ""
    gpu_memory_text: str = ""
    gpu_utilization_text: str = ""
    idle_gpu: bool = False
    # Container (collector/containers.py): "podman container web", and why its engine cannot
    # stop, start or read it ("" when it can).
    container_text: str = ""
    container_control: str = ""
    # Which node the card belongs to when the tab shows another node or All nodes
    # (dgx_spark/state/node_view.py): its id and name ("" when the tab shows this machine only),
    # whether it is another machine, and whether that machine's list is stale.
    node: str = ""
    node_name: str = ""
    remote: bool = False
    node_stale: bool = False


def _text(value: Any) -> str:
    """A formatted value, or ``""`` for the placeholder (so the UI can hide it)."""
    return "" if value == fmt.PLACEHOLDER else value


OUTCOME_SOURCE_TITLES: Mapping[str, str] = {
    "runner": "Exit status recorded by the dashboard's runner",
    "kernel": "Exit status reported by the kernel",
    "log": "Inferred from the last lines of its output",
    "progress": "Inferred from its progress reaching the end",
    "unknown": "The dashboard could not tell how it ended",
}


def outcome_line(outcome: str, reason: str, source: str) -> str:
    """"Failed: exit code 3", or "Likely failed: CUDA out of memory" when it was inferred."""
    if reason.lower().startswith(outcome):
        text = reason
    elif reason:
        text = f"{outcome}: {reason}"
    else:
        text = outcome
    if source in INFERRED_SOURCES:
        return "Likely " + text
    return text[:1].upper() + text[1:]


def outcome_text(op: Operation) -> str:
    """One line on how an ended operation ended ("" while live); inferences say "likely"."""
    if op.status in LIVE_STATUSES or not op.outcome:
        return ""
    return outcome_line(op.outcome, op.exit_reason or "", op.outcome_source or "")


# The view's text fields: each must be valid UTF-8 to reach the browser.
_TEXT_FIELDS = tuple(f.name for f in dataclasses.fields(OperationView) if f.type == "str")
_texts = operator.attrgetter(*_TEXT_FIELDS)
# What the card says (in its description) when some of an operation's text could not be shown.
ENCODING_MARKER = "Some of this operation's text is not valid UTF-8; shown cleaned (\ufffd)."
UNREADABLE_MARKER = "This operation could not be shown ({error}); see the dashboard's log."
def _log_once(op_id: str, exc: Exception) -> None:
    log_once(logger, f"view:{op_id}", "operation %r cannot be shown as it is (%s: %s); its card is marked",
             _valid(op_id), type(exc).__name__, _valid(str(exc))[:200])


def _valid(text: str) -> str:
    """``text`` with lone surrogates (not valid UTF-8) replaced by U+FFFD."""
    return str(fmt.valid_text(text))


def operation_view(op: Operation, now: float, host: str = "127.0.0.1") -> OperationView:
    """Derive the card's view of ``op``, isolated: one odd operation never breaks the page.

    A failure gives a minimal card that says so; text that is not valid UTF-8 (which the
    browser's websocket cannot carry) is replaced and the card says so in its description.
    Either is logged once per operation.

    Args:
        op: The operation.
        now: The snapshot's time (for the uptime of ended operations).
        host: The host name the browser reached the dashboard at, for "Open" links.

    Returns:
        The view.
    """
    try:
        view = _derive_view(op, now, host)
    except Exception as exc:  # noqa: BLE001 - one broken record must not break every tab
        _log_once(str(op.id), exc)
        return OperationView(id=_valid(str(op.id)), type=_valid(str(op.type)), name=_valid(str(op.name)),
                             status=_valid(str(op.status)), live=op.status in LIVE_STATUSES,
                             description=UNREADABLE_MARKER.format(error=type(exc).__name__))
    try:
        "".join(_texts(view)).encode("utf-8")
    except UnicodeEncodeError as exc:
        _log_once(view.id, exc)
        cleaned: dict[str, Any] = {name: _valid(getattr(view, name)) for name in _TEXT_FIELDS}
        cleaned["description"] = " ".join(filter(None, (ENCODING_MARKER, cleaned["description"])))
        return dataclasses.replace(view, **cleaned)
    return view


def _derive_view(op: Operation, now: float, host: str) -> OperationView:
    """The card's view of ``op`` (``operation_view`` without its guard)."""
    metrics = dict(op.metrics) if op.metrics is not None else {}
    ended = op.status not in LIVE_STATUSES
    port = op.port if op.port is not None else (op.ports[0] if op.ports else None)
    url_host = f"[{host}]" if ":" in host else host
    return OperationView(
        id=op.id,
        type=op.type,
        name=op.name,
        status=op.status,
        description=op.description or "",
        live=op.status in LIVE_STATUSES,
        source=op.source,
        command=op.command or "",
        started_at=fmt.iso_utc(op.started_at_ts) or "",
        ended_at=(fmt.iso_utc(op.ended_at_ts) or "") if ended else "",
        uptime_text=_text(fmt.format_uptime(op.uptime(now))) if op.status in ENDED_STATUSES else "",
        uptime_format=fmt.uptime_template(op.uptime(now)),
        port=port,
        url=f"http://{url_host}:{port}" if port is not None else "",
        service_text=service_text(op),
        service_title=service_title(op),
        pid=op.pid,
        process_count=op.process_count,
        exit_code=op.exit_code,
        outcome=(op.outcome or "") if ended else "",
        outcome_text=outcome_text(op),
        outcome_source=(op.outcome_source or "") if ended else "",
        outcome_title=OUTCOME_SOURCE_TITLES.get(op.outcome_source or "", "") if ended else "",
        runs_text=runs_text(op),
        progress_percent=fmt.progress_percent(op.progress),
        epoch_text=_text(fmt.format_epoch(metrics.get("epoch"), op.total_epochs)),
        train_loss_text=_text(fmt.format_metric(metrics.get("train_loss", metrics.get("loss")))),
        stalled=bool(op.stalled),
        eta_text=progress_display.format_eta(op.eta_seconds) if op.status in LIVE_STATUSES else "",
        throughput_text=progress_display.format_throughput(op.throughput) if op.status in LIVE_STATUSES else "",
        progress_source_text=progress_display.source_label(op.progress_source),
        loss_sparkline=fmt.sparkline_points(
            op.loss_history, progress_display.SPARKLINE_WIDTH, progress_display.SPARKLINE_HEIGHT, fit=True, pad=1.0
        ),
        cpu_text=_text(fmt.format_percent(op.cpu_percent)),
        memory_text=_text(fmt.format_bytes(op.memory_bytes)),
        gpu_memory_text=_text(fmt.format_bytes(op.gpu_memory_bytes)),
        gpu_utilization_text=_text(fmt.format_percent(op.gpu_utilization)),
        idle_gpu=bool(op.idle_gpu),
        container_text=container_text(op),
        container_control=(op.container.control or "") if op.container is not None else "",
    )


def container_text(op: Operation) -> str:
    """``podman container web`` (the id's first 12 characters when the engine does not name it)."""
    if op.container is None:
        return ""
    engine = f"{op.container.engine} " if op.container.engine else ""
    return f"{engine}container {op.container.name or op.container.id[:12]}"


def service_text(op: Operation) -> str:
    """The one line of what a live server serves ("" when nothing was read)."""
    if op.service is None or op.status not in LIVE_STATUSES:
        return ""
    summary = op.service.get("summary")
    return summary if isinstance(summary, str) else ""


def service_title(op: Operation) -> str:
    """Where and when the service line was read, for its tooltip."""
    if not service_text(op):
        return ""
    checked = fmt.iso_utc(op.service_checked_at_ts) or ""
    return f"Read from {op.service_source or 'the server'}" + (f" at {checked}" if checked else "")


def runs_text(op: Operation) -> str:
    """Which run this is and how many the restart policy started, once there is more than one run."""
    if op.runs <= 1 and not op.restarts:
        return ""
    restarts = f" · {op.restarts} restart{'s' if op.restarts != 1 else ''}" if op.restarts else ""
    return f"run {op.run} of {op.runs}{restarts}" if op.run != op.runs else f"run {op.run}{restarts}"


def query_row(op: Operation, view: OperationView) -> dict[str, Any]:
    """The fields search, filters and sort (``dgx_spark.collector.query``) read, for one card."""
    return {
        "id": view.id,
        "type": view.type,
        "status": view.status,
        "name": view.name,
        "description": view.description,
        "command": view.command,
        "pid": view.pid,
        "port": view.port,
        "ports": list(op.ports) or ([view.port] if view.port is not None else []),
        "started_at": view.started_at,
        "ended_at": fmt.iso_utc(op.ended_at_ts) or "",
        "cpu_percent": op.cpu_percent,
        "memory_bytes": op.memory_bytes,
        "gpu_memory_bytes": op.gpu_memory_bytes,
    }


def display_order(view: OperationView) -> tuple[int, str, str]:
    """Live first; then oldest first, so a new card appears at the end and cards stay put."""
    return (0 if view.live else 1, view.started_at or "~", view.id)


def operation_views(operations: Iterable[Operation], now: float, host: str) -> list[OperationView]:
    """Views of every operation, in display order."""
    return sorted((operation_view(op, now, host) for op in operations), key=display_order)


def snapshot_errors(snapshot: Snapshot) -> list[str]:
    """The snapshot's probe failures, one line each."""
    return [f"{error.probe}: {error.message}" for error in snapshot.errors]
