"""`make bench`: measure what the dashboard costs, print a table, write JSON under bench/results/.

Usage: ``python bench/run.py [--only sampler,tabs,api,ws,visible,rss,big] [--sizes 100,1000,5000] ...``
(``make bench BENCH_ARGS="--only sampler --sizes 1000"``). See ``--help``.
"""

from __future__ import annotations

import argparse
import atexit
import datetime as dt
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
# Nothing here may touch the user's data folder or database (the in-process services
# would load its launched operations): a throw-away folder, removed at exit.
BENCH_DATA = tempfile.mkdtemp(prefix="dgx-bench-data-")
os.environ["DGX_SPARK_DATA_DIR"] = BENCH_DATA
os.environ.pop("DGX_SPARK_DB_URL", None)
atexit.register(shutil.rmtree, BENCH_DATA, ignore_errors=True)

PARTS = ("sampler", "tabs", "api", "ws", "visible", "rss", "big", "nodes", "user_level")
RESULTS = ROOT / "bench" / "results"

# Targets (ratios from the same run), by extra idle processes:
# (≤ this × the /proc floor, ≤ this × Glances or None). Smaller sizes are shown for information.
SAMPLER_TARGETS: dict[int, tuple[float, float | None]] = {
    1000: (0.75, None),  # target: ≤ 0.75× reading every /proc/<pid>/stat
    5000: (0.5, 1 / 20),  # target: ≤ 0.5× the floor and ≤ 1/20 of Glances
}
TABS_MAX = 1.1
BACKEND_TABS_MAX = 1.5  # target: whole backend CPU per refresh, 10 tabs ≤ 1.5× one tab
ONE_CHANGED_MAX_BYTES = 4096  # target: one changed operation with 50 listed, per tab
CHANGE_P95_MAX_MS = 500.0  # target: with 500 listed, change → card updated, after the snapshot
API_P99_MAX_MS = 50.0
VISIBLE_P95_MAX_S = 3.0
RSS_MAX_MB = 300.0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", default=",".join(PARTS), help=f"comma list of parts: {','.join(PARTS)}")
    ap.add_argument("--skip", default="", help="comma list of parts to leave out")
    ap.add_argument("--sizes", default="100,1000,5000", help="extra idle processes per sampler run")
    ap.add_argument("--refreshes", type=int, default=12, help="measured refreshes per size (>= 10)")
    ap.add_argument("--warmup", type=int, default=2, help="refreshes before measuring")
    ap.add_argument(
        "--interval", type=float, default=2.0, help="seconds between sampler refreshes (the app's refresh period)"
    )
    ap.add_argument("--no-glances", action="store_true", help="skip Glances (no virtualenv needed)")
    ap.add_argument(
        "--discovery",
        choices=("auto", "scan"),
        default="auto",
        help="sampler rows: kernel process events where they work, as the app does (auto), or scanning /proc",
    )
    ap.add_argument(
        "--settle",
        type=float,
        default=None,
        help="seconds idle processes age before a sampler row is measured (default: discovery's young window + 1)",
    )
    ap.add_argument(
        "--ops-row",
        default="5000:50",
        help="sampler row IDLE:OPS: idle processes plus that many idle operations ('' for none)",
    )
    ap.add_argument(
        "--churn-row",
        default="1000:200",
        help="sampler row IDLE:RATE: idle processes plus RATE process starts/exits per second ('' for none)",
    )
    ap.add_argument("--refresh-seconds", type=float, default=2.0, help="the app's refresh period")
    ap.add_argument("--operations", type=int, default=50, help="operation-like processes for the app")
    ap.add_argument("--tabs", type=int, default=10, help="tabs for the 'many tabs' runs")
    ap.add_argument("--more-tabs", type=int, default=50, help="tabs for one more backend-CPU window (0: none)")
    ap.add_argument("--big-operations", type=int, default=500, help="operations listed for the 'big' part")
    ap.add_argument("--changes", type=int, default=20, help="changes timed in the 'big' part (change → card)")
    ap.add_argument(
        "--bell-events",
        type=int,
        default=50,
        help="'ws' part: operations started and killed first, so the change arrives in a full bell (0: none)",
    )
    ap.add_argument("--window", type=float, default=30.0, help="seconds per backend-CPU window")
    ap.add_argument("--rss-seconds", type=float, default=90.0, help="seconds with the tabs open for memory")
    ap.add_argument("--starts", type=int, default=20, help="process starts for start → visible")
    ap.add_argument("--clients", type=int, default=50, help="concurrent API clients")
    ap.add_argument("--api-requests", type=int, default=40, help="requests per API client (back-to-back)")
    ap.add_argument("--user-seconds", type=float, default=60.0, help="'user_level' part: seconds per window")
    ap.add_argument("--user-rounds", type=int, default=1, help="'user_level' part: interleaved rounds of windows")
    ap.add_argument("--user-idle", type=int, default=1000, help="'user_level' part: extra idle processes")
    ap.add_argument(
        "--user-warmup", type=float, default=30.0, help="'user_level' part: seconds both run with no tab first"
    )
    ap.add_argument(
        "--all-processes",
        action="store_true",
        help="let the app list every process on the machine (default: only the benchmark's own)",
    )
    ap.add_argument("--out", type=Path, default=RESULTS, help="folder for the JSON result")
    args = ap.parse_args(argv)
    only = {p.strip() for p in args.only.split(",") if p.strip()}
    skip = {p.strip() for p in args.skip.split(",") if p.strip()}
    unknown = (only | skip) - set(PARTS)
    if unknown:
        ap.error(f"unknown part(s): {', '.join(sorted(unknown))} (choose from {', '.join(PARTS)})")
    args.parts = [p for p in PARTS if p in only and p not in skip]
    try:
        args.size_list = [int(s) for s in args.sizes.split(",") if s.strip()]
    except ValueError:
        ap.error("--sizes must be comma-separated integers")
    if any(s < 0 for s in args.size_list):
        ap.error("--sizes must not be negative")
    args.extra_rows = []
    for option, text in (("--ops-row", args.ops_row), ("--churn-row", args.churn_row)):
        if not text.strip():
            continue
        try:
            idle, amount = text.split(":")
            row = (int(idle), int(amount), 0.0) if option == "--ops-row" else (int(idle), 0, float(amount))
        except ValueError:
            ap.error(f"{option} must be IDLE:NUMBER, e.g. 5000:50")
        if row[0] < 0 or row[1] < 0 or row[2] < 0 or row[2] > 2000:
            ap.error(f"{option}: numbers must be >= 0 (rate at most 2000/s)")
        args.extra_rows.append(row)
    return args


