#!/usr/bin/env bash
# The first half of the test command (README.md; .ci/run runs the same line): installs what the suite
# needs that pip cannot (a real redis-server for the Celery tests, from Debian's package, only when it is
# missing), then the venv with the pinned test set. The command then runs pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v redis-server >/dev/null 2>&1; then
    if [ "$(id -u)" -eq 0 ]; then
        sudo=()
    elif command -v sudo >/dev/null 2>&1; then
        sudo=(sudo)
    else
        echo "tests/setup.sh: redis-server is missing and this user cannot install it: run as root, or" \
             "apt-get install -y redis-server first" >&2
        exit 1
    fi
    ${sudo[@]+"${sudo[@]}"} apt-get update -qq
    ${sudo[@]+"${sudo[@]}"} env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null
fi
python3 -m venv .venv
.venv/bin/pip install -e '.[test]' -c tests/constraints.txt
