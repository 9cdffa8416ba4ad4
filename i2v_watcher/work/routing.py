"""Which worker takes which job, on a share whose workers loaded different backends (an H100 with Wan
next to a smaller card with LTX): the one rule, asked by the folder daemon's intake before each claim.

A worker takes a ready job when its sidecar names no backend (any worker serves it, as on a share
of one worker) or a backend this worker loaded, and every job that cannot become a job at all (a
problem: reported by whoever takes it). A job for a backend that another live worker loaded (the
heartbeats say what each loaded) stays in the inbox for that worker. A name that no live worker loaded
and no registry here knows is a typo: taken and failed at once with a did-you-mean (run.check). A job
for a known backend that no live worker loaded waits `unroutable_timeout_s`, logged once, then any
worker fails it with a report that names that backend: the claim's rename lets only one of them have
it. A `--once` run waits for nobody: it takes such a job at once and fails it, as a worker alone did.
A worker with `swap_backends` also takes the jobs of those, but only when it has no other job to take
(work.swap says why), and those of one of them at a time.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Collection, Iterable
from dataclasses import replace

import structlog

from i2v_watcher.config.settings import Settings
from i2v_watcher.inbox.watch import SIDECAR_SUFFIXES, Candidate, Queued
from i2v_watcher.job.spec import read_sidecar
from i2v_watcher.job.worker_records import WorkerRow
from i2v_watcher.work.lease import QUEUE
from i2v_watcher.work.survey import survey
from i2v_watcher.work.swap import SwapSlot

SURVEY_EVERY_S = 2.0  # the heartbeats are read again at most this often (a scan can run every tick)
log = structlog.get_logger("i2v_watcher.work.routing")


def offered(workers: Iterable[WorkerRow]) -> set[str]:
    """The backends the live workers loaded or may swap in (a heartbeat of an older version names only
    its default)."""
    names: set[str] = set()
    for worker in workers:
        if worker.up:
            names.update(worker.backends if worker.backends is not None else [worker.backend or ""])
            names.update(worker.swap_backends or [])
    return names - {""}


def waiting_for(backend: str) -> str:
    """Why a job waits whose backend no live worker loaded: `status` and the dashboard say so."""
    return f"waiting for a worker with {backend}"


def unroutable(queued: Iterable[Queued], workers: Iterable[WorkerRow]) -> list[Queued]:
    """The queue as a person sees it, with each job whose backend no live worker loaded shown as
    waiting for one (one still settling too: a one-shot `status` sees every file settle)."""
    live = offered(workers)
    return [replace(row, why=waiting_for(row.backend))
            if row.backend is not None and row.backend not in live else row for row in queued]


class LiveOffers:
    """The backends the live workers loaded, read from their heartbeats at most every SURVEY_EVERY_S."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._live: set[str] = set()
        self._surveyed = -SURVEY_EVERY_S

    def __call__(self, now: float) -> set[str]:
        if now - self._surveyed >= SURVEY_EVERY_S:
            self._surveyed = now
            with contextlib.suppress(OSError):  # work/ cannot be read now: the last reading holds
                self._live = offered(survey(self.settings))
        return self._live


