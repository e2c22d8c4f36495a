"""Read training progress out of a job's output: tqdm, Keras, HF Trainer, Lightning, JSON lines.

Plain Python, no third-party imports. An ``OutputParser`` is fed the new bytes of a
log as they arrive; it copes with lines split across reads, carriage-return redraws
(tqdm rewrites its bar with ``\\r``), ANSI escape codes and broken UTF-8, and keeps
the latest view of the job in ``OutputParser.state``.

How progress is worked out, most specific first:

- an explicit ``progress`` (JSON lines);
- an epoch ``N`` of ``M`` plus a fraction within that epoch (a Keras step line, a
  tqdm bar described ``Epoch N/M`` or one that follows an ``Epoch N/M`` header, a
  Lightning bar when the number of epochs is known) gives ``(N - 1 + fraction) / M``;
- a tqdm bar over the whole run (Hugging Face Trainer's) gives ``n / total``;
- HF Trainer's fractional ``epoch`` over its ``Num Epochs`` gives ``epoch / M``;
- a bare ``Epoch N/M`` header means epoch N has started: ``(N - 1) / M``; an epoch
  line that also carries a loss is an end-of-epoch summary: ``N / M``.

Epochs are 1-based everywhere (Lightning prints 0-based ``Epoch 0``; we add one).
"""

from __future__ import annotations

import ast
import codecs
import dataclasses
import json
import math
import re
from typing import Any

# Longest line kept; a longer one (no newline in sight) is dropped.
MAX_LINE_CHARS = 16_384
# At most this many metric names are kept per job.
MAX_METRICS = 24
MAX_METRIC_NAME = 64

_ANSI = re.compile(
    r"\x1b\[[0-9;?]*[ -/]*[@-~]"  # CSI: colours, cursor moves
    r"|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)"  # OSC: titles, links
    r"|\x1b[@-Z\\-_]"  # other two-byte escapes
)
_NUM = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"
_SCALE = {"": 1.0, "k": 1e3, "K": 1e3, "M": 1e6, "G": 1e9, "T": 1e12}

# `desc: 45%|████▌     | 450/1000 [01:02<01:15, 7.20it/s, loss=0.342]`
_TQDM = re.compile(
    r"(?:^|\s)(?:(?P<desc>.*?):\s*)?(?P<pct>\d{1,3})%\|[^|]*\|\s*"
    r"(?P<n>\d+(?:\.\d+)?)(?P<nscale>[kMGT]?)/(?P<total>\d+(?:\.\d+)?)(?P<tscale>[kMGT]?)\s*"
    r"\[(?P<inner>[^\]]*)\]"
)
# `desc: 450it [01:02, 7.20it/s, loss=0.342]` (no known total)
_TQDM_NO_TOTAL = re.compile(
    r"(?:^|\s)(?:(?P<desc>.*?):\s*)?(?P<n>\d+(?:\.\d+)?)(?P<nscale>[kMGT]?)(?P<unit>[a-zA-Z]+)\s+"
    r"\[(?P<inner>\d+:\d+(?::\d+)?,[^\]]*)\]"
)
# `7.20it/s`, `1.50s/it`, and tqdm's `unit=" samples"` form `3.10 samples/s`.
_TQDM_RATE = re.compile(r"(?P<rate>\d+(?:\.\d+)?)(?P<scale>[kMGT]?) ?(?P<unit>[a-zA-Z]*/s|s/[a-zA-Z]+)")
# A rate in a plain log line: `3.1 it/s`, `12 steps/s`, `2.5s/it` (iterations, steps or batches only).
_LINE_RATE = re.compile(
    r"(?<![\w.])(?P<rate>\d+(?:\.\d+)?)\s*(?:(?P<per>it|its|iters?|steps?|batch(?:es)?)/s"
    r"|s/(?P<inv>it|iter|step|batch))\b",
    re.IGNORECASE,
)
_POSTFIX = re.compile(r"(?P<key>[A-Za-z_][\w.\-/]*)=(?P<value>" + _NUM + r"|nan|inf)")

