"""`loop`: play the clip `count` times; `boomerang` plays it forwards then backwards each time."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from i2v_watcher.steps import register
from i2v_watcher.steps.base import Clip, Step


@register
class Loop(Step):
    name = "loop"
    filters = ("loop", "reverse", "concat", "split")

    count: int = Field(default=2, ge=1, le=20)
    boomerang: bool = False

    def apply(self, stream: Any, clip: Clip) -> tuple[Any, Clip]:
        if self.boomerang:
            parts = stream.split()
            stream = parts[0].concat(parts[1].filter("reverse"))
            clip = clip.but(frames=clip.frames * 2)
        if self.count > 1:
            stream = stream.filter("loop", loop=self.count - 1, size=clip.frames, start=0)
            clip = clip.but(frames=clip.frames * self.count)
        return stream, clip
