"""`fps`: a plain frame-rate change (frames repeated or dropped; no new motion)."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from i2v_watcher.steps import register
from i2v_watcher.steps.base import Clip, Step, round_half_up


@register
class Fps(Step):
    name = "fps"
    filters = ("fps",)

    fps: float = Field(gt=0, le=120)

    def plan(self, clip: Clip) -> Clip:
        # Same duration, another rate: 2 frames at 0.01 fps (200 s) become 6,000 frames at 30 fps.
        return clip.but(fps=self.fps, frames=round_half_up(clip.duration * self.fps))

    def apply(self, stream: Any, clip: Clip) -> tuple[Any, Clip]:
        return stream.filter("fps", fps=self.fps), self.plan(clip)
