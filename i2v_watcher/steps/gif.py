"""`gif`: an animated GIF preview with a palette computed for the clip (looping forever). A GIF cannot
carry sound: a clip's soundtrack is left out of it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import ffmpeg

from i2v_watcher.steps import register
from i2v_watcher.steps.base import AnimatedPreview, Clip, Held


@register
class Gif(AnimatedPreview):
    name = "gif"
    filters = ("fps", "scale", "split", "palettegen", "paletteuse")

    def extension(self) -> str:
        return ".gif"

    def encoders(self) -> set[str]:
        return {"gif"}

    def holds(self, clip: Clip) -> Held | None:
        # palettegen makes its palette at the last frame; paletteuse needs it for the first, so the
        # other branch of the split keeps every frame until then (ffmpeg grew 250 MB/s at fps 0.005).
        return Held(self.plan(clip), "for its palette (every frame is kept until the palette is made)")

    def output(self, stream: Any, clip: Clip, target: Path, audio: Any = None) -> Any:
        parts = self.scaled(stream).split()
        palette = parts[0].filter("palettegen", stats_mode="diff")
        return ffmpeg.filter([parts[1], palette], "paletteuse", dither="sierra2_4a").output(
            str(target), loop=0, f="gif")
