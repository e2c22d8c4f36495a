"""A short schemathesis run inside ``make test`` (``make fuzz`` runs the long one): 0 5xx, 0 schema violations."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from scripts.fuzz import FUZZ_ENV
from tests.support.dashboard import TEST_TOKEN, Dashboard

ROOT = Path(__file__).resolve().parent.parent
BACKEND_ENV = FUZZ_ENV
# Cases per route in the fuzzing phase; the coverage phase adds the boundary cases of every parameter.
EXAMPLES = 3


def test_schemathesis_finds_no_server_error_and_no_schema_violation(backend: Dashboard) -> None:
    result = subprocess.run(
        [sys.executable, "scripts/fuzz.py", "--url", backend.url, "--token", TEST_TOKEN,
         "--max-examples", str(EXAMPLES)],
        cwd=ROOT, capture_output=True, text=True, timeout=300, check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-8000:]
    assert "Operations:" in output and "failures" not in output.split("SUMMARY", 1)[-1].lower(), output[-4000:]
