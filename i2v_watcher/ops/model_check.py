"""`doctor`'s model check: each diffusion backend's model found where start-up will look (a local folder,
or a hub id's snapshot in the Hugging Face cache), and that folder checked against the backend by the
backend's own rules (`DiffusersBackend.check_folder`): the pipeline it is indexed as, every component the
pipeline needs with its config and weights (all shards), the configured variant, the stored dtypes
against `[diffusion] dtype`, and which model it is where the backend tells (Wan 2.1 or 2.2, CogVideoX
1.0 or 1.5). Nothing is loaded: the files are read, the safetensors headers only."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from i2v_watcher import backends
from i2v_watcher.errors import StartupError
from i2v_watcher.ops.findings import INSTALL_EXTRA, Context, Finding, Status

if TYPE_CHECKING:
    from i2v_watcher.backends.diffusion import DiffusersBackend


def check_model(ctx: Context) -> list[Finding]:
    from i2v_watcher.backends.diffusion import DiffusersBackend

    assert ctx.settings is not None
    if not ctx.diffusion:
        return [Finding("model", "ok", "no backend of this config loads a model")]
    found = []
    for name, level in ctx.diffusion.items():
        backend = backends.get(name)(ctx.settings)
        if not isinstance(backend, DiffusersBackend):  # a plugin's own kind of model: its own verdict
            reason = backend.unavailable()
            found.append(Finding("model", level if reason else "ok", reason or f"{name}: {backend.model_id}"))
            continue
        found += diffusers_model(backend, level)
    return found


def diffusers_model(backend: DiffusersBackend, level: Status) -> list[Finding]:
    """The findings for one diffusers backend's model: where it is, then what its folder holds."""
    name = backend.name
    data: dict[str, Any] = {"backend": name, "model": backend.model_id}
    fix = (f"point [models.{name}] model at a folder holding a saved pipeline (with model_index.json), "
           "or at a hub id whose weights are in the service's Hugging Face cache")
    try:
        where = backend.locate()
    except StartupError as exc:
        return [Finding("model", level, str(exc), fix, data)]
    if Path(where).is_dir():
        return folder_findings(backend, Path(where), level, data)
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError as exc:  # part of the diffusion extra (check_extra lists what else is missing)
        why = "is not installed" if isinstance(exc, ModuleNotFoundError) else f"fails to import ({exc})"
        return [Finding("model", level, f"{name}: {where} is a Hugging Face hub id, and its cache cannot be "
                        f"looked into: huggingface_hub (of the diffusion extra) {why}",
                        f"{INSTALL_EXTRA}; then, as the service's user, `hf download {where}`", data)]
    cached = try_to_load_from_cache(where, "model_index.json")
    if isinstance(cached, str):
        return folder_findings(backend, Path(cached).parent, level, {**data, "cached": True})
    offline = os.environ.get("HF_HUB_OFFLINE", "0") not in ("", "0", "false", "False")
    # Only a named backend downloads at start-up; `auto` falls back to the preview instead.
    downloads = level == "error" and not (offline or backend.settings.diffusion.local_files_only)
    fetch = (f"fetch it once, as the service's user: `hf download {where}`; or point [models.{name}] model "
             "at a folder holding a saved pipeline")
    note = "the first start downloads it (many GB)" if downloads else "start-up will not download it"
    return [Finding("model", "warning" if downloads else level,
                    f"{where} is not in the Hugging Face cache: {note}", fetch, data)]


def folder_findings(backend: DiffusersBackend, folder: Path, level: Status,
                    data: dict[str, Any]) -> list[Finding]:
    """One finding per problem the backend finds in the folder (blocking ones at `level`), and an ok
    finding saying what the folder holds when nothing blocks loading it."""
    check = backend.check_folder(folder)
    data = {**data, "path": str(folder), "holds": check.model, "dtypes": check.dtypes}
    status: dict[str, Status] = {"blocking": level, "warning": "warning", "note": "info"}
    found = [Finding("model", status[problem.severity], problem.message, problem.fix, data)
             for problem in check.problems]
    if any(problem.severity == "blocking" for problem in check.problems):
        return found
    where = "the Hugging Face cache snapshot " if data.get("cached") else ""
    stored = ", ".join(f"{component} {dtype}" for component, dtype in check.dtypes.items())
    weights = f"; weights: {stored}" if stored else ""
    variant = f" (variant {backend.source.variant})" if backend.source.variant else ""
    return [Finding("model", "ok", f"{backend.name}: {check.model}{variant} in {where}{folder}{weights}",
                    data=data), *found]


def check_caption(ctx: Context) -> list[Finding]:
    """The [caption] model, where one is set: found, and an image-text-to-text model by its config."""
    if ctx.settings is None or ctx.settings.caption.model is None:
        return []  # off: nothing to find
    from i2v_watcher.backends.caption import caption_model_problem

    model = ctx.settings.caption.model
    problem = caption_model_problem(ctx.settings.caption)
    if problem is None:
        return [Finding("caption", "ok", f"caption model {model}", data={"model": model})]
    return [Finding("caption", "error", problem, "point [caption] model at a folder or cached hub id of an "
                    "image captioner (Florence-2, BLIP, SmolVLM), or leave it unset", {"model": model})]
