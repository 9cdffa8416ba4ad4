"""Quality levels: what `quality: draft | standard | final` sets for each backend ([quality.<level>] and
[quality.<level>.<backend>] in the config), the levels shipped in code, and the start-up check that every
per-backend table names a backend.

A level holds job fields by their sidecar names. Its generic table applies to every backend; a backend's
own table overrides it for that backend. A level the config defines replaces the shipped one whole (for
every backend). A job's own sidecar fields win over its level; the level wins over [defaults] and the
model card (job/spec.py: resolve).

The shipped `standard` sets nothing: the model card and [defaults] decide, as before levels existed. The
shipped `draft` is fewer steps of the base model at a smaller size with fewer frames, chosen so that it
costs at most 1/5 of `final` in denoiser work (passes x frames x pixels); `final` is the model card's
values at its native size. I2VGen-XL's are the original WebUI's levels (quick preview 512p/8 frames/30
steps; standard 512p/16/50; high 768p/24/80, guidance 9-11)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from i2v_watcher.errors import StartupError
from i2v_watcher.explain.core import did_you_mean
from i2v_watcher.explain.job import describe_validation_error
from i2v_watcher.job.spec import (
    QUALITY_LEVELS,
    DecodeChunk,
    Fps,
    Guidance,
    NumFrames,
    Steps,
    normalise_resolution,
)

if TYPE_CHECKING:
    from i2v_watcher.config.settings import Settings


class LevelFields(BaseModel):
    """The job fields a level may set, with the sidecar's limits (not strict: I2V_QUALITY__* environment
    overrides arrive as text)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    num_frames: NumFrames | None = None
    fps: Fps | None = None
    steps: Steps | None = None
    guidance_scale: Guidance | None = None
    resolution: str | None = None
    decode_chunk_size: DecodeChunk | None = None
    backend_options: dict[str, Any] | None = None

    @field_validator("resolution", mode="before")
    @classmethod
    def _resolution(cls, value: object) -> object:
        return None if value is None else normalise_resolution(value)

    def values(self) -> dict[str, Any]:
        return self.model_dump(include=set(LevelFields.model_fields), exclude_none=True)


class QualityLevel(LevelFields):
    """[quality.<level>]: its job fields for every backend, and [quality.<level>.<backend>] tables."""

    model_config = ConfigDict(extra="allow", allow_inf_nan=False)
    __pydantic_extra__: dict[str, LevelFields] = Field(init=False)

    @model_validator(mode="before")
    @classmethod
    def _tables_or_fields(cls, data: Any) -> Any:
        # A key that is no field and holds no table is a misspelt field, not a backend's table.
        if isinstance(data, dict):
            fields = list(LevelFields.model_fields)
            for key, value in data.items():
                if key not in fields and not isinstance(value, dict):
                    raise ValueError(f"unknown key {key!r} (a level sets {', '.join(fields)}, or holds "
                                     "[quality.<level>.<backend>] tables)"
                                     + did_you_mean(key, fields, lead="; "))
        return data

    @property
    def backends(self) -> dict[str, LevelFields]:
        return dict(self.__pydantic_extra__ or {})

    def for_backend(self, backend: str) -> dict[str, Any]:
        """What this level sets for one backend: its generic fields, the backend's own over them."""
        own = self.backends.get(backend)
        return {**self.values(), **(own.values() if own is not None else {})}


def with_shipped_levels(value: Any) -> Any:
    """The config's levels over the shipped ones: a level named there replaces the shipped one whole.
    A level name that is not draft, standard or final is an error."""
    if not isinstance(value, dict):
        return value
    for name in value:
        if name not in QUALITY_LEVELS:
            raise ValueError(f"unknown quality level {name!r} (the levels are {', '.join(QUALITY_LEVELS)})"
                             + did_you_mean(name, QUALITY_LEVELS, lead="; "))
    return {**SHIPPED_LEVELS, **value}


def shipped_levels() -> dict[str, QualityLevel]:
    return {name: QualityLevel.model_validate(level) for name, level in SHIPPED_LEVELS.items()}


