"""``report()``: a training script tells the dashboard how far it is. Standard library only.

    from dgx_spark.progress import report
    for epoch in range(1, 101):
        ...
        report(progress=epoch / 100, epoch=epoch, total_epochs=100, train_loss=loss)

It finds the dashboard from the environment, which the dashboard sets for the
jobs it launches: ``DGX_SPARK_URL`` (default ``http://127.0.0.1:3000``),
``DGX_SPARK_TOKEN`` and ``DGX_SPARK_OPERATION_ID``. Without an operation id it
reports by its own pid, which works for jobs the dashboard discovered.

It never raises and never holds a training loop for long: a short timeout, every
error swallowed, and after a failure it stays quiet for ``BACKOFF_SECONDS``.
This file imports nothing outside the standard library, so it can be copied
into a project on its own.
"""

from __future__ import annotations

import json
import math
import os
import re
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

DEFAULT_URL = "http://127.0.0.1:3000"
TIMEOUT_SECONDS = 2.0
BACKOFF_SECONDS = 30.0


class _Backoff:
    """When ``report`` may try again after the dashboard did not answer (one per training process)."""

    quiet_until = 0.0


_backoff = _Backoff()

# The dashboard is local: never send reports (and the token) through an HTTP proxy.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _default_url() -> str:
    port = os.environ.get("DGX_SPARK_PORT", "").strip()
    return f"http://127.0.0.1:{port}" if port.isdigit() else DEFAULT_URL


def _number(value: Any) -> float | int | None:
    """``value`` as a finite JSON number (numpy / torch scalars too), else None."""
    if isinstance(value, bool) or value is None:
        return None
    if not isinstance(value, int | float):
        item = getattr(value, "item", None)  # numpy and torch scalars
        try:
            value = item() if callable(item) else float(value)
        except (TypeError, ValueError, RuntimeError):
            return None
        if isinstance(value, bool) or not isinstance(value, int | float):
            return None
    return value if math.isfinite(value) else None


def _metric_name(name: str) -> str:
    """A metric name the API accepts: letters, digits and ``_.-/``, 64 at most."""
    cleaned = re.sub(r"[^A-Za-z0-9_.\-/]", "_", name)[:64]
    return cleaned if re.match(r"[A-Za-z_]", cleaned) else f"m_{cleaned}"[:64]


def build_report(
    progress: Any = None,
    epoch: Any = None,
    *,
    total_epochs: Any = None,
    step: Any = None,
    total_steps: Any = None,
    **metrics: Any,
) -> dict[str, Any]:
    """The JSON body for these values; unusable ones (NaN, None, text) are left out."""
    body: dict[str, Any] = {"source": "helper"}
    value = _number(progress)
    if value is not None:
        body["progress"] = min(1.0, max(0.0, float(value)))
    value = _number(epoch)
    if value is not None and value >= 0:
        body["epoch"] = value
    for key, raw in (("total_epochs", total_epochs), ("step", step), ("total_steps", total_steps)):
        value = _number(raw)
        if value is not None and float(value).is_integer() and value >= (0 if key == "step" else 1):
            body[key] = int(value)
    if "epoch" in body and "total_epochs" in body and body["epoch"] > body["total_epochs"]:
        del body["total_epochs"]
    if "step" in body and "total_steps" in body and body["step"] > body["total_steps"]:
        del body["total_steps"]
    clean = {}
    for name, raw in list(metrics.items())[:32]:
        value = _number(raw)
        if value is not None:
            key = _metric_name(str(name))
            clean["train_loss" if key == "loss" else key] = value
    if clean:
        body["metrics"] = clean
    return body


def report(
    progress: Any = None,
    epoch: Any = None,
    *,
    total_epochs: Any = None,
    step: Any = None,
    total_steps: Any = None,
    timeout: float = TIMEOUT_SECONDS,
    **metrics: Any,
) -> bool:
    """Send progress to the dashboard; True if it was accepted. Never raises.

    Args:
        progress: Fraction done, 0..1.
        epoch: The current epoch (1-based; may be fractional).
        total_epochs: How many epochs the run has.
        step: The current optimisation step.
        total_steps: How many steps the run has.
        timeout: Seconds to wait for the dashboard.
        **metrics: Numbers such as ``train_loss=0.34`` (``loss`` counts as ``train_loss``).
    """
    try:
        if time.monotonic() < _backoff.quiet_until:
            return False
        body = build_report(
            progress, epoch, total_epochs=total_epochs, step=step, total_steps=total_steps, **metrics
        )
        if len(body) == 1:
            return False  # nothing usable to say
        base = (os.environ.get("DGX_SPARK_URL") or _default_url()).rstrip("/")
        op_id = os.environ.get("DGX_SPARK_OPERATION_ID", "").strip()
        if op_id:
            url = f"{base}/api/dgx/operations/{urllib.parse.quote(op_id, safe='')}/progress"
        else:
            url = f"{base}/api/dgx/progress"
            body["pid"] = os.getpid()
        request = urllib.request.Request(
            url, data=json.dumps(body).encode(), method="POST", headers={"Content-Type": "application/json"}
        )
        token = os.environ.get("DGX_SPARK_TOKEN", "").strip()
        if token:
            request.add_header("Authorization", f"Bearer {token}")
        with _OPENER.open(request, timeout=timeout) as response:
            return 200 <= response.status < 300
    except urllib.error.HTTPError:
        return False  # refused (bad token, unknown id): the next call may fare better
    except Exception:  # noqa: BLE001 - the training script must never die of this
        _backoff.quiet_until = time.monotonic() + BACKOFF_SECONDS
        return False
