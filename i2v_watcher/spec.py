"""The job sidecar: a strict schema, a safe YAML loader, and the merge with the configured defaults."""

from __future__ import annotations

import re
from typing import Annotated, Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from i2v_watcher.errors import JobError

# Constrained types shared by the sidecar and the config's [defaults] table, so both check alike.
Prompt = Annotated[str, Field(max_length=4000)]
NumFrames = Annotated[int, Field(ge=1, le=512)]
Fps = Annotated[float, Field(gt=0, le=120)]
Steps = Annotated[int, Field(ge=1, le=1000)]
Guidance = Annotated[float, Field(ge=0, le=100)]
Seed = Annotated[int, Field(ge=0, le=2**63 - 1)]
DecodeChunk = Annotated[int, Field(ge=1, le=256)]
RegistryName = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_.-]{0,63}$")]
Presets = Annotated[list[RegistryName], Field(min_length=1, max_length=8)]


def presets_of(value: str | list[str]) -> list[str]:
    return list(dict.fromkeys([value] if isinstance(value, str) else value))

_RESOLUTION = re.compile(r"^(\d{2,4})p?$")
MIN_SHORT_SIDE, MAX_SHORT_SIDE = 32, 2048


def normalise_resolution(value: object) -> str:
    """`512p`, `512`, `"512"` → `"512p"`; `auto` stays; anything else is an error."""
    if isinstance(value, bool):
        raise ValueError("must be a resolution like 512p, 768p, 1024p, a short side in pixels, or auto")
    text = str(value).strip().lower()
    if text == "auto":
        return text
    match = _RESOLUTION.match(text)
    if not match or not MIN_SHORT_SIDE <= int(match.group(1)) <= MAX_SHORT_SIDE:
        raise ValueError(
            f"must be 512p, 768p, 1024p, auto, or a short side of {MIN_SHORT_SIDE}-{MAX_SHORT_SIDE} pixels"
        )
    return f"{int(match.group(1))}p"


def check_output_name(name: str) -> str:
    """An output name is one plain file name: it can never point outside the outbox."""
    if not name or name != name.strip():
        raise ValueError("must be a non-empty name without leading or trailing spaces")
    if len(name) > 200:
        raise ValueError("must be at most 200 characters")
    if "/" in name or "\\" in name or "\x00" in name or name in {".", ".."} or ".." in name:
        raise ValueError("must be a plain file name: no '/', '\\', '..' or NUL")
    if name.startswith("."):
        raise ValueError("must not start with '.' (hidden names are reserved for files being written)")
    if any(ord(c) < 32 for c in name):
        raise ValueError("must not contain control characters")
    return name


class JobDefaults(BaseModel):
    """What a job gets for each field its sidecar leaves out (the config's [defaults] table).
    Not strict, unlike a sidecar: I2V_DEFAULTS__* environment overrides arrive as strings."""

    model_config = ConfigDict(extra="forbid")

    prompt: Prompt = ""
    negative_prompt: Prompt = ""
    num_frames: NumFrames = 16
    fps: Fps = 8.0
    steps: Steps = 50
    guidance_scale: Guidance = 9.0
    resolution: str = "512p"
    decode_chunk_size: DecodeChunk | None = None  # None: the backend's own default
    postprocess: RegistryName | list[RegistryName] = "archive"

    _resolution = field_validator("resolution", mode="before")(normalise_resolution)

    @property
    def presets(self) -> list[str]:
        return presets_of(self.postprocess)


