"""`wan-i2v`: Wan 2.1 image-to-video, a prompt-driven diffusion transformer. Frame counts are of the
form 4k+1 and sides multiples of 16; both are rounded, and the metadata records asked and used."""

from __future__ import annotations

from typing import Any, ClassVar

from i2v_watcher.backends import register
from i2v_watcher.backends.attempt import Plan
from i2v_watcher.backends.diffusion import DiffusersBackend
from i2v_watcher.job.spec import JobParams


@register
class WanImageToVideoBackend(DiffusersBackend):
    name = "wan-i2v"
    pipeline_class = "WanImageToVideoPipeline"
    denoiser = "transformer"
    frames_step: ClassVar[tuple[int, int]] = (4, 1)
    honours: ClassVar[frozenset[str]] = frozenset({
        "prompt", "negative_prompt", "num_frames", "fps", "steps", "guidance_scale", "resolution", "seed"})

    def size_multiple(self) -> int:
        pipe = self.pipe
        patch = pipe.transformer.config.patch_size[1]
        return int(pipe.vae_scale_factor_spatial) * int(patch)

    def arguments(self, params: JobParams, plan: Plan) -> dict[str, Any]:
        return {"prompt": params.prompt, "negative_prompt": params.negative_prompt or None,
                "height": plan.height, "width": plan.width, "num_frames": plan.num_frames,
                "num_inference_steps": params.steps, "guidance_scale": params.guidance_scale}
