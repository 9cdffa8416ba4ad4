"""The loop of the services that watch the inbox (the folder daemon, the Celery dispatcher): every turn
the service is alive (its activity touched, a stop request announced), every part ticks, and the
intake hands on one ready job. Nothing in a turn blocks for long, so a stop is always prompt; between
turns the loop sleeps until the inbox changes, a stage reports, or a part's time comes.

Running out of file descriptors (EMFILE, ENFILE) in a turn is transient, not a crash: whatever held
them (a flood of connections, another process's leak) may let go. It is logged once, and the loop
tries again every STARVED_PAUSE_S until a turn succeeds."""

from __future__ import annotations

import errno
import time

import structlog

from i2v_watcher.control.pause import say_drained
from i2v_watcher.job.checkpoint import Checkpoint
from i2v_watcher.service.intake import TICK_S, Intake
from i2v_watcher.service.parts import Part

OUT_OF_DESCRIPTORS = frozenset({errno.EMFILE, errno.ENFILE})
STARVED_PAUSE_S = 1.0
log = structlog.get_logger("i2v_watcher.service.loop")


class Loop:
    def __init__(self, checkpoint: Checkpoint, parts: list[Part], intake: Intake, *, once: bool) -> None:
        self.checkpoint = checkpoint
        self.parts = parts
        self.intake = intake
        self.once = once
        self.starved = False  # the last turn ran out of file descriptors

    def run(self) -> None:
        """Until a stop, or with `once` until the inbox is drained and no part has work left."""
        while not self.checkpoint.stopping and self.guarded_turn():
            pass
        self.checkpoint.announce_pending()

    def guarded_turn(self) -> bool:
        try:
            going = self.turn()
        except OSError as exc:
            if exc.errno not in OUT_OF_DESCRIPTORS:
                raise
            if not self.starved:
                log.error("out of file descriptors: trying again every second", error=str(exc),
                          pause_s=STARVED_PAUSE_S)
            self.starved = True
            time.sleep(STARVED_PAUSE_S)  # not the inbox's event: it may stay set while a scan fails
            return True
        if self.starved:
            log.warning("file descriptors available again")
            self.starved = False
        return going

    def turn(self) -> bool:
        self.checkpoint.activity.touch()
        self.checkpoint.announce_pending()
        for part in self.parts:
            part.tick()
        if self.intake.take_one():
            return True
        if self.intake.draining() and not any(part.busy() for part in self.parts):
            say_drained()
            return False
        if self.once and self.intake.drained() and not any(part.busy() for part in self.parts):
            # drained; a lone sidecar is waited for (orphan_sidecar_s), then reported. A last full scan
            # first: what the run itself queued (variants, finals) is part of the batch.
            return not self.intake.drained_after_full_scan()
        wake = min(part.next_at() for part in self.parts) - time.monotonic()
        self.intake.wait(min(TICK_S, wake))
        return True