class JobSpec(BaseModel):
    """A sidecar as the user wrote it: every field optional, unknown keys and bad values are errors."""

    model_config = ConfigDict(extra="forbid", strict=True)

    prompt: Prompt | None = None
    negative_prompt: Prompt | None = None
    num_frames: NumFrames | None = None
    fps: Fps | None = None
    steps: Steps | None = None
    guidance_scale: Guidance | None = None
    resolution: str | None = None
    decode_chunk_size: DecodeChunk | None = None
    seed: Seed | None = None
    backend: RegistryName | None = None
    postprocess: RegistryName | Presets | None = None
    output_name: str | None = None
    # Reserved for later stages: options a backend validates itself, post-processing overrides.
    backend_options: dict[str, Any] = Field(default_factory=dict)
    postprocess_overrides: dict[str, Any] = Field(default_factory=dict)

    @field_validator("resolution", mode="before")
    @classmethod
    def _resolution(cls, value: object) -> object:
        return None if value is None else normalise_resolution(value)

    @field_validator("output_name")
    @classmethod
    def _output_name(cls, value: str | None) -> str | None:
        return None if value is None else check_output_name(value)


class JobParams(BaseModel):
    """The effective parameters of one job: the sidecar over the defaults, with the seed fixed."""

    model_config = ConfigDict(frozen=True)

    prompt: str
    negative_prompt: str
    num_frames: int
    fps: float
    steps: int
    guidance_scale: float
    resolution: str
    decode_chunk_size: int | None
    seed: int
    backend: str
    postprocess: list[str]  # preset names: one output each, from one generation
    output_name: str | None
    backend_options: dict[str, Any]
    postprocess_overrides: dict[str, Any]
    explicit: frozenset[str]  # the fields the sidecar set, which a backend must honour or refuse


def resolve(spec: JobSpec, defaults: JobDefaults, *, backend: str, seed: int) -> JobParams:
    values: dict[str, Any] = defaults.model_dump()
    values.update(backend=backend, seed=seed, output_name=None)
    values.update(spec.model_dump(exclude_none=True))
    values["postprocess"] = presets_of(values["postprocess"])
    # An empty table (backend_options: {}) asks for nothing, so no backend must refuse it.
    explicit = frozenset(f for f in spec.model_fields_set if getattr(spec, f) not in (None, {}))
    return JobParams(**values, explicit=explicit)


class _NoAliasLoader(yaml.SafeLoader):
    """SafeLoader without anchors/aliases (alias bombs) and with duplicate keys as errors."""

    def compose_node(self, parent: yaml.Node | None, index: int) -> yaml.Node | None:
        event = self.peek_event()  # type: ignore[no-untyped-call]
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None):
            raise yaml.YAMLError("anchors and aliases (&, *) are not allowed in a sidecar")
        return super().compose_node(parent, index)

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[object] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.YAMLError(f"duplicate key {key!r}")
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def parse_sidecar(data: bytes, *, max_bytes: int) -> JobSpec:
    """Parse and validate untrusted sidecar bytes; every problem is a JobError a person can read."""
    if len(data) > max_bytes:
        raise JobError(f"the sidecar is larger than {max_bytes} bytes", stage="sidecar")
    try:
        text = data.decode("utf-8-sig")
        raw = yaml.load(text, Loader=_NoAliasLoader)
    except UnicodeDecodeError as exc:
        raise JobError(f"the sidecar is not UTF-8 text: {exc}", stage="sidecar") from exc
    except yaml.YAMLError as exc:
        raise JobError(f"the sidecar is not valid YAML: {exc}", stage="sidecar") from exc
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise JobError(
            f"the sidecar must be a mapping of settings (key: value), not a {type(raw).__name__}",
            stage="sidecar",
        )
    try:
        return JobSpec.model_validate(raw)
    except ValidationError as exc:
        raise JobError(describe_validation_error(exc), stage="sidecar",
                       hint=f"allowed keys: {', '.join(JobSpec.model_fields)}") from exc


def describe_validation_error(exc: ValidationError, what: str = "sidecar") -> str:
    lines = []
    for err in exc.errors():
        where = ".".join(str(part) for part in err["loc"]) or f"({what})"
        if err["type"] == "extra_forbidden":
            lines.append(f"{where}: unknown key")
        else:
            lines.append(f"{where}: {err['msg']} (got {err.get('input')!r})")
    return f"invalid {what}: " + "; ".join(lines)
