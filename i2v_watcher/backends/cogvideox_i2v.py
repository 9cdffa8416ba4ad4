"""`cogvideox-i2v`: CogVideoX-5B-I2V and CogVideoX1.5-5B-I2V, prompt-driven diffusion transformers, through
diffusers' `CogVideoXImageToVideoPipeline`. One backend serves both: the folder's transformer config
says which (1.5 adds `patch_size_t`).

Frame counts. The pipeline turns `num_frames` n into (n-1)//4 + 1 latent frames, and its VAE decodes
latents two at a time, the first three together when their count is odd (`AutoencoderKLCogVideoX._decode`):
two latents become 8 frames and three become 9. So L latents decode to 4L frames when L is even and to
4L-3 when L is odd: asked 5 or 6 frames it returns 8, asked 10 it returns 9. Only counts of the form
8k+1 come back as asked (both models are trained on odd latent counts: 49 frames for 1.0, 81 or 161 for
1.5), so the plan rounds to 8k+1 and the metadata records what was asked and what was used. 1.5's
`patch_size_t = 2` pads an odd latent count by one frame inside the pipeline and drops it before
decoding, which leaves this rule as it is.

Sizes. The VAE's 8x downscale times the transformer's 2x2 patches: sides are multiples of 16 (at 40x40
the pipeline fails inside the transformer rather than with a clean check, so the plan rounds first).
CogVideoX-5B-I2V (1.0) has learned positional embeddings for 720x480 only and the pipeline refuses any
other size: for such a model every job is made at that size, the input cropped to its shape. 1.5 crops
its rotary embeddings from a grid of its sample size, so no side may exceed that (see fit_size)."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

from PIL import Image, ImageOps

from i2v_watcher.backends import register
from i2v_watcher.backends.attempt import Plan
from i2v_watcher.backends.card import ModelCard
from i2v_watcher.backends.diffusion import PROMPTED, DiffusersBackend
from i2v_watcher.job.spec import JobParams

# THUDM/CogVideoX-5b-I2V: 720x480, 49 frames (6 s at 8 fps), 50 steps, guidance 6.
CARD_1_0 = ModelCard(name="cogvideox-5b-i2v", label="CogVideoX-5B-I2V", hub_id="THUDM/CogVideoX-5b-I2V",
                     width=720, height=480, num_frames=49, fps=8.0, steps=50, guidance_scale=6.0,
                     extra={"version": "1.0"})
# THUDM/CogVideoX1.5-5B-I2V: 1360x768, 81 frames (5 s at 16 fps), 50 steps, guidance 6; parameters
# counted from the published configs (bench/real_configs.py), T5-XXL included.
CARD_1_5 = ModelCard(name="cogvideox1.5-5b-i2v", label="CogVideoX1.5-5B-I2V",
                     hub_id="THUDM/CogVideoX1.5-5B-I2V", width=1360, height=768, num_frames=81, fps=16.0,
                     steps=50, guidance_scale=6.0, params_b=10.6, extra={"version": "1.5"})


def card_of(patch_size_t: int | None) -> ModelCard:
    """Which CogVideoX a transformer is, from its config's `patch_size_t` (config.json's, or the loaded
    model's): 1.5 is the one with temporal patches."""
    return CARD_1_5 if patch_size_t is not None else CARD_1_0


@register
class CogVideoXImageToVideoBackend(DiffusersBackend):
    name = "cogvideox-i2v"
    pipeline_class = "CogVideoXImageToVideoPipeline"
    denoiser = "transformer"
    frames_step: ClassVar[tuple[int, int]] = (8, 1)  # see the module's docstring
    honours: ClassVar[frozenset[str]] = PROMPTED
    card = CARD_1_5  # the default model's

    @classmethod
    def known_cards(cls) -> tuple[ModelCard, ...]:
        return CARD_1_0, CARD_1_5

    def model_card(self) -> ModelCard:
        """The loaded model's card: 1.5 is the transformer with temporal patches."""
        if self.pipe is None:
            return CARD_1_5
        return card_of(self.pipe.transformer.config.patch_size_t)

    def describe_folder(self, folder: Path, index: Mapping[str, Any]) -> str:
        try:
            config = json.loads((folder / "transformer" / "config.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):  # the component check says what is wrong with the folder
            return "CogVideoX (no readable transformer config)"
        return card_of(config.get('patch_size_t')).label

    def sample_size(self) -> tuple[int, int]:
        """(width, height) in pixels of the transformer's positional embeddings."""
        config, scale = self.pipe.transformer.config, int(self.pipe.vae_scale_factor_spatial)
        return int(config.sample_width) * scale, int(config.sample_height) * scale

    def size_multiple(self) -> int:
        return int(self.pipe.vae_scale_factor_spatial) * int(self.pipe.transformer.config.patch_size)

    def fit_size(self, width: int, height: int, short: int) -> tuple[int, int]:
        config = self.pipe.transformer.config
        if config.use_learned_positional_embeddings:  # 1.0: the pipeline refuses any other size
            return self.sample_size()
        fitted = super().fit_size(width, height, short)
        if config.patch_size_t is None:
            return fitted
        # 1.5 crops its rotary embeddings from a grid of the sample size: a side beyond it fails inside
        # the pipeline, so a larger plan shrinks (aspect kept) until both sides fit.
        limit, m = self.sample_size(), self.size_multiple()
        shrink = min(1.0, limit[0] / fitted[0], limit[1] / fitted[1])
        width, height = (max(m, m * math.floor(round(side * shrink / m, 6))) for side in fitted)
        return width, height

    def resize(self, image: Image.Image, plan: Plan) -> Image.Image:
        # Cropped to the plan's shape rather than stretched: a fixed-size model may be given any image.
        return ImageOps.fit(image, (plan.width, plan.height), Image.Resampling.LANCZOS)

    def arguments(self, params: JobParams, plan: Plan) -> dict[str, Any]:
        return {"prompt": params.prompt, "negative_prompt": params.negative_prompt or None,
                "height": plan.height, "width": plan.width, "num_frames": plan.num_frames,
                "num_inference_steps": params.steps, "guidance_scale": params.guidance_scale}
