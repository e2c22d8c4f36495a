"""Formatting for people: uptime, bytes, percent, timestamps, metrics, sparklines; text that is valid UTF-8.

Plain Python (no Reflex), so the UI state, the API and tests can all use it.
Every helper accepts ``None`` (a field that could not be read) and returns
``PLACEHOLDER`` for it, never a fake zero.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import re
from collections.abc import Sequence
from typing import Any

PLACEHOLDER = "—"

_BYTE_UNITS = ("B", "KiB", "MiB", "GiB", "TiB", "PiB")
_DURATION_UNITS = (("d", 86400), ("h", 3600), ("m", 60), ("s", 1))


def _finite(value: float | None) -> bool:
    """Whether ``value`` is a real, finite number (bools are not)."""
    return (
        value is not None
        and not isinstance(value, bool)
        and isinstance(value, (int, float))
        and math.isfinite(value)
    )


def format_uptime(seconds: float | None) -> str:
    """A duration as its two largest units: ``45s``, ``12m 5s``, ``3h 12m``, ``2d 3h``.

    Args:
        seconds: Elapsed seconds; negative values count as 0.

    Returns:
        The short duration, or ``PLACEHOLDER`` when unknown.
    """
    if not _finite(seconds):
        return PLACEHOLDER
    left = max(0, int(seconds))  # type: ignore[arg-type]
    parts: list[str] = []
    for suffix, size in _DURATION_UNITS:
        amount, left = divmod(left, size)
        if amount or parts:
            parts.append(f"{amount}{suffix}")
        if len(parts) == 2:
            break
    return " ".join(parts) if parts else "0s"


def uptime_template(seconds: float | None) -> str:
    """The moment-duration-format template a browser ticks an uptime with.

    Seconds while under a day (``3h 12m 5s``), minutes from then on (``2d 3h 12m``).
    """
    if _finite(seconds) and seconds >= 86400:  # type: ignore[operator]
        return "d[d] h[h] m[m]"
    return "h[h] m[m] s[s]"


def format_bytes(count: float | None, *, precision: int = 1) -> str:
    """A byte count in binary units: ``512 B``, ``1.5 KiB``, ``12.4 GiB``.

    Args:
        count: Bytes; negative values are shown with a minus sign.
        precision: Decimals for units above bytes.

    Returns:
        The size, or ``PLACEHOLDER`` when unknown.
    """
    if not _finite(count):
        return PLACEHOLDER
    sign = "-" if count < 0 else ""  # type: ignore[operator]
    value = float(abs(count))  # type: ignore[arg-type]
    unit = 0
    while value >= 1024 and unit < len(_BYTE_UNITS) - 1:
        value /= 1024
        unit += 1
    if unit == 0:
        return f"{sign}{int(value)} B"
    text = f"{value:.{precision}f}"
    if float(text) >= 1024 and unit < len(_BYTE_UNITS) - 1:
        # 1023.96 KiB rounds up to "1024.0": show it as the next unit.
        text, unit = f"{value / 1024:.{precision}f}", unit + 1
    return f"{sign}{text} {_BYTE_UNITS[unit]}"


def format_percent(value: float | None, *, ratio: bool = False, decimals: int = 0) -> str:
    """A percentage: ``87 %``.

    Args:
        value: The percentage (``87.2``), or a ratio (``0.872``) with ``ratio=True``.
        ratio: Whether ``value`` is a fraction of 1.
        decimals: Digits after the point.

    Returns:
        The percentage, or ``PLACEHOLDER`` when unknown.
    """
    if not _finite(value):
        return PLACEHOLDER
    percent = float(value) * (100.0 if ratio else 1.0)  # type: ignore[arg-type]
    return f"{percent:.{decimals}f} %"


def progress_percent(progress: float | None) -> int | None:
    """A progress ratio (0..1) as a whole percent clamped to 0..100, or None."""
    if not _finite(progress):
        return None
    return max(0, min(100, round(float(progress) * 100)))  # type: ignore[arg-type]


def format_metric(value: float | None, *, digits: int = 4) -> str:
    """A metric such as a loss with ``digits`` significant digits: ``0.3421``, ``1.235e-05``."""
    if not _finite(value):
        return PLACEHOLDER
    return f"{float(value):.{digits}g}"  # type: ignore[arg-type]


def format_epoch(epoch: float | None, total: int | None = None) -> str:
    """An epoch, with its total when known: ``25``, ``25/100``, ``1.5``."""
    if not _finite(epoch):
        return PLACEHOLDER
    number = float(epoch)  # type: ignore[arg-type]
    text = str(int(number)) if number.is_integer() else f"{number:.2f}".rstrip("0")
    if _finite(total) and total:
        return f"{text}/{int(total)}"
    return text


def iso_utc(timestamp: float | None, *, milliseconds: bool = False) -> str | None:
    """A POSIX timestamp as ISO-8601 UTC in whole seconds (``2025-12-31T12:00:00Z``); None when unknown.

    The one ISO formatter: the API's timestamps, and the page's, which the browser
    turns into local time (rx.moment), so it must be unambiguous. ``milliseconds``
    adds them (``2025-12-31T12:00:00.250Z``: health's component states).
    """
    if not _finite(timestamp):
        return None
    try:
        moment = dt.datetime.fromtimestamp(int(timestamp), tz=dt.UTC)  # type: ignore[arg-type]
    except (OverflowError, OSError, ValueError):
        return None  # beyond the platform's dates
    if milliseconds:
        return moment.strftime("%Y-%m-%dT%H:%M:%S") + f".{int(timestamp % 1 * 1000):03d}Z"  # type: ignore[operator]
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def format_timestamp(timestamp: float | None, tz: dt.tzinfo | None = None) -> str:
    """A POSIX timestamp as a full local time: ``2025-12-31 13:00:00 CET``.

    Args:
        timestamp: Seconds since the epoch.
        tz: The zone to show; the machine's local zone when None.

    Returns:
        The timestamp, or ``PLACEHOLDER`` when unknown.
    """
    if not _finite(timestamp):
        return PLACEHOLDER
    moment = dt.datetime.fromtimestamp(float(timestamp), tz=dt.UTC)  # type: ignore[arg-type]
    moment = moment.astimezone(tz) if tz is not None else moment.astimezone()
    return moment.strftime("%Y-%m-%d %H:%M:%S %Z").strip()


def format_ago(seconds: float | None) -> str:
    """How long ago, coarsely: ``just now``, ``42 s ago``, ``5 min ago``, ``3 h ago``, ``2 d ago``."""
    if not _finite(seconds):
        return PLACEHOLDER
    value = max(0.0, float(seconds))  # type: ignore[arg-type]
    if value < 5:
        return "just now"
    if value < 60:
        return f"{int(value)} s ago"
    if value < 3600:
        return f"{int(value // 60)} min ago"
    if value < 86400:
        return f"{int(value // 3600)} h ago"
    return f"{int(value // 86400)} d ago"


def sparkline_points(
    values: Sequence[float | None] | None,
    width: float,
    height: float,
    *,
    top: float | None = None,
    fit: bool = False,
    pad: float = 0.0,
) -> str:
    """SVG ``polyline`` points of a series, oldest left; unknown values leave a gap.

    Args:
        values: The series (None, NaN: unknown).
        width: The drawing's width.
        height: The drawing's height.
        top: The value drawn at the top, from 0 at the bottom (100 for percentages);
            the series' maximum when None.
        fit: Scale the series' own minimum..maximum to the height instead (a loss curve).
        pad: Room kept above and below the line (the stroke stays inside the box).

    Returns:
        ``"x,y x,y ..."``, or ``""`` with fewer than two known values.
    """
    series = list(values or ())
    known = [(i, float(v)) for i, v in enumerate(series) if _finite(v)]  # type: ignore[arg-type]
    if len(known) < 2:
        return ""
    if fit:
        low, high = min(v for _, v in known), max(v for _, v in known)
    else:
        low, high = 0.0, top or max(v for _, v in known) or 1.0
    span = high - low or 1.0
    step = width / max(1, len(series) - 1)
    inner = height - 2 * pad
    return " ".join(
        f"{i * step:.1f},{pad + inner * (1 - (max(low, min(v, high)) - low) / span):.1f}" for i, v in known
    )


# A JSON escape of a UTF-16 surrogate ("\ud800".."\udfff"): the only way JSON text can hold one.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
_SURROGATE_ESCAPE_BYTES = re.compile(rb"\\u[dD][89a-fA-F]")


def valid_text(value: Any, depth: int = 0) -> Any:
    """``value`` with lone surrogates (text that is not valid UTF-8) replaced by U+FFFD, dict keys included.

    Strings, dicts and lists are walked (nesting deeper than 64 levels becomes ``None``);
    anything else is returned as it is.
    """
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return "".join("\ufffd" if 0xD800 <= ord(c) <= 0xDFFF else c for c in value)
        return value
    if depth > 64:
        return None
    if isinstance(value, dict):
        return {valid_text(str(k)): valid_text(v, depth + 1) for k, v in value.items()}
    if isinstance(value, list):
        return [valid_text(v, depth + 1) for v in value]
    return value


def loads_valid_json(raw: str | bytes, **kwargs: Any) -> Any:
    """``json.loads``, with lone surrogates (``"\\ud800"`` escapes) replaced by U+FFFD as ``valid_text`` does.

    For JSON from elsewhere (a container engine, a server's API, another node): its text is then
    always valid UTF-8, so it can be stored, listed and sent to a browser. Answers without such an
    escape are not walked.
    """
    data = json.loads(raw, **kwargs)
    found = (_SURROGATE_ESCAPE_BYTES.search(raw) if isinstance(raw, bytes | bytearray)
             else _SURROGATE_ESCAPE.search(raw))
    return valid_text(data) if found else data
