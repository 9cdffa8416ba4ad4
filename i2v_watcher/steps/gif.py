"""`gif`: an animated GIF preview with a palette computed for the clip (looping forever)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import ffmpeg
from pydantic import Field

from i2v_watcher.steps import register
from i2v_watcher.steps.base import Clip, OutputStep


@register
class Gif(OutputStep):
    name = "gif"
    filters = ("fps", "scale", "split", "palettegen", "paletteuse")

    fps: float = Field(default=12, gt=0, le=50)
    width: int = Field(default=480, ge=16, le=1920, multiple_of=2)

    def extension(self) -> str:
        return ".gif"

    def encoders(self) -> set[str]:
        return {"gif"}

    def output(self, stream: Any, clip: Clip, target: Path) -> Any:
        scaled = stream.filter("fps", fps=self.fps).filter("scale", self.width, -2, flags="lanczos")
        parts = scaled.split()
        palette = parts[0].filter("palettegen", stats_mode="diff")
        return ffmpeg.filter([parts[1], palette], "paletteuse", dither="sierra2_4a").output(
            str(target), loop=0, f="gif")

    def describe(self, clip: Clip) -> dict[str, Any]:
        return {"width": self.width, "fps": self.fps}
