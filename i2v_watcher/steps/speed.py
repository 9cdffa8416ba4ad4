"""`speed`: play faster (factor > 1) or slower (< 1) at the same frame rate (frames dropped/repeated).

The soundtrack is played at the same speed with its pitch kept (ffmpeg's `atempo`, a time-stretch): a
voice or a tune at double speed stays a voice or a tune, where `asetrate` (the tape played faster)
would raise it an octave, and lower it an octave at half speed. atempo takes 0.5 to 100 and skips
samples above 2, so a factor outside 0.5-2 is a chain of factors within it (0.1 = 0.5 x 0.5 x 0.4)."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from i2v_watcher.steps import register
from i2v_watcher.steps.base import Clip, Step, fit_audio, round_half_up

ATEMPO_MIN, ATEMPO_MAX = 0.5, 2.0  # where atempo blends every sample (above 2 it skips some)


@register
class Speed(Step):
    name = "speed"
    filters = ("setpts", "fps")
    audio_filters = ("atempo", "apad", "atrim")

    factor: float = Field(ge=0.1, le=10)

    def plan(self, clip: Clip) -> Clip:
        return clip.but(frames=max(1, round_half_up(clip.frames / self.factor)))

    def apply(self, stream: Any, clip: Clip) -> tuple[Any, Clip]:
        slowed = stream.filter("setpts", f"PTS/{self.factor}").filter("fps", fps=clip.fps)
        return slowed, self.plan(clip)

    def apply_audio(self, audio: Any, clip: Clip) -> Any:
        for factor in tempo_chain(self.factor):
            audio = audio.filter("atempo", factor)
        return fit_audio(audio, self.plan(clip).duration)  # the frame count is rounded


def tempo_chain(factor: float) -> list[float]:
    """`factor` as a product of atempo factors each within 0.5-2, as few as can be: 4 → [2, 2],
    0.1 → [0.5, 0.5, 0.5, 0.8]."""
    chain = []
    while factor > ATEMPO_MAX or factor < ATEMPO_MIN:
        step = ATEMPO_MAX if factor > ATEMPO_MAX else ATEMPO_MIN
        chain.append(step)
        factor /= step
    return [*chain, round(factor, 6)]
