"""A claimed job: its folder under work/<worker_id>/ and the state recorded there.

The state file is rewritten atomically at every stage, so that a restart after a crash at any
instant resumes the job from what is on disk: nothing is lost and nothing is published twice.
"""

from __future__ import annotations

import os
import secrets
import shutil
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any, Literal

from pydantic import BaseModel, Field

from i2v_watcher.fsutil import free_name, move, read_json, write_json_atomic

Stage = Literal["claiming", "claimed", "generated", "encoded", "publishing", "published", "failing"]
STATE_FILE = "job.json"
TRASH_PREFIX = ".trash-"


def new_job_id() -> str:
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ") + "-" + secrets.token_hex(4)


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class JobState(BaseModel):
    job_id: str
    worker_id: str
    stage: Stage
    key: str  # the job's path in the inbox without its suffix, e.g. "sub/IMG_0001"
    inputs: list[str]  # file names, all from the folder `rel_dir` of the inbox
    image: str | None = None
    sidecar: str | None = None
    problem: str | None = None  # set when the job was claimed only to be reported
    mtime: float = 0.0  # of the input, so that a re-queued job keeps its place
    claimed_at: str = Field(default_factory=utc_now)
    seed: int | None = None
    attempts: int = 0
    outputs: list[str] = Field(default_factory=list)  # staged files in out/, in publishing order
    output_name: str | None = None  # chosen once, before the first file is published
    published: list[str] = Field(default_factory=list)  # paths relative to the outbox
    moved_stem: str | None = None  # the clash-free name the inputs get in done/ or failed/
    metadata: dict[str, Any] = Field(default_factory=dict)
    error: dict[str, Any] | None = None


class Job:
    def __init__(self, folder: Path, state: JobState) -> None:
        self.dir = folder
        self.state = state

    @classmethod
    def load(cls, folder: Path) -> Job:
        return cls(folder, JobState.model_validate(read_json(folder / STATE_FILE)))

    def save(self) -> None:
        write_json_atomic(self.dir / STATE_FILE, self.state.model_dump(mode="json"))

    def advance(self, stage: Stage, **changes: Any) -> None:
        for name, value in changes.items():
            setattr(self.state, name, value)
        self.state.stage = stage
        self.save()

    @property
    def id(self) -> str:
        return self.state.job_id

    @property
    def rel_dir(self) -> PurePosixPath:
        """The job's folder relative to the inbox ("." for the top), kept in outbox, done and failed."""
        return PurePosixPath(self.state.key).parent

    @property
    def stem(self) -> str:
        return PurePosixPath(self.state.key).name

    @property
    def input_dir(self) -> Path:
        return self.dir / "input"

    @property
    def out_dir(self) -> Path:
        return self.dir / "out"

    def input(self, name: str) -> Path:
        return self.input_dir / name

    def renamed(self, name: str, stem: str) -> str:
        """An input's name under a new stem: IMG_1.JPG → IMG_1-2.JPG (all inputs share the job's stem)."""
        return stem + name[len(self.stem):] if name.startswith(self.stem) else f"{stem}.{name}"

    def move_inputs(self, folder: Path, also: tuple[str, ...] = ()) -> list[str]:
        """Move the inputs that are still here into folder under one clash-free stem (chosen once, so
        a restart half-way keeps image and sidecar paired); the names they got there."""
        if self.state.moved_stem is None:
            suffixes = [self.renamed(n, "") for n in self.state.inputs] + list(also)
            self.advance(self.state.stage, moved_stem=free_name(folder, self.stem, suffixes))
        stem = self.state.moved_stem
        assert stem is not None
        names = [self.renamed(n, stem) for n in self.state.inputs]
        for name, new in zip(self.state.inputs, names, strict=True):
            if os.path.lexists(self.input(name)):
                move(self.input(name), folder / new)
        return names

    def remove(self) -> None:
        """Forget a finished job: one rename makes it invisible, then the files go."""
        trash = self.dir.with_name(f"{TRASH_PREFIX}{self.dir.name}")
        os.rename(self.dir, trash)
        shutil.rmtree(trash, ignore_errors=True)
