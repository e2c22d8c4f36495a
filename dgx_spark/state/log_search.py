"""Search within the logs view, and why a log is empty (plain Python, used by ``ControlState``)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from dgx_spark.collector import output
from dgx_spark.collector.output import LogSource, ProcessOutput

MAX_QUERY = 200
NOTHING_WRITTEN = "Nothing written yet."
# The runner's own notes in a launched operation's log ("[dgx-spark <time>] run 1 starting: ...").
RUNNER_NOTE = "[dgx-spark "


def has_output(lines: Sequence[str]) -> bool:
    """Whether the operation itself wrote anything (not only the runner's notes)."""
    return any(not line.startswith(RUNNER_NOTE) for line in lines)


def highlight(lines: Sequence[str], query: str) -> list[list[str]]:
    """The lines containing ``query`` (case-insensitive), each split into segments.

    Even positions are plain text, odd positions are the matches, so a line
    ``"loss 0.5 LOSS"`` searched for ``"loss"`` is ``["", "loss", " 0.5 ", "LOSS", ""]``.
    An empty query matches nothing (the view then shows every line unsplit).
    """
    needle = query.lower()
    if not needle:
        return []
    found: list[list[str]] = []
    for line in lines:
        folded = line.lower()
        if needle not in folded:
            continue
        if len(folded) != len(line):
            found.append(["", line, ""])  # case folding changed the length: mark the whole line
            continue
        segments: list[str] = []
        start = 0
        while (at := folded.find(needle, start)) >= 0:
            segments += [line[start:at], line[at : at + len(needle)]]
            start = at + len(needle)
        segments.append(line[start:])
        found.append(segments)
    return found


def unavailable_reason(source: LogSource | None) -> str:
    """Why there is no log to show: where a discovered process's output goes instead."""
    if source is None:
        return "No output to show: this process has ended and its output was not written to a file."
    if isinstance(source, ProcessOutput):
        where = output.describe_target(source)
        if where is None:  # a file after all, which could not be read just now
            return "Output not captured: its file could not be read."
        return f"Output not captured: it goes to {where}."
    if isinstance(source, Path):
        return NOTHING_WRITTEN
    return "Output could not be read just now (the container engine did not answer, or it has ended)."