# Keras 2 `120/313 [=====>....] - ETA: 1s - loss: 0.41` and Keras 3 `313/313 ━━━━ 2s 5ms/step - loss: 0.34`
_KERAS_STEP = re.compile(r"^\s*(?P<n>\d+)/(?P<total>\d+)\s+(?:\[[=>.]*\]|[━─\-]+)")
_KERAS_PAIR = re.compile(r"(?:^|\s)-?\s*(?P<key>[A-Za-z_][\w]*):\s*(?P<value>" + _NUM + r"|nan|inf)(?=\s|$)")
_KERAS_STEP_TIME = re.compile(r"(?P<value>\d+(?:\.\d+)?)(?P<unit>us|µs|ms|s)/step")

# `Epoch 3/10`, `Epoch [3/10]`, `epoch: 3 of 10`, `Epoch 3`
_EPOCH_OF = re.compile(r"\bepoch\b\s*[:#\[(]?\s*(?P<n>\d+)\s*(?:/|of)\s*(?P<total>\d+)", re.IGNORECASE)
_EPOCH_ONLY = re.compile(r"^\s*epoch\s*[:#]?\s*(?P<n>\d+)\b", re.IGNORECASE)
_STEP_OF = re.compile(
    r"\b(?:step|iter(?:ation)?|batch)\b\s*[:#\[(]?\s*(?P<n>\d+)\s*(?:/|of)\s*(?P<total>\d+)", re.IGNORECASE
)
_LOSS = re.compile(
    r"\b(?P<key>train[_ ]loss|loss|val[_ ]loss|eval[_ ]loss)\b\s*[:=]?\s*(?P<value>" + _NUM + r"|nan)",
    re.IGNORECASE,
)

# Hugging Face Trainer's "***** Running training *****" banner.
_HF_EPOCHS = re.compile(r"^\s*Num Epochs\s*=\s*(?P<n>[\d,]+)\s*$")
_HF_STEPS = re.compile(r"^\s*Total optimization steps\s*=\s*(?P<n>[\d,]+)\s*$")

# tqdm bars that are not training progress (evaluation, data loading, downloads).
_OTHER_BAR = re.compile(r"valid|eval|test|predict|sanity|download|map|token|load|fetch|shard", re.IGNORECASE)

_LOSS_ALIASES = {"loss": "train_loss", "train_loss": "train_loss", "train loss": "train_loss"}
_NOT_METRICS = frozenset(
    {
        "epoch", "epochs", "total_epochs", "num_epochs", "max_epochs", "num_train_epochs", "step",
        "global_step", "total_steps", "max_steps", "progress", "v_num", "it", "iteration",
    }
)


@dataclasses.dataclass
class ProgressUpdate:
    """What one source says about a job right now. Every field may be unknown (None)."""

    progress: float | None = None
    epoch: float | None = None
    total_epochs: int | None = None
    step: int | None = None
    total_steps: int | None = None
    throughput: float | None = None
    metrics: dict[str, float] = dataclasses.field(default_factory=dict)

    def is_empty(self) -> bool:
        """Whether nothing is known."""
        return (
            self.progress is None
            and self.epoch is None
            and self.step is None
            and self.throughput is None
            and not self.metrics
        )

    def copy(self) -> ProgressUpdate:
        """An independent copy."""
        return dataclasses.replace(self, metrics=dict(self.metrics))


def strip_ansi(text: str) -> str:
    """Remove ANSI escape sequences (colours, cursor moves, titles)."""
    return _ANSI.sub("", text)


