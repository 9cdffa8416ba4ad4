"""A test plugin that replaces the `i2v-watcher` i2vgen-xl backend with one that runs out of GPU memory
on demand (no GPU needed): a job whose prompt holds `[oom]` raises torch.OutOfMemoryError while its
plan is larger than 32 px on the short side, has more than 2 frames, or runs without offload;
`[oom-always]` always does. Everything else is the real backend, loading the real pipeline."""

from __future__ import annotations

from typing import Any

import torch
from PIL import Image

from i2v_watcher.backends import register
from i2v_watcher.backends.attempt import Plan
from i2v_watcher.backends.i2vgen_xl import I2VGenXLBackend
from i2v_watcher.job.spec import JobParams


@register
class OomInjectingI2VGenXL(I2VGenXLBackend):
    def call(self, image: Image.Image, params: JobParams, plan: Plan, generator: Any,
             extra: dict[str, Any]) -> Any:
        too_big = min(plan.width, plan.height) > 32 or plan.num_frames > 2 or plan.offload is None
        if "[oom-always]" in params.prompt or ("[oom]" in params.prompt and too_big):
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (injected)")
        return super().call(image, params, plan, generator, extra)
