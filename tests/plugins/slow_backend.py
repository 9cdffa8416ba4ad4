"""A test plugin (loaded through the `plugins` setting, as a contributor's backend would be): the
preview backend, slowed down per frame, so tests can signal or kill the daemon in the middle of a job."""

from __future__ import annotations

import time

from PIL import Image

from i2v_watcher.backends import register
from i2v_watcher.backends.base import Frames, Progress
from i2v_watcher.backends.preview import PreviewBackend
from i2v_watcher.spec import JobParams


@register
class SlowBackend(PreviewBackend):
    name = "slow"

    def generate(self, image: Image.Image, params: JobParams, progress: Progress) -> Frames:
        options = dict(params.backend_options)
        delay = float(options.pop("delay_s", 0.25))

        def slow(done: int, total: int) -> None:
            time.sleep(delay)
            progress(done, total)

        return super().generate(image, params.model_copy(update={"backend_options": options}), slow)
