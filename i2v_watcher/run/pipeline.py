"""The life of one claimed job, stage by stage: generate → post-process → publish → dispose (or fail).

Each stage ends by recording the next stage in the job's state, so `run` can be called again on a job
found in the work dir after a crash and continues where it stopped. Everything that can be checked
before generation is checked before generation, so a GPU-minute is never spent on a job that cannot
be published.
"""

from __future__ import annotations

import contextlib
import contextvars
import secrets
import shutil
import time
import traceback
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as futures_wait
from dataclasses import replace
from typing import Literal, TypeVar

import structlog

from i2v_watcher.backends import Backend
from i2v_watcher.backends.caption import Captioner
from i2v_watcher.config.settings import Settings
from i2v_watcher.errors import (
    DestinationUnavailable,
    FfmpegStalled,
    JobCancelled,
    JobCancelledByOperator,
    JobError,
    JobLost,
    OutputInvalid,
    is_destination_problem,
    is_transient,
)
from i2v_watcher.faults import crashpoint
from i2v_watcher.job.checkpoint import Checkpoint
from i2v_watcher.job.records import JobFailure
from i2v_watcher.job.state import Job
from i2v_watcher.media.ffmpeg import FFmpeg
from i2v_watcher.media.graph import postprocess
from i2v_watcher.run.fail import fail
from i2v_watcher.run.gate import judge, resumed_frames
from i2v_watcher.run.generate import generate
from i2v_watcher.run.lone import explain_lone_sidecar
from i2v_watcher.run.metadata import encoded_metadata, generated_metadata
from i2v_watcher.run.prepare import Preparation, Prepared
from i2v_watcher.run.publish import dispose_inputs, publish, release_reserved
from i2v_watcher.run.soundtrack import keep_soundtrack, kept_soundtrack, soundtrack_lost
from i2v_watcher.work.claim import requeue
from i2v_watcher.work.store import Scratch
from i2v_watcher.work.swap import SwapNeeded, SwapSlot, forget_preloads, noted

# "generated": handed over to the next stage (a pipelined daemon), the frames in memory.
# "rerolled": judged and sent back to generation by the quality gate (a pipelined daemon's finishing stage).
Outcome = Literal["published", "failed", "requeued", "interrupted", "held", "lost", "generated", "rerolled"]
FINAL = ("published", "failed", "requeued", "lost")  # the job has left this worker's folder
T = TypeVar("T")
RISKY_STAGES = ("claimed", "generated")  # where a job itself can kill the process (memory, a driver)
log = structlog.get_logger("i2v_watcher.run.pipeline")


