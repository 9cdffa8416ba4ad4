"""The typed records that cross stages and processes, each written and read by one owner: what a job
publishes (its metadata), why it failed (the failure report), where it stands (its state); what a
worker says of itself (the heartbeat) and `status` says of the share are in worker_records.py.

Every record reads every file the current version writes: unknown keys from a newer writer are kept
(extra="allow") so that a rolling upgrade never makes a file unreadable."""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, Self

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    ValidationError,
    field_serializer,
    field_validator,
    model_serializer,
)
from typing_extensions import TypedDict  # pydantic reads TypedDicts from it before Python 3.12

from i2v_watcher.explain.job import describe_validation_error
from i2v_watcher.fs.atomic import read_json
from i2v_watcher.job.caption import CaptionRecord
from i2v_watcher.job.spec import WORKER_ID_PATTERN

# --- The job's records: published metadata, failure report, job state -------------------------------

MAX_RECORD_BYTES = 1024 * 1024  # a record is a few kB, a traceback or an ffmpeg command included
MAX_STATE_BYTES = 16 * 1024 * 1024  # job.json holds the metadata, a backend's own record included
REPORT_SUFFIX = ".error.json"  # failed/<name>.error.json, beside the failed job's inputs
Stage = Literal["claiming", "claimed", "generated", "encoded", "publishing", "published", "failing"]
JOB_ID_PATTERN = r"^\d{8}T\d{6}Z-[0-9a-f]{8}$"


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def plain_name(value: str) -> str:
    """One file name: never a path, never hidden-relative (`..`), never empty."""
    if not value or "/" in value or "\x00" in value or value in (".", ".."):
        raise ValueError(f"{value!r} is not a plain file name")
    return value


def relative_path(value: str) -> str:
    """A path below a folder: no absolute path, no `..`, no empty or hidden-relative component."""
    parts = value.split("/")
    if not value or value.startswith("/") or "\x00" in value or any(p in ("", ".", "..") for p in parts):
        raise ValueError(f"{value!r} is not a relative path inside the folder")
    return value


PlainName = Annotated[str, AfterValidator(plain_name)]
RelativePath = Annotated[str, AfterValidator(relative_path)]


