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

    fps: float = Field(ge=1, le=120)
    mode: Literal["mci", "blend"] = "mci"  # motion-compensated, or a plain cross-fade of frames

    def apply(self, stream: Any, clip: Clip) -> tuple[Any, Clip]:
        options: dict[str, Any] = {"fps": self.fps, "mi_mode": self.mode}
        if self.mode == "mci":
            options.update(mc_mode="aobmc", me_mode="bidir", vsbmc=1)
        frames = round_half_up(clip.duration * self.fps)
        # minterpolate stops a few frames early (it looks ahead); cloning the last frames first and
        # trimming after keeps the clip's duration, as a plain fps change would.
        padded = stream.filter("tpad", stop_mode="clone", stop=3)
        smooth = padded.filter("minterpolate", **options).filter("trim", end_frame=frames)
        return smooth, clip.but(fps=self.fps, frames=frames)
