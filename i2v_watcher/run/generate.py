"""Generate: run the resident backend on one job, after checking everything that can be checked
before the GPU is spent: the fields the backend honours, its options, the size it will make (both
sides bounded) and the memory the frames will need."""

from __future__ import annotations

import math
import os
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from i2v_watcher.backends import Backend, Frames
from i2v_watcher.backends.base import Planned, check_aspect
from i2v_watcher.errors import JobError
from i2v_watcher.faults import crashpoint
from i2v_watcher.job.checkpoint import Checkpoint
from i2v_watcher.job.spec import JobParams
from i2v_watcher.logs import ProgressLog
from i2v_watcher.run.soundtrack import check_audio

# Fields every backend accepts: they choose the backend, the outputs, the randomness and the job's
# place in the queue.
# Fields the daemon itself acts on (`quality` becomes the level's other fields), whatever the backend.
GENERIC_FIELDS = frozenset({"backend", "postprocess", "output_name", "postprocess_overrides", "seed",
                            "priority", "quality", "draft", "quality_gate", "variants", "keep",
                            "variant"})
CGROUP_LIMITS = ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes")
GB = 1e9


def check_fields(backend: Backend | type[Backend], params: JobParams) -> list[str]:
    """Refuse what the sidecar set and this backend cannot honour; notes for what it only ignores."""
    ignores = backend.ignores
    refused = sorted(params.explicit - GENERIC_FIELDS - backend.honours - ignores)
    if refused:
        raise JobError(
            f"the backend {backend.name!r} cannot honour {', '.join(refused)} set in the sidecar",
            stage="generate",
            hint=f"it honours {', '.join(sorted(backend.honours))}; remove the others or choose a backend "
                 "that has them")
    return [f"{field} is ignored by the {backend.name} backend"
            for field in sorted(params.explicit & ignores)
            if getattr(params, field) not in ("", None)]


def machine_memory_bytes(cgroup_files: tuple[str, ...] = CGROUP_LIMITS) -> int:
    """The memory this process may use: the machine's, or its cgroup's limit where that is lower (a
    systemd MemoryMax=, a container)."""
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    for name in cgroup_files:
        try:
            raw = Path(name).read_text().strip()
        except OSError:
            continue
        if raw.isdigit():
            total = min(total, int(raw))
    return total


def memory_budget_bytes(budget_mb: int | None) -> int:
    """The configured budget, or half of what this process may use: the model, the Python heap and
    the encoder need the other half."""
    return budget_mb * 1_000_000 if budget_mb is not None else machine_memory_bytes() // 2


def plan_job(backend: Backend, image_size: tuple[int, int], params: JobParams, budget: int) -> Planned:
    """What the backend will make of this job; a JobError, before any generation, when the image's
    shape is beyond the model or the frames would not fit in the memory budget."""
    check_aspect(*image_size, backend.max_aspect)
    planned = backend.planned(*image_size, params)
    needed = planned.frames * planned.width * planned.height * backend.host_bytes_per_pixel
    if needed > budget:
        raise JobError(
            f"this job needs about {needed / GB:.1f} GB of memory for its frames ({planned.frames} frames "
            f"of {planned.width}x{planned.height}), over the budget of {budget / GB:.1f} GB "
            "(memory_budget_mb)", stage="sidecar", hint=_what_fits(backend, image_size, params, budget))
    return planned


def _what_fits(backend: Backend, image_size: tuple[int, int], params: JobParams, budget: int) -> str:
    planned = backend.planned(*image_size, params)
    per_frame = planned.width * planned.height * backend.host_bytes_per_pixel
    frames = max(0, math.floor(budget / per_frame))
    options = [f"at most {frames} frames at {params.resolution}"] if frames else []
    for short in (1024, 768, 512, 384, 256, 128, 64):
        smaller = backend.planned(*image_size, params.model_copy(update={"resolution": f"{short}p"}))
        if smaller.frames * smaller.width * smaller.height * backend.host_bytes_per_pixel <= budget:
            options.append(f"{smaller.frames} frames at {short}p")
            break
    return "fits: " + ", or ".join(options) if options else "lower num_frames and resolution"


def _cuda() -> Any:
    """PyTorch's CUDA module when torch is imported already and has initialised CUDA (a backend runs on
    the GPU), else None: never imports torch, never initialises CUDA."""
    torch = sys.modules.get("torch")
    return torch.cuda if torch is not None and torch.cuda.is_initialized() else None


def reset_gpu_peaks() -> None:
    cuda = _cuda()
    for index in range(cuda.device_count() if cuda is not None else 0):
        cuda.reset_peak_memory_stats(index)


def gpu_peaks() -> dict[str, int]:
    """The most GPU memory PyTorch allocated on each device since reset_gpu_peaks(), in bytes."""
    cuda = _cuda()
    if cuda is None:
        return {}
    peaks = {f"cuda:{i}": int(cuda.max_memory_allocated(i)) for i in range(cuda.device_count())}
    return {device: peak for device, peak in peaks.items() if peak > 0}


def generate(backend: Backend, image: Image.Image, params: JobParams, checkpoint: Checkpoint,
             progress_log_s: float, preloaded: object | None = None) -> Frames:
    """Run the backend on one job; `preloaded` is what `backend.preload` made for this job, if anything."""
    report = ProgressLog("generate", progress_log_s)

    def progress(done: int, total: int) -> None:
        report(done, total)
        crashpoint("generate.progress")
        checkpoint.progress(done, total)

    reset_gpu_peaks()
    if preloaded is None:  # a plugin written before preload() existed takes three arguments
        frames = backend.generate(image, params, progress)
    else:
        frames = backend.generate(image, params, progress, preloaded=preloaded)
    peaks = gpu_peaks()
    if peaks:  # in the metadata's "generation", and the daemon's i2v_gpu_peak_memory_bytes (metrics.py)
        frames = replace(frames, details={**frames.details, "gpu_peak_memory_bytes": peaks})
    pixels = frames.pixels
    if pixels.dtype != np.uint8 or pixels.ndim != 4 or pixels.shape[3] != 3 or pixels.shape[0] < 1:
        raise JobError(f"the backend returned frames of shape {pixels.shape} and type {pixels.dtype}, "
                       "not (frames, height, width, 3) uint8", stage="generate")
    if pixels.shape[1] % 2 or pixels.shape[2] % 2:
        raise JobError(f"the backend returned odd frame sizes {pixels.shape[2]}x{pixels.shape[1]}",
                       stage="generate")
    check_audio(frames.audio)
    return frames
