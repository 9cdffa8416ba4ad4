"""`poster`: one frame of the clip as a JPEG still (frame N; the last one when N is past the end); a
still has no sound."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import Field

from i2v_watcher.steps import register
from i2v_watcher.steps.base import Clip, OutputStep


@register
class Poster(OutputStep):
    name = "poster"
    filters = ("select",)

    frame: int = Field(default=0, ge=0)
    quality: int = Field(default=2, ge=2, le=31)  # JPEG quantiser: 2 is best

    seconds_per_megapixel_frame = 0.0  # one JPEG; the frames before it are the earlier steps' cost

    def extension(self) -> str:
        return ".jpg"

    def plan(self, clip: Clip) -> Clip:
        return clip.but(frames=1)

    def output(self, stream: Any, clip: Clip, target: Path, audio: Any = None) -> Any:
        frame = min(self.frame, clip.frames - 1)
        return stream.filter("select", f"eq(n,{frame})").output(
            str(target), vframes=1, vcodec="mjpeg", pix_fmt="yuvj444p", **{"q:v": self.quality}, f="image2")

    def encoders(self) -> set[str]:
        return {"mjpeg"}

    def describe(self, clip: Clip) -> dict[str, Any]:
        return {"width": clip.width, "height": clip.height, "frame": min(self.frame, clip.frames - 1)}
