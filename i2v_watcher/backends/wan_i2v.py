"""`wan-i2v`: Wan 2.1 and Wan 2.2 image-to-video, prompt-driven diffusion transformers, all through
diffusers' WanImageToVideoPipeline. Which Wan it is comes from what the model folder holds:

- Wan 2.2 I2V-A14B: two experts, `transformer` for the high-noise steps and `transformer_2` for the
  low-noise ones, switching at `boundary_ratio` of the training timesteps (the folder's config). Each
  expert has its guidance: the job's `guidance_scale`, and `backend_options.guidance_scale_2`.
- Wan 2.2 TI2V-5B: one transformer with per-patch timesteps (`expand_timesteps`) and a 16x VAE, so sides
  are multiples of 32. Its published folder is indexed as `WanPipeline` (text-to-video); the backend
  loads it as WanImageToVideoPipeline all the same (`pipeline_class`).
- Wan 2.1 I2V-14B: neither of those.

Frame counts are of the form 4k+1 and sides multiples of the patch times the VAE's scale; both are
rounded, and the metadata records what was asked, what was used and which Wan it was."""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field

from i2v_watcher.backends import register
from i2v_watcher.backends.attempt import Plan
from i2v_watcher.backends.card import ModelCard
from i2v_watcher.backends.diffusion import PROMPTED, DiffusersBackend
from i2v_watcher.backends.folder import Problem, holds, model_folder, read_index
from i2v_watcher.backends.loras import DraftLora
from i2v_watcher.errors import JobError, StartupError
from i2v_watcher.job.spec import JobParams

# Each Wan checkpoint family's model card (the reference code's configs, wan/configs/*.py of
# Wan-Video/Wan2.1 and Wan-Video/Wan2.2). Sizes for `resolution: auto`: the 480P checkpoint is made at
# 480p only. A14B has no published peak: Wan 2.1 14B as shipped peaks at 81 GB at 720p (LightX2V, H200)
# and A14B keeps a second 14 B expert resident (28 GB more in bf16), so 720p above 100 GiB. TI2V-5B's
# weights are about 22 GB in bf16 (5 B transformer, 5.7 B umT5-XXL) and its README runs 720p on a 24 GB
# card only with offload, so 704p above 32 GiB. Parameters (every component, text encoders included)
# counted from the published configs in bench/real_configs.py.
WAN_21_I2V_14B = ModelCard(name="wan2.1-i2v-14b", label="Wan 2.1 I2V-14B (480P)",
                           hub_id="Wan-AI/Wan2.1-I2V-14B-480P-Diffusers", width=832, height=480,
                           num_frames=81, fps=16.0, steps=40, guidance_scale=5.0, params_b=22.8)
WAN_22_I2V_A14B = ModelCard(name="wan2.2-i2v-a14b", label="Wan 2.2 I2V-A14B",
                            hub_id="Wan-AI/Wan2.2-I2V-A14B-Diffusers", width=1280, height=720, num_frames=81,
                            fps=16.0, steps=40, guidance_scale=3.5, params_b=34.4,
                            sizes=((720, 100.0), (480, 0.0)))
WAN_22_TI2V_5B = ModelCard(name="wan2.2-ti2v-5b", label="Wan 2.2 TI2V-5B",
                           hub_id="Wan-AI/Wan2.2-TI2V-5B-Diffusers", width=1280, height=704, num_frames=121,
                           fps=24.0, steps=50, guidance_scale=5.0, params_b=11.4,
                           sizes=((704, 32.0), (480, 0.0)))
WAN_VARIANTS = (WAN_21_I2V_14B, WAN_22_I2V_A14B, WAN_22_TI2V_5B)


def wan_variant(config: Mapping[str, Any]) -> ModelCard:
    """Which Wan a model folder holds, from its model_index.json (or the loaded pipeline's config); a
    StartupError for a folder that has one half of the two-expert layout."""
    second, boundary = holds(config, "transformer_2"), config.get("boundary_ratio")
    if second != (boundary is not None):
        has, lacks = ("transformer_2", "boundary_ratio") if second else ("boundary_ratio", "transformer_2")
        raise StartupError(f"the Wan model folder has {has} but no {lacks}: Wan 2.2 I2V-A14B needs both "
                           "(the high-noise expert hands over to transformer_2 at boundary_ratio); the "
                           "folder is incomplete or was edited")
    if second:
        return WAN_22_I2V_A14B
    return WAN_22_TI2V_5B if config.get("expand_timesteps") else WAN_21_I2V_14B


class WanOptions(BaseModel):
    """The sidecar's `backend_options` for Wan."""

    model_config = ConfigDict(extra="forbid", strict=True)

    guidance_scale_2: float | None = Field(default=None, ge=0, le=20, description=(
        "Wan 2.2 I2V-A14B only: the guidance of the low-noise expert (the later steps); unset: the job's "
        "guidance_scale. Another Wan model fails a job that sets it."))


