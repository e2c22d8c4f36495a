"""Runs INSIDE Glances' own virtualenv: times Glances' process-list refresh.

Protocol (line based): each ``update`` line on stdin runs one
``GlancesProcesses.update()`` (the refresh Glances' process list does every
tick) and answers one JSON line ``{"cpu_ms": ..., "processes": ...}`` with the
CPU time (user + system, this process) that refresh took. EOF ends it.
Only the standard library and Glances are imported here.
"""

from __future__ import annotations

import json
import sys
import time


def main() -> None:
    """Answer ``update`` requests until stdin closes."""
    from glances import __version__
    from glances.processes import GlancesProcesses

    processes = GlancesProcesses()
    print(json.dumps({"ready": True, "glances": __version__}), flush=True)
    for line in sys.stdin:
        if line.strip() != "update":
            continue
        before = time.process_time()
        listed = processes.update()
        cpu_ms = (time.process_time() - before) * 1000.0
        print(json.dumps({"cpu_ms": cpu_ms, "processes": len(listed)}), flush=True)


if __name__ == "__main__":
    main()
