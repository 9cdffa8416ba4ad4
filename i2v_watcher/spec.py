"""The job sidecar: a strict schema, a safe YAML loader, and the merge with the configured defaults."""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections.abc import Hashable
from pathlib import Path
from typing import Annotated, Any, Protocol

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from i2v_watcher.errors import JobError
from i2v_watcher.fsutil import open_nofollow

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


def _unsafe(char: str) -> bool:
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
    unsafe = next((char for char in name if _unsafe(char)), None)
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
    mended = "".join("_" if char in "/\\" or _unsafe(char) else char for char in stem)
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
    priority: Priority | None = None  # None: 0, normal
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
    priority: int
    backend_options: dict[str, Any]
    postprocess_overrides: dict[str, Any]
    explicit: frozenset[str]  # the fields the sidecar set, which a backend must honour or refuse


def resolve(spec: JobSpec, defaults: JobDefaults, *, backend: str, seed: int) -> JobParams:
    values: dict[str, Any] = defaults.model_dump()
    values.update(backend=backend, seed=seed, output_name=None, priority=0)
    values.update(spec.model_dump(exclude_none=True))
    values["postprocess"] = presets_of(values["postprocess"])
    # An empty table (backend_options: {}) asks for nothing, so no backend must refuse it.
    explicit = frozenset(f for f in spec.model_fields_set if getattr(spec, f) not in (None, {}))
    return JobParams(**values, explicit=explicit)


# Limits that keep every sidecar a small, flat document: composing and constructing are recursive (a
# deep nesting would exhaust the stack), and Python refuses to convert integers over 4300 digits.
MAX_DEPTH = 32
MAX_INT_DIGITS = 30
_YAML_TAG = "tag:yaml.org,2002:"
_TIMESTAMP = f"{_YAML_TAG}timestamp"
# Types JSON has no word for, which the metadata could not record: a sidecar holds text, numbers,
# true/false/null, lists and mappings only.
_REFUSED_TAGS = [_TIMESTAMP] + [f"{_YAML_TAG}{kind}" for kind in ("binary", "set", "omap", "pairs")]


class _Position(Protocol):
    """A YAML mark, from the pure-Python or the libyaml parser."""

    line: int
    column: int


class _Refused(Exception):
    """Well-formed YAML that a sidecar may not use, with where it is."""

    def __init__(self, message: str, mark: _Position | None) -> None:
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        super().__init__(message + where)


def _resolvers_without(unwanted: str) -> dict[Any, list[tuple[str, Any]]]:
    return {first: [(tag, regexp) for tag, regexp in resolvers if tag != unwanted]
            for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()}


class _NoAliasLoader(yaml.SafeLoader):
    """SafeLoader without anchors/aliases (alias bombs), with duplicate keys as errors, nesting and integer
    sizes bounded, and only JSON's kinds of values."""

    # A copy without the timestamp resolver, so a date-looking value (`prompt: 2026-02-30`) stays the text
    # it is, and yaml.SafeLoader itself is left as every other user of PyYAML expects it.
    yaml_implicit_resolvers = _resolvers_without(_TIMESTAMP)

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: yaml.Node | None, index: int) -> yaml.Node | None:
        event = self.peek_event()  # type: ignore[no-untyped-call]
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None):
            raise _Refused("anchors and aliases (&, *) are not allowed in a sidecar", event.start_mark)
        if not isinstance(event, yaml.CollectionStartEvent):
            return super().compose_node(parent, index)
        # Counted while composing, before the recursion that a deep nesting would run out of stack in.
        if self._depth >= MAX_DEPTH:
            raise _Refused(f"lists and mappings nested more than {MAX_DEPTH} levels deep are not allowed",
                           event.start_mark)
        self._depth += 1
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        if not isinstance(node, yaml.MappingNode):  # a `!!map` tag on a scalar or a list
            return super().construct_mapping(node, deep=deep)  # raises its own ConstructorError
        seen: set[object] = set()
        for key_node, _ in node.value:
            key = self._key(key_node, deep)
            if key in seen:
                raise _Refused(f"duplicate key {key!r}", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)

    def _key(self, node: yaml.Node, deep: bool) -> Hashable:
        # `? [a, b]`, `{[a]: 1}` and `? !!seq x` make keys Python cannot hash.
        if isinstance(node, yaml.ScalarNode):
            key = self.construct_object(node, deep=deep)
            if isinstance(key, Hashable):
                return key
        raise _Refused("a key must be a single name, not a list or a mapping", node.start_mark)

    def construct_bounded_int(self, node: yaml.ScalarNode) -> int:
        text = self.construct_scalar(node)
        if sum(char not in "+-_:" for char in str(text)) > MAX_INT_DIGITS:
            raise _Refused(f"integers of more than {MAX_INT_DIGITS} digits are not allowed", node.start_mark)
        value: int = self.construct_yaml_int(node)
        return value

    def refuse_tag(self, node: yaml.Node) -> None:
        tag = node.tag.replace(_YAML_TAG, "!!")
        raise _Refused(f"{tag} values are not allowed in a sidecar: use text, numbers, true/false, lists "
                       "and mappings", node.start_mark)


# add_constructor copies the table into the subclass on first use: yaml.SafeLoader is not changed.
_NoAliasLoader.add_constructor(f"{_YAML_TAG}int", _NoAliasLoader.construct_bounded_int)
for _tag in _REFUSED_TAGS:
    _NoAliasLoader.add_constructor(_tag, _NoAliasLoader.refuse_tag)


def read_sidecar(path: Path, *, max_bytes: int) -> JobSpec:
    """A sidecar file, read as untrusted input: never through a link, at most max_bytes (+1 to tell),
    then parsed; OSError when it cannot be read, JobError when it is not a valid sidecar."""
    with open(path, "rb", opener=open_nofollow) as handle:
        data = handle.read(max_bytes + 1)
    return parse_sidecar(data, max_bytes=max_bytes)


def parse_sidecar(data: bytes, *, max_bytes: int) -> JobSpec:
    """Parse and validate untrusted sidecar bytes; every problem is a JobError a person can read."""
    if len(data) > max_bytes:
        raise JobError(f"the sidecar is larger than {max_bytes} bytes", stage="sidecar")
    try:
        return _validate(load_yaml(data))
    except JobError:
        raise
    except Exception as exc:  # a last resort: whatever the loader or pydantic raise is still the sidecar's
        raise JobError(f"the sidecar could not be read: {type(exc).__name__}: {exc}",
                       stage="sidecar") from exc


def load_yaml(data: bytes) -> object:
    """Untrusted YAML, read with the sidecar rules (no aliases, no deep nesting, JSON kinds only)."""
    try:
        return yaml.load(data.decode("utf-8-sig"), Loader=_NoAliasLoader)
    except UnicodeDecodeError as exc:
        raise JobError(f"the sidecar is not UTF-8 text: {exc}", stage="sidecar") from exc
    except _Refused as exc:
        raise JobError(f"the sidecar is refused: {exc}", stage="sidecar") from exc
    except yaml.YAMLError as exc:
        raise JobError(f"the sidecar is not valid YAML: {exc}", stage="sidecar") from exc


def _validate(raw: object) -> JobSpec:
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
