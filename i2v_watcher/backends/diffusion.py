"""What every diffusers backend shares: loading once with the memory options, fitting the job's size
and frame count to what the model accepts, preloading a job's CPU-side inputs, the OOM ladder, and
running the pipeline (what one attempt runs with and reads back is in attempt.py). torch and diffusers
are imported inside the methods: the core install (preview backend) has neither."""

from __future__ import annotations

import math
import threading
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import numpy as np
import structlog
from PIL import Image

from i2v_watcher.backends.attempt import (
    PassCounter,
    Plan,
    Preloaded,
    StepProgress,
    fingerprint,
    free_memory,
    is_oom,
    to_uint8,
)
from i2v_watcher.backends.base import Audio, Backend, Frames, Planned, Progress, card_defaults
from i2v_watcher.backends.capacity import auto_short_side
from i2v_watcher.backends.card import WEBUI_CARD
from i2v_watcher.backends.drafts import DraftHint, warn_draft_fallback
from i2v_watcher.backends.folder import (
    FolderCheck,
    Problem,
    class_problems,
    dtype_notes,
    folder_problems,
    pipeline_needs,
    read_index,
    refetch_hint,
    run_dtype,
)
from i2v_watcher.backends.loading import (
    apply_options,
    library_versions,
    load_pipeline,
    locate,
    torch_dtype,
    unavailable,
)
from i2v_watcher.backends.loras import Loras, load_loras, read_loras
from i2v_watcher.backends.speedups import Speedups, enable_offload, remove_offload
from i2v_watcher.config.models import DEFAULT_MODELS, ModelSettings, OomRung
from i2v_watcher.config.settings import Settings
from i2v_watcher.errors import JobError, StartupError
from i2v_watcher.job.spec import JobParams, JobSpec, resolve

if TYPE_CHECKING:
    import torch

log = structlog.get_logger("i2v_watcher.diffusion")
# The job fields a prompt-driven video model honours (each backend adds its own, e.g. backend_options).
PROMPTED = frozenset({"prompt", "negative_prompt", "num_frames", "fps", "steps", "guidance_scale",
                      "resolution", "seed"})