def levels_for(quality: Mapping[str, QualityLevel], backend: str | None) -> dict[str, dict[str, Any]]:
    """Every level's fields for one backend (resolve's `levels`)."""
    return {name: level.for_backend(backend or "") for name, level in quality.items()}


def check_quality_tables(settings: Settings, options: Mapping[str, type[BaseModel] | None]) -> None:
    """Every [quality.<level>.<backend>] table the config wrote names a registered backend (`options`:
    each one's backend_options model), and its backend_options are that backend's. After discovery,
    since plugins register backends only at start-up; a typo would otherwise be ignored, and bad
    options would fail every job of the level."""
    known = sorted(options)
    problems = []
    for name, level in settings.quality.items():
        if SHIPPED_LEVELS.get(name) == level.model_dump(exclude_none=True):
            continue  # the shipped levels are never the user's mistake
        for backend, fields in level.backends.items():
            if backend not in options:
                problems.append(_unknown_backend(name, backend, known))
            elif fields.backend_options:
                problems += _options_problems(f"quality.{name}.{backend}", backend, fields.backend_options,
                                              options[backend])
    if problems:
        raise StartupError(f"{'; '.join(problems)}; backends: {', '.join(known) or '(none)'}")


def _options_problems(table: str, backend: str, values: dict[str, Any],
                      model: type[BaseModel] | None) -> list[str]:
    if model is None:
        return [f"[{table}] backend_options: the {backend} backend takes none"]
    try:
        model.model_validate(values)
    except ValidationError as exc:
        return [f"[{table}] " + describe_validation_error(exc, "backend_options", model=model)]
    return []


def _unknown_backend(level: str, backend: str, known: list[str]) -> str:
    return f"[quality.{level}.{backend}] names no backend" + did_you_mean(
        backend, known, lead="; ", shown=lambda found: f"[quality.{level}.{found}]")


# The shipped levels. Each backend's draft costs at most 1/5 of its final in denoiser work (tests/
# test_quality_levels.py checks it from these values): for its default model, final is the model card's
# steps, guidance and frames at the native short side; draft 10 steps at the smallest published size
# with fewer frames. A distilled LoRA or checkpoint would make faster drafts: later work.
SHIPPED_LEVELS: dict[str, dict[str, Any]] = {
    "draft": {
        "i2vgen-xl": {"resolution": "512p", "num_frames": 8, "steps": 30},
        "svd": {"resolution": "480p", "num_frames": 14, "steps": 10},
        "wan-i2v": {"resolution": "480p", "num_frames": 49, "steps": 10},
        "ltx-video": {"resolution": "384p", "num_frames": 65, "steps": 10},
        "ltx2": {"resolution": "384p", "num_frames": 65, "steps": 10},
        "cogvideox-i2v": {"resolution": "768p", "num_frames": 49, "steps": 10},
        "hunyuan-i2v": {"resolution": "544p", "num_frames": 65, "steps": 10},
    },
    "standard": {},
    "final": {
        "i2vgen-xl": {"resolution": "768p", "num_frames": 24, "steps": 80, "guidance_scale": 10.0},
        "svd": {"resolution": "576p", "num_frames": 25, "steps": 25, "guidance_scale": 3.0},
        "wan-i2v": {"resolution": "480p", "num_frames": 81, "steps": 40, "guidance_scale": 5.0},
        "ltx-video": {"resolution": "512p", "num_frames": 121, "steps": 50, "guidance_scale": 5.0},
        "ltx2": {"resolution": "512p", "num_frames": 121, "steps": 40, "guidance_scale": 4.0},
        "cogvideox-i2v": {"resolution": "768p", "num_frames": 81, "steps": 50, "guidance_scale": 6.0},
        "hunyuan-i2v": {"resolution": "720p", "num_frames": 129, "steps": 50, "guidance_scale": 6.0},
    },
}


def is_shipped(name: str, level: QualityLevel) -> bool:
    """The level is the shipped one (the config did not define its own)."""
    return SHIPPED_LEVELS.get(name) == level.model_dump(exclude_none=True)
