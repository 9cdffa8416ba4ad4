"""The job sidecar: a strict schema, read safely (sidecar_yaml) and explained in plain words (explain), and
the merge with the configured defaults."""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, field_validator

from i2v_watcher.errors import JobError
from i2v_watcher.explain.core import Problem, did_you_mean
from i2v_watcher.explain.job import Written, explain_errors, problems_error
from i2v_watcher.explain.job import describe_validation_error as describe_validation_error  # config, steps
from i2v_watcher.fs.atomic import open_nofollow
from i2v_watcher.job.gate import GateOverride
from i2v_watcher.job.sidecar_yaml import MAX_DEPTH as MAX_DEPTH
from i2v_watcher.job.sidecar_yaml import MAX_INT_DIGITS as MAX_INT_DIGITS
from i2v_watcher.job.sidecar_yaml import load_yaml as load_yaml
from i2v_watcher.job.sidecar_yaml import load_yaml_texts

# Constrained types shared by the sidecar and the config's [defaults] table, so both check alike.
Prompt = Annotated[str, Field(max_length=4000)]
NumFrames = Annotated[int, Field(ge=1, le=512)]
Fps = Annotated[float, Field(gt=0, le=120)]
Steps = Annotated[int, Field(ge=1, le=1000)]
Guidance = Annotated[float, Field(ge=0, le=100)]
Seed = Annotated[int, Field(ge=0, le=2**63 - 1)]
DecodeChunk = Annotated[int, Field(ge=1, le=256)]
# A job's place in the queue: higher goes first, 0 is normal; jobs of equal priority go oldest first.
Priority = Annotated[int, Field(ge=-100, le=100)]
RegistryName = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_.-]{0,63}$")]
WORKER_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"  # a folder name under work/, on any filesystem
Presets = Annotated[list[RegistryName], Field(min_length=1, max_length=8)]
# The quality levels a job may ask for ([quality.<level>] in the config says what each one sets).
QUALITY_LEVELS = ("draft", "standard", "final")


def check_quality(value: str) -> str:
    if value not in QUALITY_LEVELS:
        raise ValueError(f"must be draft, standard or final{did_you_mean(value, QUALITY_LEVELS, lead='; ')}")
    return value


Quality = Annotated[str, AfterValidator(check_quality)]


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


# The daemon adds suffixes (`-9999.<preset>.webm`) and writes hidden temporaries (`.<name>.<token>.part`),
# and every one of those must stay under the file system's NAME_MAX of 255 bytes: so bytes, not characters.
MAX_NAME_BYTES = 150
FALLBACK_NAME = "clip"  # what safe_stem makes of a stem with nothing usable left

# Controls, invisible formatting (a U+202E turns `gnp.exe` into what reads as `exe.png`), surrogates (from
# undecodable file names), private-use and unassigned code points, line and paragraph separators.
_UNSAFE_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})
_JOINERS = frozenset({"\u200c", "\u200d"})  # ZWNJ, ZWJ: emoji sequences and several scripts need them


def unsafe_char(char: str) -> bool:
    """A character never shown or stored as it is: controls, invisible formatting (bidi overrides),
    surrogates, private-use and unassigned code points, line and paragraph separators."""
    return unicodedata.category(char) in _UNSAFE_CATEGORIES and char not in _JOINERS


def _describe_char(char: str) -> str:
    name = unicodedata.name(char, "")
    return f"U+{ord(char):04X}" + (f" ({name})" if name else "")


def check_output_name(name: str) -> str:
    """An output name is one plain file name: it can never point outside the outbox."""
    if not name or name != name.strip():
        raise ValueError("must be a non-empty name without leading or trailing spaces")
    if "/" in name or "\\" in name or "\x00" in name or ".." in name:
        raise ValueError("must be a plain file name: no '/', '\\', '..' or NUL")
    if name.startswith("."):
        raise ValueError("must not start with '.' (hidden names are reserved for files being written)")
    unsafe = next((char for char in name if unsafe_char(char)), None)
    if unsafe is not None:
        raise ValueError(f"must not contain {_describe_char(unsafe)}: control, invisible formatting, "
                         "private-use and unassigned characters are not allowed")
    size = len(name.encode("utf-8"))
    if size > MAX_NAME_BYTES:
        raise ValueError(f"must be at most {MAX_NAME_BYTES} bytes in UTF-8, not {size} (the outbox adds "
                         "suffixes to it, and file names are limited to 255 bytes)")
    return name


