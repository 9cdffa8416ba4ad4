"""`svd`: Stable Video Diffusion (image only). A prompt is ignored, with a note in the metadata,
because teams send one sidecar format to every model."""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field

from i2v_watcher.backends import register
from i2v_watcher.backends.attempt import Plan
from i2v_watcher.backends.card import ModelCard
from i2v_watcher.backends.diffusion import DiffusersBackend
from i2v_watcher.job.spec import JobParams

# The img2vid-xt model card: 25 frames at 1024x576; diffusers' pipeline defaults: fps 7, 25 steps,
# max_guidance_scale 3.0. Parameters counted from the published configs (bench/real_configs.py): UNet
# 1.52 B, CLIP ViT-H image encoder 0.63 B, VAE 0.1 B.
SVD_XT = ModelCard(name="svd-xt", label="Stable Video Diffusion img2vid-xt",
                   hub_id="stabilityai/stable-video-diffusion-img2vid-xt", width=1024, height=576,
                   num_frames=25, fps=7.0, steps=25, guidance_scale=3.0, params_b=2.3)


class SvdOptions(BaseModel):
    """The sidecar's `backend_options` for SVD: its own conditioning knobs."""

    model_config = ConfigDict(extra="forbid", strict=True)

    motion_bucket_id: int = Field(default=127, ge=1, le=255, description="more motion when higher")
    noise_aug_strength: float = Field(default=0.02, ge=0, le=1, description=(
        "noise added to the conditioning image: more lets the clip drift further from it"))
    min_guidance_scale: float = Field(default=1.0, ge=0, le=20, description=(
        "guidance at the first frame; the job's guidance_scale is the guidance at the last"))


@register
class StableVideoDiffusionBackend(DiffusersBackend):
    name = "svd"
    pipeline_class = "StableVideoDiffusionPipeline"
    honours: ClassVar[frozenset[str]] = frozenset({
        "num_frames", "fps", "steps", "guidance_scale", "resolution", "seed", "decode_chunk_size",
        "backend_options"})
    ignores: ClassVar[frozenset[str]] = frozenset({"prompt", "negative_prompt"})
    default_decode_chunk: ClassVar[int | None] = 4
    options_model = SvdOptions
    card = SVD_XT

    def arguments(self, params: JobParams, plan: Plan) -> dict[str, Any]:
        options: SvdOptions = self.options(params)
        return {"height": plan.height, "width": plan.width, "num_frames": plan.num_frames,
                "num_inference_steps": params.steps, "min_guidance_scale": options.min_guidance_scale,
                "max_guidance_scale": params.guidance_scale, "fps": round(params.fps),
                "motion_bucket_id": options.motion_bucket_id,
                "noise_aug_strength": options.noise_aug_strength}
