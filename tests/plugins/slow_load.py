"""A test plugin whose model takes long to load (as a 14 B model does), in small Python-level steps the
way from_pretrained reads its shards: a stop signal during the load must end the start-up at once."""

from __future__ import annotations

import os
import time

from i2v_watcher.backends import register
from i2v_watcher.backends.preview import PreviewBackend


@register
class SlowLoadBackend(PreviewBackend):
    name = "slow-load"

    def load(self) -> None:
        end = time.monotonic() + float(os.environ.get("SLOW_LOAD_S", "60"))
        while time.monotonic() < end:
            time.sleep(0.05)
