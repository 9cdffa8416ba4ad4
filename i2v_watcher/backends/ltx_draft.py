"""`[models.ltx-video] draft_model`: the transformer of a distilled LTX-Video checkpoint, resident beside
the base model's, that the draft level's jobs run with, on the distilled schedule (DISTILLED_TIMESTEPS at
guidance 1, the path a distilled base model takes); every other level runs the base transformer.

The distilled checkpoints (Lightricks/LTX-Video-0.9.7-distilled, 0.9.8-13B-distilled) share the VAE and
text encoder with their dev models, so only the folder's `transformer/` loads, in the [diffusion] dtype
on the same device. At start-up the folder must hold one, and its config must be the base transformer's
architecture (a 2B draft beside a 13B model is refused, not found out by the first draft job).

With the backend's other features:
- compile and the caching hook are applied at load to the base transformer only, and float8 weights are
  the base's only: a draft job runs the draft transformer without them (its `generation.speedups` says
  so). The attention backend is set on both.
- `[diffusion] offload` is refused beside draft_model: its hooks are put on the pipeline's components at
  load, and a transformer swapped in later would run outside them.
- An OOM rung's offload in a draft job offloads the pipeline as it is then, the draft transformer in it;
  the base transformer, outside the pipeline meanwhile, stays on the device, so the rung frees less than
  it does in another level's job.
- The base transformer is put back when the job ends, however it ends.

torch and diffusers are imported inside the functions: the core install has neither."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePath
from typing import TYPE_CHECKING, Any

from i2v_watcher.backends.drafts import DraftHint
from i2v_watcher.backends.loading import torch_dtype
from i2v_watcher.config.models import DiffusionSettings, ModelSettings
from i2v_watcher.errors import StartupError

if TYPE_CHECKING:
    import threading

SETTING = "[models.ltx-video] draft_model"
FETCH = ('hf download Lightricks/LTX-Video-0.9.7-distilled --include "transformer/*" --local-dir '
         "/models/ltx-video-0.9.7-distilled")


def model_name(model: str) -> str:
    """The name a model goes by: a hub id's repo name, a folder's name, or for a folder inside the Hugging
    Face cache (…/models--Lightricks--LTX-Video-0.9.7-distilled/snapshots/<hash>) its repo's."""
    path = PurePath(model)
    if path.parent.name == "snapshots" and path.parent.parent.name.startswith("models--"):
        return path.parent.parent.name.split("--")[-1]
    return path.name


@dataclass(frozen=True)
class DraftCheckpoint(DraftHint):
    """A distilled checkpoint for the draft level: what the start-up warning suggests while none is set
    and the base model is not distilled itself."""

    what: str

    def setting(self, backend: str) -> str:
        return f'[models.{backend}] draft_model = "..."'

    def served(self, source: ModelSettings) -> bool:
        if source.draft_model is not None:
            return True
        return source.distilled if source.distilled is not None else "distill" in model_name(
            source.model).lower()


def transformer_choice(source: ModelSettings, quality: str, distilled: bool | None) -> tuple[bool, str]:
    """Whether a job of this quality level (and backend_options.distilled) runs the draft transformer,
    and why, in words."""
    if source.draft_model is None:
        return False, f"{SETTING} is not set"
    if quality != "draft":
        return False, f"quality {quality}: {SETTING} serves the draft level only"
    if distilled is False:
        return False, "backend_options.distilled: false asks for the base model"
    return True, f"quality draft: {SETTING}"


def draft_missing(setting: str) -> str | None:
    """Why the folder cannot serve as a draft model, found without loading anything; None: it may."""
    if not (Path(setting).expanduser() / "transformer" / "config.json").is_file():
        return (f"{SETTING} = {setting!r}: no diffusers LTX-Video folder holding transformer/config.json "
                f"there (fetch a distilled checkpoint's transformer, e.g. `{FETCH}`)")
    return None


def check_draft_setting(source: ModelSettings, options: DiffusionSettings) -> None:
    """Before any weights load: the folder is there, and no [diffusion] offload would miss the draft."""
    if source.draft_model is None:
        return
    if options.offload != "none":
        raise StartupError(f'{SETTING} cannot run with [diffusion] offload = "{options.offload}": offload '
                           "hooks the pipeline's components at load and the draft transformer is swapped in "
                           'later; set offload = "none" (the OOM ladder still offloads a job that must), or '
                           "leave draft_model out")
    missing = draft_missing(source.draft_model)
    if missing is not None:
        raise StartupError(missing)


def architecture_problems(base: Mapping[str, Any], base_class: str, draft: Mapping[str, Any]) -> list[str]:
    """How the draft transformer's config differs from the base's, key by key (keys both write)."""
    problems = []
    if draft.get("_class_name") != base_class:
        problems.append(f"_class_name {draft.get('_class_name')!r} (the model's: {base_class!r})")
    return problems + [f"{key} {draft[key]!r} (the model's: {base[key]!r})" for key in sorted(base)
                       if not key.startswith("_") and key in draft and draft[key] != base[key]]


@dataclass(frozen=True)
class DraftModel:
    """The loaded draft transformer and the folder it came from."""

    path: str
    transformer: Any

    @contextmanager
    def swapped_in(self, pipe: Any, lock: threading.Lock) -> Iterator[None]:
        """The draft transformer in the pipeline for one job; the base one back afterwards, whatever
        happened (under `lock`, as every change of the pipeline's modules)."""
        base = pipe.transformer
        with lock:
            pipe.transformer = self.transformer
        try:
            yield
        finally:
            with lock:
                pipe.transformer = base

    @staticmethod
    def speedups(base: Mapping[str, Any]) -> dict[str, Any]:
        """A draft job's `generation.speedups`: what load() applied to the base transformer only is off."""
        return {**base, "compile": None, "quantize": "none", "cache": None,
                "note": "the draft transformer runs without the base transformer's compile, cache and "
                        "quantization"}


def load_draft(setting: str, pipe: Any, options: DiffusionSettings) -> DraftModel:
    """The draft transformer of `setting`'s folder, checked against the loaded base transformer, on the
    device in the [diffusion] dtype, with the attention backend the base runs."""
    import torch

    folder = Path(setting).expanduser()
    base = pipe.transformer
    config = json.loads((folder / "transformer" / "config.json").read_text())
    problems = architecture_problems(base.config, type(base).__name__, config)
    if problems:
        raise StartupError(f"{SETTING} = {setting!r}: its transformer is not the architecture of "
                           f"[models.ltx-video] model: {'; '.join(problems)}. A draft model is the distilled "
                           "checkpoint of the same model (2B with 2B, 13B with 13B)")
    try:
        transformer = type(base).from_pretrained(folder, subfolder="transformer", torch_dtype=torch_dtype(
            options), local_files_only=True)
    except (OSError, ValueError) as exc:
        raise StartupError(f"{SETTING} = {setting!r}: cannot load its transformer: {exc}") from exc
    transformer.to(torch.device(options.device))
    if options.attention_backend != "sdpa":  # checked against what is available when the base loaded
        transformer.set_attention_backend(options.attention_backend)
    return DraftModel(str(folder), transformer)
