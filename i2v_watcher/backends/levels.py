"""What a quality level costs on a diffusion backend, from the plan alone (no model loaded): its job's
steps, guidance and frames, its denoiser passes (steps x the backend's passes a step, or a distilled
schedule's) and its denoiser work (passes x frames x pixels) at the model card's aspect ratio. The
docs' table of levels, bench/levels.py and the tests' check that a draft costs at most 1/5 of a final
read it here; the metadata's `generation.denoiser_passes` is what a job really ran."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from i2v_watcher.backends.base import card_defaults
from i2v_watcher.backends.diffusion import DiffusersBackend
from i2v_watcher.config.loras import with_loras
from i2v_watcher.config.quality import QualityLevel, levels_for
from i2v_watcher.job.spec import JobDefaults, JobParams, JobSpec, resolve

MAX_DRAFT_SHARE = 0.2  # a shipped draft's denoiser work against its final's, at most


def level_params(backend: DiffusersBackend, level: str, quality: Mapping[str, QualityLevel],
                 levels: Mapping[str, Mapping[str, Any]] | None = None) -> JobParams:
    """A job of this level on this backend as the daemon resolves it, with no other sidecar field and no
    [defaults]; `levels` in place of `quality`'s, where given."""
    if levels is None:  # the backend's LoRAs set fields of the levels that use them
        levels = with_loras(levels_for(quality, backend.name), backend.source.loras)
    return resolve(JobSpec(quality=level), JobDefaults(), backend=backend.name, seed=1,
                   model_defaults=card_defaults(backend), levels=levels)


def short_side(backend: DiffusersBackend, params: JobParams) -> int:
    """The job's short side; `auto`: the model card's native one (what a large GPU gets)."""
    card = backend.model_card()
    if params.resolution == "auto":
        return card.short_side if card is not None else 512
    return int(params.resolution.rstrip("p"))


def planned_work(backend: DiffusersBackend, params: JobParams) -> dict[str, Any]:
    """The job's denoiser work at the real model's size: passes x frames x pixels, the pixels at the
    model card's aspect ratio (landscape), the frames as the backend rounds them."""
    card = backend.model_card()
    short = short_side(backend, params)
    aspect = card.width / card.height if card is not None else 16 / 9
    width, height = round(short * max(aspect, 1 / aspect)), short
    frames = backend.fit_frames(params.num_frames)
    passes = backend.planned_passes(params)
    return {"steps": params.steps, "guidance": params.guidance_scale, "passes": passes, "frames": frames,
            "size": f"{width}x{height}", "work": passes * frames * width * height}
