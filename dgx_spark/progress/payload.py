"""Checks of a progress report's body (plain Python): every refusal names its field.

A report looks like ``{"progress": 0.45, "epoch": 25, "total_epochs": 100,
"step": 450, "total_steps": 1000, "metrics": {"train_loss": 0.342}}``; every key
is optional but at least one must say something. Unknown keys are refused, so a
typo never passes silently.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from dgx_spark.progress.parsers import ProgressUpdate

MAX_BODY_BYTES = 16 * 1024
MAX_METRICS = 32
_METRIC_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.\-/]{0,63}")
REPORT_SOURCES = ("api", "helper")
_FIELDS = frozenset({"progress", "epoch", "total_epochs", "step", "total_steps", "throughput", "metrics", "source"})
_BIG = 1e12


class PayloadError(ValueError):
    """A refused report; ``field`` names the culprit, ``status`` is the HTTP status to answer."""

    def __init__(self, field: str, message: str, status: int = 422) -> None:
        """Create the error."""
        super().__init__(f"{field}: {message}")
        self.field = field
        self.reason = message
        self.status = status


class _NonFinite:
    """What ``NaN``/``Infinity`` in the JSON text became: never a number."""

    def __init__(self, text: str) -> None:
        self.text = text


def load_body(raw: bytes) -> Any:
    """Parse a body: size-capped JSON, with NaN/Infinity kept as non-numbers."""
    if len(raw) > MAX_BODY_BYTES:
        raise PayloadError("body", f"larger than {MAX_BODY_BYTES} bytes", status=413)
    try:
        return json.loads(raw.decode("utf-8"), parse_constant=_NonFinite)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise PayloadError("body", f"not valid JSON ({type(exc).__name__})", status=400) from exc


def _number(data: dict[str, Any], field: str, lo: float, hi: float, *, integer: bool = False) -> float | None:
    if field not in data or data[field] is None:
        return None
    value = data[field]
    if isinstance(value, _NonFinite):
        raise PayloadError(field, f"must be a finite number, got {value.text}")
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise PayloadError(field, f"must be a number, got {type(value).__name__}")
    if not math.isfinite(value):
        raise PayloadError(field, "must be a finite number")
    if integer and not float(value).is_integer():
        raise PayloadError(field, f"must be a whole number, got {value}")
    if not lo <= value <= hi:
        raise PayloadError(field, f"must be between {lo:g} and {hi:g}, got {value}")
    return value


def parse_report(data: Any, *, extra_fields: frozenset[str] = frozenset()) -> tuple[ProgressUpdate, str]:
    """Check a decoded report; return it as an update and the source it names.

    Args:
        data: The decoded JSON body.
        extra_fields: Keys the caller handles itself (e.g. ``pid``), allowed here.

    Raises:
        PayloadError: naming the first bad field.
    """
    if not isinstance(data, dict):
        raise PayloadError("body", f"must be a JSON object, got {type(data).__name__}")
    for key in data:
        if key not in _FIELDS and key not in extra_fields:
            raise PayloadError(str(key)[:64], "unknown field")
    update = _numbers(data)
    update.metrics = _metrics(data.get("metrics"))
    source = data.get("source", "api")
    if source not in REPORT_SOURCES:
        raise PayloadError("source", f"must be one of {', '.join(REPORT_SOURCES)}")
    if update.is_empty() and update.total_epochs is None and update.total_steps is None:
        raise PayloadError("body", "nothing to report: send progress, epoch, step or metrics")
    return update, source


def _whole(value: float | None) -> int | None:
    return None if value is None else int(value)


def _numbers(data: dict[str, Any]) -> ProgressUpdate:
    """The report's numbers, each in its range; an epoch or step past its total is refused."""
    update = ProgressUpdate()
    update.progress = _number(data, "progress", 0.0, 1.0)
    update.epoch = _number(data, "epoch", 0.0, _BIG)
    update.total_epochs = _whole(_number(data, "total_epochs", 1.0, _BIG, integer=True))
    update.step = _whole(_number(data, "step", 0.0, _BIG, integer=True))
    update.total_steps = _whole(_number(data, "total_steps", 1.0, _BIG, integer=True))
    update.throughput = _number(data, "throughput", 0.0, _BIG)
    if update.epoch is not None and update.total_epochs is not None and update.epoch > update.total_epochs:
        raise PayloadError("epoch", f"must not exceed total_epochs ({update.total_epochs}), got {update.epoch}")
    if update.step is not None and update.total_steps is not None and update.step > update.total_steps:
        raise PayloadError("step", f"must not exceed total_steps ({update.total_steps}), got {update.step}")
    return update


def _metrics(metrics: Any) -> dict[str, float]:
    """The report's metrics: named numbers (``loss`` is read as ``train_loss``)."""
    if metrics is None:
        return {}
    if not isinstance(metrics, dict):
        raise PayloadError("metrics", f"must be an object of numbers, got {type(metrics).__name__}")
    if len(metrics) > MAX_METRICS:
        raise PayloadError("metrics", f"at most {MAX_METRICS} metrics, got {len(metrics)}")
    result: dict[str, float] = {}
    for name in metrics:
        if not _METRIC_NAME.fullmatch(name):
            raise PayloadError(f"metrics.{name[:64]}", "metric names are letters, digits and _.-/ (64 at most)")
        try:
            value = _number(metrics, name, -_BIG, _BIG)
        except PayloadError as exc:
            raise PayloadError(f"metrics.{name}", exc.reason) from None
        if value is not None:
            result[name] = float(value)
    if "loss" in result and "train_loss" not in result:
        result["train_loss"] = result.pop("loss")
    return result
