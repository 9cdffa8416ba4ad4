"""The loop of the services that watch the inbox (the folder daemon, the Celery dispatcher): every turn
the service is alive (its activity touched, a stop request announced), every part ticks, and the
intake hands on one ready job. Nothing in a turn blocks for long, so a stop is always prompt; between
turns the loop sleeps until the inbox changes, a stage reports, or a part's time comes."""

from __future__ import annotations

import time

from i2v_watcher.job.checkpoint import Checkpoint
from i2v_watcher.service.intake import TICK_S, Intake
from i2v_watcher.service.parts import Part


class Loop:
    def __init__(self, checkpoint: Checkpoint, parts: list[Part], intake: Intake, *, once: bool) -> None:
        self.checkpoint = checkpoint
        self.parts = parts
        self.intake = intake
        self.once = once

    def run(self) -> None:
        """Until a stop, or with `once` until the inbox is drained and no part has work left."""
        while not self.checkpoint.stopping and self.turn():
            pass
        self.checkpoint.announce_pending()

    def turn(self) -> bool:
        self.checkpoint.activity.touch()
        self.checkpoint.announce_pending()
        for part in self.parts:
            part.tick()
        if self.intake.take_one():
            return True
        if self.once and self.intake.drained() and not any(part.busy() for part in self.parts):
            return False  # drained; a lone sidecar is waited for (orphan_sidecar_s), then reported
        wake = min(part.next_at() for part in self.parts) - time.monotonic()
        self.intake.wait(min(TICK_S, wake))
        return True
