"""Search, filter and sort (dgx_spark.collector.query) as pure functions."""

from __future__ import annotations

import pytest

from dgx_spark.collector.query import (
    OperationQuery,
    QueryError,
    apply_query,
    matches_search,
    parse_query,
    query_from_params,
)

OPS = [
    {"id": "a", "type": "server", "name": "ComfyUI", "description": "image UI", "command": "python main.py --port 8188",
     "status": "running", "started_at": "2026-01-01T10:00:00Z", "port": 8188, "ports": [8188], "pid": 4100,
     "cpu_percent": 12.5, "memory_bytes": 2_000, "gpu_memory_bytes": 9_000},
    {"id": "b", "type": "job", "name": "train-llama", "description": None, "command": "python train.py --epochs 3",
     "status": "failed", "started_at": "2026-01-01T09:00:00Z", "port": None, "ports": [], "pid": 4200,
     "cpu_percent": 95.0, "memory_bytes": 8_000, "gpu_memory_bytes": None},
    {"id": "c", "type": "program", "name": "backup.sh", "description": "nightly", "command": "bash backup.sh",
     "status": "stopped", "started_at": None, "port": None, "ports": [], "pid": 88,
     "cpu_percent": None, "memory_bytes": 500, "gpu_memory_bytes": 1_000},
    {"id": "d", "type": "server", "name": "ollama", "description": "LLM server", "command": "ollama serve",
     "status": "starting", "started_at": "2026-01-01T11:00:00Z", "port": 11434, "ports": [11434, 8080], "pid": 4300,
     "cpu_percent": 1.0, "memory_bytes": None, "gpu_memory_bytes": 20_000},
]


def ids(query: OperationQuery) -> list[str]:
    return [op["id"] for op in apply_query(OPS, query)]


def test_empty_query_keeps_everything_in_order() -> None:
    assert ids(parse_query()) == ["a", "b", "c", "d"]
    assert not parse_query().is_filtering


@pytest.mark.parametrize(
    ("q", "expected"),
    [
        ("comfy", ["a"]),  # name, case-insensitive
        ("LLM", ["d"]),  # description
        ("train.py", ["b"]),  # command
        ("8188", ["a"]),  # port
        ("8080", ["d"]),  # any of the ports
        (":11434", ["d"]),
        ("4200", ["b"]),  # pid
        ("pid:88", ["c"]),
        ("python 8188", ["a"]),  # every word must match
        ("python nightly", []),
        ("nothing-like-this", []),
    ],
)
def test_search(q: str, expected: list[str]) -> None:
    assert ids(parse_query(q=q)) == expected


def test_number_matches_pid_exactly_not_partially() -> None:
    assert not matches_search(OPS[2], "8")  # pid 88: a digit alone is no match ...
    assert matches_search({"name": "run8"}, "8")  # ... unless the text holds it


def test_filters_by_type_and_status() -> None:
    assert ids(parse_query(type="server")) == ["a", "d"]
    assert ids(parse_query(type="job,program")) == ["b", "c"]
    assert ids(parse_query(type=["job", "program"])) == ["b", "c"]
    assert ids(parse_query(status="failed,stopped")) == ["b", "c"]
    assert ids(parse_query(type="server", status="running")) == ["a"]


@pytest.mark.parametrize(
    ("sort", "order", "expected"),
    [
        ("name", "asc", ["c", "a", "d", "b"]),
        ("name", "desc", ["b", "d", "a", "c"]),
        ("cpu", "asc", ["d", "a", "b", "c"]),  # None last ...
        ("cpu", "desc", ["b", "a", "d", "c"]),  # ... in both orders
        ("memory", "desc", ["b", "a", "c", "d"]),
        ("gpu_memory", "asc", ["c", "a", "d", "b"]),
        ("started_at", "asc", ["b", "a", "d", "c"]),
        ("started_at", "desc", ["d", "a", "b", "c"]),
        ("status", "asc", ["a", "d", "b", "c"]),  # running, starting, failed, stopped
    ],
)
def test_sort(sort: str, order: str, expected: list[str]) -> None:
    assert ids(parse_query(sort=sort, order=order)) == expected


def test_history_rows_sort_by_peak_memory() -> None:
    rows = [{"id": "x", "name": "x", "peak_memory_bytes": 5}, {"id": "y", "name": "y", "peak_memory_bytes": 9}]
    assert [r["id"] for r in apply_query(rows, parse_query(sort="memory", order="desc"))] == ["y", "x"]


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"type": "daemon"}, "type"),
        ({"type": "server,daemon"}, "type"),
        ({"status": "exploded"}, "status"),
        ({"sort": "colour"}, "sort"),
        ({"order": "sideways"}, "order"),
        ({"q": "x" * 201}, "q"),
        ({"q": "a\x00b"}, "q"),
    ],
)
def test_bad_values_name_the_field(kwargs: dict[str, str], field: str) -> None:
    with pytest.raises(QueryError) as info:
        parse_query(**kwargs)
    assert info.value.field == field


def test_params_round_trip() -> None:
    query = parse_query(q=" llama ", type="job,server", status="failed", sort="cpu", order="DESC")
    params = query.to_params()
    assert params == {"q": "llama", "type": "server,job", "status": "failed", "sort": "cpu", "order": "desc"}
    assert query_from_params(params) == query


def test_lenient_params_drop_only_bad_values() -> None:
    query = query_from_params({"q": "x", "type": "daemon", "sort": "cpu", "order": "up"}, lenient=True)
    assert query == OperationQuery(q="x", sort="cpu", order="asc")


def test_apply_query_returns_the_items_it_reads_records_from() -> None:
    # The UI filters its cards through each card's record: the cards come back, no lookup by id.
    cards = [(f"card-{op['id']}", op) for op in OPS]
    query = parse_query(q="python", sort="name", order="desc")
    assert [card for card, _ in apply_query(cards, query, record=lambda pair: pair[1])] == [
        f"card-{op['id']}" for op in apply_query(OPS, query)
    ]
    assert all(query.matches(op) for op in apply_query(OPS, query))
    assert [op["id"] for op in apply_query(OPS, query)] == ["b", "a"]  # train-llama, ComfyUI
