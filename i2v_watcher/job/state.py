"""A claimed job: its folder under work/<worker_id>/ and the state recorded there.

The state file is rewritten atomically at every stage, so that a restart after a crash at any
instant resumes the job from what is on disk: nothing is lost and nothing is published twice. The
state is read back from a shared folder, so it is validated like any other untrusted input: no name
in it can point outside the folders the daemon owns.
"""

from __future__ import annotations

import os
import secrets
import shutil
import threading
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from i2v_watcher.errors import JobLost
from i2v_watcher.fs.atomic import (
    NotRegularFile,
    move,
    rename_noreplace,
    safe_subdir,
    write_json_atomic,
)
from i2v_watcher.fs.detours import detour_subdir
from i2v_watcher.fs.reservations import release_name, reserve_name
from i2v_watcher.job.records import JOB_ID_PATTERN as JOB_ID_PATTERN
from i2v_watcher.job.records import MAX_STATE_BYTES, Stage
from i2v_watcher.job.records import JobState as JobState
from i2v_watcher.job.records import utc_now as utc_now
from i2v_watcher.job.spec import MAX_NAME_BYTES, JobSpec, safe_stem

if TYPE_CHECKING:  # only the type: the chains are built above this layer (media/chains.py)
    from i2v_watcher.media.chains import Chain

STATE_FILE = "job.json"
TRASH_PREFIX = ".trash-"


def new_job_id() -> str:
    """Job ids sort in claim order (recovery resumes jobs in id order; a pipelined daemon claims the
    next job within the same second): the second, then its microsecond in 5 hex digits, then 3 random
    ones against two hosts claiming in the same microsecond."""
    now = datetime.now(UTC)
    return f"{now:%Y%m%dT%H%M%SZ}-{now.microsecond:05x}{secrets.randbelow(16**3):03x}"


class Job:
    def __init__(self, folder: Path, state: JobState) -> None:
        self.dir = folder
        self.state = state
        # The generated frames, from the GPU to ffmpeg in memory (a resume copy is in the scratch
        # folder); None before generation, or after a restart until loaded.
        self.frames: np.ndarray | None = None
        # Its post-processing chains, built once by the job check before generation and handed to the
        # encode stage with the frames; None before the check, or after a restart until checked again.
        self.chains: list[Chain] | None = None
        # Its checked sidecar and decoded image, kept with the chains for the quality gate (variants, its
        # own gate; the image the frames are judged against), so the gate reads neither again.
        self.spec: JobSpec | None = None
        self.image: Image.Image | None = None
        # A job's state is changed from two threads at once in the pipelined daemon (the preload
        # fixes its seed and name while the generation marks it running): each change is written
        # whole, and the state is read for writing under the lock, so a write of an older copy can
        # never land after a newer one (it did: a death count lost, a poison job run again).
        self._lock = threading.RLock()

    @classmethod
    def load(cls, folder: Path) -> Job:
        return cls(folder, JobState.read(folder / STATE_FILE, MAX_STATE_BYTES))

    def save(self) -> None:
        self.check_owned()
        try:
            with self._lock:
                write_json_atomic(self.dir / STATE_FILE, self.state.to_json())
        except FileNotFoundError:
            self.check_owned()
            raise

    def check_owned(self) -> None:
        """The job's folder is still where this process put it: a worker that took it over renamed it
        into its own folder. Checked before every state change and every visible write."""
        if not self.dir.is_dir():
            raise JobLost(f"job {self.id} is no longer in {self.dir.parent}: another worker has it")

    def advance(self, stage: Stage, **changes: Any) -> None:
        with self._lock:
            for name, value in changes.items():
                assert name in JobState.model_fields, name  # the record keeps unknown keys: no typo
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
    def short_stem(self) -> str:
        """The stem its files get outside the inbox: the user's, unless it is too long to take the
        suffixes the daemon adds (`-1`, `.error.json`, temporary names); then shortened, uniquely."""
        return self.stem if len(os.fsencode(self.stem)) <= MAX_NAME_BYTES else safe_stem(self.stem)

    @property
    def input_dir(self) -> Path:
        return self.dir / "input"

    @property
    def out_dir(self) -> Path:
        return self.dir / (self.state.encode_dir or "out")

    def input(self, name: str) -> Path:
        return self.input_dir / name

    def renamed(self, name: str, stem: str) -> str:
        """An input's name under a new stem: IMG_1.JPG → IMG_1-2.JPG (all inputs share the job's stem)."""
        return stem + name[len(self.stem):] if name.startswith(self.stem) else f"{stem}.{name}"

    @property
    def moved_rel(self) -> PurePosixPath:
        """The job's folder in done/ or failed/, relative to it: its folder in the inbox, unless a file,
        link or FIFO already had that name there (fs.detours); recorded once chosen."""
        return PurePosixPath(self.state.moved_dir) if self.state.moved_dir else self.rel_dir

    def move_inputs(self, root: Path, inbox: Path, also: tuple[str, ...] = ()) -> list[str]:
        """Move the inputs that are still here into root/<sub-folder> (moved_rel) under one clash-free
        stem (chosen once and reserved, so a restart half-way keeps image and sidecar paired, and no
        other worker takes the name meanwhile); the names they got there. A link or special file that
        cannot be renamed there (root on another filesystem) is never opened or copied: it goes back to
        the inbox folder it came from, is named in `left_in_place`, and the watcher leaves it alone."""
        rel = detour_subdir(root, self.moved_rel, self.id)
        if rel != self.moved_rel:  # a new folder: its name is reserved there anew
            moved_dir = None if rel == self.rel_dir else str(rel)
            self.advance(self.state.stage, moved_dir=moved_dir, moved_stem=None)
        folder = root / rel
        if self.state.moved_stem is None:
            suffixes = [self.renamed(n, "") for n in self.state.inputs] + list(also)
            stem = self.short_stem
            if any(self.renamed(n, stem).endswith(tuple(also)) for n in self.state.inputs):
                stem += "-1"  # `x.error.json` dropped in the inbox: never an input named like a report
            stem = reserve_name(folder, stem, suffixes, self.id)
            self.advance(self.state.stage, moved_stem=stem)
        assert self.state.moved_stem is not None
        names = {n: self.renamed(n, self.state.moved_stem) for n in self.state.inputs}
        for name, new in names.items():
            if name in self.state.left_in_place or not os.path.lexists(self.input(name)):
                continue
            try:
                move(self.input(name), folder / new, token=self.id)
            except NotRegularFile:
                self.advance(self.state.stage, left_in_place=[*self.state.left_in_place, name])
                rename_noreplace(self.input(name), safe_subdir(inbox, self.rel_dir) / name)
        return [new for name, new in names.items() if name not in self.state.left_in_place]

    def release_moved_name(self, root: Path) -> None:
        if self.state.moved_stem is not None:
            release_name(root / self.moved_rel, self.state.moved_stem, self.id)

    def remove(self) -> None:
        """Forget a finished job: one rename makes it invisible, then the files go."""
        trash = self.dir.with_name(f"{TRASH_PREFIX}{self.dir.name}")
        os.rename(self.dir, trash)
        shutil.rmtree(trash, ignore_errors=True)
