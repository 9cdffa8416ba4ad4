"""`fade`: fade in from and out to a colour, in seconds; the last frame is fully faded."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from i2v_watcher.steps import register
from i2v_watcher.steps.base import Clip, Color, Step


@register
class Fade(Step):
    name = "fade"
    filters = ("fade",)

    in_s: float = Field(default=0.5, ge=0, le=60)
    out_s: float = Field(default=0.5, ge=0, le=60)
    color: Color = "black"

    def apply(self, stream: Any, clip: Clip) -> tuple[Any, Clip]:
        if self.in_s > 0:
            stream = stream.filter("fade", type="in", start_time=0, duration=min(self.in_s, clip.duration),
                                   color=self.color)
        if self.out_s > 0:
            # Ends on the last frame (shown at duration - 1/fps), so the clip closes on the colour.
            last = clip.duration - 1 / clip.fps
            length = min(self.out_s, last)
            stream = stream.filter("fade", type="out", start_time=round(max(0.0, last - length), 4),
                                   duration=length, color=self.color)
        return stream, clip
