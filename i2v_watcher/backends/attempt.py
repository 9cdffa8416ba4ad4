"""One attempt at a job on a diffusers pipeline: what it runs with (its `Plan`, the job's `Preloaded`
inputs), what it reads from the pipeline while it runs (the denoising steps, whichever hook the pipeline
offers), and what it brings back (the frames as uint8, checked on the device; an out-of-memory error
told apart for the OOM ladder). diffusion.py's backend builds on these.

torch is imported inside the functions: the core install (preview backend) has none."""

from __future__ import annotations

import gc
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from i2v_watcher.backends.base import Progress
from i2v_watcher.errors import JobError
from i2v_watcher.job.spec import JobParams

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class Plan:
    """What one attempt at a job runs with (the OOM ladder makes smaller plans)."""

    width: int
    height: int
    num_frames: int
    offload: str | None = None
    rung: int = 0


def free_memory() -> None:
    """What an unloaded model or a failed attempt held, given back: Python's references collected and,
    where PyTorch is in use, its CUDA cache emptied (so the next one finds the memory free, not cached)."""
    gc.collect()
    torch = sys.modules.get("torch")  # never imported here for a backend that does not use it
    if torch is not None and torch.cuda.is_available():
        torch.cuda.empty_cache()


Fingerprint = tuple[int, int, str, bytes]


def fingerprint(image: Image.Image) -> Fingerprint:
    """A cheap identity of an image: its size, its mode and a 16x16 nearest-neighbour sample of it."""
    return image.width, image.height, image.mode, image.resize((16, 16), Image.Resampling.NEAREST).tobytes()


@dataclass(frozen=True)
class Preloaded:
    """A job's CPU-side inputs, made by `DiffusersBackend.preload` while another job generates. generate()
    uses it only for the job it was made for: the same parameters and the same image."""

    params: JobParams
    source: Fingerprint
    plan: Plan
    notes: Mapping[str, Any]
    image: Image.Image  # the input resized to the plan's size
    # Pipeline arguments computed ahead (I2VGen-XL's prompt embeddings); None: generate() computes them
    # (the backend cannot do it beside another job, or offload hooks were moving its modules).
    conditioning: Mapping[str, Any] | None

    def fits(self, image: Image.Image, params: JobParams) -> bool:
        return self.params == params and self.source == fingerprint(image)


def is_oom(exc: BaseException) -> bool:
    import torch

    return isinstance(exc, torch.OutOfMemoryError) or (
        isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower())


class StepProgress:
    """A job's denoising steps as (done, total), from whichever hook its pipeline offers: the
    `callback_on_step_end` argument, or a stand-in for the pipeline's tqdm bar."""

    def __init__(self, progress: Progress) -> None:
        self.done, self.total, self.progress = 0, 0, progress

    def step(self, done: int, total: int) -> None:
        self.done, self.total = done, total
        self.progress(done, total)

    def again(self) -> None:
        """A progress point without a step (a VAE decode block): the daemon is alive, no further."""
        self.progress(self.done, self.total)

    def on_step_end(self, pipe: Any, index: int, timestep: Any, tensors: dict[str, Any]) -> dict[str, Any]:
        """diffusers' `callback_on_step_end`: changes no tensor."""
        self.step(index + 1, int(pipe.num_timesteps))
        return {}

    def bar(self, iterable: Any = None, total: int | None = None) -> _Bar:
        """Replaces `pipe.progress_bar`, for a pipeline without `callback_on_step_end`."""
        return _Bar(self, total if total is not None else len(iterable))


