"""`interpolate`: motion-interpolated frame rate (ffmpeg minterpolate), e.g. a model's 8 fps to 24-60
fps: smoother motion, same duration. Slow at large sizes: place it before an upscaling step."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from i2v_watcher.steps import register
from i2v_watcher.steps.base import Clip, Step, round_half_up


@register
class Interpolate(Step):
    name = "interpolate"
    filters = ("tpad", "minterpolate", "trim")

    # Motion search per output frame: about 0.08 s per megapixel-frame measured on 2 cores (mci).
    seconds_per_megapixel_frame = 2.0

    fps: float = Field(ge=1, le=120)
    mode: Literal["mci", "blend"] = "mci"  # motion-compensated, or a plain cross-fade of frames

    def plan(self, clip: Clip) -> Clip:
        return clip.but(fps=self.fps, frames=round_half_up(clip.duration * self.fps))

    def apply(self, stream: Any, clip: Clip) -> tuple[Any, Clip]:
        options: dict[str, Any] = {"fps": self.fps, "mi_mode": self.mode}
        if self.mode == "mci":
            options.update(mc_mode="aobmc", me_mode="bidir", vsbmc=1)
        planned = self.plan(clip)
        # minterpolate stops a few frames early (it looks ahead); cloning the last frames first and
        # trimming after keeps the clip's duration, as a plain fps change would.
        padded = stream.filter("tpad", stop_mode="clone", stop=3)
        smooth = padded.filter("minterpolate", **options).filter("trim", end_frame=planned.frames)
        return smooth, planned
