"""The quality gate's settings: `[quality_gate]` (what to do with a failing clip, and the thresholds each
score is judged by), `[quality_gate.<backend>]` (one backend's thresholds and re-roll guidance), and how
they combine with a sidecar's `quality_gate:` (one job's own values: job/gate.py, so that the sidecar
schema below `config` can hold it) into the gate of one job (`QualityGate.for_job`).

Thresholds are named for their direction: `min_*` fails a clip whose score is below it, `max_*` one whose
score is above it (i2v_watcher/judge/ has each score's formula). The defaults are meant for real model
output, not for the test clips: see docs/quality-gate.md for the reasoning behind each.

Re-rolls raise `guidance_scale` by `guidance_step` up to `guidance_ceiling` on a `drift` symptom (the
original WebUI's table: "subject deforms → raise guidance to 10-12"), for the backends that honour
guidance. The shipped steps and ceilings follow each model's own range: I2VGen-XL runs at 9 and the
WebUI takes it to 10-12 (step 1, ceiling 12); Wan, LTX-Video, LTX-2, CogVideoX and HunyuanVideo run at
3-6 and burn out (over-saturated, stiff) well below I2VGen-XL's range (step 0.5, ceiling 6-7); SVD's
guidance is the one at the last frame, 3 by default (step 0.5, ceiling 4.5). A backend without a table
(preview, plugins) has no guidance change."""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from i2v_watcher.errors import StartupError
from i2v_watcher.explain.core import did_you_mean
from i2v_watcher.job.gate import Action, Exhausted, ThresholdOverrides
from i2v_watcher.job.gate import GateOverride as GateOverride  # the sidecar's, re-exported


class Thresholds(BaseModel):
    """What each score is judged by (the judge's `score` takes one)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    # motion: the share of frame pairs that move (VBench: 4 of 16) and the flow, in pixels at a 256-pixel
    # short side per 1/8 s, a pair must exceed to move. VBench's 6 asks for a "dynamic" clip: a gentle
    # camera move (the preview backend's pans and zooms: 2-5 px) fails it; 2 asks that the clip moves.
    min_motion: float = Field(default=0.25, ge=0, le=1)
    motion_flow_px: float = Field(default=2.0, gt=0, le=256)
    max_frozen: float = Field(default=0.15, ge=0, le=1)  # longest still run, share of the pairs
    max_flicker: float = Field(default=4.0, ge=0, le=255)  # unexplained brightness jump, 0-255 levels
    max_black: float = Field(default=0.0, ge=0, le=1)  # share of blank frames
    max_drift: float = Field(default=0.5, ge=0, le=1)  # 1 - SSIM (or colour ΔE / 20) against the input
    min_sharpness: float = Field(default=0.3, ge=0, le=10)  # Laplacian variance against the input's


# The shipped [quality_gate.<backend>] tables: re-roll guidance by model (the module's docstring says why).
SHIPPED_BACKENDS: dict[str, dict[str, Any]] = {
    "i2vgen-xl": {"guidance_step": 1.0, "guidance_ceiling": 12.0},
    "svd": {"guidance_step": 0.5, "guidance_ceiling": 4.5},
    "wan-i2v": {"guidance_step": 0.5, "guidance_ceiling": 6.5},
    "ltx-video": {"guidance_step": 0.5, "guidance_ceiling": 6.0},
    "ltx2": {"guidance_step": 0.5, "guidance_ceiling": 6.0},
    "cogvideox-i2v": {"guidance_step": 0.5, "guidance_ceiling": 7.0},
    "hunyuan-i2v": {"guidance_step": 0.5, "guidance_ceiling": 7.0},
}


class BackendGate(BaseModel):
    """The gate as it applies to one job: its backend's table and the job's own values applied."""

    model_config = ConfigDict(frozen=True)

    action: Action
    max_rerolls: int
    on_exhausted: Exhausted
    thresholds: Thresholds
    guidance_step: float | None
    guidance_ceiling: float | None


class QualityGate(Thresholds):
    """[quality_gate]: the action, the re-rolls, the thresholds; [quality_gate.<backend>] tables."""

    model_config = ConfigDict(extra="allow", allow_inf_nan=False)
    __pydantic_extra__: dict[str, ThresholdOverrides] = Field(init=False)

    action: Action = "record"
    max_rerolls: int = Field(default=2, ge=0, le=8)
    on_exhausted: Exhausted = "warn"

    @model_validator(mode="before")
    @classmethod
    def _with_shipped_tables(cls, data: Any) -> Any:
        # A key that is no field and holds no table is a misspelt field, not a backend's table; a
        # backend's table the config writes is laid over the shipped one, key by key.
        if not isinstance(data, dict):
            return data
        fields = list(cls.model_fields)
        for key, value in data.items():
            if key not in fields and not isinstance(value, dict):
                raise ValueError(f"unknown key {key!r} (the gate sets {', '.join(fields)}, or holds "
                                 "[quality_gate.<backend>] tables)" + did_you_mean(key, fields, lead="; "))
        tables = {name: dict(table) for name, table in SHIPPED_BACKENDS.items()}
        for key, value in data.items():
            if isinstance(value, dict):
                tables[key] = {**tables.get(key, {}), **value}
        return {**data, **tables}

    @property
    def backends(self) -> dict[str, ThresholdOverrides]:
        return dict(self.__pydantic_extra__ or {})

    def for_job(self, backend: str, job: GateOverride | None = None) -> BackendGate:
        """The gate for one job on `backend`: the general values, the backend's table over them, the
        job's sidecar `quality_gate:` over both."""
        own = self.backends.get(backend)
        values = {**self.model_dump(include=set(QualityGate.model_fields)),
                  "guidance_step": None, "guidance_ceiling": None,
                  **(own.values() if own is not None else {}),
                  **(job.model_dump(exclude_none=True) if job is not None else {})}
        limits = {name: values.pop(name) for name in Thresholds.model_fields}
        return BackendGate(thresholds=Thresholds(**limits), **values)


def check_gate_tables(gate: QualityGate, known: Collection[str]) -> None:
    """Every [quality_gate.<backend>] table the config wrote names a registered backend (after plugin
    discovery, like the [quality.<level>.<backend>] tables): a misspelt one would be ignored."""
    names = sorted(known)
    unknown = [name for name in gate.backends if name not in known and name not in SHIPPED_BACKENDS]
    if unknown:
        raise StartupError("; ".join(
            f"[quality_gate.{name}] names no backend" + did_you_mean(
                name, names, lead="; ", shown=lambda found: f"[quality_gate.{found}]") for name in unknown)
            + f"; backends: {', '.join(names) or '(none)'}")
