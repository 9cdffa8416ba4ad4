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

Distilled or not: diffusers' conversion script (scripts/convert_ltx_to_diffusers.py) writes the same
transformer config and the same scheduler config for LTX-Video 0.9.7 dev and distilled, so nothing in a
folder's configs tells them apart: only its name does (Lightricks/LTX-Video-0.9.7-distilled,
Lightricks/LTX-Video-0.9.8-13B-distilled). The backend reads the name; `[models.ltx-video] distilled`
overrides it for a folder named otherwise, and a job's `backend_options.distilled` overrides both. The
metadata records which it was and who decided (`generation.distilled`).

`[models.ltx-video] draft_model` names a distilled checkpoint whose transformer the draft level's jobs run
with, resident beside the base one (ltx_draft.py); `generation.transformer` says which ran and why.
Without it, and with a base model that is not distilled, the shipped draft level runs fewer steps of the
base model and the daemon says so once at start-up.

`backend_options.upsample` runs the two-pass recipe of ltx_upsample.py with the latent upsampler named
by `[models.ltx-video] upsampler`, loaded resident with the model.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field

from i2v_watcher.backends import register
from i2v_watcher.backends.attempt import Plan
from i2v_watcher.backends.base import Frames, Progress
from i2v_watcher.backends.card import ModelCard
from i2v_watcher.backends.diffusion import PROMPTED, DiffusersBackend
from i2v_watcher.backends.ltx_draft import (
    DraftCheckpoint,
    DraftModel,
    check_draft_setting,
    draft_missing,
    load_draft,
    model_name,
    transformer_choice,
)
from i2v_watcher.backends.ltx_upsample import (
    Passes,
    load_upsampler,
    run_two_passes,
    two_passes,
    upsampler_missing,
)
from i2v_watcher.config.settings import Settings
from i2v_watcher.errors import JobError
from i2v_watcher.job.spec import JobParams

