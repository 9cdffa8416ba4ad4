"""`i2vgen-xl`: I2VGen-XL through diffusers' I2VGenXLPipeline, resident on the GPU.

The pipeline is deprecated in diffusers and its own prompt encoding reads
`text_encoder.text_model.final_layer_norm`, which transformers 5 no longer has. So the backend encodes
the prompts itself, with the pipeline's exact semantics (CLIP tokens padded to 77, clip_skip=1: the
penultimate hidden state through the final layer norm), and passes `prompt_embeds` and
`negative_prompt_embeds`. That keeps the newest diffusers and transformers usable, and older ones too,
and lets a preload encode the next job's prompts while this one denoises.
"""

from __future__ import annotations

from typing import Any, ClassVar

from i2v_watcher.backends import register
from i2v_watcher.backends.attempt import Plan
from i2v_watcher.backends.card import WEBUI_CARD
from i2v_watcher.backends.diffusion import PROMPTED, DiffusersBackend
from i2v_watcher.job.spec import JobParams

CLIP_SKIP = 1  # the pipeline's default


def encode_prompt(pipe: Any, text: str, device: Any, clip_skip: int | None = CLIP_SKIP) -> Any:
    """One prompt → CLIP embeddings, as I2VGenXLPipeline.encode_prompt computes them."""
    tokens = pipe.tokenizer(text, padding="max_length", max_length=pipe.tokenizer.model_max_length,
                            truncation=True, return_tensors="pt")
    encoder = pipe.text_encoder
    mask = None
    if getattr(encoder.config, "use_attention_mask", False):
        mask = tokens.attention_mask.to(device)
    if clip_skip is None:
        embeds = encoder(tokens.input_ids.to(device), attention_mask=mask)[0]
    else:
        hidden = encoder(tokens.input_ids.to(device), attention_mask=mask, output_hidden_states=True)
        # transformers 4 nests the layers under `text_model`; transformers 5 flattened them.
        final_norm = getattr(encoder, "text_model", encoder).final_layer_norm
        embeds = final_norm(hidden[-1][-(clip_skip + 1)])
    return embeds.to(dtype=encoder.dtype, device=device)


@register
class I2VGenXLBackend(DiffusersBackend):
    name = "i2vgen-xl"
    pipeline_class = "I2VGenXLPipeline"
    honours: ClassVar[frozenset[str]] = PROMPTED | {"decode_chunk_size"}
    default_decode_chunk: ClassVar[int | None] = 4
    card = WEBUI_CARD
    step_progress = "progress_bar"  # the pipeline has no callback_on_step_end
    # The text encoder has weights of its own: encoding the next job's prompts beside this job's UNet
    # changes nothing of it (without offload hooks, which DiffusersBackend checks).
    conditions_ahead = True

    def conditioning(self, params: JobParams) -> dict[str, Any]:
        pipe = self.pipe
        device = pipe._execution_device
        return {"prompt_embeds": encode_prompt(pipe, params.prompt, device),
                "negative_prompt_embeds": encode_prompt(pipe, params.negative_prompt, device)}

    def arguments(self, params: JobParams, plan: Plan) -> dict[str, Any]:
        return {"height": plan.height, "width": plan.width, "num_frames": plan.num_frames,
                "target_fps": round(params.fps), "num_inference_steps": params.steps,
                "guidance_scale": params.guidance_scale}