def log(message: str) -> None:
    """Progress on stderr, so stdout is just the table."""
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def verdict(ok: bool | None) -> str:
    """PASS / MISS / — (no figure)."""
    return "—" if ok is None else ("PASS" if ok else "MISS")


def _fmt(value: float | None, unit: str = "", digits: int = 1) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}{unit}"


def _sampler_rows(results: dict[str, Any]) -> list[list[str]]:
    """Sampler rows: CPU per refresh against the floor and Glances."""
    rows: list[list[str]] = []
    for r in results.get("sampler", {}).values():
        vs_g, vs_f = r.get("ratio_vs_glances"), r.get("ratio_vs_floor")
        plain = not r.get("bench_operations") and not r.get("churn")
        target = SAMPLER_TARGETS.get(r["extra_processes"]) if plain else None
        ok = None
        target_text = "(info)"
        if target is not None:
            floor_max, glances_max = target
            target_text = f"≤ {floor_max:g}× floor" + (f", ≤ 1/{1 / glances_max:g} Glances" if glances_max else "")
            if vs_f is not None:
                ok = vs_f <= floor_max and (glances_max is None or vs_g is None or vs_g <= glances_max)
        if r.get("churn"):
            churned = r["churn"]
            label = (
                f"Sampler CPU / refresh, {churned['asked_rate']:g} process starts/exits per second "
                f"(reached {_fmt(churned.get('rate'), '/s', 0)}), +{r['extra_processes']} idle"
            )
        elif r.get("bench_operations"):
            label = f"Sampler CPU / refresh, {r['extra_processes']} idle processes and {r['bench_operations']} operations"
        else:
            label = f"Sampler CPU / refresh, +{r['extra_processes']} idle procs"
        load = r.get("loadavg_before")
        rows.append(
            [
                f"{label} ({r['processes_total']} total; {r.get('discovery_mode') or '?'} mode)",
                f"{r['ours_ms']:.2f} ms",
                (
                    f"Glances {_fmt(r.get('glances_ms'), ' ms')} ({_fmt(vs_g, '×', 3)}); "
                    f"/proc floor {r['floor_ms']:.2f} ms ({_fmt(vs_f, '×', 2)}); "
                    f"{_fmt(r.get('stat_reads_per_refresh'), ' stat reads', 0)}; "
                    + (f"load {load[0]:.1f}" if load else "load ?")
                ),
                target_text,
                verdict(ok),
            ]
        )
    return rows