class Router:
    """This worker's side of the rule. `loaded`: the backends it loaded (`auto` resolved); `known`:
    every backend the registry has (built in and plugins); `once`: a batch run, which waits for nobody;
    `swap`: the backends it may swap in (work.swap), whose jobs it takes only when it has no other."""

    def __init__(self, settings: Settings, loaded: Iterable[str], known: Iterable[str], *,
                 once: bool = False, swap: SwapSlot | None = None,
                 in_flight: Callable[[], Collection[str]] = frozenset) -> None:
        self.settings = settings
        self.loaded = frozenset(loaded)
        self.known = frozenset(known)
        self.once = once
        self.swap = swap
        self.in_flight = in_flight  # the keys of the jobs this worker's stages have
        self._waiting: dict[str, float] = {}  # job key → when this worker first saw nobody to take it
        self._offered = LiveOffers(settings)

    def route(self, ready: list[Candidate]) -> tuple[list[Candidate], float | None]:
        """The ready jobs this worker takes, in their order (one that waited out its time comes as a
        problem to report), and when the next one's wait ends (None: no wait ends by itself)."""
        now = time.monotonic()
        taken: list[Candidate] = []
        swaps: list[Candidate] = []  # jobs for a swap backend that the slot does not hold (work.swap)
        waiting: set[str] = set()
        held = self.swap.settled(self.in_flight()) if self.swap is not None else None
        for candidate in ready:
            backend = candidate.backend
            if candidate.problem or backend is None or backend in self.loaded or backend == held:
                taken.append(candidate)
            elif self.swap is not None and backend in self.swap.names:
                swaps.append(candidate)
            elif backend in self._offered(now):
                continue  # another live worker's job (a plugin's backend this worker never imported too)
            elif self.once or backend not in self.known:
                taken.append(candidate)  # fails now: "not loaded by this daemon", or a typo's did-you-mean
            else:
                waiting.add(candidate.key)
                if self._waited_out(candidate, now):
                    taken.append(replace(candidate, problem=self._report(backend)))
        retry = None
        if self.swap is not None and swaps:
            swapping, retry = self.swap.choose(swaps, others=bool(taken), now=now, once=self.once)
            taken += swapping
        for key in set(self._waiting) - waiting:  # taken by another, removed, or a worker came
            del self._waiting[key]
        timeout = self.settings.unroutable_timeout_s
        ends = [since + timeout for since in self._waiting.values()] if timeout else []
        return taken, min([*ends, *([retry] if retry is not None else [])], default=None)

    def claimed(self, candidate: Candidate) -> None:
        """A job was claimed: one for a swap backend makes it the model this worker holds next."""
        if self.swap is not None:
            self.swap.plan(candidate.backend, candidate.key)

    def _waited_out(self, candidate: Candidate, now: float) -> bool:
        since = self._waiting.get(candidate.key)
        if since is None:
            since = self._waiting[candidate.key] = now
            log.warning("job waits: no live worker loaded its backend", job=candidate.key,
                        backend=candidate.backend, fails_after_s=self.settings.unroutable_timeout_s or None)
        timeout = self.settings.unroutable_timeout_s
        return timeout > 0 and now - since >= timeout

    def _report(self, backend: str) -> str:
        waited = self.settings.unroutable_timeout_s
        return (f"no worker with the backend {backend!r} came in {waited:g} s (unroutable_timeout_s): "
                f"no live worker of this share loaded it; load it on a worker (`backend` or `backends`), "
                f"or name a loaded backend in the sidecar, then `i2v-watcher retry`")


def check_auto_backend(settings: Settings) -> None:
    """At start-up: a warning when live workers of the share (their heartbeats) set another
    `auto_backend` than this one, as a sidecar's `backend: auto` would then mean one model here and
    another there."""
    try:
        workers = survey(settings)
    except OSError:
        return  # work/ cannot be read: the start-up's own checks say so
    others = {w.worker_id: w.auto_backend for w in workers
              if w.up and w.worker_id != settings.worker_id and w.auto_backend is not None
              and w.auto_backend != settings.auto_backend}
    if others:
        log.warning("auto_backend differs from other live workers of this share: a sidecar's "
                    "`backend: auto` means another model on each; set the same auto_backend on every worker",
                    auto_backend=settings.auto_backend, others=others)


def backend_queue(settings: Settings, backend: str) -> str:
    """Celery mode: the queue of one backend's jobs, which only the workers that loaded it consume."""
    return f"{settings.celery_queue}.{backend}"


class QueueRoutes:
    """Celery mode: the queue a job in work/queue/ is sent to. A job whose sidecar names a backend
    that a live worker loaded goes to that backend's queue; any other (no backend, a typo, one that no
    live worker loaded) goes to the shared queue, which every worker consumes: it runs there on the
    worker's default backend or fails at once, as with one worker."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.offered = LiveOffers(settings)

    def queue(self, job_id: str) -> str:
        backend = self._backend(job_id)
        if backend is not None and backend in self.offered(time.monotonic()):
            return backend_queue(self.settings, backend)
        return self.settings.celery_queue

    def _backend(self, job_id: str) -> str | None:
        inputs = self.settings.work / QUEUE / job_id / "input"
        for suffix in SIDECAR_SUFFIXES:
            for path in inputs.glob(f"*{suffix}"):
                try:
                    backend = read_sidecar(path, max_bytes=self.settings.max_sidecar_bytes).backend
                except Exception:  # not readable or not valid: the job's own error, reported when run
                    return None
                return self.settings.auto_backend if backend == "auto" else backend
        return None
