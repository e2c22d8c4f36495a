"""What one tick sends, in-process: one changed operation re-sends its own card and
none of the others' data, and a quiet tick does not touch the tab's state at all.

A real Reflex state tree (no app server) fed real ``Snapshot`` values; the delta
is what Reflex would send to the browser. (Its size in bytes is measured by
``make bench``'s ws row, not asserted here.)
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
from dgx_spark.state.tab_view import CARD_SHARDS
from tests.support.aio import run_coroutine

NOW = time.time()
TOKEN = "tab-delta-test"


def _ops(program_cpu: float, programs: int = 5, ended: int | None = None) -> tuple[Operation, ...]:
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
    listed = [
        Operation(id=f"prg-{i}", type="program", name=f"loop{i}.sh", status="running", pid=300 + i,
                  pids=(300 + i,), started_at_ts=NOW - 40, cpu_percent=program_cpu if i == 0 else 3.0)
        for i in range(programs)
    ]
    if ended is not None:
        listed[ended] = listed[ended].replace(status="stopped", ended_at_ts=NOW, outcome="stopped",
                                              exit_reason="stopped by SIGTERM", outcome_source="kernel")
    return (*servers, *jobs, *listed)


def _snap(sequence: int, program_cpu: float, programs: int = 5, ended: int | None = None) -> Snapshot:
    return Snapshot(sequence=sequence, taken_at=NOW + sequence, operations=_ops(program_cpu, programs, ended))


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


def _cards(part: dict[str, Any], var: str) -> list[Any]:
    """The cards a delta's list var names, looked up in the shards (of this delta or the state)."""
    return [part[f"cards_{handle % CARD_SHARDS}"][str(handle)] for handle in part[var]]


def _card_vars(part: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {key: value for key, value in part.items() if key.startswith("cards_")}


def test_one_changed_card_sends_only_that_card() -> None:
    root, state = _tree()
    state._apply(_snap(1, 3.0, programs=50), True, 1.0, NOW + 1)
    first = _ops_part(_delta(root))
    assert [len(first[name]) for name in ("servers", "jobs", "programs")] == [5, 5, 50]
    assert [op.id for op in _cards(first, "programs")] == sorted(f"prg-{i}" for i in range(50))
    assert first["server_count"] == 5 and first["running_count"] == 60

    state._apply(_snap(2, 55.0, programs=50), True, 1.0, NOW + 2)
    sent = _delta(root)
    part = _ops_part(sent)
    # No list is re-sent (the order did not change), only the shard that holds prg-0.
    assert not [name for name in operations.LIST_VARS if name in part]
    shards = _card_vars(part)
    assert len(shards) == 1
    (cards,) = shards.values()
    assert [card.cpu_text for card in cards.values()] == ["55 %"]
    # With fewer cards than shards, each has its own: no other operation's data goes.
    assert [card.id for card in cards.values()] == ["prg-0"]
    assert [key.rsplit(".", 1)[-1] for key in sent] == ["dgx_spark___state___operations____operations_state"]
    loops.stop(TOKEN)


def test_an_ended_card_sends_its_card_and_the_references_only() -> None:
    root, state = _tree()
    state._apply(_snap(1, 3.0, programs=50), True, 1.0, NOW + 1)
    before = _ops_part(_delta(root))
    state._apply(_snap(2, 3.0, programs=50, ended=7), True, 1.0, NOW + 2)
    part = _ops_part(_delta(root))
    # The programs section's references change (prg-7 moves to the ended strip)...
    handles = {op.id: handle for op, handle in zip(_cards(before, "programs"), before["programs"], strict=True)}
    assert part["programs"] == [handles[f"prg-{i}"] for i in sorted(range(50), key=str) if i != 7]
    assert part["programs_ended"] == [handles["prg-7"]]  # each card keeps its handle
    assert "servers" not in part and "jobs" not in part and "jobs_ended" not in part
    # ... and the one shard that holds prg-7's card: no other card's data is sent.
    shards = _card_vars(part)
    assert [[card.id for card in cards.values()] for cards in shards.values()] == [["prg-7"]]
    (card,) = next(iter(shards.values())).values()
    assert card.status == "stopped" and card.outcome_text
    sent_text = repr(part)
    assert "loop8.sh" not in sent_text and "train1" not in sent_text
    # The other cards are still found in the shards they were sent in before.
    assert [op.name for op in operations.section_cards(state, "programs")][:2] == ["loop0.sh", "loop1.sh"]
    loops.stop(TOKEN)


def test_cards_keep_their_shard_and_shards_stay_small() -> None:
    _root, state = _tree()
    state._apply(_snap(1, 3.0, programs=500), True, 1.0, NOW + 1)
    before = {op.id: handle for op, handle in zip(operations.section_cards(state, "programs"), state.programs,
                                                  strict=True)}
    sizes = [len(getattr(state, name)) for name in operations.SHARD_VARS]
    # 510 cards over the shards: each holds 7 or 8.
    assert sum(sizes) == 510 and max(sizes) - min(sizes) <= 1
    state._apply(_snap(2, 3.0, programs=500, ended=3), True, 1.0, NOW + 2)
    after = {op.id: handle for var in ("programs", "programs_ended")
             for op, handle in zip(operations.section_cards(state, var), getattr(state, var), strict=True)}
    assert after == before  # every card keeps its handle (and so its shard)
    assert max(before.values()) < 8 * CARD_SHARDS  # handles stay small
    loops.stop(TOKEN)


def _state_vars(state: OperationsState) -> dict[str, Any]:
    return {name: getattr(state, name) for name in (*operations.LIST_VARS, *operations.SHARD_VARS)}


def test_a_quiet_tick_does_not_touch_the_state() -> None:
    root, state = _tree()
    sampler = get_sampler()  # the loop reads whether it runs; apply with the same facts
    state._apply(_snap(1, 3.0), sampler.running, sampler.interval, NOW + 1)
    _delta(root)
    # A newer snapshot with the same contents: the loop finds nothing due, so it
    # neither locks nor loads the tab's state.
    assert operations.due_feeds(TOKEN, {operations.FEED}, _snap(2, 3.0), NOW + 2) == []
    # A change is due (and applying it sends only the changed card's shard).
    due = operations.due_feeds(TOKEN, {operations.FEED}, _snap(3, 9.0), NOW + 3)
    assert [name for name, _ in due] == [operations.FEED]
    state._apply(_snap(3, 9.0), sampler.running, sampler.interval, NOW + 3)
    assert [[card.id for card in cards.values()] for cards in _card_vars(_ops_part(_delta(root))).values()] == [
        ["prg-0"]
    ]
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
    assert [op.id for op in _cards(_state_vars(state), "programs")] == ["prg-3"]
    assert part["servers"] == [] and part["jobs"] == [] and part["visible_count"] == 1
    state.q = "no-such-thing"
    state._filters_changed()
    assert state.no_matches
    loops.stop(TOKEN)
