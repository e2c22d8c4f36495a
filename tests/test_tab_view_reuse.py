"""The cards' views are derived again only for operations that changed (``state/tab_view.py``)."""

from __future__ import annotations

import dataclasses
import itertools
from unittest import mock

from dgx_spark.collector.model import Operation, Snapshot
from dgx_spark.state import tab_view
from dgx_spark.state.view import operation_view

NOW = 1_800_000_000.0
_hosts = itertools.count()


def _op(i: int, **fields: object) -> Operation:
    base: dict[str, object] = dict(
        id=f"op-{i}-1", type="program", name=f"worker_{i}", status="running", started_at_ts=NOW - 600,
        pid=1000 + i, pids=(1000 + i,), command=f"python worker_{i}.py", cpu_percent=1.0, memory_bytes=4096,
    )
    base.update(fields)
    return Operation(**base)  # type: ignore[arg-type]


def _snapshot(sequence: int, taken_at: float, ops: list[Operation]) -> Snapshot:
    # Fresh, equal objects each time, as the sampler makes them.
    return Snapshot(sequence=sequence, taken_at=taken_at, operations=tuple(dataclasses.replace(op) for op in ops))


def _derived(host: str, snapshots: list[Snapshot]) -> list[list[str]]:
    """The ids ``operation_view`` was called for, per snapshot."""
    calls: list[list[str]] = []
    real = tab_view.operation_view
    for snapshot in snapshots:
        seen: list[str] = []

        def spy(op: Operation, now: float, host: str = "127.0.0.1", seen: list[str] = seen) -> object:
            seen.append(op.id)
            return real(op, now, host)

        with mock.patch.object(tab_view, "operation_view", spy):
            tab_view.base_view(snapshot, host)
        calls.append(seen)
    return calls


def test_only_changed_operations_are_derived_again_and_the_cards_stay_right() -> None:
    host = f"reuse-{next(_hosts)}"
    ops = [_op(i) for i in range(5)]
    changed = [*ops[:2], dataclasses.replace(ops[2], cpu_percent=55.0), *ops[3:]]
    snapshots = [_snapshot(1, NOW, ops), _snapshot(2, NOW + 2, ops), _snapshot(3, NOW + 4, changed)]
    calls = _derived(host, snapshots)
    assert calls[0] == [op.id for op in ops]
    assert calls[1] == []  # nothing changed: every view kept
    assert calls[2] == ["op-2-1"]
    base = tab_view.base_view(snapshots[2], host)
    # The same cards as deriving every operation afresh would give.
    assert list(base.views) == sorted((operation_view(op, NOW + 4, host) for op in snapshots[2].operations),
                                      key=tab_view.display_order)
    assert next(v for v in base.views if v.id == "op-2-1").cpu_text == "55 %"
    # Sorting and search read the newest operations' raw figures.
    assert next(r for r in base.rows if r["id"] == "op-2-1")["cpu_percent"] == 55.0
    assert base.ops == tuple(op for view in base.views for op in snapshots[2].operations if op.id == view.id)


def test_an_uptime_that_crosses_a_day_is_derived_again() -> None:
    host = f"reuse-{next(_hosts)}"
    op = _op(1, started_at_ts=NOW - 86_400 + 1)
    calls = _derived(host, [_snapshot(1, NOW, [op]), _snapshot(2, NOW + 2, [op])])
    assert calls == [["op-1-1"], ["op-1-1"]]
    assert tab_view.base_view(_snapshot(3, NOW + 4, [op]), host).views[0].uptime_format == "d[d] h[h] m[m]"


def test_an_ended_operation_without_an_end_time_is_derived_again() -> None:
    host = f"reuse-{next(_hosts)}"
    op = _op(1, status="stopped", ended_at_ts=None)
    calls = _derived(host, [_snapshot(1, NOW, [op]), _snapshot(2, NOW + 2, [op])])
    assert calls == [["op-1-1"], ["op-1-1"]]
