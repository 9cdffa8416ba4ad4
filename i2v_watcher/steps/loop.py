"""`loop`: play the clip `count` times; `boomerang` plays it forwards then backwards each time. The
soundtrack goes with the picture: played `count` times, and backwards while the picture plays backwards
(so a sound stays on the moment it belongs to)."""

from __future__ import annotations

from typing import Any

import ffmpeg
from pydantic import Field

from i2v_watcher.steps import register
from i2v_watcher.steps.base import Clip, Held, Step


@register
class Loop(Step):
    name = "loop"
    filters = ("loop", "reverse", "concat", "split")
    audio_filters = ("areverse", "asplit")

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

    def apply_audio(self, audio: Any, clip: Clip) -> Any:
        # Joined end to end with concat, which needs no sample count (aloop's `size` would); the
        # sound's samples are few next to the frames (a second of 48 kHz stereo is 384 kB).
        if self.boomerang:
            parts = audio.asplit()
            audio = ffmpeg.concat(parts[0], parts[1].filter("areverse"), v=0, a=1)
        if self.count > 1:
            parts = audio.asplit()
            audio = ffmpeg.concat(*(parts[i] for i in range(self.count)), v=0, a=1)
        return audio
