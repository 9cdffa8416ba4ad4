"""What every long-running command shares (`run`, and the Celery `worker`): stop signals counted as they
arrive (stop_signals.py) and said at once, a start-up that a stop signal cuts short, a shutdown that
always runs, and systemd told about each (READY=1 after start-up and before any job, STOPPING=1 once a
stop is under way; notify.py), and the opt-in Prometheus metrics port, opened first and closed last
(`metrics_port`; metrics.py)."""

from __future__ import annotations

import signal
from abc import ABC, abstractmethod
from types import FrameType
from typing import TYPE_CHECKING

import structlog

from i2v_watcher.config.settings import Settings
from i2v_watcher.control.cancel import cancelled
from i2v_watcher.control.pause import Gate
from i2v_watcher.errors import StartupError, StartupInterrupted
from i2v_watcher.job.checkpoint import Checkpoint
from i2v_watcher.run.pipeline import Pipeline
from i2v_watcher.run.stages import Result
from i2v_watcher.service.bootstrap import load_backends, load_captioner, prepare_scratch
from i2v_watcher.service.parts import Part, start_all, stop_all
from i2v_watcher.service.runner import MakePipeline
from i2v_watcher.service.signals import SignalReader
from i2v_watcher.service.systemd import Notifier
from i2v_watcher.work.lease import Heartbeat, WorkerLock, acquire_worker
from i2v_watcher.work.store import Scratch
from i2v_watcher.work.swap import SwapSlot

if TYPE_CHECKING:  # prometheus_client is imported only where metrics_port is set
    from i2v_watcher.service.metrics import DaemonMetrics

EXIT_OK = 0
EXIT_FAILED_JOBS = 3  # `run --once`: some jobs failed, or could not be finished
log = structlog.get_logger("i2v_watcher.service.lifecycle")


def announce_stop(signame: str, first: bool, stop_timeout_s: float, jobs: list[str]) -> None:
    """What a stop signal logs, from the thread that counts them (stop_signals.py) or the loop; `jobs`:
    the jobs running now."""
    about = {"signal": signame, **({"jobs": jobs} if jobs else {})}
    if first and not jobs:
        log.warning("stopping: no job is running", **about)
    elif first and not stop_timeout_s:
        log.warning("stopping: no new jobs; the running job is aborted at its next progress point "
                    "(stop_timeout_s = 0)", **about)
    elif first:
        again = ("press Ctrl-C again to abort it now" if signame == "SIGINT"
                 else "a second SIGTERM or SIGINT aborts it now")
        log.warning(f"stopping: no new jobs; the running job may finish within {stop_timeout_s:g} s "
                    f"(stop_timeout_s), then it is aborted; {again}", stop_timeout_s=stop_timeout_s, **about)
    else:
        log.warning("stop signal again: aborting the running job now" if jobs else "stop signal again",
                    **about)


