"""What every long-running command shares (`run`, and the Celery `worker`): signal handlers that only set
flags, a start-up that a stop signal cuts short, a shutdown that always runs, and systemd told about each
(READY=1 after start-up and before any job, STOPPING=1 once a stop is under way; notify.py), and the
opt-in Prometheus metrics port, opened first and closed last (`metrics_port`; metrics.py)."""

from __future__ import annotations

import signal
from abc import ABC, abstractmethod
from collections.abc import Mapping
from types import FrameType
from typing import TYPE_CHECKING, Any

import structlog

from i2v_watcher.cancel import Announce, Cancel
from i2v_watcher.config import Settings
from i2v_watcher.errors import StartupError, StartupInterrupted
from i2v_watcher.lease import WorkerLock, acquire_worker
from i2v_watcher.notify import Notifier

if TYPE_CHECKING:  # prometheus_client is imported only where metrics_port is set
    from i2v_watcher.metrics import DaemonMetrics

EXIT_OK = 0
log = structlog.get_logger("i2v_watcher.service")


def stop_announcer(stop_timeout_s: float) -> Announce:
    """What a stop signal logs, once the handler has returned (see cancel.py)."""
    def announce(signame: str, first: bool) -> None:
        if first:
            log.warning("stop requested: no new jobs; the running job may finish, a second signal aborts it",
                        signal=signame, stop_timeout_s=stop_timeout_s)
        else:
            log.warning("second signal: aborting now", signal=signame)
    return announce


class Service(ABC):
    serves_metrics = True  # `metrics_port` (metrics.py): for the services that run jobs

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        announce = stop_announcer(settings.stop_timeout_s)

        def announced(signame: str, first: bool) -> None:
            if first:
                self.notifier.stop_requested()
            announce(signame, first)

        self.cancel = Cancel(announced)
        self.notifier = Notifier(self.cancel.liveness, settings.max_silent_s)
        self.up = False  # set by startup() when it is done: a signal before that ends the start-up
        self.metrics: DaemonMetrics | None = None

    def serve(self) -> int:
        stops = (signal.SIGTERM, signal.SIGINT)
        signals = {signum: signal.signal(signum, self._on_signal) for signum in stops}
        self.notifier.explain()
        try:
            try:
                self.notifier.status("starting")
                self.start_metrics()  # first: a port in use fails at once, not after loading a model
                self.startup()
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
        return self.exit_code()

    def start_metrics(self) -> None:
        if self.serves_metrics and self.settings.metrics_port is not None:
            from i2v_watcher.metrics import serve_metrics

            self.metrics = serve_metrics(self.settings, self.cancel.liveness, lambda: self.notifier.about)

    def settled(self, metadata: Mapping[str, Any], outcome: str) -> None:
        """A job's outcome (its metadata as it stands), for the metrics when they are served."""
        if self.metrics is not None:
            self.metrics.settled(metadata, outcome)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        """Only flags: no logging, no locks (the interrupted code may hold them). The loop notices at
        its next tick, a running job at its next progress point."""
        name = signal.Signals(signum).name
        self.cancel.request_stop(self.settings.stop_timeout_s, name)
        self.on_stop_signal()
        if not self.up:
            raise StartupInterrupted(name)

    def acquire_worker(self) -> WorkerLock:
        """This process's worker folder; waiting for another host's lease may take lease_timeout_s."""
        self.notifier.extend(self.settings.lease_timeout_s + 30, "checking the worker lease")
        lock = acquire_worker(self.settings)
        structlog.contextvars.bind_contextvars(worker_id=lock.worker_id)  # on every line (WORKER_ID)
        return lock

    def on_stop_signal(self) -> None:
        """More flags to set in the handler (nothing that logs or locks)."""
        return None

    def exit_code(self) -> int:
        """A service stopped by a signal exits 0."""
        return EXIT_OK

    @abstractmethod
    def startup(self) -> None: ...

    @abstractmethod
    def work(self) -> None: ...

    @abstractmethod
    def shutdown(self) -> None: ...
