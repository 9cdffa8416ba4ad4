"""`crop`: cut a WxH window out of the clip, centred unless x and y are given."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from i2v_watcher.errors import JobError
from i2v_watcher.steps import register
from i2v_watcher.steps.base import Clip, Step


@register
class Crop(Step):
    name = "crop"
    filters = ("crop",)

    width: int = Field(ge=16, le=7680, multiple_of=2)
    height: int = Field(ge=16, le=7680, multiple_of=2)
    x: int | None = Field(default=None, ge=0)
    y: int | None = Field(default=None, ge=0)

    def apply(self, stream: Any, clip: Clip) -> tuple[Any, Clip]:
        x = (clip.width - self.width) // 2 if self.x is None else self.x
        y = (clip.height - self.height) // 2 if self.y is None else self.y
        if x < 0 or y < 0 or x + self.width > clip.width or y + self.height > clip.height:
            raise JobError(f"crop {self.width}x{self.height}+{x}+{y} does not fit in the "
                           f"{clip.width}x{clip.height} clip", stage="postprocess")
        return stream.filter("crop", self.width, self.height, x, y), self.plan(clip)

    def plan(self, clip: Clip) -> Clip:
        return clip.but(width=self.width, height=self.height)
