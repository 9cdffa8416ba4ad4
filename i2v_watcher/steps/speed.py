"""`speed`: play faster (factor > 1) or slower (< 1) at the same frame rate (frames dropped/repeated)."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from i2v_watcher.steps import register
from i2v_watcher.steps.base import Clip, Step, round_half_up


@register
class Speed(Step):
    name = "speed"
    filters = ("setpts", "fps")

    factor: float = Field(ge=0.1, le=10)

    def plan(self, clip: Clip) -> Clip:
        return clip.but(frames=max(1, round_half_up(clip.frames / self.factor)))

    def apply(self, stream: Any, clip: Clip) -> tuple[Any, Clip]:
        slowed = stream.filter("setpts", f"PTS/{self.factor}").filter("fps", fps=clip.fps)
        return slowed, self.plan(clip)
