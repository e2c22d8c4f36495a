"""The Operations state in-process: an idle tick sends nothing; changes, errors and staleness do.

A real Reflex state tree (no app server) fed real ``Snapshot`` values; the
delta is what Reflex would send to the browser.
"""

from __future__ import annotations

import time
from typing import Any

import pytest
import reflex as rx

import dgx_spark.dgx_spark  # noqa: F401 - registers every state of the app
from dgx_spark.collector.model import Operation, ProbeError, Snapshot
from dgx_spark.state.operations import OperationsState, section_cards
from dgx_spark.state.tab_view import CARD_SHARDS
from tests.support.aio import run_coroutine

NOW = time.time()
SERVER = Operation(
    id="op-1", type="server", name="web", status="running", port=8000, ports=(8000,),
    pid=10, pids=(10,), started_at_ts=NOW - 60,
)
SCRIPT = Operation(id="op-2", type="program", name="loop.sh", status="running", pid=11, pids=(11,))


@pytest.fixture
def tree() -> tuple[Any, OperationsState]:
    """A fresh root state and its operations substate."""
    root = rx.State(_reflex_internal_init=True)
    state = root.get_substate(OperationsState.get_full_name().split(".")[1:])
    return root, state


def delta(root: Any) -> dict[str, Any]:
    """What would be sent to the browser now (then marks everything clean)."""
    result = run_coroutine(root._get_resolved_delta())
    root._clean()
    return {key.rsplit(".", 1)[-1]: value for key, value in result.items()}


def ops_delta(root: Any) -> dict[str, Any]:
    """The operations state's part of the delta."""
    return delta(root).get("dgx_spark___state___operations____operations_state", {})


def sent_cards(sent: dict[str, Any], var: str) -> list[Any]:
    """The cards a delta's list var names, looked up in the card shards the same delta carries."""
    return [sent[f"cards_{handle % CARD_SHARDS}_rx_state_"][str(handle)] for handle in sent[var + "_rx_state_"]]


def snap(sequence: int, *operations: Operation, errors: tuple[ProbeError, ...] = ()) -> Snapshot:
    return Snapshot(sequence=sequence, taken_at=NOW + sequence, operations=operations, errors=errors)


def test_first_snapshot_fills_sections_and_ends_loading(tree: tuple[Any, OperationsState]) -> None:
    root, state = tree
    state._apply(snap(1, SERVER, SCRIPT), True, 1.0, NOW + 1)
    sent = ops_delta(root)
    assert sent["loading_rx_state_"] is False
    assert [op.id for op in sent_cards(sent, "servers")] == ["op-1"]
    assert [op.id for op in sent_cards(sent, "programs")] == ["op-2"]
    assert sent["jobs_rx_state_"] == []
    assert sent["last_updated_rx_state_"]


def test_an_idle_tick_sends_nothing(tree: tuple[Any, OperationsState]) -> None:
    root, state = tree
    state._apply(snap(1, SERVER, SCRIPT), True, 1.0, NOW + 1)
    delta(root)
    # A newer snapshot with the same contents (only time moved on): nothing to send.
    state._apply(snap(2, SERVER, SCRIPT), True, 1.0, NOW + 2)
    assert ops_delta(root) == {}
    # A change is sent.
    state._apply(snap(3, SERVER, SCRIPT.replace(status="stopped", ended_at_ts=NOW)), True, 1.0, NOW + 3)
    sent = ops_delta(root)
    # It leaves the live cards for the section's "Recently ended" strip; the counts follow.
    assert sent["programs_rx_state_"] == []
    assert [op.status for op in sent_cards(sent, "programs_ended")] == ["stopped"]
    assert sent["program_count_rx_state_"] == 0 and sent["ended_count_rx_state_"] == 1
    assert "servers_ended_rx_state_" not in sent  # the other sections' lists are not re-sent


def test_probe_errors_and_a_stalled_sampler_are_flagged(tree: tuple[Any, OperationsState]) -> None:
    root, state = tree
    failing = (ProbeError(probe="gpu", message="NVMLError: boom", since=NOW),)
    state._apply(snap(1, SERVER, errors=failing), True, 1.0, NOW + 1)
    sent = ops_delta(root)
    assert sent["error_rx_state_"] == "gpu: NVMLError: boom"
    assert "stale_rx_state_" not in sent or sent["stale_rx_state_"] is False
    # The sampler stopped: the same data is now stale, and still there.
    state._apply(snap(1, SERVER, errors=failing), False, 1.0, NOW + 60)
    sent = ops_delta(root)
    assert sent["stale_rx_state_"] is True
    assert not [key for key in sent if key.startswith(("cards_", "servers", "jobs", "programs"))]
    assert [op.id for op in section_cards(state, "servers")] == ["op-1"]


def test_toggle_section_accepts_only_known_sections(tree: tuple[Any, OperationsState]) -> None:
    _, state = tree
    toggle = OperationsState.toggle_section.fn
    toggle(state, "programs")
    toggle(state, "servers")
    assert state.collapsed == "servers,programs"
    for bad in ("nope", "", "servers,jobs", None, 3, ["jobs"]):
        toggle(state, bad)
    assert state.collapsed == "servers,programs"
    toggle(state, "servers")
    assert state.collapsed_sections == ["programs"]


def test_one_operation_that_cannot_be_shown_is_marked_and_the_page_keeps_working(
    tree: tuple[Any, OperationsState], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Text that is not valid UTF-8 (a lone surrogate) is cleaned and marked; a failing view is a marked card."""
    from reflex_base.utils.format import json_dumps

    from dgx_spark.state import view as view_module

    root, state = tree
    odd = SERVER.replace(id="op-3", name="web\ud800", command="serve --name \udfff")
    state._apply(snap(1, SERVER, odd, SCRIPT), True, 1.0, NOW + 1)
    sent = ops_delta(root)
    json_dumps(sent).encode("utf-8")  # what the websocket carries: the whole delta encodes
    servers = {op.id: op for op in sent_cards(sent, "servers")}
    assert sorted(servers) == ["op-1", "op-3"] and sent["server_count_rx_state_"] == 2
    assert servers["op-3"].name == "web\ufffd" and servers["op-3"].command == "serve --name \ufffd"
    assert servers["op-3"].description.startswith(view_module.ENCODING_MARKER)
    assert servers["op-1"].name == "web" and servers["op-1"].description == ""
    # A view that fails outright: that card says so, the others are shown as ever.
    derive = view_module._derive_view

    def failing(op: Operation, now: float, host: str) -> view_module.OperationView:
        if op.id == "op-2":
            raise ZeroDivisionError("a bug")
        return derive(op, now, host)

    monkeypatch.setattr(view_module, "_derive_view", failing)
    state._apply(snap(2, SERVER, odd, SCRIPT.replace(pid=12)), True, 1.0, NOW + 2)
    sent = ops_delta(root)
    json_dumps(sent).encode("utf-8")
    [program] = section_cards(state, "programs")
    assert program.id == "op-2" and "could not be shown (ZeroDivisionError)" in program.description
    assert [op.id for op in section_cards(state, "servers")] == ["op-1", "op-3"]
