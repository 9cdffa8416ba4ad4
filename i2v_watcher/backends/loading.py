"""Loading a diffusers pipeline once, as a backend's `[models.<name>]` table and `[diffusion]` settings
say: where its weights are (a local folder or a hub id in the Hugging Face cache), in which dtype, and
what is applied once loaded (device or offload, VAE slicing/tiling, attention backend, compile).

torch and diffusers are imported inside the functions: the core install (preview backend) has neither."""

from __future__ import annotations

import contextlib
import importlib
import os
import warnings
from collections.abc import Iterable
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

from i2v_watcher.backends.capacity import missing_extra
from i2v_watcher.backends.speedups import (
    Speedups,
    check_attention_backend,
    compile_denoiser,
    enable_offload,
    install_cache,
    quantization,
)
from i2v_watcher.config.models import DiffusionSettings, ModelSettings
from i2v_watcher.errors import StartupError
from i2v_watcher.logs import adopt_library_loggers

if TYPE_CHECKING:
    import torch

LIBRARIES = ("torch", "diffusers", "transformers", "accelerate")  # they decide the output: in the metadata


def torch_dtype(options: DiffusionSettings) -> torch.dtype:
    """The dtype the model runs in: `auto` is bfloat16 on a GPU that has it, float16 on an older one,
    float32 on the CPU."""
    import torch

    if options.dtype == "auto":
        if not options.device.startswith("cuda"):
            return torch.float32
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    dtype: torch.dtype = getattr(torch, options.dtype)
    return dtype


def locate(name: str, source: ModelSettings, table: str | None = None) -> str:
    """A local directory, or a hub id found in the Hugging Face cache; a StartupError otherwise, that
    names the setting (`table`; unset: [models.<name>])."""
    model = source.model
    if Path(os.path.expanduser(model)).is_dir():
        return str(Path(os.path.expanduser(model)))
    if not model or model.startswith(("/", ".", "~")) or model.count("/") != 1:
        raise StartupError(f"the {name} model directory {model!r} does not exist "
                           f"(set [{table or f'models.{name}'}] model to a local directory or a hub id)")
    return model


def unavailable(name: str, source: ModelSettings, options: DiffusionSettings) -> str | None:
    """Why this backend could not load here (no extra, no GPU, no weights), or None."""
    missing = missing_extra()
    if missing is not None:
        return f"{missing} is not installed (pip install 'i2v-watcher[diffusion]')"
    import torch

    if options.device.startswith("cuda") and not torch.cuda.is_available():
        return f"no usable CUDA GPU for device {options.device!r}"
    try:
        where = locate(name, source)
    except StartupError as exc:
        return str(exc)
    if Path(where).is_dir():
        return None
    from huggingface_hub import try_to_load_from_cache

    if isinstance(try_to_load_from_cache(where, "model_index.json"), str):
        return None
    return f"the weights of {where!r} are not in the Hugging Face cache"


def load_pipeline(name: str, pipeline_class: str, source: ModelSettings, options: DiffusionSettings,
                  denoiser: str = "unet") -> Any:
    """The pipeline, loaded with `from_pretrained` from its folder or the cache (the `denoiser`
    component's weights quantized where `quantize` says); a StartupError with a hint for every way that
    fails (no extra, no GPU, no weights, no float8)."""
    try:
        import diffusers
        import torch
    except ImportError as exc:  # a clear start-up error (exit 2), not a traceback
        raise StartupError(
            f"the {name} backend needs the diffusion extra, and {exc.name or exc} is not installed: "
            "pip install 'i2v-watcher[diffusion]' (on a GPU server, install the CUDA build of torch "
            "first), or set backend = \"preview\"") from exc
    if options.device.startswith("cuda") and not torch.cuda.is_available():
        raise StartupError(
            f"the {name} backend is set to run on {options.device}, but this machine has no usable "
            "CUDA GPU (set [diffusion] device = \"cpu\" to run slowly on the CPU, or backend = \"preview\")")
    where = locate(name, source)
    with contextlib.suppress(ImportError):  # it sets up a logging handler of its own on import
        importlib.import_module("transformers.utils.logging")
    adopt_library_loggers()  # their warnings as our log lines, without their progress bars
    cls = getattr(diffusers, pipeline_class)
    quantized = quantization(options, denoiser)
    extra = {} if quantized is None else {"quantization_config": quantized}
    try:
        with warnings.catch_warnings():
            # newer diffusers call it `dtype`; the oldest diffusers supported knows only this name
            warnings.filterwarnings("ignore", "`torch_dtype` is deprecated", FutureWarning)
            pipe = cls.from_pretrained(where, torch_dtype=torch_dtype(options), variant=source.variant,
                                       local_files_only=options.local_files_only, **extra)
    except (OSError, ValueError) as exc:
        cache = os.environ.get("HF_HOME", "~/.cache/huggingface")
        raise StartupError(
            f"cannot load the {name} model {source.model!r}: {exc}. For a hub id the weights must be in "
            f"the Hugging Face cache ({cache}); fetch them once with `hf download {source.model}`, or "
            f"point [models.{name}] model at a local directory") from exc
    pipe.set_progress_bar_config(disable=True)
    adopt_library_loggers()  # torch's and accelerate's, imported meanwhile
    return pipe


def apply_options(pipe: Any, options: DiffusionSettings, denoisers: Iterable[Any],
                  name: str = "") -> Speedups:
    """Where the pipeline runs (a device, or offloaded), and the `[diffusion]` options that apply once:
    VAE slicing and tiling, channels-last, the attention backend, cache and compile of each denoiser.
    A setting this model or machine cannot honour is a StartupError here, before any job."""
    import torch

    if options.attention_backend != "sdpa":
        check_attention_backend(options.attention_backend)
    device = torch.device(options.device)
    if options.offload != "none":
        enable_offload(pipe, options.offload, device, options.offload_group_blocks)
    else:
        pipe.to(device)
    vae: Any = pipe.vae
    if options.vae_slicing and hasattr(vae, "enable_slicing"):
        vae.enable_slicing()
    if options.vae_tiling and hasattr(vae, "enable_tiling"):
        vae.enable_tiling()
    if options.channels_last:
        vae.to(memory_format=torch.channels_last)  # its 2D convolutions are what benefits
    denoisers = list(denoisers)
    applied = Speedups(attention_backend=options.attention_backend, quantize=options.quantize,
                       offload=options.offload)
    if options.cache is not None:
        applied.cache = install_cache(name or type(pipe).__name__, pipe, denoisers, options.cache)
    for denoiser in denoisers:
        if options.attention_backend != "sdpa":
            try:
                denoiser.set_attention_backend(options.attention_backend)
            except (AttributeError, ValueError, RuntimeError, ImportError) as exc:
                raise StartupError(f"attention backend {options.attention_backend!r}: {exc}") from exc
        applied.compile = compile_denoiser(denoiser, options.compile)
    return applied


def package_versions(packages: Iterable[str]) -> dict[str, str]:
    """The installed version of each package (one not installed is left out)."""
    found = {}
    for package in packages:
        with contextlib.suppress(importlib_metadata.PackageNotFoundError):
            found[package] = importlib_metadata.version(package)
    return found


def library_versions() -> dict[str, str]:
    return package_versions(LIBRARIES)