def safe_stem(stem: str) -> str:
    """A usable output name from an untrusted file stem, mended rather than refused: what
    check_output_name refuses becomes '_', '..' becomes '.', leading dots and surrounding spaces go, and a
    name over MAX_NAME_BYTES is cut and tagged with a hash of the whole stem, so long names stay distinct."""
    mended = "".join("_" if char in "/\\" or unsafe_char(char) else char for char in stem)
    mended = _trim(re.sub(r"\.{2,}", ".", mended)) or FALLBACK_NAME
    if len(mended.encode("utf-8")) > MAX_NAME_BYTES:
        mended = _shorten(mended, stem)
    return check_output_name(mended)


def _trim(text: str) -> str:
    # Repeated, because stripping one of them can uncover the other (". .name").
    while (trimmed := text.strip().lstrip(".")) != text:
        text = trimmed
    return text


def _shorten(text: str, original: str) -> str:
    # surrogatepass: an undecodable file name arrives with lone surrogates, which plain UTF-8 refuses.
    tag = "~" + hashlib.sha256(original.encode("utf-8", "surrogatepass")).hexdigest()[:8]
    # "ignore" drops only the character the cut went through: the rest is valid UTF-8.
    head = text.encode("utf-8")[:MAX_NAME_BYTES - len(tag)].decode("utf-8", "ignore")
    return head + tag


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
    quality: Quality = "standard"

    _resolution = field_validator("resolution", mode="before")(normalise_resolution)

    @property
    def presets(self) -> list[str]:
        return presets_of(self.postprocess)


MAX_VARIANTS = 8


class DraftRef(BaseModel):
    """The draft a final was approved from, as `approve` writes it into the final's sidecar."""

    model_config = ConfigDict(extra="forbid", strict=True)

    job_id: str = Field(pattern=r"^\d{8}T\d{6}Z-[0-9a-f]{8}$")  # records.JOB_ID_PATTERN
    name: str = Field(min_length=1, max_length=1024)  # its output name in the outbox


class VariantRef(BaseModel):
    """Which variant of which job this one is, as the daemon writes it into a variant's sidecar."""

    model_config = ConfigDict(extra="forbid", strict=True)

    of: str = Field(pattern=r"^\d{8}T\d{6}Z-[0-9a-f]{8}$")  # the first variant's job id
    name: str = Field(min_length=1, max_length=1024)  # the first variant's name in the inbox
    index: int = Field(ge=2, le=MAX_VARIANTS)
    count: int = Field(ge=2, le=MAX_VARIANTS)


VARIANT_FIELDS = ("variants", "keep", "variant")  # what makes a job a set of clips, not one clip