class PassCounter:
    """The denoiser's forward passes in one attempt, from a forward pre-hook on each denoiser. A call on a
    batch of n latents counts n (a classifier-free-guidance pair batched into one call: 2), the job's own
    batch being 1; a pipeline that runs each branch as a call of its own (Wan) counts 1 a call."""

    def __init__(self) -> None:
        self.passes = 0

    def attach(self, denoisers: list[Any]) -> list[Any]:
        """The hooks' handles, to remove when the attempt ends."""
        return [module.register_forward_pre_hook(self.count, with_kwargs=True) for module in denoisers]

    def count(self, module: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        self.passes += batch_size(args, kwargs)


def batch_size(args: tuple[Any, ...], kwargs: dict[str, Any]) -> int:
    """The batch of a denoiser call: its latents' first dimension (`hidden_states`, a UNet's `sample`, else
    the first tensor it was given); 1 where no tensor tells."""
    import torch

    named = [kwargs[key] for key in ("hidden_states", "sample") if key in kwargs]
    tensors = [value for value in (*named, *args, *kwargs.values()) if isinstance(value, torch.Tensor)]
    return int(tensors[0].shape[0]) if tensors and tensors[0].ndim else 1


class _Bar:
    """What a pipeline's denoising loop uses of tqdm: a context manager that counts `update()`s."""

    def __init__(self, steps: StepProgress, total: int) -> None:
        self.steps, self.total, self.done = steps, total, 0

    def __enter__(self) -> _Bar:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def update(self, n: int = 1) -> None:
        self.done += n
        self.steps.step(self.done, self.total)


PRECISION_HINTS = {  # (problem, the model's dtype) → what to try; None: the dtype is not known
    ("nan", None): 'float16 overflow is a known cause in video diffusion models: set [diffusion] dtype = '
                   '"bfloat16" (or "float32")',
    ("nan", "bfloat16"): 'try [diffusion] dtype = "float32" (slower, and twice the GPU memory)',
    ("nan", "float32"): "the model already runs in float32, so this is no precision overflow: check its "
                        "weights (an incomplete download, a wrong variant) and the job's guidance_scale and "
                        "steps",
    ("black", None): 'float16 overflow is a known cause: try [diffusion] dtype = "bfloat16"',
    ("black", "bfloat16"): 'try [diffusion] dtype = "float32" (slower, and twice the GPU memory)',
    ("black", "float32"): "the model already runs in float32, so this is no precision overflow: check that "
                          "the input image is not (nearly) black, and the model's weights",
}


def precision_hint(problem: str, dtype: str | None) -> str:
    """What to try when the frames are NaN ("nan") or black ("black"), for a model in `dtype`."""
    return PRECISION_HINTS.get((problem, dtype)) or PRECISION_HINTS[(problem, None)]


def to_uint8(video: torch.Tensor, chunk: int = 8, dtype: str | None = None) -> np.ndarray:
    """Float frames (count, 3, height, width) in [0, 1], where the pipeline left them (the GPU) → uint8
    (count, height, width, 3) on the host, `chunk` frames at a time: neither the device nor the host holds
    a second float copy of the clip. NaN or all-black output fails the job instead of a black clip, with
    a hint that fits the model's `dtype` ("float16", "bfloat16", "float32"; None: not known)."""
    import torch

    if video.ndim != 4 or video.shape[1] != 3:
        raise JobError(f"the model returned frames of shape {tuple(video.shape)}", stage="generate")
    count, _, height, width = video.shape
    pixels = torch.empty((count, height, width, 3), dtype=torch.uint8)
    brightest = 0
    for start in range(0, count, chunk):
        part = video[start:start + chunk]
        if not bool(torch.isfinite(part).all()):
            raise JobError("the model produced NaN values (no picture)", stage="generate",
                           hint=precision_hint("nan", dtype))
        # float32 whatever the model's dtype, as numpy did it before: the same seed gives the same bytes.
        levels = part.float().clamp(0.0, 1.0).mul_(255.0).round_().to(torch.uint8)
        brightest = max(brightest, int(levels.amax()))
        pixels[start:start + chunk].copy_(levels.permute(0, 2, 3, 1).contiguous())  # to the host
    if brightest <= 2:
        raise JobError("the model produced all-black frames", stage="generate",
                       hint=precision_hint("black", dtype))
    return pixels.numpy()