@register
class WanImageToVideoBackend(DiffusersBackend):
    name = "wan-i2v"
    pipeline_class = "WanImageToVideoPipeline"
    # TI2V-5B's published folder is indexed as the text-to-video WanPipeline (see index_problems).
    index_classes: ClassVar[tuple[str, ...]] = ("WanPipeline",)
    denoiser = "transformer"
    frames_step: ClassVar[tuple[int, int]] = (4, 1)
    honours: ClassVar[frozenset[str]] = PROMPTED | {"backend_options"}
    options_model = WanOptions
    card = WAN_21_I2V_14B  # the default model's
    # LightX2V's step-distilled Wan LoRAs: 4 steps, no classifier-free guidance (14 s against 366 s for
    # Wan 2.1 I2V-14B at 480p, their benchmark); A14B has one per expert (into = "transformer_2").
    draft_hint = DraftLora("a 4-step distilled LoRA (e.g. lightx2v's; Wan 2.2 A14B: one for each expert, "
                           'the second with into = "transformer_2")', {"steps": 4, "guidance_scale": 1.0})
    variant: ModelCard | None = None  # known once loaded

    def load(self) -> None:
        held = self.folder_variant()  # before the weights: an incomplete folder fails fast
        super().load()
        self.variant = wan_variant(self.pipe.config)
        if held is not None and held != self.variant:
            raise StartupError(
                f"the wan-i2v model folder holds {held.label}, but diffusers "
                f"{self.versions().get('diffusers', '?')} loaded it as {self.variant.label}: Wan 2.2 needs "
                "diffusers 0.35 or newer (pip install -U 'diffusers>=0.35')")

    @classmethod
    def known_cards(cls) -> tuple[ModelCard, ...]:
        return WAN_VARIANTS

    def model_card(self) -> ModelCard:
        return self.variant or self.card

    def folder_variant(self) -> ModelCard | None:
        """The variant the folder's model_index.json names (None: no index found, as for a hub id
        whose weights are fetched on load)."""
        folder = model_folder(self.locate())
        if folder is None or not (folder / "model_index.json").is_file():
            return None
        return wan_variant(read_index(folder))

    def describe_folder(self, folder: Path, index: Mapping[str, Any]) -> str:
        try:
            return wan_variant(index).label
        except StartupError:
            return "an incomplete Wan 2.2 I2V-A14B"

    def needed_components(self, index: Mapping[str, Any]) -> set[str] | None:
        """Wan 2.1 conditions on CLIP image embeddings too (the pipeline encodes the image when there is
        neither a boundary nor expanded timesteps): its image encoder and processor are needed."""
        needed = super().needed_components(index)
        with contextlib.suppress(StartupError):  # index_problems reports a half two-expert layout
            if needed is not None and wan_variant(index) is WAN_21_I2V_14B:
                needed |= {"image_encoder", "image_processor"}
        return needed

    def index_problems(self, folder: Path, index: Mapping[str, Any]) -> list[Problem]:
        problems = super().index_problems(folder, index)
        try:
            variant = wan_variant(index)
        except StartupError as exc:
            return [*problems, Problem(f"{folder}: {exc}", self.refetch(folder))]
        if index.get("_class_name") == "WanPipeline" and variant is not WAN_22_TI2V_5B:
            # Only TI2V-5B is published indexed as WanPipeline; another such folder is text-to-video.
            problems.append(Problem(f"{folder} holds a text-to-video Wan (WanPipeline without expanded "
                                    "timesteps), not an image-to-video one",
                                    f"point [models.{self.name}] model at an image-to-video Wan, e.g. "
                                    f"`hf download {WAN_22_I2V_A14B.hub_id}`"))
        return problems

    def denoisers(self, pipe: Any) -> list[Any]:
        experts = (pipe.transformer, getattr(pipe, "transformer_2", None))  # older diffusers: no second
        return [expert for expert in experts if expert is not None]

    def size_multiple(self) -> int:
        pipe = self.pipe
        patch = pipe.transformer.config.patch_size[1]
        return int(pipe.vae_scale_factor_spatial) * int(patch)

    def options(self, params: JobParams) -> WanOptions:
        """The validated options; guidance_scale_2 on a model without a second expert fails the job
        before it reaches the GPU (diffusers would refuse it there)."""
        options: WanOptions = super().options(params)
        variant = self.variant
        if options.guidance_scale_2 is not None and variant is not None and variant != WAN_22_I2V_A14B:
            raise JobError(f"backend_options.guidance_scale_2 needs Wan 2.2 I2V-A14B (two experts), and the "
                           f"wan-i2v model here is {variant.label}", stage="sidecar",
                           hint="leave guidance_scale_2 out; guidance_scale guides every step of this model")
        return options

    def plan(self, image_size: tuple[int, int], params: JobParams, notes: dict[str, Any]) -> Plan:
        plan = super().plan(image_size, params, notes)
        variant = self.variant
        if variant is not None:
            notes["wan"] = self.recorded(variant, params)
        return plan

    def recorded(self, variant: ModelCard, params: JobParams) -> dict[str, Any]:
        """What the metadata says of the Wan that ran (its card is `model_card`): its variant, and for
        two experts where they switch and the guidance of each."""
        record: dict[str, Any] = {"variant": variant.name}
        if variant == WAN_22_I2V_A14B:
            record["boundary_ratio"] = float(self.pipe.config.boundary_ratio)
            record["guidance_scale_2_used"] = self.second_guidance(params)
        return record

    def second_guidance(self, params: JobParams) -> float:
        chosen = self.options(params).guidance_scale_2
        return params.guidance_scale if chosen is None else chosen

    def arguments(self, params: JobParams, plan: Plan) -> dict[str, Any]:
        arguments = {"prompt": params.prompt, "negative_prompt": params.negative_prompt or None,
                     "height": plan.height, "width": plan.width, "num_frames": plan.num_frames,
                     "num_inference_steps": params.steps, "guidance_scale": params.guidance_scale}
        if self.variant == WAN_22_I2V_A14B:
            arguments["guidance_scale_2"] = self.second_guidance(params)
        return arguments
