"""The `[diffusion] cache` table: which of diffusers' caching hooks skips denoiser work, and its knobs.

One model per kind, told apart by `kind` and each strict (`extra="forbid"`): a knob of another kind, or
a misspelt one, is a configuration error at start-up. Only the knobs a user tunes are settings; the
rest keep diffusers' defaults. The threshold-driven kinds (first-block, mag) take a threshold per
quality level (`levels`), set on the resident hooks before each job: a draft may skip more than a final
on the same loaded model. None is set by default: every level uses `threshold`, as before levels
existed (a level's threshold trades quality the user has to judge on their own model, so the table
names it rather than the code guessing)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from i2v_watcher.job.spec import Quality

CACHE_KINDS = ("first-block", "mag", "taylorseer", "faster", "pab")


class _Cache(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, frozen=True)


Threshold = Annotated[float, Field(gt=0, le=1)]


class _Thresholded(_Cache):
    """A kind driven by one threshold (higher: more skipped), which a quality level may set for its jobs."""

    threshold: Threshold
    levels: dict[Quality, Threshold] = Field(default_factory=dict)

    def threshold_for(self, level: str | None) -> float:
        """The threshold for a job of this level: its own where `levels` sets one, else `threshold`."""
        return self.levels.get(level or "", self.threshold)


class FirstBlockCache(_Thresholded):
    """First Block Cache: when the first block's residual changed less than `threshold` (relative) since
    the last full pass, the other blocks are skipped and their cached residual reused."""

    kind: Literal["first-block"]
    threshold: Threshold = 0.05


class MagCache(_Thresholded):
    """MagCache: skips blocks while the accumulated error predicted by the model's magnitude ratios stays
    under `threshold`. The ratios are checkpoint-dependent: diffusers ships none for video models."""

    kind: Literal["mag"]
    threshold: Threshold = 0.06
    mag_ratios: list[Annotated[float, Field(gt=0, lt=10)]] = Field(min_length=2)
    max_skip_steps: int = Field(default=3, ge=1, le=100)
    retention_ratio: float = Field(default=0.2, ge=0, le=1)


class TaylorSeerCache(_Cache):
    """TaylorSeer: full passes every `cache_interval` steps; attention outputs in between are predicted
    by a Taylor series of order `max_order`."""

    kind: Literal["taylorseer"]
    cache_interval: int = Field(default=5, ge=1, le=100)
    disable_cache_before_step: int = Field(default=3, ge=0, le=1000)
    max_order: int = Field(default=1, ge=0, le=4)


class FasterCache(_Cache):
    """FasterCache: spatial attention recomputed every `block_skip_range` steps inside diffusers' default
    timestep window, reused in between (and the unconditional branch approximated)."""

    kind: Literal["faster"]
    block_skip_range: int = Field(default=2, ge=2, le=100)


class PyramidAttentionBroadcast(_Cache):
    """Pyramid Attention Broadcast: spatial attention recomputed every `block_skip_range` steps between
    timesteps 100 and 800, its output broadcast in between."""

    kind: Literal["pab"]
    block_skip_range: int = Field(default=2, ge=2, le=100)


AnyCache = FirstBlockCache | MagCache | TaylorSeerCache | FasterCache | PyramidAttentionBroadcast
CacheSettings = Annotated[AnyCache, Field(discriminator="kind")]
