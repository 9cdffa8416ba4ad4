"""`preview`: a CPU-only stand-in for a diffusion model that animates the still with a smooth camera
move (zoom and pan, "Ken Burns"). It checks a deployment end to end without a GPU or model weights."""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any, ClassVar, Literal, get_args

import numpy as np
from PIL import Image
from pydantic import BaseModel, ConfigDict, Field

from i2v_watcher.backends import register
from i2v_watcher.backends.base import Backend, Frames, Progress, output_size
from i2v_watcher.job.spec import JobParams

Motion = Literal["zoom-in", "zoom-out", "pan-left", "pan-right", "pan-up", "pan-down"]
Camera = tuple[float, float, float]  # zoom, centre x, centre y


class PreviewOptions(BaseModel):
    """The sidecar's `backend_options` for this backend."""

    model_config = ConfigDict(extra="forbid", strict=True)

    motion: Motion | Literal["random"] = Field(default="random", description=(
        "The camera move; random: one picked from the seed."))
    zoom: float | None = Field(default=None, ge=1.0, le=2.0, description=(
        "How far the camera zooms in; unset: random in 1.15-1.35, from the seed."))


@register
class PreviewBackend(Backend):
    name = "preview"
    model_id = "preview (Ken Burns zoom/pan, no model)"
    honours: ClassVar[frozenset[str]] = frozenset(
        {"num_frames", "fps", "resolution", "seed", "backend_options"})
    ignores: ClassVar[frozenset[str]] = frozenset(
        {"prompt", "negative_prompt", "steps", "guidance_scale", "decode_chunk_size"})
    options_model = PreviewOptions

    def load(self) -> None:
        """Nothing to load: the preview is plain image resampling."""

    def generate(self, image: Image.Image, params: JobParams, progress: Progress,
                 preloaded: object | None = None) -> Frames:
        options: PreviewOptions = self.options(params)
        width, height = output_size(image.width, image.height, params.resolution)
        rng = random.Random(params.seed)
        motion = options.motion if options.motion != "random" else rng.choice(get_args(Motion))
        zoom = options.zoom if options.zoom is not None else rng.uniform(1.15, 1.35)
        # Resample once to the most detail the closest zoom can show, so each frame is cheap.
        source = image.resize(_fit(image.size, (width, height), zoom), Image.Resampling.LANCZOS)
        path = _camera_path(motion, zoom, rng)
        count = params.num_frames
        pixels = np.empty((count, height, width, 3), dtype=np.uint8)
        for index in range(count):
            t = index / (count - 1) if count > 1 else 0.0
            eased = t * t * (3 - 2 * t)  # smoothstep: the camera starts and stops gently
            box = _box(source.size, *path(eased))
            frame = source.transform((width, height), Image.Transform.EXTENT, box,
                                     resample=Image.Resampling.BICUBIC)
            pixels[index] = np.asarray(frame)
            progress(index + 1, count)
        details: dict[str, Any] = {"width": width, "height": height, "num_frames": count,
                                   "motion": motion, "zoom": round(zoom, 4)}
        return Frames(pixels=pixels, fps=params.fps, details=details)


def _fit(size: tuple[int, int], out: tuple[int, int], zoom: float) -> tuple[int, int]:
    factor = min(1.0, zoom * max(out[0] / size[0], out[1] / size[1]))
    return max(1, round(size[0] * factor)), max(1, round(size[1] * factor))


def _camera_path(motion: str, zoom: float, rng: random.Random) -> Callable[[float], Camera]:
    """A function of eased time → (zoom, centre x, centre y), the centre in [0, 1] of the free range."""
    drift = (rng.uniform(0.2, 0.8), rng.uniform(0.2, 0.8))
    if motion in ("zoom-in", "zoom-out"):
        start, end = (1.0, zoom) if motion == "zoom-in" else (zoom, 1.0)

        def zooming(e: float) -> Camera:
            return start + (end - start) * e, 0.5 + (drift[0] - 0.5) * e, 0.5 + (drift[1] - 0.5) * e
        return zooming
    axis_x = motion in ("pan-left", "pan-right")
    forward = motion in ("pan-right", "pan-down")

    def panning(e: float) -> Camera:
        along = e if forward else 1.0 - e
        return (zoom, along, drift[1]) if axis_x else (zoom, drift[0], along)
    return panning


def _box(size: tuple[int, int], zoom: float, cx: float, cy: float) -> tuple[float, float, float, float]:
    """The source rectangle seen at this zoom, its centre placed within the range that stays inside."""
    w, h = size[0] / zoom, size[1] / zoom
    x0 = (size[0] - w) * cx
    y0 = (size[1] - h) * cy
    return (x0, y0, x0 + w, y0 + h)