class JobSpec(BaseModel):
    """A sidecar as the user wrote it: every field optional, unknown keys and bad values are errors."""

    model_config = ConfigDict(extra="forbid", strict=True)

    prompt: Prompt | None = Field(default=None, description=(
        "What should happen in the clip: subject, action, direction or speed, surroundings. Backends "
        "without a text encoder (preview, svd) ignore it and note that in the metadata. Left empty, with "
        "[caption] model set: written from the image by the captioner."))
    negative_prompt: Prompt | None = Field(default=None, description=(
        "What the clip should not show (blur, distortion, text, watermark...)."))
    num_frames: NumFrames | None = Field(default=None, description=(
        "Frames the model generates: with fps, the clip's length. wan-i2v rounds it to the form 4k+1."))
    fps: Fps | None = Field(default=None, description=(
        "Frames per second of the clip. i2vgen-xl and svd also get it, rounded, as conditioning."))
    steps: Steps | None = Field(default=None, description=(
        "Denoising steps: more is slower and usually cleaner."))
    guidance_scale: Guidance | None = Field(default=None, description=(
        "Classifier-free guidance: how strongly the model follows the prompt (svd: its image). svd uses "
        "it as max_guidance_scale, the guidance at the last frame."))
    resolution: str | None = Field(default=None, description=(
        "The clip's short side: 512p, 768p, 1024p, any short side of 32-2048 pixels (256p or 256), or "
        "auto (by GPU memory). The image's aspect ratio is kept."))
    decode_chunk_size: DecodeChunk | None = Field(default=None, description=(
        "Frames the VAE decodes at once: more is faster and needs more memory. Unset: the backend's "
        "choice (4 for i2vgen-xl and svd)."))
    seed: Seed | None = Field(default=None, description=(
        "The random seed: the same seed, image and parameters give the same clip (diffusion backends: on "
        "the same hardware and library versions)."))
    backend: RegistryName | None = Field(default=None, description=(
        "The backend that runs the job: one of the backends this daemon loaded (backend and backends)."))
    postprocess: RegistryName | Presets | None = Field(default=None, description=(
        "A preset name, or a list of up to 8: every preset is made from the same frames, in one ffmpeg "
        "run."))
    output_name: str | None = Field(default=None, description=(
        "The name of the outputs in the outbox: one plain file name of at most 150 bytes (no /, \\, .. "
        "or leading dot). A name already taken gets -1, -2, ..."))
    priority: Priority | None = Field(default=None, description=(  # None: 0, normal
        "The job's place in the queue: higher goes first; equal priorities go oldest first."))
    quality: Quality | None = Field(default=None, description=(
        "draft, standard or final: the config's [quality.<level>] table sets steps, frames, resolution "
        "... for the job's backend; the fields this sidecar sets itself win over the level's."))
    draft: DraftRef | None = Field(default=None, description=(
        "Written by `i2v-watcher approve`: the draft ({job_id, name}) this job is the final of. The "
        "metadata records it, and the draft's kept image and (without keep_drafts) outputs go once the "
        "final is published."))
    variants: int | None = Field(default=None, ge=1, le=MAX_VARIANTS, description=(
        "Clips made from the image, with seeds seed, seed+1, ...: 1-8. See keep."))
    keep: Literal["all", "best"] | None = Field(default=None, description=(
        "With variants: all (default) publishes every clip, the first under the job's name and the others "
        "as NAME.v2, NAME.v3, ... (each its own job, so they run side by side); best publishes the clip "
        "the quality gate scores best under the job's name, the others' scores in its metadata."))
    variant: VariantRef | None = Field(default=None, description=(
        "Written by the daemon into the sidecar of variant 2, 3, ... of a job with variants and keep: "
        "all: which job's variant it is."))
    quality_gate: GateOverride | None = Field(default=None, description=(
        "This job's own quality gate: any key of [quality_gate] (action record, reroll or fail; "
        "max_rerolls; on_exhausted; the thresholds; guidance_step and guidance_ceiling)."))
    # Reserved for later stages: options a backend validates itself, post-processing overrides.
    backend_options: dict[str, Any] = Field(default_factory=dict, description=(
        "A mapping that the chosen backend validates: see each backend's options."))
    postprocess_overrides: dict[str, Any] = Field(default_factory=dict, description=(
        "{step: {field: value}} for the steps and fields that postprocess_overridable allows only, "
        "applied to that step in every chosen preset."))

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
    priority: int
    backend_options: dict[str, Any]
    postprocess_overrides: dict[str, Any]
    explicit: frozenset[str]  # the fields the sidecar set, which a backend must honour or refuse
    from_model: frozenset[str] = frozenset()  # the fields the model's card gave (model_defaults)
    quality: str = "standard"
    from_level: frozenset[str] = frozenset()  # the fields the quality level gave (levels)


