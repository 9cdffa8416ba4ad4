"""Generate: run the resident backend on one job, after checking that it can honour what was asked."""

from __future__ import annotations

import numpy as np
from PIL import Image

from i2v_watcher.backends import Backend, Frames
from i2v_watcher.cancel import Cancel
from i2v_watcher.errors import JobError
from i2v_watcher.logs import ProgressLog
from i2v_watcher.spec import JobParams

# Fields every backend accepts: they choose the backend, the outputs and the randomness.
GENERIC_FIELDS = frozenset({"backend", "postprocess", "output_name", "postprocess_overrides", "seed"})


def check_fields(backend: Backend, params: JobParams) -> list[str]:
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


def generate(backend: Backend, image: Image.Image, params: JobParams, cancel: Cancel,
             progress_log_s: float) -> Frames:
    report = ProgressLog("generate", progress_log_s)

    def progress(done: int, total: int) -> None:
        report(done, total)
        cancel.check()

    frames = backend.generate(image, params, progress)
    pixels = frames.pixels
    if pixels.dtype != np.uint8 or pixels.ndim != 4 or pixels.shape[3] != 3 or pixels.shape[0] < 1:
        raise JobError(f"the backend returned frames of shape {pixels.shape} and type {pixels.dtype}, "
                       "not (frames, height, width, 3) uint8", stage="generate")
    if pixels.shape[1] % 2 or pixels.shape[2] % 2:
        raise JobError(f"the backend returned odd frame sizes {pixels.shape[2]}x{pixels.shape[1]}",
                       stage="generate")
    return frames
