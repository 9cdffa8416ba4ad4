"""`webp`: an animated WebP preview (smaller than a GIF, full colour; looping forever). WebP cannot carry
sound: a clip's soundtrack is left out of it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import Field

from i2v_watcher.steps import register
from i2v_watcher.steps.base import AnimatedPreview, Clip


@register
class Webp(AnimatedPreview):
    name = "webp"

    quality: int = Field(default=75, ge=0, le=100)

    def extension(self) -> str:
        return ".webp"

    def encoders(self) -> set[str]:
        return {"libwebp_anim"}

    def output(self, stream: Any, clip: Clip, target: Path, audio: Any = None) -> Any:
        return self.scaled(stream).output(str(target), vcodec="libwebp_anim", quality=self.quality, loop=0,
                                          f="webp")
