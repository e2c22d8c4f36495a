"""``make fuzz``: schemathesis over every route of the OpenAPI, with the token, against a real backend.

Starts the dashboard's backend in a temporary data folder (or uses ``--url`` and
``--token`` of one that runs), runs ``schemathesis run`` and exits with its status:
0 when no answer was a 5xx and every answer matched the OpenAPI (status code,
content type, headers and body schema). Whatever the fuzzed launches started is
killed afterwards.

    python scripts/fuzz.py [--max-examples N] [--url URL --token TOKEN] [-- extra schemathesis args]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

# What "0 5xx, 0 schema violations" means, as schemathesis checks.
CHECKS = (
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_headers_conformance",
    "response_schema_conformance",
)
# A fuzzed launch may start a real process: keep it short and harmless.
FUZZ_ENV = {
    "DGX_SPARK_CONTROL_RATE": "100000",
    "DGX_SPARK_CONTROL_BURST": "100000",
    "DGX_SPARK_LOG_STREAM_IDLE_SECONDS": "1",
}


def schemathesis_args(url: str, token: str, max_examples: int, extra: list[str]) -> list[str]:
    """The ``schemathesis run`` command line for the app at ``url``."""
    return [
        str(Path(sys.executable).parent / "schemathesis"),
        "run",
        f"{url}/api/openapi.json",
        "--url", url,
        "--header", f"Authorization: Bearer {token}",
        "--checks", ",".join(CHECKS),
        "--max-examples", str(max_examples),
        "--request-timeout", "20",
        "--workers", "1",
        "--generation-database", "none",
        "--suppress-health-check", "all",
        "--no-color",
        *extra,
    ]


def launch_target(url: str, token: str) -> str:
    """Launch a sleeping program to fuzz the per-operation routes with; its id."""
    body = json.dumps({"template": "custom", "name": "fuzz-target", "type": "program",
                       "command": [sys.executable, "-c", "import time; time.sleep(3600)"]}).encode()
    request = urllib.request.Request(f"{url}/api/dgx/operations", data=body, method="POST", headers={
        "Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as reply:
        return str(json.load(reply)["data"]["id"])


def run(url: str, token: str, max_examples: int, extra: list[str]) -> int:
    """Run schemathesis against ``url`` (per-operation routes on a launched program); its exit status."""
    env = {**os.environ, "NO_COLOR": "1", "SCHEMATHESIS_TELEMETRY": "false"}
    op_id = launch_target(url, token)
    with tempfile.TemporaryDirectory(prefix="dgx-fuzz-config-") as folder:
        config = Path(folder) / "schemathesis.toml"
        # Most generated ids would only ever get 404: half the cases use the real operation's id.
        config.write_text(f'[parameters]\n"path.op_id" = "{op_id}"\n')
        command = schemathesis_args(url, token, max_examples, extra)
        command[1:1] = ["--config-file", str(config)]
        try:
            return subprocess.call(command, cwd=ROOT, env=env)
        finally:
            stop = urllib.request.Request(f"{url}/api/dgx/operations/{op_id}/stop", data=b'{"force": true}',
                                          method="POST", headers={"Authorization": f"Bearer {token}",
                                                                  "Content-Type": "application/json"})
            with contextlib.suppress(OSError):
                urllib.request.urlopen(stop, timeout=30).close()


def main() -> int:
    """Parse the arguments, start a backend when none is given, fuzz it."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--max-examples", type=int, default=int(os.environ.get("FUZZ_EXAMPLES", "100")))
    parser.add_argument("--url", help="a running dashboard (default: start a backend here)")
    parser.add_argument("--token", help="its token (with --url)")
    parser.add_argument("extra", nargs="*", help="more schemathesis arguments (after --)")
    args = parser.parse_args()
    if args.url:
        if not args.token:
            parser.error("--url needs --token")
        return run(args.url.rstrip("/"), args.token, args.max_examples, args.extra)

    from tests.support.dashboard import TEST_TOKEN, Dashboard, reap_launched

    with tempfile.TemporaryDirectory(prefix="dgx-fuzz-") as folder:
        dashboard = Dashboard(Path(folder), env=FUZZ_ENV)
        dashboard.start()
        try:
            status = run(dashboard.url, TEST_TOKEN, args.max_examples, args.extra)
        finally:
            dashboard.stop()
            reap_launched(dashboard.data_dir)
        if status != 0:
            print(f"\nThe dashboard's log:\n{dashboard.log_tail(6000)}", file=sys.stderr)
    return status


if __name__ == "__main__":
    sys.exit(main())
