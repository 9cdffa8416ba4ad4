"""`ltx-video`: LTX-Video 0.9.x image-to-video, a prompt-driven diffusion transformer with a 32x spatial,
8x temporal video VAE.

It runs through diffusers' `LTXConditionPipeline`. It loads the same five components as
`LTXImageToVideoPipeline` (transformer, vae, text_encoder, tokenizer, scheduler), so either loads any
diffusers LTX-Video folder (a class's own from_pretrained does not go by the folder's `_class_name`);
the condition pipeline is the one diffusers documents for 0.9.5 and later, the guidance- and
timestep-distilled 0.9.7/0.9.8 checkpoints among them, and it takes `image_cond_noise_scale`.

diffusers rounds a frame count silently ((n-1)//8*8+1: 5, 6 or 8 frames give one frame), so the backend
plans the count itself (8k+1, nearest, at least 9) and the metadata records asked and used; sides are
multiples of 32 (the VAE's 32x times the transformer's patch).
"""

from __future__ import annotations

import logging
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field

from i2v_watcher.backends import register
from i2v_watcher.backends.attempt import Plan
from i2v_watcher.backends.card import ModelCard
from i2v_watcher.backends.diffusion import DiffusersBackend
from i2v_watcher.job.spec import JobParams

# The distilled checkpoints' schedule for one pass without the latent upsampler, from diffusers'
# LTX-Video documentation (0.9.7 distilled; 0.9.8 distilled "is similar"): guidance 1, these timesteps.
DISTILLED_TIMESTEPS = (1000.0, 993.0, 987.0, 981.0, 975.0, 909.0, 725.0, 0.03)


class _OwnTimestepsWarning(logging.Filter):
    """LTXConditionPipeline always hands the scheduler timesteps (its own schedule when the job gives
    none), and diffusers 0.42's flow-matching scheduler warns about that on every call: a warning in the
    log of every job that no one can act on. Only that message is dropped."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("`timesteps` were passed without `sigmas`")


OWN_TIMESTEPS_WARNING = _OwnTimestepsWarning()


# The published defaults: the model makes "24 FPS videos at a 768x512 resolution" (diffusers' LTX
# docs); the pipeline's frame_rate defaults to 25; diffusers' examples run 50 steps, and its notes ask
# a guidance "like 5.0" for the checkpoints that are not distilled (1 for the distilled ones, which
# run DISTILLED_TIMESTEPS instead of steps); 121 frames is the published 512x768x121 (17.75 GB on an
# A100, HF blog video_gen): 512p on a GPU of over 18 GiB, 384p below. Parameters counted from
# the published configs (bench/real_configs.py), T5-XXL text encoder included.
LTX_VIDEO_09 = ModelCard(name="ltx-video-0.9", label="LTX-Video 0.9 (2B)",
                         hub_id="Lightricks/LTX-Video-0.9.5", width=768, height=512, num_frames=121,
                         fps=25.0, steps=50, guidance_scale=5.0, params_b=7.9,
                         sizes=((512, 18.0), (384, 0.0)))


class LtxOptions(BaseModel):
    """The sidecar's `backend_options` for LTX-Video."""

    model_config = ConfigDict(extra="forbid", strict=True)

    distilled: bool = Field(default=False, description=(
        "the model is a guidance- and timestep-distilled checkpoint (LTX-Video 0.9.7/0.9.8 distilled): "
        "guidance 1 and its 8 timesteps, whatever steps and guidance_scale say"))
    decode_timestep: float = Field(default=0.05, ge=0, le=1, description=(
        "the timestep the VAE decodes at (0.9.1 and later; a VAE without timestep conditioning ignores "
        "it)"))
    decode_noise_scale: float = Field(default=0.025, ge=0, le=1, description=(
        "noise mixed into the latents before that decode"))
    image_cond_noise_scale: float = Field(default=0.025, ge=0, le=1, description=(
        "noise added to the input image's latents: more lets the clip drift further from it"))


@register
class LtxVideoBackend(DiffusersBackend):
    name = "ltx-video"
    pipeline_class = "LTXConditionPipeline"
    # The published LTX-Video folders are indexed as LTXPipeline (text-to-video) or as the image-to-video
    # pipelines: all three have the same five components, which LTXConditionPipeline loads.
    index_classes: ClassVar[tuple[str, ...]] = ("LTXImageToVideoPipeline", "LTXPipeline")
    denoiser = "transformer"
    frames_step: ClassVar[tuple[int, int]] = (8, 1)
    honours: ClassVar[frozenset[str]] = frozenset({
        "prompt", "negative_prompt", "num_frames", "fps", "steps", "guidance_scale", "resolution", "seed",
        "backend_options"})
    options_model = LtxOptions
    card = LTX_VIDEO_09

    def load(self) -> None:
        super().load()
        # A filter object added twice is kept once: loading again adds nothing.
        logging.getLogger("diffusers.schedulers.scheduling_flow_match_euler_discrete").addFilter(
            OWN_TIMESTEPS_WARNING)

    def size_multiple(self) -> int:
        pipe = self.pipe
        return int(pipe.vae_spatial_compression_ratio) * int(pipe.transformer_spatial_patch_size)

    def plan(self, image_size: tuple[int, int], params: JobParams, notes: dict[str, Any]) -> Plan:
        plan = super().plan(image_size, params, notes)
        if self.options(params).distilled:  # what ran instead of the job's steps and guidance_scale
            notes["schedule"] = {"distilled": True, "timesteps": list(DISTILLED_TIMESTEPS),
                                 "steps": len(DISTILLED_TIMESTEPS), "guidance_scale": 1.0}
        return plan

    def arguments(self, params: JobParams, plan: Plan) -> dict[str, Any]:
        options: LtxOptions = self.options(params)
        schedule: dict[str, Any] = {"num_inference_steps": params.steps,
                                    "guidance_scale": params.guidance_scale}
        if options.distilled:
            schedule = {"timesteps": list(DISTILLED_TIMESTEPS), "guidance_scale": 1.0}
        return {"prompt": params.prompt, "negative_prompt": params.negative_prompt or None,
                "height": plan.height, "width": plan.width, "num_frames": plan.num_frames,
                "frame_rate": round(params.fps), "decode_timestep": options.decode_timestep,
                "decode_noise_scale": options.decode_noise_scale,
                "image_cond_noise_scale": options.image_cond_noise_scale, **schedule}
