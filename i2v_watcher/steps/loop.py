"""`loop`: play the clip `count` times; `boomerang` plays it forwards then backwards each time."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from i2v_watcher.steps import register
from i2v_watcher.steps.base import Clip, Held, Step


@register
class Loop(Step):
    name = "loop"
    filters = ("loop", "reverse", "concat", "split")

    count: int = Field(default=2, ge=1, le=20)
    boomerang: bool = False

    def plan(self, clip: Clip) -> Clip:
        return clip.but(frames=clip.frames * (2 if self.boomerang else 1) * self.count)

    def holds(self, clip: Clip) -> Held | None:
        # `loop` keeps the whole (boomeranged) clip to play it again; `reverse` keeps the clip.
        if self.count > 1:
            return Held(clip.but(frames=clip.frames * (2 if self.boomerang else 1)), "to play them again")
        return Held(clip, "to play them backwards") if self.boomerang else None

    def apply(self, stream: Any, clip: Clip) -> tuple[Any, Clip]:
        if self.boomerang:
            parts = stream.split()
            stream = parts[0].concat(parts[1].filter("reverse"))
        if self.count > 1:
            size = clip.frames * (2 if self.boomerang else 1)
            stream = stream.filter("loop", loop=self.count - 1, size=size, start=0)
        return stream, self.plan(clip)
