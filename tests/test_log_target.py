"""Why a discovered process's log is empty: where its output goes, told through the process (real processes)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psutil

from dgx_spark.collector.model import operation_id
from dgx_spark.collector.output import ProcessOutput, describe_target
from tests.support.dashboard import wait_until

SLEEP = "import os, sys, time\nif sys.argv[1:] == ['close']: os.close(1)\ntime.sleep(60)\n"


@contextmanager
def sleeper(stdout: Any, *args: str) -> Iterator[ProcessOutput]:
    """A sleeping child with the given stdout, as the logs view would address it."""
    child = subprocess.Popen([sys.executable, "-c", SLEEP, *args], stdout=stdout, stderr=subprocess.DEVNULL)
    try:
        if args == ("close",):
            wait_until(lambda: not os.path.exists(f"/proc/{child.pid}/fd/1"), 30, message="fd 1 never closed")
        yield ProcessOutput(operation_id(child.pid, psutil.Process(child.pid).create_time()), child.pid)
    finally:
        child.kill()
        child.wait()


def test_where_the_output_goes(tmp_path: Path) -> None:
    with sleeper(subprocess.PIPE) as source:
        assert describe_target(source) == "a pipe (another program reads it)"
    with sleeper(subprocess.DEVNULL) as source:
        assert describe_target(source) == "/dev/null (it is thrown away)"
    with (tmp_path / "out.log").open("wb") as log, sleeper(log) as source:
        assert describe_target(source) is None  # a file: readable, nothing to explain
    primary, secondary = os.openpty()
    try:
        with sleeper(secondary) as source:
            text = describe_target(source)
            assert text is not None and text.startswith("a terminal (/dev/pts/"), text
    finally:
        os.close(primary)
        os.close(secondary)
    left, right = socket.socketpair()
    with left, right, sleeper(right) as source:
        assert describe_target(source) == "a socket (for example the systemd journal)"
    with sleeper(subprocess.DEVNULL, "close") as source:
        assert describe_target(source) == "nowhere: its output is closed"
    assert describe_target(source) == "nowhere any more: the process has ended"


def test_search_highlights_matches_case_insensitively() -> None:
    from dgx_spark.state.log_search import highlight

    lines = ["epoch 1 loss 0.5", "saving", "LOSS loss", "İ loss"]
    assert highlight(lines, "loss") == [
        ["epoch 1 ", "loss", " 0.5"],
        ["", "LOSS", " ", "loss", ""],
        ["", "İ loss", ""],  # lower() changes this line's length: the whole line is marked
    ]
    assert highlight(lines, "") == []
    assert highlight(lines, "nothing") == []


def test_runner_notes_alone_are_not_output() -> None:
    from dgx_spark.state.log_search import has_output

    assert not has_output([])
    assert not has_output(["[dgx-spark 2026-01-01 10:00:00] run 1 starting: python -c pass"])
    assert has_output(["[dgx-spark 2026-01-01 10:00:00] run 1 starting: x", "hello"])


def test_unavailable_reasons(tmp_path: Path) -> None:
    from dgx_spark.state.log_search import NOTHING_WRITTEN, unavailable_reason

    assert "has ended" in unavailable_reason(None)
    assert unavailable_reason(tmp_path / "op.log") == NOTHING_WRITTEN
    with sleeper(subprocess.PIPE) as source:
        assert unavailable_reason(source) == "Output not captured: it goes to a pipe (another program reads it)."