if TYPE_CHECKING:
    from PIL import Image

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

    distilled: bool | None = Field(default=None, description=(
        "the model is a guidance- and timestep-distilled checkpoint (LTX-Video 0.9.7/0.9.8 distilled): "
        "guidance 1 and its 8 timesteps, whatever steps and guidance_scale say; unset: as "
        "[models.ltx-video] distilled says, else told from the model's name. A draft-level job runs "
        "[models.ltx-video] draft_model where it is set, unless this is false"))
    upsample: bool = Field(default=False, description=(
        "make the clip in two passes with the latent upsampler ([models.ltx-video] upsampler): 2/3 of "
        "the size, the latents upsampled 2x, a few steps at that size, resized to the size asked"))
    adain_factor: float | None = Field(default=None, ge=0, le=1, description=(
        "with upsample: how far the upsampled latents are matched to the first pass's statistics "
        "(AdaIN); unset: 1 for a distilled checkpoint, 0 otherwise, as diffusers' examples"))
    tone_map_compression_ratio: float = Field(default=0.0, ge=0, le=1, description=(
        "with upsample: compress the upsampled latents' range (0.6 is recommended for LTX-Video "
        "0.9.8)"))
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
    honours: ClassVar[frozenset[str]] = PROMPTED | {"backend_options"}
    options_model = LtxOptions
    card = LTX_VIDEO_09
    draft_hint = DraftCheckpoint("a distilled checkpoint's folder (e.g. Lightricks/LTX-Video-0.9.7-distilled "
                                 "for a 2B model; its 8 timesteps without guidance)")

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self.upsampler: Any = None
        self.draft: DraftModel | None = None

    def unavailable(self) -> str | None:
        missing = super().unavailable()
        if missing is None and self.source.upsampler is not None:
            missing = upsampler_missing(self.source.upsampler)
        if missing is None and self.source.draft_model is not None:
            missing = draft_missing(self.source.draft_model)
        return missing

    def load(self) -> None:
        check_draft_setting(self.source, self.settings.diffusion)  # before the weights: fails fast
        super().load()
        if self.source.draft_model is not None:
            self.draft = load_draft(self.source.draft_model, self.pipe, self.settings.diffusion)
        if self.source.upsampler is not None:
            self.upsampler = load_upsampler(self.source.upsampler, self.settings.diffusion, self.pipe.vae)
        # A filter object added twice is kept once: loading again adds nothing.
        logging.getLogger("diffusers.schedulers.scheduling_flow_match_euler_discrete").addFilter(
            OWN_TIMESTEPS_WARNING)

    def size_multiple(self) -> int:
        pipe = self.pipe
        return int(pipe.vae_spatial_compression_ratio) * int(pipe.transformer_spatial_patch_size)

    def distilled(self, params: JobParams) -> tuple[bool, str, str]:
        """Whether the job runs the distilled schedule, who decided ("draft_model", "job", "config",
        "model name") and why, in words."""
        asked = self.options(params).distilled
        draft, why = self.transformer(params)
        if draft:
            return True, "draft_model", f"{why}, a distilled checkpoint"
        if asked is not None:
            return asked, "job", f"backend_options.distilled: {str(asked).lower()}"
        if self.source.distilled is not None:
            return self.source.distilled, "config", f"[models.{self.name}] distilled"
        name = model_name(self.source.model)
        found = "distill" in name.lower()
        says = "says" if found else "does not say"
        return found, "model name", f"the model's name {name!r} {says} distilled"

    def transformer(self, params: JobParams) -> tuple[bool, str]:
        """Whether the job runs the draft transformer ([models.ltx-video] draft_model), and why."""
        return transformer_choice(self.source, params.quality, self.options(params).distilled)

    def plan(self, image_size: tuple[int, int], params: JobParams, notes: dict[str, Any]) -> Plan:
        self._check_upsampler(params)
        plan = super().plan(image_size, params, notes)
        distilled, decided_by, why = self.distilled(params)
        notes["distilled"] = {"distilled": distilled, "decided_by": decided_by, "why": why}
        if self.source.draft_model is not None:
            draft, because = self.transformer(params)
            notes["transformer"] = {"transformer": "draft" if draft else "base", "why": because,
                                    "path": self.source.draft_model if draft else self.source.model}
        if distilled:  # what ran instead of the job's steps and guidance_scale
            notes["schedule"] = {"distilled": True, "timesteps": list(DISTILLED_TIMESTEPS),
                                 "steps": len(DISTILLED_TIMESTEPS), "guidance_scale": 1.0}
        return plan

    def passes_per_step(self, params: JobParams) -> int:
        # Distilled: guidance 1, one pass. With `upsample`, the second pass's steps come on top.
        return 1 if self.distilled(params)[0] else super().passes_per_step(params)

    def planned_passes(self, params: JobParams) -> int:
        # The distilled schedule runs its own timesteps, whatever the job's steps (one pass each).
        if self.distilled(params)[0] and not self.options(params).upsample:
            return len(DISTILLED_TIMESTEPS)
        return super().planned_passes(params)

    def _check_upsampler(self, params: JobParams) -> None:
        """Refuse `upsample` where this worker has no upsampler (before anything is planned)."""
        if self.options(params).upsample and self.source.upsampler is None:
            raise JobError(f"backend_options.upsample: true needs the latent upsampler, and this worker's "
                           f"[models.{self.name}] upsampler is not set", stage="sidecar",
                           hint=f"set [models.{self.name}] upsampler = "
                                '"Lightricks/ltxv-spatial-upscaler-0.9.7" (or a local folder), or leave '
                                "upsample out")

    def passes(self, width: int, height: int, params: JobParams) -> Passes:
        """The two passes that make a width x height clip for this job."""
        distilled = self.distilled(params)[0]
        return two_passes(width, height, self.size_multiple(),
                          len(DISTILLED_TIMESTEPS) if distilled else params.steps, distilled)

    def generate(self, image: Image.Image, params: JobParams, progress: Progress,
                 preloaded: object | None = None) -> Frames:
        options: LtxOptions = self.options(params)
        draft = self.draft if self.transformer(params)[0] else None
        if draft is None:
            frames = super().generate(image, params, progress, preloaded)
        else:
            with draft.swapped_in(self.pipe, self._modules):
                frames = super().generate(image, params, progress, preloaded)
            frames.details["speedups"] = draft.speedups(frames.details["speedups"])
        if options.upsample:  # the passes of the attempt that made the clip (an OOM rung's, maybe)
            passes = self.passes(frames.details["width"], frames.details["height"], params)
            frames.details["upsample"] = {"upsampler": self.source.upsampler, **passes.record(),
                                          **self.upsampling(params)}
        return frames

    def upsampling(self, params: JobParams) -> dict[str, float]:
        """The upsampler's arguments: the job's, or diffusers' examples' for its schedule."""
        options: LtxOptions = self.options(params)
        adain = options.adain_factor
        if adain is None:
            adain = 1.0 if self.distilled(params)[0] else 0.0
        return {"adain_factor": adain, "tone_map_compression_ratio": options.tone_map_compression_ratio}

    def call(self, image: Image.Image, params: JobParams, plan: Plan, generator: Any,
             extra: dict[str, Any]) -> Any:
        options: LtxOptions = self.options(params)
        if not options.upsample:
            return super().call(image, params, plan, generator, extra)
        return run_two_passes(self.pipe, self.upsampler, image, generator, self.arguments(params, plan),
                              extra, self.passes(plan.width, plan.height, params), self.upsampling(params),
                              (plan.width, plan.height))

    def arguments(self, params: JobParams, plan: Plan) -> dict[str, Any]:
        options: LtxOptions = self.options(params)
        schedule: dict[str, Any] = {"num_inference_steps": params.steps,
                                    "guidance_scale": params.guidance_scale}
        if self.distilled(params)[0]:
            schedule = {"timesteps": list(DISTILLED_TIMESTEPS), "guidance_scale": 1.0}
        return {"prompt": params.prompt, "negative_prompt": params.negative_prompt or None,
                "height": plan.height, "width": plan.width, "num_frames": plan.num_frames,
                "frame_rate": round(params.fps), "decode_timestep": options.decode_timestep,
                "decode_noise_scale": options.decode_noise_scale,
                "image_cond_noise_scale": options.image_cond_noise_scale, **schedule}

