"""A test plugin (loaded through the `plugins` setting, as a contributor's backend would be): the preview
backend with a soundtrack, as LTX-2 makes one with its clip. The sound is a 440 Hz sine tone in stereo
at 24 kHz whose loudness rises over the clip (so a loop or a reversal can be heard), a tenth of a second
longer than the frames, as a model's sound may be."""

from __future__ import annotations

import numpy as np
from PIL import Image

from i2v_watcher.backends import register
from i2v_watcher.backends.base import Audio, Frames, Progress
from i2v_watcher.backends.preview import PreviewBackend
from i2v_watcher.job.spec import JobParams

RATE = 24000
TONE_HZ = 440.0


def sine_tone(seconds: float, rate: int = RATE) -> Audio:
    t = np.arange(round(seconds * rate)) / rate
    rising = 0.1 + 0.8 * t / max(seconds, 1e-9)
    wave = (rising * np.sin(2 * np.pi * TONE_HZ * t)).astype(np.float32)
    return Audio(samples=np.stack([wave, wave]), rate=rate)


@register
class SineBackend(PreviewBackend):
    name = "sine"

    def generate(self, image: Image.Image, params: JobParams, progress: Progress,
                 preloaded: object | None = None) -> Frames:
        frames = super().generate(image, params, progress, preloaded)
        return Frames(frames.pixels, frames.fps, frames.details,
                      audio=sine_tone(frames.count / frames.fps + 0.1))
