"""Crash points: named instants at which a test can make the daemon die as if by `kill -9`.

`I2V_CRASH_AT=publish.after_file` (a comma-separated list) kills the process at that point. It exists
so that the tests can prove, for every such instant, that a restart loses nothing and publishes once.
"""

from __future__ import annotations

import os
import signal


def crashpoint(name: str) -> None:
    wanted = os.environ.get("I2V_CRASH_AT")
    if wanted and name in wanted.split(","):
        os.kill(os.getpid(), signal.SIGKILL)