def resolve(spec: JobSpec, defaults: JobDefaults, *, backend: str, seed: int,
            model_defaults: Mapping[str, Any] | None = None,
            levels: Mapping[str, Mapping[str, Any]] | None = None) -> JobParams:
    """The job's parameters: each field from its sidecar, else from its quality level (`levels`: what
    each level sets for this backend), else from the config's [defaults] where that table sets it, else
    from the model's card (`model_defaults`), else [defaults]' built-in value. The level's backend_options
    lie under the sidecar's."""
    values: dict[str, Any] = defaults.model_dump()
    values.update(backend=backend, seed=seed, output_name=None, priority=0)
    given = spec.model_dump(exclude_none=True)
    # An empty table (backend_options: {}) asks for nothing, so no backend must refuse it.
    explicit = frozenset(f for f in spec.model_fields_set if getattr(spec, f) not in (None, {}))
    quality = spec.quality or defaults.quality
    level = dict((levels or {}).get(quality, {}))
    if "backend_options" in level:
        given["backend_options"] = {**level["backend_options"], **given.get("backend_options", {})}
    from_level = frozenset(level.keys() - explicit)
    from_model = frozenset((model_defaults or {}).keys() - given.keys() - from_level
                           - defaults.model_fields_set)
    values.update({key: (model_defaults or {})[key] for key in from_model})
    values.update({key: level[key] for key in from_level})
    values.update(given, quality=quality)
    values["postprocess"] = presets_of(values["postprocess"])
    return JobParams(**values, explicit=explicit, from_model=from_model, from_level=from_level)


def read_sidecar(path: Path, *, max_bytes: int, name: str | None = None) -> JobSpec:
    """A sidecar file, read as untrusted input: never through a link, at most max_bytes (+1 to tell),
    then parsed; OSError when it cannot be read, JobError when it is not a valid sidecar. `name` is what
    the messages call it (its path in the inbox)."""
    data = read_capped(path, max_bytes)
    return parse_sidecar(data, max_bytes=max_bytes, **({} if name is None else {"name": name}))


def read_capped(path: Path, max_bytes: int) -> bytes:
    """At most max_bytes + 1 bytes of a file (the one more tells it is too large), never through a link."""
    with open(path, "rb", opener=open_nofollow) as handle:
        return handle.read(max_bytes + 1)


def parse_sidecar(data: bytes, *, max_bytes: int, name: str | None = None) -> JobSpec:
    """Parse and validate untrusted sidecar bytes: every problem at once, in one JobError a person can
    read (the presets, overrides and backend options are checked by run.check.check_sidecar)."""
    raw, written = load_sidecar(data, max_bytes=max_bytes, name=name)
    spec, problems = validate_sidecar(raw, written, name=name)
    if problems:
        raise problems_error(problems, f"sidecar {name}" if name else "sidecar")
    return spec


def load_sidecar(data: bytes, *, max_bytes: int, name: str | None = None) -> tuple[object, Written]:
    """Sidecar bytes as YAML, and the text each value was written as; a JobError that names the file
    (and the line) when they are not a readable sidecar."""
    source = f"the sidecar {name}" if name else "the sidecar"
    if len(data) > max_bytes:
        raise JobError(f"{source} is larger than {max_bytes} bytes", stage="sidecar")
    try:
        return load_yaml_texts(data, source)
    except JobError:
        raise
    except Exception as exc:  # a last resort: whatever the loader raises is still the sidecar's
        raise JobError(f"{source} could not be read: {type(exc).__name__}: {exc}", stage="sidecar") from exc


def validate_sidecar(raw: object, written: Written | None = None, *,
                     name: str | None = None) -> tuple[JobSpec, list[Problem]]:
    """A sidecar's mapping as a JobSpec of its valid fields, and every problem of the others in plain
    words, so that the checks after it (presets, backend options) report theirs at the same time."""
    source = f"the sidecar {name}" if name else "the sidecar"
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        kind = {list: "a list", str: "text", int: "a number", float: "a number", bool: "true/false"}
        raise JobError(f"{source} must be a mapping of settings (key: value), not "
                       f"{kind.get(type(raw), type(raw).__name__)}", stage="sidecar",
                       hint="write one `key: value` a line, such as `num_frames: 24`")
    try:
        return JobSpec.model_validate(raw), []
    except ValidationError as exc:
        problems = explain_errors(exc, model=JobSpec, written=written, keys="sidecar keys")
        bad = {error["loc"][0] for error in exc.errors() if error["loc"]}
        try:
            return JobSpec.model_validate({k: v for k, v in raw.items() if k not in bad}), problems
        except ValidationError:
            return JobSpec(), problems
    except Exception as exc:  # a last resort: whatever pydantic raises is still the sidecar's
        raise JobError(f"{source} could not be read: {type(exc).__name__}: {exc}", stage="sidecar") from exc
