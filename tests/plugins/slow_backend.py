"""A test plugin (loaded through the `plugins` setting, as a contributor's backend would be): the
preview backend, slowed down per frame, so tests can signal or kill the daemon in the middle of a job.
Its `backend_options` add `delay_s` (seconds per frame) to the preview's. With SLOW_BACKEND_NOTIFY set,
it says on systemd's notify socket when a job's generation starts (X_GENERATING=<prompt>), so a test can
see where that falls among the daemon's own READY=1 and STATUS= messages."""

from __future__ import annotations

import os
import time

from PIL import Image
from pydantic import Field

from i2v_watcher.backends import register
from i2v_watcher.backends.base import Frames, Progress
from i2v_watcher.backends.preview import PreviewBackend, PreviewOptions
from i2v_watcher.job.spec import JobParams


class SlowOptions(PreviewOptions):
    delay_s: float = Field(default=0.25, ge=0, le=60)


@register
class SlowBackend(PreviewBackend):
    name = "slow"
    options_model = SlowOptions

    def generate(self, image: Image.Image, params: JobParams, progress: Progress,
                 preloaded: object | None = None) -> Frames:
        delay = self.options(params).delay_s
        if os.environ.get("SLOW_BACKEND_NOTIFY"):
            from systemd import daemon

            daemon.notify(f"X_GENERATING={params.prompt}")

        def slow(done: int, total: int) -> None:
            time.sleep(delay)
            progress(done, total)

        return super().generate(image, params, slow, preloaded)
