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

    def apply(self, stream: Any, clip: Clip) -> tuple[Any, Clip]:
        return stream.filter("fps", fps=self.fps), clip.but(fps=self.fps,
                                                            frames=round_half_up(clip.duration * self.fps))
