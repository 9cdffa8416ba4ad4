"""What the diffusion backends load and how they run: the [models.<name>] tables, the [diffusion]
table and its OOM ladder, and the start-up check that every model table names a backend that loads one."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from i2v_watcher.config.loras import LoraSettings
from i2v_watcher.config.speed import CacheSettings
from i2v_watcher.errors import StartupError
from i2v_watcher.explain.core import did_you_mean
from i2v_watcher.job.spec import normalise_resolution

if TYPE_CHECKING:
    from i2v_watcher.config.settings import Settings


class ModelSettings(BaseModel):
    """Where a diffusion backend's weights come from."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    model: str  # a local directory, or a Hugging Face hub id resolved from the local cache
    variant: str | None = None  # e.g. "fp16": load the weights saved under that variant name
    upsampler: str | None = None  # ltx-video only: the latent upsampler (a folder or hub id) for upsample
    distilled: bool | None = None  # ltx-video only: the checkpoint is distilled (unset: told by its name)
    draft_model: str | None = None  # ltx-video only: a distilled checkpoint's folder, for the draft level
    loras: list[LoraSettings] = Field(default_factory=list)  # LoRA files, switched per job by level


# The [models.<name>] keys that only one backend reads: set on another's table, they are a start-up error.
BACKEND_KEYS = {"upsampler": "ltx-video", "distilled": "ltx-video", "draft_model": "ltx-video"}


DEFAULT_MODELS = {
    "i2vgen-xl": ModelSettings(model="ali-vilab/i2vgen-xl", variant="fp16"),
    "svd": ModelSettings(model="stabilityai/stable-video-diffusion-img2vid-xt", variant="fp16"),
    "wan-i2v": ModelSettings(model="Wan-AI/Wan2.1-I2V-14B-480P-Diffusers"),
    "cogvideox-i2v": ModelSettings(model="THUDM/CogVideoX1.5-5B-I2V"),
    "ltx-video": ModelSettings(model="Lightricks/LTX-Video-0.9.5"),
    # The 16-channel, guidance-distilled HunyuanVideo-I2V in diffusers' layout (the docs' first checkpoint).
    "hunyuan-i2v": ModelSettings(model="hunyuanvideo-community/HunyuanVideo-I2V"),
    # LTX-2 in diffusers' layout (the repository also holds the original single-file checkpoints).
    "ltx2": ModelSettings(model="Lightricks/LTX-2"),
}


class OomRung(BaseModel):
    """One rung of the OOM ladder; rungs apply cumulatively, each on top of those before it."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    resolution: str | None = None  # cap the short side at this size (e.g. "512p")
    num_frames: float | None = Field(default=None, gt=0, lt=1)  # keep this fraction of the frames
    offload: Literal["model", "sequential", "group"] | None = None  # CPU offload, for this one job only

    @field_validator("resolution", mode="before")
    @classmethod
    def _resolution(cls, value: object) -> str | None:
        if value is None:
            return None
        resolution = normalise_resolution(value)
        # A rung caps the short side with int("512p"[:-1]); "auto" would fail every job at that point.
        if resolution == "auto":
            raise ValueError("an OOM ladder rung caps the short side at a concrete size such as 512p "
                             "or 384p, never auto")
        return resolution

    @model_validator(mode="after")
    def _one_change(self) -> OomRung:
        if sum(v is not None for v in (self.resolution, self.num_frames, self.offload)) != 1:
            raise ValueError("each OOM ladder rung sets exactly one of resolution, num_frames, offload")
        return self


DEFAULT_OOM_LADDER = [OomRung(resolution="512p"), OomRung(num_frames=0.5), OomRung(offload="model")]


class DiffusionSettings(BaseModel):
    """How the diffusion backends load and run (applied once, at start-up)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    device: str = Field(default="cuda", pattern=r"^(cuda(:\d+)?|cpu)$")
    dtype: Literal["auto", "bfloat16", "float16", "float32"] = "auto"
    local_files_only: bool = False
    offload: Literal["none", "model", "sequential", "group"] = "none"
    # Group offload ("group"): how many of the denoiser's blocks come onto the GPU together.
    offload_group_blocks: int = Field(default=1, ge=1, le=64)
    vae_slicing: bool = False
    vae_tiling: bool = False
    attention_backend: str = "sdpa"  # checked at load against what torch and diffusers offer here
    compile: bool | Literal["regional"] = False  # true: the whole denoiser; "regional": its repeated blocks
    channels_last: bool = False
    quantize: Literal["none", "float8"] = "none"  # the denoiser's weights, through torchao
    cache: CacheSettings | None = None  # one of diffusers' caching hooks on the denoiser
    oom_ladder: list[OomRung] = Field(default_factory=lambda: list(DEFAULT_OOM_LADDER))



def check_model_tables(settings: Settings, known_backends: Iterable[str],
                       diffusion_backends: Iterable[str]) -> None:
    """Every [models.<name>] table must name a backend that loads a model. A separate step from
    validation because plugins register backends only at start-up; call it after discovery.
    A typo would otherwise be ignored and the shipped hub id loaded in its place."""
    known = set(known_backends)
    with_models = sorted(set(diffusion_backends))
    problems = []
    for name, source in settings.models.items():
        if DEFAULT_MODELS.get(name) == source:
            continue  # the shipped tables are never the user's mistake
        if name not in known:
            problems.append(_unknown_model_table(name, with_models))
        elif name not in with_models:
            problems.append(f"[models.{name}]: backend {name} loads no model, so the table means nothing")
        problems += [f"[models.{name}] {key}: only [models.{owner}] has it"
                     for key, owner in BACKEND_KEYS.items()
                     if key in source.model_fields_set and name != owner]
    if problems:
        message = "; ".join(problems)
        listed = ", ".join(with_models) or "(none)"
        raise StartupError(f"{message}{' ' if message.endswith('?') else '; '}backends with models: {listed}")


def check_swap_models(settings: Settings, known_backends: Iterable[str],
                      diffusion_backends: Iterable[str]) -> None:
    """Every name in swap_backends is a backend that loads a model (after discovery, as the tables):
    swapping is for models, which a worker's GPU cannot all hold at once."""
    known, with_models = set(known_backends), sorted(set(diffusion_backends))
    problems = [f"swap_backends: there is no backend {name!r}{did_you_mean(name, sorted(known))}"
                if name not in known else f"swap_backends: backend {name} loads no model, so there is "
                "nothing to swap" for name in settings.swap_backends if name not in with_models]
    if problems:
        listed = ", ".join(with_models) or "(none)"
        raise StartupError(f"{'; '.join(problems)}; backends with models: {listed}")


def _unknown_model_table(name: str, with_models: list[str]) -> str:
    return f"[models.{name}] names no backend" + did_you_mean(name, with_models, lead="; ",
                                                              shown=lambda found: f"[models.{found}]")
