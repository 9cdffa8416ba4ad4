"""The parts a service is composed of (watch + claim, stages, recovery, heartbeat, retention, ...): each
started in order at start-up, ticked at every turn of the service's loop, stopped in reverse order at
shutdown. A service is a short list of parts and a loop that turns them (loop.py); no service
overrides another's methods."""

from __future__ import annotations

import contextlib
import math
import time

from i2v_watcher.work.lease import Heartbeat


class Part:
    def start(self) -> None:
        return None

    def tick(self) -> None:
        """One turn of the service's loop: short, never blocking for long (a stop must be prompt)."""
        return None

    def stop(self) -> None:
        return None

    def busy(self) -> bool:
        """Work left that `run --once` waits for before it exits."""
        return False

    def next_at(self) -> float:
        """When (time.monotonic()) the loop must turn again for this part at the latest."""
        return math.inf


class Schedule:
    """When a periodic part runs next: at once, then every `every_s`, or sooner when asked."""

    def __init__(self, every_s: float) -> None:
        self.every_s = every_s
        self.at = time.monotonic()

    def due(self) -> bool:
        now = time.monotonic()
        if now < self.at:
            return False
        self.at = now + self.every_s
        return True

    def sooner(self, delay_s: float = 0.0) -> None:
        self.at = min(self.at, time.monotonic() + delay_s)


class Beating(Part):
    """The worker's heartbeat file (work/lease.py), beating from start-up to shutdown."""

    def __init__(self, heartbeat: Heartbeat) -> None:
        self.heartbeat = heartbeat

    def start(self) -> None:
        self.heartbeat.start()

    def stop(self) -> None:
        self.heartbeat.stop()


def start_all(parts: list[Part]) -> None:
    """In order; a part that fails to start stops those started before it (the heartbeat then says
    "stopped", not a worker that beats no more)."""
    started: list[Part] = []
    try:
        for part in parts:
            part.start()
            started.append(part)
    except BaseException:
        with contextlib.suppress(Exception):  # the failure to start is what is raised
            stop_all(started)
        raise


def stop_all(parts: list[Part]) -> None:
    """In reverse order; every part is stopped, whatever another one raised."""
    errors: list[BaseException] = []
    for part in reversed(parts):
        try:
            part.stop()
        except Exception as exc:  # the others still stop; the first error is raised at the end
            errors.append(exc)
    if errors:
        raise errors[0]