def _tabs_rows(results: dict[str, Any]) -> list[list[str]]:
    """The whole backend's CPU per refresh with 1, 10 and 50 tabs."""
    rows: list[list[str]] = []
    tabs = results.get("tabs")
    if tabs:
        rows.append(
            [
                f"Sampler CPU / refresh in the app, 1 → {tabs['tabs']} tabs",
                (
                    f"{_one(tabs, 'sampler_cpu_ms_per_refresh')} → "
                    f"{tabs['many']['sampler_cpu_ms_per_refresh']:.1f} ms"
                ),
                f"ratio {_fmt(tabs['sampler_ratio'], '×', 2)}",
                f"≤ {TABS_MAX:g}×",
                verdict(None if tabs["sampler_ratio"] is None else tabs["sampler_ratio"] <= TABS_MAX),
            ]
        )
        rows.append(
            [
                f"Whole backend CPU / refresh, 1 → {tabs['tabs']} tabs",
                f"{_one(tabs, 'cpu_ms_per_refresh')} → {tabs['many']['cpu_ms_per_refresh']:.1f} ms",
                (
                    f"ratio {_fmt(tabs['ratio'], '×', 2)} (to the mean of 1 tab before and after"
                    + (f"; less the sampler {_fmt(tabs['rest_ratio'], '×', 2)}" if "rest_ratio" in tabs else "")
                    + "); "
                    f"{_load(tabs['one'])} → {_load(tabs['many'])}"
                    + (f" → {_load(tabs['one_after'])}" if "one_after" in tabs else "")
                ),
                f"≤ {BACKEND_TABS_MAX:g}×",
                verdict(None if tabs["ratio"] is None else tabs["ratio"] <= BACKEND_TABS_MAX),
            ]
        )
        if "more" in tabs:
            rows.append(
                [
                    f"Whole backend CPU / refresh, 1 → {tabs['more_tabs']} tabs",
                    f"{_one(tabs, 'cpu_ms_per_refresh')} → {tabs['more']['cpu_ms_per_refresh']:.1f} ms",
                    (
                        f"ratio {_fmt(tabs['more_ratio'], '×', 2)}"
                        + (f" (less the sampler {_fmt(tabs['more_rest_ratio'], '×', 2)})" if "more_rest_ratio" in tabs else "")
                        + f"; {_load(tabs['more'])}"
                    ),
                    "(info)",
                    "—",
                ]
            )
    return rows


