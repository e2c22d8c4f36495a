"""CPU and memory per operation, with real processes, through the real backend."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from tests.support import workloads
from tests.support.dashboard import Dashboard, wait_until

MB = 1024 * 1024
FOUND = 30.0


def live(backend: Dashboard, pid: int) -> dict[str, Any] | None:
    """The live operation rooted at ``pid``."""
    return next(
        (op for op in backend.operations() if op["pid"] == pid and op["status"] not in ("stopped", "failed")),
        None,
    )


def test_memory_of_a_process_that_touches_200_mb(backend: Dashboard, tmp_path: Path) -> None:
    with workloads.memory_hog(tmp_path, megabytes=200) as hog:
        operation = wait_until(
            lambda: (op := live(backend, hog.pid)) and (op["memory_bytes"] or 0) >= 200 * MB and op,
            FOUND,
            message=f"memory not seen: {live(backend, hog.pid)}",
        )
        assert operation["memory_bytes"] < 400 * MB


def test_busy_loop_uses_more_than_half_a_core(backend: Dashboard, tmp_path: Path) -> None:
    with workloads.busy_loop(tmp_path) as spin:
        # The first sighting has no interval to measure over: null, never a fake 0.
        first = wait_until(lambda: live(backend, spin.pid), FOUND)
        assert first["cpu_percent"] is None or first["cpu_percent"] >= 0
        operation = wait_until(
            lambda: (op := live(backend, spin.pid)) and (op["cpu_percent"] or 0) > 50 and op,
            60.0,
            message=f"busy loop not seen busy: {live(backend, spin.pid)}",
        )
        assert operation["status"] == "active"


def test_idle_script_is_running_not_active(backend: Dashboard, tmp_path: Path) -> None:
    with workloads.bash_loop(tmp_path) as loop:
        operation = wait_until(
            lambda: (op := live(backend, loop.pid)) and op["cpu_percent"] is not None and op, FOUND
        )
        assert operation["cpu_percent"] < 50
        wait_until(lambda: (op := live(backend, loop.pid)) and op["status"] == "running", FOUND)


def test_folded_tree_sums_its_children(backend: Dashboard, tmp_path: Path) -> None:
    with workloads.memory_tree(tmp_path, children=2, megabytes_each=100) as tree:
        operation = wait_until(
            lambda: (op := live(backend, tree.pid))
            and op["process_count"] == 3
            and (op["memory_bytes"] or 0) >= 200 * MB
            and op,
            FOUND,
            message=f"tree memory not summed: {live(backend, tree.pid)}",
        )
        # More than the parent alone could explain: the children's memory is in the sum.
        with open(f"/proc/{tree.pid}/statm") as handle:
            parent_rss = int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        assert operation["memory_bytes"] >= parent_rss + 190 * MB
