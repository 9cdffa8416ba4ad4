"""Everything about a claimed job that can be checked before the GPU: its sidecar (checked whole, as
`submit` checks it), its parameters and seed, its backend (loaded on demand for a swap backend), its
output name, its image, and what its frames cost in memory and in the presets' outputs. A job that
passes is `Prepared`: nothing found later can be the job's own fault."""

from __future__ import annotations

import secrets
from dataclasses import dataclass, replace

import structlog

from i2v_watcher.backends import Backend
from i2v_watcher.backends.caption import Captioner
from i2v_watcher.config.settings import Settings
from i2v_watcher.errors import JobError
from i2v_watcher.fs.inputs import InputRead, read_input
from i2v_watcher.job.checkpoint import Activity
from i2v_watcher.job.spec import JobParams, JobSpec, load_sidecar, resolve
from i2v_watcher.job.state import Job
from i2v_watcher.media.chains import Chain
from i2v_watcher.media.cost import check_cost
from i2v_watcher.media.ffmpeg import FFmpeg
from i2v_watcher.media.images import Source, decode_input
from i2v_watcher.media.probes import chain_problems
from i2v_watcher.run.check import CheckedSidecar, check_sidecar, job_sources
from i2v_watcher.run.generate import check_fields, memory_budget_bytes, plan_job
from i2v_watcher.run.prompting import Prompter
from i2v_watcher.run.publish import check_outbox_folder, wanted_name
from i2v_watcher.steps import Clip
from i2v_watcher.work.swap import SwapSlot

log = structlog.get_logger("i2v_watcher.run.prepare")


@dataclass(frozen=True)
class Prepared:
    """A job checked and ready for the GPU: nothing found later can be the job's own fault."""

    spec: JobSpec
    params: JobParams
    backend: Backend
    chains: list[Chain]
    source: Source  # the image, and the digest of the bytes it was decoded from (read once)
    notes: list[str]
    preloaded: object | None = None  # what the backend could do ahead (Backend.preload)


class Preparation:
    """The checks of one worker: its resident backends, the ones it swaps in, and what its ffmpeg runs."""

    def __init__(self, settings: Settings, backends: dict[str, Backend], ffmpeg: FFmpeg,
                 default_backend: str, swap: SwapSlot | None, activity: Activity,
                 captioner: Captioner | None = None) -> None:
        self.settings = settings
        self.backends = backends  # the resident ones, loaded once at start-up
        self.swap = swap  # the backends loaded on demand, one at a time (swap_backends)
        self.choices: dict[str, Backend | type[Backend]] = {**(swap.classes() if swap else {}), **backends}
        self.default_backend = default_backend
        self.ffmpeg = ffmpeg
        self.activity = activity
        self.budget = memory_budget_bytes(settings.memory_budget_mb)
        self._trials: dict[str, str | None] = {}  # hardware encoders' trial encodes, done once
        self.prompter = Prompter(captioner, settings.caption.template)  # a prompt for a job without one

    def params(self, job: Job, swap: bool = True) -> tuple[CheckedSidecar, JobParams, Backend]:
        """The job's checked sidecar, its effective parameters (the seed fixed once, in the state) and
        its backend."""
        checked = self.check_sidecar(job)
        if job.state.changes:  # a re-roll's (run.gate): as if the sidecar had set them
            checked = replace(checked, spec=checked.spec.model_copy(update=job.state.changes))
        spec = checked.spec
        if job.state.seed is None:
            seed = spec.seed if spec.seed is not None else secrets.randbelow(2**32)
            job.advance(job.state.stage, seed=seed)
        assert job.state.seed is not None
        if job.state.gate_attempts and spec.seed is not None:  # a re-roll's next seed (run.gate), not
            # the sidecar's: resolve() takes the sidecar's fields over its own `seed`
            checked = replace(checked, spec=spec.model_copy(update={"seed": job.state.seed}))
            spec = checked.spec
        backend = self.backends.get(name := spec.backend or self.default_backend)
        if backend is None and self.swap is not None:  # still None: a name it does not swap either
            backend = self.swap.backend(name, job.id, swap=swap, activity=self.activity)
        params = resolve(spec, self.settings.defaults, backend=self.default_backend, seed=job.state.seed,
                         **job_sources(self.settings, backend, name))
        if backend is None:
            raise JobError(f"backend {params.backend!r} is not loaded by this daemon", stage="sidecar",
                           hint=f"resident backends: {', '.join(self.backends)} (the `backends` setting)")
        return checked, params, backend

    def prepare(self, job: Job, swap: bool = True) -> Prepared:
        """Every check that does not need the GPU: the sidecar, the backend's fields and options, the
        presets, the output name, the image, its shape and the memory its frames need."""
        checked, params, backend = self.params(job, swap)
        notes = check_fields(backend, params)
        backend.options(params)
        if job.state.image is None:
            raise JobError("the job has no image", stage="claim")
        fields = {"seed": params.seed, "preset": params.postprocess[0], "backend": backend.name}
        wanted = wanted_name(self.settings, job, quality=params.quality, output_name=params.output_name,
                             fields=fields)
        job.advance(job.state.stage, wanted_name=wanted)
        check_outbox_folder(self.settings, job)
        source = self.source(job, job.state.image, "load")
        params = self.prompter.prompted(job, params, backend, source.image)  # needs the image: here
        planned = plan_job(backend, source.image.size, params, self.budget)
        clip = Clip(planned.width, planned.height, planned.frames, params.fps)
        check_cost(self.settings, checked.chains, clip)  # what the presets make of the frames
        return Prepared(checked.spec, params, backend, checked.chains, source, notes)

    def source(self, job: Job, image: str, stage: str) -> Source:
        """The job's image, read once and decoded within the limits."""
        read = self.read_input(job, image, self.settings.max_image_bytes, stage)
        return decode_input(read, max_pixels=self.settings.max_image_pixels,
                            max_bytes=self.settings.max_image_bytes)

    def read_input(self, job: Job, name: str, max_bytes: int, stage: str) -> InputRead:
        """One of the job's inputs, read once through the descriptor whose link count was checked."""
        read = read_input(job.input(name), max_bytes=max_bytes, hardlinked=self.settings.hardlinked_inputs,
                          name=job.rel_dir / name, stage=stage, token=job.id)
        if read.copied:
            log.info("input with several names (a hard link): working from a private copy", file=name)
        return read

    def check_sidecar(self, job: Job) -> CheckedSidecar:
        """The sidecar checked whole, as `submit` checks it (run.check.check_sidecar): keys and values,
        the backend's fields and options, presets, overrides and what this ffmpeg can run, every
        problem in one report that names the sidecar by its path in the inbox; and its chains."""
        raw: object = {}
        written, name = None, None
        if job.state.sidecar is not None:
            name = str(job.rel_dir / job.state.sidecar)
            limit = self.settings.max_sidecar_bytes
            data = self.read_input(job, job.state.sidecar, limit, "sidecar").data
            raw, written = load_sidecar(data, max_bytes=limit, name=name)
        return check_sidecar(self.settings, raw, backends=self.choices, default_backend=self.default_backend,
                             written=written, name=name,
                             chain_check=lambda chains: chain_problems(chains, self.ffmpeg, self._trials))
