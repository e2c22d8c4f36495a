#!/usr/bin/env bash
# A real container engine for the end-to-end container test (tests/test_containers_podman.py):
# Debian's podman with runc (crun cannot set RLIMIT_NPROC in some sandboxes) and a static busybox
# whose binary becomes the test image's root filesystem (no registry needed).
# Installs the packages when running as root with apt; otherwise the test skips with a reason.
set -u
if command -v podman >/dev/null 2>&1 && command -v runc >/dev/null 2>&1 && [ -x /bin/busybox ]; then
    exit 0
fi
if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing podman, runc and busybox-static for the container test..."
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq podman runc busybox-static >/dev/null 2>&1 \
        || { apt-get update -qq >/dev/null 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq podman runc busybox-static >/dev/null 2>&1; } \
        || echo "could not install podman; tests/test_containers_podman.py will be skipped"
else
    echo "podman not installed (needs root + apt); tests/test_containers_podman.py will be skipped"
fi
exit 0
