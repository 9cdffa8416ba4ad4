"""`webp`: an animated WebP preview (smaller than a GIF, full colour; looping forever)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import Field

from i2v_watcher.steps import register
from i2v_watcher.steps.base import Clip, OutputStep


@register
class Webp(OutputStep):
    name = "webp"
    filters = ("fps", "scale")

    fps: float = Field(default=12, gt=0, le=50)
    width: int = Field(default=480, ge=16, le=1920, multiple_of=2)
    quality: int = Field(default=75, ge=0, le=100)

    def extension(self) -> str:
        return ".webp"

    def encoders(self) -> set[str]:
        return {"libwebp_anim"}

    def output(self, stream: Any, clip: Clip, target: Path) -> Any:
        scaled = stream.filter("fps", fps=self.fps).filter("scale", self.width, -2, flags="lanczos")
        return scaled.output(str(target), vcodec="libwebp_anim", quality=self.quality, loop=0, f="webp")

    def describe(self, clip: Clip) -> dict[str, Any]:
        return {"width": self.width, "fps": self.fps}
