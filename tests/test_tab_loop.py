"""The tab's shared live loop in-process: feeds, one loop per tab, no sys.path growth."""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
import sys
import time
from typing import Any

import reflex as rx

import dgx_spark.dgx_spark  # noqa: F401 - registers every state of the app
from dgx_spark.collector.facts import MemoryFacts, SystemFacts
from dgx_spark.collector.model import Snapshot
from dgx_spark.services import get_sampler
from dgx_spark.state import events, loops, operations, system
from dgx_spark.state.system import SystemState
from tests.support.aio import run_coroutine


def test_connection_checks_do_not_grow_sys_path() -> None:
    # Every per-tab loop's "is the tab still connected" check, as the loops call it each tick.
    checks = [
        value
        for module in (events, operations, system)
        for name, value in vars(module).items()
        if name.endswith("client_connected") and inspect.isfunction(value)
    ]
    assert checks
    for check in checks:
        check("no-such-tab")  # the first call may look the app up once
    before = len(sys.path)
    for _ in range(10):
        for check in checks:
            check("no-such-tab")
    assert len(sys.path) == before


def test_views_of_a_tab_share_one_loop_which_ends_with_the_last_feed() -> None:
    token = "tab-feeds"
    running = loops.count()
    generation = loops.join(token, "operations")
    assert generation is not None
    assert loops.join(token, "system") is None  # the header rides on the running loop
    assert loops.count() == running + 1
    assert loops.feeds(token, generation) == {"operations", "system"}
    loops.leave(token, "operations")
    assert loops.feeds(token, generation) == {"system"}
    loops.leave(token, "system")
    assert loops.feeds(token, generation) == frozenset()  # the loop ends at its next check
    loops.release(token, generation)
    assert loops.count() == running
    # A later mount starts a fresh loop.
    again = loops.join(token, "system")
    assert again is not None and again != generation
    loops.release(token, again)


def test_the_system_feed_fills_the_header_once_per_snapshot() -> None:
    root = rx.State(_reflex_internal_init=True)
    header = root.get_substate(SystemState.get_full_name().split(".")[1:])
    memory = MemoryFacts(total_bytes=8 << 30, used_bytes=2 << 30, percent=25.0)
    snapshot = Snapshot(sequence=3, taken_at=time.time(), operations=(), system=SystemFacts(memory=memory))
    apply: Any = operations._appliers[system.FEED]
    run_coroutine(apply(header, snapshot, time.time()))
    assert header.loaded
    assert header.ram_text == "2.0 GiB / 8.0 GiB"
    header.ram_text = "changed"
    run_coroutine(apply(header, snapshot, time.time()))  # same snapshot: nothing reassigned
    assert header.ram_text == "changed"


def test_tabs_taking_the_same_step_send_the_same_changes_and_a_tab_left_behind_catches_up() -> None:
    def header_of(root: rx.State) -> Any:
        return root.get_substate(SystemState.get_full_name().split(".")[1:])

    def snapshot(sequence: int, used_gib: int) -> Snapshot:
        memory = MemoryFacts(total_bytes=64 << 30, used_bytes=used_gib << 30, percent=used_gib * 100 / 64)
        return Snapshot(sequence=sequence, taken_at=time.time(), operations=(), system=SystemFacts(memory=memory))

    apply: Any = operations._appliers[system.FEED]
    first, second = rx.State(_reflex_internal_init=True), rx.State(_reflex_internal_init=True)
    base = 10_000 + time.time_ns() % 1000  # newer than the other tests' snapshots
    for root in (first, second):
        run_coroutine(apply(header_of(root), snapshot(base, 2), time.time()))
        root._clean()
    step = snapshot(base + 1, 3)
    deltas = []
    for root in (first, second):
        run_coroutine(apply(header_of(root), step, time.time()))
        deltas.append(root.get_delta())
        root._clean()
    assert deltas[0] == deltas[1]
    changed = next(iter(deltas[0].values()))
    assert any(name.startswith("ram_text") for name in changed)
    assert not any(name.startswith("gpu_message") for name in changed)  # unchanged fields are not sent
    # The first tab moves on through more views than are kept; the second then catches up at once.
    for offset in range(2, 2 + system.MAX_VIEWS + 2):
        run_coroutine(apply(header_of(first), snapshot(base + offset, 3 + offset), time.time()))
    latest = snapshot(base + 2 + system.MAX_VIEWS + 2, 40)
    for root in (first, second):
        run_coroutine(apply(header_of(root), latest, time.time()))
    for field in dataclasses.fields(system.SystemView):
        assert getattr(header_of(second), field.name) == getattr(header_of(first), field.name), field.name
    assert header_of(second).ram_text == "40.0 GiB / 64.0 GiB"


def test_the_bell_loop_is_a_side_loop_of_the_same_registry() -> None:
    """The notifications bell's loop lives in state/loops.py beside the feed loop, superseded on its own."""
    token = "tab-bell"
    tabs = loops.count()
    feed = loops.join(token, "operations")
    bell = loops.claim(token, events.LOOP_KIND)
    assert feed is not None and loops.is_current(token, bell, events.LOOP_KIND)
    assert loops.count() == tabs + 1 and loops.count(events.LOOP_KIND) >= 1  # ui_loops counts feed loops
    newer = loops.claim(token, events.LOOP_KIND)  # a reload supersedes the old bell loop only
    assert not loops.is_current(token, bell, events.LOOP_KIND) and loops.is_current(token, newer, events.LOOP_KIND)
    assert loops.feeds(token, feed) == {"operations"}
    loops.release(token, bell, events.LOOP_KIND)
    loops.stop(token, events.LOOP_KIND)  # the bell unmounted: its loop ends, the feed loop runs on
    assert not loops.is_current(token, newer, events.LOOP_KIND) and loops.is_current(token, feed)
    loops.release(token, newer, events.LOOP_KIND)
    loops.release(token, feed)
    assert loops.count() == tabs


def test_loops_wake_on_a_new_snapshot_not_on_a_timer() -> None:
    """A waiting loop returns when the sampler publishes, long before its idle timeout."""
    sampler = get_sampler()

    async def scenario() -> tuple[bool, int]:
        after = sampler.latest.sequence
        waiter = asyncio.create_task(operations.next_snapshot(after, timeout=3600))
        await asyncio.sleep(0)  # the waiter is waiting now
        early = waiter.done()
        await asyncio.to_thread(sampler.sample_once)
        await asyncio.wait_for(waiter, 120)  # a hang guard, far below the 3600 s timeout
        return early, sampler.latest.sequence - after

    early, published = run_coroutine(scenario())
    assert not early and published >= 1
