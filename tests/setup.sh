#!/usr/bin/env bash
# The first half of the test command (README.md; .ci/run runs the same line): installs what the suite
# needs that pip cannot, from Debian's packages and only when missing — a real redis-server (Celery
# tests), systemd-analyze (the unit checks), libsystemd's headers and pkg-config (systemd-python compiles
# against them), Chromium and its driver (the dashboard's browser tests), libfaketime (clock tests) — then the venv with the pinned
# test set. The command then runs pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
missing=()
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
command -v systemd-analyze >/dev/null 2>&1 || missing+=(systemd)
command -v pkg-config >/dev/null 2>&1 || missing+=(pkg-config)
pkg-config --exists libsystemd 2>/dev/null || missing+=(libsystemd-dev)
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
command -v chromedriver >/dev/null 2>&1 || missing+=(chromium-driver)
# libfaketime: a web process whose clock runs ahead of the workers' (tests/faults/test_web_hostile.py), a
# daemon whose clock runs ahead of the share's (tests/faults/test_retention_clock.py)
compgen -G '/usr/lib/*/faketime/libfaketime.so.1' >/dev/null || missing+=(faketime)
python3 -c 'import sysconfig, os, sys; sys.exit(not os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")))' \
    || missing+=(python3-dev)
if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" -eq 0 ]; then
        sudo=()
    elif command -v sudo >/dev/null 2>&1; then
        sudo=(sudo)
    else
        echo "tests/setup.sh: missing ${missing[*]} and this user cannot install them: run as root, or" \
             "apt-get install -y ${missing[*]} first" >&2
        exit 1
    fi
    echo "tests/setup.sh: installing ${missing[*]}" >&2
    ${sudo[@]+"${sudo[@]}"} apt-get update -qq
    ${sudo[@]+"${sudo[@]}"} env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
python3 -m venv .venv
.venv/bin/pip install -e '.[test]' -c tests/constraints.txt
