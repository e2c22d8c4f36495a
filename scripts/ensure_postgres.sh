#!/usr/bin/env bash
# The PostgreSQL server for tests/test_postgres.py (it starts its own throwaway cluster).
# Installs Debian's package when running as root with apt; otherwise the test skips with a reason.
set -u
if command -v initdb >/dev/null 2>&1 || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
    exit 0
fi
if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing the PostgreSQL server for the PostgreSQL test..."
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null 2>&1 \
        || { apt-get update -qq >/dev/null 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null 2>&1; } \
        || echo "could not install postgresql; tests/test_postgres.py will be skipped"
else
    echo "PostgreSQL server not installed (needs root + apt); tests/test_postgres.py will be skipped"
fi
exit 0