def _api_rows(results: dict[str, Any]) -> list[list[str]]:
    """The API's latency under concurrent clients."""
    rows: list[list[str]] = []
    api = results.get("api")
    if api:
        closed, polling = api["closed"], api["polling"]
        if "p99_ms" in closed:
            rows.append(
                [
                    f"GET /api/dgx/operations, {closed['clients']} clients back-to-back",
                    f"p50 {closed['p50_ms']:.1f} ms, p99 {closed['p99_ms']:.1f} ms",
                    f"{closed['throughput_rps']:.0f} req/s, {closed['error_count']} errors",
                    f"p99 < {API_P99_MAX_MS:g} ms",
                    verdict(closed["p99_ms"] < API_P99_MAX_MS and closed["error_count"] == 0),
                ]
            )
        if "p99_ms" in polling:
            rows.append(
                [
                    (
                        f"GET /api/dgx/operations, {polling['clients']} clients polling every "
                        f"{polling['poll_interval_s']:g} s"
                    ),
                    f"p50 {polling['p50_ms']:.1f} ms, p99 {polling['p99_ms']:.1f} ms",
                    f"{polling['error_count']} errors",
                    f"p99 < {API_P99_MAX_MS:g} ms",
                    verdict(polling["p99_ms"] < API_P99_MAX_MS and polling["error_count"] == 0),
                ]
            )
    return rows


def _ws_rows(results: dict[str, Any]) -> list[list[str]]:
    """Websocket bytes per tab: idle, and one changed operation."""
    rows: list[list[str]] = []
    ws = results.get("ws", {})
    ops = results.get("app", {}).get("operations_listed")
    if "idle" in ws:
        idle = ws["idle"]
        quiet_ops = idle.get("quiet_operations_bytes_per_tick")
        rows.append(
            [
                f"Websocket bytes / tick, {ops} operations, nothing changed",
                (
                    "n/a (no quiet tick)"
                    if quiet_ops is None
                    else f"{quiet_ops:.0f} B operations + {idle['quiet_system_bytes_per_tick']:.0f} B system header"
                ),
                (
                    f"{idle['quiet_ticks']} quiet / {idle['busy_ticks']} busy ticks; "
                    f"all ticks {idle['bytes_per_tick']:.0f} B; {idle['tabs_open']} tabs, "
                    f"{results['app'].get('operations_total')} operations in all"
                ),
                "0 B (operations)",
                verdict(None if quiet_ops is None else quiet_ops == 0),
            ]
        )
    if "one_changed" in ws and "bytes" in ws["one_changed"]:
        one = ws["one_changed"]
        change = one.get("change_bytes")
        rows.append(
            [
                f"Websocket bytes per tab, one operation changed, {ops} listed",
                f"{change} B" if change is not None else f"{one['bytes']} B (all frames)",
                (
                    f"the change's frames: of which {one.get('operations_value_bytes', '?')} B cards and lists, "
                    f"{one.get('bell_value_bytes', '?')} B the bell's events; plus {one.get('header_bytes', 0)} B "
                    f"of system-header ticks; {one['frames']} frames over {one['ticks']} ticks ({one['change']})"
                ),
                f"≤ {ONE_CHANGED_MAX_BYTES} B",
                verdict(None if change is None else change <= ONE_CHANGED_MAX_BYTES),
            ]
        )
    return rows


def _big_rows(results: dict[str, Any]) -> list[list[str]]:
    """With 500 listed: change → card updated, and the API."""
    rows: list[list[str]] = []
    big = results.get("big")
    if big:
        listed = big.get("operations_listed")
        if "p95_ms" in big:
            rows.append(
                [
                    f"Change → card updated in the browser, {listed} listed ({big['changes']} changes)",
                    f"p50 {big['p50_ms']:.0f} ms, p95 {big['p95_ms']:.0f} ms",
                    f"from the publication of the snapshot that carried it; max {big['max_ms']:.0f} ms, "
                    f"{big['misses']} misses",
                    f"p95 ≤ {CHANGE_P95_MAX_MS:g} ms",
                    verdict(big["p95_ms"] <= CHANGE_P95_MAX_MS and big["misses"] == 0),
                ]
            )
        else:
            rows.append([f"Change → card updated, {listed} listed", "never seen", f"{big.get('misses')} misses", "",
                         "MISS"])
        closed = big.get("api", {}).get("closed", {})
        if "p99_ms" in closed:
            rows.append(
                [
                    f"GET /api/dgx/operations, {closed['clients']} clients back-to-back, {listed} listed",
                    f"p50 {closed['p50_ms']:.1f} ms, p99 {closed['p99_ms']:.1f} ms",
                    f"{closed['throughput_rps']:.0f} req/s, {closed['error_count']} errors",
                    f"p99 < {API_P99_MAX_MS:g} ms",
                    verdict(closed["p99_ms"] < API_P99_MAX_MS and closed["error_count"] == 0),
                ]
            )
    return rows


