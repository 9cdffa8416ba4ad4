"""`i2v-watcher run` in folder mode: the folder daemon, a short composition of parts. The intake
watches the inbox and claims each settled job; the runner takes it through the stages of `run`
(pipelined: the next job generates while the previous one is encoded); the recovery resumes what a
crash or a stop left and takes over the jobs of workers whose lease expired; the heartbeat says the
worker is alive; retention prunes. Jobs left in the work folder are resumed by the loop, after
start-up, as ordinary work."""

from __future__ import annotations

from i2v_watcher import backends
from i2v_watcher.config.settings import Settings
from i2v_watcher.job.state import Job
from i2v_watcher.service.bootstrap import prepare_folders
from i2v_watcher.service.intake import Intake
from i2v_watcher.service.lifecycle import EXIT_FAILED_JOBS, EXIT_OK, Service
from i2v_watcher.service.loop import Loop
from i2v_watcher.service.parts import Beating
from i2v_watcher.service.recovery import Recovery
from i2v_watcher.service.retention import Retention
from i2v_watcher.service.runner import Runner
from i2v_watcher.work.routing import Router, check_auto_backend
from i2v_watcher.work.store import WorkStore


class Daemon(Service):
    def __init__(self, settings: Settings, *, once: bool = False) -> None:
        super().__init__(settings)
        self.once = once

    def startup(self) -> None:
        """Everything the daemon needs before it can take a job; nothing here runs a job."""
        settings = self.settings
        prepare_folders(settings)
        self.acquire_worker()  # before anything else touches work/<worker_id>/
        pipeline, scratch, heartbeat = self.load_backends()
        store = WorkStore(settings)
        scratch.prune({job.id for job in store.leftovers()})
        check_auto_backend(settings)
        router = Router(settings, self.loaded, backends.available(), once=self.once, swap=self.swap,
                        in_flight=lambda: self.runner.keys)
        self.intake = Intake(settings, store, self.checkpoint.activity, self._submit, router=router,
                             wants_work=lambda: self.runner.wants_work(), in_flight=lambda: self.runner.keys,
                             gate=self.gate)
        self.runner = Runner(settings, pipeline, self.checkpoint, store, wake=self.intake.watcher.changed)
        self.recovery = Recovery(settings, store, self.checkpoint, self._submit)
        self.runner.listeners += [self.recovery.settled, self.report]
        self.compose([Retention(settings), Beating(heartbeat), self.runner, self.recovery, self.intake])
        self.intake.announce(once=self.once)

    def work(self) -> None:
        Loop(self.checkpoint, self.parts, self.intake, once=self.once).run()

    def exit_code(self) -> int:
        # Only a batch run reports jobs it could not finish in its exit code.
        unfinished = self.checkpoint.activity.failed or self.recovery.held or self.intake.blocked()
        return EXIT_FAILED_JOBS if self.once and unfinished else EXIT_OK

    def _submit(self, job: Job) -> None:
        self.runner.submit(job)  # its outcome comes to the listeners
