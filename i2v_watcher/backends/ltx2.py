"""`ltx2`: LTX-2 image-to-video, a diffusion transformer that generates the clip and its soundtrack together,
through diffusers' `LTX2ImageToVideoPipeline` (Gemma 3 text encoder and `LTX2TextConnectors`, a 32x
spatial / 8x temporal video VAE, an audio VAE and a vocoder).

- Frames: diffusers rounds a count to (n-1)//8*8+1 without a word (5, 6 or 8 frames give one), and makes 121
  when given none; the backend plans the count itself (8k+1, nearest, at least 9) and the metadata records
  asked and used. Sides are multiples of 32 and at least 64.
- Sound: the pipeline returns stereo audio at the vocoder's `output_sampling_rate`, as long as the clip
  (num_frames / frame_rate, the job's fps). It comes back as `Frames.audio`, float32 on the host, fitted to
  the clip's exact length, and the metadata records its rate, channels and duration. The pipeline cannot
  skip it: both are denoised together, each attending to the other.
- The input image: LTX-2 was trained on video frames, and its reference code re-encodes the still as one
  H.264 frame (CRF 33 for LTX-2 and 2.3) before conditioning on it. diffusers does that with PyAV, a second
  copy of ffmpeg's libraries; the backend does it with the ffmpeg every job already uses and hands diffusers
  the result (`image_crf=0`), so the model sees what it was trained on without a new dependency.
- LTX-2.3 and later checkpoints modulate cross-attention by the prompt (`cross_attn_mod` in the
  transformer's config); diffusers' defaults are LTX-2.3's. For an LTX-2.0 checkpoint the backend passes
  what diffusers' docstring names as LTX-2.0's: the legacy cross-attention timestep and spatio-temporal
  guidance at block 29.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
from PIL import Image
from pydantic import BaseModel, ConfigDict, Field

from i2v_watcher.backends import register
from i2v_watcher.backends.attempt import Plan, precision_hint, to_uint8
from i2v_watcher.backends.base import Audio
from i2v_watcher.backends.card import ModelCard
from i2v_watcher.backends.diffusion import PROMPTED, DiffusersBackend
from i2v_watcher.errors import JobError
from i2v_watcher.job.spec import JobParams
from i2v_watcher.media.ffmpeg import find_ffmpeg
from i2v_watcher.media.h264 import h264_roundtrip

# The distilled checkpoints' schedule without the second (upsampling) stage, from diffusers' LTX-2 docs
# ("Distilled checkpoint generation": `sigmas=DISTILLED_SIGMA_VALUES`, 8 steps, guidance 1.0; the values
# are diffusers.pipelines.ltx2.utils.DISTILLED_SIGMA_VALUES).
DISTILLED_SIGMAS = (1.0, 0.99375, 0.9875, 0.98125, 0.975, 0.909375, 0.725, 0.421875)
# The CRF LTX-2 and 2.3 were trained with (diffusers' DEFAULT_IMAGE_CRF, ltx-pipelines' DEFAULT_IMAGE_CRF);
# used where diffusers is too old to say it per checkpoint (resolve_default_image_crf: 18 for LTX-2.5).
TRAINED_IMAGE_CRF = 33
# A side of 32 (one latent pixel) fails inside the VAE's reflect padding (seen with diffusers 0.42.1).
MIN_SIDE = 64
# How far the soundtrack may miss the clip's length before it is a broken model rather than rounding: the
# audio latents run at 25 a second (16 kHz, hop 160, 4x), so a clip's length rounds by 20 ms, and the causal
# audio VAE drops a few mel frames more.
AUDIO_SLACK_S = 0.1


class Ltx2Options(BaseModel):
    """The sidecar's `backend_options` for LTX-2."""

    model_config = ConfigDict(extra="forbid", strict=True)

    distilled: bool = Field(default=False, description=(
        "the model is a distilled checkpoint (LTX-2 19B distilled): its 8 sigmas at guidance 1, without the "
        "extra guidance passes, whatever steps and guidance_scale say"))
    image_crf: int | None = Field(default=None, ge=0, le=51, description=(
        "the H.264 CRF the input image is re-encoded at before the model sees it, as LTX-2 was trained; "
        "unset: the model's own (33 for LTX-2 and 2.3); 0 conditions on the image as it is"))
    max_sequence_length: int = Field(default=1024, ge=16, le=1024, description=(
        "the prompt's length in tokens: the pipeline pads every prompt to it (1024, diffusers' default) and "
        "cuts a longer one there; a shorter one encodes faster"))