def _visible_rows(results: dict[str, Any]) -> list[list[str]]:
    """Process start → card visible."""
    rows: list[list[str]] = []
    vis = results.get("visible")
    if vis:
        if "p95_s" in vis:
            rows.append(
                [
                    f"Process start → card visible ({vis['seen']}/{vis['starts']} starts)",
                    f"p50 {vis['p50_s']:.2f} s, p95 {vis['p95_s']:.2f} s",
                    f"max {vis['max_s']:.2f} s, refresh {results['app']['refresh_seconds']:g} s"
                    + "".join(
                        f"; {kind} p95 {k['p95_s']:.2f} s ({k['seen']})" for kind, k in vis.get("by_kind", {}).items()
                    ),
                    f"p95 ≤ {VISIBLE_P95_MAX_S:g} s",
                    verdict(vis["p95_s"] <= VISIBLE_P95_MAX_S and vis["misses"] == 0),
                ]
            )
        else:
            rows.append(["Process start → card visible", "never seen", f"{vis['misses']} misses", "", "MISS"])
    return rows


def _rss_rows(results: dict[str, Any]) -> list[list[str]]:
    """The backend's memory."""
    rows: list[list[str]] = []
    rss = results.get("rss")
    if rss:
        rows.append(
            [
                f"Backend RSS, {rss['tabs_open']} tabs, {rss['seconds']:.0f} s (short run)",
                f"{rss['worker_start_mb']:.0f} → {rss['worker_end_mb']:.0f} MB (max {rss['worker_max_mb']:.0f})",
                f"growth {rss['growth_mb']:+.1f} MB; whole tree max {rss['tree_max_mb']:.0f} MB",
                f"< {RSS_MAX_MB:g} MB and flat",
                verdict(rss["worker_max_mb"] < RSS_MAX_MB and rss["flat"]),
            ]
        )
    return rows


def table_rows(results: dict[str, Any]) -> list[list[str]]:
    """The table: measurement, figure, reference, target, result."""
    rows: list[list[str]] = []
    rows.extend(_sampler_rows(results))
    rows.extend(_tabs_rows(results))
    rows.extend(_api_rows(results))
    rows.extend(_ws_rows(results))
    rows.extend(_big_rows(results))
    rows.extend(_visible_rows(results))
    rows.extend(_rss_rows(results))
    if results.get("user_level"):
        from bench.user_level import table_rows as user_level_rows

        rows.extend(user_level_rows(results["user_level"]))
    if results.get("nodes"):
        from bench.nodes_bench import table_row as nodes_row

        rows.append(nodes_row(results["nodes"]))
    for part, error in results.get("errors", {}).items():
        rows.append([f"{part}: not measured", error[:80], "", "", "MISS"])
    return rows


def _load(window: dict[str, Any]) -> str:
    """"load 3.2" (the 1-minute load average before a window), or "load ?"."""
    load = window.get("loadavg_before")
    return f"load {load[0]:.1f}" if load else "load ?"


def _one(tabs: dict[str, Any], key: str) -> str:
    """The one-tab figure: "(12.1 / 12.9)" before and after the many tabs, or the one window of older runs."""
    if "one_after" not in tabs:
        return f"{tabs['one'][key]:.1f}"
    return f"({tabs['one'][key]:.1f} / {tabs['one_after'][key]:.1f})"


