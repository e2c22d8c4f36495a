"""Callbacks for Hugging Face ``Trainer`` and PyTorch Lightning that call ``report()``.

    from dgx_spark.progress.callbacks import DGXSparkTrainerCallback      # imports transformers
    trainer = Trainer(..., callbacks=[DGXSparkTrainerCallback()])

    from dgx_spark.progress.callbacks import DGXSparkLightningCallback    # imports lightning
    trainer = lightning.Trainer(..., callbacks=[DGXSparkLightningCallback()])

Importing this module imports neither library: each class is built the first
time its name is used. Only the main process (rank 0) reports, at most once every
``every_seconds`` between log events, and never lets a failure reach training.
"""

from __future__ import annotations

import time
from typing import Any

from dgx_spark.progress.report import report

__all__ = ["DGXSparkLightningCallback", "DGXSparkTrainerCallback"]  # noqa: F822 - built lazily

DEFAULT_EVERY_SECONDS = 5.0
# Hugging Face log keys that are not metrics worth a chart.
_HF_SKIP = frozenset({"epoch", "step", "total_flos", "train_runtime"})


class _Throttle:
    """Lets a report through at most once every ``every_seconds`` unless forced."""

    def __init__(self, every_seconds: float) -> None:
        self.every_seconds = every_seconds
        self._last = float("-inf")

    def due(self, force: bool = False) -> bool:
        now = time.monotonic()
        if force or now - self._last >= self.every_seconds:
            self._last = now
            return True
        return False


def _safe(send: Any) -> Any:
    """Run ``send`` and swallow anything it raises (a callback must never stop training)."""
    try:
        return send()
    except Exception:  # noqa: BLE001
        return False


def _hf_progress(args: Any, state: Any, logs: dict[str, Any] | None) -> bool:
    """Report a Hugging Face ``TrainerState`` (and the latest log dict)."""
    step = getattr(state, "global_step", None)
    max_steps = getattr(state, "max_steps", None)
    progress = step / max_steps if isinstance(step, int) and isinstance(max_steps, int) and max_steps > 0 else None
    epochs = getattr(args, "num_train_epochs", None)
    metrics = {
        ("train_loss" if key == "loss" else key): value
        for key, value in (logs or {}).items()
        if key not in _HF_SKIP
    }
    return report(
        progress=progress,
        epoch=getattr(state, "epoch", None),
        total_epochs=int(epochs) if isinstance(epochs, int | float) and epochs >= 1 else None,
        step=step,
        total_steps=max_steps,
        **metrics,
    )


def _lightning_progress(trainer: Any) -> bool:
    """Report a Lightning ``Trainer``'s position and its logged metrics."""
    step = getattr(trainer, "global_step", None)
    total = getattr(trainer, "estimated_stepping_batches", None)
    progress = None
    if isinstance(step, int) and isinstance(total, int | float) and 0 < total < float("inf"):
        progress = step / total
    epoch = getattr(trainer, "current_epoch", None)
    max_epochs = getattr(trainer, "max_epochs", None)
    metrics = dict(getattr(trainer, "callback_metrics", None) or {})
    return report(
        progress=progress,
        epoch=epoch + 1 if isinstance(epoch, int) else None,  # Lightning counts from 0
        total_epochs=max_epochs if isinstance(max_epochs, int) and max_epochs >= 1 else None,
        step=step,
        total_steps=int(total) if isinstance(total, int | float) and 0 < total < float("inf") else None,
        **metrics,
    )


def _build_trainer_callback() -> type:
    from transformers import TrainerCallback

    class DGXSparkTrainerCallback(TrainerCallback):
        """Reports a Hugging Face ``Trainer``'s progress, epoch and losses to DGX Spark."""

        def __init__(self, every_seconds: float = DEFAULT_EVERY_SECONDS) -> None:
            self._throttle = _Throttle(every_seconds)

        def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **kwargs: Any) -> None:
            if getattr(state, "is_world_process_zero", True) and self._throttle.due(force=True):
                _safe(lambda: _hf_progress(args, state, logs))

        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if getattr(state, "is_world_process_zero", True) and self._throttle.due():
                _safe(lambda: _hf_progress(args, state, None))

        def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if getattr(state, "is_world_process_zero", True):
                _safe(lambda: _hf_progress(args, state, None))

    return DGXSparkTrainerCallback


def _build_lightning_callback() -> type:
    try:
        from lightning.pytorch import Callback
    except ImportError:
        from pytorch_lightning import Callback

    class DGXSparkLightningCallback(Callback):
        """Reports a Lightning run's progress, epoch and logged metrics to DGX Spark."""

        def __init__(self, every_seconds: float = DEFAULT_EVERY_SECONDS) -> None:
            super().__init__()
            self._throttle = _Throttle(every_seconds)

        def _send(self, trainer: Any, force: bool) -> None:
            if getattr(trainer, "is_global_zero", True) and self._throttle.due(force=force):
                _safe(lambda: _lightning_progress(trainer))

        def on_train_batch_end(self, trainer: Any, pl_module: Any, *args: Any, **kwargs: Any) -> None:
            self._send(trainer, force=False)

        def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
            self._send(trainer, force=True)

        def on_train_end(self, trainer: Any, pl_module: Any) -> None:
            self._send(trainer, force=True)

    return DGXSparkLightningCallback


_BUILDERS = {
    "DGXSparkTrainerCallback": _build_trainer_callback,
    "DGXSparkLightningCallback": _build_lightning_callback,
}
_built: dict[str, type] = {}


def __getattr__(name: str) -> type:
    """Build a callback class on first use (this is when its library is imported)."""
    builder = _BUILDERS.get(name)
    if builder is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    if name not in _built:
        _built[name] = builder()
    return _built[name]