@register
class Ltx2Backend(DiffusersBackend):
    name = "ltx2"
    pipeline_class = "LTX2ImageToVideoPipeline"
    denoiser = "transformer"
    frames_step: ClassVar[tuple[int, int]] = (8, 1)
    honours: ClassVar[frozenset[str]] = PROMPTED | {"backend_options"}
    options_model = Ltx2Options
    # Published figures: 768x512, 121 frames at 24 fps, 40 steps at guidance 4.0 are diffusers' LTX-2 docs
    # (docs/source/en/api/pipelines/ltx2.md, "Stage 1 default (non-distilled) inference" on Lightricks/LTX-2;
    # 24 fps is also the pipeline's `frame_rate` default). Parameters: 21.64 B counted on the meta device
    # from the published configs (bench/real_configs.py: transformer 18.88 B, connectors, both VAEs,
    # vocoder) plus the Gemma 3 12B text encoder's 12.19 B (keras-hub's presets). No published VRAM per
    # size: `resolution: auto` takes 512p.
    card: ClassVar[ModelCard] = ModelCard(
        name="ltx-2", label="LTX-2", hub_id="Lightricks/LTX-2", width=768, height=512, num_frames=121,
        fps=24.0, steps=40, guidance_scale=4.0, params_b=33.8)
    ffmpeg: str = ""  # known once loaded

    def load(self) -> None:
        binary, _ = find_ffmpeg(self.settings.ffmpeg_path)  # re-encodes each input image (image_crf)
        super().load()
        self.ffmpeg = binary.path

    def size_multiple(self) -> int:
        pipe = self.pipe
        return int(pipe.vae_spatial_compression_ratio) * int(pipe.transformer_spatial_patch_size)

    def fit_size(self, width: int, height: int, short: int) -> tuple[int, int]:
        fitted = super().fit_size(width, height, short)
        return max(MIN_SIDE, fitted[0]), max(MIN_SIDE, fitted[1])

    def generation(self) -> str:
        """"2.3+" for a checkpoint whose transformer modulates cross-attention by the prompt (LTX-2.3 and
        later), else "2.0"."""
        return "2.3+" if getattr(self.pipe.transformer, "prompt_modulation", False) else "2.0"

    def image_crf(self, params: JobParams) -> int:
        chosen: int | None = self.options(params).image_crf
        if chosen is not None:
            return chosen
        try:
            from diffusers.pipelines.ltx2.utils import resolve_default_image_crf
        except ImportError:  # a diffusers without it knows LTX-2.0 alone
            return TRAINED_IMAGE_CRF
        return int(resolve_default_image_crf(self.pipe.text_encoder))

    def plan(self, image_size: tuple[int, int], params: JobParams, notes: dict[str, Any]) -> Plan:
        plan = super().plan(image_size, params, notes)
        notes["ltx2"] = {"generation": self.generation(), "image_crf": self.image_crf(params)}
        if self.options(params).distilled:  # what ran instead of the job's steps and guidance_scale
            notes["schedule"] = {"distilled": True, "sigmas": list(DISTILLED_SIGMAS),
                                 "steps": len(DISTILLED_SIGMAS), "guidance_scale": 1.0}
        return plan

    def call(self, image: Image.Image, params: JobParams, plan: Plan, generator: Any,
             extra: dict[str, Any]) -> Any:
        crf = self.image_crf(params)
        if crf:
            image = Image.fromarray(h264_roundtrip(np.asarray(image.convert("RGB")), crf, self.ffmpeg))
        return super().call(image, params, plan, generator, extra)

    def passes_per_step(self, params: JobParams) -> int:
        """Distilled: one pass. Else the pipeline's defaults: a batched guidance pair (its audio guidance,
        7, keeps it on whatever the job's guidance), a spatio-temporal guidance pass and a modality pass."""
        return 1 if self.options(params).distilled else 4

    def arguments(self, params: JobParams, plan: Plan) -> dict[str, Any]:
        options: Ltx2Options = self.options(params)
        schedule: dict[str, Any] = {"num_inference_steps": params.steps,
                                    "guidance_scale": params.guidance_scale}
        if options.distilled:  # no CFG, STG or modality passes: one transformer pass a step
            schedule = {"sigmas": list(DISTILLED_SIGMAS), "num_inference_steps": len(DISTILLED_SIGMAS),
                        "guidance_scale": 1.0, "audio_guidance_scale": 1.0, "stg_scale": 0.0,
                        "audio_stg_scale": 0.0, "modality_scale": 1.0, "audio_modality_scale": 1.0}
        if self.generation() == "2.0":  # diffusers' docstring: LTX-2.0's STG block, its legacy timestep
            schedule |= {"use_cross_timestep": False, "spatio_temporal_guidance_blocks": [29]}
        return {"prompt": params.prompt, "negative_prompt": params.negative_prompt or None,
                "height": plan.height, "width": plan.width, "num_frames": plan.num_frames,
                "frame_rate": params.fps, "max_sequence_length": options.max_sequence_length,
                "image_crf": 0, **schedule}  # image_crf: call() re-encoded it

    def read_output(self, output: Any, params: JobParams, plan: Plan) -> tuple[np.ndarray, Audio | None]:
        pixels = to_uint8(output.frames[0], dtype=self.dtype_name())
        rate = int(self.pipe.vocoder.config.output_sampling_rate)
        return pixels, fitted_audio(output.audio[0], rate, pixels.shape[0] / params.fps, self.dtype_name())


def fitted_audio(samples: Any, rate: int, clip_s: float, dtype: str | None = None) -> Audio:
    """The vocoder's (channels, samples) tensor, where the pipeline left it → float32 on the host, exactly
    as long as the clip (the last few milliseconds cut, or silence added); a JobError for NaN, or for a
    soundtrack that misses the clip's length by more than rounding (a vocoder that does not fit the folder's
    audio VAE)."""
    import torch

    if samples.ndim != 2:
        raise JobError(f"the model returned audio of shape {tuple(samples.shape)}", stage="generate")
    if not bool(torch.isfinite(samples).all()):
        raise JobError("the model produced NaN audio", stage="generate", hint=precision_hint("nan", dtype))
    made_s = samples.shape[1] / rate
    if abs(made_s - clip_s) > AUDIO_SLACK_S:
        raise JobError(f"the model's soundtrack lasts {made_s:.3f} s for a clip of {clip_s:.3f} s "
                       f"at {rate} Hz", stage="generate",
                       hint="the model folder's vocoder does not fit its audio VAE: check that every "
                            "component comes from one LTX-2 checkpoint")
    wave = samples.float().clamp(-1.0, 1.0).cpu().numpy()
    length = round(clip_s * rate)
    wave = np.pad(wave[:, :length], ((0, 0), (0, max(0, length - wave.shape[1]))))
    return Audio(samples=np.ascontiguousarray(wave, dtype=np.float32), rate=rate)
