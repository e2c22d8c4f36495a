"""``make bench``'s All-nodes row, run small: the real dashboard (full UI), fake nodes, one Chromium tab.

It runs on the test session's full dashboard and browser: a second full dashboard in the same
checkout would wait for the first one's frontend build (its lock) until the session ends, and a
second Playwright cannot start inside the one pytest-playwright runs.

No timings asserted: the row's plumbing (nodes added and polled, the All-nodes tab showing every
remote card, renames reaching the page, the table row) works end to end.
"""

from __future__ import annotations

from playwright.sync_api import Page

from bench.nodes_bench import NodesBench, table_row
from tests.support.dashboard import Dashboard


def test_the_all_nodes_row_runs_and_fills_its_table_row(full_dashboard: Dashboard, page: Page) -> None:
    bench = NodesBench(refresh_seconds=1.0, window_seconds=2.0, changes=2, nodes=2, operations=5,
                       log=lambda _: None)
    result = bench.run(full_dashboard, page)["nodes"]
    assert (result["nodes"], result["operations_per_node"]) == (2, 5)
    assert result["cards_shown"] == 10, result  # every remote card on /?node=all
    assert result["requests_per_node_per_refresh"] > 0, result
    for window in ("no_nodes", "polled", "all_nodes_tab"):
        assert result[window]["refreshes"] >= 1 and result[window]["cpu_ms_per_refresh"] >= 0, result
    assert result["changes"] == 2 and result["misses"] == 0 and "p95_ms" in result, result
    row = table_row(result)
    assert row[0] == "All nodes with 2 nodes × 5 operations"
    assert "ms CPU / refresh" in row[1] and "page updated p50" in row[1], row
    # The session's dashboard is left as it was: no node of the bench's left behind.
    assert [node["id"] for node in full_dashboard.get_json("/api/dgx/nodes")["data"] if node["id"] != "local"] == []
