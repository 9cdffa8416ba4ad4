"""`hunyuan-i2v`: HunyuanVideo-I2V through diffusers' HunyuanVideoImageToVideoPipeline, a prompt-driven
diffusion transformer whose prompt is read together with the image by a Llava text encoder.

Two published checkpoints, told apart by the transformer's config:

- `hunyuanvideo-community/HunyuanVideo-I2V` (16 latent channels, `image_condition_type = "token_replace"`,
  the default): guidance-distilled, it has a guidance embedding, and the job's `guidance_scale` is that
  embedded guidance (diffusers' example uses 6). One transformer pass per step; `negative_prompt` is not
  used by this model.
- `hunyuanvideo-community/HunyuanVideo-I2V-33ch` (`"latent_concat"`): no guidance embedding, so the
  job's `guidance_scale` is real classifier-free guidance against `negative_prompt` (the pipeline's
  `true_cfg_scale`): above 1 each step runs the transformer twice; 1 turns it off.

Frame counts are of the form 4k+1 and sides multiples of 16. With `latent_concat` the pipeline decodes 4
frames more than it returns (it drops the first 4: 9 asked → 5 returned), so the backend asks it for 4
more than the job's count, and the job gets the count it asked for (rounded to 4k+1); the metadata
records asked and used, the guidance and the frames the pipeline dropped.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

from i2v_watcher.backends import register
from i2v_watcher.backends.attempt import Plan
from i2v_watcher.backends.card import ModelCard
from i2v_watcher.backends.diffusion import PROMPTED, DiffusersBackend
from i2v_watcher.job.spec import JobParams

# HunyuanVideoImageToVideoPipeline drops this many decoded frames with `latent_concat` (`video[:, :, 4:]`).
LATENT_CONCAT_DROPPED_FRAMES = 4

# What the model card (Tencent's HunyuanVideo-I2V README) runs with: 720p (1280x720), 129 frames at
# 24 fps, 50 steps, 60 GB of GPU memory at 720p; diffusers' example gives the default checkpoint an
# embedded guidance of 6. Parameters counted on the meta device from diffusers' conversion configs
# (2026-12-07): transformer 12.82 B, Llava-Llama-3-8B text encoder 8.36 B, CLIP-L text encoder
# 0.12 B, VAE 0.25 B. 544p (its other published size, 960x544) below 60 GiB.
HUNYUAN_I2V = ModelCard(name="hunyuanvideo-i2v", label="HunyuanVideo-I2V",
                        hub_id="hunyuanvideo-community/HunyuanVideo-I2V", width=1280, height=720,
                        num_frames=129, fps=24.0, steps=50, guidance_scale=6.0, params_b=21.55,
                        sizes=((720, 60.0), (544, 0.0)))


@register
class HunyuanImageToVideoBackend(DiffusersBackend):
    name = "hunyuan-i2v"
    pipeline_class = "HunyuanVideoImageToVideoPipeline"
    denoiser = "transformer"
    frames_step: ClassVar[tuple[int, int]] = (4, 1)
    honours: ClassVar[frozenset[str]] = PROMPTED
    card = HUNYUAN_I2V

    def size_multiple(self) -> int:
        """The VAE's 8x times the transformer's patch (2 in the published model), and the pipeline's own
        check: sides divisible by 16."""
        pipe = self.pipe
        return math.lcm(16, int(pipe.vae_scale_factor_spatial) * int(pipe.transformer.config.patch_size))

    def dropped_frames(self) -> int:
        """How many decoded frames the pipeline drops from what it is asked for."""
        concat = self.pipe.transformer.config.image_condition_type == "latent_concat"
        return LATENT_CONCAT_DROPPED_FRAMES if concat else 0

    def embedded_guidance(self) -> bool:
        """Whether the transformer has a guidance embedding (a guidance-distilled checkpoint)."""
        return bool(self.pipe.transformer.config.guidance_embeds)

    def passes_per_step(self, params: JobParams) -> int:
        # Unloaded: the default checkpoint, guidance-distilled (one pass whatever the guidance).
        embedded = self.pipe is None or self.embedded_guidance()
        return 1 if embedded else super().passes_per_step(params)

    def plan(self, image_size: tuple[int, int], params: JobParams, notes: dict[str, Any]) -> Plan:
        plan = super().plan(image_size, params, notes)
        embedded = self.embedded_guidance()
        notes["guidance"] = {"kind": "embedded" if embedded else "classifier-free",
                             "scale": params.guidance_scale,
                             "negative_prompt_used": not embedded and params.guidance_scale > 1}
        notes["pipeline_dropped_frames"] = self.dropped_frames()
        return plan

    def arguments(self, params: JobParams, plan: Plan) -> dict[str, Any]:
        # plan.num_frames is what the job gets; the pipeline makes the dropped frames on top of it.
        args: dict[str, Any] = {
            "prompt": params.prompt, "height": plan.height, "width": plan.width,
            "num_frames": plan.num_frames + self.dropped_frames(), "num_inference_steps": params.steps}
        if self.embedded_guidance():
            args["guidance_scale"] = params.guidance_scale  # true_cfg_scale stays 1: one pass per step
        else:
            # An empty negative prompt is the usual unconditional branch (None would switch CFG off).
            args.update(true_cfg_scale=params.guidance_scale, negative_prompt=params.negative_prompt)
        return args
