"""A pipelined daemon's two stages, each a thread: generation (the GPU) and finishing (ffmpeg, the
outbox, the share). While job N is encoded and published, job N+1 is already generating, and the one
after it is being prepared (sidecar, image, checks; the backend's `preload`).

The daemon's loop claims jobs and hands them in with `submit`; it never waits for a stage. At most
`pipeline_depth` jobs are past the claim at once (a slot each, taken before generating, given back when
the job is done with), so the frames held in memory stay bounded. Outcomes come back through `results`,
read by the loop at every tick. Each stage has a activity of its own (see checkpoint.Activity): a stage stuck
on a job stops the heartbeat and the watchdog pings although the loop still ticks."""

from __future__ import annotations

import contextvars
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass
from traceback import format_exception

import structlog

from i2v_watcher.job.checkpoint import Checkpoint
from i2v_watcher.job.state import Job
from i2v_watcher.run.pipeline import Outcome, Pipeline

WAIT_S = 0.2  # how long a stage waits for work before it looks at the stop request again
log = structlog.get_logger("i2v_watcher.run.stages")


@dataclass(frozen=True)
class Result:
    job: Job
    outcome: Outcome
    error: str = ""  # why a job held back could not be finished (Pipeline.held_error)
    traceback: str = ""  # an error outside the job's own handling: the job is kept and tried later


def run_guarded(pipeline: Pipeline, job: Job, *, hand_over: bool = False) -> Result:
    """One job through a pipeline; whatever escapes the job's own error handling (a state file that
    cannot be written, say) keeps the job for a later try and never ends the daemon or a stage."""
    try:
        outcome = pipeline.run(job, hand_over=hand_over)
    except Exception as exc:
        return Result(job, "held", f"{type(exc).__name__}: {exc}", "".join(format_exception(exc)))
    return Result(job, outcome, pipeline.held_error if outcome == "held" else "")


class Stages:
    def __init__(self, make_pipeline: Callable[[Checkpoint], Pipeline], checkpoint: Checkpoint, depth: int,
                 wake: threading.Event) -> None:
        self.checkpoint = checkpoint
        self.front = make_pipeline(checkpoint.for_stage())  # generation: created first, shown first
        self.back = make_pipeline(checkpoint.for_stage())
        self.back.rerolls_go_back = True  # a clip the quality gate re-rolls goes back to the generator
        self.results: queue.Queue[Result] = queue.Queue()
        self.done = wake  # set with every result, so the loop wakes at once
        self._to_generate: queue.Queue[Job] = queue.Queue()
        self._to_finish: queue.Queue[Job] = queue.Queue()
        self._slots = threading.Semaphore(depth)
        self._depth = depth
        self._generating: dict[str, threading.Event] = {}  # set once the job has left generation
        self._waiting = 0  # submitted, not yet generating: the loop claims ahead only one job
        self._in_flight = 0
        self._lock = threading.Lock()
        # Each thread starts in a copy of this context: what the log lines carry (worker_id) goes along.
        self._threads = [threading.Thread(target=contextvars.copy_context().run, args=(target,), name=name,
                                          daemon=True)
                         for target, name in ((self._generate, "generate"), (self._finish, "finish"))]
        self._generator_done = threading.Event()
        self._closing = False

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def wants_work(self) -> bool:
        """True while nothing waits to generate: the loop may claim the next job (which then preloads
        while the current one generates)."""
        return self._waiting == 0

    def idle(self) -> bool:
        return self._in_flight == 0 and self.results.empty()

    def has_room(self) -> bool:
        """True while a slot is free: a job submitted now starts generating as soon as the generator is."""
        return self._in_flight < self._depth

    def submit(self, job: Job) -> threading.Event:
        """Hand a job in; the event is set once it has left generation (generated and handed over to the
        finishing stage, or done with: published, failed, handed back)."""
        left = threading.Event()
        with self._lock:
            self._waiting += 1
            self._in_flight += 1
            self._generating[job.id] = left
        if job.state.stage == "claimed":
            self.front.start_preload(job)
        self._to_generate.put(job)
        return left

    def join(self, tick: Callable[[], None]) -> None:
        """At the end (a stop, or `--once` drained): wait for both stages to hand back or finish their
        jobs (after a stop signal within stop_timeout_s, then aborted at their next progress point),
        calling `tick` meanwhile."""
        self._closing = True
        for thread in self._threads:
            while thread.is_alive():
                tick()
                thread.join(WAIT_S)
        self.front.close()

    # ---- the stages' threads ----------------------------------------------------------------------
    def _next(self, source: queue.Queue[Job], upstream_done: threading.Event | None) -> Job | None:
        """The next job, or None once the daemon stops and nothing more can come."""
        while True:
            try:
                return source.get(timeout=WAIT_S)
            except queue.Empty:
                ending = self.checkpoint.stopping or self._closing
                if ending and (upstream_done is None or upstream_done.is_set()):
                    return None

    def _generate(self) -> None:
        try:
            while (job := self._next(self._to_generate, None)) is not None:
                self._take_slot()
                with self._lock:
                    self._waiting -= 1
                if self.checkpoint.stopping and job.state.stage in ("claiming", "claimed"):
                    self.front.wait_preload(job)
                    self._report(Result(job, self.front.hand_back(job)))
                    continue
                result = run_guarded(self.front, job, hand_over=True)
                if result.outcome == "generated":
                    self._to_finish.put(job)
                    self._left_generation(job)
                else:
                    self._report(result)
        finally:
            self._generator_done.set()

    def _take_slot(self) -> None:
        self._slots.acquire()  # the stage is idle meanwhile (no job): its activity does not count

    def _finish(self) -> None:
        while (job := self._next(self._to_finish, self._generator_done)) is not None:
            result = run_guarded(self.back, job)
            if result.outcome == "rerolled" and not self._generator_done.is_set():
                self._regenerate(job)
            elif result.outcome == "rerolled":  # the generator has stopped: resumed at the next start
                self._report(Result(job, "interrupted"))
            else:
                self._report(result)

    def _regenerate(self, job: Job) -> None:
        """A re-rolled job goes to the generator ahead of new claims (the loop claims none while it
        waits); it keeps its place in flight, and gives back the slot the generator takes again."""
        with self._lock:
            self._waiting += 1
        self._slots.release()
        self._to_generate.put(job)

    def _left_generation(self, job: Job) -> None:
        with self._lock:
            left = self._generating.pop(job.id, None)
        if left is not None:
            left.set()

    def _report(self, result: Result) -> None:
        with self._lock:
            self._in_flight -= 1
        self._slots.release()
        self.results.put(result)
        self._left_generation(result.job)
        self.done.set()
