#!/usr/bin/env bash
# Make sure a Chromium the browser tests can drive exists.
set -euo pipefail
if [ -n "${DGX_SPARK_CHROMIUM:-}" ] && [ -x "${DGX_SPARK_CHROMIUM}" ]; then exit 0; fi
for c in /usr/bin/chromium /usr/bin/chromium-browser; do
  [ -x "$c" ] && exit 0
done
if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null; then
  echo "Installing Debian's chromium for the browser tests..."
  (apt-get install -y -q chromium >/dev/null 2>&1) || (apt-get update -q >/dev/null && apt-get install -y -q chromium >/dev/null)
  exit 0
fi
if .venv/bin/python -m playwright install chromium >/dev/null 2>&1; then exit 0; fi
echo "No Chromium found. Install it (Debian: 'sudo apt-get install chromium'), or set DGX_SPARK_CHROMIUM to a Chromium binary." >&2
exit 1
