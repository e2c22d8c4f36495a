"""The 'user_level' bench part's pure helpers: process-tree CPU from /proc, figures, table rows."""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any

from bench import run
from bench.user_level import (
    cpu_percent,
    parse_cpu_line,
    parse_stat,
    read_table,
    summarise,
    table_rows,
    tree_ticks,
)

# A /proc/<pid>/stat line whose command name holds spaces and parentheses.
STAT = "4242 (my (odd) name) S 17 4242 4242 0 -1 4194560 100 0 0 0 30 12 5 3 20 0 1 0 999 1000 50"


def test_parse_stat_counts_fields_after_the_last_parenthesis() -> None:
    assert parse_stat(STAT) == (4242, 17, 30 + 12 + 5 + 3)


def test_parse_stat_rejects_what_is_not_a_stat_line() -> None:
    assert parse_stat("") is None
    assert parse_stat("garbage without parens") is None
    assert parse_stat("12 (x) S") is None
    assert parse_stat("x (y) S 1 1 1 0 -1 0 0 0 0 0 a b c d") is None


def test_tree_ticks_sums_root_and_descendants_only() -> None:
    table = {1: (0, 1000), 10: (1, 5), 11: (10, 7), 12: (11, 11), 20: (1, 100), 21: (20, 3)}
    assert tree_ticks(table, 10) == 5 + 7 + 11
    assert tree_ticks(table, 12) == 11
    assert tree_ticks(table, 99) == 0  # gone


def test_tree_ticks_survives_a_cycle() -> None:
    # Two readings of /proc can disagree; a loop in parent links must not hang.
    assert tree_ticks({5: (6, 1), 6: (5, 2)}, 5) == 3


def test_cpu_percent_is_of_one_core() -> None:
    assert cpu_percent(100, 10.0, clk_tck=100) == 10.0
    assert cpu_percent(0, 60.0, clk_tck=100) == 0.0
    assert cpu_percent(5, 0.0, clk_tck=100) is None


def test_parse_cpu_line_leaves_idle_and_iowait_out_of_busy() -> None:
    text = "cpu  100 5 50 800 20 1 2 3 7 0\ncpu0 1 2 3 4 5 6 7 8 0 0\n"
    busy, total = parse_cpu_line(text) or (0, 0)
    assert total == 100 + 5 + 50 + 800 + 20 + 1 + 2 + 3
    assert busy == total - 800 - 20
    assert parse_cpu_line("intr 1 2 3\n") is None


def test_read_table_sees_a_real_child_under_this_process() -> None:
    child = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
    try:
        table = read_table()
        assert table[child.pid][0] == os.getpid()
        assert table[os.getpid()][1] > 0  # this test process has used CPU
        assert tree_ticks(table, os.getpid()) >= table[os.getpid()][1] + table[child.pid][1]
    finally:
        assert child.stdin is not None
        child.stdin.close()
        child.wait(30)


def _window(kind: str, ours: float, glances: float) -> dict[str, Any]:
    return {
        "kind": kind,
        "round": 1,
        "seconds": 60.0,
        "loadavg_before": [1.5, 1.0, 1.0],
        "machine_busy_percent": 40.0,
        "cpu_percent": {"ours": ours, "glances": glances},
        "samples_percent": {"ours": [ours], "glances": [glances]},
    }


def _results(ours_tab: float, glances_tab: float, ours_idle: float, glances_idle: float) -> dict[str, Any]:
    windows = [
        _window("ours_tab", ours_tab, 0.2),
        _window("glances_tab", 0.7, glances_tab),
        _window("no_tab", ours_idle, glances_idle),
    ]
    return {**summarise(windows), "extra_processes": 1000, "seconds": 60.0, "rounds": 1, "windows": windows}


def test_summarise_takes_each_backend_from_its_own_window() -> None:
    figures = _results(1.2, 12.0, 0.75, 0.3)
    assert figures["ours_cpu_percent"] == 1.2
    assert figures["glances_web_cpu_percent"] == 12.0
    assert figures["ratio"] == 0.1
    assert figures["ours_idle_cpu_percent"] == 0.75
    assert figures["glances_web_idle_cpu_percent"] == 0.3
    assert figures["idle_ratio"] == 2.5


def test_summarise_without_a_reference_has_no_ratio() -> None:
    assert summarise([_window("no_tab", 0.5, 0.0)])["idle_ratio"] is None
    assert summarise([])["ratio"] is None


def test_rows_are_marked_pass_or_miss() -> None:
    good = table_rows(_results(0.5, 12.0, 0.2, 0.3))
    assert [row[4] for row in good] == ["PASS", "PASS"]
    bad = table_rows(_results(1.2, 12.0, 0.75, 0.3))
    assert [row[4] for row in bad] == ["MISS", "MISS"]
    assert "load 1.5" in bad[0][2]
    no_reference = table_rows(_results(1.2, 12.0, 0.75, 0.0))
    assert no_reference[1][4] == "—"


def test_the_bench_table_and_options_include_the_part() -> None:
    rows = run.table_rows({"user_level": _results(0.5, 12.0, 0.2, 0.3)})
    assert [row[4] for row in rows] == ["PASS", "PASS"]
    args = run.parse_args(["--only", "user_level", "--user-seconds", "20", "--user-idle", "500"])
    assert args.parts == ["user_level"]
    assert (args.user_seconds, args.user_idle, args.user_rounds) == (20.0, 500, 1)
