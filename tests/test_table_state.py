"""The table view's state in-process: header sorting and the layout choice (no browser)."""

from __future__ import annotations

from typing import Any

import pytest
import reflex as rx

import dgx_spark.dgx_spark  # noqa: F401 - registers every state of the app
from dgx_spark.state.layout import LayoutState, layout_url_script, parse_layout
from dgx_spark.state.operations import OperationsState


def substate(root: Any, cls: type[rx.State]) -> Any:
    return root.get_substate(cls.get_full_name().split(".")[1:])


@pytest.fixture
def root() -> Any:
    return rx.State(_reflex_internal_init=True)


def test_the_search_keeps_no_text_that_cannot_be_sent(root: Any) -> None:
    """Control characters and lone surrogates (not valid UTF-8) are dropped from the search box's text."""
    state = substate(root, OperationsState)
    OperationsState.set_search.fn(state, "we\ud800b\x07 8000")
    assert state.q == "web 8000"
    state.q.encode("utf-8")


def test_a_header_sorts_then_reverses(root: Any) -> None:
    state = substate(root, OperationsState)
    sort_column = OperationsState.sort_column.fn
    assert sort_column(state, "name") is not None
    assert (state.sort, state.order) == ("name", "asc")
    sort_column(state, "name")
    assert (state.sort, state.order) == ("name", "desc")
    # Figures start biggest first.
    sort_column(state, "memory")
    assert (state.sort, state.order) == ("memory", "desc")
    sort_column(state, "memory")
    assert (state.sort, state.order) == ("memory", "asc")
    sort_column(state, "started_at")
    assert (state.sort, state.order) == ("started_at", "asc")
    # Anything else is ignored.
    for bad in ("bogus", "", None, 3, ["name"], "name,cpu"):
        assert sort_column(state, bad) is None
    assert (state.sort, state.order) == ("started_at", "asc")


def test_layout_accepts_only_known_names(root: Any) -> None:
    state = substate(root, LayoutState)
    set_layout = LayoutState.set_layout.fn
    assert state.layout == "cards" and state.table_view is False
    assert set_layout(state, "table") is not None
    assert state.layout == "table" and state.table_view is True
    for bad in ("grid", "", None, 1, ["cards"]):
        assert set_layout(state, bad) is None
    assert state.layout == "table"
    # No "view" in the URL: the stored choice stays (and is written into the URL).
    assert LayoutState.load_layout.fn(state) is not None
    assert state.layout == "table"


def test_layout_names_and_url_script() -> None:
    assert parse_layout("table") == "table" and parse_layout("cards") == "cards"
    assert parse_layout("grid") is None and parse_layout(None) is None and parse_layout(["table"]) is None
    # Cards is the default: the key leaves the URL; the script touches only "view".
    assert 'u.searchParams.delete("view")' in layout_url_script("cards")
    assert 'u.searchParams.set("view", v)' in layout_url_script("table")
    assert '"table"' in layout_url_script("table") and '""' in layout_url_script("cards")
