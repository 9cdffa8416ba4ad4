"""LTX-Video's latent upsampler, and the two-pass recipe diffusers documents for it (LTX-Video docs,
"LTX-Video 0.9.7 includes a spatial latent upscaler"): generate at 2/3 of the wanted size (sides rounded
down to the model's multiple), return the latents, upsample them 2x with `LTXLatentUpsamplePipeline`,
denoise those a few steps at the larger size, and resize the frames to the wanted size. The second pass
starts from the upsampled latents with some noise (`denoise_strength`): with the full schedule 4 of 10
steps (strength 0.4), with a distilled checkpoint 4 of its own 5 timesteps (strength 0.999).

No backend is registered here; torch and diffusers are imported inside the functions."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from i2v_watcher.backends.loading import torch_dtype
from i2v_watcher.config.models import DiffusionSettings
from i2v_watcher.errors import StartupError

FIRST_PASS_SCALE = 2 / 3  # the docs' `downscale_factor`
# The second pass, as the docs run it: a distilled checkpoint's upscaling timesteps, or the full
# schedule's 10 steps; each from the upsampled latents noised to the strength's first sigma.
DISTILLED_SECOND_TIMESTEPS = (1000.0, 909.0, 725.0, 421.0, 0.0)
DISTILLED_SECOND_STRENGTH = 0.999
FULL_SECOND_STEPS = 10
FULL_SECOND_STRENGTH = 0.4


def steps_run(count: int, strength: float) -> int:
    """How many of `count` steps a pass at `denoise_strength` runs (diffusers' get_timesteps)."""
    return min(int(count * strength), count)


@dataclass(frozen=True)
class Passes:
    """The two passes of one attempt: their sizes (width, height) and the steps each runs."""

    first: tuple[int, int]
    second: tuple[int, int]
    first_steps: int
    distilled: bool

    @property
    def second_schedule(self) -> dict[str, Any]:
        if self.distilled:
            return {"timesteps": list(DISTILLED_SECOND_TIMESTEPS),
                    "denoise_strength": DISTILLED_SECOND_STRENGTH}
        return {"num_inference_steps": FULL_SECOND_STEPS, "denoise_strength": FULL_SECOND_STRENGTH}

    @property
    def second_steps(self) -> int:
        if self.distilled:
            return steps_run(len(DISTILLED_SECOND_TIMESTEPS), DISTILLED_SECOND_STRENGTH)
        return steps_run(FULL_SECOND_STEPS, FULL_SECOND_STRENGTH)

    def record(self) -> dict[str, Any]:
        """For the metadata: each pass's size and steps."""
        return {"first_pass": {"width": self.first[0], "height": self.first[1], "steps": self.first_steps},
                "second_pass": {"width": self.second[0], "height": self.second[1],
                                "steps": self.second_steps, **self.second_schedule}}


def two_passes(width: int, height: int, multiple: int, first_steps: int, distilled: bool) -> Passes:
    """The passes that make a clip of width x height: the first at 2/3 of it, rounded down to the
    model's multiple (at least one multiple), the second at twice the first."""
    low_width, low_height = (max(multiple, int(side * FIRST_PASS_SCALE) // multiple * multiple)
                             for side in (width, height))
    return Passes(first=(low_width, low_height), second=(2 * low_width, 2 * low_height),
                  first_steps=first_steps, distilled=distilled)


def _subfolder(where: str) -> str | None:
    """"latent_upsampler" where the folder (or cached hub repo) is a whole LTXLatentUpsamplePipeline, as
    Lightricks/ltxv-spatial-upscaler-0.9.7 is; None where it holds the model alone."""
    if Path(where).is_dir():
        return "latent_upsampler" if (Path(where) / "latent_upsampler" / "config.json").is_file() else None
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(where, "latent_upsampler/config.json")
    return "latent_upsampler" if isinstance(found, str) else None


def upsampler_location(upsampler: str) -> str:
    """The configured upsampler as from_pretrained takes it: a local folder, or a hub id."""
    local = Path(os.path.expanduser(upsampler))
    if local.is_dir():
        return str(local)
    if upsampler.startswith(("/", ".", "~")) or upsampler.count("/") != 1:
        raise StartupError(f"the ltx-video upsampler {upsampler!r} is no directory and no hub id (set "
                           "[models.ltx-video] upsampler to a local folder or a hub id such as "
                           "Lightricks/ltxv-spatial-upscaler-0.9.7)")
    return upsampler


def upsampler_missing(upsampler: str) -> str | None:
    """Why the configured upsampler could not load here (no such folder, a hub id not in the Hugging
    Face cache), or None."""
    try:
        where = upsampler_location(upsampler)
    except StartupError as exc:
        return str(exc)
    if Path(where).is_dir():
        return None
    from huggingface_hub import try_to_load_from_cache

    if any(isinstance(try_to_load_from_cache(where, name), str)
           for name in ("latent_upsampler/config.json", "config.json")):
        return None
    return f"the ltx-video upsampler {where!r} is not in the Hugging Face cache (`hf download {where}`)"


def load_upsampler(upsampler: str, options: DiffusionSettings, vae: Any) -> Any:
    """An LTXLatentUpsamplePipeline of the configured upsampler and the model's own VAE (as diffusers'
    example passes `vae=pipeline.vae`: the upsampler folder's VAE is never loaded), on the device."""
    import torch
    from diffusers.pipelines.ltx.modeling_latent_upsampler import LTXLatentUpsamplerModel

    where = upsampler_location(upsampler)
    try:
        model = LTXLatentUpsamplerModel.from_pretrained(
            where, subfolder=_subfolder(where), torch_dtype=torch_dtype(options),
            local_files_only=options.local_files_only)
    except (OSError, ValueError) as exc:
        raise StartupError(f"cannot load the ltx-video latent upsampler {upsampler!r}: {exc}. Fetch a hub "
                           f"id once with `hf download {upsampler}`, or point [models.ltx-video] upsampler "
                           "at a local folder") from exc
    model.to(torch.device(options.device))  # small (its convolutions only): resident beside any offload
    import diffusers

    pipeline_class: Any = diffusers.LTXLatentUpsamplePipeline
    pipe = pipeline_class(vae=vae, latent_upsampler=model)
    pipe.set_progress_bar_config(disable=True)
    return pipe


class _PassSteps:
    """The step callback of one pass, counted on the whole job: (offset + step, both passes' steps)."""

    def __init__(self, callback: Any, offset: int, total: int) -> None:
        self.callback, self.offset, self.job = callback, offset, SimpleNamespace(num_timesteps=total)

    def __call__(self, pipe: Any, index: int, timestep: Any, tensors: dict[str, Any]) -> Any:
        return self.callback(self.job, self.offset + index, timestep, tensors)


def run_two_passes(pipe: Any, upsampler: Any, image: Any, generator: Any, arguments: dict[str, Any],
                   extra: dict[str, Any], passes: Passes, upsampling: dict[str, float],
                   size: tuple[int, int]) -> Any:
    """Both passes and the upsampling between them; frames of `size` (width, height), as the pipeline
    returns them (`.frames[0]`: frames x 3 x height x width on the device). `arguments` are the job's
    pipeline arguments for one pass (its schedule the first pass's); `upsampling` the upsampler's
    adain_factor and tone_map_compression_ratio."""
    import torch

    extra = dict(extra)
    callback = extra.pop("callback_on_step_end", None)
    total = passes.first_steps + passes.second_steps
    first_call = {**arguments, **extra, "width": passes.first[0], "height": passes.first[1],
                  "output_type": "latent"}
    if callback is not None:
        first_call["callback_on_step_end"] = _PassSteps(callback, 0, total)
    latents = pipe(image=image, generator=generator, **first_call).frames
    upsampled = upsampler(latents=latents, output_type="latent", **upsampling).frames
    schedule = {key: value for key, value in arguments.items()
                if key not in ("num_inference_steps", "timesteps")}
    second_call = {**schedule, **extra, **passes.second_schedule, "width": passes.second[0],
                   "height": passes.second[1], "latents": upsampled}
    if callback is not None:
        second_call["callback_on_step_end"] = _PassSteps(callback, passes.first_steps, total)
    video = pipe(image=image, generator=generator, **second_call).frames[0]
    if (video.shape[-1], video.shape[-2]) != size:  # the docs' last step: down to the size asked
        video = torch.nn.functional.interpolate(video, size=(size[1], size[0]), mode="bicubic",
                                                antialias=True, align_corners=False)
    return SimpleNamespace(frames=[video])