class Pipeline:
    def __init__(self, settings: Settings, backends: dict[str, Backend], ffmpeg: FFmpeg,
                 checkpoint: Checkpoint, default_backend: str, scratch: Scratch | None = None,
                 swap: SwapSlot | None = None, captioner: Captioner | None = None) -> None:
        self.settings = settings
        self.scratch = scratch or Scratch(settings.scratch_dir)
        self.swap = swap  # the backends loaded on demand, one at a time (swap_backends)
        if swap is not None:
            swap.unloading.append(lambda old: forget_preloads(self._preloads, old))
        self.ffmpeg = ffmpeg
        self.checkpoint = checkpoint
        self.rerolls_go_back = False  # set on a finishing stage: it hands re-rolls back, never generates
        self.prep = Preparation(settings, backends, ffmpeg, default_backend, swap, checkpoint.activity,
                                captioner)
        self.held_error = ""  # why the last job held back could not be finished
        self._preloader: ThreadPoolExecutor | None = None
        self._preloads: dict[str, Future[Prepared | None]] = {}
        self._destinations = {"outbox": settings.outbox, "done": settings.done, "failed": settings.failed,
                              "inbox": settings.inbox}

    def run(self, job: Job, *, hand_over: bool = False) -> Outcome:
        """Take the job as far as it goes: published, failed, or kept for later. With `hand_over`,
        stop once it is generated ("generated", its frames in `job.frames`) for the next stage."""
        live = self.checkpoint.activity
        with structlog.contextvars.bound_contextvars(job_id=job.id, job=job.state.key, stage=job.state.stage):
            try:
                live.working_on(job.id, job.state.key, job.state.stage)
                self._mark_running(job)
                outcome = self._run(job, hand_over)  # counted by the service's listeners
                if outcome in FINAL:
                    self.forget_frames(job)
                return outcome
            except JobLost:
                log.warning("another worker took this job over (this one was frozen or cut off past its "
                            "lease): dropped here, without publishing or reporting anything")
                return "lost"
            except JobCancelled:
                return self.hand_back(job)
            except DestinationUnavailable as exc:
                self.held_error = str(exc)  # the daemon logs it, once per distinct error
                return "held"
            finally:
                live.working_on(None)
                if job.state.running and job.dir.is_dir():
                    with contextlib.suppress(OSError):  # this process is alive: not a death
                        job.advance(job.state.stage, running=False)

    def _mark_running(self, job: Job) -> None:
        """Count the processes that died while this job was generating or encoding (OOM-killed, say):
        a job that keeps killing the daemon must not stop the queue forever."""
        state = job.state
        deaths = state.deaths + (state.running and state.stage in RISKY_STAGES)
        job.advance(state.stage, running=True, deaths=deaths)
        if deaths >= self.settings.max_job_crashes and state.stage in RISKY_STAGES and not state.problem:
            job.advance(state.stage, problem=(
                f"the daemon died {deaths} times in a row while working on this job (stage "
                f"{state.stage}); it is set aside so that it cannot stop the queue again"))

    def hand_back(self, job: Job) -> Outcome:
        """The daemon stops: a job not generated yet goes back into the inbox, keeping its place in the
        queue; one further on stays in the work folder and is resumed at the next start."""
        with structlog.contextvars.bound_contextvars(job_id=job.id, job=job.state.key):
            said = self.checkpoint.cancel_requested()  # a cancel comes first: never queued again
            if said is not None:
                cancel = JobCancelledByOperator(said)
                self._fail(job, cancel, cancel.stage, cancel.message, cancel.hint)
                return "failed"
            # A job being re-rolled keeps its attempts: resumed at the next start, not queued afresh.
            if job.state.stage == "claimed" and not job.state.gate_attempts and requeue(self.settings, job):
                log.info("stopped: job put back into the inbox")
                self.forget_frames(job)
                return "requeued"
            log.info("stopped: job kept in the work dir, resumed at the next start", stage=job.state.stage)
            return "interrupted"

    def start_preload(self, job: Job) -> None:
        """Prepare a job (sidecar, checks, image, the backend's preload) in a thread of its own while
        another job generates; `_generate` takes the result, or its error, when the job's turn comes."""
        if self._preloader is None:
            self._preloader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="preload")
        self._preloads[job.id] = self._preloader.submit(contextvars.copy_context().run, self._preload, job)

    def _preload(self, job: Job) -> Prepared | None:
        with structlog.contextvars.bound_contextvars(job_id=job.id, job=job.state.key, stage="preload"):
            try:
                ready = self.prep.prepare(job, swap=False)
            except SwapNeeded:  # a preload never swaps: prepared at its turn to generate (work.swap)
                return None
            return replace(ready, preloaded=ready.backend.preload(ready.source.image, ready.params))

    def wait_preload(self, job: Job) -> None:
        """Let a preload finish (whatever its result) before the job is handed back."""
        future = self._preloads.pop(job.id, None)
        if future is not None:
            futures_wait([future])

    def close(self) -> None:
        if self._preloader is not None:
            self._preloader.shutdown(wait=True)

    def forget_frames(self, job: Job) -> None:
        job.frames = None
        job.chains = job.spec = job.image = None
        self.scratch.drop(job.id)

    def _run(self, job: Job, hand_over: bool = False) -> Outcome:
        try:
            if job.state.problem and job.state.stage != "failing":
                hint = "" if job.state.deaths < self.settings.max_job_crashes else (
                    "the usual cause is memory (the kernel's OOM killer, see `journalctl -k`): lower "
                    "num_frames or resolution, or memory_budget_mb; then `i2v-watcher retry`")
                raise explain_lone_sidecar(self.settings, job, JobError(
                    job.state.problem, stage="watch" if not job.state.deaths else "crash", hint=hint))
            if job.state.stage == "generated" and job.frames is None:
                best = resumed_frames(job)  # a re-rolled job's best attempt, chosen before a restart
                job.frames = best if best is not None else self.scratch.load(job.id)
                if job.frames is None or soundtrack_lost(job):  # a host crash, or made on another host
                    log.warning("the generated frames are gone (a host crash, or a job taken over from "
                                "another host; or their sound): generating them again")
                    job.advance("claimed")
            while job.state.stage == "claimed" or self._unjudged(job):
                if job.state.stage == "claimed":
                    self._enter("generate")
                    self._retrying(job, lambda: self._generate(job))
                if hand_over:
                    return "generated"
                self._enter("judge")
                if self._retrying(job, lambda: self._judge(job)) and self.rerolls_go_back:
                    return "rerolled"  # the generation stage takes it again
            if job.state.stage == "generated":
                self._enter("postprocess")
                self._retrying(job, lambda: self._postprocess(job))
            if job.state.stage in ("encoded", "publishing"):
                self._last_cancel_check(job)
                self._enter("publish")
                self._destination(job, "outbox", lambda: publish(self.settings, job))
            if job.state.stage == "published":
                self._destination(job, "done", lambda: dispose_inputs(self.settings, job))
                return "published"
        except (JobCancelled, DestinationUnavailable, JobLost):
            raise
        except JobError as exc:
            self._fail(job, exc, exc.stage, exc.message, exc.hint)
            return "failed"
        except Exception as exc:  # the daemon keeps running whatever one job does
            stage: str = job.state.stage
            message = f"unexpected error: {type(exc).__name__}: {exc}"
            hint = f"an internal error, not a problem of your files: see the worker's log (job id {job.id})"
            if isinstance(exc, (FfmpegStalled, OutputInvalid)):
                stage = "postprocess"
                message, hint = f"{exc.strerror}, {job.state.attempts + 1} times", ""
            elif is_transient(exc):
                message, hint = f"storage kept failing after {job.state.attempts} attempts: {exc}", ""
            self._fail(job, exc, stage, message, hint)
            return "failed"
        assert job.state.stage == "failing", job.state.stage
        self._destination(job, "failed", lambda: fail(self.settings, job))
        return "failed"

    def _last_cancel_check(self, job: Job) -> None:
        """The cancel's commit point (control.cancel): read once more before publishing, never after."""
        said = self.checkpoint.cancel_requested() if job.state.stage == "encoded" else None
        if said is not None:
            release_reserved(self.settings, job)
            raise JobCancelledByOperator(said)

    def _unjudged(self, job: Job) -> bool:
        metadata = job.state.metadata
        return job.state.stage == "generated" and metadata is not None and metadata.quality is None

    def _judge(self, job: Job) -> bool:
        """The quality gate (run.gate) on the generated frames; True: the job is to be generated again."""
        metadata = job.state.metadata
        assert metadata is not None and job.state.image is not None
        backend = self.prep.choices.get(metadata.backend or "")
        if job.spec is None or job.chains is None:  # a resume: checked once, for the encode too
            checked = self.prep.check_sidecar(job)
            job.spec, job.chains = checked.spec, checked.chains
        spec = job.spec
        gate = self.settings.quality_gate.for_job(metadata.backend or "", spec.quality_gate)
        variants = (spec.variants or 1) if spec.keep == "best" else 1
        image = job.image if job.image is not None else self.prep.source(job, job.state.image, "judge").image
        rerolled = judge(job, image, gate, backend.honours if backend is not None else frozenset(), variants)
        if rerolled:
            self.forget_frames(job)
        return rerolled

    def _enter(self, stage: str) -> None:
        """Shown by `status` and `systemctl status`, and on every log line (a journal field, STAGE)."""
        self.checkpoint.activity.stage = stage
        structlog.contextvars.bind_contextvars(stage=stage)

    def _fail(self, job: Job, exc: BaseException, stage: str, message: str, hint: str) -> None:
        # A sidecar's mistakes, one by one, where there are several.
        problems = exc.problems if isinstance(exc, JobError) and len(exc.problems) > 1 else None
        # A JobError is the daemon's verdict on the job's files, said in full by its message: only an
        # error of the daemon itself has a traceback worth logging.
        trace = "" if isinstance(exc, JobError) else "".join(traceback.format_exception(exc))
        error = JobFailure(stage=stage, error_class=type(exc).__name__, message=message, hint=hint,
                           traceback=trace, problems=problems)
        self._destination(job, "failed", lambda: fail(self.settings, job, error))

    def _destination(self, job: Job, folder: str, action: Callable[[], None]) -> None:
        """A stage that writes a shared folder: when that folder cannot be written (full, read-only,
        not writable, unmounted), the job is kept and tried again later; it is not the job's fault."""
        try:
            action()
        except OSError as exc:
            if not is_destination_problem(exc) or not self._in_destination(exc):
                raise
            raise DestinationUnavailable(folder, exc) from exc

    def _in_destination(self, exc: OSError) -> bool:
        paths = [str(p) for p in (exc.filename, exc.filename2) if p]
        roots = [str(root) for root in self._destinations.values()]
        return not paths or any(p == r or p.startswith(r.rstrip("/") + "/") for p in paths for r in roots)

    def _retrying(self, job: Job, action: Callable[[], T]) -> T:
        """Run one stage; storage errors (disk full, stale share) are retried with backoff. The count
        is kept in the job's state, so a restart does not start it again from zero."""
        delay = self.settings.retry_backoff_s
        while True:
            try:
                return action()
            except OSError as exc:
                if not is_transient(exc) or job.state.attempts >= self.settings.transient_retries:
                    raise
                job.advance(job.state.stage, attempts=job.state.attempts + 1)
                log.warning("storage error, will retry", error=str(exc), attempt=job.state.attempts,
                            retry_in_s=delay)
                self._sleep(delay)
                delay = min(delay * 2, self.settings.retry_backoff_max_s)

    def _sleep(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            self.checkpoint.check()
            time.sleep(min(0.2, max(0.0, end - time.monotonic())))

    def _generate(self, job: Job) -> None:
        """Sidecar → parameters → image → frames, kept in the work dir; ends in stage `generated`."""
        started = time.monotonic()
        preloaded = self._preloads.pop(job.id, None)
        ready = preloaded.result() if preloaded is not None else None
        if ready is None or (self.swap is not None and not self.swap.holds(ready.backend)):
            preloaded = ready = None  # one made before a swap holds the old model: let go (work.swap)
            ready = self.prep.prepare(job)
        backend, params = ready.backend, ready.params
        timings = {"load": time.monotonic() - started}
        started = time.monotonic()
        frames = generate(backend, ready.source.image, params, self.checkpoint, self.settings.progress_log_s,
                          ready.preloaded)
        timings["generate"] = time.monotonic() - started
        job.frames, job.chains = frames.pixels, ready.chains  # to the next stage, with
        job.spec, job.image = ready.spec, ready.source.image  # what the quality gate needs
        log.info("generated", frames=frames.count, width=frames.width, height=frames.height,
                 seconds=round(timings["generate"], 2))
        sound = keep_soundtrack(job, frames.audio)  # in the job's folder: the encode reads it there
        metadata = noted(generated_metadata(job, ready.spec, params, backend, ready.source, ready.notes,
                                            frames, timings, self.ffmpeg, sound), self.swap)
        job.advance("generated", metadata=metadata)
        crashpoint("pipeline.after_generate")
        self.scratch.keep(job.id, frames.pixels)

    def _postprocess(self, job: Job) -> None:
        """Kept frames → every requested preset in one ffmpeg run; ends in stage `encoded`. Runs again
        after a crash or an ffmpeg failure without generating again, each time into a new folder."""
        started = time.monotonic()
        chains = job.chains if job.chains is not None else self.prep.check_sidecar(job).chains  # a resume
        pixels = job.frames
        assert pixels is not None  # _run loads them, or generates again
        self._fresh_encode_dir(job)
        before = job.state.metadata
        assert before is not None and before.frames_fps is not None  # recorded with the frames
        outputs, info = postprocess(pixels, before.frames_fps, job.out_dir, self.ffmpeg, chains,
                                    self.settings, self.checkpoint, kept_soundtrack(job))
        metadata = encoded_metadata(before, info, outputs, time.monotonic() - started)
        log.info("encoded", presets=metadata.presets, seconds=metadata.timings_s["postprocess"])
        job.advance("encoded", metadata=metadata)

    def _fresh_encode_dir(self, job: Job) -> None:
        """A new out-<token>/ for this attempt; earlier attempts' folders are removed first."""
        for old in job.dir.glob("out*"):
            shutil.rmtree(old, ignore_errors=True)
        job.advance(job.state.stage, encode_dir=f"out-{secrets.token_hex(4)}")
        crashpoint("postprocess.before_encode")