class Service(ABC):
    serves_metrics = True  # `metrics_port` (metrics.py): for the services that run jobs

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        # The drains already written when the process starts are not for it (control.pause); one
        # written while its models load is, so the gate is made now, not once they are loaded.
        self.gate = Gate(settings)

        def announced(signame: str, first: bool) -> None:
            if first:
                self.notifier.stop_requested()
            jobs = [str(part.job) for part in self.checkpoint.activity.busy()]
            announce_stop(signame, first, settings.stop_timeout_s, jobs)

        self.checkpoint = Checkpoint(announced)
        self.checkpoint.request.cancel_probe = lambda job_id: cancelled(settings.worker_dir / job_id)
        self._signals = SignalReader((signal.SIGTERM, signal.SIGINT), self._counted)
        self._counting = False  # True while the reader counts the signals (else the handler does)
        self.notifier = Notifier(self.checkpoint.activity, settings.max_silent_s)
        self.up = False  # set by startup() when it is done: a signal before that ends the start-up
        self.worker_id: str | None = None  # once acquire_worker() has it
        self.lock: WorkerLock | None = None
        self.loaded: list[str] = []  # the backends load_backends() loaded, `auto` resolved
        self.swap: SwapSlot | None = None  # the backends it may load on demand (swap_backends)
        self.parts: list[Part] = []  # what the service is composed of, started by compose()
        self.metrics: DaemonMetrics | None = None

    def serve(self) -> int:
        stops = (signal.SIGTERM, signal.SIGINT)
        signals = {signum: signal.signal(signum, self._on_signal) for signum in stops}
        self._counting = self._signals.start()
        self.notifier.explain()
        try:
            try:
                self.start_or_abandon()
            except StartupInterrupted:
                log.warning("stopped during start-up")
                return EXIT_OK
            except StartupError as exc:
                self.notifier.failed(str(exc))
                raise
            if self.metrics is not None:
                self.metrics.ready()
            self.notifier.ready()  # before any job: jobs left from a previous run are work, not start-up
            try:
                self.work()
            finally:
                self.notifier.stop_requested()
                self.shutdown()
                self.notifier.close()
        finally:
            if self.metrics is not None:
                self.metrics.stop()
            for signum, handler in signals.items():
                signal.signal(signum, handler)
            self._signals.stop()
            self._counting = False
        return self.exit_code()

    def start_or_abandon(self) -> None:
        """Start-up; one that fails lets go of the worker folder it took (WorkerLock.abandon)."""
        try:
            self.notifier.status("starting")
            self.start_metrics()  # first: a port in use fails at once, not after loading a model
            self.startup()
        except BaseException:
            if self.lock is not None:
                self.lock.abandon()
            raise

    def start_metrics(self) -> None:
        if self.serves_metrics and self.settings.metrics_port is not None:
            from i2v_watcher.service.metrics import serve_metrics

            self.metrics = serve_metrics(self.settings, self.checkpoint.activity, lambda: self.notifier.about)

    def report(self, result: Result) -> None:
        """A listener of the stages (runner.py): each finished job, for the metrics when they are served."""
        if self.metrics is not None:
            self.metrics.settled(result.job.state.metadata, result.outcome)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        """The Python handler, run late (see stop_signals.py): it ends a start-up. The signal is
        counted by the reader's thread; only without one, here (flags only: no logging, no locks, the
        interrupted code may hold them)."""
        if not self._counting:
            self._record(signum)
        if not self.up:
            raise StartupInterrupted(signal.Signals(signum).name)

    def _counted(self, signum: int) -> None:
        """Every stop signal, on the reader's thread as it arrives: recorded and, once the service is
        up, said at once. The loop notices at its next tick, a running job at its next progress point."""
        self._record(signum)
        if self.up:
            about = {"worker_id": self.worker_id} if self.worker_id else {}  # as the other lines have it
            with structlog.contextvars.bound_contextvars(**about):
                self.checkpoint.announce_pending()

    def _record(self, signum: int) -> None:
        self.checkpoint.request_stop(self.settings.stop_timeout_s, signal.Signals(signum).name)
        self.on_stop_signal()

    def compose(self, parts: list[Part]) -> None:
        """The end of start-up: the service's parts started in order; it is up."""
        self.parts = parts
        start_all(parts)
        self.up = True

    def shutdown(self) -> None:
        """The parts stopped in reverse order (the stages finish or hand back their jobs first, while
        the heartbeat still beats), then the worker folder let go."""
        self.checkpoint.announce_pending()
        try:
            stop_all(self.parts)
        finally:
            if self.lock is not None:
                self.lock.release()
        activity = self.checkpoint.activity
        log.info("stopped", published=activity.published, failed=activity.failed)

    def load_backends(self) -> tuple[MakePipeline, Scratch, Heartbeat]:
        """For a service that runs jobs: the resident backends loaded once, how a stage makes its
        pipeline, the scratch folder of generated frames, and the heartbeat that names the model."""
        settings = self.settings
        prepare_scratch(settings)
        binary, default, resident = load_backends(settings, self.notifier.extend)
        captioner = load_captioner(settings, self.notifier.extend)  # None: [caption] is off
        self.loaded = list(resident)  # what this worker serves (work.routing), `auto` resolved
        first = resident[default]
        self.notifier.about = {"backend": first.name, "model": first.model_id}
        scratch = Scratch(settings.scratch_dir)
        swap = self.swap = SwapSlot(settings, settings.swap_backends) if settings.swap_backends else None
        if swap is not None and self.metrics is not None:
            swap.listeners.append(self.metrics.swapped)

        def pipeline(part: Checkpoint) -> Pipeline:
            return Pipeline(settings, resident, binary, part, default, scratch, swap, captioner)

        return pipeline, scratch, Heartbeat(settings, self.checkpoint.activity, first.name, first.model_id,
                                              list(resident), settings.swap_backends)

    def acquire_worker(self) -> WorkerLock:
        """This process's worker folder; waiting for another host's lease may take lease_timeout_s."""
        self.notifier.extend(self.settings.lease_timeout_s + 30, "checking the worker lease")
        lock = self.lock = acquire_worker(self.settings)
        self.worker_id = lock.worker_id
        structlog.contextvars.bind_contextvars(worker_id=lock.worker_id)  # on every line (WORKER_ID)
        return lock

    def on_stop_signal(self) -> None:
        """More flags to set for each stop signal (nothing that logs or locks: without the reader's
        thread, this runs in the signal handler)."""
        return None

    def exit_code(self) -> int:
        """A service stopped by a signal exits 0."""
        return EXIT_OK

    @abstractmethod
    def startup(self) -> None: ...

    @abstractmethod
    def work(self) -> None: ...
