"""The quality gate, between generation and the encode (in the finishing stage of a pipelined daemon, so
the GPU never waits for it): the generated frames are judged against the input image (i2v_watcher/judge),
the judgement goes into the metadata's `quality`, and the gate's action decides what follows a failing
verdict ([quality_gate], a sidecar's `quality_gate:`):

- `record`: published as it is, its verdict and symptoms in the metadata and on the dashboard;
- `fail`: the job goes to failed/ with a report naming the symptoms and the original WebUI's advice;
- `reroll`: generated again with the next seed and the table's changes (judge/advice.py), up to
  `max_rerolls` times; then the best attempt is published marked `warn`, or the job fails
  (`on_exhausted`). Every attempt's seed, changes, scores and symptoms are in `quality.attempts`.

An attempt's changes and the attempts so far live in the job's state, so a restart goes on where it was;
the best failing attempt's frames (and sound) wait in the job's folder until a better one comes."""

from __future__ import annotations

import contextlib
import os
import shutil
from typing import Any

import numpy as np
import structlog
from PIL import Image, ImageOps

from i2v_watcher.config.gate import BackendGate
from i2v_watcher.errors import JobError
from i2v_watcher.faults import crashpoint
from i2v_watcher.fs.atomic import write_durably
from i2v_watcher.job.records import StagedMetadata
from i2v_watcher.job.state import Job
from i2v_watcher.judge import rank, score
from i2v_watcher.judge.advice import advice, reroll_changes
from i2v_watcher.run.soundtrack import WAV_NAME

BEST_FRAMES = "best-attempt.npy"
BEST_SOUND = "best-attempt.wav"
SEEDS = 2**32
log = structlog.get_logger("i2v_watcher.run.gate")


def input_at(image: Image.Image, width: int, height: int) -> np.ndarray:
    """The input image at the frames' size: scaled to cover and centred, as the backends fit it (they
    keep its aspect ratio, rounded to their size multiple; CogVideoX 1.0 crops to 720x480)."""
    fitted = ImageOps.fit(image.convert("RGB"), (width, height), Image.Resampling.LANCZOS)
    return np.asarray(fitted, dtype=np.uint8)


def judge(job: Job, image: Image.Image, gate: BackendGate, honoured: frozenset[str],
          variants: int = 1) -> bool:
    """Judge the job's generated frames; True: generated again (the job is back in stage `claimed`),
    False: on to the encode, the judgement in its metadata. JobError for a clip the gate fails.
    `variants` (keep: best): that many attempts whatever their verdicts, the best one published."""
    frames, metadata = job.frames, job.state.metadata
    assert frames is not None and metadata is not None and metadata.frames_fps is not None
    height, width = frames.shape[1:3]
    judgement = score(frames, input_at(image, width, height), metadata.frames_fps, gate.thresholds)
    attempt = {"seed": metadata.seed, "changes": dict(job.state.changes or {}), "scores": judgement.scores,
               "symptoms": judgement.symptoms, "verdict": judgement.verdict}
    attempts = [*(job.state.gate_attempts or []), attempt]
    log.info("judged", verdict=judgement.verdict, symptoms=judgement.symptoms, attempt=len(attempts),
             scores=judgement.scores)
    quality = {**judgement.as_dict(), "attempts": attempts}
    best = min(range(len(attempts)), key=lambda index: rank(attempts[index]))
    passed = attempts[best]["verdict"] == "pass" or gate.action == "record"
    more = len(attempts) < variants or (
        not passed and gate.action == "reroll" and len(attempts) - variants < gate.max_rerolls)
    if more and best == len(attempts) - 1:
        _keep_best(job, frames, metadata, quality)
    if len(attempts) < variants:  # keep: best: the next variant, whatever this one's verdict
        return _again(job, metadata, {}, attempts, "next variant")
    if passed:
        return _publish(job, best, attempts, metadata, quality, None)
    if gate.action == "fail":
        raise _failed(attempts, "the clip failed the quality gate")
    if more:
        changes = reroll_changes(judgement.symptoms, metadata.parameters, metadata.backend or "", gate,
                                 honoured)
        return _again(job, metadata, changes, attempts, "re-rolling")
    if gate.on_exhausted == "fail":
        raise _failed(attempts, f"no attempt passed the quality gate ({len(attempts)} attempts)")
    log.warning("re-rolls ran out: publishing the best attempt, marked warn", seed=attempts[best]["seed"],
                symptoms=attempts[best]["symptoms"])
    return _publish(job, best, attempts, metadata, quality, "warn")


def _again(job: Job, metadata: StagedMetadata, changes: dict[str, Any], attempts: list[dict[str, Any]],
           why: str) -> bool:
    """Back to generation with the next seed and these changes (on top of the earlier ones)."""
    changes = {**(job.state.changes or {}), **changes}
    seed = ((metadata.seed or 0) + 1) % SEEDS
    log.info(why, seed=seed, changes=changes, attempt=len(attempts) + 1)
    job.frames = None
    # An attempt judged is progress: the deaths in a row (max_job_crashes) count from here.
    job.advance("claimed", seed=seed, changes=changes, gate_attempts=attempts, deaths=0)
    crashpoint("gate.after_reroll")
    return True


def _publish(job: Job, best: int, attempts: list[dict[str, Any]], metadata: StagedMetadata,
             quality: dict[str, Any], verdict: str | None) -> bool:
    """On to the encode with the best attempt (the last one's frames, or the kept ones)."""
    if best != len(attempts) - 1:
        job.frames, metadata, quality = _take_best(job)
    quality = {**quality, "attempts": attempts, **({"verdict": verdict} if verdict else {})}
    job.advance("generated", metadata=metadata.model_copy(update={"quality": quality}), deaths=0)
    return False


def _failed(attempts: list[dict[str, Any]], what: str) -> JobError:
    last = attempts[-1]["symptoms"]
    seeds = ", ".join(f"seed {a['seed']}: {', '.join(a['symptoms'])}" for a in attempts)
    return JobError(f"{what}: {', '.join(last)} ({seeds})", stage="judge", hint=" ".join(advice(last)))


def _keep_best(job: Job, frames: np.ndarray, metadata: StagedMetadata, quality: dict[str, Any]) -> None:
    """The best attempt so far, kept in the job's folder: its frames, its sound, its metadata."""
    write_durably(job.dir / BEST_FRAMES, lambda handle: np.save(handle, frames))
    sound = job.dir / WAV_NAME
    if metadata.audio is not None and sound.is_file():
        shutil.copyfile(sound, job.dir / BEST_SOUND)
    job.advance(job.state.stage, best_attempt=metadata.model_copy(update={"quality": quality}))


def _take_best(job: Job) -> tuple[np.ndarray, StagedMetadata, dict[str, Any]]:
    """The best attempt back as the job's generated frames (its sound back in place)."""
    best = job.state.best_attempt
    assert best is not None and best.quality is not None
    frames: np.ndarray = np.load(job.dir / BEST_FRAMES, allow_pickle=False)
    if best.audio is not None:
        os.replace(job.dir / BEST_SOUND, job.dir / WAV_NAME)
    return frames, best, best.quality


def resumed_frames(job: Job) -> np.ndarray | None:
    """After a restart, the frames of a job whose best earlier attempt is the one to publish (the scratch
    copy holds the last attempt's); None for any other job."""
    best, metadata = job.state.best_attempt, job.state.metadata
    if best is None or metadata is None or metadata.seed != best.seed or metadata.quality is None:
        return None
    with contextlib.suppress(OSError, ValueError):
        frames: np.ndarray = np.load(job.dir / BEST_FRAMES, allow_pickle=False)
        return frames
    return None
