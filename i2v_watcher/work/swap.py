"""The swap slot (`swap_backends`): backends this worker may load on demand but does not keep. A GPU
holds one big model, so at most one of them is loaded at a time, beside the resident `backends`; a job
for another one unloads it and loads that one through its backend's own `load()`.

Who decides what, and why here (work/, below both users):
- The router (work.routing) claims a job for a swap backend other than the one the slot holds only
  when the inbox holds no job for what this worker has loaded, and no swap is under way: the jobs of
  the loaded model go first, so a mixed inbox costs one swap per model, not one per job. The claim
  plans the slot (`plan`); until that swap is done, no other starts, and the jobs of the new model wait
  for its load (so a load that fails fails one job, not every one claimed meanwhile). A plan whose job
  settles without reaching the swap (its sidecar failed the check, say) is dropped.
- The generation stage (run.pipeline) swaps, when a job's turn to generate comes: the jobs claimed
  before it have left generation by then (one generator, jobs in claim order), so no job runs on the old
  model while it is unloaded. A preload, which runs beside the generating job, never swaps: the job is
  prepared again when its turn comes (`holds` says whether a prepared backend is still loaded).
- A load that fails fails its job with a plain report; no swap to that backend is tried again for
  `swap_retry_s` (the router leaves its jobs in the inbox meanwhile), so a broken model folder costs one
  failed job per retry, not every job in a loop.
"""

from __future__ import annotations

import functools
import threading
import time
import weakref
from collections.abc import Callable, Collection, Iterable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

import structlog

from i2v_watcher import backends
from i2v_watcher.backends import Backend
from i2v_watcher.backends.attempt import free_memory
from i2v_watcher.config.settings import Settings
from i2v_watcher.errors import JobError, StartupError  # a backend's load says why in a StartupError
from i2v_watcher.inbox.watch import Candidate
from i2v_watcher.job.checkpoint import Activity
from i2v_watcher.job.records import StagedMetadata

KEEP_ALIVE_S = 1.0  # how often a load in progress counts as progress (a load has no progress points)
log = structlog.get_logger("i2v_watcher.work.swap")


@dataclass(frozen=True)
class Swapped:
    """One swap: which backend's model went (None: the slot was empty), which came, and the seconds
    each took; `error`: why the new one could not be loaded (then nothing is loaded)."""

    before: str | None
    after: str
    unload_s: float
    load_s: float
    error: str = ""


SwapListener = Callable[[Swapped], None]  # each swap, done or failed (the /metrics counter)
Unloading = Callable[[Backend], None]  # told of a model about to be unloaded, before it is


def forget_preloads(preloads: dict[str, Future[Any]], old: Backend) -> None:
    """A swap unloads `old`: the preloads made with it are let go (each an object with a `backend`,
    run.pipeline.Prepared), so its memory can be given back; their jobs are prepared at their turn. One
    still running is let go when it ends (never waited for here: it may wait for the swap's lock)."""
    gone = weakref.ref(old)
    for job_id, future in list(preloads.items()):
        future.add_done_callback(functools.partial(_forget_made_with, preloads, job_id, gone=gone))


def _forget_made_with(preloads: dict[str, Future[Any]], key: str, done: Future[Any],
                      gone: weakref.ref[Backend]) -> None:
    failed = done.cancelled() or done.exception() is not None
    made_with = None if failed else getattr(done.result(), "backend", None)
    if made_with is not None and made_with is gone() and preloads.get(key) is done:
        preloads.pop(key, None)


class SwapNeeded(Exception):
    """A preload asked for a swap backend that the slot does not hold: prepared at its turn instead."""


def with_swap(metadata: StagedMetadata, swapped: Swapped | None) -> StagedMetadata:
    """A job's metadata, with the swap that came before its generation (its seconds in timings_s)."""
    if swapped is None:
        return metadata
    note = (f"model swap before this job: {swapped.before or 'nothing'} unloaded in "
            f"{swapped.unload_s:.2f} s, {swapped.after} loaded in {swapped.load_s:.2f} s (swap_backends)")
    spent = swapped.unload_s + swapped.load_s  # inside the job's "load" (reading it), told apart here
    timings = {**metadata.timings_s, "load": round(max(0.0, metadata.timings_s.get("load", 0.0) - spent), 3),
               "swap_unload": round(swapped.unload_s, 3), "swap_load": round(swapped.load_s, 3)}
    return metadata.model_copy(update={"notes": [*metadata.notes, note], "timings_s": timings})


