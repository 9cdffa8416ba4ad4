"""`scale_pad`: fit the clip into WxH keeping its aspect ratio, pad the rest with a colour
(the original WebUI's vertical recipe: 1080x1920)."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from i2v_watcher.steps import register
from i2v_watcher.steps.base import Clip, Color, Step

Even = Field(ge=16, le=7680, multiple_of=2)


@register
class ScalePad(Step):
    name = "scale_pad"
    filters = ("scale", "pad", "setsar")

    width: int = Even
    height: int = Even
    color: Color = "black"

    def apply(self, stream: Any, clip: Clip) -> tuple[Any, Clip]:
        # ffmpeg's default (bicubic) scaler, as in the original WebUI's recipe.
        fitted = stream.filter("scale", self.width, self.height, force_original_aspect_ratio="decrease")
        padded = fitted.filter("pad", self.width, self.height, "(ow-iw)/2", "(oh-ih)/2", color=self.color)
        return padded.filter("setsar", 1), self.plan(clip)

    def plan(self, clip: Clip) -> Clip:
        return clip.but(width=self.width, height=self.height)