class Record(BaseModel):
    """A JSON file's content. Keys of a newer writer are kept and written back (extra="allow"); the
    keys named in OPTIONAL are left out while unset, as every version has written them."""

    model_config = ConfigDict(extra="allow")
    OPTIONAL: ClassVar[frozenset[str]] = frozenset()
    WHAT: ClassVar[str] = "record"  # in the words of an unreadable file's reason

    @model_serializer(mode="wrap")
    def _leave_out_unset(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        data: dict[str, Any] = handler(self)
        return {k: v for k, v in data.items() if not (v is None and k in self.OPTIONAL)}

    @classmethod
    def read(cls, path: Path, max_bytes: int, *, lenient: bool = False) -> Self:
        """The record in a file of the shared folders (untrusted: never through a link, size-capped).
        OSError, or ValueError with the reason in words, when it cannot be used. `lenient`: a key
        the record can do without that holds something else reads as missing (a hand-edited file
        shown as well as it can be)."""
        return cls.from_data(read_json(path, max_bytes), lenient=lenient)

    @classmethod
    def from_data(cls, data: dict[str, Any], *, lenient: bool = False) -> Self:
        """The record in data already read (see read)."""
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            bad = {error["loc"][0] for error in exc.errors() if error["loc"]}
            if lenient and all(cls._optional(key) for key in bad):
                with contextlib.suppress(ValidationError):
                    return cls.model_validate({k: v for k, v in data.items() if k not in bad})
            raise ValueError(describe_validation_error(exc, cls.WHAT, model=cls)) from None

    @classmethod
    def _optional(cls, key: object) -> bool:
        field = cls.model_fields.get(key) if isinstance(key, str) else None
        return field is not None and not field.is_required()

    def to_json(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    def as_file(self) -> dict[str, Any]:
        """What the record says, as the file said it: the keys it was read with, unknown ones included
        (a record read and written back is the file it was read from)."""
        return self.model_dump(mode="json", exclude_unset=True)


class InputFile(Record):
    """The job's image as it was generated from; a partial file of an older writer has the path only."""

    path: str  # in the inbox, e.g. "sub/IMG_1.png"
    image: str | None = None
    sidecar: str | None = None
    sha256: str = ""
    bytes: int = 0
    width: int = 0
    height: int = 0


class PostprocessInfo(Record):
    """What the encode made (media.graph): the presets in order, each one's steps and clip."""

    presets: list[str]
    outputs: list[dict[str, Any]] = Field(default_factory=list)
    ffmpeg_command: list[str] = Field(default_factory=list)
    ffmpeg_version: str = ""
    poster: dict[str, Any] = Field(default_factory=dict)


class StagedOutput(Record):
    """An encoded file in the job's out-<token>/ folder and the suffix it is published under."""

    file: PlainName
    suffix: str


# A takeover of the job from a stale worker: who had it, when, at which stage, why.
Takeover = TypedDict("Takeover", {"from": str, "at": str, "stage": str, "reason": str})
Takeover.__pydantic_config__ = ConfigDict(extra="allow")  # type: ignore[attr-defined]


class JobMetadata(Record):
    """What a job's generation and encode recorded, published as `<name>.json`. Only job_id is always
    there: the gallery and the metrics read older and partial files too."""

    WHAT = "metadata"
    OPTIONAL = frozenset({"postprocess", "audio", "quality_level", "quality_set", "draft", "prompt_source",
                          "caption", "quality", "variant"})
    job_id: str
    input: InputFile | None = None
    prompt: str = ""
    negative_prompt: str = ""
    prompt_source: str | None = None  # caption, sidecar or defaults (run.prompting)
    caption: str | None = None  # what the captioner wrote, where the prompt was made of it
    seed: int | None = None
    backend: str | None = None
    model: str | None = None
    parameters: dict[str, Any] = Field(default_factory=dict)  # the effective JobParams
    requested: dict[str, Any] = Field(default_factory=dict)  # what the sidecar set
    notes: list[str] = Field(default_factory=list)
    generation: dict[str, Any] = Field(default_factory=dict)  # the backend's own (Frames.details)
    timings_s: dict[str, float] = Field(default_factory=dict)  # load, generate, postprocess, publish
    versions: dict[str, Any] = Field(default_factory=dict)  # text; a backend plugin's as it gives them
    worker_id: str | None = None
    claimed_at: str | None = None
    postprocess: PostprocessInfo | None = None  # once encoded
    audio: dict[str, Any] | None = None  # the sound made with the clip (rate, channels, duration_s)
    quality_level: str | None = None  # draft, standard or final
    quality_set: dict[str, Any] | None = None  # the fields the level gave the job (not its sidecar)
    draft: dict[str, Any] | None = None  # a final's draft: {job_id, name} (run.drafts)
    # The quality gate's judgement (run.gate): scores, symptoms, verdict, details, attempts.
    quality: dict[str, Any] | None = None
    variant: dict[str, Any] | None = None  # one of a job's variants: {of, name, index, count} (run.variants)

    @property
    def presets(self) -> list[str]:
        return self.postprocess.presets if self.postprocess is not None else []


class StagedMetadata(JobMetadata):
    """The job state's copy of its metadata, with what only the next stage needs (never published)."""

    OPTIONAL = JobMetadata.OPTIONAL | {"frames_fps", "outputs"}
    frames_fps: float | None = None  # the generated frames' rate, until they are encoded
    outputs: list[StagedOutput] | None = None  # the encoded files, in publishing order

    def published(self, *, name: str, files: list[str], attempts: int, worker_id: str,
                  takeovers: list[Takeover]) -> PublishedMetadata:
        """The metadata as the outbox gets it, its publish time still to come (timings_s)."""
        return PublishedMetadata(
            **self.model_dump(exclude={"frames_fps", "outputs", "worker_id"}), worker_id=worker_id,
            name=name, files=files, published_at=utc_now(), attempts=attempts, takeovers=takeovers)


class PublishedMetadata(JobMetadata):
    """`<name>.json` in the outbox, written last as the marker that the job is complete."""

    name: str
    files: list[str]  # every file published, relative to the outbox, this one last
    published_at: str = ""
    attempts: int = 0
    takeovers: list[Takeover] = Field(default_factory=list)

    @field_validator("files", mode="before")
    @classmethod
    def _names_only(cls, value: object) -> object:
        """A hand-edited list keeps its file names: what is not a name is no file (never a reason to
        hide the clip)."""
        return [item for item in value if isinstance(item, str)] if isinstance(value, list) else value


class JobFailure(Record):
    """Why a job failed, kept in its state until the report is written."""

    OPTIONAL = frozenset({"problems"})
    stage: str
    error_class: str
    message: str
    hint: str = ""
    traceback: str = ""
    problems: list[str] | None = None  # a sidecar's mistakes, one by one, when there are several


class FailureReport(Record):
    """`<name>.error.json` in failed/, beside the job's inputs. Untrusted when read (it may be edited
    or planted), and any key may be missing: readers decide what they need."""

    WHAT = "failure report"
    OPTIONAL = frozenset({"problems", "left_in_inbox"})
    job_id: str | None = None
    input: str | None = None  # the job's path in the inbox without suffix
    files: list[str] | None = None  # the inputs' names beside the report
    stage: str | None = None
    error_class: str | None = None
    message: str | None = None
    hint: str | None = None
    traceback: str | None = None
    problems: list[str] | None = None
    attempts: int | None = None
    worker_id: str | None = None
    claimed_at: str | None = None
    failed_at: str | None = None
    left_in_inbox: dict[str, str] | None = None  # input name → what it is (link, fifo, …, gone)


class JobState(Record):
    """work/<worker_id>/<job_id>/job.json: where a claimed job stands, rewritten at every stage."""

    WHAT = "job state"
    OPTIONAL = frozenset({"moved_dir", "caption", "changes", "gate_attempts", "best_attempt",
                          "variants_written"})

    job_id: str = Field(pattern=JOB_ID_PATTERN)
    worker_id: str = Field(pattern=WORKER_ID_PATTERN)
    stage: Stage
    key: RelativePath  # the job's path in the inbox without its suffix, e.g. "sub/IMG_0001"
    inputs: list[PlainName]  # file names, all from the folder `rel_dir` of the inbox
    image: PlainName | None = None
    sidecar: PlainName | None = None
    problem: str | None = None  # set when the job was claimed only to be reported
    mtime: float = 0.0  # of the input, so that a re-queued job keeps its place
    claimed_at: str = Field(default_factory=utc_now)
    seed: int | None = None
    attempts: int = 0  # storage retries over the job's whole life, across restarts
    running: bool = False  # set while a process works on it: still set at start-up means it died
    deaths: int = 0  # processes that died while generating or encoding it, in a row
    wanted_name: PlainName | None = None  # the output name asked for, checked before generation
    encode_dir: PlainName | None = None  # this attempt's out-<token>/ folder: an orphan can't write it
    outputs: list[PlainName] = Field(default_factory=list)  # unused; kept as every version writes it
    output_name: PlainName | None = None  # chosen (reserved) once, before the first file is published
    published: list[RelativePath] = Field(default_factory=list)  # paths relative to the outbox
    moved_stem: PlainName | None = None  # the clash-free name the inputs get in done/ or failed/
    # Their folder there, only where a file of the job's folder's name was in the way (fs.detours).
    moved_dir: RelativePath | None = None
    left_in_place: list[PlainName] = Field(default_factory=list)  # special files that could not move
    takeovers: list[Takeover] = Field(default_factory=list)
    caption: CaptionRecord | None = None  # made once, where the job's prompt was written from its image
    metadata: StagedMetadata | None = None  # from generation on; `{}` in the file before
    error: JobFailure | None = None
    # The quality gate's re-rolls (run.gate): the sidecar fields the next attempt changes, every
    # attempt judged so far, and the best failing one's metadata (its frames wait in the job's folder).
    changes: dict[str, Any] | None = None
    gate_attempts: list[dict[str, Any]] | None = None
    best_attempt: StagedMetadata | None = None
    variants_written: int | None = None  # variants 2.. of a `keep: all` job written into the inbox

    @field_validator("metadata", mode="before")
    @classmethod
    def _none_when_empty(cls, value: object) -> object:
        return None if value == {} else value

    @field_serializer("metadata", mode="wrap")
    def _empty_when_none(self, value: StagedMetadata | None, handler: SerializerFunctionWrapHandler) -> Any:
        return {} if value is None else handler(value)
