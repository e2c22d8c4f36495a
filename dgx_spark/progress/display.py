"""How progress reads on a job card: ETA, throughput, source label, loss sparkline size (plain Python)."""

from __future__ import annotations

import math

SOURCE_LABELS: dict[str, str] = {
    "api": "reported via API",
    "helper": "reported by the job",
    "log": "read from output",
    "trainer_state": "from trainer_state.json",
}
SPARKLINE_WIDTH = 80
SPARKLINE_HEIGHT = 20


def format_eta(seconds: float | None) -> str:
    """``ETA 3m 20s``-style remaining time (two largest units), ``""`` when unknown."""
    if seconds is None or isinstance(seconds, bool) or not math.isfinite(seconds):
        return ""
    left = max(0, round(seconds))
    if left == 0:
        return "done"
    parts: list[str] = []
    for suffix, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        amount, left = divmod(left, size)
        if amount or parts:
            parts.append(f"{amount}{suffix}")
        if len(parts) == 2:
            break
    return " ".join(parts)


def format_throughput(rate: float | None) -> str:
    """``7.2 it/s``, or ``12.5 s/it`` when slower than one per second; ``""`` when unknown."""
    if rate is None or isinstance(rate, bool) or not math.isfinite(rate) or rate <= 0:
        return ""
    if rate < 1:
        return f"{1 / rate:.3g} s/it"
    return f"{rate:.3g} it/s"


def source_label(source: str | None) -> str:
    """Where the numbers came from, in words."""
    if not source:
        return ""
    return SOURCE_LABELS.get(source, source)