def noted(metadata: StagedMetadata, swap: SwapSlot | None) -> StagedMetadata:
    """A job's metadata with the swap made for it, where this worker swaps (see with_swap)."""
    return metadata if swap is None else with_swap(metadata, swap.take_record(metadata.job_id))


class SwapSlot:
    """The one swapped model of this worker, shared by its router and its generation stage."""

    def __init__(self, settings: Settings, names: Iterable[str],
                 make: Callable[[str], Backend] | None = None) -> None:
        self.settings = settings
        self.names = frozenset(names)
        self._make = make or (lambda name: backends.get(name)(settings))
        self.listeners: list[SwapListener] = []
        self.unloading: list[Unloading] = []
        self.current: tuple[str, Backend] | None = None  # the backend loaded in the slot now
        self.planned: str | None = None  # the swap backend of the last job claimed for one
        self.planned_key = ""  # that job's key (its inbox name), while the runner has it
        self.retry_at: dict[str, float] = {}  # backend → when a swap to it may be tried again
        self.errors: dict[str, str] = {}  # backend → why its last load failed
        self._last: tuple[str, Swapped] | None = None  # the last swap done, and the job it was for
        self._lock = threading.Lock()

    # ---- the router's side --------------------------------------------------------------------
    def wanted(self) -> str | None:
        """The swap backend this worker holds, or will hold once the jobs claimed so far generated."""
        return self.planned if self.planned is not None else self.loaded_name()

    def under_way(self) -> bool:
        """A swap is planned (its job claimed) and not done yet."""
        return self.planned not in (None, self.loaded_name())

    def settled(self, in_flight: Collection[str]) -> str | None:
        """The swap backend whose jobs the router takes as any loaded model's: the one loaded, while no
        swap is under way (None during one). A plan whose job settled without a swap (it failed its
        checks, say) is void."""
        if self.under_way() and self.planned_key not in in_flight:
            self.planned = None
        return None if self.under_way() else self.loaded_name()

    def plan(self, backend: str | None, key: str) -> None:
        """A job was claimed: one for a swap backend makes it the slot's next model."""
        if backend in self.names:
            self.planned, self.planned_key = backend, key

    def may_try(self, backend: str, now: float) -> bool:
        """False while a failed load's retry time has not come (swap_retry_s)."""
        return now >= self.retry_at.get(backend, 0.0)

    def choose(self, jobs: list[Candidate], *, others: bool, now: float, once: bool = False
               ) -> tuple[list[Candidate], float | None]:
        """Of the ready jobs for swap backends other than the settled one (in their order): those to
        take now, and when a failed load's retry time ends (None: none). They are taken only when this
        worker has nothing else to take (`others`) and no swap is under way, all of one backend: the
        first job's. A batch run (`once`) does not wait for a retry time: such a job fails at once."""
        tryable: list[Candidate] = []
        retries: list[float] = []  # when the waits for a retry end
        for candidate in jobs:
            backend = str(candidate.backend)
            if once or self.may_try(backend, now):
                tryable.append(candidate)
            else:
                retries.append(self.retry_at[backend])
        wake = min(retries, default=None)
        if others or not tryable or self.under_way():
            return [], wake
        first = tryable[0].backend
        return [c for c in tryable if c.backend == first], wake

    # ---- the generation stage's side ------------------------------------------------------------
    def classes(self) -> dict[str, type[Backend]]:
        """The swap backends by name, for the sidecar check (their fields and options)."""
        return {name: backends.get(name) for name in sorted(self.names)}

    def loaded_name(self) -> str | None:
        current = self.current
        return None if current is None else current[0]

    def holds(self, backend: Backend) -> bool:
        """Whether a backend prepared earlier is still loaded (resident ones are not asked)."""
        current = self.current
        return backend.name not in self.names or (current is not None and current[1] is backend)

    def backend(self, name: str, job_id: str, *, swap: bool, activity: Activity | None = None
                ) -> Backend | None:
        """The loaded backend `name` for a job, swapped in when `swap` (the job's turn to generate has
        come); SwapNeeded when it is not loaded and `swap` is False. JobError when it cannot be loaded.
        None: not a swap backend."""
        if name not in self.names:
            return None
        with self._lock:
            if self.loaded_name() == name:
                return self._held()
            if not swap:
                raise SwapNeeded(name)
            if not self.may_try(name, time.monotonic()):
                raise self._not_retried(name)
            loaded, swapped = self._swap(name, activity)
        for listener in self.listeners:
            listener(swapped)
        if loaded is None:
            raise JobError(f"could not load the model of backend {name!r} for this job (a model swap, "
                           f"swap_backends): {swapped.error}", stage="generate", hint=self._hint(name))
        self._last = (job_id, swapped)
        return loaded

    def _held(self) -> Backend:
        """The loaded swap backend (a reference kept in no local of a caller that may swap next)."""
        assert self.current is not None
        return self.current[1]

    def take_record(self, job_id: str) -> Swapped | None:
        """The swap made before this job generated (for its metadata), once. Only the last swap is
        kept: a job whose generation failed after its swap leaves nothing behind."""
        last = self._last
        if last is None or last[0] != job_id:
            return None
        self._last = None
        return last[1]

    def _swap(self, name: str, activity: Activity | None) -> tuple[Backend | None, Swapped]:
        before = self.loaded_name()
        log.info("model swap starts", **{"from": before, "to": name})  # the jobs before it left generation
        started = time.monotonic()
        if self.current is not None:  # what still holds the old model lets go (a preload made with it)
            for listener in self.unloading:
                listener(self.current[1])
        self.current = None  # the last reference this worker keeps: the old model can go
        free_memory()
        unloaded = time.monotonic()
        try:
            with KeptAlive(activity, self.settings.load_timeout_s):
                backend = self._make(name)
                backend.load()
        except Exception as exc:  # a broken folder, missing weights, out of memory: this job's report
            free_memory()  # what the half-done load held
            error = str(exc) if isinstance(exc, StartupError) else f"{type(exc).__name__}: {exc}"
            swapped = Swapped(before, name, unloaded - started, time.monotonic() - unloaded, error)
            self.retry_at[name] = time.monotonic() + self.settings.swap_retry_s
            self.errors[name] = swapped.error
            if self.planned == name:
                self.planned = None
            log.error("model swap failed",
                      **{"from": before, "to": name}, unload_s=round(swapped.unload_s, 2),
                      load_s=round(swapped.load_s, 2), error=swapped.error,
                      retry_in_s=self.settings.swap_retry_s)
            return None, swapped
        swapped = Swapped(before, name, unloaded - started, time.monotonic() - unloaded)
        self.current = (name, backend)
        self.errors.pop(name, None)
        log.info("model swap", **{"from": before, "to": name}, unload_s=round(swapped.unload_s, 2),
                 load_s=round(swapped.load_s, 2), model=backend.model_id)
        return backend, swapped

    def _not_retried(self, name: str) -> JobError:
        left = max(0.0, self.retry_at[name] - time.monotonic())
        return JobError(f"the model of backend {name!r} could not be loaded a short while ago "
                        f"({self.errors.get(name, 'unknown error')}); this worker tries it again in "
                        f"{left:.0f} s (swap_retry_s), not for every job", stage="generate",
                        hint=self._hint(name))

    def _hint(self, name: str) -> str:
        return (f"check the model folder of [models.{name}] (`i2v-watcher doctor`), then "
                f"`i2v-watcher retry`; this worker keeps running its other models and tries a swap to "
                f"{name} again after swap_retry_s ({self.settings.swap_retry_s:g} s)")


class KeptAlive:
    """A load has no progress points: while it runs (at most `limit_s`, load_timeout_s, as at
    start-up), the stage's activity is touched, so the heartbeat and the watchdog go on; a load that
    hangs longer stops them, as a hung job does."""

    def __init__(self, activity: Activity | None, limit_s: float) -> None:
        self.activity = activity
        self.limit_s = limit_s
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, name="swap-keep-alive", daemon=True)

    def __enter__(self) -> None:
        if self.activity is not None:
            self._thread.start()

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        if self.activity is not None:
            self.activity.touch()

    def _run(self) -> None:
        end = time.monotonic() + self.limit_s
        assert self.activity is not None
        while not self._done.wait(KEEP_ALIVE_S) and time.monotonic() < end:
            self.activity.touch()