def finite(value: Any) -> float | None:
    """``value`` as a finite float, or None (bools, strings, NaN and infinities are refused)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def _number(text: str, scale: str = "") -> float | None:
    try:
        value = float(text) * _SCALE.get(scale, 1.0)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


# Keys of a log dict, in the order they are looked at.
_TOTAL_EPOCH_KEYS = ("total_epochs", "num_epochs", "epochs", "max_epochs", "num_train_epochs")
_TOTAL_STEP_KEYS = ("total_steps", "max_steps")
_STEP_KEYS = ("step", "global_step")
_THROUGHPUT_KEYS = ("throughput", "it_per_s", "train_steps_per_second", "steps_per_second")


def _first_at_least(data: dict[str, Any], keys: tuple[str, ...], low: float) -> float | None:
    """The first finite number at least ``low`` among ``data[key]`` for ``keys``, else None."""
    for key in keys:
        value = finite(data.get(key))
        if value is not None and value >= low:
            return value
    return None


def _clamp01(value: float) -> float:
    return min(1.0, max(0.0, value))


def _metric_name(key: str) -> str | None:
    name = key.strip().lower().replace(" ", "_")
    # Not printable: control characters, or a lone surrogate from a JSON escape ("\\ud800"), not valid UTF-8.
    if not name or len(name) > MAX_METRIC_NAME or name in _NOT_METRICS or not name.isprintable():
        return None
    return _LOSS_ALIASES.get(name, name)


def _tqdm_rate(inner: str) -> float | None:
    """Iterations per second from the bracket of a tqdm bar (``7.2it/s`` or ``1.5s/it``)."""
    for match in _TQDM_RATE.finditer(inner):
        rate = _number(match["rate"], match["scale"])
        if rate is None:
            continue
        if match["unit"].startswith("s/"):
            return 1.0 / rate if rate > 0 else None
        return rate
    return None


class OutputParser:
    """Turns a job's output, fed in chunks, into its latest progress."""

    def __init__(self) -> None:
        """Start with nothing known."""
        self.state = ProgressUpdate()
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._pending = ""
        # Whether ``total_steps`` came from a bar (the first bar seen may be an evaluation bar).
        self._total_from_bar = False
        # "header": an `Epoch N/M` line was seen, so bars without a description are per epoch.
        self._epoch_header = False
        # The epoch the latest header named, and the fraction of it done.
        self._header_epoch: int | None = None
        self.lines_parsed = 0

    def feed(self, data: bytes | str) -> bool:
        """Parse new output; True when the state changed."""
        text = self._decoder.decode(data) if isinstance(data, bytes) else data
        if not text:
            return False
        before = self.state.copy()
        buffer = self._pending + text
        # Every \n or \r ends a segment: tqdm redraws with \r, so each redraw is a line.
        segments = re.split(r"\r\n|\r|\n", buffer)
        self._pending = segments.pop()
        if len(self._pending) > MAX_LINE_CHARS:
            self._pending = ""
        for segment in segments:
            if segment and len(segment) <= MAX_LINE_CHARS:
                self.parse_line(segment)
        # A bar still being redrawn has no line end yet; read it once it looks whole.
        if self._pending.rstrip().endswith("]"):
            clean = strip_ansi(self._pending)
            if _TQDM.search(clean) or _TQDM_NO_TOTAL.search(clean):
                self.parse_line(self._pending)
        return self.state != before

    def parse_line(self, raw: str) -> None:
        """Parse one complete line (ANSI codes allowed) into the state."""
        line = strip_ansi(raw).replace("\b", "").strip()
        if not line:
            return
        self.lines_parsed += 1
        if line.startswith("{") and line.endswith("}"):
            data = _load_dict(line)
            if data is not None:
                self._apply_dict(data)
                return
        if self._banner(line):
            return
        bar = _TQDM.search(line)
        if bar is not None:
            self._apply_bar(bar)
            return
        bar = _TQDM_NO_TOTAL.search(line)
        if bar is not None and bar["unit"] != "s":
            self._apply_open_bar(bar)
            return
        keras = _KERAS_STEP.match(line)
        if keras is not None:
            self._apply_keras(keras, line)
            return
        self._apply_epoch_line(line)

    # -- formats ---------------------------------------------------------------

    def _banner(self, line: str) -> bool:
        """Hugging Face Trainer's banner: the number of epochs and of optimisation steps."""
        match = _HF_EPOCHS.match(line)
        if match is not None:
            self.state.total_epochs = int(match["n"].replace(",", "")) or None
            return True
        match = _HF_STEPS.match(line)
        if match is not None:
            self.state.total_steps = int(match["n"].replace(",", "")) or None
            self._total_from_bar = False
            self._epoch_header = False
            return True
        return False

    def _apply_dict(self, data: dict[str, Any]) -> None:
        """A JSON line or a Hugging Face Trainer log dict."""
        state = self.state
        total_epochs = _first_at_least(data, _TOTAL_EPOCH_KEYS, 1)
        if total_epochs is not None:
            state.total_epochs = int(total_epochs)
        total_steps = _first_at_least(data, _TOTAL_STEP_KEYS, 1)
        if total_steps is not None:
            state.total_steps = int(total_steps)
        step = _first_at_least(data, _STEP_KEYS, 0)
        if step is not None:
            state.step = int(step)
        epoch = finite(data.get("epoch"))
        if epoch is not None and epoch >= 0:
            state.epoch = round(epoch, 3)
        # The first rate given counts, even a negative one (then none is taken).
        throughput = _first_at_least(data, _THROUGHPUT_KEYS, -math.inf)
        if throughput is not None and throughput >= 0:
            state.throughput = throughput
        for key, value in data.items():
            number = finite(value)
            name = _metric_name(str(key))
            if number is not None and name is not None:
                self._metric(name, number)
        self._dict_progress(data, epoch)

    def _dict_progress(self, data: dict[str, Any], epoch: float | None) -> None:
        """Progress from a log dict: given, else step / total steps, else epoch / total epochs."""
        state = self.state
        progress = finite(data.get("progress"))
        if progress is not None:
            state.progress = _clamp01(progress)
        elif ("step" in data or "global_step" in data) and state.step is not None and state.total_steps:
            state.progress = _clamp01(state.step / state.total_steps)
        elif epoch is not None and state.total_epochs:
            # HF's fractional epoch is the run's position; an integer epoch in a JSON line
            # is a finished epoch. Both read as epoch / total.
            state.progress = _clamp01(epoch / state.total_epochs)

    def _apply_bar(self, bar: re.Match[str]) -> None:
        """A tqdm bar with a known total (also Lightning's)."""
        desc = (bar["desc"] or "").strip()
        n = _number(bar["n"], bar["nscale"])
        total = _number(bar["total"], bar["tscale"])
        if n is None or total is None or total <= 0:
            return
        if desc and _OTHER_BAR.search(desc) and not re.search(r"\bepoch\b", desc, re.IGNORECASE):
            return
        state = self.state
        fraction = _clamp01(n / total)
        epoch_of = _EPOCH_OF.search(desc)
        epoch_only = _EPOCH_ONLY.search(desc) if epoch_of is None else None
        if epoch_of is not None:
            # `Epoch 3/10: 45%|...` - a bar per epoch, epochs counted from 1.
            epoch, epochs = int(epoch_of["n"]), int(epoch_of["total"])
            if epochs >= 1:
                state.total_epochs = epochs
                state.epoch = epoch
                state.progress = _clamp01((max(epoch, 1) - 1 + fraction) / epochs)
        elif epoch_only is not None:
            # Lightning: `Epoch 3: 45%|...` counts epochs from 0.
            epoch = int(epoch_only["n"]) + 1
            state.epoch = epoch
            if state.total_epochs:
                state.progress = _clamp01((epoch - 1 + fraction) / state.total_epochs)
        elif desc and not re.search(r"train|step|iter|batch|epoch", desc, re.IGNORECASE):
            return  # a bar about something else (files, items)
        elif self._epoch_header and self._header_epoch is not None and state.total_epochs:
            # A plain bar after an `Epoch N/M` header: that epoch's batches.
            state.progress = _clamp01((self._header_epoch - 1 + fraction) / state.total_epochs)
        else:
            # A shorter bar is an evaluation bar inside the run. A longer one after a bar (not the
            # Trainer's banner) set the length is the training bar: reading began during an evaluation.
            longer = self._total_from_bar and int(total) > (state.total_steps or 0)
            if state.total_steps and int(total) != state.total_steps and not longer:
                return
            if state.total_steps != int(total):
                self._total_from_bar = True  # this bar sets the length (the banner's is kept)
            state.step = int(n)
            state.total_steps = int(total)
            state.progress = fraction
        rate = _tqdm_rate(bar["inner"])
        if rate is not None:
            state.throughput = rate
        self._postfix(bar["inner"])

    def _apply_open_bar(self, bar: re.Match[str]) -> None:
        """A tqdm bar without a total: a step count and a rate, no progress."""
        desc = (bar["desc"] or "").strip()
        if desc and _OTHER_BAR.search(desc):
            return
        n = _number(bar["n"], bar["nscale"])
        if n is not None:
            self.state.step = int(n)
        rate = _tqdm_rate(bar["inner"])
        if rate is not None:
            self.state.throughput = rate
        self._postfix(bar["inner"])

    def _apply_keras(self, step: re.Match[str], line: str) -> None:
        """A Keras step line inside the current epoch."""
        n, total = int(step["n"]), int(step["total"])
        if total <= 0:
            return
        state = self.state
        if self._header_epoch is not None and state.total_epochs:
            state.progress = _clamp01((self._header_epoch - 1 + min(n, total) / total) / state.total_epochs)
        for pair in _KERAS_PAIR.finditer(line[step.end():]):
            name = _metric_name(pair["key"])
            value = _number(pair["value"])
            if name is not None and name != "eta" and value is not None:
                self._metric(name, value)
        timing = _KERAS_STEP_TIME.search(line)
        if timing is not None:
            seconds = float(timing["value"]) * {"us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0}[timing["unit"]]
            if seconds > 0:
                state.throughput = 1.0 / seconds

    def _apply_epoch_line(self, line: str) -> None:
        """`Epoch 3/10`, `Epoch [1/5], Step [100/600], Loss: 0.2345`, or a loss alone."""
        state = self.state
        epoch_of = _EPOCH_OF.search(line)
        losses = list(_LOSS.finditer(line))
        for match in losses:
            name = _metric_name(match["key"])
            value = _number(match["value"])
            if name is not None and value is not None:
                self._metric(name, value)
        rate = _LINE_RATE.search(line)
        if rate is not None:
            value = _number(rate["rate"])
            if value is not None and value > 0:
                state.throughput = value if rate["per"] else 1.0 / value
        if epoch_of is None:
            return
        epoch, epochs = int(epoch_of["n"]), int(epoch_of["total"])
        if epochs < 1:
            return
        state.total_epochs = epochs
        state.epoch = epoch
        step_of = _STEP_OF.search(line)
        if step_of is not None and int(step_of["total"]) > 0:
            fraction = min(int(step_of["n"]), int(step_of["total"])) / int(step_of["total"])
            state.progress = _clamp01((max(epoch, 1) - 1 + fraction) / epochs)
        elif losses:
            state.progress = _clamp01(epoch / epochs)  # an end-of-epoch summary
        else:
            state.progress = _clamp01((max(epoch, 1) - 1) / epochs)  # the epoch begins
            self._epoch_header = True
        self._header_epoch = epoch

    def _postfix(self, inner: str) -> None:
        """`loss=0.342, lr=1e-4` after a tqdm bar's timing."""
        for pair in _POSTFIX.finditer(inner):
            name = _metric_name(pair["key"])
            value = _number(pair["value"])
            if name is not None and value is not None:
                self._metric(name, value)

    def _metric(self, name: str, value: float) -> None:
        metrics = self.state.metrics
        if name in metrics or len(metrics) < MAX_METRICS:
            metrics[name] = value


def _load_dict(line: str) -> dict[str, Any] | None:
    """A JSON object, or a Python dict literal (HF Trainer prints those), else None."""
    if len(line) > 8192:
        return None
    try:
        data = json.loads(line, parse_constant=lambda _: None)
    except ValueError:
        try:
            data = ast.literal_eval(line)
        except (ValueError, SyntaxError, MemoryError, RecursionError):
            return None
    return data if isinstance(data, dict) else None


def parse_text(text: str | bytes) -> ProgressUpdate:
    """Parse a whole output at once (handy in tests and for one-off reads)."""
    parser = OutputParser()
    parser.feed(text)
    parser.feed("\n")
    return parser.state.copy()