def render(rows: list[list[str]]) -> str:
    """A Markdown table (pastes into docs/benchmarks.md as is)."""
    head = ["Measurement", "Ours", "Reference", "Target", "Result"]
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]

    def line(cells: list[str]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"

    return "\n".join([line(head), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *map(line, rows)])


def machine() -> dict[str, Any]:
    """What the run ran on."""
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=False
    ).stdout.strip()
    return {
        "cpus": os.cpu_count(),
        "loadavg": os.getloadavg(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "commit": commit or None,
    }


def main(argv: list[str] | None = None) -> int:
    """Run the selected parts; print the table; write the JSON."""
    args = parse_args(argv)
    started = time.time()
    results: dict[str, Any] = {"meta": {"started": dt.datetime.now(dt.UTC).isoformat(), **machine()}}
    results["meta"]["args"] = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    errors: dict[str, str] = {}
    if "sampler" in args.parts:
        from bench.sampler_cost import measure_sampler

        try:
            results["sampler"] = measure_sampler(
                args.size_list,
                refreshes=max(1, args.refreshes),
                warmup=args.warmup,
                interval=args.interval,
                with_glances=not args.no_glances,
                settle=args.settle,
                extra_rows=args.extra_rows,
                discovery=args.discovery,
                log=log,
            )
        except Exception as exc:  # noqa: BLE001 - report and go on with the other parts
            errors["sampler"] = f"{type(exc).__name__}: {exc}"
            log(f"sampler failed: {errors['sampler']}")
    if "nodes" in args.parts:
        from bench.nodes_bench import NodesBench

        nodes_bench = NodesBench(refresh_seconds=args.refresh_seconds, window_seconds=args.window,
                                 changes=args.changes, log=log)
        try:
            nodes_bench.run()
        except Exception as exc:  # noqa: BLE001 - report and go on with the other parts
            errors["nodes"] = f"{type(exc).__name__}: {exc}"
            log(f"nodes failed: {errors['nodes']}")
        results.update(nodes_bench.results)
    if "user_level" in args.parts:
        from bench.user_level import measure_user_level

        try:
            results["user_level"] = measure_user_level(
                extra_processes=max(0, args.user_idle),
                seconds=args.user_seconds,
                rounds=max(1, args.user_rounds),
                warmup=max(0.0, args.user_warmup),
                refresh_seconds=args.refresh_seconds,
                isolate=not args.all_processes,
                log=log,
            )
        except Exception as exc:  # noqa: BLE001 - report and go on with the other parts
            errors["user_level"] = f"{type(exc).__name__}: {exc}"
            log(f"user_level failed: {errors['user_level']}")
    app_parts = set(args.parts) - {"sampler", "nodes", "user_level"}
    if app_parts:
        from bench.app_bench import AppBench

        bench = AppBench(
            app_parts,
            refresh_seconds=args.refresh_seconds,
            operations=args.operations,
            tabs=args.tabs,
            window_seconds=args.window,
            rss_seconds=args.rss_seconds,
            starts=args.starts,
            api_clients=args.clients,
            api_requests=args.api_requests,
            more_tabs=args.more_tabs,
            big_operations=args.big_operations,
            changes=args.changes,
            bell_events=max(0, args.bell_events),
            isolate=not args.all_processes,
            log=log,
        )
        try:
            bench.run()
        except Exception as exc:  # noqa: BLE001
            errors["app"] = f"{type(exc).__name__}: {exc}"
            log(f"app measurements failed: {errors['app']}")
        results.update(bench.results)
    if errors:
        results["errors"] = errors
    results["meta"]["seconds"] = round(time.time() - started, 1)
    rows = table_rows(results)
    results["table"] = [dict(zip(["measurement", "ours", "reference", "target", "result"], r, strict=True)) for r in rows]
    args.out.mkdir(parents=True, exist_ok=True)
    out = args.out / f"bench-{dt.datetime.now().strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(json.dumps(results, indent=2, default=str))
    print(render(rows))
    shown = out.relative_to(ROOT) if out.is_relative_to(ROOT) else out
    print(f"\n{len(rows)} rows in {results['meta']['seconds']:.0f} s; JSON: {shown}")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
