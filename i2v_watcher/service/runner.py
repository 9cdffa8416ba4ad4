"""The stages part of a service: claimed jobs go through the stages of `run`, one at a time, or
pipelined (`pipeline_depth` ≥ 2, run/stages.py: while one job is encoded, the next generates), and
each finished job is reported to the listeners, on the service's own thread: this is the one place
where outcomes are counted (the activity's counts for the heartbeat and systemd's STATUS, the metrics,
a service's own handling of a job held back). The folder daemon and the Celery worker both run their
jobs here."""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable

from i2v_watcher.config.settings import Settings
from i2v_watcher.job.checkpoint import Checkpoint
from i2v_watcher.job.state import Job
from i2v_watcher.run.pipeline import Pipeline
from i2v_watcher.run.stages import Result, Stages, run_guarded
from i2v_watcher.service.parts import Part
from i2v_watcher.work.store import WorkStore

Listener = Callable[[Result], None]  # called once per job the stages are done with
MakePipeline = Callable[[Checkpoint], Pipeline]


class Runner(Part):
    """Jobs in flight are kept out of the store's `leftovers()`, so that neither a recovery nor a
    redelivered task runs a job a second time while the stages have it."""

    def __init__(self, settings: Settings, make_pipeline: MakePipeline, checkpoint: Checkpoint,
                 store: WorkStore, wake: threading.Event) -> None:
        self.checkpoint = checkpoint
        self.store = store
        self.listeners: list[Listener] = [self._count]
        self.keys: set[str] = set()  # the inbox names of the jobs in flight
        pipelined = settings.pipeline_depth >= 2
        self.stages = Stages(make_pipeline, checkpoint, settings.pipeline_depth, wake) if pipelined else None
        self.serial = None if pipelined else make_pipeline(checkpoint)

    def start(self) -> None:
        if self.stages is not None:
            self.stages.start()

    def submit(self, job: Job) -> threading.Event:
        """Run a job: at once, or handed to the stages. The event is set once the job has left
        generation (the GPU is free for the next one)."""
        self.store.in_flight.add(job.dir.name)
        self.keys.add(job.state.key)
        if self.stages is not None:
            return self.stages.submit(job)  # its result comes back through collect()
        assert self.serial is not None
        self._settle(run_guarded(self.serial, job))
        done = threading.Event()
        done.set()
        return done

    def wants_work(self) -> bool:
        """Whether the next job may be claimed now (the pipelined stages take one ahead)."""
        return self.stages is None or self.stages.wants_work()

    def has_room(self) -> bool:
        """Whether a job handed in now can start generating once the generator is free."""
        return self.stages is None or self.stages.has_room()

    def busy(self) -> bool:
        return self.stages is not None and not self.stages.idle()

    def tick(self) -> None:
        self.collect()

    def collect(self) -> None:
        """The outcomes of the pipelined stages' jobs, reported to the listeners."""
        if self.stages is None:
            return
        while True:
            try:
                result = self.stages.results.get_nowait()
            except queue.Empty:
                return
            self._settle(result)

    def stop(self) -> None:
        """Both stages finish or hand back their jobs (see Stages.join); the service is alive meanwhile
        and their outcomes are reported as they come."""
        if self.stages is not None:
            self.stages.join(self._tick_while_stopping)
            self.collect()

    def _tick_while_stopping(self) -> None:
        self.checkpoint.activity.touch()
        self.checkpoint.announce_pending()
        self.collect()

    def _settle(self, result: Result) -> None:
        self.store.in_flight.discard(result.job.dir.name)
        self.keys.discard(result.job.state.key)
        for listener in self.listeners:
            listener(result)

    def _count(self, result: Result) -> None:
        self.checkpoint.activity.count(result.outcome)
