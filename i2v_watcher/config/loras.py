"""`[models.<name>] loras`: LoRA weights from local files, loaded with the model and used by the quality
levels that name them (a few-step distilled LoRA for `draft`, say, on the same resident model as a
`final` without it).

A LoRA entry may carry the job fields it needs (`steps`, `guidance_scale`): a 4-step distilled LoRA is
made for 4 steps without classifier-free guidance, and run with the level's 40 it would only be slow.
Those fields join the fields of each level that uses the LoRA, over the level's own (a job's sidecar
still wins over both), so the shipped draft runs the LoRA's steps once it is configured and fewer steps
of the base model until then."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from i2v_watcher.job.spec import QUALITY_LEVELS, Guidance, Quality, Steps

if TYPE_CHECKING:
    from i2v_watcher.config.settings import Settings


class LoraSettings(BaseModel):
    """One LoRA of a model: where its weights are, how strongly and into which denoiser it goes, and
    the quality levels that use it (every level: fused into the weights at load)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    path: str  # a .safetensors file, or a folder holding one (pytorch_lora_weights.safetensors first)
    scale: float = Field(default=1.0, ge=-8, le=8)  # the adapter's weight (0: as if it were not there)
    into: Literal["transformer", "transformer_2"] = "transformer"  # transformer_2: Wan 2.2 A14B's 2nd expert
    levels: list[Quality] = Field(default_factory=lambda: list(QUALITY_LEVELS), min_length=1)
    steps: Steps | None = None  # set on the levels that use it (a distilled LoRA's step count)
    guidance_scale: Guidance | None = None  # likewise (1.0: no classifier-free guidance)

    @field_validator("levels")
    @classmethod
    def _each_once(cls, value: list[str]) -> list[str]:
        return list(dict.fromkeys(value))

    @property
    def every_level(self) -> bool:
        """Used by every level: nothing ever switches it off, so it is fused into the weights."""
        return set(self.levels) == set(QUALITY_LEVELS)

    def job_fields(self) -> dict[str, Any]:
        return self.model_dump(include={"steps", "guidance_scale"}, exclude_none=True)


def with_loras(levels: Mapping[str, Mapping[str, Any]],
               loras: Iterable[LoraSettings]) -> dict[str, dict[str, Any]]:
    """Each level's fields for a backend (config.quality.levels_for) with the job fields of the
    backend's LoRAs that the level uses over them."""
    loras = list(loras)
    return {name: {**fields, **lora_fields(loras, name)} for name, fields in levels.items()}


def lora_fields(loras: Iterable[LoraSettings], level: str) -> dict[str, Any]:
    """The job fields that the LoRAs a level uses set for it (a later entry over an earlier one)."""
    fields: dict[str, Any] = {}
    for lora in loras:
        if level in lora.levels:
            fields.update(lora.job_fields())
    return fields


def model_loras(settings: Settings, backend: str | None) -> list[LoraSettings]:
    """The LoRAs the config gives a backend's model (none without its [models.<name>] table)."""
    source = settings.models.get(backend or "")
    return source.loras if source is not None else []
