"""The quality gate's per-job values: the sidecar's `quality_gate:` (`GateOverride`, strict like every
sidecar field) and the per-backend tables' fields it shares with [quality_gate.<backend>]
(`ThresholdOverrides`). Here, below `config`, so that the sidecar schema (job/spec.py) can hold it;
config/gate.py has the settings and what each key means."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

Action = Literal["record", "reroll", "fail"]
Exhausted = Literal["warn", "fail"]


class ThresholdOverrides(BaseModel):
    """Thresholds and re-roll guidance for one backend: each one unset keeps the general value."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    min_motion: float | None = Field(default=None, ge=0, le=1)
    motion_flow_px: float | None = Field(default=None, gt=0, le=256)
    max_frozen: float | None = Field(default=None, ge=0, le=1)
    max_flicker: float | None = Field(default=None, ge=0, le=255)
    max_black: float | None = Field(default=None, ge=0, le=1)
    max_drift: float | None = Field(default=None, ge=0, le=1)
    min_sharpness: float | None = Field(default=None, ge=0, le=10)
    guidance_step: float | None = Field(default=None, ge=0, le=10)
    guidance_ceiling: float | None = Field(default=None, ge=0, le=100)

    def values(self) -> dict[str, Any]:
        return self.model_dump(include=set(ThresholdOverrides.model_fields), exclude_none=True)


class GateOverride(ThresholdOverrides):
    """A sidecar's `quality_gate:`: the same keys as [quality_gate], every one optional, strict."""

    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)

    action: Action | None = None
    max_rerolls: int | None = Field(default=None, ge=0, le=8)
    on_exhausted: Exhausted | None = None
