"""The Chromium the browser tests and the benchmark drive, and the flags this machine needs."""

from __future__ import annotations

import os
from pathlib import Path

CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]


def chromium_path() -> str | None:
    """Debian's Chromium, or one named by DGX_SPARK_CHROMIUM; None: Playwright's own."""
    for candidate in (os.environ.get("DGX_SPARK_CHROMIUM"), "/usr/bin/chromium", "/usr/bin/chromium-browser"):
        if candidate and Path(candidate).exists():
            return candidate
    return None