class DiffusersBackend(Backend):
    """A diffusers image-to-video pipeline kept resident on one device for every job."""

    pipeline_class: ClassVar[str]  # the diffusers class name, e.g. "I2VGenXLPipeline"
    # Other `_class_name`s a model folder may be indexed under that the loader takes all the same:
    # `pipeline_class.from_pretrained` builds its own class from any folder holding its components.
    index_classes: ClassVar[tuple[str, ...]] = ()
    denoiser: ClassVar[str] = "unet"  # the pipeline component that `compile` and attention apply to
    frames_step: ClassVar[tuple[int, int]] = (1, 0)  # frame counts of the form a·k + b
    # How many frames the VAE decodes at once when the job does not say (`decode_chunk_size`); None: the
    # pipeline takes no such argument.
    default_decode_chunk: ClassVar[int | None] = None
    # How the denoising steps reach the progress callback: diffusers' `callback_on_step_end` argument,
    # or, for a pipeline that lacks it (I2VGen-XL), a stand-in for `pipe.progress_bar`.
    step_progress: ClassVar[Literal["callback", "progress_bar"]] = "callback"
    # Whether conditioning() (prompt encoding) may run in preload(), beside another job on the device.
    conditions_ahead: ClassVar[bool] = False
    uses_model: ClassVar[bool] = True
    # These models are trained near 16:9; far beyond it they make nothing useful, at a high cost.
    max_aspect: ClassVar[float] = 2.5
    # Frames leave the device as uint8 a few at a time (to_uint8): 3 bytes a pixel on the host, where
    # output_type="np" peaked at 24 (measured, 48 frames of 1280x720). On device = "cpu" the float clip
    # and the VAE's activations are host memory too: a setting for trials, outside this budget.
    host_bytes_per_pixel: ClassVar[int] = 3
    # A distilled LoRA or checkpoint that would make the draft level fast: warned about while none is set.
    draft_hint: ClassVar[DraftHint | None] = None

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self.pipe: Any = None
        self.source: ModelSettings = settings.models.get(self.name) or DEFAULT_MODELS.get(
            self.name, ModelSettings(model=""))
        self.loads = 0
        self.speedups = Speedups()  # what load() applied, in each job's metadata
        self.loras = Loras()  # what load() loaded of [models.<name>] loras, switched per job
        # Held while the pipeline's modules change place (an OOM rung's offload, and back) and while
        # conditioning() runs, so a preload on another thread never meets a module in motion (nor a
        # tokenizer in use: a fast tokenizer is not safe to share between threads).
        self._modules = threading.Lock()
        self._offloaded = False  # an OOM rung's offload hooks are on (under _modules)

    @property
    def model_id(self) -> str:  # type: ignore[override]
        return self.source.model

    # ---- loading -------------------------------------------------------------------------------
    def torch_dtype(self) -> torch.dtype:
        return torch_dtype(self.settings.diffusion)

    def dtype_name(self) -> str:
        """The model's dtype as the config spells it: "float16", "bfloat16", "float32"."""
        return str(self.torch_dtype()).removeprefix("torch.")

    def locate(self) -> str:
        """A local directory, or a hub id found in the Hugging Face cache; a StartupError otherwise."""
        return locate(self.name, self.source)

    def unavailable(self) -> str | None:
        return unavailable(self.name, self.source, self.settings.diffusion)

    def load(self) -> None:
        options = self.settings.diffusion
        warn_draft_fallback(self)
        loras = read_loras(self)  # before the weights: a wrong LoRA path fails fast
        pipe = load_pipeline(self.name, self.pipeline_class, self.source, options, self.denoiser)
        self.speedups = apply_options(pipe, options, self.denoisers(pipe), self.name)
        self.loras = load_loras(self.name, pipe, loras)
        self.pipe = pipe
        self.loads += 1

    @property
    def needs_warm_up(self) -> bool:
        return self.settings.diffusion.compile is not False

    def warm_up(self) -> None:
        """With compile on: one short clip at the default plan (a 16:9 image at the [defaults] and model
        card size and frames, at most 2 steps: the shapes decide what compiles, not the step count), so
        the compile happens at start-up and no job of that size pays for it."""
        if not self.needs_warm_up:
            return
        fields = {} if "prompt" in self.ignores else {"prompt": "warm-up"}
        params = resolve(JobSpec.model_validate(fields), self.settings.defaults, backend=self.name, seed=0,
                         model_defaults=card_defaults(self))
        try:
            self.generate(Image.new("RGB", (1280, 720), (128, 96, 64)), params.model_copy(
                update={"steps": min(params.steps, 2)}), lambda done, total: None)
        except JobError as exc:  # black or NaN frames from a 2-step clip: the compile happened all the same
            log.warning("the warm-up clip failed after the compile", backend=self.name, error=str(exc))

    # ---- the model folder, checked before loading (doctor) ------------------------------------
    def check_folder(self, folder: Path) -> FolderCheck:
        """What from_pretrained would find in this folder, read from its files (no weights loaded)."""
        refetch = self.refetch(folder)
        try:
            index = read_index(folder)
        except StartupError as exc:
            return FolderCheck("no pipeline", problems=[Problem(str(exc), refetch)])
        dtypes, problems = folder_problems(folder, index, self.needed_components(index), self.source.variant,
                                           refetch, f"[models.{self.name}]")
        run = run_dtype(self.settings.diffusion.dtype, self.settings.diffusion.device)
        problems = [*self.index_problems(folder, index), *problems, *dtype_notes(folder, dtypes, run)]
        return FolderCheck(self.describe_folder(folder, index), dtypes, problems)

    def describe_folder(self, folder: Path, index: Mapping[str, Any]) -> str:
        """Which model the folder holds, as far as its files tell (a backend with variants says which)."""
        return str(index.get("_class_name", "an unnamed pipeline"))

    def needed_components(self, index: Mapping[str, Any]) -> set[str] | None:
        """The components this backend cannot run without (None: unknown without diffusers)."""
        needed = pipeline_needs(self.pipeline_class)
        return None if needed is None else needed | {self.denoiser}

    def index_problems(self, folder: Path, index: Mapping[str, Any]) -> list[Problem]:
        """What model_index.json itself says against this backend loading the folder."""
        return class_problems(folder, index, self.name, (self.pipeline_class, *self.index_classes))

    def refetch(self, folder: Path) -> str:
        """How to get the model's missing files back."""
        return refetch_hint(self.source.model, folder)

    def denoisers(self, pipe: Any) -> list[Any]:
        """What `compile` and `attention_backend` apply to: the denoiser (Wan 2.2 A14B has two experts)."""
        return [getattr(pipe, self.denoiser)]

    def versions(self) -> dict[str, str]:
        return library_versions()

    def passes_per_step(self, params: JobParams) -> int:
        """Denoiser passes one step of this job costs, as planned (a batched guidance pair counts 2): what
        bench/levels.py and the docs plan with; the metadata's `denoiser_passes` is what was counted.
        Classifier-free guidance runs above guidance 1 (svd: the guidance at the last frame)."""
        return 2 if params.guidance_scale > 1 else 1

    def planned_passes(self, params: JobParams) -> int:
        """Denoiser passes the whole job costs, as planned (a distilled schedule has steps of its own)."""
        return params.steps * self.passes_per_step(params)

    # ---- fitting the job to the model ----------------------------------------------------------
    def size_multiple(self) -> int:
        """Sides must be multiples of this: the VAE's downscale times the denoiser's (and of 8, which
        the pipelines check whatever the model)."""
        pipe = self.pipe
        blocks = len(getattr(pipe.unet.config, "block_out_channels", (0,)))
        return math.lcm(8, int(pipe.vae_scale_factor) * int(2 ** max(blocks - 1, 0)))

    def fit_frames(self, count: int) -> int:
        a, b = self.frames_step
        return max(b + a * round((count - b) / a), b + a if b else a)

    def plan(self, image_size: tuple[int, int], params: JobParams, notes: dict[str, Any]) -> Plan:
        card = self.model_card()
        if card is not None:
            notes["model_card"] = {**card.record(), "defaults_used": sorted(params.from_model)}
        if params.resolution == "auto":
            short, reason = auto_short_side(self.settings.diffusion.device, card or WEBUI_CARD)
            notes["resolution_auto"] = reason
        else:
            short = int(params.resolution.rstrip("p"))
        width, height = self.fit_size(*image_size, short)
        frames = self.fit_frames(params.num_frames)
        notes["asked"] = {"resolution": params.resolution, "num_frames": params.num_frames}
        return Plan(width=width, height=height, num_frames=frames)

    def planned(self, width: int, height: int, params: JobParams) -> Planned:
        plan = self.plan((width, height), params, {})
        return Planned(plan.width, plan.height, plan.num_frames)

    def fit_size(self, width: int, height: int, short: int) -> tuple[int, int]:
        """Keep the input's aspect ratio, short side `short`, both sides rounded to the model's multiple."""
        m = self.size_multiple()
        scale = short / min(width, height)
        return max(m, m * round(width * scale / m)), max(m, m * round(height * scale / m))

    def ladder(self, image: Image.Image, first: Plan) -> list[Plan]:
        """The plans to try after an out-of-memory error, each a rung down; rungs that change nothing
        (a job already at 512p) are left out."""
        plans, current = [], first
        for index, rung in enumerate(self.settings.diffusion.oom_ladder, start=1):
            nxt = self.apply_rung(image, current, rung)
            if nxt != current:
                plans.append(replace(nxt, rung=index))
                current = replace(nxt, rung=0)
        return plans

    def apply_rung(self, image: Image.Image, plan: Plan, rung: OomRung) -> Plan:
        if rung.resolution is not None:
            cap = int(rung.resolution.rstrip("p"))
            if min(plan.width, plan.height) > cap:
                width, height = self.fit_size(image.width, image.height, cap)
                return replace(plan, width=width, height=height)
        if rung.num_frames is not None:
            fewer = self.fit_frames(max(1, math.floor(plan.num_frames * rung.num_frames)))
            if fewer < plan.num_frames:
                return replace(plan, num_frames=fewer)
        if rung.offload is not None and plan.offload is None and self.settings.diffusion.offload == "none":
            return replace(plan, offload=rung.offload)
        return plan

    # ---- preloading -----------------------------------------------------------------------------
    def preload(self, image: Image.Image, params: JobParams) -> Preloaded:
        """The plan, the resized input and, where it is safe beside a running job, the conditioning.
        It changes nothing on the backend or its pipeline, so it may run while another job generates.
        A preload that raises can be dropped: generate() does all of this itself without one."""
        notes: dict[str, Any] = {}
        plan = self.plan(image.size, params, notes)
        return Preloaded(params=params, source=fingerprint(image), plan=plan, notes=MappingProxyType(notes),
                         image=self.resize(image, plan), conditioning=self._condition_ahead(params))

    def _condition_ahead(self, params: JobParams) -> Mapping[str, Any] | None:
        if not self.conditions_ahead or self.settings.diffusion.offload != "none":
            return None  # offload hooks move modules between devices whenever one of them runs
        import torch

        with self._modules:
            if self._offloaded:  # the running job is on an offload rung
                return None
            with torch.inference_mode():
                return MappingProxyType(self.conditioning(params))

    def conditioning(self, params: JobParams) -> dict[str, Any]:
        """Pipeline arguments that depend on the parameters only (prompt embeddings); called with
        `_modules` held."""
        return {}

    def resize(self, image: Image.Image, plan: Plan) -> Image.Image:
        return image.resize((plan.width, plan.height), Image.Resampling.LANCZOS)

    # ---- running -------------------------------------------------------------------------------
    def generate(self, image: Image.Image, params: JobParams, progress: Progress,
                 preloaded: object | None = None) -> Frames:
        ready = preloaded if isinstance(preloaded, Preloaded) and preloaded.fits(image, params) else None
        if preloaded is not None and ready is None:
            log.warning("a preload made for another job was ignored", backend=self.name)
        notes: dict[str, Any] = dict(ready.notes) if ready is not None else {}
        first = ready.plan if ready is not None else self.plan(image.size, params, notes)
        attempts = [first, *self.ladder(image, first)]
        loras = self.loras.use(self.pipe, params.quality)
        tried: list[dict[str, Any]] = []
        for plan in attempts:
            tried.append({"rung": plan.rung, "width": plan.width, "height": plan.height,
                          "num_frames": plan.num_frames, "offload": plan.offload})
            passes = PassCounter()
            try:
                pixels, audio = self._attempt(image, params, plan, progress, ready, passes)
            except Exception as exc:
                if not is_oom(exc):
                    raise
                free_memory()
                log.warning("out of GPU memory, trying one rung down", tried=tried[-1])
                continue
            details = {**notes, "width": plan.width, "height": plan.height, "num_frames": plan.num_frames,
                       "oom_rung": plan.rung, "oom_ladder_tried": tried, "model": self.model_id,
                       "dtype": self.dtype_name(), "denoiser_passes": passes.passes,
                       "speedups": self.speedups.record(),
                       "device": self.settings.diffusion.device, **loras}
            if audio is not None:
                details["audio"] = {"sample_rate": audio.rate, "channels": audio.channels,
                                    "duration_s": round(audio.duration_s, 3)}
            return Frames(pixels=pixels, fps=params.fps, details=details, audio=audio)
        raise JobError(f"out of GPU memory on every rung of the OOM ladder: {tried}", stage="generate",
                       hint="lower resolution or num_frames, or enable [diffusion] offload")

    def _attempt(self, image: Image.Image, params: JobParams, plan: Plan, progress: Progress,
                 ready: Preloaded | None, passes: PassCounter) -> tuple[np.ndarray, Audio | None]:
        import torch

        pipe = self.pipe
        device = torch.device(self.settings.diffusion.device)
        steps = StepProgress(progress)
        extra: dict[str, Any] = {"output_type": "pt"}  # frames stay on the device until they are uint8
        if self.default_decode_chunk is not None:
            extra["decode_chunk_size"] = params.decode_chunk_size or self.default_decode_chunk
        if self.step_progress == "callback":
            extra["callback_on_step_end"] = steps.on_step_end
        else:
            pipe.progress_bar = steps.bar
        # Decoding the latents has no step callback and can take a while at large sizes: each block of
        # the VAE's decoder is a progress point too, so the watchdog and the lease see it alive.
        decoder = getattr(getattr(pipe, "vae", None), "decoder", None)
        blocks = [decoder, *getattr(decoder, "up_blocks", [])] if isinstance(decoder, torch.nn.Module) else []
        hooks = [block.register_forward_pre_hook(lambda *_: steps.again()) for block in blocks]
        hooks += passes.attach(self.denoisers(pipe))
        if plan.offload is not None:
            with self._modules:
                self._offloaded = True
                enable_offload(pipe, plan.offload, device, self.settings.diffusion.offload_group_blocks)
        self.speedups.before_job(params.steps, params.quality)
        try:
            generator = torch.Generator(device="cpu").manual_seed(params.seed)
            # A preload holds the first rung's size; a smaller rung resizes the input itself.
            if ready is not None and ready.image.size == (plan.width, plan.height):
                resized = ready.image
            else:
                resized = self.resize(image, plan)
            cuda = [device.index or 0] if device.type == "cuda" else []
            # Some pipelines also draw from the global generator (I2VGen-XL samples its image latents
            # without `generator`): seed that too, inside a fork so nothing else is disturbed.
            with torch.random.fork_rng(devices=cuda), torch.inference_mode():
                torch.manual_seed(params.seed)
                if ready is not None and ready.conditioning is not None:
                    extra.update(ready.conditioning)
                else:
                    with self._modules:
                        extra.update(self.conditioning(params))
                return self.read_output(self.call(resized, params, plan, generator, extra), params, plan)
        finally:
            if self.step_progress == "progress_bar":
                del pipe.progress_bar  # back to the class's own method
            for hook in hooks:
                hook.remove()
            if plan.offload is not None:  # this job only: the next one runs at full speed again
                with self._modules:
                    remove_offload(pipe, device)
                    self._offloaded = False

    def call(self, image: Image.Image, params: JobParams, plan: Plan, generator: Any,
             extra: dict[str, Any]) -> Any:
        """Run the pipeline once: the model's own arguments, and `extra` from this class (output type,
        step callback, decode chunk, conditioning)."""
        return self.pipe(image=image, generator=generator, **self.arguments(params, plan), **extra)

    def read_output(self, output: Any, params: JobParams, plan: Plan) -> tuple[np.ndarray, Audio | None]:
        """The pipeline's output → the clip as uint8 on the host, and the soundtrack where the model makes
        one (None here: a model of frames alone)."""
        video = output.frames[0]  # (frames, 3, height, width), floats in [0, 1]
        return to_uint8(video, dtype=self.dtype_name()), None

    def arguments(self, params: JobParams, plan: Plan) -> dict[str, Any]:
        """The job mapped onto this pipeline's arguments (size, frames, steps, guidance, …)."""
        raise NotImplementedError
