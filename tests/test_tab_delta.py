"""What one tick sends, in-process: one changed program re-sends only the programs
section, and a quiet tick does not touch the tab's state at all.

A real Reflex state tree (no app server) fed real ``Snapshot`` values; the delta
is what Reflex would send to the browser.
"""

from __future__ import annotations

import time
from typing import Any

import reflex as rx
from reflex.istate.data import RouterData

import dgx_spark.dgx_spark  # noqa: F401 - registers every state of the app
from dgx_spark.collector.model import Operation, Snapshot
from dgx_spark.services import get_sampler
from dgx_spark.state import loops, operations
from dgx_spark.state.operations import OperationsState
from tests.support.aio import run_coroutine

NOW = time.time()
TOKEN = "tab-delta-test"


def _ops(program_cpu: float) -> tuple[Operation, ...]:
    servers = [
        Operation(id=f"srv-{i}", type="server", name=f"web{i}", status="running", port=8000 + i,
                  ports=(8000 + i,), pid=100 + i, pids=(100 + i,), started_at_ts=NOW - 60, cpu_percent=1.0)
        for i in range(5)
    ]
    jobs = [
        Operation(id=f"job-{i}", type="job", name=f"train{i}", status="running", pid=200 + i,
                  pids=(200 + i,), started_at_ts=NOW - 50, cpu_percent=2.0)
        for i in range(5)
    ]
    programs = [
        Operation(id=f"prg-{i}", type="program", name=f"loop{i}.sh", status="running", pid=300 + i,
                  pids=(300 + i,), started_at_ts=NOW - 40, cpu_percent=program_cpu if i == 0 else 3.0)
        for i in range(5)
    ]
    return (*servers, *jobs, *programs)


def _snap(sequence: int, program_cpu: float) -> Snapshot:
    return Snapshot(sequence=sequence, taken_at=NOW + sequence, operations=_ops(program_cpu))


def _tree() -> tuple[Any, OperationsState]:
    root = rx.State(_reflex_internal_init=True)
    root.router = RouterData.from_router_data({"token": TOKEN, "pathname": "/", "headers": {"host": "127.0.0.1"}})
    state = root.get_substate(OperationsState.get_full_name().split(".")[1:])
    return root, state


def _delta(root: Any) -> dict[str, Any]:
    result = run_coroutine(root._get_resolved_delta())
    root._clean()
    return result


def _ops_part(sent: dict[str, Any]) -> dict[str, Any]:
    part = next((v for k, v in sent.items() if k.endswith("dgx_spark___state___operations____operations_state")), {})
    return {key.removesuffix("_rx_state_"): value for key, value in part.items()}


def test_one_changed_program_sends_only_the_programs_section() -> None:
    root, state = _tree()
    state._apply(_snap(1, 3.0), True, 1.0, NOW + 1)
    first = _ops_part(_delta(root))
    assert [len(first[name]) for name in ("servers", "jobs", "programs")] == [5, 5, 5]
    assert first["server_count"] == 5 and first["running_count"] == 15

    state._apply(_snap(2, 55.0), True, 1.0, NOW + 2)
    sent = _delta(root)
    part = _ops_part(sent)
    assert [op.cpu_text for op in part["programs"] if op.id == "prg-0"] == ["55 %"]
    assert "servers" not in part and "jobs" not in part and "operations" not in part
    # Nothing else of the tree carries a card list: the programs section goes once.
    assert [key.rsplit(".", 1)[-1] for key in sent] == ["dgx_spark___state___operations____operations_state"]
    assert str(sent).count("'prg-0'") == 1
    loops.stop(TOKEN)


def test_a_quiet_tick_does_not_touch_the_state() -> None:
    root, state = _tree()
    sampler = get_sampler()  # the loop reads whether it runs; apply with the same facts
    state._apply(_snap(1, 3.0), sampler.running, sampler.interval, NOW + 1)
    _delta(root)
    # A newer snapshot with the same contents: the loop finds nothing due, so it
    # neither locks nor loads the tab's state.
    assert operations.due_feeds(TOKEN, {operations.FEED}, _snap(2, 3.0), NOW + 2) == []
    # A change is due (and applying it sends only the programs section).
    due = operations.due_feeds(TOKEN, {operations.FEED}, _snap(3, 9.0), NOW + 3)
    assert [name for name, _ in due] == [operations.FEED]
    state._apply(_snap(3, 9.0), sampler.running, sampler.interval, NOW + 3)
    assert "programs" in _ops_part(_delta(root))
    assert operations.due_feeds(TOKEN, {operations.FEED}, _snap(4, 9.0), NOW + 4) == []
    loops.stop(TOKEN)


def test_a_filter_change_refilters_the_newest_snapshot() -> None:
    root, state = _tree()
    # Newer than anything this process sampled, so it is the one refiltered.
    newest = get_sampler().latest.sequence + 10_000
    state._apply(_snap(newest, 3.0), True, 1.0, NOW + 1)
    _delta(root)
    state.q = "loop3"
    state._filters_changed()
    part = _ops_part(_delta(root))
    assert [op.id for op in part["programs"]] == ["prg-3"]
    assert part["servers"] == [] and part["jobs"] == [] and part["visible_count"] == 1
    state.q = "no-such-thing"
    state._filters_changed()
    assert state.no_matches
    loops.stop(TOKEN)
