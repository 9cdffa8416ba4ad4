"""`fade`: fade in from and out to a colour, in seconds; the last frame is fully faded. The soundtrack
fades in and out with the picture (`afade`, same start and length): silent where the picture is the
colour."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from i2v_watcher.steps import register
from i2v_watcher.steps.base import Clip, Color, Step


@register
class Fade(Step):
    name = "fade"
    filters = ("fade",)
    audio_filters = ("afade",)

    in_s: float = Field(default=0.5, ge=0, le=60)
    out_s: float = Field(default=0.5, ge=0, le=60)
    color: Color = "black"

    def apply(self, stream: Any, clip: Clip) -> tuple[Any, Clip]:
        for kind, start, length in self.fades(clip):
            stream = stream.filter("fade", type=kind, start_time=start, duration=length, color=self.color)
        return stream, clip

    def apply_audio(self, audio: Any, clip: Clip) -> Any:
        for kind, start, length in self.fades(clip):
            audio = audio.filter("afade", type=kind, start_time=start, duration=length)
        return audio

    def fades(self, clip: Clip) -> list[tuple[str, float, float]]:
        """Each fade as (in or out, start, length) in seconds: the picture's and the sound's."""
        fades = []
        if self.in_s > 0:
            fades.append(("in", 0.0, min(self.in_s, clip.duration)))
        if self.out_s > 0:
            # Ends on the last frame (shown at duration - 1/fps), so the clip closes on the colour.
            last = clip.duration - 1 / clip.fps
            length = min(self.out_s, last)
            fades.append(("out", round(max(0.0, last - length), 4), length))
        return fades
