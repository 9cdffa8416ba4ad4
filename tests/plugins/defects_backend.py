"""A test plugin (loaded through the `plugins` setting): a backend whose clips have known defects, for the
quality gate through a real daemon. Each clip is one of tests/clips.py's (good moving ones: a pan, an
object crossing, a zoom; defective ones: frozen, flickering, black flashes, no motion, drift, blur),
built from the input image it is given, scaled to the clips' 128x96, so that the clip starts from it as
a model's clip does (the judge compares the frames with the input at the frames' size).

Which clip: `backend_options.clip` (the kind's name in clips.CLIPS), or per seed `clip_by_seed` (the
seed as a string: `{"7": "flicker", "8": "pan"}`), so that a re-roll, which moves to the next seed, can
get another clip. The prompt and the guidance scale are honoured as a prompt-driven model's are: each
attempt's go into the metadata's `generation`, where a test reads what a re-roll changed."""

from __future__ import annotations

from typing import Annotated, ClassVar

import numpy as np
from PIL import Image, ImageOps
from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from i2v_watcher.backends import register
from i2v_watcher.backends.base import Frames, Progress
from i2v_watcher.backends.preview import PreviewBackend
from i2v_watcher.job.spec import JobParams
from tests.clips import CLIPS, H, W

PROMPTED = frozenset({"prompt", "negative_prompt", "guidance_scale"})


def known(kind: str) -> str:
    if kind not in CLIPS:
        raise ValueError(f"no test clip {kind!r} (clips: {', '.join(CLIPS)})")
    return kind


Kind = Annotated[str, AfterValidator(known)]


class DefectsOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    clip: Kind = Field(default="pan", description="The clip's kind, a name in tests/clips.py's CLIPS.")
    clip_by_seed: dict[str, Kind] = Field(default_factory=dict, description=(
        "The clip's kind for some seeds (the seed as a string); the others get `clip`."))


@register
class DefectsBackend(PreviewBackend):
    name = "defects"
    honours: ClassVar[frozenset[str]] = PreviewBackend.honours | PROMPTED
    ignores: ClassVar[frozenset[str]] = PreviewBackend.ignores - PROMPTED
    options_model = DefectsOptions

    def generate(self, image: Image.Image, params: JobParams, progress: Progress,
                 preloaded: object | None = None) -> Frames:
        options: DefectsOptions = self.options(params)
        kind = options.clip_by_seed.get(str(params.seed), options.clip)
        picture = np.asarray(ImageOps.fit(image.convert("RGB"), (W, H), Image.Resampling.LANCZOS))
        pixels, _ = CLIPS[kind][0](picture=picture)
        for done in range(1, len(pixels) + 1):
            progress(done, len(pixels))
        return Frames(pixels=pixels, fps=params.fps, details={
            "clip": kind, "prompt": params.prompt, "guidance_scale": params.guidance_scale})
